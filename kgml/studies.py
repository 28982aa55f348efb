"""The shared logic of the studies in ``experiments/``: each ``experiments/NAME/run.py`` is a thin script that
calls `run_study(NAME, ...)` with its TOML config; this module loads the real data (`kgml.data.assemble`),
makes whole-unit splits (held-out sites, counties, states or years — never random days), trains the hybrid
and its comparisons (`kgml.experiment`, `kgml.baselines`), scores them on the held-out units
(`kgml.evaluation`: median and bad tail over units) and writes metrics, predictions (CF netCDF) and figures.

A study config is an `ExperimentConfig` TOML (the hybrid's ``[data]``/``[model]``/``[train]``/``[loss]``) plus a
``[study]`` table (`StudySettings`: which models, which folds, how much data) and a ``[quick]`` delta of both
that makes the run small enough for a test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import time
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from kgml.config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict
from kgml.data.splits import Part, Split, kfold_by_site, save_splits
from kgml.io import concat_sites, write_netcdf_atomic, write_text_atomic
from kgml.machine import machine_line

__all__ = [
    "MODEL_LABELS",
    "STUDIES",
    "StudyResult",
    "StudySettings",
    "load_study_config",
    "main",
    "run_study",
    "study_config_path",
]

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"

MODEL_LABELS = {
    "hybrid": "hybrid, one global model",
    "hybrid_per_region": "hybrid, one model per region",
    "hybrid_region_aware": "hybrid, one model with region embeddings",
    "hybrid_pretrained": "hybrid pretrained on synthetic data, fine-tuned",
    "hybrid_damm": "hybrid with the DAMM soil-respiration layer",
    "process": "process model, one global calibration",
    "process_per_region": "process model, calibrated per region",
    "neural": "neural network, same size, no physics",
    "rf": "random forest",
    "gbm": "gradient boosting",
    "lstm": "LSTM on daily drivers",
}
_HYBRID_LIKE = ("hybrid", "hybrid_per_region", "hybrid_region_aware", "hybrid_pretrained", "hybrid_damm",
                "process", "process_per_region", "neural")


# ---------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table of a study config.

    ``models``: model slots (keys of `MODEL_LABELS`); ``folds``: fold kinds — ``"unit_kfold"`` (k-fold over whole
    sites/counties/states, ``k`` folds, at most ``max_folds`` run) and ``"years_out"`` (the last ``test_years``
    years of every unit held out, the ``val_years`` before them for early stopping); ``units``/``n_units``:
    which sites to load (explicit list, or that many spread over the sorted list; empty/0: all);
    ``first_year``/``last_year``: restrict the years (0: all); ``rf_trees``, ``lstm_steps``: baseline sizes;
    ``pretrain_*``: the synthetic pretraining of ``hybrid_pretrained`` (`pretrain_synthetic`; ``pretrain_weather``
    = ``"generator"`` | ``"stations"`` (real site-years, every source required) | ``"available_stations"`` (real
    site-years of whichever ``pretrain_weather_sources`` — default all — are present, the used ones recorded));
    ``towers``: flux towers joined to the
    yield data; ``attribution``: driver attribution of the hybrid; ``group``: region coordinate for
    worst-group scores (default ``data.region``).
    """

    models: tuple[str, ...] = ("hybrid", "process", "rf")
    folds: tuple[str, ...] = ("unit_kfold",)
    k: int = 5
    max_folds: int = 0
    test_years: int = 3
    val_years: int = 1
    val_fraction: float = 0.15
    units: tuple[str, ...] = ()
    n_units: int = 0
    first_year: int = 0
    last_year: int = 0
    rf_trees: int = 300
    lstm_steps: int = 1000
    lstm_hidden: int = 32
    pretrain_steps: int = 200
    pretrain_sites: int = 4
    pretrain_years: int = 2
    pretrain_weather: str = "generator"
    pretrain_weather_sources: tuple[str, ...] = ()
    finetune_fraction: float = 0.5
    towers: tuple[str, ...] = ()
    attribution: bool = False
    group: str = ""
    seed: int = 0


def _settings_from_dict(d: Mapping[str, Any]) -> StudySettings:
    hints = typing.get_type_hints(StudySettings)
    names = {f.name for f in dataclasses.fields(StudySettings)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in section [study]; known keys: {sorted(names)}")
    out = {}
    for k, v in d.items():
        tp = hints[k]
        if typing.get_origin(tp) is tuple:
            if not isinstance(v, list | tuple):
                raise ConfigError(f"[study] {k}: expected a list, got {v!r}")
            v = tuple(str(x) for x in v)
        elif tp is float:
            v = float(v)
        elif tp is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"[study] {k}: expected an integer, got {v!r}")
        out[k] = v
    s = StudySettings(**out)
    bad = sorted(set(s.models) - set(MODEL_LABELS))
    if bad:
        raise ConfigError(f"[study] models: unknown {bad}; choose from {sorted(MODEL_LABELS)}")
    bad = sorted(set(s.folds) - {"unit_kfold", "years_out"})
    if bad:
        raise ConfigError(f"[study] folds: unknown {bad}; choose from ['unit_kfold', 'years_out']")
    if s.pretrain_weather not in _PRETRAIN_WEATHER:
        raise ConfigError(f"[study] pretrain_weather: unknown {s.pretrain_weather!r}; choose from {list(_PRETRAIN_WEATHER)}")
    from kgml.synthetic import REAL_WEATHER_SOURCES

    bad = sorted(set(s.pretrain_weather_sources) - set(REAL_WEATHER_SOURCES))
    if bad:
        raise ConfigError(f"[study] pretrain_weather_sources: unknown {bad}; choose from {list(REAL_WEATHER_SOURCES)}")
    return s


#: ``[study] pretrain_weather`` → (`kgml.synthetic.CorpusSpec` weather, weather_missing).
_PRETRAIN_WEATHER = {"generator": ("generator", "raise"), "stations": ("stations", "raise"),
                     "available_stations": ("stations", "skip")}


def _merge(base: dict, delta: Mapping) -> dict:
    out = dict(base)
    for k, v in delta.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def study_config_path(name: str) -> Path:
    return EXPERIMENTS_DIR / name / "config.toml"


