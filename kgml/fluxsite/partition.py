"""Flux partitioning of NEE into GPP and ecosystem respiration: the night-time method (Reichstein et al. 2005)
and the daytime light-response method (Lasslop et al. 2010), as REddyProc implements them, and the hybrid
(`kgml.fluxsite.fluxhybrid`: NEE = Rb_NN · Q10^((TA−15)/10) − LUE_NN · SW_IN, Reichstein et al. 2022; Tramontana et al. 2020).

Array functions take fluxes in µmol CO2 m-2 s-1 (the units of the published parameter bounds);
`partition_dataset` converts a kgml (site, time) dataset (gC m-2 d-1) and returns xarray. Non-linear fits
are batched Levenberg–Marquardt least squares in JAX (all windows at once, float64), reusing
`process_models.temperature.lloyd_taylor_response` for the respiration term.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError
from kgml.fluxsite.fluxhybrid import HybridConfig, hybrid_gapfill
from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D
from process_models import constants as C
from process_models.radiation import inverse_relative_distance, solar_declination
from process_models.temperature import lloyd_taylor_response

__all__ = [
    "DaytimePartition",
    "HybridPartition",
    "NighttimePartition",
    "PartitionError",
    "daytime_partition",
    "fit_lloyd_taylor",
    "hybrid_partition",
    "nighttime_partition",
    "partition_dataset",
    "potential_radiation",
]

#: Reference temperature of the Lloyd–Taylor fits (°C); REddyProc TRef = 273.15 + 15 K.
TREF_C = 15.0
#: Start values of the night-time Lloyd–Taylor regression (REddyProc fOptimSingleE0: RRef = 2, E0 = 200 K).
RREF_START, E0_START = 2.0, 200.0
#: Solar constant in W m-2 (from the FAO-56 value in MJ m-2 min-1).
SOLAR_CONSTANT_W = C.SOLAR_CONSTANT_MJ_PER_MIN * 1.0e6 / 60.0


class PartitionError(ValueError):
    """Partitioning could not be done (no valid temperature sensitivity, too little night-time data, ...)."""


# --- solar geometry ---------------------------------------------------------------------------------------


def potential_radiation(times, lat: float, lon: float, utc_offset: float) -> np.ndarray:
    """Potential (top-of-atmosphere) radiation on a horizontal plane (W m-2) at each period's midpoint.

    R_pot = G_sc d_r max(0, sin φ sin δ + cos φ cos δ cos ω) with δ and d_r from FAO-56 eqs. 23–24 and the hour
    angle ω from solar time = local standard time + (lon − 15·utc_offset)/15 h + the equation of time (FAO-56
    eqs. 31–33). ``times`` are period starts (datetime64, local standard time).
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    step = np.diff(t).min() if t.size > 1 else np.timedelta64(30, "m")
    mid = t + step // 2
    doy = ((mid - mid.astype("datetime64[Y]").astype("datetime64[ns]")) / np.timedelta64(1, "D")).astype(int) + 1
    hour = (mid - mid.astype("datetime64[D]").astype("datetime64[ns]")) / np.timedelta64(1, "h")
    b = 2.0 * math.pi * (doy - 81) / 364.0
    eot_h = 0.1645 * np.sin(2 * b) - 0.1255 * np.cos(b) - 0.025 * np.sin(b)
    solar_hour = hour + (lon - 15.0 * utc_offset) / 15.0 + eot_h
    omega = math.pi / 12.0 * (solar_hour - 12.0)
    phi = math.radians(lat)
    delta = np.asarray(solar_declination(doy), dtype=float)
    sin_elev = math.sin(phi) * np.sin(delta) + math.cos(phi) * np.cos(delta) * np.cos(omega)
    return SOLAR_CONSTANT_W * np.asarray(inverse_relative_distance(doy), dtype=float) * np.maximum(sin_elev, 0.0)


# --- batched Levenberg–Marquardt ----------------------------------------------------------------------------


def _lloyd_taylor_model(theta, temp):
    """Respiration R = R_ref f_LT(T; E0), θ = (R_ref, E0/100)."""
    return theta[0] * lloyd_taylor_response(temp, 100.0 * theta[1], tref=TREF_C)


def _lasslop_model(theta, rg, temp, vpd, e0, vpd0):
    """NEE = −α β Rg / (α Rg + β) + r_b f_LT(T; E0), β = β0 exp(−k (VPD − VPD0)) above VPD0 (Lasslop 2010 eqs. 3–5).
    θ = (k, β0/10, 10 α, r_b)."""
    k, beta0, alpha, rb = theta[0], 10.0 * theta[1], 0.1 * theta[2], theta[3]
    beta = beta0 * jnp.exp(-k * jnp.maximum(vpd - vpd0, 0.0))
    denom = alpha * rg + beta
    safe = jnp.where(jnp.abs(denom) > 1e-12, denom, 1e-12)
    gpp = alpha * beta * rg / safe
    return -gpp + rb * lloyd_taylor_response(temp, e0, tref=TREF_C)


_MODELS = {"lloyd_taylor": _lloyd_taylor_model, "lasslop": _lasslop_model}


