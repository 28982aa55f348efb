"""Experiments: `run_experiment(config, workdir)` loads or simulates the data, splits whole sites, fits the
normaliser on the training sites, trains a hybrid (from scratch or from a pretrained run), and writes the
config, the model checkpoint, predictions (netCDF), metrics (JSON + markdown) and figures (PNG).

The pieces (`load_data`, `site_split`, `prepare`, `train_run`, `load_run`, `predict_dataset`,
`evaluate_predictions`) are the Python API that the command line and the demo share.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import xarray as xr

from kgml import __version__
from kgml import synthetic as syn
from kgml.config import (
    MODEL_KINDS,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    save_config,
)
from kgml.data.assemble import BUILDERS, build, builder_name
from kgml.data.drivers import (
    PHYSICS_DRIVERS,
    check_drivers,
    mask_missing_drivers,
    model_drivers,
    require_driver_values,
)
from kgml.data.normalisation import Normaliser
from kgml.data.splits import Part, Split, save_splits
from kgml.evaluation import to_monthly
from kgml.io import atomic_path, write_netcdf_atomic, write_text_atomic
from kgml.metrics import align_labels, score_table
from kgml.models.hybrid import (
    DAYS_PER_YEAR,
    ContextPool,
    HybridModel,
    HybridObjective,
    TaskSpec,
    WindowData,
    build_hybrid,
    build_process_model,
    context_pool,
    predict,
    predictions_to_dataset,
    prepare_windows,
    target_scales,
)
from kgml.models.neural import build_neural, matching_head_width
from kgml.progress import bar
from kgml.synthetic import build_model, make_corpus, soil_respiration_model
from kgml.training import (
    CheckpointError,
    check_resume_config,
    fit,
    load_checkpoint_state,
    load_model,
    paired_sampler,
    read_metadata,
)

__all__ = [
    "Prepared",
    "Run",
    "count_parameters",
    "evaluate_predictions",
    "load_data",
    "load_run",
    "predict_dataset",
    "prepare",
    "run_experiment",
    "site_split",
    "train_run",
]

META_FORMAT = 1
_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def corpus_spec(cfg):
    """`kgml.synthetic.CorpusSpec` of a `CorpusConfig`."""
    by_name = {s.name: s for s in syn.STATES}
    unknown = [s for s in cfg.states if s not in by_name]
    if unknown:
        raise ValueError(f"[data.corpus] states: unknown {unknown}; built-in states are {sorted(by_name)}")
    if cfg.gaps not in ("default", "none"):
        raise ValueError(f"[data.corpus] gaps must be 'default' or 'none', got {cfg.gaps!r}")
    gaps = syn.GapModel.none() if cfg.gaps == "none" else syn.GapModel()
    gaps = dataclasses.replace(gaps, tower_fraction=cfg.tower_fraction)
    return syn.CorpusSpec(
        states=tuple(by_name[s] for s in cfg.states), vegetation=tuple(cfg.vegetation),
        sites_per_block=cfg.sites_per_block, years=cfg.years, prior_sd=cfg.prior_sd,
        varying=syn.SITE_VARYING if cfg.varying is None else tuple(cfg.varying),
        state_shift={k: dict(v) for k, v in cfg.state_shift.items()}, fixed=dict(cfg.fixed),
        covariate_params=tuple(cfg.covariate_params), noise=syn.NoiseModel().scaled(cfg.noise_scale), gaps=gaps,
        monthly_fraction=cfg.monthly_fraction, soil_respiration=cfg.soil_respiration, seed=cfg.seed,
    )


def load_data(config: ExperimentConfig, *, progress: bool = False) -> xr.Dataset:
    """The run's dataset: a synthetic corpus, a real-data builder of `kgml.data.assemble.BUILDERS` (read from
    ``[data] data_dir`` with ``[data] options``), or a (site, time) netCDF file; restricted to the configured
    vegetation (when the dataset has a ``vegetation`` coordinate) and regions."""
    data = config.data
    if data.source == "synthetic":
        ds = make_corpus(corpus_spec(data.corpus), progress=progress)
    elif builder_name(data.source):
        ds = build(data.source, data.data_dir or None, progress=progress, **dict(data.options))
    else:
        if data.options or data.data_dir:
            raise ConfigError(f"[data] options and data_dir apply to a dataset builder source "
                              f"({', '.join(sorted(BUILDERS))}), not to the file {data.source!r}")
        path = Path(data.source)
        if not path.exists():
            raise FileNotFoundError(f"[data] source {path} does not exist (a netCDF file, 'synthetic' or a "
                                    f"dataset builder: {', '.join(sorted(BUILDERS))})")
        with xr.open_dataset(path) as f:
            ds = f.load()
    return select_sites(ds, config)


def select_sites(ds: xr.Dataset, config: ExperimentConfig) -> xr.Dataset:
    data = config.data
    if "vegetation" in ds.coords and data.vegetation:
        ds = ds.isel(site=np.flatnonzero(ds.vegetation.values.astype(str) == data.vegetation))
    if data.regions:
        if data.region not in ds.coords:
            raise KeyError(f"[data] region coordinate {data.region!r} not in the dataset")
        ds = ds.isel(site=np.flatnonzero(np.isin(ds[data.region].values.astype(str), data.regions)))
    if ds.sizes["site"] == 0:
        raise ValueError(f"no site left after selecting vegetation {data.vegetation!r} and regions {data.regions}")
    return ds


def site_split(ds: xr.Dataset, config: ExperimentConfig) -> Split:
    """Whole-site split: ``test_sites`` (or a seeded ``test_fraction`` of the sites) are test, a seeded
    ``val_fraction`` of the rest validation, the others training (at most ``max_train_sites``)."""
    data = config.data
    sites = sorted(ds.site.values.astype(str).tolist())
    rng = np.random.default_rng([config.seed, 7])
    if data.test_sites:
        missing = sorted(set(data.test_sites) - set(sites))
        if missing:
            raise KeyError(f"[data] test_sites not in the dataset: {missing}")
        test = sorted(data.test_sites)
    else:
        n_test = int(round(data.test_fraction * len(sites)))
        test = sorted(rng.permutation(sites)[:n_test].tolist())
    rest = [s for s in sites if s not in set(test)]
    order = rng.permutation(rest).tolist() if rest else []
    n_val = int(round(data.val_fraction * len(rest)))
    if data.val_fraction > 0 and n_val == 0 and len(rest) > 1:
        n_val = 1
    val, train = sorted(order[:n_val]), sorted(order[n_val:])
    if data.max_train_sites:
        train = train[: data.max_train_sites]
    if not train:
        raise ValueError(f"no training sites left ({len(sites)} sites, {len(test)} test, {len(val)} val)")
    return Split(f"sites_seed{config.seed}", "random_sites", config.seed, "site", Part(train), Part(val), Part(test),
                 Part(), {"max_train_sites": data.max_train_sites})


# ---------------------------------------------------------------------------------------------------------
# What travels with a model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything fitted on the training sites that the model needs at prediction time."""

    normaliser: Normaliser
    region_map: dict[str, int]
    scales: dict[str, float]
    task: TaskSpec
    pool: ContextPool | None
    dims: dict[str, int]
    means: dict[str, float] = dataclasses.field(default_factory=dict)  #: target means (initial neural outputs)

    def to_dict(self) -> dict:
        return {"normaliser": self.normaliser.to_dict(), "region_map": self.region_map, "scales": self.scales,
                "task": dataclasses.asdict(self.task), "pool": None if self.pool is None else self.pool.to_dict(),
                "dims": self.dims, "means": self.means}

    @classmethod
    def from_dict(cls, d: dict) -> Prepared:
        task = d["task"]
        return cls(Normaliser.from_dict(d["normaliser"]), dict(d["region_map"]), dict(d["scales"]),
                   TaskSpec(tuple(task["daily"]), tuple(task["monthly"]), bool(task["annual"])),
                   None if d.get("pool") is None else ContextPool.from_dict(d["pool"]), dict(d["dims"]),
                   dict(d.get("means", {})))


