"""The REddyProc and bigleaf example formats (tables and netCDF)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.schema import DataValidationError
from kgml.data.towers.ameriflux import (
    _check_utc_offset,
)
from kgml.data.towers.common import (
    MISSING_VALUE,
    NO_QC,
    QCPolicy,
    _build_site_dataset,
    _check_monotonic,
    _finish,
    _infer_resolution,
    _missing_column_error,
    _parse_stamp,
    _parse_table,
    _read_text,
    _resolve_metadata,
)

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


