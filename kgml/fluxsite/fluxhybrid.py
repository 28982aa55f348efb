"""Site-level hybrid flux model at the data's own time step, for gap-filling and partitioning one tower record:
NEE = Reco − GPP, GPP = LUE_NN(x) · SW_IN, Reco = Rb_NN(z) · Q10^((TA − 15 °C)/10), trained on the site's NEE.

The structure is the hybrid of Reichstein et al. (2022, "Combining system modeling and machine learning into hybrid
ecosystem modeling", in Knowledge-Guided Machine Learning, CRC Press, ch. 14: a neural base rate Rb times a learned
Q10) combined with the light-use-efficiency GPP sub-network of Tramontana et al. (2020, Glob. Change Biol. 26:5235,
"Partitioning net carbon dioxide fluxes into photosynthesis and respiration using neural networks", NNC-part).
A small deep ensemble (different seeds) gives the per-step uncertainty, calibrated on held-out observed steps.

Inputs (`flux_inputs`), following Tramontana et al. (2020) Table 2 with what a FLUXNET/REddyProc file has:

* x, the LUE network: TA, VPD, SWC (when present), season (sin/cos day of year), and for sub-daily data
  SW_IN itself and the time of day (sin/cos hour; our stand-in for their SW_IN_POT and its first derivative, which
  need coordinates and a clock offset a file may lack). Daily records leave SW_IN out of x, so daily GPP is
  linear in daily radiation at given TA/VPD/season (Monteith's LUE, as MOD17): with SW_IN in x a daily LUE net
  could represent any offset as c/SW_IN and GPP and Reco would not be separable.
* z, the base-rate network: season (sin/cos day of year), elapsed time (years; slow drift between years) and SWC
  when present — slow drivers only. Temperature enters Reco only through Q10, so that Q10 is identifiable from the
  fast (diel and synoptic) temperature variation (Reichstein et al. 2022 show that giving Rb temperature-correlated
  inputs makes Q10 equifinal).
"""

from __future__ import annotations

import abc
import functools
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from kgml.data.schema import DataValidationError
from kgml.fluxsite.features import calibration_split, time_features
from kgml.progress import COMPILING_NOTE, bar, note
from process_models.parameters import ParameterSpec
from process_models.temperature import q10_response

__all__ = [
    "Q10_RECO_SPEC",
    "TREF_C",
    "FluxHybrid",
    "FluxInputs",
    "FluxModel",
    "FluxNeural",
    "HybridConfig",
    "HybridFit",
    "HybridFillResult",
    "fit_flux_model",
    "flux_inputs",
    "hybrid_gapfill",
    "record_features",
    "validation_split",
]

#: Reference temperature of Reco = Rb · Q10^((TA − Tref)/10) (°C); 15 °C as REddyProc's night-time TRef.
TREF_C = 15.0

#: Apparent temperature sensitivity of ecosystem respiration at the site (one value per site).
Q10_RECO_SPEC = ParameterSpec(
    name="q10_reco",
    default=1.5,
    lower=1.0,
    upper=5.0,
    units="-",
    reference=(
        "Mahecha et al. (2010) Science 329:838 (Q10 of ecosystem respiration 1.4 ± 0.1 across FLUXNET once "
        "confounding seasonal factors are removed); upper bound covers short-term site Q10 values up to ~4-5 "
        "(Reichstein et al. 2005 Glob. Change Biol. 11:1424, Fig. 4)"
    ),
    description="Q10 of ecosystem respiration to air temperature, learned per site by the flux hybrid",
)

# Fraction of observed steps held out (whole blocks) for early stopping and calibrating the uncertainty.
_VAL_FRACTION = 0.10
# ±1σ of a normal distribution contains this fraction.
_ONE_SIGMA = 0.6826894921370859


# --- inputs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FluxInputs:
    """Model inputs of one site record (numpy, float32), one row per time step.

    x: LUE-network inputs (standardised), z: base-rate-network inputs (standardised), sw_in: SW_IN (W m-2, NaN
    filled), tair: TA (°C, NaN filled), interpolated: steps where some driver was interpolated (True),
    x_names / z_names: column names, steps_per_day."""

    x: np.ndarray
    z: np.ndarray
    sw_in: np.ndarray
    tair: np.ndarray
    interpolated: np.ndarray
    x_names: tuple[str, ...]
    z_names: tuple[str, ...]
    steps_per_day: int