def task_of(config: ExperimentConfig) -> TaskSpec:
    return TaskSpec(tuple(config.data.daily_targets), tuple(config.data.monthly_targets), config.data.yield_target)


def prepare(train: xr.Dataset, config: ExperimentConfig) -> Prepared:
    """Fit the normaliser (features + static, training sites only), the region map, the loss scales and the
    context pool (the training sites' locations and observation summaries) on ``train``."""
    data = config.data
    norm = Normaliser.fit(train, list(data.features) + list(data.static))
    task = task_of(config)
    scales = target_scales(train, task)
    scales.update(config.loss.scales)
    region_map = {}
    if data.region in train.coords:
        region_map = {r: i for i, r in enumerate(sorted(set(train[data.region].values.astype(str))))}
    pool = context_pool(train, static=data.static, normaliser=norm, task=task, scales=scales) if data.n_context else None
    dims = {"n_features": len(data.features) + 2, "n_static": len(data.static), "n_summary": 2 * len(task.daily)}
    return Prepared(norm, region_map, scales, task, pool, dims, target_means(train, task))


def target_means(ds: xr.Dataset, task: TaskSpec) -> dict[str, float]:
    """Mean observed value of each daily target and of ``crop_yield`` (where observed)."""
    out = {}
    for name in (*task.daily, *(("crop_yield",) if task.annual else ())):
        if name in ds:
            v = np.asarray(ds[name].values, np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                out[name] = float(v.mean())
    return out


def windows(ds: xr.Dataset, config: ExperimentConfig, prepared: Prepared, *, require_targets: bool,
            missing_static: str = "raise") -> WindowData:
    data = config.data
    return prepare_windows(
        ds, features=data.features, static=data.static, task=prepared.task, normaliser=prepared.normaliser,
        window_days=data.window_days, region=data.region, region_map=prepared.region_map, context=prepared.pool,
        n_context=data.n_context, scales=prepared.scales, require_targets=require_targets,
        missing_static=missing_static,
    )


def process_model(config: ExperimentConfig):
    return build_model(config.data.vegetation, soil_respiration_model(config.model.soil_respiration),
                       soil_water=config.model.soil_water, phenology=config.model.phenology,
                       photosynthesis=config.model.photosynthesis)


def count_parameters(model) -> int:
    """Number of trainable values of a model: the sizes of all its floating-point arrays."""
    return int(sum(np.size(a) for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))))


