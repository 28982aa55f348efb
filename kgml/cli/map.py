"""``kgml map | explain | scenario``: a trained run (or an ensemble of runs) over gridded forcing — CF netCDF
maps with budgets and PNGs, driver attribution, and delta-method scenarios (thin wrappers over
`kgml.spatial.mapping`, `kgml.spatial.attribution`, `kgml.spatial.scenarios`; heavy imports inside the handlers).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

_DEMO_HELP = (
    "RUN: one or more run directories (several = an ensemble; its spread is the uncertainty layer). With "
    "--train-demo, a RUN directory that does not exist is first filled with a small synthetic demonstration "
    "run (kgml.spatial.mapping.train_demo_run: natural grassland physics, Q10 soil respiration, parameters q10_rh, "
    "rref_rh, lue_max learned from location and mean annual climate; trained for a few seconds on a "
    "synthetic Midwest corpus; member i gets seed i) — a model for showing maps, not a calibrated one."
)
_FORCING_HELP = (
    "gridded forcing: netCDF files, folders of them, or zarr stores (read lazily; e.g. "
    "../shared/data/wfde5_hourly_forcing_uk_2017-01, .../ghcn_cams_monthly_tair_global_0p5deg_2018, "
    ".../bcsd_obs_monthly_se_us_1999). Hourly fields are averaged to days, monthly ones give each day its "
    "month's mean; drivers a grid lacks come from documented assumptions (--assume), recorded in the output."
)


def _common(p: argparse.ArgumentParser) -> None:
    from kgml.cliopts import KeyValueAction, ListAction, add_force

    p.add_argument("runs", nargs="+", metavar="RUN", help=_DEMO_HELP)
    p.add_argument("--forcing", action=ListAction, required=True, metavar="FILE", help=_FORCING_HELP)
    p.add_argument("--bbox", default=None, help="lat_min,lat_max,lon_min,lon_max (degrees; lon in [-180, 180))")
    p.add_argument("--chunk", type=int, default=32, help="cells per block along lat and lon (default 32)")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler: 'threads' (default), 'sync', 'local:N' (a LocalCluster of N worker "
                        "processes) or an address tcp://host:port")
    p.add_argument("--path", default="auto", choices=("auto", "model", "fast"),
                   help="model: encoder + heads + physics per cell-year; fast: parameters once per cell, then "
                        "physics (only for runs whose parameters ignore the encoder); auto: fast when exact")
    p.add_argument("--assume", action=KeyValueAction, default=[],
                   help="override a DriverAssumptions field, e.g. precip=1.5 relative_humidity=0.8")
    p.add_argument("--train-demo", action="store_true", help="train a demonstration run into missing RUN dirs")
    p.add_argument("--demo-steps", type=int, default=60, help="training steps of a demonstration run")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the --train-demo runs (member i gets SEED+i); explain: also of the cell sample "
                        "and the permutations (default 0)")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures")
    add_force(p)


def register(subparsers) -> None:
    from kgml.cliopts import ListAction

    p = subparsers.add_parser("map", help="map a trained run over gridded forcing (CF netCDF, budgets, PNG)",
                              description=__doc__ + "\n" + _DEMO_HELP)
    _common(p)
    p.add_argument("--out", required=True, metavar="FILE.nc",
                   help="output netCDF (FILE.nc; beside it FILE.png, FILE_budget.md/.csv)")
    p.add_argument("--land-cover", default=None, metavar="FILE:VAR",
                   help="(lat, lon) land-cover labels on the forcing grid for per-class budgets")
    p.add_argument("--calibration", default=None,
                   help="calibration record (`kgml calibrate`, monthly entries; default FIRST_RUN/calibration.json "
                        "when present): write <v>_lower_<pct>/<v>_upper_<pct> bounds of the monthly means, linked "
                        "by CF ancillary_variables")
    p.set_defaults(handler=_map)

    p = subparsers.add_parser("explain", help="driver sensitivities, permutation importance, parameter maps",
                              description="Exact derivatives of mean GPP/Reco/NEE to each driver through the "
                              "model, permutation importance, learned-parameter maps, on the forcing's cells. "
                              + _DEMO_HELP)
    _common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--max-cells", type=int, default=2000, help="seeded sample of cells (default 2000)")
    p.add_argument("--drivers", action=ListAction, default=["tair", "sw_in", "vpd", "precip"],
                   help="drivers to attribute to (default: tair, sw_in, vpd, precip)")
    p.add_argument("--mode", default="physics", choices=("physics", "total"),
                   help="physics: shift the process model's drivers only; total: the network's inputs too")
    p.add_argument("--repeats", type=int, default=3, help="permutation repeats")
    p.set_defaults(handler=_explain)

    p = subparsers.add_parser("scenario", help="delta-method scenario: warming, precipitation, CO2, future period",
                              description="Map the baseline and the forcing with deltas; write both maps, the "
                              "difference maps (netCDF + PNG) and a table of budget changes. " + _DEMO_HELP)
    _common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--name", default="scenario", help="scenario name in titles and tables")
    p.add_argument("--warming", type=float, default=0.0, help="°C added to air (and soil) temperature")
    p.add_argument("--precip-change", type=float, default=0.0, help="fractional change of precipitation (-0.1)")
    p.add_argument("--co2", type=float, default=None, help="CO2 mole fraction (ppm)")
    p.add_argument("--co2-change", type=float, default=0.0, help="ppm added to CO2")
    p.add_argument("--shift-years", type=int, default=0, help="relabel the period this many years later")
    p.set_defaults(handler=_scenario)


def _assumptions(items):
    from kgml.spatial.mapping import DriverAssumptions

    fields = {f.name: f.type for f in dataclasses.fields(DriverAssumptions)}
    kw = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--assume {item}: unknown key {key!r}; choose from {sorted(fields)}")
        kw[key] = int(value) if key == "harmonic_min_months" else float(value)
    return DriverAssumptions(**kw)


def _guard(args, outputs) -> None:
    """Refuse outputs that would overwrite the forcing, the land cover or a run's files (`kgml.io.guard_outputs`)."""
    from kgml.io import guard_outputs, refuse_existing

    inputs = list(args.forcing)
    if getattr(args, "land_cover", None):
        inputs.append(args.land_cover.partition(":")[0])
    guard_outputs(outputs, inputs, args.runs)
    refuse_existing([o for o in outputs if not Path(o).is_dir()], args.force)


