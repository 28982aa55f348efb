"""County-aggregated daily NLDAS-2 weather with static soil, and county SLOPE GPP by crop (the KGML-DA demo data
of Yang et al. 2023) → a (county, time) dataset with GPP on (county, crop, time).

Weather columns (units inferred from magnitudes and the paper; not written in the source): ``Tair`` daily mean °C,
``RH`` %, ``Wind`` m s-1, ``Precipitation`` mm d-1, ``Radiation`` MJ m-2 d-1. SLOPE ``gpp`` is gC m-2 d-1 for the
crop's pixels of the county; its day of year runs 1–365 in every year (leap years are not marked).
"""

from __future__ import annotations

import calendar
import difflib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of
from kgml.data.schema import (
    DataValidationError,
    DataWarning,
    register_layout,
    skip_or_raise,
    validate_dataset,
)
from kgml.data.towers.common import _parse_table, _read_text
from kgml.data.yields import US_STATES, county_name, read_county_locations, state_abbreviation
from kgml.variables import UnitConversionError, convert_units, get_variable
from process_models.constants import PA_PER_HPA
from process_models.forcing import saturation_vapour_pressure

__all__ = [
    "NLDAS_SOIL_COLUMNS",
    "NLDAS_WEATHER_COLUMNS",
    "read_nldas_county",
    "read_nldas_county_weather",
    "read_slope_gpp_county",
]

#: Weather column → (canonical variable, source units as documented in the folder's SOURCE.md).
NLDAS_WEATHER_COLUMNS: dict[str, tuple[str, str]] = {
    "Tair": ("tair", "degC"),
    "RH": ("rh", "%"),
    "Wind": ("ws", "m s-1"),
    "Precipitation": ("precip", "mm d-1"),
    "Radiation": ("sw_in", "MJ m-2 d-1"),
}
#: Static soil columns (constant per county) → (coordinate name, units). Only bulk density and the two water
#: contents have documented units; Ks, sand, silt and SOC are opaque covariates (sand and silt are evidently
#: not on the same scale), kept with units "unknown".
NLDAS_SOIL_COLUMNS: dict[str, tuple[str, str]] = {
    "Bulk density": ("soil_bulk_density", "g cm-3"),
    "Field capacity": ("soil_field_capacity", "m3 m-3"),
    "Wilting point": ("soil_wilting_point", "m3 m-3"),
    "Ks": ("soil_ks", "unknown"),
    "Sand content": ("soil_sand", "unknown"),
    "Silt content": ("soil_silt", "unknown"),
    "SOC": ("soil_soc", "unknown"),
}
#: Crop-model placeholder columns of the source (all 0 in the demo); not interpreted.
_PLACEHOLDER_COLUMNS = ("GrowingSeason", "CropType", "VCMX", "CHL4", "GROUPX", "STMX", "GFILL", "SLA1", "Fertilizer")
_KEYS = ("fips", "Year", "Day")
_GPP_COLUMNS = ("fips", "crop", "year", "doy", "gpp")

register_layout("county_time", ("county", "time"))
register_layout("county_crop_time", ("county", "crop", "time"))


def _require(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=3, cutoff=0.6)
            hint = f"; similar columns: {close}" if close else ""
            raise DataValidationError(path, column, f"required column missing{hint} (found {list(frame.columns)[:12]})")


def _dates(path: Path, frame: pd.DataFrame, keys: Sequence[str], year_col: str, day_col: str) -> np.ndarray:
    """datetime64 dates from year and day of year; whole numbers, day within its year, rows of each key in
    strictly increasing time order (a repeat or a step back is an error naming the line)."""
    year = frame[year_col].to_numpy(dtype=float)
    day = frame[day_col].to_numpy(dtype=float)
    for name, values in ((year_col, year), (day_col, day)):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(path, name, f"{values[i]!r} at line {i + 2} is not a whole number")
    year_i = year.astype(np.int64)
    leap = ((year_i % 4 == 0) & (year_i % 100 != 0)) | (year_i % 400 == 0)
    bad = (day < 1) | (day > np.where(leap, 366, 365)) | (year_i < 1800) | (year_i > 2200)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(path, day_col, f"year {year_i[i]} day {int(day[i])} at line {i + 2} is not a date")
    dates = (year_i - 1970).astype("datetime64[Y]").astype("datetime64[D]") + (day.astype(np.int64) - 1).astype("timedelta64[D]")
    group = frame.groupby(list(keys), sort=False).ngroup().to_numpy()
    order = np.lexsort((np.arange(len(frame)), group))  # each key's rows, in file order
    same_key = group[order][1:] == group[order][:-1]
    steps = np.diff(dates[order]).astype(np.int64)
    bad = np.flatnonzero(same_key & (steps <= 0))
    if bad.size:
        here, before = order[bad + 1], order[bad]
        first = int(np.argmin(here))  # the earliest offending line of the file
        j, i = int(here[first]), int(before[first])
        key = "/".join(str(frame[k].iloc[j]) for k in keys)
        kind = "repeats" if dates[j] == dates[i] else "goes back in time after"
        raise DataValidationError(
            path, day_col,
            f"{'/'.join(keys)} {key}: date {dates[j]} at line {j + 2} {kind} {dates[i]} at line {i + 2} "
            "(rows must be in increasing time order)",
        )
    return dates.astype("datetime64[ns]")


