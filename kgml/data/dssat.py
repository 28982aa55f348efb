"""DSSAT text files: ``.WTH`` station weather → daily drivers, and field experiments (``.??X`` management with
measured ``.??A`` end-of-season summaries and ``.??T`` time series) → measured yield, biomass and LAI.

DSSAT/ICASA format (Jones et al. 2003; Hoogenboom et al. 2019): ``*`` starts a section, ``@`` a column
header whose names fix the columns' widths (numbers right-aligned to the end of their name; names ending in
dots, e.g. ``TNAME....``, are left-aligned text), ``!`` a comment; -99 is missing. Dates are ``YYDDD``
(two-digit year, day of year) or ``YYYYDDD``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import FORMATS, files_of, head, recognise
from kgml.data.schema import (
    DataValidationError,
    DataWarning,
    register_layout,
    skip_or_raise,
    validate_dataset,
)
from kgml.data.soil_respiration import mask_spikes
from kgml.variables import get_variable
from process_models.constants import PA_PER_HPA, SECONDS_PER_DAY
from process_models.forcing import saturation_vapour_pressure

__all__ = [
    "DSSAT_MEASURED",
    "DssatTable",
    "parse_dssat_tables",
    "parse_dssat_date",
    "read_dssat_experiment",
    "read_dssat_experiments",
    "read_dssat_weather",
    "read_wth",
]

#: Two-digit years below this are 20YY, the others 19YY (DSSAT's own files span 1950s–2040s).
CENTURY_PIVOT = 50
#: Tokens DSSAT writes for a missing value.
_MISSING = {"-99", "-99.", "-99.0", "-99.00", "-999", "-999.", "-999.0", "-9999", "-9999.", "-9999.0", ".", ""}
#: Joules per megajoule.
_J_PER_MJ = 1.0e6
#: Metres per kilometre.
_M_PER_KM = 1.0e3
#: Micromoles per mole.
_UMOL_PER_MOL = 1.0e6
#: Kilograms per tonne.
_KG_PER_T = 1.0e3

#: DSSAT crop codes → crop names used in kgml coordinates.
DSSAT_CROPS = {"MZ": "maize", "SB": "soybean", "WH": "wheat", "SG": "sorghum", "CT": "cotton", "PN": "peanut",
               "RI": "rice", "BA": "barley", "PT": "potato", "DR": "dry bean", "CS": "cassava", "SU": "sunflower"}

#: Measured DSSAT variables kept under canonical or descriptive names: code → (name, units, factor to units).
#: Codes from DSSAT's DATA.CDE; masses are dry matter in kg ha-1.
DSSAT_MEASURED: dict[str, tuple[str, str, float]] = {
    "HWAM": ("crop_yield", "t ha-1", 1.0 / _KG_PER_T),
    "CWAM": ("biomass_maturity", "t ha-1", 1.0 / _KG_PER_T),
    "BWAH": ("byproduct_harvest", "t ha-1", 1.0 / _KG_PER_T),
    "PWAM": ("pod_biomass_maturity", "t ha-1", 1.0 / _KG_PER_T),
    "LAIX": ("lai_max", "m2 m-2", 1.0),
    "HIAM": ("harvest_index", "1", 1.0),
    "HWUM": ("grain_unit_weight", "g", 1.0),
    "H#AM": ("grain_number", "m-2", 1.0),
    "H#UM": ("grains_per_ear", "1", 1.0),
    "THAM": ("threshing_percent", "%", 1.0),
    "ADAT": ("anthesis_doy", "day of year", 1.0),
    "MDAT": ("maturity_doy", "day of year", 1.0),
    "HDAT": ("harvest_doy", "day of year", 1.0),
    "PD1T": ("first_pod_doy", "day of year", 1.0),
    "PDFT": ("first_seed_doy", "day of year", 1.0),
    "LAID": ("lai", "m2 m-2", 1.0),
    "CWAD": ("biomass", "t ha-1", 1.0 / _KG_PER_T),
    "LWAD": ("leaf_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "SWAD": ("stem_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "GWAD": ("grain_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "PWAD": ("pod_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "SHAD": ("shell_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "RWAD": ("root_biomass", "t ha-1", 1.0 / _KG_PER_T),
    "HIAD": ("harvest_index_in_season", "1", 1.0),
    "SLAD": ("specific_leaf_area", "cm2 g-1", 1.0),
}
_DAY_OF_YEAR = {"ADAT", "MDAT", "HDAT", "PD1T", "PDFT"}
#: Canonical variables checked against the registry when they come out of a T file.
VARIABLE_NAMES_CHECKED = ("lai", "biomass")

register_layout("site", ("site",))


# ---------------------------------------------------------------------------------------------------------
# Generic table parsing


@dataclass
class DssatTable:
    """One ``@`` table of a DSSAT file: the section it sits in, its column names and its rows as text cells."""

    section: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


def _header_spans(header: str) -> tuple[list[str], list[tuple[int, int]], list[bool]]:
    """Column names, (name start, name end) character spans and whether each is a dotted text column."""
    names, spans, text = [], [], []
    for match in re.finditer(r"\S+", header):
        token = match.group(0)
        if token == "@":
            continue
        name = token.lstrip("@")
        is_text = name.endswith(".") and not name.startswith(".")
        offset = len(token) - len(token.lstrip("@").lstrip("."))
        names.append(name.strip("."))
        spans.append((match.start() + offset, match.end()))
        text.append(is_text)
    return names, spans, text


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _split_row(line: str, spans, text, path: Path, line_number: int) -> list[str]:
    """Cells of a data line, by the header: dotted text columns are fixed slices; every other value goes to
    the first column whose name ends at or after the value's end (one character of slack, as DSSAT writes
    ``@TRNO`` over ``I6``). Values far right of the last column are trailing comments, unless that column
    holds text (``CNAME``). Misaligned all-number rows with one value per column are split on whitespace.
    """
    cells: list[list[str]] = [[] for _ in spans]
    rest = list(line)
    for i, (start, end) in enumerate(spans):
        if text[i]:
            cells[i].append(line[start:end].strip())
            rest[start:end] = " " * len(rest[start:end])
    rest_line = "".join(rest)
    tokens = [(m.group(0), m.start(), m.end()) for m in re.finditer(r"\S+", rest_line)]
    ends = [end for _, end in spans]
    starts = {start: i for i, (start, _) in enumerate(spans) if not text[i]}
    last = len(spans) - 1
    for token, token_start, token_end in tokens:
        # Left-aligned values (ID_SOIL, CNAME) start under their name; numbers end under it.
        column = starts.get(token_start)
        if column is None:
            column = next((i for i, end in enumerate(ends) if end + 1 >= token_end), None)
        if column is None:
            if text[last] or (cells[last] and not _is_number(cells[last][0])):
                cells[last].append(token)
            continue  # trailing comment
        cells[column].append(token)
    crowded = any(len(c) > 1 for i, c in enumerate(cells) if not text[i] and i != last)
    if crowded:
        plain = [t for t, _, _ in tokens]
        if not any(text) and len(plain) >= len(spans) and all(_is_number(t) for t in plain[: len(spans)]):
            return plain[: len(spans)]
        raise DataValidationError(path, None, f"line {line_number}: values do not line up with the @ header columns")
    return [" ".join(c) for c in cells]


def parse_dssat_tables(path: str | Path) -> list[DssatTable]:
    """All ``@`` tables of a DSSAT text file, in order (a section may hold several)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise DataValidationError(path, None, f"cannot read: {err}") from err
    tables: list[DssatTable] = []
    section = ""
    current: DssatTable | None = None
    spans: list[tuple[int, int]] = []
    is_text: list[bool] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("\x1a"):  # DOS end-of-file mark (Ctrl-Z) written by old DSSAT tools
            break
        line = raw.replace("\t", " ").rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("!"):
            continue
        if line.startswith("*"):
            section = stripped[1:].strip()
            current = None
            continue
        if line.startswith("@"):
            names, spans, is_text = _header_spans(line)
            if not names:
                current = None
                continue
            current = DssatTable(section, names)
            tables.append(current)
            continue
        if current is None:
            continue  # free text (notes, people, site description)
        current.rows.append(_split_row(line, spans, is_text, path, number))
        current.line_numbers.append(number)
    return tables


