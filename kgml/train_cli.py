"""``kgml train | finetune | evaluate | predict``: the hybrid model from the command line (thin wrappers over
`kgml.experiment`). Heavy imports happen inside the handlers so that ``kgml --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: IGBP classes whose sites a run of each vegetation type is evaluated on.
VEGETATION_IGBP = {"maize": ("CRO",), "soybean": ("CRO",), "grassland": ("GRA",)}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a hybrid model from a TOML config",
                              description="Train and evaluate one configuration (kgml.experiment.run_experiment).")
    p.add_argument("config", help="TOML config (see kgml.config)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue even though CONFIG differs from the run's (both are recorded)")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("finetune", help="fine-tune a trained run with a config delta",
                              description="Start from RUN's weights and preprocessing; CONFIG (TOML) holds only "
                              "the keys that change, e.g. [data] source, [train] steps/trainable.")
    p.add_argument("run", help="directory of the pretrained run")
    p.add_argument("config", help="TOML delta applied to RUN's config")
    p.add_argument("--out", default=None, help="run directory (default: RUN-finetune)")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(handler=_finetune)

    p = subparsers.add_parser("evaluate", help="evaluate a trained run on every site found under a data directory",
                              description="Reads netCDF datasets (site, time) and FLUXNET-style daily tower folders "
                              "under DIR (same layout as ../shared/data), keeps the sites of the run's vegetation "
                              "(IGBP), predicts and scores them.")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", required=True, help="directory to search for datasets")
    p.add_argument("--out", default=None, help="where to write metrics (default: RUN/evaluate)")
    p.add_argument("--all-sites", action="store_true", help="do not filter sites by IGBP class")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("predict", help="predict with a trained run",
                              description="Predictions (CF netCDF) for the sites of a (site, time) netCDF dataset, "
                              "or, without --data, for the run's own data.")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", default=None, help="netCDF dataset with drivers (default: the run's data source)")
    p.add_argument("--out", required=True, help="output netCDF")
    p.set_defaults(handler=_predict)


def run_outputs(workdir: Path) -> list[Path]:
    """The paths a training run writes in ``workdir`` (for `kgml.io.guard_outputs`)."""
    from kgml.io import RUN_FILES

    return [workdir, workdir / "checkpoint", *(workdir / n for n in RUN_FILES), workdir / "nee_heldout.png",
            workdir / "training.png"]


def _train_inputs(cfg, config_path) -> tuple[list, list]:
    inputs = [config_path] + ([cfg.data.source] if cfg.data.source != "synthetic" else [])
    return inputs, [cfg.init_from] if cfg.init_from else []


def _train(args: argparse.Namespace) -> int:
    from kgml.config import load_config
    from kgml.experiment import run_experiment
    from kgml.io import guard_outputs

    cfg = load_config(args.config)
    out = Path(args.out or Path("runs") / cfg.name)
    inputs, runs = _train_inputs(cfg, args.config)
    guard_outputs(run_outputs(out), inputs, runs)
    result = run_experiment(cfg, out, figures=not args.no_figures, resume=args.resume, force=args.force)
    print(result["markdown"])
    print(f"wrote {out}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from kgml.config import load_delta, merge_config
    from kgml.experiment import load_run, run_experiment

    base = load_run(args.run)
    cfg = merge_config(base.config, load_delta(args.config))
    cfg = dataclasses.replace(cfg, init_from=str(Path(args.run).resolve()))
    out = Path(args.out or f"{str(args.run).rstrip('/')}-finetune")
    from kgml.io import guard_outputs

    inputs, runs = _train_inputs(cfg, args.config)
    guard_outputs(run_outputs(out), inputs, [*runs, args.run])
    result = run_experiment(cfg, out, figures=not args.no_figures)
    print(result["markdown"])
    print(f"wrote {out}")
    return 0


def find_datasets(directory: Path) -> list[tuple[str, object]]:
    """(name, dataset) for every readable (site, time) dataset under ``directory``: netCDF files with site
    and time dimensions, and folders of FLUXNET daily tables. Unreadable ones are reported and skipped."""
    import xarray as xr

    from kgml.data.towers import read_fluxnet_dir

    found = []
    for path in sorted(directory.rglob("*.nc")):
        try:
            with xr.open_dataset(path) as f:
                if {"site", "time"} <= set(f.dims):
                    ds = f.load()
                    ds.attrs["source"] = str(path)  # driver errors name this file
                    found.append((str(path.relative_to(directory)), ds))
        except Exception as err:  # a broken file must not stop the survey
            print(f"skipped {path}: {type(err).__name__}: {err}")
    folders = [directory, *sorted(p for p in directory.rglob("*") if p.is_dir())]
    for folder in folders:
        for kwargs in ({"resolution": "DD"}, {"pattern": "*_daily.csv"}):
            try:
                ds = read_fluxnet_dir(folder, errors="warn", **kwargs)
            except Exception:  # not a tower folder (or not this layout): try the next
                continue
            if ds.sizes.get("site", 0):
                found.append((str(folder.relative_to(directory)) or ".", ds))
                break
    return found


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from kgml.experiment import evaluate_predictions, load_run, metrics_markdown, predict_dataset
    from kgml.io import guard_outputs, write_text_atomic
    from kgml.paths import data_dir

    directory = data_dir(args.data_dir)
    out = Path(args.out or Path(args.run) / "evaluate")
    guard_outputs([out / "metrics.json", out / "metrics.md"], [directory], [args.run])
    run = load_run(args.run)
    veg = run.config.data.vegetation
    rows, text = [], []
    for name, ds in find_datasets(directory):
        if not args.all_sites and "igbp" in ds.coords:
            keep = np.isin(ds.igbp.values.astype(str), VEGETATION_IGBP.get(veg, ()))
            ds = ds.isel(site=np.flatnonzero(keep))
        if not ds.sizes.get("site", 0):
            continue
        try:
            pred = predict_dataset(run, ds, missing_static="zero")
        except (KeyError, ValueError) as err:
            print(f"{name}: cannot evaluate ({err})")
            continue
        got = evaluate_predictions(pred, ds, run.config)
        rows += [{**r, "dataset": name} for r in got]
        text.append(metrics_markdown(got, f"{name} ({ds.sizes['site']} sites)"))
    if not rows:
        print(f"no {veg} sites with usable drivers found under {directory}")
        return 1
    write_text_atomic(json.dumps(rows, indent=1, default=float) + "\n", out / "metrics.json")
    write_text_atomic("\n".join(text), out / "metrics.md")
    print("\n".join(text))
    print(f"wrote {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import xarray as xr

    from kgml.experiment import load_data, load_run, predict_dataset
    from kgml.io import guard_outputs, write_netcdf_atomic

    guard_outputs([args.out], [args.data], [args.run])
    run = load_run(args.run)
    if args.data:
        from kgml.data.schema import DataValidationError

        try:
            with xr.open_dataset(args.data) as f:
                ds = f.load()
        except (OSError, ValueError) as err:
            raise DataValidationError(args.data, None, f"cannot open as netCDF: {err}") from None
        from kgml.drivers import check_drivers, model_drivers

        check_drivers(ds, model_drivers(ds, run.config.data.features), args.data)  # errors name this file
    else:
        ds = load_data(run.config)
        guard_outputs([args.out], [run.config.data.source] if run.config.data.source != "synthetic" else [])
    pred = predict_dataset(run, ds, missing_static="zero" if args.data else "raise")
    write_netcdf_atomic(pred, args.out)
    cov = pred.get("driver_coverage")
    note = ""
    if cov is not None:
        partial = int((cov.values < 1.0).sum())
        note = f"; {partial} site(s) with missing drivers: their outputs are NaN on those days (driver_coverage)" \
            if partial else ""
    print(f"wrote {args.out} ({pred.sizes['site']} sites{note})")
    return 0
