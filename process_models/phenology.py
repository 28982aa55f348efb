"""Thermal time and the leaf area of natural vegetation: growing degree days, prescribed LAI, and the
growing-season index of Jolly, Nemani & Running (2005).

Crops have their own development and leaf area (`process_models.crop`); they share `gdd_increment`.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from process_models.forcing import Met
from process_models.parameters import ParameterSpec, Specs
from process_models.radiation import daylength

# --- kernels ----------------------------------------------------------------------------------------


def gdd_increment(tmin: ArrayLike, tmax: ArrayLike, tbase: ArrayLike, tupper: ArrayLike) -> Array:
    """Daily growing degree days (°C d), McMaster & Wilhelm (1997) **method 2** with an upper threshold:

        T'_x = min(max(T_x, T_base), T_upper)   for T_x ∈ {T_min, T_max}
        GDD  = (T'_max + T'_min) / 2 − T_base

    i.e. each of the daily extremes is floored at the base and capped at the upper threshold *before*
    averaging (the "corn heat unit" / 86–50 °F convention; AMS Glossary of Meteorology). Method 1 would
    instead floor the daily mean; the two differ when only T_min is below T_base (method 2 accumulates
    more). Result ∈ [0, T_upper − T_base].

    Args:
        tmin, tmax: daily minimum and maximum air temperature (°C).
        tbase: base temperature (°C), e.g. 10 °C for maize and soybean.
        tupper: upper threshold (°C), e.g. 30 °C for maize; must be ≥ ``tbase``.
    Reference: McMaster & Wilhelm (1997) Agric. For. Meteorol. 87:291–300, "method 2".
    """
    tmin_eff = jnp.clip(jnp.asarray(tmin), tbase, tupper)
    tmax_eff = jnp.clip(jnp.asarray(tmax), tbase, tupper)
    return 0.5 * (tmin_eff + tmax_eff) - tbase


def linear_ramp(x: ArrayLike, low: ArrayLike, span: ArrayLike) -> Array:
    """Indicator ramp of Jolly et al. (2005): 0 for x ≤ low, 1 for x ≥ low + span, linear between (–).

    ``span`` > 0 (a bounded parameter). Units of x, low and span are the same.
    """
    return jnp.clip((jnp.asarray(x) - low) / span, 0.0, 1.0)


def daily_growing_season_index(
    tmin: ArrayLike,
    vpd: ArrayLike,
    photoperiod: ArrayLike,
    tmin_low: ArrayLike,
    tmin_span: ArrayLike,
    vpd_low: ArrayLike,
    vpd_span: ArrayLike,
    photoperiod_low: ArrayLike,
    photoperiod_span: ArrayLike,
) -> Array:
    """Daily growing-season index iGSI = iTmin · iVPD · iPhoto ∈ [0, 1] (–).

        iTmin  = ramp(T_min; T_low, ΔT)             rises from 0 at T_low to 1 at T_low + ΔT
        iVPD   = 1 − ramp(VPD; VPD_low, ΔVPD)       falls from 1 at VPD_low to 0 at VPD_low + ΔVPD
        iPhoto = ramp(photoperiod; P_low, ΔP)

    Args:
        tmin: daily minimum air temperature (°C). vpd: daily mean vapour-pressure deficit (hPa).
        photoperiod: daylength (h). The thresholds share their argument's units (°C, hPa, h).
    Reference: Jolly, Nemani & Running (2005) Glob. Change Biol. 11:619–632, eqs. 1–4 and Fig. 1
    (T_min −2…5 °C, VPD 900…4100 Pa = 9…41 hPa, photoperiod 10…11 h).
    """
    i_tmin = linear_ramp(tmin, tmin_low, tmin_span)
    i_vpd = 1.0 - linear_ramp(vpd, vpd_low, vpd_span)
    i_photo = linear_ramp(photoperiod, photoperiod_low, photoperiod_span)
    return i_tmin * i_vpd * i_photo


def ema_weight(window_days: int) -> float:
    """Smoothing weight α = 2 / (N + 1) of the exponential moving average that stands in for an N-day
    running mean: both give past days a mean age of (N − 1)/2 days (for N = 21: α = 1/11, mean age 10 d,
    e-folding time 1/−ln(1 − α) ≈ 10.5 d). Hunter (1986) J. Qual. Technol. 18:203 (the EWMA–SMA
    equivalence)."""
    return 2.0 / (window_days + 1.0)


# --- modules ----------------------------------------------------------------------------------------


class Phenology(eqx.Module):
    """Abstract leaf-area model for natural vegetation: a state carried from day to day and the day's
    green LAI (m2 m-2). Variants are final subclasses; `vmap` at the call site for many sites."""

    parameter_specs: eqx.AbstractClassVar[Specs]
    #: True: ``__call__`` also takes the day's relative soil water ``wrel`` (`WaterLimitedGSI`)
    water_limited: ClassVar[bool] = False
    #: True: reads the site's evergreen canopy fraction ``met.evergreen`` (`EvergreenGSI`)
    evergreen: ClassVar[bool] = False

    @abc.abstractmethod
    def init_state(self) -> PyTree:
        """The state before the first day: a pytree of float scalars."""

    @abc.abstractmethod
    def drivers(self, theta, met: Met) -> PyTree:
        """The state-independent terms of the day (computed for every day before the time loop by
        `process_models.simulate`); ``__call__`` takes them as ``drivers`` (None: computed on the spot)."""

    @abc.abstractmethod
    def __call__(self, theta, state: PyTree, met: Met, drivers=None) -> tuple[PyTree, Array]:
        """Advance one day. ``theta``: physical parameters; returns (new state, LAI m2 m-2)."""


class PrescribedLAI(Phenology):
    """LAI read from the forcing (``met.lai``, e.g. MODIS MCD15 or tower LAI); no parameters.

    The state is a dummy float scalar carried unchanged so that every phenology has the same interface.
    """

    parameter_specs: ClassVar[Specs] = ()

    def init_state(self) -> Array:
        return jnp.zeros(())

    def drivers(self, theta, met: Met) -> Array:
        """The day's LAI, max(met.lai, 0) (m2 m-2)."""
        if met.lai is None:
            raise ValueError(
                "PrescribedLAI needs met.lai (m2 m-2); build the forcing with make_met(..., lai=...) or "
                "use GrowingSeasonIndex"
            )
        return jnp.maximum(met.lai, 0.0)

    def __call__(self, theta, state: Array, met: Met, drivers=None) -> tuple[Array, Array]:
        return state, self.drivers(theta, met) if drivers is None else drivers


