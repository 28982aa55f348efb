"""Lazy reading of gridded forcing (netCDF files or zarr stores, recognised by content) into one dask-backed
`xarray.Dataset` with its files' SHA-256 recorded (`open_forcing`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml.data import gridded as G
from kgml.data.formats import is_netcdf
from kgml.spatial.grid_drivers import (
    _resolution,
)
from kgml.variables import convert_units, get_variable

# ---------------------------------------------------------------------------------------------------------
# Lazy reading
# ---------------------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():  # a zarr store: every file, in order
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(p.relative_to(path).as_posix().encode())
            h.update(_file_sha256(p).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Metadata files that make a folder a zarr store (zarr v2 and v3 format specifications).
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a zarr store: a folder with zarr's own metadata files, whatever it is called."""
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def _expand(paths) -> list[Path]:
    """Forcing files and stores: netCDF recognised by its magic bytes and zarr stores by their metadata, whatever
    they are called; a folder gives the ones it holds."""
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir() and not is_zarr_store(p):
            found = sorted(q for q in p.iterdir() if (q.is_file() and is_netcdf(q)) or is_zarr_store(q))
            if not found:
                raise FileNotFoundError(f"{p}: no netCDF files or zarr stores")
            out += found
        elif not p.exists():
            raise FileNotFoundError(f"forcing file {p} does not exist")
        else:
            out.append(p)
    return out


def open_forcing(
    paths,
    *,
    chunks: Mapping[str, int] | None = None,
    bbox: Sequence[float] | None = None,
    variables: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    psurf: float | None = None,
    hashes: bool = True,
) -> xr.Dataset:
    """Gridded forcing (netCDF files, folders of them, or zarr stores) → canonical drivers on (lat, lon, time),
    read lazily with dask (``chunks`` over lat/lon; time stays whole). Names, units, specific humidity → vpd
    and monthly labels follow `kgml.data.gridded.open_gridded` (which reads eagerly and range-checks; use it
    to validate a product). ``bbox`` = (lat_min, lat_max, lon_min, lon_max) in degrees, lon in [-180, 180).
    The files' SHA-256 go into ``attrs["forcing_sha256"]``."""
    variables, units = dict(variables or {}), dict(units or {})
    chunks = dict(chunks or {"lat": 32, "lon": 32})
    files = _expand(paths)
    pieces: dict[str, xr.DataArray] = {}
    for path in files:
        if is_zarr_store(path):
            raw = xr.open_zarr(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=False))
        else:
            try:
                raw = xr.open_dataset(path, chunks={}, decode_times=xr.coders.CFDatetimeCoder(use_cftime=False))
            except (OSError, ValueError) as err:
                raise G.DataValidationError(path, None, f"cannot open: {err}") from err
        ds = G._normalise_grid(raw, path)
        if bbox is not None:
            la0, la1, lo0, lo1 = bbox
            ds = ds.sel(lat=slice(la0, la1), lon=slice(lo0, lo1))
            if ds.sizes["lat"] == 0 or ds.sizes["lon"] == 0:
                raise ValueError(f"{path}: no grid cell inside bbox {tuple(bbox)}")
        for name, da in ds.data_vars.items():
            name = str(name)
            if not {"lat", "lon", "time"} <= set(da.dims):
                continue
            canonical = G._canonical_name(name, da, variables)
            if canonical is None or canonical in ("lw_in", "ws", "rh"):
                continue
            if canonical in pieces:
                raise G.DataValidationError(path, name, f"a second source for {canonical}")
            raw_units = G._units_of(name, da, units, path)
            da = da.transpose("lat", "lon", "time").astype("float32")
            if raw_units.lower() in G._MONTHLY_TOTAL_UNITS and canonical == "precip":
                days = xr.DataArray(np.asarray(da.time.dt.days_in_month.values, np.float32), dims="time")
                conv = da / days
            elif canonical == "qair":
                conv = da
            else:
                target = get_variable(canonical).units
                conv = xr.apply_ufunc(lambda v, f=raw_units, t=target: np.asarray(convert_units(v, f, t), np.float32),
                                      da, dask="parallelized", output_dtypes=[np.float32])
            attrs = get_variable(canonical).attrs() if canonical != "qair" else {"units": "kg kg-1"}
            pieces[canonical] = conv.assign_attrs({**attrs, "comment": f"from {path.name}:{name} ({raw_units})"})
    if not pieces:
        raise G.DataValidationError(files[0], None, "no recognised forcing variable")
    if "qair" in pieces:
        if "tair" not in pieces:
            raise G.DataValidationError(files[0], "qair", "specific humidity needs air temperature to give vpd")
        pressure = pieces.get("patm", psurf if psurf is not None else G.P_STANDARD)
        vpd = xr.apply_ufunc(lambda q, t, p: G.specific_humidity_to_vpd(q, t, p).astype(np.float32),
                             pieces.pop("qair"), pieces["tair"], pressure, dask="parallelized",
                             output_dtypes=[np.float32])
        pieces["vpd"] = vpd.assign_attrs({**get_variable("vpd").attrs(), "comment": "from specific humidity, tair "
                                          f"and {'surface pressure' if 'patm' in pieces else f'{pressure} Pa'}"})
    pieces.pop("patm", None)
    out = xr.Dataset(pieces)
    times = out.time.values
    if _resolution(times) == "monthly":
        out = out.assign_coords(time=np.asarray(times).astype("datetime64[M]").astype("datetime64[ns]"))
    out = out.transpose("lat", "lon", "time").chunk({"lat": chunks.get("lat", 32), "lon": chunks.get("lon", 32),
                                                     "time": -1})
    out.attrs.update(source=" ".join(str(p) for p in files), files=" ".join(p.name for p in files),
                     resolution=_resolution(times))
    if hashes:
        out.attrs["forcing_sha256"] = " ".join(f"{p.name}:{_file_sha256(p)}" for p in files)
    return out