def _fill_by_interpolation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation in time over missing values (constant beyond the ends); returns (filled, was_missing)."""
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        pos = np.arange(v.size)
        v = v.copy()
        v[bad] = np.interp(pos[bad], pos[~bad], v[~bad])
    return v, bad


def _as_series(values, n: int, name: str, source) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise DataValidationError(source, name, f"expected {n} values (one per time step), got shape {arr.shape}")
    return arr


def _standardise(columns: dict[str, np.ndarray]) -> np.ndarray:
    mat = np.stack(list(columns.values()), axis=1)
    mean = mat.mean(axis=0)
    sd = mat.std(axis=0)
    return ((mat - mean) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


#: Night = SW_IN at or below this (W m-2), for the record features (REddyProc's night-time threshold).
_NIGHT_SW_IN = 10.0


def _moving_day_mean(values: np.ndarray, counts: np.ndarray, half_days: int) -> np.ndarray:
    """Centred moving mean over ±``half_days`` of daily sums ``values`` with ``counts`` observations per day;
    days without any observation in the window are interpolated between their neighbours."""
    kernel = np.ones(2 * half_days + 1)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(counts, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    if not np.isfinite(mean).any():
        return np.zeros_like(mean)
    return _fill_by_interpolation(mean)[0]


def record_features(flux, sw_in, steps_per_day: int, *, half_days: int = 7) -> dict[str, np.ndarray]:
    """Features from the site's own observed record (Tramontana et al. 2020 Table 2: "GPP prox" and "NEE night"),
    one value per step, from the observed (finite) values of ``flux`` only.

    Sub-daily: ``nee_night`` = moving ±``half_days`` mean of night-time NEE (SW_IN ≤ 10 W m-2) and
    ``gpp_proxy`` = that minus the moving mean of daytime NEE. Daily: ``nee_smooth`` = moving mean of daily NEE.
    Days whose window holds no observation get values interpolated in time (long gaps: between their edges).
    """
    y = np.asarray(flux, dtype=np.float64)
    n = y.size
    day = np.arange(n) // steps_per_day
    ndays = int(day[-1]) + 1
    ok = np.isfinite(y)

    def daily(mask):
        return (np.bincount(day, np.where(mask, y, 0.0), ndays), np.bincount(day, mask.astype(float), ndays))

    if steps_per_day == 1:
        return {"nee_smooth": _moving_day_mean(*daily(ok), half_days)[day]}
    night = np.asarray(sw_in) <= _NIGHT_SW_IN
    nee_night = _moving_day_mean(*daily(ok & night), half_days)
    nee_day = _moving_day_mean(*daily(ok & ~night), half_days)
    return {"nee_night": nee_night[day], "gpp_proxy": (nee_night - nee_day)[day]}


def flux_inputs(
    times,
    sw_in,
    tair,
    vpd=None,
    swc=None,
    *,
    flux=None,
    source: object = None,
) -> FluxInputs:
    """Build the hybrid's inputs from period-start timestamps and drivers (SW_IN W m-2, TA °C, VPD hPa, SWC %),
    and, when ``flux`` is given, the `record_features` of its observed values (``gpp_proxy`` → x, ``nee_night``
    → z; daily: ``nee_smooth`` → both): this is how the model is conditioned on the site's own record.

    Missing driver values are linearly interpolated in time and flagged (``interpolated``); a driver that is
    entirely missing is left out (VPD, SWC) or is an error (SW_IN, TA: the physics needs them).
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    n = t.size
    if n < 2:
        raise DataValidationError(source, "time", "need at least two time steps")
    if np.any(np.diff(t) <= np.timedelta64(0, "ns")):
        i = int(np.flatnonzero(np.diff(t) <= np.timedelta64(0, "ns"))[0]) + 1
        raise DataValidationError(source, "time", f"timestamps not strictly increasing at step {i}")
    step = np.diff(t).min()
    per_day = int(round(np.timedelta64(1, "D") / step))
    drivers = {"sw_in": sw_in, "tair": tair, "vpd": vpd, "swc": swc}
    filled, interpolated = {}, np.zeros(n, dtype=bool)
    for name, values in drivers.items():
        if values is None:
            continue
        arr = _as_series(values, n, name, source)
        if not np.isfinite(arr).any():
            if name in ("sw_in", "tair"):
                raise DataValidationError(source, name, "all values are missing; the flux hybrid needs it (GPP ∝ SW_IN, Reco(TA))")
            continue
        filled[name], bad = _fill_by_interpolation(arr)
        interpolated |= bad
    for name in ("sw_in", "tair"):
        if name not in filled:
            raise DataValidationError(source, name, "not given; the flux hybrid needs SW_IN (W m-2) and TA (°C)")
    feats = time_features(t)
    season = {"doy_sin": feats["doy_sin"], "doy_cos": feats["doy_cos"]}
    x_cols = {"tair": filled["tair"]}
    if per_day > 1:
        x_cols["sw_in"] = filled["sw_in"]
        x_cols.update(hour_sin=feats["hour_sin"], hour_cos=feats["hour_cos"])
    for name in ("vpd", "swc"):
        if name in filled:
            x_cols[name] = filled[name]
    x_cols.update(season)
    z_cols = dict(season)
    z_cols["years"] = feats["days"] / 365.25
    if "swc" in filled:
        z_cols["swc"] = filled["swc"]
    if flux is not None:
        rec = record_features(_as_series(flux, n, "flux", source), filled["sw_in"], per_day)
        if per_day == 1:
            x_cols["nee_smooth"] = z_cols["nee_smooth"] = rec["nee_smooth"]
        else:
            x_cols["gpp_proxy"], z_cols["nee_night"] = rec["gpp_proxy"], rec["nee_night"]
    return FluxInputs(
        _standardise(x_cols), _standardise(z_cols), filled["sw_in"].astype(np.float32),
        filled["tair"].astype(np.float32), interpolated, tuple(x_cols), tuple(z_cols), per_day,
    )


