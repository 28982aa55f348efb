"""Chamber soil respiration readers: COSORE continuous chamber series → daily (site, time) datasets, and SRDB
annual literature records → a (record,) dataset, both with canonical names and units (kgml.variables).

COSORE (Bond-Lamberty et al. 2020, doi:10.1111/gcb.15353) stores one folder per contributed dataset:
``DESCRIPTION.txt`` (``KEY: value`` site metadata incl. ``CSR_TIMEZONE``), ``PORTS.txt`` (chamber table: what
each port measures, Rs/Rh/Reco/NEE, and its treatment; port 0 = all ports) and ``data.csv.gz`` (timestamps in
UTC, CO2 flux in µmol m-2 s-1, soil temperature ``CSR_Tx`` °C and moisture ``CSR_SMx`` m3 m-3 at x cm).
SRDB (Bond-Lamberty & Thomson 2010, doi:10.5194/bg-7-1915-2010): one literature record per row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import warnings
import zlib
import zoneinfo
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from kgml.data.cache import cached_read
from kgml.data.formats import one_file, open_bytes, recognise
from kgml.data.schema import (
    DataValidationError,
    DataWarning,
    check_field_counts,
    register_layout,
    skip_or_raise,
    validate_dataset,
)
from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D, get_variable
from process_models.constants import DAYS_PER_YEAR, HOURS_PER_DAY

__all__ = [
    "COSORE_FLUX_VARIABLES",
    "IGBP_CODES",
    "cosore_datasets",
    "mask_spikes",
    "read_cosore",
    "read_cosore_dataset",
    "read_srdb",
]

#: COSORE ``CSR_MSMT_VAR`` (what a port's CO2 flux is) → canonical variable (all gC m-2 d-1).
COSORE_FLUX_VARIABLES: dict[str, str] = {"Rs": "rsoil", "Rh": "rh_soil", "Reco": "reco", "NEE": "nee"}

#: COSORE / FLUXNET IGBP class names → the FLUXNET three-letter code. Plantations map to their forest type.
IGBP_CODES: dict[str, str] = {
    "evergreen needleleaf forest": "ENF",
    "evergreen needleleaf plantation": "ENF",
    "evergreen broadleaf forest": "EBF",
    "deciduous needleleaf forest": "DNF",
    "deciduous broadleaf forest": "DBF",
    "deciduous broadleaf plantation": "DBF",
    "mixed forests": "MF",
    "mixed forest": "MF",
    "closed shrubland": "CSH",
    "closed shrublands": "CSH",
    "open shrubland": "OSH",
    "open shrublands": "OSH",
    "woody savanna": "WSA",
    "woody savannas": "WSA",
    "savanna": "SAV",
    "savannas": "SAV",
    "grassland": "GRA",
    "grasslands": "GRA",
    "wetland": "WET",
    "permanent wetlands": "WET",
    "cropland": "CRO",
    "croplands": "CRO",
    "urban": "URB",
    "barren": "BSV",
    "snow and ice": "SNO",
    "water": "WAT",
}

#: Default minimum fraction of the day's time-of-day blocks holding at least one valid flux (daily rule).
DEFAULT_MIN_COVERAGE = 0.5
#: Default width of a time-of-day block (h) for the coverage rule; 3 h → 8 blocks a day.
DEFAULT_BLOCK_HOURS = 3
#: Soil sensor depth (cm) preferred for ``tsoil`` and ``swc`` when several ``CSR_Tx`` / ``CSR_SMx`` exist.
DEFAULT_SENSOR_DEPTH_CM = 5.0
#: Above this fraction of out-of-range raw values a column is taken as being in the wrong units (an error);
#: below it the out-of-range values are isolated spikes, masked and counted.
SYSTEMATIC_FRACTION = 0.5

_REQUIRED_DATA_COLUMNS = ("CSR_PORT", "CSR_TIMESTAMP_BEGIN", "CSR_FLUX_CO2")
_TEMPERATURE_COLUMN = re.compile(r"^CSR_T(\d+(?:\.\d+)?)$")
_MOISTURE_COLUMN = re.compile(r"^CSR_SM(\d+(?:\.\d+)?)$")
_UTC_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)

register_layout("record", ("record",))


# ---------------------------------------------------------------------------------------------------------
# COSORE metadata


def _read_text(path: Path) -> str:
    try:  # gzip by its magic bytes, whatever the file is called
        return open_bytes(path).decode("utf-8", errors="replace")
    except (OSError, EOFError, zlib.error) as err:  # damaged gzip streams too
        raise DataValidationError(path, None, f"cannot read file: {err}") from err


#: The three files of a COSORE dataset folder: role → (format in kgml.data.formats, the COSORE standard's name
#: stem). Each is recognised by its content; a file that is not, but carries the standard's name, is read anyway
#: so that its reader names what is wrong with it.
_COSORE_ROLES = {"description": ("cosore_description", "DESCRIPTION"), "ports": ("cosore_ports", "PORTS"),
                 "data": ("cosore_data", "data")}


def cosore_files(folder: str | Path) -> dict[str, Path | None]:
    """The DESCRIPTION, PORTS and flux-table files of one COSORE dataset folder, recognised by content whatever
    they are called (None where the folder has none); two files of one role are an error naming them."""
    folder = Path(folder)
    out: dict[str, Path | None] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    kinds = {p: recognise(p) for p in files}
    for role, (fmt, stem) in _COSORE_ROLES.items():
        found = [p for p in files if kinds[p] == fmt]
        if not found:  # by the standard's name: its reader then says what is wrong with it
            found = [p for p in files if kinds[p] is None and p.name.split(".")[0] == stem]
        if len(found) > 1:
            raise DataValidationError(folder, None, f"two COSORE {role} files {[p.name for p in found]}")
        out[role] = found[0] if found else None
    return out


def _read_description(path: Path | None, folder: Path | None = None) -> dict[str, str]:
    """``KEY: value`` lines of a COSORE DESCRIPTION.txt (comment and continuation lines ignored)."""
    if path is None or not path.exists():
        path = path or folder
        raise DataValidationError(path, None, "DESCRIPTION.txt is missing from the COSORE dataset folder")
    out: dict[str, str] = {}
    for line in _read_text(path).splitlines():
        match = re.match(r"^(CSR_[A-Z_]+)\s*:\s*(.*?)\s*$", line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def _parse_timezone(name: str | None, source: Path) -> dt.tzinfo:
    """An IANA zone (``Etc/GMT+5``, ``America/Puerto_Rico``) or a fixed offset (``UTC-5``, ``+05:30``)."""
    if name is None or not name.strip():
        raise DataValidationError(source, "CSR_TIMEZONE", "no time zone given; local days cannot be formed")
    text = name.strip()
    match = _UTC_OFFSET.match(text)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        offset = dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
        if offset > dt.timedelta(hours=14):
            raise DataValidationError(source, "CSR_TIMEZONE", f"UTC offset {text!r} is beyond ±14 h")
        return dt.timezone(sign * offset)
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise DataValidationError(
            source,
            "CSR_TIMEZONE",
            f"unknown time zone {text!r}: use an IANA name (e.g. 'Etc/GMT+5', 'America/Chicago') or a UTC offset "
            "(e.g. 'UTC-5')",
        ) from err


def _read_ports(path: Path | None, folder: Path | None = None) -> pd.DataFrame:
    """The PORTS.txt chamber table (comma separated, tab padded, ``#`` comment lines)."""
    if path is None or not path.exists():
        path = path or folder
        raise DataValidationError(path, None, "PORTS.txt is missing from the COSORE dataset folder")
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.reader(lines, skipinitialspace=True))
    if not rows:
        raise DataValidationError(path, None, "no port table found")
    header = [h.strip() for h in rows[0]]
    for column in ("CSR_PORT", "CSR_MSMT_VAR"):
        if column not in header:
            raise DataValidationError(path, column, f"column missing from the port table (found {header})")
    records = []
    for i, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row] + [""] * len(header)
        rec = dict(zip(header, cells[: len(header)], strict=True))
        try:
            rec["CSR_PORT"] = int(float(rec["CSR_PORT"]))
        except ValueError as err:
            raise DataValidationError(path, "CSR_PORT", f"row {i}: port {rec['CSR_PORT']!r} is not a number") from err
        records.append(rec)
    ports = pd.DataFrame.from_records(records)
    if ports["CSR_PORT"].duplicated().any():
        dup = ports.loc[ports["CSR_PORT"].duplicated(), "CSR_PORT"].tolist()
        raise DataValidationError(path, "CSR_PORT", f"ports listed twice: {dup}")
    return ports.set_index("CSR_PORT")


