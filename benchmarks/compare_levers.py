"""One table of (suite, model) rows read from the `kgml bench shift` metrics files (nothing is trained), for
comparing a lever across suites (issue 20 item 4: ``fluxnet_mm`` vs ``fluxnet_mm_igbp``, the same frozen
folds and seeds): median NEE R² and NSE over held-out sites, pooled anomaly and IAV R²
(`kgml.evaluation.decompose`), each of the ensemble-mean prediction with [min–max over single seeds]; and
Δ rows (with − without, paired seed by seed: mean [min…max]).

    python benchmarks/compare_levers.py --out runs/bench --row fluxnet_mm:hybrid_global \\
        --row fluxnet_mm_igbp:hybrid_global --delta fluxnet_mm_igbp:hybrid_global,fluxnet_mm:hybrid_global
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

STATS = (("r2_median", "NEE R² med"), ("nse_median", "NEE NSE med"), ("anomaly_r2", "anomaly R²"),
         ("iav_r2", "IAV R²"))
#: Columns of other targets (variable, statistic, label): the issue's GPP and Reco targets.
OTHER = (("gpp", "r2_median", "GPP R² med"), ("reco", "nse_median", "Reco NSE med"))


def _entry(out: Path, spec: str, variable: str, kind: str) -> dict:
    suite, _, model = spec.partition(":")
    path = out / suite / "metrics.nc"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (run `kgml bench shift --suite {suite} ... --score-only`)")
    with xr.open_dataset(path) as m:
        if model not in m.model.values:
            raise KeyError(f"{path}: no model {model!r} (has {m.model.values.tolist()})")
        sel = dict(model=model, fold_kind=kind, variable=variable)
        row = {"spec": spec, "n_sites": int(m["n_sites"].sel(sel)), "n_folds": int(m["n_folds"].sel(sel)),
               "n_seeds": int(m["n_seeds"].sel(sel)), "seeds": m.seed.values.tolist()}
        for stat, _ in STATS:
            row[stat] = float(m[stat].sel(sel))
            row[f"seed_{stat}"] = np.asarray(m[f"seed_{stat}"].sel(sel).values, float)
        for var, stat, _ in OTHER:
            if var in m.variable.values:
                o = dict(sel, variable=var)
                row[f"{var}_{stat}"] = float(m[stat].sel(o))
                row[f"seed_{var}_{stat}"] = np.asarray(m[f"seed_{stat}"].sel(o).values, float)
    return row


def _cell(v: float, seeds: np.ndarray, digits: int = 2) -> str:
    s = seeds[np.isfinite(seeds)]
    spread = f" [{s.min():.{digits}f}–{s.max():.{digits}f}]" if s.size > 1 else ""
    return f"{v:.{digits}f}{spread}"


def table(out: Path, rows: list[str], deltas: list[str], variable: str = "nee", kind: str = "site_kfold") -> str:
    entries = [_entry(out, r, variable, kind) for r in rows]
    labels = [label for _, label in STATS] + [label for *_, label in OTHER]
    lines = ["| suite:model | towers | folds | seeds | " + " | ".join(labels) + " |", "|---" * (4 + len(labels)) + "|"]
    for e in entries:
        cells = [_cell(e[s], e[f"seed_{s}"], 3 if s in ("anomaly_r2", "iav_r2") else 2) for s, _ in STATS]
        cells += [_cell(e[f"{v}_{s}"], e[f"seed_{v}_{s}"]) if f"{v}_{s}" in e else "–" for v, s, _ in OTHER]
        lines.append(f"| {e['spec']} | {e['n_sites']} | {e['n_folds']} | {e['n_seeds']} | " + " | ".join(cells) + " |")
    for d in deltas:
        a, _, b = d.partition(",")
        ea, eb = _entry(out, a, variable, kind), _entry(out, b, variable, kind)
        if ea["seeds"] != eb["seeds"]:
            raise ValueError(f"{a} and {b} have different seeds ({ea['seeds']} vs {eb['seeds']})")
        cells = []
        for s, _ in STATS:
            diff = ea[f"seed_{s}"] - eb[f"seed_{s}"]
            diff = diff[np.isfinite(diff)]
            ens = ea[s] - eb[s]
            digits = 3 if s in ("anomaly_r2", "iav_r2") else 2
            cells.append(f"{diff.mean():+.{digits}f} [{diff.min():+.{digits}f}…{diff.max():+.{digits}f}]; "
                         f"ens {ens:+.{digits}f}" if diff.size else "–")
        lines.append(f"| Δ {a} − {b} | | | {diff.size} | " + " | ".join(cells) + " |" + " |" * len(OTHER))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--row", action="append", default=[], help="SUITE:MODEL")
    p.add_argument("--delta", action="append", default=[], help="SUITE:MODEL,SUITE:MODEL (with, without)")
    p.add_argument("--variable", default="nee")
    p.add_argument("--fold-kind", default="site_kfold")
    a = p.parse_args(argv)
    try:
        print(table(Path(a.out), a.row, a.delta, a.variable, a.fold_kind))
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"compare_levers: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
