"""Stochastic daily weather generator (WGEN; Richardson 1981, Richardson & Wright 1984) fitted from a station series.

Synthetic forcing for pretraining corpora where real forcing is short: fit once from a daily series, then draw
any number of years for any number of synthetic sites (`jax.vmap` over keys or over fitted parameters).

Model (Richardson 1981, Water Resour. Res. 17:182–190; Richardson & Wright 1984, USDA ARS-8):

- occurrence: first-order two-state Markov chain, P(W|D) and P(W|W) per calendar month;
- amounts on wet days: ``precip = wet_threshold + G``, G ~ Gamma(shape_m, scale_m) per month (a gamma on the
  excess over the wet-day threshold, so every simulated wet day counts as wet; mean preserved exactly);
- tmax, tmin, sw_in: ``x_j = μ_j,s(doy) + σ_j,s(doy) χ_j`` with seasonal mean and variance as Fourier series
  fitted separately on dry (s = 0) and wet (s = 1) days, and standardised residuals following the
  multivariate lag-1 process ``χ_t = A χ_{t−1} + B ε_t``, ε ~ N(0, I) (Matalas 1967, Water Resour. Res. 3:937),
  ``A = M1 M0⁻¹``, ``B Bᵀ = M0 − A M1ᵀ`` with M0, M1 the lag-0 and lag-1 (cross-)correlation matrices;
- bounds: tmax ≥ tmin (the two are swapped on the rare day a draw inverts them); 0 ≤ sw_in ≤ clear-sky
  shortwave R_so (FAO-56 eq. 37) at the site latitude;
- derived: tair = (tmin + tmax)/2 and vpd with dew point ≈ tmin (FAO-56 eqs. 9, 48) via `forcing.make_met`.

Calendar: the generator runs on a 365-day year (doy 1–365, no leap days); calendar months are taken from doy
on a non-leap year, so in a leap year the months after February are shifted by one day in fitting (negligible).
Units: °C, W m-2 (24-h mean), mm d-1, hPa.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from process_models import constants as C
from process_models.forcing import Met, make_met
from process_models.radiation import MJ_PER_DAY_PER_W, clear_sky_radiation

#: Length of the generator's calendar year (d); FAO-56 solar geometry also uses 365.
DAYS_PER_GENERATOR_YEAR = 365

#: First day of year of each calendar month on a non-leap year.
MONTH_START_DOY = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)

#: Days in each calendar month on a non-leap year.
DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: Order of the continuous variables along the ``var`` axis of the Fourier coefficients and AR matrices.
CONTINUOUS_VARIABLES = ("tmax", "tmin", "sw_in")

#: Default wet-day threshold (mm d-1): a day is wet when precip > threshold. 0.1 mm is the usual rain-gauge
#: trace limit (WMO-No. 8, 2018, §6.1; Wilks 1999 used 0.01 in ≈ 0.25 mm for US co-op gauges).
DEFAULT_WET_THRESHOLD = 0.1

#: The seasonal variance is floored at this fraction of its annual mean (its Fourier constant term), so a
#: harmonic dip can never make a standard deviation vanish or turn imaginary.
_VARIANCE_FLOOR_FRACTION = 0.05

#: Days the chain runs before the first returned day, so the first day is drawn from (close to) the
#: stationary distribution rather than from χ = 0 and a dry start.
_SPINUP_DAYS = 60

#: Pseudo-counts added to each transition count (Jeffreys prior Beta(½, ½)): keeps a probability in (0, 1)
#: when a month has no transitions out of a state; negligible with a few years of data.
_TRANSITION_PRIOR = 0.5

#: Months with fewer wet days than this take the gamma parameters pooled over the whole year.
_MIN_WET_DAYS_PER_MONTH = 10

#: Version of the JSON layout written by `params_to_dict`.
_PARAMS_FORMAT = "kgml.weather.WeatherGeneratorParams"
_PARAMS_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Pure kernels
# ---------------------------------------------------------------------------------------------------------


def month_of_doy(doy: ArrayLike) -> Int[Array, "..."]:
    """Calendar month index 0–11 of a day of year on a non-leap calendar (doy 366 → December)."""
    doy = jnp.asarray(doy)
    starts = jnp.asarray(MONTH_START_DOY)
    return jnp.clip(jnp.sum(doy[..., None] >= starts, axis=-1) - 1, 0, 11).astype(jnp.int32)


def fourier_basis(doy: ArrayLike, n_harmonics: int) -> Float[Array, "... coef"]:  # noqa: F722
    """Seasonal Fourier basis [1, cos ωd, sin ωd, …, cos Hωd, sin Hωd], ω = 2π/365 d-1, d = doy − 1.

    Richardson (1981) describes the seasonal means and standard deviations by such a series (one harmonic);
    more harmonics follow the sharper spring/autumn transitions of continental climates.
    """
    d = jnp.asarray(doy, jnp.float32) - 1.0
    omega = 2.0 * math.pi / DAYS_PER_GENERATOR_YEAR
    terms = [jnp.ones_like(d)]
    for k in range(1, n_harmonics + 1):
        terms += [jnp.cos(k * omega * d), jnp.sin(k * omega * d)]
    return jnp.stack(terms, axis=-1)


def fourier_series(coefs: Float[Array, "*batch coef"], doy: ArrayLike) -> Float[Array, "..."]:  # noqa: F722
    """Evaluate Fourier series with coefficients ``coefs`` (last axis 1 + 2H) at ``doy``.

    ``coefs`` of shape ``(*batch, K)`` and ``doy`` of shape ``(n,)`` give ``(n, *batch)``.
    """
    n_harmonics = (coefs.shape[-1] - 1) // 2
    basis = fourier_basis(doy, n_harmonics)  # (n, K)
    return jnp.einsum("nk,...k->n...", basis, coefs)


def seasonal_std(variance_coefs: Float[Array, "*batch coef"], doy: ArrayLike) -> Float[Array, "..."]:  # noqa: F722
    """Seasonal standard deviation σ(doy) = √max(v(doy), f·v̄) from variance Fourier coefficients.

    v̄ is the constant (annual-mean) term and f = 0.05 a floor fraction, so σ > 0 wherever v̄ > 0.
    """
    variance = fourier_series(variance_coefs, doy)
    floor = _VARIANCE_FLOOR_FRACTION * jnp.maximum(variance_coefs[..., 0], 1e-12)
    return jnp.sqrt(jnp.maximum(variance, floor))


def stationary_wet_fraction(p_wet_given_dry: ArrayLike, p_wet_given_wet: ArrayLike) -> Array:
    """Long-run wet-day fraction of a two-state Markov chain, π = P(W|D) / (1 + P(W|D) − P(W|W)) (–).

    Richardson & Wright (1984) eq. 2 (ARS-8 p. 3); inputs are probabilities in (0, 1).
    """
    p_wd = jnp.asarray(p_wet_given_dry)
    p_ww = jnp.asarray(p_wet_given_wet)
    return p_wd / (1.0 + p_wd - p_ww)


def gamma_shape_mle(mean: ArrayLike, mean_log: ArrayLike) -> Array:
    """Maximum-likelihood gamma shape α from D = ln(mean x) − mean(ln x) ≥ 0 (–), Greenwood & Durand (1960).

    α = (0.5000876 + 0.1648852 D − 0.0544274 D²) / D                         for 0 < D ≤ 0.5772,
    α = (8.898919 + 9.059950 D + 0.9775373 D²) / (17.79728 D + 11.968477 D² + D³)  for 0.5772 < D ≤ 17.
    Greenwood & Durand (1960) Technometrics 2:55–65; Wilks (2011) Statistical Methods in the Atmospheric
    Sciences, 3rd ed., eq. 4.41. D is limited to [1e-4, 17] so degenerate samples stay finite. The scale is
    then mean/α, which preserves the sample mean exactly.
    """
    d = jnp.clip(jnp.log(jnp.maximum(jnp.asarray(mean), 1e-12)) - jnp.asarray(mean_log), 1e-4, 17.0)
    small = (0.5000876 + 0.1648852 * d - 0.0544274 * d**2) / d
    large = (8.898919 + 9.059950 * d + 0.9775373 * d**2) / (17.79728 * d + 11.968477 * d**2 + d**3)
    return jnp.where(d <= 0.5772, small, large)


def clear_sky_shortwave(lat: ArrayLike, doy: ArrayLike, elevation: ArrayLike = 0.0) -> Array:
    """Clear-sky shortwave R_so as a 24-h mean (W m-2): FAO-56 eq. 37 converted from MJ m-2 d-1."""
    return clear_sky_radiation(lat, doy, elevation) / MJ_PER_DAY_PER_W


# ---------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------


class WeatherGeneratorParams(eqx.Module):
    """Fitted parameters of the generator for one site (a pytree of arrays; stack them for many sites).

    Attributes:
        lat: site latitude (degrees N), for the clear-sky bound on sw_in.
        elevation: site elevation (m) in the clear-sky bound (FAO-56 eq. 37).
        wet_threshold: a day is wet when precip > wet_threshold (mm d-1).
        p_wet_given_dry, p_wet_given_wet: monthly Markov transition probabilities (–), shape (12,).
        amount_shape, amount_scale: monthly gamma shape (–) and scale (mm d-1) of wet-day precipitation in
            excess of ``wet_threshold``, shape (12,).
        mean_coefs: Fourier coefficients of the seasonal means, shape (state=2 [dry, wet], var=3
            [tmax °C, tmin °C, sw_in W m-2], coef=1+2H).
        variance_coefs: Fourier coefficients of the seasonal variances (units²), same shape.
        ar_a, ar_b: lag-1 matrices of the standardised residuals, χ_t = A χ_{t−1} + B ε_t, shape (3, 3).
    """

    lat: Float[Array, ""]  # noqa: F722
    elevation: Float[Array, ""]  # noqa: F722
    wet_threshold: Float[Array, ""]  # noqa: F722
    p_wet_given_dry: Float[Array, "12"]
    p_wet_given_wet: Float[Array, "12"]
    amount_shape: Float[Array, "12"]
    amount_scale: Float[Array, "12"]
    mean_coefs: Float[Array, "2 3 coef"]  # noqa: F722
    variance_coefs: Float[Array, "2 3 coef"]  # noqa: F722
    ar_a: Float[Array, "3 3"]  # noqa: F722
    ar_b: Float[Array, "3 3"]  # noqa: F722

    @property
    def n_harmonics(self) -> int:
        return (self.mean_coefs.shape[-1] - 1) // 2


_FIELD_SHAPES: dict[str, tuple[int, ...] | None] = {
    "lat": (),
    "elevation": (),
    "wet_threshold": (),
    "p_wet_given_dry": (12,),
    "p_wet_given_wet": (12,),
    "amount_shape": (12,),
    "amount_scale": (12,),
    "mean_coefs": None,  # (2, 3, 1 + 2H)
    "variance_coefs": None,
    "ar_a": (3, 3),
    "ar_b": (3, 3),
}

_FIELD_UNITS = {
    "lat": "degrees_north",
    "elevation": "m",
    "wet_threshold": "mm d-1",
    "p_wet_given_dry": "1",
    "p_wet_given_wet": "1",
    "amount_shape": "1",
    "amount_scale": "mm d-1",
    "mean_coefs": "degC, degC, W m-2 (Fourier coefficients; axes state [dry, wet], var [tmax, tmin, sw_in], coef)",
    "variance_coefs": "degC2, degC2, W2 m-4 (Fourier coefficients of the variance; same axes)",
    "ar_a": "1",
    "ar_b": "1",
}


def params_to_dict(params: WeatherGeneratorParams) -> dict[str, Any]:
    """Plain-JSON dict of one site's parameters (nested lists of floats; no pickle)."""
    fields = {name: jnp.asarray(getattr(params, name)).tolist() for name in _FIELD_SHAPES}
    return {
        "format": _PARAMS_FORMAT,
        "version": _PARAMS_VERSION,
        "model": "WGEN (Richardson 1981; Richardson & Wright 1984) with monthly gamma amounts and Matalas (1967) "
        "lag-1 residuals",
        "variables": list(CONTINUOUS_VARIABLES),
        "units": dict(_FIELD_UNITS),
        "fields": fields,
    }