# --- models ---------------------------------------------------------------------------------------------------


class FluxModel(eqx.Module):
    """A model of one site's NEE at one time step, in scaled flux units (NEE / the scale of the observed NEE).

    ``__call__(x, z, sw, tair)`` with x, z the standardised inputs of `FluxInputs`, sw = SW_IN / its standard
    deviation (–) and tair (°C) returns (nee, gpp, reco); `vmap` over time steps at the call site.
    """

    @abc.abstractmethod
    def __call__(
        self,
        x: Float[Array, " nx"],  # noqa: F722
        z: Float[Array, " nz"],  # noqa: F722
        sw: Float[Array, ""],  # noqa: F722
        tair: Float[Array, ""],  # noqa: F722
    ) -> tuple[Array, Array, Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def q10(self) -> Array:
        """The learned Q10 (NaN for a model without one)."""
        raise NotImplementedError


class FluxHybrid(FluxModel):
    """NEE = Reco − GPP; GPP = softplus(LUE_NN(x)) · SW_IN; Reco = softplus(Rb_NN(z)) · Q10^((TA − 15)/10).

    LUE ≥ 0 and Rb ≥ 0 by softplus; Q10 is bounded by `Q10_RECO_SPEC` (logit transform of ``q10_raw``), the
    temperature response is `process_models.temperature.q10_response`. References: Reichstein et al. (2022) ch. 14;
    Tramontana et al. (2020) Glob. Change Biol. 26:5235 (LUE sub-network, GPP = LUE · SW_IN).
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (Q10_RECO_SPEC,)
    lue_net: eqx.nn.MLP
    rb_net: eqx.nn.MLP
    q10_raw: Array

    def __init__(self, nx: int, nz: int, *, hidden: int, depth: int, key, q10_init: float = Q10_RECO_SPEC.default):
        k1, k2 = jax.random.split(key)
        self.lue_net = eqx.nn.MLP(nx, "scalar", hidden, depth, activation=jax.nn.tanh, key=k1)
        self.rb_net = eqx.nn.MLP(nz, "scalar", hidden, depth, activation=jax.nn.tanh, key=k2)
        self.q10_raw = jnp.asarray(Q10_RECO_SPEC.to_unconstrained(q10_init), dtype=jnp.float32)

    def q10(self) -> Array:
        return Q10_RECO_SPEC.to_physical(self.q10_raw)

    def __call__(self, x, z, sw, tair):
        gpp = jax.nn.softplus(self.lue_net(x)) * jnp.maximum(sw, 0.0)
        reco = jax.nn.softplus(self.rb_net(z)) * q10_response(tair, self.q10(), TREF_C)
        return reco - gpp, gpp, reco


class FluxNeural(FluxModel):
    """Pure-ML filler: NEE = NN(x, z, SW_IN, TA), no physics and no partitioning (GPP, Reco are NaN)."""

    net: eqx.nn.MLP

    def __init__(self, nx: int, nz: int, *, hidden: int, depth: int, key):
        self.net = eqx.nn.MLP(nx + nz + 2, "scalar", 2 * hidden, depth, activation=jax.nn.tanh, key=key)

    def q10(self) -> Array:
        return jnp.asarray(jnp.nan, dtype=jnp.float32)

    def __call__(self, x, z, sw, tair):
        nee = self.net(jnp.concatenate([x, z, jnp.stack([sw, (tair - TREF_C) / 10.0])]))
        nan = jnp.full_like(nee, jnp.nan)
        return nee, nan, nan


_MODELS: dict[str, type[FluxModel]] = {"hybrid": FluxHybrid, "neural": FluxNeural}


# --- training -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridConfig:
    """Training settings of `fit_flux_model` (defaults: a few seconds per half-hourly site-year on 2 cores).

    members: ensemble size (different seeds); hidden, depth: MLP width and hidden layers; batch: minibatch of
    observed steps; learning_rate, weight_decay: AdamW; max_steps; eval_every / patience: early stopping on the
    held-out 10 % (`validation_split`) every ``eval_every`` steps, stop after ``patience`` evaluations without
    improvement (each member keeps its best weights); seed.
    """

    members: int = 5
    hidden: int = 16
    depth: int = 2
    batch: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    max_steps: int = 4000
    eval_every: int = 100
    patience: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("members", "hidden", "depth", "batch", "max_steps", "eval_every", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"HybridConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"HybridConfig.learning_rate must be > 0, got {self.learning_rate!r}")


@functools.lru_cache(maxsize=8)
def _optimiser(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    # cached so that the jitted chunk sees the same (hashable) optimiser and compiles once
    return optax.adamw(learning_rate, weight_decay=weight_decay)


def _loss(params, static, x, z, sw, ta, y, w):
    model = eqx.combine(params, static)
    nee, _, _ = jax.vmap(model)(x, z, sw, ta)
    return jnp.sum(w * (nee - y) ** 2) / jnp.maximum(jnp.sum(w), 1.0)


@eqx.filter_jit
def _train_chunk(params, opt_state, static, optimiser, data, batches, val_idx, val_w):
    """``batches`` (members, steps, batch) indices: AdamW steps for every member, then its validation loss."""
    x, z, sw, ta, y = data

    def one_member(params, opt_state, idx):
        def step(carry, b):
            params, opt_state = carry
            grads = jax.grad(_loss)(params, static, x[b], z[b], sw[b], ta[b], y[b], jnp.ones(b.shape, y.dtype))
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx)
        v = val_idx
        val = _loss(params, static, x[v], z[v], sw[v], ta[v], y[v], val_w)
        return params, opt_state, val

    return jax.vmap(one_member)(params, opt_state, batches)


@jax.jit
def _keep_improved(best, params, improved):
    """Per member (leading axis): the new parameters where ``improved``, else the best so far."""
    return jax.tree_util.tree_map(lambda b, p: jnp.where(improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b), best, params)


@eqx.filter_jit
def _predict(params, static, x, z, sw, ta):
    """(nee, gpp, reco) of every member (members, steps), and each member's Q10."""

    def one(p):
        model = eqx.combine(p, static)
        return jax.vmap(model)(x, z, sw, ta), model.q10()

    return jax.vmap(one)(params)


def _init_members(cls, nx, nz, hidden, depth, optimiser, seed, q10_starts):
    """Ensemble parameters (stacked on a leading member axis), the shared static structure, optimiser state.

    Weights and biases are drawn with numpy exactly as `equinox.nn.Linear` draws them (uniform ±1/√fan_in); XLA
    compiling jax.random initialisers for a vmapped ensemble takes longer on a CPU than the whole training.
    """
    shapes = eqx.filter_eval_shape(_make_member, cls, nx, nz, hidden, depth, jax.random.PRNGKey(0), 1.5)
    is_leaf = lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct)  # noqa: E731
    static = eqx.filter(shapes, is_leaf, inverse=True)
    structs, treedef = jax.tree_util.tree_flatten(eqx.filter(shapes, is_leaf), is_leaf=is_leaf)
    rng = np.random.default_rng(seed)
    members = len(q10_starts)
    leaves, fan_in = [], 1
    for leaf in structs:
        if leaf.ndim == 0:  # the hybrid's unconstrained Q10
            value = np.array([_q10_unconstrained(q) for q in q10_starts])
        else:
            fan_in = leaf.shape[1] if leaf.ndim == 2 else fan_in  # a bias follows its weight
            lim = 1.0 / math.sqrt(fan_in)
            value = rng.uniform(-lim, lim, (members, *leaf.shape))
        leaves.append(jnp.asarray(value, dtype=leaf.dtype))
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    return params, static, _opt_init(optimiser, params)