def load_study_config(path: str | os.PathLike, *, quick: bool = False) -> tuple[ExperimentConfig, StudySettings]:
    """The hybrid's `ExperimentConfig` and the `StudySettings` of a study TOML (with its ``[quick]`` delta
    applied when ``quick``). Unknown keys are errors naming their section."""
    import tomllib

    path = Path(path)
    with path.open("rb") as f:
        raw = tomllib.load(f)
    quick_delta = raw.pop("quick", {})
    if quick:
        raw = _merge(raw, quick_delta)
    study = raw.pop("study", {})
    try:
        return config_from_dict(raw), _settings_from_dict(study)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _replace(cfg: ExperimentConfig, **sections) -> ExperimentConfig:
    out = cfg
    for name, changes in sections.items():
        if isinstance(changes, dict):
            out = dataclasses.replace(out, **{name: dataclasses.replace(getattr(out, name), **changes)})
        else:
            out = dataclasses.replace(out, **{name: changes})
    return out


# ---------------------------------------------------------------------------------------------------------
# Data of each study
# ---------------------------------------------------------------------------------------------------------


def _spread(units: Sequence[str], n: int) -> list[str]:
    units = sorted(units)
    if not n or n >= len(units):
        return list(units)
    return [units[i] for i in np.unique(np.linspace(0, len(units) - 1, n).round().astype(int))]


def _restrict(ds: xr.Dataset, s: StudySettings) -> xr.Dataset:
    if s.units:
        missing = sorted(set(s.units) - set(ds.site.values.astype(str)))
        if missing:
            raise KeyError(f"[study] units not in the dataset: {missing}")
        ds = ds.sel(site=list(s.units))
    elif s.n_units:
        ds = ds.sel(site=_spread(ds.site.values.astype(str).tolist(), s.n_units))
    if s.first_year or s.last_year:
        lo, hi = s.first_year or -10_000, s.last_year or 10_000
        ds = ds.isel(time=(ds.time.dt.year.values >= lo) & (ds.time.dt.year.values <= hi))
        if "year" in ds.dims:
            ds = ds.sel(year=(ds.year.values >= lo) & (ds.year.values <= hi))
        if "month" in ds.dims:
            yr = ds.month.values // 12
            ds = ds.isel(month=(yr >= lo) & (yr <= hi))
    return ds


def _has_targets(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """Sites with at least one observation of any of ``names``."""
    keep = np.zeros(ds.sizes["site"], bool)
    for n in names:
        if n in ds:
            v = ds[n]
            keep |= np.isfinite(v.values).reshape(ds.sizes["site"], -1).any(axis=1) if v.dims[0] == "site" else \
                np.isfinite(v.transpose("site", ...).values).reshape(ds.sizes["site"], -1).any(axis=1)
    return ds.isel(site=np.flatnonzero(keep))


def _load_il_corn(root, s: StudySettings) -> xr.Dataset:
    from kgml.data.assemble import il_corn

    years = range(s.first_year, s.last_year + 1) if s.first_year and s.last_year else None
    ds = il_corn(root, years=years)
    return _restrict(ds, dataclasses.replace(s, first_year=0, last_year=0))


def _load_state_yield(root, s: StudySettings) -> xr.Dataset:
    from kgml.data.assemble import fluxnet_daily, state_yield

    ds = _restrict(state_yield(root, crop="corn"), s)
    if s.towers:
        towers = fluxnet_daily(root, sites=list(s.towers))
        keep = [v for v in ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "nee", "gpp", "reco") if v in towers]
        towers = towers[keep].reset_coords([c for c in towers.coords if c not in ds.coords and c not in
                                            ("site", "time")], drop=True)
        ds = ds[[v for v in ds.data_vars if v in keep or v == "crop_yield"]]
        ds = ds.reset_coords([c for c in ds.coords if c not in towers.coords and c not in ("site", "time", "year")],
                             drop=True)
        attrs = dict(ds.attrs)
        ds = xr.concat([ds, towers], dim="site", join="outer", data_vars="all", coords="minimal",
                       compat="override", combine_attrs="drop")
        ds.attrs = attrs | {"source": f"{attrs.get('source', '')}; {towers.attrs.get('source', '')}",
                            "towers": ", ".join(s.towers)}
        for c in ("state", "vegetation", "igbp", "country"):
            if c in ds.coords:
                ds = ds.assign_coords({c: ("site", ds[c].values.astype(str))})
    return ds


def _load_fluxnet_monthly(root, s: StudySettings) -> xr.Dataset:
    from kgml.data.assemble import fluxnet_monthly

    ds = fluxnet_monthly(root, sites=list(s.units) or None)
    ds = _restrict(ds, dataclasses.replace(s, units=()))
    return _has_targets(ds, ("nee_monthly",))


def _load_cosore(root, s: StudySettings) -> xr.Dataset:
    from kgml.data.assemble import cosore_daily

    ds = _restrict(cosore_daily(root), s)
    return _has_targets(ds, ("rsoil",))


def _load_fluxnet_daily(root, s: StudySettings) -> xr.Dataset:
    from kgml.data.assemble import fluxnet_daily

    ds = fluxnet_daily(root, sites=list(s.units) or None)
    return _has_targets(_restrict(ds, dataclasses.replace(s, units=())), ("nee",))


@dataclass(frozen=True)
class StudySpec:
    """What a study reads, which targets it scores at which resolution, and its extra analyses."""

    name: str
    title: str
    load: Callable[[Path, StudySettings], xr.Dataset]
    targets: tuple[str, ...]
    resolution: str
    unit: str  #: what a site is ("county", "state", "tower", "chamber site")
    units: str = ""  #: plural of ``unit``
    extras: tuple[str, ...] = ()


STUDIES: dict[str, StudySpec] = {s.name: s for s in (
    StudySpec("illinois_corn", "Illinois county corn yield (Khaki et al. 2020, weekly Daymet), crop-model physics",
              _load_il_corn, ("crop_yield",), "annual", "county", "counties"),
    StudySpec("midwest_states", "Midwest state corn yields (Thompson 1969): per-state vs global vs region-aware, "
              "with synthetic pretraining", _load_state_yield, ("crop_yield",), "annual", "state", "states"),
    StudySpec("fluxnet_regions", "FLUXNET2015 monthly NEE/GPP/Reco: global vs per-region, attribution, IAV",
              _load_fluxnet_monthly, ("nee", "gpp", "reco"), "monthly", "tower", "towers", ("attribution", "iav")),
    StudySpec("cosore_soil_respiration", "COSORE daily soil respiration: Lloyd–Taylor / DAMM hybrid vs LSTM",
              _load_cosore, ("rsoil",), "daily", "chamber site", "chamber sites", ("failures",)),
    StudySpec("us_ne1_daily", "US-Ne1 irrigated maize (and the daily ICOS towers): process model vs hybrid",
              _load_fluxnet_daily, ("nee", "gpp", "reco"), "daily", "tower", "towers", ("yield", "iav")),
)}


