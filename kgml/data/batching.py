"""The one place where xarray becomes jax arrays: windows of (site × window × feature) with masks.

`make_windows` cuts each site's series, at the dataset's own time resolution (half-hourly, daily, monthly,
annual), into windows of ``window`` steps. Missing inputs are filled with 0 (the training mean after
normalisation) and flagged in ``x_mask``; missing targets are 0 with ``y_mask`` False, so losses mask them.
`iterate_batches` shuffles windows with an explicit seed/key; `windows_to_dataset` maps predictions back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Bool, Float, Int

__all__ = ["Batch", "Windows", "iterate_batches", "make_windows", "windows_to_dataset"]


class Batch(NamedTuple):
    """A pytree of jax arrays; B windows of T steps."""

    x: Float[Array, "batch window feature"]  # noqa: F722
    x_mask: Bool[Array, "batch window feature"]  # noqa: F722
    y: Float[Array, "batch window target"]  # noqa: F722
    y_mask: Bool[Array, "batch window target"]  # noqa: F722
    static: Float[Array, "batch static"]  # noqa: F722
    site_index: Int[Array, " batch"]  # noqa: F722
    start: Int[Array, " batch"]  # noqa: F722


@dataclass(frozen=True)
class Windows:
    """All windows of a dataset as numpy arrays (host memory), plus what they are."""

    x: np.ndarray
    x_mask: np.ndarray
    y: np.ndarray
    y_mask: np.ndarray
    static: np.ndarray
    site_index: np.ndarray
    start: np.ndarray
    features: tuple[str, ...]
    targets: tuple[str, ...]
    static_names: tuple[str, ...]
    sites: tuple[str, ...]
    times: np.ndarray
    resolution: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, index: np.ndarray | slice | None = None) -> Batch:
        """The selected windows as a jax `Batch` (float32 / bool / int32)."""
        idx = slice(None) if index is None else index
        return Batch(
            jnp.asarray(self.x[idx], dtype=jnp.float32),
            jnp.asarray(self.x_mask[idx]),
            jnp.asarray(self.y[idx], dtype=jnp.float32),
            jnp.asarray(self.y_mask[idx]),
            jnp.asarray(self.static[idx], dtype=jnp.float32),
            jnp.asarray(self.site_index[idx], dtype=jnp.int32),
            jnp.asarray(self.start[idx], dtype=jnp.int32),
        )


def _stack(ds: xr.Dataset, names: Sequence[str], dim: str) -> np.ndarray:
    if not names:
        return np.zeros((ds.sizes[dim], ds.sizes["time"], 0), dtype=np.float32)
    missing = [n for n in names if n not in ds]
    if missing:
        raise KeyError(f"variables not in dataset: {missing} (has {sorted(map(str, ds.data_vars))})")
    return np.stack([ds[n].transpose(dim, "time").values.astype(np.float32) for n in names], axis=-1)


def make_windows(
    ds: xr.Dataset,
    features: Sequence[str],
    targets: Sequence[str],
    *,
    window: int,
    stride: int | None = None,
    static: Sequence[str] = (),
    min_targets: int = 1,
    dim: str = "site",
) -> Windows:
    """Cut ``ds`` (dims ``dim`` × time) into windows of ``window`` steps every ``stride`` (default ``window``).

    ``features`` and ``targets`` are data variables; ``static`` are per-site coordinates or variables (e.g.
    lat, lon, elevation) repeated for each window (non-finite → 0). Windows with fewer than ``min_targets``
    observed target values are dropped. The last partial window is kept, padded with masked steps.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    stride = stride or window
    if dim not in ds.dims or "time" not in ds.dims:
        raise ValueError(f"dataset must have dims ({dim}, time), has {tuple(ds.dims)}")
    x_all = _stack(ds, features, dim)
    y_all = _stack(ds, targets, dim)
    n_sites, n_time = x_all.shape[:2]
    stat = np.stack([np.asarray(ds[s].values, dtype=np.float64) for s in static], axis=-1) if static else np.zeros((n_sites, 0))
    stat = np.where(np.isfinite(stat), stat, 0.0).astype(np.float32)
    starts = list(range(0, max(n_time - window, 0) + 1, stride))
    if starts and starts[-1] + window < n_time:
        starts.append(starts[-1] + stride)
    pad = max(starts[-1] + window - n_time, 0) if starts else 0
    if pad:
        x_all = np.pad(x_all, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
        y_all = np.pad(y_all, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    # every (site, start) pair, site by site then start by start; one gather per array
    pair_site = np.repeat(np.arange(n_sites), len(starts))
    pair_start = np.tile(np.asarray(starts, dtype=np.int64), n_sites)
    steps = pair_start[:, None] + np.arange(window)
    observed = np.isfinite(y_all[pair_site[:, None], steps]).sum(axis=(1, 2))
    keep = observed >= min_targets
    if not keep.any():
        raise ValueError(f"no window has at least {min_targets} observed target value(s)")
    site_idx, start_idx, steps = pair_site[keep].astype(np.int32), pair_start[keep], steps[keep]
    x, y = x_all[site_idx[:, None], steps], y_all[site_idx[:, None], steps]  # new float32 arrays
    x_mask, y_mask = np.isfinite(x), np.isfinite(y)
    np.copyto(x, 0.0, where=~x_mask)  # gaps → 0 in place (the masks say where they were)
    np.copyto(y, 0.0, where=~y_mask)
    return Windows(
        x=x,
        x_mask=x_mask,
        y=y,
        y_mask=y_mask,
        static=stat[site_idx],
        site_index=site_idx,
        start=np.asarray(start_idx, dtype=np.int32),
        features=tuple(features),
        targets=tuple(targets),
        static_names=tuple(static),
        sites=tuple(ds[dim].values.astype(str).tolist()),
        times=ds["time"].values,
        resolution=str(ds.attrs.get("time_resolution", "")),
    )


def site_means(site: np.ndarray, values: np.ndarray, n_sites: int) -> np.ndarray:
    """Mean of per-window ``values`` over each site's windows (float32; NaN for a site without a window)."""
    count = np.bincount(site, minlength=n_sites)
    total = np.bincount(site, weights=np.asarray(values, np.float64), minlength=n_sites)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


class WindowCover(NamedTuple):
    """The cells windows cover on a (site, column) array (`last_window_cover`)."""

    cells: tuple[np.ndarray, np.ndarray]  #: (site, column) of every covered cell
    window: np.ndarray  #: the last window covering each of them
    offset: np.ndarray  #: its position inside that window


def last_window_cover(site: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> WindowCover:
    """For windows ``w`` on rows ``site[w]`` covering the consecutive ``columns[w, :]`` of a (site, column) array:
    every covered cell, the last window (highest index) covering it and the cell's offset in that window."""
    last = np.full(shape, -1, np.int64)
    np.maximum.at(last, (np.broadcast_to(site[:, None], columns.shape), columns),
                  np.broadcast_to(np.arange(len(site))[:, None], columns.shape))
    cells = np.nonzero(last >= 0)
    window = last[cells]
    return WindowCover(cells, window, cells[1] - columns[window, 0])


def iterate_batches(
    windows: Windows,
    batch_size: int,
    *,
    key: jax.Array | int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Yield `Batch`es of ``batch_size`` windows; the order is a permutation drawn from ``key`` (reproducible)."""
    n = len(windows)
    if shuffle:
        key = jax.random.PRNGKey(key) if isinstance(key, int) else key
        order = np.asarray(jax.random.permutation(key, n))
    else:
        order = np.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        if drop_last and idx.size < batch_size:
            return
        yield windows.batch(np.sort(idx) if not shuffle else idx)


def windows_to_dataset(
    values, windows: Windows, names: Sequence[str], *, units: Sequence[str] | None = None
) -> xr.Dataset:
    """Put per-window predictions ``values`` (window × step × len(names)) back on (site, time), averaging
    overlapping windows; steps never predicted are NaN."""
    values = np.asarray(values, dtype=np.float64)
    n_w, win, k = values.shape
    if n_w != len(windows) or k != len(names):
        raise ValueError(f"values shape {values.shape} does not match {len(windows)} windows × {len(names)} names")
    n_s, n_t = len(windows.sites), len(windows.times)
    total = np.zeros((n_s, n_t + win, k))
    count = np.zeros((n_s, n_t + win, 1))
    for w in range(n_w):
        s, t0 = windows.site_index[w], windows.start[w]
        total[s, t0 : t0 + win] += values[w]
        count[s, t0 : t0 + win] += 1
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)[:, :n_t]
    units = list(units) if units is not None else ["" for _ in names]
    return xr.Dataset(
        {n: (("site", "time"), mean[..., i].astype(np.float32), {"units": units[i]}) for i, n in enumerate(names)},
        coords={"site": list(windows.sites), "time": windows.times},
        attrs={"time_resolution": windows.resolution},
    )
