"""AmeriFlux BASE files (TIMESTAMP_START/END) and ONEFlux measured-NEE ``*_qca_ustar_*`` files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.data.formats import files_of, head, site_from_name
from kgml.data.schema import DataValidationError, validate_dataset
from kgml.data.sitemeta import (
    attach_site_metadata,
)
from kgml.data.towers.common import (
    NO_QC,
    RESOLUTIONS,
    _build_site_dataset,
    _check_monotonic,
    _finish,
    _infer_resolution,
    _missing_column_error,
    _parse_stamp,
    _parse_table,
    _pick_column,
    _read_text,
    _resolve_metadata,
)
from kgml.data.towers.fluxnet import (
    _read_many,
    _site_from_name,
    combine_sites,
)
from kgml.variables import VARIABLES, get_variable

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