def _convert_column(path: Path, column: str, raw: np.ndarray, canonical: str, units: str) -> np.ndarray:
    """Source column → canonical units, with range and unit-mistake checks naming the column."""
    var = get_variable(canonical)
    try:
        values = np.asarray(convert_units(raw, units, var.units), dtype=float)
    except UnitConversionError as err:
        raise DataValidationError(path, column, f"cannot convert {units!r} to {var.units!r} for {canonical}: {err}") from err
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DataValidationError(path, column, "all values are missing")
    bad = var.out_of_range(values)
    if bad.any():
        i = int(np.argmax(bad))
        hints = []
        if units != var.units and not var.out_of_range(raw).any():
            hints.append(f"the column looks like it is already in {var.units}: pass units={{{column!r}: {var.units!r}}}")
        hint = var.diagnose(finite)
        if hint:
            hints.append(hint)
        raise DataValidationError(
            path, column,
            f"{int(bad.sum())} value(s) outside the valid range of {canonical} [{var.valid_min:g}, {var.valid_max:g}] "
            f"{var.units} after reading them as {units} (first {raw[i]:g} at line {i + 2})"
            + (f". Likely unit mistake: {'; '.join(hints)}" if hints else ""),
        )
    certain = var.diagnose(finite, certain_only=True)
    if certain:
        raise DataValidationError(path, column, f"values in range but implausible: {certain}")
    return values


def _grid(counties: np.ndarray, times: np.ndarray, county_of_row: np.ndarray, time_of_row: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full((counties.size, times.size), np.nan, dtype=np.float32)
    out[np.searchsorted(counties, county_of_row), np.searchsorted(times, time_of_row)] = values
    return out


def _county_frame(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    fips = frame[column].to_numpy(dtype=float)
    bad = ~np.isfinite(fips) | (fips != np.round(fips)) | (fips < 1000) | (fips > 99999)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(path, column, f"{frame[column].iloc[i]!r} at line {i + 2} is not a 5-digit county FIPS code")
    return fips.astype(np.int64)


def read_nldas_county_weather(
    path: str | os.PathLike, *, units: Mapping[str, str] | None = None, validate: bool = True
) -> xr.Dataset:
    """``county_daily_inputs_*.csv`` → daily county weather on (county, time) and static soil on county.

    ``tair`` °C, ``rh`` %, ``ws`` m s-1, ``precip`` mm d-1, ``sw_in`` W m-2 (24-h mean, from the MJ m-2 d-1 daily
    total × 11.574) and ``vpd`` hPa = e°(tair) × (1 − rh/100) from the daily means (FAO-56 eq. 11; daily-mean
    inputs underestimate the mean of sub-daily VPD). ``units`` overrides a column's assumed source units
    (e.g. ``{"Radiation": "W m-2"}``). Soil columns become county coordinates and must be constant per county.
    Times are the rows present (held-out years stay absent, as in the station readers).
    Errors (`DataValidationError`, naming file, column and line): missing or renamed columns, truncated rows,
    non-numeric cells, bad FIPS codes, impossible dates, repeated or decreasing days of a county, values out of
    range after conversion with the likely unit mistake (K for °C, a 0–1 fraction for %, W m-2 for MJ m-2 d-1).
    """
    path = Path(path)
    units = {**{c: u for c, (_, u) in NLDAS_WEATHER_COLUMNS.items()}, **dict(units or {})}
    frame = _parse_table(path, _read_text(path).splitlines(), na_strings=("NA", "NaN", "nan"))
    _require(path, frame, [*_KEYS, *NLDAS_WEATHER_COLUMNS])
    fips = _county_frame(path, frame, "fips")
    dates = _dates(path, frame, ("fips",), "Year", "Day")
    counties = np.unique(fips)
    times = np.unique(dates)
    data_vars = {}
    converted = {}
    for column, (canonical, _) in NLDAS_WEATHER_COLUMNS.items():
        converted[canonical] = _convert_column(path, column, frame[column].to_numpy(dtype=float), canonical, units[column])
        attrs = {**get_variable(canonical).attrs(), "cell_methods": "time: mean within days",
                 "comment": f"NLDAS-2 {column} ({units[column]}), county mean over cropland sample points"}
        data_vars[canonical] = (("county", "time"), _grid(counties, times, fips, dates, converted[canonical]), attrs)

    es_hpa = np.asarray(saturation_vapour_pressure(np.asarray(converted["tair"], dtype=np.float32)), dtype=float) * 1000.0 / PA_PER_HPA
    vpd = np.maximum(es_hpa * (1.0 - converted["rh"] / 100.0), 0.0)
    data_vars["vpd"] = (("county", "time"), _grid(counties, times, fips, dates, vpd), {
        **get_variable("vpd").attrs(),
        "comment": "e°(tair) × (1 − rh/100) from daily means (FAO-56 eq. 11), floored at 0",
    })
    coords: dict[str, object] = {
        "county": ("county", counties),
        "time": ("time", times, {"long_name": "calendar day"}),
    }
    for column, (name, soil_units) in NLDAS_SOIL_COLUMNS.items():
        if column not in frame.columns:
            continue
        values = frame[column].to_numpy(dtype=float)
        per_county = []
        for county in counties:
            distinct = np.unique(values[(fips == county) & np.isfinite(values)])
            if distinct.size > 1 and np.ptp(distinct) > 1e-6 * max(1.0, float(np.abs(distinct).max())):
                raise DataValidationError(path, column, f"static soil property varies within county {county}: {distinct[:4].tolist()}")
            per_county.append(float(distinct[0]) if distinct.size else np.nan)
        coords[name] = ("county", np.array(per_county), {"units": soil_units, "long_name": f"NLDAS county input {column!r}"})
    nonzero = [c for c in _PLACEHOLDER_COLUMNS if c in frame.columns and np.nanmax(np.abs(frame[c].to_numpy(dtype=float))) > 0]
    if nonzero:
        warnings.warn(f"{path}: crop-model columns {nonzero} are not all 0 as in the KGML-DA demo; they are not read",
                      DataWarning, stacklevel=2)
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "source": str(path),
        "title": "County-aggregated daily NLDAS-2 weather (KGML-DA demo)",
        "references": "Yang et al. (2023) Remote Sens. Environ. 113880, doi:10.1016/j.rse.2023.113880; NLDAS-2 (Xia et al. 2012)",
        "time_resolution": "DD",
        "source_units": "; ".join(f"{c}: {units[c]}" for c in NLDAS_WEATHER_COLUMNS),
        "ignored_columns": " ".join(c for c in _PLACEHOLDER_COLUMNS if c in frame.columns),
    })
    if validate:
        validate_dataset(ds, source=path, layout="county_time")
    return ds


