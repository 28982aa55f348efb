"""Gridded forcing → whole years of daily drivers for the physics: the assumptions for drivers a grid
lacks (`DriverAssumptions`), the calendar of a record, sub-daily/monthly → daily, gap interpolation and the
padding of short records (`daily_drivers`). numpy, one chunk of cells at a time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kgml.data.gridded import _resolution as res
from process_models.constants import HPA_PER_KPA
from process_models.forcing import saturation_vapour_pressure
from process_models.radiation import extraterrestrial_radiation

#: Drivers the mapping reads from a grid (canonical names, `kgml.variables` units); the rest are assumed.
DRIVERS = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2")
#: Fluxes written to maps (gC m-2 d-1, monthly means of daily values).
FLUXES = ("gpp", "reco", "nee")
DAYS_PER_YEAR = 365
#: Mean Earth radius R1 of the GRS 80 ellipsoid (m); Moritz (2000) J. Geodesy 74:128-133.
EARTH_RADIUS = 6_371_008.8
#: Grams per teragram, for budget totals in TgC.
G_PER_TG = 1.0e12
_MJ_PER_DAY_TO_W = 1.0e6 / 86_400.0  # MJ m-2 d-1 → W m-2 (24-h mean)




# ---------------------------------------------------------------------------------------------------------
# Assumptions for drivers a grid lacks, and the padding of short records
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverAssumptions:
    """What stands in for drivers a grid lacks and for the days of a mapped year outside the record.

    ``relative_sunshine`` n/N with the FAO-56 Angström coefficients ``angstrom_a``/``angstrom_b`` (Allen et
    al. 1998, eq. 35; 0.25 and 0.50 are its defaults where no calibration exists) give ``sw_in`` = (a + b n/N)
    R_a; ``relative_humidity`` gives ``vpd`` = e°(tair)(1 − RH) (FAO-56 eq. 11); ``diurnal_range`` (°C)
    gives ``tmin``/``tmax`` = ``tair`` ∓ range/2; ``precip`` (mm d-1) and ``co2`` (ppm) are constants.
    These are assumptions of a map, not knowledge: each one used is listed in the output's attributes.
    ``min_coverage``: share of a record's days on which every driver must be finite for a cell to be mapped.
    ``harmonic_min_months``: distinct months a record needs for the annual harmonic fill of ``tair``.
    """

    relative_sunshine: float = 0.5
    angstrom_a: float = 0.25
    angstrom_b: float = 0.50
    relative_humidity: float = 0.7
    diurnal_range: float = 10.0
    precip: float = 2.0
    co2: float = 400.0
    min_coverage: float = 0.8
    harmonic_min_months: int = 3
    #: day of year of the annual temperature maximum, northern hemisphere (southern: + 182.5)
    warmest_doy: float = 200.0

    def describe(self, name: str) -> str:
        return {
            "sw_in": f"FAO-56 Angström climatology (a={self.angstrom_a}, b={self.angstrom_b}, "
                     f"n/N={self.relative_sunshine}) × extraterrestrial radiation of the cell's latitude and day",
            "vpd": f"from tair at relative humidity {self.relative_humidity:g} (FAO-56 eq. 11)",
            "tmin": f"tair − {self.diurnal_range / 2:g} °C (assumed diurnal range {self.diurnal_range:g} °C)",
            "tmax": f"tair + {self.diurnal_range / 2:g} °C (assumed diurnal range {self.diurnal_range:g} °C)",
            "precip": f"constant {self.precip:g} mm d-1",
            "tsoil": "tsoil = tair (no damping)",
            "co2": f"constant {self.co2:g} ppm",
        }[name]


def _angstrom_sw(lat: np.ndarray, doy: np.ndarray, a: DriverAssumptions) -> np.ndarray:
    ra = np.asarray(extraterrestrial_radiation(np.asarray(lat, np.float32)[:, None],
                                               np.asarray(doy, np.float32)[None, :]))
    return ((a.angstrom_a + a.angstrom_b * a.relative_sunshine) * ra * _MJ_PER_DAY_TO_W).astype(np.float32)


def _svp_hpa(t: np.ndarray) -> np.ndarray:
    return HPA_PER_KPA * np.asarray(saturation_vapour_pressure(np.asarray(t, np.float32)), np.float64)


# ---------------------------------------------------------------------------------------------------------
# Native resolution → whole years of daily drivers (numpy; one chunk of cells at a time)
# ---------------------------------------------------------------------------------------------------------


def _resolution(times: np.ndarray) -> str:
    r = res(np.asarray(times))
    if r == "unknown" and times.size == 1:
        return "monthly"  # a single time step: only a monthly product is plausible
    if r not in ("daily", "monthly") and not r.endswith(("min", "h", "hourly")) and r != "hourly":
        raise ValueError(f"forcing time step {r!r}: need sub-daily, daily or monthly fields")
    return r


@dataclass(frozen=True)
class _Calendar:
    """The native time axis and the daily calendar of the whole years it touches."""

    native: np.ndarray  # datetime64[ns] (n_native,)
    resolution: str
    days: np.ndarray  # datetime64[D] every day of the covered years, Feb 29 included
    covered: np.ndarray  # bool (n_days,) day inside the record
    day_to_native: np.ndarray  # int (n_days,) index of the native step (monthly/daily), -1 outside
    months: np.ndarray  # datetime64[M] months with coverage (the output time axis)

    @classmethod
    def of(cls, times) -> _Calendar:
        native = np.asarray(times).astype("datetime64[ns]")
        resolution = _resolution(native)
        years = np.unique(native.astype("datetime64[Y]"))
        days = np.arange(years[0].astype("datetime64[D]"), (years[-1] + 1).astype("datetime64[D]"),
                         dtype="datetime64[D]")
        idx = np.full(days.size, -1, np.int64)
        if resolution == "monthly":
            month_of_day = days.astype("datetime64[M]")
            native_m = native.astype("datetime64[M]")
            pos = np.searchsorted(native_m, month_of_day)
            ok = (pos < native_m.size) & (native_m[np.minimum(pos, native_m.size - 1)] == month_of_day)
            idx[ok] = pos[ok]
        else:
            native_d = np.unique(native.astype("datetime64[D]"))
            pos = np.searchsorted(native_d, days)
            ok = (pos < native_d.size) & (native_d[np.minimum(pos, native_d.size - 1)] == days)
            idx[ok] = pos[ok]
        covered = idx >= 0
        months = np.unique(days[covered].astype("datetime64[M]"))
        return cls(native, resolution, days, covered, idx, months)


def _to_days(values: np.ndarray, cal: _Calendar, how: str = "mean", min_coverage: float = 0.8) -> np.ndarray:
    """(cells, n_native) → (cells, n_record_days) at daily resolution (record days only)."""
    if cal.resolution in ("daily", "monthly"):
        return values
    day = cal.native.astype("datetime64[D]")
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    counts = np.diff(np.r_[starts, day.size])
    step = np.median(np.diff(cal.native)) if cal.native.size > 1 else np.timedelta64(1, "h")
    expected = np.timedelta64(1, "D") / step
    finite = np.isfinite(values)
    n_ok = np.add.reduceat(finite, starts, axis=1)
    if how == "mean":
        out = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1) / np.maximum(n_ok, 1)
    elif how == "min":
        out = np.fmin.reduceat(values, starts, axis=1)
    else:
        out = np.fmax.reduceat(values, starts, axis=1)
    del counts
    return np.where(n_ok >= min_coverage * expected, out, np.nan)


def _interpolate_gaps(v: np.ndarray) -> np.ndarray:
    """Linear interpolation in time of NaN within each row (ends: nearest value)."""
    out = v.copy()
    t = np.arange(v.shape[1])
    for i in np.flatnonzero(~np.isfinite(v).all(axis=1)):
        ok = np.isfinite(v[i])
        if ok.any():
            out[i] = np.interp(t, t[ok], v[i, ok])
    return out


def _harmonic_fill(tair_rec: np.ndarray, doy_rec: np.ndarray, doy_all: np.ndarray, lat: np.ndarray,
                   a: DriverAssumptions, months_rec: int) -> tuple[np.ndarray, str]:
    """T(doy) = m + A cos(2π (doy − d_max)/365) fitted per cell to the record (A ≥ 0); persistence of the
    record's mean when the record has fewer than ``harmonic_min_months`` months."""
    mean = np.nanmean(tair_rec, axis=1)
    if months_rec < a.harmonic_min_months:
        return np.broadcast_to(mean[:, None], (tair_rec.shape[0], doy_all.size)).copy(), "persistence of the record mean"
    peak = np.where(lat >= 0, a.warmest_doy, a.warmest_doy + DAYS_PER_YEAR / 2)[:, None]
    c_rec = np.cos(2 * np.pi * (doy_rec[None, :] - peak) / DAYS_PER_YEAR)
    ok = np.isfinite(tair_rec)
    n = ok.sum(axis=1)
    sc = np.where(ok, c_rec, 0).sum(axis=1)
    scc = np.where(ok, c_rec**2, 0).sum(axis=1)
    sy = np.where(ok, tair_rec, 0).sum(axis=1)
    scy = np.where(ok, c_rec * tair_rec, 0).sum(axis=1)
    det = n * scc - sc**2
    amp = np.where(np.abs(det) > 1e-9, (n * scy - sc * sy) / np.where(np.abs(det) > 1e-9, det, 1.0), 0.0)
    amp = np.maximum(amp, 0.0)
    m = (sy - amp * sc) / np.maximum(n, 1)
    c_all = np.cos(2 * np.pi * (doy_all[None, :] - peak) / DAYS_PER_YEAR)
    return m[:, None] + amp[:, None] * c_all, "annual harmonic fitted to the record"


