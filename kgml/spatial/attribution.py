"""Why a trained hybrid predicts what it does: sensitivities of GPP, Reco and NEE to each driver as exact
derivatives through the model (forward-mode autodiff), permutation importance of each driver, and maps of
the learned parameters — for sites, or for the cells of a grid (`kgml.spatial.mapping.grid_sites`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from kgml.experiment import predict_dataset, windows
from kgml.io import pyplot, write_png_atomic
from kgml.progress import bar
from kgml.spatial.mapping import require_hybrid

__all__ = [
    "DRIVER_GROUPS",
    "DRIVER_UNITS",
    "driver_sensitivities",
    "permutation_importance",
    "to_grid",
]

#: A driver and the `Met` fields / network features it moves together (a warming moves tair, tmin, tmax
#: and — with tsoil = tair on grids — tsoil).
DRIVER_GROUPS: dict[str, tuple[str, ...]] = {
    "tair": ("tair", "tmin", "tmax", "tsoil"),
    "sw_in": ("sw_in",),
    "vpd": ("vpd",),
    "precip": ("precip",),
    "co2": ("co2",),
}
DRIVER_UNITS = {"tair": "degC", "sw_in": "W m-2", "vpd": "hPa", "precip": "mm d-1", "co2": "ppm"}
FLUXES = ("gpp", "reco", "nee")


def _response(model, w, delta, fields, feature_scale, mode, day_weight):
    """Weighted window means of (gpp, reco, nee) with driver group i shifted by delta[i] (its units)."""
    met = w.met._asdict()
    for i, group in enumerate(fields):
        for f in group:
            if met.get(f) is not None:
                met[f] = met[f] + delta[i]
    x = w.x
    if mode == "total":
        x = x + jnp.einsum("g,gf->f", delta, feature_scale)[None, :]
    w2 = w._replace(met=type(w.met)(**met), x=x)
    p = model(w2)
    wsum = jnp.maximum(day_weight.sum(), 1.0)
    return jnp.stack([(p.gpp * day_weight).sum(), (p.reco * day_weight).sum(), (p.nee * day_weight).sum()]) / wsum


def _jacobian_batch(model, inputs, day_weight, fields, feature_scale, mode):
    n = len(fields)

    def one(w, dw):
        f = lambda d: _response(model, w, d, fields, feature_scale, mode, dw)  # noqa: E731
        return f(jnp.zeros(n)), jax.jacfwd(f)(jnp.zeros(n))

    return jax.vmap(one)(inputs, day_weight)


_JAC = None


def _jac_jit():
    global _JAC
    if _JAC is None:
        _JAC = eqx.filter_jit(_jacobian_batch)
    return _JAC


def driver_sensitivities(
    run,
    ds: xr.Dataset,
    *,
    drivers: Sequence[str] = ("tair", "sw_in", "vpd", "precip"),
    mode: str = "physics",
    day_mask: np.ndarray | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> xr.Dataset:
    """∂(mean GPP, Reco, NEE)/∂(driver) per site: the derivative of each flux's mean over the window's days
    (those in ``day_mask`` (time,) when given, e.g. the covered months of a short record) with respect to a
    uniform shift of each driver over the window, in gC m-2 d-1 per driver unit (`DRIVER_UNITS`).

    ``mode="physics"``: the shift reaches the process model only (the learned parameters are held): the
    sensitivity of the physics the network parameterised. ``mode="total"``: the network's (normalised)
    inputs move too, so parameters that read the drivers respond as well. Static attributes are held in
    both. Also returns the fluxes themselves and the learned parameters per site (``theta_<name>``).
    Exact (forward-mode autodiff through the scan), mean over a site's windows."""
    require_hybrid(run, "driver_sensitivities")

    unknown = sorted(set(drivers) - set(DRIVER_GROUPS))
    if unknown:
        raise KeyError(f"unknown drivers {unknown}; choose from {sorted(DRIVER_GROUPS)}")
    if mode not in ("physics", "total"):
        raise ValueError(f"mode must be 'physics' or 'total', got {mode!r}")

    data = windows(ds, run.config, run.prepared, require_targets=False, missing_static="zero")
    fields = tuple(DRIVER_GROUPS[d] for d in drivers)
    norm = run.prepared.normaliser
    scale = np.zeros((len(drivers), len(data.features)), np.float32)
    for i, group in enumerate(fields):
        for j, feat in enumerate(data.features):
            if feat in group and feat in norm.std:
                scale[i, j] = 1.0 / norm.std[feat]
    dm = np.ones(ds.sizes["time"], bool) if day_mask is None else np.asarray(day_mask, bool)
    if dm.size != ds.sizes["time"]:
        raise ValueError(f"day_mask has {dm.size} days; the dataset has {ds.sizes['time']}")
    leap = _leap_mask(ds)
    dm = dm[~leap]
    win = data.inputs.met.tair.shape[1]
    weights = np.stack([dm[s:s + win] for s in data.start]).astype(np.float32)
    n = len(data)
    size = min(batch_size, n)
    vals, jacs = [], []
    for i in bar(range(0, n, size), desc="sensitivities (the first batch compiles)", unit="batch",
                 disable=not progress, leave=False):
        idx = np.minimum(np.arange(i, i + size), n - 1)
        inp = jax.tree_util.tree_map(lambda a, idx=idx: a[idx], data.inputs)
        v, j = _jac_jit()(run.model, inp, weights[idx], fields, scale, mode)
        k = min(size, n - i)
        vals.append(np.asarray(v)[:k])
        jacs.append(np.asarray(j)[:k])
    vals, jacs = np.concatenate(vals), np.concatenate(jacs)  # (window, 3), (window, 3, driver)
    n_sites = len(data.sites)
    out = {}
    for a, flux in enumerate(FLUXES):
        out[flux] = (("site",), _site_mean(vals[:, a], data.site, n_sites),
                     {"units": "gC m-2 d-1", "long_name": f"mean {flux} over the selected days"})
        for b, d in enumerate(drivers):
            out[f"d{flux}_d{d}"] = (("site",), _site_mean(jacs[:, a, b], data.site, n_sites),
                                    {"units": f"gC m-2 d-1 per {DRIVER_UNITS[d]}",
                                     "long_name": f"sensitivity of mean {flux} to a uniform shift of {d} ({mode})"})

    theta_names = tuple(run.model.learned) + tuple(sorted(run.model.global_unconstrained))
    if theta_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = predict_dataset(run, ds, batch_size=batch_size, missing_static="zero")
        for name in theta_names:
            out[f"theta_{name}"] = (("site",), pred[f"theta_{name}"].values, dict(pred[f"theta_{name}"].attrs))
    res = xr.Dataset(out, coords={"site": list(data.sites)})
    for c in ("lat", "lon"):
        if c in ds.coords:
            res = res.assign_coords({c: ("site", ds[c].values)})
    res.attrs.update(mode=mode, drivers=" ".join(drivers),
                     method="forward-mode derivative (jax.jacfwd) of the window-mean flux w.r.t. a uniform "
                            "driver shift; mean over the site's windows")
    return res


