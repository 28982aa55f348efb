"""Contract-A site datasets (the layout of `kgml.synthetic.make_corpus`) assembled from the real data folders.

Each builder reads through the readers of `kgml.data` and returns a daily ``(site, time)`` dataset with
canonical drivers, targets at their own resolution, site coordinates (lat, lon, regions, vegetation) and
static ``mat``/``map``, ready for `kgml.models.hybrid.prepare_windows` (use ``require_targets=True``, see below).

Conventions shared by every builder (each docstring adds its own method):

* The daily time axis runs from 1 January of the first year to 31 December of the last year of the union of
  the sites' records (29 February included; windows drop it). Outside a site's record its drivers are NaN and
  its targets are NaN. `kgml.models.hybrid.prepare_windows` fills NaN drivers by interpolation, so such windows have
  made-up drivers — but they carry no target, and ``require_targets=True`` drops them. Always cut windows of
  these datasets with ``require_targets=True`` (or select the years of ``first_year`` … ``last_year``).
* Driver gaps: runs of at most ``max_gap`` missing steps inside a site's record are filled by linear
  interpolation in time; a site-year whose required drivers (tair, sw_in, vpd, precip) still have a gap has its
  targets set to NaN, so no window with invented drivers is ever trained or scored on (counted in
  ``attrs["masked_site_years"]``). Optional drivers are filled as each builder documents and flagged.
* tmin/tmax, when the source has no daily extremes, are tair ∓ half of `DIURNAL_RANGE` (10 °C, the
  `kgml.spatial.mapping` default); the daily mean stays tair exactly.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of, one_file, site_from_name
from kgml.data.regions import _STATE_BOXES, add_regions, get_region_map, site_climate
from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.soil_respiration import cosore_base, cosore_datasets, read_cosore
from kgml.data.towers import QCPolicy, combine_sites, read_fluxnet_dir
from kgml.data.towers.common import _FLUXNET_NAME as FLUXNET_NAME
from kgml.data.towers.common import MISSING_VALUE, parse_fluxnet_filename
from kgml.data.yields import read_khaki_corn, read_thompson
from kgml.paths import DataNotFoundError, dataset_path
from kgml.paths import data_dir as resolve_data_dir
from kgml.variables import get_variable

__all__ = [
    "BUILDERS",
    "DEFAULT_MAX_GAP_DAYS",
    "DEFAULT_MAX_GAP_MONTHS",
    "DEFAULT_QC_MIN",
    "DIURNAL_RANGE",
    "REQUIRED_DRIVERS",
    "antecedent_drivers",
    "build",
    "builder_name",
    "cosore_daily",
    "fluxnet_daily",
    "fluxnet_monthly",
    "fluxnet_monthly_uncertainty",
    "il_corn",
    "state_yield",
]

#: Assumed diurnal temperature range (°C) when a source gives only the daily/monthly mean: tmin = tair − 5,
#: tmax = tair + 5. The `kgml.spatial.mapping` default; the order of the land-mean diurnal range of mid-latitude
#: stations (Easterling et al. 1997, Science 277:364, report land DTRs of roughly 8–14 °C).
DIURNAL_RANGE = 10.0
#: Default minimum NEE_VUT_REF_QC (fraction of measured or good-quality gap-filled half-hours in the period)
#: for a tower flux to be a target; the `kgml.data.towers.QCPolicy` default. GPP/RECO follow NEE's QC.
DEFAULT_QC_MIN = 0.5
#: Longest driver gap (days) filled by linear interpolation in daily datasets; longer gaps mask the site-year.
DEFAULT_MAX_GAP_DAYS = 7
#: Longest driver gap (months) filled by linear interpolation in monthly source data.
DEFAULT_MAX_GAP_MONTHS = 2
#: Drivers every process model needs; a site-year with a gap in any of them keeps no target.
REQUIRED_DRIVERS = ("tair", "sw_in", "vpd", "precip")

#: Barometric pressure from elevation, FAO-56 eq. 7 (Allen et al. 1998): P = 101.3 ((293 − 0.0065 z)/293)^5.26 kPa.
_FAO56_P0_KPA = 101.3
_FAO56_T0_K = 293.0
_FAO56_LAPSE_K_PER_M = 0.0065
_FAO56_EXPONENT = 5.26
_PA_PER_KPA = 1000.0
_STANDARD_PRESSURE_PA = 101325.0

_TOWER_VARIABLES = ("tair", "sw_in", "vpd", "precip", "tsoil", "co2", "patm", "nee", "gpp", "reco")
_TOWER_TARGETS = ("nee", "gpp", "reco")
_MONTH_LONG_NAME = "months since year 0 (year*12 + month-1)"


# ---------------------------------------------------------------------------------------------------------
# helpers: time axes, gaps, fills
# ---------------------------------------------------------------------------------------------------------


def _daily_axis(first_year: int, last_year: int) -> np.ndarray:
    return np.arange(np.datetime64(f"{first_year}-01-01"), np.datetime64(f"{last_year + 1}-01-01"),
                     np.timedelta64(1, "D")).astype("datetime64[ns]")


def _month_codes(times: np.ndarray) -> np.ndarray:
    months = np.asarray(times).astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    return months + 1970 * 12


def _years(times: np.ndarray) -> np.ndarray:
    return np.asarray(times).astype("datetime64[Y]").astype(np.int64) + 1970


def _fill_short_gaps(values: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation in time (last axis) of interior NaN runs of at most ``max_gap`` steps, per row."""
    out = np.array(values, dtype=np.float64, copy=True)
    if max_gap <= 0:
        return out
    t = np.arange(out.shape[-1])
    for row in out.reshape(-1, out.shape[-1]):
        ok = np.isfinite(row)
        if ok.all() or ok.sum() < 2:
            continue
        idx = np.flatnonzero(ok)
        gaps = np.diff(idx) - 1
        fill = gaps[(gaps > 0) & (gaps <= max_gap)]
        if fill.size == 0:
            continue
        interp = np.interp(t, idx, row[idx])
        for a, g in zip(idx[:-1], gaps, strict=True):
            if 0 < g <= max_gap:
                row[a + 1:a + 1 + g] = interp[a + 1:a + 1 + g]
    return out


def _pressure_from_elevation(elevation: np.ndarray) -> np.ndarray:
    """Surface pressure (Pa) from elevation (m), FAO-56 eq. 7; standard pressure where elevation is unknown."""
    z = np.asarray(elevation, dtype=np.float64)
    p = _FAO56_P0_KPA * ((_FAO56_T0_K - _FAO56_LAPSE_K_PER_M * z) / _FAO56_T0_K) ** _FAO56_EXPONENT * _PA_PER_KPA
    return np.where(np.isfinite(p), p, _STANDARD_PRESSURE_PA)


