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
    from kgml.cliopts import add_alias, add_force
    from kgml.config import config_reference

    p = subparsers.add_parser(
        "train", help="train a hybrid model from a TOML config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and evaluate one configuration (kgml.experiment.run_experiment): build the data, split "
        "whole sites, train, and write RUN/config.json, splits.json, checkpoint/, predictions.nc, metrics.json, "
        "metrics.md and figures. Shipped real-data configs: configs/tower_warmwinter.toml (daily towers), "
        "configs/chamber_cosore.toml (soil chambers), configs/yield_il_corn.toml (county yields); then "
        "`kgml evaluate RUN` reproduces the held-out scores. Unknown keys are errors.",
        epilog="CONFIG KEYS (TOML; every key is optional, shown with its default):\n\n" + config_reference())
    p.add_argument("config", help="TOML config: keys below; [data] source names the data (synthetic, a dataset "
                   "builder such as fluxnet_daily, or a netCDF file)")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_force(p, "; with --resume: continue even though CONFIG differs from the run's (both are recorded)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="real-data directory of a builder [data] source (default: the config's data_dir, else "
                        "$KGML_DATA or ../shared/data); recorded in RUN/config.json")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: the config's seed); recorded")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("finetune", help="fine-tune a trained run with a config delta",
                              description="Start from RUN's weights and preprocessing; CONFIG (TOML) holds only "
                              "the keys that change, e.g. [data] source, [train] steps/trainable.")
    p.add_argument("run", help="directory of the pretrained run")
    p.add_argument("config", help="TOML delta applied to RUN's config")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: RUN-finetune)")
    add_force(p)
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: RUN's seed or the delta's)")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures")
    p.set_defaults(handler=_finetune)

    p = subparsers.add_parser("evaluate", help="score a trained run: its own held-out sites, or every site under a "
                              "data directory",
                              description="Without --data-dir: rebuild the run's own dataset exactly as training did "
                              "(the same [data] source, builder options and statics) and score every site, reporting "
                              "the held-out (test) sites — the scores of RUN/metrics.md — and, marked apart, the "
                              "validation and training sites. With --data-dir DIR: a run trained on a dataset builder "
                              "is rebuilt from DIR the same way; any other run is scored on every (site, time) netCDF "
                              "and FLUXNET-style daily tower folder under DIR (sites of the run's vegetation by IGBP), "
                              "with the sites the run was trained on reported separately.")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="directory to read the data from (default: the run's own source)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for metrics.json and metrics.md (default: RUN/evaluate)")
    add_force(p)
    p.add_argument("--all-sites", action="store_true", help="do not filter sites by IGBP class (survey of --data-dir)")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("predict", help="predict with a trained run",
                              description="Predictions (CF netCDF) for the sites of a (site, time) netCDF dataset, "
                              "or, without --dataset, for the run's own data.")
    p.add_argument("run", help="run directory")
    p.add_argument("--dataset", default=None, metavar="FILE.nc",
                   help="(site, time) netCDF dataset with drivers, e.g. from `kgml data build` (default: the "
                        "run's own data)")
    add_alias(p, "--data", "dataset")
    p.add_argument("--out", required=True, metavar="FILE.nc", help="output netCDF")
    add_force(p)
    p.add_argument("--calibration", default=None, metavar="FILE.json",
                   help="calibration record (`kgml calibrate`; default RUN/calibration.json when present): write "
                        "<v>_lower_<pct>/<v>_upper_<pct> bounds linked by CF ancillary_variables")
    p.set_defaults(handler=_predict)


def run_outputs(workdir: Path) -> list[Path]:
    """The paths a training run writes in ``workdir`` (for `kgml.io.guard_outputs`)."""
    from kgml.io import RUN_FILES

    return [workdir, workdir / "checkpoint", *(workdir / n for n in RUN_FILES), workdir / "nee_heldout.png",
            workdir / "training.png"]


def _train_inputs(cfg, config_path) -> tuple[list, list]:
    inputs = [config_path] + ([cfg.data.source] if cfg.data.source != "synthetic" else [])
    return inputs, [cfg.init_from] if cfg.init_from else []


def _overrides(cfg, args):
    """``cfg`` with the command line's ``--seed`` and ``--data-dir`` (they are recorded with the run)."""
    import dataclasses

    if getattr(args, "seed", None) is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if getattr(args, "data_dir", None) is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(args.data_dir)))
    return cfg


