"""The simulation-to-reality gap of the pretraining corpora (issue 15 item 3): distributions of the monthly
drivers and of monthly NEE, GPP and Reco in a corpus against the towers — mean, sd, 5/50/95 % quantiles and
the Wasserstein-1 distance to the towers' distribution (same units as the variable)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from scipy.stats import wasserstein_distance

from kgml.synthetic.corpus import monthly_means
from kgml.variables import VARIABLES

__all__ = ["GAP_VARIABLES", "gap_markdown", "gap_rows", "monthly_values"]

GAP_VARIABLES = ("tair", "sw_in", "vpd", "precip", "nee", "gpp", "reco")


def monthly_values(ds: xr.Dataset, variable: str) -> np.ndarray:
    """Every finite monthly value of ``variable`` in ``ds``: the ``<v>_monthly`` targets of a tower dataset
    where present, else monthly means of the daily series (`kgml.synthetic.monthly_means`: months with at
    least half of their days)."""
    if f"{variable}_monthly" in ds:
        v = ds[f"{variable}_monthly"].values
    elif variable in ds:
        v = monthly_means(ds[variable]).values
    else:
        raise KeyError(f"gap: no {variable!r} (or {variable}_monthly) in the dataset")
    v = np.asarray(v, np.float64).ravel()
    return v[np.isfinite(v)]


def gap_rows(towers: xr.Dataset, corpora: Mapping[str, xr.Dataset]) -> list[dict]:
    """One row per (variable, source): ``towers`` first, then each corpus, with n, mean, sd, q05, q50, q95 and
    (corpora) W1 to the towers' values."""
    rows = []
    for var in GAP_VARIABLES:
        ref = monthly_values(towers, var)
        for name, ds in {"towers": towers, **corpora}.items():
            x = monthly_values(ds, var)
            q05, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
            rows.append({"variable": var, "source": name, "n": int(x.size), "mean": float(x.mean()),
                         "sd": float(x.std()), "q05": float(q05), "q50": float(q50), "q95": float(q95),
                         "w1": float("nan") if name == "towers" else float(wasserstein_distance(x, ref))})
    return rows


def gap_markdown(rows: list[dict]) -> str:
    lines = ["| variable (units) | source | months | mean | sd | q05 | q50 | q95 | W1 to towers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        units = VARIABLES[r["variable"]].units if r["variable"] in VARIABLES else ""
        w1 = "–" if not np.isfinite(r["w1"]) else f"{r['w1']:.3g}"
        lines.append(f"| {r['variable']} ({units}) | {r['source']} | {r['n']} | {r['mean']:.3g} | {r['sd']:.3g} | "
                     f"{r['q05']:.3g} | {r['q50']:.3g} | {r['q95']:.3g} | {w1} |")
    return "\n".join(lines)