def read_slope_gpp_county(path: str | os.PathLike, *, validate: bool = True) -> xr.Dataset:
    """``slope_gpp_county_daily.csv`` (``fips, crop, year, doy, gpp``) → ``gpp`` (gC m-2 d-1) on (county, crop, time).

    ``doy`` is taken as the day of the year; the source has 365 values in every year, so 31 December of leap
    years is absent (noted in attrs). Errors as in `read_nldas_county_weather`; rows of one county and crop must
    be in increasing time order without repeats.
    """
    path = Path(path)
    frame = _parse_table(path, _read_text(path).splitlines(), text_columns=("crop",), na_strings=("NA", "NaN", "nan"))
    _require(path, frame, _GPP_COLUMNS)
    fips = _county_frame(path, frame, "fips")
    crops = frame["crop"].astype(str).str.strip().str.lower().to_numpy()
    if (crops == "").any():
        i = int(np.argmax(crops == ""))
        raise DataValidationError(path, "crop", f"empty crop name at line {i + 2}")
    dates = _dates(path, frame.assign(crop=crops), ("fips", "crop"), "year", "doy")
    gpp = _convert_column(path, "gpp", frame["gpp"].to_numpy(dtype=float), "gpp", "gC m-2 d-1")
    counties, crop_axis, times = np.unique(fips), np.unique(crops), np.unique(dates)
    cube = np.full((counties.size, crop_axis.size, times.size), np.nan, dtype=np.float32)
    cube[np.searchsorted(counties, fips), np.searchsorted(crop_axis, crops), np.searchsorted(times, dates)] = gpp
    years = pd.DatetimeIndex(times).year
    doy_max = pd.Series(frame["doy"].to_numpy(), index=frame["year"].to_numpy()).groupby(level=0).max()
    leap_without_366 = [int(y) for y, d in doy_max.items() if calendar.isleap(int(y)) and d < 366]
    ds = xr.Dataset(
        {"gpp": (("county", "crop", "time"), cube, {
            **get_variable("gpp").attrs(),
            "comment": "SLOPE GPP (Jiang et al. 2021), county mean over the crop's 250 m pixels",
        })},
        coords={"county": counties, "crop": crop_axis, "time": ("time", times, {"long_name": "calendar day"})},
        attrs={
            "source": str(path),
            "title": "County SLOPE GPP by crop (KGML-DA demo)",
            "references": "Jiang et al. (2021) SLOPE GPP; Yang et al. (2023) Remote Sens. Environ. 113880",
            "time_resolution": "DD",
            "notes": (f"doy 366 absent in leap years {leap_without_366}: 31 December is missing there" if leap_without_366 else ""),
            "years": " ".join(str(y) for y in sorted(set(years.tolist()))),
        },
    )
    if validate:
        validate_dataset(ds, source=path, layout="county_crop_time")
    return ds