def _to_number(cell: str) -> float:
    """A DSSAT cell as float; missing codes (-99, -99.0, -999, ., blank) and text give NaN."""
    if cell in _MISSING:
        return np.nan
    try:
        value = float(cell)
    except ValueError:
        return np.nan
    return np.nan if value in (-99.0, -999.0, -9999.0) else value


def _numbers(table: DssatTable, column: str, path: Path) -> np.ndarray:
    idx = table.columns.index(column)
    out = np.empty(len(table.rows))
    for i, row in enumerate(table.rows):
        cell = row[idx]
        value = _to_number(cell)
        if np.isnan(value) and cell not in _MISSING:
            raise DataValidationError(path, column, f"line {table.line_numbers[i]}: {cell!r} is not a number")
        out[i] = value
    return out


def parse_dssat_date(code: str | float, source: object = None, column: str = "DATE", pivot: int = CENTURY_PIVOT) -> np.datetime64:
    """``YYDDD`` or ``YYYYDDD`` → datetime64[D] (two-digit years below ``pivot`` are 20YY); NaT for missing."""
    text = str(code).strip()
    if text in _MISSING:
        return np.datetime64("NaT")
    if text.endswith(".0"):
        text = text[:-2]
    if not text.isdigit() or len(text) not in (5, 7):
        raise DataValidationError(source, column, f"date {code!r} is not YYDDD or YYYYDDD")
    year, doy = (int(text[:2]), int(text[2:])) if len(text) == 5 else (int(text[:4]), int(text[4:]))
    if len(text) == 5:
        year += 2000 if year < pivot else 1900
    days_in_year = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    if not 1 <= doy <= days_in_year:
        raise DataValidationError(source, column, f"date {code!r}: day of year {doy} outside 1–{days_in_year}")
    return np.datetime64(f"{year:04d}-01-01") + np.timedelta64(doy - 1, "D")


def _dates(table: DssatTable, column: str, path: Path) -> np.ndarray:
    idx = table.columns.index(column)
    out = []
    for row, number in zip(table.rows, table.line_numbers, strict=True):
        try:
            out.append(parse_dssat_date(row[idx], path, column))
        except DataValidationError as err:
            raise DataValidationError(path, column, f"line {number}: {err.problem}") from None
    return np.array(out, dtype="datetime64[D]")


# ---------------------------------------------------------------------------------------------------------
# Weather (.WTH)


def _es_hpa(t_celsius: np.ndarray) -> np.ndarray:
    return np.asarray(saturation_vapour_pressure(np.asarray(t_celsius, dtype=np.float32)), dtype=float) * 1000.0 / PA_PER_HPA