def _runs(args):
    from kgml.experiment import load_run
    from kgml.spatial.mapping import train_demo_run

    out = []
    for i, r in enumerate(args.runs):
        path = Path(r)
        if not (path / "checkpoint" / "meta.json").exists() and not (path / "meta.json").exists():
            if not args.train_demo:
                raise SystemExit(f"{path}: not a run directory (no checkpoint/meta.json); train one with "
                                 "`kgml train` or pass --train-demo for a demonstration run")
            print(f"training demonstration run {path} (seed {args.seed + i}, {args.demo_steps} steps)")
            train_demo_run(path, seed=args.seed + i, steps=args.demo_steps, progress=True)
        out.append(load_run(path))
    return out


def _scheduler(spec):
    if spec is None or spec in ("threads", "sync"):
        return spec, None
    if spec.startswith("local:"):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=int(spec.split(":", 1)[1]), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    return spec, None


def _forcing(args):
    from kgml.spatial.mapping import open_forcing

    bbox = [float(x) for x in args.bbox.split(",")] if args.bbox else None
    if bbox is not None and len(bbox) != 4:
        raise SystemExit("--bbox needs lat_min,lat_max,lon_min,lon_max")
    return open_forcing(args.forcing, chunks={"lat": args.chunk, "lon": args.chunk}, bbox=bbox)


def _map(args) -> int:
    import xarray as xr

    from kgml.io import write_csv_atomic, write_text_atomic
    from kgml.spatial.mapping import budget_markdown, budget_table, map_run, plot_maps, write_map

    t0 = time.perf_counter()
    out = Path(args.out)
    stem = out.with_suffix("")
    _guard(args, [out, Path(f"{stem}_budget.csv"), Path(f"{stem}_budget.md"), Path(f"{stem}.png")])
    runs = _runs(args)
    forcing = _forcing(args)
    sched, cluster = _scheduler(args.scheduler)
    try:
        ds = map_run(runs, forcing, assumptions=_assumptions(args.assume), path=args.path, scheduler=sched)
    finally:
        if cluster is not None:
            sched.close()
            cluster.close()
    from kgml.cli.train import with_calibrated_bounds

    ds, bounded = with_calibrated_bounds(ds, args.calibration, args.runs[0], "monthly")
    if bounded:
        print(f"calibrated interval bounds of {', '.join(bounded)} (monthly means)")
    write_map(ds, out)
    groups = {}
    if args.land_cover:
        file, _, var = args.land_cover.partition(":")
        with xr.open_dataset(file) as lc:
            groups["land_cover"] = lc[var or list(lc.data_vars)[0]].load().reindex(lat=ds.lat, lon=ds.lon,
                                                                                     method="nearest")
    table = budget_table(ds, groups)
    write_csv_atomic(table, f"{stem}_budget.csv")
    md = budget_markdown(table, f"Budgets: {ds.attrs['title']}")
    write_text_atomic(md, f"{stem}_budget.md")
    fig = None if args.no_figures else plot_maps(ds, f"{stem}.png", title=ds.attrs["title"])
    print(md)
    print(f"mapped {int(ds.mapped.sum())} of {ds.mapped.size} cells × {ds.sizes['time']} months in "
          f"{time.perf_counter() - t0:.1f} s; wrote {out}, {stem}_budget.md/.csv" + (f", {fig}" if fig else ""))
    return 0