# ---------------------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------------------


def _years(ds: xr.Dataset, targets: Sequence[str]) -> list[int]:
    """Years with an observation of a target."""
    yrs: set[int] = set()
    for t in targets:
        for name in (t, f"{t}_monthly"):
            if name not in ds:
                continue
            da = ds[name]
            ok = np.isfinite(da.transpose("site", ...).values).any(axis=0)
            dim = da.dims[-1] if da.dims[0] == "site" else da.dims[0]
            if dim == "year":
                yrs |= {int(y) for y in ds.year.values[ok]}
            elif dim == "month":
                yrs |= {int(m) // 12 for m in ds.month.values[ok]}
            else:
                yrs |= {int(y) for y in ds.time.dt.year.values[ok]}
    return sorted(yrs)


def make_folds(ds: xr.Dataset, spec: StudySpec, s: StudySettings) -> dict[str, list[Split]]:
    """Fold kinds of the study: whole-unit k-fold (seeded) and/or the last years held out for every unit."""
    scored = sorted(_has_targets(ds, [n for t in spec.targets for n in (t, f"{t}_monthly")]).site.values.astype(str))
    # Units without the study's targets (e.g. a flux tower joined to yield data) are always training units.
    extra = sorted(set(ds.site.values.astype(str)) - set(scored))
    units = scored
    out: dict[str, list[Split]] = {}
    for kind in s.folds:
        if kind == "unit_kfold":
            if len(units) < 2:
                raise ValueError(f"{spec.name}: unit_kfold needs at least 2 {spec.units}, have {units}")
            splits = kfold_by_site(units, min(s.k, len(units)), seed=s.seed, val_fraction=s.val_fraction)
            splits = [dataclasses.replace(sp, train=Part(sorted(set(sp.train.units) | set(extra)))) for sp in splits]
            out[kind] = splits[: s.max_folds] if s.max_folds else splits
        else:
            years = _years(ds, spec.targets)
            if len(years) < s.test_years + 1:
                raise ValueError(f"{spec.name}: years_out needs more than {s.test_years} observed years, have {years}")
            test = years[-s.test_years:]
            rest = years[: -s.test_years]
            val = rest[-s.val_years:] if s.val_years and len(rest) > s.val_years else []
            axis = sorted(set(ds.time.dt.year.values.tolist()))
            train = [y for y in axis if y not in set(test) | set(val)]  # also years of units without targets
            out[kind] = [Split(f"years_out_{test[0]}-{test[-1]}", "years_out", s.seed, "site",
                               Part(sorted(set(units) | set(extra)), train),
                               Part(units if val else (), val or None), Part(units, test), Part(),
                               {"test_years": test, "val_years": val})]
    return out


# ---------------------------------------------------------------------------------------------------------
# One fold: the model slots
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FoldContext:
    """One split of a study: data, split, hybrid config, settings; caches the global hybrid run."""

    spec: StudySpec
    ds: xr.Dataset
    split: Split
    config: ExperimentConfig
    settings: StudySettings
    quick: bool
    pretrained: Any = None
    runs: dict = field(default_factory=dict)

    @property
    def predict_batch(self) -> int:
        return 4 if self.quick else 16

    def part(self, name: str) -> xr.Dataset:
        return self.split.select(self.ds, name)

    def heldout(self) -> xr.Dataset:
        return self.part("test")

    def fit_ds(self) -> xr.Dataset:
        """Training ∪ validation part (for baselines without early stopping)."""
        tr, va = self.split.train, self.split.val
        if not va.units:
            return self.part("train")
        if tr.years is None:
            merged = Part(sorted(set(tr.units) | set(va.units)))
        else:
            merged = Part(sorted(set(tr.units) | set(va.units)), sorted(set(tr.years) | set(va.years or ())))
        return dataclasses.replace(self.split, train=merged, val=Part()).select(self.ds, "train")

    def train(self, cfg: ExperimentConfig, split: Split | None = None, *, init=None, ds=None):
        from kgml.experiment import train_run

        return train_run(cfg, self.ds if ds is None else ds, None, init=init, split=split or self.split,
                         progress=False, description=cfg.name)

    def predict(self, run, ds: xr.Dataset) -> xr.Dataset:
        from kgml.experiment import count_parameters, predict_dataset

        pred = predict_dataset(run, ds, batch_size=self.predict_batch, missing_static="zero")
        pred.attrs["n_parameters"] = count_parameters(run.model)
        return pred

    def global_run(self):
        if "hybrid" not in self.runs:
            self.runs["hybrid"] = self.train(self.config)
        return self.runs["hybrid"]

    def per_region(self, cfg: ExperimentConfig) -> xr.Dataset:
        """One model per value of ``data.region`` (its training units only); held-out units of a region without
        training units use the global model of ``cfg``'s kind."""
        coord = cfg.data.region
        labels = dict(zip(self.ds.site.values.astype(str), self.ds[coord].values.astype(str), strict=True))
        heldout = self.heldout()
        sites = heldout.site.values.astype(str).tolist()
        regions = sorted({labels[u] for u in self.split.train.units})
        preds, notes = [], []
        for r in sorted({labels[s] for s in sites}):
            mine = [s for s in sites if labels[s] == r]
            sub = dataclasses.replace(
                self.split, name=f"{self.split.name}_{r}",
                train=Part([u for u in self.split.train.units if labels[u] == r], self.split.train.years),
                val=Part([u for u in self.split.val.units if labels[u] == r], self.split.val.years
                         if [u for u in self.split.val.units if labels[u] == r] else None),
                test=Part(), ood=Part())
            run = None
            if r in regions:
                try:
                    run = self.train(_replace(cfg, name=f"{cfg.name}-{r}"), sub)
                except ValueError as err:  # e.g. no observed window in a small region
                    notes.append(f"{r}: {err}")
            if run is None:
                notes.append(f"{r}: no training {self.spec.unit} in this region; the global model predicts it")
                key = f"global-{cfg.model.kind}"
                if key not in self.runs:
                    self.runs[key] = self.train(_replace(cfg, name=f"{cfg.name}-global"))
                run = self.runs[key]
            preds.append(self.predict(run, heldout.sel(site=mine)))
        out = concat_sites(preds)
        out.attrs["region_models"] = ", ".join(regions)
        if notes:
            out.attrs["notes"] = "; ".join(notes)
        return out


def _slot_hybrid(ctx: FoldContext) -> xr.Dataset:
    return ctx.predict(ctx.global_run(), ctx.heldout())


def _slot_kind(kind: str, per_region: bool = False):
    def slot(ctx: FoldContext) -> xr.Dataset:
        cfg = _replace(ctx.config, name=f"{ctx.config.name}-{kind}", model={"kind": kind})
        if per_region:
            return ctx.per_region(cfg)
        return ctx.predict(ctx.train(cfg), ctx.heldout())

    return slot


def _slot_hybrid_per_region(ctx: FoldContext) -> xr.Dataset:
    return ctx.per_region(ctx.config)


def _slot_region_aware(ctx: FoldContext) -> xr.Dataset:
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-region-aware", model={"region_embedding": True})
    return ctx.predict(ctx.train(cfg), ctx.heldout())


def _slot_damm(ctx: FoldContext) -> xr.Dataset:
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-damm", model={"soil_respiration": "damm"})
    return ctx.predict(ctx.train(cfg), ctx.heldout())


def _slot_pretrained(ctx: FoldContext) -> xr.Dataset:
    if ctx.pretrained is None:
        raise RuntimeError("hybrid_pretrained needs a pretrained run (run_study makes it)")
    t = ctx.config.train
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-finetuned",
                   train={"steps": max(1, int(t.steps * ctx.settings.finetune_fraction)),
                          "learning_rate": t.learning_rate / 3, "warmup_steps": min(t.warmup_steps, 5)})
    cfg = _replace(cfg, data={"static": ctx.pretrained.config.data.static,
                              "daily_targets": ctx.pretrained.config.data.daily_targets})
    return ctx.predict(ctx.train(cfg, init=ctx.pretrained), ctx.heldout())