def params_from_dict(data: Mapping[str, Any]) -> WeatherGeneratorParams:
    """Inverse of `params_to_dict`; raises ValueError naming the field for a missing, unknown or ill-shaped one."""
    if data.get("format") != _PARAMS_FORMAT:
        raise ValueError(f"not weather-generator parameters: format is {data.get('format')!r}, expected {_PARAMS_FORMAT!r}")
    if data.get("version") != _PARAMS_VERSION:
        raise ValueError(f"unsupported weather-generator parameter version {data.get('version')!r}")
    fields = data.get("fields", {})
    missing = sorted(set(_FIELD_SHAPES) - set(fields))
    unknown = sorted(set(fields) - set(_FIELD_SHAPES))
    if missing or unknown:
        raise ValueError(f"weather-generator parameters: missing fields {missing}, unknown fields {unknown}")
    arrays = {name: jnp.asarray(fields[name], jnp.float32) for name in _FIELD_SHAPES}
    for name, shape in _FIELD_SHAPES.items():
        got = arrays[name].shape
        if shape is None:
            ok = len(got) == 3 and got[:2] == (2, 3) and got[2] % 2 == 1
            expected = "(2, 3, 1 + 2H)"
        else:
            ok = got == shape
            expected = str(shape)
        if not ok:
            raise ValueError(f"weather-generator parameter {name!r} has shape {got}, expected {expected}")
    if arrays["mean_coefs"].shape != arrays["variance_coefs"].shape:
        raise ValueError("weather-generator parameters: mean_coefs and variance_coefs differ in shape")
    return WeatherGeneratorParams(**arrays)