def _leap_mask(ds: xr.Dataset) -> np.ndarray:
    t = ds.time.dt
    return (np.asarray(t.month.values) == 2) & (np.asarray(t.day.values) == 29)


def _site_mean(v: np.ndarray, site: np.ndarray, n: int) -> np.ndarray:
    s = np.bincount(site, weights=v, minlength=n)
    c = np.bincount(site, minlength=n)
    return np.where(c > 0, s / np.maximum(c, 1), np.nan).astype(np.float32)


def permutation_importance(
    run,
    ds: xr.Dataset,
    *,
    drivers: Sequence[str] = ("tair", "sw_in", "vpd", "precip"),
    target: str = "nee",
    n_repeats: int = 3,
    seed: int = 0,
    day_mask: np.ndarray | None = None,
    batch_size: int = 64,
    progress: bool = False,
):
    """Permutation importance of each driver group: the drivers' whole series are shuffled between sites
    (seeded, ``n_repeats`` times) and the RMSE of ``target`` against a reference is measured. The reference
    is the observed ``target`` where ``ds`` has it (importance = RMSE increase over the unpermuted model),
    else the unpermuted predictions (model reliance: how far predictions move). Static attributes and
    location are held, so this is importance conditional on them. Returns a `pandas.DataFrame` (driver,
    importance, sd, reference)."""


    if ds.sizes["site"] < 2:
        raise ValueError("permutation importance needs at least 2 sites (series are shuffled between sites)")
    dm = np.ones(ds.sizes["time"], bool) if day_mask is None else np.asarray(day_mask, bool)

    def predict(d):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return predict_dataset(run, d, batch_size=batch_size, missing_static="zero")[target]

    def rmse(p, ref):
        p, r = p.values, ref.values
        ok = np.isfinite(p) & np.isfinite(r)
        return float(np.sqrt(np.mean((p[ok] - r[ok]) ** 2))) if ok.any() else float("nan")

    base = predict(ds)
    keep = dm & ~_leap_mask(ds)
    base = base.isel(time=np.flatnonzero(np.isin(base.time.values, ds.time.values[keep])))
    observed = target in ds and np.isfinite(ds[target].values).any()
    ref = ds[target].sel(time=base.time.values) if observed else base
    base_err = rmse(base, ref) if observed else 0.0
    rng = np.random.default_rng(seed)
    rows = []
    ticker = bar(total=len(drivers) * n_repeats, desc="permutation importance", unit="permutation",
                 disable=not progress, leave=False)
    for d in drivers:
        names = [f for f in DRIVER_GROUPS[d] if f in ds]
        if not names:
            ticker.update(n_repeats)
            continue
        errs = []
        for _ in range(n_repeats):
            perm = rng.permutation(ds.sizes["site"])
            while ds.sizes["site"] > 1 and (perm == np.arange(perm.size)).all():
                perm = rng.permutation(ds.sizes["site"])
            shuffled = ds.copy()
            for f in names:
                shuffled[f] = (ds[f].dims, ds[f].transpose("site", ...).values[perm], ds[f].attrs)
            p = predict(shuffled).sel(time=base.time.values)
            errs.append(rmse(p, ref) - base_err)
            ticker.update(1)
        rows.append({"driver": d, "importance": float(np.mean(errs)), "sd": float(np.std(errs)),
                     "units": "gC m-2 d-1 (RMSE increase)", "reference": "observed" if observed else "unpermuted model"})
    ticker.close()
    return pd.DataFrame(rows)


