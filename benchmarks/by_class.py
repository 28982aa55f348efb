"""Median monthly NEE R² of held-out towers by IGBP class, per model and seed, from a `kgml bench shift` folder.

    python benchmarks/by_class.py --suite fluxnet_mm_igbp --out runs/bench --model hybrid_global --model rf

Reads each fold's held-out predictions (``<out>/<suite>/folds/<kind>/<fold>/<model>[_seedN].nc``), scores every
tower with `kgml.evaluation.score_sites` against the suite's observations and groups the towers by their
``igbp`` site coordinate: the evergreen classes (ENF, EBF, MF) on their own, every other class as ``other``
(``--all-classes``: every class). Cells: towers and median R² (NSE after a slash). A model/seed with no
prediction file in some fold is reported with the folds it has.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from kgml.bench.suites import get_suite

from kgml import evaluation as ev
from kgml.compare import runner
from kgml.compare.figures import seed_suffix
from kgml.compare.suites import _igbp_classes
from kgml.paths import data_dir as find_data

EVERGREEN = ("ENF", "EBF", "MF")


def class_table(suite_name: str, out: Path, models: list[str], *, seeds: int = 3, kind: str = "site_kfold",
                data_dir=None, all_classes: bool = False) -> list[str]:
    suite = get_suite(suite_name)
    ds, _ = runner.prepare_suite(suite, data_dir=data_dir, fold_kinds=[kind])
    obs = runner._observations(suite, ds)
    classes = dict(zip(ds.site.values.astype(str), _igbp_classes(ds, f"{suite_name} dataset"), strict=True))
    target = suite.targets[0]
    lines, header = [], None
    for m in models:
        for sd in range(seeds):
            files = sorted((out / suite_name / "folds" / kind).glob(f"*/{m}{seed_suffix(sd)}.nc"))
            if not files:
                continue
            by = collections.defaultdict(list)
            for f in files:
                with xr.open_dataset(f) as p:
                    sc = ev.score_sites(p.load(), obs, {target: target}, resolution=suite.resolution).isel(variable=0)
                for s, r2, nse in zip(sc.site.values.astype(str), sc["r2"].values, sc["nse"].values, strict=True):
                    c = classes[s]
                    by[c if all_classes or c in EVERGREEN else "other"].append((r2, nse))
            groups = sorted(by)
            if header is None:
                header = groups
                lines += [f"| model | seed | folds | {' | '.join(groups)} |", "|---|---|---|" + "---|" * len(groups)]
            cells = []
            for g in header:
                v = np.asarray(by.get(g, []), np.float64).reshape(-1, 2)
                cells.append(f"{len(v)}: {np.nanmedian(v[:, 0]):.2f} / {np.nanmedian(v[:, 1]):.2f}" if len(v) else "–")
            lines.append(f"| {m} | {sd} | {len(files)} | {' | '.join(cells)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", required=True)
    ap.add_argument("--out", type=Path, required=True, help="the bench output folder")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fold-kind", default="site_kfold")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--all-classes", action="store_true")
    a = ap.parse_args(argv)
    lines = class_table(a.suite, a.out, a.model, seeds=a.seeds, kind=a.fold_kind,
                        data_dir=find_data(a.data_dir), all_classes=a.all_classes)
    print("\n".join(lines) if lines else f"no predictions of {a.model} under {a.out / a.suite}")
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
