"""Site metadata (lat, lon, elevation, IGBP, UTC offset, ...) read from the tables networks publish.

Networks spell the columns differently (FLUXNET ``LOCATION_LAT``, ICOS ``Latitude``, AGDS ``lat``); this file
normalises them and attaches them to a dataset as coordinates on ``site``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import LAT_COLUMNS, LON_COLUMNS, SITE_COLUMNS, files_of
from kgml.data.schema import DataValidationError, DataWarning

__all__ = [
    "SITE_COORDS",
    "attach_site_metadata",
    "find_site_metadata",
    "site_table_files",
    "read_site_metadata",
]

#: Coordinates every tower dataset carries on ``site`` (NaN / "" when unknown), with units.
SITE_COORDS: dict[str, str] = {
    "lat": "degrees_north",
    "lon": "degrees_east",
    "elevation": "m",
    "igbp": "1",
    "utc_offset": "h",
}
#: Optional extra coordinates kept when a table has them.
_EXTRA_COORDS: dict[str, str] = {"site_name": "1", "mat": "degC", "map": "mm yr-1", "koeppen": "1"}

_ALIASES: dict[str, tuple[str, ...]] = {
    "site": SITE_COLUMNS,
    "site_name": ("site_name", "sitename", "name"),
    "lat": LAT_COLUMNS,
    "lon": LON_COLUMNS,
    "elevation": ("elevation", "elev", "elv", "location_elev", "altitude", "alt"),
    "igbp": ("igbp", "igbpcode", "igbp_code", "classid", "igbp_class"),
    "utc_offset": ("utc_offset", "timezone", "time_zone", "utc"),
    "mat": ("mat", "mat_degc"),
    "map": ("map", "map_mm"),
    "koeppen": ("koeppen", "koeppen_code", "koppen", "climate_class"),
}


def read_site_metadata(table: str | os.PathLike | pd.DataFrame | Mapping) -> pd.DataFrame:
    """A site table with normalised columns (site index; lat, lon, elevation, igbp, utc_offset, ...).

    ``table`` is a CSV path, a DataFrame, or a mapping ``{site: {"lat": .., "lon": .., ...}}``. Column names
    are matched case-insensitively against the FLUXNET, ICOS and AGDS spellings.
    """
    source = str(table) if isinstance(table, (str, os.PathLike)) else "<site table>"
    if isinstance(table, (str, os.PathLike)):
        frame = pd.read_csv(table)
    elif isinstance(table, pd.DataFrame):
        frame = table.copy()
        if frame.index.name and frame.index.name.lower() in _ALIASES["site"]:
            frame = frame.reset_index()
    elif isinstance(table, Mapping):
        frame = pd.DataFrame.from_dict(dict(table), orient="index").rename_axis("site").reset_index()
    else:
        raise TypeError(f"site metadata must be a path, DataFrame or mapping, got {type(table).__name__}")
    lower = {str(c).lower(): c for c in frame.columns}
    renamed = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower:
                renamed[lower[alias]] = canonical
                break
    frame = frame.rename(columns=renamed)
    if "site" not in frame.columns:
        raise DataValidationError(source, "site", f"no site-ID column (tried {', '.join(_ALIASES['site'])})")
    keep = ["site"] + [c for c in (*SITE_COORDS, *_EXTRA_COORDS) if c in frame.columns]
    frame = frame[keep].copy()
    frame["site"] = frame["site"].astype(str).str.strip()
    dup = frame["site"][frame["site"].duplicated()]
    if len(dup):
        raise DataValidationError(source, "site", f"duplicate site IDs in metadata: {sorted(set(dup))[:5]}")
    for col in ("lat", "lon", "elevation", "utc_offset", "mat", "map"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in ("igbp", "site_name", "koeppen"):
        if col in frame.columns:
            frame[col] = frame[col].fillna("").astype(str).str.strip()
    return frame.set_index("site")


def site_table_files(directory: str | os.PathLike) -> list[Path]:
    """The site tables (site code, lat, lon columns; recognised by content, whatever they are called) of a folder."""
    return files_of(directory, "site_table")


def find_site_metadata(directory: str | os.PathLike) -> pd.DataFrame | None:
    """The site table next to the data files (as ``sites.csv`` in ../shared/data, recognised by its columns
    whatever it is called), normalised, or None. Two site tables in one folder are an error naming both."""
    path = Path(directory)
    if path.is_file():
        path = path.parent
    tables = site_table_files(path)
    if len(tables) > 1:
        raise DataValidationError(path, "site", f"several site tables {[p.name for p in tables]}; pass site_metadata= "
                                  "to choose one")
    return read_site_metadata(tables[0]) if tables else None


def attach_site_metadata(
    ds: xr.Dataset,
    metadata: pd.DataFrame | None,
    *,
    source: object = None,
    warn_missing: bool = True,
) -> xr.Dataset:
    """Add (or fill) lat, lon, elevation, igbp, utc_offset (and extras present) as coordinates on ``site``.

    Values already on ``ds`` (e.g. lat/lon from a file header) are kept where the table has none; a table
    value overrides a file value. Sites absent from the table keep NaN / "" and, with ``warn_missing``,
    one `DataWarning` lists them.
    """
    sites = [str(s) for s in ds["site"].values]
    out = ds
    new_coords = {}
    for coord, units in {**SITE_COORDS, **_EXTRA_COORDS}.items():
        is_text = coord in ("igbp", "site_name", "koeppen")
        if coord in out.coords:
            current = np.asarray(out[coord].values, dtype=object if is_text else float)
        elif coord in SITE_COORDS:
            current = np.array([""] * len(sites), dtype=object) if is_text else np.full(len(sites), np.nan)
        else:
            current = None
        if metadata is not None and coord in metadata.columns:
            table = metadata[coord].reindex(sites)
            given = table.notna().to_numpy() & (table.astype(str).str.len().to_numpy() > 0)
            if current is None:
                current = np.array([""] * len(sites), dtype=object) if is_text else np.full(len(sites), np.nan)
            current = np.where(given, table.to_numpy(dtype=object if is_text else float), current)
        if current is None:
            continue
        values = current.astype(str) if is_text else current.astype(float)
        new_coords[coord] = ("site", values, {"units": units})
    out = out.assign_coords(new_coords)  # one call: assigning coordinates one by one re-aligns the dataset each time
    if warn_missing:
        missing = [s for s, lat in zip(sites, out["lat"].values, strict=True) if not np.isfinite(lat)]
        if missing:
            warnings.warn(
                f"{source or ds.attrs.get('source', '<dataset>')}: no lat/lon for site(s) {missing[:10]}; "
                "pass site_metadata= (a table with site, lat, lon, elevation, igbp)",
                DataWarning,
                stacklevel=2,
            )
    return out