# ---------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------


def _weighted_fourier_fit(
    y: Float[Array, "n var"], weights: Float[Array, "state n"], basis: Float[Array, "n coef"]  # noqa: F722
) -> Float[Array, "state var coef"]:  # noqa: F722
    """Weighted least squares of each column of y on the Fourier basis, once per weight row (NaN-safe)."""
    y0 = jnp.where(jnp.isfinite(y), y, 0.0)
    gram = jnp.einsum("sn,nk,nl->skl", weights, basis, basis)
    ridge = 1e-6 * jnp.maximum(weights.sum(axis=1), 1.0)[:, None, None] * jnp.eye(basis.shape[1])
    rhs = jnp.einsum("sn,nk,nj->sjk", weights, basis, y0)
    return jnp.linalg.solve((gram + ridge)[:, None], rhs[..., None])[..., 0]


def fit_weather_generator(
    tmin: ArrayLike,
    tmax: ArrayLike,
    sw_in: ArrayLike,
    precip: ArrayLike,
    doy: ArrayLike,
    lat: ArrayLike,
    valid_mask: ArrayLike | None = None,
    *,
    wet_threshold: float = DEFAULT_WET_THRESHOLD,
    n_harmonics: int = 6,
    elevation: float = 0.0,
) -> WeatherGeneratorParams:
    """Fit the generator to one site's CONTIGUOUS daily series (one entry per calendar day, in order).

    Args:
        tmin, tmax: daily minimum / maximum air temperature (°C), shape (n,).
        sw_in: shortwave radiation, 24-h mean (W m-2), shape (n,).
        precip: precipitation (mm d-1), shape (n,).
        doy: day of year of each entry (1–366), shape (n,).
        lat: site latitude (degrees N).
        valid_mask: optional boolean (n,); False marks a day as missing (as does NaN in any variable).
        wet_threshold: wet day when precip > wet_threshold (mm d-1).
        n_harmonics: Fourier harmonics of the seasonal means and variances. The default 6 resolves about
            two-month features, the same seasonal resolution as the monthly occurrence and amount parameters;
            Richardson (1981) used 1, which leaves monthly-mean errors near 1 °C in spring and autumn at Ames.
        elevation: site elevation (m), used only in the clear-sky bound at generation.

    Missing days must be present as NaN (or masked), never dropped: a Markov transition or a lag-1 pair is
    counted only when both days are valid, so a gap never creates a fake transition. Occurrence and amounts
    use every day with a valid precip; the continuous variables use days where all four are valid (the
    wet/dry state conditions their means and variances).
    """
    tmin, tmax, sw_in, precip = (jnp.asarray(v, jnp.float32) for v in (tmin, tmax, sw_in, precip))
    doy = jnp.asarray(doy, jnp.int32)
    mask = jnp.ones(precip.shape, bool) if valid_mask is None else jnp.asarray(valid_mask, bool)
    shapes = {a.shape for a in (tmin, tmax, sw_in, precip, doy, mask)}
    if len(shapes) != 1 or len(shapes.pop()) != 1:
        raise ValueError("fit_weather_generator: tmin, tmax, sw_in, precip, doy, valid_mask must be 1-D of equal length")
    f32 = jnp.float32
    return _fit(
        tmin, tmax, sw_in, precip, doy, mask, jnp.asarray(lat, f32), jnp.asarray(wet_threshold, f32),
        jnp.asarray(elevation, f32), n_harmonics=int(n_harmonics),
    )