def new_model(config: ExperimentConfig, prepared: Prepared, key=None) -> eqx.Module:
    """A fresh model of ``config.model.kind``: ``"hybrid"`` (`HybridModel`; untrained: the process model at its
    defaults / fixed values), ``"neural"`` (`kgml.models.neural.NeuralModel` with the hybrid's encoder, location and
    site-attention sizes and heads sized to the hybrid's parameter count) or ``"process"``
    (`kgml.models.hybrid.ProcessModel` at the defaults)."""
    m = config.model
    key = jax.random.PRNGKey(config.seed) if key is None else key
    if (m.technology_site_rate or m.technology_site_level) and m.kind != "hybrid":
        raise ConfigError(f"[model] technology_site_rate / technology_site_level are for kind = 'hybrid', "
                          f"got {m.kind!r}")
    if m.kind == "process":
        return build_process_model(process_model(config), learned=m.learned, global_params=m.global_params,
                                   fixed=dict(m.fixed), technology_trend=m.technology_trend,
                                   technology_reference_year=m.technology_reference_year)
    if m.kind == "neural":
        return _new_neural(config, prepared, key)
    if m.kind != "hybrid":
        raise ConfigError(f"[model] kind must be one of {MODEL_KINDS}, got {m.kind!r}")
    return _new_hybrid(config, prepared, key)


def _shared_sizes(config: ExperimentConfig, prepared: Prepared) -> dict:
    """Encoder, location and site-attention arguments shared by `build_hybrid` and `build_neural`."""
    m = config.model
    return dict(**prepared.dims, encoder=m.encoder, hidden=m.hidden, attention=m.attention, location=m.location,
                location_dim=m.location_dim, n_scales=m.n_scales,
                n_regions=len(prepared.region_map) if m.region_embedding else 0, region_dim=m.region_dim,
                site_attention=m.site_attention and config.data.n_context > 0, n_heads=m.n_heads,
                embed_dim=m.embed_dim, use_summary=m.use_summary)


