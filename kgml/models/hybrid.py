"""The hybrid model: a temporal encoder and location-aware heads predict the process model's parameters
(and a bounded correction); the process model, run on the raw drivers, makes the fluxes and the yield.

`HybridModel` acts on one site window (`SiteWindow`); callers vmap. `ProcessModel` is the process model
alone with one calibrated global parameter set (the pure-neural model is `kgml.models.neural.NeuralModel`).
`prepare_windows` turns a (site, time) dataset into windows of inputs and targets (numpy, host memory);
`hybrid_objective` is the training loss of all three.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from kgml.data.batching import last_window_cover, make_windows, site_means
from kgml.data.drivers import fill_driver_gaps, met_from_dataset
from kgml.data.schema import DataWarning
from kgml.models import constraints, losses
from kgml.models.base import AbstractNetworkModel, AbstractSiteModel
from kgml.models.nn.encoders import TemporalEncoder
from kgml.models.nn.heads import ParameterHead, ResidualHead
from kgml.models.nn.location import LocationEncoder, haversine_km
from kgml.models.nn.site_attention import SiteAttention
from process_models.crop import TECHNOLOGY_SPECS, technology_factor
from process_models.ecosystem import CropEcosystem, Ecosystem
from process_models.forcing import Met
from process_models.parameters import ParameterSpec
from process_models.simulate import simulate

__all__ = [
    "DAYS_PER_YEAR",
    "ContextPool",
    "HybridModel",
    "HybridObjective",
    "Predictions",
    "ProcessModel",
    "SiteWindow",
    "Targets",
    "TaskSpec",
    "TechnologyTrend",
    "WindowData",
    "build_hybrid",
    "build_process_model",
    "context_pool",
    "hybrid_objective",
    "predict",
    "predictions_to_dataset",
    "prepare_windows",
    "site_embedding",
    "target_scales",
]

DAYS_PER_YEAR = 365
MET_FIELDS = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2", "patm", "doy", "lat")
#: Seasonal features added to every feature set: sin and cos of 2π·doy/365.
SEASONAL_FEATURES = ("doy_sin", "doy_cos")


# ---------------------------------------------------------------------------------------------------------
# Inputs, targets, predictions (one site window; a leading batch axis when stacked)
# ---------------------------------------------------------------------------------------------------------


class SiteWindow(NamedTuple):
    """What the hybrid sees of one site window. The network reads normalised ``x`` and ``static``; the
    physics reads the raw drivers ``met``. Context arrays describe nearby observed sites."""

    x: Float[Array, "time feature"]  # noqa: F722
    x_mask: Bool[Array, " time"]  # noqa: F722
    met: Met  # raw drivers, every field (time,)
    static: Float[Array, " n_static"]  # noqa: F722
    lat: Float[Array, ""]  # noqa: F722
    lon: Float[Array, ""]  # noqa: F722
    region: Int[Array, ""]  # noqa: F722
    context_lat: Float[Array, " n_ctx"]  # noqa: F722
    context_lon: Float[Array, " n_ctx"]  # noqa: F722
    context_static: Float[Array, "n_ctx n_static"]  # noqa: F722
    context_summary: Float[Array, "n_ctx n_summary"]  # noqa: F722
    context_mask: Bool[Array, " n_ctx"]  # noqa: F722
    context_distance_km: Float[Array, " n_ctx"]  # noqa: F722
    year: Float[Array, ""] | None = None  # noqa: F722  #: calendar year of the window's first day


class Targets(NamedTuple):
    """Observations of one window at their own resolution (values 0 where the mask is False)."""

    daily: Float[Array, "time n_daily"]  # noqa: F722
    daily_mask: Bool[Array, "time n_daily"]  # noqa: F722
    monthly: Float[Array, "month n_monthly"]  # noqa: F722
    monthly_mask: Bool[Array, "month n_monthly"]  # noqa: F722
    annual: Float[Array, " year"]  # noqa: F722
    annual_mask: Bool[Array, " year"]  # noqa: F722
    month_index: Int[Array, " time"]  # noqa: F722


class Predictions(NamedTuple):
    """Daily fluxes (gC m-2 d-1; NEE = Reco − GPP exactly), et (mm d-1), lai, the year-end yield of each
    whole year (t ha-1), the physics-only fluxes, the residual corrections, and the parameters."""

    gpp: Array
    reco: Array
    nee: Array
    rsoil: Array
    et: Array
    lai: Array
    crop_yield: Array
    gpp_physics: Array
    reco_physics: Array
    rsoil_physics: Array
    residual: dict
    theta: dict
    theta_daily: dict
    unconstrained: dict


@dataclass(frozen=True)
class TaskSpec:
    """Names of the targets in `Targets` (static; part of every checkpoint)."""

    daily: tuple[str, ...] = ("nee", "gpp", "reco", "rsoil")
    monthly: tuple[str, ...] = ()
    annual: bool = True

    @property
    def monthly_variables(self) -> tuple[str, ...]:
        return tuple(f"{n}_monthly" for n in self.monthly)


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


class TechnologyTrend(eqx.Module):
    """The bounded technology trend on yield potential (`process_models.crop.technology_factor`): one learned
    regional rate and plateau (`process_models.crop.TECHNOLOGY_SPECS`, bounded by their transforms), a fixed
    reference year. The physics makes each year's weather-driven yield; the trend scales it, so a drought
    year stays a drought year of the physics, and the forecast trend levels off instead of running away.

    With ``site_rate`` (`create` with ``n_sites`` > 0 and ``site_rate=True``), each site (the window's region index, one region per
    training site) adds its own learned offset to the *unconstrained* rate: every site's rate stays inside the
    rate's bounds (0–0.04 yr-1 through its logit transform), never negative; a site without an index (−1, not
    trained) gets the shared rate. The plateau stays shared.

    With ``site_level`` (`create` with ``site_level=True``), each site also gets its own yield level, a
    factor exp(L·tanh(raw)) on the yield potential, bounded to exp(±L) with L = `LEVEL_MAX` (0.4: ×0.67…×1.49,
    wider than the spread of the 40 Illinois counties' 1980–2018 corn yields, ×0.74…×1.21 of the mean over
    counties of the same year in the Khaki et al. 2020 data), 1 for an unknown site: what soils and management add to the weather-driven
    physics of each county, as the per-county line's intercept does."""

    raw: dict[str, Array]
    reference_year: float = eqx.field(static=True)
    site_rate: Array | None = None  #: (n_sites,) raw offsets of the unconstrained rate per site, or None
    site_level: Array | None = None  #: (n_sites,) raw log-level per site (bounded by tanh), or None
    #: bound L of the per-site log-level (–)
    LEVEL_MAX: ClassVar[float] = 0.4
    specs: ClassVar[dict[str, ParameterSpec]] = {s.name: s for s in TECHNOLOGY_SPECS}
    #: unconstrained value = GAIN × raw: Adam moves each raw value by ≈ the learning rate per step, and the
    #: two trend values (shared by every site-year) must cross their range in a few hundred steps.
    GAIN: ClassVar[float] = 10.0

    @classmethod
    def create(cls, reference_year: float, n_sites: int = 0, site_level: bool = False,
               site_rate: bool = True) -> TechnologyTrend:
        """At the specs' defaults; with ``n_sites`` > 0 a per-site rate offset (``site_rate``), zero (the shared
        rate) at start, and with ``site_level`` a per-site level, 1 at start."""
        if n_sites < 0:
            raise ValueError(f"TechnologyTrend: n_sites must be >= 0, got {n_sites}")
        if site_level and not n_sites:
            raise ValueError("TechnologyTrend: a per-site level needs n_sites > 0")
        zeros = jnp.zeros(n_sites, jnp.float32) if n_sites else None
        return cls({n: jnp.asarray(s.default_unconstrained / cls.GAIN, jnp.float32) for n, s in cls.specs.items()},
                   float(reference_year), zeros if site_rate else None, zeros if site_level else None)

    @staticmethod
    def _of_site(values: Array, region: Array) -> Array:
        region = jnp.asarray(region)
        return jnp.where(region >= 0, values[jnp.clip(region, 0, values.shape[0] - 1)], 0.0)

    def level(self, region: Array | None = None) -> Array:
        """The per-site yield level factor (–), in [exp(−L), exp(L)]; 1 without a per-site level or site index."""
        if self.site_level is None or region is None:
            return jnp.asarray(1.0, jnp.float32)
        return jnp.exp(self.LEVEL_MAX * jnp.tanh(self.GAIN * self._of_site(self.site_level, region)))

    @property
    def unconstrained(self) -> dict[str, Array]:
        return {n: self.GAIN * v for n, v in self.raw.items()}

    def theta(self, region: Array | None = None) -> dict[str, Array]:
        """Physical ``tech_rate`` (yr-1) and ``tech_max_gain`` (–); with a per-site rate and a ``region``
        index (scalar int; −1: unknown site), that site's rate."""
        u = self.unconstrained
        if self.site_rate is not None and region is not None:
            u = {**u, "tech_rate": u["tech_rate"] + self.GAIN * self._of_site(self.site_rate, region)}
        return {n: self.specs[n].to_physical(v) for n, v in u.items()}

    def __call__(self, years: Array, region: Array | None = None) -> Array:
        th = self.theta(region)
        return technology_factor(years, th["tech_rate"], th["tech_max_gain"], self.reference_year) * self.level(region)


