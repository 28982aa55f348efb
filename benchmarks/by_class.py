"""Median monthly NEE R² of held-out towers by IGBP class, per model and seed, from a `kgml bench shift` folder.

    python benchmarks/by_class.py --suite fluxnet_mm_igbp --out runs/bench --model hybrid_global --model rf

Reads each fold's held-out predictions (``<out>/<suite>/folds/<kind>/<fold>/<model>[_seedN].nc``), scores every
tower with `kgml.evaluation.score_sites` against the suite's observations and groups the towers by their
``igbp`` site coordinate: the evergreen classes (ENF, EBF, MF) on their own, every other class as ``other``
(``--all-classes``: every class). Cells: towers and median R² (NSE after a slash). A model/seed with no
prediction file in some fold is reported with the folds it has.

``--cycle`` (monthly suites): instead, per class the medians over towers of the mean seasonal cycle's shape
(Pearson r of the predicted vs observed 12-month mean cycle), its amplitude ratio (predicted / observed
max − min), the mean bias and the anomaly r (values minus each series' own mean cycle): which part of the
series a model misses. ``--monthly-bias CLASS`` (monthly suites): the Northern-hemisphere towers of one IGBP
class with every calendar month paired, first seed: the observed mean seasonal cycle of each flux target and
every model's mean bias by calendar month (gC m-2 d-1).
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


def _cycle(p: np.ndarray, o: np.ndarray, month: np.ndarray) -> tuple[float, float, float, float] | None:
    """(cycle r, amplitude ratio, bias, anomaly r) of one tower's paired monthly series; None when a calendar
    month is never paired or fewer than 24 months are."""
    if p.size < 24 or np.unique(month).size < 12:
        return None
    pc = np.array([p[month == k].mean() for k in range(12)])
    oc = np.array([o[month == k].mean() for k in range(12)])
    amp = np.ptp(pc) / np.ptp(oc) if np.ptp(oc) > 0 else np.nan
    pa, oa = p - pc[month], o - oc[month]
    anom = np.corrcoef(pa, oa)[0, 1] if pa.std() > 0 and oa.std() > 0 else np.nan
    return float(np.corrcoef(pc, oc)[0, 1]), float(amp), float(np.mean(p - o)), float(anom)


def class_table(suite_name: str, out: Path, models: list[str], *, seeds: int = 3, kind: str = "site_kfold",
                data_dir=None, all_classes: bool = False, cycle: bool = False) -> list[str]:
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
                    p = p.load()
                if cycle:
                    ph, oh = ev.paired(p, obs, target, suite.observed_name(target), resolution=suite.resolution)
                    for s in ph.site.values.astype(str):
                        pv, ov = ph.sel(site=s).values, oh.sel(site=s).values
                        ok = np.isfinite(pv) & np.isfinite(ov)
                        month = (np.asarray(ph[ph.dims[-1]].values)[ok] % 12).astype(int)  # months since year 0
                        if (c := _cycle(pv[ok], ov[ok], month)) is not None:
                            by[classes[s] if all_classes or classes[s] in EVERGREEN else "other"].append(c)
                    continue
                sc = ev.score_sites(p, obs, {target: target}, resolution=suite.resolution).isel(variable=0)
                for s, r2, nse in zip(sc.site.values.astype(str), sc["r2"].values, sc["nse"].values, strict=True):
                    c = classes[s]
                    by[c if all_classes or c in EVERGREEN else "other"].append((r2, nse))
            groups = sorted(by)
            if header is None:
                header = groups
                lines += [f"| model | seed | folds | {' | '.join(groups)} |", "|---|---|---|" + "---|" * len(groups)]
            cells = []
            for g in header:
                v = np.asarray(by.get(g, []), np.float64)
                if not len(v):
                    cells.append("–")
                elif cycle:
                    r, amp, bias, anom = np.nanmedian(v, axis=0)
                    cells.append(f"{len(v)}: r {r:.2f}, amp {amp:.2f}, bias {bias:+.2f}, anom r {anom:.2f}")
                else:
                    cells.append(f"{len(v)}: {np.nanmedian(v[:, 0]):.2f} / {np.nanmedian(v[:, 1]):.2f}")
            lines.append(f"| {m} | {sd} | {len(files)} | {' | '.join(cells)} |")
    return lines


def monthly_bias(suite_name: str, out: Path, models: list[str], igbp: str, *, kind: str = "site_kfold",
                 data_dir=None) -> list[str]:
    suite = get_suite(suite_name)
    ds, _ = runner.prepare_suite(suite, data_dir=data_dir, fold_kinds=[kind])
    obs = runner._observations(suite, ds)
    sites = ds.site.values.astype(str)
    keep = set(sites[(_igbp_classes(ds, f"{suite_name} dataset") == igbp) & (np.asarray(ds["lat"].values) > 0)])
    lines = [f"| target | model | towers | {' | '.join(f'{m:02d}' for m in range(1, 13))} |", "|---|---|---|" + "---|" * 12]
    for target in suite.targets:
        for i, m in enumerate(models):
            pred, ob = [], []
            for f in sorted((out / suite_name / "folds" / kind).glob(f"*/{m}.nc")):
                with xr.open_dataset(f) as p:
                    ph, oh = ev.paired(p.load(), obs, target, suite.observed_name(target), resolution=suite.resolution)
                for s in set(ph.site.values.astype(str)) & keep:
                    pv, ov = ph.sel(site=s).values, oh.sel(site=s).values
                    ok = np.isfinite(pv) & np.isfinite(ov)
                    month = (np.asarray(ph[ph.dims[-1]].values)[ok] % 12).astype(int)
                    if np.unique(month).size == 12:
                        pred.append([pv[ok][month == k].mean() for k in range(12)])
                        ob.append([ov[ok][month == k].mean() for k in range(12)])
            if not pred:
                continue
            pred, ob = np.asarray(pred), np.asarray(ob)
            if i == 0:
                lines.append(f"| {target} | observed | {len(ob)} | {' | '.join(f'{x:.2f}' for x in ob.mean(0))} |")
            lines.append(f"| {target} | {m} bias | {len(ob)} | {' | '.join(f'{x:+.2f}' for x in (pred - ob).mean(0))} |")
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
    ap.add_argument("--cycle", action="store_true", help="seasonal-cycle shape, amplitude, bias, anomaly r")
    ap.add_argument("--monthly-bias", metavar="CLASS", help="bias by calendar month at one IGBP class (N hemisphere)")
    a = ap.parse_args(argv)
    if a.monthly_bias:
        lines = monthly_bias(a.suite, a.out, a.model, a.monthly_bias.upper(), kind=a.fold_kind,
                             data_dir=find_data(a.data_dir))
        print("\n".join(lines) if len(lines) > 2 else f"no {a.monthly_bias} tower with every month paired")
        return 0 if len(lines) > 2 else 1
    lines = class_table(a.suite, a.out, a.model, seeds=a.seeds, kind=a.fold_kind,
                        data_dir=find_data(a.data_dir), all_classes=a.all_classes, cycle=a.cycle)
    print("\n".join(lines) if lines else f"no predictions of {a.model} under {a.out / a.suite}")
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
