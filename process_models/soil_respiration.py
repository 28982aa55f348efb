"""Heterotrophic (microbial) soil respiration Rh from soil temperature and soil water: Q10, Lloyd–Taylor and
DAMM (Michaelis–Menten substrate supply × O2 diffusion), each a small final module over pure kernels.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C
from process_models.moisture import POROSITY_SPEC, rh_moisture_response
from process_models.parameters import ParameterSpec
from process_models.temperature import LLOYD_TAYLOR_TREF_C, lloyd_taylor_response, q10_response

# =============================================================================================
# DAMM constants (Davidson, Samanta, Caramori & Savage 2012, Glob. Change Biol. 18:371, Table 1)
# =============================================================================================

#: Volume fraction of O2 in air used by DAMM (L L-1); Davidson et al. (2012) round to 0.209.
DAMM_O2_AIR_FRACTION = 0.209

#: Fraction of total soil C that is soluble substrate, p (–). Davidson et al. (2012): 4.14e-4. (Later DAMM
#: calibrations, e.g. CliMA ClimaLand and DAMMmodel.jl, use p_sx = 0.024 with a refitted α_Sx and kM_Sx.)
DAMM_P_SOLUBLE = 4.14e-4

#: Total soil carbon concentration [Sx_tot] (g C cm-3 soil) of the Harvard Forest topsoil fit. Davidson et al.
#: (2012): 0.048.
DAMM_SX_TOT = 0.048

#: Diffusion coefficient of soluble substrate in the liquid phase D_liq (–). Davidson et al. (2012): 3.17.
DAMM_D_LIQ = 3.17

#: Diffusion coefficient of O2 in air D_gas (–). Davidson et al. (2012): 1.67.
DAMM_D_GAS = 1.67

#: Soil depth over which the volumetric DAMM rate is integrated (cm). Davidson et al. (2012) scale their
#: chamber-matched rates over the top 10 cm.
DAMM_SOIL_DEPTH_CM = 10.0

#: Exponent of air-filled porosity in the O2 diffusion term, [O2] ∝ a^(4/3) (Millington 1959 tortuosity, as
#: in Davidson et al. 2012).
_O2_DIFFUSION_EXPONENT = 4.0 / 3.0

# =============================================================================================
# Kernels
# =============================================================================================


def damm_volumetric_rate(
    tsoil: ArrayLike,
    swc: ArrayLike,
    porosity: ArrayLike,
    alpha_sx: ArrayLike,
    ea_sx: ArrayLike,
    km_sx: ArrayLike,
    km_o2: ArrayLike,
    sx_tot: ArrayLike = DAMM_SX_TOT,
    p_soluble: ArrayLike = DAMM_P_SOLUBLE,
    d_liq: ArrayLike = DAMM_D_LIQ,
    d_gas: ArrayLike = DAMM_D_GAS,
) -> Array:
    """DAMM heterotrophic respiration per volume of soil (mg C cm-3 soil h-1), ≥ 0:

    V_max = α_Sx exp(−Ea_Sx / (R T));   [Sx] = p [Sx_tot] D_liq θ³;   [O2] = D_gas · 0.209 · a^(4/3),
    a = φ − θ;   R = V_max · [Sx]/(kM_Sx + [Sx]) · [O2]/(kM_O2 + [O2])

    Args:
        tsoil: soil temperature (°C). swc: θ, volumetric water (m3 m-3). porosity: φ (m3 m-3).
        alpha_sx: α_Sx (mg C cm-3 soil h-1). ea_sx: Ea_Sx (J mol-1). km_sx: kM_Sx (g C cm-3 soil).
        km_o2: kM_O2 (cm3 O2 cm-3 air). sx_tot: [Sx_tot] (g C cm-3 soil). p_soluble: p (–).
        d_liq, d_gas: D_liq, D_gas (–).
    Reference: Davidson, Samanta, Caramori & Savage (2012) Glob. Change Biol. 18:371, eqs. 1–6.

    θ is limited to [0, φ] (double-``where``), so a dry soil gives no substrate and a saturated soil no O2:
    R → 0 at both ends, with finite gradients.
    """
    tsoil_k = jnp.asarray(tsoil) + C.KELVIN_OFFSET
    porosity = jnp.asarray(porosity)
    swc = jnp.asarray(swc)
    theta = jnp.where(swc > 0.0, jnp.where(swc < porosity, swc, porosity), 0.0)
    vmax = jnp.asarray(alpha_sx) * jnp.exp(-jnp.asarray(ea_sx) / (C.GAS_CONSTANT * tsoil_k))
    substrate = p_soluble * sx_tot * d_liq * theta**3
    air = porosity - theta
    has_air = air > 0.0
    o2 = jnp.where(
        has_air,
        d_gas * DAMM_O2_AIR_FRACTION * jnp.where(has_air, air, 1.0) ** _O2_DIFFUSION_EXPONENT,
        0.0,
    )
    return vmax * substrate / (km_sx + substrate) * o2 / (km_o2 + o2)


def volumetric_to_areal_rate(rate: ArrayLike, depth_cm: ArrayLike = DAMM_SOIL_DEPTH_CM) -> Array:
    """mg C cm-3 soil h-1 over a soil layer ``depth_cm`` thick → g C m-2 d-1:
    × depth (cm) × 1e4 cm2 m-2 × 1e-3 g mg-1 × 24 h d-1 (= × 2400 for 10 cm)."""
    return jnp.asarray(rate) * depth_cm * C.CM2_PER_M2 * C.G_PER_MG * C.HOURS_PER_DAY


# =============================================================================================
# Parameter specifications
# =============================================================================================

RREF_RH_SPEC = ParameterSpec(
    name="rref_rh",
    default=1.2,
    lower=0.05,
    upper=15.0,
    units="gC m-2 d-1",
    reference=(
        "global mean Rh ≈ 425 gC m-2 yr-1 ≈ 1.2 gC m-2 d-1 (Hashimoto et al. 2015 Biogeosciences 12:4121: "
        "51 PgC yr-1); site annual soil respiration 100–3000 gC m-2 yr-1 in SRDB (Bond-Lamberty & Thomson "
        "2010 Biogeosciences 7:1915), of which Rh is about half"
    ),
    transform="loglogit",
    description="heterotrophic respiration at 10 °C soil temperature and optimal moisture",
)

Q10_RH_SPEC = ParameterSpec(
    name="q10_rh",
    default=2.0,
    lower=1.0,
    upper=5.0,
    units="-",
    reference=(
        "Davidson & Janssens (2006) Nature 440:165 (apparent Q10 of soil respiration commonly 2–3, wider "
        "range); Raich & Schlesinger (1992) Tellus 44B:81 (median Q10 of soil respiration 2.4); Mahecha et "
        "al. (2010) Science 329:838 (intrinsic Q10 of ecosystem respiration 1.4 ± 0.1)"
    ),
    description="Q10 of heterotrophic respiration with soil temperature",
)

E0_RH_SPEC = ParameterSpec(
    name="e0_rh",
    default=308.56,
    lower=50.0,
    upper=400.0,
    units="K",
    reference=(
        "Lloyd & Taylor (1994) Funct. Ecol. 8:315, eq. 11 (E0 = 308.56 K); bounds of short-term E0 in "
        "eddy-covariance flux partitioning: 50–400 K (Lasslop et al. 2010 Glob. Change Biol. 16:187, as "
        "implemented in REddyProc), 30–450 K (Reichstein et al. 2005 Glob. Change Biol. 11:1424)"
    ),
    description="Lloyd–Taylor activation-energy-like parameter E0 of heterotrophic respiration",
)

_DAMM_FIT = "Davidson, Samanta, Caramori & Savage (2012) Glob. Change Biol. 18:371, Table 1 (Harvard Forest fit)"
_DAMM_RANGE = (
    "range spans later DAMM calibrations (e.g. DAMMmodel.jl, CliMA ClimaLand site parameter sets, which refit "
    "α_Sx, Ea_Sx, kM_Sx, kM_O2 jointly) and soil-organic-matter Ea of 40–100 kJ mol-1 (Davidson & Janssens "
    "2006 Nature 440:165)"
)

ALPHA_SX_DAMM_SPEC = ParameterSpec(
    name="alpha_sx_damm",
    default=5.38e10,
    lower=1.0e6,
    upper=1.0e14,
    units="mg C cm-3 soil h-1",
    reference=f"{_DAMM_FIT}: α_Sx = 5.38e10; {_DAMM_RANGE}",
    transform="loglogit",
    description="DAMM pre-exponential factor of V_max (trades off with ea_sx_damm)",
)

EA_SX_DAMM_SPEC = ParameterSpec(
    name="ea_sx_damm",
    default=72.26e3,
    lower=40.0e3,
    upper=100.0e3,
    units="J mol-1",
    reference=f"{_DAMM_FIT}: Ea_Sx = 72.26 kJ mol-1; {_DAMM_RANGE}",
    description="DAMM activation energy of V_max",
)

KM_SX_DAMM_SPEC = ParameterSpec(
    name="km_sx_damm",
    default=9.95e-7,
    lower=1.0e-9,
    upper=1.0e-3,
    units="g C cm-3 soil",
    reference=f"{_DAMM_FIT}: kM_Sx = 9.95e-7; {_DAMM_RANGE}",
    transform="loglogit",
    description="DAMM Michaelis constant for soluble substrate",
)

KM_O2_DAMM_SPEC = ParameterSpec(
    name="km_o2_damm",
    default=0.121,
    lower=1.0e-4,
    upper=1.0,
    units="cm3 O2 cm-3 air",
    reference=f"{_DAMM_FIT}: kM_O2 = 0.121; {_DAMM_RANGE}",
    transform="loglogit",
    description="DAMM Michaelis constant for O2",
)


# =============================================================================================
# Modules
# =============================================================================================


class SoilRespiration(eqx.Module):
    """Heterotrophic respiration of one site-day (scalars, or arrays that broadcast elementwise).

    ``drivers(theta, tsoil)`` is the part that depends on soil temperature and parameters only (computed for every
    day before the time loop by `process_models.simulate`; None where a variant has no separable part);
    ``__call__`` takes it as ``drivers`` (None: computed on the spot, the same numbers).
    """

    parameter_specs: eqx.AbstractClassVar[tuple[ParameterSpec, ...]]

    @abc.abstractmethod
    def drivers(self, theta: Mapping[str, Array], tsoil: Array):
        """The soil-water-independent terms of the day (an array or pytree shaped like ``tsoil``, or None)."""

    @abc.abstractmethod
    def __call__(self, theta: Mapping[str, Array], tsoil: Array, swc: Array, drivers=None) -> Array:
        """Rh (gC m-2 d-1), >= 0, from soil temperature ``tsoil`` (°C) and soil water ``swc`` (m3 m-3)."""


class Q10Respiration(SoilRespiration):
    """Rh = rref_rh · Q10^((T − 10)/10) · f(WFPS), f = `rh_moisture_response` (1 at WFPS 0.55).

    Temperature: van 't Hoff; e.g. Davidson & Janssens (2006). Reads ``rref_rh``, ``q10_rh``, ``porosity``.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (RREF_RH_SPEC, Q10_RH_SPEC, POROSITY_SPEC)

    def drivers(self, theta: Mapping[str, Array], tsoil: Array) -> Array:
        """rref_rh · Q10^((T − 10)/10): Rh at optimal moisture (gC m-2 d-1)."""
        return theta["rref_rh"] * q10_response(tsoil, theta["q10_rh"], LLOYD_TAYLOR_TREF_C)

    def __call__(self, theta: Mapping[str, Array], tsoil: Array, swc: Array, drivers=None) -> Array:
        at_optimal_moisture = self.drivers(theta, tsoil) if drivers is None else drivers
        return at_optimal_moisture * rh_moisture_response(swc, theta["porosity"])


