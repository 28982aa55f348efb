"""Eddy-covariance tower readers → validated ``(site, time)`` datasets with canonical names and units.

Formats: FLUXNET2015 / ONEFlux FULLSET and SUBSET at HH, HR, DD, WW, MM, YY (incl. ICOS Warm Winter 2020),
FLUXNET-column tables such as the AGDS daily CSVs, AmeriFlux BASE (TIMESTAMP_START/END), ONEFlux measured-NEE
``*_qca_ustar_*`` files, and the REddyProc / bigleaf example formats.

Conventions of every output:

* dims ``(site, time)``; ``time`` is the *start* of the averaging period in local standard time (FLUXNET
  convention; the site's offset from UTC is the ``utc_offset`` coordinate when known); DD/WW stamps are
  midnight, MM the first of the month, YY 1 January. ``ds.attrs["time_resolution"]`` is HH/HR/DD/WW/MM/YY.
* -9999 (and NA) → NaN; quality-flagged values → NaN (`QCPolicy`).
* fluxes are rates in gC m-2 d-1 at every resolution (HH/HR µmol CO2 m-2 s-1 × 1.0377; YY totals ÷ days in
  the year); precipitation is a rate in mm d-1 (a half-hour's 1 mm is 48 mm d-1); pressure in Pa.
* coordinates on ``site``: lat, lon, elevation, igbp, utc_offset (+ site_name, mat, map, koeppen when a table
  has them), and ``source_file``.

Error policy: single-file readers raise `DataValidationError` (naming file, variable, problem). Directory
readers default to ``errors="warn"``: a bad file is skipped with a `DataWarning` carrying the same message and
listed in ``ds.attrs["skipped_files"]``, so one bad site never loses the others; ``errors="raise"`` stops at
the first bad file; if no file can be read the directory reader raises.
"""

from __future__ import annotations

import calendar
import difflib
import gzip
import io
import json
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from kgml.data.cache import cached_read
from kgml.data.formats import GZIP_MAGIC, files_of, head, site_from_name
from kgml.data.schema import DataValidationError, DataWarning, validate_dataset, validate_variable
from kgml.data.sitemeta import (
    attach_site_metadata,
    find_site_metadata,
    read_site_metadata,
    site_table_files,
)
from kgml.variables import VARIABLES, convert_units, get_variable

__all__ = [
    "FLUX_VARIABLES",
    "MISSING_VALUE",
    "RESOLUTIONS",
    "FluxnetFileInfo",
    "QCPolicy",
    "aggregate_to",
    "combine_sites",
    "parse_fluxnet_filename",
    "read_ameriflux_base",
    "read_bigleaf_csv",
    "read_fluxnet_dir",
    "read_fluxnet_file",
    "read_oneflux_qca",
    "read_oneflux_qca_dir",
    "read_reddyproc_nc",
    "read_reddyproc_table",
]

#: The FLUXNET / AmeriFlux missing-value code.
MISSING_VALUE = -9999.0

#: Time resolutions of FLUXNET file names: code → description.
RESOLUTIONS: dict[str, str] = {
    "HH": "half-hourly",
    "HR": "hourly",
    "DD": "daily",
    "WW": "weekly",
    "MM": "monthly",
    "YY": "yearly",
}
_STEPS_PER_DAY = {"HH": 48, "HR": 24}
_STEP = {"HH": np.timedelta64(30, "m"), "HR": np.timedelta64(60, "m"), "DD": np.timedelta64(1, "D")}

#: Carbon-flux variables (rates, gC m-2 d-1); their source units depend on the resolution.
FLUX_VARIABLES = ("nee", "gpp", "reco", "gpp_dt", "reco_dt")

_TIME_REFERENCE = "start of the averaging period, local standard time"


