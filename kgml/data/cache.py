"""Processed datasets cached as netCDF, keyed by a hash of the source files' bytes and the reader options.

Writes are atomic (temporary file in the same folder, then ``os.replace``), so an interrupted run never
leaves a half-written cache entry. The cache folder is ``cache_dir``, ``$KGML_CACHE`` or ~/.cache/kgml.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import xarray as xr

__all__ = ["cache_dir", "cache_key", "cached_dataset", "file_digest", "write_netcdf_atomic"]

CACHE_ENV = "KGML_CACHE"
_CHUNK = 1 << 20


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The cache folder (created if needed): ``explicit``, ``$KGML_CACHE``, or ~/.cache/kgml."""
    path = Path(explicit or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kgml").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(name: str, sources: Iterable[str | os.PathLike], options: Mapping[str, object] | None = None) -> str:
    """A key from the reader ``name``, the source files' names and content hashes, and the reader options."""
    h = hashlib.sha256(name.encode())
    for src in sorted(Path(s) for s in sources):
        h.update(src.name.encode())
        h.update(file_digest(src).encode())
    h.update(json.dumps(dict(options or {}), sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def write_netcdf_atomic(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` as netCDF via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        ds.to_netcdf(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cached_dataset(
    name: str,
    sources: Iterable[str | os.PathLike],
    build: Callable[[], xr.Dataset],
    *,
    options: Mapping[str, object] | None = None,
    directory: str | os.PathLike | None = None,
    refresh: bool = False,
) -> xr.Dataset:
    """Return the cached result of ``build()`` for these ``sources`` and ``options``, building it when absent.

    Any change to a source file's bytes, the file list or the options gives a new key. ``refresh`` rebuilds.
    The returned dataset is loaded into memory (the file is closed).
    """
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("cached_dataset needs at least one source file to key on")
    key = cache_key(name, sources, options)
    path = cache_dir(directory) / f"{name}-{key}.nc"
    if path.exists() and not refresh:
        with xr.open_dataset(path) as ds:
            return ds.load()
    ds = build()
    out = ds.copy()
    out.attrs = {**ds.attrs, "kgml_cache_key": key, "kgml_cache_name": name}
    write_netcdf_atomic(out, path)
    with xr.open_dataset(path) as cached:
        return cached.load()