def _annual_yield(technology: TechnologyTrend | None, annual: Array, w: SiteWindow) -> Array:
    """Year-end yields of a window, times the technology factor of each year (of the window's site, with a
    per-site rate) when the model has one."""
    if technology is None:
        return annual
    if w.year is None:
        raise ValueError("the technology trend needs the windows' calendar year (SiteWindow.year); build the "
                         "windows with kgml.models.hybrid.prepare_windows")
    years = w.year + jnp.arange(annual.shape[-1], dtype=jnp.float32)
    return annual * technology(years, w.region)


def _locate(location: LocationEncoder, lat, lon, static, region):
    if location.n_regions:
        return location(lat, lon, static, region)
    return location(lat, lon, static)


def site_embedding(model, w: SiteWindow) -> tuple[Array, Array]:
    """(daily features (time, hidden), site embedding (embed_dim,)) of one window, for any model with the
    fields ``encoder``, ``location``, ``embed``, ``context_proj``, ``site_attention`` and ``use_summary``
    (`HybridModel`, `kgml.models.neural.NeuralModel`): the encoder's summary (if ``use_summary``) ⊕ the location
    encoding → linear embedding, then site attention over the context sites (their location encoding ⊕
    observation summary, projected)."""
    h_seq, summary = model.encoder(w.x, w.x_mask)
    parts = [summary] if model.use_summary else []
    if model.location is not None:
        parts.append(_locate(model.location, w.lat, w.lon, w.static, w.region))
    emb = model.embed(jnp.concatenate(parts))
    if model.site_attention is not None:
        ctx_loc = jax.vmap(_locate, in_axes=(None, 0, 0, 0, None))(
            model.location, w.context_lat, w.context_lon, w.context_static, w.region
        )
        ctx = jax.vmap(model.context_proj)(jnp.concatenate([ctx_loc, w.context_summary], axis=-1))
        emb = model.site_attention(emb, ctx, w.context_mask, w.context_distance_km)
    return h_seq, emb