def daily_drivers(values: Mapping[str, np.ndarray], times, lat: np.ndarray,
                  assumptions: DriverAssumptions = DriverAssumptions()) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Native-resolution drivers of a set of cells → every day of the whole years they touch.

    ``values``: canonical name → (cells, n_native) array; ``times``: the native time axis; ``lat`` (cells,).
    Returns (drivers name → (cells, n_days) float32 for every name in `DRIVERS`, days (datetime64[D]),
    mapped (cells,) bool, notes name → how the driver was obtained). See the module docstring for the rules.
    """
    a = assumptions
    cal = _Calendar.of(times)
    lat = np.asarray(lat, np.float64)
    n_cells = lat.size
    doy_all = (cal.days - cal.days.astype("datetime64[Y]")).astype(int) + 1
    rec_days = np.flatnonzero(cal.covered)
    doy_rec = doy_all[rec_days]
    months_rec = cal.months.size
    native_idx = cal.day_to_native[rec_days]
    if cal.resolution not in ("daily", "monthly"):  # aggregated days are numbered in order
        native_idx = np.arange(rec_days.size)

    def record(name, how="mean"):
        v = np.asarray(values[name], np.float64).reshape(n_cells, -1)
        return _to_days(v, cal, how, a.min_coverage)[:, native_idx]

    rec = {k: record(k) for k in DRIVERS if k in values}
    if "tair" in values and cal.resolution not in ("daily", "monthly"):
        for k, how in (("tmin", "min"), ("tmax", "max")):
            if k not in rec:
                rec[k] = record("tair", how)
    if "tair" not in rec:
        if "tmin" in rec and "tmax" in rec:
            rec["tair"] = (rec["tmin"] + rec["tmax"]) / 2
        else:
            raise KeyError(f"mapping needs tair (or tmin and tmax); the forcing has {sorted(values)}")
    notes = {k: "from the forcing" for k in rec}
    if "tair" in values and cal.resolution not in ("daily", "monthly") and "tmin" not in values:
        notes["tmin"] = notes["tmax"] = "daily minimum / maximum of the sub-daily tair"
    if cal.resolution == "monthly":
        notes = {k: f"{v}; each day carries its month's mean" for k, v in notes.items()}

    ok_share = np.stack([np.isfinite(v).mean(axis=1) for v in rec.values()]).min(axis=0)
    mapped = ok_share >= a.min_coverage
    rec = {k: _interpolate_gaps(v) for k, v in rec.items()}

    n_days = cal.days.size
    padded = not cal.covered.all()
    out = {}

    def place(record_values, fill):
        full = np.array(fill, np.float64, copy=True) if np.ndim(fill) == 2 else np.full((n_cells, n_days), fill, np.float64)
        full[:, rec_days] = record_values
        return full

    tair_fill, how = (None, "") if not padded else _harmonic_fill(rec["tair"], doy_rec, doy_all, lat, a, months_rec)
    out["tair"] = place(rec["tair"], tair_fill) if padded else rec["tair"]
    if padded:
        notes["tair"] += f"; days outside the record: {how}"
    for k, sign in (("tmin", -1), ("tmax", 1)):
        if k in rec:
            offset = np.nanmean(rec[k] - rec["tair"], axis=1)[:, None]
            out[k] = place(rec[k], out["tair"] + offset) if padded else rec[k]
            if padded:
                notes[k] += "; days outside the record: padded tair + the record's mean offset"
        else:
            out[k] = out["tair"] + sign * a.diurnal_range / 2
            notes[k] = a.describe(k)
    sw_clim = _angstrom_sw(lat, doy_all, a).astype(np.float64)
    if "sw_in" in rec:
        out["sw_in"] = place(rec["sw_in"], sw_clim) if padded else rec["sw_in"]
        if padded:
            notes["sw_in"] += "; days outside the record: " + a.describe("sw_in")
    else:
        out["sw_in"], notes["sw_in"] = sw_clim, a.describe("sw_in")
    vpd_clim = _svp_hpa(out["tair"]) * (1.0 - a.relative_humidity)
    if "vpd" in rec:
        out["vpd"] = place(rec["vpd"], vpd_clim) if padded else rec["vpd"]
        if padded:
            notes["vpd"] += "; days outside the record: " + a.describe("vpd")
    else:
        out["vpd"], notes["vpd"] = vpd_clim, a.describe("vpd")
    if "precip" in rec:
        out["precip"] = place(rec["precip"], np.nanmean(rec["precip"], axis=1)[:, None] * np.ones(n_days)) if padded \
            else rec["precip"]
        if padded:
            notes["precip"] += "; days outside the record: the record's mean rate"
    else:
        out["precip"], notes["precip"] = np.full((n_cells, n_days), a.precip), a.describe("precip")
    if "tsoil" in rec:
        out["tsoil"] = place(rec["tsoil"], out["tair"]) if padded else rec["tsoil"]
    else:
        out["tsoil"], notes["tsoil"] = out["tair"], a.describe("tsoil")
    if "co2" in rec:
        out["co2"] = place(rec["co2"], np.nanmean(rec["co2"], axis=1)[:, None] * np.ones(n_days)) if padded else rec["co2"]
    else:
        out["co2"], notes["co2"] = np.full((n_cells, n_days), a.co2), a.describe("co2")
    out = {k: np.where(mapped[:, None], v, np.nan).astype(np.float32) for k, v in out.items()}
    return out, cal.days, mapped, notes


