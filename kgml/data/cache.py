"""Processed datasets cached as netCDF, keyed by a hash of the source files' bytes and the reader options.

Writes are atomic (`kgml.io.write_netcdf_atomic`: temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written cache entry. The cache folder is ``cache_dir``, ``$KGML_CACHE`` or
~/.cache/kgml. Readers take ``cache=False | True | folder`` and go through `cached_read`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import xarray as xr

from kgml import __version__
from kgml.io import write_netcdf_atomic

__all__ = [
    "CACHE_VERSION",
    "cache_dir",
    "cache_key",
    "cached_dataset",
    "cached_read",
    "file_digest",
    "resolve_cache",
    "write_netcdf_atomic",
]

CACHE_ENV = "KGML_CACHE"
#: Bumped when a reader's output changes without a change of its options, so old entries are not reused.
CACHE_VERSION = 1
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
    h = hashlib.sha256(f"{name}|kgml {__version__}|cache v{CACHE_VERSION}".encode())
    for src in sorted(Path(s) for s in sources):
        h.update(src.name.encode())
        h.update(file_digest(src).encode())
    h.update(json.dumps(dict(options or {}), sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


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
        try:
            with xr.open_dataset(path) as ds:
                return ds.load()
        except (OSError, ValueError):  # an unreadable entry (disk trouble, foreign file) is rebuilt
            pass
    ds = build()
    out = ds.copy()
    out.attrs = {**ds.attrs, "kgml_cache_key": key, "kgml_cache_name": name}
    for var in out.data_vars.values():
        if var.dtype.kind in "fiu":  # mostly-missing site × time grids shrink ~10× with light compression
            var.encoding.update(zlib=True, complevel=1)
    write_netcdf_atomic(out, path)
    with xr.open_dataset(path) as cached:
        return cached.load()


def resolve_cache(cache: bool | str | os.PathLike | None) -> Path | None:
    """A reader's ``cache`` argument → the cache folder, or None for no caching.

    False/None: no cache; True: `cache_dir` (``$KGML_CACHE`` or ~/.cache/kgml); a path: that folder.
    """
    if cache is None or cache is False:
        return None
    return cache_dir(None if cache is True else cache)


def cached_read(
    name: str,
    sources: Iterable[str | os.PathLike],
    build: Callable[[], xr.Dataset],
    *,
    cache: bool | str | os.PathLike | None,
    options: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """``build()`` directly when ``cache`` is off, else its cached netCDF (rebuilt when a source file or an
    option changes). ``attrs["kgml_cache_key"]`` on the result tells that it went through the cache."""
    directory = resolve_cache(cache)
    if directory is None:
        return build()
    return cached_dataset(name, sources, build, options=options, directory=directory)