def _train(args: argparse.Namespace) -> int:
    from kgml.config import load_config
    from kgml.experiment import run_experiment
    from kgml.io import guard_outputs, refuse_existing

    cfg = _overrides(load_config(args.config), args)
    out = Path(args.out or Path("runs") / cfg.name)
    inputs, runs = _train_inputs(cfg, args.config)
    guard_outputs(run_outputs(out), inputs, runs)
    if not args.resume:
        refuse_existing(run_outputs(out), args.force)
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
    cfg = _overrides(dataclasses.replace(cfg, init_from=str(Path(args.run).resolve())), args)
    out = Path(args.out or f"{str(args.run).rstrip('/')}-finetune")
    from kgml.io import guard_outputs, refuse_existing

    inputs, runs = _train_inputs(cfg, args.config)
    guard_outputs(run_outputs(out), inputs, [*runs, args.run])
    refuse_existing(run_outputs(out), args.force)
    result = run_experiment(cfg, out, figures=not args.no_figures)
    print(result["markdown"])
    print(f"wrote {out}")
    return 0


def find_datasets(directory: Path) -> list[tuple[str, object]]:
    """(name, dataset) for every readable (site, time) dataset under ``directory``: netCDF files with site
    and time dimensions, and folders of FLUXNET daily tables. Unreadable ones are reported and skipped."""
    import xarray as xr

    from kgml.data.formats import is_netcdf
    from kgml.data.towers import read_fluxnet_dir

    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and is_netcdf(p)):  # by content, any name
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
        try:  # daily FLUXNET tables recognised by their columns, whatever they are called
            ds = read_fluxnet_dir(folder, resolution="DD", errors="warn")
        except Exception:  # not a tower folder (or not this layout)
            continue
        if ds.sizes.get("site", 0):
            found.append((str(folder.relative_to(directory)) or ".", ds))
    return found


PART_TITLES = {"test": "held-out (test) sites", "val": "validation sites (early stopping; not held out)",
               "train": "training sites (not held out)", "unseen": "sites not used in training"}


def score_by_part(run, pred, ds, parts=("test", "val", "train")) -> list[dict]:
    """Score rows (`kgml.experiment.evaluate_predictions`) of ``pred`` against ``ds`` for the sites of each
    part of the run's split, each row with ``part``; ``"unseen"`` collects the sites that are in no part."""
    from kgml.experiment import evaluate_predictions

    split = run.split
    have = set(pred.site.values.astype(str)) & set(ds.site.values.astype(str))
    members = {p: [] for p in (*parts, "unseen")}
    for site in sorted(have):
        part = next((p for p in ("test", "val", "train") if split is not None and site in split.part(p).units),
                    "unseen")
        if part in members:
            members[part].append(site)
    rows = []
    for part, sites in members.items():
        if sites:
            got = evaluate_predictions(pred.sel(site=sites), ds.sel(site=sites), run.config)
            rows += [{**r, "part": part} for r in got]
    return rows


def builder_datasets(directory: Path, config) -> list[tuple[str, object]]:
    """(name, dataset) of the `kgml.data.assemble` builders that hold the run's targets and whose folders are
    under ``directory`` — the layouts the benchmark suites read: FLUXNET monthly towers for NEE/GPP/Reco,
    COSORE chambers for Rsoil, county and state yields for crop yield. A builder that cannot read its folder
    is reported and skipped."""
    from kgml.data.assemble import build
    from kgml.paths import DataNotFoundError

    targets = set(config.data.daily_targets) | set(config.data.monthly_targets)
    wanted = (["fluxnet_monthly"] if targets & {"nee", "gpp", "reco"} else []) + \
        (["cosore_daily"] if "rsoil" in targets else []) + (["il_corn", "state_yield"] if config.data.yield_target else [])
    found = []
    for name in wanted:
        try:
            found.append((name, build(name, directory)))
        except DataNotFoundError:
            continue
        except (OSError, ValueError, KeyError) as err:
            print(f"skipped builder {name}: {type(err).__name__}: {err}")
    return found


def _score_config(config, ds):
    """The run's config with monthly targets wherever ``ds`` has ``<t>_monthly`` but no daily ``<t>``."""
    import dataclasses

    monthly = tuple(t for t in config.data.daily_targets if t not in ds and f"{t}_monthly" in ds)
    if not monthly:
        return config
    data = dataclasses.replace(config.data, monthly_targets=tuple(dict.fromkeys(config.data.monthly_targets + monthly)))
    return dataclasses.replace(config, data=data)


