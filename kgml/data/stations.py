"""Station weather readers (APSIM .met daily; BioCro hourly CSV → daily) and the fitted default weather generator.

Every reader returns an `xr.Dataset` on dim ``time`` (daily datetime64) with canonical names and ``units``
attributes, scalar coordinates ``site``, ``lat``, ``lon``, and raises `StationDataError` naming the file, the
column and the problem for input it cannot trust. Run ``python -m kgml.data.stations`` to refit
``kgml/resources/weather_ames_ia.json`` (the generator used when no weather data is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import math
import os
import warnings
import zlib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import (
    BIOCRO_HOURLY_COLUMNS,
    files_of,
    one_file,
    open_bytes,
    recognise,
    text_of,
)
from kgml.data.schema import DataValidationError, DataWarning
from kgml.io import write_text_atomic
from kgml.paths import dataset_path
from process_models import constants as C
from process_models.forcing import saturation_vapour_pressure
from process_models.radiation import MJ_PER_DAY_PER_W
from process_models.weather import (
    DEFAULT_WET_THRESHOLD,
    WeatherGeneratorParams,
    fit_weather_generator,
    params_from_dict,
    params_to_dict,
)

#: Minimum number of valid hours (of 24) for a daily aggregate of an hourly variable; fewer gives NaN.
MIN_VALID_HOURS = 20

#: Divide PAR photon flux (µmol m-2 s-1) by this to get shortwave (W m-2): PAR_UMOL_PER_J × PAR_FRACTION_OF_SW
#: = 4.57 × 0.45 = 2.0565 µmol J-1 of shortwave (McCree 1972; Monteith & Unsworth 2013).
PAR_UMOL_PER_J_SW = C.PAR_UMOL_PER_J * C.PAR_FRACTION_OF_SW

#: Canonical daily variables written by the readers: units and long names.
DAILY_VARIABLES: dict[str, dict[str, str]] = {
    "tmin": {"units": "degC", "long_name": "daily minimum air temperature"},
    "tmax": {"units": "degC", "long_name": "daily maximum air temperature"},
    "tair": {"units": "degC", "long_name": "daily mean air temperature"},
    "sw_in": {"units": "W m-2", "long_name": "incoming shortwave radiation, 24-h mean"},
    "precip": {"units": "mm d-1", "long_name": "precipitation"},
    "vpd": {"units": "hPa", "long_name": "vapour-pressure deficit, daily mean"},
}

#: Physically plausible ranges (inclusive) per raw column kind, with the likely mistake when exceeded.
_TEMPERATURE_RANGE = (-90.0, 60.0)

#: Ames, IA station used for the built-in default generator.
AMES_DATASET = "apsimx_ames_ia_daily_weather"
#: The .met header gives ``longitude = 0`` (a placeholder); this is the town of Ames, approximate.
AMES_LON = -93.62

#: Champaign, IL hourly weather (SURFRAD Bondville coordinates, from the dataset's SOURCE.md).
CHAMPAIGN_DATASET = "biocro_champaign_il_hourly_weather"
CHAMPAIGN_LAT = 40.05
CHAMPAIGN_LON = -88.37

#: Resource file (in kgml/resources) holding the default fitted generator.
DEFAULT_GENERATOR_RESOURCE = "weather_ames_ia.json"
_RESOURCE_DIR = Path(__file__).resolve().parent.parent / "resources"


class StationDataError(ValueError):
    """A station weather file that cannot be read or fails a validity check (the message names file and column)."""


# ---------------------------------------------------------------------------------------------------------
# Shared checks and dataset assembly
# ---------------------------------------------------------------------------------------------------------


def _temperature_hint(values: np.ndarray) -> str:
    top = np.nanmax(values)
    if top > 150.0:
        return " — looks like kelvin; give °C"
    if top > _TEMPERATURE_RANGE[1]:
        return " — looks like °F; give °C"
    return ""


def _check_range(
    values: np.ndarray, path: Path, column: str, lower: float, upper: float, units: str, hint: str = ""
) -> None:
    """Raise naming the file, the column, the first offending value and the likely mistake."""
    bad = ~np.isnan(values) & ((values < lower) | (values > upper))  # ±inf (inf, Infinity, 1e999) included
    if bad.any():
        i = int(np.argmax(bad))
        raise StationDataError(
            f"{path}: column {column!r} has {int(bad.sum())} value(s) outside the plausible range "
            f"[{lower}, {upper}] {units} (first: {values[i]:g} at data row {i + 1}){hint}"
        )


#: Fraction of days with tmin > tmax above which the two columns are taken as swapped (an error); fewer such
#: days are kept, with a warning recorded in the dataset's ``warnings`` attribute.
SWAPPED_TMIN_TMAX_FRACTION = 0.5


def _check_tmin_tmax(tmin: np.ndarray, tmax: np.ndarray, path: Path, min_col: str, max_col: str) -> str:
    both = np.isfinite(tmin) & np.isfinite(tmax)
    above = both & (tmin > tmax)
    if not above.any():
        return ""
    text = f"column {min_col!r} exceeds {max_col!r} on {int(above.sum())} of {int(both.sum())} days"
    if above.sum() > SWAPPED_TMIN_TMAX_FRACTION * both.sum():
        raise StationDataError(f"{path}: {text}: are the {max_col} and {min_col} columns swapped?")


    warnings.warn(f"{path}: {text} (first at data row {int(np.argmax(above)) + 1}); kept", DataWarning, stacklevel=3)
    return text


def _check_not_all_missing(values: np.ndarray, path: Path, column: str, what: str = "") -> None:
    if not np.isfinite(values).any():
        raise StationDataError(f"{path}: column {column!r} has no valid values{what}")


def _dates_from_year_doy(year: np.ndarray, doy: np.ndarray, path: Path, row_offset: Sequence[int]) -> np.ndarray:
    """datetime64[D] from year and day of year, checking both are whole numbers and doy fits the year."""
    for name, v in (("year", year), ("day of year", doy)):
        bad = ~np.isfinite(v) | (v != np.round(v))
        if bad.any():
            i = int(np.argmax(bad))
            raise StationDataError(f"{path}: {name} {v[i]:g} on line {row_offset[i]} is not a whole number")
    year = year.astype(np.int64)
    doy = doy.astype(np.int64)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    bad = (doy < 1) | (doy > np.where(leap, 366, 365)) | (year < 1800) | (year > 2200)
    if bad.any():
        i = int(np.argmax(bad))
        raise StationDataError(f"{path}: invalid date year={year[i]} day-of-year={doy[i]} on line {row_offset[i]}")
    return (year - 1970).astype("datetime64[Y]").astype("datetime64[D]") + (doy - 1).astype("timedelta64[D]")


def _check_strictly_increasing(keys: np.ndarray, path: Path, row_offset: Sequence[int], describe) -> None:
    """Raise on the first duplicate or backwards step of ``keys`` (dates or date-hours)."""
    step = np.diff(keys)
    bad = step <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        kind = "duplicate" if step[i - 1] == 0 else "non-monotonic (goes back in time)"
        raise StationDataError(
            f"{path}: {kind} time stamp {describe(i)} on line {row_offset[i]} (previous line {row_offset[i - 1]}); "
            "rows must be in strictly increasing time order without repeats"
        )


def _daily_dataset(
    time: np.ndarray,
    values: Mapping[str, np.ndarray],
    extra_attrs: Mapping[str, Mapping[str, str]],
    *,
    site: str,
    lat: float,
    lon: float,
    path: Path,
    title: str,
    comment: str,
) -> xr.Dataset:
    data_vars = {}
    for name, v in values.items():
        attrs = dict(DAILY_VARIABLES[name])
        attrs.update(extra_attrs.get(name, {}))
        data_vars[name] = ("time", np.asarray(v, np.float32), attrs)
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", time.astype("datetime64[ns]")),
            "site": site,
            "lat": float(lat),
            "lon": float(lon),
        },
        attrs={"title": title, "source_file": str(path), "comment": comment},
    )
    ds["lat"].attrs["units"] = "degrees_north"
    ds["lon"].attrs["units"] = "degrees_east"
    return ds


def complete_daily_calendar(ds: xr.Dataset) -> xr.Dataset:
    """Reindex to every calendar day between the first and last date, missing days as NaN.

    The readers keep a file's gaps (e.g. held-out years) as gaps; anything that needs day-to-day
    transitions (`fit_generator_from_dataset`, lag correlations) must see them as NaN days instead.
    """
    full = pd.date_range(ds.time.values[0], ds.time.values[-1], freq="D")
    return ds.reindex(time=full)


# ---------------------------------------------------------------------------------------------------------
# APSIM .met (daily)
# ---------------------------------------------------------------------------------------------------------

_MET_REQUIRED = ("year", "day", "radn", "maxt", "mint", "rain")
_MISSING_TOKENS = {"nan", "na", "?", "-"}


def _parse_header_float(text: str) -> float:
    return float(text.split()[0])


def read_apsim_met(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
) -> xr.Dataset:
    """Read an APSIM .met daily weather file into canonical daily variables.

    Format: optional ``[section]`` line, ``key = value`` header lines (``latitude`` required unless ``lat`` is
    given), ``!`` comments, a column-name line, an optional units line in parentheses, then whitespace-separated
    rows. Required columns: ``year day radn maxt mint rain`` (any order; extra columns ignored); missing values
    may be ``NaN``/``NA``/``?``.

    Output (dim ``time``, daily): ``tmin``, ``tmax`` (°C, from ``mint``/``maxt``); ``tair`` = (tmin+tmax)/2
    (FAO-56 eq. 9); ``sw_in`` (W m-2, 24-h mean, = radn [MJ m-2 d-1] / 0.0864); ``precip`` (mm d-1, from
    ``rain``); ``vpd`` (hPa) with dew point ≈ tmin (FAO-56 eq. 48; the file has no humidity). Scalar coords
    ``site`` (``site`` argument, else the header ``site``, else the file stem), ``lat``, ``lon`` (arguments
    override the header; the apsimx ``longitude = 0`` placeholder should be overridden). Gaps in the dates are
    kept as gaps (see `complete_daily_calendar`).
    """
    path = Path(path)
    if not path.is_file():
        raise StationDataError(f"{path}: file not found")
    header: dict[str, str] = {}
    columns: list[str] | None = None
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    try:
        text = text_of(path)  # gzip by its magic bytes, whatever the file is called
    except (OSError, EOFError, zlib.error) as err:
        raise StationDataError(f"{path}: cannot read file: {err}") from None
    with text as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.split("!", 1)[0].strip()
            if not line or line.startswith("["):
                continue
            if columns is None:
                if "=" in line:
                    key, value = line.split("=", 1)
                    header[key.strip().lower()] = value.strip()
                    continue
                columns = [c.lower() for c in line.split()]
                continue
            if line.startswith("("):
                continue  # units line
            tokens = line.split()
            if len(tokens) != len(columns):
                raise StationDataError(
                    f"{path}: line {number} has {len(tokens)} values but the header names {len(columns)} columns "
                    f"({' '.join(columns)}): {line!r}"
                )
            rows.append(tokens)
            line_numbers.append(number)
    if columns is None:
        raise StationDataError(f"{path}: no column-name line found (expected e.g. 'year day radn maxt mint rain')")
    missing = [c for c in _MET_REQUIRED if c not in columns]
    if missing:
        raise StationDataError(f"{path}: missing column(s) {missing}; found columns {columns}")
    if not rows:
        raise StationDataError(f"{path}: no data rows")

    def column(name: str) -> np.ndarray:
        j = columns.index(name)
        out = np.empty(len(rows))
        for i, tokens in enumerate(rows):
            token = tokens[j]
            if token.lower() in _MISSING_TOKENS:
                out[i] = np.nan
                continue
            try:
                out[i] = float(token)
            except ValueError:
                raise StationDataError(
                    f"{path}: line {line_numbers[i]}, column {name!r}: cannot parse {token!r} as a number"
                ) from None
        return out

    year, day = column("year"), column("day")
    radn, maxt, mint, rain = column("radn"), column("maxt"), column("mint"), column("rain")
    time = _dates_from_year_doy(year, day, path, line_numbers)
    _check_strictly_increasing(
        time, path, line_numbers, lambda i: f"{int(year[i])} day {int(day[i])} ({time[i]})"
    )
    for name, v in (("maxt", maxt), ("mint", mint), ("radn", radn), ("rain", rain)):
        _check_not_all_missing(v, path, name)
    for name, v in (("maxt", maxt), ("mint", mint)):
        _check_range(v, path, name, *_TEMPERATURE_RANGE, "°C", _temperature_hint(v))
    _check_range(radn, path, "radn", 0.0, 50.0, "MJ m-2 d-1",
                 " — looks like W m-2 or kJ m-2 d-1; give MJ m-2 d-1" if np.nanmax(radn) > 50 else "")
    _check_range(rain, path, "rain", 0.0, 1000.0, "mm d-1",
                 " — negative rain is often a missing-value code; use NaN" if np.nanmin(rain) < 0 else "")
    notes = _check_tmin_tmax(mint, maxt, path, "mint", "maxt")

    if lat is None:
        if "latitude" not in header:
            raise StationDataError(f"{path}: no 'latitude = …' header line; pass lat=")
        try:
            lat = _parse_header_float(header["latitude"])
        except ValueError:
            raise StationDataError(f"{path}: cannot parse header latitude {header['latitude']!r}") from None
    if lon is None:
        try:
            lon = _parse_header_float(header["longitude"]) if "longitude" in header else math.nan
        except ValueError:
            raise StationDataError(f"{path}: cannot parse header longitude {header['longitude']!r}") from None
    if not -90.0 <= float(lat) <= 90.0:
        raise StationDataError(f"{path}: latitude {lat} is outside [-90, 90] degrees")
    site = site or (header.get("site", "").split() or [path.stem])[0]

    tair = (mint + maxt) / 2.0
    es = (np.asarray(saturation_vapour_pressure(maxt)) + np.asarray(saturation_vapour_pressure(mint))) / 2.0
    vpd = C.HPA_PER_KPA * np.maximum(es - np.asarray(saturation_vapour_pressure(mint)), 0.0)
    values = {
        "tmin": mint,
        "tmax": maxt,
        "tair": tair,
        "sw_in": radn / MJ_PER_DAY_PER_W,
        "precip": rain,
        "vpd": vpd,
    }
    extra = {
        "tmin": {"source_column": "mint"},
        "tmax": {"source_column": "maxt"},
        "tair": {"derivation": "(tmin + tmax) / 2, FAO-56 eq. 9"},
        "sw_in": {"source_column": "radn", "derivation": "radn [MJ m-2 d-1] / 0.0864"},
        "precip": {"source_column": "rain"},
        "vpd": {"derivation": "e_s(mean of e°(tmax), e°(tmin)) - e°(tmin): dew point ≈ tmin, FAO-56 eqs. 12, 48 "
                              "(no humidity in the file)"},
    }
    ds = _daily_dataset(
        time, values, extra, site=site, lat=float(lat), lon=float(lon), path=path,
        title=f"daily weather from APSIM .met file {path.name}",
        comment="gaps in the file's dates are kept as gaps",
    )
    if notes:
        ds.attrs["warnings"] = notes
    return ds


# ---------------------------------------------------------------------------------------------------------
# BioCro hourly CSV (Champaign, IL) → daily
# ---------------------------------------------------------------------------------------------------------

_HOURLY_REQUIRED = BIOCRO_HOURLY_COLUMNS


def read_biocro_hourly_weather(
    path: str | os.PathLike,
    *,
    site: str,
    lat: float,
    lon: float,
    min_valid_hours: int = MIN_VALID_HOURS,
) -> xr.Dataset:
    """Read a BioCro-style hourly weather CSV (optionally .gz) and aggregate it to daily canonical variables.

    Input columns: ``year``, ``doy``, ``hour`` (0–23, local standard time), ``precip`` (mm h-1), ``rh``
    (fraction 0–1), ``solar`` (PAR photon flux density, µmol m-2 s-1), ``temp`` (°C); others are ignored.

    Daily aggregation over the hours of each local calendar day, per variable; a day with fewer than
    ``min_valid_hours`` (default 20 of 24) non-missing hours of the needed column(s) is NaN for that variable:

    - ``tmin``, ``tmax``, ``tair``: minimum, maximum and mean of hourly ``temp`` (°C). Hourly values are hour
      means, so tmin/tmax slightly underestimate the true extremes.
    - ``sw_in``: 24-h mean shortwave (W m-2) converted from PAR photon flux: SW = PAR / (PAR_UMOL_PER_J ×
      PAR_FRACTION_OF_SW) = PAR / (4.57 µmol J-1 × 0.45) — i.e. ASSUMES PAR is 45 % of shortwave. Small
      negative night-time PAR (sensor dark offset, down to about −30) is set to 0 first.
    - ``precip``: mean hourly rate over valid hours × 24 h (mm d-1).
    - ``vpd``: mean over hours with both ``temp`` and ``rh`` of e°(temp) (1 − rh), FAO-56 eq. 11, in hPa.

    Days absent from the file (held-out years) stay absent; see `complete_daily_calendar`.
    """
    path = Path(path)
    if not path.is_file():
        raise StationDataError(f"{path}: file not found")
    if not 1 <= min_valid_hours <= 24:
        raise ValueError(f"min_valid_hours must be in 1..24, got {min_valid_hours}")
    try:
        df = pd.read_csv(io.BytesIO(open_bytes(path)))  # gzip by its magic bytes, whatever the name
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError, zlib.error) as err:
        raise StationDataError(f"{path}: cannot parse as CSV: {err}") from None
    missing = [c for c in _HOURLY_REQUIRED if c not in df.columns]
    if missing:
        raise StationDataError(f"{path}: missing column(s) {missing}; found columns {list(df.columns)}")
    if df.empty:
        raise StationDataError(f"{path}: no data rows")
    line_numbers = np.arange(len(df)) + 2  # 1-based, after the header line
    numeric: dict[str, np.ndarray] = {}
    for name in _HOURLY_REQUIRED:
        raw = df[name]
        values = pd.to_numeric(raw, errors="coerce")
        unparsable = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if unparsable.any():
            i = int(np.argmax(unparsable.to_numpy()))
            raise StationDataError(
                f"{path}: line {line_numbers[i]}, column {name!r}: cannot parse {raw.iloc[i]!r} as a number"
            )
        numeric[name] = values.to_numpy(dtype=float)

    hour = numeric["hour"]
    bad_hour = ~np.isfinite(hour) | (hour != np.round(hour)) | (hour < 0) | (hour > 23)
    if bad_hour.any():
        i = int(np.argmax(bad_hour))
        raise StationDataError(f"{path}: line {line_numbers[i]}, column 'hour': {hour[i]:g} is not an hour 0–23")
    date = _dates_from_year_doy(numeric["year"], numeric["doy"], path, line_numbers)
    stamp = date.astype(np.int64) * 24 + hour.astype(np.int64)
    _check_strictly_increasing(
        stamp, path, line_numbers,
        lambda i: f"year {int(numeric['year'][i])} doy {int(numeric['doy'][i])} hour {int(hour[i])}",
    )
    temp, rh, solar, precip = numeric["temp"], numeric["rh"], numeric["solar"], numeric["precip"]
    for name in ("temp", "rh", "solar", "precip"):
        _check_not_all_missing(numeric[name], path, name)
    _check_range(temp, path, "temp", *_TEMPERATURE_RANGE, "°C", _temperature_hint(temp))
    _check_range(rh, path, "rh", 0.0, 1.0 + 1e-6, "(fraction)",
                 " — looks like percent; give a fraction 0–1" if np.nanmax(rh) > 1.5 else "")
    _check_range(solar, path, "solar", -50.0, 3000.0, "µmol m-2 s-1 (PAR)")
    _check_range(precip, path, "precip", 0.0, 300.0, "mm h-1",
                 " — negative precipitation is often a missing-value code; use NaN" if np.nanmin(precip) < 0 else "")

    vpd_hourly = C.HPA_PER_KPA * np.asarray(saturation_vapour_pressure(temp)) * (1.0 - rh)
    frame = pd.DataFrame(
        {"date": date, "temp": temp, "sw": np.maximum(solar, 0.0) / PAR_UMOL_PER_J_SW, "precip": precip,
         "vpd": vpd_hourly}
    )
    grouped = frame.groupby("date", sort=True)
    counts = grouped.count()
    enough = {name: (counts[name] >= min_valid_hours).to_numpy() for name in ("temp", "sw", "precip", "vpd")}
    t_min, t_max, t_mean = grouped["temp"].min(), grouped["temp"].max(), grouped["temp"].mean()

    def masked(series: pd.Series, key: str) -> np.ndarray:
        return np.where(enough[key], series.to_numpy(dtype=float), np.nan)

    values = {
        "tmin": masked(t_min, "temp"),
        "tmax": masked(t_max, "temp"),
        "tair": masked(t_mean, "temp"),
        "sw_in": masked(grouped["sw"].mean(), "sw"),
        "precip": masked(grouped["precip"].mean() * C.HOURS_PER_DAY, "precip"),
        "vpd": masked(grouped["vpd"].mean(), "vpd"),
    }
    for name, v in values.items():
        _check_not_all_missing(v, path, name, f" after daily aggregation (no day has ≥ {min_valid_hours} valid hours)")
    rule = f"days with fewer than {min_valid_hours} of 24 valid hours are NaN"
    extra = {
        "tmin": {"source_column": "temp", "cell_methods": "time: minimum of hourly means", "coverage_rule": rule},
        "tmax": {"source_column": "temp", "cell_methods": "time: maximum of hourly means", "coverage_rule": rule},
        "tair": {"source_column": "temp", "cell_methods": "time: mean", "coverage_rule": rule},
        "sw_in": {
            "source_column": "solar",
            "derivation": "PAR [µmol m-2 s-1] / (PAR_UMOL_PER_J 4.57 × PAR_FRACTION_OF_SW 0.45): assumes PAR is 45 % "
                          "of shortwave (McCree 1972; Monteith & Unsworth 2013); negative night PAR set to 0",
            "cell_methods": "time: mean", "coverage_rule": rule,
        },
        "precip": {"source_column": "precip", "derivation": "mean hourly rate × 24 h", "coverage_rule": rule},
        "vpd": {"source_column": "temp, rh", "derivation": "mean of hourly e°(temp) (1 − rh), FAO-56 eq. 11",
                "coverage_rule": rule},
    }
    time = counts.index.to_numpy().astype("datetime64[D]")
    return _daily_dataset(
        time, values, extra, site=site, lat=lat, lon=lon, path=path,
        title=f"daily weather aggregated from hourly file {path.name}",
        comment=f"local standard time days; {rule}; gaps in the file's dates are kept as gaps",
    )


# ---------------------------------------------------------------------------------------------------------
# The two stations of this project
# ---------------------------------------------------------------------------------------------------------


def ames_file(data_dir: str | os.PathLike | None = None) -> Path:
    """The Ames, IA weather file: the one APSIM .met file of the Ames dataset folder, recognised by content."""
    folder = dataset_path(AMES_DATASET, data_dir)
    try:
        return one_file(folder, "apsim_met", "APSIM weather file")
    except DataValidationError as err:
        raise StationDataError(str(err)) from err


def champaign_file(data_dir: str | os.PathLike | None = None) -> Path:
    """The Champaign, IL hourly weather file: the one BioCro hourly CSV of its dataset folder, by content."""
    folder = dataset_path(CHAMPAIGN_DATASET, data_dir)
    files = biocro_hourly_files(folder)
    if len(files) != 1:
        found = [p.name for p in files]
        raise StationDataError(f"{folder}: expected one hourly weather CSV with columns {list(_HOURLY_REQUIRED)}, "
                               f"found {found or 'none'}")
    return files[0]


def __getattr__(name: str):
    """``AMES_FILE`` / ``CHAMPAIGN_FILE`` (deprecated): the name of the file found by content in the data folder
    (the files are no longer looked up by a fixed name; use `ames_file` / `champaign_file`)."""
    lookup = {"AMES_FILE": ames_file, "CHAMPAIGN_FILE": champaign_file}
    if name in lookup:
        warnings.warn(f"kgml.data.stations.{name} is deprecated: use {lookup[name].__name__}()", DeprecationWarning, 2)
        return lookup[name]().name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_ames_ia(data_dir: str | os.PathLike | None = None) -> xr.Dataset:
    """Ames, IA daily weather 2000–2018 (no 2014–2015) from the apsimx .met file (lat 42.03 from the header)."""
    return read_apsim_met(ames_file(data_dir), site="Ames_IA", lon=AMES_LON)


def is_biocro_hourly_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` (CSV, gzipped or not, whatever its name) has the BioCro hourly weather columns
    (`_HOURLY_REQUIRED`) in its header: the file is recognised by its content (`kgml.data.formats`)."""
    return recognise(path) == "biocro_hourly"