def _slot_feature(kind: str):
    def slot(ctx: FoldContext) -> xr.Dataset:
        from kgml.baselines import FeatureBaseline

        cfg = ctx.config
        model = FeatureBaseline(kind, n_estimators=ctx.settings.rf_trees, seed=cfg.seed,
                                static=tuple(s for s in cfg.data.static if s in ctx.ds.coords), n_jobs=2)
        model.fit(ctx.fit_ds(), targets=ctx.spec.targets, features=cfg.data.features, resolution=ctx.spec.resolution)
        pred = model.predict(ctx.heldout(), missing="nan")
        pred.attrs["n_parameters"] = -1
        return pred

    return slot


def _slot_lstm(ctx: FoldContext) -> xr.Dataset:
    from kgml.baselines import LSTMBaseline
    from kgml.experiment import count_parameters

    cfg = ctx.config
    s = ctx.settings
    if ctx.spec.resolution == "annual":
        raise ValueError("the LSTM baseline predicts daily fluxes; annual yields use the feature baselines")
    model = LSTMBaseline(hidden=s.lstm_hidden, steps=s.lstm_steps, batch_size=cfg.train.batch_size,
                         eval_every=max(1, min(50, s.lstm_steps)), seed=cfg.seed,
                         static=tuple(x for x in cfg.data.static if x in ctx.ds.coords))
    model.fit(ctx.part("train"), targets=ctx.spec.targets, features=cfg.data.features,
              resolution=ctx.spec.resolution, val_ds=ctx.part("val") if ctx.split.val.units else None)
    pred = model.predict(ctx.heldout(), missing="nan")
    pred.attrs["n_parameters"] = count_parameters(model.model_)
    return pred


SLOTS: dict[str, Callable[[FoldContext], xr.Dataset]] = {
    "hybrid": _slot_hybrid, "hybrid_per_region": _slot_hybrid_per_region,
    "hybrid_region_aware": _slot_region_aware, "hybrid_pretrained": _slot_pretrained, "hybrid_damm": _slot_damm,
    "process": _slot_kind("process"), "process_per_region": _slot_kind("process", per_region=True),
    "neural": _slot_kind("neural"), "rf": _slot_feature("rf"), "gbm": _slot_feature("gbm"), "lstm": _slot_lstm,
}


# ---------------------------------------------------------------------------------------------------------
# Pretraining on synthetic data (midwest_states)
# ---------------------------------------------------------------------------------------------------------


def pretrain_synthetic(config: ExperimentConfig, s: StudySettings, *, seed: int = 0,
                       data_dir: str | os.PathLike | None = None):
    """A hybrid pretrained on a synthetic maize corpus of the process model (`kgml.synthetic.make_corpus`, states
    IA/IL/NE, ``s.pretrain_sites`` sites × ``s.pretrain_years`` years each), with daily NEE/GPP/Reco and yields as
    targets and the study's drivers as features. The corpus weather is ``s.pretrain_weather``: real site-years
    of the state's stations and counties read from ``data_dir`` (``"stations"``: every source of
    ``s.pretrain_weather_sources`` must be present; ``"available_stations"``: whichever are), or — only when
    configured — the weather generator fitted on Ames, IA (``"generator"``). Returns (run, corpus); the corpus
    attrs record the weather sources and site-years used."""
    from kgml.experiment import train_run
    from kgml.synthetic import REAL_WEATHER_SOURCES, STATES, CorpusSpec, make_corpus

    weather, missing = _PRETRAIN_WEATHER[s.pretrain_weather]
    states = tuple(st for st in STATES if st.name in ("IA", "IL", "NE")) or tuple(STATES)
    spec = CorpusSpec(states=states, vegetation=("maize",), sites_per_block=s.pretrain_sites,
                      years=s.pretrain_years, seed=seed, weather=weather,
                      weather_sources=s.pretrain_weather_sources or tuple(REAL_WEATHER_SOURCES),
                      weather_missing=missing)
    corpus = make_corpus(spec, data_dir=data_dir)
    cfg = _replace(config, name=f"{config.name}-pretrain",
                   data={"daily_targets": ("nee", "gpp", "reco"), "yield_target": True, "static": (),
                         "region": "state", "test_sites": (), "test_fraction": 0.0, "val_fraction": 0.2},
                   model={"region_embedding": False},
                   loss={"scales": {}},
                   train={"steps": s.pretrain_steps})
    return train_run(cfg, corpus, None, progress=False, description="pretrain (synthetic)"), corpus


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------


