"""The fast path for monthly forcing at scale: parameters once per cell from location and static
attributes, then the physics per cell-year from monthly means (`monthly_fluxes_fast`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from kgml.spatial.grid_drivers import (
    _MJ_PER_DAY_TO_W,
    DAYS_PER_YEAR,
    DriverAssumptions,
)
from process_models import constants as C
from process_models.constants import HPA_PER_KPA
from process_models.forcing import Met, saturation_vapour_pressure
from process_models.radiation import extraterrestrial_radiation
from process_models.simulate import simulate_sites

# ---------------------------------------------------------------------------------------------------------
# The fast path for monthly forcing at scale: parameters once per cell, physics per cell-year from monthly
# means (each day carries its month's mean; no daily array is ever built)
# ---------------------------------------------------------------------------------------------------------

#: Days of each month in the model's 365-day year (windows drop 29 February).
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_MET_ORDER = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2")


def fast_path_reason(run) -> str | None:
    """None when the run's parameters depend on location and static attributes only (the fast path gives
    the model path's numbers); otherwise why not."""
    m = run.model
    if m.use_summary:
        return "the parameters read the encoder's window summary (model.use_summary = true)"
    if m.residual_head is not None:
        return "the run has a residual head (it reads the encoder's daily features)"
    if m.time_varying:
        return "the run has time-varying parameters"
    if m.site_attention is not None:
        return "the run uses site attention"
    if m.location is None:
        return "the run has no location encoder"
    return None