def _site_value(table: DssatTable | None, column: str) -> float:
    if table is None or column not in table.columns or not table.rows:
        return np.nan
    return _to_number(table.rows[0][table.columns.index(column)])


def read_wth(
    path: str | Path,
    *,
    lon_hemisphere: str | None = None,
    duplicate_dates: str = "error",
    blank_cells: str = "error",
    validate: bool = True,
) -> xr.Dataset:
    """One DSSAT ``.WTH`` file → daily drivers on (site, time); site = the file name without suffix.

    ``sw_in`` W m-2 (24-h mean of SRAD MJ m-2 d-1), ``tmax``/``tmin`` °C, ``tair`` = (tmax+tmin)/2, ``precip``
    mm d-1 (RAIN); when present ``vpd`` hPa from DEWP ((e°(tmax)+e°(tmin))/2 − e°(tdew), FAO-56 eqs. 11–14),
    ``ws`` m s-1 (WIND km d-1) and ``ppfd_in`` µmol m-2 s-1 (PAR mol m-2 d-1, 24-h mean). Missing days inside
    the file's span are NaN rows. Station header → coordinates ``lat``, ``lon``, ``elevation``, ``station``
    (INSI), and ``tav``/``amp``/``co2`` attrs. Old DSSAT files often wrote west longitudes as positive: pass
    ``lon_hemisphere='W'`` (or 'E') to force the sign when you know the hemisphere.
    Errors name the file, the column and the line: missing columns, bad dates, repeated dates (unless
    ``duplicate_dates='drop'``, which blanks every repeated day with a warning), truncated rows (unless
    ``blank_cells`` is 'missing' or 'zero' — DSSAT's Fortran reads a blank field as 0), dates going back, tmin above
    tmax or values outside the variable's valid range on most days (wrong units or swapped columns). An
    isolated impossible day (a tmin above tmax, a 66 °C tmax typo) is masked, counted in attrs and warned about.
    """
    if duplicate_dates not in ("error", "drop"):
        raise ValueError(f"duplicate_dates must be 'error' or 'drop', got {duplicate_dates!r}")
    if blank_cells not in ("error", "missing", "zero"):
        raise ValueError(f"blank_cells must be 'error', 'missing' or 'zero', got {blank_cells!r}")
    path = Path(path)
    tables = parse_dssat_tables(path)
    daily = next((t for t in tables if "DATE" in t.columns), None)
    if daily is None:
        raise DataValidationError(path, "DATE", "no daily table (@DATE ...) found")
    if not daily.rows:
        raise DataValidationError(path, "DATE", "the daily table has no rows")
    station = next((t for t in tables if "LAT" in t.columns and "DATE" not in t.columns), None)
    for column in ("SRAD", "TMAX", "TMIN", "RAIN"):
        if column not in daily.columns:
            raise DataValidationError(path, column, f"required column missing (found {daily.columns})")
    blanks = 0
    for i, row in enumerate(daily.rows):
        empty = [c for c in ("SRAD", "TMAX", "TMIN", "RAIN") if row[daily.columns.index(c)] == ""]
        if not empty:
            continue
        blanks += 1
        if blank_cells == "error":
            raise DataValidationError(
                path, empty[0], f"line {daily.line_numbers[i]}: truncated row, no value for {', '.join(empty)} "
                "(DSSAT reads a blank as 0: pass blank_cells='zero' to do the same, or 'missing')",
            )
        for c in empty:
            row[daily.columns.index(c)] = "0" if blank_cells == "zero" else "-99"
    if blanks:
        warnings.warn(f"{path}: {blanks} row(s) with blank values read as {'0' if blank_cells == 'zero' else 'missing'}",
                      DataWarning, stacklevel=2)
    dates = _dates(daily, "DATE", path)
    counts: dict[str, int] = {}
    steps = np.diff(dates).astype(int)
    keep = np.ones(dates.size, dtype=bool)
    if (steps == 0).any():
        i = int(np.argmax(steps == 0))
        where = f"line {daily.line_numbers[i + 1]}: date {dates[i + 1]} repeated"
        if duplicate_dates == "error":
            raise DataValidationError(path, "DATE", f"{where}; pass duplicate_dates='drop' to blank repeated days")
        repeated = np.isin(dates, dates[1:][steps == 0])
        keep &= ~repeated
        counts["n_repeated_days_dropped"] = int(np.unique(dates[repeated]).size)
        warnings.warn(f"{path}: {where}; {counts['n_repeated_days_dropped']} repeated day(s) set to missing",
                      DataWarning, stacklevel=2)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0))
        raise DataValidationError(path, "DATE", f"line {daily.line_numbers[i + 1]}: date {dates[i + 1]} goes back in time")

    def column(name: str, canonical: str, factor: float = 1.0) -> np.ndarray:
        values = np.where(keep, _numbers(daily, name, path) * factor, np.nan)
        if not np.isfinite(values).any():
            raise DataValidationError(path, name, "all values are missing (-99)")
        return mask_spikes(values, canonical, path, name, counts)

    tmax = column("TMAX", "tmax")
    tmin = column("TMIN", "tmin")
    swapped = np.isfinite(tmax) & np.isfinite(tmin) & (tmin > tmax)
    if swapped.any():
        i = int(np.argmax(swapped))
        where = f"line {daily.line_numbers[i]}: TMIN {tmin[i]} above TMAX {tmax[i]}"
        if swapped.sum() > 0.5 * np.sum(np.isfinite(tmax) & np.isfinite(tmin)):
            raise DataValidationError(path, "TMIN", f"{where} on {int(swapped.sum())} days: TMAX and TMIN swapped?")
        counts["n_tmin_above_tmax"] = int(swapped.sum())
        warnings.warn(f"{path}: {where} ({int(swapped.sum())} day(s)); both set to missing", DataWarning, stacklevel=2)
        tmax, tmin = np.where(swapped, np.nan, tmax), np.where(swapped, np.nan, tmin)
    variables: dict[str, tuple[np.ndarray, str]] = {
        "sw_in": (column("SRAD", "sw_in", _J_PER_MJ / SECONDS_PER_DAY), "SRAD (MJ m-2 d-1) × 1e6 / 86400 s"),
        "tmax": (tmax, "TMAX"),
        "tmin": (tmin, "TMIN"),
        "tair": (0.5 * (tmax + tmin), "(TMAX + TMIN) / 2"),
        "precip": (column("RAIN", "precip"), "RAIN (mm d-1)"),
    }
    if "DEWP" in daily.columns and np.isfinite(_numbers(daily, "DEWP", path)).any():
        tdew = np.where(keep, _numbers(daily, "DEWP", path), np.nan)
        vpd = 0.5 * (_es_hpa(tmax) + _es_hpa(tmin)) - _es_hpa(tdew)
        variables["vpd"] = (mask_spikes(np.maximum(vpd, 0.0), "vpd", path, "DEWP", counts),
                            "(e°(TMAX) + e°(TMIN)) / 2 − e°(DEWP), FAO-56 eqs. 11–14")
    if "WIND" in daily.columns and np.isfinite(_numbers(daily, "WIND", path)).any():
        variables["ws"] = (column("WIND", "ws", _M_PER_KM / SECONDS_PER_DAY), "WIND (km d-1) × 1000 / 86400 s")
    if "PAR" in daily.columns and np.isfinite(_numbers(daily, "PAR", path)).any():
        variables["ppfd_in"] = (column("PAR", "ppfd_in", _UMOL_PER_MOL / SECONDS_PER_DAY),
                                "PAR (mol m-2 d-1) × 1e6 / 86400 s, 24-h mean")

    dates = dates[keep]
    variables = {name: (values[keep], comment) for name, (values, comment) in variables.items()}
    time = pd.date_range(dates[0], dates[-1], freq="D")
    position = (dates - dates[0]).astype(int)
    site = path.stem
    ds = xr.Dataset(coords={"site": [site], "time": time.values.astype("datetime64[ns]")})
    for name, (values, comment) in variables.items():
        full = np.full(time.size, np.nan)
        full[position] = values
        attrs = {**get_variable(name).attrs(), "comment": f"DSSAT {comment}"}
        if name in ("tmax", "tmin"):
            attrs["cell_methods"] = f"time: {'maximum' if name == 'tmax' else 'minimum'} within days"
        ds[name] = (("site", "time"), full[None, :].astype("float32"), attrs)
    lat = _site_value(station, "LAT")
    lon = _site_value(station, "LONG")
    if lon_hemisphere is not None:
        if lon_hemisphere not in ("W", "E"):
            raise ValueError(f"lon_hemisphere must be 'W', 'E' or None, got {lon_hemisphere!r}")
        lon = -abs(lon) if lon_hemisphere == "W" else abs(lon)
    insi = station.rows[0][station.columns.index("INSI")] if station is not None and "INSI" in station.columns and station.rows else ""
    ds = ds.assign_coords(
        lat=("site", [lat], {"units": "degrees_north"}),
        lon=("site", [lon], {"units": "degrees_east", "comment": f"header LONG {_site_value(station, 'LONG')}"}),
        elevation=("site", [_site_value(station, "ELEV")], {"units": "m"}),
        station=("site", [insi]),
    )
    ds.attrs.update(
        source=str(path),
        title=f"DSSAT weather {site}",
        tav=_site_value(station, "TAV"),
        amp=_site_value(station, "AMP"),
        co2=_site_value(station, "CO2"),
        **counts,
    )
    if validate:
        validate_dataset(ds, source=path, layout="site_time")
    return ds