def _to_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "NA") else np.nan
    except ValueError:
        return np.nan


def _igbp_code(name: str) -> str:
    key = " ".join(name.lower().split())
    if key.upper() in set(IGBP_CODES.values()):
        return key.upper()
    return IGBP_CODES.get(key, name or "")


def _sensor_column(columns: Iterable[str], pattern: re.Pattern, depth: float) -> tuple[str | None, float]:
    """The sensor column closest to ``depth`` cm (ties: the shallower); surface (0 cm) sensors are skipped."""
    found = [(float(m.group(1)), c) for c in columns if (m := pattern.match(c)) and float(m.group(1)) > 0]
    if not found:
        return None, np.nan
    d, column = min(found, key=lambda dc: (abs(dc[0] - depth), dc[0]))
    return column, d


def _is_cosore_dataset(folder: Path) -> bool:
    return folder.is_dir() and any(cosore_files(folder).values())


def cosore_base(root: str | Path) -> Path:
    """The folder holding the COSORE dataset folders: ``root`` itself when one of its sub-folders is a COSORE
    dataset (recognised by content), else the one sub-folder of ``root`` that holds them (``datasets/`` in the
    COSORE repository layout); ``root`` when neither."""
    root = Path(root)
    if not root.is_dir():
        return root
    subs = sorted(p for p in root.iterdir() if p.is_dir())
    if any(_is_cosore_dataset(p) for p in subs):
        return root
    holders = [p for p in subs if any(_is_cosore_dataset(q) for q in p.iterdir() if q.is_dir())]
    if len(holders) > 1:
        raise DataValidationError(root, None, f"COSORE dataset folders in several sub-folders {[p.name for p in holders]}")
    return holders[0] if holders else root


def is_cosore_root(folder: str | Path) -> bool:
    """Whether ``folder`` holds COSORE dataset folders (directly or in one sub-folder), recognised by content."""
    folder = Path(folder)
    try:
        base = cosore_base(folder)
    except DataValidationError:
        return True
    return base.is_dir() and any(_is_cosore_dataset(p) for p in base.iterdir() if p.is_dir())


def cosore_datasets(root: str | Path) -> list[str]:
    """Names of the COSORE dataset folders under ``root`` (the ``cosore`` folder or its ``datasets/``); a dataset
    folder is one with a COSORE DESCRIPTION, PORTS or flux table, recognised by content (`cosore_files`)."""
    root = Path(root)
    base = cosore_base(root)
    if not base.is_dir():
        raise DataValidationError(root, None, "not a COSORE folder (no datasets/ directory)")
    # a folder with any COSORE file counts (one without DESCRIPTION.txt is then an error naming it, not skipped
    # silently)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and any(cosore_files(p).values()))