def _obs(spec: StudySpec, ds: xr.Dataset) -> xr.Dataset:
    names = []
    for t in spec.targets:
        names += [f"{t}_monthly"] if spec.resolution == "monthly" else [t]
    return ds[[n for n in names if n in ds]]


def _scored(pred: xr.Dataset, spec: StudySpec) -> xr.Dataset:
    """The study's targets (daily predictions averaged to months for monthly studies) + flux triple + θ."""
    from kgml.evaluation import to_monthly

    keep = {}
    fluxes = list(dict.fromkeys((*spec.targets, "nee", "gpp", "reco")))
    if spec.resolution == "monthly":
        daily = [v for v in fluxes if v in pred and "time" in pred[v].dims and f"{v}_monthly" not in pred]
        if daily:
            pred = pred.merge(to_monthly(pred[daily], daily), compat="override")
        keep.update({f"{v}_monthly": pred[f"{v}_monthly"] for v in fluxes if f"{v}_monthly" in pred})
    else:
        keep.update({v: pred[v] for v in fluxes if v in pred and "time" in pred[v].dims})
    if "crop_yield" in pred:
        keep["crop_yield"] = pred["crop_yield"]
    for v in pred.data_vars:
        if str(v).startswith("theta_") and pred[v].dims == ("site",):
            keep[str(v)] = pred[v]
    out = xr.Dataset(keep)
    drop = [c for c in out.coords if c not in ("site", "time", "month", "year") and out[c].dims != ("site",)]
    out = out.reset_coords(drop, drop=True)
    out.attrs = {k: v for k, v in pred.attrs.items() if isinstance(v, str | int | float)}
    return out


def _combine(preds: list[xr.Dataset]) -> xr.Dataset:
    out = None
    for p in preds:
        out = p if out is None else out.combine_first(p)
    return out


def _variables(spec: StudySpec) -> dict[str, str]:
    return {t: t for t in spec.targets}


def _lead(var: str) -> str:
    from kgml.evaluation import metric_order

    return metric_order(var)[0]


@dataclass
class StudyResult:
    """Where the study wrote its outputs, its summary rows, the per-model status and the headline table."""

    name: str
    directory: Path
    rows: list[dict]
    status: dict[str, str]
    markdown: str
    files: list[Path]
    folds: dict[str, list[Split]]


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


_TAIL = {"r2": "r2_p10", "rmse": "rmse_p90", "nse": "nse_p10", "kge": "kge_p10", "bias": "abs_bias_p90"}
_NAME = {"r2": "R²", "rmse": "RMSE", "nse": "NSE", "kge": "KGE", "bias": "bias"}