class HybridModel(AbstractNetworkModel):
    """Encoder + location encoding (+ site attention) → parameter head (+ residual head) → process model.

    For one site window: normalised drivers → `TemporalEncoder` → (daily features, summary); summary ⊕
    `LocationEncoder`(lat, lon, static, region) → linear embedding; optionally `SiteAttention` over the
    context sites (their location encoding ⊕ a summary of their observations); `ParameterHead` →
    per-site (and optionally daily) physical parameters through their bounded transforms; parameters in
    ``global_params`` are single learned values shared by all sites; the rest are fixed. The process model
    runs on the raw drivers; a `ResidualHead` may correct GPP, Reco and Rsoil by a bounded amount with
    `constraints.nonnegative_correction`, so GPP ≥ 0, Reco ≥ 0 and NEE = Reco − GPP hold exactly.
    """

    process: Ecosystem
    encoder: eqx.Module
    location: eqx.Module | None
    embed: eqx.nn.Linear
    context_proj: eqx.nn.Linear | None
    site_attention: eqx.Module | None
    parameter_head: eqx.Module | None
    residual_head: eqx.Module | None
    global_unconstrained: dict[str, Array]
    fixed: tuple[tuple[str, float], ...] = eqx.field(static=True)
    learned: tuple[str, ...] = eqx.field(static=True)
    time_varying: tuple[str, ...] = eqx.field(static=True)
    residual_targets: tuple[str, ...] = eqx.field(static=True)
    use_summary: bool = eqx.field(static=True, default=True)
    technology: TechnologyTrend | None = None

    @property
    def specs(self) -> dict[str, ParameterSpec]:
        return {s.name: s for s in self.process.parameter_specs}

    def embedding(self, w: SiteWindow) -> tuple[Array, Array]:
        """(daily features (time, hidden), site embedding (embed_dim,))."""
        return site_embedding(self, w)

    def _locate(self, lat, lon, static, region):
        return _locate(self.location, lat, lon, static, region)

    def parameters(self, h_seq: Array, emb: Array) -> tuple[dict, dict, dict]:
        """(static physical θ of every parameter, daily physical θ, unconstrained learned values)."""
        specs = self.specs
        theta = {k: jnp.asarray(v, jnp.float32) for k, v in self.fixed}
        unconstrained = dict(self.global_unconstrained)
        daily = {}
        if self.parameter_head is not None:
            u_static, u_daily = self.parameter_head.unconstrained(emb, h_seq)
            unconstrained.update(u_static)
            unconstrained.update(u_daily)
            daily = {k: specs[k].to_physical(v) for k, v in u_daily.items()}
            theta.update({k: specs[k].to_physical(v) for k, v in u_static.items()})
        theta.update({k: specs[k].to_physical(v) for k, v in self.global_unconstrained.items()})
        return theta, daily, unconstrained

    def __call__(self, w: SiteWindow) -> Predictions:
        h_seq, emb = self.embedding(w)
        theta, theta_daily, unconstrained = self.parameters(h_seq, emb)
        out = simulate(self.process, theta, w.met, theta_daily=theta_daily).outputs
        residual = self.residual_head(h_seq) if self.residual_head is not None else {}
        gpp, reco, rsoil = out.gpp, out.reco, out.rsoil
        if "gpp" in residual:
            gpp = constraints.nonnegative_correction(gpp, residual["gpp"])
        if "reco" in residual:
            reco = constraints.nonnegative_correction(reco, residual["reco"])
        if "rsoil" in residual:
            rsoil = constraints.nonnegative_correction(rsoil, residual["rsoil"])
        if self.technology is not None:
            theta = {**theta, **self.technology.theta(w.region)}
            if self.technology.site_level is not None:  # the learned yield level of the window's site (–)
                theta["tech_level"] = self.technology.level(w.region)
        return Predictions(
            gpp=gpp, reco=reco, nee=reco - gpp, rsoil=rsoil, et=out.et, lai=out.lai,
            crop_yield=_annual_yield(self.technology, losses.annual_values(out.crop_yield, DAYS_PER_YEAR), w),
            gpp_physics=out.gpp, reco_physics=out.reco, rsoil_physics=out.rsoil,
            residual=residual, theta=theta, theta_daily=theta_daily, unconstrained=unconstrained,
        )


def build_hybrid(
    process: Ecosystem,
    *,
    n_features: int,
    n_static: int,
    n_summary: int,
    key: PRNGKeyArray,
    encoder: str = "gru",
    hidden: int = 32,
    attention: bool = False,
    location: bool = True,
    location_dim: int = 16,
    n_scales: int = 4,
    n_regions: int = 0,
    region_dim: int = 4,
    site_attention: bool = False,
    n_heads: int = 2,
    embed_dim: int = 32,
    head_hidden: int = 32,
    learned: Sequence[str] | None = None,
    global_params: Sequence[str] = (),
    time_varying: Sequence[str] = (),
    fixed: Mapping[str, float] | None = None,
    residual: Sequence[str] = (),
    residual_scale: float | Mapping[str, float] = 1.0,
    use_summary: bool = True,
    technology_trend: bool = False,
    technology_reference_year: float = 2000.0,
    technology_sites: int = 0,
    technology_site_level: bool = False,
    technology_site_rate: bool = True,
) -> HybridModel:
    """Assemble a `HybridModel` for ``process``. ``learned`` (default: every parameter) are predicted per
    site (those also in ``time_varying`` per day); ``global_params`` are learned single values; the others
    are fixed at ``fixed`` or their defaults. ``use_summary=False`` keeps the encoder's window summary out
    of the site embedding: static parameters then depend on the site's location, attributes and context
    only (less room to memorise individual site-years; the encoder still feeds the residual and the
    time-varying parameters). ``technology_trend``: the yields are scaled by a learned, bounded
    `TechnologyTrend` (factor 1 at ``technology_reference_year``); ``technology_sites`` > 0: its rate per site
    (one offset per region index, `TechnologyTrend` ``site_rate``; unless ``technology_site_rate`` is false), with
    ``technology_site_level`` a bounded yield level per site (``site_level``). Untrained, the model equals the process
    model at the defaults (the heads start at the specs' default unconstrained values, the residual at 0)."""
    specs = {s.name: s for s in process.parameter_specs}
    fixed = dict(fixed or {})
    names = list(specs) if learned is None else list(learned)
    for group, values in (("learned", names), ("global_params", global_params), ("time_varying", time_varying),
                          ("fixed", fixed)):
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise KeyError(f"{group}: parameters {unknown} are not declared by {type(process).__name__} "
                           f"(declares {sorted(specs)})")
    if set(time_varying) - set(names) or set(time_varying) & set(global_params):
        raise ValueError("time_varying parameters must be learned per site (in learned, not in global_params)")
    if set(fixed) & (set(names) | set(global_params)):
        raise ValueError(f"parameters {sorted(set(fixed) & (set(names) | set(global_params)))} are both fixed and learned")
    per_site = [n for n in names if n not in set(global_params)]
    for name, value in fixed.items():
        specs[name].check(value, where="fixed")
    fixed_all = tuple((n, float(fixed.get(n, specs[n].default))) for n in specs
                      if n not in set(per_site) | set(global_params))
    keys = jax.random.split(key, 7)
    enc = TemporalEncoder(n_features, hidden, kind=encoder, attention=attention, n_heads=n_heads, key=keys[0])
    loc = None
    in_dim = hidden if use_summary else 0
    if not use_summary and not location:
        raise ValueError("use_summary=False needs the location encoder: the embedding would be empty")
    if location:
        loc = LocationEncoder(n_static, location_dim, n_scales=n_scales, n_regions=n_regions,
                              region_dim=region_dim, key=keys[1])
        in_dim += location_dim
    embed = eqx.nn.Linear(in_dim, embed_dim, key=keys[2])
    ctx_proj = att = None
    if site_attention:
        if loc is None:
            raise ValueError("site attention needs the location encoder (location = true)")
        ctx_proj = eqx.nn.Linear(location_dim + n_summary, embed_dim, key=keys[3])
        att = SiteAttention(embed_dim, n_heads=n_heads, key=keys[4])
    head = None
    if per_site:
        head = ParameterHead(embed_dim, tuple(specs[n] for n in per_site), time_varying=tuple(time_varying),
                             seq_dim=hidden if time_varying else 0, hidden=head_hidden, key=keys[5])
    res = ResidualHead(hidden, tuple(residual), residual_scale, key=keys[6]) if residual else None
    return HybridModel(
        process=process, encoder=enc, location=loc, embed=embed, context_proj=ctx_proj, site_attention=att,
        parameter_head=head, residual_head=res,
        global_unconstrained={n: jnp.asarray(specs[n].default_unconstrained, jnp.float32) for n in global_params},
        fixed=fixed_all, learned=tuple(per_site), time_varying=tuple(time_varying), residual_targets=tuple(residual),
        use_summary=use_summary,
        technology=TechnologyTrend.create(technology_reference_year, technology_sites, technology_site_level,
                                          technology_site_rate) if technology_trend else None,
    )


