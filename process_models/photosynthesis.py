"""Daily canopy gross primary production (gC m-2 d-1): MOD17-like light-use efficiency, big-leaf Farquhar C3,
Collatz C4 and the P-model, as pure kernels and four final modules of the `Photosynthesis` family.

All variants absorb fAPAR = 1 − exp(−k LAI) of the PPFD derived from shortwave and multiply GPP by β ∈ [0, 1].
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C
from process_models import radiation
from process_models.forcing import Met
from process_models.parameters import ParameterSpec
from process_models.temperature import arrhenius_response, peaked_arrhenius_response

# =============================================================================================
# Constants of the individual models (physical constants live in `constants.py`)
# =============================================================================================

# --- Farquhar C3 -----------------------------------------------------------------------------

#: Kattge & Knorr (2007) Plant Cell Environ. 30:1176 (values as in pyrealm `arrhenius_vcmax["kattge_knorr"]`):
#: Vcmax activation energy H_a (J mol-1).
KATTGE_KNORR_VCMAX_HA = 71513.0
#: Kattge & Knorr (2007): Vcmax deactivation energy H_d (J mol-1).
KATTGE_KNORR_VCMAX_HD = 200000.0
#: Kattge & Knorr (2007): Vcmax entropy ΔS = a + b·T_growth, intercept a (J mol-1 K-1) ...
KATTGE_KNORR_VCMAX_DS_INTERCEPT = 668.39
#: ... and slope b (J mol-1 K-1 °C-1).
KATTGE_KNORR_VCMAX_DS_SLOPE = -1.07
#: Kattge & Knorr (2007): Jmax activation energy H_a (J mol-1).
KATTGE_KNORR_JMAX_HA = 49884.0
#: Kattge & Knorr (2007): Jmax deactivation energy H_d (J mol-1).
KATTGE_KNORR_JMAX_HD = 200000.0
#: Kattge & Knorr (2007): Jmax entropy intercept a (J mol-1 K-1) ...
KATTGE_KNORR_JMAX_DS_INTERCEPT = 659.70
#: ... and slope b (J mol-1 K-1 °C-1).
KATTGE_KNORR_JMAX_DS_SLOPE = -0.75
#: Growth (acclimation) temperature at which the Kattge & Knorr entropy terms are evaluated (°C). The daily model
#: keeps no memory of past temperatures, so acclimation is not represented: ΔS is fixed at T_growth = 25 °C.
KATTGE_KNORR_GROWTH_TEMPERATURE = 25.0

#: Maximum quantum yield of photosystem II Φ_PSII (mol e- per mol photon absorbed by PSII). Bonan et al. (2011)
#: J. Geophys. Res. 116:G02014 and the CLM5 Technical Note (Lawrence et al. 2018, photosynthesis chapter): 0.85.
PHI_PSII = 0.85
#: Fraction of absorbed photons reaching photosystem II (–); the other half drives PSI. Same sources (0.5).
FRACTION_ABSORBED_TO_PSII = 0.5
#: Curvature θ_J of the non-rectangular hyperbola J(I_PSII, Jmax) (–). Bonan et al. (2011); CLM5 (θ_PSII = 0.7).
THETA_J = 0.7
#: Curvature θ_cj of the Rubisco/RuBP-regeneration co-limitation (–). Collatz et al. (1991) Agric. For. Meteorol.
#: 54:107; CLM5 (θ_cj = 0.98 for C3).
THETA_C3_COLIMITATION = 0.98
#: Electrons per carboxylation in the RuBP-regeneration-limited rate W_j = J/4 (ci − Γ*)/(ci + 2Γ*) (–).
#: von Caemmerer & Farquhar (1981) Planta 153:376; von Caemmerer (2000) eq. 2.23.
ELECTRONS_PER_CARBOXYLATION = 4.0

# --- Collatz C4 ------------------------------------------------------------------------------

#: Collatz, Ribas-Carbo & Berry (1992) Aust. J. Plant Physiol. 19:519, Appendix B eq. 5B: Q10 of Vmax and k (–).
COLLATZ_Q10 = 2.0
#: Collatz et al. (1992) eq. 5B: low-temperature inhibition, 1 + exp(s_low (T_low − T)) with s_low (K-1) ...
COLLATZ_S_LOW = 0.3
#: ... and T_low (°C).
COLLATZ_T_LOW = 13.0
#: Collatz et al. (1992) eq. 5B: high-temperature inhibition, 1 + exp(s_high (T − T_high)) with s_high (K-1) ...
COLLATZ_S_HIGH = 0.3
#: ... and T_high (°C).
COLLATZ_T_HIGH = 36.0
#: Collatz et al. (1992) Table 2: curvature θ of the Rubisco/light co-limitation (eq. 2B) (–).
COLLATZ_THETA = 0.83
#: Collatz et al. (1992) Table 2: curvature β of the (Rubisco/light)/CO2 co-limitation (eq. 3B) (–).
COLLATZ_BETA = 0.93
#: Reference temperature of the Collatz Q10 functions (°C).
COLLATZ_TREF = 25.0

# --- P-model ---------------------------------------------------------------------------------

#: Γ* at 25 °C and standard pressure P0 (Pa); scaled by p/P0. Stocker et al. (2020) GMD 13:1545 / rpmodel and
#: pyrealm `bernacchi_gs.gs25_0` (= 42.75 µmol mol-1 of Bernacchi et al. 2001 at P0, rounded).
PMODEL_GAMMA_STAR_25_PA = 4.332
#: K_c at 25 °C (Pa), a fixed partial pressure: Bernacchi et al. (2001) 404.9 µmol mol-1 at the 98 716 Pa of their
#: site. Stocker et al. (2020) / rpmodel / pyrealm `bernacchi_kmm.kc25`.
PMODEL_KC_25_PA = 39.97
#: K_o at 25 °C (Pa): Bernacchi et al. (2001) 278.4 mmol mol-1 at 98 716 Pa. Stocker et al. (2020) / pyrealm.
PMODEL_KO_25_PA = 27480.0
#: Ratio of unit costs of carboxylation and transpiration β (–). Stocker et al. (2020), Table 1 / pyrealm: 146.
PMODEL_BETA_C3 = 146.0
#: Unit cost of maintaining electron-transport capacity c* (–). Wang et al. (2017) Nature Plants 3:734: 0.41.
PMODEL_CSTAR = 0.41
#: Ratio of the diffusivities of water vapour and CO2 in air (–), 1.6. Prentice et al. (2014) Ecol. Lett. 17:82.
DIFFUSIVITY_RATIO_H2O_CO2 = 1.6
#: Temperature dependence of the intrinsic quantum yield φ0(T)/φ0 = a + b T + c T² (T in °C): (a, b, c).
#: Stocker et al. (2020) eq. 20 after Bernacchi et al. (2003); rpmodel `ftemp_kphio`, pyrealm `kphio_C3`.
PMODEL_KPHIO_TEMPERATURE_COEFFICIENTS = (0.352, 0.022, -0.00034)
#: Temperature range (°C) over which the water viscosity is evaluated; outside it the viscosity of the nearest
#: bound is used. The Fisher–Dial density polynomial is unstable below about −45 °C; pyrealm accepts −25 to 80 °C.
VISCOSITY_TEMPERATURE_RANGE = (-25.0, 80.0)

#: Fisher & Dial (1975) Tumlirz-equation coefficients for the density of water (ascending powers of T in °C):
#: λ (bar cm3 g-1), P0 (bar) and V∞ (cm3 g-1). Values as in pyrealm `CoreConst.fisher_dial_*` and rpmodel.
FISHER_DIAL_LAMBDA = (1788.316, 21.55053, -0.4695911, 0.003096363, -7.341182e-06)
FISHER_DIAL_P0 = (5918.499, 58.05267, -1.1253317, 0.0066123869, -1.4661625e-05)
FISHER_DIAL_VINF = (
    0.6980547, -0.0007435626, 3.704258e-05, -6.315724e-07, 9.829576e-09,
    -1.197269e-10, 1.005461e-12, -5.437898e-15, 1.69946e-17, -2.295063e-20,
)
#: Huber et al. (2009) J. Phys. Chem. Ref. Data 38:101 viscosity of water: reference temperature (K), density
#: (kg m-3) and viscosity (Pa s), Table 1 ...
HUBER_T_STAR = 647.096
HUBER_RHO_STAR = 322.0
HUBER_MU_STAR = 1.0e-6
#: ... coefficients H_i of the dilute-gas term μ0 (eq. 11, Table 2) ...
HUBER_H_I = (1.67752, 2.20462, 0.6366564, -0.241605)
#: ... and H_ij of the residual term μ1 (eq. 12, Table 3): row j = power of (ρ̄ − 1), column i = power of (1/T̄ − 1).
HUBER_H_IJ = (
    (0.520094, 0.0850895, -1.08374, -0.289555, 0.0, 0.0),
    (0.222531, 0.999115, 1.88797, 1.26613, 0.0, 0.120573),
    (-0.281378, -0.906851, -0.772479, -0.489837, -0.25704, 0.0),
    (0.161913, 0.257399, 0.0, 0.0, 0.0, 0.0),
    (-0.0325372, 0.0, 0.0, 0.0698452, 0.0, 0.0),
    (0.0, 0.0, 0.0, 0.0, 0.00872102, 0.0),
    (0.0, 0.0, 0.0, -0.00435673, 0.0, -0.000593264),
)
#: Temperature (°C) of the standard state of the relative viscosity η* = η(T, p)/η(25 °C, P0).
VISCOSITY_REFERENCE_TEMPERATURE = 25.0

_BAR_PER_PA = 1.0e-5
_CM3_PER_G_TO_KG_PER_M3 = 1.0e3  # density (kg m-3) = 1e3 / specific volume (cm3 g-1)
_HUBER_MU0_SCALE = 1.0e2  # μ0 = 100 √T̄ / Σ H_i / T̄^i (Huber et al. 2009, eq. 11)


# =============================================================================================
# Numerical helpers
# =============================================================================================


def _safe_divide(num: ArrayLike, den: ArrayLike, fallback: ArrayLike = 0.0) -> Array:
    """num / den where den > 0, else ``fallback`` (double-``where``: finite value and gradient)."""
    den = jnp.asarray(den)
    ok = den > 0.0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)


def _safe_sqrt(x: ArrayLike) -> Array:
    """√x for x > 0, 0 otherwise, with a finite (zero) gradient at and below 0."""
    x = jnp.asarray(x)
    ok = x > 0.0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def _polynomial(x: ArrayLike, coefficients: tuple[float, ...]) -> Array:
    """Σ_k c_k x^k by Horner's scheme, coefficients in ascending powers."""
    x = jnp.asarray(x)
    out = jnp.zeros_like(x) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def _polynomial_of_terms(x: Array, coefficients: list[Array]) -> Array:
    """Σ_i c_i x^i with array coefficients c_i (Horner)."""
    out = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def colimitation(a: ArrayLike, b: ArrayLike, theta: ArrayLike) -> Array:
    """Smaller root x of the co-limitation quadratic θ x² − (a + b) x + a b = 0, for rates a, b ≥ 0 (same units).

    x = 2ab / (a + b + √((a + b)² − 4θab)), the cancellation-free form of ((a + b) − √…)/(2θ). For θ → 1 it tends
    to min(a, b); for θ < 1 it is a smooth minimum below both. Used for the non-rectangular hyperbola of electron
    transport (Farquhar & Wong 1984; von Caemmerer 2000 eq. 2.14), the C3 Rubisco/RuBP co-limitation
    (Collatz et al. 1991, eq. A2) and the two C4 co-limitations (Collatz et al. 1992, eqs. 2B–3B).
    Negative inputs are treated as 0; x = 0 when a = b = 0 (finite gradient there).
    """
    a = jnp.maximum(jnp.asarray(a), 0.0)
    b = jnp.maximum(jnp.asarray(b), 0.0)
    s = a + b
    disc = (a - b) ** 2 + 4.0 * (1.0 - theta) * a * b  # = s² − 4θab ≥ 0
    return _safe_divide(2.0 * a * b, s + _safe_sqrt(disc))


