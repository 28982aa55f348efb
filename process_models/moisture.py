"""Soil hydraulic parameters and soil-water scalars: water limits, storage, relative water, the moisture
scalar of heterotrophic respiration and the FAO-56 water-stress coefficient, as pure elementwise kernels.

Water amounts are mm of water over the root zone, volumetric contents m3 m-3, fractions dimensionless.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models.parameters import ParameterSpec

# =============================================================================================
# Parameter specifications (shared by water.Bucket and the soil-respiration variants)
# =============================================================================================

_SAXTON_RAWLS = (
    "Saxton & Rawls (2006) Soil Sci. Soc. Am. J. 70:1569, Table 3 (texture-class θ_1500 / θ_33 / θ_S, %v: "
    "sand 5/10/46, loam 14/28/46, silt loam 11/31/48, silt 6/30/48, clay loam 22/36/48, clay 30/42/50)"
)

POROSITY_SPEC = ParameterSpec(
    name="porosity",
    default=0.45,
    lower=0.30,
    upper=0.70,
    units="m3 m-3",
    reference=(
        "Clapp & Hornberger (1978) Water Resour. Res. 14:601, Table 2 (texture means 0.395 sand – 0.492 silty "
        f"clay; loam 0.451); {_SAXTON_RAWLS}: θ_S 0.43–0.52; organic-rich topsoils reach ~0.68 "
        "(Harvard Forest, Davidson et al. 2012 Glob. Change Biol. 18:371)"
    ),
    description="total porosity = saturated volumetric water content θ_S",
)

FC_FRAC_SPEC = ParameterSpec(
    name="fc_frac",
    default=0.6,
    lower=0.15,
    upper=0.90,
    units="-",
    reference=f"{_SAXTON_RAWLS}: θ_33/θ_S = 0.22 (sand) … 0.61 (loam) … 0.84 (clay)",
    description="field capacity (θ at −33 kPa) as a fraction of porosity",
)

WP_FRAC_SPEC = ParameterSpec(
    name="wp_frac",
    default=0.5,
    lower=0.15,
    upper=0.80,
    units="-",
    reference=f"{_SAXTON_RAWLS}: θ_1500/θ_33 = 0.20 (silt) … 0.50 (loam) … 0.71 (clay)",
    description="wilting point (θ at −1500 kPa) as a fraction of field capacity",
)

ROOT_DEPTH_SPEC = ParameterSpec(
    name="root_depth",
    default=1000.0,
    lower=200.0,
    upper=4000.0,
    units="mm",
    reference=(
        "Allen et al. (1998) FAO-56, Table 22 (maximum effective rooting depth: maize 1.0–1.7 m, soybean "
        "0.6–1.3 m, grass 0.5–1.5 m); Canadell et al. (1996) Oecologia 108:583 (maximum rooting depth of "
        "grasslands 2.6 ± 0.2 m, temperate forests 3.9 ± 0.4 m)"
    ),
    transform="loglogit",
    description="depth of soil the roots draw water from (bucket depth)",
)

#: The soil hydraulic parameters: θ_wp = wp_frac·fc_frac·porosity < θ_fc = fc_frac·porosity < porosity by
#: construction, for every value inside the bounds.
SOIL_SPECS: tuple[ParameterSpec, ...] = (POROSITY_SPEC, FC_FRAC_SPEC, WP_FRAC_SPEC, ROOT_DEPTH_SPEC)

#: Coefficients (a, b, c, d) of the water-filled-pore-space response of decomposition, coarse-texture set
#: of Parton et al. (1996) as used for decomposition by DAYCENT (Kelly et al. 2000, J. Geophys. Res. 105:
#: 20093, Fig. 2b). The fine-texture set (0.60, 1.27, 0.0012, 2.84) has c > 0 and is undefined below
#: WFPS = c, so the coarse set is the default.
WFPS_RESPONSE_COEFFICIENTS = (0.55, 1.70, -0.007, 3.22)


# =============================================================================================
# Kernels
# =============================================================================================


def _unit_interval(x: Array) -> Array:
    """x limited to [0, 1] with ``where`` so that the gradient passes unchanged at x = 0 or 1 exactly
    (``jnp.clip`` would split it at a tie). Guards rounding and out-of-range observations only."""
    return jnp.where(x < 0.0, 0.0, jnp.where(x > 1.0, 1.0, x))


def soil_water_limits(porosity: ArrayLike, fc_frac: ArrayLike, wp_frac: ArrayLike) -> tuple[Array, Array]:
    """Field capacity θ_fc = fc_frac · φ and wilting point θ_wp = wp_frac · θ_fc (both m3 m-3).

    Args:
        porosity: φ (m3 m-3). fc_frac: θ_fc/φ (–). wp_frac: θ_wp/θ_fc (–).
    With fractions in (0, 1), θ_wp < θ_fc < φ holds by construction. Texture values: Saxton & Rawls (2006).
    """
    theta_fc = jnp.asarray(porosity) * jnp.asarray(fc_frac)
    return theta_fc, theta_fc * jnp.asarray(wp_frac)


def water_holding_capacity(theta: Mapping[str, ArrayLike]) -> Array:
    """Plant-available water-holding capacity (total available water, TAW) of the root zone (mm):

    whc = (θ_fc − θ_wp) · z_r = φ · fc_frac · (1 − wp_frac) · z_r     (FAO-56, Allen et al. 1998, eq. 82)

    Reads ``porosity`` (m3 m-3), ``fc_frac``, ``wp_frac`` (–) and ``root_depth`` z_r (mm) from ``theta``.
    Written in the product form so that it stays > 0 (and accurate) for every in-bound parameter set.
    """
    return (
        jnp.asarray(theta["porosity"])
        * jnp.asarray(theta["fc_frac"])
        * (1.0 - jnp.asarray(theta["wp_frac"]))
        * jnp.asarray(theta["root_depth"])
    )


def relative_water(w: ArrayLike, whc: ArrayLike) -> Array:
    """Relative plant-available water w_rel = w / whc, limited to [0, 1] (–).

    Args:
        w: plant-available water (mm, above wilting point). whc: water-holding capacity (mm), > 0.
    A non-positive ``whc`` gives 0 (double-``where``; never reached with in-bound parameters).
    """
    w = jnp.asarray(w)
    whc = jnp.asarray(whc)
    ok = whc > 0.0
    return jnp.where(ok, _unit_interval(w / jnp.where(ok, whc, 1.0)), 0.0)


def volumetric_water(w: ArrayLike, theta: Mapping[str, ArrayLike]) -> Array:
    """Volumetric soil water content of the root zone, swc = θ_wp + w / z_r (m3 m-3).

    Args:
        w: plant-available water (mm). theta: reads ``porosity``, ``fc_frac``, ``wp_frac``, ``root_depth`` (mm).
    For 0 ≤ w ≤ whc this lies in [θ_wp, θ_fc]: the bucket holds no water below wilting point (unavailable,
    but present) and drains everything above field capacity within the day.
    """
    _, theta_wp = soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
    return theta_wp + jnp.asarray(w) / jnp.asarray(theta["root_depth"])


def water_filled_pore_space(swc: ArrayLike, porosity: ArrayLike) -> Array:
    """Water-filled pore space WFPS = swc / φ, limited to [0, 1] (–). swc, φ in m3 m-3 (φ > 0)."""
    return _unit_interval(jnp.asarray(swc) / jnp.asarray(porosity))


def rh_moisture_response(
    swc: ArrayLike,
    porosity: ArrayLike,
    coefficients: tuple[float, float, float, float] = WFPS_RESPONSE_COEFFICIENTS,
) -> Array:
    """Moisture scalar of heterotrophic respiration from water-filled pore space W = swc/φ (–):

    f(W) = ((W − b)/(a − b))^(d (b − a)/(a − c)) · ((W − c)/(a − c))^d

    Peaks at f(a) = 1 with a = 0.55 (≈ field capacity of medium soils, where Linn & Doran 1984 Soil Sci.
    Soc. Am. J. 48:1267 found maximal aerobic microbial activity near 60 % WFPS), falls towards 0 as the
    soil dries (substrate diffusion limits) and to ≈ 0.25 at saturation (O2 limits). Functional form and
    coefficients: Parton et al. (1996) Global Biogeochem. Cycles 10:401; used for decomposition in DAYCENT
    (Kelly et al. 2000, J. Geophys. Res. 105:20093); review of such curves: Moyano, Manzoni & Chenu (2013)
    Soil Biol. Biochem. 59:72.

    Args:
        swc: volumetric soil water content (m3 m-3). porosity: φ (m3 m-3).
        coefficients: (a, b, c, d); the default coarse-texture set keeps both bases > 0 on W ∈ [0, 1].
    Written as exp of a sum of logs of positive numbers (W is limited to [0, 1] first): finite value and
    gradient everywhere.
    """
    a, b, c, d = coefficients
    wfps = water_filled_pore_space(swc, porosity)
    exponent = d * (b - a) / (a - c)
    return jnp.exp(exponent * jnp.log((wfps - b) / (a - b)) + d * jnp.log((wfps - c) / (a - c)))


def fao56_water_stress(wrel: ArrayLike, p: ArrayLike) -> Array:
    """Water-stress coefficient K_s of FAO-56 (Allen et al. 1998, eq. 84), in [0, 1] (1 = unstressed):

    K_s = (TAW − D_r) / ((1 − p) TAW)  if D_r > p·TAW, else 1;   with w_rel = 1 − D_r/TAW this is
    K_s = min(w_rel / (1 − p), 1).

    Args:
        wrel: relative plant-available water (–, 0 at wilting point, 1 at field capacity).
        p: fraction of TAW that can be depleted before stress (–, in (0, 1); FAO-56 Table 22).
    Linear from 0 at wilting point to 1 at depletion p·TAW; ``where`` keeps the gradient one-sided at the kink.
    """
    wrel = jnp.asarray(wrel)
    threshold = 1.0 - jnp.asarray(p)
    safe = jnp.where(threshold > 0.0, threshold, 1.0)
    return _unit_interval(jnp.where(wrel >= threshold, 1.0, wrel / safe))
