"""``kgml calibrate``: a calibration record for a trained run (or an ensemble of runs) from sites it was not
trained on — split-conformal quantiles by site (`kgml.uncertainty`) that ``kgml predict`` and ``kgml map``
turn into interval bounds. Heavy imports inside the handler."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kgml.cliopts import ListAction, add_alias, add_force


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate predictive intervals of a run on sites it was not trained on",
        description="Predict the calibration sites of a (site, time) netCDF dataset with RUN (several runs: an "
        "ensemble, scaled by its spread), take the site-weighted split-conformal quantiles of the normalised "
        "absolute errors at 50/80/90 % for every daily target (and its monthly means), and write a calibration "
        "record (default RUN/calibration.json) that `kgml predict` (daily) and `kgml map` (monthly) read to "
        "write lower/upper bounds. Training and validation sites of any run are refused.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (several: an ensemble)")
    p.add_argument("--dataset", default=None, metavar="FILE.nc",
                   help="netCDF (site, time) with drivers and observed targets (required)")
    add_alias(p, "--data", "dataset")
    p.add_argument("--sites", action=ListAction, default=None, metavar="SITE",
                   help="calibration sites, commas or spaces (default: every site of --dataset that no run "
                        "trained on)")
    p.add_argument("--out", default=None, metavar="FILE", help="record path, JSON (default: FIRST_RUN/calibration.json)")
    add_force(p)
    p.set_defaults(handler=_calibrate)


def calibrate_runs(runs, ds, sites=None, *, run_names=(), data=""):
    """The calibration record (`kgml.uncertainty.calibration_record`) of ``runs`` on ``sites`` of ``ds``
    (default: those no run trained or validated on); raises ``ValueError`` for a site a run trained on,
    fewer than 2 sites, or no observed target."""
    import numpy as np
    import xarray as xr

    from kgml.evaluation import to_monthly
    from kgml.experiment import predict_dataset
    from kgml.uncertainty import calibration_record, conformal_quantiles, nonconformity

    used = set()
    for r in runs:
        if r.split is not None:
            used |= set(map(str, r.split.train.units)) | set(map(str, r.split.val.units))
    have = list(map(str, ds.site.values))
    if sites is None:
        sites = [s for s in have if s not in used]
    sites = list(map(str, sites))
    bad = sorted(set(sites) & used)
    if bad:
        raise ValueError(f"calibration sites {bad[:5]} are training or validation sites of a run")
    missing = sorted(set(sites) - set(have))
    if missing:
        raise ValueError(f"calibration sites {missing[:5]} are not in the data")
    if len(sites) < 2:
        raise ValueError(f"calibration needs at least 2 sites no run trained on; the data leave {len(sites)}")
    sub = ds.sel(site=sites)
    preds = [predict_dataset(r, sub, missing_static="zero") for r in runs]
    targets = [t for t in runs[0].config.data.daily_targets if t in sub and all(t in p for p in preds)]
    if not targets:
        raise ValueError(f"the data observe none of the run's daily targets {list(runs[0].config.data.daily_targets)}")
    stack = xr.concat([p[targets] for p in preds], dim="member", coords="minimal", compat="override")
    mean = stack.mean("member")
    sd = stack.std("member", ddof=1) if len(runs) > 1 else None
    scale = "ensemble spread" if sd is not None else "residual"
    entries = {"daily": {}, "monthly": {}}
    betas = {}
    views = {"daily": (sub, mean, sd, "")}
    obs_m = to_monthly(sub, targets)
    views["monthly"] = (obs_m, to_monthly(mean, targets), None if sd is None else to_monthly(sd, targets), "_monthly")
    for res, (obs, pm, ps, suffix) in views.items():
        for t in targets:
            o, p = obs[f"{t}{suffix}"], pm[f"{t}{suffix}"]
            o, p = xr.align(o.reset_coords(drop=True), p.reset_coords(drop=True), join="inner")
            s, beta = None, 0.0
            if ps is not None:  # σ̂ + β, β the median σ̂ of the paired steps (as `kgml.compare.intervals`)
                s = xr.align(o, ps[f"{t}{suffix}"].reset_coords(drop=True), join="inner")[1]
                v = s.values[np.isfinite(s.values) & np.isfinite(o.values) & np.isfinite(p.values)]
                beta = float(np.median(v)) if v.size else 0.0
                s = s + beta
            scores = {site: nonconformity(o.sel(site=site).values, p.sel(site=site).values,
                                          None if s is None else s.sel(site=site).values) for site in sites}
            if sum(np.isfinite(v).any() for v in scores.values()) < 2:
                continue
            entries[res][t] = conformal_quantiles(scores, train_sites=sorted(used))
            betas[(res, t)] = beta
    rec = calibration_record({k: v for k, v in entries.items() if v}, scale=scale, n_members=len(runs),
                             runs=run_names, data=data)
    for (res, t), beta in betas.items():
        rec["entries"][res][t]["beta"] = beta
    return rec


def _calibrate(args: argparse.Namespace) -> int:
    import xarray as xr

    from kgml.experiment import load_run
    from kgml.io import guard_outputs, refuse_existing, write_text_atomic

    if not args.dataset:
        raise SystemExit("--dataset FILE.nc is required (the calibration sites' drivers and observations)")
    out = Path(args.out) if args.out else Path(args.runs[0]) / "calibration.json"
    guard_outputs([out], [args.dataset])
    refuse_existing([out], args.force)
    with xr.open_dataset(args.dataset) as f:
        ds = f.load()
    runs = [load_run(r) for r in args.runs]
    sites = list(args.sites) if args.sites else None
    rec = calibrate_runs(runs, ds, sites, run_names=args.runs, data=args.dataset)
    write_text_atomic(json.dumps(rec, indent=1) + "\n", out)
    for res, by_var in rec["entries"].items():
        for var, e in by_var.items():
            qs = ", ".join(f"{round(float(k) * 100)} %: {'∞' if v is None else f'{v:.3g}'}" for k, v in e["q"].items())
            print(f"{res} {var}: q ({rec['scale']}) {qs} from {e['n_sites']} sites")
    print(f"wrote {out}")
    return 0