@functools.partial(jax.jit, static_argnames="n_harmonics")
def _fit(tmin, tmax, sw_in, precip, doy, mask, lat, thr, elevation, *, n_harmonics: int) -> WeatherGeneratorParams:
    """Jit-compiled body of `fit_weather_generator` (validated float32/int32/bool arrays)."""
    # --- occurrence: monthly Markov chain ------------------------------------------------------------
    p_ok = mask & jnp.isfinite(precip)
    wet = p_ok & (jnp.where(p_ok, precip, 0.0) > thr)
    month = month_of_doy(doy)
    onehot = jax.nn.one_hot(month, 12, dtype=jnp.float32)  # (n, 12)
    pair_ok = p_ok[1:] & p_ok[:-1]
    from_dry = (pair_ok & ~wet[:-1]).astype(jnp.float32)
    from_wet = (pair_ok & wet[:-1]).astype(jnp.float32)
    to_wet = wet[1:].astype(jnp.float32)
    oh = onehot[1:]  # month of the day reached
    n_d, n_dw = from_dry @ oh, (from_dry * to_wet) @ oh
    n_w, n_ww = from_wet @ oh, (from_wet * to_wet) @ oh
    p_wd = (n_dw + _TRANSITION_PRIOR) / (n_d + 2.0 * _TRANSITION_PRIOR)
    p_ww = (n_ww + _TRANSITION_PRIOR) / (n_w + 2.0 * _TRANSITION_PRIOR)

    # --- amounts: monthly gamma (maximum likelihood) on the excess over the threshold ----------------
    excess = jnp.where(wet, precip - thr, 1.0)
    log_excess = jnp.log(jnp.maximum(excess, 1e-6))
    w_wet = wet.astype(jnp.float32)
    n_wet_m = w_wet @ onehot
    mean_m = (w_wet * excess) @ onehot / jnp.maximum(n_wet_m, 1.0)
    mlog_m = (w_wet * log_excess) @ onehot / jnp.maximum(n_wet_m, 1.0)
    n_wet = jnp.maximum(w_wet.sum(), 1.0)
    mean_all = (w_wet * excess).sum() / n_wet
    mlog_all = (w_wet * log_excess).sum() / n_wet
    enough = n_wet_m >= _MIN_WET_DAYS_PER_MONTH
    mean_m = jnp.where(enough, mean_m, mean_all)
    shape_m = jnp.where(enough, gamma_shape_mle(jnp.where(enough, mean_m, 1.0), jnp.where(enough, mlog_m, -1.0)),
                        gamma_shape_mle(mean_all, mlog_all))
    scale_m = mean_m / shape_m

    # --- continuous variables: seasonal means / variances by state, Fourier ------------------------------
    y = jnp.stack([tmax, tmin, sw_in], axis=-1)  # (n, 3)
    ok = p_ok & jnp.all(jnp.isfinite(y), axis=-1)
    weights = jnp.stack([ok & ~wet, ok & wet]).astype(jnp.float32)  # (2, n)
    basis = fourier_basis(doy, n_harmonics)
    mean_coefs = _weighted_fourier_fit(y, weights, basis)  # (2, 3, K)
    mu = jnp.einsum("nk,sjk->nsj", basis, mean_coefs)  # (n, 2, 3)
    state = wet.astype(jnp.int32)
    mu_day = jnp.take_along_axis(mu, state[:, None, None], axis=1)[:, 0]  # (n, 3)
    resid = jnp.where(ok[:, None], y - mu_day, 0.0)
    variance_coefs = _weighted_fourier_fit(resid**2, weights, basis)
    sd = seasonal_std(variance_coefs, doy)  # (n, 2, 3)
    sd_day = jnp.take_along_axis(sd, state[:, None, None], axis=1)[:, 0]
    chi = jnp.where(ok[:, None], resid / sd_day, 0.0)

    # --- residual lag-1 process (Matalas 1967) ------------------------------------------------------------
    w0 = ok.astype(jnp.float32)
    w1 = (ok[1:] & ok[:-1]).astype(jnp.float32)
    m0 = jnp.einsum("n,ni,nj->ij", w0, chi, chi) / jnp.maximum(w0.sum(), 1.0)
    m1 = jnp.einsum("n,ni,nj->ij", w1, chi[1:], chi[:-1]) / jnp.maximum(w1.sum(), 1.0)
    scale = jnp.sqrt(jnp.maximum(jnp.diag(m0), 1e-12))
    m0 = m0 / jnp.outer(scale, scale)
    m1 = m1 / jnp.outer(scale, scale)
    ar_a = m1 @ jnp.linalg.inv(m0)
    bbt = m0 - ar_a @ m1.T
    bbt = 0.5 * (bbt + bbt.T)
    eigval, eigvec = jnp.linalg.eigh(bbt)
    ar_b = eigvec @ jnp.diag(jnp.sqrt(jnp.maximum(eigval, 1e-6))) @ eigvec.T

    f32 = jnp.float32
    return WeatherGeneratorParams(
        lat=lat,
        elevation=elevation,
        wet_threshold=thr,
        p_wet_given_dry=p_wd.astype(f32),
        p_wet_given_wet=p_ww.astype(f32),
        amount_shape=shape_m.astype(f32),
        amount_scale=scale_m.astype(f32),
        mean_coefs=mean_coefs.astype(f32),
        variance_coefs=variance_coefs.astype(f32),
        ar_a=ar_a.astype(f32),
        ar_b=ar_b.astype(f32),
    )


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------