# Specs of the growing-season index. Defaults are Jolly et al. (2005)'s global thresholds; the bounds
# leave room for biome-specific recalibration such as Stöckli et al. (2008, 2011).
_JOLLY = "Jolly, Nemani & Running (2005) Glob. Change Biol. 11:619, Fig. 1"
_STOCKLI = (
    "Stöckli et al. (2008) J. Geophys. Res. 113:G04021 (biome recalibration of the GSI thresholds)"
)

GSI_TMIN_LOW_SPEC = ParameterSpec(
    name="gsi_tmin_low",
    default=-2.0,
    lower=-8.0,
    upper=4.0,
    units="degC",
    reference=f"{_JOLLY}: TMmin = −2 °C; range: {_STOCKLI}",
    description="daily minimum temperature below which iTmin = 0",
)
GSI_TMIN_SPAN_SPEC = ParameterSpec(
    name="gsi_tmin_span",
    default=7.0,
    lower=2.0,
    upper=15.0,
    units="degC",
    reference=f"{_JOLLY}: TMmax − TMmin = 5 − (−2) = 7 °C; range: {_STOCKLI}",
    description="width of the iTmin ramp (iTmin = 1 at gsi_tmin_low + gsi_tmin_span)",
)
GSI_VPD_LOW_SPEC = ParameterSpec(
    name="gsi_vpd_low",
    default=9.0,
    lower=2.0,
    upper=20.0,
    units="hPa",
    reference=f"{_JOLLY}: VPDmin = 900 Pa; range: {_STOCKLI}",
    description="vapour-pressure deficit below which iVPD = 1",
)
GSI_VPD_SPAN_SPEC = ParameterSpec(
    name="gsi_vpd_span",
    default=32.0,
    lower=8.0,
    upper=60.0,
    units="hPa",
    reference=f"{_JOLLY}: VPDmax − VPDmin = 4100 − 900 Pa = 32 hPa; range: {_STOCKLI}",
    description="width of the iVPD ramp (iVPD = 0 at gsi_vpd_low + gsi_vpd_span)",
)
GSI_PHOTOPERIOD_LOW_SPEC = ParameterSpec(
    name="gsi_photoperiod_low",
    default=10.0,
    lower=6.0,
    upper=13.0,
    units="h",
    reference=f"{_JOLLY}: Photomin = 10 h; range: {_STOCKLI}",
    description="daylength below which iPhoto = 0",
)
GSI_PHOTOPERIOD_SPAN_SPEC = ParameterSpec(
    name="gsi_photoperiod_span",
    default=1.0,
    lower=0.25,
    upper=4.0,
    units="h",
    reference=f"{_JOLLY}: Photomax − Photomin = 11 − 10 h = 1 h; range: {_STOCKLI}",
    description="width of the iPhoto ramp (iPhoto = 1 at gsi_photoperiod_low + gsi_photoperiod_span)",
)
LAI_MAX_SPEC = ParameterSpec(
    name="lai_max",
    default=5.0,
    lower=0.5,
    upper=10.0,
    units="m2 m-2",
    reference=(
        "Asner, Scurlock & Hicke (2003) Glob. Ecol. Biogeogr. 12:191 (global LAI compilation: biome mean "
        "maxima ≈ 1.5–7, individual sites up to ≈ 9)"
    ),
    description="green LAI at GSI = 1",
)
LAI_MIN_FRACTION_SPEC = ParameterSpec(
    name="lai_min_fraction",
    default=0.1,
    lower=0.0,
    upper=0.95,
    units="-",
    reference=(
        "lai_min = lai_min_fraction · lai_max; LAI = lai_min + (lai_max − lai_min)·GSI, the linear GSI-to-LAI "
        "scaling of prognostic GSI phenology (e.g. Stöckli et al. 2008 JGR 113:G04021); ≈ 0 for deciduous "
        "and grass canopies, → 1 for evergreen ones"
    ),
    description="dormant-season LAI as a fraction of lai_max (keeps lai_min ≤ lai_max by construction)",
)


