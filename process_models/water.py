"""Soil-water bucket with Priestley–Taylor evapotranspiration: one root-zone store of plant-available water,
filled by rain, emptied by supply-limited evapotranspiration, spilling what exceeds field capacity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C
from process_models import radiation
from process_models.forcing import Met, saturation_vapour_pressure
from process_models.moisture import (
    SOIL_SPECS,
    fao56_water_stress,
    relative_water,
    soil_water_limits,
    volumetric_water,
    water_holding_capacity,
)
from process_models.parameters import ParameterSpec

# =============================================================================================
# Kernels
# =============================================================================================


def _smaller(a: Array, b: Array) -> Array:
    """min(a, b) whose gradient goes wholly to one side at a tie (``jnp.minimum`` splits it in halves)."""
    return jnp.where(a <= b, a, b)


def slope_vapour_pressure_curve(t: ArrayLike) -> Array:
    """Slope of the saturation vapour pressure curve Δ = 4098 e°(T) / (T + 237.3)² (kPa °C-1), T in °C.

    Allen et al. (1998) FAO-56, eq. 13.
    """
    t = jnp.asarray(t)
    return 4098.0 * saturation_vapour_pressure(t) / (t + 237.3) ** 2


def psychrometric_constant(patm: ArrayLike) -> Array:
    """Psychrometric constant γ = c_p P / (ε λ) (kPa °C-1), patm P in Pa. FAO-56 eq. 8 (= 0.665e-3 P[kPa])."""
    p_kpa = jnp.asarray(patm) / C.PA_PER_KPA
    return C.CP_AIR_MJ * p_kpa / (C.EPSILON_WATER_AIR * C.LATENT_HEAT_VAPORISATION)


def actual_vapour_pressure(tair: ArrayLike, vpd: ArrayLike) -> Array:
    """Actual vapour pressure e_a = max(e°(T_air) − VPD, 0) (kPa); tair °C, vpd hPa.

    The daily-mean form consistent with `Met.vpd` (a daily-mean deficit at the daily-mean temperature);
    e° from FAO-56 eq. 11.
    """
    vpd_kpa = jnp.asarray(vpd) * C.PA_PER_HPA / C.PA_PER_KPA
    return jnp.maximum(saturation_vapour_pressure(tair) - vpd_kpa, 0.0)


#: Taylor coefficients of sin(πx/2) = Σ_k (−1)^k (π/2)^(2k+1) x^(2k+1) / (2k+1)!, k = 0…5 (Abramowitz & Stegun
#: 1964, eq. 4.3.65); on 0 ≤ x ≤ 1 the first omitted term bounds the error: (π/2)^13 / 13! < 6e-8.
_SIN_HALF_PI_TAYLOR = tuple((-1) ** k * (math.pi / 2) ** (2 * k + 1) / math.factorial(2 * k + 1) for k in range(6))


def sin_half_pi(x: ArrayLike) -> Array:
    """sin(πx/2) for 0 ≤ x ≤ 1 by its Taylor polynomial of degree 11 (|error| < 6e-8, relative error < 6e-8 as
    well since the series is exact at 0): a handful of multiply-adds where XLA's CPU sine inside a ``lax.scan``
    body costs ~10 ns per element (measured, `benchmarks/process_speed.py`). Inputs outside [0, 1] are the
    caller's to clip."""
    x = jnp.asarray(x)
    return x * radiation.polynomial(x * x, _SIN_HALF_PI_TAYLOR)


def soil_evaporation_efficiency(wrel: ArrayLike) -> Array:
    """Soil-evaporation efficiency β = ¼ (1 − cos(π w_rel))² (–), 1 for a full bucket, 0 for an empty one.

    The β-function of Lee & Pielke (1992) J. Appl. Meteorol. 31:480 (there in θ/θ_fc), written in
    relative plant-available water w_rel. It falls much faster than the transpiration supply as the root zone
    dries (β(0.5) = 0.25), standing in for the stage-2 drying of the surface layer (Ritchie 1972 Water Resour.
    Res. 8:1204; FAO-56 K_r, eq. 74) that one bucket cannot resolve. Smooth, with zero slope at both ends.

    Computed as sin⁴(π w_rel / 2) — the same function, since 1 − cos 2u = 2 sin² u — with `sin_half_pi`: this
    runs inside the time loop every site-day. ``wrel`` in [0, 1] (`relative_water` clips it).
    """
    s = sin_half_pi(wrel)
    s2 = s * s
    return s2 * s2