def biocro_hourly_files(folder: str | os.PathLike) -> list[Path]:
    """The BioCro hourly weather files of ``folder``, recognised by content (`is_biocro_hourly_file`)."""
    return files_of(folder, "biocro_hourly")


def apsim_met_files(folder: str | os.PathLike) -> list[Path]:
    """The APSIM .met weather files of ``folder``, recognised by content (a ``year day radn maxt mint rain`` header)."""
    return files_of(folder, "apsim_met")


def read_champaign_il(data_dir: str | os.PathLike | None = None, min_valid_hours: int = MIN_VALID_HOURS) -> xr.Dataset:
    """Champaign, IL daily weather 1995–2023 (no 2014–2015) aggregated from the BioCro hourly CSV of the
    dataset folder (the one file with the hourly columns, whatever its name)."""
    return read_biocro_hourly_weather(
        champaign_file(data_dir), site="Champaign_IL", lat=CHAMPAIGN_LAT, lon=CHAMPAIGN_LON, min_valid_hours=min_valid_hours,
    )


# ---------------------------------------------------------------------------------------------------------
# Generator fitting from a dataset; the packaged default
# ---------------------------------------------------------------------------------------------------------


def generator_inputs(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Contiguous daily arrays (tmin, tmax, sw_in, precip, doy) of a station dataset, gaps as NaN days."""
    full = complete_daily_calendar(ds)
    out = {name: full[name].to_numpy().astype(np.float32) for name in ("tmin", "tmax", "sw_in", "precip")}
    out["doy"] = full.time.dt.dayofyear.to_numpy().astype(np.int32)
    return out


def fit_generator_from_dataset(
    ds: xr.Dataset, *, wet_threshold: float = DEFAULT_WET_THRESHOLD, n_harmonics: int = 6
) -> WeatherGeneratorParams:
    """Fit `process_models.weather` to a station dataset (gaps become NaN days, so no fake transitions)."""
    x = generator_inputs(ds)
    return fit_weather_generator(
        x["tmin"], x["tmax"], x["sw_in"], x["precip"], x["doy"], float(ds["lat"]),
        wet_threshold=wet_threshold, n_harmonics=n_harmonics,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_default_generator(
    data_dir: str | os.PathLike | None = None, out_path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Fit the generator to the Ames, IA series and write the packaged JSON (source file and date recorded).

    Returns the written document. ``out_path`` defaults to ``kgml/resources/weather_ames_ia.json``.
    """
    path = ames_file(data_dir)
    ds = read_ames_ia(data_dir)
    params = fit_generator_from_dataset(ds)
    valid = np.isfinite(ds[["tmin", "tmax", "sw_in", "precip"]].to_array()).all("variable")
    document = {
        "description": "Stochastic daily weather generator (WGEN-style) fitted to Ames, IA station weather; the "
        "built-in default when no weather data is given. Load with kgml.data.stations.load_default_generator().",
        "site": str(ds["site"].values),
        "lat": float(ds["lat"]),
        "lon": float(ds["lon"]),
        "source": {
            "dataset": AMES_DATASET,
            "file": path.name,
            "sha256": _sha256(path),
            "origin": "apsimx R package, inst/extdata/Ames.met (femiguez/apsimx @ 6c3ca7ff), Iowa Environmental "
            "Mesonet; 2014-2015 held out",
            "first_date": str(ds.time.values[0])[:10],
            "last_date": str(ds.time.values[-1])[:10],
            "n_valid_days": int(valid.sum()),
        },
        "fitted_on": dt.date.today().isoformat(),
        "produced_by": "python -m kgml.data.stations (kgml.data.stations.fit_default_generator)",
        "params": params_to_dict(params),
    }
    out = Path(out_path) if out_path is not None else _RESOURCE_DIR / DEFAULT_GENERATOR_RESOURCE

    write_text_atomic(json.dumps(document, indent=1) + "\n", out)
    return document


def load_default_generator() -> WeatherGeneratorParams:
    """The packaged generator parameters fitted to Ames, IA (`kgml/resources/weather_ames_ia.json`)."""
    text = resources.files("kgml").joinpath("resources", DEFAULT_GENERATOR_RESOURCE).read_text(encoding="utf-8")
    return params_from_dict(json.loads(text)["params"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kgml.data.stations", description="Refit the default weather generator (Ames, IA)."
    )
    parser.add_argument("--data-dir", default=None, help="real-data directory (default: KGML_DATA or ../shared/data)")
    parser.add_argument("--out", default=None, help="output JSON (default: kgml/resources/weather_ames_ia.json)")
    args = parser.parse_args(argv)
    doc = fit_default_generator(args.data_dir, args.out)
    src = doc["source"]
    print(f"fitted {doc['site']} {src['first_date']}..{src['last_date']} ({src['n_valid_days']} valid days) "
          f"→ {args.out or _RESOURCE_DIR / DEFAULT_GENERATOR_RESOURCE}")


if __name__ == "__main__":
    main()