class GSIState(NamedTuple):
    """State of `GrowingSeasonIndex`: an exponential moving average of iGSI and the sum of its weights,
    so that the running mean is ``ema / weight`` (bias-corrected: exact from the first day on)."""

    ema: Array  #: Σ α (1 − α)^k iGSI_{t−k} (–)
    weight: Array  #: Σ α (1 − α)^k = 1 − (1 − α)^n after n days (–)


class GrowingSeasonIndex(Phenology):
    """Growing-season index phenology (Jolly, Nemani & Running 2005) mapped to LAI.

        iGSI = f(T_min) · f(VPD) · f(photoperiod)                        (`daily_growing_season_index`)
        GSI  = running mean of iGSI over ``window_days`` (21 d in Jolly et al. 2005)
        LAI  = lai_min + (lai_max − lai_min) · GSI,   lai_min = lai_min_fraction · lai_max

    The 21-day running mean is computed as an **exponential moving average** with α = 2/(N + 1) = 1/11
    (same mean age of past days, 10 d, as the 21-day boxcar; e-folding time ≈ 10.5 d), which needs a
    two-scalar state instead of a 21-day buffer. The average is bias-corrected (divided by the sum of
    its weights), so a run may start in any season: on the first day GSI = iGSI. Photoperiod is the
    astronomical daylength of FAO-56 (`radiation.daylength`). VPD is in hPa (Jolly et al. use Pa).
    """

    window_days: int = eqx.field(static=True, default=21)

    parameter_specs: ClassVar[Specs] = (
        LAI_MAX_SPEC,
        LAI_MIN_FRACTION_SPEC,
        GSI_TMIN_LOW_SPEC,
        GSI_TMIN_SPAN_SPEC,
        GSI_VPD_LOW_SPEC,
        GSI_VPD_SPAN_SPEC,
        GSI_PHOTOPERIOD_LOW_SPEC,
        GSI_PHOTOPERIOD_SPAN_SPEC,
    )

    def init_state(self) -> GSIState:
        return GSIState(ema=jnp.zeros(()), weight=jnp.zeros(()))

    def daily_index(self, theta, met: Met) -> Array:
        """The day's iGSI ∈ [0, 1] (–)."""
        return daily_growing_season_index(
            met.tmin,
            met.vpd,
            daylength(met.lat, met.doy),
            theta["gsi_tmin_low"],
            theta["gsi_tmin_span"],
            theta["gsi_vpd_low"],
            theta["gsi_vpd_span"],
            theta["gsi_photoperiod_low"],
            theta["gsi_photoperiod_span"],
        )

    def gsi(self, state: GSIState) -> Array:
        """Running-mean GSI ∈ [0, 1] held by a state (0 before the first day)."""
        ok = state.weight > 0
        return jnp.where(ok, state.ema / jnp.where(ok, state.weight, 1.0), 0.0)

    def drivers(self, theta, met: Met) -> Array:
        """The day's iGSI (`daily_index`), which depends on the drivers only."""
        return self.daily_index(theta, met)

    def __call__(self, theta, state: GSIState, met: Met, drivers=None) -> tuple[GSIState, Array]:
        igsi = self.daily_index(theta, met) if drivers is None else drivers
        return self._advance(theta, state, igsi)

    def _advance(self, theta, state: GSIState, igsi: Array) -> tuple[GSIState, Array]:
        """The running mean takes the day's index; LAI follows from it."""
        alpha = ema_weight(self.window_days)
        state = GSIState(
            ema=(1.0 - alpha) * state.ema + alpha * igsi,
            weight=(1.0 - alpha) * state.weight + alpha,
        )
        lai_max = theta["lai_max"]
        lai_min = theta["lai_min_fraction"] * lai_max
        return state, lai_min + (lai_max - lai_min) * self.gsi(state)


