"""Atomic file output: a result appears whole under its final name or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's directory; on success it replaces ``path`` atomically
    (``os.replace``), on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_netcdf_atomic(ds, path: str | os.PathLike) -> Path:
    """Write an ``xr.Dataset`` to netCDF4 atomically; refuses to overwrite one of the dataset's own inputs."""
    path = Path(path)
    sources = ds.encoding.get("source")
    if sources and Path(sources).resolve() == path.resolve():
        raise ValueError(f"refusing to overwrite the input file {path}; choose another output path")
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4")
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