class SyntheticWeather(NamedTuple):
    """Generated daily drivers, each of shape (n_days,) (with leading batch axes under vmap).

    tair, tmin, tmax (°C); sw_in (W m-2, 24-h mean); vpd (hPa); precip (mm d-1); doy (1–365, int32).
    Wrap in a `forcing.Met` with `to_met`.
    """

    tair: Array
    tmin: Array
    tmax: Array
    sw_in: Array
    vpd: Array
    precip: Array
    doy: Array


@eqx.filter_jit
def _generate(
    params: WeatherGeneratorParams, key: PRNGKeyArray, n_days: int, start_doy: Int[Array, ""]  # noqa: F722
) -> SyntheticWeather:
    n_total = n_days + _SPINUP_DAYS
    day = jnp.arange(n_total) + (start_doy - 1 - _SPINUP_DAYS)
    doy = jnp.mod(day, DAYS_PER_GENERATOR_YEAR) + 1
    month = month_of_doy(doy)
    k_occ, k_amt, k_res = jax.random.split(key, 3)
    u = jax.random.uniform(k_occ, (n_total,))
    amount = jax.random.gamma(k_amt, params.amount_shape[month]) * params.amount_scale[month]
    eps = jax.random.normal(k_res, (n_total, 3))
    p_wd = params.p_wet_given_dry[month]
    p_ww = params.p_wet_given_wet[month]

    def occurrence(wet_prev: Bool[Array, ""], inputs):  # noqa: F722
        u_t, pwd_t, pww_t = inputs
        wet_t = u_t < jnp.where(wet_prev, pww_t, pwd_t)
        return wet_t, wet_t

    def residual(chi_prev: Float[Array, "3"], eps_t: Float[Array, "3"]):
        chi_t = params.ar_a @ chi_prev + params.ar_b @ eps_t
        return chi_t, chi_t

    _, wet = jax.lax.scan(occurrence, jnp.asarray(False), (u, p_wd, p_ww))
    _, chi = jax.lax.scan(residual, jnp.zeros(3, eps.dtype), eps)

    keep = slice(_SPINUP_DAYS, None)
    wet, chi, doy, amount = wet[keep], chi[keep], doy[keep], amount[keep]
    state = wet.astype(jnp.int32)
    mu = fourier_series(params.mean_coefs, doy)  # (n, 2, 3)
    sd = seasonal_std(params.variance_coefs, doy)
    mu_day = jnp.take_along_axis(mu, state[:, None, None], axis=1)[:, 0]
    sd_day = jnp.take_along_axis(sd, state[:, None, None], axis=1)[:, 0]
    x = mu_day + sd_day * chi
    tmax = jnp.maximum(x[:, 0], x[:, 1])
    tmin = jnp.minimum(x[:, 0], x[:, 1])
    sw_in = jnp.clip(x[:, 2], 0.0, clear_sky_shortwave(params.lat, doy, params.elevation))
    precip = jnp.where(wet, params.wet_threshold + amount, 0.0)
    met = make_met(tmin=tmin, tmax=tmax, sw_in=sw_in, precip=precip, doy=doy, lat=params.lat)
    return SyntheticWeather(
        tair=met.tair, tmin=met.tmin, tmax=met.tmax, sw_in=met.sw_in, vpd=met.vpd, precip=met.precip,
        doy=doy.astype(jnp.int32),
    )