# ---------------------------------------------------------------------------------------------------------
# COSORE values


def _numeric(df: pd.DataFrame, column: str, source: Path, counts: dict[str, int] | None = None) -> np.ndarray:
    """A numeric column; text cells are an error when they are most of it, else NaN with a `DataWarning` and
    their count recorded in ``counts`` (→ the dataset's attributes ``n_<column>_non_numeric``)."""
    raw = df[column]
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=float, na_value=np.nan, copy=True)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
        missing = np.flatnonzero(np.isnan(values))
        text = raw.iloc[missing]  # only cells that did not parse are looked at as text (millions of rows)
        bad = np.zeros(values.size, dtype=bool)
        bad[missing] = (text.notna() & (text.astype(str).str.strip() != "")).to_numpy()
        if bad.any():
            example = raw.iloc[int(np.flatnonzero(bad)[0])]
            if bad.mean() > SYSTEMATIC_FRACTION:
                raise DataValidationError(source, column, f"values are not numbers (e.g. {example!r})")
            warnings.warn(f"{source}: column {column!r}: {int(bad.sum())} of {bad.size} values are not numbers "
                          f"(e.g. {example!r}); set to NaN", DataWarning, stacklevel=3)
            if counts is not None:
                counts[f"n_{column}_non_numeric"] = counts.get(f"n_{column}_non_numeric", 0) + int(bad.sum())
    values[np.isin(values, (-9999.0, -999.0))] = np.nan
    return values


def mask_spikes(values: np.ndarray, name: str, source: Path, column: str, counts: dict[str, int]) -> np.ndarray:
    """Mask isolated values outside the registry's valid range of ``name``; a systematic excess is an error."""
    var = get_variable(name)
    bad = var.out_of_range(values)
    finite = np.isfinite(values)
    if not bad.any():
        return values
    if bad.sum() > SYSTEMATIC_FRACTION * finite.sum():
        hint = var.diagnose(values[finite]) or ""
        raise DataValidationError(
            source,
            column,
            f"{int(bad.sum())} of {int(finite.sum())} values lie outside the valid range of {name} "
            f"[{var.valid_min}, {var.valid_max}] {var.units} after conversion: wrong units? {hint}",
        )
    counts[f"n_{name}_out_of_range"] = counts.get(f"n_{name}_out_of_range", 0) + int(bad.sum())
    out = values.copy()
    out[bad] = np.nan
    return out


def _swc_percent(values: np.ndarray, units: str, source: Path, column: str, notes: list[str]) -> np.ndarray | None:
    """Soil moisture to %. ``units`` 'm3 m-3' or '%' (strict) or 'auto' (decide from the values; None = unsure)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    if units == "m3 m-3":
        if np.quantile(finite, 0.95) > 1.0:
            raise DataValidationError(
                source,
                column,
                f"declared m3 m-3 but values reach {np.quantile(finite, 0.95):.3g} (median {np.median(finite):.3g}): "
                "looks like % — pass swc_units='%' (or 'auto')",
            )
        return values * 100.0
    if units == "%":
        if np.quantile(finite, 0.95) <= 1.0:
            raise DataValidationError(
                source, column, "declared % but every value is ≤ 1: looks like a m3 m-3 fraction — pass swc_units='m3 m-3'"
            )
        return values
    if units != "auto":
        raise ValueError(f"swc_units must be 'auto', 'm3 m-3' or '%', got {units!r}")
    if np.quantile(finite, 0.95) <= 1.0:
        return values * 100.0
    if np.median(finite) >= 2.0 and np.quantile(finite, 0.99) <= 100.0:
        notes.append(f"{column} is documented as m3 m-3 but holds % (median {np.median(finite):.3g}); used as %")
        return values
    warnings.warn(
        f"{source}: column {column!r}: soil moisture is neither a 0–1 fraction nor % "
        f"(median {np.median(finite):.3g}, 95th percentile {np.quantile(finite, 0.95):.3g}); swc left out",
        DataWarning,
        stacklevel=3,
    )
    return None


def _local_times(begin: pd.Series, end: pd.Series | None, tz: dt.tzinfo, source: Path) -> pd.Series:
    """Mid-measurement time in the site's local (standard) time, naive."""
    start = pd.to_datetime(begin, utc=True, errors="coerce", format="ISO8601")
    bad = start.isna() & begin.notna()
    if bad.any():
        raise DataValidationError(
            source, "CSR_TIMESTAMP_BEGIN", f"{int(bad.sum())} unreadable timestamps (first {begin[bad].iloc[0]!r})"
        )
    if start.isna().any():
        raise DataValidationError(source, "CSR_TIMESTAMP_BEGIN", f"{int(start.isna().sum())} missing timestamps")
    mid = start
    if end is not None:
        stop = pd.to_datetime(end, utc=True, errors="coerce", format="ISO8601")
        length = stop - start
        ok = stop.notna() & (length >= pd.Timedelta(0)) & (length <= pd.Timedelta(hours=2))
        mid = start.where(~ok, start + length / 2)
    return mid.dt.tz_convert(tz).dt.tz_localize(None)


