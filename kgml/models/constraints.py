"""Knowledge-guided constraints of the hybrid model: the structural ones (exact carbon identity, fluxes
≥ 0, built into the forward pass) and soft penalties added to the loss (parameter priors, residual size,
monotone temperature response, yield consistent with the season's assimilation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array

from process_models import constants as C
from process_models.parameters import ParameterSpec

__all__ = [
    "GRAIN_C_PER_GPP_MAX",
    "grain_carbon",
    "is_monotone_increasing",
    "monotone_penalty",
    "nonnegative_correction",
    "prior_penalty",
    "residual_penalty",
    "temperature_response_penalty",
    "yield_consistency_penalty",
]

#: Upper bound of grain carbon as a share of the season's GPP. Harvest index ≤ 0.6 of aboveground dry
#: matter (Hay 1995 Ann. Appl. Biol. 126:197), aboveground ≈ 0.8 of NPP, and NPP/GPP ≈ 0.5 for crops
#: (carbon-use efficiency, DeLucia et al. 2007 Glob. Change Biol. 13:1157) give ≈ 0.25; 0.5 is a generous
#: ceiling that only flags physically impossible yields.
GRAIN_C_PER_GPP_MAX = 0.5


# --- structural ---------------------------------------------------------------------------------------


def nonnegative_correction(x: Array, r: Array) -> Array:
    """Apply an additive correction ``r`` to a non-negative flux ``x`` so that the result stays ≥ 0:

        y = x + r             for r ≥ 0,
        y = x · exp(r / x)    for r < 0     (→ 0 as r → −∞; y = 0 when x = 0).

    Continuous with a continuous first derivative at r = 0 (both branches have ∂y/∂r = 1 there), equal to
    ``x`` when r = 0 (an untrained residual leaves the process model unchanged), and NaN-safe (double
    ``where`` around the division).
    """
    x = jnp.maximum(x, 0.0)
    neg = r < 0
    pos_x = x > 0
    ratio = jnp.where(neg & pos_x, r / jnp.where(pos_x, x, 1.0), 0.0)
    return jnp.where(neg, jnp.where(pos_x, x * jnp.exp(ratio), 0.0), x + jnp.where(neg, 0.0, r))


# --- soft penalties -----------------------------------------------------------------------------------


def prior_penalty(
    unconstrained: Mapping[str, Array], specs: Iterable[ParameterSpec], sd: float = 1.0
) -> Array:
    """Gaussian prior on the unconstrained parameters around the specs' defaults:
    mean over parameters of mean((u − u_default)² / sd²) (sites and days averaged). 0 at the defaults."""
    table = {s.name: s for s in specs}
    if not unconstrained:
        return jnp.zeros(())
    terms = []
    for name, u in unconstrained.items():
        if name not in table:
            raise KeyError(f"no spec for parameter {name!r}")
        terms.append(jnp.mean((jnp.asarray(u) - table[name].default_unconstrained) ** 2) / sd**2)
    return jnp.mean(jnp.stack(terms))


def residual_penalty(residuals: Mapping[str, Array], scales: Mapping[str, float]) -> Array:
    """Mean squared residual correction, each in units of its target's ``scale``; 0 without residuals."""
    if not residuals:
        return jnp.zeros(())
    return sum(jnp.mean((r / scales.get(k, 1.0)) ** 2) for k, r in residuals.items()) / len(residuals)


def monotone_penalty(values: Array, scale: float = 1.0) -> Array:
    """Mean over the last axis of relu(−Δvalues / scale)²: 0 for a non-decreasing sequence."""
    steps = jnp.diff(values, axis=-1) / scale
    return jnp.mean(jnp.square(jax.nn.relu(-steps)))


def is_monotone_increasing(values: Array, tol: float = 0.0) -> Array:
    """True when ``values`` never decreases along the last axis by more than ``tol``."""
    return jnp.all(jnp.diff(values, axis=-1) >= -tol)


def temperature_response_penalty(
    process, theta: Mapping[str, Array], t_grid: Array | None = None, swc: float = 0.25
) -> Array:
    """Penalise heterotrophic respiration that decreases with soil temperature (on ``t_grid``, °C, at
    constant soil water ``swc`` m3 m-3) for the given (static or one day's) parameters. The built-in
    Q10 and Lloyd–Taylor forms are monotone by construction below ~40 °C, so the penalty guards learned
    and time-varying parameters and user-supplied response variants."""
    t = jnp.linspace(-10.0, 35.0, 19) if t_grid is None else jnp.asarray(t_grid)
    rh = process.soil_respiration(theta, t, jnp.full_like(t, swc))
    return monotone_penalty(rh, scale=jnp.maximum(jnp.mean(jnp.abs(rh)), 1e-6))


def grain_carbon(crop_yield: Array, standard_moisture: float) -> Array:
    """Grain carbon (gC m-2) of a yield (t ha-1 at ``standard_moisture``), inverse of
    `process_models.crop.grain_yield`: y · (1 − m) · f_C / 0.01."""
    return crop_yield * (1.0 - standard_moisture) * C.CARBON_FRACTION_DRY_MATTER / C.T_HA_PER_G_M2


def yield_consistency_penalty(
    annual_yield: Array, annual_gpp: Array, standard_moisture: float, scale: float = 100.0
) -> Array:
    """Penalty for grain carbon above `GRAIN_C_PER_GPP_MAX` × the year's GPP (both gC m-2 yr-1):
    mean(relu(grain_C − f·ΣGPP)/scale)². A yield the season's assimilation cannot have produced."""
    excess = grain_carbon(annual_yield, standard_moisture) - GRAIN_C_PER_GPP_MAX * annual_gpp
    return jnp.mean(jnp.square(jax.nn.relu(excess) / scale))