def _q10_unconstrained(q10: float) -> float:
    """`Q10_RECO_SPEC.to_unconstrained` in Python floats (logit transform), for the numpy initialisation."""
    frac = (float(q10) - Q10_RECO_SPEC.lower) / (Q10_RECO_SPEC.upper - Q10_RECO_SPEC.lower)
    return math.log(frac) - math.log1p(-frac)


def _make_member(cls, nx, nz, hidden, depth, key, q10_init):
    kw = {"q10_init": q10_init} if cls is FluxHybrid else {}
    return cls(nx, nz, hidden=hidden, depth=depth, key=key, **kw)


@eqx.filter_jit
def _opt_init(optimiser, params):
    return jax.vmap(optimiser.init)(params)


def _bucket(n: int, minimum: int = 256) -> int:
    """Next power of two (≥ minimum): padding to it keeps the number of compiled shapes small."""
    return max(minimum, 1 << (max(1, n) - 1).bit_length())


def _pad(a: np.ndarray, n: int, fill=0.0) -> np.ndarray:
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def validation_split(observed: np.ndarray, steps_per_day: int, config: HybridConfig = HybridConfig()) -> np.ndarray:
    """The held-out 10 % of observed steps: whole days (sub-daily data) or weeks (daily data) drawn at random with
    ``config.seed`` (`kgml.fluxsite.gapfill.calibration_split`, shared with the ML fillers)."""
    return calibration_split(observed, steps_per_day, config.seed, _VAL_FRACTION)


