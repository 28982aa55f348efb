"""The studies in ``experiments/`` are configs of the engine that runs ``kgml bench shift``
(`kgml.compare.runner`): each ``experiments/NAME/run.py`` is a thin script that calls `run_study(NAME, ...)` with
its TOML config; this module loads the real data (`kgml.data.assemble`) and makes whole-unit splits (held-out
sites, counties, states or years — never random days); the engine trains every model slot on every split
(`kgml.compare.runner.run_folds`: one `~kgml.compare.runner.FoldContext`, one slot registry, per-region models with
held-out sites of a region without training sites predicted by the nearest region's model, one failure
policy), scores them on the held-out units (`kgml.compare.runner.score_suite`, `kgml.evaluation`: median and bad
tail over units) and writes its run directory; the study adds its extra analyses (IAV, failures, yield,
attribution) on the engine's predictions.

Study model names are the engine's slot names (`kgml.compare.runner.MODELS`), with ``hybrid`` and ``process``
the aliases of ``hybrid_global`` and ``process_global`` (`ENGINE_NAMES`), and the study-only ``hybrid_damm``.

A study config is an `ExperimentConfig` TOML (the hybrid's ``[data]``/``[model]``/``[train]``/``[loss]``) plus a
``[study]`` table (`StudySettings`: which models, which folds, how much data) and a ``[quick]`` delta of both
that makes the run small enough for a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import xarray as xr

from kgml import __version__
from kgml.compare import runner
from kgml.compare.figures import held_out_predictions
from kgml.compare.runner import MODEL_LABELS as ENGINE_LABELS
from kgml.compare.runner import SLOTS
from kgml.compare.suites import Suite, get_suite
from kgml.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    table_from_dict,
)
from kgml.data.assemble import cosore_daily, fluxnet_daily, fluxnet_monthly, il_corn, state_yield
from kgml.data.splits import Part, Split, kfold_by_site, save_splits
from kgml.evaluation import decomposition_scores, metric_order
from kgml.experiment import load_run, select_sites, task_of, train_run
from kgml.io import concat_sites, write_netcdf_atomic, write_text_atomic
from kgml.machine import machine_line
from kgml.models.hybrid import target_scales
from kgml.paths import data_dir as resolve_data_dir
from kgml.spatial.attribution import driver_sensitivities
from kgml.synthetic import REAL_WEATHER_SOURCES, STATES, CorpusSpec, make_corpus

__all__ = [
    "ENGINE_NAMES",
    "MODEL_LABELS",
    "STUDIES",
    "StudyResult",
    "StudySettings",
    "load_study_config",
    "main",
    "run_study",
    "study_config_path",
    "study_slots",
    "study_suite",
]

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"

#: Study model name → the engine slot it is (`kgml.compare.runner.SLOTS`), where the names differ.
ENGINE_NAMES = {"hybrid": "hybrid_global", "process": "process_global"}
MODEL_LABELS = {
    **ENGINE_LABELS, **{name: ENGINE_LABELS[engine] for name, engine in ENGINE_NAMES.items()},
    "rf": "random forest ([study] rf_trees trees)", "gbm": "gradient boosting ([study] rf_trees iterations)",
    "hybrid_damm": "hybrid with the DAMM soil-respiration layer",
}
_HYBRID_LIKE = ("hybrid", "hybrid_global", "hybrid_per_region", "hybrid_finetune", "hybrid_region_aware",
                "hybrid_pretrained", "hybrid_damm", "process", "process_global", "process_per_region", "neural")


# ---------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table of a study config.

    ``models``: engine slots (keys of `MODEL_LABELS`, `study_slots`); ``folds``: fold kinds — ``"unit_kfold"`` (k-fold over whole
    sites/counties/states, ``k`` folds, at most ``max_folds`` run) and ``"years_out"`` (the last ``test_years``
    years of every unit held out, the ``val_years`` before them for early stopping); ``units``/``n_units``:
    which sites to load (explicit list, or that many spread over the sorted list; empty/0: all);
    ``first_year``/``last_year``: restrict the years (0: all); ``rf_trees`` (trees of ``rf``, iterations of
    ``gbm``), ``lstm_steps``, ``lstm_hidden``: baseline sizes (`kgml.compare.runner.FoldContext.options`);
    ``pretrain_*``: the synthetic pretraining corpus of ``hybrid_pretrained`` (`pretrain_synthetic`; the engine's
    slot fine-tunes it per fold with the global hybrid's budget; ``pretrain_weather``
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
    towers: tuple[str, ...] = ()
    attribution: bool = False
    group: str = ""
    seed: int = 0


def _settings_from_dict(d: Mapping[str, Any]) -> StudySettings:
    """The ``[study]`` table, parsed as every kgml config table is (`kgml.config.table_from_dict`: typed values,
    an unknown key is an error naming it), then checked against the slot registry and the fold kinds."""
    s = table_from_dict(StudySettings, d, "study")
    bad = sorted(set(s.models) - set(MODEL_LABELS))
    if bad:
        raise ConfigError(f"[study] models: unknown {bad}; choose from {sorted(MODEL_LABELS)}")
    bad = sorted(set(s.folds) - {"unit_kfold", "years_out"})
    if bad:
        raise ConfigError(f"[study] folds: unknown {bad}; choose from ['unit_kfold', 'years_out']")
    if s.pretrain_weather not in _PRETRAIN_WEATHER:
        raise ConfigError(f"[study] pretrain_weather: unknown {s.pretrain_weather!r}; choose from {list(_PRETRAIN_WEATHER)}")

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
    years = range(s.first_year, s.last_year + 1) if s.first_year and s.last_year else None
    ds = il_corn(root, years=years)
    return _restrict(ds, dataclasses.replace(s, first_year=0, last_year=0))


def _load_state_yield(root, s: StudySettings) -> xr.Dataset:
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
    ds = fluxnet_monthly(root, sites=list(s.units) or None)
    ds = _restrict(ds, dataclasses.replace(s, units=()))
    return _has_targets(ds, ("nee_monthly",))


def _load_cosore(root, s: StudySettings) -> xr.Dataset:
    ds = _restrict(cosore_daily(root), s)
    return _has_targets(ds, ("rsoil",))


def _load_fluxnet_daily(root, s: StudySettings) -> xr.Dataset:
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
    #: the bench suite whose ``trend_reference_year`` the trended slots (``hybrid_trend``, ``yield_trend_rf``, …)
    #: of a yield study use (`kgml.compare.runner.trend_config`); "" = no technology trend (flux studies)
    trend_suite: str = ""


STUDIES: dict[str, StudySpec] = {s.name: s for s in (
    StudySpec("illinois_corn", "Illinois county corn yield (Khaki et al. 2020, weekly Daymet), crop-model physics",
              _load_il_corn, ("crop_yield",), "annual", "county", "counties", trend_suite="il_corn_yield"),
    StudySpec("midwest_states", "Midwest state corn yields (Thompson 1969): per-state vs global vs region-aware, "
              "with synthetic pretraining", _load_state_yield, ("crop_yield",), "annual", "state", "states",
              trend_suite="state_yield"),
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
# The engine (kgml.compare.runner): a study is a suite of it
# ---------------------------------------------------------------------------------------------------------


def study_suite(spec: StudySpec, config: ExperimentConfig, s: StudySettings, ds: xr.Dataset):
    """The `kgml.compare.suites.Suite` of a study: its targets and resolution, the hybrid config's vegetation,
    features, static attributes (those the data have) and ``data.region`` (the regions of the per-region
    slots) and, for a yield study, the technology trend's reference year of its bench suite (``trend_suite``:
    the same data, so the trended slots are the bench's). Its folds are the study's own (`make_folds`), not
    frozen ones."""
    d = config.data
    trend_year = get_suite(spec.trend_suite).trend_reference_year if spec.trend_suite else 0

    def load(data_dir, quick, sites):
        return spec.load(Path(data_dir), s)

    return Suite(name=spec.name, description=spec.title, load=load, vegetation=d.vegetation, targets=spec.targets,
                 resolution=spec.resolution, region=d.region, folds=(), features=tuple(d.features),
                 static=tuple(a for a in d.static if a in ds.coords), trend_reference_year=trend_year)


def _slot_damm(ctx) -> xr.Dataset:
    """The global hybrid with the DAMM soil-respiration layer (Davidson et al. 2012) in place of Lloyd–Taylor."""
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-damm", model={"soil_respiration": "damm"})
    return ctx.predict(ctx.train(cfg), ctx.heldout_ds())


def study_slots() -> dict[str, Callable]:
    """The engine's slot registry (`kgml.compare.runner.SLOTS`) under the studies' names: every engine slot,
    the aliases of `ENGINE_NAMES` (the same slot functions) and the study-only ``hybrid_damm``."""
    return {**SLOTS, **{name: SLOTS[engine] for name, engine in ENGINE_NAMES.items()}, "hybrid_damm": _slot_damm}


# ---------------------------------------------------------------------------------------------------------
# Pretraining on synthetic data (midwest_states)
# ---------------------------------------------------------------------------------------------------------


def pretrain_synthetic(config: ExperimentConfig, s: StudySettings, *, seed: int = 0,
                       data_dir: str | os.PathLike | None = None, directory: str | os.PathLike | None = None):
    """A hybrid pretrained on a synthetic maize corpus of the process model (`kgml.synthetic.make_corpus`, states
    IA/IL/NE, ``s.pretrain_sites`` sites × ``s.pretrain_years`` years each), with daily NEE/GPP/Reco and yields as
    targets and the study's drivers as features. The corpus weather is ``s.pretrain_weather``: real site-years
    of the state's stations and counties read from ``data_dir`` (``"stations"``: every source of
    ``s.pretrain_weather_sources`` must be present; ``"available_stations"``: whichever are), or — only when
    configured — the weather generator fitted on Ames, IA (``"generator"``). Trained into ``directory`` when
    given. Returns (run, corpus attrs); the attrs record the weather sources and site-years used. The engine's
    ``hybrid_pretrained`` slot fine-tunes it per fold (`kgml.compare.runner.pretrained_init`)."""
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
    run = train_run(cfg, corpus, None if directory is None else Path(directory), progress=False,
                    description="pretrain (synthetic)")
    return run, dict(corpus.attrs)


def _pretrained(config: ExperimentConfig, s: StudySettings, root: Path, directory: Path):
    """`pretrain_synthetic` trained once into ``directory`` (reloaded when its ``done`` marker is there, as the
    engine's suite pretraining is) and the weather its corpus used."""
    done = directory / "done"
    if done.exists():
        return load_run(directory), json.loads((directory / "corpus.json").read_text())
    run, attrs = pretrain_synthetic(config, s, seed=s.seed, data_dir=root, directory=directory)
    weather = {k: v for k, v in attrs.items() if k.startswith("weather")}
    write_text_atomic(json.dumps(weather, indent=1, default=_json_default) + "\n", directory / "corpus.json")
    write_text_atomic("trained\n", done)
    return run, weather


# ---------------------------------------------------------------------------------------------------------
# Outputs of the study beyond the engine's
# ---------------------------------------------------------------------------------------------------------


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


def _lead(var: str) -> str:
    return metric_order(var)[0]


_TAIL = {"r2": "r2_p10", "rmse": "rmse_p90", "nse": "nse_p10", "kge": "kge_p10", "bias": "abs_bias_p90"}


# ---------------------------------------------------------------------------------------------------------
# Extra analyses
# ---------------------------------------------------------------------------------------------------------


def _extra_iav(spec: StudySpec, preds: dict, obs: xr.Dataset, models: Sequence[str]) -> tuple[str, dict]:
    """Scale decomposition of NEE (site mean, seasonal cycle, anomalies, inter-annual variability)."""
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
    for (m, kind), sc in site_scores.items():
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
    parts = []
    for run, held in ctx_runs:
        # 29 February dropped here as the windows drop it (the day mask is on the window days).
        leap = (held.time.dt.month.values == 2) & (held.time.dt.day.values == 29)
        parts.append(driver_sensitivities(run, held.isel(time=~leap), drivers=("tair", "sw_in", "vpd", "precip")))
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
# ---------------------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------------------


def _fixed_scales(config: ExperimentConfig, ds: xr.Dataset) -> ExperimentConfig:
    """Loss scales fixed once per study (the spread of each target over all units), so every fold and region
    shares one compiled training step; they weigh the loss only."""
    scales = target_scales(ds, task_of(config))
    scales.update(config.loss.scales)
    return _replace(config, loss={"scales": scales})


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


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
    """Run study ``name`` (a key of `STUDIES`) with its config (default ``experiments/NAME/config.toml``) on the
    engine of ``kgml bench shift`` (`kgml.compare.runner.run_folds`, `~kgml.compare.runner.score_suite`): every model
    of ``[study] models`` on every fold, in the engine's run directory ``<out>/<name>/``:
    ``folds/<fold_kind>/<split>/<model>.nc`` (held-out predictions of each fold), ``metrics.nc``, ``metrics.md``
    and PNG figures; and the study's own ``config.json``, ``study.json``, ``splits.json``,
    ``predictions/<fold_kind>_<model>.nc`` (the folds' held-out predictions of a kind together, CF),
    ``metrics.json`` (rows, status, extra analyses) and ``summary.json``. A rerun with the same config, settings
    and splits resumes (finished (model, fold) pairs are kept); any other rerun starts afresh."""
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; studies are {sorted(STUDIES)}")
    spec = STUDIES[name]
    started = time.perf_counter()
    config, s = load_study_config(config_path or study_config_path(name), quick=quick)
    root = Path(data_dir) if data_dir is not None else resolve_data_dir()
    directory = Path(out) / name
    directory.mkdir(parents=True, exist_ok=True)
    ds = spec.load(root, s)
    ds = select_sites(ds, config)  # the configured vegetation (process model) and regions only
    config = _fixed_scales(config, ds)
    folds = make_folds(ds, spec, s)
    inputs = json.dumps({"config": config_to_dict(config), "study": dataclasses.asdict(s), "quick": quick,
                         "data_dir": str(root), "units": ds.site.values.astype(str).tolist(),
                         "splits": [sp.to_dict() for v in folds.values() for sp in v]}, indent=1,
                        default=_json_default) + "\n"
    stamp = directory / "engine_inputs.json"
    if not (stamp.exists() and stamp.read_text() == inputs):
        for sub in ("folds", "pretrained", "predictions"):  # another config: nothing of the last run is reused
            shutil.rmtree(directory / sub, ignore_errors=True)
    (directory / "predictions").mkdir(exist_ok=True)
    write_text_atomic(inputs, stamp)
    write_text_atomic(json.dumps(config_to_dict(config), indent=1) + "\n", directory / "config.json")
    write_text_atomic(json.dumps({**dataclasses.asdict(s), "quick": quick, "data_dir": str(root)}, indent=1) + "\n",
                      directory / "study.json")
    save_splits([sp for v in folds.values() for sp in v], directory / "splits.json")

    suite = study_suite(spec, config, s, ds)
    shared: dict[str, Any] = {}
    pretrain_weather: dict = {}
    if "hybrid_pretrained" in s.models:
        shared["pretrained"], pretrain_weather = _pretrained(config, s, root, directory / "pretrained")
    options = {"rf_trees": s.rf_trees, "lstm_steps": s.lstm_steps, "lstm_hidden": s.lstm_hidden}
    keep = ("crop_yield",) if "yield" in spec.extras else ()
    status = runner.run_folds(suite, ds, folds, directory, config, s.models, quick=quick, progress=progress,
                              slots=study_slots(), keep=keep, options=options, shared=shared, desc=name)
    group = s.group or (config.data.region if config.data.region in ds.coords else None)
    res = runner.score_suite(suite, ds, folds, directory, s.models, status, quick=quick, command=command,
                             figures=_has_matplotlib(), group=group, labels=MODEL_LABELS)
    if not _has_matplotlib():
        warnings.warn("matplotlib not installed: no figures written", stacklevel=2)
    files = [directory / "metrics.nc", *res.figures]


    combined = {}
    for kind, splits in folds.items():
        for m in s.models:
            pred = held_out_predictions(directory, kind, splits, m, config.seed)
            if pred is None:
                continue
            pred.attrs.update(Conventions="CF-1.8", title=f"kgml study {name}: held-out predictions of {m} ({kind})",
                              source=f"kgml {__version__} kgml.compare.studies (engine kgml.compare.runner); data: "
                                     f"{ds.attrs.get('source', '')}"[:2000],
                              history=f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                                      f"{command or 'run_study'}",
                              model=m, model_label=MODEL_LABELS[m], fold_kind=kind, study=name, quick=int(quick))
            pred.attrs.pop("split", None)
            combined[(kind, m)] = pred
            files.append(write_netcdf_atomic(pred, directory / "predictions" / f"{kind}_{m}.nc"))
    obs = runner._observations(suite, ds)
    md = res.markdown
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
        text, extras["failures"] = _extra_failures(spec, res.site_scores, ds, [m for m in s.models if m in
                                                                              ("hybrid", "hybrid_damm", "lstm")])
        md += "\n" + text
    if "yield" in spec.extras:
        # Models with the crop layer only: the neural model's yield head has no yield observation to learn from.
        text, extras["yield"] = _extra_yield(spec, combined, [m for m in s.models if m in _HYBRID_LIKE
                                                              and m != "neural"])
        md += "\n" + text
    if "attribution" in spec.extras and s.attribution and "hybrid" in s.models and "unit_kfold" in folds:
        # the global hybrid of each fold, as the engine checkpointed it (FoldContext.global_run)
        runs = [(load_run(directory / "folds" / "unit_kfold" / sp.name / "hybrid_global_run"),
                 runner.select_part(ds, sp, "test")) for sp in folds["unit_kfold"]]
        text, extras["attribution"] = _extra_attribution(runs, ds, directory)
        md += "\n" + text
    elapsed = time.perf_counter() - started
    md += f"\nWall time {elapsed:.0f} s on {machine_line()}; {ds.sizes['site']} {spec.units} loaded.\n"
    files.append(write_text_atomic(md, directory / "metrics.md"))
    rows = res.rows
    files.append(write_text_atomic(json.dumps({"study": name, "quick": quick, "rows": rows, "status": res.status,
                                               "extras": extras, "wall_seconds": elapsed,
                                               "units": ds.site.values.astype(str).tolist()},
                                              indent=1, default=_json_default) + "\n", directory / "metrics.json"))
    summary = {f"{r['fold_kind']}/{r['variable']}/{r['model']}": {
        "lead": _lead(r["variable"]), "median": r[f"{_lead(r['variable'])}_median"],
        "tail": r[_TAIL[_lead(r["variable"])]], "n_units": r["n_sites"]} for r in rows}
    files.append(write_text_atomic(json.dumps(summary, indent=1, default=_json_default) + "\n",
                                   directory / "summary.json"))
    return StudyResult(name, directory, rows, res.status, md, files, folds)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """The command line of ``experiments/NAME/run.py``: ``[--data-dir DIR] [--quick] [--out DIR] [--config TOML]``."""
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