def _fill_from(values: np.ndarray, fallback: np.ndarray, record: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values with NaN inside ``record`` replaced by ``fallback``; also the per-row filled fraction of the record."""
    need = record & ~np.isfinite(values)
    out = np.where(need, fallback, values)
    n = np.maximum(record.sum(axis=-1), 1)
    return out, (need & np.isfinite(fallback)).sum(axis=-1) / n


def _fill_co2(co2: np.ndarray, record: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remaining CO2 gaps inside the record ← the cross-site mean at that step (interpolated in time where no
    site measured); the filled fraction per site."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        across = np.nanmean(co2, axis=0)
    ok = np.isfinite(across)
    if not ok.any():
        return co2, np.zeros(co2.shape[0])
    t = np.arange(across.size)
    across = np.interp(t, t[ok], across[ok])
    return _fill_from(co2, np.broadcast_to(across, co2.shape), record)


def _year_mask(drivers: Mapping[str, np.ndarray], years: np.ndarray, record: np.ndarray) -> np.ndarray:
    """(site, step) True where the step's site-year has a gap in a required driver inside or outside the record
    (a year the site only partly covers counts as a gap)."""
    bad_step = np.zeros(record.shape, bool)
    for name in REQUIRED_DRIVERS:
        bad_step |= ~np.isfinite(drivers[name])
    out = np.zeros(record.shape, bool)
    for y in np.unique(years):
        sel = years == y
        bad = bad_step[:, sel].any(axis=1)
        out[:, sel] = bad[:, None]
    return out


def _history(call: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} kgml.data.assemble.{call}"


def _attrs(name: str, **extra) -> dict:
    return {**{k: v for k, v in get_variable(name).attrs().items() if k in ("units", "long_name", "standard_name")},
            **extra}


def _static_climate(site_ids: Sequence[str], times: np.ndarray, tair: np.ndarray, precip: np.ndarray,
                    resolution: str) -> tuple[np.ndarray, np.ndarray]:
    clim = xr.Dataset({"tair": (("site", "time"), tair), "precip": (("site", "time"), precip)},
                      coords={"site": list(site_ids), "time": times}, attrs={"time_resolution": resolution})
    return site_climate(clim)


def _add_site_labels(ds: xr.Dataset, vegetation: Sequence[str] | str) -> xr.Dataset:
    """Region coordinates (continent, climate_zone, igbp_group, country, state) and ``vegetation``."""
    n = ds.sizes["site"]
    if "igbp" not in ds.coords:
        ds = ds.assign_coords(igbp=("site", np.full(n, "", dtype=str)))
    ds = add_regions(ds, [n for n in ("continent", "climate_zone", "igbp_group", "country") if n not in ds.coords])
    if "state" not in ds.coords:
        ds = ds.assign_coords(state=("site", np.asarray(get_region_map("us_state")(ds)).astype(str),
                                     {"region_map": "us_state"}))
    veg = np.full(n, vegetation, dtype=object) if isinstance(vegetation, str) else np.asarray(vegetation, dtype=object)
    return ds.assign_coords(vegetation=("site", veg.astype(str), {"long_name": "process model (kgml.synthetic.build_model)"}))


def _check_sites(requested: Iterable[str] | None, found: Sequence[str], source: Path) -> None:
    if requested is None:
        return
    missing = sorted(set(requested) - set(found))
    if missing:
        raise DataValidationError(source, "site", f"no readable file for requested site(s) {missing}")


def _finish(ds: xr.Dataset, *, title: str, sources: Sequence[str], call: str, extra: Mapping[str, object]) -> xr.Dataset:
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": title,
        "source": "\n".join(str(s) for s in sources),
        "history": _history(call),
        "time_resolution": "daily",
        "institution": "kgml",
        **{k: v for k, v in extra.items()},
    }
    for name in ("lat", "lon"):
        ds[name] = ds[name].astype(np.float32)
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    ds["mat"].attrs.update(units="degC", long_name="mean annual air temperature (from the record)")
    ds["map"].attrs.update(units="mm yr-1", long_name="mean annual precipitation (from the record)")
    ds["time"].attrs.update(long_name="day (local standard time), midnight stamp")
    return ds


# ---------------------------------------------------------------------------------------------------------
# FLUXNET2015 monthly
# ---------------------------------------------------------------------------------------------------------


def _tower_drivers(native: xr.Dataset, record: np.ndarray, max_gap: int, source: Path) -> tuple[dict, dict]:
    """Driver arrays (site, step) on the native axis, gaps filled as documented; per-site fill fractions."""
    missing = [v for v in REQUIRED_DRIVERS if v not in native]
    if missing:
        raise DataValidationError(source, missing[0], f"required driver(s) {missing} absent from every file read")
    drivers = {v: _fill_short_gaps(native[v].transpose("site", "time").values, max_gap)
               for v in (*REQUIRED_DRIVERS, "tsoil", "co2", "patm") if v in native}
    for v in REQUIRED_DRIVERS:  # outside the record nothing is invented
        drivers[v] = np.where(record, drivers[v], np.nan)
    flags = {}
    tair = drivers["tair"]
    tsoil = drivers.get("tsoil", np.full(tair.shape, np.nan))
    drivers["tsoil"], flags["tsoil_filled_fraction"] = _fill_from(np.where(record, tsoil, np.nan), tair, record)
    if "co2" in drivers:
        drivers["co2"], flags["co2_filled_fraction"] = _fill_co2(np.where(record, drivers["co2"], np.nan), record)
    elevation = native["elevation"].values if "elevation" in native.coords else np.full(tair.shape[0], np.nan)
    patm = drivers.get("patm", np.full(tair.shape, np.nan))
    fallback = np.broadcast_to(_pressure_from_elevation(elevation)[:, None], tair.shape)
    drivers["patm"], flags["patm_filled_fraction"] = _fill_from(np.where(record, patm, np.nan), fallback, record)
    return drivers, flags


def _soil_water(native: xr.Dataset, record: np.ndarray, max_gap: int, source: Path) -> dict[str, np.ndarray]:
    """``swc`` (%) measured where the tower has it, else (inside the record) the mean of every measured
    tower-month; ``swc_measured`` 1/0 (`fluxnet_monthly` with ``soil_water``)."""
    if "swc" in native:
        raw = _fill_short_gaps(native["swc"].transpose("site", "time").values, max_gap)
    else:
        raw = np.full(record.shape, np.nan)
    measured = np.isfinite(raw) & record
    if not measured.any():
        raise DataValidationError(source, "swc", "soil_water=True but no tower has SWC_F_MDS_1")
    fill = float(raw[measured].mean())
    swc = np.where(measured, raw, np.where(record, fill, np.nan))
    return {"swc": swc, "swc_measured": np.where(record, measured.astype(np.float64), np.nan),
            "swc_rew": relative_extractable_water(np.where(measured, raw, np.nan))}


#: A tower's SWC record gives a relative extractable water only with at least this many measured months and a
#: range (max − min) of at least this many %-points (a flat or short record says nothing about dry and wet).
REW_MIN_MONTHS = 12
REW_MIN_RANGE = 2.0


def relative_extractable_water(swc: np.ndarray) -> np.ndarray:
    """REW = (θ − θ_min)/(θ_max − θ_min) per row (site) of a (site, time) soil-water record, θ_min and θ_max
    the row's lowest and highest measured values (Granier et al. 1999 Ecol. Model. 116:269, with the observed
    extremes standing in for wilting point and field capacity, as Granier et al. 2007 Agric. For. Meteorol.
    143:123 did across European towers). NaN where θ is NaN and on rows with fewer than `REW_MIN_MONTHS` values
    or a range below `REW_MIN_RANGE` (same units as θ)."""
    swc = np.asarray(swc, np.float64)
    out = np.full(swc.shape, np.nan)
    for i, row in enumerate(swc):
        ok = np.isfinite(row)
        if ok.sum() < REW_MIN_MONTHS:
            continue
        lo, hi = float(row[ok].min()), float(row[ok].max())
        if hi - lo < REW_MIN_RANGE:
            continue
        out[i] = (row - lo) / (hi - lo)
    return out


_DRIVER_COMMENTS = {
    "tsoil": "TS_F_MDS_1; where missing in the record: tair (fraction per site in tsoil_filled_fraction)",
    "co2": "CO2_F_MDS; where missing in the record: the cross-site mean of the same period (co2_filled_fraction)",
    "patm": "PA_F kPa → Pa; where missing: FAO-56 eq. 7 from elevation, else 101325 Pa (patm_filled_fraction)",
    "swc": "SWC_F_MDS_1 (shallowest sensor); where the tower has none: the mean of all measured tower-months "
           "(see swc_measured)",
}


def fluxnet_monthly(
    data_dir: str | os.PathLike | None = None,
    *,
    sites: Iterable[str] | None = None,
    min_months: int = 12,
    qc_min: float = DEFAULT_QC_MIN,
    max_gap_months: int = DEFAULT_MAX_GAP_MONTHS,
    cache: bool | str | os.PathLike = True,
    progress: bool = False,
    soil_water: bool = False,
) -> xr.Dataset:
    """The FLUXNET2015 SUBSET monthly (MM) towers as a Contract-A dataset with monthly targets.

    Source: ``<data_dir>/fluxnet2015_subset_mm`` read with `kgml.data.towers.read_fluxnet_dir` (site table
    ``sites.csv``; a file with out-of-range values keeps its other variables: ``invalid="drop"``).

    * Targets ``nee_monthly``, ``gpp_monthly``, ``reco_monthly`` (gC m-2 d-1, the monthly means of daily values
      that the MM files hold: NEE_VUT_REF, GPP_NT_VUT_REF, RECO_NT_VUT_REF) on the ``month`` code axis
      (year*12 + month-1); NaN where NEE_VUT_REF_QC < ``qc_min`` (GPP and RECO follow NEE's QC), outside the
      record and in site-years with a driver gap. ``nee_monthly_qc`` keeps the QC fraction. No daily target.
    * Daily drivers: each month's mean (TA_F, SW_IN_F 24-h mean, VPD_F, P_F as mm d-1, TS_F_MDS_1, CO2_F_MDS,
      PA_F) is held on every day of that month, so the monthly mean of the daily series equals the file's value
      exactly (precipitation becomes a uniform daily rate with the right monthly total). tmin/tmax =
      tair ∓ `DIURNAL_RANGE`/2. Interior gaps up to ``max_gap_months`` months are interpolated first.
      tsoil ← tair, co2 ← cross-site mean, patm ← FAO-56 eq. 7 from elevation where missing (flagged per site).
      SWC is not included (38 of the sites have none; a NaN feature would mask days) unless ``soil_water``:
      then ``swc`` (%, SWC_F_MDS_1, shallowest sensor, held on every day like the other drivers; short gaps
      interpolated) is the measured value where the tower has one, and elsewhere in the record the mean of all
      measured tower-months (a constant, so that no day is masked), with ``swc_measured`` (1 measured, 0 filled)
      beside it, so that a model can tell a measurement from the fill; and ``swc_rew``, the tower's relative
      extractable water (`relative_extractable_water`, NaN where not measured), for physics that reads it.
    * Sites with fewer than ``min_months`` QC-passing NEE months are dropped (``attrs["dropped_sites"]``).
    * Site coordinates: lat, lon, elevation, igbp, igbp_group, continent, climate_zone, country, state (US),
      site_name, vegetation = "grassland" (the natural-ecosystem model, for every biome incl. CRO; ``igbp``
      keeps the class), static mat (°C) and map (mm yr-1) from the record (`kgml.data.regions.site_climate`),
      first_year, last_year, n_nee_months.
    ``sites`` restricts the read (an unknown site is an error); ``cache`` is passed to the reader.
    """
    if not 0.0 <= qc_min <= 1.0:
        raise ValueError(f"qc_min must be in [0, 1], got {qc_min}")

    root = dataset_path("fluxnet2015_subset_mm", data_dir)
    wanted = None if sites is None else sorted({str(s) for s in sites})
    if wanted is not None and not wanted:
        raise DataValidationError(root, "site", "empty site selection")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        variables = (*_TOWER_VARIABLES, "swc") if soil_water else _TOWER_VARIABLES
        mm = read_fluxnet_dir(root, resolution="MM", dataset="SUBSET", sites=wanted, variables=variables,
                              qc=QCPolicy(min_fraction=qc_min), keep_qc=True, invalid="drop", errors="warn",
                              progress=progress, cache=cache)
    site_ids = [str(s) for s in mm.site.values]
    _check_sites(wanted, site_ids, root)
    for name in _TOWER_TARGETS:
        if name not in mm:
            raise DataValidationError(root, name, "target absent from every file read")

    years = _years(mm.time.values)
    y0, y1 = int(years.min()), int(years.max())
    month_times = np.arange(np.datetime64(f"{y0}-01"), np.datetime64(f"{y1 + 1}-01"),
                            np.timedelta64(1, "M")).astype("datetime64[ns]")
    mm = mm.reindex(time=month_times)
    codes = _month_codes(month_times)
    myears = _years(month_times)
    record = np.isfinite(_fill_short_gaps(mm["tair"].transpose("site", "time").values, max_gap_months))
    drivers, flags = _tower_drivers(mm, record, max_gap_months, root)
    bad_year = _year_mask(drivers, myears, record)
    if soil_water:  # after the driver-gap mask: a missing SWC sensor never masks a site-year
        drivers.update(_soil_water(mm, record, max_gap_months, root))

    targets = {n: mm[n].transpose("site", "time").values.astype(np.float64) for n in _TOWER_TARGETS}
    had = np.isfinite(targets["nee"])
    masked_site_years = len({(s, int(y)) for s, t in zip(*np.nonzero(had & bad_year), strict=True) for y in [myears[t]]})
    for n in targets:
        targets[n] = np.where(bad_year, np.nan, targets[n])
    n_months = np.isfinite(targets["nee"]).sum(axis=1)
    keep = n_months >= min_months
    dropped = [f"{s} ({int(k)} NEE months)" for s, k, ok in zip(site_ids, n_months, keep, strict=True) if not ok]
    if not keep.any():
        raise DataValidationError(root, "nee", f"no site has at least min_months={min_months} QC-passing NEE months "
                                  f"(qc_min={qc_min}); sites read: {site_ids[:10]}")
    idx = np.flatnonzero(keep)
    site_ids = [site_ids[i] for i in idx]
    record, bad_year = record[idx], bad_year[idx]
    drivers = {k: v[idx] for k, v in drivers.items()}
    targets = {k: v[idx] for k, v in targets.items()}
    flags = {k: v[idx] for k, v in flags.items()}
    qc = mm["nee_qc"].transpose("site", "time").values[idx] if "nee_qc" in mm else np.full(record.shape, np.nan)

    # years the kept sites cover
    rec_years = [myears[r] for r in record]
    first = np.array([int(r.min()) for r in rec_years])
    last = np.array([int(r.max()) for r in rec_years])
    yk0, yk1 = int(first.min()), int(last.max())
    msel = (myears >= yk0) & (myears <= yk1)
    codes, month_times = codes[msel], month_times[msel]
    drivers = {k: v[:, msel] for k, v in drivers.items()}
    targets = {k: v[:, msel] for k, v in targets.items()}
    qc, record = qc[:, msel], record[:, msel]

    days = _daily_axis(yk0, yk1)
    pick = _month_codes(days) - codes[0]
    mat, map_mm = _static_climate(site_ids, month_times, drivers["tair"], drivers["precip"], "MM")

    kept_mm = mm.isel(site=idx)
    data_vars = {}
    held = "the month's mean held on every day of the month (monthly mean preserved exactly)"
    for name, arr in drivers.items():
        column = {"tair": "TA_F", "sw_in": "SW_IN_F", "vpd": "VPD_F", "precip": "P_F"}.get(name, "")
        comment = _DRIVER_COMMENTS.get(name, f"FLUXNET2015 MM {column}")
        attrs = ({"units": "1", "long_name": "1 where swc is measured, 0 where filled", "comment": held}
                 if name == "swc_measured" else
                 {"units": "1", "long_name": "relative extractable water of the tower's own SWC record",
                  "comment": f"(SWC − its min)/(max − min) over the tower's measured months (Granier et al. 1999); "
                             f"NaN where not measured or the record is shorter than {REW_MIN_MONTHS} months or "
                             f"flatter than {REW_MIN_RANGE:g} %; {held}"}
                 if name == "swc_rew" else _attrs(name, comment=f"{comment}; {held}"))
        data_vars[name] = (("site", "time"), arr[:, pick].astype(np.float32), attrs)
    tair_d = drivers["tair"][:, pick]
    for name, sign in (("tmin", -1.0), ("tmax", 1.0)):
        data_vars[name] = (("site", "time"), (tair_d + sign * DIURNAL_RANGE / 2).astype(np.float32),
                           _attrs(name, comment=f"tair {'−' if sign < 0 else '+'} {DIURNAL_RANGE / 2:g} °C "
                                               f"(assumed diurnal range {DIURNAL_RANGE:g} °C; FLUXNET MM has no Tmin/Tmax)"))
    for name, arr in targets.items():
        column = {"nee": "NEE_VUT_REF", "gpp": "GPP_NT_VUT_REF", "reco": "RECO_NT_VUT_REF"}[name]
        data_vars[f"{name}_monthly"] = (("site", "month"), arr.astype(np.float32), _attrs(
            name, cell_methods="time: mean (monthly)",
            comment=f"FLUXNET2015 MM {column}; NaN where NEE_VUT_REF_QC < {qc_min}, outside the record, or in a "
                    "site-year with a driver gap"))
    data_vars["nee_monthly_qc"] = (("site", "month"), np.where(record, qc, np.nan).astype(np.float32),
                                   {"units": "1", "long_name": "fraction of measured or good-quality gap-filled NEE "
                                    "half-hours in the month (NEE_VUT_REF_QC)"})
    coords = {
        "site": ("site", np.asarray(site_ids, dtype=str)),
        "time": ("time", days),
        "month": ("month", codes.astype(np.int64), {"long_name": _MONTH_LONG_NAME}),
        "lat": ("site", kept_mm["lat"].values),
        "lon": ("site", kept_mm["lon"].values),
        "elevation": ("site", kept_mm["elevation"].values.astype(np.float32), {"units": "m", "long_name": "elevation"}),
        "igbp": ("site", kept_mm["igbp"].values.astype(str), {"long_name": "IGBP land-cover class"}),
        "mat": ("site", mat.astype(np.float32)),
        "map": ("site", map_mm.astype(np.float32)),
        "first_year": ("site", first.astype(np.int32), {"long_name": "first calendar year of the site's record"}),
        "last_year": ("site", last.astype(np.int32), {"long_name": "last calendar year of the site's record"}),
        "n_nee_months": ("site", np.isfinite(targets["nee"]).sum(axis=1).astype(np.int32),
                         {"long_name": "months with a QC-passing NEE target"}),
    }
    if "site_name" in kept_mm.coords:
        coords["site_name"] = ("site", kept_mm["site_name"].values.astype(str))
    for name, frac in flags.items():
        coords[name] = ("site", frac.astype(np.float32), {"units": "1", "long_name": name.replace("_", " ") + " of the record"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds = _add_site_labels(ds, "grassland")
    files = [f for f in mm.attrs.get("source_files", "").split("\n") if any(f"_{s}_" in f for s in site_ids)]
    return _finish(ds, title="FLUXNET2015 SUBSET monthly towers (kgml site dataset, monthly targets)",
                   sources=files, call=f"fluxnet_monthly(min_months={min_months}, qc_min={qc_min}, "
                   f"max_gap_months={max_gap_months}, soil_water={soil_water}, n_sites={len(site_ids)})",
                   extra={"qc_min": qc_min, "dropped_sites": "\n".join(dropped),
                          "skipped_files": mm.attrs.get("skipped_files", ""), "masked_site_years": masked_site_years,
                          "driver_method": f"monthly means held on every day of the month; tmin/tmax = tair ∓ "
                                           f"{DIURNAL_RANGE / 2:g} °C; gaps ≤ {max_gap_months} months interpolated",
                          "references": "Pastorello et al. (2020) Sci. Data 7:225, doi:10.1038/s41597-020-0534-3"})


# ---------------------------------------------------------------------------------------------------------
# FLUXNET daily (US-Ne1 SUBSET DD + ICOS Warm Winter 2020 FULLSET DD)
# ---------------------------------------------------------------------------------------------------------

#: Daily tower folders read by `fluxnet_daily`, and sites whose process model is not the natural ecosystem.
FLUXNET_DAILY_FOLDERS = ("fluxnet2015_subset_dd_us-ne1", "fluxnet2020_warmwinter_fullset_dd")
_DAILY_VEGETATION = {"US-Ne1": "maize"}  # irrigated continuous maize (Suyker et al. 2005)


def _trailing_mean(x: np.ndarray, days: int) -> np.ndarray:
    """Mean of the finite values of the last ``days`` steps (this one included) along the last axis; NaN where
    ``x`` is NaN (a missing driver stays missing) or no value of the window is finite."""
    ok = np.isfinite(x)
    cs = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(np.where(ok, x, 0.0), axis=-1)], axis=-1)
    cn = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(ok, axis=-1)], axis=-1)
    lo = np.maximum(np.arange(1, x.shape[-1] + 1) - days, 0)
    tot = cs[..., 1:] - cs[..., lo]
    cnt = cn[..., 1:] - cn[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return np.where(ok, out, np.nan)


def antecedent_drivers(ds: xr.Dataset, *, precip_days: Sequence[int] = (90, 365),
                       tair_days: Sequence[int] = (90,)) -> xr.Dataset:
    """``ds`` with drivers that carry the memory of the weather: ``precip_rel_<N>d`` — the mean precipitation
    of the last N days (this one included) over the site's mean daily precipitation of its record (1 = usual;
    an antecedent-precipitation index in the spirit of the standardised precipitation index, McKee et al. 1993,
    whose 3- and 12-month scales track soil and ground-water drought) — and ``tair_<N>d``, the mean air
    temperature of the last N days (°C; the thermal memory of phenology and soil warming). At the start of a
    record the window holds the days there are; a day whose driver is missing stays missing. A site whose mean
    precipitation is not positive is an error."""
    out = ds.copy()
    if precip_days:
        p = ds["precip"].transpose("site", "time")
        mean = p.mean("time", skipna=True).values
        bad = ~(np.isfinite(mean) & (mean > 0))
        if bad.any():
            site = str(ds.site.values[int(np.argmax(bad))])
            raise DataValidationError(ds.attrs.get("source"), "precip",
                                      f"site {site}: mean precipitation is not positive; no relative index")
        for n in precip_days:
            v = _trailing_mean(p.values.astype(np.float64), int(n)) / mean[:, None]
            out[f"precip_rel_{n}d"] = (("site", "time"), v.astype(np.float32), {
                "units": "1", "long_name": f"precipitation of the last {n} days relative to the site mean"})
    for n in tair_days:
        t = ds["tair"].transpose("site", "time")
        v = _trailing_mean(t.values.astype(np.float64), int(n))
        out[f"tair_{n}d"] = (("site", "time"), v.astype(np.float32), {
            "units": "degC", "long_name": f"mean air temperature of the last {n} days"})
    return out


#: σ of a normal distribution from its interquartile range: IQR = 2 × 0.6745 σ.
IQR_TO_SD = 1.349


def fluxnet_monthly_uncertainty(data_dir: str | os.PathLike | None = None, *,
                                sites: Iterable[str] | None = None) -> xr.Dataset:
    """The published uncertainty of the FLUXNET2015 SUBSET monthly NEE, on the ``month`` code axis of
    `fluxnet_monthly` (year*12 + month-1), gC m-2 d-1 (Pastorello et al. 2020 Sci. Data 7:225):

    * ``nee_randunc``: NEE_VUT_REF_RANDUNC, the random uncertainty of the monthly mean (independent between
      months);
    * ``nee_ustar_sd``: (NEE_VUT_75 − NEE_VUT_25) / `IQR_TO_SD`, the spread of the monthly NEE over the
      ensemble of u* thresholds read as a standard deviation; the VUT threshold is estimated per year, so this
      error is shared by the months of a year.

    -9999 is missing (NaN). A file without one of the columns, or with a negative or infinite value, is an
    error naming the file and the column. ``sites`` restricts the read (an unknown site is an error)."""
    root = dataset_path("fluxnet2015_subset_mm", data_dir)
    files = {}
    for path in sorted(files_of(root, "fluxnet", named=FLUXNET_NAME)):  # FLUXNET tables by content
        info = parse_fluxnet_filename(path)
        if info is not None and info.resolution != "MM":
            continue
        if info is None:  # a FLUXNET table not named in the convention: monthly if its stamps are YYYYMM
            first = pd.read_csv(path, nrows=1, usecols=["TIMESTAMP"], dtype=str)["TIMESTAMP"]
            if first.empty or len(str(first.iloc[0]).strip()) != 6:
                continue
        files[info.site if info is not None else site_from_name(path)] = path
    wanted = sorted(files) if sites is None else sorted({str(s) for s in sites})
    missing = [s for s in wanted if s not in files]
    if missing:
        raise DataValidationError(root, "site", f"no MM file for {', '.join(missing)}")
    columns = ("NEE_VUT_REF_RANDUNC", "NEE_VUT_25", "NEE_VUT_75")
    per_site = {}
    for site in wanted:
        path = files[site]
        tab = pd.read_csv(path, usecols=lambda c: c in ("TIMESTAMP", *columns), dtype={"TIMESTAMP": str})
        for col in ("TIMESTAMP", *columns):
            if col not in tab.columns:
                raise DataValidationError(path, col, "column absent")
        stamp = tab["TIMESTAMP"].str.strip()
        if not stamp.str.fullmatch(r"\d{6}").all():
            raise DataValidationError(path, "TIMESTAMP", "not YYYYMM in every row (a monthly MM file?)")
        code = stamp.str[:4].astype(int).to_numpy() * 12 + stamp.str[4:].astype(int).to_numpy() - 1
        values = {}
        for col in columns:
            v = pd.to_numeric(tab[col], errors="coerce").to_numpy(np.float64)
            bad = tab[col].notna().to_numpy() & ~np.isfinite(v) | np.isinf(v)
            if bad.any():
                raise DataValidationError(path, col, f"non-numeric or infinite value in row {int(np.argmax(bad)) + 2}")
            values[col] = np.where(v == MISSING_VALUE, np.nan, v)
        if (values["NEE_VUT_REF_RANDUNC"] < 0).any():
            raise DataValidationError(path, "NEE_VUT_REF_RANDUNC", "negative random uncertainty")
        per_site[site] = (code, values["NEE_VUT_REF_RANDUNC"],
                          np.abs(values["NEE_VUT_75"] - values["NEE_VUT_25"]) / IQR_TO_SD)
    codes = np.unique(np.concatenate([c for c, _, _ in per_site.values()])) if per_site else np.zeros(0, int)
    arrays = {k: np.full((len(wanted), codes.size), np.nan) for k in ("nee_randunc", "nee_ustar_sd")}
    for i, site in enumerate(wanted):
        code, rand, ustar = per_site[site]
        j = np.searchsorted(codes, code)
        arrays["nee_randunc"][i, j] = rand
        arrays["nee_ustar_sd"][i, j] = ustar
    attrs = {"nee_randunc": {"units": "gC m-2 d-1", "long_name": "random uncertainty of monthly NEE",
                             "comment": "FLUXNET2015 MM NEE_VUT_REF_RANDUNC"},
             "nee_ustar_sd": {"units": "gC m-2 d-1", "long_name": "u*-threshold uncertainty of monthly NEE",
                              "comment": f"FLUXNET2015 MM (NEE_VUT_75 - NEE_VUT_25) / {IQR_TO_SD}"}}
    return xr.Dataset({k: (("site", "month"), v, attrs[k]) for k, v in arrays.items()},
                      coords={"site": wanted, "month": codes}, attrs={"source": str(root)})


def fluxnet_daily(
    data_dir: str | os.PathLike | None = None,
    *,
    sites: Iterable[str] | None = None,
    qc_min: float = DEFAULT_QC_MIN,
    max_gap_days: int = DEFAULT_MAX_GAP_DAYS,
    cache: bool | str | os.PathLike = True,
) -> xr.Dataset:
    """US-Ne1 (FLUXNET2015 SUBSET DD) and the ICOS Warm Winter 2020 FULLSET DD sites as a Contract-A dataset.

    * Daily targets ``nee``, ``gpp``, ``reco`` (gC m-2 d-1; NEE_VUT_REF, GPP_NT_VUT_REF, RECO_NT_VUT_REF), NaN
      where NEE_VUT_REF_QC < ``qc_min`` (GPP/RECO follow NEE), outside the record and in site-years with a
      driver gap; ``nee_qc`` keeps the daily QC fraction.
    * Drivers: TA_F, SW_IN_F, VPD_F, P_F, TS_F_MDS_1, CO2_F_MDS, PA_F (Pa); gaps of at most ``max_gap_days``
      inside the record are interpolated; a site-year (calendar year) with a longer gap in tair, sw_in, vpd or
      precip — including a year the record covers only in part (US-Ne1 2001 and 2012 of this truncated copy;
      Warm Winter years whose P_F is missing) — keeps no target. tsoil ← tair, co2 ← the cross-site mean,
      patm ← FAO-56 eq. 7 from elevation where missing, flagged per site; tmin/tmax = tair ∓
      `DIURNAL_RANGE`/2 (FLUXNET DD has no daily extremes). SWC is not included.
    * vegetation: "maize" for US-Ne1 (irrigated continuous maize), "grassland" (natural-ecosystem model) for
      the others; static mat/map from the record; regions as in `fluxnet_monthly`.
    A missing folder is skipped when the other exists (a `DataWarning`); both missing is an error.
    """
    if not 0.0 <= qc_min <= 1.0:
        raise ValueError(f"qc_min must be in [0, 1], got {qc_min}")

    base = resolve_data_dir(data_dir)
    wanted = None if sites is None else sorted({str(s) for s in sites})
    if wanted is not None and not wanted:
        raise DataValidationError(base, "site", "empty site selection")
    parts, missing_folders = [], []
    for folder in FLUXNET_DAILY_FOLDERS:
        try:
            root = dataset_path(folder, base)
        except DataNotFoundError:
            missing_folders.append(folder)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            try:
                part = read_fluxnet_dir(root, resolution="DD", sites=wanted, variables=_TOWER_VARIABLES,
                                        qc=QCPolicy(min_fraction=qc_min), keep_qc=True, invalid="drop",
                                        errors="warn", cache=cache)
            except DataValidationError as err:
                if wanted is not None and "no FLUXNET files found" in err.problem:
                    continue  # none of the requested sites is in this folder
                raise
        parts.append(part)
    if len(missing_folders) == len(FLUXNET_DAILY_FOLDERS):
        raise DataValidationError(base, None, f"none of the daily tower folders {list(FLUXNET_DAILY_FOLDERS)} exists")
    if missing_folders:
        warnings.warn(f"{base}: daily tower folder(s) {missing_folders} not found; using the others", DataWarning,
                      stacklevel=2)
    if not parts:
        raise DataValidationError(base, "site", f"no daily tower file for the requested site(s) {wanted}")
    sources = [f for p in parts for f in p.attrs.get("source_files", "").split("\n") if f]
    skipped = [f for p in parts for f in p.attrs.get("skipped_files", "").split("\n") if f]
    native = combine_sites(parts, source=base)
    site_ids = [str(s) for s in native.site.values]
    _check_sites(wanted, site_ids, base)
    for name in _TOWER_TARGETS:
        if name not in native:
            raise DataValidationError(base, name, "target absent from every file read")

    years = _years(native.time.values)
    days = _daily_axis(int(years.min()), int(years.max()))
    native = native.reindex(time=days)
    dyears = _years(days)
    record = np.isfinite(_fill_short_gaps(native["tair"].transpose("site", "time").values, max_gap_days))
    drivers, flags = _tower_drivers(native, record, max_gap_days, base)
    bad_year = _year_mask(drivers, dyears, record)
    targets = {n: native[n].transpose("site", "time").values.astype(np.float64) for n in _TOWER_TARGETS}
    had = np.isfinite(targets["nee"])
    masked = {(int(s), int(dyears[t])) for s, t in zip(*np.nonzero(had & bad_year), strict=True)}
    for n in targets:
        targets[n] = np.where(bad_year, np.nan, targets[n])
    if not np.isfinite(targets["nee"]).any():
        raise DataValidationError(base, "nee", f"no QC-passing NEE day in a gap-free site-year (qc_min={qc_min})")
    mat, map_mm = _static_climate(site_ids, days, drivers["tair"], drivers["precip"], "DD")
    rec_years = [dyears[r] for r in record]

    data_vars = {}
    for name, arr in drivers.items():
        column = {"tair": "TA_F", "sw_in": "SW_IN_F", "vpd": "VPD_F", "precip": "P_F"}.get(name, "")
        comment = _DRIVER_COMMENTS.get(name, f"FLUXNET DD {column}")
        data_vars[name] = (("site", "time"), arr.astype(np.float32),
                           _attrs(name, comment=f"{comment}; gaps ≤ {max_gap_days} d interpolated"))
    for name, sign in (("tmin", -1.0), ("tmax", 1.0)):
        data_vars[name] = (("site", "time"), (drivers["tair"] + sign * DIURNAL_RANGE / 2).astype(np.float32),
                           _attrs(name, comment=f"tair {'−' if sign < 0 else '+'} {DIURNAL_RANGE / 2:g} °C "
                                               f"(assumed diurnal range {DIURNAL_RANGE:g} °C)"))
    for name, arr in targets.items():
        column = {"nee": "NEE_VUT_REF", "gpp": "GPP_NT_VUT_REF", "reco": "RECO_NT_VUT_REF"}[name]
        data_vars[name] = (("site", "time"), arr.astype(np.float32), _attrs(
            name, comment=f"FLUXNET DD {column}; NaN where NEE_VUT_REF_QC < {qc_min}, outside the record, or in a "
                          "site-year with a driver gap"))
    if "nee_qc" in native:
        data_vars["nee_qc"] = (("site", "time"), native["nee_qc"].transpose("site", "time").values.astype(np.float32),
                               {"units": "1", "long_name": "fraction of measured or good-quality gap-filled NEE "
                                "half-hours in the day (NEE_VUT_REF_QC)"})
    coords = {
        "site": ("site", np.asarray(site_ids, dtype=str)),
        "time": ("time", days),
        "lat": ("site", native["lat"].values),
        "lon": ("site", native["lon"].values),
        "elevation": ("site", native["elevation"].values.astype(np.float32), {"units": "m", "long_name": "elevation"}),
        "igbp": ("site", native["igbp"].values.astype(str), {"long_name": "IGBP land-cover class"}),
        "mat": ("site", mat.astype(np.float32)),
        "map": ("site", map_mm.astype(np.float32)),
        "first_year": ("site", np.array([r.min() for r in rec_years], np.int32)),
        "last_year": ("site", np.array([r.max() for r in rec_years], np.int32)),
        "n_nee_days": ("site", np.isfinite(targets["nee"]).sum(axis=1).astype(np.int32),
                       {"long_name": "days with a QC-passing NEE target"}),
    }
    for name, frac in flags.items():
        coords[name] = ("site", frac.astype(np.float32), {"units": "1", "long_name": name.replace("_", " ") + " of the record"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds = _add_site_labels(ds, [_DAILY_VEGETATION.get(s, "grassland") for s in site_ids])
    return _finish(ds, title="FLUXNET daily towers: US-Ne1 (FLUXNET2015) and ICOS Warm Winter 2020 (kgml site dataset)",
                   sources=sources, call=f"fluxnet_daily(qc_min={qc_min}, max_gap_days={max_gap_days}, "
                   f"n_sites={len(site_ids)})",
                   extra={"qc_min": qc_min, "skipped_files": "\n".join(skipped), "masked_site_years": len(masked),
                          "driver_method": f"daily FLUXNET drivers; gaps ≤ {max_gap_days} d interpolated; tmin/tmax = "
                                           f"tair ∓ {DIURNAL_RANGE / 2:g} °C",
                          "references": "Pastorello et al. (2020) Sci. Data 7:225; Warm Winter 2020 product, "
                                        "doi:10.18160/2G60-ZHAK"})


# ---------------------------------------------------------------------------------------------------------
# COSORE daily soil respiration
# ---------------------------------------------------------------------------------------------------------

#: Codes of the per-day ``<driver>_source`` flags of `cosore_daily` (CF flag_values / flag_meanings).
COSORE_FILL_FLAGS = {0: "cosore_observed", 1: "cosore_interpolated", 2: "tower_same_month",
                     3: "tower_climatology", 4: "missing"}
_COSORE_DRIVERS = ("tair", "sw_in", "vpd", "precip", "tsoil", "swc")
_COSORE_OWN = ("tair", "tsoil", "swc")
_EARTH_RADIUS_KM = 6371.0  # mean Earth radius (IUGG)
#: A FLUXNET tower this close (km) to a COSORE dataset's coordinates is taken as co-located.
COLOCATED_KM = 2.0


def _haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))



def _tower_climatology(tower_root: Path, cache) -> tuple[xr.Dataset, dict, dict, dict]:
    """FLUXNET2015 MM towers: the dataset, (tower, month) arrays of the drivers, their calendar-month
    climatologies (tower, 12) and whether all 12 months are known, per driver."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        towers = read_fluxnet_dir(tower_root, resolution="MM", dataset="SUBSET",
                                  variables=("tair", "sw_in", "vpd", "precip", "tsoil", "swc"), invalid="drop",
                                  errors="warn", cache=cache)
    shape = (towers.sizes["site"], towers.sizes["time"])
    t_vals = {v: towers[v].transpose("site", "time").values if v in towers else np.full(shape, np.nan)
              for v in _COSORE_DRIVERS}
    cal = _month_codes(towers.time.values) % 12
    clim = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for v, arr in t_vals.items():
            clim[v] = np.stack([np.nanmean(arr[:, cal == m], axis=1) for m in range(12)], axis=1)
    full = {v: np.isfinite(c).all(axis=1) for v, c in clim.items()}
    return towers, t_vals, clim, full