def _daily_mean(
    frame: pd.DataFrame, keys: list[str], columns: list[str], block_hours: float, min_coverage: float, by_block: bool
) -> pd.DataFrame:
    """Daily means of ``columns`` per ``keys``+date: mean of time-of-day block means, NaN below ``min_coverage``."""
    blocks_per_day = HOURS_PER_DAY / block_hours
    group_keys = [*keys, "date"]
    if by_block:
        block_means = frame.groupby([*group_keys, "block"], sort=False)[columns].mean()
        grouped = block_means.groupby(level=group_keys, sort=False)
        daily = grouped.mean()
        coverage = grouped.count() / blocks_per_day
        daily = daily.where(coverage >= min_coverage)
        daily["coverage"] = coverage[columns[0]]
    else:  # day-resolution timestamps: time of day unknown, the coverage rule cannot be applied
        daily = frame.groupby(group_keys, sort=False)[columns].mean()
        daily["coverage"] = np.nan
    daily["n_obs"] = frame.groupby(group_keys, sort=False)[columns[0]].count()
    return daily


def read_cosore_dataset(
    path: str | Path,
    *,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    block_hours: float = DEFAULT_BLOCK_HOURS,
    sensor_depth: float = DEFAULT_SENSOR_DEPTH_CM,
    swc_units: str = "auto",
    duplicates: str = "mean",
    aggregate_ports: bool = False,
    validate: bool = True,
) -> xr.Dataset:
    """One COSORE dataset folder → daily chamber fluxes and soil drivers on (site, time).

    * Sites are the dataset's ports (``"<dataset>/<port>"``; just ``"<dataset>"`` for a one-port dataset), or
      with ``aggregate_ports`` the mean over ports sharing what they measure and their treatment.
    * Timestamps (UTC) go to the site's local standard time via ``CSR_TIMEZONE`` (IANA name or UTC offset);
      the measurement midpoint decides the local day.
    * CO2 flux µmol m-2 s-1 → gC m-2 d-1 (× 1.0377, molar mass of C) and goes to ``rsoil`` (Rs ports),
      ``rh_soil`` (Rh), ``reco`` (Reco) or ``nee`` (NEE) as PORTS.txt says.
    * Daily value = mean of the means of ``block_hours`` time-of-day blocks (so an over-sampled night does not
      dominate); days with fewer than ``min_coverage`` of the blocks observed are NaN. ``coverage`` and
      ``n_obs`` are kept. Datasets with day-only timestamps (``CSR_TIMESTAMP_FORMAT`` without hours) cannot
      be checked for coverage: their ``coverage`` is NaN and every observed day is kept.
    * ``tsoil`` (°C) and ``swc`` (%) from the ``CSR_Tx`` / ``CSR_SMx`` sensor nearest ``sensor_depth`` cm
      (depth kept as a site coordinate). ``swc_units='auto'`` accepts the % that several contributors wrote
      instead of the documented m3 m-3 (noted in ``attrs['notes']``); 'm3 m-3' or '%' make a mismatch an error.
    * Isolated raw values outside the registry's valid range (spikes such as ±2e5) are masked and counted in
      attrs; a column mostly out of range is an error (wrong units). Exact duplicate rows are dropped; rows
      sharing a port and timestamp with different values are averaged (``duplicates='mean'``) or rejected
      (``duplicates='error'``).
    """
    path = Path(path)
    if duplicates not in ("mean", "error"):
        raise ValueError(f"duplicates must be 'mean' or 'error', got {duplicates!r}")
    if not path.is_dir():
        raise DataValidationError(path, None, "COSORE dataset folder not found")
    name = path.name
    files = cosore_files(path)
    desc_file = files["description"]
    desc = _read_description(desc_file, path)
    tz = _parse_timezone(desc.get("CSR_TIMEZONE"), desc_file)
    ports = _read_ports(files["ports"], path)
    data_file = files["data"]
    if data_file is None:
        raise DataValidationError(path, None, "no data.csv.gz (flux table: CSR_PORT, CSR_TIMESTAMP_BEGIN, CSR_FLUX_CO2 "
                                  "columns) in the COSORE dataset folder")
    try:
        raw = open_bytes(data_file)
        check_field_counts(data_file, raw)
        df = pd.read_csv(io.BytesIO(raw), low_memory=False)
    except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as err:
        if isinstance(err, DataValidationError):
            raise
        raise DataValidationError(data_file, None, f"cannot parse the flux table: {err}") from err
    for column in _REQUIRED_DATA_COLUMNS:
        if column not in df.columns:
            close = [c for c in df.columns if c.replace("_", "").upper().startswith(column.replace("_", "")[:8])]
            hint = f" (similar: {close})" if close else ""
            raise DataValidationError(data_file, column, f"required column missing{hint}; found {list(df.columns)}")
    if df.empty:
        raise DataValidationError(data_file, None, "the flux table has no rows")

    counts: dict[str, int] = {}
    notes: list[str] = []
    flux = _numeric(df, "CSR_FLUX_CO2", data_file, counts)
    if not np.isfinite(flux).any():
        raise DataValidationError(data_file, "CSR_FLUX_CO2", "all CO2 flux values are missing (NA)")
    flux = mask_spikes(flux * UMOL_CO2_M2_S_TO_GC_M2_D, "rsoil", data_file, "CSR_FLUX_CO2", counts)
    port = pd.to_numeric(df["CSR_PORT"], errors="coerce")
    if port.isna().any():
        raise DataValidationError(data_file, "CSR_PORT", f"{int(port.isna().sum())} rows without a port number")
    frame = pd.DataFrame({"port": port.astype(int).to_numpy(), "flux": flux})
    # Day-only raw timestamps (format without hours) were written as midnight in the instrument's zone: their
    # date is the recorded one there, and converting midnight to another zone would shift it by a day.
    day_resolution = not re.search(r"%[HTIRkl]", desc.get("CSR_TIMESTAMP_FORMAT", "%H"))
    stamp_tz = _parse_timezone(desc.get("CSR_TIMESTAMP_TZ") or desc.get("CSR_TIMEZONE"), desc_file)
    frame["time"] = _local_times(
        df["CSR_TIMESTAMP_BEGIN"],
        None if day_resolution or "CSR_TIMESTAMP_END" not in df else df["CSR_TIMESTAMP_END"],
        stamp_tz if day_resolution else tz,
        data_file,
    ).astype("datetime64[ns]")

    tsoil_col, tsoil_depth = _sensor_column(df.columns, _TEMPERATURE_COLUMN, sensor_depth)
    swc_col, swc_depth = _sensor_column(df.columns, _MOISTURE_COLUMN, sensor_depth)
    drivers = []
    if tsoil_col is not None:
        frame["tsoil"] = mask_spikes(_numeric(df, tsoil_col, data_file, counts), "tsoil", data_file, tsoil_col, counts)
        drivers.append("tsoil")
    if swc_col is not None:
        swc = _swc_percent(_numeric(df, swc_col, data_file, counts), swc_units, data_file, swc_col, notes)
        if swc is not None:
            frame["swc"] = mask_spikes(swc, "swc", data_file, swc_col, counts)
            drivers.append("swc")
        else:
            swc_col, swc_depth = None, np.nan
    tair_col = next((c for c in ("CSR_TAIR_AMB", "CSR_TAIR") if c in df.columns), None)
    if tair_col is not None:
        frame["tair"] = mask_spikes(_numeric(df, tair_col, data_file, counts), "tair", data_file, tair_col, counts)
        drivers.append("tair")

    n_rows = len(frame)
    frame = frame[np.isfinite(frame["flux"]) | frame[drivers].notna().any(axis=1)] if drivers else frame
    frame = frame.drop_duplicates()
    counts["n_exact_duplicates_dropped"] = n_rows - len(frame)
    keyed = frame[np.isfinite(frame["flux"])]
    conflicting = int(keyed.duplicated(["port", "time"]).sum())
    if conflicting and not day_resolution:
        if duplicates == "error":
            first = keyed.loc[keyed.duplicated(["port", "time"]), ["port", "time"]].iloc[0]
            raise DataValidationError(
                data_file,
                "CSR_TIMESTAMP_BEGIN",
                f"{conflicting} rows repeat a port and timestamp with different values "
                f"(first: port {first['port']} at {first['time']} local); pass duplicates='mean' to average them",
            )
        counts["n_conflicting_duplicates_averaged"] = conflicting
        warnings.warn(
            f"{data_file}: {conflicting} of {len(keyed)} fluxes repeat a port and timestamp with different values; "
            "averaged (pass duplicates='error' to refuse)",
            DataWarning,
            stacklevel=2,
        )

    frame["date"] = frame["time"].dt.floor("D")
    frame["block"] = (frame["time"].dt.hour // block_hours).astype(int)

    # Port metadata: the port's own PORTS.txt row, else the port-0 row ("all ports").
    meta_rows = {}
    for p in sorted(frame["port"].unique()):
        if p in ports.index:
            meta_rows[p] = ports.loc[p]
        elif 0 in ports.index:
            meta_rows[p] = ports.loc[0]
        elif len(ports) == 1:
            meta_rows[p] = ports.iloc[0]
        else:
            warnings.warn(f"{files['ports']}: port {p} of the data is not described; assumed Rs", DataWarning, 2)
            meta_rows[p] = pd.Series({"CSR_MSMT_VAR": "Rs", "CSR_TREATMENT": "None"})
    port_var, port_treatment = {}, {}
    for p, row in meta_rows.items():
        msmt = str(row.get("CSR_MSMT_VAR", "")).strip().strip('"')
        if msmt not in COSORE_FLUX_VARIABLES:
            warnings.warn(
                f"{files['ports']}: port {p}: CSR_MSMT_VAR {msmt!r} is not one of {sorted(COSORE_FLUX_VARIABLES)}; "
                "port skipped",
                DataWarning,
                stacklevel=2,
            )
            continue
        port_var[p] = msmt
        port_treatment[p] = str(row.get("CSR_TREATMENT", "None") or "None").strip().strip('"') or "None"
    frame = frame[frame["port"].isin(list(port_var))]
    if frame.empty:
        raise DataValidationError(files["ports"], "CSR_MSMT_VAR", "no port measures Rs, Rh, Reco or NEE")

    columns = ["flux", *drivers]
    daily = _daily_mean(frame, ["port"], columns, block_hours, min_coverage, by_block=not day_resolution)
    daily = daily.reset_index()
    if aggregate_ports:
        daily["group"] = [f"{port_var[p]}|{port_treatment[p]}" for p in daily["port"]]
        counted = daily.assign(n_ports=np.isfinite(daily["flux"]).astype(int))
        daily = counted.groupby(["group", "date"], sort=False).agg(
            {**{c: "mean" for c in columns}, "coverage": "mean", "n_obs": "sum", "n_ports": "sum"}
        )
        daily = daily.reset_index()
        groups = sorted(daily["group"].unique())
        labels = {g: name if len(groups) == 1 else f"{name}/{g.replace('|', '/')}" for g in groups}
        daily["site"] = daily["group"].map(labels)
        site_var = {labels[g]: g.split("|")[0] for g in groups}
        site_treatment = {labels[g]: g.split("|")[1] for g in groups}
        site_port = {labels[g]: -1 for g in groups}
    else:
        ports_present = sorted(port_var)
        labels = {p: name if len(ports_present) == 1 else f"{name}/{p}" for p in ports_present}
        daily["site"] = daily["port"].map(labels)
        site_var = {labels[p]: port_var[p] for p in ports_present}
        site_treatment = {labels[p]: port_treatment[p] for p in ports_present}
        site_port = {labels[p]: p for p in ports_present}

    if not np.isfinite(daily["flux"]).any():
        best = float(np.nanmax(daily["coverage"])) if np.isfinite(daily["coverage"]).any() else float("nan")
        raise DataValidationError(
            data_file,
            "CSR_FLUX_CO2",
            f"no day reaches min_coverage={min_coverage} of {block_hours:g}-h blocks (best day {best:.3g}); "
            "lower min_coverage to keep sparse campaign data",
        )

    table = daily.set_index(["site", "date"])[[*columns, "coverage", "n_obs"]]
    table.index = table.index.set_names(["site", "time"])
    ds = xr.Dataset.from_dataframe(table)
    full_time = pd.date_range(ds.time.values.min(), ds.time.values.max(), freq="D")
    ds = ds.reindex(time=full_time)
    sites = [str(s) for s in ds.site.values]

    out = xr.Dataset(coords={"site": sites, "time": ds.time.values})
    msmt = np.array([site_var[s] for s in sites])
    for kind, var_name in COSORE_FLUX_VARIABLES.items():
        if (msmt == kind).any():
            values = ds["flux"].where(xr.DataArray(msmt == kind, dims="site")).astype("float32")
            out[var_name] = values.assign_attrs(
                get_variable(var_name).attrs(), cell_methods="time: mean (of 3-h block means)",
                comment=f"COSORE CSR_FLUX_CO2 of ports measuring {kind}, µmol m-2 s-1 × {UMOL_CO2_M2_S_TO_GC_M2_D:.5f}",
            )
    for driver in drivers:
        if np.isfinite(ds[driver].values).any():
            column = {"tsoil": tsoil_col, "swc": swc_col, "tair": tair_col}[driver]
            out[driver] = ds[driver].astype("float32").assign_attrs(get_variable(driver).attrs(), comment=f"COSORE {column}")
    out["coverage"] = ds["coverage"].astype("float32").assign_attrs(
        units="1", long_name=f"fraction of {block_hours:g}-h blocks of the local day with a valid flux"
    )
    out["n_obs"] = ds["n_obs"].fillna(0).astype("int32").assign_attrs(units="1", long_name="flux measurements in the day")

    def desc_float(key: str) -> float:
        return _to_float(desc.get(key))

    igbp_text = desc.get("CSR_IGBP", "")
    out = out.assign_coords(
        dataset=("site", [name] * len(sites)),
        port=("site", np.array([site_port[s] for s in sites], dtype=np.int32)),
        msmt_var=("site", msmt.astype(str)),
        treatment=("site", [site_treatment[s] for s in sites]),
        lat=("site", np.full(len(sites), desc_float("CSR_LATITUDE"))),
        lon=("site", np.full(len(sites), desc_float("CSR_LONGITUDE"))),
        elevation=("site", np.full(len(sites), desc_float("CSR_ELEVATION"))),
        igbp=("site", [_igbp_code(igbp_text)] * len(sites)),
        igbp_description=("site", [igbp_text] * len(sites)),
        network_site_id=("site", [desc.get("CSR_SITE_ID", "")] * len(sites)),
        timezone=("site", [desc.get("CSR_TIMEZONE", "")] * len(sites)),
        tsoil_depth=("site", np.full(len(sites), tsoil_depth)),
        swc_depth=("site", np.full(len(sites), swc_depth)),
        primary_pub=("site", [desc.get("CSR_PRIMARY_PUB", "")] * len(sites)),
    )
    out["lat"].attrs.update(units="degrees_north")
    out["lon"].attrs.update(units="degrees_east")
    out["elevation"].attrs.update(units="m")
    out["tsoil_depth"].attrs.update(units="cm")
    out["swc_depth"].attrs.update(units="cm")
    out["time"].attrs.update(long_name="local calendar day (site standard time, CSR_TIMEZONE)")
    out.attrs.update(
        source=str(path),
        title=f"COSORE {name}: daily chamber fluxes",
        references="Bond-Lamberty et al. (2020) Global Change Biology 26:7268, doi:10.1111/gcb.15353",
        min_coverage=min_coverage,
        block_hours=block_hours,
        timestamp_resolution="day" if day_resolution else "sub-daily",
        notes="; ".join(notes),
        **counts,
    )
    if validate:
        validate_dataset(out, source=path, layout="site_time")
    return out


def read_cosore(
    root: str | Path,
    datasets: Sequence[str] | None = None,
    *,
    errors: str = "warn",
    progress: bool = False,
    cache: bool | str | Path = False,
    **kwargs,
) -> xr.Dataset:
    """Several COSORE datasets (all under ``root`` by default) → one (site, time) dataset.

    Each dataset is read with `read_cosore_dataset` (``kwargs`` pass through). A dataset that fails (all flux
    missing, unknown time zone, wrong units, ...) is skipped with a `DataWarning` naming it and the problem
    (``errors='warn'``) or raises (``errors='raise'``); ``attrs['skipped_files']`` lists what was skipped and why.
    ``cache`` (True, or a folder; see `kgml.data.cache`) keeps the result as netCDF, reused while every
    dataset's DESCRIPTION.txt, PORTS.txt and flux table and the options are unchanged.
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"errors must be 'warn' or 'raise', got {errors!r}")
    root = Path(root)
    base = cosore_base(root)
    names = list(datasets) if datasets is not None else cosore_datasets(root)
    if cache:
        sources = [f for n in names for f in cosore_files(base / n).values() if f is not None]
        options = {"reader": "read_cosore", "datasets": names, "errors": errors, **kwargs}
        return cached_read(
            "cosore", sources, lambda: read_cosore(root, names, errors=errors, progress=progress, **kwargs),
            cache=cache, options=options,
        )
    parts, skipped = [], []
    iterator: Iterable[str] = names
    if progress:
        iterator = tqdm(names, desc="COSORE", unit="dataset")
    for ds_name in iterator:
        try:
            part = read_cosore_dataset(base / ds_name, **kwargs)
        except DataValidationError as err:
            skip_or_raise(err, errors, skipped, f"COSORE dataset {ds_name}", ds_name)
            continue
        part.attrs = {}
        parts.append(part)
    if not parts:
        raise DataValidationError(root, None, f"no COSORE dataset could be read ({len(skipped)} skipped: {skipped[:3]})")
    combined = xr.concat(parts, dim="site", join="outer", data_vars="all", coords="different", compat="equals",
                         combine_attrs="drop", fill_value={"n_obs": 0})
    for var_name in combined.data_vars:
        for part in parts:
            if var_name in part:
                combined[var_name].attrs = part[var_name].attrs
                break
    combined["n_obs"] = combined["n_obs"].astype("int32")
    combined.attrs.update(
        source=str(root),
        title="COSORE daily chamber fluxes",
        references="Bond-Lamberty et al. (2020) Global Change Biology 26:7268, doi:10.1111/gcb.15353; cite each "
        "dataset's primary publication (coordinate primary_pub)",
        skipped_files="\n".join(skipped),
    )
    validate_dataset(combined, source=root, layout="site_time")
    return combined


# ---------------------------------------------------------------------------------------------------------
# SRDB

#: SRDB numeric fields kept (column → (name, units)). Annual C fluxes are totals per year (gC m-2 yr-1).
SRDB_FIELDS: dict[str, tuple[str, str]] = {
    "Study_midyear": ("study_midyear", "yr"),
    "YearsOfData": ("years_of_data", "yr"),
    "Elevation": ("elevation", "m"),
    "Age_ecosystem": ("age_ecosystem", "yr"),
    "Age_disturbance": ("age_disturbance", "yr"),
    "Soil_BD": ("soil_bd", "g cm-3"),
    "Soil_CN": ("soil_cn", "1"),
    "Soil_sand": ("soil_sand", "%"),
    "Soil_silt": ("soil_silt", "%"),
    "Soil_clay": ("soil_clay", "%"),
    "MAT": ("mat", "degC"),
    "MAP": ("map", "mm yr-1"),
    "PET": ("pet", "mm yr-1"),
    "Study_temp": ("study_temp", "degC"),
    "Study_precip": ("study_precip", "mm yr-1"),
    "Collar_height": ("collar_height", "cm"),
    "Collar_depth": ("collar_depth", "cm"),
    "Chamber_area": ("chamber_area", "cm2"),
    "Meas_interval": ("meas_interval", "d"),
    "Annual_coverage": ("annual_coverage", "1"),
    "Rs_annual": ("rs_annual", "gC m-2 yr-1"),
    "Rs_annual_err": ("rs_annual_err", "gC m-2 yr-1"),
    "Rs_interann_err": ("rs_interann_err", "gC m-2 yr-1"),
    "Rlitter_annual": ("rlitter_annual", "gC m-2 yr-1"),
    "Ra_annual": ("ra_annual", "gC m-2 yr-1"),
    "Rh_annual": ("rh_annual", "gC m-2 yr-1"),
    "RC_annual": ("rc_annual", "1"),
    "Rs_spring": ("rs_spring", "umol m-2 s-1"),
    "Rs_summer": ("rs_summer", "umol m-2 s-1"),
    "Rs_autumn": ("rs_autumn", "umol m-2 s-1"),
    "Rs_winter": ("rs_winter", "umol m-2 s-1"),
    "Rs_growingseason": ("rs_growingseason", "umol m-2 s-1"),
    "Rs_wet": ("rs_wet", "umol m-2 s-1"),
    "Rs_dry": ("rs_dry", "umol m-2 s-1"),
    "RC_seasonal": ("rc_seasonal", "1"),
    "GPP": ("gpp_annual", "gC m-2 yr-1"),
    "ER": ("er_annual", "gC m-2 yr-1"),
    "NEP": ("nep_annual", "gC m-2 yr-1"),
    "NPP": ("npp_annual", "gC m-2 yr-1"),
    "ANPP": ("anpp_annual", "gC m-2 yr-1"),
    "BNPP": ("bnpp_annual", "gC m-2 yr-1"),
    "NPP_FR": ("npp_fr_annual", "gC m-2 yr-1"),
    "TBCA": ("tbca_annual", "gC m-2 yr-1"),
    "Litter_flux": ("litter_flux", "gC m-2 yr-1"),
    "Rootlitter_flux": ("rootlitter_flux", "gC m-2 yr-1"),
    "TotDet_flux": ("totdet_flux", "gC m-2 yr-1"),
    "Ndep": ("ndep", "gN m-2 yr-1"),
    "LAI": ("lai", "m2 m-2"),
    "BA": ("basal_area", "m2 ha-1"),
    "C_veg_total": ("c_veg_total", "gC m-2"),
    "C_AG": ("c_ag", "gC m-2"),
    "C_BG": ("c_bg", "gC m-2"),
    "C_CR": ("c_cr", "gC m-2"),
    "C_FR": ("c_fr", "gC m-2"),
    "C_litter": ("c_litter", "gC m-2"),
    "C_soilmineral": ("c_soilmineral", "gC m-2"),
    "C_soildepth": ("c_soildepth", "cm"),
}
#: SRDB text fields kept as coordinates on ``record``.
SRDB_TEXT_FIELDS: dict[str, str] = {
    "Study_number": "study_number",
    "Author": "author",
    "Duplicate_record": "duplicate_record",
    "Quality_flag": "quality_flag",
    "Country": "country",
    "Region": "region",
    "Site_name": "site_name",
    "Site_ID": "site_id",
    "Manipulation": "manipulation",
    "Manipulation_level": "manipulation_level",
    "Species": "species",
    "Biome": "biome",
    "Ecosystem_type": "ecosystem_type",
    "Ecosystem_state": "ecosystem_state",
    "Leaf_habit": "leaf_habit",
    "Stage": "stage",
    "Soil_type": "soil_type",
    "Soil_drainage": "soil_drainage",
    "Meas_method": "meas_method",
    "Time_of_day": "time_of_day",
    "Partition_method": "partition_method",
    "Notes": "notes",
}
def _text(value) -> str:
    """A table cell as text: missing → "", integral floats without ".0" (pandas reads number columns as float)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_SRDB_REQUIRED = ("Record_number", "Latitude", "Longitude", "Study_midyear", "Rs_annual", "Rh_annual")


def read_srdb(
    path: str | Path,
    *,
    drop_quality_flags: Sequence[str] = (),
    drop_duplicates: bool = False,
    validate: bool = True,
) -> xr.Dataset:
    """SRDB ``srdb-data.csv`` (or its folder) → dataset on ``record`` (the SRDB Record_number).

    Every kept numeric field becomes a variable with its SRDB units (annual fluxes gC m-2 yr-1, seasonal mean
    fluxes µmol m-2 s-1); text fields (site, biome, quality flag, ...) and lat/lon/``year`` become coordinates.
    Canonical ``rsoil`` and ``rh_soil`` are the annual totals as mean daily rates (÷ 365.25 d, since SRDB study
    years need not be calendar years); an isolated annual value beyond the registry range (e.g. a typo of
    40997 gC m-2 yr-1) is masked in the canonical variables and counted, the raw field keeps it.
    ``drop_quality_flags`` removes records whose ``Quality_flag`` contains any of those codes (e.g. ``("Q12",
    "Q13")``); ``drop_duplicates`` removes records marked as known duplicates.
    """
    path = Path(path)
    file = one_file(path, "srdb", "SRDB data table") if path.is_dir() else path
    if not file.exists():
        raise DataValidationError(file, None, "SRDB data file not found")
    try:
        df = pd.read_csv(io.BytesIO(open_bytes(file)), low_memory=False)
    except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as err:
        raise DataValidationError(file, None, f"cannot parse: {err}") from err
    for column in _SRDB_REQUIRED:
        if column not in df.columns:
            raise DataValidationError(file, column, f"required SRDB column missing (found {len(df.columns)} columns)")
    if df.empty:
        raise DataValidationError(file, None, "no records")
    numbers = pd.to_numeric(df["Record_number"], errors="coerce")
    if numbers.isna().any():
        raise DataValidationError(file, "Record_number", f"{int(numbers.isna().sum())} records without a number")
    if numbers.duplicated().any():
        raise DataValidationError(
            file, "Record_number", f"duplicate record numbers: {numbers[numbers.duplicated()].astype(int).tolist()[:5]}"
        )
    df = df.assign(Record_number=numbers.astype(np.int64)).sort_values("Record_number")
    if drop_quality_flags:
        flags = df["Quality_flag"].fillna("").astype(str)
        drop = np.zeros(len(df), dtype=bool)
        for flag in drop_quality_flags:
            drop |= flags.str.contains(rf"\b{re.escape(flag)}\b", regex=True).to_numpy()
        df = df[~drop]
    if drop_duplicates and "Duplicate_record" in df:
        df = df[df["Duplicate_record"].isna()]

    ds = xr.Dataset(coords={"record": df["Record_number"].to_numpy()})
    for column, (var_name, units) in SRDB_FIELDS.items():
        if column not in df.columns:
            continue
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, copy=True)
        values[values == -9999.0] = np.nan
        ds[var_name] = ("record", values.astype("float32"), {"units": units, "long_name": f"SRDB {column}"})
    counts: dict[str, int] = {}
    for canonical, field in (("rsoil", "rs_annual"), ("rh_soil", "rh_annual")):
        rate = ds[field].values.astype(float) / DAYS_PER_YEAR
        rate = mask_spikes(rate, canonical, file, field, counts)
        ds[canonical] = ("record", rate.astype("float32"), {
            **get_variable(canonical).attrs(),
            "cell_methods": "time: mean (over the study year)",
            "comment": f"SRDB {field} (gC m-2 yr-1) / {DAYS_PER_YEAR} d",
        })
    lat = pd.to_numeric(df["Latitude"], errors="coerce").to_numpy(dtype=float)
    lon = pd.to_numeric(df["Longitude"], errors="coerce").to_numpy(dtype=float)
    midyear = pd.to_numeric(df["Study_midyear"], errors="coerce").to_numpy(dtype=float)
    coords = {
        "lat": ("record", lat, {"units": "degrees_north"}),
        "lon": ("record", lon, {"units": "degrees_east"}),
        "year": ("record", np.floor(midyear), {"long_name": "calendar year of the study midyear (NaN = unknown)"}),
    }
    for column, coord in SRDB_TEXT_FIELDS.items():
        if column in df.columns:
            coords[coord] = ("record", np.array([_text(v) for v in df[column]], dtype=object))
    ds = ds.assign_coords(coords)
    ds.attrs.update(
        source=str(file),
        title="SRDB Global Soil Respiration Database (annual records)",
        references="Bond-Lamberty & Thomson (2010) Biogeosciences 7:1915, doi:10.5194/bg-7-1915-2010",
        **counts,
    )
    if validate:
        validate_dataset(ds, source=file, layout="record")
    return ds