def _weather_key(stem: str) -> str:
    """Station key of a DSSAT weather file name ``IIIIYYNN`` → ``IIIINN`` (institute+site, file counter)."""
    return f"{stem[:4]}{stem[6:8]}" if len(stem) == 8 and stem[4:6].isdigit() else stem


def read_dssat_weather(
    folder: str | Path,
    files: Sequence[str] | None = None,
    *,
    lon_hemisphere: str | None = None,
    duplicate_dates: str = "error",
    blank_cells: str = "error",
    errors: str = "warn",
    validate: bool = True,
) -> xr.Dataset:
    """All ``.WTH`` files of a folder → (site, time), one site per station series.

    Yearly files of one station (``IUAF8001``, ``IUAF8101``, …) join into site ``IUAF01``: the DSSAT name is
    institute+site (4), year (2), file counter (2). Overlapping days with different values across files of a
    site are an error; a file that fails is skipped with a `DataWarning` (``errors='warn'``) or raises.
    Station coordinates are the most common among the site's files.
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"errors must be 'warn' or 'raise', got {errors!r}")
    folder = Path(folder)
    paths = sorted(folder / f for f in files) if files is not None else files_of(folder, "dssat_weather")
    if not paths:
        raise DataValidationError(folder, None, "no DSSAT weather (.WTH) files found (recognised by content: a "
                                  "*WEATHER line or @ INSI and @DATE headers)")
    groups: dict[str, list[xr.Dataset]] = {}
    skipped = []
    for p in paths:
        try:
            ds = read_wth(p, lon_hemisphere=lon_hemisphere, duplicate_dates=duplicate_dates, blank_cells=blank_cells,
                          validate=validate)
        except DataValidationError as err:
            skip_or_raise(err, errors, skipped, "DSSAT weather file", p.name)
            continue
        groups.setdefault(_weather_key(p.stem), []).append(ds)
    if not groups:
        raise DataValidationError(folder, None, f"no readable .WTH file ({skipped[:3]})")
    sites = []
    for key, parts in groups.items():
        parts = sorted(parts, key=lambda d: d.time.values[0])
        for prev, nxt in zip(parts[:-1], parts[1:], strict=True):
            overlap = np.intersect1d(prev.time.values, nxt.time.values)
            if overlap.size:
                a = prev.sel(time=overlap).to_array().values
                b = nxt.sel(time=overlap).to_array().values if set(prev.data_vars) == set(nxt.data_vars) else a
                if not np.allclose(a, b, equal_nan=True):
                    raise DataValidationError(
                        nxt.attrs["source"], "DATE",
                        f"{overlap.size} days overlap {Path(prev.attrs['source']).name} with different values",
                    )
        files_of_site = [Path(p.attrs["source"]).name for p in parts]
        merged = xr.combine_by_coords(
            [p.drop_vars(["lat", "lon", "elevation", "station"]).assign_coords(site=[key]) for p in parts],
            combine_attrs="drop",
            data_vars="all",
            join="outer",
            compat="no_conflicts",
        )
        full = pd.date_range(merged.time.values[0], merged.time.values[-1], freq="D")
        merged = merged.reindex(time=full)

        def common(name: str, parts=parts) -> float:
            values = pd.Series([float(p[name].values[0]) for p in parts]).dropna()
            return float(values.mode().iloc[0]) if len(values) else np.nan

        merged = merged.assign_coords(
            lat=("site", [common("lat")]), lon=("site", [common("lon")]), elevation=("site", [common("elevation")]),
            station=("site", [str(parts[0]["station"].values[0])]), files=("site", [" ".join(files_of_site)]),
        )
        for name, part_var in parts[0].data_vars.items():
            if name in merged:
                merged[name].attrs = part_var.attrs
        sites.append(merged)
    out = xr.concat(sites, dim="site", join="outer", data_vars="all", combine_attrs="drop")
    for name in out.data_vars:
        for s in sites:
            if name in s:
                out[name].attrs = s[name].attrs
                break
    for coord, units in (("lat", "degrees_north"), ("lon", "degrees_east"), ("elevation", "m")):
        out[coord].attrs["units"] = units
    out.attrs.update(source=str(folder), title="DSSAT station weather", skipped_files="\n".join(skipped))
    if validate:
        validate_dataset(out, source=folder)
    return out


# ---------------------------------------------------------------------------------------------------------
# Experiments (.??X + .??A + .??T)


def _table(tables: list[DssatTable], section_prefix: str, column: str) -> DssatTable | None:
    for t in tables:
        if t.section.upper().startswith(section_prefix) and column in t.columns:
            return t
    return None


def _level_lookup(table: DssatTable | None, key: str, columns: Sequence[str]) -> dict[int, dict[str, str]]:
    if table is None:
        return {}
    out = {}
    k = table.columns.index(key)
    for row in table.rows:
        try:
            level = int(float(row[k]))
        except ValueError:
            continue
        out[level] = {c: row[table.columns.index(c)] for c in columns if c in table.columns}
    return out


def _measured_frame(tables: list[DssatTable], path: Path, with_date: bool) -> pd.DataFrame:
    """Rows of all measurement tables of an A/T file, merged on TRNO (and DATE), replicates averaged."""
    frames = []
    for table in tables:
        if "TRNO" not in table.columns or (with_date and "DATE" not in table.columns):
            continue
        data = {"TRNO": _numbers(table, "TRNO", path).astype(int)}
        if with_date:
            data["DATE"] = _dates(table, "DATE", path)
        for c in table.columns:
            if c in ("TRNO", "DATE"):
                continue
            data[c] = _numbers(table, c, path)
        frame = pd.DataFrame(data)
        keys = ["TRNO", "DATE"] if with_date else ["TRNO"]
        grouped = frame.groupby(keys)
        mean = grouped.mean()
        mean["n_replicates"] = grouped.size()
        frames.append(mean)
    if not frames:
        raise DataValidationError(path, "TRNO", "no measurement table with TRNO" + (" and DATE" if with_date else ""))
    out = frames[0]
    for f in frames[1:]:
        dup = [c for c in f.columns if c in out.columns and c != "n_replicates"]
        if dup:
            raise DataValidationError(path, dup[0], "variable measured in two tables of the same file")
        out = out.join(f.drop(columns="n_replicates"), how="outer")
    return out


def _var_name(code: str) -> tuple[str, str, float]:
    if code in DSSAT_MEASURED:
        return DSSAT_MEASURED[code]
    safe = code.lower().replace("#", "n").replace("%", "pct")
    return f"dssat_{safe}", "as in DSSAT DATA.CDE", 1.0


#: Field coordinates further than this (degrees) from the experiment's weather station are not trusted.
MAX_FIELD_STATION_DEGREES = 1.0


def _weather_folder(path: Path, weather_dir) -> Path | None:
    if weather_dir is None:
        return None
    if weather_dir != "auto":
        return Path(weather_dir)
    # beside the X file, else a sibling folder (``weather/`` in the DSSAT layout) holding weather files by content
    siblings = sorted(p for p in path.parent.parent.iterdir() if p.is_dir() and p != path.parent)
    for candidate in (path.parent, *siblings):
        if files_of(candidate, "dssat_weather"):
            return candidate
    return None


def _station_location(folder: Path | None, station: str, experiment: str, lon_hemisphere: str | None) -> tuple[float, float, float, str]:
    """(lat, lon, elevation, file name) from the header of the experiment's weather file ``<WSTA>*.WTH``; NaN and
    "" when there is no such file or it cannot be parsed. A 4-letter WSTA picks the file of the experiment's year."""
    none = (np.nan, np.nan, np.nan, "")
    if folder is None or not station:
        return none
    files = [p for p in files_of(folder, "dssat_weather") if p.stem.upper().startswith(station.upper())]
    if not files:
        return none
    same = [p for p in files if p.stem.upper() == station.upper()] or [p for p in files if p.stem[4:6] == experiment[4:6]]
    chosen = (same or files)[0]
    try:
        header = next((t for t in parse_dssat_tables(chosen) if "LAT" in t.columns and "DATE" not in t.columns), None)
    except DataValidationError:
        return none
    lat, lon, elevation = _site_value(header, "LAT"), _site_value(header, "LONG"), _site_value(header, "ELEV")
    if lon_hemisphere is not None and np.isfinite(lon):
        lon = -abs(lon) if lon_hemisphere == "W" else abs(lon)
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return none
    return lat, lon, elevation, chosen.name