def _evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from kgml.config import ConfigError
    from kgml.data.assemble import builder_name
    from kgml.experiment import load_data, load_run, metrics_markdown, predict_dataset
    from kgml.io import guard_outputs, refuse_existing, write_text_atomic
    from kgml.paths import data_dir

    out = Path(args.out or Path(args.run) / "evaluate")
    guard_outputs([out / "metrics.json", out / "metrics.md"], [args.data_dir], [args.run])
    refuse_existing([out / "metrics.json", out / "metrics.md"], args.force)
    run = load_run(args.run)
    veg = run.config.data.vegetation
    rows, text = [], []
    if args.data_dir is None or builder_name(run.config.data.source):
        # The run's own pipeline: same source, builder options, statics and site selection as training.
        config = run.config
        if args.data_dir is not None:
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=str(args.data_dir)))
        if run.split is None:
            raise ConfigError(f"{args.run}: the run records no site split; pass --data-dir to score it on other data")
        ds = load_data(config, progress=True)
        pred = predict_dataset(run, ds, progress=True)
        got = score_by_part(run, pred, ds)
        rows += [{**r, "dataset": config.data.source} for r in got]
        held_out = "test" if run.split.test.units else "val"  # as run_experiment scores
        for part in dict.fromkeys((held_out, "test", "val", "train", "unseen")):
            sel = [r for r in got if r["part"] == part]
            if sel:
                text.append(metrics_markdown(sel, f"{config.name}: {PART_TITLES[part]}"
                                                  f" ({len({r['key'] for r in sel if r['scope'] == 'site'})} sites)"))
    else:
        directory = data_dir(args.data_dir)
        veg = run.config.data.vegetation
        for name, ds in find_datasets(directory) + builder_datasets(directory, run.config):
            if not args.all_sites and "vegetation" in ds.coords:
                labels = ds.vegetation.values.astype(str)
                ds = ds.isel(site=np.flatnonzero(labels == veg))
                if not ds.sizes["site"]:
                    print(f"{name}: no {veg} sites (its sites are {sorted(set(labels))}; --all-sites scores them all)")
            elif not args.all_sites and "igbp" in ds.coords:
                keep = np.isin(ds.igbp.values.astype(str), VEGETATION_IGBP.get(veg, ()))
                ds = ds.isel(site=np.flatnonzero(keep))
            if not ds.sizes.get("site", 0):
                continue
            try:
                pred = predict_dataset(run, ds, missing_static="zero", progress=True)
            except (KeyError, ValueError) as err:
                print(f"{name}: cannot evaluate ({err})")
                continue
            got = score_by_part(dataclasses.replace(run, config=_score_config(run.config, ds)), pred, ds)
            rows += [{**r, "dataset": name} for r in got]
            for part in ("unseen", "test", "val", "train"):
                sel = [r for r in got if r["part"] == part]
                if sel:
                    text.append(metrics_markdown(sel, f"{name}: {PART_TITLES[part]}"
                                                      f" ({len({r['key'] for r in sel if r['scope'] == 'site'})} sites)"))
        if not rows:
            from kgml.progress import error_stream

            print(f"no {veg} sites with usable drivers found under {directory}", file=error_stream())
            return 1
    write_text_atomic(json.dumps(rows, indent=1, default=float) + "\n", out / "metrics.json")
    write_text_atomic("\n".join(text), out / "metrics.md")
    print("\n".join(text))
    print(f"wrote {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import xarray as xr

    from kgml.experiment import load_data, load_run, predict_dataset
    from kgml.io import guard_outputs, refuse_existing, write_netcdf_atomic

    guard_outputs([args.out], [args.dataset], [args.run])
    refuse_existing([args.out], args.force)
    run = load_run(args.run)
    if args.dataset:
        from kgml.data.schema import DataValidationError

        try:
            with xr.open_dataset(args.dataset) as f:
                ds = f.load()
        except (OSError, ValueError) as err:
            raise DataValidationError(args.dataset, None, f"cannot open as netCDF: {err}") from None
        from kgml.data.drivers import check_drivers, model_drivers

        check_drivers(ds, model_drivers(ds, run.config.data.features), args.dataset)  # errors name this file
    else:
        ds = load_data(run.config, progress=True)
        guard_outputs([args.out], [run.config.data.source] if run.config.data.source != "synthetic" else [])
    pred = predict_dataset(run, ds, missing_static="zero" if args.dataset else "raise", progress=True)
    pred, bounded = with_calibrated_bounds(pred, args.calibration, args.run, "daily")
    write_netcdf_atomic(pred, args.out)
    cov = pred.get("driver_coverage")
    note = ""
    if cov is not None:
        partial = int((cov.values < 1.0).sum())
        note = f"; {partial} site(s) with missing drivers: their outputs are NaN on those days (driver_coverage)" \
            if partial else ""
    if bounded:
        note += f"; calibrated interval bounds of {', '.join(bounded)}"
    print(f"wrote {args.out} ({pred.sizes['site']} sites{note})")
    return 0


def with_calibrated_bounds(ds, record_path, run_dir, resolution: str):
    """``ds`` with the interval bounds of a calibration record (`kgml.uncertainty.add_bounds`): the given
    ``record_path``, else ``run_dir``/calibration.json when present; (ds, []) without a record. A record
    that has no entry at ``resolution`` is an error when named explicitly."""
    from kgml.uncertainty import add_bounds, read_calibration_record

    path = Path(record_path) if record_path else Path(run_dir) / "calibration.json"
    if not path.exists():
        if record_path:
            raise FileNotFoundError(f"calibration record {path} does not exist")
        return ds, []
    rec = read_calibration_record(path)
    if record_path and not rec["entries"].get(resolution):
        raise ValueError(f"{path}: the record has no {resolution} entry (has {sorted(rec['entries'])})")
    return add_bounds(ds, rec, resolution)