# =============================================================================================
# Kernels shared by the variants
# =============================================================================================


def big_leaf_scaling(lai: ArrayLike, k_ext: ArrayLike) -> Array:
    """Canopy integral of a leaf capacity that declines with cumulative LAI like light, Λ = (1 − e^(−k L))/k (m2 m-2).

    Sellers et al. (1992) Remote Sens. Environ. 42:187 ("big leaf"): with Vcmax(ℓ) = Vcmax,top e^(−kℓ) and
    top-leaf absorbed PAR = k·I0, canopy photosynthesis is leaf photosynthesis evaluated at Λ·Vcmax,top and at the
    canopy-absorbed PAR fAPAR·I0 = k·Λ·I0 (all rate laws used here are homogeneous of degree 1 in capacity and light).
    lai: leaf area index (m2 m-2). k_ext: extinction coefficient (–).
    """
    return radiation.fapar_from_lai(lai, k_ext) / jnp.asarray(k_ext)


def daytime_ppfd(ppfd_24h: ArrayLike, daylength_h: ArrayLike) -> Array:
    """Mean PPFD over daylight hours, PPFD_day = PPFD_24h · 24 / N (µmol m-2 s-1); 0 when N = 0 (polar night).

    ppfd_24h: 24-hour mean PPFD (µmol m-2 s-1). daylength_h: daylength N (h), `radiation.daylength`.
    Evaluating a concave light response at the daytime mean rather than integrating it over the diurnal course
    overestimates daily photosynthesis somewhat (Jensen's inequality); this is the usual daily big-leaf closure.
    """
    return _safe_divide(jnp.asarray(ppfd_24h) * C.HOURS_PER_DAY, daylength_h)


def umol_per_m2_s_to_gc_per_m2(rate: ArrayLike, seconds: ArrayLike) -> Array:
    """A CO2 flux (µmol m-2 s-1) sustained for ``seconds`` (s) → carbon mass (gC m-2): rate · s · M_C · 1e-6."""
    return jnp.asarray(rate) * seconds * C.GC_PER_UMOL_CO2


# =============================================================================================
# 1. MOD17-like light-use efficiency
# =============================================================================================


def linear_ramp(x: ArrayLike, x_zero: ArrayLike, x_one: ArrayLike) -> Array:
    """Linear ramp scalar f = clip((x − x0)/(x1 − x0), 0, 1) (–): 0 at x0, 1 at x1, either direction.

    The MOD17 attenuation scalars (Running et al. 2004, BioScience 54:547; Running & Zhao 2015, MOD17 User's
    Guide). Requires x1 ≠ x0 (guaranteed by the non-overlapping parameter bounds).
    """
    return jnp.clip((jnp.asarray(x) - x_zero) / (jnp.asarray(x_one) - x_zero), 0.0, 1.0)


def mod17_gpp(
    sw_in: ArrayLike,
    tmin: ArrayLike,
    vpd: ArrayLike,
    fapar: ArrayLike,
    lue_max: ArrayLike,
    tmin_close: ArrayLike,
    tmin_open: ArrayLike,
    vpd_open: ArrayLike,
    vpd_close: ArrayLike,
) -> Array:
    """MOD17 daily GPP = ε_max · f(Tmin) · f(VPD) · fAPAR · PAR (gC m-2 d-1).

    f(Tmin) ramps from 0 at ``tmin_close`` to 1 at ``tmin_open``; f(VPD) from 1 at ``vpd_open`` to 0 at
    ``vpd_close``; PAR = 0.45 · SW (MJ m-2 d-1). Running et al. (2004) BioScience 54:547; Running & Zhao (2015)
    MOD17 User's Guide (Collection 6).

    Args:
        sw_in: shortwave radiation, 24-h mean (W m-2). tmin: daily minimum air temperature (°C).
        vpd: vapour-pressure deficit (hPa; MOD17 uses the daytime mean, here the daily mean is what `Met` carries).
        fapar: fraction of absorbed PAR (–). lue_max: ε_max (gC MJ-1 of APAR).
        tmin_close, tmin_open: °C. vpd_open, vpd_close: hPa (the BPLUT lists Pa: 1 hPa = 100 Pa).
    """
    return mod17_gpp_per_fapar(sw_in, tmin, vpd, lue_max, tmin_close, tmin_open, vpd_open, vpd_close) * fapar