_EXP_LINE = re.compile(r"^\*EXP[^:]*:\s*(?P<code>[A-Z0-9]{8})\s?(?P<crop>[A-Z]{2})?(?![A-Z0-9])", re.IGNORECASE)


def _experiment_code(path: Path, *, crop: bool = False) -> str | None:
    """The experiment code (``IUAM9701``; with ``crop`` also the crop, ``IUAM9701SB``) of a DSSAT X, A or T file,
    from its first line (``*EXP.DETAILS: IUAM9701SB ...``, ``*EXP.DATA (A): IUAM9701SB``, ``*EXP: IUCA7901 SB``)."""
    h = head(path)
    line = next((ln.strip() for ln in (h.lines if h else ()) if ln.strip()), "")
    match = _EXP_LINE.match(line)
    if not match:
        return None
    return match.group("code").upper() + ((match.group("crop") or "").upper() if crop else "")


def _observed_kind(path: Path) -> str:
    """"A" (end-of-season summary) or "T" (time series) for a DSSAT observed-data file: as its first line says
    (``*EXP.DATA (T)``), else "T" when a table header has a ``DATE`` column."""
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "").upper()
    said = re.search(r"\(([AT])\)", first.split(":", 1)[0])
    if said:
        return said.group(1)
    return "T" if any(ln.startswith("@") and "DATE" in ln.split() for ln in text.splitlines()) else "A"


