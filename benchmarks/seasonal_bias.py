"""Mean bias (prediction − observation) of a monthly flux by calendar month over held-out towers, read from the
`kgml bench shift` prediction files of a suite (nothing is trained): where in the year a model goes wrong.
Issue 20: the physics driven by the towers' measured soil water under-predicts summer GPP (the shallow sensor
dries while deep roots keep drawing water).

    python benchmarks/seasonal_bias.py --out runs/bench --suite fluxnet_mm_soil --fold-kind site_kfold \\
        --models hybrid_global,hybrid_observed_rew --variable gpp --min-lat 25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.compare.runner import prepare_suite
from kgml.compare.suites import get_suite


def seasonal_bias(out: Path, suite: str, fold_kind: str, model: str, variable: str, obs: xr.DataArray,
                  lat: xr.DataArray, min_lat: float) -> tuple[np.ndarray, int]:
    """(bias per calendar month 1–12, averaged first over each tower's months then over towers; towers used)."""
    files = sorted((out / suite / "folds" / fold_kind).glob(f"*/{model}.nc"))
    if not files:
        raise FileNotFoundError(f"{out / suite / 'folds' / fold_kind}: no {model}.nc (run kgml bench shift first)")
    per_month: list[list[float]] = [[] for _ in range(12)]
    towers = 0
    for f in files:
        with xr.open_dataset(f) as p:
            pred = p[f"{variable}_monthly"]
            for site in pred.site.values:
                if float(lat.sel(site=site)) < min_lat:
                    continue
                q = pred.sel(site=site).values
                o = obs.sel(site=site).reindex(month=pred.month.values).values
                cal = pred.month.values % 12
                ok = np.isfinite(q) & np.isfinite(o)
                if not ok.any():
                    continue
                towers += 1
                for m in range(12):
                    k = ok & (cal == m)
                    if k.any():
                        per_month[m].append(float((q[k] - o[k]).mean()))
    return np.array([np.mean(v) if v else np.nan for v in per_month]), towers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--fold-kind", default="site_kfold")
    ap.add_argument("--models", required=True, help="comma-separated model slots")
    ap.add_argument("--variable", default="gpp")
    ap.add_argument("--min-lat", type=float, default=-90.0, help="only towers at or north of this latitude")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args(argv)
    ds, _ = prepare_suite(get_suite(a.suite), data_dir=a.data_dir, quick=False, fold_kinds=(a.fold_kind,))
    obs = ds[f"{a.variable}_monthly"]
    units = obs.attrs.get("units", "")
    print("| model | towers | " + " | ".join(f"{m}" for m in range(1, 13)) + " |")
    print("|---|---|" + "---|" * 12)
    for model in a.models.split(","):
        bias, n = seasonal_bias(a.out, a.suite, a.fold_kind, model, a.variable, obs, ds["lat"], a.min_lat)
        print(f"| {model} | {n} | " + " | ".join(f"{b:+.2f}" for b in bias) + " |")
    mean = [float(obs.where(ds["lat"] >= a.min_lat).isel(month=np.flatnonzero(ds.month.values % 12 == m)).mean())
            for m in range(12)]
    print("| observed mean | | " + " | ".join(f"{v:.2f}" for v in mean) + f" |\n\n{a.variable} bias in {units}, "
          f"calendar months 1–12, towers at ≥ {a.min_lat:g}° latitude")
    return 0


if __name__ == "__main__":
    sys.exit(main())
