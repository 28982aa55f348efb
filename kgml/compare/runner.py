"""The distribution-shift benchmark runner: every model slot on every frozen fold of a suite, held-out
predictions written atomically per (model, fold) and skipped when present (resumable), then per-site
scores (`kgml.evaluation`), a metrics netCDF + markdown table, figures, and a dated block in
benchmarks/RESULTS.md.

Model slots (`MODELS`): feature baselines ``rf`` and ``gbm`` and the sequence ``lstm`` (`kgml.compare.baselines`);
``process_global`` / ``process_per_region`` (the process model calibrated once / per region) and ``neural``
(same encoder and size, no physics) through ``config.model.kind``; the hybrid in four scopes:
``hybrid_global`` (one model), ``hybrid_per_region`` (one model per region of ``suite.region``),
``hybrid_finetune`` (the global model fine-tuned per region) and ``hybrid_region_aware`` (one shared model
with region embeddings of regions *detected* from the training sites' fluxes,
`kgml.compare.regions_detect`); and ``hybrid_pretrained``: one hybrid per suite pretrained on a synthetic corpus
of its physics layer (`pretrained_run`, cached in ``<out>/<suite>/pretrained``), fine-tuned per fold with
hybrid_global's budget.

Yield suites add ``hybrid_trend`` / ``hybrid_per_region_trend`` / ``neural_trend`` / ``process_trend``
(hybrid_global / hybrid_per_region / neural / process_global with the bounded technology trend on yield
potential, `kgml.models.hybrid.TechnologyTrend`; the network's yield head output is scaled by it) and the naive baselines of
`kgml.compare.baselines.YieldBaseline` (``yield_unit_mean``, ``yield_unit_trend``, ``yield_region_trend``,
``yield_trend_rf``); there ``rf`` and ``gbm`` read the year as an input. A slot that does not apply to a fold
kind (per-unit baselines on leave-unit-out folds) is reported not available for that kind only.
``hybrid_trend_site_embedding`` / ``hybrid_trend_site_rate`` / ``hybrid_trend_site_level`` /
``hybrid_trend_site_level_rate`` (`_site_embedding`): the trended global hybrid with a learned embedding of every
training unit, and a per-unit trend rate and/or bounded yield level (`kgml.models.hybrid.TechnologyTrend`), for
held-out years of known units; they record the validation years' RMSE (`with_val_rmse`).

``hybrid_anomaly_w<w>`` (`ANOMALY_SLOTS`): hybrid_global with the anomaly-aware loss of weight w
(`kgml.config.LossConfig.anomaly`), for monthly suites.

Held-out sites of a region without its own model (a held-out region) use the model of the nearest training
region (distance between the mean unit vectors of the regions' site locations).

The engine (`run_folds`, `FoldContext`, `SLOTS`, `score_suite`) also runs the studies of ``experiments/``
(`kgml.compare.studies`), whose suites are built from their configs and whose folds are their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from kgml import __version__
from kgml import config as kc
from kgml import evaluation as ev
from kgml.compare import ensembles as en
from kgml.compare import figures as fg
from kgml.compare import intervals as iv
from kgml.compare import regions_detect as rd
from kgml.compare.baselines import FeatureBaseline, LSTMBaseline, YieldBaseline
from kgml.compare.figures import prediction_path, seed_suffix
from kgml.compare.suites import (
    FOLD_SEED,
    Suite,
    check_folds,
    fold_units,
    freeze_folds,
    freeze_new_fold_kinds,
    get_suite,
    load_folds,
    restrict_split,
    select_part,
)
from kgml.config import config_from_dict
from kgml.data.assemble import DIURNAL_RANGE
from kgml.data.splits import Part, Split, mask_unit_years, restrict_years
from kgml.evaluation import metric_order, to_monthly
from kgml.experiment import (
    Run,
    count_parameters,
    load_run,
    predict_dataset,
    prepare,
    task_of,
    train_run,
)
from kgml.io import concat_sites, write_netcdf_atomic, write_text_atomic
from kgml.machine import machine_line
from kgml.metrics import add_metric_units
from kgml.models.hybrid import target_scales
from kgml.progress import is_quiet, note
from kgml.synthetic import DRIVERS, STATES, CorpusSpec, StateClimate, build_model, make_corpus
from kgml.synthetic.world import PHOTOSYNTHESES
from kgml.variables import VARIABLES

__all__ = ["MODELS", "MODEL_LABELS", "NotAvailable", "RESULTS_MD", "SuiteResult", "base_config", "run_suite",
           "score_suite"]

MODELS = ("rf", "gbm", "lstm", "process_global", "process_per_region", "neural", "hybrid_global",
          "hybrid_per_region", "hybrid_finetune", "hybrid_region_aware", "hybrid_pretrained", "hybrid_trend",
          "hybrid_per_region_trend", "neural_trend", "process_trend", "yield_unit_mean", "yield_unit_trend", "yield_region_trend", "yield_trend_rf",
          "site_climatology", "hybrid_site_embedding", "neural_site_embedding", "hybrid_trend_site_embedding",
          "hybrid_trend_site_rate", "hybrid_trend_site_level_rate", "hybrid_trend_site_level")
#: The naive yield baselines (`kgml.compare.baselines.YieldBaseline`): slot → kind.
YIELD_SLOTS = {"yield_unit_mean": "unit_mean", "yield_unit_trend": "unit_trend",
               "yield_region_trend": "region_trend", "yield_trend_rf": "trend_rf"}
MODEL_LABELS = {
    "rf": "random forest (500 trees)", "gbm": "gradient boosting", "lstm": "LSTM (global, daily drivers)",
    "process_global": "process model, one global calibration", "process_per_region": "process model, calibrated per region",
    "neural": "neural network, same size, no physics", "hybrid_global": "hybrid, one global model",
    "hybrid_per_region": "hybrid, one model per region", "hybrid_finetune": "hybrid, global + regional fine-tuning",
    "hybrid_region_aware": "hybrid, region-aware (detected regions)",
    "hybrid_pretrained": "hybrid, pretrained on synthetic data, fine-tuned",
    "hybrid_trend": "hybrid, one global model + bounded technology trend on yield potential",
    "hybrid_per_region_trend": "hybrid, one model per region + bounded technology trend on yield potential",
    "neural_trend": "neural network, same size, no physics + bounded technology trend on its yield",
    "process_trend": "process model, one global calibration + bounded technology trend",
    "yield_unit_mean": "naive: per-unit mean of the training years",
    "yield_unit_trend": "naive: per-unit linear trend of the training years",
    "yield_region_trend": "naive: one linear trend over all training units",
    "yield_trend_rf": "naive: per-unit linear trend + random forest on the weather residual (CY-Bench)",
    "site_climatology": "naive: the site's own mean seasonal cycle of its training years",
    "hybrid_site_embedding": "hybrid, global + a learned embedding of each training site",
    "neural_site_embedding": "neural network, same size, no physics + a learned embedding of each training site",
    "hybrid_trend_site_embedding": "hybrid, global + bounded technology trend + a learned embedding of each training site",
    "hybrid_trend_site_rate": "hybrid, global + bounded technology trend with a learned rate per training site + site embedding",
    "hybrid_trend_site_level_rate": "hybrid, global + bounded technology trend with a learned rate and level per training site + site embedding",
    "hybrid_trend_site_level": "hybrid, global + bounded technology trend with a learned level per training site + site embedding",
}
RESULTS_MD = Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md"
RESULTS_SECTION = "## Distribution shift (`kgml bench shift`)"


class NotAvailable(Exception):  # noqa: N818 - a status, not an error of the run
    """A model slot that cannot run here (missing component, not applicable to the suite)."""


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


def loss_scales(suite: Suite, ds: xr.Dataset) -> dict[str, float]:
    """One loss scale per target for the whole suite (the spread of its observations over all sites,
    `kgml.models.hybrid.target_scales`). A scale only weighs the loss terms; fixing it per suite (instead of per
    training set) lets every fold and region share one compiled training step."""
    cfg = base_config(suite, told=True)
    return target_scales(ds, task_of(cfg))


def base_config(suite: Suite, *, quick: bool = False, seed: int = 0, scales: dict[str, float] | None = None,
                told: bool = False):
    """The hybrid `ExperimentConfig` of a suite: its data section, and model/training sizes (tiny with
    ``quick``: hidden 8, 3 steps, batch 1; default: hidden 32, 300 steps, batch 16, early stopping);
    ``scales``: fixed loss scales (`loss_scales`); ``told``: trained on every target of the suite, not only
    its ``train_targets``."""
    d = suite.config_dict(told=told)
    d.update(name=f"bench-{suite.name}", seed=seed)
    if scales:
        d["loss"] = {"scales": {k: float(v) for k, v in scales.items()}}
    if quick:
        d["model"] = {"hidden": 8, "location_dim": 8, "n_scales": 2, "embed_dim": 8, "head_hidden": 8, "region_dim": 2}
        d["train"] = {"steps": 3, "batch_size": 1, "eval_every": 3, "warmup_steps": 1, "checkpoint_every": 1000,
                      "seed": seed}
    else:
        d["model"] = {"hidden": 32, "embed_dim": 32, "head_hidden": 32}
        d["train"] = {"steps": 300, "batch_size": 16, "eval_every": 25, "patience": 6, "checkpoint_every": 10_000,
                      "seed": seed}
    return config_from_dict(d)


def _replace(cfg, **sections):
    """``cfg`` with fields of its sections replaced: ``_replace(cfg, model={"kind": "neural"})``."""
    out = cfg
    for name, changes in sections.items():
        if isinstance(changes, dict):
            out = dataclasses.replace(out, **{name: dataclasses.replace(getattr(out, name), **changes)})
        else:
            out = dataclasses.replace(out, **{name: changes})
    return out


# ---------------------------------------------------------------------------------------------------------
# One fold
# ---------------------------------------------------------------------------------------------------------


def _unit_vectors(ds: xr.Dataset) -> np.ndarray:
    lat = np.deg2rad(np.asarray(ds["lat"].values, np.float64))
    lon = np.deg2rad(np.asarray(ds["lon"].values, np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def _merge_parts(split: Split, a: str, b: str) -> Part:
    return split.part(a).union(split.part(b))


@dataclass
class FoldContext:
    """Everything a model slot needs for one split: the suite, the full dataset, the split, the fold's
    directory (checkpoints, detected regions), the base config, and the batch size for prediction."""

    suite: Suite
    ds: xr.Dataset
    split: Split
    directory: Path
    config: Any
    quick: bool
    signature: str
    _global: Any = field(default=None, repr=False)
    shared: dict = field(default_factory=dict, repr=False)  #: suite-wide cache (the pretrained run)
    #: sizes of the baseline slots (``rf_trees``, ``lstm_steps``, ``lstm_hidden``); absent: the bench defaults
    options: dict = field(default_factory=dict, repr=False)

    @property
    def suite_directory(self) -> Path:
        return self.directory.parents[2]  # <out>/<suite>/folds/<kind>/<split>

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    def seeded(self, stem: str) -> str:
        """``stem`` for seed 0 (the layout of single-seed runs), ``stem_seed<k>`` for seed k (`seed_suffix`)."""
        return f"{stem}{seed_suffix(self.seed)}"

    def pretrained_run(self):
        """The suite's synthetic pretraining (`pretrained_run`) of this seed, shared by every fold."""
        key = self.seeded("pretrained")
        if key not in self.shared:
            self.shared[key] = pretrained_run(self.suite, self.ds, self.config, self.suite_directory / key,
                                              quick=self.quick)
        return self.shared[key]

    @property
    def heldout(self) -> str:
        return self.split.info.get("heldout", "test")

    @property
    def predict_batch(self) -> int:
        return 1 if self.quick else 8  # fixed chunk size: prediction compiles once per model structure

    def part(self, name: str) -> xr.Dataset:
        return select_part(self.ds, self.split, name)

    def heldout_ds(self) -> xr.Dataset:
        return self.part(self.heldout)

    def fit_ds(self) -> xr.Dataset:
        """Training ∪ validation sites (models without early stopping use both)."""
        merged = dataclasses.replace(self.split, train=_merge_parts(self.split, "train", "val"), val=Part())
        return select_part(self.ds, merged, "train")

    def val_ds(self) -> xr.Dataset | None:
        return self.part("val") if self.split.val.units else None

    # --- training helpers -------------------------------------------------------------------------------

    def train(self, cfg, split: Split | None = None, *, init=None, directory: Path | None = None, ds=None):
        return train_run(cfg, self.ds if ds is None else ds, directory, init=init, split=split or self.split,
                         progress=False, description=cfg.name)

    def predict(self, run, ds: xr.Dataset) -> xr.Dataset:
        pred = predict_dataset(run, ds, batch_size=self.predict_batch)
        pred.attrs["n_parameters"] = count_parameters(run.model)
        learned = tuple(run.model.learned) + tuple(run.model.global_unconstrained)
        pred.attrs["learned"] = ", ".join(learned)
        return pred

    def global_run(self):
        """The global hybrid of this fold: trained once, checkpointed under the fold directory, reloaded by
        the scopes that build on it (fine-tuning, region detection) and by resumed runs."""
        if self._global is not None:
            return self._global

        where = self.directory / self.seeded("hybrid_global_run")
        done = where / "done"
        if done.exists():
            self._global = load_run(where)
        else:
            self._global = self.train(self.config, directory=where)
            write_text_atomic("trained\n", done)
        return self._global

    def region_labels(self, coord: str, ds: xr.Dataset | None = None) -> dict[str, str]:
        ds = self.ds if ds is None else ds
        if coord not in ds.coords:
            raise NotAvailable(f"the dataset has no {coord!r} site coordinate for per-region models")
        return dict(zip(ds.site.values.astype(str).tolist(), ds[coord].values.astype(str).tolist(), strict=True))

    def assign_to_regions(self, labels: dict[str, str], regions: Sequence[str], sites: Sequence[str]) -> dict[str, str]:
        """Region model for each site: its own region when it has a model, else the nearest trained region."""
        train = list(self.split.train.units)
        loc = dict(zip(self.ds.site.values.astype(str).tolist(), _unit_vectors(self.ds), strict=True))
        centre = {}
        for r in regions:
            v = np.mean([loc[u] for u in train if labels[u] == r], axis=0)
            centre[r] = v / max(np.linalg.norm(v), 1e-12)
        out = {}
        for s in sites:
            lab = labels.get(s)
            out[s] = lab if lab in centre else min(regions, key=lambda r: float(np.linalg.norm(loc[s] - centre[r])))
        return out

    def per_region(self, cfg, *, init=None) -> xr.Dataset:
        """One model per region of ``suite.region`` (trained on that region's training sites, from ``init``'s
        weights when given); held-out sites predicted by their region's model."""
        labels = self.region_labels(self.suite.region)
        split = self.split
        regions = sorted({labels[u] for u in split.train.units})
        heldout = self.heldout_ds()
        sites = heldout.site.values.astype(str).tolist()
        assign = self.assign_to_regions(labels, regions, sites)
        preds, notes = [], []
        for r in regions:
            mine = [s for s in sites if assign[s] == r]
            if not mine:
                continue
            sub = Split(f"{split.name}_{r}", split.strategy, split.seed, split.dim,
                        split.train.subset([u for u in split.train.units if labels[u] == r]),
                        split.val.subset([u for u in split.val.units if labels[u] == r]), Part(), Part(),
                        {**split.info, "region": r})
            cfg_r = _replace(cfg, name=f"{cfg.name}-{r}")
            try:
                run = self.train(cfg_r, sub, init=init)
            except ValueError as err:  # e.g. no observed window in a small region
                notes.append(f"{r}: {err}; global model used")
                run = self.global_run() if init is None else init
            preds.append(self.predict(run, heldout.sel(site=mine)))
        out = concat_sites(preds)
        out.attrs["region_models"] = ", ".join(regions)
        if notes:
            out.attrs["notes"] = "; ".join(notes)
        return out


