"""The daily meteorological forcing every process component reads: one named field per driver.

A `Met` holds arrays of any common shape: a scalar for one site-day, ``(time,)`` for a series (the
layout `simulate` scans over), ``(site, time)`` for many sites.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from process_models import constants as C


class Met(NamedTuple):
    """Daily drivers, canonical names and units (the same as `kgml.variables`).

    Attributes:
        tair: daily mean air temperature (°C).
        tmin: daily minimum air temperature (°C).
        tmax: daily maximum air temperature (°C).
        sw_in: incoming shortwave radiation, 24-hour mean (W m-2).
        vpd: vapour-pressure deficit, daily mean (hPa).
        precip: precipitation (mm d-1).
        tsoil: soil temperature at ~5–10 cm, daily mean (°C).
        co2: atmospheric CO2 mole fraction (ppm = µmol mol-1).
        patm: surface air pressure (Pa).
        doy: day of year (1–366).
        lat: site latitude (degrees north).
        lai: optional prescribed leaf area index (m2 m-2), read only by `PrescribedLAI` phenology.
        swc: optional observed volumetric soil water content (m3 m-3), NaN where not measured; read by
            `SoilChamber` (chamber sites measure it beside the flux) and by `NaturalEcosystem` with
            ``soil_water="observed"`` (towers' SWC in its stress and moisture responses); otherwise coupled
            models compute their own.
        rew: optional observed relative extractable water (0–1, from a soil-moisture record's own range), NaN
            where not measured; read by `NaturalEcosystem` with ``soil_water="observed_rew"``.
        evergreen: optional evergreen share of the canopy (0–1, a site constant, usually shape (site, 1)); read
            only by `process_models.phenology.EvergreenGSI`.
    """

    tair: Array
    tmin: Array
    tmax: Array
    sw_in: Array
    vpd: Array
    precip: Array
    tsoil: Array
    co2: Array
    patm: Array
    doy: Array
    lat: Array
    lai: Array | None = None
    swc: Array | None = None
    rew: Array | None = None
    evergreen: Array | None = None


def make_met(
    *,
    tmin: ArrayLike,
    tmax: ArrayLike,
    sw_in: ArrayLike,
    precip: ArrayLike,
    doy: ArrayLike,
    lat: ArrayLike,
    tair: ArrayLike | None = None,
    vpd: ArrayLike | None = None,
    tsoil: ArrayLike | None = None,
    co2: ArrayLike = 400.0,
    patm: ArrayLike = C.P_STANDARD,
    lai: ArrayLike | None = None,
    swc: ArrayLike | None = None,
    rew: ArrayLike | None = None,
    evergreen: ArrayLike | None = None,
) -> Met:
    """Build a `Met`, filling drivers a station does not measure by documented approximations:

    - ``tair`` = (tmin + tmax) / 2 (FAO-56, Allen et al. 1998, eq. 9);
    - ``vpd`` = e_s − e_a with e_s the mean of e°(tmax) and e°(tmin) (FAO-56 eq. 12) and e_a = e°(tmin),
      i.e. dew point ≈ tmin (FAO-56 eq. 48), converted kPa → hPa;
    - ``tsoil`` = ``tair`` (no damping; a soil-temperature model is a later refinement).
    ``lai``, ``swc`` (m3 m-3), ``rew`` and ``evergreen`` (0–1) stay None unless given. All arrays are broadcast
    to a common shape.
    """
    tmin = jnp.asarray(tmin, jnp.float32)
    tmax = jnp.asarray(tmax, jnp.float32)
    tair = (tmin + tmax) / 2.0 if tair is None else jnp.asarray(tair, jnp.float32)
    if vpd is None:
        es = (saturation_vapour_pressure(tmax) + saturation_vapour_pressure(tmin)) / 2.0
        ea = saturation_vapour_pressure(tmin)
        vpd = C.HPA_PER_KPA * jnp.maximum(es - ea, 0.0)
    tsoil = tair if tsoil is None else tsoil
    fields = dict(
        tair=tair, tmin=tmin, tmax=tmax, sw_in=sw_in, vpd=vpd, precip=precip, tsoil=tsoil,
        co2=co2, patm=patm, doy=doy, lat=lat,
    )
    shape = jnp.broadcast_shapes(*(jnp.shape(jnp.asarray(v)) for v in fields.values()))
    out = {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), shape) for k, v in fields.items()}
    if lai is not None:
        out["lai"] = jnp.broadcast_to(jnp.asarray(lai, jnp.float32), shape)
    if swc is not None:
        out["swc"] = jnp.broadcast_to(jnp.asarray(swc, jnp.float32), shape)
    if rew is not None:
        out["rew"] = jnp.broadcast_to(jnp.asarray(rew, jnp.float32), shape)
    if evergreen is not None:
        out["evergreen"] = jnp.broadcast_to(jnp.asarray(evergreen, jnp.float32), shape)
    return Met(**out)


def saturation_vapour_pressure(t: ArrayLike) -> Array:
    """Saturation vapour pressure over water, e°(T) = 0.6108 exp(17.27 T / (T + 237.3)) (kPa), T in °C.

    Tetens (1930) as given by Allen et al. (1998) FAO-56, eq. 11.
    """
    t = jnp.asarray(t)
    return 0.6108 * jnp.exp(17.27 * t / (t + 237.3))