class LloydTaylor(SoilRespiration):
    """Rh = rref_rh · exp(E0 (1/(T_ref − T0) − 1/(T − T0))) · f(WFPS), T_ref = 10 °C, T0 = −46.02 °C.

    Lloyd & Taylor (1994) Funct. Ecol. 8:315, eq. 11 (`temperature.lloyd_taylor_response`); moisture as in
    `Q10Respiration`. Reads ``rref_rh``, ``e0_rh``, ``porosity``.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (RREF_RH_SPEC, E0_RH_SPEC, POROSITY_SPEC)

    def drivers(self, theta: Mapping[str, Array], tsoil: Array) -> Array:
        """rref_rh · f_LT(T): Rh at optimal moisture (gC m-2 d-1)."""
        return theta["rref_rh"] * lloyd_taylor_response(tsoil, theta["e0_rh"])

    def __call__(self, theta: Mapping[str, Array], tsoil: Array, swc: Array, drivers=None) -> Array:
        at_optimal_moisture = self.drivers(theta, tsoil) if drivers is None else drivers
        return at_optimal_moisture * rh_moisture_response(swc, theta["porosity"])


class DAMM(SoilRespiration):
    """Dual Arrhenius and Michaelis–Menten kinetics (Davidson et al. 2012), `damm_volumetric_rate` integrated
    over ``soil_depth_cm`` of soil (`volumetric_to_areal_rate`).

    Learnable: ``alpha_sx_damm``, ``ea_sx_damm``, ``km_sx_damm``, ``km_o2_damm`` and the shared ``porosity``.
    Fixed settings (published values by default): the soluble fraction p, total soil carbon [Sx_tot], the
    diffusion coefficients and the depth. Only p·[Sx_tot]·D_liq relative to kM_Sx, and D_gas relative to
    kM_O2, are identifiable, so these stay settings rather than parameters.
    """

    sx_tot: float = eqx.field(default=DAMM_SX_TOT, static=True)
    p_soluble: float = eqx.field(default=DAMM_P_SOLUBLE, static=True)
    d_liq: float = eqx.field(default=DAMM_D_LIQ, static=True)
    d_gas: float = eqx.field(default=DAMM_D_GAS, static=True)
    soil_depth_cm: float = eqx.field(default=DAMM_SOIL_DEPTH_CM, static=True)

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (
        ALPHA_SX_DAMM_SPEC,
        EA_SX_DAMM_SPEC,
        KM_SX_DAMM_SPEC,
        KM_O2_DAMM_SPEC,
        POROSITY_SPEC,
    )

    def drivers(self, theta: Mapping[str, Array], tsoil: Array) -> None:
        """None: DAMM's temperature and moisture terms are evaluated together in `damm_volumetric_rate`."""
        return None

    def __call__(self, theta: Mapping[str, Array], tsoil: Array, swc: Array, drivers=None) -> Array:
        rate = damm_volumetric_rate(
            tsoil,
            swc,
            theta["porosity"],
            theta["alpha_sx_damm"],
            theta["ea_sx_damm"],
            theta["km_sx_damm"],
            theta["km_o2_damm"],
            sx_tot=self.sx_tot,
            p_soluble=self.p_soluble,
            d_liq=self.d_liq,
            d_gas=self.d_gas,
        )
        return volumetric_to_areal_rate(rate, self.soil_depth_cm)