def _new_neural(config: ExperimentConfig, prepared: Prepared, key):
    m = config.model
    width = m.neural_width
    if not width:
        hybrid = _new_hybrid(config, prepared, key)
        shared = sum(count_parameters(getattr(hybrid, part)) for part in
                     ("encoder", "location", "embed", "context_proj", "site_attention"))
        width = matching_head_width(count_parameters(hybrid) - shared, hidden=m.hidden, embed_dim=m.embed_dim,
                                    annual=prepared.task.annual)
    return build_neural(key=key, **_shared_sizes(config, prepared), head_width=width, annual=prepared.task.annual,
                        scales=prepared.scales, means=prepared.means, technology_trend=m.technology_trend,
                        technology_reference_year=m.technology_reference_year)


def _new_hybrid(config: ExperimentConfig, prepared: Prepared, key) -> HybridModel:
    m = config.model
    return build_hybrid(
        process_model(config), key=key, **_shared_sizes(config, prepared), head_hidden=m.head_hidden,
        learned=m.learned, global_params=m.global_params, time_varying=m.time_varying, fixed=dict(m.fixed),
        residual=m.residual, residual_scale=m.residual_scale, technology_trend=m.technology_trend,
        technology_reference_year=m.technology_reference_year, technology_sites=_technology_sites(config, prepared),
        technology_site_level=m.technology_site_level, technology_site_rate=m.technology_site_rate,
    )


def _technology_sites(config: ExperimentConfig, prepared: Prepared) -> int:
    """Number of per-site trend rates / levels (``model.technology_site_rate`` / ``technology_site_level``: one
    per region of ``data.region``)."""
    m = config.model
    if not (m.technology_site_rate or m.technology_site_level):
        return 0
    what = "technology_site_rate" if m.technology_site_rate else "technology_site_level"
    if not m.technology_trend:
        raise ConfigError(f"[model] {what} needs technology_trend = true")
    if not prepared.region_map:
        raise ConfigError(f"[model] {what} needs the [data] region coordinate {config.data.region!r} "
                          "in the training data (one rate per region; per site: a coordinate of the site IDs)")
    return len(prepared.region_map)


def objective(config: ExperimentConfig, prepared: Prepared) -> HybridObjective:
    lc = config.loss
    return HybridObjective.create(prepared.task, prepared.scales, dict(lc.weights), prior=lc.prior,
                                  prior_sd=lc.prior_sd, residual=lc.residual, monotone=lc.monotone,
                                  yield_consistency=lc.yield_consistency, anomaly=lc.anomaly)