@dataclass(frozen=True)
class HybridFit:
    """Result of `fit_flux_model` on one record, in the flux's own units; arrays have one value per step.

    nee, gpp, reco: ensemble means (GPP/Reco NaN for the neural model); nee_members etc.: (members, steps);
    sd: calibrated 1-σ of NEE (ensemble spread ⊕ residual scatter, × ``calibration``); gpp_sd, reco_sd: ensemble
    spread; q10: per member; validation: held-out steps (bool); calibration: the factor making ±1σ cover 68.3 % of
    held-out residuals; residual_sd: scatter by quintile of the gross flux GPP + Reco; steps: training steps per member; seconds: wall time."""

    nee: np.ndarray
    gpp: np.ndarray
    reco: np.ndarray
    sd: np.ndarray
    gpp_sd: np.ndarray
    reco_sd: np.ndarray
    nee_members: np.ndarray
    gpp_members: np.ndarray
    reco_members: np.ndarray
    q10: np.ndarray
    validation: np.ndarray
    calibration: float
    residual_sd: np.ndarray
    steps: int
    seconds: float


def fit_flux_model(
    flux,
    inputs: FluxInputs,
    *,
    model: str = "hybrid",
    config: HybridConfig = HybridConfig(),
    validation: np.ndarray | None = None,
    min_observed: int = 100,
    source: object = None,
    progress: bool = False,
) -> HybridFit:
    """Train a deep ensemble of `FluxHybrid` (``model="hybrid"``) or `FluxNeural` (``"neural"``) on the observed
    values of ``flux`` (NaN = not observed; any units, e.g. gC m-2 d-1 or µmol m-2 s-1) and predict every step.

    AdamW on minibatches of observed steps; each member keeps the weights with the lowest loss on the held-out
    10 % of observed steps (`validation_split`, or the ``validation`` mask given). Uncertainty:
    σ² = (ensemble variance + residual variance in the step's quintile of GPP + Reco) × c², with c chosen so that ±σ covers
    68.3 % of the held-out residuals.
    """
    t0 = time.perf_counter()
    if model not in _MODELS:
        raise ValueError(f"model must be one of {sorted(_MODELS)}, got {model!r}")
    y = np.asarray(flux, dtype=np.float64)
    n = inputs.x.shape[0]
    if y.shape != (n,):
        raise DataValidationError(source, "flux", f"{y.size} values for {n} time steps")
    observed = np.isfinite(y)
    if observed.sum() < min_observed:
        raise DataValidationError(
            source, "flux", f"only {int(observed.sum())} observed values; the flux hybrid needs at least {min_observed}"
        )
    rng = np.random.default_rng(config.seed + 1)
    val = validation_split(observed, inputs.steps_per_day, config) if validation is None else np.asarray(validation, bool) & observed
    train_idx = np.flatnonzero(observed & ~val)
    val_idx = np.flatnonzero(val)

    y_scale = float(np.std(y[observed])) or 1.0
    sw_scale = float(np.std(inputs.sw_in)) or 1.0
    n_pad = _bucket(n)
    data = (
        jnp.asarray(_pad(inputs.x, n_pad)), jnp.asarray(_pad(inputs.z, n_pad)),
        jnp.asarray(_pad(inputs.sw_in / sw_scale, n_pad)), jnp.asarray(_pad(inputs.tair, n_pad, TREF_C)),
        jnp.asarray(_pad(np.where(observed, y / y_scale, 0.0).astype(np.float32), n_pad)),
    )
    v_pad = _bucket(val_idx.size, 64)
    val_w = jnp.asarray(_pad(np.ones(val_idx.size, np.float32), v_pad))
    val_idx_j = jnp.asarray(_pad(val_idx.astype(np.int32), v_pad))

    cls = _MODELS[model]
    # members start from different seeds and, for the hybrid, Q10 spread over 1.3–2.5
    q10_starts = np.linspace(1.3, 2.5, config.members) if config.members > 1 else np.array([Q10_RECO_SPEC.default])
    optimiser = _optimiser(config.learning_rate, config.weight_decay)
    params, static, opt_state = _init_members(
        cls, inputs.x.shape[1], inputs.z.shape[1], config.hidden, config.depth, optimiser, config.seed, q10_starts
    )

    best = params
    best_loss = np.full(config.members, np.inf)
    waited = np.zeros(config.members, dtype=int)
    batch = min(config.batch, _bucket(train_idx.size, 64))
    steps = 0
    if progress:
        note(f"flux {model}: {COMPILING_NOTE}")
    ticker = None  # made after the first (compiling) chunk, so that its rate counts training steps only
    while steps < config.max_steps:
        batches = jnp.asarray(rng.choice(train_idx, size=(config.members, config.eval_every, batch)).astype(np.int32))
        params, opt_state, val_loss = _train_chunk(params, opt_state, static, optimiser, data, batches, val_idx_j, val_w)
        steps += config.eval_every
        if ticker is None:
            ticker = bar(total=config.max_steps, initial=steps, desc=f"flux {model} ({config.members} members)",
                         unit="step", disable=not progress, leave=False)
        else:
            ticker.update(config.eval_every)
        val_loss = np.asarray(val_loss)
        improved = val_loss < best_loss
        best_loss = np.where(improved, val_loss, best_loss)
        waited = np.where(improved, 0, waited + 1)
        best = _keep_improved(best, params, jnp.asarray(improved))
        if np.all(waited >= config.patience):
            break
    if ticker is not None:
        ticker.close()

    fluxes, q10 = _predict(best, static, *data[:4])
    nee_m, gpp_m, reco_m = (np.asarray(a, dtype=np.float64)[:, :n] * y_scale for a in fluxes)
    q10 = np.asarray(q10, dtype=np.float64)
    nee = nee_m.mean(axis=0)
    ens_var = nee_m.var(axis=0, ddof=1) if config.members > 1 else np.zeros(n)
    gpp = gpp_m.mean(axis=0)
    # Eddy-covariance random error grows with the flux magnitude (Richardson et al. 2006, Agric. For. Meteorol.
    # 136:1): residual scatter by quintile of the gross flux GPP + Reco (neural model: of |NEE|).
    level = np.abs(nee) if model == "neural" else gpp + reco_m.mean(axis=0)
    edges = np.unique(np.quantile(level[train_idx], [0.2, 0.4, 0.6, 0.8]))
    bins = np.digitize(level, edges)
    resid = y - nee
    res_sd = np.array([
        np.sqrt(np.mean(resid[train_idx][bins[train_idx] == b] ** 2)) if np.any(bins[train_idx] == b) else np.nan
        for b in range(edges.size + 1)
    ])
    res_sd = np.where(np.isfinite(res_sd), res_sd, np.sqrt(np.mean(resid[train_idx] ** 2)))
    raw_sd = np.sqrt(ens_var + res_sd[bins] ** 2)
    z = np.abs(resid[val_idx]) / raw_sd[val_idx]
    calibration = float(np.quantile(z, _ONE_SIGMA)) if z.size >= 10 else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gpp_sd = gpp_m.std(axis=0, ddof=1) if config.members > 1 else np.zeros(n)
        reco_sd = reco_m.std(axis=0, ddof=1) if config.members > 1 else np.zeros(n)
    return HybridFit(
        nee, gpp, reco_m.mean(axis=0), calibration * raw_sd, gpp_sd, reco_sd, nee_m, gpp_m, reco_m, q10, val,
        calibration, res_sd, steps, time.perf_counter() - t0,
    )


