"""Choose a lever on the inner validation sites, never on the test sites (issue 20 item 4).

For each fold of a `kgml bench shift` run directory, the hybrid runs it saved (``hybrid_global_run``,
``hybrid_anomaly_w<w>_run``, ``*_seed<k>`` for seed k) predict the fold's *validation* sites (the split's
``val`` part: training towers held back for early stopping), which are scored as the benchmark scores
held-out sites (monthly NEE per-site median R² / NSE, pooled anomaly and IAV R² of
`kgml.evaluation.decompose`, pooled over the folds' validation sites; a tower that validates several folds
counts once per fold). Nothing is trained.

    python benchmarks/val_screen.py --out runs/bench --suite fluxnet_mm --suite fluxnet_mm_igbp \\
        --run hybrid_global_run --run hybrid_anomaly_w1_run --max-folds 3 --seed 0
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from kgml import evaluation as ev
from kgml.compare.figures import seed_suffix
from kgml.compare.runner import prepare_suite, scored_predictions
from kgml.compare.suites import get_suite, select_part
from kgml.experiment import load_run, predict_dataset
from kgml.io import concat_sites


def screen(out: Path, suite_name: str, runs: list[str], max_folds: int, seed: int, data_dir=None) -> list[dict]:
    suite = get_suite(suite_name)
    ds, folds = prepare_suite(suite, data_dir=data_dir, max_folds=max_folds, fold_kinds=["site_kfold"])
    rows = []
    for run_name in runs:
        preds, obs = [], []
        for split in folds["site_kfold"]:
            where = out / suite.name / "folds" / "site_kfold" / split.name / f"{run_name}{seed_suffix(seed)}"
            if not (where / "done").exists():
                break
            val = select_part(ds, split, "val")
            pred = predict_dataset(load_run(where), val, batch_size=8)
            # a tower can be a validation site of several folds: one (fold, site) unit each
            ids = [f"{split.name}/{s}" for s in val.site.values.astype(str)]
            preds.append(scored_predictions(pred, suite).assign_coords(site=ids))
            obs.append(val.assign_coords(site=ids))
        else:
            pred, o = concat_sites(preds), xr.concat(obs, dim="site", coords="minimal", compat="override",
                                                       join="outer")
            sc = ev.score_sites(pred, o, {"nee": "nee"}, resolution="monthly", metrics=("r2", "nse"))
            dec = ev.decomposition_scores(pred, o, "nee", "nee", resolution="monthly", metrics=("r2",))
            rows.append({"suite": suite.name, "run": run_name, "seed": seed, "folds": len(preds),
                         "val_sites": int(o.sizes["site"]),
                         "r2_median": float(np.nanmedian(sc["r2"].sel(variable="nee").values)),
                         "nse_median": float(np.nanmedian(sc["nse"].sel(variable="nee").values)),
                         "anomaly_r2": float(dec.get("anomaly", {}).get("r2", math.nan)),
                         "iav_r2": float(dec.get("iav", {}).get("r2", math.nan))})
            continue
        print(f"{suite.name}/{run_name}: not every fold is trained (missing {where})", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--suite", action="append", required=True)
    p.add_argument("--run", action="append", required=True, help="run directory stem in each fold")
    p.add_argument("--max-folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    rows = [r for s in a.suite for r in screen(Path(a.out), s, a.run, a.max_folds, a.seed, a.data_dir)]
    print("| suite | run | seed | folds | val sites | NEE R² med | NEE NSE med | anomaly R² | IAV R² |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['suite']} | {r['run']} | {r['seed']} | {r['folds']} | {r['val_sites']} | {r['r2_median']:.3f} | "
              f"{r['nse_median']:.3f} | {r['anomaly_r2']:.3f} | {r['iav_r2']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