def priestley_taylor_pet(tair: ArrayLike, rn: ArrayLike, patm: ArrayLike, alpha: ArrayLike) -> Array:
    """Priestley–Taylor potential evapotranspiration (mm d-1), ≥ 0:

    PET = α · Δ/(Δ + γ) · (R_n − G) / λ,   G = 0 for a daily step (FAO-56 eq. 42)

    Args:
        tair: daily mean air temperature (°C). rn: net radiation (MJ m-2 d-1). patm: air pressure (Pa).
        alpha: Priestley–Taylor coefficient (–; 1.26 for wet surfaces).
    Δ from FAO-56 eq. 13, γ from eq. 8, λ = 2.45 MJ kg-1 (1 kg m-2 = 1 mm of water).
    Reference: Priestley & Taylor (1972) Mon. Weather Rev. 100:81. Days of net radiative loss give 0
    (dew and condensation are ignored).
    """
    delta = slope_vapour_pressure_curve(tair)
    gamma = psychrometric_constant(patm)
    equilibrium = delta / (delta + gamma) * jnp.asarray(rn) / C.LATENT_HEAT_VAPORISATION
    return jnp.maximum(jnp.asarray(alpha) * equilibrium, 0.0)


# =============================================================================================
# Parameter specifications
# =============================================================================================

PT_ALPHA_SPEC = ParameterSpec(
    name="pt_alpha",
    default=1.26,
    lower=0.8,
    upper=1.8,
    units="-",
    reference=(
        "Priestley & Taylor (1972) Mon. Weather Rev. 100:81 (1.26 over wet surfaces); ~0.7–1.7 across "
        "surfaces and dryness (Eichinger, Parlange & Stricker 1996 Water Resour. Res. 32:161); "
        "LPJ uses α_m = 1.391 (Gerten et al. 2004 J. Hydrol. 286:249)"
    ),
    description="Priestley–Taylor coefficient: PET over equilibrium evaporation",
)

ALBEDO_SPEC = ParameterSpec(
    name="albedo",
    default=0.23,
    lower=0.05,
    upper=0.35,
    units="-",
    reference=(
        "Allen et al. (1998) FAO-56 eq. 38 (0.23 for the grass reference); Oke (1987) Boundary Layer "
        "Climates, Table 1.1 (grass 0.16–0.26, crops 0.18–0.25, deciduous forest 0.15–0.20, conifers 0.05–0.15)"
    ),
    description="shortwave albedo of the surface, for net radiation",
)

ET_SUPPLY_MAX_SPEC = ParameterSpec(
    name="et_supply_max",
    default=5.0,
    lower=1.0,
    upper=15.0,
    units="mm d-1",
    reference=(
        "Federer (1982) Water Resour. Res. 18:355 (supply = S_max · relative soil water); "
        "E_max = 5 mm d-1 in LPJ (Haxeltine & Prentice 1996 Global Biogeochem. Cycles 10:693; "
        "Sitch et al. 2003 Glob. Change Biol. 9:161; Gerten et al. 2004)"
    ),
    transform="loglogit",
    description="maximum transpiration supply rate of a full root zone",
)

DEPLETION_FRAC_SPEC = ParameterSpec(
    name="depletion_frac",
    default=0.5,
    lower=0.1,
    upper=0.8,
    units="-",
    reference=(
        "Allen et al. (1998) FAO-56, Table 22: p = 0.5 common (maize 0.55, soybean 0.50, grazing pasture "
        "0.6), 0.2–0.3 for shallow-rooted vegetables up to 0.7–0.8 for drought-tolerant crops"
    ),
    description="FAO-56 p: fraction of the water-holding capacity used before transpiration is stressed",
)


# =============================================================================================
# The bucket
# =============================================================================================


class WaterStep(NamedTuple):
    """One day of the bucket. Water in mm, fluxes in mm d-1 (all ≥ 0)."""

    w: Array  #: plant-available water after the day (mm), 0 <= w <= whc
    et: Array  #: actual evapotranspiration (mm d-1)
    drainage: Array  #: drainage + runoff leaving the bucket (mm d-1)
    swc: Array  #: volumetric soil water content after the day (m3 m-3)
    wrel: Array  #: relative plant-available water after the day (0-1)
    water_stress: Array  #: GPP stress scalar in [0, 1] (1 = unstressed), from fao56_water_stress