def _explain(args) -> int:
    import numpy as np

    from kgml.io import write_csv_atomic, write_text_atomic
    from kgml.spatial import attribution as A
    from kgml.spatial.mapping import grid_sites, write_map

    out = Path(args.out)
    _guard(args, [out, *(out / n for n in ("sensitivity.nc", "importance.csv", "importance.md",
                                           "sensitivity_nee.png", "sensitivity_gpp.png"))])
    runs = _runs(args)
    run = runs[0]
    forcing = _forcing(args)
    assumptions = _assumptions(args.assume)
    ds, cell, _ = grid_sites(forcing, run.config, assumptions=assumptions, max_cells=args.max_cells, seed=args.seed)
    covered = np.isin(ds.time.values.astype("datetime64[D]"),
                      np.unique(np.asarray(forcing.time.values).astype("datetime64[D]")))
    if forcing.attrs.get("resolution") == "monthly":
        months = np.unique(np.asarray(forcing.time.values).astype("datetime64[M]"))
        covered = np.isin(ds.time.values.astype("datetime64[M]"), months)
    sens = A.driver_sensitivities(run, ds, drivers=args.drivers, mode=args.mode, day_mask=covered, progress=True)
    imp = A.permutation_importance(run, ds, drivers=args.drivers, n_repeats=args.repeats, day_mask=covered,
                                   seed=args.seed, progress=True)
    grid = A.to_grid(sens, cell, forcing.lat.values, forcing.lon.values)
    grid.attrs.update(Conventions="CF-1.8", title=f"kgml attribution: {run.config.name}",
                      forcing_sha256=forcing.attrs.get("forcing_sha256", ""), cells=int(cell.shape[1]))
    out.mkdir(parents=True, exist_ok=True)
    write_map(grid, out / "sensitivity.nc")
    write_csv_atomic(imp, out / "importance.csv")
    md = A.importance_markdown(imp, f"Permutation importance (NEE), {cell.shape[1]} cells")
    write_text_atomic(md, out / "importance.md")
    figs = []
    for flux in () if args.no_figures else ("nee", "gpp"):
        figs.append(A.sensitivity_figure(grid, out / f"sensitivity_{flux}.png", flux=flux, drivers=args.drivers,
                                         importance=imp if flux == "nee" else None,
                                         title=f"{run.config.name}: d{flux}/d driver ({args.mode}), parameters"))
    means = {k: float(np.nanmean(sens[k].values)) for k in sens.data_vars if k.startswith("dnee_")}
    print(md)
    print("mean NEE sensitivities:", {k: f"{v:.4g}" for k, v in means.items()})
    print(f"wrote {out / 'sensitivity.nc'}" + "".join(f", {f}" for f in figs if f))
    return 0


def _scenario(args) -> int:
    from kgml.io import write_csv_atomic, write_text_atomic
    from kgml.spatial.mapping import plot_maps, write_map
    from kgml.spatial.scenarios import Scenario, run_scenario

    out = Path(args.out)
    _guard(args, [out, *(out / n for n in ("baseline.nc", "scenario.nc", "difference.nc", "difference.png",
                                           "budget_changes.csv", "budget_changes.md"))])
    runs = _runs(args)
    forcing = _forcing(args)
    scen = Scenario(args.name, warming=args.warming, precip_change=args.precip_change, co2=args.co2,
                    co2_change=args.co2_change, shift_years=args.shift_years)
    import sys
    import warnings

    from kgml.spatial.scenarios import ScenarioWarning, scenario_warnings

    for note in scenario_warnings(runs, scen):  # before the (long) mapping, not after it
        print(f"warning: {note}", file=sys.stderr, flush=True)
    sched, cluster = _scheduler(args.scheduler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScenarioWarning)  # printed above
            res = run_scenario(runs, forcing, scen, assumptions=_assumptions(args.assume), path=args.path,
                               scheduler=sched)
    finally:
        if cluster is not None:
            sched.close()
            cluster.close()
    out.mkdir(parents=True, exist_ok=True)
    write_map(res["baseline"], out / "baseline.nc")
    write_map(res["scenario"], out / "scenario.nc")
    write_map(res["difference"], out / "difference.nc")
    fig = None if args.no_figures else plot_maps(
        res["difference"], out / "difference.png", [v for v in res["difference"].data_vars if str(v).startswith("d_")],
        title=f"{scen.name}: {scen.describe()} (scenario − baseline)")
    table = res["budget"]
    write_csv_atomic(table, out / "budget_changes.csv")
    cols = [c for c in table.columns if c.endswith("_change") or c in ("group", "label", "cells")]
    md = budget_markdown_changes(table[cols], f"{scen.name}: {scen.describe()}")
    if res["warnings"]:
        md += "\n" + "\n".join(f"Warning: {w}." for w in res["warnings"]) + "\n"
    write_text_atomic(md, out / "budget_changes.md")
    print(md)
    print(f"wrote {out}/baseline.nc, scenario.nc, difference.nc, budget_changes.md/.csv" + (f", {fig}" if fig else ""))
    return 0


def budget_markdown_changes(table, title: str) -> str:
    cols = list(table.columns)
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    lines += ["", "Changes scenario − baseline over the same cells (mapped in both): mean rates in gC m-2 d-1 (area-weighted over cells and "
              "months), totals in TgC over the mapped months. NEE > 0 is a source."]
    return "\n".join(lines) + "\n"
