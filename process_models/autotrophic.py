"""Autotrophic (plant) respiration Ra as maintenance plus growth respiration, the McCree–de Wit paradigm:
maintenance proportional to live biomass with a Q10 temperature response, growth a fixed share of the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models.parameters import ParameterSpec
from process_models.temperature import q10_response

#: Reference temperature of the maintenance coefficient (°C). McCree (1970) and Ryan (1991) quote
#: maintenance coefficients at 20 °C.
RM_TREF_C = 20.0

# =============================================================================================
# Kernels
# =============================================================================================


def maintenance_respiration(biomass: ArrayLike, tair: ArrayLike, rm_ref: ArrayLike, q10: ArrayLike) -> Array:
    """Maintenance respiration R_m = m_20 · B · Q10^((T − 20)/10) (gC m-2 d-1), ≥ 0.

    Args:
        biomass: live respiring biomass carbon B (gC m-2; negative values are taken as 0).
        tair: air temperature (°C). rm_ref: maintenance coefficient m_20 at 20 °C (gC gC-1 d-1).
        q10: Q10 of maintenance respiration (–).
    References: McCree (1970) in Prediction and Measurement of Photosynthetic Productivity, Pudoc, 221–229;
    Ryan (1991) Ecol. Appl. 1:157; Amthor (2000) Ann. Bot. 86:1.
    """
    biomass = jnp.asarray(biomass)
    live = jnp.where(biomass > 0.0, biomass, 0.0)
    return jnp.asarray(rm_ref) * live * q10_response(tair, q10, RM_TREF_C)


def growth_respiration(gpp: ArrayLike, rm: ArrayLike, growth_resp_frac: ArrayLike) -> Array:
    """Growth respiration R_g = r_g · max(GPP − R_m, 0) (gC m-2 d-1), ≥ 0.

    Args:
        gpp: gross primary production (gC m-2 d-1). rm: maintenance respiration (gC m-2 d-1).
        growth_resp_frac: r_g (–), the share of assimilate left after maintenance spent on construction.
    References: Ryan (1991) Ecol. Appl. 1:157 (construction cost ≈ 0.25); LPJ, Sitch et al. (2003)
    Glob. Change Biol. 9:161 (R_g = 0.25 (GPP − R_m)). No growth, hence no growth respiration, when
    maintenance exceeds assimilation.
    """
    surplus = jnp.asarray(gpp) - jnp.asarray(rm)
    return jnp.asarray(growth_resp_frac) * jnp.where(surplus > 0.0, surplus, 0.0)


# =============================================================================================
# Parameter specifications
# =============================================================================================

RM_REF_SPEC = ParameterSpec(
    name="rm_ref",
    default=0.01,
    lower=0.001,
    upper=0.1,
    units="gC gC-1 d-1",
    reference=(
        "McCree (1970): maintenance 0.015 d-1 of plant dry weight at 20 °C (white clover); Amthor (2000) "
        "Ann. Bot. 86:1 reviews whole-plant and organ coefficients of ~0.005–0.05 d-1 at 20–25 °C "
        "(lower for woody tissue); WOFOST leaves 0.03, stems 0.015, roots and storage organs 0.01 "
        "kg CH2O kg-1 d-1 at 25 °C (Penning de Vries et al. 1989 Simulation of Ecophysiological Processes "
        "of Growth in Several Annual Crops, Pudoc)"
    ),
    transform="loglogit",
    description="maintenance respiration per unit live biomass carbon at 20 °C",
)

Q10_RA_SPEC = ParameterSpec(
    name="q10_ra",
    default=2.0,
    lower=1.2,
    upper=3.5,
    units="-",
    reference=(
        "Ryan (1991) Ecol. Appl. 1:157 (Q10 ≈ 2 for maintenance respiration); Amthor (2000); Tjoelker, "
        "Oleksyn & Reich (2001) Glob. Change Biol. 7:223 (leaf Q10 ≈ 1.5–3, declining with temperature)"
    ),
    description="Q10 of maintenance respiration with air temperature",
)

GROWTH_RESP_FRAC_SPEC = ParameterSpec(
    name="growth_resp_frac",
    default=0.25,
    lower=0.1,
    upper=0.45,
    units="-",
    reference=(
        "Ryan (1991) Ecol. Appl. 1:157 and Sitch et al. (2003) LPJ: 0.25; Amthor (2000) Ann. Bot. 86:1 "
        "(growth yields Y_G ≈ 0.65–0.85, i.e. 0.15–0.35 of growth substrate respired)"
    ),
    description="share of GPP left after maintenance that is respired in growth",
)


# =============================================================================================
# Module
# =============================================================================================


class RaStep(NamedTuple):
    """One day of autotrophic respiration (gC m-2 d-1): ra = rm + rg."""

    ra: Array
    rm: Array
    rg: Array


class AutotrophicRespiration(eqx.Module):
    """Ra = R_m + R_g, maintenance proportional to the live respiring biomass given by the caller (gC m-2) at
    air temperature, growth a share of what assimilation leaves after maintenance. Reads ``rm_ref``,
    ``q10_ra``, ``growth_resp_frac``."""

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = (RM_REF_SPEC, Q10_RA_SPEC, GROWTH_RESP_FRAC_SPEC)

    def drivers(self, theta: Mapping[str, Array], tair: Array) -> Array:
        """Maintenance respiration per unit live biomass, m_20 · Q10^((T − 20)/10) (gC gC-1 d-1): the part that
        depends on air temperature and parameters only (computed for every day before the time loop)."""
        return maintenance_respiration(1.0, tair, theta["rm_ref"], theta["q10_ra"])

    def __call__(self, theta: Mapping[str, Array], gpp: Array, biomass: Array, tair: Array, drivers=None) -> RaStep:
        per_biomass = self.drivers(theta, tair) if drivers is None else drivers
        biomass = jnp.asarray(biomass)
        rm = per_biomass * jnp.where(biomass > 0.0, biomass, 0.0)
        rg = growth_respiration(gpp, rm, theta["growth_resp_frac"])
        return RaStep(ra=rm + rg, rm=rm, rg=rg)