def _where_observed(theta: Mapping[str, Array], step: WaterStep, ok: Array, swc: Array, wrel: Array) -> WaterStep:
    """``step`` with swc, w_rel and the FAO-56 water stress of that w_rel where ``ok`` (an observation), the
    bucket's elsewhere (`Bucket.observed`, `Bucket.observed_rew`)."""
    stress = fao56_water_stress(wrel, theta["depletion_frac"])
    return step._replace(
        swc=jnp.where(ok, swc, step.swc),
        wrel=jnp.where(ok, wrel, step.wrel),
        water_stress=jnp.where(ok, stress, step.water_stress),
    )


class Bucket(eqx.Module):
    """Single-layer root-zone bucket with Priestley–Taylor demand and Federer supply limitation.

    One day, in this order (every step exact in the water balance):

    1. rain infiltrates: w_in = w + P (negative P is taken as 0; gaps (NaN) are the caller's to fill);
    2. PET (`priestley_taylor_pet`) from R_n of FAO-56 (`radiation.net_radiation`, albedo ``albedo``,
       e_a from `actual_vapour_pressure`);
    3. the available energy is split by the canopy cover f_v = 1 − exp(−k_ext LAI) (Beer's law, the same
       k_ext as photosynthesis; Ritchie 1972 Water Resour. Res. 8:1204 partitions PET the same way):
       transpiration T = min(f_v PET, S_max w_rel) — demand vs. root supply (Federer 1982; LPJ, Sitch et al.
       2003, Gerten et al. 2004); soil evaporation E_s = (1 − f_v) PET · β(w_rel), β from
       `soil_evaporation_efficiency` (Lee & Pielke 1992); w_rel = min(w_in/whc, 1). So ET ≤ PET always;
    4. ET cannot exceed the water present: ET = min(T + E_s, w_in);
    5. what exceeds the capacity drains (drainage and runoff together): w = min(w_in − ET, whc),
       drainage = (w_in − ET) − w.

    Hence w_new = w + P − ET − drainage to float rounding, 0 ≤ w_new ≤ whc exactly, ET ≥ 0, drainage ≥ 0.
    Reported ``swc``, ``wrel`` and ``water_stress`` describe the state the day ends with. No snow or frozen
    soil: winter precipitation infiltrates the same day.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        *SOIL_SPECS,
        PT_ALPHA_SPEC,
        ALBEDO_SPEC,
        ET_SUPPLY_MAX_SPEC,
        DEPLETION_FRAC_SPEC,
        radiation.K_EXT_SPEC,
    )

    def pet(self, theta: Mapping[str, Array], met: Met) -> Array:
        """Priestley–Taylor potential evapotranspiration of the day (mm d-1)."""
        ea = actual_vapour_pressure(met.tair, met.vpd)
        rn = radiation.net_radiation(met.sw_in, met.tmin, met.tmax, ea, met.lat, met.doy, theta["albedo"])
        return priestley_taylor_pet(met.tair, rn, met.patm, theta["pt_alpha"])

    def drivers(self, theta: Mapping[str, Array], met: Met) -> Array:
        """The state-independent part of the day: PET (mm d-1), with the sun's geometry and net radiation in it.
        `process_models.simulate` computes it for every day in one vectorised pass before the time loop."""
        return self.pet(theta, met)

    def balance(
        self, theta: Mapping[str, Array], w: Array, met: Met, lai: Array, drivers=None
    ) -> tuple[Array, Array, Array]:
        """Steps 1–5 of the day, the only part that needs yesterday's water: (w after the day (mm), ET (mm d-1),
        drainage (mm d-1)). ``drivers``: the day's PET from `drivers` (None: computed here)."""
        whc = water_holding_capacity(theta)
        precip = jnp.asarray(met.precip)
        w_in = jnp.asarray(w) + jnp.where(precip > 0.0, precip, 0.0)
        wrel_in = relative_water(w_in, whc)

        pet = self.pet(theta, met) if drivers is None else drivers
        cover = radiation.fapar_from_lai(lai, theta["k_ext"])
        transpiration = _smaller(cover * pet, theta["et_supply_max"] * wrel_in)
        soil_evaporation = (1.0 - cover) * pet * soil_evaporation_efficiency(wrel_in)
        et = _smaller(transpiration + soil_evaporation, w_in)

        w_after = w_in - et
        w_new = _smaller(w_after, whc)
        return w_new, et, w_after - w_new

    def state_of(self, theta: Mapping[str, Array], w: Array, et: Array, drainage: Array) -> WaterStep:
        """The day's `WaterStep` from its water balance: swc, w_rel and water stress follow from w alone."""
        wrel = relative_water(w, water_holding_capacity(theta))
        return WaterStep(
            w=w,
            et=et,
            drainage=drainage,
            swc=volumetric_water(w, theta),
            wrel=wrel,
            water_stress=fao56_water_stress(wrel, theta["depletion_frac"]),
        )

    def observed(self, theta: Mapping[str, Array], step: WaterStep, swc: Array) -> WaterStep:
        """``step`` with its soil-water state replaced by an observed volumetric content where there is one.

        ``swc``: measured θ (m3 m-3), NaN where not measured. Where finite, the reported ``swc`` is θ limited to
        [0, φ], w_rel = (θ − θ_wp)/(θ_fc − θ_wp) limited to [0, 1] (the FAO-56 relative available water,
        Allen et al. 1998 eq. 82–84, with θ_fc and θ_wp of `soil_water_limits` from the same soil parameters the
        bucket uses), and the water stress `fao56_water_stress` of that w_rel; elsewhere the bucket's. The water
        balance (w, ET, drainage) stays the bucket's: the observation drives the stress and moisture responses
        only, it does not nudge the store. A tower's sensor is usually shallow (SWC_F_MDS_1 at ≈ 5–10 cm, drier
        and faster than the root zone); the learned soil parameters (φ, fc_frac, wp_frac) then act as the
        sensor's stress calibration. NaN observations never reach a value or gradient (double ``where``).
        """
        swc = jnp.asarray(swc)
        ok = jnp.isfinite(swc)
        theta_fc, theta_wp = soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
        safe = jnp.where(ok, swc, theta_fc)
        porosity = jnp.asarray(theta["porosity"])
        swc_obs = jnp.where(safe < 0.0, 0.0, jnp.where(safe > porosity, porosity, safe))
        wrel_obs = relative_water(safe - theta_wp, theta_fc - theta_wp)
        return _where_observed(theta, step, ok, swc_obs, wrel_obs)

    def observed_rew(self, theta: Mapping[str, Array], step: WaterStep, rew: Array) -> WaterStep:
        """``step`` with its relative water replaced by an observed relative extractable water where there is one.

        ``rew``: REW = (θ − θ_min)/(θ_max − θ_min) of a soil-moisture record (0–1; θ_min, θ_max its lowest and
        highest values), NaN where not measured — the sensor-independent wetness index of Granier et al. (1999)
        Ecol. Model. 116:269 and Granier et al. (2007) Agric. For. Meteorol. 143:123 (there drought starts
        below REW 0.4). Where finite, w_rel = REW, the water stress is `fao56_water_stress` of it (its threshold
        1 − p learned, as for the bucket) and the reported ``swc`` = θ_wp + REW (θ_fc − θ_wp) of the model's own
        soil (what the Rh moisture response reads); elsewhere the bucket's. Water balance unchanged."""
        rew = jnp.asarray(rew)
        ok = jnp.isfinite(rew)
        safe = jnp.where(ok, rew, 1.0)
        wrel_obs = jnp.where(safe < 0.0, 0.0, jnp.where(safe > 1.0, 1.0, safe))
        theta_fc, theta_wp = soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
        return _where_observed(theta, step, ok, theta_wp + wrel_obs * (theta_fc - theta_wp), wrel_obs)

    def __call__(self, theta: Mapping[str, Array], w: Array, met: Met, lai: Array, drivers=None) -> WaterStep:
        """Advance the bucket by one day. w: plant-available water at the start (mm); lai: m2 m-2."""
        return self.state_of(theta, *self.balance(theta, w, met, lai, drivers))

    def initial_water(self, theta: Mapping[str, Array]) -> Array:
        """A full bucket: w = whc (mm)."""
        return water_holding_capacity(theta)