# ---------------------------------------------------------------------------------------------------------
# Train, load
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained (or loaded) model (of ``config.model.kind``) with its config, fitted preprocessing, split and
    training history."""

    model: eqx.Module
    config: ExperimentConfig
    prepared: Prepared
    split: Split | None = None
    history: list | None = None
    directory: Path | None = None

    def meta(self) -> dict:
        return {"format_version": META_FORMAT, "kgml_version": __version__, "model_kind": self.config.model.kind,
                "config": config_to_dict(self.config),
                "prepared": self.prepared.to_dict(), "split": None if self.split is None else self.split.to_dict()}


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(config), sort_keys=True).encode()).hexdigest()[:16]


def train_run(
    config: ExperimentConfig,
    ds: xr.Dataset,
    directory: str | os.PathLike | None = None,
    *,
    init: Run | None = None,
    split: Split | None = None,
    progress: bool = True,
    resume: bool = False,
    description: str = "training",
    force: bool = False,
) -> Run:
    """Split ``ds`` by site, prepare (or reuse the preprocessing of ``init``, a pretrained run whose
    weights it starts from — fine-tuning), and `kgml.training.fit`. With ``directory``, checkpoints go to
    ``directory/checkpoint`` (model, optimiser, trainer state, meta.json with config, normaliser, region map)."""
    check_drivers(ds, model_drivers(ds, config.data.features))
    split = split or site_split(ds, config)
    train_ds = split.select(ds, "train")
    task = task_of(config)
    require_driver_values(train_ds, model_drivers(train_ds, ()), targets=[
        *task.daily, *task.monthly_variables, *(("crop_yield",) if task.annual else ())])
    if init is not None and init.config.model.kind != config.model.kind:
        raise ConfigError(f"[model] kind {config.model.kind!r} cannot start from a run of kind "
                          f"{init.config.model.kind!r}: fine-tuning keeps the model kind")
    if init is not None:
        prepared = init.prepared
        if config.data.n_context:
            prepared = dataclasses.replace(prepared, pool=context_pool(
                train_ds, static=config.data.static, normaliser=prepared.normaliser, task=prepared.task,
                scales=prepared.scales))
        model = init.model
    else:
        prepared = prepare(train_ds, config)
        model = new_model(config, prepared)
    train_w = windows(train_ds, config, prepared, require_targets=True)
    val_w = windows(split.select(ds, "val"), config, prepared, require_targets=True) if split.val.units else None
    run = Run(model, config, prepared, split, None, Path(directory) if directory else None)
    ckpt = Path(directory) / "checkpoint" if directory else None
    sampler = None
    if config.loss.anomaly > 0:  # the anomaly-aware term needs pairs: two years of one site
        if config.data.window_days != DAYS_PER_YEAR:
            raise ConfigError(f"loss.anomaly pairs whole-year windows (data.window_days = {DAYS_PER_YEAR}), "
                              f"got window_days = {config.data.window_days}")
        if config.train.batch_size < 2:
            raise ConfigError(f"loss.anomaly pairs two windows per batch: train.batch_size must be >= 2, got "
                              f"{config.train.batch_size}")
        sampler = paired_sampler(train_w.site, train_w.years, config.train.batch_size, config.train.seed)
    result = fit(model, train_w, val_w, objective(config, prepared), config.train, checkpoint_dir=ckpt,
                 resume=resume, metadata=run.meta(), progress=progress, description=description, force=force,
                 sampler=sampler)
    run.model, run.history = result.model, result.history  # the checkpoint's best.eqx holds result.model
    return run


def load_run(directory: str | os.PathLike, which: str = "best") -> Run:
    """A run written by `train_run`/`run_experiment`: rebuilds the model of the recorded kind from meta.json
    and loads its ``best`` (or ``model``: the last) weights. Errors name what is missing."""
    directory = Path(directory)
    ckpt = directory / "checkpoint" if (directory / "checkpoint").is_dir() else directory
    meta = read_metadata(ckpt)
    if meta.get("format_version") != META_FORMAT:
        raise CheckpointError(f"{ckpt / 'meta.json'}: unsupported format {meta.get('format_version')!r}")
    try:
        config = config_from_dict(meta["config"])
    except ConfigError as err:
        raise ConfigError(f"{ckpt / 'meta.json'}: {err}") from None
    kind = meta.get("model_kind", "hybrid")  # runs written before model kinds existed are hybrids
    if kind != config.model.kind:
        raise CheckpointError(f"{ckpt / 'meta.json'}: model_kind {kind!r} differs from its config's [model] kind "
                              f"{config.model.kind!r}")
    load_checkpoint_state(ckpt)  # every file against its stored SHA-256; a mismatch names the file
    prepared = Prepared.from_dict(meta["prepared"])
    like = new_model(config, prepared)
    model = load_model(ckpt / f"{which}.eqx", like)
    split = Split.from_dict(meta["split"]) if meta.get("split") else None
    return Run(model, config, prepared, split, None, directory)


# ---------------------------------------------------------------------------------------------------------
# Predict, evaluate
# ---------------------------------------------------------------------------------------------------------


_predict_jit = eqx.filter_jit(predict)


def predict_dataset(run: Run, ds: xr.Dataset, *, batch_size: int = 64, missing_static: str = "raise",
                    progress: bool = False) -> xr.Dataset:
    """Predictions of ``run`` for every whole window of every site of ``ds`` as a CF dataset (site, time) +
    (site, year) + learned parameters per site, with the site coordinates of ``ds``. ``missing_static="zero"``
    uses the training mean for static attributes that ``ds`` lacks (e.g. real towers vs a synthetic corpus).
    The drivers are checked first (`kgml.data.drivers.check_drivers`); outputs are NaN where a physics driver is
    missing, recorded per site in ``driver_coverage`` / ``driver_missing`` (`kgml.data.drivers.mask_missing_drivers`)."""
    check_drivers(ds, model_drivers(ds, run.config.data.features))
    data = windows(ds, run.config, run.prepared, require_targets=False, missing_static=missing_static)
    parts = []
    n = len(data)
    size = min(batch_size, n)
    for i in bar(range(0, n, size), desc="predicting (the first batch compiles)", unit="batch",
                 disable=not progress, leave=False):
        # Every chunk has the same shape (the last is padded by repeating windows, then trimmed), so
        # prediction compiles once per model structure and batch size.
        idx = np.minimum(np.arange(i, i + size), n - 1)
        out = jax.tree_util.tree_map(np.asarray, _predict_jit(run.model, data.batch(idx)[0]))
        parts.append(jax.tree_util.tree_map(lambda a, k=min(size, n - i): a[:k], out))
    pred = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
    out = predictions_to_dataset(pred, data, tuple(run.model.specs.values()))
    for c in ("lat", "lon", "state", "vegetation", run.config.data.region):
        if c in ds.coords and "site" in ds[c].dims:
            out = out.assign_coords({c: ("site", ds[c].values, dict(ds[c].attrs))})

    out = mask_missing_drivers(out, ds, [n for n in PHYSICS_DRIVERS if n in ds.data_vars and "time" in ds[n].dims])
    out.attrs.update(Conventions="CF-1.8", title=f"kgml {run.config.model.kind} predictions: {run.config.name}",
                     source=f"kgml {__version__} {type(run.model).__name__}", config_sha256=config_hash(run.config))
    for key, value in sorted(data.extra.get("driver_defaults", {}).items()):
        out.attrs[f"driver_default_{key}"] = value  # an optional driver the data lacked (warned once)
    for key, sites in sorted(data.extra.get("driver_missing", {}).items()):
        out.attrs[f"driver_missing_{key}"] = "no value (outputs NaN) at: " + " ".join(sites)
    for key, sites in sorted(data.extra.get("static_filled", {}).items()):
        out.attrs[f"static_filled_{key}"] = "training mean at: " + " ".join(sites)
    return out


def evaluate_predictions(pred: xr.Dataset, obs: xr.Dataset, config: ExperimentConfig) -> list[dict]:
    """Score rows (`kgml.metrics.score_table`) of the daily targets against observations, against the
    noise-free truth (``true_*``) where the dataset has it, of the monthly targets (monthly means of the daily
    predictions against ``<target>_monthly``) and of yields; grouped by ``data.region``."""
    region = config.data.region if config.data.region in obs.coords else None
    rows = []
    for target in config.data.daily_targets:
        for ref, label in ((target, "obs"), (f"true_{target}", "truth")):
            if ref in obs:
                for r in score_table(pred, obs, {target: ref}, group=region):
                    rows.append({**r, "reference": label})
    monthly = [t for t in config.data.monthly_targets if t in pred and f"{t}_monthly" in obs and "month" in obs.dims]
    if monthly:  # daily predictions → monthly means, paired with the monthly targets by month code

        pm = to_monthly(pred, monthly)
        for target in monthly:
            for ref, label in ((f"{target}_monthly", "obs"), (f"true_{target}_monthly", "truth")):
                if ref in obs:
                    rows += [{**r, "reference": label}
                             for r in score_table(pm, obs, {f"{target}_monthly": ref}, group=region)]
    if config.data.yield_target and "crop_yield" in obs and "year" in obs.dims:
        common = np.intersect1d(pred.year.values, obs.year.values)
        p, o = pred.sel(year=common), obs.sel(year=common)
        for ref, label in (("crop_yield", "obs"), ("true_crop_yield", "truth")):
            if ref in o:
                rows += [{**r, "reference": label} for r in score_table(p, o, {"crop_yield": ref}, group=region)]
    return rows


def metrics_markdown(rows: list[dict], title: str = "") -> str:
    head = "| variable | reference | scope | n | RMSE | bias | R² | NSE |\n|---|---|---|---|---|---|---|---|"
    lines = [f"## {title}", ""] if title else []
    lines.append(head)
    for r in rows:
        if r["scope"] == "site":
            continue
        key = "all sites" if r["scope"] == "all" else r["key"]
        lines.append(f"| {r['variable']} | {r['reference']} | {key} | {r['n']} | {_f(r['rmse'])} | {_f(r['bias'])} | "
                     f"{_f(r['r2'])} | {_f(r['nse'])} |")
    return "\n".join(lines) + "\n"


def _f(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _figures(pred: xr.Dataset, obs: xr.Dataset, history: list | None, directory: Path, target: str = "nee") -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib not installed (pip install 'kgml[plot]'): no figures written", stacklevel=2)
        return []

    paths = []
    sites = [s for s in pred.site.values if s in set(obs.site.values)]
    ref = f"true_{target}" if f"true_{target}" in obs else target
    if target in pred and ref in obs and sites:
        # Pair by calendar date (predictions drop 29 February, observations keep it), never by position.
        pa, oa = align_labels(pred[target].sel(site=sites).transpose("site", ...), obs[ref].sel(site=sites))
        p, o = pa.values, oa.values
        units = pred[target].attrs.get("units", "")
        unit = f" ({units})" if units else ""
        fig, ax = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        ok = np.isfinite(p) & np.isfinite(o)
        ax[0].scatter(o[ok], p[ok], s=2, alpha=0.3)
        lim = [np.nanmin(o[ok]) if ok.any() else 0, np.nanmax(o[ok]) if ok.any() else 1]
        ax[0].plot(lim, lim, "k-", lw=0.7)
        ax[0].set(xlabel=f"observed {ref}{unit}", ylabel=f"predicted {target}{unit}",
                  title=f"{target}: held-out sites")
        if "time" in pa.dims:  # day of a 365-day year: 29 February counts as 28 February
            t = pa.time.dt
            doy = np.asarray(t.dayofyear.values) - (np.asarray(t.is_leap_year.values)
                                                    & (np.asarray(t.dayofyear.values) > 59))
        else:
            doy = np.arange(p.shape[1]) % 365 + 1
        days = np.arange(1, 366)
        for arr, lab in ((o, f"observed {ref}"), (p, f"predicted {target}")):
            cyc = np.full(days.size, np.nan)
            for i, d in enumerate(days):
                v = arr[:, doy == d]
                if np.isfinite(v).any():
                    cyc[i] = np.nanmean(v)
            ax[1].plot(days, cyc, label=lab)
        ax[1].set(xlabel="day of year", ylabel=f"{target}{unit}", title="mean seasonal cycle")
        ax[1].legend()
        path = directory / f"{target}_heldout.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths.append(path)
    if history:
        fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
        steps = [h["step"] for h in history]
        for key in ("train_loss", "val_loss"):
            vals = [h.get(key, np.nan) for h in history]
            ax.plot(steps, vals, label=key)
        ax.set(xlabel="step", ylabel="loss", yscale="log", title="training")
        ax.legend()
        path = directory / "training.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_log(workdir: Path):
    """Log the ``kgml`` loggers at INFO level to ``workdir/run.log`` (appended) while the block runs."""
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "run.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("kgml")
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def write_history_csv(history: list[dict] | None, path: Path) -> Path | None:
    """The loss history (one row per evaluation: step, train_*, val_*) as CSV, atomically."""
    if not history:
        return None
    columns = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for h in history:
        writer.writerow({k: h.get(k, "") for k in columns})
    return write_text_atomic(buf.getvalue(), path)


def run_experiment(
    config: ExperimentConfig,
    workdir: str | os.PathLike,
    *,
    dataset: xr.Dataset | None = None,
    progress: bool = True,
    figures: bool = True,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one configuration; write into ``workdir``: config.json, splits.json, checkpoint/
    (model + meta.json), predictions.nc, metrics.json, metrics.md, history.csv (loss per evaluation),
    run.log (what was done, `logging`) and figures. ``grouping = "per_region"`` trains one model per value of
    ``data.region`` (sub-directories) and pools their test metrics. Returns paths, the score rows and the run(s)."""
    workdir = Path(workdir)
    with run_log(workdir):
        _log.info("run %s (config %s) in %s", config.name, config_hash(config), workdir)
        out = _run_experiment(config, workdir, dataset=dataset, progress=progress, figures=figures, resume=resume,
                              force=force)
        _log.info("wrote %s", ", ".join(sorted(p.name for p in workdir.iterdir())))
    return out