@dataclass(frozen=True)
class QCPolicy:
    """Which quality-flagged values become NaN.

    FLUXNET HH/HR ``*_QC`` columns are flags (0 measured, 1 good gap-fill, 2 medium, 3 poor): values with a flag
    above ``max_flag`` are masked. DD/WW/MM/YY ``*_QC`` columns are the *fraction* (0–1) of measured or
    good-quality gap-filled half-hours: values with a fraction below ``min_fraction`` are masked. Only the
    ``variables`` listed are masked (met drivers are gap-filled and kept whole by default). GPP and RECO have no
    QC of their own: with ``partitioned_use_nee_qc`` they follow ``NEE_VUT_REF_QC``.
    """

    max_flag: int = 1
    min_fraction: float = 0.5
    variables: tuple[str, ...] = ("nee", "gpp", "reco", "gpp_dt", "reco_dt", "le", "h")
    partitioned_use_nee_qc: bool = True
    enabled: bool = True

    def __post_init__(self):
        if not 0 <= self.max_flag <= 3:
            raise ValueError(f"QCPolicy.max_flag must be 0..3, got {self.max_flag}")
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ValueError(f"QCPolicy.min_fraction must be in [0, 1], got {self.min_fraction}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))


NO_QC = QCPolicy(enabled=False)


@dataclass(frozen=True)
class FluxnetFileInfo:
    """What a FLUXNET-style file name says: ``FLX_<SITE>_FLUXNET2015_<SET>_<RES>_<Y0>-<Y1>_<VERSION>.csv``."""

    path: Path
    site: str
    prefix: str
    product: str
    dataset: str
    resolution: str
    first_year: int | None
    last_year: int | None
    version: str


_FLUXNET_NAME = re.compile(
    r"^(?P<prefix>FLX|AMF|ICOSETC|ICOS)_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_(?P<product>FLUXNET\d*)"
    r"(?:_(?P<dataset>FULLSET|SUBSET|ERAI|ERA5|ERA))?_(?P<res>HH|HR|DD|WW|MM|YY)"
    r"(?:_(?P<y0>\d{4})-(?P<y1>\d{4}))?(?:_(?P<version>[^.]+))?(?:\.\w+)*$"
)
_SITE_PREFIX = re.compile(r"^(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})(?=[_.])")


def parse_fluxnet_filename(path: str | os.PathLike) -> FluxnetFileInfo | None:
    """Parse a FLUXNET/ONEFlux/ICOS file name; None when the name is not in that pattern."""
    path = Path(path)
    match = _FLUXNET_NAME.match(path.name)
    if not match:
        return None
    g = match.groupdict()
    return FluxnetFileInfo(
        path=path,
        site=g["site"],
        prefix=g["prefix"],
        product=g["product"],
        dataset=g["dataset"] or "",
        resolution=g["res"],
        first_year=int(g["y0"]) if g["y0"] else None,
        last_year=int(g["y1"]) if g["y1"] else None,
        version=g["version"] or "",
    )


# --- text and table reading --------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    _TEXT_NOTES.pop(str(path), None)
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:  # gzip by its magic bytes, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # truncated or damaged gzip streams end up here
        raise DataValidationError(path, None, f"cannot read file: {err}") from err
    if raw and not raw.endswith((b"\n", b"\r")):
        # without a final newline the last row (and its last value) may have been cut by a copy or download
        # that stopped: warn, and `_finish` records it in the dataset's ``warnings`` attribute
        last = raw.splitlines()[-1][-60:].decode("utf-8", errors="replace")
        note = (f"{path.name} does not end with a newline: its last row (ending {last!r}) may be cut short "
                "(truncated file?)")
        warnings.warn(f"{path}: {note}", DataWarning, stacklevel=3)
        _TEXT_NOTES[str(path)] = note
    return raw.decode("utf-8-sig", errors="replace")


#: Warnings about a file's text (e.g. no final newline) waiting for `_finish` to record them in the dataset.
_TEXT_NOTES: dict[str, str] = {}


def _parse_table(
    path: Path,
    lines: list[str],
    *,
    sep: str = ",",
    text_columns: Sequence[str] = (),
    na_strings: Sequence[str] = (),
    bad_rows: str = "raise",
    header_lines: int = 1,
) -> pd.DataFrame:
    """Parse delimited ``lines`` (first = header) strictly: every row must have as many fields as the header.

    A short or long row (a truncated file, a half-written line) raises naming the line, unless
    ``bad_rows="drop"`` (dropped with a warning). Empty fields and non-numeric values are errors unless listed
    in ``na_strings``. -9999 becomes NaN.
    """
    if not lines:
        raise DataValidationError(path, None, "file is empty (no header line)")
    header = [h.strip().strip('"') for h in lines[0].split(sep)]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataValidationError(path, dup[0], f"column appears more than once in the header: {dup}")
    body = [ln for ln in lines[header_lines:] if ln.strip()]
    if not body:
        raise DataValidationError(path, None, "no data rows after the header (empty site)")
    n = len(header)
    bad = [i for i, ln in enumerate(body) if ln.count(sep) != n - 1]
    if bad:
        first = bad[0]
        line_no = first + header_lines + 1
        got = body[first].count(sep) + 1
        problem = (
            f"{len(bad)} malformed row(s); line {line_no} has {got} fields but the header has {n}"
            f" (truncated or broken row: {body[first][:60]!r})"
        )
        if bad_rows != "drop":
            raise DataValidationError(path, header[min(got, n) - 1], problem + "; pass bad_rows='drop' to skip them")
        warnings.warn(f"{path}: {problem}; dropped", DataWarning, stacklevel=3)
        badset = set(bad)
        body = [ln for i, ln in enumerate(body) if i not in badset]
    text_cols = [c for c in text_columns if c in header]
    frame = pd.read_csv(
        io.StringIO("\n".join([sep.join(header), *body])),
        sep=sep,
        dtype={c: str for c in text_cols},
        na_values=list(na_strings),
        keep_default_na=False,
        skipinitialspace=True,
    )
    columns: dict[str, object] = {}
    for col in frame.columns:
        series = frame[col]
        if col in text_cols:
            columns[col] = series
            continue
        if not pd.api.types.is_numeric_dtype(series):
            numeric = pd.to_numeric(series, errors="coerce")
            bad_mask = numeric.isna() & series.notna()
            if bad_mask.any():
                i = int(np.flatnonzero(bad_mask.to_numpy())[0])
                raise DataValidationError(
                    path, col, f"non-numeric value {series.iloc[i]!r} at line {i + header_lines + 1}"
                )
            series = numeric
        values = series.to_numpy(dtype=float, na_value=np.nan)  # numpy, not per-column pandas ops: 137 files × 73 columns
        if not na_strings and np.isnan(values).any():
            i = int(np.flatnonzero(np.isnan(values))[0])
            raise DataValidationError(path, col, f"empty field at line {i + header_lines + 1} (truncated row?)")
        columns[col] = np.where(values == MISSING_VALUE, np.nan, values)
    return pd.DataFrame(columns, index=frame.index)


# --- timestamps ---------------------------------------------------------------------------------------


def _parse_stamp(path: Path, column: str, values: pd.Series) -> tuple[np.ndarray, int]:
    """Parse FLUXNET short ISO stamps (YYYY, YYYYMM, YYYYMMDD, YYYYMMDDHHMM) or ISO dates; → (times, length)."""
    text = values.astype(str).str.strip()
    if text.eq("").any() or values.isna().any():
        i = int(np.flatnonzero((text.eq("") | values.isna()).to_numpy())[0])
        raise DataValidationError(path, column, f"empty timestamp at row {i + 1}")
    lengths = text.str.len()
    kinds = sorted(set(lengths))
    if len(kinds) > 1:
        raise DataValidationError(
            path, column, f"mixed timestamp formats (lengths {kinds}): mixed time resolutions in one file"
        )
    length = kinds[0]
    formats = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d", 10: "%Y-%m-%d", 12: "%Y%m%d%H%M", 19: "%Y-%m-%d %H:%M:%S"}
    if length not in formats:
        raise DataValidationError(path, column, f"unrecognised timestamp format {text.iloc[0]!r}")
    times = pd.to_datetime(text, format=formats[length], errors="coerce")
    if times.isna().any():
        i = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise DataValidationError(path, column, f"invalid timestamp {text.iloc[i]!r} at row {i + 1}")
    return times.to_numpy(dtype="datetime64[ns]"), length


def _check_monotonic(path: Path, column: str, times: np.ndarray) -> None:
    if times.size < 2:
        return
    steps = np.diff(times)
    zero = np.timedelta64(0, "ns")
    if np.any(steps == zero):
        i = int(np.flatnonzero(steps == zero)[0]) + 1
        raise DataValidationError(path, column, f"duplicate timestamp {_fmt_time(times[i])} at row {i + 1}")
    if np.any(steps < zero):
        i = int(np.flatnonzero(steps < zero)[0]) + 1
        raise DataValidationError(
            path, column, f"timestamps not monotonic: {_fmt_time(times[i])} at row {i + 1} follows {_fmt_time(times[i - 1])}"
        )


def _fmt_time(t) -> str:
    return np.datetime_as_string(np.datetime64(t, "m"), unit="m")


def _month_index(times: np.ndarray) -> np.ndarray:
    years = times.astype("datetime64[Y]").astype(int)
    months = times.astype("datetime64[M]").astype(int)
    return years, months


def _infer_resolution(
    path: Path, column: str, starts: np.ndarray, length: int, ends: np.ndarray | None = None
) -> str:
    """Resolution from timestamps (and the START/END difference when given); mixed steps are errors."""
    if length == 4:
        res = "YY"
    elif length == 6:
        res = "MM"
    elif length in (8, 10) and ends is None:
        res = "DD"
    elif length in (8, 10):
        res = "WW"
    else:
        if ends is not None:
            widths = np.unique((ends - starts).astype("timedelta64[m]").astype(int))
            if widths.size != 1 or widths[0] not in (30, 60):
                raise DataValidationError(
                    path, column, f"averaging periods of {sorted(widths.tolist())[:5]} minutes: expected all 30 or all 60"
                )
            res = "HH" if widths[0] == 30 else "HR"
        else:
            steps = np.diff(starts).astype("timedelta64[m]").astype(int) if starts.size > 1 else np.array([30])
            res = "HH" if steps.min() == 30 else "HR"
    _check_steps(path, column, starts, res)
    return res


def _check_steps(path: Path, column: str, starts: np.ndarray, res: str) -> None:
    if starts.size < 2:
        return
    if res in ("HH", "HR", "DD"):
        unit = _STEP[res].astype("timedelta64[ns]").astype(np.int64)
        steps = np.diff(starts).astype(np.int64)
        off = steps % unit != 0
        aligned = (starts - starts[0]).astype(np.int64) % unit != 0
        if np.any(off) or np.any(aligned):
            i = int(np.flatnonzero(off)[0]) + 1 if np.any(off) else int(np.flatnonzero(aligned)[0])
            raise DataValidationError(
                path, column, f"timestamp {_fmt_time(starts[i])} is off the {RESOLUTIONS[res]} grid (mixed resolutions?)"
            )
    elif res == "WW":
        days = np.diff(starts).astype("timedelta64[D]").astype(int)
        if np.any(days < 7):
            i = int(np.flatnonzero(days < 7)[0]) + 1
            raise DataValidationError(path, column, f"weekly stamps only {days[i - 1]} days apart at {_fmt_time(starts[i])}")
    else:
        years, months = _month_index(starts)
        sub = starts - starts.astype("datetime64[M]").astype("datetime64[ns]")
        if np.any(sub != np.timedelta64(0, "ns")):
            raise DataValidationError(path, column, f"{RESOLUTIONS[res]} stamps must fall on the first of a month")
        if res == "YY" and np.any(months % 12 != 0):
            raise DataValidationError(path, column, "yearly stamps must fall on 1 January")


# --- variable mapping and conversion ------------------------------------------------------------------


def _fluxnet_source_units(name: str, resolution: str) -> str:
    """Units of a FLUXNET2015 column at a resolution (FLUXNET2015 FULLSET variable code table)."""
    if name in FLUX_VARIABLES:
        return {"HH": "umol m-2 s-1", "HR": "umol m-2 s-1", "YY": "gC m-2 yr-1"}.get(resolution, "gC m-2 d-1")
    if name == "precip":
        return {"HH": "mm step-1", "HR": "mm step-1", "YY": "mm yr-1"}.get(resolution, "mm d-1")
    if name == "patm":
        return "kPa"
    return get_variable(name).units


def _days_in_year(times: np.ndarray) -> np.ndarray:
    years = times.astype("datetime64[Y]").astype(int) + 1970
    return np.array([366.0 if calendar.isleap(int(y)) else 365.0 for y in years])


def _to_canonical(name: str, values: np.ndarray, units: str, resolution: str, times: np.ndarray) -> np.ndarray:
    var = get_variable(name)
    if units == "mm step-1":
        return values * _STEPS_PER_DAY[resolution]
    if units in ("gC m-2 yr-1", "mm yr-1"):
        return values / _days_in_year(times)
    return np.asarray(convert_units(values, units, var.units), dtype=float)


def _pick_column(columns: Sequence[str], candidates: Sequence[str], replicate_base: Iterable[str] = ()) -> str | None:
    present = set(columns)
    for cand in candidates:
        if cand in present:
            return cand
    for base in replicate_base:
        reps = sorted(c for c in columns if re.fullmatch(rf"{re.escape(base)}_\d+_\d+_\d+", c))
        if reps:
            return reps[0]
    return None


def _missing_column_error(path: Path, name: str, candidates: Sequence[str], columns: Sequence[str]):
    close = difflib.get_close_matches(candidates[0], list(columns), n=3, cutoff=0.6) if candidates else []
    hint = f"; similar columns: {close}" if close else ""
    return DataValidationError(path, name, f"required column {' or '.join(candidates)} not found{hint}")


def _build_site_dataset(
    path: Path,
    frame: pd.DataFrame,
    times: np.ndarray,
    *,
    site: str,
    resolution: str,
    mapping: Mapping[str, tuple[str, str]],
    qc_columns: Mapping[str, str],
    qc: QCPolicy,
    require: Sequence[str],
    keep_qc: bool,
    attrs: Mapping[str, object],
) -> xr.Dataset:
    """One site: ``mapping`` canonical name → (column, source units); QC masks; drop all-NaN optional variables."""
    absent = [n for n in require if n not in mapping]
    if absent:
        raise DataValidationError(path, absent[0], f"required column for {absent[0]} is missing (the file has "
                                  f"{list(frame.columns)[:16]})")
    data_vars = {}
    for name, (column, units) in mapping.items():
        raw = frame[column].to_numpy(dtype=float)
        values = _to_canonical(name, raw, units, resolution, times)
        qc_col = qc_columns.get(name)
        if qc.enabled and qc_col is not None and name in qc.variables and qc_col in frame.columns:
            flag = frame[qc_col].to_numpy(dtype=float)
            if resolution in ("HH", "HR"):
                bad = np.isfinite(flag) & (flag > qc.max_flag)
            else:
                bad = np.isfinite(flag) & (flag < qc.min_fraction)
            values = np.where(bad, np.nan, values)
        if not np.isfinite(values).any():
            if name in require:
                reason = "all values are missing (-9999)" if not np.isfinite(raw).any() else "all values fail QC"
                raise DataValidationError(path, name, f"{reason} in column {column}")
            continue
        var = VARIABLES[name]
        data_vars[name] = (("site", "time"), values[None, :].astype(np.float32), {**var.attrs(), "source_column": column})
    if keep_qc and "nee" in qc_columns and qc_columns["nee"] in frame.columns:
        flag = frame[qc_columns["nee"]].to_numpy(dtype=float)
        if np.isfinite(flag).any():
            data_vars["nee_qc"] = (("site", "time"), flag[None, :].astype(np.float32), VARIABLES["nee_qc"].attrs())
    if not data_vars:
        raise DataValidationError(path, None, "no usable variable: every mapped column is missing (-9999) or absent")
    ds = xr.Dataset(
        data_vars,
        coords={
            "site": ("site", [site]),
            "time": ("time", times, {"long_name": _TIME_REFERENCE}),
            "source_file": ("site", [path.name]),
        },
        attrs={
            "source": str(path),
            "time_resolution": resolution,
            "time_reference": _TIME_REFERENCE,
            "qc_policy": qc.to_json(),
            "Conventions": "CF-1.8",
            **attrs,
        },
    )
    return ds


def _finish(
    ds: xr.Dataset,
    path: Path,
    site_metadata,
    validate: bool,
    *,
    invalid: str = "raise",
    require: Sequence[str] = (),
) -> xr.Dataset:
    meta = _resolve_metadata(site_metadata, path)
    ds = attach_site_metadata(ds, meta, source=path)
    note = _TEXT_NOTES.pop(str(path), None)
    if note:
        ds.attrs["warnings"] = "; ".join(filter(None, [ds.attrs.get("warnings"), note]))
    if not validate:
        return ds
    if invalid not in ("raise", "drop", "mask"):
        raise ValueError(f"invalid must be 'raise', 'drop' or 'mask', got {invalid!r}")
    for name in list(ds.data_vars):
        try:
            validate_variable(ds, str(name), path)
        except DataValidationError as err:
            if invalid == "raise" or name in require:
                raise
            var = VARIABLES.get(str(name))
            certain = var is not None and var.diagnose(ds[name].values, certain_only=True)
            if invalid == "mask" and var is not None and not certain and "outside the valid range" in err.problem:
                ds[name] = ds[name].where(~xr.DataArray(var.out_of_range(ds[name].values), dims=ds[name].dims))
                warnings.warn(f"{err}; out-of-range values set to NaN", DataWarning, stacklevel=3)
                continue
            warnings.warn(f"{err}; variable dropped", DataWarning, stacklevel=3)
            ds = ds.drop_vars(name)
    if not ds.data_vars:
        raise DataValidationError(path, None, "no valid variable left")
    return validate_dataset(ds, path)


def _resolve_metadata(site_metadata, path: Path) -> pd.DataFrame | None:
    if isinstance(site_metadata, str) and site_metadata == "auto":
        return find_site_metadata(path if path.is_dir() else path.parent)
    if site_metadata is None:
        return None
    if isinstance(site_metadata, pd.DataFrame) and "site" not in site_metadata.columns and site_metadata.index.name == "site":
        return site_metadata
    return read_site_metadata(site_metadata)


def _fluxnet_mapping(columns: Sequence[str], resolution: str, variables: Iterable[str] | None):
    names = list(variables) if variables is not None else [n for n, v in VARIABLES.items() if v.fluxnet and n != "nee_qc"]
    mapping, qc_columns, missing = {}, {}, {}
    for name in names:
        var = get_variable(name)
        col = _pick_column(columns, var.fluxnet)
        if col is None:
            missing[name] = var.fluxnet
            continue
        mapping[name] = (col, _fluxnet_source_units(name, resolution))
        qc_columns[name] = f"{col}_QC"
    if "NEE_VUT_REF_QC" in columns:
        qc_columns["nee"] = "NEE_VUT_REF_QC"
    return mapping, qc_columns, missing


def _apply_partitioned_qc(qc_columns: dict[str, str], qc: QCPolicy, columns: Sequence[str]) -> None:
    if qc.partitioned_use_nee_qc and "NEE_VUT_REF_QC" in columns:
        for name in ("gpp", "reco", "gpp_dt", "reco_dt"):
            qc_columns[name] = "NEE_VUT_REF_QC"


# --- FLUXNET2015 / ONEFlux / ICOS ---------------------------------------------------------------------


_FLUXNET_REQUIRED = ("nee", "tair")


def read_fluxnet_file(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    resolution: str | None = None,
    variables: Iterable[str] | None = None,
    require: Iterable[str] | str = "auto",
    qc: QCPolicy = QCPolicy(),
    keep_qc: bool = False,
    site_metadata="auto",
    bad_rows: str = "raise",
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read one FLUXNET2015 / ONEFlux / ICOS-style file (any of HH, HR, DD, WW, MM, YY; .csv or .csv.gz).

    The resolution is taken from the file name (``..._DD_...``) and checked against the timestamps; for files
    without a FLUXNET name (e.g. ``CH-Dav_daily.csv`` with FLUXNET columns) pass ``site=`` or start the name
    with the site ID, and the resolution comes from the timestamps (or ``resolution=``). ``variables`` limits
    the canonical variables read (default: every registered variable whose FLUXNET column is present).
    ``require="auto"`` requires nee and tair in FULLSET/SUBSET files (these products always have the columns,
    so their absence means a renamed or broken column; GPP/RECO may legitimately be all -9999 when partitioning
    failed, e.g. DK-Gds 2020); pass a tuple to choose. A non-required variable that is all missing is omitted. ``site_metadata`` is a
    table (path/DataFrame/mapping), None, or "auto" (the ``sites.csv`` next to the file).
    Output: dims (site=1, time); see the module docstring for units and coordinates.
    """
    path = Path(path)
    info = parse_fluxnet_filename(path)
    if site is None:
        site = info.site if info else _site_from_name(path, site_metadata)
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")
    if info and resolution and info.resolution != resolution:
        raise DataValidationError(path, None, f"file name says {info.resolution} but resolution={resolution!r} was asked for")
    text = _read_text(path)
    frame = _parse_table(
        path,
        text.splitlines(),
        text_columns=("TIMESTAMP", "TIMESTAMP_START", "TIMESTAMP_END"),
        na_strings=("NA", "NaN", "nan", "") if info is None else (),
        bad_rows=bad_rows,
    )
    columns = list(frame.columns)
    if "TIMESTAMP" in columns:
        times, length = _parse_stamp(path, "TIMESTAMP", frame["TIMESTAMP"])
        ends, stamp_col = None, "TIMESTAMP"
    elif "TIMESTAMP_START" in columns:
        times, length = _parse_stamp(path, "TIMESTAMP_START", frame["TIMESTAMP_START"])
        ends = _parse_stamp(path, "TIMESTAMP_END", frame["TIMESTAMP_END"])[0] if "TIMESTAMP_END" in columns else None
        stamp_col = "TIMESTAMP_START"
    else:
        raise _missing_column_error(path, "time", ("TIMESTAMP", "TIMESTAMP_START"), columns)
    _check_monotonic(path, stamp_col, times)
    found = _infer_resolution(path, stamp_col, times, length, ends)
    declared = info.resolution if info else resolution
    if declared and declared != found:
        raise DataValidationError(
            path, stamp_col, f"file name / argument says {declared} ({RESOLUTIONS[declared]}) but the timestamps are {found} ({RESOLUTIONS[found]})"
        )
    resolution = found
    if isinstance(require, str):
        if require != "auto":
            raise ValueError("require must be 'auto' or a sequence of variable names")
        require = _FLUXNET_REQUIRED if info and info.dataset in ("FULLSET", "SUBSET") else ()
    require = tuple(require)
    wanted = None if variables is None else tuple(dict.fromkeys([*variables, *require]))
    mapping, qc_columns, missing = _fluxnet_mapping(columns, resolution, wanted)
    for name in require:
        if name in missing:
            raise _missing_column_error(path, name, missing[name], columns)
    _apply_partitioned_qc(qc_columns, qc, columns)
    attrs = {"product": f"{info.product} {info.dataset}".strip() if info else "FLUXNET-format table"}
    ds = _build_site_dataset(
        path, frame, times, site=site, resolution=resolution, mapping=mapping, qc_columns=qc_columns, qc=qc,
        require=require, keep_qc=keep_qc, attrs=attrs,
    )
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=require)


def _site_from_name(path: Path, site_metadata=None) -> str:
    """The site code at the start of the file name (FLUXNET / AmeriFlux / ICOS convention: ``US-Ne1_...``), else
    the one site of the site table (``site_metadata``, "auto": the table beside the file), else an error asking
    for the site."""
    match = _SITE_PREFIX.match(path.name)
    if not match and site_metadata is not None:
        table = _resolve_metadata(site_metadata, path)
        if table is not None and len(table.index) == 1:
            return str(table.index[0])
    if not match:
        raise DataValidationError(
            path, "site", "cannot tell the site from the file name (expected e.g. FLX_US-Ne1_... or US-Ne1_...) and "
            "no site table names it; pass site= (--site on the command line)"
        )
    return match.group("site")


def combine_sites(datasets: Sequence[xr.Dataset], *, source: object = None) -> xr.Dataset:
    """Stack single- or multi-site datasets (same resolution) on ``site`` over the union of their times."""
    if not datasets:
        raise DataValidationError(source, None, "no datasets to combine")
    res = {d.attrs.get("time_resolution") for d in datasets}
    if len(res) > 1:
        raise DataValidationError(
            source, "time", f"mixed time resolutions {sorted(map(str, res))}: read them separately or aggregate_to() first"
        )
    sites = [str(s) for d in datasets for s in d["site"].values]
    dup = sorted({s for s in sites if sites.count(s) > 1})
    if dup:
        files = [str(d.attrs.get("source")) for d in datasets if set(map(str, d["site"].values)) & set(dup)]
        raise DataValidationError(source, "site", f"site(s) {dup} appear in more than one file: {files}")
    times = np.unique(np.concatenate([d["time"].values for d in datasets]))
    names = list(dict.fromkeys(str(v) for d in datasets for v in d.data_vars))
    arrays = {n: np.full((len(sites), times.size), np.nan, dtype=np.float32) for n in names}
    row = 0
    for d in datasets:
        idx = np.searchsorted(times, d["time"].values)
        for n in names:
            if n in d:
                var = d.variables[n]  # the bare variable: building a DataArray per site and name is slow
                arrays[n][row : row + d.sizes["site"], idx] = (var if var.dims == ("site", "time") else var.transpose("site", "time")).values
        row += d.sizes["site"]
    attrs_of = {n: next(d[n].attrs for d in datasets if n in d) for n in names}
    coords: dict[str, object] = {"site": ("site", sites), "time": ("time", times, datasets[0]["time"].attrs)}
    for cname in datasets[0].coords:
        if cname in ("site", "time") or datasets[0][cname].dims != ("site",):
            continue
        if all(cname in d.coords for d in datasets):
            coords[cname] = ("site", np.concatenate([d[cname].values for d in datasets]), datasets[0][cname].attrs)
    attrs = dict(datasets[0].attrs)
    attrs["source"] = str(source) if source is not None else attrs.get("source", "")
    return xr.Dataset({n: (("site", "time"), arrays[n], attrs_of[n]) for n in names}, coords=coords, attrs=attrs)


def _read_many(
    files: Sequence[Path],
    reader: Callable[[Path], xr.Dataset],
    *,
    errors: str,
    source: Path,
    progress: bool,
) -> tuple[list[xr.Dataset], list[str]]:
    if errors not in ("raise", "warn", "ignore"):
        raise ValueError(f"errors must be 'raise', 'warn' or 'ignore', got {errors!r}")
    good, skipped = [], []
    iterator: Iterable[Path] = files
    if progress:
        iterator = tqdm(files, desc=f"reading {source.name}", unit="file")
    for f in iterator:
        try:
            good.append(reader(f))
        except DataValidationError as err:
            if errors == "raise":
                raise
            skipped.append(str(err))
            if errors == "warn":
                warnings.warn(f"skipped: {err}", DataWarning, stacklevel=3)
    if not good:
        detail = "; ".join(skipped[:3]) if skipped else "no matching files"
        raise DataValidationError(source, None, f"no file could be read ({detail})")
    return good, skipped


def read_fluxnet_dir(
    directory: str | os.PathLike,
    *,
    pattern: str | None = None,
    resolution: str | None = None,
    dataset: str | None = None,
    sites: Iterable[str] | None = None,
    variables: Iterable[str] | None = None,
    require: Iterable[str] | str = "auto",
    qc: QCPolicy = QCPolicy(),
    keep_qc: bool = False,
    site_metadata="auto",
    errors: str = "warn",
    bad_rows: str = "raise",
    invalid: str = "raise",
    progress: bool = False,
    cache: bool | str | os.PathLike = False,
) -> xr.Dataset:
    """Read every FLUXNET-style file in ``directory`` into one ``(site, time)`` dataset.

    Files are those whose name parses as FLUXNET (``FLX_<SITE>_FLUXNET2015_...``), or match ``pattern`` (a glob,
    e.g. ``"*_daily.csv"`` for FLUXNET-column tables named ``<SITE>_...``). ``resolution`` and ``dataset``
    (FULLSET/SUBSET) select among them; several resolutions without ``resolution=`` is an error naming them.
    ``site_metadata="auto"`` uses the directory's ``sites.csv``. Bad files follow ``errors`` (module docstring):
    skipped files are listed, one message per line, in ``ds.attrs["skipped_files"]``. ``invalid`` decides what
    happens to a non-required variable that fails validation in one file (out of range, unit mistake):
    "raise" (the file is bad, see ``errors``), "drop" (that variable is dropped for that site, with a warning) or
    "mask" (out-of-range values → NaN, with a warning). ``cache`` (True, or a folder; see `kgml.data.cache`)
    keeps the result as netCDF, reused while the files read, the site table and every option are unchanged.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataValidationError(directory, None, "directory does not exist")
    if pattern is not None:
        files = sorted(p for p in directory.glob(pattern) if p.is_file())
    else:  # FLUXNET tables recognised by their columns (kgml.data.formats), whatever they are called, and files
        # named in the FLUXNET convention that are not (read, so that a broken one is reported, not passed over)
        files = files_of(directory, "fluxnet", named=_FLUXNET_NAME)
    infos = {p: parse_fluxnet_filename(p) for p in files}
    if resolution is not None:
        files = [p for p in files if infos[p] is None or infos[p].resolution == resolution]
    if dataset is not None:
        files = [p for p in files if infos[p] is not None and infos[p].dataset == dataset]
    if sites is not None:
        wanted = set(sites)
        files = [p for p in files if (infos[p].site if infos[p] else site_from_name(p)) in wanted]
    if not files:
        raise DataValidationError(directory, None, f"no FLUXNET files found (pattern={pattern!r}, resolution={resolution!r})")
    named = {infos[p].resolution for p in files if infos[p] is not None}
    if len(named) > 1:
        counts = {r: sum(1 for p in files if infos[p] and infos[p].resolution == r) for r in sorted(named)}
        raise DataValidationError(
            directory, "time", f"mixed resolutions in one directory {counts}; pass resolution= to choose one"
        )
    meta = _resolve_metadata(site_metadata, directory)

    def reader(p: Path) -> xr.Dataset:
        return read_fluxnet_file(
            p, resolution=resolution, variables=variables, require=require, qc=qc, keep_qc=keep_qc,
            site_metadata=None, bad_rows=bad_rows, validate=True, invalid=invalid,
        )

    def build() -> xr.Dataset:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no lat/lon for site.*", category=DataWarning)
            good, skipped = _read_many(files, reader, errors=errors, source=directory, progress=progress)
        res = {d.attrs["time_resolution"] for d in good}
        if len(res) > 1:
            raise DataValidationError(directory, "time", f"files have mixed resolutions {sorted(res)}; pass resolution=")
        ds = combine_sites(good, source=directory)
        ds.attrs["source_files"] = "\n".join(str(d.attrs["source"]) for d in good)
        ds.attrs["skipped_files"] = "\n".join(skipped)
        ds = attach_site_metadata(ds, meta, source=directory)
        return validate_dataset(ds, directory)

    if not cache:
        return build()

    sources = list(files)
    if isinstance(site_metadata, (str, os.PathLike)) and not (isinstance(site_metadata, str) and site_metadata == "auto"):
        sources.append(Path(site_metadata))
    elif isinstance(site_metadata, str):
        sources.extend(site_table_files(directory))
    options = {
        "reader": "read_fluxnet_dir", "pattern": pattern, "resolution": resolution, "dataset": dataset,
        "sites": None if sites is None else sorted(sites), "variables": None if variables is None else list(variables),
        "require": require if isinstance(require, str) else list(require), "qc": qc.to_json(), "keep_qc": keep_qc,
        "errors": errors, "bad_rows": bad_rows, "invalid": invalid,
        "site_metadata": None if meta is None or isinstance(site_metadata, (str, os.PathLike)) else meta.to_csv(),
    }
    return cached_read(f"fluxnet-{directory.name}", sources, build, cache=cache, options=options)


# --- AmeriFlux BASE and ONEFlux measured-NEE files ----------------------------------------------------


_BASE_UNITS = {"precip": "mm step-1", "patm": "kPa", "nee": "umol m-2 s-1", "gpp": "umol m-2 s-1", "reco": "umol m-2 s-1"}
_BASE_NAME = re.compile(r"^AMF_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_BASE_(?P<res>HH|HR)_(?P<version>[^.]+)\.csv(?:\.gz)?$")


def _base_mapping(columns: Sequence[str], variables: Iterable[str] | None):
    names = list(variables) if variables is not None else [n for n, v in VARIABLES.items() if v.ameriflux]
    mapping, missing = {}, {}
    for name in names:
        var = get_variable(name)
        col = _pick_column(columns, var.ameriflux, replicate_base=[c for c in var.ameriflux if "_" not in c])
        if col is None:
            missing[name] = var.ameriflux or (name,)
            continue
        mapping[name] = (col, _BASE_UNITS.get(name, var.units))
    return mapping, missing


def _check_utc_offset(path: Path, offset) -> float:
    try:
        value = float(offset)
    except (TypeError, ValueError):
        raise DataValidationError(path, "timezone", f"unknown time zone {offset!r}: expected hours from UTC, e.g. -6") from None
    if not np.isfinite(value) or not -12.0 <= value <= 14.0:
        raise DataValidationError(path, "timezone", f"unknown time zone {offset!r}: UTC offset must be in [-12, 14] h")
    return value


def read_ameriflux_base(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    utc_offset: float | None = None,
    variables: Iterable[str] | None = None,
    require: Iterable[str] = ("nee",),
    site_metadata=None,
    bad_rows: str = "raise",
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read an AmeriFlux BASE file (``AMF_<SITE>_BASE_<HH|HR>_<ver>.csv``; ``#`` comment lines allowed).

    Columns TIMESTAMP_START/END (local standard time); NEE from ``NEE``/``NEE_PI``/``FC`` (µmol m-2 s-1 →
    gC m-2 d-1); met from the plain or first replicate column (``TA`` or ``TA_1_1_1``); P mm per step → mm d-1;
    PA kPa → Pa. BASE data are not gap-filled and carry no QC columns. ``utc_offset`` (h) is recorded as a
    coordinate (BASE files do not state it; AmeriFlux sites document it in their BADM).
    """
    path = Path(path)
    match = _BASE_NAME.match(path.name)
    text = _read_text(path).splitlines()
    stated = next((m.group(1) for ln in text[:5] if (m := re.match(r"^#\s*site\s*:\s*(\S+)", ln, re.IGNORECASE))), None)
    site = site or (match.group("site") if match else stated or _site_from_name(
        path, "auto" if site_metadata is None else site_metadata))
    lines = [ln for ln in text if not ln.startswith("#")]
    frame = _parse_table(path, lines, text_columns=("TIMESTAMP_START", "TIMESTAMP_END"), bad_rows=bad_rows)
    columns = list(frame.columns)
    for col in ("TIMESTAMP_START", "TIMESTAMP_END"):
        if col not in columns:
            raise _missing_column_error(path, col, (col,), columns)
    starts, _ = _parse_stamp(path, "TIMESTAMP_START", frame["TIMESTAMP_START"])
    ends, _ = _parse_stamp(path, "TIMESTAMP_END", frame["TIMESTAMP_END"])
    _check_monotonic(path, "TIMESTAMP_START", starts)
    resolution = _infer_resolution(path, "TIMESTAMP_START", starts, 12, ends)
    if match and match.group("res") != resolution:
        raise DataValidationError(
            path, "TIMESTAMP_START", f"file name says {match.group('res')} but the timestamps are {resolution}"
        )
    require = tuple(require)
    wanted = None if variables is None else tuple(dict.fromkeys([*variables, *require]))
    mapping, missing = _base_mapping(columns, wanted)
    for name in require:
        if name in missing:
            raise _missing_column_error(path, name, missing[name], columns)
    ds = _build_site_dataset(
        path, frame, starts, site=site, resolution=resolution, mapping=mapping, qc_columns={}, qc=NO_QC,
        require=require, keep_qc=False, attrs={"product": "AmeriFlux BASE"},
    )
    if utc_offset is not None:
        ds = ds.assign_coords(utc_offset=("site", [_check_utc_offset(path, utc_offset)], {"units": "h"}))
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=require)


def _qca_header(path: Path, lines: list[str]) -> tuple[dict[str, str], int]:
    header: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.startswith("TIMESTAMP_START"):
            return header, i
        key, _, value = line.partition(",")
        if key and key != "notes":
            header[key.strip()] = value.strip()
    raise _missing_column_error(path, "time", ("TIMESTAMP_START",), [])


def read_oneflux_qca(
    path: str | os.PathLike,
    *,
    utc_offset: float | None = None,
    site_metadata=None,
    require: Iterable[str] = ("nee",),
    bad_rows: str = "raise",
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read one ONEFlux ``<SITE>_qca_ustar_<YEAR>.csv[.gz]`` file: measured (not gap-filled) NEE, TA, USTAR, SW_IN.

    The key,value header gives site, year, lat, lon, ``timezone`` (``<stamp>,<hours from UTC>``) and ``timeres``
    (hourly/halfhourly), which is checked against the timestamps. A missing or unparseable timezone is an error
    unless ``utc_offset`` is given. NEE µmol CO2 m-2 s-1 → gC m-2 d-1.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    header, start = _qca_header(path, lines)
    site = header.get("site") or _site_from_name(path)
    if utc_offset is None:
        tz = header.get("timezone")
        if tz is None:
            raise DataValidationError(path, "timezone", "no 'timezone' header line: unknown time zone; pass utc_offset=")
        utc_offset = _check_utc_offset(path, tz.split(",")[-1])
    else:
        utc_offset = _check_utc_offset(path, utc_offset)
    frame = _parse_table(path, lines[start:], text_columns=("TIMESTAMP_START", "TIMESTAMP_END"), bad_rows=bad_rows)
    starts, _ = _parse_stamp(path, "TIMESTAMP_START", frame["TIMESTAMP_START"])
    ends = _parse_stamp(path, "TIMESTAMP_END", frame["TIMESTAMP_END"])[0] if "TIMESTAMP_END" in frame else None
    _check_monotonic(path, "TIMESTAMP_START", starts)
    resolution = _infer_resolution(path, "TIMESTAMP_START", starts, 12, ends)
    declared = {"hourly": "HR", "halfhourly": "HH", "half-hourly": "HH"}.get(header.get("timeres", "").lower())
    if declared and declared != resolution:
        raise DataValidationError(
            path, "TIMESTAMP_START", f"header says timeres={header['timeres']} but the timestamps are {RESOLUTIONS[resolution]}"
        )
    if "year" in header and header["year"].isdigit():
        years = np.unique(starts.astype("datetime64[Y]").astype(int) + 1970)
        if years.size and int(header["year"]) not in years:
            raise DataValidationError(path, "TIMESTAMP_START", f"header year {header['year']} but stamps cover {years.tolist()}")
    mapping, missing = _base_mapping(list(frame.columns), None)
    for name in require:
        if name in missing:
            raise _missing_column_error(path, name, missing[name], list(frame.columns))
    ds = _build_site_dataset(
        path, frame, starts, site=site, resolution=resolution, mapping=mapping, qc_columns={}, qc=NO_QC,
        require=tuple(require), keep_qc=False, attrs={"product": "ONEFlux qca_ustar (measured, not gap-filled)"},
    )
    coords = {"utc_offset": ("site", [utc_offset], {"units": "h"})}
    for key, coord in (("lat", "lat"), ("lon", "lon")):
        try:
            coords[coord] = ("site", [float(header[key])])
        except (KeyError, ValueError):
            pass
    ds = ds.assign_coords(coords)
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=tuple(require))


#: The ONEFlux naming convention of qca_ustar files (``US-Ne1_qca_ustar_2018.csv.gz``).
_QCA_NAME = re.compile(r"_qca_ustar_\d{4}\b")


def qca_site(path: str | os.PathLike) -> str | None:
    """The site of a qca_ustar file: its ``site,<SITE>`` header line, else the site code in its name."""
    h = head(path)
    line = next((ln for ln in (h.lines if h else ()) if ln.startswith("site,")), "")
    return line.partition(",")[2].strip() or site_from_name(path)


def read_oneflux_qca_dir(
    directory: str | os.PathLike,
    *,
    sites: Iterable[str] | None = None,
    site_metadata=None,
    errors: str = "warn",
    invalid: str = "raise",
    progress: bool = False,
) -> xr.Dataset:
    """Read all ``*_qca_ustar_*.csv[.gz]`` files of one site folder, or of every site folder under ``directory``.

    Years of a site are joined on time (overlaps are errors); a year with no NEE still gives its met, an empty
    year is skipped (with ``errors="warn"``). Sites at different resolutions (US-Ne1 hourly, CA-Cbo half-hourly)
    cannot share one time axis: pass ``sites=`` or `aggregate_to` each first.
    """
    directory = Path(directory)
    files = files_of(directory, "qca_ustar", named=_QCA_NAME) or [
        f for sub in sorted(p for p in directory.iterdir() if p.is_dir()) for f in files_of(sub, "qca_ustar", named=_QCA_NAME)]
    if sites is not None:
        wanted = set(sites)
        files = [f for f in files if qca_site(f) in wanted]
    if not files:
        raise DataValidationError(directory, None, "no ONEFlux qca_ustar file found (recognised by content: "
                                  "key,value header with site and timezone, then TIMESTAMP_START)")
    good, skipped = _read_many(
        files, lambda p: read_oneflux_qca(p, require=(), validate=True, invalid=invalid), errors=errors, source=directory, progress=progress
    )
    per_site: dict[str, list[xr.Dataset]] = {}
    for d in good:
        per_site.setdefault(str(d["site"].values[0]), []).append(d)
    joined = []
    for site, parts in per_site.items():
        parts.sort(key=lambda d: d["time"].values[0])
        for a, b in zip(parts, parts[1:], strict=False):
            if b["time"].values[0] <= a["time"].values[-1]:
                raise DataValidationError(
                    b.attrs["source"], "TIMESTAMP_START", f"overlaps the previous file {Path(a.attrs['source']).name} of {site}"
                )
        res = {d.attrs["time_resolution"] for d in parts}
        if len(res) > 1:
            raise DataValidationError(directory / site, "time", f"site {site} files mix resolutions {sorted(res)}")
        combined = xr.concat(parts, dim="time", data_vars="all", coords="minimal", compat="override", join="outer")
        combined = combined.assign_coords(source_file=("site", [f"{len(parts)} qca_ustar files of {site}"]))
        combined.attrs["source"] = str(directory)
        joined.append(combined)
    ds = combine_sites(joined, source=directory)
    ds.attrs["source_files"] = "\n".join(str(d.attrs["source"]) for d in good)
    ds.attrs["skipped_files"] = "\n".join(skipped)
    ds = attach_site_metadata(ds, _resolve_metadata(site_metadata, directory), source=directory)
    return validate_dataset(ds, directory)


# --- REddyProc and bigleaf example formats -------------------------------------------------------------


_REDDYPROC_COLUMNS = {
    "nee": ("NEE", "umol m-2 s-1"),
    "le": ("LE", "W m-2"),
    "h": ("H", "W m-2"),
    "sw_in": ("Rg", "W m-2"),
    "tair": ("Tair", "degC"),
    "tsoil": ("Tsoil", "degC"),
    "rh": ("rH", "%"),
    "vpd": ("VPD", "hPa"),
    "ustar": ("Ustar", "m s-1"),
}


def _one_site_of_table(path: Path, site_metadata) -> str:
    """The one site of the site table (``site_metadata``, or the table beside the file), else an error asking for
    the site: the file name did not carry it."""
    table = _resolve_metadata("auto" if site_metadata is None else site_metadata, path)
    if table is not None and len(table.index) == 1:
        return str(table.index[0])
    raise DataValidationError(path, "site", "cannot tell the site from the file name and no one-site table names it; "
                              "pass site= (--site on the command line)")


def _site_like(path: Path) -> str | None:
    match = re.search(r"([A-Z]{2})[-_]?([A-Z][a-z]{2}|[A-Z][A-Za-z0-9]{2})", path.stem)
    return f"{match.group(1)}-{match.group(2)}" if match else None


def read_reddyproc_table(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    utc_offset: float | None = None,
    site_metadata=None,
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read a REddyProc input table: either the tab-separated ``Year DoY Hour NEE ...`` format (2 header lines,
    names and units; Hour = end of the half-hour, 0.5–24) or a CSV with ``DateTime`` (end of the half-hour) as in
    ``DEGebExample``. NEE µmol m-2 s-1 → gC m-2 d-1; -9999/NA → NaN. ``time`` is the period start.
    """
    path = Path(path)
    site = site or _site_like(path) or _one_site_of_table(path, site_metadata)
    lines = _read_text(path).splitlines()
    if not lines:
        raise DataValidationError(path, None, "file is empty")
    if "\t" in lines[0]:
        frame = _parse_table(path, [lines[0], *lines[2:]], sep="\t", na_strings=("NA",), header_lines=1)
        for col in ("Year", "DoY", "Hour"):
            if col not in frame:
                raise _missing_column_error(path, "time", (col,), list(frame.columns))
        end = (
            pd.to_datetime(frame["Year"].astype(int).astype(str), format="%Y").to_numpy(dtype="datetime64[ns]")
            + ((frame["DoY"].to_numpy() - 1) * 86400e9).astype("timedelta64[ns]")
            + (frame["Hour"].to_numpy() * 3600e9).round().astype("timedelta64[ns]")
        )
        units_line = lines[1].split("\t")
        names = lines[0].split("\t")
        declared_units = dict(zip(names, units_line, strict=False))
    else:
        frame = _parse_table(path, lines, text_columns=("DateTime",), na_strings=("NA",))
        if "DateTime" not in frame:
            raise _missing_column_error(path, "time", ("DateTime",), list(frame.columns))
        end, _ = _parse_stamp(path, "DateTime", frame["DateTime"])
        declared_units = {}
    width = np.median(np.diff(end)) if end.size > 1 else np.timedelta64(30, "m")
    starts = end - width
    _check_monotonic(path, "time", starts)
    resolution = _infer_resolution(path, "time", starts, 12, end)
    mapping = {}
    for name, (col, units) in _REDDYPROC_COLUMNS.items():
        if col in frame.columns:
            declared = declared_units.get(col, "").strip()
            if declared and declared not in ("-",) and declared.replace("umolm-2s-1", "umol m-2 s-1").replace("Wm-2", "W m-2").replace("ms-1", "m s-1") not in (units,):
                raise DataValidationError(path, name, f"column {col} declared in {declared!r}, expected {units!r}")
            mapping[name] = (col, units)
    ds = _build_site_dataset(
        path, frame, starts, site=site, resolution=resolution, mapping=mapping, qc_columns={}, qc=NO_QC,
        require=("nee",), keep_qc=False, attrs={"product": "REddyProc input table (NEE not gap-filled)"},
    )
    if utc_offset is not None:
        ds = ds.assign_coords(utc_offset=("site", [_check_utc_offset(path, utc_offset)], {"units": "h"}))
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=("nee",))


def read_reddyproc_nc(
    path: str | os.PathLike, *, site_metadata=None, validate: bool = True, invalid: str = "raise"
) -> xr.Dataset:
    """Read the REddyProc example netCDF (``Example_DE-Tha.1996.1998.hourly_selVars.nc``): its time axis is
    "days since 1582-10-14", so the year/month/day/hour variables (hour = end of the half-hour) are used.
    Site ID, lat, lon, elevation, IGBP and time zone come from the global attributes. ``NEE`` (measured) → nee;
    the gap-filled ``NEE_f`` is not read.
    """
    path = Path(path)
    try:
        raw = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as err:
        raise DataValidationError(path, None, f"cannot open netCDF: {err}") from err
    with raw:
        for col in ("year", "month", "day", "hour", "NEE"):
            if col not in raw:
                raise _missing_column_error(path, col, (col,), list(raw.data_vars))
        flat = {k: np.asarray(raw[k].values, dtype=float).reshape(raw.sizes["time"], -1)[:, 0] for k in raw.data_vars}
        attrs = dict(raw.attrs)
    base = pd.to_datetime(
        {"year": flat["year"].astype(int), "month": flat["month"].astype(int), "day": flat["day"].astype(int)}
    ).to_numpy(dtype="datetime64[ns]")
    end = base + (flat["hour"] * 3600e9).round().astype("timedelta64[ns]")
    starts = end - np.timedelta64(30, "m")
    _check_monotonic(path, "time", starts)
    resolution = _infer_resolution(path, "time", starts, 12, end)
    frame = pd.DataFrame({k: np.where(v == MISSING_VALUE, np.nan, v) for k, v in flat.items()})
    mapping = {n: c for n, c in {"nee": ("NEE", "umol m-2 s-1"), "sw_in": ("Rg", "W m-2"), "rh": ("rH", "%"), "tair": ("Tair", "degC")}.items() if c[0] in frame}
    site = str(attrs.get("Site_ID") or _site_like(path))
    ds = _build_site_dataset(
        path, frame, starts, site=site, resolution=resolution, mapping=mapping, qc_columns={}, qc=NO_QC,
        require=("nee",), keep_qc=False, attrs={"product": "REddyProc example netCDF (La Thuile)"},
    )
    meta = {"lat": attrs.get("Latitude"), "lon": attrs.get("Longitude"), "elevation": attrs.get("Elevation"),
            "igbp": attrs.get("IGBP_class"), "utc_offset": attrs.get("TimeZone")}
    coords = {}
    for key in ("lat", "lon", "elevation", "utc_offset"):
        try:
            coords[key] = ("site", [float(meta[key])])
        except (TypeError, ValueError):
            pass
    if meta["igbp"]:
        coords["igbp"] = ("site", [str(meta["igbp"])])
    ds = ds.assign_coords(coords)
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=("nee",))


_BIGLEAF_COLUMNS = {
    "tair": ("Tair", "degC", "Tair_qc"),
    "ppfd_in": ("PPFD", "umol m-2 s-1", "PPFD_qc"),
    "vpd": ("VPD", "kPa", "VPD_qc"),
    "patm": ("pressure", "kPa", None),
    "precip": ("precip", "mm step-1", "precip_qc"),
    "ustar": ("ustar", "m s-1", None),
    "ws": ("wind", "m s-1", "wind_qc"),
    "co2": ("Ca", "umol mol-1", "Ca_qc"),
    "netrad": ("Rn", "W m-2", None),
    "le": ("LE", "W m-2", "LE_qc"),
    "h": ("H", "W m-2", "H_qc"),
    "g": ("G", "W m-2", "G_qc"),
    "nee": ("NEE", "umol m-2 s-1", "NEE_qc"),
    "gpp": ("GPP", "umol m-2 s-1", "GPP_qc"),
    "reco": ("Reco", "umol m-2 s-1", "NEE_qc"),
}


def read_bigleaf_csv(
    path: str | os.PathLike,
    *,
    site: str | None = None,
    qc: QCPolicy = QCPolicy(),
    site_metadata=None,
    validate: bool = True,
    invalid: str = "raise",
) -> xr.Dataset:
    """Read a bigleaf example table (``AT_Neu_Jul_2010.csv``: year, month, doy, hour = period start 0–23.5).

    FLUXNET2015 HH columns renamed by bigleaf: VPD kPa → hPa, pressure kPa → Pa, precip mm per half-hour → mm d-1,
    NEE/GPP/Reco µmol m-2 s-1 → gC m-2 d-1; ``*_qc`` are HH flags (0–3) applied with ``qc.max_flag``.
    """
    path = Path(path)
    site = site or _site_like(path) or _one_site_of_table(path, site_metadata)
    frame = _parse_table(path, _read_text(path).splitlines(), na_strings=("NA",))
    for col in ("year", "doy", "hour"):
        if col not in frame:
            raise _missing_column_error(path, "time", (col,), list(frame.columns))
    starts = (
        pd.to_datetime(frame["year"].astype(int).astype(str), format="%Y").to_numpy(dtype="datetime64[ns]")
        + ((frame["doy"].to_numpy() - 1) * 86400e9).astype("timedelta64[ns]")
        + (frame["hour"].to_numpy() * 3600e9).round().astype("timedelta64[ns]")
    )
    _check_monotonic(path, "time", starts)
    resolution = _infer_resolution(path, "time", starts, 12, None)
    mapping = {n: (c, u) for n, (c, u, _) in _BIGLEAF_COLUMNS.items() if c in frame}
    qc_columns = {n: q for n, (_, _, q) in _BIGLEAF_COLUMNS.items() if q}
    ds = _build_site_dataset(
        path, frame, starts, site=site, resolution=resolution, mapping=mapping, qc_columns=qc_columns, qc=qc,
        require=("nee",), keep_qc=False, attrs={"product": "bigleaf example (FLUXNET2015 HH subset)"},
    )
    return _finish(ds, path, site_metadata, validate, invalid=invalid, require=("nee",))


# --- aggregation --------------------------------------------------------------------------------------


def aggregate_to(ds: xr.Dataset, resolution: str, *, min_coverage: float = 0.5) -> xr.Dataset:
    """Aggregate a HH/HR/DD dataset to a coarser resolution (HR, DD, MM, YY) as the mean of rates.

    Because fluxes and precipitation are rates (gC m-2 d-1, mm d-1), the mean is the right aggregate for every
    variable. A period keeps a value only where the fraction of its expected sub-steps that are observed is at
    least ``min_coverage`` (expected = calendar length / the source step, so missing rows count as gaps).
    """
    source_res = ds.attrs.get("time_resolution")
    order = ["HH", "HR", "DD", "MM", "YY"]
    if source_res not in ("HH", "HR", "DD") or resolution not in order or order.index(resolution) <= order.index(source_res):
        raise ValueError(f"cannot aggregate {source_res} to {resolution}; source must be HH/HR/DD and finer than the target")
    freq = {"HR": "1h", "DD": "1D", "MM": "MS", "YY": "YS"}[resolution]
    step = _STEP[source_res]
    resampled = ds.resample(time=freq)
    mean = resampled.mean(skipna=True)
    count = resampled.count()
    periods = mean["time"].values
    nxt = {
        "HR": periods + np.timedelta64(1, "h"),
        "DD": periods + np.timedelta64(1, "D"),
        "MM": (periods.astype("datetime64[M]") + 1).astype("datetime64[ns]"),
        "YY": (periods.astype("datetime64[Y]") + 1).astype("datetime64[ns]"),
    }[resolution]
    expected = xr.DataArray((nxt - periods) / step, dims="time", coords={"time": periods})
    out = mean.where(count / expected >= min_coverage)
    for name in out.data_vars:
        out[name] = out[name].transpose(*ds[name].dims).astype(np.float32).assign_attrs(ds[name].attrs)
    out.attrs = {**ds.attrs, "time_resolution": resolution, "aggregation": f"mean of {source_res} rates, min_coverage={min_coverage}"}
    keep = [n for n in out.data_vars if bool(np.isfinite(out[n].values).any())]
    return out[keep]
