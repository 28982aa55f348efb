"""Output helpers: atomic files (a result appears whole under its final name or not at all), PNG figures, and
per-site outputs joined along ``site``."""

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


def concat_sites(parts):
    """Per-site datasets (e.g. the predictions of one model per region) joined along ``site``, with the
    dataset and variable attributes (units, long_name) of the first part."""
    import xarray as xr

    if len(parts) == 1:
        return parts[0]
    out = xr.concat(parts, dim="site", data_vars="all", coords="minimal", compat="override", join="outer",
                    combine_attrs="drop")
    out.attrs.update(dict(parts[0].attrs))
    for v in out.data_vars:
        if v in parts[0]:
            out[v].attrs = dict(parts[0][v].attrs)
    return out


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only written to files); raises
    ImportError where matplotlib is not installed (the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png_atomic(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