class ProcessModel(AbstractSiteModel):
    """The process model alone (no network): its calibrated parameters are one global set of unconstrained
    values (``global_unconstrained``; physical value = ``spec.to_physical(u)``, so always within bounds),
    the others fixed. Built by `build_process_model` at the defaults (or ``fixed`` values): untrained it IS
    the process model. One set per model: per-region calibration is one model per region
    (``grouping = "per_region"``). Same interface as `HybridModel` (``__call__(SiteWindow) → Predictions``;
    no residual, the physics-only fluxes equal the fluxes)."""

    process: Ecosystem
    global_unconstrained: dict[str, Array]
    fixed: tuple[tuple[str, float], ...] = eqx.field(static=True)
    technology: TechnologyTrend | None = None
    #: No per-site, time-varying or residual parts.
    learned: ClassVar[tuple[str, ...]] = ()
    time_varying: ClassVar[tuple[str, ...]] = ()
    residual_targets: ClassVar[tuple[str, ...]] = ()

    @property
    def specs(self) -> dict[str, ParameterSpec]:
        return {s.name: s for s in self.process.parameter_specs}

    def parameters(self) -> dict[str, Array]:
        """Physical values of every parameter (calibrated and fixed)."""
        specs = self.specs
        theta = {k: jnp.asarray(v, jnp.float32) for k, v in self.fixed}
        theta.update({k: specs[k].to_physical(v) for k, v in self.global_unconstrained.items()})
        return theta

    def __call__(self, w: SiteWindow) -> Predictions:
        theta = self.parameters()
        out = simulate(self.process, theta, w.met).outputs
        if self.technology is not None:
            theta = {**theta, **self.technology.theta()}
        return Predictions(
            gpp=out.gpp, reco=out.reco, nee=out.reco - out.gpp, rsoil=out.rsoil, et=out.et, lai=out.lai,
            crop_yield=_annual_yield(self.technology, losses.annual_values(out.crop_yield, DAYS_PER_YEAR), w),
            gpp_physics=out.gpp, reco_physics=out.reco, rsoil_physics=out.rsoil,
            residual={}, theta=theta, theta_daily={}, unconstrained=dict(self.global_unconstrained),
        )


def build_process_model(
    process: Ecosystem,
    *,
    learned: Sequence[str] | None = None,
    global_params: Sequence[str] = (),
    fixed: Mapping[str, float] | None = None,
    technology_trend: bool = False,
    technology_reference_year: float = 2000.0,
) -> ProcessModel:
    """A `ProcessModel` calibrating ``learned`` (default: every parameter not in ``fixed``) and
    ``global_params`` as one global set, starting at the specs' defaults; the others stay at ``fixed`` or
    their defaults. Same parameter arguments as `build_hybrid` (there, ``learned`` are per site)."""
    specs = {s.name: s for s in process.parameter_specs}
    fixed = dict(fixed or {})
    names = [n for n in specs if n not in fixed] if learned is None else list(learned)
    for group, values in (("learned", names), ("global_params", global_params), ("fixed", fixed)):
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise KeyError(f"{group}: parameters {unknown} are not declared by {type(process).__name__} "
                           f"(declares {sorted(specs)})")
    calibrated = [n for n in specs if n in set(names) | set(global_params)]
    if set(fixed) & set(calibrated):
        raise ValueError(f"parameters {sorted(set(fixed) & set(calibrated))} are both fixed and learned")
    for name, value in fixed.items():
        specs[name].check(value, where="fixed")
    return ProcessModel(
        process=process,
        global_unconstrained={n: jnp.asarray(specs[n].default_unconstrained, jnp.float32) for n in calibrated},
        fixed=tuple((n, float(fixed.get(n, specs[n].default))) for n in specs if n not in set(calibrated)),
        technology=TechnologyTrend.create(technology_reference_year) if technology_trend else None,
    )


def predict(model: HybridModel, inputs: SiteWindow) -> Predictions:
    """Predictions for a stacked batch of windows (vmap over the leading axis)."""
    return jax.vmap(model)(inputs)


# ---------------------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridObjective:
    """`hybrid_objective` with its settings bound, hashable (so `kgml.training.fit` compiles the training
    step once for every run with the same settings). ``scales`` and ``weights`` as sorted (name, value)
    pairs; build it with `HybridObjective.create`."""

    task: TaskSpec
    scales: tuple[tuple[str, float], ...]
    weights: tuple[tuple[str, float], ...] = ()
    prior: float = 1e-3
    prior_sd: float = 1.0
    residual: float = 1e-2
    monotone: float = 1.0
    yield_consistency: float = 1.0
    anomaly: float = 0.0

    @classmethod
    def create(cls, task: TaskSpec, scales: Mapping[str, float], weights: Mapping[str, float] | None = None,
               **coefficients: float) -> HybridObjective:
        return cls(task, tuple(sorted((k, float(v)) for k, v in scales.items())),
                   tuple(sorted((k, float(v)) for k, v in (weights or {}).items())), **coefficients)

    def __call__(self, model: HybridModel, batch) -> tuple[Array, dict[str, Array]]:
        return hybrid_objective(
            model, batch, task=self.task, scales=dict(self.scales), weights=dict(self.weights), prior=self.prior,
            prior_sd=self.prior_sd, residual=self.residual, monotone=self.monotone,
            yield_consistency=self.yield_consistency, anomaly=self.anomaly)