# --- gap-filling ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridFillResult:
    """Output of `hybrid_gapfill`, one value per step. filled: observed where present, else the model estimate;
    estimate: the ensemble-mean NEE at every step; sd: calibrated 1-σ (every step); qc: 0 observed, 1 filled,
    2 filled where a driver was interpolated; gpp, reco: the partitioning of the same model (NaN for the neural
    filler); fit: the `HybridFit`."""

    filled: np.ndarray
    estimate: np.ndarray
    sd: np.ndarray
    qc: np.ndarray
    gpp: np.ndarray
    reco: np.ndarray
    fit: HybridFit


def hybrid_gapfill(
    flux,
    drivers: Mapping[str, np.ndarray],
    times,
    *,
    model: str = "hybrid",
    config: HybridConfig = HybridConfig(),
    record: bool = True,
    source: object = None,
    progress: bool = False,
) -> HybridFillResult:
    """Fill the gaps (NaN) of a flux series with the flux hybrid (or ``model="neural"``) trained on the series' own
    observations. ``drivers``: ``sw_in`` (W m-2) and ``tair`` (°C) required, ``vpd`` (hPa) and ``swc`` (%) used
    when present; ``times``: period starts (datetime64, regular step). ``record``: condition the model on the
    series' own observed record (`record_features`). Observed values are returned unchanged."""
    unknown = sorted(set(drivers) - {"sw_in", "tair", "vpd", "swc"})
    if unknown:
        raise DataValidationError(source, unknown[0], "unknown driver for the flux hybrid (use sw_in, tair, vpd, swc)")
    y = np.asarray(flux, dtype=np.float64)
    observed = np.isfinite(y)
    t = np.asarray(times, dtype="datetime64[ns]")
    per_day = int(round(np.timedelta64(1, "D") / np.diff(t).min())) if t.size > 1 else 1
    val = validation_split(observed, per_day, config)
    # the record features never see the held-out steps, so they stand for gaps in early stopping and calibration
    inputs = flux_inputs(
        t, drivers.get("sw_in"), drivers.get("tair"), drivers.get("vpd"), drivers.get("swc"),
        flux=np.where(val, np.nan, y) if record else None, source=source,
    )
    fit = fit_flux_model(y, inputs, model=model, config=config, validation=val, source=source, progress=progress)
    filled = np.where(observed, y, fit.nee)
    qc = np.where(observed, 0, np.where(inputs.interpolated, 2, 1)).astype(np.int8)
    return HybridFillResult(filled, fit.nee, fit.sd, qc, fit.gpp, fit.reco, fit)