def read_nldas_county(
    folder: str | os.PathLike,
    *,
    locations: str | os.PathLike | pd.DataFrame | None = None,
    units: Mapping[str, str] | None = None,
    errors: str = "warn",
    validate: bool = True,
) -> xr.Dataset:
    """The ``kgmlda_nldas2_county_daily_il2`` folder → one dataset: weather on (county, time), ``gpp`` on
    (county, crop, time), soil and place on county.

    Coordinates on ``county`` (the 5-digit FIPS GEOID): ``state_fips``, ``county_fips``, ``us_state``,
    ``county_name`` and, from a ``locations`` table (``state_fips, county_fips, lon, lat``, e.g. the You et al.
    2017 ``county_locations.csv``), ``lat``/``lon``. A file that fails is skipped with a `DataWarning` and listed
    in ``attrs["skipped_files"]`` (``errors='warn'``) or raises (``errors='raise'``); if neither file can be read
    the reader raises.
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"errors must be 'warn' or 'raise', got {errors!r}")
    folder = Path(folder)
    weather_files = files_of(folder, "nldas_weather")  # recognised by their columns, whatever they are called
    gpp_files = files_of(folder, "slope_gpp")
    if not weather_files and not gpp_files:
        raise DataValidationError(folder, None, "no county weather table (fips, Year, Day, Tair, ...) or SLOPE GPP "
                                  "table (fips, crop, year, doy, gpp)")
    parts, skipped = [], []
    jobs = [(p, lambda p: read_nldas_county_weather(p, units=units, validate=validate)) for p in weather_files]
    jobs += [(p, lambda p: read_slope_gpp_county(p, validate=validate)) for p in gpp_files]
    for path, reader in jobs:
        try:
            parts.append(reader(path))
        except DataValidationError as err:
            skip_or_raise(err, errors, skipped, "KGML-DA county file", path.name)
    if not parts:
        raise DataValidationError(folder, None, f"no file could be read ({skipped})")
    ds = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="drop")
    for part in parts:
        for name in part.data_vars:
            ds[name].attrs = part[name].attrs
    counties = ds["county"].values.astype(np.int64)
    state_fips = counties // 1000
    ds = ds.assign_coords(
        state_fips=("county", state_fips.astype(np.int32)),
        county_fips=("county", (counties % 1000).astype(np.int32)),
        us_state=("county", [state_abbreviation(_state_name(s), folder) for s in state_fips]),
        county_name=("county", [county_name(c) for c in counties]),
    )
    lat = np.full(counties.size, np.nan)
    lon = np.full(counties.size, np.nan)
    if locations is not None:
        table = locations if isinstance(locations, pd.DataFrame) else read_county_locations(locations)
        known = table.reindex(counties)
        lat, lon = known["lat"].to_numpy(dtype=float), known["lon"].to_numpy(dtype=float)
    if not np.isfinite(lat).all():
        warnings.warn(f"{folder}: no lat/lon for counties {counties[~np.isfinite(lat)].tolist()}; pass locations= "
                      "(a state_fips, county_fips, lon, lat table)", DataWarning, stacklevel=2)
    ds = ds.assign_coords(lat=("county", lat, {"units": "degrees_north", "long_name": "county centroid latitude"}),
                          lon=("county", lon, {"units": "degrees_east", "long_name": "county centroid longitude"}))
    ds.attrs = {
        "source": str(folder),
        "title": "KGML-DA demo: county daily NLDAS-2 weather, soil and SLOPE GPP by crop",
        "references": "Yang et al. (2023) Remote Sens. Environ. 113880, doi:10.1016/j.rse.2023.113880; NLDAS-2 "
        "(Xia et al. 2012); SLOPE GPP (Jiang et al. 2021)",
        "time_resolution": "DD",
        "source_files": "\n".join(str(p.attrs["source"]) for p in parts),
        "skipped_files": "\n".join(skipped),
        "notes": "; ".join(n for p in parts if (n := p.attrs.get("notes"))),
    }
    if validate:
        validate_dataset(ds, source=folder)
    return ds


def _state_name(state_fips: int) -> str:
    for name, (_, fips) in US_STATES.items():
        if fips == int(state_fips):
            return name
    return str(state_fips)
