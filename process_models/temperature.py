"""Temperature response functions as pure elementwise kernels; each equals 1 at its reference temperature.

Temperatures in °C unless the argument name ends in ``_k`` (K). Energies in J mol-1.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C

#: Lloyd & Taylor (1994) fitted T0 = 227.13 K, i.e. −46.02 °C (their eq. 11).
LLOYD_TAYLOR_T0_C = 227.13 - C.KELVIN_OFFSET

#: Lloyd & Taylor (1994) reference temperature for R_ref, 10 °C (their eq. 11 uses 283.15 K).
LLOYD_TAYLOR_TREF_C = 10.0


def q10_response(t: ArrayLike, q10: ArrayLike, tref: ArrayLike = 10.0) -> Array:
    """Q10 response f(T) = Q10^((T − Tref)/10), written as exp(ln Q10 · (T − Tref)/10).

    Args:
        t: temperature (°C). q10: factor per 10 K (–), > 0. tref: reference temperature (°C).
    Reference: van 't Hoff (1898); e.g. Mahecha et al. (2010) Science 329:838.
    """
    return jnp.exp(jnp.log(q10) * (jnp.asarray(t) - tref) / 10.0)


def arrhenius_response(t_k: ArrayLike, ea: ArrayLike, tref_k: ArrayLike = C.T_REF_25C_K) -> Array:
    """Arrhenius response f(T) = exp(Ea (T − Tref) / (R Tref T)).

    Args:
        t_k: temperature (K). ea: activation energy (J mol-1). tref_k: reference temperature (K).
    Reference: Bernacchi et al. (2001) Plant Cell Environ. 24:253, eq. 8 (written relative to 25 °C).
    """
    t_k = jnp.asarray(t_k)
    return jnp.exp(ea * (t_k - tref_k) / (C.GAS_CONSTANT * tref_k * t_k))


def lloyd_taylor_response(
    t: ArrayLike,
    e0: ArrayLike,
    tref: ArrayLike = LLOYD_TAYLOR_TREF_C,
    t0: ArrayLike = LLOYD_TAYLOR_T0_C,
) -> Array:
    """Lloyd–Taylor response f(T) = exp(E0 (1/(Tref − T0) − 1/(T − T0))).

    Args:
        t: temperature (°C). e0: activation-energy-like parameter (K; 308.56 K in the original fit).
        tref: reference temperature (°C, 10 °C). t0: temperature where respiration vanishes (°C, −46.02).
    Reference: Lloyd & Taylor (1994) Funct. Ecol. 8:315, eq. 11.

    Temperatures at or below T0 + 1 K are evaluated at T0 + 1 K (double-``where``: finite value and
    gradient); real soil and air temperatures never go there.
    """
    t = jnp.asarray(t)
    floor = t0 + 1.0
    safe = jnp.where(t > floor, t, floor)
    return jnp.exp(e0 * (1.0 / (tref - t0) - 1.0 / (safe - t0)))


def peaked_arrhenius_response(
    t_k: ArrayLike, ha: ArrayLike, hd: ArrayLike, ds: ArrayLike, tref_k: ArrayLike = C.T_REF_25C_K
) -> Array:
    """Peaked Arrhenius response (activation with high-temperature deactivation), 1 at Tref.

    f(T) = exp(Ha (T − Tref)/(R Tref T)) · (1 + exp((Tref ΔS − Hd)/(R Tref))) / (1 + exp((T ΔS − Hd)/(R T)))

    Args:
        t_k: temperature (K). ha: activation energy (J mol-1). hd: deactivation energy (J mol-1).
        ds: entropy term ΔS (J mol-1 K-1). tref_k: reference temperature (K).
    Reference: Medlyn et al. (2002) Plant Cell Environ. 25:1167, eq. 18; Kattge & Knorr (2007).
    """
    t_k = jnp.asarray(t_k)
    rgas = C.GAS_CONSTANT
    num = 1.0 + jnp.exp((tref_k * ds - hd) / (rgas * tref_k))
    den = 1.0 + jnp.exp((t_k * ds - hd) / (rgas * t_k))
    return arrhenius_response(t_k, ha, tref_k) * num / den
