"""What issue 19's interval target asks, measured on a finished ``kgml bench shift --intervals`` run: pooled
90 % coverage in 87–93 %, ≥ 80 % at the 10th-percentile held-out site, width no larger than the quantile
forest's. Nothing is trained here; it reads the run's held-out and calibration predictions.

    kgml bench shift --suite fluxnet_mm --fold-kinds site_kfold --intervals --models rf,neural,hybrid_global \\
        --seeds 3 --out runs/iv
    python benchmarks/interval_reach.py --run runs/iv --members rf,neural,hybrid_global --out runs/iv_reach

Three tables:

1. Every (model, scale) of the engine (`kgml.compare.intervals.interval_rows`: seed spread, magnitude,
   residual, the quantile forest raw and conformalised — CQR, Romano et al. 2019 — and each with the
   site-tail rule `kgml.uncertainty.site_tail_quantile`), 90 % interval: pooled and p10-site coverage, the share
   of held-out sites covered ≥ 80 %, mean width; for the forest's rows, the width relative to the quantile
   forest's (uncalibrated, the target's reference) and to the same forest conformalised (its width at a
   calibrated coverage).
2. A multi-model ensemble: the mean of the members' seed means, its spread over the model classes as the
   "seed spread" scale (the members stand in for seeds), scored by the same engine functions. Its files go to
   ``--out`` (the run's folder is only read).
3. How often an *exactly valid* site-tail rule would meet "p10 ≥ 80 %" with the run's numbers of calibration
   and held-out sites per fold (Monte Carlo of exchangeable sites, 20,000 draws): per fold Q is the
   ⌈(n + 1)·0.9⌉-th smallest of n calibration sites' r_i, and a held-out site is covered ≥ 80 % iff its r ≤ Q.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from kgml.bench.suites import get_suite

from kgml.compare import intervals as iv
from kgml.compare.figures import prediction_path, seed_suffix
from kgml.compare.runner import _observations, calibration_folds, prepare_suite, seed_mean
from kgml.io import write_netcdf_atomic


def _fmt(x: float, f: str = "{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f.format(x)


def reach_table(rows: list[dict], targets) -> str:
    lines = ["| target | model | scale | pooled cov 90 | p10-site cov 90 | sites covered ≥ 80 % | width 90 | "
             "width / quantile forest | width / conformalised forest | CRPS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for var in targets:
        ref = {r["scale"]: r["width_90"] for r in rows if r["model"] == "rf" and r["variable"] == var}
        for r in (r for r in rows if r["variable"] == var):
            raw, cqr = ref.get("quantile forest", math.nan), ref.get("quantile forest + conformal", math.nan)
            lines.append(f"| {var} | {r['model']} | {r['scale']} | {_fmt(r['coverage_90'])} | "
                         f"{_fmt(r['coverage_90_p10'])} | {_fmt(r['share_sites_covered'])} | "
                         f"{_fmt(r['width_90'], '{:.2f}')} | {_fmt(r['width_90'] / raw, '{:.2f}')} | "
                         f"{_fmt(r['width_90'] / cqr, '{:.2f}')} | {_fmt(r['crps'])} |")
    return "\n".join(lines)


def write_ensemble(run: Path, out: Path, folds, members, seeds, name: str) -> None:
    """Per fold: each member's seed mean as one 'seed' of the ensemble ``name`` (the variables all members
    share, quantile-forest ones left out), held-out and calibration sites."""
    for kind, splits in folds.items():
        for split in splits:
            src, dst = run / "folds" / kind / split.name, out / "folds" / kind / split.name
            held, cal = [], []
            for m in members:
                hs = [iv._load(src / f"{m}{seed_suffix(s)}.nc") for s in seeds]
                cs = [iv._load(iv.calibration_path(src, m, s)) for s in seeds]
                if any(p is None for p in hs + cs):
                    raise FileNotFoundError(f"{src}: {m} lacks a seed of {list(seeds)} (held-out or calibration)")
                held.append(seed_mean(hs))
                cal.append(seed_mean(cs))
            common = sorted(set.intersection(*(set(p.data_vars) for p in held + cal)) - {
                v for p in held for v in p.data_vars if str(v).endswith("_qrf")})
            for k, (h, c) in enumerate(zip(held, cal, strict=True)):
                write_netcdf_atomic(h[common], prediction_path(dst, name, k))
                write_netcdf_atomic(c[common], iv.calibration_path(dst, name, k))


def valid_rule_chance(n_cal: list[int], n_held: list[int], site_coverage=0.8, tail=0.1, draws=20000,
                      seed=0) -> tuple[float, float, float]:
    """(P(p10 ≥ 80 %), mean and s.d. of the share of held-out sites covered ≥ 80 %) for an exactly valid
    site-tail rule with these calibration / held-out site counts per fold (exchangeable sites: each site's r is
    a uniform draw, the rule's Q the ⌈(n + 1)(1 − tail)⌉-th smallest of the fold's calibration draws)."""
    rng = np.random.default_rng(seed)
    total = sum(n_held)
    meets, shares = 0, []
    for _ in range(draws):
        below = 0
        for nc, nh in zip(n_cal, n_held, strict=True):
            k = math.ceil((nc + 1) * (1 - tail) - 1e-9)
            q = np.sort(rng.random(nc))[k - 1] if k <= nc else np.inf
            below += int((rng.random(nh) > q).sum())
        # np.quantile's p10 (linear interpolation at position tail·(N − 1) of the sorted per-site coverages) is
        # ≥ 80 % for certain when no more sites than floor(tail·(N − 1)) fall below it
        meets += below <= math.floor(tail * (total - 1))
        shares.append(1 - below / total)
    return meets / draws, float(np.mean(shares)), float(np.std(shares))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="--out of the kgml bench shift --intervals run")
    ap.add_argument("--suite", default="fluxnet_mm")
    ap.add_argument("--fold-kind", default="site_kfold")
    ap.add_argument("--models", default="rf,neural,hybrid_global")
    ap.add_argument("--members", default="rf,neural,hybrid_global",
                    help="models of the multi-model ensemble ('' or one model: no ensemble table)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="folder for the ensemble's files (not the run's)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--calibration-fraction", type=float, default=iv.CALIBRATION_FRACTION,
                    help="as the run's --calibration-fraction (the calibration sites are carved the same way)")
    ap.add_argument("--tail", type=float, default=iv.SITE_TAIL[1],
                    help="the site-tail rule's tail (default 0.1: p10 ≥ 80 %%; 0.05: the conservative variant)")
    a = ap.parse_args(argv)
    iv.SITE_TAIL = (iv.SITE_TAIL[0], a.tail)  # the rule's rows keep their name; the tail is this run's
    suite = get_suite(a.suite)
    run = a.run / suite.name / "intervals"
    ds, folds = prepare_suite(suite, data_dir=a.data_dir, fold_kinds=[a.fold_kind])
    folds, _ = calibration_folds(folds, a.calibration_fraction)
    obs = _observations(suite, ds)
    seeds = list(range(a.seeds))
    rows, _ = iv.interval_rows(suite, ds, folds, run, a.models.split(","), seeds, obs)
    print("## Every model and scale, 90 % interval\n")
    targets = [t for t in suite.targets if any(r["variable"] == t for r in rows)]
    print(reach_table(rows, targets))
    members = [m for m in a.members.split(",") if m]
    if len(members) >= 2:
        if a.out is None:
            ap.error("--out is needed for the ensemble's files (or --members '')")
        name = "ensemble"
        write_ensemble(run, a.out, folds, members, seeds, name)
        erows, _ = iv.interval_rows(suite, ds, folds, a.out, [name], list(range(len(members))), obs)
        for r in erows:
            r["model"] = f"ensemble ({' + '.join(members)})"
            r["scale"] = r["scale"].replace("seed spread", "model spread")
        print(f"\n## Multi-model ensemble ({', '.join(members)}; spread over the model classes)\n")
        print(reach_table(erows + [r for r in rows if r["model"] == "rf" and r["scale"].startswith("quantile")], targets))
    splits = folds[a.fold_kind]
    n_cal = [len(sp.info["calibration_sites"]) for sp in splits]
    n_held = [len(sp.info["heldout_sites"]) for sp in splits]
    p, mean, sd = valid_rule_chance(n_cal, n_held)
    print(f"\n## An exactly valid site-tail rule with {n_cal[0]}–{max(n_cal)} calibration and {sum(n_held)} held-out "
          f"sites ({len(splits)} folds)\n")
    print(f"P(p10-site coverage ≥ 80 %) = {p:.2f}; share of held-out sites covered ≥ 80 %: {mean:.3f} ± {sd:.3f} (s.d.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