def _observed_files(path: Path) -> tuple[Path | None, Path | None]:
    """The A (end-of-season) and T (time-series) files of the experiment in X file ``path``, found beside it by
    content: their first line names the same experiment and crop (``*EXP.DATA (A): IUAM9701SB``); else by DSSAT's
    file naming convention."""
    code = _experiment_code(path, crop=True)
    out: dict[str, Path | None] = {"A": None, "T": None}
    for p in files_of(path.parent, "dssat_observed"):
        if code is None or _experiment_code(p, crop=True) != code:
            continue
        kind = _observed_kind(p)
        if out[kind] is not None:
            raise DataValidationError(path.parent, None, f"two {kind} files of experiment {code}: {out[kind].name}, {p.name}")
        out[kind] = p
    if out["A"] is None and out["T"] is None and len(path.suffix) == 4:
        # by DSSAT's naming convention when the first lines do not say: IUAM9701.SBX → IUAM9701.SBA / .SBT
        for p in sorted(path.parent.iterdir()):
            same = p.is_file() and p.stem == path.stem and len(p.suffix) == 4
            if same and p.suffix[:3].upper() == path.suffix[:3].upper() and p.suffix[-1].upper() in out:
                out[p.suffix[-1].upper()] = p
    return out["A"], out["T"]