@functools.partial(jax.jit, static_argnames=("model", "n_iter"))
def _lm_batch(model: str, theta0, free, xs, y, w, n_iter: int = 60):
    """Weighted least squares min Σ (w (f(θ, x) − y))² for a batch of problems (leading axis), with the
    parameters where ``free == 0`` held at their start values. Returns θ, the cost and cov(θ) = s² (JᵀJ)⁻¹
    (s² = cost / (n − p)), the nls / Levenberg–Marquardt standard errors."""
    f = _MODELS[model]

    def one(theta0, free, xs, y, w):
        def resid(th):
            return w * (f(th, *xs) - y)

        jac = jax.jacfwd(resid)
        p = theta0.shape[0]
        eye = jnp.eye(p, dtype=theta0.dtype)
        fixed = jnp.diag(1.0 - free)

        def step(carry, _):
            th, lam, cost = carry
            r = resid(th)
            jm = jac(th) * free[None, :]
            a = jm.T @ jm
            g = jm.T @ r
            damped = a + lam * jnp.diag(jnp.diag(a)) + fixed + 1e-12 * eye
            d = -jnp.linalg.solve(damped, g) * free
            new = th + d
            new_cost = jnp.sum(resid(new) ** 2)
            ok = jnp.isfinite(new_cost) & (new_cost < cost)
            th = jnp.where(ok, new, th)
            cost = jnp.where(ok, new_cost, cost)
            lam = jnp.clip(jnp.where(ok, lam * 0.3, lam * 5.0), 1e-10, 1e10)
            return (th, lam, cost), None

        cost0 = jnp.sum(resid(theta0) ** 2)
        (th, _, cost), _ = jax.lax.scan(step, (theta0, jnp.asarray(1e-3, theta0.dtype), cost0), None, length=n_iter)
        jm = jac(th) * free[None, :]
        a = jm.T @ jm + fixed
        dof = jnp.maximum(jnp.sum(w != 0) - jnp.sum(free), 1.0)
        cov = jnp.linalg.inv(a) * (cost / dof) * jnp.outer(free, free)
        return th, cost, cov

    return jax.vmap(one)(theta0, free, xs, y, w)


def _bucket(size: int) -> int:
    """Next power of two: padding to it keeps the number of distinct compiled shapes small."""
    return 1 << (max(1, size) - 1).bit_length()


def _pad(groups: list[np.ndarray], fill: float, rows: int | None = None) -> np.ndarray:
    length = _bucket(max((g.size for g in groups), default=1))
    out = np.full((rows or _bucket(len(groups)), length), fill, dtype=np.float64)
    for i, g in enumerate(groups):
        out[i, : g.size] = g
    return out


def fit_lloyd_taylor(temps: list[np.ndarray], fluxes: list[np.ndarray], *, trim_percent: float = 5.0):
    """Fit R = R_ref f_LT(T; E0) (T_ref 15 °C) to each (temperature °C, flux) group, as REddyProc
    fOptimSingleE0: a fit from R_ref = 2, E0 = 200 K, then a refit without the residuals outside the
    ``trim_percent`` and 100 − ``trim_percent`` percentiles. Returns arrays (one per group) R_ref, sd(R_ref)
    (untrimmed fit), E0_trim, sd(E0_trim); NaN where a fit failed.
    """
    k = len(temps)
    if k == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    with jax.enable_x64(True):
        t = _pad(temps, TREF_C)
        y = _pad(fluxes, 0.0)
        w = _pad([np.ones(g.size) for g in temps], 0.0)
        rows = t.shape[0]
        theta0 = np.tile([RREF_START, E0_START / 100.0], (rows, 1))
        free = np.ones((rows, 2))
        th, _, cov = _lm_batch("lloyd_taylor", theta0, free, (t,), y, w)
        th, cov = np.asarray(th), np.asarray(cov)
        pred = th[:, :1] * np.asarray(lloyd_taylor_response(t, 100.0 * th[:, 1:2], tref=TREF_C))
        resid = np.where(w > 0, y - pred, np.nan)[:k]
        lo = np.nanpercentile(resid, trim_percent, axis=1, keepdims=True)
        hi = np.nanpercentile(resid, 100.0 - trim_percent, axis=1, keepdims=True)
        w_trim = np.zeros_like(w)
        w_trim[:k] = np.where((resid >= lo) & (resid <= hi), 1.0, 0.0)
        th2, _, cov2 = _lm_batch("lloyd_taylor", theta0, free, (t,), y, w_trim)
        th, cov = th[:k], cov[:k]
        th2, cov2 = np.asarray(th2)[:k], np.asarray(cov2)[:k]
    rref, rref_sd = th[:, 0], np.sqrt(np.maximum(cov[:, 0, 0], 0.0))
    e0, e0_sd = 100.0 * th2[:, 1], 100.0 * np.sqrt(np.maximum(cov2[:, 1, 1], 0.0))
    bad = ~np.isfinite(e0) | ~np.isfinite(e0_sd) | (np.abs(e0) > 1e5)
    e0[bad], e0_sd[bad] = np.nan, np.nan
    return rref, rref_sd, e0, e0_sd