def _run_experiment(config, workdir, *, dataset, progress, figures, resume, force=False) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    if resume and (workdir / "config.json").is_file():  # refuse (unless forced) before config.json is rewritten

        previous = json.loads((workdir / "config.json").read_text())
        if check_resume_config(previous, config_to_dict(config), workdir, force=force):
            write_text_atomic(json.dumps(previous, indent=1) + "\n", workdir / "config.before_resume.json")
    save_config(config, workdir / "config.json")
    ds = select_sites(dataset, config) if dataset is not None else load_data(config, progress=progress)
    _log.info("data: %s, %d sites, %s", config.data.source, ds.sizes["site"],
              ", ".join(f"{k} {v}" for k, v in ds.sizes.items() if k != "site"))
    init = load_run(config.init_from) if config.init_from else None
    if config.grouping == "per_region":
        labels = sorted(set(ds[config.data.region].values.astype(str)))
        results = {}
        for label in labels:
            sub = dataclasses.replace(config, grouping="global", name=f"{config.name}-{label}",
                                      data=dataclasses.replace(config.data, regions=(label,)))
            results[label] = run_experiment(sub, workdir / label, dataset=ds, progress=progress, figures=figures,
                                            resume=resume, force=force)
        preds = xr.concat([r["predictions"] for r in results.values()], dim="site")
        test_sites = sorted(s for r in results.values() for s in r["run"].split.test.units)
        rows = evaluate_predictions(preds.sel(site=test_sites), ds.sel(site=test_sites), config)
        return _write_outputs(workdir, config, preds, rows, None, ds, figures, {"runs": results})
    split = site_split(ds, config)
    save_splits(split, workdir / "splits.json")
    _log.info("split %s: train %s; val %s; test %s", split.name, list(split.train.units), list(split.val.units),
              list(split.test.units))
    run = train_run(config, ds, workdir, init=init, split=split, progress=progress, resume=resume,
                    description=config.name, force=force)
    for h in run.history or []:
        _log.info("step %s: %s", h.get("step"), ", ".join(f"{k} {v:.4g}" for k, v in h.items()
                                                        if k != "step" and isinstance(v, float)))
    write_history_csv(run.history, workdir / "history.csv")
    preds = predict_dataset(run, ds)
    preds = preds.assign_coords(part=("site", _parts(split, preds.site.values.astype(str))))
    test = list(split.test.units)
    label = "held-out sites"
    if not test and split.val.units:
        # No test site in this split: the validation sites are scored, labelled so — they chose the
        # early-stopping step, so they are not independent held-out sites.
        test, label = list(split.val.units), "validation sites (no test sites in the split; not independent)"
        warnings.warn(f"{config.name}: the split has no test sites; scoring the validation sites, labelled so",
                      stacklevel=2)
    rows = evaluate_predictions(preds.sel(site=test), ds.sel(site=test), config) if test else []
    return _write_outputs(workdir, config, preds, rows, run.history, ds, figures, {"run": run}, label=label)