def metrics_markdown(spec: StudySpec, rows: list[dict], status: dict, models: Sequence[str],
                     folds: dict[str, list[Split]], *, quick: bool, command: str = "") -> str:
    from kgml.evaluation import metric_order

    lines = [f"# {spec.name}{' (quick)' if quick else ''}", "", spec.title, ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    for kind, splits in folds.items():
        for var in spec.targets:
            order = [m for m in metric_order(var) if m != "bias"][:3] + ["bias"]
            head = ["model", spec.units] + [f"{_NAME[m]} median / {_TAIL[m].rsplit('_', 1)[-1]}" for m in order] \
                + [f"pooled {_NAME[order[0]]}", "fit s"]
            lines += [f"## {kind} ({len(splits)} fold{'s' if len(splits) > 1 else ''}) — {var} ({spec.resolution})", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for m in models:
                r = next((r for r in rows if r["model"] == m and r["fold_kind"] == kind and r["variable"] == var),
                         None)
                if r is None:
                    lines.append(f"| {m} | {status.get(m, 'not run')} |" + " |" * (len(head) - 2))
                    continue
                cells = [m, str(r["n_sites"])] + [f"{_fmt(r[f'{k}_median'])} / {_fmt(r[_TAIL[k]])}" for k in order] \
                    + [_fmt(r[f"pooled_{order[0]}"]), _fmt(round(r["fit_seconds"], 1))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += [f"Held-out whole {spec.units} (unit_kfold) or whole years of every {spec.unit} (years_out); "
              "median and bad tail over held-out units (p10 of R², NSE, KGE; p90 of RMSE and |bias|); pooled = all "
              "held-out unit-steps together.", "",
              "Models: " + "; ".join(f"`{m}` {MODEL_LABELS[m]}" for m in models), ""]
    problems = {m: v for m, v in status.items() if v != "ok"}
    if problems:
        lines += ["Status: " + "; ".join(f"`{m}`: {v}" for m, v in problems.items()), ""]
    return "\n".join(lines)


def _score(spec: StudySpec, preds: dict[tuple[str, str], xr.Dataset], obs: xr.Dataset, group: str | None,
           fit_seconds: dict) -> tuple[list[dict], dict]:
    from kgml import evaluation as ev

    rows, site_scores = [], {}
    for (kind, m), pred in preds.items():
        sc = ev.score_sites(pred, obs, _variables(spec), resolution=spec.resolution, group=group)
        site_scores[(kind, m)] = sc
        summ = ev.summarise(sc)
        for var, e in summ["variables"].items():
            rows.append({"model": m, "fold_kind": kind, "variable": var, "n_sites": e["n_sites"], "n": e["n"],
                         **{f"{k}_median": v for k, v in e["median"].items()}, **e["tail"],
                         **{f"pooled_{k}": v for k, v in e["pooled"].items()},
                         "worst_group": {k: w for k, w in e.get("worst_group", {}).items()},
                         "fit_seconds": float(fit_seconds.get((kind, m), math.nan)),
                         "n_parameters": int(pred.attrs.get("n_parameters", -1))})
    return rows, site_scores


def _site_scores_dataset(site_scores: dict, kind: str, models: Sequence[str]) -> xr.Dataset | None:
    parts = [(m, site_scores[(kind, m)]) for m in models if (kind, m) in site_scores]
    if not parts:
        return None
    keep = ["rmse", "bias", "r2", "nse", "kge", "n"]
    ds = xr.concat([sc[keep].reset_coords(drop=True).expand_dims(model=[m]) for m, sc in parts], dim="model",
                   join="outer")
    ds.attrs.update(Conventions="CF-1.8", title=f"per-site held-out scores ({kind})",
                    comment=parts[0][1].attrs.get("comment", ""))
    return ds


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------


def _plt():
    from kgml.io import pyplot

    return pyplot()


def _save(fig, path: Path) -> Path:
    from kgml.io import write_png_atomic

    return write_png_atomic(fig, path, dpi=100)


def _fig_skill(spec: StudySpec, rows: list[dict], models: Sequence[str], directory: Path) -> list[Path]:
    plt = _plt()
    out = []
    kinds = list(dict.fromkeys(r["fold_kind"] for r in rows))
    for kind in kinds:
        fig, axes = plt.subplots(1, len(spec.targets), figsize=(4 * len(spec.targets), 3.6), squeeze=False,
                                 constrained_layout=True)
        for ax, var in zip(axes[0], spec.targets, strict=True):
            lead = _lead(var)
            ms = [m for m in models if any(r["model"] == m and r["fold_kind"] == kind and r["variable"] == var
                                           for r in rows)]
            med = [next(r for r in rows if r["model"] == m and r["fold_kind"] == kind and r["variable"] == var)
                   for m in ms]
            x = np.arange(len(ms))
            ax.bar(x, [r[f"{lead}_median"] for r in med], color="tab:blue", label="median")
            ax.scatter(x, [r[_TAIL[lead]] for r in med], color="tab:red", zorder=3, label=_TAIL[lead])
            ax.set_xticks(x, ms, rotation=45, ha="right", fontsize=8)
            ax.set(title=f"{var}: {_NAME[lead]} over held-out {spec.units}", ylabel=_NAME[lead])
            ax.axhline(0, color="k", lw=0.5)
            ax.legend(fontsize=7)
        fig.suptitle(f"{spec.name} — {kind}")
        out.append(_save(fig, directory / f"skill_{kind}.png"))
    return out


def _fig_scatter(spec: StudySpec, preds: dict, obs: xr.Dataset, models: Sequence[str], directory: Path) -> list[Path]:
    from kgml.evaluation import paired

    plt = _plt()
    out = []
    for kind in dict.fromkeys(k for k, _ in preds):
        ms = [m for m in models if (kind, m) in preds][:4]
        fig, axes = plt.subplots(len(spec.targets), len(ms), figsize=(3.2 * len(ms), 3.0 * len(spec.targets)),
                                 squeeze=False, constrained_layout=True)
        for i, var in enumerate(spec.targets):
            for j, m in enumerate(ms):
                ax = axes[i, j]
                try:
                    p, o = paired(preds[(kind, m)], obs, var, resolution=spec.resolution)
                except (KeyError, ValueError):
                    ax.set_visible(False)
                    continue
                pv, ov = p.values.ravel(), o.values.ravel()
                ok = np.isfinite(pv) & np.isfinite(ov)
                ax.scatter(ov[ok], pv[ok], s=4, alpha=0.4)
                if ok.any():
                    lim = [min(ov[ok].min(), pv[ok].min()), max(ov[ok].max(), pv[ok].max())]
                    ax.plot(lim, lim, "k-", lw=0.6)
                from kgml.variables import units_label

                ax.set(title=f"{m}: {var}", xlabel=f"observed{units_label(var)}", ylabel=f"predicted{units_label(var)}")
        out.append(_save(fig, directory / f"observed_vs_predicted_{kind}.png"))
    return out


# ---------------------------------------------------------------------------------------------------------
# Extra analyses
# ---------------------------------------------------------------------------------------------------------


def _extra_iav(spec: StudySpec, preds: dict, obs: xr.Dataset, models: Sequence[str]) -> tuple[str, dict]:
    """Scale decomposition of NEE (site mean, seasonal cycle, anomalies, inter-annual variability)."""
    from kgml.evaluation import decomposition_scores

    lines = ["## NEE by time scale (held-out units, pooled)", "",
             "| fold kind | model | component | R² | RMSE | n |", "|---|---|---|---|---|---|"]
    out = {}
    for (kind, m), pred in preds.items():
        if m not in models:
            continue
        try:
            d = decomposition_scores(pred, obs, "nee", resolution=spec.resolution)
        except (KeyError, ValueError) as err:
            out[f"{kind}/{m}"] = {"error": str(err)}
            continue
        out[f"{kind}/{m}"] = d
        for comp, sc in d.items():
            if isinstance(sc, Mapping):
                lines.append(f"| {kind} | {m} | {comp} | {_fmt(sc.get('r2'))} | {_fmt(sc.get('rmse'))} | "
                             f"{sc.get('n', '')} |")
    return "\n".join(lines) + "\n", out


def _extra_failures(spec: StudySpec, site_scores: dict, ds: xr.Dataset, models: Sequence[str]) -> tuple[str, dict]:
    """Which held-out sites fail (lowest NSE) and what they share: climate zone, IGBP class, climate, fills."""
    lines = ["## Where soil respiration fails (held-out sites)", ""]
    out = {}
    for (kind, m), sc in site_scores.items():
        if m not in models:
            continue
        nse = sc["nse"].sel(variable=spec.targets[0]).to_series().dropna()
        kge = sc["kge"].sel(variable=spec.targets[0]).to_series()
        order = nse.sort_values().index.tolist()
        recs = []
        for site in order:
            rec = {"site": site, "nse": float(nse[site]), "kge": float(kge.get(site, np.nan))}
            for c in ("igbp", "climate_zone", "mat", "map", "clim_distance_km", "colocated_tower"):
                if c in ds.coords:
                    v = ds[c].sel(site=site).values
                    rec[c] = v.item() if hasattr(v, "item") else v
            if "swc_source" in ds:
                src = ds["swc_source"].sel(site=site).values
                rsoil = np.isfinite(ds["rsoil"].sel(site=site).values)
                rec["swc_measured_share"] = float(np.mean(src[rsoil] <= 1)) if rsoil.any() else math.nan
            recs.append(rec)
        out[f"{kind}/{m}"] = recs
        lines += [f"### {kind} — {m}: worst five and best two of {len(recs)} sites", "",
                  "| site | NSE | KGE | IGBP | climate zone | MAT °C | MAP mm | swc measured |",
                  "|---|---|---|---|---|---|---|---|"]
        for rec in recs[:5] + recs[-2:]:
            lines.append(f"| {rec['site']} | {_fmt(rec['nse'])} | {_fmt(rec['kge'])} | {rec.get('igbp', '')} | "
                         f"{rec.get('climate_zone', '')} | {_fmt(float(rec.get('mat', np.nan)))} | "
                         f"{_fmt(float(rec.get('map', np.nan)))} | {_fmt(rec.get('swc_measured_share', np.nan))} |")
        if "climate_zone" in ds.coords and recs:
            zones: dict[str, list[float]] = {}
            for rec in recs:
                zones.setdefault(str(rec.get("climate_zone", "")), []).append(rec["nse"])
            lines += ["", "| climate zone | sites | median NSE |", "|---|---|---|"]
            for z, v in sorted(zones.items(), key=lambda kv: np.median(kv[1])):
                lines.append(f"| {z} | {len(v)} | {_fmt(float(np.median(v)))} |")
        lines.append("")
    return "\n".join(lines) + "\n", out


def _extra_yield(spec: StudySpec, preds: dict, models: Sequence[str]) -> tuple[str, dict]:
    """Grain yield the crop layer predicts at the maize tower in the held-out years (no yield observed here)."""
    lines = ["## Predicted grain yield (t ha-1) at the maize tower, held-out years", ""]
    out = {}
    for (kind, m), pred in preds.items():
        if m not in models or "crop_yield" not in pred or "year" not in pred.dims:
            continue
        sites = [s for s in pred.site.values.astype(str) if "vegetation" not in pred.coords
                 or str(pred.vegetation.sel(site=s).values) == "maize"]
        for s in sites:
            y = pred["crop_yield"].sel(site=s).to_series().dropna()
            out[f"{kind}/{m}/{s}"] = {int(k): float(v) for k, v in y.items()}
            lines.append(f"- {kind}, {m}, {s}: " + ", ".join(f"{int(k)}: {v:.2f}" for k, v in y.items()))
    lines.append("")
    return "\n".join(lines) + "\n", out


def _extra_attribution(ctx_runs: list[tuple[Any, xr.Dataset]], ds: xr.Dataset, directory: Path) -> tuple[str, dict]:
    """Driver sensitivities of NEE (∂NEE/∂driver through the physics) at the held-out towers, by IGBP group."""
    try:
        from kgml.attribution import driver_sensitivities
    except ImportError as err:
        return f"attribution not available: {err}\n", {}
    parts = []
    for run, held in ctx_runs:
        try:
            # 29 February dropped here as the windows drop it (the day mask is on the window days).
            leap = (held.time.dt.month.values == 2) & (held.time.dt.day.values == 29)
            parts.append(driver_sensitivities(run, held.isel(time=~leap), drivers=("tair", "sw_in", "vpd", "precip")))
        except Exception as err:  # noqa: BLE001 - an optional analysis; its failure is reported, not fatal
            return f"attribution failed: {type(err).__name__}: {err}\n", {}
    sens = concat_sites(parts)
    write_netcdf_atomic(sens, directory / "attribution.nc")
    names = [v for v in sens.data_vars if sens[v].dims == ("site",) and "nee" in str(v) and "theta" not in str(v)]
    names = [v for v in names if any(d in str(v) for d in ("tair", "sw_in", "vpd", "precip"))]
    group = "igbp_group" if "igbp_group" in ds.coords else None
    lines = ["## Which drivers govern NEE where (∂NEE/∂driver through the physics, held-out towers)", ""]
    out: dict[str, Any] = {"variables": names}
    if not names:
        return "\n".join(lines + [f"no NEE sensitivity variables in the attribution output ({list(sens.data_vars)})", ""]), out
    labels = ds[group].sel(site=sens.site.values).values.astype(str) if group else np.array(["all"] * sens.sizes["site"])
    lines += ["| " + (group or "group") + " | sites | " + " | ".join(names) + " | dominant |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for g in sorted(set(labels)):
        sel = labels == g
        vals = {n: float(np.nanmedian(np.asarray(sens[n].values)[sel])) for n in names}
        # Sensitivities per unit of each driver are not comparable; the dominant driver is the one with the
        # largest |sensitivity × spread of that driver over the group's towers| (an effect per 1 SD).
        effect = {}
        for n in names:
            drv = next(d for d in ("sw_in", "tair", "vpd", "precip") if d in str(n))
            spread = float(np.nanstd(ds[drv].sel(site=sens.site.values[sel]).values)) if drv in ds else 1.0
            effect[n] = abs(vals[n]) * spread
        dom = max(effect, key=effect.get)
        out[g] = {"n_sites": int(sel.sum()), "median": vals, "dominant": dom}
        lines.append(f"| {g} | {int(sel.sum())} | " + " | ".join(_fmt(vals[n]) for n in names) + f" | {dom} |")
    lines.append("")
    return "\n".join(lines) + "\n", out


# ---------------------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------------------


def _fixed_scales(config: ExperimentConfig, ds: xr.Dataset) -> ExperimentConfig:
    """Loss scales fixed once per study (the spread of each target over all units), so every fold and region
    shares one compiled training step; they weigh the loss only."""
    from kgml.experiment import task_of
    from kgml.hybrid import target_scales

    scales = target_scales(ds, task_of(config))
    scales.update(config.loss.scales)
    return _replace(config, loss={"scales": scales})


def run_study(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    quick: bool = False,
    config_path: str | os.PathLike | None = None,
    progress: bool = True,
    command: str = "",
) -> StudyResult:
    """Run study ``name`` (a key of `STUDIES`) with its config (default ``experiments/NAME/config.toml``):
    every model of ``[study] models`` on every fold, then write into ``<out>/<name>/``: ``config.json``,
    ``study.json``, ``splits.json``, ``predictions/<fold_kind>_<model>.nc`` (held-out predictions, CF),
    ``site_scores_<fold_kind>.nc``, ``metrics.json``, ``metrics.md``, ``summary.json`` and PNG figures."""
    from tqdm.auto import tqdm

    from kgml.paths import data_dir as resolve_data_dir

    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; studies are {sorted(STUDIES)}")
    spec = STUDIES[name]
    started = time.perf_counter()
    config, s = load_study_config(config_path or study_config_path(name), quick=quick)
    root = Path(data_dir) if data_dir is not None else resolve_data_dir()
    directory = Path(out) / name
    (directory / "predictions").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = spec.load(root, s)
    from kgml.experiment import select_sites

    ds = select_sites(ds, config)  # the configured vegetation (process model) and regions only
    config = _fixed_scales(config, ds)
    folds = make_folds(ds, spec, s)
    write_text_atomic(json.dumps(config_to_dict(config), indent=1) + "\n", directory / "config.json")
    write_text_atomic(json.dumps({**dataclasses.asdict(s), "quick": quick, "data_dir": str(root)}, indent=1) + "\n",
                      directory / "study.json")
    save_splits([sp for v in folds.values() for sp in v], directory / "splits.json")

    pretrained, pretrain_weather = None, {}
    if "hybrid_pretrained" in s.models:
        pretrained, corpus = pretrain_synthetic(config, s, seed=s.seed, data_dir=root)
        pretrain_weather = {k: v for k, v in corpus.attrs.items() if k.startswith("weather")}

    status: dict[str, str] = {}
    preds: dict[tuple[str, str], list[xr.Dataset]] = {}
    fit_seconds: dict[tuple[str, str], float] = {}
    attribution_runs = []
    jobs = [(kind, sp) for kind, v in folds.items() for sp in v]
    bar = tqdm(total=len(jobs) * len(s.models), desc=name, unit="fit", disable=not progress)
    for kind, split in jobs:
        ctx = FoldContext(spec, ds, split, config, s, quick, pretrained)
        for m in s.models:
            bar.set_postfix_str(f"{kind} {split.name[:20]} {m}")
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    pred = SLOTS[m](ctx)
            except (ValueError, KeyError, NotImplementedError) as err:
                status[m] = f"failed: {type(err).__name__}: {err}"[:300]
                bar.update()
                continue
            status.setdefault(m, "ok")
            preds.setdefault((kind, m), []).append(_scored(pred, spec))
            fit_seconds[(kind, m)] = fit_seconds.get((kind, m), 0.0) + time.perf_counter() - t0
            bar.update()
        if s.attribution and "hybrid" in ctx.runs and kind == "unit_kfold":
            attribution_runs.append((ctx.runs["hybrid"], ctx.heldout()))
    bar.close()

    combined = {k: _combine(v) for k, v in preds.items()}
    files = []
    from kgml import __version__

    for (kind, m), pred in combined.items():
        pred.attrs.update(Conventions="CF-1.8", title=f"kgml study {name}: held-out predictions of {m} ({kind})",
                          source=f"kgml {__version__} kgml.studies; data: {ds.attrs.get('source', '')}"[:2000],
                          history=f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {command or 'run_study'}",
                          model=m, model_label=MODEL_LABELS[m], fold_kind=kind, study=name,
                          quick=int(quick))
        files.append(write_netcdf_atomic(pred, directory / "predictions" / f"{kind}_{m}.nc"))
    obs = _obs(spec, ds)
    group = s.group or (config.data.region if config.data.region in ds.coords else None)
    rows, site_scores = _score(spec, combined, obs, group, fit_seconds)
    for kind in folds:
        sc = _site_scores_dataset(site_scores, kind, s.models)
        if sc is not None:
            files.append(write_netcdf_atomic(sc, directory / f"site_scores_{kind}.nc"))
    md = metrics_markdown(spec, rows, status, s.models, folds, quick=quick, command=command)
    extras: dict[str, Any] = {}
    if pretrain_weather:
        extras["pretrain_weather"] = pretrain_weather
        md += (f"\nPretraining corpus weather (`hybrid_pretrained`): {pretrain_weather.get('weather', '')}"
               + (f"; sources {pretrain_weather['weather_sources_used']}" if pretrain_weather.get(
                   "weather_sources_used") else "") + ".\n")
    if "iav" in spec.extras:
        text, extras["iav"] = _extra_iav(spec, combined, obs, s.models)
        md += "\n" + text
    if "failures" in spec.extras:
        text, extras["failures"] = _extra_failures(spec, site_scores, ds, [m for m in s.models if m in
                                                                          ("hybrid", "hybrid_damm", "lstm")])
        md += "\n" + text
    if "yield" in spec.extras:
        # Models with the crop layer only: the neural model's yield head has no yield observation to learn from.
        text, extras["yield"] = _extra_yield(spec, combined, [m for m in s.models if m in _HYBRID_LIKE
                                                              and m != "neural"])
        md += "\n" + text
    if "attribution" in spec.extras and s.attribution and attribution_runs:
        text, extras["attribution"] = _extra_attribution(attribution_runs, ds, directory)
        md += "\n" + text
    elapsed = time.perf_counter() - started
    md += f"\nWall time {elapsed:.0f} s on {machine_line()}; {ds.sizes['site']} {spec.units} loaded.\n"
    files.append(write_text_atomic(md, directory / "metrics.md"))
    files.append(write_text_atomic(json.dumps({"study": name, "quick": quick, "rows": rows, "status": status,
                                               "extras": extras, "wall_seconds": elapsed,
                                               "units": ds.site.values.astype(str).tolist()},
                                              indent=1, default=_json_default) + "\n", directory / "metrics.json"))
    summary = {f"{r['fold_kind']}/{r['variable']}/{r['model']}": {
        "lead": _lead(r["variable"]), "median": r[f"{_lead(r['variable'])}_median"],
        "tail": r[_TAIL[_lead(r["variable"])]], "n_units": r["n_sites"]} for r in rows}
    files.append(write_text_atomic(json.dumps(summary, indent=1, default=_json_default) + "\n",
                                   directory / "summary.json"))
    try:
        files += _fig_skill(spec, rows, s.models, directory)
        files += _fig_scatter(spec, combined, obs, s.models, directory)
    except ImportError:
        warnings.warn("matplotlib not installed: no figures written", stacklevel=2)
    return StudyResult(name, directory, rows, status, md, files, folds)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """The command line of ``experiments/NAME/run.py``: ``[--data-dir DIR] [--quick] [--out DIR] [--config TOML]``."""
    import argparse
    import shlex
    import sys

    p = argparse.ArgumentParser(prog=f"experiments/{name}/run.py", description=STUDIES[name].title)
    p.add_argument("--data-dir", default=None, help="real data folder (default: KGML_DATA or ../shared/data)")
    p.add_argument("--quick", action="store_true", help="a tiny run (a test): few units and years, a few steps")
    p.add_argument("--out", default="runs", help=f"output root; the study writes OUT/{name}/")
    p.add_argument("--config", default=None, help=f"study TOML (default experiments/{name}/config.toml)")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = f"python experiments/{name}/run.py " + " ".join(shlex.quote(a) for a in argv)
    res = run_study(name, data_dir=args.data_dir, out=args.out, quick=args.quick, config_path=args.config,
                    command=command.strip())
    print(res.markdown)
    print(f"outputs in {res.directory}")
    return 0