# --- night-time partitioning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NighttimePartition:
    """Night-time partitioning result (per step unless said): ``reco`` = R_ref(t) f_LT(T; E0), ``gpp`` =
    reco − NEE_filled, ``rref`` (interpolated R_ref), ``e0`` (K, the E0 of the step's year), ``night`` (steps
    used), ``e0_by_year`` {year: E0}, and ``e0_windows`` (per short-term window: year, first/last day, n,
    temperature range, E0, sd(E0), valid)."""

    reco: np.ndarray
    gpp: np.ndarray
    rref: np.ndarray
    e0: np.ndarray
    night: np.ndarray
    e0_by_year: dict[int, float]
    e0_windows: dict[str, np.ndarray]


def _series(name: str, values, n: int | None, source) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataValidationError(source, name, f"expected a 1-D time series, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise DataValidationError(source, name, f"length {arr.size} differs from NEE ({n} steps)")
    return arr


def _check_times(times, n: int, source) -> tuple[np.ndarray, int]:
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size != n:
        raise DataValidationError(source, "time", f"{t.size} timestamps for {n} NEE values")
    steps = np.diff(t)
    if np.any(steps <= np.timedelta64(0, "ns")):
        i = int(np.flatnonzero(steps <= np.timedelta64(0, "ns"))[0]) + 1
        raise DataValidationError(source, "time", f"timestamps not strictly increasing at step {i} ({t[i]} after {t[i - 1]})")
    step = steps.min()
    if np.any(steps != step):
        i = int(np.flatnonzero(steps != step)[0]) + 1
        raise DataValidationError(source, "time", f"irregular time step at {t[i]}: partitioning needs a complete regular axis")
    per_day = np.timedelta64(1, "D") / step
    if per_day < 2 or per_day != int(per_day):
        raise DataValidationError(source, "time", f"time step {step}: partitioning needs half-hourly or hourly data")
    return t, int(per_day)


def _interpolate_at(n: int, where: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` known at record indices ``where`` onto 0..n-1, constant beyond the
    first and last (REddyProc fInterpolateGaps)."""
    ok = np.isfinite(values)
    if not ok.any():
        return np.full(n, np.nan)
    order = np.argsort(where[ok], kind="stable")
    return np.interp(np.arange(n), where[ok][order], values[ok][order])


def nighttime_partition(
    nee,
    tair,
    sw_in,
    times,
    *,
    nee_filled=None,
    potential_rad=None,
    night_sw_in: float = 10.0,
    e0_window_days: int = 7,
    e0_step_days: int = 5,
    min_temp_range: float = 5.0,
    e0_limits: tuple[float, float] = (30.0, 350.0),
    n_best: int = 3,
    rref_window_days: int = 3,
    rref_step_days: int = 4,
    e0: float | None = None,
    source: object = None,
) -> NighttimePartition:
    """Night-time flux partitioning (Reichstein et al. 2005, Glob. Change Biol. 11:1424; REddyProc
    sMRFluxPartition).

    1. Night = SW_IN ≤ ``night_sw_in`` (and potential radiation 0 when ``potential_rad`` is given); only
       measured NEE (``nee``, NaN where gap-filled or missing) and finite temperature are used.
    2. Per calendar year, E0 of Lloyd–Taylor (T_ref 15 °C, T0 −46.02 °C) is fitted in windows of ±7 days
       moved by 5 days (more than 6 records, temperature range ≥ 5 K, trimmed refit) and kept where
       E0 ± sd lies inside ``e0_limits`` (REddyProc for air temperature: 30–350 K); the mean of the
       ``n_best`` estimates with the smallest sd is the year's E0. A year without ``n_best`` valid windows
       takes the estimate from all years pooled (with a warning); if that fails too, `PartitionError`.
    3. R_ref by linear regression through the origin of night NEE on f_LT(T; E0) in windows of ±3 days moved
       by 4 days, placed at the mean record index of the window's data, negative values dropped, linearly
       interpolated and held constant beyond the ends.
    4. Reco = R_ref f_LT(T; E0) at every step (T must be gap-filled for complete output); GPP = Reco − NEE_f.

    Args: nee, nee_filled (µmol m-2 s-1; ``nee_filled`` defaults to ``nee``), tair (°C), sw_in (W m-2),
    times (datetime64 period starts, regular half-hourly or hourly), potential_rad (W m-2, optional),
    e0: a fixed E0 (K) instead of step 2 (REddyProc's ``debug$fixedE0``), e.g. for records shorter than
    the month or so that step 2 needs.
    """
    y = _series("nee", nee, None, source)
    n = y.size
    temp = _series("tair", tair, n, source)
    sw = _series("sw_in", sw_in, n, source)
    t, per_day = _check_times(times, n, source)
    filled = y if nee_filled is None else _series("nee_filled", nee_filled, n, source)
    if not np.isfinite(y).any():
        raise DataValidationError(source, "nee", "all values are missing: nothing to partition")
    if not np.isfinite(sw).any():
        raise DataValidationError(source, "sw_in", "all values are missing; night-time selection needs SW_IN")
    night = np.isfinite(sw) & (sw <= night_sw_in)
    if potential_rad is not None:
        night &= _series("potential_rad", potential_rad, n, source) <= 0.0
    use = night & np.isfinite(y) & np.isfinite(temp)
    if use.sum() < 10:
        raise PartitionError(f"{source or 'nighttime_partition'}: only {int(use.sum())} night-time records with NEE and temperature")
    day = (np.arange(n) + 1) // per_day  # REddyProc DayCounter: (1:N) %/% DTS
    years = t.astype("datetime64[Y]").astype(int) + 1970

    def windows(mask: np.ndarray):
        groups, info = [], []
        d = day[mask]
        if d.size == 0:
            return groups, info
        for mid in range(e0_window_days + 1, int(day.max()) + 1, e0_step_days):
            sel = np.flatnonzero(mask & (day >= mid - e0_window_days) & (day <= mid + e0_window_days))
            if sel.size > 6 and np.ptp(temp[sel]) >= min_temp_range:
                groups.append(sel)
                info.append((mid - e0_window_days, mid + e0_window_days, sel.size, float(np.ptp(temp[sel]))))
        return groups, info

    def e0_of(groups):
        if not groups:
            return np.nan, np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        _, _, e0, e0_sd = fit_lloyd_taylor([temp[g] for g in groups], [y[g] for g in groups])
        valid = np.isfinite(e0) & (e0 - e0_sd > e0_limits[0]) & (e0 + e0_sd < e0_limits[1])
        if valid.sum() < n_best:
            return np.nan, e0, e0_sd, valid
        best = np.argsort(np.where(valid, e0_sd, np.inf), kind="stable")[:n_best]
        return round(float(np.mean(e0[best])), 2), e0, e0_sd, valid

    table = {k: [] for k in ("year", "first_day", "last_day", "n", "temp_range", "e0", "e0_sd", "valid")}
    e0_by_year: dict[int, float] = {}
    for yr in np.unique(years) if e0 is None else []:
        groups, info = windows(use & (years == yr))
        value, e0_win, e0_win_sd, valid = e0_of(groups)
        e0_by_year[int(yr)] = value
        for (a, b, cnt, rng), e, s, v in zip(info, e0_win, e0_win_sd, valid, strict=True):
            for key, val in zip(table, (int(yr), a, b, cnt, rng, e, s, bool(v)), strict=True):
                table[key].append(val)
    missing = [yr for yr, v in e0_by_year.items() if not np.isfinite(v)]
    if missing:
        pooled = e0_of(windows(use)[0])[0] if len(e0_by_year) > 1 else np.nan
        if not np.isfinite(pooled):
            raise PartitionError(
                f"{source or 'nighttime_partition'}: fewer than {n_best} valid E0 estimates (E0 ± sd inside "
                f"{e0_limits}) in year(s) {missing}; try min_temp_range=3 or check the night-time NEE and temperature"
            )
        warnings.warn(f"{source or 'nighttime_partition'}: E0 for year(s) {missing} from all years pooled ({pooled:.1f} K)", stacklevel=2)
        for yr in missing:
            e0_by_year[yr] = pooled
    if e0 is not None:
        e0_by_year = {int(yr): float(e0) for yr in np.unique(years)}
    e0_step = np.array([e0_by_year[int(yr)] for yr in years])

    # R_ref in short windows with E0 fixed (regression through the origin, REddyProc sRegrRref)
    f_unit = np.asarray(lloyd_taylor_response(np.where(np.isfinite(temp), temp, TREF_C), e0_step, tref=TREF_C), dtype=float)
    centres, rrefs = [], []
    for mid in range(rref_window_days + 1, int(day.max()) + 1, rref_step_days):
        sel = np.flatnonzero(use & (day >= mid - rref_window_days) & (day <= mid + rref_window_days))
        if sel.size > 2:
            x = f_unit[sel]
            centres.append(int(round(sel.mean())))
            rrefs.append(float(x @ y[sel] / (x @ x)))
    rrefs = np.array(rrefs)
    rrefs[rrefs < 0] = np.nan
    rref = _interpolate_at(n, np.array(centres, dtype=float), rrefs)
    reco = rref * np.asarray(lloyd_taylor_response(temp, e0_step, tref=TREF_C), dtype=float)
    reco = np.where(np.isfinite(temp), reco, np.nan)
    gpp = reco - filled
    e0_windows = {k: np.asarray(v) for k, v in table.items()}
    return NighttimePartition(reco, gpp, rref, e0_step, night, e0_by_year, e0_windows)


# --- daytime partitioning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaytimePartition:
    """Daytime partitioning result. Per step: ``reco``, ``gpp`` (interpolated between the two nearest window
    fits), ``qc`` (0 good fit, 1 some parameter fixed, 2 nearest fit > 14 days away). Per window (dict of
    arrays): ``windows`` with start day, centre record, k, beta0, alpha, rb, e0, valid."""

    reco: np.ndarray
    gpp: np.ndarray
    qc: np.ndarray
    windows: dict[str, np.ndarray]


def daytime_partition(
    nee,
    tair,
    vpd,
    sw_in,
    times,
    *,
    potential_rad=None,
    nee_sd=None,
    day_sw_in: float = 4.0,
    window_days: int = 4,
    stride_days: int = 2,
    night_window_days: int = 12,
    vpd0: float = 10.0,
    alpha_max: float = 0.22,
    beta_max: float = 250.0,
    e0_bounds: tuple[float, float] = (50.0, 400.0),
    min_day_records: int = 10,
    source: object = None,
) -> DaytimePartition:
    """Daytime (light-response) flux partitioning (Lasslop et al. 2010, Glob. Change Biol. 16:187; REddyProc
    partitionNEEGL with the rectangular hyperbola).

    For windows of ``window_days`` moved by ``stride_days``:

    * E0 and night R_ref from a Lloyd–Taylor fit to night-time NEE (SW_IN ≤ 4 W m-2) of the
      ``night_window_days`` around the window; E0 outside ``e0_bounds`` → the previous window's E0.
    * Daytime NEE (SW_IN > 4) is fitted with NEE = −α β Rg/(α Rg + β) + r_b f_LT(T; E0),
      β = β0 exp(−k (VPD − 10 hPa)) above 10 hPa, E0 fixed, from three starts (k = 0.05, α = 0.1,
      r_b = night R_ref, β0 = |q3 − q97| of daytime NEE × 1, 1.3, 0.8), keeping the lowest SSE.
    * Lasslop's Table A1: k < 0 → refit with k = 0; α > 0.22 → refit with α of the previous good window; fits
      with α < 0, r_b < 0, β0 < 0, β0 ≥ 250 or β0 > 4 × its start are discarded.
    * GPP and Reco at every step: predictions of the two nearest windows (parameters placed at the mean
      index of their data) weighted by distance (REddyProc partGLInterpolateFluxes).

    Differences from REddyProc, documented: fits are unweighted unless ``nee_sd`` is given (REddyProc weights
    by the MDS ``NEE_fsd`` and adds a weak prior on β0), E0 is not smoothed across windows, and "previous good
    α" comes from the first fitting pass rather than a strictly sequential one.

    Args: nee (µmol m-2 s-1, measured only), tair (°C), vpd (hPa), sw_in (W m-2): all gap-filled drivers
    give complete predictions; times (datetime64 period starts).
    """
    y = _series("nee", nee, None, source)
    n = y.size
    temp, vp, rg = (_series(nm, v, n, source) for nm, v in (("tair", tair), ("vpd", vpd), ("sw_in", sw_in)))
    t, per_day = _check_times(times, n, source)
    if not np.isfinite(y).any():
        raise DataValidationError(source, "nee", "all values are missing: nothing to partition")
    for name, arr in (("sw_in", rg), ("tair", temp), ("vpd", vp)):
        if not np.isfinite(arr).any():
            raise DataValidationError(source, name, "all values are missing; daytime partitioning needs it")
    sigma = np.ones(n) if nee_sd is None else _series("nee_sd", nee_sd, n, source)
    pot = None if potential_rad is None else _series("potential_rad", potential_rad, n, source)
    night = np.isfinite(rg) & (rg <= day_sw_in) & (True if pot is None else pot <= 0.0)
    dayt = np.isfinite(rg) & (rg > day_sw_in) & (True if pot is None else pot > 0.0)
    ok = np.isfinite(y) & np.isfinite(temp)
    night_use = night & ok
    day_use = dayt & ok & np.isfinite(vp) & np.isfinite(sigma) & (sigma > 0)
    ndays = int(math.ceil(n / per_day))
    starts = np.arange(0, max(ndays - window_days, 0) + 1, stride_days)
    k_win = starts.size
    # night fits (E0, R_ref) on the window's centred night_window_days
    centre_day = starts + window_days / 2.0
    night_groups = []
    for c in centre_day:
        a, b = int((c - night_window_days / 2) * per_day), int((c + night_window_days / 2) * per_day)
        night_groups.append(np.flatnonzero(night_use[max(a, 0):min(b, n)]) + max(a, 0))
    sizes = np.array([g.size for g in night_groups])
    has = sizes > 6
    idx_has = np.flatnonzero(has)
    e0 = np.full(k_win, np.nan)
    if idx_has.size:
        _, _, e0_fit, _ = fit_lloyd_taylor([temp[night_groups[i]] for i in idx_has], [y[night_groups[i]] for i in idx_has], trim_percent=0.0)
        e0[idx_has] = e0_fit
    e0[(e0 < e0_bounds[0]) | (e0 > e0_bounds[1])] = np.nan
    if not np.isfinite(e0).any():
        raise PartitionError(f"{source or 'daytime_partition'}: no night-time window gave E0 within {e0_bounds}")
    # previous window's E0 where invalid; the first valid one before the first
    fill_idx = np.maximum.accumulate(np.where(np.isfinite(e0), np.arange(k_win), -1))
    first = int(np.flatnonzero(np.isfinite(e0))[0])
    e0 = np.where(fill_idx >= 0, e0[np.maximum(fill_idx, 0)], e0[first])
    f_lt = lambda idx, e: np.asarray(lloyd_taylor_response(temp[idx], e, tref=TREF_C), dtype=float)  # noqa: E731
    rref_night = np.full(k_win, np.nan)
    day_groups = []
    for i, s in enumerate(starts):
        a, b = s * per_day, min((s + window_days) * per_day, n)
        nsel = np.flatnonzero(night_use[a:b]) + a
        if nsel.size < 3:
            nsel = night_groups[i]
        if nsel.size >= 3:
            x = f_lt(nsel, e0[i])
            rref_night[i] = float(x @ y[nsel] / (x @ x))
        day_groups.append(np.flatnonzero(day_use[a:b]) + a)
    fit = np.array([g.size >= min_day_records for g in day_groups]) & np.isfinite(rref_night)
    idx = np.flatnonzero(fit)
    params = np.full((k_win, 4), np.nan)  # k, beta0, alpha, rb (physical)
    qc_win = np.zeros(k_win, dtype=np.int8)
    if idx.size:
        params[idx], qc_win[idx] = _fit_light_response(
            [day_groups[i] for i in idx], y, rg, temp, vp, sigma, e0[idx], rref_night[idx], vpd0, alpha_max,
            beta_max,
        )
    good = np.isfinite(params[:, 0])
    if not good.any():
        raise PartitionError(f"{source or 'daytime_partition'}: no window gave a valid light-response fit")
    centre = np.array([g.mean() if g.size else np.nan for g in day_groups])
    use_w = np.flatnonzero(good & np.isfinite(centre))
    where = np.round(centre[use_w]).astype(int)
    where, uniq = np.unique(where, return_index=True)
    use_w = use_w[uniq]
    gpp_k, reco_k = _light_response_predict(params[use_w], e0[use_w], rg, temp, vp, vpd0)
    pos = np.arange(n)
    after = np.searchsorted(where, pos, side="left").clip(0, where.size - 1)
    before = np.where(where[after] > pos, after - 1, after).clip(0, where.size - 1)
    span = (where[after] - where[before]).astype(float)
    w_after = np.where(span > 0, (pos - where[before]) / np.where(span > 0, span, 1.0), 0.5)
    w_after = np.clip(w_after, 0.0, 1.0)
    gpp = (1 - w_after) * gpp_k[before, pos] + w_after * gpp_k[after, pos]
    reco = (1 - w_after) * reco_k[before, pos] + w_after * reco_k[after, pos]
    nearest = np.where(np.abs(pos - where[before]) <= np.abs(where[after] - pos), before, after)
    qc = qc_win[use_w][nearest].copy()
    qc[np.abs(where[nearest] - pos) > 14 * per_day] = 2
    windows = {
        "start_day": starts, "centre_record": centre, "k": params[:, 0], "beta0": params[:, 1],
        "alpha": params[:, 2], "rb": params[:, 3], "e0": e0, "rref_night": rref_night, "valid": good,
    }
    return DaytimePartition(reco, gpp, qc, windows)


def _light_response_predict(params, e0, rg, temp, vpd, vpd0):
    """GPP and Reco (windows × steps) from physical parameters (k, β0, α, r_b) and E0 per window."""
    k, beta0, alpha, rb = (params[:, i : i + 1] for i in range(4))
    beta = beta0 * np.exp(-k * np.maximum(vpd[None, :] - vpd0, 0.0))
    rgp = np.maximum(rg, 0.0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        gpp = alpha * beta * rgp / (alpha * rgp + beta)
    gpp = np.where(rgp > 0, gpp, 0.0)
    reco = rb * np.asarray(lloyd_taylor_response(temp[None, :], e0[:, None], tref=TREF_C), dtype=float)
    return gpp, reco


def _fit_light_response(groups, y, rg, temp, vp, sigma, e0, rref_night, vpd0, alpha_max, beta_max):
    """Batched Lasslop fits with the Table A1 refits. Returns physical (k, β0, α, r_b) per group (NaN where
    discarded) and a flag (0 all free, 1 some parameter fixed)."""
    m = len(groups)
    with jax.enable_x64(True):
        rows = _bucket(3 * m)
        rep = lambda a: _pad(list(np.repeat(a, 3, axis=0)), 0.0, rows)  # noqa: E731
        xs = (
            _pad([rg[g] for g in groups], 0.0),
            _pad([temp[g] for g in groups], TREF_C),
            _pad([vp[g] for g in groups], 0.0),
        )
        length = xs[0].shape[1]
        e0_mat = np.repeat(e0[:, None], length, axis=1)
        vpd0_mat = np.full_like(e0_mat, vpd0)
        yy = _pad([y[g] for g in groups], 0.0)
        ww = _pad([1.0 / sigma[g] for g in groups], 0.0)
        xs3 = tuple(rep(a[:m]) for a in (*xs, e0_mat, vpd0_mat))
        yy3, ww3 = rep(yy[:m]), rep(ww[:m])
        beta_prior = np.array([abs(np.quantile(y[g], 0.03) - np.quantile(y[g], 0.97)) for g in groups])
        beta_prior = np.where(beta_prior > 0, beta_prior, 1.0)
        factors = np.array([1.0, 1.3, 0.8])

        def run(theta_start, free):
            # three starts per group (β0 varied), keep the lowest cost
            th0 = np.ones((rows, 4))
            th0[: 3 * m] = np.repeat(theta_start, 3, axis=0)
            th0[: 3 * m, 1] *= np.tile(factors, m)
            fr = np.ones((rows, 4))
            fr[: 3 * m] = np.repeat(free, 3, axis=0)
            th, cost, _ = _lm_batch("lasslop", th0, fr, xs3, yy3, ww3)
            th, cost = np.asarray(th)[: 3 * m].reshape(m, 3, 4), np.asarray(cost)[: 3 * m].reshape(m, 3)
            cost = np.where(np.isfinite(cost), cost, np.inf)
            best = np.argmin(cost, axis=1)
            out = th[np.arange(m), best]
            return np.column_stack([out[:, 0], 10.0 * out[:, 1], 0.1 * out[:, 2], out[:, 3]])

        start = np.column_stack([np.full(m, 0.05), beta_prior / 10.0, np.full(m, 0.1 * 10.0), rref_night])
        all_free = np.ones((m, 4))
        phys = run(start, all_free)
        flag = np.zeros(m, dtype=np.int8)
        # k < 0 → k = 0 fixed
        neg_k = ~(phys[:, 0] >= 0)
        if neg_k.any():
            st = start.copy()
            st[:, 0] = 0.0
            fr = all_free.copy()
            fr[:, 0] = 0.0
            refit = run(st, fr)
            phys[neg_k] = refit[neg_k]
            flag[neg_k] = 1
        # α > α_max → α of the previous good window fixed (and k = 0 if k still < 0)
        good_alpha = (phys[:, 2] >= 0) & (phys[:, 2] <= alpha_max)
        high = ~(phys[:, 2] <= alpha_max)
        prev = np.maximum.accumulate(np.where(good_alpha, np.arange(m), -1))
        prev_before = np.concatenate([[-1], prev[:-1]])
        fix_alpha = high & (prev_before >= 0)
        if fix_alpha.any():
            st = start.copy()
            st[:, 2] = 10.0 * phys[np.maximum(prev_before, 0), 2]
            st[:, 0] = np.where(neg_k, 0.0, st[:, 0])
            fr = all_free.copy()
            fr[:, 2] = 0.0
            fr[:, 0] = np.where(neg_k, 0.0, 1.0)
            refit = run(st, fr)
            still_neg = fix_alpha & ~(refit[:, 0] >= 0)
            if still_neg.any():
                st[:, 0] = 0.0
                fr[:, 0] = 0.0
                refit2 = run(st, fr)
                refit[still_neg] = refit2[still_neg]
            phys[fix_alpha] = refit[fix_alpha]
            flag[fix_alpha] = 1
    k, beta0, alpha, rb = phys.T
    bad = ~np.isfinite(phys).all(axis=1) | (alpha < 0) | (rb < 0) | (beta0 < 0) | (beta0 >= beta_max) | (beta0 > 4 * beta_prior)
    phys[bad] = np.nan
    return phys, flag


# --- hybrid partitioning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridPartition:
    """Hybrid partitioning result, per step in the units of the NEE given: ``gpp``, ``reco`` (ensemble means),
    ``gpp_sd``, ``reco_sd`` (ensemble spread), ``nee`` (the model's NEE = reco − gpp), ``q10`` (one per ensemble
    member) and ``fit`` (the `kgml.fluxsite.fluxhybrid.HybridFit`)."""

    gpp: np.ndarray
    reco: np.ndarray
    gpp_sd: np.ndarray
    reco_sd: np.ndarray
    nee: np.ndarray
    q10: np.ndarray
    fit: object


def hybrid_partition(
    nee, tair, sw_in, times, *, vpd=None, swc=None, config=None, record: bool = True, source: object = None
) -> HybridPartition:
    """Hybrid flux partitioning: GPP and Reco of the flux hybrid trained on measured NEE (NaN elsewhere) at the
    data's own step (half-hourly, hourly or daily): GPP = LUE_NN(x) · SW_IN with LUE ≥ 0, Reco = Rb_NN(z) ·
    Q10^((TA − 15 °C)/10) with one learned Q10 per site (Reichstein et al. 2022, Knowledge-Guided Machine Learning
    ch. 14; GPP sub-network as NNC-part, Tramontana et al. 2020 Glob. Change Biol. 26:5235). Unlike the night-time
    method, no night/day split and no window fits are needed: both fluxes come from one model of all measured NEE.
    Any flux units; tair °C, sw_in W m-2, vpd hPa, swc %. ``config``: a `kgml.fluxsite.fluxhybrid.HybridConfig`.
    """
    drivers = {"sw_in": sw_in, "tair": tair, "vpd": vpd, "swc": swc}
    res = hybrid_gapfill(
        nee, {k: v for k, v in drivers.items() if v is not None}, times, model="hybrid",
        config=config or HybridConfig(), record=record, source=source,
    )
    fit = res.fit
    return HybridPartition(fit.gpp, fit.reco, fit.gpp_sd, fit.reco_sd, fit.nee, fit.q10, fit)


# --- datasets -------------------------------------------------------------------------------------------


def partition_dataset(
    ds: xr.Dataset,
    method: str = "nighttime",
    *,
    nee: str = "nee",
    nee_filled: str | None = None,
    **options,
) -> xr.Dataset:
    """Partition every site of a half-hourly/hourly kgml ``(site, time)`` dataset (fluxes gC m-2 d-1).

    ``nee`` holds measured NEE (NaN elsewhere); ``nee_filled`` (e.g. ``nee_f`` from `kgml.fluxsite.gapfill`) gives
    GPP = Reco − NEE_f in the night-time method. Drivers: ``tair`` (°C), ``sw_in`` (W m-2), ``vpd`` (hPa;
    daytime). Potential radiation is used for day/night when the site has lat, lon and utc_offset.
    Returns ``gpp_nt``/``reco_nt`` (or ``gpp_dt``/``reco_dt``) in gC m-2 d-1 and ``e0_nt`` (K).

    ``method="hybrid"`` (`hybrid_partition`; also daily data; ``vpd`` and ``swc`` used when present) returns
    ``gpp_hybrid``, ``reco_hybrid`` with their ensemble spread ``gpp_hybrid_sd``, ``reco_hybrid_sd`` and the
    learned ``q10_reco`` per site; ``options`` go to `hybrid_partition` (``config``, ``record``).
    """
    if method == "hybrid":
        return _hybrid_partition_dataset(ds, nee, **options)
    if method not in ("nighttime", "daytime"):
        raise ValueError(f"method must be 'nighttime', 'daytime' or 'hybrid', got {method!r}")
    source = ds.attrs.get("source", "<dataset>")
    need = [nee, "tair", "sw_in"] + (["vpd"] if method == "daytime" else [])
    for name in need:
        if name not in ds:
            raise DataValidationError(source, name, f"{method} partitioning needs it; not in the dataset")
    sites = ds["site"].values
    times = ds["time"].values
    tag = "nt" if method == "nighttime" else "dt"
    out = {f"gpp_{tag}": np.full((sites.size, times.size), np.nan), f"reco_{tag}": np.full((sites.size, times.size), np.nan)}
    if method == "nighttime":
        out["e0_nt"] = np.full((sites.size, times.size), np.nan)
    scale = UMOL_CO2_M2_S_TO_GC_M2_D
    for i, site in enumerate(sites):
        def get(v, site=site):
            return np.asarray(ds[v].sel(site=site).values, dtype=float)

        pot = None
        coords = [ds[c].sel(site=site).item() if c in ds.coords else np.nan for c in ("lat", "lon", "utc_offset")]
        if all(np.isfinite(c) for c in coords):
            pot = potential_radiation(times, *coords)
        where = f"{source} (site {site})"
        if method == "nighttime":
            filled = get(nee_filled) / scale if nee_filled else None
            res = nighttime_partition(
                get(nee) / scale, get("tair"), get("sw_in"), times, nee_filled=filled, potential_rad=pot, source=where, **options
            )
            out["e0_nt"][i] = res.e0
        else:
            res = daytime_partition(get(nee) / scale, get("tair"), get("vpd"), get("sw_in"), times, potential_rad=pot, source=where, **options)
        out[f"gpp_{tag}"][i] = res.gpp * scale
        out[f"reco_{tag}"][i] = res.reco * scale
    label = "night-time (Reichstein et al. 2005)" if tag == "nt" else "daytime light response (Lasslop et al. 2010)"
    data_vars = {
        f"gpp_{tag}": (("site", "time"), out[f"gpp_{tag}"].astype(np.float32), {"units": "gC m-2 d-1", "long_name": f"GPP, {label} partitioning"}),
        f"reco_{tag}": (("site", "time"), out[f"reco_{tag}"].astype(np.float32), {"units": "gC m-2 d-1", "long_name": f"ecosystem respiration, {label} partitioning"}),
    }
    if tag == "nt":
        data_vars["e0_nt"] = (("site", "time"), out["e0_nt"].astype(np.float32), {"units": "K", "long_name": "Lloyd-Taylor E0 of the year"})
    return xr.Dataset(data_vars, coords={"site": sites, "time": times}, attrs={"source": str(source), "partitioning": label})


def _hybrid_partition_dataset(ds: xr.Dataset, nee: str = "nee", **options) -> xr.Dataset:
    source = ds.attrs.get("source", "<dataset>")
    for name in (nee, "tair", "sw_in"):
        if name not in ds:
            raise DataValidationError(source, name, "hybrid partitioning needs it; not in the dataset")
    sites, times = ds["site"].values, ds["time"].values
    out = {k: np.full((sites.size, times.size), np.nan) for k in ("gpp", "reco", "gpp_sd", "reco_sd")}
    q10 = np.full(sites.size, np.nan)
    for i, site in enumerate(sites):
        def get(v, site=site):
            return np.asarray(ds[v].sel(site=site).values, dtype=float) if v in ds else None

        res = hybrid_partition(
            get(nee), get("tair"), get("sw_in"), times, vpd=get("vpd"), swc=get("swc"), source=f"{source} (site {site})",
            **options,
        )
        out["gpp"][i], out["reco"][i], out["gpp_sd"][i], out["reco_sd"][i] = res.gpp, res.reco, res.gpp_sd, res.reco_sd
        q10[i] = float(np.mean(res.q10))
    units = ds[nee].attrs.get("units", "gC m-2 d-1")
    label = "hybrid (Rb_NN x Q10, LUE_NN x SW_IN; Reichstein et al. 2022, Tramontana et al. 2020)"
    dims = ("site", "time")
    data_vars = {
        "gpp_hybrid": (dims, out["gpp"].astype(np.float32), {"units": units, "long_name": f"GPP, {label} partitioning"}),
        "reco_hybrid": (dims, out["reco"].astype(np.float32), {"units": units, "long_name": f"ecosystem respiration, {label} partitioning"}),
        "gpp_hybrid_sd": (dims, out["gpp_sd"].astype(np.float32), {"units": units, "long_name": "ensemble spread of gpp_hybrid"}),
        "reco_hybrid_sd": (dims, out["reco_sd"].astype(np.float32), {"units": units, "long_name": "ensemble spread of reco_hybrid"}),
        "q10_reco": (("site",), q10.astype(np.float32), {"units": "1", "long_name": "learned Q10 of ecosystem respiration (ensemble mean)"}),
    }
    return xr.Dataset(data_vars, coords={"site": sites, "time": times}, attrs={"source": str(source), "partitioning": label})