class EvergreenGSI(GrowingSeasonIndex):
    """`GrowingSeasonIndex` for canopies that are partly or wholly evergreen: the evergreen share e of the canopy
    (``met.evergreen``, 0–1 per site, from the vegetation type) keeps its leaves all year, the rest follows the
    growing-season index:

        LAI = e · lai_max + (1 − e) · [lai_min + (lai_max − lai_min) · GSI]

    so e = 0 is `GrowingSeasonIndex` exactly and e = 1 a constant LAI = lai_max. An evergreen canopy's seasonal
    photosynthesis then comes from the light-use-efficiency scalars of minimum temperature and VPD (the MOD17
    algorithm's assumption for every biome, Running et al. 2004 BioScience 54:547; needles and evergreen
    broadleaves live several years, so their leaf area changes little through the year), not from a leaf area
    that the index would shed in a dry or cold season (tropical evergreen forests keep, and often raise, their
    photosynthesis in the dry season: Saleska et al. 2003 Science 302:1554). e comes from the site's IGBP class
    (`kgml.compare.suites.evergreen_fraction`); a NaN or a missing field is an error, never a default."""

    evergreen: ClassVar[bool] = True

    def __call__(self, theta, state: GSIState, met: Met, drivers=None) -> tuple[GSIState, Array]:
        if met.evergreen is None:
            raise ValueError("EvergreenGSI needs the evergreen canopy fraction met.evergreen (0–1 per site): give the "
                             "dataset an 'evergreen' site variable (kgml.compare.suites.evergreen_fraction maps IGBP "
                             "classes)")
        state, lai = super().__call__(theta, state, met, drivers)
        e = jnp.asarray(met.evergreen)  # 0–1, checked where the data enter (`kgml.data.drivers.met_from_dataset`)
        return state, e * theta["lai_max"] + (1.0 - e) * lai


GSI_WATER_LOW_SPEC = ParameterSpec(
    name="gsi_water_low",
    default=0.0,
    lower=-0.3,
    upper=0.6,
    units="-",
    reference=(
        "a water-availability factor in the growing-season index as in LPJmL-GSI (Forkel et al. 2014 "
        "Biogeosciences 11:7025, there a logistic of the water stress), written as Jolly's linear ramp of the "
        "relative plant-available water; default 0 (iWater = 0 only at the wilting point); below 0 the ramp "
        "keeps some greenness even in an empty bucket"
    ),
    description="relative plant-available water at or below which iWater = 0",
)

GSI_WATER_SPAN_SPEC = ParameterSpec(
    name="gsi_water_span",
    default=0.2,
    lower=0.05,
    upper=1.0,
    units="-",
    reference=(
        "width of the iWater ramp; default 0.2 (leaves unlimited above 20 % of the available water, a choice "
        "that keeps the default close to Jolly et al. 2005), up to 1 (limited everywhere below field capacity)"
    ),
    description="width of the iWater ramp (iWater = 1 at gsi_water_low + gsi_water_span)",
)


class WaterLimitedGSI(GrowingSeasonIndex):
    """`GrowingSeasonIndex` whose daily index is also limited by soil water, for water-limited (dryland)
    phenology that Jolly et al. (2005)'s temperature, VPD and daylength alone do not capture:

        iGSI_w = iTmin · iVPD · iPhoto · iWater,   iWater = ramp(w_rel; gsi_water_low, gsi_water_span)

    w_rel is the bucket's relative plant-available water at the start of the day (yesterday's, so the loop
    stays explicit); the caller passes it as ``wrel`` (`process_models.ecosystem.NaturalEcosystem` does).
    Form: the water-availability factor of LPJmL-GSI (Forkel et al. 2014 Biogeosciences 11:7025)."""

    parameter_specs: ClassVar[Specs] = (*GrowingSeasonIndex.parameter_specs, GSI_WATER_LOW_SPEC, GSI_WATER_SPAN_SPEC)
    water_limited: ClassVar[bool] = True

    def __call__(self, theta, state: GSIState, met: Met, drivers=None, wrel=None) -> tuple[GSIState, Array]:
        if wrel is None:
            raise ValueError("WaterLimitedGSI needs the day's relative plant-available water wrel (0–1)")
        igsi = self.daily_index(theta, met) if drivers is None else drivers
        return self._advance(theta, state, igsi * linear_ramp(wrel, theta["gsi_water_low"], theta["gsi_water_span"]))