def to_grid(values: xr.Dataset, cell: np.ndarray, lat, lon) -> xr.Dataset:
    """Put per-site results of grid cells (``cell``: (2, n) lat/lon indices from `kgml.spatial.mapping.grid_sites`)
    back on the (lat, lon) grid (NaN elsewhere)."""
    out = {}
    for name, da in values.data_vars.items():
        if da.dims != ("site",):
            continue
        grid = np.full((len(lat), len(lon)), np.nan, np.float32)
        grid[cell[0], cell[1]] = da.values
        out[name] = (("lat", "lon"), grid, dict(da.attrs))
    return xr.Dataset(out, coords={"lat": ("lat", np.asarray(lat), {"units": "degrees_north", "standard_name": "latitude"}),
                                   "lon": ("lon", np.asarray(lon), {"units": "degrees_east", "standard_name": "longitude"})},
                      attrs=dict(values.attrs))


def importance_markdown(table, title: str = "") -> str:
    lines = ([f"## {title}", ""] if title else []) + ["| driver | importance | sd | reference |", "|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['driver']} | {r['importance']:.4g} | {r['sd']:.2g} | {r['reference']} |")
    return "\n".join(lines) + "\n"


def sensitivity_figure(grid: xr.Dataset, path, *, flux: str = "nee", drivers: Sequence[str] = (),
                       importance=None, title: str = ""):
    """PNG: sensitivity maps of ``flux`` to each driver, learned-parameter maps, and the importance bars."""
    try:
        plt = pyplot()
    except ImportError:
        return None

    sens = [f"d{flux}_d{d}" for d in drivers if f"d{flux}_d{d}" in grid]
    params = [v for v in grid.data_vars if str(v).startswith("theta_")]
    panels = sens + params + (["importance"] if importance is not None else [])
    ncol = min(3, len(panels))
    nrow = int(math.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes.ravel(), panels, strict=False):
        if name == "importance":
            ax.barh(importance["driver"], importance["importance"], xerr=importance["sd"])
            ax.set(xlabel=f"{flux} RMSE increase (gC m-2 d-1)", title="permutation importance")
            continue
        vals = grid[name].values
        kw = {"cmap": "viridis"}
        if name in sens and np.isfinite(vals).any():
            lim = float(np.nanmax(np.abs(vals))) or 1.0
            kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        im = ax.pcolormesh(grid.lon.values, grid.lat.values, vals, shading="nearest", **kw)
        fig.colorbar(im, ax=ax, shrink=0.85, label=grid[name].attrs.get("units", ""))
        ax.set(title=name, xlabel="lon", ylabel="lat")
        ax.set_aspect("equal", adjustable="box")
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return write_png_atomic(fig, path)