def generate_weather(
    params: WeatherGeneratorParams,
    key: PRNGKeyArray,
    n_days: int | None = None,
    *,
    n_years: int | None = None,
    start_doy: int = 1,
) -> SyntheticWeather:
    """Draw a synthetic daily series of ``n_days`` (or ``365 n_years``) days starting at ``start_doy``.

    Deterministic given ``key``; jit-compiled (``n_days`` is static: one compilation per length).
    Many sites or realisations: ``jax.vmap(lambda k: generate_weather(params, k, 365))(keys)``, or vmap over
    stacked params. The chain is spun up for 60 days before the first returned day.
    """
    if (n_days is None) == (n_years is None):
        raise ValueError("give exactly one of n_days or n_years")
    n = int(n_days) if n_days is not None else DAYS_PER_GENERATOR_YEAR * int(n_years)
    if n < 1:
        raise ValueError(f"n_days must be positive, got {n}")
    if not 1 <= int(start_doy) <= DAYS_PER_GENERATOR_YEAR:
        raise ValueError(f"start_doy must be in 1..{DAYS_PER_GENERATOR_YEAR}, got {start_doy}")
    return _generate(params, key, n, jnp.asarray(start_doy, jnp.int32))


def to_met(
    weather: SyntheticWeather, lat: ArrayLike, co2: ArrayLike = 400.0, patm: ArrayLike = C.P_STANDARD
) -> Met:
    """Wrap generated weather as `forcing.Met` (tsoil = tair, constant co2 (ppm) and patm (Pa))."""
    return make_met(
        tmin=weather.tmin, tmax=weather.tmax, sw_in=weather.sw_in, precip=weather.precip, doy=weather.doy,
        lat=lat, tair=weather.tair, vpd=weather.vpd, co2=co2, patm=patm,
    )