def _parts(split: Split, sites) -> np.ndarray:
    lookup = {u: p for p in ("train", "val", "test") for u in split.part(p).units}
    return np.array([lookup.get(s, "") for s in sites])


def _write_outputs(workdir, config, preds, rows, history, ds, figures, extra,
                   label: str = "held-out sites") -> dict[str, Any]:
    nc = write_netcdf_atomic(preds, workdir / "predictions.nc")
    write_text_atomic(json.dumps({"config_sha256": config_hash(config), "scored": label, "rows": rows}, indent=1,
                                 default=float) + "\n", workdir / "metrics.json")
    md = metrics_markdown(rows, f"{config.name}: {label}")
    write_text_atomic(md, workdir / "metrics.md")
    for r in rows:
        if r["scope"] == "all":
            _log.info("held-out %s vs %s: n %d, RMSE %.4g, R2 %.4g, NSE %.4g", r["variable"], r["reference"], r["n"],
                      r["rmse"], r["r2"], r["nse"])
    figs = []
    if figures:
        test = [s for s in preds.site.values if "part" not in preds.coords or preds.part.sel(site=s) == "test"]
        figs = _figures(preds.sel(site=test) if test else preds, ds, history, workdir)
    return {"workdir": workdir, "predictions": preds, "predictions_path": nc, "rows": rows, "markdown": md,
            "figures": figs, **extra}