def cosore_daily(
    data_dir: str | os.PathLike | None = None,
    *,
    datasets: Sequence[str] | None = None,
    min_days: int = 60,
    treatments: Sequence[str] = ("None",),
    require_measured_tsoil: bool = True,
    max_gap_days: int = DEFAULT_MAX_GAP_DAYS,
    cache: bool | str | os.PathLike = True,
) -> xr.Dataset:
    """COSORE chamber soil respiration as a Contract-A dataset with daily ``rsoil`` targets (vegetation "soil").

    Read with `kgml.data.soil_respiration.read_cosore` (``aggregate_ports=True``: the mean over a dataset's
    ports that measure the same thing under the same treatment). Kept: ports measuring Rs (total soil CO2 efflux)
    under ``treatments`` (default the controls, "None").

    * Target ``rsoil`` gC m-2 d-1 (daily mean of 3-h block means, COSORE reader). With ``require_measured_tsoil``
      a day keeps its target only where the chamber's own soil temperature is measured (or interpolated over a
      gap ≤ ``max_gap_days``); sites with fewer than ``min_days`` target days are dropped.
    * Drivers, in order of preference, each day flagged in ``<driver>_source`` (`COSORE_FILL_FLAGS`):
      0 the chamber's own daily mean (tsoil CSR_Tx nearest 5 cm, swc CSR_SMx in %, tair CSR_TAIR[_AMB]);
      1 linear interpolation over a gap ≤ ``max_gap_days``; 2 the co-located FLUXNET2015 tower (DESCRIPTION's
      network site ID equals a tower of ``fluxnet2015_subset_mm``, or a tower lies within `COLOCATED_KM`):
      that month's mean held on every day (``colocated_tower``);
      3 the climatological fill: the calendar-month climatology of the nearest FLUXNET2015 MM tower (great
      circle) with all 12 months of every driver (``clim_site``, ``clim_distance_km``; for swc the nearest tower
      with an SWC climatology, ``swc_clim_site``). sw_in, vpd and precip are never measured by the chambers, so
      they are 2 or 3. tmin/tmax = tair ∓ `DIURNAL_RANGE`/2.
    * The time axis spans the union of the kept sites' calendar years; each site's drivers are filled only over
      its own years (first_year … last_year), NaN elsewhere (no target there either).
    """

    root = dataset_path("cosore", data_dir)
    available = cosore_datasets(root)
    if datasets is not None:
        datasets = list(datasets)
        if not datasets:
            raise DataValidationError(root, "dataset", "empty dataset selection")
        unknown = sorted(set(datasets) - set(available))
        if unknown:
            raise DataValidationError(root, "dataset", f"unknown COSORE dataset(s) {unknown}; available e.g. {available[:3]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        raw = read_cosore(root, datasets, aggregate_ports=True, cache=cache)
    if "rsoil" not in raw:
        raise DataValidationError(root, "rsoil", "no selected dataset has a port measuring Rs (total soil respiration)")
    keep = (raw["msmt_var"].values.astype(str) == "Rs") & np.isin(raw["treatment"].values.astype(str), list(treatments))
    if not keep.any():
        raise DataValidationError(root, "rsoil", f"no Rs port with treatment in {list(treatments)}")
    raw = raw.isel(site=np.flatnonzero(keep))

    tower_root = dataset_path("fluxnet2015_subset_mm", data_dir)
    towers, t_vals, clim, full = _tower_climatology(tower_root, cache)
    t_ids = towers.site.values.astype(str)
    t_codes = _month_codes(towers.time.values)
    main_ok = np.logical_and.reduce([full[v] for v in ("tair", "sw_in", "vpd", "precip", "tsoil")])

    # the daily axis of the kept sites' years
    rs_all = raw["rsoil"].transpose("site", "time").values
    years_raw = _years(raw.time.values)
    has = np.isfinite(rs_all)
    if not has.any():
        raise DataValidationError(root, "rsoil", "no daily soil respiration value in the selected datasets")
    first = np.array([years_raw[h].min() if h.any() else 0 for h in has])
    last = np.array([years_raw[h].max() if h.any() else 0 for h in has])
    days = _daily_axis(int(first[has.any(1)].min()), int(last[has.any(1)].max()))
    raw = raw.reindex(time=days)
    dyears = _years(days)
    dcode = _month_codes(days)
    dcal = dcode % 12
    n_site, n_day = raw.sizes["site"], days.size
    lat = raw["lat"].values.astype(float)
    lon = raw["lon"].values.astype(float)
    net_ids = raw["network_site_id"].values.astype(str)
    in_years = (dyears[None, :] >= first[:, None]) & (dyears[None, :] <= last[:, None])

    drivers = {v: np.full((n_site, n_day), np.nan) for v in _COSORE_DRIVERS}
    source = {v: np.full((n_site, n_day), 4, np.int8) for v in _COSORE_DRIVERS}
    clim_site, clim_dist, swc_site, swc_dist, colocated = [], [], [], [], []
    t_lat, t_lon = towers["lat"].values.astype(float), towers["lon"].values.astype(float)
    code_index = pd.Index(t_codes)
    for s in range(n_site):
        dist = _haversine_km(lat[s], lon[s], t_lat, t_lon)
        k_main = int(np.argmin(np.where(main_ok, dist, np.inf))) if main_ok.any() else -1
        k_swc = int(np.argmin(np.where(full["swc"], dist, np.inf))) if full["swc"].any() else -1
        clim_site.append(t_ids[k_main] if k_main >= 0 else "")
        clim_dist.append(dist[k_main] if k_main >= 0 else np.nan)
        swc_site.append(t_ids[k_swc] if k_swc >= 0 else "")
        swc_dist.append(dist[k_swc] if k_swc >= 0 else np.nan)
        # co-located: the same network ID, or a tower within COLOCATED_KM (IDs written without the country prefix)
        j = int(np.flatnonzero(t_ids == net_ids[s])[0]) if net_ids[s] in set(t_ids) else -1
        if j < 0 and dist.size and dist.min() <= COLOCATED_KM:
            j = int(np.argmin(dist))
        colocated.append(t_ids[j] if j >= 0 else "")
        pos = code_index.get_indexer(dcode)
        for v in _COSORE_DRIVERS:
            val = np.full(n_day, np.nan)
            src = np.full(n_day, 4, np.int8)
            if v in _COSORE_OWN and v in raw:
                own = raw[v].values[s].astype(float)
                src[np.isfinite(own)] = 0
                own = _fill_short_gaps(own[None, :], max_gap_days)[0]
                src[np.isfinite(own) & (src == 4)] = 1
                val = own
            if j >= 0:
                same = np.where(pos >= 0, t_vals[v][j, np.clip(pos, 0, None)], np.nan)
                use = ~np.isfinite(val) & np.isfinite(same)
                val[use], src[use] = same[use], 2
            k = k_swc if v == "swc" else k_main
            if k >= 0:
                cl = clim[v][k, dcal]
                use = ~np.isfinite(val) & np.isfinite(cl)
                val[use], src[use] = cl[use], 3
            val[~in_years[s]] = np.nan
            src[~in_years[s]] = 4
            drivers[v][s], source[v][s] = val, src

    rsoil = np.where(in_years, raw["rsoil"].transpose("site", "time").values, np.nan)
    if require_measured_tsoil:
        rsoil = np.where(source["tsoil"] <= 1, rsoil, np.nan)
    bad_year = _year_mask(drivers, dyears, in_years)
    masked = {(int(s), int(dyears[t])) for s, t in zip(*np.nonzero(np.isfinite(rsoil) & bad_year), strict=True)}
    rsoil = np.where(bad_year, np.nan, rsoil)
    n_days = np.isfinite(rsoil).sum(axis=1)
    keep = n_days >= min_days
    site_ids = raw.site.values.astype(str)
    dropped = [f"{s} ({int(n)} target days)" for s, n, k in zip(site_ids, n_days, keep, strict=True) if not k]
    if not keep.any():
        raise DataValidationError(root, "rsoil", f"no site has at least min_days={min_days} target days "
                                  f"(require_measured_tsoil={require_measured_tsoil})")
    idx = np.flatnonzero(keep)
    sel = raw.isel(site=idx)
    # trim the time axis to the kept sites' years
    tsel = (dyears >= first[idx].min()) & (dyears <= last[idx].max())
    days = days[tsel]
    drivers = {v: a[idx][:, tsel] for v, a in drivers.items()}
    source = {v: a[idx][:, tsel] for v, a in source.items()}
    rsoil = rsoil[idx][:, tsel]
    mat, map_mm = _static_climate(list(site_ids[idx]), days, drivers["tair"], drivers["precip"], "DD")

    flag_attrs = {"flag_values": np.array(list(COSORE_FILL_FLAGS), np.int8),
                  "flag_meanings": " ".join(COSORE_FILL_FLAGS.values()), "units": "1"}
    comments = {"tair": "COSORE CSR_TAIR_AMB/CSR_TAIR", "tsoil": "COSORE CSR_Tx nearest 5 cm (depth in tsoil_depth)",
                "swc": "COSORE CSR_SMx, % (depth in swc_depth)", "sw_in": "FLUXNET2015 SW_IN_F", "vpd": "FLUXNET2015 VPD_F",
                "precip": "FLUXNET2015 P_F"}
    data_vars = {}
    for v in _COSORE_DRIVERS:
        data_vars[v] = (("site", "time"), drivers[v].astype(np.float32),
                        _attrs(v, comment=f"{comments[v]}; filled as {v}_source says", ancillary_variables=f"{v}_source"))
        data_vars[f"{v}_source"] = (("site", "time"), source[v], {**flag_attrs, "long_name": f"origin of {v}"})
    for name, sign in (("tmin", -1.0), ("tmax", 1.0)):
        data_vars[name] = (("site", "time"), (drivers["tair"] + sign * DIURNAL_RANGE / 2).astype(np.float32),
                           _attrs(name, comment=f"tair {'−' if sign < 0 else '+'} {DIURNAL_RANGE / 2:g} °C "
                                               f"(assumed diurnal range {DIURNAL_RANGE:g} °C)"))
    data_vars["rsoil"] = (("site", "time"), rsoil.astype(np.float32), _attrs(
        "rsoil", cell_methods="time: mean (of 3-h block means)",
        comment="COSORE CSR_FLUX_CO2 of Rs ports × 1.0377 (µmol m-2 s-1 → gC m-2 d-1), mean over the dataset's "
                "ports; NaN where the chamber's soil temperature is not measured" if require_measured_tsoil else
                "COSORE CSR_FLUX_CO2 of Rs ports × 1.0377, mean over the dataset's ports"))
    coords = {
        "site": ("site", site_ids[idx].astype(str)),
        "time": ("time", days),
        "lat": ("site", sel["lat"].values),
        "lon": ("site", sel["lon"].values),
        "elevation": ("site", sel["elevation"].values.astype(np.float32), {"units": "m", "long_name": "elevation"}),
        "igbp": ("site", sel["igbp"].values.astype(str), {"long_name": "IGBP land-cover class"}),
        "mat": ("site", mat.astype(np.float32)),
        "map": ("site", map_mm.astype(np.float32)),
        "first_year": ("site", first[idx].astype(np.int32)),
        "last_year": ("site", last[idx].astype(np.int32)),
        "n_rsoil_days": ("site", np.isfinite(rsoil).sum(axis=1).astype(np.int32)),
        "colocated_tower": ("site", np.asarray(colocated, dtype=str)[idx]),
        "clim_site": ("site", np.asarray(clim_site, dtype=str)[idx], {"long_name": "FLUXNET2015 tower of the climatological fill"}),
        "clim_distance_km": ("site", np.asarray(clim_dist, np.float32)[idx], {"units": "km"}),
        "swc_clim_site": ("site", np.asarray(swc_site, dtype=str)[idx]),
        "swc_clim_distance_km": ("site", np.asarray(swc_dist, np.float32)[idx], {"units": "km"}),
    }
    for name in ("dataset", "network_site_id", "tsoil_depth", "swc_depth", "primary_pub", "treatment"):
        if name in sel.coords:
            attrs = dict(sel[name].attrs)
            if name.endswith("_depth"):
                attrs.setdefault("units", "cm")  # sensor depth below the surface (kgml.data.soil_respiration)
            coords[name] = ("site", sel[name].values, attrs)
    ds = xr.Dataset(data_vars, coords=coords)
    ds = _add_site_labels(ds, "soil")
    return _finish(ds, title="COSORE daily soil respiration (kgml site dataset)",
                   sources=[str(cosore_base(root) / d) for d in sorted(set(sel["dataset"].values.astype(str)))]
                   + [str(tower_root)],
                   call=f"cosore_daily(min_days={min_days}, treatments={list(treatments)}, "
                        f"require_measured_tsoil={require_measured_tsoil}, n_sites={idx.size})",
                   extra={"dropped_sites": "\n".join(dropped), "masked_site_years": len(masked),
                          "skipped_files": raw.attrs.get("skipped_files", ""),
                          "driver_method": "chamber drivers, else co-located FLUXNET2015 month, else nearest-tower "
                                           "monthly climatology (see <driver>_source)",
                          "references": "Bond-Lamberty et al. (2020) Glob. Change Biol. 26:7268, doi:10.1111/gcb.15353; "
                                        "Pastorello et al. (2020) Sci. Data 7:225"})


# ---------------------------------------------------------------------------------------------------------
# Crop yields: Illinois counties (Khaki et al. 2020) and states (Thompson 1969)
# ---------------------------------------------------------------------------------------------------------

_DAYS_PER_WEEK = 7


def _yield_dataset(site_ids, days, drivers: Mapping[str, np.ndarray], comments: Mapping[str, str], years: np.ndarray,
                   crop_yield: np.ndarray, yield_attrs: Mapping, coords: Mapping) -> xr.Dataset:
    data_vars = {name: (("site", "time"), arr.astype(np.float32), _attrs(name, comment=comments[name]))
                 for name, arr in drivers.items()}
    data_vars["crop_yield"] = (("site", "year"), crop_yield.astype(np.float32), dict(yield_attrs))
    mat, map_mm = _static_climate(list(site_ids), days, drivers["tair"], drivers["precip"], "DD")
    all_coords = {"site": ("site", np.asarray(site_ids, dtype=str)), "time": ("time", days),
                  "year": ("year", years.astype(np.int32)), "mat": ("site", mat.astype(np.float32)),
                  "map": ("site", map_mm.astype(np.float32)), **coords}
    return xr.Dataset(data_vars, coords=all_coords)


def il_corn(
    data_dir: str | os.PathLike | None = None,
    *,
    counties: Iterable[str | int] | None = None,
    years: Iterable[int] | None = None,
) -> xr.Dataset:
    """Khaki et al. (2020) Illinois county corn: weekly Daymet weather → daily drivers, annual ``crop_yield``.

    Read with `kgml.data.yields.read_khaki_corn` (``khaki2020_corn_il40_weekly_daymet``; 1980–2013 here).
    Sites are the counties, labelled by their 5-digit FIPS code as a string (coordinates ``county`` = name,
    ``fips``, ``state`` = "IL", lat, lon, vegetation "maize", igbp "CRO"). ``counties`` selects by FIPS code
    or county name (case-insensitive), ``years`` by calendar year; an unknown one is an error. The daily axis
    runs from the first to the last selected year; the days of years not selected have NaN drivers (and no yield).

    * Daily drivers: week w of the source covers days 7w−6 … 7w of the year; its weekly mean is held on each of
      those days (so every weekly mean is preserved exactly), and days 365–366 (after week 52) take week 52's
      values. tmin/tmax are Daymet's own (weekly means), tair = (tmin + tmax)/2, sw_in the 24-h mean
      (daylight-mean srad × daylength/24 h), vpd from tmin/tmax and vp (FAO-56 eqs. 11–12), precip mm d-1 —
      all as the reader documents. No CO2 or pressure in the source (the process model's defaults apply).
    * Annual target ``crop_yield`` (t ha-1 at 15.5 % moisture) on (site, year); a county-year with missing
      weather keeps no yield.
    """
    root = dataset_path("khaki2020_corn_il40_weekly_daymet", data_dir)
    raw = read_khaki_corn(root)
    fips = raw["county"].values.astype(np.int64)
    names = raw["county_name"].values.astype(str)
    if counties is not None:
        wanted = [str(c).strip() for c in counties]
        if not wanted:
            raise DataValidationError(root, "county", "empty county selection")
        by_name = {n.lower(): i for i, n in enumerate(names)}
        by_fips = {str(f): i for i, f in enumerate(fips)}
        idx, unknown = [], []
        for c in wanted:
            i = by_fips.get(c, by_name.get(c.lower()))
            (unknown.append(c) if i is None else idx.append(i))
        if unknown:
            raise DataValidationError(root, "county", f"unknown county/ies {unknown}; known e.g. {list(names[:4])}")
        raw = raw.isel(county=sorted(set(idx)))
    if years is not None:
        wanted_years = sorted({int(y) for y in years})
        if not wanted_years:
            raise DataValidationError(root, "year", "empty year selection")
        unknown = sorted(set(wanted_years) - set(raw["year"].values.tolist()))
        if unknown:
            raise DataValidationError(root, "year", f"year(s) {unknown} not in the table "
                                      f"({int(raw.year.min())}–{int(raw.year.max())})")
        raw = raw.sel(year=wanted_years)
    year_axis = raw["year"].values.astype(np.int64)
    days = _daily_axis(int(year_axis[0]), int(year_axis[-1]))  # contiguous; years not selected stay NaN
    dyears = _years(days)
    doy = (days - days.astype("datetime64[Y]")).astype("timedelta64[D]").astype(np.int64) + 1
    week = np.minimum((doy - 1) // _DAYS_PER_WEEK, raw.sizes["week"] - 1)
    selected = np.isin(dyears, year_axis)
    yi = np.clip(np.searchsorted(year_axis, dyears), 0, year_axis.size - 1)
    drivers, comments = {}, {}
    for name in ("tair", "tmin", "tmax", "sw_in", "vpd", "precip"):
        weekly = raw[name].transpose("county", "year", "week").values
        drivers[name] = np.where(selected, weekly[:, yi, week], np.nan)
        comments[name] = (f"{raw[name].attrs.get('comment', '')}; the weekly mean held on each day of its week "
                          "(days 365–366 take week 52)")
    record = np.broadcast_to(selected, drivers["tair"].shape)
    bad_year = _year_mask(drivers, dyears, record)
    crop_yield = raw["crop_yield"].transpose("county", "year").values.astype(np.float64)
    bad_cy = np.stack([bad_year[:, dyears == y].any(axis=1) for y in year_axis], axis=1)
    crop_yield = np.where(bad_cy, np.nan, crop_yield)
    if not np.isfinite(crop_yield).any():
        raise DataValidationError(root, "crop_yield", "no county-year with both a yield and complete weather")
    site_ids = [str(f) for f in raw["county"].values]
    coords = {
        "county": ("site", raw["county_name"].values.astype(str), {"long_name": "county name"}),
        "fips": ("site", raw["county"].values.astype(np.int32), {"long_name": "county FIPS code"}),
        "state": ("site", np.asarray(raw["us_state"].values, dtype=str)),
        "country": ("site", np.full(len(site_ids), "US")),
        "lat": ("site", raw["lat"].values), "lon": ("site", raw["lon"].values),
        "igbp": ("site", np.full(len(site_ids), "CRO")),
    }
    ds = _yield_dataset(site_ids, days, drivers, comments, year_axis, crop_yield,
                        {**raw["crop_yield"].attrs, "units": "t ha-1",
                         "long_name": raw["crop_yield"].attrs.get("long_name", "grain yield")}, coords)
    ds = _add_site_labels(ds, "maize")
    return _finish(ds, title="Illinois county corn yield with daily drivers from weekly Daymet (Khaki et al. 2020)",
                   sources=[raw.attrs.get("source", str(root))],
                   call=f"il_corn(n_counties={len(site_ids)}, years={int(year_axis[0])}-{int(year_axis[-1])})",
                   extra={"masked_site_years": int((bad_cy & np.isfinite(raw['crop_yield'].values)).sum()),
                          "driver_method": "weekly Daymet means held on each day of the week (days 365–366: week 52)",
                          "references": raw.attrs.get("references", "")})


#: Thompson (1969) gives tair for May–August and precipitation for June–August only.
_THOMPSON_FILL_FLAGS = {0: "thompson_month", 1: "tower_climatology"}


def state_yield(data_dir: str | os.PathLike | None = None, *, crop: str = "corn",
                cache: bool | str | os.PathLike = True) -> xr.Dataset:
    """Thompson (1969) state yields (IA, IL, IN, MO, OH; 1930–1962) with daily drivers, annual ``crop_yield``.

    Read with `kgml.data.yields.read_thompson` (the Thompson table of ``agridat_us_corn_soy_state``, recognised by its columns). Sites are the
    states (postal code; coordinate ``state``), placed at the centre of the state's bounding box
    (`kgml.data.regions`); vegetation "maize" for corn, "soybean" for soybean.

    The table has only growing-season weather (monthly tair May–August, precipitation June–August), so:
    * tair in May–August and precip in June–August of each year: Thompson's monthly value held on every day of
      the month (monthly mean preserved; ``tair_source``/``precip_source`` = 0);
    * every other day, and sw_in and vpd on every day: the calendar-month climatology (FLUXNET2015 MM, 1991–2014)
      of the FLUXNET2015 tower nearest the state centre with all 12 months (``clim_site``, ``clim_distance_km``;
      source flag 1) — a climatological fill from a later period, not the 1930s weather.
    tmin/tmax = tair ∓ `DIURNAL_RANGE`/2. ``crop_yield`` t ha-1 (market moisture) on (site, year).
    """
    if crop not in ("corn", "soybean"):
        raise ValueError(f"crop must be 'corn' or 'soybean', got {crop!r}")
    root = dataset_path("agridat_us_corn_soy_state", data_dir)
    path = one_file(root, "thompson", "Thompson state yield and weather table")
    raw = read_thompson(path, crop=crop)
    tower_root = dataset_path("fluxnet2015_subset_mm", data_dir)
    towers, _, clim, full = _tower_climatology(tower_root, cache)
    main_ok = np.logical_and.reduce([full[v] for v in REQUIRED_DRIVERS])
    t_ids = towers.site.values.astype(str)
    t_lat, t_lon = towers["lat"].values.astype(float), towers["lon"].values.astype(float)

    states = raw["state"].values.astype(str)
    year_axis = raw["year"].values.astype(np.int64)
    days = _daily_axis(int(year_axis[0]), int(year_axis[-1]))
    dyears = _years(days)
    dmonth = _month_codes(days) % 12 + 1
    yi = np.searchsorted(year_axis, dyears)
    lat, lon, clim_site, clim_dist = [], [], [], []
    drivers = {v: np.full((states.size, days.size), np.nan) for v in REQUIRED_DRIVERS}
    source = {v: np.full((states.size, days.size), 1, np.int8) for v in ("tair", "precip")}
    months = list(raw["month"].values.astype(int))
    for s, st in enumerate(states):
        boxes = _STATE_BOXES[st]
        la = float(np.mean([0.5 * (b[0] + b[1]) for b in boxes]))
        lo = float(np.mean([0.5 * (b[2] + b[3]) for b in boxes]))
        lat.append(la)
        lon.append(lo)
        dist = _haversine_km(la, lo, t_lat, t_lon)
        if not main_ok.any():
            raise DataValidationError(tower_root, None, "no FLUXNET2015 tower with a 12-month climatology of every driver")
        k = int(np.argmin(np.where(main_ok, dist, np.inf)))
        clim_site.append(t_ids[k])
        clim_dist.append(dist[k])
        for v in REQUIRED_DRIVERS:
            drivers[v][s] = clim[v][k, dmonth - 1]
        for v in ("tair", "precip"):
            monthly = raw[v].sel(state=st).transpose("year", "month").values
            for m in months:
                val = monthly[yi, months.index(m)]
                use = (dmonth == m) & np.isfinite(val)
                drivers[v][s, use] = val[use]
                source[v][s, use] = 0
    crop_yield = raw["crop_yield"].transpose("state", "year").values
    comments = {"tair": "Thompson monthly May–Aug (°F → °C), else nearest-tower climatology (tair_source)",
                "precip": "Thompson monthly Jun–Aug (inches → mm d-1), else nearest-tower climatology (precip_source)",
                "sw_in": "nearest-tower calendar-month climatology (FLUXNET2015 SW_IN_F)",
                "vpd": "nearest-tower calendar-month climatology (FLUXNET2015 VPD_F)"}
    for name, sign in (("tmin", -1.0), ("tmax", 1.0)):
        drivers[name] = drivers["tair"] + sign * DIURNAL_RANGE / 2
        comments[name] = f"tair {'−' if sign < 0 else '+'} {DIURNAL_RANGE / 2:g} °C (assumed diurnal range)"
    flag_attrs = {"flag_values": np.array(list(_THOMPSON_FILL_FLAGS), np.int8),
                  "flag_meanings": " ".join(_THOMPSON_FILL_FLAGS.values()), "units": "1"}
    coords = {
        "state": ("site", states), "country": ("site", np.full(states.size, "US")),
        "lat": ("site", np.asarray(lat)), "lon": ("site", np.asarray(lon)),
        "igbp": ("site", np.full(states.size, "CRO")),
        "clim_site": ("site", np.asarray(clim_site, dtype=str)),
        "clim_distance_km": ("site", np.asarray(clim_dist, np.float32), {"units": "km"}),
    }
    ds = _yield_dataset(states, days, drivers, comments, year_axis, crop_yield,
                        {**raw["crop_yield"].attrs, "units": "t ha-1",
                         "long_name": raw["crop_yield"].attrs.get("long_name", "grain yield")}, coords)
    for v in ("tair", "precip"):
        ds[f"{v}_source"] = (("site", "time"), source[v], {**flag_attrs, "long_name": f"origin of {v}"})
    ds = _add_site_labels(ds, "maize" if crop == "corn" else "soybean")
    return _finish(ds, title=f"Thompson (1969) state {crop} yields with daily drivers (kgml site dataset)",
                   sources=[str(path), str(tower_root)], call=f"state_yield(crop={crop!r})",
                   extra={"driver_method": "Thompson growing-season months held daily; other months, sw_in and vpd "
                                           "from the nearest FLUXNET2015 tower's monthly climatology",
                          "references": raw.attrs.get("references", "")})


# ---------------------------------------------------------------------------------------------------------
# builders by name: `kgml data build NAME`, `[data] source = "NAME"` in a train config
# ---------------------------------------------------------------------------------------------------------

#: The dataset builders, by the name a config's ``[data] source`` or ``kgml data build NAME`` uses.
BUILDERS = {
    "fluxnet_daily": fluxnet_daily,
    "fluxnet_monthly": fluxnet_monthly,
    "cosore_daily": cosore_daily,
    "il_corn": il_corn,
    "state_yield": state_yield,
}
_PREFIX = "kgml.data.assemble."


def builder_name(source: str) -> str | None:
    """The `BUILDERS` name that ``source`` names (``"fluxnet_daily"`` or ``"kgml.data.assemble.fluxnet_daily"``),
    or None when ``source`` is not a builder name (a netCDF path, ``"synthetic"``)."""
    name = source.removeprefix(_PREFIX)
    if name in BUILDERS:
        return name
    if source.startswith(_PREFIX):
        raise ValueError(f"unknown dataset builder {source!r}; builders are {sorted(BUILDERS)}")
    return None


def builder_options(name: str) -> list[str]:
    """Keyword options a builder accepts (besides ``data_dir``)."""
    params = inspect.signature(BUILDERS[name]).parameters
    return [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY]


def build(name: str, data_dir: str | os.PathLike | None = None, *, progress: bool = False, **options) -> xr.Dataset:
    """The dataset of builder ``name`` (a `BUILDERS` key, optionally with the ``kgml.data.assemble.`` prefix)
    read from ``data_dir`` (default: ``$KGML_DATA`` or ../shared/data) with the builder's keyword ``options``
    (e.g. ``sites``, ``datasets``, ``counties``, ``years``); unknown names and options are errors.
    ``progress``: a progress bar over the files read, for the builders that read many (a builder's own
    ``progress`` option, where it has one, wins)."""
    key = builder_name(name)
    if key is None:
        raise ValueError(f"unknown dataset builder {name!r}; builders are {sorted(BUILDERS)}")
    allowed = builder_options(key)
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"dataset builder {key!r} has no option {bad[0]!r}; its options are {allowed}")
    if progress and "progress" in allowed:
        options = {"progress": True, **options}
    return BUILDERS[key](data_dir, **options)