def hybrid_objective(
    model: HybridModel,
    batch: tuple[SiteWindow, Targets],
    *,
    task: TaskSpec,
    scales: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
    prior: float = 1e-3,
    prior_sd: float = 1.0,
    residual: float = 1e-2,
    monotone: float = 1.0,
    yield_consistency: float = 1.0,
    anomaly: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Weighted multi-task data loss at each observation's resolution + soft constraints.

    Daily targets compare daily predictions; monthly targets compare monthly means of the daily
    predictions (`losses.monthly_means`); ``crop_yield`` compares the year-end yield of each whole year.
    Penalties: parameter prior (`constraints.prior_penalty`), residual size, monotone temperature response
    of heterotrophic respiration, yield consistent with the year's GPP — the last two only for a model with a
    process model (``model.process``; `ProcessModel` too, not `kgml.models.neural.NeuralModel`). With ``anomaly`` > 0
    the anomaly-aware term (`losses.paired_anomaly_mse`, mean over the monthly targets, each at its loss
    scale and weight) is added as ``anomaly`` × part ``anomaly``: window i of the batch's first half is paired
    with window i + half where both are the same site (same lat/lon) in different years (the training
    sampler `kgml.training.paired_batch_indices` draws such pairs). It is not part of ``data`` (the
    validation monitor). Returns (total, parts)."""
    inputs, targets = batch
    weights = dict(weights or {})
    pred = predict(model, inputs)
    preds, obs, masks = {}, {}, {}
    for i, name in enumerate(task.daily):
        preds[name] = getattr(pred, name)
        obs[name], masks[name] = targets.daily[..., i], targets.daily_mask[..., i]
    n_months = targets.monthly.shape[-2]
    for i, name in enumerate(task.monthly):
        key = f"{name}_monthly"
        preds[key] = losses.monthly_means(getattr(pred, name), targets.month_index, n_months)
        obs[key], masks[key] = targets.monthly[..., i], targets.monthly_mask[..., i]
    if task.annual and targets.annual.shape[-1] > 0:
        preds["crop_yield"] = pred.crop_yield
        obs["crop_yield"], masks["crop_yield"] = targets.annual, targets.annual_mask
    data, parts = losses.multitask_loss(preds, obs, masks, weights, scales)
    penalties = {}
    specs = model.specs
    process = model.process if model.has_physics else None  # kgml.models.neural.NeuralModel has no physics
    penalties["prior"] = constraints.prior_penalty(pred.unconstrained, specs.values(), prior_sd)
    penalties["residual"] = constraints.residual_penalty(pred.residual, scales)
    soil_names = set() if process is None else {s.name for s in process.soil_respiration.parameter_specs}
    if soil_names & (set(model.learned) | set(model.global_unconstrained)):
        # Time-varying parameters: the response of every 7th day's parameters.
        daily = {k: v[:, ::7] for k, v in pred.theta_daily.items() if k in soil_names}
        n_days = next(iter(daily.values())).shape[1] if daily else 1
        theta_sr = {k: jnp.broadcast_to(v[:, None], (v.shape[0], n_days)) for k, v in pred.theta.items()
                    if k in soil_names and k not in daily}
        theta_sr.update(daily)
        response = jax.vmap(jax.vmap(lambda th: constraints.temperature_response_penalty(process, th)))
        penalties["monotone"] = jnp.mean(response(theta_sr))
    else:
        penalties["monotone"] = jnp.zeros(())
    if isinstance(process, CropEcosystem) and pred.crop_yield.shape[-1] > 0:
        annual_gpp = losses.annual_sums(pred.gpp, DAYS_PER_YEAR)
        penalties["yield_consistency"] = constraints.yield_consistency_penalty(
            pred.crop_yield, annual_gpp, process.crop.standard_moisture)
    else:
        penalties["yield_consistency"] = jnp.zeros(())
    coef = {"prior": prior, "residual": residual, "monotone": monotone, "yield_consistency": yield_consistency}
    total = data + sum(coef[k] * v for k, v in penalties.items())
    if anomaly > 0.0:
        if not task.monthly:
            raise ValueError("loss.anomaly pairs monthly targets of two years; the task has none")
        if inputs.year is None:
            raise ValueError("loss.anomaly pairs windows by site and year; the windows carry no year")
        half = inputs.lat.shape[0] // 2
        a, b = slice(0, half), slice(half, 2 * half)
        pair = ((inputs.lat[a] == inputs.lat[b]) & (inputs.lon[a] == inputs.lon[b])
                & (inputs.year[a] != inputs.year[b]))
        terms = [weights.get(f"{n}_monthly", 1.0) * losses.paired_anomaly_mse(
            preds[f"{n}_monthly"], obs[f"{n}_monthly"], masks[f"{n}_monthly"], pair, scales[f"{n}_monthly"])
            for n in task.monthly]
        parts["anomaly"] = sum(terms) / len(terms)
        total = total + anomaly * parts["anomaly"]
    return total, {"loss": total, "data": data, **parts, **{f"penalty_{k}": v for k, v in penalties.items()}}


# ---------------------------------------------------------------------------------------------------------
# Data → windows
# ---------------------------------------------------------------------------------------------------------


@dataclass
class WindowData:
    """Stacked windows (numpy; leading axis = window) with what they are."""

    inputs: SiteWindow
    targets: Targets
    site: np.ndarray  #: site index (into ``sites``) of each window
    start: np.ndarray  #: index of each window's first day on the dataset's time axis
    sites: tuple[str, ...]
    times: np.ndarray
    years: np.ndarray  #: first calendar year of each window
    task: TaskSpec
    features: tuple[str, ...]
    static_names: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.site.shape[0])

    def subset(self, index) -> WindowData:
        idx = np.asarray(index)
        take = lambda a: a[idx]  # noqa: E731
        return WindowData(jax.tree_util.tree_map(take, self.inputs), jax.tree_util.tree_map(take, self.targets),
                          self.site[idx], self.start[idx], self.sites, self.times, self.years[idx], self.task,
                          self.features, self.static_names, dict(self.extra))

    def batch(self, index=None) -> tuple[SiteWindow, Targets]:
        """The selected windows as jax arrays (the `fit` batch)."""
        idx = slice(None) if index is None else np.asarray(index)
        conv = lambda a: jnp.asarray(a[idx])  # noqa: E731
        return jax.tree_util.tree_map(conv, self.inputs), jax.tree_util.tree_map(conv, self.targets)


def target_scales(ds: xr.Dataset, task: TaskSpec, floor: float = 0.1) -> dict[str, float]:
    """Typical spread of each target (std of its observed values, at least ``floor``) — the loss scales."""
    out = {}
    names = list(task.daily) + list(task.monthly_variables) + (["crop_yield"] if task.annual else [])
    for name in names:
        if name in ds:
            v = np.asarray(ds[name].values, np.float64)
            v = v[np.isfinite(v)]
            out[name] = float(max(v.std(), floor)) if v.size > 1 else 1.0
        else:
            out[name] = 1.0
    return out


def observation_summary(ds: xr.Dataset, task: TaskSpec, scales: Mapping[str, float]) -> np.ndarray:
    """Per-site summary of what was observed (site, 2·n_daily): mean observed value / scale (0 if none) and
    the observed fraction of days, for each daily target — what context sites tell a site."""
    cols = []
    for name in task.daily:
        v = ds[name].transpose("site", "time").values.astype(np.float64) if name in ds else np.full(
            (ds.sizes["site"], ds.sizes["time"]), np.nan)
        ok = np.isfinite(v)
        n = ok.sum(axis=1)
        mean = np.where(n > 0, np.where(ok, v, 0.0).sum(axis=1) / np.maximum(n, 1), 0.0) / scales.get(name, 1.0)
        cols += [mean, n / v.shape[1]]
    return np.stack(cols, axis=-1).astype(np.float32)


@dataclass(frozen=True)
class ContextPool:
    """Observed sites that other sites may attend to: ids, location (deg), normalised static attributes and
    `observation_summary` rows. Travels with a checkpoint (JSON) so that new sites can use it."""

    sites: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    static: np.ndarray
    summary: np.ndarray

    def to_dict(self) -> dict:
        return {"sites": list(self.sites), "lat": self.lat.tolist(), "lon": self.lon.tolist(),
                "static": self.static.tolist(), "summary": self.summary.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> ContextPool:
        n = len(d["sites"])
        return cls(tuple(d["sites"]), np.asarray(d["lat"], np.float32), np.asarray(d["lon"], np.float32),
                   np.asarray(d["static"], np.float32).reshape(n, -1), np.asarray(d["summary"], np.float32).reshape(n, -1))


def context_pool(
    ds: xr.Dataset, *, static: Sequence[str], normaliser, task: TaskSpec, scales: Mapping[str, float]
) -> ContextPool:
    """The `ContextPool` of the sites of ``ds`` (normally the training sites)."""
    return ContextPool(tuple(ds.site.values.astype(str)), ds["lat"].values.astype(np.float32),
                       ds["lon"].values.astype(np.float32), _static(ds, static, normaliser),
                       observation_summary(ds, task, scales))


def prepare_windows(
    ds: xr.Dataset,
    *,
    features: Sequence[str],
    static: Sequence[str],
    task: TaskSpec,
    normaliser,
    window_days: int = DAYS_PER_YEAR,
    region: str | None = None,
    region_map: Mapping[str, int] | None = None,
    context: ContextPool | None = None,
    n_context: int = 0,
    scales: Mapping[str, float] | None = None,
    require_targets: bool = False,
    missing_static: str = "raise",
) -> WindowData:
    """Cut a daily (site, time) dataset into windows of ``window_days`` days (starting on 1 January of
    each year for whole-year windows), with normalised features (`kgml.data.normalisation.Normaliser`, fitted
    on the training sites), raw drivers for the physics (gaps filled by interpolation), normalised
    ``static`` site attributes, a region index, and targets at their own resolution.

    ``context`` (a `ContextPool` of observed training sites) gives each site its ``n_context`` nearest other
    sites (never itself) with their locations, attributes and `observation_summary`. A static attribute
    missing from ``ds`` is an error, or (``missing_static="zero"``) its normalised mean, with a warning.
    Windows without any observation are dropped when ``require_targets``.
    """
    if "time" not in ds.dims or "site" not in ds.dims:
        raise ValueError(f"dataset must have dims (site, time), has {tuple(ds.dims)}")
    ds = _drop_leap_days(ds)
    n_sites, n_time = ds.sizes["site"], ds.sizes["time"]
    doy = np.asarray(ds.time.dt.dayofyear.values)
    ds_f = ds.copy()
    ds_f["doy_sin"] = (("time",), np.sin(2 * np.pi * doy / DAYS_PER_YEAR).astype(np.float32))
    ds_f["doy_cos"] = (("time",), np.cos(2 * np.pi * doy / DAYS_PER_YEAR).astype(np.float32))
    feats = tuple(features) + SEASONAL_FEATURES
    x_all = []
    for name in feats:
        if name not in ds_f:
            raise KeyError(f"feature {name!r} not in the dataset (has {sorted(map(str, ds.data_vars))})")
        v = np.broadcast_to(ds_f[name].transpose(..., "time").values, (n_sites, n_time)).astype(np.float32)
        if name in normaliser.mean:
            v = normaliser.transform_array(name, v)
        elif name not in SEASONAL_FEATURES:
            raise KeyError(f"feature {name!r} is not in the normaliser (fitted: {normaliser.variables})")
        x_all.append(v)
    x_all = np.stack(x_all, axis=-1)

    driver_defaults: dict[str, str] = {}
    met = met_from_dataset(ds, defaults=driver_defaults)
    site_ids = ds.site.values.astype(str)
    no_driver: dict[str, list[str]] = {}
    # gaps of every driver are interpolated, except a flagged soil-water record: there NaN means "not measured"
    # and the physics falls back on its own bucket (NaturalEcosystem.soil_water), never on a made-up value
    keep_gaps = {"rew", *(("swc",) if "swc_measured" in ds else ())}
    met = Met(*(None if v is None else (np.broadcast_to(v, (n_sites, n_time)) if name in keep_gaps else
                                        fill_driver_gaps(np.broadcast_to(v, (n_sites, n_time)), name, site_ids,
                                                         no_driver))
                for name, v in zip(Met._fields, met, strict=True)))

    static_filled: dict[str, list[str]] = {}
    st = _static(ds, static, normaliser, missing_static, filled=static_filled)
    lat = ds["lat"].values.astype(np.float32)
    lon = ds["lon"].values.astype(np.float32)
    if region and region_map is not None and region in ds.coords:
        labels = ds[region].values.astype(str)
        reg = np.array([region_map.get(lbl, -1) for lbl in labels], np.int32)  # -1: unknown region
    else:
        reg = np.zeros(n_sites, np.int32)

    scales = dict(scales or {})
    k = max(n_context, 1)
    c_lat = np.zeros((n_sites, k), np.float32)
    c_lon = np.zeros((n_sites, k), np.float32)
    c_static = np.zeros((n_sites, k, st.shape[1]), np.float32)
    c_summary = np.zeros((n_sites, k, 2 * len(task.daily)), np.float32)
    c_mask = np.zeros((n_sites, k), bool)
    c_dist = np.zeros((n_sites, k), np.float32)
    if n_context and context is not None and len(context.sites) > 0:
        pool_ids = np.asarray(context.sites)
        d = np.asarray(haversine_km(lat[:, None], lon[:, None], context.lat[None, :], context.lon[None, :]))
        d = np.where(ds.site.values.astype(str)[:, None] == pool_ids[None, :], np.inf, d)  # never itself
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        dd = np.take_along_axis(d, order, axis=1)
        c_mask = np.isfinite(dd)
        c_lat, c_lon = context.lat[order].astype(np.float32), context.lon[order].astype(np.float32)
        c_static, c_summary = context.static[order], context.summary[order]
        c_dist = np.where(c_mask, dd, 0.0).astype(np.float32)
        if order.shape[1] < k:  # fewer pool sites than n_context
            pad = k - order.shape[1]
            c_lat, c_lon, c_dist = (np.pad(a, ((0, 0), (0, pad))) for a in (c_lat, c_lon, c_dist))
            c_mask = np.pad(c_mask, ((0, 0), (0, pad)))
            c_static = np.pad(c_static, ((0, 0), (0, pad), (0, 0)))
            c_summary = np.pad(c_summary, ((0, 0), (0, pad), (0, 0)))

    # targets
    n_years = window_days // DAYS_PER_YEAR
    time_years = np.asarray(ds.time.dt.year.values)
    month_code = time_years * 12 + np.asarray(ds.time.dt.month.values) - 1
    daily = np.stack([_daily(ds, n, n_sites, n_time) for n in task.daily], axis=-1) if task.daily else np.zeros(
        (n_sites, n_time, 0), np.float32)
    cut = _cut_windows(ds, doy, x_all, met, daily, window_days)
    monthly_codes = {}
    if task.monthly:
        mcoord = np.asarray(ds["month"].values)
        monthly_codes = {int(c): i for i, c in enumerate(mcoord)}
        mvals = np.stack([ds[v].transpose("site", "month").values for v in task.monthly_variables], axis=-1)
    n_month_slots = 12 * max(n_years, 1) if window_days >= 28 else 1
    annual_src = None
    if task.annual and "crop_yield" in ds and "year" in ds.dims:
        annual_src = {int(y): i for i, y in enumerate(ds.year.values)}
        yvals = ds["crop_yield"].transpose("site", "year").values

    keep, wyear, mo, an, midx = [], [], [], [], []
    for w, (s, t0) in enumerate(zip(cut.site_index, cut.start, strict=True)):
        sl = slice(t0, t0 + window_days)
        codes = month_code[sl]
        slots = (codes - codes[0]).astype(np.int32)
        slots = np.where(slots < n_month_slots, slots, -1)
        m_obs = np.zeros((n_month_slots, len(task.monthly)), np.float32)
        if task.monthly:
            for j in range(n_month_slots):
                c = int(codes[0]) + j
                if c in monthly_codes:
                    m_obs[j] = mvals[s, monthly_codes[c]]
                else:
                    m_obs[j] = np.nan
        a_obs = np.full(n_years, np.nan, np.float32)
        if annual_src is not None:
            for j in range(n_years):
                yi = annual_src.get(int(time_years[t0]) + j)
                if yi is not None:
                    a_obs[j] = yvals[s, yi]
        if require_targets and not (cut.y_mask[w].any() or np.isfinite(m_obs).any() or np.isfinite(a_obs).any()):
            continue
        keep.append(w)
        wyear.append(int(time_years[t0]))
        mo.append(m_obs)
        an.append(a_obs)
        midx.append(slots)
    if not keep:
        raise ValueError("no window with observed targets")
    keep = np.asarray(keep)
    wsite_a = cut.site_index[keep]
    wstart_a = cut.start[keep]
    n_x = len(feats)
    met_cols = [i for i, v in enumerate(met) if v is not None]
    met_w = Met(*(None if v is None else cut.x[keep, :, n_x + met_cols.index(i)] for i, v in enumerate(met)))
    dy_a = np.where(cut.y_mask[keep], cut.y[keep], np.nan)
    mo_a, an_a = np.stack(mo), np.stack(an)
    inputs = SiteWindow(
        x=cut.x[keep, :, :n_x], x_mask=cut.x_mask[keep, :, :n_x].all(axis=-1), met=met_w, static=st[wsite_a],
        lat=lat[wsite_a], lon=lon[wsite_a],
        region=reg[wsite_a], context_lat=c_lat[wsite_a], context_lon=c_lon[wsite_a],
        context_static=c_static[wsite_a], context_summary=c_summary[wsite_a], context_mask=c_mask[wsite_a],
        context_distance_km=c_dist[wsite_a], year=np.asarray(wyear, np.float32),
    )
    targets = Targets(
        daily=np.nan_to_num(dy_a).astype(np.float32), daily_mask=np.isfinite(dy_a),
        monthly=np.nan_to_num(mo_a).astype(np.float32), monthly_mask=np.isfinite(mo_a),
        annual=np.nan_to_num(an_a).astype(np.float32), annual_mask=np.isfinite(an_a),
        month_index=np.stack(midx),
    )
    extra = {}
    if driver_defaults:
        extra["driver_defaults"] = driver_defaults
    if static_filled:
        extra["static_filled"] = static_filled
    if no_driver:
        extra["driver_missing"] = no_driver
    return WindowData(inputs, targets, wsite_a, wstart_a, tuple(ds.site.values.astype(str)), ds.time.values,
                      np.asarray(wyear, np.int32), task, feats, tuple(static), extra)


#: Day of the year before the first of each month in a 365-day calendar.
_MONTH_START = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30])


def _cut_windows(ds: xr.Dataset, doy: np.ndarray, x_all: np.ndarray, met: Met, daily: np.ndarray,
                 window_days: int):
    """Whole windows of the (site, time[, k]) arrays — normalised features, gap-filled drivers, daily targets
    — cut by `kgml.data.batching.make_windows` (``features`` = the feature columns then the driver fields,
    ``targets`` = the daily targets). Whole-year windows start on every 1 January (stride one year, from the
    first 1 January); other windows every ``window_days`` from the first day. Partial windows are dropped (the
    physics needs every day's drivers). ``start`` of the result indexes ``ds.time``."""
    n_sites, n_time = x_all.shape[:2]
    yearly = window_days % DAYS_PER_YEAR == 0
    first = int(np.argmax(doy == 1)) if yearly and (doy == 1).any() else 0
    whole = n_time - first - window_days >= 0 and (not yearly or (doy == 1).any())
    if not whole:
        raise ValueError(f"no whole window of {window_days} days (starting 1 January) in {n_time} days")
    columns = {f"x{i}": x_all[..., i] for i in range(x_all.shape[-1])}
    columns.update({f"met_{k}": v for k, v in zip(Met._fields, met, strict=True) if v is not None})
    columns.update({f"y{i}": daily[..., i] for i in range(daily.shape[-1])})
    table = xr.Dataset({k: (("site", "time"), v[:, first:]) for k, v in columns.items()},
                       coords={"site": ds.site.values, "time": np.arange(n_time - first)})
    names = list(columns)
    cut = make_windows(table, [n for n in names if not n.startswith("y")], [n for n in names if n.startswith("y")],
                       window=window_days, stride=DAYS_PER_YEAR if yearly else window_days, min_targets=0)
    full = cut.start + window_days <= n_time - first
    cut = dataclasses.replace(cut, **{f: getattr(cut, f)[full] for f in
                                      ("x", "x_mask", "y", "y_mask", "static", "site_index", "start")})
    cut = dataclasses.replace(cut, start=(cut.start + first).astype(np.int32))
    # consecutive days of a 365-day calendar: each used window must span exactly window_days calendar days
    t = ds.time.dt
    day = (np.asarray(t.year.values) * DAYS_PER_YEAR + _MONTH_START[np.asarray(t.month.values) - 1]
           + np.asarray(t.day.values))
    span = day[cut.start + window_days - 1] - day[cut.start]
    if np.any(span != window_days - 1) or (yearly and np.any(doy[cut.start] != 1)):
        bad = int(cut.start[np.flatnonzero((span != window_days - 1) | (doy[cut.start] != 1 if yearly else False))[0]])
        raise ValueError(f"the daily time axis is not contiguous: the window starting {ds.time.values[bad]} spans "
                         f"{int(day[bad + window_days - 1] - day[bad]) + 1} calendar days for {window_days} steps "
                         "(missing days). Reindex the dataset to every day (NaN where nothing was recorded) first.")
    return cut


def _drop_leap_days(ds: xr.Dataset) -> xr.Dataset:
    """Remove 29 February so that every year has 365 days (the process model's and generator's calendar)."""
    t = ds.time.dt
    leap = (np.asarray(t.month.values) == 2) & (np.asarray(t.day.values) == 29)
    return ds.isel(time=~leap) if leap.any() else ds


def _daily(ds: xr.Dataset, name: str, n_sites: int, n_time: int) -> np.ndarray:
    if name not in ds:
        return np.full((n_sites, n_time), np.nan, np.float32)
    return ds[name].transpose("site", "time").values.astype(np.float32)


def _static(ds: xr.Dataset, names: Sequence[str], normaliser, missing: str = "raise",
            filled: dict[str, list[str]] | None = None) -> np.ndarray:
    """Normalised static attributes (site, attribute). A site whose attribute is NaN gets the training mean
    (0 after normalisation) with a `DataWarning` naming attribute and sites, recorded in ``filled``
    (attribute → sites); an attribute missing from ``ds`` is an error unless ``missing="zero"`` (then all
    sites, warned and recorded the same way)."""
    cols = []
    sites = ds.site.values.astype(str) if "site" in ds.coords else np.arange(ds.sizes["site"]).astype(str)
    for name in names:
        if name not in ds.variables:
            if missing == "zero":
                warnings.warn(f"static attribute {name!r} not in the dataset: using the training mean for all "
                              f"{len(sites)} sites", DataWarning, stacklevel=3)
                if filled is not None:
                    filled[name] = sites.tolist()
                cols.append(np.zeros(ds.sizes["site"]))
                continue
            raise KeyError(f"static attribute {name!r} not in the dataset (has {sorted(map(str, ds.variables))})")
        v = np.asarray(ds[name].values, np.float64)
        v = normaliser.transform_array(name, v) if name in normaliser.mean else v
        bad = ~np.isfinite(v)
        if bad.any():
            which = sites[bad].tolist()
            warnings.warn(f"static attribute {name!r} is NaN at {len(which)} site(s) {which[:5]}: using the "
                          f"training mean there", DataWarning, stacklevel=3)
            if filled is not None:
                filled[name] = which
        cols.append(np.where(bad, 0.0, v))
    if not cols:
        return np.zeros((ds.sizes["site"], 0), np.float32)
    return np.stack(cols, axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Predictions → xarray
# ---------------------------------------------------------------------------------------------------------

_UNITS = {"gpp": "gC m-2 d-1", "reco": "gC m-2 d-1", "nee": "gC m-2 d-1", "rsoil": "gC m-2 d-1",
          "et": "mm d-1", "lai": "m2 m-2", "gpp_physics": "gC m-2 d-1", "reco_physics": "gC m-2 d-1",
          "rsoil_physics": "gC m-2 d-1"}


def predictions_to_dataset(pred: Predictions, data: WindowData, specs: Sequence[ParameterSpec] = ()) -> xr.Dataset:
    """Put window predictions (numpy/jax, leading window axis) back on (site, time); annual yields on
    (site, year); static parameters per site (mean over the site's windows). Unpredicted steps are NaN."""
    n_s, n_t = len(data.sites), len(data.times)
    win = np.asarray(pred.gpp).shape[1]
    site = np.asarray(data.site, np.int64)
    # Where windows overlap (e.g. two-year windows every year), a step takes the value of the last window that
    # covers it, as a loop over the windows in order would.
    days = last_window_cover(site, np.asarray(data.start, np.int64)[:, None] + np.arange(win), (n_s, n_t))
    out = {}
    for name in _UNITS:
        arr = np.full((n_s, n_t), np.nan, np.float32)
        arr[days.cells] = np.asarray(getattr(pred, name))[days.window, days.offset]
        out[name] = (("site", "time"), arr, {"units": _UNITS[name]})
    yv = np.asarray(pred.crop_yield)
    n_years = yv.shape[1]
    years = np.unique(np.concatenate([data.years + j for j in range(max(n_years, 1))]))
    ya = np.full((n_s, years.size), np.nan, np.float32)
    if n_years:
        yrs = last_window_cover(site, np.searchsorted(years, np.asarray(data.years)[:, None] + np.arange(n_years)),
                                 ya.shape)
        ya[yrs.cells] = yv[yrs.window, yrs.offset]
    out["crop_yield"] = (("site", "year"), ya, {"units": "t ha-1"})
    spec_units = {"tech_level": "1", **{s.name: s.units for s in specs}}
    for name, v in pred.theta.items():
        v = np.asarray(v)
        if v.ndim != 1:
            continue
        out[f"theta_{name}"] = (("site",), site_means(site, v, n_s), {"units": spec_units.get(name, "")})
    return xr.Dataset(out, coords={"site": list(data.sites), "time": data.times, "year": years})

