"""Apply trained runs over gridded forcing with dask: every land cell is a site, chunks of cells go through
the hybrid (jit-compiled), and the result is a CF netCDF of monthly GPP, Reco, NEE, learned parameters and
an ensemble spread, with area-weighted budgets and PNG maps.

How a grid becomes model input (all of it recorded in the output's attributes, nothing silently zero):

- Resolution: sub-daily fields are averaged to UTC days (``tmin``/``tmax`` = the day's extremes of ``tair``;
  a day needs `DriverAssumptions.min_coverage` of its steps); daily fields are used as they are; monthly
  fields become daily by giving each day its month's mean.
- Drivers a grid lacks come from `DriverAssumptions`: ``sw_in`` from the FAO-56 Angström climatology of the
  cell's latitude and day, ``vpd`` from ``tair`` at a fixed relative humidity, ``tmin``/``tmax`` = ``tair`` ∓
  half a fixed diurnal range, ``precip`` a fixed rate, ``tsoil`` = ``tair``, ``co2`` a fixed mole fraction.
- Short records: the model reads whole calendar years (365-day windows from 1 January). Days of a mapped year
  outside the record are padded — ``tair`` by an annual harmonic fitted to the cell's record (≥ 3 months),
  else by persistence of the record's mean; ``precip`` by the record's mean rate; ``sw_in``/``vpd`` by the
  climatologies above — and outputs are written only for the months the record covers. The physics is
  causal, so padded days after the record cannot change its months; padded days before it (a record that
  starts after January) set the state at its start, and the encoder (when the run uses its window summary)
  and forcing-derived static attributes (``mat``, ``map``) see the padded year: the attributes say so.
- A cell is mapped when every driver is finite on at least ``min_coverage`` of the record's days (shorter
  gaps are interpolated in time); other cells (ocean, gaps) are NaN and counted.

Two ways through the model, both jit-compiled per chunk: ``path="model"`` — `kgml.experiment.predict_dataset`
on the chunk's cells (encoder, heads, physics: exactly what predicts towers); ``path="fast"`` — for runs whose
parameters depend on location and static attributes only (``use_summary = false``, no residual head, no
time-varying parameters, no site attention), the parameters are evaluated once per cell and the physics is
vmapped over cell-years; the same numbers without the encoder's cost (`fast_path_reason` says why not).

`map_run(..., scheduler=...)` computes on the threaded scheduler (default), ``"sync"``, a
`distributed.Client`, or any dask scheduler address (``tcp://host:port``); the blocks are the same in every
case, so the results are identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from kgml import __version__
from kgml.config import (
    CorpusConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    config_to_dict,
)
from kgml.data.batching import last_window_cover, site_means
from kgml.data.drivers import check_gridded_drivers
from kgml.experiment import (
    Run,
    config_hash,
    corpus_spec,
    load_run,
    predict_dataset,
    train_run,
    windows,
)
from kgml.io import atomic_path, cf_encode
from kgml.models.hybrid import HybridModel
from kgml.progress import dask_progress
from kgml.spatial.budgets import (  # the package's public names, one import away as before
    BUDGET_LEVEL,
    UNIFORM_RELATIVE_RANGE,
    budget_markdown,
    budget_table,
    colour_limits,
    latitude_bands,
    plot_maps,
)
from kgml.spatial.fast import (  # the package's public names, one import away as before
    DAYS_IN_MONTH,
    fast_path_reason,
    location_parameters,
    monthly_fluxes_fast,
)
from kgml.spatial.forcing import (  # the package's public names, one import away as before
    is_zarr_store,
    open_forcing,
)
from kgml.spatial.grid_drivers import (  # the package's public names, one import away as before
    DAYS_PER_YEAR,
    DRIVERS,
    EARTH_RADIUS,
    FLUXES,
    G_PER_TG,
    DriverAssumptions,
    _Calendar,
    daily_drivers,
)
from kgml.synthetic import make_corpus
from process_models.simulate import _run

__all__ = [
    "BUDGET_LEVEL",
    "DAYS_IN_MONTH",
    "DRIVERS",
    "G_PER_TG",
    "UNIFORM_RELATIVE_RANGE",
    "DriverAssumptions",
    "budget_markdown",
    "budget_table",
    "cell_area",
    "colour_limits",
    "daily_drivers",
    "demo_run_config",
    "fast_path_reason",
    "grid_sites",
    "is_zarr_store",
    "latitude_bands",
    "location_parameters",
    "map_run",
    "monthly_fluxes_fast",
    "open_forcing",
    "plot_maps",
    "train_demo_run",
    "write_map",
]

# ---------------------------------------------------------------------------------------------------------
# Cells → a Contract-A site dataset → predictions
# ---------------------------------------------------------------------------------------------------------


def _site_dataset(drivers: Mapping[str, np.ndarray], days: np.ndarray, lat, lon, config) -> xr.Dataset:
    n = np.asarray(lat).size
    sites = [f"cell{i:07d}" for i in range(n)]
    data = {k: (("site", "time"), np.asarray(v, np.float32)) for k, v in drivers.items()}
    tair = np.asarray(drivers["tair"], np.float64)
    data["mat"] = (("site",), tair.mean(axis=1).astype(np.float32), {"units": "degC"})
    data["map"] = (("site",), (np.asarray(drivers["precip"], np.float64).mean(axis=1) * DAYS_PER_YEAR).astype(np.float32),
                   {"units": "mm yr-1"})
    coords = {"site": sites, "time": days.astype("datetime64[ns]"),
              "lat": ("site", np.asarray(lat, np.float32)), "lon": ("site", np.asarray(lon, np.float32))}
    if config.data.region:
        coords[config.data.region] = ("site", np.full(n, "", dtype="<U1"))  # unknown region (index −1)
    return xr.Dataset(data, coords=coords)


def _fast_forward(model, met, lat, lon, static, region):
    """Parameters from (lat, lon, static, region) and the physics over each window (vmapped)."""

    def one(met_w, la, lo, st, rg):
        emb = model.embed(model._locate(la, lo, st, rg))
        theta, daily, _ = model.parameters(jnp.zeros((1, 1)), emb)
        out = _run(model.process, theta, met_w, None, daily).outputs
        return out.gpp, out.reco, theta

    return jax.vmap(one)(met, lat, lon, static, region)


_FAST = None


def _fast_jit():
    global _FAST
    if _FAST is None:
        _FAST = eqx.filter_jit(_fast_forward)
    return _FAST


def _predict_sites(run, ds: xr.Dataset, path: str, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Daily (gpp, reco, nee) (3, site, time') on the leap-day-free axis, learned θ per site, that axis."""
    names = _learned_names(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing static attributes: recorded once in the map's attributes
        if path == "model":
            pred = predict_dataset(run, ds, batch_size=batch_size, missing_static="zero")
            fl = np.stack([pred[v].values for v in FLUXES])
            theta = {k: pred[f"theta_{k}"].values for k in names}
            return fl, theta, pred.time.values
        data = windows(ds, run.config, run.prepared, require_targets=False, missing_static="zero")

    inp = data.inputs
    n, win = len(data), inp.met.tair.shape[1]
    gpp_all = np.empty((n, win), np.float32)
    reco_all = np.empty((n, win), np.float32)
    th = {k: np.empty(n, np.float32) for k in names}
    size = min(batch_size, n)
    for i in range(0, n, size):
        idx = np.minimum(np.arange(i, i + size), n - 1)
        met = jax.tree_util.tree_map(lambda a, idx=idx: a[idx], inp.met)
        g, r, theta = _fast_jit()(run.model, met, inp.lat[idx], inp.lon[idx], inp.static[idx], inp.region[idx])
        k = min(size, n - i)
        gpp_all[i:i + k], reco_all[i:i + k] = np.asarray(g)[:k], np.asarray(r)[:k]
        for name in names:
            th[name][i:i + k] = np.asarray(theta[name])[:k]
    n_s, n_t = len(data.sites), len(data.times)
    fl = np.full((3, n_s, n_t), np.nan, np.float32)
    site = np.asarray(data.site, np.int64)
    cover = last_window_cover(site, np.asarray(data.start, np.int64)[:, None] + np.arange(win), (n_s, n_t))
    fl[0][cover.cells] = gpp_all[cover.window, cover.offset]
    fl[1][cover.cells] = reco_all[cover.window, cover.offset]
    fl[2] = fl[1] - fl[0]
    theta = {k: site_means(site, th[k], n_s) for k in names}
    return fl, theta, data.times


def _learned_names(run) -> tuple[str, ...]:
    return tuple(run.model.learned) + tuple(sorted(run.model.global_unconstrained))


def _monthly(fl: np.ndarray, times: np.ndarray, months: np.ndarray) -> np.ndarray:
    """(3, site, time) daily → (site, month, 3) monthly means over the listed months."""
    m_of_t = np.asarray(times).astype("datetime64[M]")
    out = np.full((fl.shape[1], months.size, fl.shape[0]), np.nan, np.float32)
    for j, m in enumerate(months):
        sel = m_of_t == m
        if sel.any():
            out[:, j, :] = np.nanmean(fl[:, :, sel], axis=2).T
    return out


@dataclass(frozen=True)
class _Plan:
    """Everything a block needs (shipped to dask workers with the task graph)."""

    runs: tuple
    drivers: tuple[str, ...]
    times: np.ndarray
    months: np.ndarray
    assumptions: DriverAssumptions
    path: str
    batch_size: int
    params: tuple[str, ...]

    @property
    def n_members(self) -> int:
        return len(self.runs)

    def layout(self) -> dict[str, slice]:
        """Output columns of a block: per-member fluxes (member, month, flux) then θ (member, param)."""
        nm, nmo, npar = self.n_members, self.months.size, len(self.params)
        a = nm * nmo * 3
        b = a + nm * npar
        return {"fluxes": slice(0, a), "theta": slice(a, b), "mapped": slice(b, b + 1), "z_static": slice(b + 1, b + 2)}

    @property
    def n_out(self) -> int:
        return self.layout()["z_static"].stop


def _predict_cells(plan: _Plan, drivers: dict, days: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    n = lat.size
    # Pad the cells to a whole number of batches, so every chunk compiles the same shapes.
    n_pad = int(math.ceil(n / plan.batch_size) * plan.batch_size)
    take = np.minimum(np.arange(n_pad), n - 1)
    drivers = {k: v[take] for k, v in drivers.items()}
    out = np.full((n, plan.n_out), np.nan, np.float32)
    nmo, npar = plan.months.size, len(plan.params)
    lay = plan.layout()
    fl_cols, th_cols = [], []
    for run in plan.runs:
        ds = _site_dataset(drivers, days, lat[take], lon[take], run.config)
        fl, theta, times = _predict_sites(run, ds, plan.path, plan.batch_size)
        fl_cols.append(_monthly(fl[:, :n], times, plan.months).reshape(n, nmo * 3))
        th_cols.append(np.stack([theta.get(p, np.full(n_pad, np.nan))[:n] for p in plan.params], axis=-1)
                       if npar else np.zeros((n, 0), np.float32))
    out[:, lay["fluxes"]] = np.concatenate(fl_cols, axis=1)
    out[:, lay["theta"]] = np.concatenate(th_cols, axis=1)
    out[:, lay["mapped"]] = 1.0
    run = plan.runs[0]
    norm = run.prepared.normaliser
    z = [np.abs(norm.transform_array(k, ds[k].values[:n].astype(np.float64))) for k in run.config.data.static
         if k in ds and k in norm.mean]
    out[:, lay["z_static"].start] = np.max(z, axis=0) if z else 0.0
    return out


def _map_block(block: np.ndarray, lat4: np.ndarray, lon4: np.ndarray, plan: _Plan) -> np.ndarray:
    cy, cx, nv, nt = block.shape
    lat = np.broadcast_to(lat4[:, :, 0, 0], (cy, cx)).reshape(-1).astype(np.float64)
    lon = np.broadcast_to(lon4[:, :, 0, 0], (cy, cx)).reshape(-1).astype(np.float64)
    values = {v: block[:, :, i, :].reshape(cy * cx, nt) for i, v in enumerate(plan.drivers)}
    any_data = np.isfinite(block).any(axis=(2, 3)).reshape(-1)
    out = np.full((cy * cx, plan.n_out), np.nan, np.float32)
    out[:, plan.layout()["mapped"]] = 0.0
    idx = np.flatnonzero(any_data)
    if idx.size:
        drivers, days, mapped, _ = daily_drivers({k: v[idx] for k, v in values.items()}, plan.times, lat[idx],
                                                 plan.assumptions)
        ok = np.flatnonzero(mapped)
        if ok.size:
            out[idx[ok]] = _predict_cells(plan, {k: v[ok] for k, v in drivers.items()}, days, lat[idx[ok]],
                                          lon[idx[ok]])
    return out.reshape(cy, cx, plan.n_out)


# ---------------------------------------------------------------------------------------------------------
# map_run
# ---------------------------------------------------------------------------------------------------------


def _compute(arr, scheduler):
    import dask

    if scheduler is None or scheduler in ("threads", "sync", "synchronous", "processes", "single-threaded"):
        with dask_progress(scheduler):
            return dask.compute(arr, scheduler=scheduler or "threads")[0]
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler.compute(arr).result()
    with Client(scheduler, set_as_default=False) as client:  # an address, or a LocalCluster object
        return client.compute(arr).result()


def require_hybrid(run, what: str) -> None:
    """Mapping, attribution and scenarios read the hybrid's location encoder, parameter head and physics
    layer: a run of another model kind (``neural``, ``process``) is an error that names its kind."""
    if not isinstance(run.model, HybridModel):
        kind = getattr(getattr(run, "config", None), "model", None)
        kind = getattr(kind, "kind", type(run.model).__name__)
        where = f" ({run.directory})" if getattr(run, "directory", None) else ""
        raise ValueError(f"{what} needs a hybrid run ([model] kind = \"hybrid\"); this run{where} is of kind {kind!r}")


def _as_runs(runs) -> tuple:
    runs = [runs] if isinstance(runs, (Run, str, Path)) else list(runs)
    out = tuple(r if isinstance(r, Run) else load_run(r) for r in runs)
    if not out:
        raise ValueError("map_run needs at least one run")
    for r in out:
        require_hybrid(r, "mapping")
    kinds = {type(r.model.process).__name__ for r in out}
    if len(kinds) > 1:
        raise ValueError(f"ensemble members must share the process model; got {sorted(kinds)}")
    return out


def map_run(
    runs,
    forcing: xr.Dataset,
    *,
    assumptions: DriverAssumptions = DriverAssumptions(),
    path: str = "model",
    chunks: Mapping[str, int] | None = None,
    scheduler=None,
    batch_size: int = 64,
    compute: bool = True,
) -> xr.Dataset:
    """Map one run, or an ensemble (several runs: members), over ``forcing`` (canonical drivers on
    (lat, lon, time) at sub-daily, daily or monthly resolution, lazy or in memory; `open_forcing`).

    Returns a CF dataset: monthly means (time, lat, lon) of daily ``gpp``, ``reco``, ``nee`` (ensemble mean;
    ``*_sd`` the members' standard deviation when there are ≥ 2), ``theta_<name>`` (lat, lon) for every
    learned parameter (and ``*_sd``), ``mapped`` (1 where the cell was mapped), ``cell_area`` (m2), with
    the config and data hashes and every assumption in the attributes. ``path``: ``"model"`` or ``"fast"``
    (see the module docstring; ``"auto"`` picks fast when `fast_path_reason` is None). ``chunks``: cells
    per block along lat/lon (default: the forcing's chunks, else 32 × 32). ``scheduler``: None (threads),
    ``"sync"``, a `distributed.Client`, a `LocalCluster`, or a scheduler address. ``compute=False`` returns
    the lazy dataset.
    """
    import dask.array as da

    members = _as_runs(runs)
    if path == "auto":
        path = "fast" if all(fast_path_reason(r) is None for r in members) else "model"
    if path not in ("model", "fast"):
        raise ValueError(f"path must be 'model', 'fast' or 'auto', got {path!r}")
    if path == "fast":
        for r in members:
            reason = fast_path_reason(r)
            if reason:
                raise ValueError(f"path='fast' cannot map run {r.config.name!r}: {reason}; use path='model'")
    present = tuple(v for v in DRIVERS if v in forcing)
    if "tair" not in present and not {"tmin", "tmax"} <= set(present):
        raise KeyError(f"forcing needs tair (or tmin and tmax); it has {sorted(map(str, forcing.data_vars))}")
    for v in present:
        if set(forcing[v].dims) != {"lat", "lon", "time"}:
            raise ValueError(f"forcing variable {v!r} has dims {forcing[v].dims}; need (lat, lon, time)")

    check_gridded_drivers(forcing, present)  # ranges and ±inf with unit-mistake hints; NaN cells are not mapped
    cal = _Calendar.of(forcing.time.values)
    params = tuple(dict.fromkeys(p for r in members for p in _learned_names(r)))
    plan = _Plan(members, present, cal.native, cal.months, assumptions, path, batch_size, params)

    stacked = xr.concat([forcing[v].transpose("lat", "lon", "time").astype(np.float32) for v in present],
                        dim="var").transpose("lat", "lon", "var", "time").data
    if chunks is None and isinstance(stacked, da.Array):
        cy, cx = stacked.chunks[0][0], stacked.chunks[1][0]
    else:
        cy, cx = (dict(chunks or {}).get("lat", 32), dict(chunks or {}).get("lon", 32))
    stacked = da.asarray(stacked).rechunk((cy, cx, -1, -1))
    ny, nx = stacked.shape[:2]
    lat = np.asarray(forcing.lat.values, np.float64)
    lon = np.asarray(forcing.lon.values, np.float64)
    lat4 = da.from_array(np.broadcast_to(lat[:, None, None, None], (ny, nx, 1, 1)).copy(), chunks=(cy, cx, 1, 1))
    lon4 = da.from_array(np.broadcast_to(lon[None, :, None, None], (ny, nx, 1, 1)).copy(), chunks=(cy, cx, 1, 1))
    out = da.map_blocks(_map_block, stacked, lat4, lon4, plan=plan, dtype=np.float32, drop_axis=3,
                        chunks=(stacked.chunks[0], stacked.chunks[1], (plan.n_out,)))
    if compute:
        out = _compute(out, scheduler)
    _, _, _, notes = daily_drivers({v: np.full((1, cal.native.size), 1.0) for v in present}, cal.native,
                                   np.array([45.0]), assumptions)
    return _to_dataset(out, plan, forcing, notes, cal)


_LONG = {"gpp": "gross primary production", "reco": "ecosystem respiration",
         "nee": "net ecosystem exchange (positive: CO2 source to the atmosphere)"}


def cell_area(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Area (m2) of each cell of a regular lat/lon grid: R² Δλ (sin φ₂ − sin φ₁) on a sphere of radius
    `EARTH_RADIUS`; cell edges half-way between centres."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    dlat = np.abs(np.median(np.diff(lat))) if lat.size > 1 else 0.5
    dlon = np.abs(np.median(np.diff(lon))) if lon.size > 1 else 0.5
    lo = np.clip(np.radians(lat - dlat / 2), -np.pi / 2, np.pi / 2)
    hi = np.clip(np.radians(lat + dlat / 2), -np.pi / 2, np.pi / 2)
    band = EARTH_RADIUS**2 * np.radians(dlon) * (np.sin(hi) - np.sin(lo))
    return np.broadcast_to(band[:, None], (lat.size, lon.size)).copy()


def _to_dataset(out, plan: _Plan, forcing: xr.Dataset, notes: dict, cal: _Calendar) -> xr.Dataset:
    import dask.array as da


    ny, nx = out.shape[:2]
    lay = plan.layout()
    nm, nmo, npar = plan.n_members, plan.months.size, len(plan.params)
    lib = da if isinstance(out, da.Array) else np
    fl = out[:, :, lay["fluxes"]].reshape(ny, nx, nm, nmo, 3)
    th = out[:, :, lay["theta"]].reshape(ny, nx, nm, npar)
    times = plan.months.astype("datetime64[ns]")
    ends = (plan.months + 1).astype("datetime64[ns]")
    data = {}
    for j, name in enumerate(FLUXES):
        v = lib.moveaxis(fl[..., j], (2, 3), (0, 1))  # member, time, lat, lon
        attrs = {"units": "g m-2 d-1", "long_name": f"{_LONG[name]}, monthly mean of daily values",
                 "comment": "grams of carbon (gC m-2 d-1)", "cell_methods": "time: mean"}
        if name == "gpp":
            attrs["standard_name"] = "gross_primary_productivity_of_biomass_expressed_as_carbon"
        data[name] = (("time", "lat", "lon"), v.mean(axis=0), attrs)
        if nm > 1:
            data[f"{name}_sd"] = (("time", "lat", "lon"), v.std(axis=0, ddof=1),
                                  {"units": "g m-2 d-1", "long_name": f"{_LONG[name]}: standard deviation over "
                                   f"the {nm} ensemble members", "cell_methods": "time: mean"})
    specs = {s.name: s for s in plan.runs[0].model.process.parameter_specs}
    for k, p in enumerate(plan.params):
        v = lib.moveaxis(th[..., k], 2, 0)
        spec = specs.get(p)
        attrs = {"units": spec.units if spec else "", "long_name": f"learned parameter {p}"
                 + (f": {spec.description}" if spec and spec.description else ""),
                 "comment": "mean over the cell's windows (years)"}
        data[f"theta_{p}"] = (("lat", "lon"), v.mean(axis=0), attrs)
        if nm > 1:
            data[f"theta_{p}_sd"] = (("lat", "lon"), v.std(axis=0, ddof=1),
                                     {"units": attrs["units"], "long_name": f"{p}: ensemble standard deviation"})
    data["mapped"] = (("lat", "lon"), out[:, :, lay["mapped"].start].astype(np.int8),
                      {"long_name": "1 where the cell was mapped (drivers present), else 0", "units": "1",
                       "flag_values": np.array([0, 1], np.int8), "flag_meanings": "not_mapped mapped"})
    data["static_max_abs_z"] = (("lat", "lon"), out[:, :, lay["z_static"].start],
                                {"units": "1", "long_name": "largest |z-score| of the cell's static attributes "
                                 "against the training sites (> 3: the run extrapolates beyond its training climate)"})
    lat, lon = forcing.lat.values, forcing.lon.values
    data["cell_area"] = (("lat", "lon"), cell_area(lat, lon).astype(np.float32),
                         {"units": "m2", "standard_name": "cell_area", "long_name": "area of the grid cell"})
    data["time_bnds"] = (("time", "nv"), np.stack([times, ends], axis=1))
    ds = xr.Dataset(data, coords={
        "time": ("time", times, {"standard_name": "time", "long_name": "first day of the month", "bounds": "time_bnds",
                                 "axis": "T"}),
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
    })
    for name in FLUXES:
        ds[name].attrs["cell_measures"] = "area: cell_area"
    padded = bool((~cal.covered).any())
    run0 = plan.runs[0]
    ds.attrs.update(
        Conventions="CF-1.8",
        title=f"kgml maps: {run0.config.name}" + (f" (ensemble of {nm})" if nm > 1 else ""),
        institution="kgml",
        source=f"kgml {__version__} HybridModel ({type(run0.model.process).__name__}), path={plan.path}",
        history=f"{np.datetime64('now')}Z kgml.spatial.mapping.map_run",
        references="kgml DESIGN.md; forcing as in forcing_files",
        forcing_files=str(forcing.attrs.get("source", "in-memory dataset")),
        forcing_sha256=str(forcing.attrs.get("forcing_sha256", "")) or f"dask-token:{_token(forcing)}",
        forcing_resolution=cal.resolution,
        config_sha256=" ".join(config_hash(r.config) for r in plan.runs),
        config_json=json.dumps(config_to_dict(run0.config), sort_keys=True),
        run_directories=" ".join(str(r.directory) if r.directory else "(in memory)" for r in plan.runs),
        ensemble_members=nm,
        drivers_from_forcing=" ".join(plan.drivers),
        driver_sources=json.dumps(notes, sort_keys=True, ensure_ascii=False),
        assumptions=json.dumps(dataclasses.asdict(plan.assumptions), sort_keys=True),
        short_record_padding=(f"the record covers {int(cal.covered.sum())} of the {cal.days.size} days of the mapped "
                              "year(s); the other days are padded (driver_sources) and outputs are written only for "
                              "the covered months") if padded else "none (the record covers whole years)",
        static_attributes=json.dumps(_static_sources(plan.runs)),
        region_for_grid_cells="unknown (index -1) for every cell" if run0.config.data.region else "none",
    )
    return ds


def _static_sources(runs) -> dict[str, str]:
    out = {}
    for r in runs:
        for s in r.config.data.static:
            out[s] = ("from the mapped year's forcing (as kgml.synthetic)" if s in ("mat", "map")
                      else "absent from a grid: the training mean (normalised 0)")
    return out


def _token(ds: xr.Dataset) -> str:
    from dask.base import tokenize

    return tokenize(ds)


def write_map(ds: xr.Dataset, path) -> Path:
    """Write a `map_run` result as CF netCDF (compressed) atomically (CF units, Conventions, history:
    `kgml.io.cf_encode`)."""
    path = Path(path)
    ds = cf_encode(ds)
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind == "f"}
    for v in ("time", "time_bnds"):
        if v in ds.variables:
            enc[v] = {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", encoding=enc)
    return path


# ---------------------------------------------------------------------------------------------------------
# Grid cells as a site dataset (for attribution and scenario tables)
# ---------------------------------------------------------------------------------------------------------


def grid_sites(forcing: xr.Dataset, config, *, assumptions: DriverAssumptions = DriverAssumptions(),
               max_cells: int | None = None, seed: int = 0) -> tuple[xr.Dataset, np.ndarray, dict]:
    """The mapped cells of ``forcing`` (eagerly; at most ``max_cells``, a seeded sample) as a Contract-A
    (site, time) dataset with the drivers of `daily_drivers`. Returns (dataset, (lat index, lon index) of each
    site (2, n), driver notes)."""
    present = [v for v in DRIVERS if v in forcing]
    check_gridded_drivers(forcing, present)
    f = forcing[present].transpose("lat", "lon", "time").load()
    ny, nx, nt = f.sizes["lat"], f.sizes["lon"], f.sizes["time"]
    vals = {v: f[v].values.reshape(ny * nx, nt) for v in present}
    anyd = np.flatnonzero(np.isfinite(np.stack(list(vals.values()))).any(axis=(0, 2)))
    if max_cells is not None and anyd.size > max_cells:
        anyd = np.sort(np.random.default_rng(seed).choice(anyd, max_cells, replace=False))
    lat = np.repeat(f.lat.values, nx)[anyd]
    lon = np.tile(f.lon.values, ny)[anyd]
    drivers, days, mapped, notes = daily_drivers({k: v[anyd] for k, v in vals.items()}, f.time.values, lat, assumptions)
    keep = np.flatnonzero(mapped)
    ds = _site_dataset({k: v[keep] for k, v in drivers.items()}, days, lat[keep], lon[keep], config)
    cell = np.stack(np.unravel_index(anyd[keep], (ny, nx)))
    return ds, cell, notes


# ---------------------------------------------------------------------------------------------------------
# A small demonstration run to map with
# ---------------------------------------------------------------------------------------------------------


def demo_run_config(seed: int = 0, steps: int = 40, sites_per_block: int = 3):
    """A small synthetic grassland run (natural vegetation: LUE GPP, Q10 heterotrophic respiration) whose
    learned parameters (``q10_rh``, ``rref_rh``, ``lue_max``) depend on location and the mean annual climate
    (``mat``, ``map``, computable on any grid) — a demonstration model for maps, not a calibrated one."""
    return ExperimentConfig(
        name=f"map-demo-{seed}", seed=seed,
        data=DataConfig(corpus=CorpusConfig(vegetation=("grassland",), sites_per_block=sites_per_block, years=1,
                                            soil_respiration="q10", covariate_params=(), seed=seed),
                        vegetation="grassland", features=("tair", "sw_in", "vpd", "precip"), static=("mat", "map"),
                        daily_targets=("nee", "gpp", "reco"), yield_target=False, val_fraction=0.0,
                        test_fraction=0.0),
        model=ModelConfig(hidden=8, location_dim=8, embed_dim=8, head_hidden=8, use_summary=False,
                          learned=("q10_rh", "rref_rh", "lue_max"), soil_respiration="q10"),
        train=TrainConfig(steps=steps, batch_size=4, eval_every=max(steps, 1), warmup_steps=min(5, steps),
                          learning_rate=1e-2, seed=seed),
    )


def train_demo_run(directory=None, *, seed: int = 0, steps: int = 40, sites_per_block: int = 3, progress: bool = False):
    """Train `demo_run_config` on its synthetic corpus (seconds) into ``directory`` (a `kgml.experiment.Run`)."""
    cfg = demo_run_config(seed, steps, sites_per_block)
    ds = make_corpus(corpus_spec(cfg.data.corpus))
    return train_run(cfg, ds, directory, progress=progress, description=cfg.name)