def read_dssat_experiment(
    path: str | Path,
    *,
    weather_dir: str | Path | None = "auto",
    lon_hemisphere: str | None = None,
    validate: bool = True,
) -> xr.Dataset:
    """A DSSAT experiment (the ``.??X`` file; its ``.??A``/``.??T`` companions are found by name) → (site, time).

    Sites are treatments (``"<EXPERIMENT>/<TRNO>"``) with coordinates from the X file: treatment name, crop,
    cultivar, weather station, soil profile, planting and harvest dates, plant population. ``lat``/``lon``/
    ``elevation`` come from the FIELDS table (XCRD = longitude, YCRD = latitude) when plausible and, when the
    experiment's weather file is found (``weather_dir``: a folder, None, or "auto" = beside the X file or in a
    sibling ``weather/`` folder), within `MAX_FIELD_STATION_DEGREES` of its station; otherwise from the station
    header (``location_source`` says which). ``lon_hemisphere`` ('W'/'E') fixes the sign of station longitudes
    written positive for the west, as in old DSSAT files. End-of-season values (A file) are per-site variables:
    ``crop_yield`` t ha-1 (HWAM, **dry matter**: ``moisture_fraction`` 0), ``biomass_maturity``, ``lai_max``,
    ``harvest_index``, ``anthesis_doy``/``maturity_doy``, …; in-season samples (T file) are (site, time):
    ``lai``, ``biomass`` (CWAD, above-ground dry matter t ha-1), leaf/stem/grain/pod biomass, …, the mean of
    replicate samples with ``n_replicates``. Codes without a canonical name are kept as ``dssat_<code>``.
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(path, None, "experiment file not found")
    kind = recognise(path)
    if kind is not None and kind != "dssat_experiment":
        raise DataValidationError(path, None, f"not a DSSAT experiment file (an X file, *EXP.DETAILS): its content is "
                                  f"{FORMATS[kind].description}")
    xtables = parse_dssat_tables(path)
    treatments = _table(xtables, "TREATMENTS", "TNAME")
    if treatments is None or not treatments.rows:
        raise DataValidationError(path, "TNAME", "no *TREATMENTS table")
    experiment = _experiment_code(path) or path.stem
    tr = treatments.frame()
    trno = pd.to_numeric(tr["N"], errors="coerce")
    if trno.isna().any() or trno.duplicated().any():
        raise DataValidationError(path, "N", "treatment numbers missing or repeated")
    cultivars = _level_lookup(_table(xtables, "CULTIVARS", "CR"), "C", ("CR", "INGENO", "CNAME"))
    fields = _level_lookup(_table(xtables, "FIELDS", "WSTA"), "L", ("ID_FIELD", "WSTA", "ID_SOIL"))
    coords_tab = _level_lookup(_table(xtables, "FIELDS", "XCRD"), "L", ("XCRD", "YCRD", "ELEV"))
    planting = _level_lookup(_table(xtables, "PLANTING", "PDATE"), "P", ("PDATE", "PPOP"))
    harvest = _level_lookup(_table(xtables, "HARVEST", "HDATE"), "H", ("HDATE",))

    def level(row, name: str) -> int:
        try:
            return int(float(row[name]))
        except (KeyError, ValueError):
            return 0

    if lon_hemisphere not in (None, "W", "E"):
        raise ValueError(f"lon_hemisphere must be 'W', 'E' or None, got {lon_hemisphere!r}")
    weather_folder = _weather_folder(path, weather_dir)
    counts: dict[str, int] = {}
    sites, meta = [], {k: [] for k in ("treatment_name", "crop", "cultivar", "weather_station", "soil_id",
                                      "planting_date", "harvest_date", "plant_population", "lat", "lon",
                                      "elevation", "location_source")}
    for (_, row), number in zip(tr.iterrows(), trno.astype(int), strict=True):
        sites.append(f"{experiment}/{number}")
        cu, fl, mp, mh = (cultivars.get(level(row, "CU"), {}), fields.get(level(row, "FL"), {}),
                          planting.get(level(row, "MP"), {}), harvest.get(level(row, "MH"), {}))
        xy = coords_tab.get(level(row, "FL"), {})
        meta["treatment_name"].append(str(row["TNAME"]).strip())
        meta["crop"].append(DSSAT_CROPS.get(cu.get("CR", ""), cu.get("CR", "")))
        meta["cultivar"].append(cu.get("CNAME", ""))
        meta["weather_station"].append(fl.get("WSTA", ""))
        meta["soil_id"].append(fl.get("ID_SOIL", ""))
        meta["planting_date"].append(parse_dssat_date(mp.get("PDATE", "-99"), path, "PDATE"))
        meta["harvest_date"].append(parse_dssat_date(mh.get("HDATE", "-99"), path, "HDATE"))
        meta["plant_population"].append(_to_number(mp.get("PPOP", "-99")))
        x, y = _to_number(xy.get("XCRD", "-99")), _to_number(xy.get("YCRD", "-99"))
        plausible = np.isfinite(x) and np.isfinite(y) and abs(y) <= 90 and abs(x) <= 180 and (x, y) != (0.0, 0.0)
        s_lat, s_lon, s_elev, s_file = _station_location(weather_folder, fl.get("WSTA", ""), experiment, lon_hemisphere)
        if plausible and s_file and max(abs(y - s_lat), abs(x - s_lon)) > MAX_FIELD_STATION_DEGREES:
            plausible = False  # e.g. IUCA7901: XCRD 42.2, YCRD -82.37 (swapped and wrong) for a Castana, IA field
            counts["n_field_coordinates_rejected"] = counts.get("n_field_coordinates_rejected", 0) + 1
        if plausible:
            lat_, lon_, elev_, source = y, x, _to_number(xy.get("ELEV", "-99")), "FIELDS XCRD/YCRD"
        else:
            lat_, lon_, elev_, source = s_lat, s_lon, s_elev, f"weather station header ({s_file})" if s_file else ""
        meta["lat"].append(lat_)
        meta["lon"].append(lon_)
        meta["elevation"].append(elev_ if np.isfinite(elev_) and elev_ > 0 else np.nan)
        meta["location_source"].append(source)
    site_of_trno = dict(zip(trno.astype(int), sites, strict=True))

    ds = xr.Dataset(coords={"site": sites})
    a_path, t_path = _observed_files(path)
    measured_any = False
    if a_path is not None:
        summary = _measured_frame(parse_dssat_tables(a_path), a_path, with_date=False)
        unknown = sorted(set(summary.index) - set(site_of_trno))
        if unknown:
            raise DataValidationError(a_path, "TRNO", f"treatments {unknown} are not in {path.name}")
        summary.index = [site_of_trno[i] for i in summary.index]
        summary = summary.reindex(sites)
        for code in summary.columns:
            if code == "n_replicates":
                continue
            name, units, factor = _var_name(code)
            values = summary[code].to_numpy(dtype=float)
            if code in _DAY_OF_YEAR:
                values = np.where(values > 1000, values % 1000, values)  # YYDDD → DDD
            values = values * factor
            attrs = {"units": units, "long_name": f"DSSAT {code}", "comment": f"from {a_path.name}"}
            if name == "crop_yield":
                attrs.update(get_variable("crop_yield").attrs(), moisture_basis="dry matter (0 % moisture)",
                             moisture_fraction=0.0, comment=f"HWAM kg ha-1 dry matter / 1000, from {a_path.name}")
                values = mask_spikes(values, "crop_yield", a_path, code, counts)
            ds[name] = ("site", values.astype("float32"), attrs)
            measured_any = True
    if t_path is not None:
        series = _measured_frame(parse_dssat_tables(t_path), t_path, with_date=True)
        trnos = series.index.get_level_values("TRNO")
        unknown = sorted(set(trnos) - set(site_of_trno))
        if unknown:
            raise DataValidationError(t_path, "TRNO", f"treatments {unknown} are not in {path.name}")
        dates = np.sort(series.index.get_level_values("DATE").unique().values).astype("datetime64[ns]")
        si = pd.Index(sites).get_indexer([site_of_trno[t] for t in trnos])
        ti = pd.Index(dates).get_indexer(series.index.get_level_values("DATE").values.astype("datetime64[ns]"))
        ds = ds.assign_coords(time=dates)
        for code in series.columns:
            name, units, factor = _var_name(code)
            if code == "n_replicates":
                name, units, factor = "n_replicates", "1", 1.0
            grid = np.full((len(sites), dates.size), np.nan)
            grid[si, ti] = series[code].to_numpy(dtype=float) * factor
            if name in VARIABLE_NAMES_CHECKED:
                grid = mask_spikes(grid, name, t_path, code, counts)
            attrs = {"units": units, "long_name": f"DSSAT {code}", "comment": f"mean of replicate samples, {t_path.name}"}
            if name in VARIABLE_NAMES_CHECKED:
                attrs = {**get_variable(name).attrs(), "comment": attrs["comment"] + f" (DSSAT {code})"}
            ds[name] = (("site", "time"), grid.astype("float32"), attrs)
            measured_any = True
    if not measured_any:
        raise DataValidationError(path, None, f"no measured data: no A or T file of experiment {experiment} "
                                  f"(*EXP.DATA (A) / (T): {_experiment_code(path, crop=True)}) beside it")
    ds = ds.assign_coords(
        experiment=("site", [experiment] * len(sites)),
        treatment=("site", trno.astype(int).to_numpy()),
        **{k: ("site", np.array(v, dtype="datetime64[ns]") if k.endswith("_date") else v) for k, v in meta.items()},
    )
    ds["lat"].attrs["units"] = "degrees_north"
    ds["lon"].attrs["units"] = "degrees_east"
    ds["elevation"].attrs["units"] = "m"
    ds["plant_population"].attrs["units"] = "m-2"
    ds.attrs.update(source=str(path), title=f"DSSAT experiment {experiment}", **counts)
    if validate:
        validate_dataset(ds, source=path)
    return ds


def read_dssat_experiments(
    folder: str | Path,
    *,
    weather_dir: str | Path | None = "auto",
    lon_hemisphere: str | None = None,
    errors: str = "warn",
    validate: bool = True,
) -> xr.Dataset:
    """Every ``.??X`` experiment of a folder → one (site, time) dataset (see `read_dssat_experiment`)."""
    if errors not in ("warn", "raise"):
        raise ValueError(f"errors must be 'warn' or 'raise', got {errors!r}")
    folder = Path(folder)
    paths = files_of(folder, "dssat_experiment")
    if not paths:
        raise DataValidationError(folder, None, "no DSSAT experiment (.??X) files (recognised by content: *EXP.DETAILS)")
    parts, skipped = [], []
    for p in paths:
        try:
            part = read_dssat_experiment(p, weather_dir=weather_dir, lon_hemisphere=lon_hemisphere, validate=validate)
        except DataValidationError as err:
            skip_or_raise(err, errors, skipped, "DSSAT experiment", p.name)
            continue
        part.attrs = {}
        parts.append(part)
    if not parts:
        raise DataValidationError(folder, None, f"no readable experiment ({skipped[:3]})")
    out = xr.concat(parts, dim="site", join="outer", data_vars="all", coords="different", compat="equals",
                    combine_attrs="drop")
    for name in out.data_vars:
        for part in parts:
            if name in part:
                out[name].attrs = part[name].attrs
                break
    out.attrs.update(source=str(folder), title="DSSAT field experiments (measured)", skipped_files="\n".join(skipped),
                     references="Hoogenboom et al. (2019) DSSAT v4.7; Jones et al. (2003) Eur. J. Agron. 18:235")
    if validate:
        validate_dataset(out, source=folder, layout="site_time")
    return out