def mod17_gpp_per_fapar(
    sw_in: ArrayLike,
    tmin: ArrayLike,
    vpd: ArrayLike,
    lue_max: ArrayLike,
    tmin_close: ArrayLike,
    tmin_open: ArrayLike,
    vpd_open: ArrayLike,
    vpd_close: ArrayLike,
) -> Array:
    """MOD17 GPP per unit fAPAR, ε_max · f(Tmin) · f(VPD) · PAR (gC m-2 d-1): the part of `mod17_gpp` that depends
    on the drivers and parameters only (not on the canopy), so that a simulation computes it for every day at once
    before the time loop. Arguments and references as `mod17_gpp`.
    """
    par_mj = jnp.asarray(sw_in) * C.PAR_FRACTION_OF_SW * radiation.MJ_PER_DAY_PER_W
    f_tmin = linear_ramp(tmin, tmin_close, tmin_open)
    f_vpd = linear_ramp(vpd, vpd_close, vpd_open)
    return lue_max * f_tmin * f_vpd * jnp.maximum(par_mj, 0.0)


# =============================================================================================
# 2. Rubisco kinetics (Bernacchi et al. 2001) and big-leaf Farquhar C3
# =============================================================================================


def _arrhenius_at(value_25: ArrayLike, tair: ArrayLike, ha: float) -> Array:
    return value_25 * arrhenius_response(jnp.asarray(tair) + C.KELVIN_OFFSET, ha)


