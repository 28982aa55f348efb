"""Radiation: solar geometry, extraterrestrial and clear-sky radiation, net radiation, PAR and fAPAR.

Daily kernels after FAO-56 (Allen et al. 1998, Irrigation and Drainage Paper 56, chapter 3).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C
from process_models.parameters import ParameterSpec

#: Light extinction coefficient of the canopy (shared by every photosynthesis variant).
K_EXT_SPEC = ParameterSpec(
    name="k_ext",
    default=0.5,
    lower=0.3,
    upper=0.9,
    units="-",
    reference="Monsi & Saeki (1953); Campbell & Norman (1998) §15: 0.5 for a spherical leaf-angle distribution",
    description="Beer's-law extinction coefficient for fAPAR = 1 − exp(−k LAI)",
)

#: W m-2 (24-h mean) → MJ m-2 d-1.
MJ_PER_DAY_PER_W = C.SECONDS_PER_DAY * 1.0e-6

_DAYS_IN_YEAR = 365.0  # FAO-56 eqs. 23–24 use 365 in the annual cycle


def solar_declination(doy: ArrayLike) -> Array:
    """Solar declination δ = 0.409 sin(2π J/365 − 1.39) (rad). FAO-56 eq. 24. doy: day of year J."""
    return 0.409 * jnp.sin(2.0 * math.pi * jnp.asarray(doy) / _DAYS_IN_YEAR - 1.39)


def inverse_relative_distance(doy: ArrayLike) -> Array:
    """Inverse relative Earth–Sun distance d_r = 1 + 0.033 cos(2π J/365) (–). FAO-56 eq. 23."""
    return 1.0 + 0.033 * jnp.cos(2.0 * math.pi * jnp.asarray(doy) / _DAYS_IN_YEAR)


#: Coefficients a0…a7 of Abramowitz & Stegun (1964) Handbook of Mathematical Functions, eq. 4.4.46:
#: arccos x = √(1 − x) Σ a_k x^k + ε(x), |ε| ≤ 2e-8 on 0 ≤ x ≤ 1 (Hastings 1955).
_ARCCOS_AS_4_4_46 = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046, 0.0308918810, -0.0170881256,
                     0.0066700901, -0.0012624911)


def polynomial(x: ArrayLike, coefficients) -> Array:
    """Σ_k c_k x^k for ``coefficients`` c_0, c_1, … (Horner's scheme): multiply-adds only, cheap inside a loop."""
    x = jnp.asarray(x)
    out = jnp.zeros_like(x) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def arccos_polynomial(x: ArrayLike) -> Array:
    """arccos x (rad) for x ∈ [−1, 1] by Abramowitz & Stegun (1964) eq. 4.4.46, |error| ≤ 2e-8 (+ float32
    rounding), and arccos(−x) = π − arccos x for x < 0.

    The same function as ``jnp.arccos`` to float32 precision at a fraction of its cost (a square root and seven
    multiply-adds): the sunset hour angle is needed for every site-day and arccos dominated the day's arithmetic
    on CPU. Inputs outside [−1, 1] are the caller's to clip.
    """
    x = jnp.asarray(x)
    a = jnp.abs(x)
    poly = polynomial(a, _ARCCOS_AS_4_4_46)
    inside = a < 1.0  # double-where: finite gradient at |x| = 1, where √(1 − |x|) has none
    r = jnp.where(inside, jnp.sqrt(jnp.where(inside, 1.0 - a, 1.0)), 0.0) * poly
    return jnp.where(x < 0.0, math.pi - r, r)


def _sun_factors(lat: Array, doy: Array) -> tuple[Array, Array, Array, Array, Array]:
    """(sin φ, cos φ, sin δ, cos δ, d_r) at the shapes of ``lat`` and ``doy`` (FAO-56 eqs. 22–24)."""
    phi = jnp.deg2rad(lat)
    delta = solar_declination(doy)
    return jnp.sin(phi), jnp.cos(phi), jnp.sin(delta), jnp.cos(delta), inverse_relative_distance(doy)


def computed_apart(fn, *args):
    """``fn(*args)``, evaluated as its own XLA computation so that it is materialised at its own shape.

    XLA fuses an elementwise producer into its consumers, and where the consumer broadcasts it (latitude
    ``(1, site)`` against a ``(time, site)`` day) the fused loop recomputes the producer for every output element:
    the sines of latitude and declination then cost as much as with full-shaped fields (measured 10.5 vs 1.5 ms for
    the extraterrestrial radiation of 10,000 sites × 365 days, 1 CPU core; `jax.lax.optimization_barrier` did not
    prevent it). Wrapping the producer in a `jax.lax.cond` whose two branches are the same function makes it a
    separate computation that fusion cannot enter; the predicate is data-dependent so that it is not folded away,
    and the value never depends on it."""
    leaf = jnp.ravel(jax.tree_util.tree_leaves(args)[0])[0]
    return jax.lax.cond(leaf == leaf, fn, fn, *args)


def _sunset_geometry(lat: ArrayLike, doy: ArrayLike) -> tuple[Array, Array, Array, Array, Array]:
    """(ω_s, sin ω_s, sin φ sin δ, cos φ cos δ, d_r) with one arccos and no tangents.

    cos ω_s = −tan φ tan δ = −(sin φ sin δ)/(cos φ cos δ) (FAO-56 eq. 25), clipped to [−1, 1] so that polar
    day (ω_s = π) and polar night (ω_s = 0) are defined, and sin ω_s = √(1 − cos² ω_s). Written with sines and
    cosines only because trigonometric functions dominate the cost of a model day; the arccos is
    `arccos_polynomial` (Abramowitz & Stegun 4.4.46, equal to ``jnp.arccos`` within 1e-7 rad). The sines and
    cosines are taken at the shapes of ``lat`` and ``doy`` (`computed_apart`, when the two broadcast against each
    other): with latitude per site and day of year per day, two per site and three per day instead of five per
    site-day.
    """
    lat, doy = jnp.asarray(lat, jnp.float32), jnp.asarray(doy, jnp.float32)
    if math.prod(jnp.broadcast_shapes(lat.shape, doy.shape)) > max(lat.size, doy.size):  # broadcast: apart
        sin_phi, cos_phi, sin_delta, cos_delta, dr = computed_apart(_sun_factors, lat, doy)
    else:  # same shapes: one fused pass is cheapest
        sin_phi, cos_phi, sin_delta, cos_delta, dr = _sun_factors(lat, doy)
    ss = sin_phi * sin_delta
    cc = cos_phi * cos_delta
    ok = jnp.abs(cc) > 1e-9  # only at the poles themselves
    cos_ws = jnp.clip(jnp.where(ok, -ss / jnp.where(ok, cc, 1.0), -jnp.sign(ss)), -1.0, 1.0)
    sin2 = 1.0 - cos_ws * cos_ws
    pos = sin2 > 0.0
    sin_ws = jnp.where(pos, jnp.sqrt(jnp.where(pos, sin2, 1.0)), 0.0)
    return arccos_polynomial(cos_ws), sin_ws, ss, cc, dr


def sunset_hour_angle(lat: ArrayLike, doy: ArrayLike) -> Array:
    """Sunset hour angle ω_s = arccos(−tan φ tan δ) (rad). FAO-56 eq. 25. lat: degrees north.

    The argument is clipped to [−1, 1] so polar day (ω_s = π) and polar night (ω_s = 0) are defined.
    """
    return _sunset_geometry(lat, doy)[0]


def daylength(lat: ArrayLike, doy: ArrayLike) -> Array:
    """Daylight hours N = 24 ω_s / π (h). FAO-56 eq. 34."""
    return C.HOURS_PER_DAY / math.pi * sunset_hour_angle(lat, doy)


def extraterrestrial_radiation(lat: ArrayLike, doy: ArrayLike) -> Array:
    """Daily extraterrestrial radiation R_a (MJ m-2 d-1). FAO-56 eq. 21.

    R_a = (24·60/π) G_sc d_r [ω_s sin φ sin δ + cos φ cos δ sin ω_s]
    """
    ws, sin_ws, ss, cc, dr = _sunset_geometry(lat, doy)
    minutes_per_day = C.HOURS_PER_DAY * 60.0
    geometry = ws * ss + cc * sin_ws
    return minutes_per_day / math.pi * C.SOLAR_CONSTANT_MJ_PER_MIN * dr * geometry


def clear_sky_radiation(lat: ArrayLike, doy: ArrayLike, elevation: ArrayLike = 0.0) -> Array:
    """Clear-sky shortwave R_so = (0.75 + 2e-5 z) R_a (MJ m-2 d-1), z elevation (m). FAO-56 eq. 37."""
    return (0.75 + 2.0e-5 * jnp.asarray(elevation)) * extraterrestrial_radiation(lat, doy)


#: Lower bound of the relative shortwave R_s/R_so (ASCE-EWRI 2005, eq. 18: 0.3 ≤ R_s/R_so ≤ 1.0) (–).
RS_RSO_MIN = 0.3


def net_radiation(
    sw_in: ArrayLike,
    tmin: ArrayLike,
    tmax: ArrayLike,
    ea: ArrayLike,
    lat: ArrayLike,
    doy: ArrayLike,
    albedo: ArrayLike,
    elevation: ArrayLike = 0.0,
) -> Array:
    """Daily net radiation R_n = R_ns − R_nl (MJ m-2 d-1). FAO-56 eqs. 38–40.

    R_ns = (1 − α) R_s;  R_nl = σ (T_max,K⁴ + T_min,K⁴)/2 (0.34 − 0.14 √e_a) (1.35 R_s/R_so − 0.35)

    Args:
        sw_in: shortwave (W m-2, 24-h mean). tmin, tmax: °C. ea: actual vapour pressure (kPa).
        lat: degrees north. doy: day of year. albedo: surface albedo (–). elevation: m.
    R_s/R_so is limited to [0.3, 1]: FAO-56 (eq. 39 notes) bounds it only above (R_s/R_so ≤ 1); the ASCE-EWRI
    (2005) standardised reference-ET equation (Allen et al., eq. 18) bounds it to 0.3 ≤ R_s/R_so ≤ 1.0, so the
    cloudiness factor 1.35 R_s/R_so − 0.35 stays in [0.055, 1] and net longwave stays a loss on overcast days.
    Where R_so vanishes (polar night) the ratio is taken as 0.5 (double-``where``).
    """
    rs = jnp.asarray(sw_in) * MJ_PER_DAY_PER_W
    rso = clear_sky_radiation(lat, doy, elevation)
    has_sun = rso > 1e-3
    ratio = jnp.where(has_sun, rs / jnp.where(has_sun, rso, 1.0), 0.5)
    ratio = jnp.clip(ratio, RS_RSO_MIN, 1.0)
    tmax_k = jnp.asarray(tmax) + C.KELVIN_OFFSET
    tmin_k = jnp.asarray(tmin) + C.KELVIN_OFFSET
    ea_safe = jnp.maximum(jnp.asarray(ea), 0.0)
    rnl = (
        C.STEFAN_BOLTZMANN_MJ_DAY
        * (tmax_k**4 + tmin_k**4)
        / 2.0
        * (0.34 - 0.14 * jnp.sqrt(ea_safe + 1e-12))
        * (1.35 * ratio - 0.35)
    )
    return (1.0 - albedo) * rs - rnl


def par_from_sw(sw_in: ArrayLike) -> Array:
    """Photosynthetic photon flux density from shortwave: PPFD = 0.45 · 4.57 · SW (µmol m-2 s-1).

    sw_in in W m-2; the result is on the same time basis (a 24-h mean gives a 24-h mean PPFD).
    """
    return jnp.asarray(sw_in) * C.PAR_FRACTION_OF_SW * C.PAR_UMOL_PER_J


def fapar_from_lai(lai: ArrayLike, k_ext: ArrayLike) -> Array:
    """Fraction of absorbed PAR from Beer's law, fAPAR = 1 − exp(−k LAI) (–). Monsi & Saeki (1953)."""
    lai = jnp.asarray(lai)
    return -jnp.expm1(-jnp.asarray(k_ext) * jnp.where(lai >= 0.0, lai, 0.0))
