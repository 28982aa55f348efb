"""What every tower reader shares: the missing-value code and resolutions, the QC policy, FLUXNET-style
file names, text and table reading, timestamps, variable mapping and unit conversion, and the assembly of
one site's validated dataset."""

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import GZIP_MAGIC
from kgml.data.schema import DataValidationError, DataWarning, validate_dataset, validate_variable
from kgml.data.sitemeta import (
    attach_site_metadata,
    find_site_metadata,
    read_site_metadata,
)
from kgml.variables import VARIABLES, convert_units, get_variable

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