def location_parameters(run, lat, lon, static: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Learned parameters of cells from location and static attributes alone (runs with
    `fast_path_reason` None): ``static`` maps the run's static names to raw values per cell; names it lacks
    take the training mean, as on grids. The region is unknown (−1) when the run has a region coordinate."""
    reason = fast_path_reason(run)
    if reason:
        raise ValueError(f"parameters of run {run.config.name!r} are not a function of location: {reason}")
    lat = np.asarray(lat, np.float32)
    norm = run.prepared.normaliser
    cols = []
    for name in run.config.data.static:
        if static is not None and name in static:
            v = np.asarray(static[name], np.float64)
            cols.append(norm.transform_array(name, v) if name in norm.mean else v)
        else:
            cols.append(np.zeros(lat.size))
    st = np.stack(cols, -1).astype(np.float32) if cols else np.zeros((lat.size, 0), np.float32)
    reg = np.full(lat.size, -1 if run.config.data.region else 0, np.int32)
    theta = _theta_jit()(run.model, jnp.asarray(lat), jnp.asarray(np.asarray(lon, np.float32)), jnp.asarray(st),
                         jnp.asarray(reg))
    return {k: np.asarray(v) for k, v in theta.items()}


def _theta_of(model, lat, lon, static, region):
    def one(la, lo, st, rg):
        emb = model.embed(model._locate(la, lo, st, rg))
        return model.parameters(jnp.zeros((1, 1)), emb)[0]

    return jax.vmap(one)(lat, lon, static, region)


def _year_fluxes(process, theta, monthly, lat, sw_from_climatology, vpd_from_rh, angstrom, rh):
    """Monthly means (cell, 12, [gpp, reco]) of one 365-day year per cell from monthly drivers laid out
    (12, len(_MET_ORDER), cell); each day reads its month's values. The year's daily drivers are built for all
    (day, cell) at once, each field gathered from its monthly values, and run through
    `process_models.simulate.simulate_sites` in its time-major layout: every state-independent term (sun geometry,
    net radiation, PET, light and temperature responses) in one vectorised pass before the time loop, the loop over
    the sequential part only (issue 18). The monthly means are one matrix product of the daily fluxes."""

    n = lat.shape[0]
    month_of_day = jnp.asarray(np.repeat(np.arange(12), DAYS_IN_MONTH), jnp.int32)
    # day of year per day (day, 1), latitude per cell (1, cell), air pressure once: simulate_sites computes the sun
    # geometry once per cell and once per day from them, not per cell-day
    doy = jnp.arange(1, DAYS_PER_YEAR + 1, dtype=jnp.float32)[:, None]
    lat_d = lat[None, :]
    # (day, cell) per field: a gather of the (month, cell) values (one per field: measured faster than gathering
    # the (month, field, cell) block and slicing it, 8,192 cell-years, 1 core)
    v = [jnp.take(monthly[:, i], month_of_day, axis=0) for i in range(len(_MET_ORDER))]
    sw = angstrom * extraterrestrial_radiation(lat_d, doy) * _MJ_PER_DAY_TO_W if sw_from_climatology else v[3]
    vpd = HPA_PER_KPA * saturation_vapour_pressure(v[0]) * (1.0 - rh) if vpd_from_rh else v[4]
    met = Met(tair=v[0], tmin=v[1], tmax=v[2], sw_in=sw.astype(jnp.float32),
              vpd=vpd.astype(jnp.float32), precip=v[5], tsoil=v[6], co2=v[7],
              patm=jnp.full((1, 1), C.P_STANDARD, jnp.float32), doy=doy, lat=lat_d)
    out = simulate_sites(process, theta, met, time_major=True).outputs
    flux = jnp.concatenate([jnp.broadcast_to(out.gpp, (DAYS_PER_YEAR, n)),
                            jnp.broadcast_to(out.reco, (DAYS_PER_YEAR, n))], 1)  # (day, [gpp cells, reco cells])
    weights = (jax.nn.one_hot(month_of_day, 12, dtype=jnp.float32) / jnp.asarray(DAYS_IN_MONTH, jnp.float32)).T
    means = weights @ flux  # (month, 2 cell)
    return jnp.stack([means[:, :n].T, means[:, n:].T], -1)


_JITS: dict = {}


def _theta_jit():
    if "theta" not in _JITS:
        _JITS["theta"] = eqx.filter_jit(_theta_of)
    return _JITS["theta"]


def _year_jit():
    if "year" not in _JITS:
        _JITS["year"] = eqx.filter_jit(_year_fluxes)
    return _JITS["year"]


def monthly_fluxes_fast(run, monthly: Mapping[str, np.ndarray], lat, lon, *,
                        assumptions: DriverAssumptions = DriverAssumptions(), batch: int = 8192,
                        theta: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """GPP, Reco, NEE monthly means (cell, month, 3) for monthly drivers (name → (cell, 12·years), whole
    years from January) — the fast path at scale. Missing drivers as in `daily_drivers`; ``mat``/``map`` from
    the drivers; the parameters (``theta`` when given, else `location_parameters`) once per cell; every
    cell-year then runs from the model's initial state (as the 365-day windows of the model path), in
    batches of ``batch`` cell-years (one compilation)."""
    a = assumptions
    lat = np.asarray(lat, np.float32)
    n = lat.size
    if "tair" not in monthly:
        raise KeyError(f"monthly forcing needs tair; has {sorted(monthly)}")
    tair = np.asarray(monthly["tair"], np.float32).reshape(n, -1)
    n_months = tair.shape[1]
    if n_months % 12:
        raise ValueError(f"monthly forcing must cover whole years from January; got {n_months} months")
    years = n_months // 12
    fields = {"tair": tair}
    for k in _MET_ORDER[1:]:
        if k in monthly:
            fields[k] = np.asarray(monthly[k], np.float32).reshape(n, n_months)
    fields.setdefault("tmin", tair - np.float32(a.diurnal_range / 2))
    fields.setdefault("tmax", tair + np.float32(a.diurnal_range / 2))
    fields.setdefault("precip", np.full_like(tair, a.precip))
    fields.setdefault("tsoil", tair)
    fields.setdefault("co2", np.full_like(tair, a.co2))
    sw_clim, vpd_rh = "sw_in" not in fields, "vpd" not in fields
    fields.setdefault("sw_in", np.zeros_like(tair))
    fields.setdefault("vpd", np.zeros_like(tair))
    w = np.tile(DAYS_IN_MONTH, years).astype(np.float64)
    if theta is None:
        static = {"mat": (tair * w).sum(1) / w.sum(), "map": (fields["precip"] * w).sum(1) / w.sum() * DAYS_PER_YEAR}
        theta = location_parameters(run, lat, lon, static)
    # Parameters that do not vary between cells (fixed ones) stay scalars: fewer arrays streamed per day.
    theta = {k: (np.float32(np.asarray(v).reshape(-1)[0]) if np.all(np.asarray(v) == np.asarray(v).reshape(-1)[0])
                 else np.asarray(v, np.float32)) for k, v in theta.items()}
    # (month, field, cell-year): time-major, written field by field (each a (cell-year, 12) → (12, cell-year)
    # transpose: 2.7× faster than stacking (cell-year, 12, field) and transposing it whole, 16,384 cells × 21 years)
    stacked = np.empty((12, len(_MET_ORDER), n * years), np.float32)
    for i, k in enumerate(_MET_ORDER):
        stacked[:, i, :] = fields[k].reshape(n * years, 12).T
    cell_of = np.repeat(np.arange(n), years)
    n_cy = n * years
    batch = min(batch, int(math.ceil(n_cy / 256) * 256))  # small inputs: a small padded batch
    out = np.empty((n_cy, 12, 2), np.float32)
    angstrom = np.float32(a.angstrom_a + a.angstrom_b * a.relative_sunshine)
    for i in range(0, n_cy, batch):
        idx = np.minimum(np.arange(i, i + batch), n_cy - 1)
        th = {k: jnp.asarray(v if np.ndim(v) == 0 else v[cell_of[idx]]) for k, v in theta.items()}
        res = _year_jit()(run.model.process, th, jnp.asarray(stacked[:, :, idx]), jnp.asarray(lat[cell_of[idx]]),
                          sw_clim, vpd_rh, angstrom, np.float32(a.relative_humidity))
        k = min(batch, n_cy - i)
        out[i:i + k] = np.asarray(res)[:k]
    out = out.reshape(n, n_months, 2)
    fl = np.concatenate([out, out[..., 1:2] - out[..., 0:1]], axis=-1)
    return fl, dict(theta)