def bernacchi_gamma_star(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Photorespiratory CO2 compensation point Γ* (Pa) = 42.75e-6 · p · exp(H_a (T − 298.15)/(R 298.15 T)).

    Bernacchi et al. (2001) Plant Cell Environ. 24:253, Table 1: the published mole fraction at 25 °C is turned
    into a partial pressure with the site pressure (as CLM5 does, Lawrence et al. 2018). With Γ*, K_c, K_o, O and
    ci all proportional to p, the C3 rate is independent of air pressure; the P-model instead keeps K_c and K_o
    as fixed partial pressures (`pmodel_kmm`), as Stocker et al. (2020) do.
    tair: leaf (≈ air) temperature (°C). patm: air pressure (Pa).
    """
    return _arrhenius_at(C.BERNACCHI_GAMMA_STAR_25 * jnp.asarray(patm), tair, C.BERNACCHI_HA_GAMMA_STAR)


def bernacchi_kc(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Michaelis constant of Rubisco for CO2, K_c (Pa) = 404.9e-6 · p · f_Arr(T; 79 430 J mol-1).

    Bernacchi et al. (2001), Table 1. tair: °C. patm: Pa.
    """
    return _arrhenius_at(C.BERNACCHI_KC_25 * jnp.asarray(patm), tair, C.BERNACCHI_HA_KC)


def bernacchi_ko(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Michaelis constant of Rubisco for O2, K_o (Pa) = 278.4e-3 · p · f_Arr(T; 36 380 J mol-1).

    Bernacchi et al. (2001), Table 1. tair: °C. patm: Pa.
    """
    return _arrhenius_at(C.BERNACCHI_KO_25 * jnp.asarray(patm), tair, C.BERNACCHI_HA_KO)


def kattge_knorr_vcmax_response(tair: ArrayLike) -> Array:
    """Vcmax(T)/Vcmax(25 °C) (–): peaked Arrhenius with Kattge & Knorr (2007) H_a, H_d and ΔS(T_growth = 25 °C).

    Kattge & Knorr (2007) Plant Cell Environ. 30:1176; tair in °C.
    """
    ds = KATTGE_KNORR_VCMAX_DS_INTERCEPT + KATTGE_KNORR_VCMAX_DS_SLOPE * KATTGE_KNORR_GROWTH_TEMPERATURE
    return peaked_arrhenius_response(
        jnp.asarray(tair) + C.KELVIN_OFFSET, KATTGE_KNORR_VCMAX_HA, KATTGE_KNORR_VCMAX_HD, ds
    )


def kattge_knorr_jmax_response(tair: ArrayLike) -> Array:
    """Jmax(T)/Jmax(25 °C) (–): peaked Arrhenius with Kattge & Knorr (2007) values, T_growth = 25 °C."""
    ds = KATTGE_KNORR_JMAX_DS_INTERCEPT + KATTGE_KNORR_JMAX_DS_SLOPE * KATTGE_KNORR_GROWTH_TEMPERATURE
    return peaked_arrhenius_response(
        jnp.asarray(tair) + C.KELVIN_OFFSET, KATTGE_KNORR_JMAX_HA, KATTGE_KNORR_JMAX_HD, ds
    )


def farquhar_c3_rate(
    vcmax: ArrayLike,
    jmax: ArrayLike,
    apar: ArrayLike,
    ci: ArrayLike,
    gamma_star: ArrayLike,
    kc: ArrayLike,
    ko: ArrayLike,
    o2: ArrayLike,
) -> Array:
    """Gross C3 assimilation (net of photorespiration, before dark respiration) A (µmol m-2 s-1).

    Farquhar, von Caemmerer & Berry (1980) Planta 149:78 as in von Caemmerer (2000), eqs. 2.20 and 2.23:

        W_c = Vcmax (ci − Γ*)⁺ / (ci + K_c (1 + O/K_o))                   Rubisco-limited
        J   = smaller root of θ_J J² − (I₂ + Jmax) J + I₂ Jmax = 0,  I₂ = ½ Φ_PSII · APAR
        W_j = J/4 · (ci − Γ*)⁺ / (ci + 2Γ*)                               RuBP-regeneration-limited
        A   = smaller root of θ_cj A² − (W_c + W_j) A + W_c W_j = 0       (Collatz et al. 1991)

    Args:
        vcmax, jmax: carboxylation and electron-transport capacity at leaf temperature (µmol m-2 s-1).
        apar: absorbed PPFD (µmol m-2 s-1). ci, gamma_star, kc, ko, o2: partial pressures (Pa).
    Any consistent area basis (leaf or, for the big leaf, ground) works: A is homogeneous of degree 1 in
    (vcmax, jmax, apar).
    """
    drawdown = jnp.maximum(jnp.asarray(ci) - gamma_star, 0.0)
    w_c = vcmax * drawdown / (ci + kc * (1.0 + o2 / ko))
    i_psii = FRACTION_ABSORBED_TO_PSII * PHI_PSII * jnp.asarray(apar)
    j = colimitation(i_psii, jmax, THETA_J)
    w_j = j / ELECTRONS_PER_CARBOXYLATION * drawdown / (ci + 2.0 * gamma_star)
    return colimitation(w_c, w_j, THETA_C3_COLIMITATION)


class C3Climate(NamedTuple):
    """The drivers-only terms of the big-leaf C3 model for one day (`farquhar_c3_climate`)."""

    vcmax_response: Array  #: Vcmax(T)/Vcmax(25 °C) (–), `kattge_knorr_vcmax_response`
    jmax_response: Array  #: Jmax(T)/Jmax(25 °C) (–), `kattge_knorr_jmax_response`
    ppfd_day: Array  #: mean PPFD over daylight hours (µmol m-2 s-1), `daytime_ppfd`
    ca: Array  #: ambient CO2 partial pressure co2 · 1e-6 · p (Pa)
    gamma_star: Array  #: Γ* (Pa), `bernacchi_gamma_star`
    kc: Array  #: K_c (Pa), `bernacchi_kc`
    ko: Array  #: K_o (Pa), `bernacchi_ko`
    o2: Array  #: O2 partial pressure 0.209476 · p (Pa)
    daylight_s: Array  #: daylength in seconds (s)


def farquhar_c3_climate(
    tair: ArrayLike, ppfd_24h: ArrayLike, daylength_h: ArrayLike, co2: ArrayLike, patm: ArrayLike
) -> C3Climate:
    """Every term of `farquhar_c3_canopy_gpp` that depends on the drivers alone (temperature responses, Rubisco
    kinetics, daytime light, partial pressures), vectorised over any common shape; arguments as there."""
    patm = jnp.asarray(patm)
    return C3Climate(
        vcmax_response=kattge_knorr_vcmax_response(tair),
        jmax_response=kattge_knorr_jmax_response(tair),
        ppfd_day=daytime_ppfd(ppfd_24h, daylength_h),
        ca=jnp.asarray(co2) * C.MOL_PER_UMOL * patm,
        gamma_star=bernacchi_gamma_star(tair, patm),
        kc=bernacchi_kc(tair, patm),
        ko=bernacchi_ko(tair, patm),
        o2=C.O2_MOLE_FRACTION * patm,
        daylight_s=jnp.asarray(daylength_h) * C.SECONDS_PER_HOUR,
    )


def farquhar_c3_canopy_gpp(
    tair: ArrayLike,
    ppfd_24h: ArrayLike,
    daylength_h: ArrayLike,
    co2: ArrayLike,
    patm: ArrayLike,
    lai: ArrayLike,
    k_ext: ArrayLike,
    vcmax25: ArrayLike,
    jmax_vcmax_ratio: ArrayLike,
    ci_ratio: ArrayLike,
) -> Array:
    """Daily big-leaf C3 GPP (gC m-2 d-1) from `farquhar_c3_rate`.

    Big leaf (Sellers et al. 1992): Vcmax = Λ·vcmax25·f_V(T), Jmax = Λ·r_JV·vcmax25·f_J(T) with Λ =
    `big_leaf_scaling`; APAR = fAPAR · PPFD_day with PPFD_day = `daytime_ppfd`; ci = χ·ca, ca = co2·1e-6·p;
    Γ*, K_c, K_o from Bernacchi et al. (2001) at the air temperature (leaf = air); O = 0.209476·p.
    GPP = A · N · 3600 s · M_C (N daylength, h).

    Args:
        tair: °C. ppfd_24h: 24-h mean PPFD (µmol m-2 s-1). daylength_h: h. co2: ppm. patm: Pa.
        lai: m2 m-2. k_ext: –. vcmax25: top-leaf Vcmax at 25 °C (µmol m-2 s-1). jmax_vcmax_ratio: Jmax25/Vcmax25 (–).
        ci_ratio: χ = ci/ca (–).
    """
    climate = farquhar_c3_climate(tair, ppfd_24h, daylength_h, co2, patm)
    return farquhar_c3_canopy_gpp_of_climate(climate, lai, k_ext, vcmax25, jmax_vcmax_ratio, ci_ratio)


def farquhar_c3_canopy_gpp_of_climate(
    climate: C3Climate,
    lai: ArrayLike,
    k_ext: ArrayLike,
    vcmax25: ArrayLike,
    jmax_vcmax_ratio: ArrayLike,
    ci_ratio: ArrayLike,
) -> Array:
    """`farquhar_c3_canopy_gpp` from the day's precomputed `C3Climate` (gC m-2 d-1); the canopy and parameter
    arguments as there."""
    scaling = big_leaf_scaling(lai, k_ext)
    fapar = radiation.fapar_from_lai(lai, k_ext)
    vcmax = scaling * vcmax25 * climate.vcmax_response
    jmax = scaling * jmax_vcmax_ratio * vcmax25 * climate.jmax_response
    apar = fapar * climate.ppfd_day
    ci = ci_ratio * climate.ca
    rate = farquhar_c3_rate(vcmax, jmax, apar, ci, climate.gamma_star, climate.kc, climate.ko, climate.o2)
    return umol_per_m2_s_to_gc_per_m2(rate, climate.daylight_s)


# =============================================================================================
# 3. Collatz C4
# =============================================================================================


def collatz_q10_response(tair: ArrayLike) -> Array:
    """Q10 factor of the Collatz C4 model, 2^((T − 25)/10) (–); tair in °C. Collatz et al. (1992) eq. 5B."""
    return jnp.exp(math.log(COLLATZ_Q10) * (jnp.asarray(tair) - COLLATZ_TREF) / 10.0)


def collatz_vmax_response(tair: ArrayLike) -> Array:
    """Vmax(T)/Vmax(25 °C) for C4 (–) with the low/high-temperature inhibition of Collatz et al. (1992) eq. 5B:

        f(T) = 2^((T − 25)/10) / [(1 + exp(0.3 (13 − T))) (1 + exp(0.3 (T − 36)))],  T in °C.

    Note f(25 °C) = 0.94, not 1: Vmax is the uninhibited rate at 25 °C, as in the paper.
    """
    t = jnp.asarray(tair)
    low = 1.0 + jnp.exp(COLLATZ_S_LOW * (COLLATZ_T_LOW - t))
    high = 1.0 + jnp.exp(COLLATZ_S_HIGH * (t - COLLATZ_T_HIGH))
    return collatz_q10_response(t) / (low * high)


def collatz_c4_rate(
    vmax: ArrayLike, alpha: ArrayLike, k: ArrayLike, apar: ArrayLike, ci_mole_fraction: ArrayLike
) -> Array:
    """Gross C4 assimilation A (µmol m-2 s-1), Collatz, Ribas-Carbo & Berry (1992) eqs. 2B–3B:

        M = smaller root of θ M² − (V_r + α Q) M + V_r α Q = 0          Rubisco / light co-limitation
        A = smaller root of β A² − (M + k c_i/P) A + M k c_i/P = 0      CO2 (PEP carboxylase) co-limitation

    with θ = 0.83, β = 0.93 (Table 2).

    Args:
        vmax: Rubisco capacity at leaf temperature V_r (µmol m-2 s-1). alpha: quantum efficiency (mol mol-1 of
        absorbed photons). k: initial slope of the CO2 response at leaf temperature (mol m-2 s-1), so that
        k · c_i/P (mol mol-1) · 1e6 is in µmol m-2 s-1. apar: absorbed PPFD Q (µmol m-2 s-1).
        ci_mole_fraction: c_i/P (mol mol-1).
    """
    v_light = jnp.asarray(alpha) * apar
    m = colimitation(vmax, v_light, COLLATZ_THETA)
    v_co2 = jnp.asarray(k) * ci_mole_fraction / C.MOL_PER_UMOL
    return colimitation(m, v_co2, COLLATZ_BETA)


class C4Climate(NamedTuple):
    """The drivers-only terms of the big-leaf C4 model for one day (`collatz_c4_climate`)."""

    vmax_response: Array  #: `collatz_vmax_response` (–)
    k_response: Array  #: `collatz_q10_response` (–)
    ppfd_day: Array  #: mean PPFD over daylight hours (µmol m-2 s-1), `daytime_ppfd`
    ca_mole_fraction: Array  #: co2 · 1e-6 (mol mol-1)
    daylight_s: Array  #: daylength in seconds (s)


def collatz_c4_climate(tair: ArrayLike, ppfd_24h: ArrayLike, daylength_h: ArrayLike, co2: ArrayLike) -> C4Climate:
    """Every term of `collatz_c4_canopy_gpp` that depends on the drivers alone, vectorised over any common shape;
    arguments as there."""
    return C4Climate(
        vmax_response=collatz_vmax_response(tair),
        k_response=collatz_q10_response(tair),
        ppfd_day=daytime_ppfd(ppfd_24h, daylength_h),
        ca_mole_fraction=jnp.asarray(co2) * C.MOL_PER_UMOL,
        daylight_s=jnp.asarray(daylength_h) * C.SECONDS_PER_HOUR,
    )


def collatz_c4_canopy_gpp(
    tair: ArrayLike,
    ppfd_24h: ArrayLike,
    daylength_h: ArrayLike,
    co2: ArrayLike,
    lai: ArrayLike,
    k_ext: ArrayLike,
    vmax25: ArrayLike,
    alpha: ArrayLike,
    k25: ArrayLike,
    ci_ratio: ArrayLike,
) -> Array:
    """Daily big-leaf C4 GPP (gC m-2 d-1) from `collatz_c4_rate`.

    V_r = Λ · vmax25 · `collatz_vmax_response`(T); k = Λ · k25 · 2^((T−25)/10) (Collatz et al. 1992 eq. 5B);
    Q = fAPAR · PPFD_day; c_i/P = χ · co2 · 1e-6; GPP = A · N · 3600 s · M_C. Λ = `big_leaf_scaling`
    (Sellers et al. 1992; SiB2, Sellers et al. 1996 J. Climate 9:676, scales the C4 capacities the same way).

    Args:
        tair: °C. ppfd_24h: µmol m-2 s-1. daylength_h: h. co2: ppm. lai: m2 m-2. k_ext: –.
        vmax25: µmol m-2 s-1 (leaf). alpha: mol mol-1. k25: mol m-2 s-1 (leaf). ci_ratio: ci/ca (–).
    """
    climate = collatz_c4_climate(tair, ppfd_24h, daylength_h, co2)
    return collatz_c4_canopy_gpp_of_climate(climate, lai, k_ext, vmax25, alpha, k25, ci_ratio)


def collatz_c4_canopy_gpp_of_climate(
    climate: C4Climate,
    lai: ArrayLike,
    k_ext: ArrayLike,
    vmax25: ArrayLike,
    alpha: ArrayLike,
    k25: ArrayLike,
    ci_ratio: ArrayLike,
) -> Array:
    """`collatz_c4_canopy_gpp` from the day's precomputed `C4Climate` (gC m-2 d-1); the other arguments as there."""
    scaling = big_leaf_scaling(lai, k_ext)
    fapar = radiation.fapar_from_lai(lai, k_ext)
    vmax = scaling * vmax25 * climate.vmax_response
    k = scaling * k25 * climate.k_response
    apar = fapar * climate.ppfd_day
    ci = ci_ratio * climate.ca_mole_fraction
    rate = collatz_c4_rate(vmax, alpha, k, apar, ci)
    return umol_per_m2_s_to_gc_per_m2(rate, climate.daylight_s)


# =============================================================================================
# 4. P-model (Prentice et al. 2014; Wang et al. 2017; Stocker et al. 2020)
# =============================================================================================


def water_density_fisher(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Density of liquid water ρ (kg m-3) from the Tumlirz equation V = V∞ + λ/(P0 + P) with the coefficients of
    Fisher & Dial (1975, Scripps Institution of Oceanography technical report), as in pyrealm/rpmodel.
    tair: °C. patm: Pa (P in bar)."""
    lam = _polynomial(tair, FISHER_DIAL_LAMBDA)
    p0 = _polynomial(tair, FISHER_DIAL_P0)
    vinf = _polynomial(tair, FISHER_DIAL_VINF)
    specific_volume = vinf + lam / (p0 + _BAR_PER_PA * jnp.asarray(patm))
    return _CM3_PER_G_TO_KG_PER_M3 / specific_volume


def water_viscosity_huber(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Dynamic viscosity of liquid water η (Pa s), Huber et al. (2009) J. Phys. Chem. Ref. Data 38:101, eqs. 1,
    2, 11, 12 (critical enhancement μ2 = 1), with the Fisher–Dial density; as in pyrealm `calc_viscosity_h2o`.

        η = μ* · μ0(T̄) · μ1(T̄, ρ̄),  T̄ = T/T*,  ρ̄ = ρ/ρ*
        μ0 = 100 √T̄ / Σ_i H_i / T̄^i,   μ1 = exp(ρ̄ Σ_i (1/T̄ − 1)^i Σ_j H_ij (ρ̄ − 1)^j)

    tair: °C. patm: Pa.
    """
    rho = water_density_fisher(tair, patm)
    tbar = (jnp.asarray(tair) + C.KELVIN_OFFSET) / HUBER_T_STAR
    rbar = rho / HUBER_RHO_STAR
    mu0 = _HUBER_MU0_SCALE * jnp.sqrt(tbar) / _polynomial(1.0 / tbar, HUBER_H_I)
    ctbar = 1.0 / tbar - 1.0
    n_i = len(HUBER_H_IJ[0])
    inner = [_polynomial(rbar - 1.0, tuple(row[i] for row in HUBER_H_IJ)) for i in range(n_i)]
    mu1 = jnp.exp(rbar * _polynomial_of_terms(ctbar, inner))
    return HUBER_MU_STAR * mu0 * mu1


def relative_viscosity(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Viscosity of water relative to 25 °C and P0, η* = η(T, p)/η(25 °C, 101 325 Pa) (–).

    Prentice et al. (2014); Stocker et al. (2020); pyrealm `calc_ns_star`. The temperature is limited to
    `VISCOSITY_TEMPERATURE_RANGE` (the density polynomial diverges in deep frost where GPP is 0 anyway).
    """
    t = jnp.clip(jnp.asarray(tair), *VISCOSITY_TEMPERATURE_RANGE)
    reference = water_viscosity_huber(VISCOSITY_REFERENCE_TEMPERATURE, C.P_STANDARD)
    return water_viscosity_huber(t, patm) / reference


def pmodel_gamma_star(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Γ* (Pa) = 4.332 · p/P0 · f_Arr(T; 37 830 J mol-1). Stocker et al. (2020); pyrealm `calc_gammastar`."""
    return _arrhenius_at(PMODEL_GAMMA_STAR_25_PA * jnp.asarray(patm) / C.P_STANDARD, tair, C.BERNACCHI_HA_GAMMA_STAR)


def pmodel_kmm(tair: ArrayLike, patm: ArrayLike) -> Array:
    """Effective Michaelis–Menten coefficient of Rubisco K = K_c (1 + pO2/K_o) (Pa), pO2 = 0.209476 · p.

    K_c = 39.97 Pa · f_Arr(T; 79 430), K_o = 27 480 Pa · f_Arr(T; 36 380) (Bernacchi et al. 2001 as fixed partial
    pressures). Stocker et al. (2020); pyrealm `calc_kmm`. tair: °C. patm: Pa.
    """
    kc = _arrhenius_at(PMODEL_KC_25_PA, tair, C.BERNACCHI_HA_KC)
    ko = _arrhenius_at(PMODEL_KO_25_PA, tair, C.BERNACCHI_HA_KO)
    return kc * (1.0 + C.O2_MOLE_FRACTION * jnp.asarray(patm) / ko)


def pmodel_phi0(tair: ArrayLike, kphio: ArrayLike) -> Array:
    """Temperature-dependent intrinsic quantum yield φ0 = kphio · max(0.352 + 0.022 T − 0.00034 T², 0) (mol mol-1).

    Stocker et al. (2020) GMD 13:1545 (after Bernacchi et al. 2003); pyrealm ``method_kphio="temperature"``.
    φ0 vanishes below −13.3 °C and above 78 °C. tair: °C. kphio: calibrated reference yield (mol mol-1).
    """
    return kphio * jnp.maximum(_polynomial(tair, PMODEL_KPHIO_TEMPERATURE_COEFFICIENTS), 0.0)


class PModelState(NamedTuple):
    """The P-model's photosynthetic environment and optimal-χ solution (all arrays, same shape).

    ca, gamma_star, kmm: ambient CO2, Γ* and K (Pa). ns_star: η* (–). xi: ξ (Pa^½). chi: ci/ca (–). ci: Pa.
    mj, mc: CO2 limitation terms of the light- and Rubisco-limited rates (–). f_v: Jmax limitation factor (–).
    phi0: intrinsic quantum yield (mol mol-1). lue: light-use efficiency (gC mol-1 of absorbed photons).
    """

    ca: Array
    gamma_star: Array
    kmm: Array
    ns_star: Array
    xi: Array
    chi: Array
    ci: Array
    mj: Array
    mc: Array
    f_v: Array
    phi0: Array
    lue: Array


def pmodel_state(
    tair: ArrayLike, vpd: ArrayLike, co2: ArrayLike, patm: ArrayLike, kphio: ArrayLike
) -> PModelState:
    """Solve the P-model for one site-day (elementwise). Prentice et al. (2014) Ecol. Lett. 17:82; Wang et al.
    (2017) Nature Plants 3:734; Stocker et al. (2020) GMD 13:1545. Matches pyrealm 2.0 ``PModel(method_optchi=
    "prentice14", method_jmaxlim="wang17", method_kphio="temperature", method_arrhenius="simple")``:

        ca = co2 · 1e-6 · p;  D = 100 · vpd (Pa)
        ξ  = √(β (K + Γ*) / (1.6 η*)),  β = 146
        χ  = Γ*/ca + (1 − Γ*/ca) ξ / (ξ + √D)                    (Prentice et al. 2014, eq. 8)
        m_j = (ci − Γ*)/(ci + 2Γ*)                                (Wang et al. 2017, eq. 3), ci = χ ca
        m_c = (ci − Γ*)/(ci + K)                                  (Stocker et al. 2020, eq. 7)
        f_v = √(1 − (c*/m_j)^(2/3)),  c* = 0.41       (Wang et al. 2017, eq. 49; 0 where m_j ≤ c*)
        LUE = φ0(T) · m_j · f_v · M_C  (gC mol-1)

    Args:
        tair: °C. vpd: hPa (negative values are treated as 0). co2: ppm. patm: Pa. kphio: mol mol-1.
    Where pyrealm returns NaN (m_j ≤ c*, e.g. CO2 near Γ*) this returns f_v = 0, hence LUE = 0; ca ≤ 0 gives χ = 1.
    """
    tair = jnp.asarray(tair)
    patm = jnp.asarray(patm)
    ca = jnp.asarray(co2) * C.MOL_PER_UMOL * patm
    gamma_star = pmodel_gamma_star(tair, patm)
    kmm = pmodel_kmm(tair, patm)
    ns_star = relative_viscosity(tair, patm)
    xi = jnp.sqrt(PMODEL_BETA_C3 * (kmm + gamma_star) / (DIFFUSIVITY_RATIO_H2O_CO2 * ns_star))
    sqrt_d = _safe_sqrt(jnp.asarray(vpd) * C.PA_PER_HPA)
    gamma_ratio = _safe_divide(gamma_star, ca, fallback=1.0)
    chi = gamma_ratio + (1.0 - gamma_ratio) * xi / (xi + sqrt_d)
    ci = chi * ca
    mj = (ci - gamma_star) / (ci + 2.0 * gamma_star)
    mc = (ci - gamma_star) / (ci + kmm)
    limited = mj > PMODEL_CSTAR
    ratio = PMODEL_CSTAR / jnp.where(limited, mj, 1.0)
    f_v = jnp.where(limited, _safe_sqrt(1.0 - ratio ** (2.0 / 3.0)), 0.0)
    phi0 = pmodel_phi0(tair, kphio)
    lue = phi0 * jnp.maximum(mj, 0.0) * f_v * C.MOLAR_MASS_C
    return PModelState(ca, gamma_star, kmm, ns_star, xi, chi, ci, mj, mc, f_v, phi0, lue)


def pmodel_gpp(
    tair: ArrayLike,
    vpd: ArrayLike,
    co2: ArrayLike,
    patm: ArrayLike,
    ppfd: ArrayLike,
    fapar: ArrayLike,
    kphio: ArrayLike,
) -> Array:
    """P-model daily GPP = LUE · fAPAR · PPFD · 86 400 s · 1e-6 (gC m-2 d-1); vectorised over any common shape.

    Args:
        tair: °C. vpd: hPa. co2: ppm. patm: Pa. ppfd: 24-h mean PPFD (µmol m-2 s-1). fapar: –.
        kphio: reference intrinsic quantum yield (mol mol-1).
    pyrealm's ``PModel.gpp`` (µgC m-2 s-1) equals this × 1e6 / 86 400.
    """
    lue = pmodel_state(tair, vpd, co2, patm, kphio).lue
    absorbed = jnp.asarray(fapar) * jnp.maximum(jnp.asarray(ppfd), 0.0)
    return lue * absorbed * C.SECONDS_PER_DAY * C.MOL_PER_UMOL


def pmodel_gpp_per_fapar(
    tair: ArrayLike, vpd: ArrayLike, co2: ArrayLike, patm: ArrayLike, ppfd: ArrayLike, kphio: ArrayLike
) -> Array:
    """P-model GPP per unit fAPAR, LUE · PPFD · 86 400 s · 1e-6 (gC m-2 d-1): `pmodel_gpp` is linear in fAPAR, so
    this drivers-only part is computed for every day before the time loop. Arguments as `pmodel_gpp`."""
    lue = pmodel_state(tair, vpd, co2, patm, kphio).lue
    return lue * jnp.maximum(jnp.asarray(ppfd), 0.0) * C.SECONDS_PER_DAY * C.MOL_PER_UMOL


def acclimation_state(tair: ArrayLike, tau: ArrayLike) -> Array:
    """State of acclimation S (°C) of Mäkelä et al. (2004) Tree Physiol. 24:369, eq. 1: a first-order delay of the
    daily mean air temperature along the leading (time) axis,

        S_1 = T_1,    S_k = S_{k−1} + (T_k − S_{k−1}) / τ,

    i.e. an exponential moving average with weight 1/τ (τ ≥ 1 d; τ = 1: S = T). Computed in one
    `jax.lax.associative_scan` over days (the recurrence is linear: S_k = a S_{k−1} + (1 − a) T_k, a = 1 − 1/τ),
    so that it is a drivers-only term of `process_models.simulate`'s pass before the time loop.

    Args:
        tair: daily mean air temperature (°C), time first: (time,) or (time, site).
        tau: time constant (d), a scalar or per site (site,), broadcast against ``tair``.
    The first day starts at its own temperature (no memory of days before the series).
    """
    tair = jnp.asarray(tair)
    a = jnp.broadcast_to(1.0 - 1.0 / jnp.asarray(tau, tair.dtype), tair.shape)
    a = a.at[0].set(0.0)  # S_1 = T_1

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    _, state = jax.lax.associative_scan(combine, (a, (1.0 - a) * tair))
    return state


def acclimation_factor(state: ArrayLike, x0: ArrayLike, s_max: ArrayLike) -> Array:
    """Cold-season down-regulation of photosynthetic capacity, Mäkelä et al. (2004) eqs. 2–3 (as PRELES's fS,
    Peltoniemi et al. 2015 Boreal Environ. Res. 20:151): f = min(max(S − X0, 0) / S_max, 1) ∈ [0, 1] (–).

    Args:
        state: state of acclimation S (°C, `acclimation_state`). x0: the S at which photosynthesis stops (°C).
        s_max: the rise of S above X0 at which capacity is full (°C), > 0.
    """
    return jnp.clip((jnp.asarray(state) - x0) / s_max, 0.0, 1.0)


# =============================================================================================
# Parameter specifications
# =============================================================================================

_MOD17_BPLUT = (
    "MOD17 Collection 5.1 BPLUT (Zhao & Running 2010, Science 329:940; file MOD17_BPLUT_C5.1_MERRA_NASA, "
    "Running & Zhao 2015 MOD17 User's Guide)"
)

LUE_MAX_SPEC = ParameterSpec(
    name="lue_max",
    default=1.3,
    lower=0.3,
    upper=4.0,
    units="gC MJ-1",
    reference=f"{_MOD17_BPLUT}: cropland 1.300 gC MJ-1, biome range 1.03–1.53; the upper bound admits C4-crop "
    "LUEs of ~3 gC MJ-1 (e.g. Lobell et al. 2002; Yuan et al. 2007 Agric. For. Meteorol. 143:189)",
    description="maximum light-use efficiency ε_max per MJ of absorbed PAR",
)
TMIN_CLOSE_SPEC = ParameterSpec(
    name="tmin_close",
    default=-8.0,
    lower=-15.0,
    upper=-1.0,
    units="degC",
    reference=f"{_MOD17_BPLUT}: Tmin_min = −8 °C (−6 to −8 across biomes)",
    description="daily minimum temperature at which the MOD17 temperature scalar reaches 0 (photosynthesis off)",
)
TMIN_OPEN_SPEC = ParameterSpec(
    name="tmin_open",
    default=12.02,
    lower=1.0,
    upper=20.0,
    units="degC",
    reference=f"{_MOD17_BPLUT}: Tmin_max = 12.02 °C for cropland (8.31–12.02 across biomes)",
    description="daily minimum temperature above which the MOD17 temperature scalar is 1",
)
VPD_OPEN_SPEC = ParameterSpec(
    name="vpd_open",
    default=6.5,
    lower=1.0,
    upper=15.0,
    units="hPa",
    reference=f"{_MOD17_BPLUT}: VPD_min = 650 Pa = 6.5 hPa (650–1000 Pa across biomes)",
    description="VPD below which the MOD17 VPD scalar is 1",
)
VPD_CLOSE_SPEC = ParameterSpec(
    name="vpd_close",
    default=45.0,
    lower=20.0,
    upper=80.0,
    units="hPa",
    reference=f"{_MOD17_BPLUT}: VPD_max = 4500 Pa = 45 hPa for cropland (2900–4500 Pa across biomes)",
    description="VPD at which the MOD17 VPD scalar reaches 0",
)

VCMAX25_SPEC = ParameterSpec(
    name="vcmax25",
    default=57.7,
    lower=10.0,
    upper=150.0,
    units="umol m-2 s-1",
    reference="Kattge et al. (2009) Glob. Change Biol. 15:976: temperate broadleaf deciduous trees 57.7; "
    "PFT means ≈29–101 (C3 crops 100.7)",
    description="C3 top-of-canopy leaf Vcmax at 25 °C (Farquhar big leaf)",
)
JMAX_VCMAX_RATIO_SPEC = ParameterSpec(
    name="jmax_vcmax_ratio",
    default=1.715,
    lower=1.2,
    upper=2.6,
    units="-",
    reference="Kattge & Knorr (2007) Plant Cell Environ. 30:1176: r_JV = 2.59 − 0.035 T_growth = 1.715 at "
    "25 °C; Medlyn et al. (2002) Plant Cell Environ. 25:1167: 1.67",
    description="ratio Jmax25/Vcmax25 of the C3 Farquhar model",
)
CI_RATIO_C3_SPEC = ParameterSpec(
    name="ci_ratio_c3",
    default=0.7,
    lower=0.4,
    upper=0.95,
    units="-",
    reference="Wong, Cowan & Farquhar (1979) Nature 282:424: ci/ca ≈ 0.7 for C3 leaves; Prentice et al. (2014)",
    description="ratio of leaf-internal to ambient CO2 χ = ci/ca of the C3 Farquhar model",
)

VMAX25_C4_SPEC = ParameterSpec(
    name="vmax25_c4",
    default=39.0,
    lower=10.0,
    upper=100.0,
    units="umol m-2 s-1",
    reference="Collatz, Ribas-Carbo & Berry (1992) Aust. J. Plant Physiol. 19:519, Table 2: V_max = 39 "
    "(maize leaf); CLM5 C4 crops up to ~100",
    description="C4 top-of-canopy Rubisco capacity V_max at 25 °C (uninhibited), Collatz model",
)
ALPHA_C4_SPEC = ParameterSpec(
    name="alpha_c4",
    default=0.05,
    lower=0.03,
    upper=0.08,
    units="mol mol-1",
    reference="CLM4.5/5 (Oleson et al. 2013 §8.2; Lawrence et al. 2018) and SiB2 (Sellers et al. 1996): 0.05; "
    "Collatz et al. (1992) Table 2: 0.04; Ehleringer & Pearcy (1983) Plant Physiol. 73:555: ≈0.05–0.065 "
    "(C4 grasses, absorbed light); range 0.04–0.067 in the literature",
    description="C4 quantum efficiency per absorbed photon (initial slope of the light response)",
)
K_C4_SPEC = ParameterSpec(
    name="k_c4",
    default=0.7,
    lower=0.2,
    upper=2.0,
    units="mol m-2 s-1",
    reference="Collatz et al. (1992) Table 2: k = 0.7 mol m-2 s-1 at 25 °C (≈ 18 000 · V_max); CLM5 uses 20 000 · "
    "Vcmax25",
    description="initial slope of the C4 photosynthetic CO2 response (PEP-carboxylase), leaf basis at 25 °C",
    transform="loglogit",
)
CI_RATIO_C4_SPEC = ParameterSpec(
    name="ci_ratio_c4",
    default=0.4,
    lower=0.2,
    upper=0.7,
    units="-",
    reference="Wong, Cowan & Farquhar (1979) Nature 282:424: ci/ca ≈ 0.3–0.4 for C4 leaves (maize); "
    "Collatz et al. (1992)",
    description="ratio of leaf-internal to ambient CO2 ci/ca of the C4 Collatz model",
)

KPHIO_SPEC = ParameterSpec(
    name="kphio",
    default=0.081785,
    lower=0.02,
    upper=0.125,
    units="mol mol-1",
    reference="Stocker et al. (2020) GMD 13:1545, Table 1 (setup BRC, temperature-dependent φ0): 0.081785; "
    "upper bound the theoretical maximum 1/8 (Long et al. 1993; pyrealm 2.0 default)",
    description="reference intrinsic quantum yield of the P-model (canopy-effective), multiplied by φ0(T)",
)


_MAKELA = ("Mäkelä et al. (2004) Tree Physiol. 24:369 (Scots pine) and Mäkelä et al. (2008) Glob. Change Biol. 14:92 "
           "(five European conifer sites); the range is the prior of the FLUXCOM/SINDBAD implementation of this "
           "modifier (Jung, Carvalhais et al.)")
ACCLIM_TAU_SPEC = ParameterSpec(
    name="acclim_tau",
    default=5.0,
    lower=1.0,
    upper=20.0,
    units="d",
    reference=f"{_MAKELA}: time constant 1–20 d, median about 5 d",
    description="time constant τ of the state of acclimation (first-order delay of air temperature)",
)
ACCLIM_X0_SPEC = ParameterSpec(
    name="acclim_x0",
    default=-5.0,
    lower=-15.0,
    upper=1.0,
    units="degC",
    reference=f"{_MAKELA}: X0 between −15 and 1 °C, median about −5 °C",
    description="state of acclimation at or below which an evergreen canopy's photosynthesis stops",
)
ACCLIM_SMAX_SPEC = ParameterSpec(
    name="acclim_smax",
    default=20.0,
    lower=11.0,
    upper=30.0,
    units="degC",
    reference=f"{_MAKELA}: S_max between 11 and 30 °C, median about 20 °C",
    description="rise of the state of acclimation above X0 at which photosynthetic capacity is full",
)


def _water_limited(gpp: Array, water_stress: ArrayLike) -> Array:
    """GPP × β, β the water-stress factor in [0, 1] (1 = no stress), clipped to [0, 1]."""
    return gpp * jnp.clip(jnp.asarray(water_stress), 0.0, 1.0)


# =============================================================================================
# Modules
# =============================================================================================


class Photosynthesis(eqx.Module):
    """Canopy gross primary production for one site-day (scalars, or arrays that broadcast elementwise).

    Every variant multiplies its unstressed GPP by ``water_stress`` (β ∈ [0, 1], clipped), i.e. soil-water limitation
    scales GPP linearly (as MOD17's scalars and Stocker et al. 2020's β(θ) do) rather than entering Vcmax or χ.

    ``drivers(theta, met)`` returns the terms that depend on the drivers and parameters only (never on LAI or soil
    water), so that `process_models.simulate` computes them for every day in one vectorised pass before the time
    loop; ``__call__`` takes them as ``drivers`` (None: computed on the spot, the same numbers).
    """

    parameter_specs: eqx.AbstractClassVar[tuple[ParameterSpec, ...]]
    #: True: ``drivers`` carries memory along the time axis (`AcclimatedPModel`), so it needs the whole series and
    #: cannot be computed for one day on the spot
    needs_series: ClassVar[bool] = False

    @abc.abstractmethod
    def drivers(self, theta: Mapping[str, Array], met: Met):
        """The state-independent terms of the day (a pytree of arrays shaped like the drivers)."""

    @abc.abstractmethod
    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        """Daily gross primary production GPP (gC m-2 d-1), >= 0. water_stress in [0, 1] (1 = no stress)."""


class LightUseEfficiency(Photosynthesis):
    """MOD17-like light-use-efficiency GPP (`mod17_gpp`) with fAPAR from LAI; reads met.sw_in, tmin, vpd.

    The thresholds are four parameters with non-overlapping bounds (tmin_close < −1 °C < 1 °C < tmin_open;
    vpd_open ≤ 15 hPa < 20 hPa ≤ vpd_close), so no draw inside the bounds can swap "open" and "close".
    Drivers: `mod17_gpp_per_fapar`.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        LUE_MAX_SPEC,
        TMIN_CLOSE_SPEC,
        TMIN_OPEN_SPEC,
        VPD_OPEN_SPEC,
        VPD_CLOSE_SPEC,
        radiation.K_EXT_SPEC,
    )

    def drivers(self, theta: Mapping[str, Array], met: Met) -> Array:
        return mod17_gpp_per_fapar(
            met.sw_in,
            met.tmin,
            met.vpd,
            theta["lue_max"],
            theta["tmin_close"],
            theta["tmin_open"],
            theta["vpd_open"],
            theta["vpd_close"],
        )

    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        per_fapar = self.drivers(theta, met) if drivers is None else drivers
        return _water_limited(per_fapar * radiation.fapar_from_lai(lai, theta["k_ext"]), water_stress)


class FarquharC3(Photosynthesis):
    """Big-leaf Farquhar–von Caemmerer–Berry C3 GPP (`farquhar_c3_canopy_gpp`) with a fixed ci/ca; reads
    met.tair, sw_in, co2, patm, lat, doy (daylength). Drivers: `farquhar_c3_climate`."""

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        VCMAX25_SPEC,
        JMAX_VCMAX_RATIO_SPEC,
        CI_RATIO_C3_SPEC,
        radiation.K_EXT_SPEC,
    )

    def drivers(self, theta: Mapping[str, Array], met: Met) -> C3Climate:
        return farquhar_c3_climate(
            met.tair, radiation.par_from_sw(met.sw_in), radiation.daylength(met.lat, met.doy), met.co2, met.patm
        )

    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        gpp = farquhar_c3_canopy_gpp_of_climate(
            self.drivers(theta, met) if drivers is None else drivers,
            lai,
            theta["k_ext"],
            theta["vcmax25"],
            theta["jmax_vcmax_ratio"],
            theta["ci_ratio_c3"],
        )
        return _water_limited(gpp, water_stress)


class CollatzC4(Photosynthesis):
    """Big-leaf Collatz et al. (1992) C4 GPP (`collatz_c4_canopy_gpp`); reads met.tair, sw_in, co2, lat, doy.
    Drivers: `collatz_c4_climate`."""

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        VMAX25_C4_SPEC,
        ALPHA_C4_SPEC,
        K_C4_SPEC,
        CI_RATIO_C4_SPEC,
        radiation.K_EXT_SPEC,
    )

    def drivers(self, theta: Mapping[str, Array], met: Met) -> C4Climate:
        return collatz_c4_climate(
            met.tair, radiation.par_from_sw(met.sw_in), radiation.daylength(met.lat, met.doy), met.co2
        )

    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        gpp = collatz_c4_canopy_gpp_of_climate(
            self.drivers(theta, met) if drivers is None else drivers,
            lai,
            theta["k_ext"],
            theta["vmax25_c4"],
            theta["alpha_c4"],
            theta["k_c4"],
            theta["ci_ratio_c4"],
        )
        return _water_limited(gpp, water_stress)


class PModel(Photosynthesis):
    """P-model (C3, `pmodel_gpp`) with fAPAR from LAI and the 24-h mean PPFD; reads met.tair, vpd, co2, patm,
    sw_in. Acclimated to the day's conditions (no sub-daily or lagged acclimation). Drivers: `pmodel_gpp_per_fapar`."""

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (KPHIO_SPEC, radiation.K_EXT_SPEC)

    def drivers(self, theta: Mapping[str, Array], met: Met) -> Array:
        return pmodel_gpp_per_fapar(
            met.tair, met.vpd, met.co2, met.patm, radiation.par_from_sw(met.sw_in), theta["kphio"]
        )

    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        per_fapar = self.drivers(theta, met) if drivers is None else drivers
        return _water_limited(per_fapar * radiation.fapar_from_lai(lai, theta["k_ext"]), water_stress)



class AcclimatedPModel(PModel):
    """`PModel` whose evergreen canopy share down-regulates its photosynthesis in the cold season:

        GPP = P-model GPP · [1 − e · (1 − f_S)],   f_S = `acclimation_factor`(`acclimation_state`(T, τ), X0, S_max)

    with e the site's evergreen share (``met.evergreen``, 0–1, from the IGBP class). Needles that stay on through
    winter recover their capacity only as the delayed air temperature rises (Mäkelä et al. 2004; the spring recovery
    of boreal conifers lags the warming by days to weeks); deciduous and herbaceous leaves (1 − e) grow only in the
    growing season (`process_models.phenology.GrowingSeasonIndex`) and keep the P-model's own temperature response.
    e = 0 is `PModel` exactly. The delay runs along the series' time axis, so ``drivers`` needs the whole series
    (time first, as `process_models.simulate` passes it): a single day starts at its own temperature."""

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        KPHIO_SPEC, radiation.K_EXT_SPEC, ACCLIM_TAU_SPEC, ACCLIM_X0_SPEC, ACCLIM_SMAX_SPEC,
    )
    needs_series: ClassVar[bool] = True

    def drivers(self, theta: Mapping[str, Array], met: Met) -> Array:
        if met.evergreen is None:
            raise ValueError("AcclimatedPModel needs the evergreen canopy fraction met.evergreen (0–1 per site): give "
                             "the dataset an 'evergreen' site variable (kgml.compare.suites.evergreen_fraction maps IGBP "
                             "classes)")
        f_s = acclimation_factor(acclimation_state(met.tair, theta["acclim_tau"]), theta["acclim_x0"],
                                 theta["acclim_smax"])
        e = jnp.asarray(met.evergreen)  # 0–1, checked where the data enter (`kgml.data.drivers.met_from_dataset`)
        return super().drivers(theta, met) * (1.0 - e * (1.0 - f_s))

    def __call__(self, theta: Mapping[str, Array], met: Met, lai: Array, water_stress: Array, drivers=None) -> Array:
        if drivers is None:
            raise ValueError("AcclimatedPModel's drivers carry the state of acclimation along the time axis: compute "
                             "them for the whole series (process_models.simulate does) and pass them as drivers")
        return super().__call__(theta, met, lai, water_stress, drivers)