# ---------------------------------------------------------------------------------------------------------
# Model slots
# ---------------------------------------------------------------------------------------------------------


def _feature_baseline(kind: str):
    def slot(ctx: FoldContext) -> xr.Dataset:
        s = ctx.suite
        trees = ctx.options.get("rf_trees") or (10 if ctx.quick else None)
        model = FeatureBaseline(kind, n_estimators=trees, seed=ctx.config.seed,
                                static=s.static, n_jobs=2, year_feature=s.resolution == "annual")
        model.fit(ctx.fit_ds(), targets=s.targets, features=s.features, resolution=s.resolution)
        heldout = ctx.heldout_ds()
        pred = model.predict(heldout, missing="nan")
        if kind == "rf" and ctx.options.get("intervals"):  # the quantile-forest reference of the intervals
            pred = pred.merge(model.predict_quantiles(heldout, iv.QRF_QUANTILES))
        pred.attrs["n_parameters"] = -1
        return pred

    return slot


def _yield_baseline(kind: str):
    def slot(ctx: FoldContext) -> xr.Dataset:
        s = ctx.suite
        if s.resolution != "annual" or "crop_yield" not in s.targets:
            raise NotAvailable("naive yield baselines are for annual crop_yield suites")
        fit = ctx.fit_ds()
        heldout = ctx.heldout_ds()
        if kind != "region_trend":
            unseen = sorted(set(heldout.site.values.astype(str)) - set(fit.site.values.astype(str)))
            if unseen:
                raise NotAvailable(f"per-unit baselines need the unit's own training years; fold kind "
                                   f"{ctx.split.info.get('fold_kind', ctx.split.strategy)!r} holds whole units out")
        model = YieldBaseline(kind, seed=ctx.config.seed, n_estimators=10 if ctx.quick else 500, features=s.features,
                              static=s.static, n_jobs=2)
        pred = model.fit(fit).predict(heldout)
        pred.attrs["n_parameters"] = -1
        return pred

    return slot


def _site_climatology(ctx: FoldContext) -> xr.Dataset:
    """Naive flux baseline for held-out *years*: each calendar month's mean of the site's own observations in
    its training (and validation) years, for every target. Not available where whole sites are held out."""
    s = ctx.suite
    if s.resolution not in ("daily", "monthly"):
        raise NotAvailable("the site climatology is for flux suites (yield suites have yield_unit_mean)")
    fit, held = ctx.fit_ds(), ctx.heldout_ds()
    sites = held.site.values.astype(str).tolist()
    known = set(fit.site.values.astype(str).tolist())
    if not known & set(sites):
        raise NotAvailable(f"the site climatology needs the held-out sites' own training years; fold kind "
                           f"{ctx.split.info.get('fold_kind', ctx.split.strategy)!r} holds whole sites out")
    axis = "month" if s.resolution == "monthly" else "time"

    def month_of_year(d: xr.Dataset) -> np.ndarray:
        return np.asarray(d.month.values).astype(np.int64) % 12 if axis == "month" else d.time.dt.month.values - 1

    moy_fit, moy_held = month_of_year(fit), month_of_year(held)
    out = {}
    for t in s.targets:
        name = f"{s.observed_name(t)}_monthly" if axis == "month" else s.observed_name(t)
        values = np.full((len(sites), held.sizes[axis]), np.nan)
        for i, u in enumerate(sites):
            if u not in known:
                continue
            x = np.asarray(fit[name].sel(site=u).transpose(axis).values, np.float64)
            clim = np.full(12, np.nan)
            for m in range(12):
                xm = x[(moy_fit == m) & np.isfinite(x)]
                if xm.size:
                    clim[m] = xm.mean()
            values[i] = clim[moy_held]
        out[f"{t}_monthly" if axis == "month" else t] = (("site", axis), values, dict(fit[name].attrs))
    pred = xr.Dataset(out, coords={"site": sites, axis: held[axis].values})
    pred.attrs["n_parameters"] = -1
    return pred


def _lstm(ctx: FoldContext) -> xr.Dataset:
    s = ctx.suite
    if s.resolution == "annual":
        raise NotAvailable("the LSTM baseline predicts daily fluxes; annual yields are left to the feature baselines")
    cfg = ctx.config
    steps = ctx.options.get("lstm_steps") or (3 if ctx.quick else 2000)
    model = LSTMBaseline(hidden=ctx.options.get("lstm_hidden") or cfg.model.hidden, steps=steps,
                         batch_size=cfg.train.batch_size, eval_every=max(1, min(50, steps)), seed=cfg.seed,
                         static=s.static)
    model.fit(ctx.part("train"), targets=s.targets, features=s.features, resolution=s.resolution,
              val_ds=ctx.val_ds())
    pred = model.predict(ctx.heldout_ds(), missing="nan")

    pred.attrs["n_parameters"] = count_parameters(model.model_)
    return pred


def _kind_available(kind: str) -> None:
    if kind not in getattr(kc, "MODEL_KINDS", ("hybrid",)):
        raise NotAvailable(f"config.model.kind {kind!r} is not implemented in this kgml")


def _process_global(ctx: FoldContext) -> xr.Dataset:
    _kind_available("process")
    run = ctx.train(_replace(ctx.config, name=f"{ctx.config.name}-process", model={"kind": "process"}))
    return ctx.predict(run, ctx.heldout_ds())


def _process_per_region(ctx: FoldContext) -> xr.Dataset:
    _kind_available("process")
    return ctx.per_region(_replace(ctx.config, name=f"{ctx.config.name}-process", model={"kind": "process"}))


def _told(ctx: FoldContext):
    """The fold's config for a model without physics: in a suite that trains the physics on some targets only
    (``train_targets``), trained on every target (it has no physics to reach the others: the told reference)."""
    cfg = ctx.config
    if ctx.suite.train_targets:
        told = base_config(ctx.suite, quick=ctx.quick, seed=cfg.seed, scales=dict(cfg.loss.scales or {}), told=True)
        cfg = dataclasses.replace(cfg, data=told.data)
    return cfg


def _neural(ctx: FoldContext) -> xr.Dataset:
    _kind_available("neural")
    cfg = _told(ctx)
    run = ctx.train(_replace(cfg, name=f"{cfg.name}-neural", model={"kind": "neural"}))
    return ctx.predict(run, ctx.heldout_ds())


def _hybrid_global(ctx: FoldContext) -> xr.Dataset:
    return ctx.predict(ctx.global_run(), ctx.heldout_ds())


def trend_config(cfg, suite: Suite):
    """``cfg`` with the bounded technology trend on yield potential (`kgml.models.hybrid.TechnologyTrend`), its
    reference year the suite's (fixed per suite, so every fold shares one compiled step)."""
    if suite.resolution != "annual" or not suite.trend_reference_year:
        raise NotAvailable("the technology trend is for annual yield suites with a trend_reference_year")
    return _replace(cfg, name=f"{cfg.name}-trend",
                    model={"technology_trend": True, "technology_reference_year": float(suite.trend_reference_year)})


def with_val_rmse(ctx: FoldContext, run, pred: xr.Dataset, ds: xr.Dataset | None = None) -> xr.Dataset:
    """``pred`` with the pooled RMSE of every target on the fold's *validation* part (attribute
    ``val_rmse_<target>``; for yield suites on forecast folds the last two training years): variants of a slot
    are compared there, never on the test years."""
    ds = ctx.ds if ds is None else ds
    if not ctx.split.val.units:
        return pred
    val = select_part(ds, ctx.split, "val")
    vpred = ctx.predict(run, val)
    for t in ctx.suite.targets:
        name = t if ctx.suite.resolution != "monthly" else f"{t}_monthly"
        obs_name = ctx.suite.observed_name(t) if ctx.suite.resolution != "monthly" else f"{ctx.suite.observed_name(t)}_monthly"
        if name not in vpred or obs_name not in val:
            continue
        o, p = xr.align(val[obs_name], vpred[name], join="inner")
        o, p = np.asarray(o.values, np.float64).ravel(), np.asarray(p.transpose(*o.dims).values, np.float64).ravel()
        ok = np.isfinite(o) & np.isfinite(p)
        if ok.any():
            pred.attrs[f"val_rmse_{t}"] = float(np.sqrt(np.mean((p[ok] - o[ok]) ** 2)))
    return pred


def _hybrid_trend(ctx: FoldContext) -> xr.Dataset:
    run = ctx.train(trend_config(ctx.config, ctx.suite))
    return with_val_rmse(ctx, run, ctx.predict(run, ctx.heldout_ds()))


def _hybrid_per_region_trend(ctx: FoldContext) -> xr.Dataset:
    return ctx.per_region(trend_config(ctx.config, ctx.suite))


def _neural_trend(ctx: FoldContext) -> xr.Dataset:
    _kind_available("neural")
    cfg = trend_config(ctx.config, ctx.suite)
    run = ctx.train(_replace(cfg, name=f"{cfg.name}-neural", model={"kind": "neural"}))
    return ctx.predict(run, ctx.heldout_ds())


def _process_trend(ctx: FoldContext) -> xr.Dataset:
    _kind_available("process")
    run = ctx.train(trend_config(_replace(ctx.config, name=f"{ctx.config.name}-process", model={"kind": "process"}),
                                 ctx.suite))
    return ctx.predict(run, ctx.heldout_ds())


def _hybrid_per_region(ctx: FoldContext) -> xr.Dataset:
    return ctx.per_region(ctx.config)