# ---------------------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="wet_threshold")
def monthly_statistics(
    tmin: ArrayLike,
    tmax: ArrayLike,
    sw_in: ArrayLike,
    precip: ArrayLike,
    doy: ArrayLike,
    wet_threshold: float = DEFAULT_WET_THRESHOLD,
    valid_mask: ArrayLike | None = None,
) -> dict[str, Array]:
    """Monthly climate statistics of a contiguous daily series (NaN = missing), for observed vs simulated checks.

    Returns (12,) arrays: ``tmax_mean``, ``tmin_mean``, ``sw_in_mean`` (means of valid days), ``tmax_std``
    (daily standard deviation within the month, about the month's mean), ``wet_fraction`` (precip >
    threshold), ``wet_amount_mean`` (mm on wet days), ``precip_total`` (mean daily precip × days in month, mm);
    and scalars ``annual_precip`` (sum of ``precip_total``, mm yr-1; robust to partial years) and
    ``tmax_lag1_autocorr`` (lag-1 autocorrelation of tmax anomalies from the monthly means, over
    consecutive valid pairs).
    """
    arrays = [jnp.asarray(v, jnp.float32) for v in (tmin, tmax, sw_in, precip)]
    mask = jnp.ones(arrays[0].shape, bool) if valid_mask is None else jnp.asarray(valid_mask, bool)
    onehot = jax.nn.one_hot(month_of_doy(doy), 12, dtype=jnp.float32)

    def monthly_mean(v, ok):
        w = ok.astype(jnp.float32)
        return (w * jnp.where(ok, v, 0.0)) @ onehot / (w @ onehot)

    tmin, tmax, sw_in, precip = arrays
    ok_t = mask & jnp.isfinite(tmax)
    ok_p = mask & jnp.isfinite(precip)
    wet = ok_p & (jnp.where(ok_p, precip, 0.0) > wet_threshold)
    tmax_mean = monthly_mean(tmax, ok_t)
    anomaly = jnp.where(ok_t, tmax - onehot @ jnp.nan_to_num(tmax_mean), 0.0)
    pair = (ok_t[1:] & ok_t[:-1]).astype(jnp.float32)
    lag1 = (pair * anomaly[1:] * anomaly[:-1]).sum() / jnp.sqrt(
        (pair * anomaly[1:] ** 2).sum() * (pair * anomaly[:-1] ** 2).sum()
    )
    precip_mean = monthly_mean(precip, ok_p)
    precip_total = precip_mean * jnp.asarray(DAYS_IN_MONTH, jnp.float32)
    return {
        "tmax_mean": tmax_mean,
        "tmin_mean": monthly_mean(tmin, mask & jnp.isfinite(tmin)),
        "sw_in_mean": monthly_mean(sw_in, mask & jnp.isfinite(sw_in)),
        "tmax_std": jnp.sqrt(monthly_mean(anomaly**2, ok_t)),
        "wet_fraction": monthly_mean(wet.astype(jnp.float32), ok_p),
        "wet_amount_mean": monthly_mean(precip, wet),
        "precip_total": precip_total,
        "annual_precip": precip_total.sum(),
        "tmax_lag1_autocorr": lag1,
    }