def finetune_config(cfg, quick: bool = False):
    """Regional fine-tuning: a third of the steps at a third of the learning rate, short warm-up (quick runs
    keep the training settings, so the compiled step is shared)."""
    t = cfg.train
    if quick:
        return _replace(cfg, name=f"{cfg.name}-finetune")
    return _replace(cfg, name=f"{cfg.name}-finetune",
                    train={"steps": max(1, t.steps // 3), "learning_rate": t.learning_rate / 3,
                           "warmup_steps": min(t.warmup_steps, max(1, t.steps // 30))})


def _hybrid_finetune(ctx: FoldContext) -> xr.Dataset:
    return ctx.per_region(finetune_config(ctx.config, ctx.quick), init=ctx.global_run())


def detect_fold_regions(ctx: FoldContext):
    """Detected regions of this fold: signatures of the training sites (the global hybrid's learned
    parameters and/or their observed flux cycle), clustered; other sites assigned by location. Cached as
    ``detected_regions.json`` in the fold directory."""
    path = ctx.directory / f"{ctx.seeded('detected_regions')}.json"
    if path.exists():
        return rd.DetectedRegions.from_dict(json.loads(path.read_text()))
    s = ctx.suite
    kind = ctx.signature
    if s.resolution == "annual":
        kind = kind.replace("cycle", "response")
    train = ctx.part("train")
    pred = None
    specs = None
    if "theta" in kind:
        run = ctx.global_run()
        pred = ctx.predict(run, train)
        specs = run.model.process.parameter_specs
        learned = set(run.model.learned)
        pred = pred[[v for v in pred.data_vars if not str(v).startswith("theta_") or str(v)[6:] in learned]]
    sig = rd.site_signatures(kind, ds=train, pred=pred, specs=specs, targets=s.targets, features=s.features,
                             resolution=s.resolution)
    train_sites = train.site.values.astype(str).tolist()
    others = [u for u in ctx.ds.site.values.astype(str) if u not in set(train_sites)]
    attrs = [a for a in (*s.static, "mat", "map") if a in ctx.ds.coords]
    attrs = list(dict.fromkeys(attrs))
    det = rd.detect_regions(sig, train_sites, rd.location_features(ctx.ds.sel(site=train_sites), attrs), others,
                            rd.location_features(ctx.ds.sel(site=others), attrs) if others else None,
                            seed=ctx.config.seed, signature=kind)
    write_text_atomic(json.dumps(det.to_dict(), indent=1) + "\n", path)
    return det


def _hybrid_region_aware(ctx: FoldContext) -> xr.Dataset:
    det = detect_fold_regions(ctx)
    sites = ctx.ds.site.values.astype(str)
    ds = ctx.ds.assign_coords(detected_region=("site", det.of(sites)))
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-region-aware", data={"region": "detected_region"},
                   model={"region_embedding": True})
    run = ctx.train(cfg, ds=ds)
    pred = ctx.predict(run, select_part(ds, ctx.split, ctx.heldout))
    pred.attrs["detected_k"] = det.k
    return pred


#: Site coordinate of the per-site embedding slots (`_site_embedding`): the site ID itself.
SITE_KEY = "site_key"


def _site_embedding(kind: str, trend: bool = False, site_rate: bool = False, site_level: bool = False):
    """The global hybrid (``kind="hybrid"``) or the same-size network (``"neural"``) with a learned embedding
    of every training site in its location encoder (the region embedding with one region per site): for held-out
    *years* of known sites, the model can learn each site's own parameters (the hybrid) or level (the network),
    as the forest can from the site's coordinates. Unseen sites get the zero embedding; not available where whole
    sites are held out. ``trend``: with the bounded technology trend of `trend_config` (yield suites);
    ``site_rate``: its rate per training site (`kgml.models.hybrid.TechnologyTrend` ``site_rate``), each
    site's offset on the unconstrained rate, so every site's rate stays inside the rate's bounds; ``site_level``:
    a bounded yield level per site (``site_level``, exp(±0.4))."""
    def slot(ctx: FoldContext) -> xr.Dataset:
        held = set(ctx.split.part(ctx.heldout).units)
        if not held & set(ctx.split.train.units):
            raise NotAvailable(f"a per-site embedding needs the held-out sites' own training years; fold kind "
                               f"{ctx.split.info.get('fold_kind', ctx.split.strategy)!r} holds whole sites out")
        sites = ctx.ds.site.values.astype(str)
        ds = ctx.ds.assign_coords({SITE_KEY: ("site", sites)})
        cfg = _told(ctx) if kind == "neural" else ctx.config
        if trend:
            cfg = trend_config(cfg, ctx.suite)
        if site_rate:
            cfg = _replace(cfg, name=f"{cfg.name}-site-rate", model={"technology_site_rate": True})
        if site_level:
            cfg = _replace(cfg, name=f"{cfg.name}-site-level", model={"technology_site_level": True})
        cfg = _replace(cfg, name=f"{cfg.name}-{kind}-site-embedding", data={"region": SITE_KEY},
                       model={"region_embedding": True, **({"kind": "neural"} if kind == "neural" else {})})
        run = ctx.train(cfg, ds=ds)
        pred = ctx.predict(run, select_part(ds, ctx.split, ctx.heldout))
        return with_val_rmse(ctx, run, pred, ds) if trend else pred

    return slot


# --- pretrained on synthetic data, fine-tuned on the towers ----------------------------------------------

#: Sites per synthetic climate, years per site and training steps of the suite's pretraining corpus: the
#: `kgml.compare.demo` sizes that make pretraining learn (~190 sites, 2 years, 300 steps; a smaller corpus overfits,
#: and its validation part, a fifth of the sites, must hold ≥ ~15 sites).
PRETRAIN_SITES = 13
PRETRAIN_YEARS = 2
PRETRAIN_STEPS = 300


def pretrain_climates(suite: Suite, quick: bool = False) -> tuple:
    """The synthetic climates (`kgml.synthetic.StateClimate`) of a suite's pretraining corpus. Crop suites use
    the three Midwest states of `kgml.synthetic.STATES` (their data are Midwest counties and states); the
    global tower and chamber suites a grid of the Ames-fitted weather generator warmed by −14…+14 °C and with
    rain scaled ×0.35…×2, i.e. mean annual temperature ≈ −4…24 °C and precipitation ≈ 300–1700 mm, most of
    the range of the FLUXNET2015 sites (−11…27 °C, 100–3100 mm). Latitude falls as the climate warms (≈ 1.2°
    per °C around Ames' 42° N, so the radiation geometry and location inputs move with it) and longitudes
    cycle over the continents that hold towers. Quick runs: three climates."""
    if suite.vegetation in ("maize", "soybean"):
        return STATES
    warming = (-14.0, -7.0, 0.0, 7.0, 14.0)
    rain = (0.35, 1.0, 2.0)
    grid = [(w, p) for w in warming for p in rain]
    if quick:
        grid = [(-7.0, 0.35), (0.0, 1.0), (7.0, 2.0)]
    lons = (-95.0, 10.0, 115.0, -60.0)
    return tuple(StateClimate(f"W{w:+.0f}P{p:.2f}", float(np.clip(42.0 - 1.2 * w, -60.0, 75.0)), lons[i % len(lons)],
                              w, p) for i, (w, p) in enumerate(grid))


def _monthly_held_drivers(corpus: xr.Dataset) -> xr.Dataset:
    """The corpus drivers as the monthly tower suites have them (`kgml.data.assemble.fluxnet_monthly`):
    each month's mean held on every day, tmin/tmax = tair ∓ half the assumed diurnal range. The synthetic
    fluxes stay those of the daily weather, as the real ones are."""
    t = corpus.time
    key = np.asarray(t.dt.year.values) * 12 + np.asarray(t.dt.month.values)
    _, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse)
    out = corpus.copy()
    for name in DRIVERS:
        if name not in corpus or name in ("tmin", "tmax"):
            continue
        v = corpus[name].transpose("site", "time").values.astype(np.float64)
        sums = np.zeros((v.shape[0], counts.size))
        for i in range(v.shape[0]):
            sums[i] = np.bincount(inverse, weights=v[i], minlength=counts.size)
        held = (sums / counts)[:, inverse].astype(np.float32)
        out[name] = (("site", "time"), held, corpus[name].attrs)
    if "tair" in out:
        for name, sign in (("tmin", -1.0), ("tmax", 1.0)):
            if name in out:
                out[name] = (out["tair"] + sign * DIURNAL_RANGE / 2).assign_attrs(corpus[name].attrs)
    out.attrs["driver_method"] = "monthly means held on every day of the month (as the suite's towers); fluxes " \
                                 "simulated with the daily weather"
    return out


def pretrain_corpus(suite: Suite, ds: xr.Dataset, *, quick: bool = False, seed: int = 0) -> xr.Dataset:
    """The synthetic pretraining corpus of a suite: its physics layer (``suite.vegetation``) over
    `pretrain_climates`, the `kgml.synthetic` parameter prior, daily fluxes; drivers made monthly means held
    on every day when the suite's own are (``driver_method`` of ``ds``). It sees no real data but that
    attribute. Raises `NotAvailable` when the corpus lacks a feature or static attribute of the suite."""
    if suite.vegetation == "soil":
        raise NotAvailable("the synthetic corpus has no measured soil water (swc) for the chamber physics")
    spec = CorpusSpec(states=pretrain_climates(suite, quick), vegetation=(suite.vegetation,),
                      sites_per_block=2 if quick else PRETRAIN_SITES, years=1 if quick else PRETRAIN_YEARS,
                      seed=seed + 1)
    corpus = make_corpus(spec)
    if str(ds.attrs.get("driver_method", "")).startswith("monthly means"):
        corpus = _monthly_held_drivers(corpus)
    missing = [v for v in suite.features if v not in corpus] + [a for a in suite.static if a not in corpus.coords]
    if missing:
        raise NotAvailable(f"the synthetic corpus lacks the suite's inputs {missing}")
    return corpus


def pretrain_config(suite: Suite, cfg, quick: bool = False):
    """The pretraining config: the suite's model, features and static attributes (never the corpus-only
    ``soil_carbon`` unless the suite's data have it), daily synthetic targets (crop yields for yield suites),
    a fifth of the corpus sites for early stopping, loss scales of the corpus."""
    daily = ("rsoil",) if suite.vegetation == "soil" else ("nee", "gpp", "reco")
    annual = suite.resolution == "annual"
    # Quick runs with the suite's own task keep its loss scales: the compiled training step is then shared.
    same_task = daily == tuple(cfg.data.daily_targets) and annual == cfg.data.yield_target
    scales = dict(cfg.loss.scales) if quick and same_task else {}
    return _replace(cfg, name=f"{cfg.name}-pretrain",
                    data={"daily_targets": daily, "monthly_targets": (), "yield_target": annual,
                          "static": tuple(suite.static), "region": "state", "regions": (), "test_sites": (),
                          "test_fraction": 0.0, "val_fraction": 0.2, "max_train_sites": 0},
                    loss={"scales": scales}, train={"steps": 3 if quick else PRETRAIN_STEPS})


def pretrained_run(suite: Suite, ds: xr.Dataset, cfg, directory: Path, *, quick: bool = False):
    """The suite's synthetic pretraining (`pretrain_corpus`, `pretrain_config`), trained once and cached in
    ``directory`` (``<out>/<suite>/pretrained``, shared by every fold: it sees no real data); reloaded when
    its ``done`` marker is there. The pretraining history is saved as ``history.json``."""
    done = directory / "done"
    if done.exists():
        return load_run(directory)
    corpus = pretrain_corpus(suite, ds, quick=quick, seed=cfg.seed)
    pcfg = pretrain_config(suite, cfg, quick)
    started = time.perf_counter()
    run = train_run(pcfg, corpus, directory, progress=False, description="pretrain (synthetic)")
    info = {"seconds": round(time.perf_counter() - started, 1), "n_sites": int(corpus.sizes["site"]),
            "years": int(corpus.sizes["time"] // 365), "climates": [s.name for s in pretrain_climates(suite, quick)],
            "driver_method": corpus.attrs.get("driver_method", "daily weather"), "history": run.history or []}
    write_text_atomic(json.dumps(info, indent=1, default=float) + "\n", directory / "history.json")
    write_text_atomic("trained\n", done)
    return run


def pretrained_init(pretrained, cfg, train: xr.Dataset):
    """``pretrained`` re-tasked for fine-tuning with ``cfg`` (the suite's own data section): its weights and
    input normaliser (the network learned on that scaling), and the targets, loss scales and region map of
    the fold's training sites (`kgml.experiment.prepare`)."""
    prepared = prepare(train, cfg)
    pre = pretrained.prepared
    for k in ("n_features", "n_static"):
        if prepared.dims[k] != pre.dims[k]:
            raise ValueError(f"pretrained run has {k}={pre.dims[k]}, the suite {prepared.dims[k]}")
    prepared = dataclasses.replace(prepared, normaliser=pre.normaliser, dims=dict(pre.dims))
    return Run(pretrained.model, cfg, prepared)


def _hybrid_pretrained(ctx: FoldContext) -> xr.Dataset:
    pre = ctx.pretrained_run()
    cfg = _replace(ctx.config, name=f"{ctx.config.name}-pretrained")  # same budget as hybrid_global
    run = ctx.train(cfg, init=pretrained_init(pre, cfg, ctx.part("train")))
    pred = ctx.predict(run, ctx.heldout_ds())
    pred.attrs["init"] = f"pretrained on synthetic data ({ctx.suite_directory / ctx.seeded('pretrained')})"
    return pred


# --- ablations of the global hybrid (`kgml bench shift --ablate`) ----------------------------------------


def _ablation_slot(suffix: str, what: str, **sections):
    def slot(ctx: FoldContext) -> xr.Dataset:
        cfg = _replace(ctx.config, name=f"{ctx.config.name}-{suffix}", **sections)
        pred = ctx.predict(ctx.train(cfg), ctx.heldout_ds())
        pred.attrs["ablation"] = what
        return pred

    return slot


def _hybrid_no_static(ctx: FoldContext) -> xr.Dataset:
    if not ctx.suite.static:
        raise NotAvailable("the suite has no static attributes to remove")
    return _ablation_slot("no-static", "hybrid_global without static site attributes", data={"static": ()})(ctx)


def _hybrid_residual(ctx: FoldContext) -> xr.Dataset:
    if ctx.suite.resolution == "annual":
        raise NotAvailable("residual flux heads correct daily fluxes; the yield suites score annual yields")
    fluxes = ("rsoil",) if ctx.suite.vegetation == "soil" else ("gpp", "reco")
    return _ablation_slot("residual", f"hybrid_global + bounded residual heads on {', '.join(fluxes)}",
                          model={"residual": fluxes})(ctx)


#: Context sites per site of the site-attention variant (`kgml.models.nn.site_attention`).
ABLATION_CONTEXT_SITES = 8

#: Model slots that exist only for the ablations: the global hybrid with one component changed.
ABLATION_MODELS = ("hybrid_no_location", "hybrid_no_static", "hybrid_site_attention", "hybrid_residual")

#: The knowledge components of the global hybrid, each as (with, without, note): Δ = skill(with) −
#: skill(without), paired seed by seed. Components the benchmark's hybrid_global does not use (site attention,
#: residual heads, synthetic pretraining) are measured the other way round: the variant *adds* them.
ABLATIONS = {
    "physics layer": ("hybrid_global", "neural", "same-size network in place of parameters → process model"),
    "learned parameters": ("hybrid_global", "process_global", "process model with one calibrated parameter set"),
    "location encoding": ("hybrid_global", "hybrid_no_location",
                          "no location encoder: neither lat/lon nor the static attributes it carries"),
    "static attributes": ("hybrid_global", "hybrid_no_static", "no static site attributes"),
    "site attention": ("hybrid_site_attention", "hybrid_global",
                       f"added: attention over {ABLATION_CONTEXT_SITES} training context sites"),
    "residual head": ("hybrid_residual", "hybrid_global", "added: bounded residual corrections of GPP and Reco"),
    "synthetic pretraining": ("hybrid_pretrained", "hybrid_global", "added: pretrained on the synthetic corpus"),
}


SLOTS = {
    "rf": _feature_baseline("rf"), "gbm": _feature_baseline("gbm"), "lstm": _lstm,
    "process_global": _process_global, "process_per_region": _process_per_region, "neural": _neural,
    "hybrid_global": _hybrid_global, "hybrid_per_region": _hybrid_per_region, "hybrid_finetune": _hybrid_finetune,
    "hybrid_region_aware": _hybrid_region_aware, "hybrid_pretrained": _hybrid_pretrained,
    "hybrid_trend": _hybrid_trend, "hybrid_per_region_trend": _hybrid_per_region_trend,
    "neural_trend": _neural_trend, "process_trend": _process_trend, "site_climatology": _site_climatology,
    "hybrid_site_embedding": _site_embedding("hybrid"), "neural_site_embedding": _site_embedding("neural"),
    "hybrid_trend_site_embedding": _site_embedding("hybrid", trend=True),
    "hybrid_trend_site_rate": _site_embedding("hybrid", trend=True, site_rate=True),
    "hybrid_trend_site_level_rate": _site_embedding("hybrid", trend=True, site_rate=True, site_level=True),
    "hybrid_trend_site_level": _site_embedding("hybrid", trend=True, site_level=True),
    **{slot: _yield_baseline(kind) for slot, kind in YIELD_SLOTS.items()},
}
def _hybrid_site_attention(ctx: FoldContext) -> xr.Dataset:
    if ctx.suite.resolution != "daily":
        raise NotAvailable("site attention's context pool summarises daily targets only "
                           "(kgml.models.hybrid.observation_summary); this suite scores "
                           f"{ctx.suite.resolution} targets")
    return _ablation_slot(
        "site-attention", f"hybrid_global + site attention over {ABLATION_CONTEXT_SITES} context sites",
        model={"site_attention": True}, data={"n_context": ABLATION_CONTEXT_SITES})(ctx)


#: The anomaly-aware loss (issue 20 item 4, lever b): slot → weight of `kgml.config.LossConfig.anomaly`
#: (`kgml.models.losses.paired_anomaly_mse`; batches pair two years of a site). hybrid_global otherwise.
ANOMALY_SLOTS = {"hybrid_anomaly_w1": 1.0, "hybrid_anomaly_w3": 3.0, "hybrid_anomaly_w10": 10.0}


def _hybrid_anomaly(weight: float):
    def slot(ctx: FoldContext) -> xr.Dataset:
        if ctx.suite.resolution != "monthly":
            raise NotAvailable("the anomaly-aware loss pairs monthly targets of two years; this suite scores "
                               f"{ctx.suite.resolution} targets")
        cfg = _replace(ctx.config, name=f"{ctx.config.name}-anomaly{weight:g}", loss={"anomaly": float(weight)})
        if cfg.train.batch_size < 2:  # quick runs: one pair per batch
            cfg = _replace(cfg, train={"batch_size": 2})
        where = ctx.directory / ctx.seeded(f"hybrid_anomaly_w{weight:g}_run")
        run = load_run(where) if (where / "done").exists() else ctx.train(cfg, directory=where)
        write_text_atomic("trained\n", where / "done")
        pred = ctx.predict(run, ctx.heldout_ds())
        pred.attrs["loss_anomaly"] = float(weight)
        return pred

    return slot


SLOTS.update({slot: _hybrid_anomaly(w) for slot, w in ANOMALY_SLOTS.items()})
MODEL_LABELS.update({slot: f"hybrid, global, + anomaly-aware loss (weight {w:g})" for slot, w in ANOMALY_SLOTS.items()})
def _physics_option(kind: str, option: dict[str, str], suffix: str, needs: tuple[str, ...] = (),
                    hint: str = "e.g. --suite fluxnet_mm_soil"):
    """hybrid_global (``kind="hybrid"``) or process_global (``"process"``) with a natural-vegetation physics
    option of ``[model]`` (``option``, e.g. ``{"soil_water": "observed"}``: `process_models.water.Bucket.observed`;
    ``{"soil_water": "observed_rew"}``: `Bucket.observed_rew`; ``{"phenology": "gsi_water"}``:
    `process_models.phenology.WaterLimitedGSI`; ``{"phenology": "gsi_evergreen"}``: `EvergreenGSI`). Not available
    outside natural-vegetation suites or where the data lack a variable of ``needs`` (the measured soil water:
    ``fluxnet_mm_soil``; the evergreen fraction: every FLUXNET suite), ``hint`` saying where to find them."""
    def slot(ctx: FoldContext) -> xr.Dataset:
        if ctx.suite.vegetation != "grassland" or any(v not in ctx.ds for v in needs):
            raise NotAvailable(f"{suffix} needs natural-vegetation physics" + (
                f" and data with {needs} ({hint})" if needs else
                f"; this suite runs {ctx.suite.vegetation!r}"))
        if kind == "process":
            _kind_available("process")
        model = {**option, **({"kind": "process"} if kind == "process" else {})}
        cfg = _replace(ctx.config, name=f"{ctx.config.name}-{kind}-{suffix}", model=model)
        return ctx.predict(ctx.train(cfg), ctx.heldout_ds())

    return slot


#: The measured soil water the observed-water slots read.
_SOIL_WATER_DATA = ("swc", "swc_measured", "swc_rew")


#: Slots whose physics reads the measured soil water (issue 20 item 4, lever c in the physics): slot → (kind, mode).
OBSERVED_WATER_SLOTS = {"hybrid_observed_water": ("hybrid", "observed"),
                        "process_observed_water": ("process", "observed"),
                        "hybrid_observed_rew": ("hybrid", "observed_rew"),
                        "process_observed_rew": ("process", "observed_rew")}
SLOTS.update({slot: _physics_option(kind, {"soil_water": mode}, f"{mode.replace('_', '-')}-water", _SOIL_WATER_DATA)
              for slot, (kind, mode) in OBSERVED_WATER_SLOTS.items()})
MODEL_LABELS.update({
    "hybrid_observed_water": "hybrid, global, physics water stress from the measured soil water content",
    "process_observed_water": "process model, one calibration, water stress from the measured soil water content",
    "hybrid_observed_rew": "hybrid, global, physics water stress from the measured relative extractable water",
    "process_observed_rew": "process model, one calibration, water stress from the measured relative extractable water",
})
#: Slots with the water-limited phenology (issue 20 item 4 / issue 15 item 2: drylands).
WATER_PHENOLOGY_SLOTS = ("hybrid_water_phenology", "process_water_phenology")
SLOTS.update({slot: _physics_option(slot.split("_")[0], {"phenology": "gsi_water"}, "gsi-water")
              for slot in WATER_PHENOLOGY_SLOTS})
MODEL_LABELS.update({
    "hybrid_water_phenology": "hybrid, global, water-limited growing-season-index phenology",
    "process_water_phenology": "process model, one calibration, water-limited growing-season-index phenology",
})
#: Slots with the evergreen phenology (issue 20 item 4: deciduous vs evergreen canopies by IGBP class).
EVERGREEN_SLOTS = ("hybrid_evergreen", "process_evergreen")
SLOTS.update({slot: _physics_option(slot.split("_")[0], {"phenology": "gsi_evergreen"}, "gsi-evergreen",
                                    ("evergreen",), "the FLUXNET suites: kgml.compare.suites.evergreen_fraction")
              for slot in EVERGREEN_SLOTS})
MODEL_LABELS.update({
    "hybrid_evergreen": "hybrid, global, evergreen canopies (ENF, EBF; half of MF) keep their leaf area",
    "process_evergreen": "process model, one calibration, evergreen canopies keep their leaf area",
})
#: Slots with light-saturating big-leaf Farquhar C3 or P-model photosynthesis instead of MOD17 light-use efficiency
#: (issue 20 item 4: at evergreen needleleaf towers the LUE physics is too high in midsummer, too low in the cold months).
PHOTOSYNTHESIS_SLOTS = {
    "hybrid_farquhar": ("hybrid", {"photosynthesis": "farquhar_c3"}, "farquhar", ()),
    "process_farquhar": ("process", {"photosynthesis": "farquhar_c3"}, "farquhar", ()),
    "hybrid_evergreen_farquhar": ("hybrid", {"photosynthesis": "farquhar_c3", "phenology": "gsi_evergreen"},
                                  "evergreen-farquhar", ("evergreen",)),
    "hybrid_pmodel": ("hybrid", {"photosynthesis": "pmodel"}, "pmodel", ()),
    "hybrid_evergreen_pmodel": ("hybrid", {"photosynthesis": "pmodel", "phenology": "gsi_evergreen"},
                                "evergreen-pmodel", ("evergreen",)),
    "hybrid_evergreen_pmodel_acclimated": ("hybrid", {"photosynthesis": "pmodel_acclimated",
                                                      "phenology": "gsi_evergreen"},
                                           "evergreen-pmodel-acclimated", ("evergreen",)),
}
SLOTS.update({slot: _physics_option(kind, option, suffix, needs, "the FLUXNET suites: kgml.compare.suites.evergreen_fraction")
              for slot, (kind, option, suffix, needs) in PHOTOSYNTHESIS_SLOTS.items()})
MODEL_LABELS.update({
    "hybrid_farquhar": "hybrid, global, big-leaf Farquhar C3 photosynthesis (saturating in light)",
    "process_farquhar": "process model, one calibration, big-leaf Farquhar C3 photosynthesis",
    "hybrid_evergreen_farquhar": "hybrid, global, Farquhar C3 photosynthesis + evergreen canopies keep their leaf area",
    "hybrid_pmodel": "hybrid, global, P-model photosynthesis (acclimated χ from VPD)",
    "hybrid_evergreen_pmodel": "hybrid, global, P-model photosynthesis + evergreen canopies keep their leaf area",
    "hybrid_evergreen_pmodel_acclimated": "hybrid, global, P-model + evergreen canopies keep their leaf area and "
                                          "down-regulate it in the cold season (Mäkelä et al. 2004)",
})
#: One temperature sensitivity of respiration for every site (issue 15 item 2 / issue 20): Mahecha et al. (2010,
#: Science 329:838) find the ecosystem-level Q10 converges to 1.4 ± 0.1 across FLUXNET once confounding seasonal
#: factors are removed, so the sensitivities are learned as one global value each (`[model] global_params`) and
#: only the base rates per site: at a climate no training tower has (the tundra of driest_sites_out) the parameter
#: network cannot extrapolate them.
SENSITIVITY_PARAMS = ("e0_rh", "q10_ra")
SENSITIVITY_SLOTS = ("hybrid_global_sensitivity",)
SLOTS["hybrid_global_sensitivity"] = _ablation_slot(
    "global-sensitivity", "hybrid_global with one learned temperature sensitivity of Rh and Ra for all sites",
    model={"global_params": SENSITIVITY_PARAMS})
MODEL_LABELS["hybrid_global_sensitivity"] = ("hybrid, global, one temperature sensitivity of respiration for all "
                                             "sites (Mahecha et al. 2010)")
SLOTS.update({
    "hybrid_no_location": _ablation_slot("no-location", "hybrid_global without the location encoding",
                                         model={"location": False}),
    "hybrid_no_static": _hybrid_no_static,
    "hybrid_site_attention": _hybrid_site_attention,
    "hybrid_residual": _hybrid_residual,
})
MODEL_LABELS.update({
    "hybrid_no_location": "hybrid, global, without location encoding (ablation)",
    "hybrid_no_static": "hybrid, global, without static attributes (ablation)",
    "hybrid_site_attention": "hybrid, global, with site attention (ablation)",
    "hybrid_residual": "hybrid, global, with residual heads (ablation)",
})


def _previous_table(path: Path) -> tuple[list[str], list[str]]:
    """(models, fold kinds) the folder's existing ``metrics.nc`` scored; empty where there is none or it is not
    a metrics file of ours (it is then replaced as before)."""
    if not path.exists():
        return [], []
    try:
        with xr.open_dataset(path) as old:
            return ([str(m) for m in old["model"].values if str(m) != "none"],
                    [str(k) for k in old["fold_kind"].values] if "fold_kind" in old.coords else [])
    except (OSError, ValueError, KeyError):
        return [], []


def carried_models(path: Path, models: Sequence[str], folds: dict[str, list[Split]], directory: Path,
                   seeds: Sequence[int]) -> list[str]:
    """Models the folder's existing ``metrics.nc`` scored that this run's ``models`` leave out but whose held-out
    predictions are saved for this run's folds (any of ``seeds``): a run with other ``--models`` scores them again
    beside its own (from the saved files; nothing is trained), so that its table keeps them."""
    before, _ = _previous_table(path)
    known = known_models()
    return [m for m in before if m not in models
            and (m in known or en.is_ensemble(m) and all(p in known for p in en.members(m)))
            and any(prediction_path(directory / "folds" / kind / sp.name, m, sd).exists()
                    for kind, splits in folds.items() for sp in splits for sd in seeds)]


def _note_dropped_models(path: Path, new: xr.Dataset) -> list[str]:
    """What the folder's existing ``metrics.nc`` scored that the new one will not — models without saved
    predictions in this run's folds (`carried_models` keeps the others) and fold kinds this run does not score:
    say so on stderr, naming how to score them together (their saved predictions stay, so that run trains
    nothing already done). Returns the dropped names (models, then ``fold kind <kind>``)."""
    before, kinds = _previous_table(path)
    kept = {str(m) for m in new["model"].values}
    kept_kinds = {str(k) for k in new["fold_kind"].values} if "fold_kind" in new.coords else set()
    dropped = [m for m in before if m not in kept]
    dropped_kinds = [k for k in kinds if kept_kinds and k not in kept_kinds]
    if dropped:
        print(f"note: {path} scored {', '.join(dropped)} too, without saved predictions in this run's folds; the "
              "new table leaves them out (add them to --models, with their fold kinds, to score all together)",
              file=sys.stderr)
    if dropped_kinds:
        print(f"note: {path} scored the fold kinds {', '.join(dropped_kinds)} too; the new table holds only this "
              "run's (add them to --fold-kinds to score all together; saved folds are not retrained)",
              file=sys.stderr)
    return [*dropped, *(f"fold kind {k}" for k in dropped_kinds)]


def known_models() -> tuple[str, ...]:
    """Every slot `run_suite` accepts: the default models, the ablations and the physics-lever slots."""
    return (*MODELS, *ABLATION_MODELS, *ANOMALY_SLOTS, *OBSERVED_WATER_SLOTS, *WATER_PHENOLOGY_SLOTS, *EVERGREEN_SLOTS,
            *PHOTOSYNTHESIS_SLOTS, *SENSITIVITY_SLOTS)


def ablation_models() -> tuple[str, ...]:
    """Every slot the ablation table needs (`ABLATIONS`), in run order."""
    return tuple(dict.fromkeys(m for w, wo, _ in ABLATIONS.values() for m in (w, wo)))




# ---------------------------------------------------------------------------------------------------------
# Predictions kept for scoring
# ---------------------------------------------------------------------------------------------------------


def scored_predictions(pred: xr.Dataset, suite: Suite, keep: Sequence[str] = ()) -> xr.Dataset:
    """The variables a suite scores, at its resolution (daily predictions averaged to months for monthly
    suites), the flux triple for the carbon balance, learned parameters, and the variables ``keep`` where
    predicted (e.g. ``crop_yield`` of a flux study); site coordinates dropped (the observations carry them)."""
    extra = [v for v in keep if v in pred]

    triple = ("nee", "gpp", "reco") if "nee" in suite.targets else ()
    fluxes = list(dict.fromkeys((*suite.targets, *triple)))
    keep: dict[str, xr.DataArray] = {v: pred[v] for v in extra}
    if suite.resolution == "monthly":
        daily = [v for v in fluxes if v in pred and "time" in pred[v].dims and f"{v}_monthly" not in pred]
        if daily:
            pred = pred.merge(to_monthly(pred[daily], daily), compat="override")
        for v in fluxes:
            if f"{v}_monthly" in pred:
                keep[f"{v}_monthly"] = pred[f"{v}_monthly"]
    else:
        for v in fluxes:
            if v in pred:
                keep[v] = pred[v]
    for v in pred.data_vars:
        if str(v).startswith("theta_") and pred[v].dims == ("site",):
            keep[str(v)] = pred[v]
        if str(v).endswith("_qrf") and str(v).removesuffix("_qrf").removesuffix("_monthly") in fluxes:
            keep[str(v)] = pred[v]  # quantile-forest quantiles (`kgml.compare.intervals`)
    missing = [t for t in suite.targets if not any(k.removesuffix("_monthly") == t for k in keep)]
    if missing:
        raise ValueError(f"predictions lack the suite's targets {missing} (have {sorted(map(str, pred.data_vars))})")
    out = xr.Dataset(keep).reset_coords(drop=True)
    out.attrs = {k: v for k, v in pred.attrs.items() if isinstance(v, str | int | float)}
    return out


# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SuiteResult:
    """Where a run wrote its outputs, its summary rows and the status of every model slot."""

    suite: str
    directory: Path
    rows: list[dict]
    status: dict[str, str]
    markdown: str
    figures: list[Path]
    detected: dict
    site_scores: dict = field(default_factory=dict)  #: (model, fold kind) → `kgml.evaluation.score_sites`


def _choose_sites(units: Sequence[str], n: int) -> list[str]:
    units = sorted(units)
    if n >= len(units):
        return list(units)
    idx = np.unique(np.linspace(0, len(units) - 1, n).round().astype(int))
    return [units[i] for i in idx]


def prepare_suite(suite: Suite, *, data_dir=None, quick: bool = False, folds_dir=None, freeze: bool = False,
                  add_fold_kinds: bool = False, max_folds: int | None = None, fold_kinds: Sequence[str] | None = None,
                  sites: Sequence[str] | None = None) -> tuple[xr.Dataset, dict[str, list[Split]]]:
    """The suite's dataset and its frozen folds by kind. Quick runs load a few sites (spread over the
    frozen site list) and keep the first fold of the first two kinds."""
    frozen = None
    try:
        frozen = load_folds(suite, folds_dir)
    except FileNotFoundError:
        if not freeze:
            raise
    if sites is None and quick and frozen is not None:
        sites = _choose_sites(fold_units(frozen), suite.quick_sites)
    ds = suite.load(data_dir, quick, sites)
    if freeze:
        if quick:
            raise ValueError("--freeze-folds needs the full dataset (not --quick)")
        freeze_folds(suite, ds, folds_dir)
        frozen = load_folds(suite, folds_dir)
    elif add_fold_kinds:
        if quick:
            raise ValueError("--add-fold-kinds needs the full dataset (not --quick)")
        freeze_new_fold_kinds(suite, ds, folds_dir)
        frozen = load_folds(suite, folds_dir)
    if not quick and sites is None:
        check_folds(frozen, ds)
    present = ds.site.values.astype(str).tolist()
    by_kind: dict[str, list[Split]] = {}
    for split in frozen:
        kind = split.info.get("fold_kind", "folds")
        if fold_kinds and kind not in fold_kinds:
            continue
        if suite.folds_name and kind not in {k.name for k in suite.folds}:
            continue  # a variant sharing another suite's frozen folds runs only the kinds it declares
        s = restrict_split(split, present)
        if s is not None:
            by_kind.setdefault(kind, []).append(s)
    limit = 1 if quick else max_folds
    if limit:
        by_kind = {k: v[:limit] for k, v in by_kind.items()}
    if quick:
        by_kind = dict(list(by_kind.items())[:2])
    if not by_kind:
        raise ValueError(f"no fold of suite {suite.name!r} has training and held-out sites in the loaded data")
    return ds, by_kind


def run_folds(suite: Suite, ds: xr.Dataset, folds: dict[str, list[Split]], directory: Path, cfg,
              models: Sequence[str], *, quick: bool = False, signature: str | None = None, progress: bool = True,
              score_only: bool = False, slots=None, keep: Sequence[str] = (), options: dict | None = None,
              shared: dict | None = None, desc: str | None = None,
              cfgs: Mapping[int, Any] | None = None) -> dict[str, str]:
    """The engine: every slot of ``models`` on every split of ``folds`` and every seed, one `FoldContext` per
    (split, seed), held-out predictions (`scored_predictions`, plus the variables ``keep``) written to
    `prediction_path` (``<directory>/folds/<kind>/<split>/<model>[_seed<k>].nc``) and skipped when present.
    ``cfgs``: seed → config (default ``{cfg.seed: cfg}``: one seed). ``slots``: the registry (name → slot;
    default `SLOTS`); ``options``: slot sizes (`FoldContext.options`); ``shared``: the run-wide cache (e.g. a
    ready pretrained run under ``"pretrained"``). Failure policy: a slot that does not apply raises
    `NotAvailable`, recorded in the returned status (model → message) and not retried for that fold kind; any
    other exception
    propagates, with a note naming the model, the fold and the seed."""
    slots = SLOTS if slots is None else slots
    signature = signature or suite.signature
    shared = {} if shared is None else shared
    cfgs = {cfg.seed: cfg} if cfgs is None else dict(cfgs)
    status: dict[str, str] = {}
    unavailable: set[tuple[str, str]] = set()  # (model, fold kind): e.g. per-unit baselines on held-out units
    jobs = [(kind, split, s, m) for kind, splits in folds.items() for split in splits for s in cfgs for m in models]
    if progress and not score_only and jobs:
        note(f"bench {suite.name}: {len(jobs)} fits; compiling each model at its first fit (seconds to a "
             "minute each) …")
    bar = tqdm(jobs, desc=desc or f"bench {suite.name}", unit="fit", disable=not progress or is_quiet())
    contexts: dict[tuple[str, int], FoldContext] = {}
    for kind, split, s, m in bar:
        fold_dir = directory / "folds" / kind / split.name
        path = prediction_path(fold_dir, m, s)
        bar.set_postfix_str(f"{kind} {split.name[:24]} {m} seed {s}")
        if path.exists() or score_only:
            continue
        if (m, kind) in unavailable:
            continue
        ctx = contexts.get((split.name, s))
        if ctx is None:
            # One context per (split, seed) (its global hybrid is shared by the scopes); earlier ones are released.
            contexts = {(split.name, s): FoldContext(suite, ds, split, fold_dir, cfgs[s], quick, signature,
                                                     shared=shared, options=dict(options or {}))}
            ctx = contexts[(split.name, s)]
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pred = slots[m](ctx)
        except NotAvailable as err:  # not applicable to this fold kind
            status[m] = f"not available: {err}"
            unavailable.add((m, kind))
            continue
        except Exception as err:
            err.add_note(f"kgml engine: model slot {m!r} failed on fold {kind}/{split.name} of {suite.name}, "
                         f"seed {s}")
            raise
        pred = scored_predictions(pred, suite, keep=keep)
        held_part = split.part(ctx.heldout)
        if held_part.unit_years is not None:  # per-site held-out years: score only those; keep every year too
            write_netcdf_atomic(pred, all_years_path(fold_dir, m, s))  # (for `kgml.evaluation.departure_skill`)
            pred = mask_unit_years(pred, held_part)
        pred.attrs.update(model=m, fold_kind=kind, split=split.name, seed=s,
                          fit_seconds=round(time.perf_counter() - started, 2))
        cal = split.info.get("calibration_sites")
        if cal:  # `--intervals`: the calibration sites' predictions go beside the held-out ones
            held = [u for u in pred.site.values.astype(str) if u not in set(cal)]
            write_netcdf_atomic(pred.sel(site=[u for u in pred.site.values.astype(str) if u in set(cal)]),
                                iv.calibration_path(fold_dir, m, s))
            pred = pred.sel(site=held)
        cal_years = split.info.get("calibration_years")
        if cal_years:  # `--intervals` in a year-held-out fold: the calibration years go beside the held-out ones
            write_netcdf_atomic(restrict_years(pred, cal_years), iv.calibration_path(fold_dir, m, s))
            pred = restrict_years(pred, split.info["heldout_years"])
        write_netcdf_atomic(pred, path)
    bar.close()
    return status


def run_suite(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/bench",
    quick: bool = False,
    models: Sequence[str] | None = None,
    progress: bool = True,
    results_md: str | os.PathLike | None = None,
    folds_dir: str | os.PathLike | None = None,
    freeze: bool = False,
    add_fold_kinds: bool = False,
    max_folds: int | None = None,
    fold_kinds: Sequence[str] | None = None,
    signature: str | None = None,
    seed: int = 0,
    command: str | None = None,
    figures: bool = True,
    score_only: bool = False,
    seeds: int = 1,
    ablate: bool = False,
    intervals: bool = False,
    calibration_fraction: float = iv.CALIBRATION_FRACTION,
) -> SuiteResult:
    """Run (or resume) suite ``name``: every model of ``models`` (default `MODELS`) on every frozen fold,
    writing ``<out>/<suite>/folds/<kind>/<split>/<model>.nc`` (held-out predictions; present ones are
    skipped), then ``metrics.nc``, ``metrics.md``, PNG figures and, with ``results_md``, a dated block in
    that markdown file. ``score_only``: score what is there, train nothing. ``seeds``: run every slot with
    the seeds ``seed … seed+seeds−1`` (seed k > 0 writes ``<model>_seed<k>.nc``; each (fold, model, seed)
    resumes on its own); the tables score the ensemble mean and show the spread over seeds. ``ablate``: add
    the slots of the ablation table (`ABLATIONS`; without ``models`` only those). ``intervals``: calibrated
    predictive intervals (`kgml.compare.intervals`): calibration sites carved out of every fold's training
    sites (calibration *years* out of the training years where the held-out sites are trained on in other
    years), so the models differ from the default run's; everything is written under
    ``<out>/<suite>/intervals`` (fold kinds with per-site held-out years are left out); ``calibration_fraction``:
    the share of each fold's training sites (years) carved out (≥ 2 sites; a finite 90 % quantile needs ≥ 9;
    years: at least 9 where 4 training years are left, `kgml.compare.intervals.n_calibration_years`).
    Returns a `SuiteResult`."""
    suite = get_suite(name)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if ablate:
        models = tuple(dict.fromkeys((*(models or ()), *ablation_models())))
    models = tuple(models or MODELS)
    known = known_models()
    ensembles = [m for m in models if en.is_ensemble(m)]
    for e in ensembles:
        en.validate(e, known)
    unknown = sorted(set(models) - set(known) - set(ensembles))
    if unknown:
        raise KeyError(f"unknown models {unknown}; choose from {list(known)} (or an ensemble a{en.SEP}b)")
    # an ensemble's members run as slots of their own (before it: `en.write_ensembles` needs their files)
    trained = tuple(dict.fromkeys([*(m for e in ensembles for m in en.members(e)), *(m for m in models
                                                                                    if m not in ensembles)]))
    seed_list = [seed + k for k in range(seeds)]
    directory = Path(out) / suite.name
    if intervals:
        directory = directory / "intervals"
    directory.mkdir(parents=True, exist_ok=True)
    ds, folds = prepare_suite(suite, data_dir=data_dir, quick=quick, folds_dir=folds_dir, freeze=freeze,
                              add_fold_kinds=add_fold_kinds, max_folds=max_folds, fold_kinds=fold_kinds)
    interval_notes = {}
    if intervals:
        folds, interval_notes = calibration_folds(folds, calibration_fraction)
    scales = loss_scales(suite, ds)
    cfgs = {s: base_config(suite, quick=quick, seed=s, scales=scales) for s in seed_list}
    signature = signature or suite.signature
    status = run_folds(suite, ds, folds, directory, cfgs[seed_list[0]], trained, quick=quick, signature=signature,
                       progress=progress, score_only=score_only, cfgs=cfgs,
                       options={"intervals": True} if intervals else None)
    status.update(en.write_ensembles(directory, folds, ensembles, seed_list,
                                     extra_paths=(iv.calibration_path, all_years_path)))
    models = tuple(dict.fromkeys([*models, *trained]))
    carried = carried_models(directory / "metrics.nc", models, folds, directory, seed_list)
    if carried:
        print(f"note: scoring {', '.join(carried)} again from their saved predictions (the folder's table had them; "
              "nothing is trained)", file=sys.stderr)
    return score_suite(suite, ds, folds, directory, (*models, *carried), status, results_md=results_md, quick=quick,
                       command=command, figures=figures, signature=signature, seeds=seed_list,
                       interval_notes=interval_notes, ceilings=noise_ceilings(suite, ds, folds, data_dir))


def noise_ceilings(suite: Suite, ds: xr.Dataset, folds: dict[str, list[Split]], data_dir=None
                   ) -> dict[tuple[str, str], dict]:
    """(fold kind, target) → `kgml.evaluation.noise_ceiling` of the held-out site-steps of the kind's folds,
    for the targets whose observation error the suite publishes (`Suite.uncertainty`): the anomaly and IAV R²
    that the true flux itself would reach against these observations. {} without it."""
    if suite.uncertainty is None:
        return {}
    errors = suite.uncertainty(data_dir, ds.site.values.astype(str).tolist())
    out = {}
    for kind, splits in folds.items():
        for target, (sigma, coherent) in errors.items():
            obs_name = suite.observed_name(target)
            var = f"{obs_name}_monthly" if suite.resolution == "monthly" else obs_name
            if var not in ds:
                continue
            held = None  # the held-out part of every fold, each unit on its held-out years (`Split.select`)
            for sp in splits:
                part = sp.select(ds[[var]], sp.info.get("heldout", "test"))
                held = part if held is None else held.combine_first(part)
            out[(kind, target)] = ev.noise_ceiling(held, var, sigma, coherent=coherent, resolution=suite.resolution)
    return out


def calibration_folds(folds: dict[str, list[Split]], fraction: float = iv.CALIBRATION_FRACTION
                      ) -> tuple[dict[str, list[Split]], dict[str, str]]:
    """Every split with its calibration sites carved out (`kgml.compare.intervals.calibration_split`, seeded
    with the frozen folds' seed; calibration years in year-held-out folds); fold kinds whose held-out years
    differ by site are left out, with the reason."""
    out, notes = {}, {}
    for kind, splits in folds.items():
        carved = [iv.calibration_split(s, fraction=fraction, seed=FOLD_SEED) for s in splits]
        if any(c is None for c, _ in carved):
            notes[kind] = next(why for c, why in carved if c is None) + "; left out of the interval run"
            continue
        out[kind] = [c for c, _ in carved]
    if not out:
        raise ValueError("--intervals: no fold kind of the run holds whole sites or whole years out ("
                         + "; ".join(f"{k}: {v}" for k, v in notes.items()) + ")")
    return out, notes


# ---------------------------------------------------------------------------------------------------------
# Scoring and outputs
# ---------------------------------------------------------------------------------------------------------


def _combine(preds: list[xr.Dataset]) -> xr.Dataset:
    acc = None
    for p in preds:
        acc = p if acc is None else acc.combine_first(p)
    return acc


def _observations(suite: Suite, ds: xr.Dataset) -> xr.Dataset:
    names = []
    for t in suite.targets:
        o = suite.observed_name(t)
        names += [o, f"{o}_monthly"] if suite.resolution == "monthly" else [o]
    names += [d for d in ("tair", "tsoil") if d in ds]
    return ds[[n for n in dict.fromkeys(names) if n in ds]]


def _physical(suite: Suite, pred: xr.Dataset, obs: xr.Dataset) -> dict[str, float]:
    out = {"carbon_balance_residual": math.nan, "share_at_bounds": math.nan, "resp_temperature_positive": math.nan}
    suffix = "_monthly" if suite.resolution == "monthly" else ""
    if all(f"{v}{suffix}" in pred for v in ("nee", "gpp", "reco")):
        out["carbon_balance_residual"] = ev.carbon_balance_residual(
            pred, nee=f"nee{suffix}", gpp=f"gpp{suffix}", reco=f"reco{suffix}")["mean_abs"]
    learned = [n.strip() for n in str(pred.attrs.get("learned", "")).split(",") if n.strip()]
    if learned and any(str(v).startswith("theta_") for v in pred.data_vars):
        specs = list(build_model(suite.vegetation).parameter_specs)
        if suite.vegetation == "grassland":  # the photosynthesis options' parameters (vcmax25, kphio, ...) too
            specs += [s for p in PHOTOSYNTHESES.values() for s in p.parameter_specs]
        out["share_at_bounds"] = ev.share_at_bounds(pred, {s.name: s for s in specs}, names=learned)["share"]
    resp, temp = ("rsoil", "tsoil") if "rsoil" in suite.targets else ("reco", "tair")
    if suite.resolution != "annual" and f"{resp}{suffix}" in pred and temp in obs:
        t = obs[[temp]]
        if suffix:
            t = ev.to_monthly(t, [temp], min_fraction=0.0)
        try:
            out["resp_temperature_positive"] = ev.temperature_slope(
                pred, t, variable=f"{resp}{suffix}", temperature=f"{temp}{suffix}")["fraction_positive"]
        except (KeyError, ValueError):
            pass
    return out


def _detected_summary(suite: Suite, ds: xr.Dataset, directory: Path) -> dict:
    """Detected regions of every fold that has them, with their agreement with ``suite.truth_region``."""
    out = {}
    for path in sorted((directory / "folds").glob("*/*/detected_regions.json")):
        det = rd.DetectedRegions.from_dict(json.loads(path.read_text()))
        entry: dict[str, Any] = {"k": det.k, "signature": det.signature, "path": str(path),
                                 "silhouette": det.silhouette}
        sites = [s for s in ds.site.values.astype(str) if s in det.labels]
        ref = suite.truth_region or suite.region  # known truth, else the suite's named regions (for reading)
        if ref in ds.coords:
            truth = ds[ref].sel(site=sites).values.astype(str)
            entry["reference"] = ref
            entry["ari_all"] = rd.adjusted_rand_index(det.of(sites), truth)
            tr = [s for s in sites if s in set(det.train_sites)]
            entry["ari_train"] = rd.adjusted_rand_index(det.of(tr), ds[ref].sel(site=tr).values)
        out[f"{path.parent.parent.name}/{path.parent.name}"] = entry
    return out


#: The FLUXCOM scale components scored in every suite (`kgml.evaluation.decompose`), pooled over sites.
DECOMPOSITION = ("site_mean", "seasonal", "anomaly", "iav")
DECOMPOSITION_STATS = tuple(f"{c}_{m}" for c in DECOMPOSITION for m in ("r2", "nse"))
#: Statistics kept per seed (their spread over seeds is reported beside the ensemble mean's).
SEED_STATS = ("r2_median", "nse_median", "kge_median", "rmse_median", "pooled_r2", "pooled_nse",
              *DECOMPOSITION_STATS)


def decomposition_stats(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str,
                        resolution: str) -> dict[str, float]:
    """Pooled R² and NSE of each scale component (`DECOMPOSITION`) of ``variable``
    (`kgml.evaluation.decomposition_scores`): across-site means, mean seasonal cycles, monthly (daily)
    anomalies and inter-annual variability. NaN for a component without pairs (no seasonal cycle at annual
    resolution, no IAV without two well-covered years)."""
    out = {k: math.nan for k in DECOMPOSITION_STATS}
    try:
        sc = ev.decomposition_scores(pred, obs, variable, obs_variable, resolution=resolution, metrics=("r2", "nse"))
    except (KeyError, ValueError):
        return out
    for comp in DECOMPOSITION:
        for metric in ("r2", "nse"):
            out[f"{comp}_{metric}"] = float(sc.get(comp, {}).get(metric, math.nan))
    return out


def _load(path: Path) -> xr.Dataset | None:
    if not path.exists():
        return None
    with xr.open_dataset(path) as f:
        return f.load()


def seed_mean(preds: Sequence[xr.Dataset]) -> xr.Dataset:
    """Ensemble mean of one fold's predictions by several seeds (attributes of the first)."""
    if len(preds) == 1:
        return preds[0]
    out = xr.concat(list(preds), dim="seed", coords="minimal", compat="override", join="outer",
                    combine_attrs="override").mean("seed", keep_attrs=True)
    out.attrs["n_seeds"] = len(preds)
    return out


def _scored_row(suite: Suite, pred: xr.Dataset, obs: xr.Dataset, variables: dict[str, str], group) -> tuple:
    sc = ev.score_sites(pred, obs, variables, resolution=suite.resolution, group=group)
    stats = {}
    for var, e in ev.summarise(sc)["variables"].items():
        stats[var] = {"n_sites": e["n_sites"], "n": e["n"], "worst_group": e.get("worst_group", {}),
                      **{f"{k}_median": v for k, v in e["median"].items()}, **e["tail"],
                      **{f"pooled_{k}": v for k, v in e["pooled"].items()},
                      **decomposition_stats(pred, obs, var, variables[var], suite.resolution)}
    return sc, stats


def score_suite(suite: Suite, ds: xr.Dataset, folds: dict[str, list[Split]], directory: Path,
                models: Sequence[str], status: dict[str, str] | None = None, *, results_md=None,
                quick: bool = False, command: str | None = None, figures: bool = True,
                signature: str = "", seeds: Sequence[int] = (0,), group: str | None = None,
                labels: dict | None = None, interval_notes: dict | None = None,
                ceilings: dict | None = None) -> SuiteResult:
    """Score the saved held-out predictions of every (model, fold kind) and write the outputs. With several
    ``seeds`` a fold's prediction is the mean over the seeds present for it (the ensemble mean: the rows);
    each seed complete on every fold of the kind is also scored alone (``seed_values``: its spread).
    ``group``: site coordinate of the worst-group scores (default ``suite.region``); ``labels``: model → label
    for the table (default `MODEL_LABELS`); ``ceilings``: `noise_ceilings`, a row of the decomposition tables."""
    status = dict(status or {})
    seeds = [int(x) for x in seeds]
    obs = _observations(suite, ds)
    variables = {t: suite.observed_name(t) for t in suite.targets}
    group = group or suite.region
    group = group if group in ds.coords else None
    rows, site_scores = [], {}
    for kind, splits in folds.items():
        for m in models:
            by_seed = {sd: [_load(prediction_path(directory / "folds" / kind / s.name, m, sd)) for s in splits]
                       for sd in seeds}
            ens, first, n_have = [], [], 0
            for j in range(len(splits)):
                present = [by_seed[sd][j] for sd in seeds if by_seed[sd][j] is not None]
                if present:
                    ens.append(seed_mean(present))
                    first.append(present[0])
                    n_have += 1
            if not ens:
                status.setdefault(m, "not run")
                continue
            complete = [sd for sd in seeds if all(p is not None for p in by_seed[sd])]
            files = [p for sd in seeds for p in by_seed[sd] if p is not None]
            pred = _combine(ens)
            pred.attrs["learned"] = ens[0].attrs.get("learned", "")
            sc, stats = _scored_row(suite, pred, obs, variables, group)
            one = _combine(first)  # physical consistency of single models (θ averaged over seeds drifts inwards)
            one.attrs["learned"] = pred.attrs["learned"]
            phys = _physical(suite, one, obs)
            per_seed = {}
            for sd in complete:
                per_seed[sd] = stats if len(seeds) == 1 else _scored_row(suite, _combine(by_seed[sd]), obs,
                                                                         variables, group)[1]
            done = f"{len(complete)}/{len(seeds)} seeds complete" if len(seeds) > 1 else ""
            if n_have == len(splits) and len(complete) == len(seeds):
                status.setdefault(m, "ok")
            else:
                status.setdefault(m, f"partial: {n_have}/{len(splits)} folds" + (f", {done}" if done else ""))
            site_scores[(m, kind)] = sc
            n_seeds_run = max(1, sum(any(p is not None for p in by_seed[sd]) for sd in seeds))
            fit_s = float(np.nansum([p.attrs.get("fit_seconds", np.nan) for p in files])) / n_seeds_run
            for var, st in stats.items():
                seed_values = {k: [per_seed[sd][var][k] if sd in per_seed else math.nan for sd in seeds]
                               for k in SEED_STATS}
                rows.append({"model": m, "fold_kind": kind, "variable": var, "n_folds": n_have, **st, **phys,
                             "n_seeds": len(complete) or 1, "seeds": list(seeds), "seed_values": seed_values,
                             "fit_seconds": fit_s, "n_parameters": int(ens[0].attrs.get("n_parameters", -1))})
    detected = _detected_summary(suite, ds, directory)
    md = metrics_markdown(suite, rows, status, models, folds, detected, quick=quick, command=command, labels=labels)
    ablation = ablation_rows(suite, rows, folds)
    md = md.rstrip() + "\n\n" + decomposition_markdown(suite, rows, models, folds, seeds, ceilings)
    if ablation:
        md = md.rstrip() + "\n\n" + ablation_markdown(suite, ablation, seeds)
    if "site_climatology" in models:
        ref_md = reference_skill_markdown(reference_skill_rows(suite, ds, folds, directory, models, seeds, obs))
        if ref_md:
            md = md.rstrip() + "\n\n" + ref_md
    irows = []
    if any("calibration_sites" in s.info or "calibration_years" in s.info for splits in folds.values() for s in splits):
        irows, inotes = iv.interval_rows(suite, ds, folds, directory, models, seeds, obs)
        fraction = next(s.info["calibration_fraction"] for splits in folds.values() for s in splits
                        if "calibration_fraction" in s.info)
        md = md.rstrip() + "\n\n" + iv.intervals_markdown(irows, {**inotes, **(interval_notes or {})}, seeds,
                                                            fraction)
    write_text_atomic(md, directory / "metrics.md")
    mds = metrics_dataset(suite, rows, site_scores, status, detected, seeds=seeds, ablation=ablation)
    extra = iv.intervals_dataset(irows)
    if extra:
        mds = mds.assign_coords(extra["coords"]).assign(extra["data_vars"])
    _note_dropped_models(directory / "metrics.nc", mds)
    write_netcdf_atomic(mds, directory / "metrics.nc")
    figs = []
    if figures:
        figs = fg.suite_figures(suite, ds, obs, folds, directory, models, site_scores, seeds=seeds)
        if irows:
            figs.append(iv.coverage_figure(irows, directory / "coverage.png", suite.name))
    if results_md is not None:
        append_results(results_md, suite, md, command=command)
    return SuiteResult(suite.name, directory, rows, status, md, figs, detected, site_scores)


#: Columns of the table of skill against the site climatology (`reference_skill_rows`).
REFERENCE_STATS = ("skill_median", "skill_p10", "departure_corr", "mean_departure_corr", "sign_agreement")


def all_years_path(fold_dir: Path, model: str, seed: int = 0) -> Path:
    """Predictions of every year of the held-out sites of a per-site-years fold (the scored file keeps only
    the held-out years): ``<fold_dir>/all_years/<model>[_seed<k>].nc``."""
    return prediction_path(Path(fold_dir) / "all_years", model, seed)


def reference_skill_rows(suite: Suite, ds: xr.Dataset, folds: dict[str, list[Split]], directory: Path,
                         models: Sequence[str], seeds: Sequence[int], obs: xr.Dataset,
                         reference: str = "site_climatology") -> list[dict]:
    """For the fold kinds that hold out years of the training sites (per-unit years, e.g. ``driest_year_out``):
    each model's MSE skill against the naive ``reference`` slot of the same folds
    (`kgml.evaluation.reference_skill`) and how well it predicts the held-out year's departure from its own
    climatology (`kgml.evaluation.departure_skill`, from the `all_years_path` predictions), for the ensemble
    mean over ``seeds`` and for each seed alone (its spread)."""
    rows = []
    for kind, splits in folds.items():
        held = [sp.part(sp.info.get("heldout", "test")) for sp in splits]
        if not any(h.unit_years is not None for h in held):
            continue
        refs = [_load(prediction_path(directory / "folds" / kind / sp.name, reference, 0)) for sp in splits]
        if any(r is None for r in refs):
            continue
        ref = _combine(refs)
        fold_dirs = [directory / "folds" / kind / sp.name for sp in splits]
        for m in models:
            if m == reference:
                continue
            by_seed = {sd: [_load(prediction_path(f, m, sd)) for f in fold_dirs] for sd in seeds}
            every = {sd: [_load(all_years_path(f, m, sd)) for f in fold_dirs] for sd in seeds}
            complete = [sd for sd in seeds if all(x is not None for x in (*by_seed[sd], *every[sd]))]
            if not complete:
                continue
            ens = _combine([seed_mean([by_seed[sd][j] for sd in complete]) for j in range(len(splits))])
            ens_all = [seed_mean([every[sd][j] for sd in complete]) for j in range(len(splits))]
            for t in suite.targets:
                var = f"{t}_monthly" if suite.resolution == "monthly" else t
                if var not in ens or var not in ref:
                    continue
                args = (suite, t, obs, ref, held)
                one = {sd: _reference_scores(_combine(by_seed[sd]), every[sd], *args) for sd in complete}
                rows.append({"model": m, "fold_kind": kind, "variable": t, "n_seeds": len(complete),
                             **_reference_scores(ens, ens_all, *args),
                             "seed_values": {k: [one[sd][k] for sd in complete] for k in REFERENCE_STATS}})
    return rows


def _reference_scores(pred, preds_all: Sequence[xr.Dataset], suite: Suite, target: str, obs, ref,
                      held: Sequence[Part]) -> dict:
    """Skill against ``ref`` on the held-out steps of all folds (``pred``: their scored predictions combined),
    and the departures of each fold's held-out years from *that fold's* model (``preds_all``: its predictions
    of every year, one per fold: a fold's model trained on the other folds' test years), pooled over folds."""
    o, res = suite.observed_name(target), suite.resolution
    parts = [ev.departures(p, obs, target, o, test_years={u: ys for u, ys in (h.unit_years or ()) if ys},
                           resolution=res) for p, h in zip(preds_all, held, strict=True)]
    pooled = {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}
    return {**ev.reference_skill(pred, obs, ref, target, o, resolution=res), **ev.departure_scores(pooled)}


def reference_skill_markdown(rows: list[dict], reference: str = "site_climatology") -> str:
    """The table of `reference_skill_rows` (one block per fold kind and target)."""
    if not rows:
        return ""
    lines = [f"### Skill against the site climatology ({reference}) in the held-out years", "",
             "Reference: each site's own mean seasonal cycle of its training years. skill = 1 − MSE/MSE(ref) per "
             "site (median / p10; > 0 beats the climatology). Departure: a held-out month minus the mean of its "
             "calendar month over the site's training years — the model's own climatology for the prediction "
             "(its bias cancels), the observed one for the observation (`kgml.evaluation.departure_skill`); "
             "correlation r of predicted and observed departures pooled over site-months, and across sites of the "
             "held-out year's mean departure, and the share of sites with its observed sign. Cells: ensemble mean "
             "of the seeds [min…max over single seeds].", ""]
    for kind in dict.fromkeys(r["fold_kind"] for r in rows):
        for var in dict.fromkeys(r["variable"] for r in rows if r["fold_kind"] == kind):
            lines += [f"#### {kind} — {var}", "",
                      "| model | seeds | sites | skill med | skill p10 | departure r (months) | departure r (year "
                      "mean) | sign agreement |", "|---|---|---|---|---|---|---|---|"]
            for r in (r for r in rows if r["fold_kind"] == kind and r["variable"] == var):
                def cell(k, r=r):
                    sv = [x for x in r["seed_values"][k] if np.isfinite(x)]
                    spread = f" [{min(sv):.3f}…{max(sv):.3f}]" if len(sv) > 1 else ""
                    return f"{r[k]:.3f}{spread}" if np.isfinite(r[k]) else "–"
                lines.append(f"| {r['model']} | {r['n_seeds']} | {r['n_sites']} | " +
                             " | ".join(cell(k) for k in REFERENCE_STATS) + " |")
            lines.append("")
    return "\n".join(lines)


_STATS = ("n_sites", "n_folds", "rmse_median", "bias_median", "r2_median", "nse_median", "kge_median", "rmse_p90",
          "abs_bias_p90", "r2_p10", "nse_p10", "kge_p10", "pooled_rmse", "pooled_bias", "pooled_r2", "pooled_nse",
          "pooled_kge", "carbon_balance_residual", "share_at_bounds", "resp_temperature_positive", "fit_seconds",
          "n_parameters")


def metrics_dataset(suite: Suite, rows: list[dict], site_scores: dict, status: dict, detected: dict, *,
                    seeds: Sequence[int] = (0,), ablation: list[dict] | None = None) -> xr.Dataset:
    """The summary rows on (model, fold_kind, variable) (the ensemble mean over ``seeds``), the scale
    decomposition (``<component>_r2``/``_nse``), the per-seed statistics on (..., seed) (``seed_<stat>``),
    the per-site scores on (..., site) and the ablation deltas on (component, fold_kind, quantity)."""
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["none"]
    kinds = list(dict.fromkeys(r["fold_kind"] for r in rows)) or ["none"]
    variables = list(suite.targets)
    shape = (len(models), len(kinds), len(variables))
    stats = (*_STATS, *DECOMPOSITION_STATS, "n_seeds")
    data = {s: np.full(shape, np.nan) for s in stats}
    seeds = [int(x) for x in seeds]
    per_seed = {s: np.full((*shape, len(seeds)), np.nan) for s in SEED_STATS}
    for r in rows:
        i, j, k = models.index(r["model"]), kinds.index(r["fold_kind"]), variables.index(r["variable"])
        for s in stats:
            data[s][i, j, k] = r.get(s, np.nan)
        for s, vals in r.get("seed_values", {}).items():
            per_seed[s][i, j, k, :] = vals
    dv = {s: (("model", "fold_kind", "variable"), v) for s, v in data.items()}
    dv.update({f"seed_{s}": (("model", "fold_kind", "variable", "seed"), v) for s, v in per_seed.items()})
    if ablation:
        comps = list(dict.fromkeys(a["component"] for a in ablation))
        akinds = list(dict.fromkeys(a["fold_kind"] for a in ablation))
        qty = list(ABLATION_QUANTITIES)
        arrs = {n: np.full((len(comps), len(akinds), len(qty)), np.nan)
                for n in ("ablation_delta", "ablation_delta_min", "ablation_delta_max", "ablation_delta_ensemble")}
        for a in ablation:
            i, j, k = comps.index(a["component"]), akinds.index(a["fold_kind"]), qty.index(a["quantity"])
            for n, key in (("ablation_delta", "mean"), ("ablation_delta_min", "min"), ("ablation_delta_max", "max"),
                           ("ablation_delta_ensemble", "ensemble")):
                arrs[n][i, j, k] = a[key]
        for n, v in arrs.items():
            dv[n] = (("component", "ablation_fold_kind", "quantity"), v)
    sites = sorted({str(s) for sc in site_scores.values() for s in sc.site.values})
    if sites:
        for metric in ("r2", "rmse", "nse", "kge", "bias"):
            arr = np.full((*shape, len(sites)), np.nan)
            for (m, kind), sc in site_scores.items():
                if metric not in sc:
                    continue
                for k, var in enumerate(variables):
                    if var not in sc.variable.values:
                        continue
                    vals = sc[metric].sel(variable=var)
                    idx = [sites.index(str(s)) for s in sc.site.values]
                    arr[models.index(m), kinds.index(kind), k, idx] = vals.values
            dv[f"site_{metric}"] = (("model", "fold_kind", "variable", "site"), arr)

    extra: dict[str, Any] = {"seed": seeds}
    if ablation:
        extra.update(component=comps, ablation_fold_kind=akinds, quantity=qty,
                     ablation_with=("component", [ABLATIONS[c][0] for c in comps]),
                     ablation_without=("component", [ABLATIONS[c][1] for c in comps]))
    ds = xr.Dataset(dv, coords={"model": models, "fold_kind": kinds, "variable": variables, **extra,
                                **({"site": sites} if sites else {})},
                    attrs={"Conventions": "CF-1.8", "title": f"kgml distribution-shift benchmark: {suite.name}",
                           "source": f"kgml {__version__} kgml.compare", "resolution": suite.resolution,
                           "status": json.dumps(status), "detected_regions": json.dumps(detected, default=float),
                           "history": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} kgml bench shift"})

    add_metric_units(ds, [VARIABLES[v].units if v in VARIABLES else "" for v in variables])
    ds["carbon_balance_residual"].attrs["units"] = "gC m-2 d-1"
    ds["r2_median"].attrs["long_name"] = "median over held-out sites of the squared Pearson correlation"
    ds["rmse_p90"].attrs["long_name"] = "90th percentile over held-out sites of the RMSE (bad tail)"
    for c in DECOMPOSITION:
        for m in ("r2", "nse"):
            ds[f"{c}_{m}"].attrs["long_name"] = f"pooled {m.upper()} of the {c.replace('_', ' ')} component over the " \
                                               "held-out sites (kgml.evaluation.decompose)"
    ds["n_seeds"].attrs.update(long_name="seeds complete on every fold (the rows score the mean over seeds)",
                               units="1")
    for name in ds.data_vars:
        if str(name).startswith("ablation_"):  # deltas of R² and NSE: dimensionless
            ds[name].attrs["units"] = "1"
    if ablation:
        ds["ablation_delta"].attrs["long_name"] = "mean over seeds of skill(with component) - skill(without), " \
                                                  "paired by seed"
    return ds


def _f(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


_TAIL = {"r2": "r2_p10", "rmse": "rmse_p90", "nse": "nse_p10", "kge": "kge_p10", "bias": "abs_bias_p90"}
_NAME = {"r2": "R²", "rmse": "RMSE", "nse": "NSE", "kge": "KGE", "bias": "bias"}


def metrics_markdown(suite: Suite, rows: list[dict], status: dict, models: Sequence[str], folds: dict,
                     detected: dict, *, quick: bool = False, command: str | None = None,
                     labels: dict | None = None) -> str:
    """One table per fold kind and target: every model (also those not available), median and bad tail
    over held-out sites in the variable's metric order (NEE leads with R² and RMSE), the pooled lead
    metric, and physical-consistency columns."""
    lines = [f"# {suite.name}{' (quick)' if quick else ''}", "", suite.description, ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if suite.anchor:
        lines += [f"Reference: {suite.anchor}", ""]
    for kind, splits in folds.items():
        for var in suite.targets:
            order = [m for m in metric_order(var) if m != "bias"][:4]
            lead = order[0]
            head = ["model", "sites"] + [f"{_NAME[m]} med / {_TAIL[m].split('_')[-1]}" for m in order] + \
                   [f"pooled {_NAME[lead]}", "C-balance resid", "θ at bounds", "resp dT>0", "fit s"]
            lines += [f"### {kind} ({len(splits)} folds) — {var} ({suite.resolution})", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for m in models:
                r = next((r for r in rows if r["model"] == m and r["fold_kind"] == kind and r["variable"] == var), None)
                if r is None:
                    lines.append(f"| {m} | – | {status.get(m, 'not run')} |" + " |" * (len(head) - 3))
                    continue
                cells = [m, str(r["n_sites"])] + [f"{_f(r[f'{k}_median'])} / {_f(r[_TAIL[k]])}" for k in order] + [
                    _f(r[f"pooled_{lead}"]), _f(r["carbon_balance_residual"]), _f(r["share_at_bounds"]),
                    _f(r["resp_temperature_positive"]), _f(round(r["fit_seconds"], 1))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["Median / bad tail over held-out sites: p10 of R², NSE, KGE, p90 of RMSE; pooled = all held-out "
              "site-steps together. C-balance resid: mean |NEE − (Reco − GPP)| (gC m-2 d-1); θ at bounds: share of "
              "learned parameter values within 1 % of a bound; resp dT>0: share of sites whose predicted "
              "respiration rises with temperature.", ""]
    if detected:
        lines += ["Detected regions (region-aware scope; ARI = adjusted Rand index of the detected regions vs the "
                  "known regions, 1 = identical, 0 = chance):", "",
                  "| fold | signature | k | compared with | ARI all sites / training sites |", "|---|---|---|---|---|"]
        for fold, e in detected.items():
            ari = f"{_f(e.get('ari_all'))} / {_f(e.get('ari_train'))}" if "ari_all" in e else "–"
            lines.append(f"| {fold} | {e['signature']} | {e['k']} | {e.get('reference', '–')} | {ari} |")
        lines.append("")
    labels = MODEL_LABELS if labels is None else labels
    lines += ["Models: " + "; ".join(f"`{m}` {en.ensemble_label(m, labels) if en.is_ensemble(m) else labels[m]}"
                                     for m in models), ""]
    return "\n".join(lines)


def _f3(x) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def _spread(values: Sequence[float]) -> str:
    """``min–max`` of the finite per-seed values (``–`` with fewer than two)."""
    v = [x for x in values if isinstance(x, float | int) and math.isfinite(x)]
    if len(v) < 2:
        return "–"
    return f"{min(v):.3f}…{max(v):.3f}"


def decomposition_markdown(suite: Suite, rows: list[dict], models: Sequence[str], folds: dict,
                           seeds: Sequence[int], ceilings: dict | None = None) -> str:
    """Per fold kind and target: the skill of the ensemble mean (over ``seeds``) with the min–max of the
    per-seed values, and the pooled R² / NSE of the four FLUXCOM scale components; with ``ceilings``
    (`noise_ceilings`) a last row: what the true flux itself would score on the anomalies and the IAV."""
    lines = ["### Scale decomposition and seed spread", "",
             f"Seeds {', '.join(map(str, seeds))}: each cell is the skill of the ensemble-mean prediction "
             "(mean over the seeds), [min–max over the single seeds] beside it where more than one seed is "
             "complete. Components (pooled over held-out sites, `kgml.evaluation.decompose`; Jung et al. 2020): "
             "site mean (across sites), mean seasonal cycle, anomalies (value − the site's mean seasonal cycle) "
             "and IAV (annual means of the anomalies). Cells: R² / NSE." + (
                 " The measurement-noise ceiling is the R² that the true flux itself would score against these "
                 "observations, given their published random and year-coherent (u*) error "
                 "(`kgml.evaluation.noise_ceiling`)." if ceilings else ""), ""]
    for kind, splits in folds.items():
        for var in suite.targets:
            lead = "r2" if var.startswith("nee") else "nse"
            head = ["model", "seeds", f"{_NAME[lead]} med [seeds]", "NSE med [seeds]" if lead == "r2" else
                    "R² med [seeds]", "site mean", "seasonal", "anomaly [R² seeds]", "IAV [R² seeds]"]
            other = "nse" if lead == "r2" else "r2"
            body = []
            for m in models:
                r = next((r for r in rows if r["model"] == m and r["fold_kind"] == kind and r["variable"] == var), None)
                if r is None:
                    continue
                sv = r.get("seed_values", {})

                def cell(key, r=r, sv=sv):
                    return f"{_f3(r.get(key, math.nan))} [{_spread(sv.get(key, []))}]"

                def pair(comp, r=r):
                    return f"{_f3(r.get(f'{comp}_r2', math.nan))} / {_f3(r.get(f'{comp}_nse', math.nan))}"

                body.append("| " + " | ".join([
                    m, f"{r.get('n_seeds', 1)}/{len(seeds)}", cell(f"{lead}_median"), cell(f"{other}_median"),
                    pair("site_mean"), pair("seasonal"), f"{pair('anomaly')} [{_spread(sv.get('anomaly_r2', []))}]",
                    f"{pair('iav')} [{_spread(sv.get('iav_r2', []))}]"]) + " |")
            if not body:
                continue
            c = (ceilings or {}).get((kind, var))
            if c is not None:
                body.append("| measurement-noise ceiling (the true flux) | – | – | – | – | – | "
                            f"{_f3(c['anomaly'])} / – | {_f3(c['iav'])} / – |")
            lines += [f"### {kind} ({len(splits)} folds) — {var} ({suite.resolution}): decomposition", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *body, ""]
            if any(sp.part(sp.info.get("heldout", "test")).unit_years is not None for sp in splits):
                lines += ["Held-out years of trained sites: the anomalies of a held-out year are taken about the "
                          "mean cycle of the held-out years' own predictions, and a model that learned the site's "
                          "climatology from its other years predicts each year's anomaly with the opposite sign "
                          "(R² squares that negative correlation; the naive site climatology scores it too). Read "
                          "the departures in the table against the site climatology below.", ""]
    return "\n".join(lines)


#: What the ablation table compares: (row key, label).
ABLATION_QUANTITIES = {"r2_median": "median R²", "nse_median": "median NSE", "anomaly_r2": "anomaly R²",
                       "iav_r2": "IAV R²"}


def ablation_rows(suite: Suite, rows: list[dict], folds: dict) -> list[dict]:
    """Δ = skill(with) − skill(without) of every `ABLATIONS` component whose two models were scored, on
    the suite's lead target (NEE where scored), per fold kind and quantity: mean, min and max over the seeds
    both ran (paired by seed), and the Δ of the ensemble means."""
    var = "nee" if "nee" in suite.targets else suite.targets[0]
    out = []
    for comp, (with_m, without_m, _) in ABLATIONS.items():
        for kind in folds:
            a = next((r for r in rows if r["model"] == with_m and r["fold_kind"] == kind and r["variable"] == var), None)
            b = next((r for r in rows if r["model"] == without_m and r["fold_kind"] == kind and r["variable"] == var),
                     None)
            if a is None or b is None:
                continue
            for q in ABLATION_QUANTITIES:
                d = np.asarray(a["seed_values"][q], np.float64) - np.asarray(b["seed_values"][q], np.float64)
                d = d[np.isfinite(d)]
                out.append({"component": comp, "fold_kind": kind, "variable": var, "quantity": q,
                            "n_seeds": int(d.size), "mean": float(d.mean()) if d.size else math.nan,
                            "min": float(d.min()) if d.size else math.nan,
                            "max": float(d.max()) if d.size else math.nan,
                            "ensemble": float(a[q] - b[q]) if math.isfinite(a[q] - b[q]) else math.nan,
                            "folds": f"{a['n_folds']}/{b['n_folds']}"})
    return out


def ablation_markdown(suite: Suite, ablation: list[dict], seeds: Sequence[int]) -> str:
    """One table per fold kind: each component's Δ of median R², median NSE, anomaly and IAV R² — mean over
    the paired seeds [min–max], and of the ensemble means."""
    lines = ["### Ablations of the global hybrid", "",
             "Δ = skill(with the component) − skill(without), paired seed by seed: mean over seeds [min–max]; "
             "ens = Δ of the ensemble means. Positive: the component helps. Components hybrid_global does not "
             "use (site attention, residual heads, synthetic pretraining) are measured by adding them.", ""]
    for kind in dict.fromkeys(a["fold_kind"] for a in ablation):
        mine = [a for a in ablation if a["fold_kind"] == kind]
        var = mine[0]["variable"]
        head = ["component", "with → without", "seeds", "folds"] + [f"Δ {lab}" for lab in ABLATION_QUANTITIES.values()]
        lines += [f"### {kind} — {var}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for comp in dict.fromkeys(a["component"] for a in mine):
            cells = {a["quantity"]: a for a in mine if a["component"] == comp}
            w, wo, note = ABLATIONS[comp]
            first = next(iter(cells.values()))
            vals = []
            for q in ABLATION_QUANTITIES:
                a = cells[q]
                rng = f" [{a['min']:+.3f}…{a['max']:+.3f}]" if a["n_seeds"] > 1 else ""
                mean = "–" if not math.isfinite(a["mean"]) else f"{a['mean']:+.3f}"
                ens = "" if not math.isfinite(a["ensemble"]) or a["n_seeds"] < 2 else f"; ens {a['ensemble']:+.3f}"
                vals.append(mean + rng + ens)
            lines.append("| " + " | ".join([f"{comp} ({note})", f"{w} → {wo}", f"{first['n_seeds']}/{len(seeds)}",
                                            first["folds"], *vals]) + " |")
        lines.append("")
    return "\n".join(lines)


def append_results(path: str | os.PathLike, suite: Suite, md: str, *, command: str | None = None) -> None:
    """Append a dated block to the ``## Distribution shift`` section of ``path`` (the section is created at
    the end when missing; blocks go at the end of the section)."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    date = dt.date.today().isoformat()
    body = md.replace(f"# {suite.name}", f"### {suite.name} — {date}, {machine_line()}", 1)
    body = body.replace("\n### ", "\n#### ")
    block = "\n" + body.rstrip() + "\n"
    if RESULTS_SECTION not in text:
        text = text.rstrip() + f"\n\n{RESULTS_SECTION}\n\nDistribution-shift accuracy suite (issue 5); each block is " \
                               "one run, newest last.\n" + block
    else:
        start = text.index(RESULTS_SECTION) + len(RESULTS_SECTION)
        nxt = text.find("\n## ", start)
        text = text + block if nxt < 0 else text[:nxt].rstrip() + "\n" + block + text[nxt:]
    write_text_atomic(text, path)


def command_line(argv: Sequence[str] | None = None) -> str:
    return "kgml " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
