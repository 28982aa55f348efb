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
import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
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
from kgml.data import gridded as G
from kgml.data.drivers import check_gridded_drivers
from kgml.data.formats import is_netcdf
from kgml.data.gridded import _resolution as res
from kgml.experiment import (
    Run,
    config_hash,
    corpus_spec,
    load_run,
    predict_dataset,
    train_run,
    windows,
)
from kgml.io import atomic_path, cf_encode, pyplot, write_png_atomic
from kgml.models.hybrid import HybridModel
from kgml.progress import dask_progress
from kgml.synthetic import make_corpus
from kgml.variables import convert_units, get_variable
from process_models import constants as C
from process_models.constants import HPA_PER_KPA
from process_models.forcing import Met, saturation_vapour_pressure
from process_models.radiation import extraterrestrial_radiation
from process_models.simulate import _run, simulate_sites

__all__ = [
    "DRIVERS",
    "DriverAssumptions",
    "budget_table",
    "cell_area",
    "daily_drivers",
    "demo_run_config",
    "fast_path_reason",
    "location_parameters",
    "monthly_fluxes_fast",
    "grid_sites",
    "map_run",
    "open_forcing",
    "plot_maps",
    "train_demo_run",
    "write_map",
]

#: Drivers the mapping reads from a grid (canonical names, `kgml.variables` units); the rest are assumed.
DRIVERS = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2")
#: Fluxes written to maps (gC m-2 d-1, monthly means of daily values).
FLUXES = ("gpp", "reco", "nee")
DAYS_PER_YEAR = 365
#: Mean Earth radius R1 of the GRS 80 ellipsoid (m); Moritz (2000) J. Geodesy 74:128-133.
EARTH_RADIUS = 6_371_008.8
#: Grams per teragram, for budget totals in TgC.
G_PER_TG = 1.0e12
_MJ_PER_DAY_TO_W = 1.0e6 / 86_400.0  # MJ m-2 d-1 → W m-2 (24-h mean)


# ---------------------------------------------------------------------------------------------------------
# Assumptions for drivers a grid lacks, and the padding of short records
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverAssumptions:
    """What stands in for drivers a grid lacks and for the days of a mapped year outside the record.

    ``relative_sunshine`` n/N with the FAO-56 Angström coefficients ``angstrom_a``/``angstrom_b`` (Allen et
    al. 1998, eq. 35; 0.25 and 0.50 are its defaults where no calibration exists) give ``sw_in`` = (a + b n/N)
    R_a; ``relative_humidity`` gives ``vpd`` = e°(tair)(1 − RH) (FAO-56 eq. 11); ``diurnal_range`` (°C)
    gives ``tmin``/``tmax`` = ``tair`` ∓ range/2; ``precip`` (mm d-1) and ``co2`` (ppm) are constants.
    These are assumptions of a map, not knowledge: each one used is listed in the output's attributes.
    ``min_coverage``: share of a record's days on which every driver must be finite for a cell to be mapped.
    ``harmonic_min_months``: distinct months a record needs for the annual harmonic fill of ``tair``.
    """

    relative_sunshine: float = 0.5
    angstrom_a: float = 0.25
    angstrom_b: float = 0.50
    relative_humidity: float = 0.7
    diurnal_range: float = 10.0
    precip: float = 2.0
    co2: float = 400.0
    min_coverage: float = 0.8
    harmonic_min_months: int = 3
    #: day of year of the annual temperature maximum, northern hemisphere (southern: + 182.5)
    warmest_doy: float = 200.0

    def describe(self, name: str) -> str:
        return {
            "sw_in": f"FAO-56 Angström climatology (a={self.angstrom_a}, b={self.angstrom_b}, "
                     f"n/N={self.relative_sunshine}) × extraterrestrial radiation of the cell's latitude and day",
            "vpd": f"from tair at relative humidity {self.relative_humidity:g} (FAO-56 eq. 11)",
            "tmin": f"tair − {self.diurnal_range / 2:g} °C (assumed diurnal range {self.diurnal_range:g} °C)",
            "tmax": f"tair + {self.diurnal_range / 2:g} °C (assumed diurnal range {self.diurnal_range:g} °C)",
            "precip": f"constant {self.precip:g} mm d-1",
            "tsoil": "tsoil = tair (no damping)",
            "co2": f"constant {self.co2:g} ppm",
        }[name]


def _angstrom_sw(lat: np.ndarray, doy: np.ndarray, a: DriverAssumptions) -> np.ndarray:
    ra = np.asarray(extraterrestrial_radiation(np.asarray(lat, np.float32)[:, None],
                                               np.asarray(doy, np.float32)[None, :]))
    return ((a.angstrom_a + a.angstrom_b * a.relative_sunshine) * ra * _MJ_PER_DAY_TO_W).astype(np.float32)


def _svp_hpa(t: np.ndarray) -> np.ndarray:
    return HPA_PER_KPA * np.asarray(saturation_vapour_pressure(np.asarray(t, np.float32)), np.float64)


# ---------------------------------------------------------------------------------------------------------
# Native resolution → whole years of daily drivers (numpy; one chunk of cells at a time)
# ---------------------------------------------------------------------------------------------------------


def _resolution(times: np.ndarray) -> str:
    r = res(np.asarray(times))
    if r == "unknown" and times.size == 1:
        return "monthly"  # a single time step: only a monthly product is plausible
    if r not in ("daily", "monthly") and not r.endswith(("min", "h", "hourly")) and r != "hourly":
        raise ValueError(f"forcing time step {r!r}: need sub-daily, daily or monthly fields")
    return r


@dataclass(frozen=True)
class _Calendar:
    """The native time axis and the daily calendar of the whole years it touches."""

    native: np.ndarray  # datetime64[ns] (n_native,)
    resolution: str
    days: np.ndarray  # datetime64[D] every day of the covered years, Feb 29 included
    covered: np.ndarray  # bool (n_days,) day inside the record
    day_to_native: np.ndarray  # int (n_days,) index of the native step (monthly/daily), -1 outside
    months: np.ndarray  # datetime64[M] months with coverage (the output time axis)

    @classmethod
    def of(cls, times) -> _Calendar:
        native = np.asarray(times).astype("datetime64[ns]")
        resolution = _resolution(native)
        years = np.unique(native.astype("datetime64[Y]"))
        days = np.arange(years[0].astype("datetime64[D]"), (years[-1] + 1).astype("datetime64[D]"),
                         dtype="datetime64[D]")
        idx = np.full(days.size, -1, np.int64)
        if resolution == "monthly":
            month_of_day = days.astype("datetime64[M]")
            native_m = native.astype("datetime64[M]")
            pos = np.searchsorted(native_m, month_of_day)
            ok = (pos < native_m.size) & (native_m[np.minimum(pos, native_m.size - 1)] == month_of_day)
            idx[ok] = pos[ok]
        else:
            native_d = np.unique(native.astype("datetime64[D]"))
            pos = np.searchsorted(native_d, days)
            ok = (pos < native_d.size) & (native_d[np.minimum(pos, native_d.size - 1)] == days)
            idx[ok] = pos[ok]
        covered = idx >= 0
        months = np.unique(days[covered].astype("datetime64[M]"))
        return cls(native, resolution, days, covered, idx, months)


def _to_days(values: np.ndarray, cal: _Calendar, how: str = "mean", min_coverage: float = 0.8) -> np.ndarray:
    """(cells, n_native) → (cells, n_record_days) at daily resolution (record days only)."""
    if cal.resolution in ("daily", "monthly"):
        return values
    day = cal.native.astype("datetime64[D]")
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    counts = np.diff(np.r_[starts, day.size])
    step = np.median(np.diff(cal.native)) if cal.native.size > 1 else np.timedelta64(1, "h")
    expected = np.timedelta64(1, "D") / step
    finite = np.isfinite(values)
    n_ok = np.add.reduceat(finite, starts, axis=1)
    if how == "mean":
        out = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1) / np.maximum(n_ok, 1)
    elif how == "min":
        out = np.fmin.reduceat(values, starts, axis=1)
    else:
        out = np.fmax.reduceat(values, starts, axis=1)
    del counts
    return np.where(n_ok >= min_coverage * expected, out, np.nan)


def _interpolate_gaps(v: np.ndarray) -> np.ndarray:
    """Linear interpolation in time of NaN within each row (ends: nearest value)."""
    out = v.copy()
    t = np.arange(v.shape[1])
    for i in np.flatnonzero(~np.isfinite(v).all(axis=1)):
        ok = np.isfinite(v[i])
        if ok.any():
            out[i] = np.interp(t, t[ok], v[i, ok])
    return out


def _harmonic_fill(tair_rec: np.ndarray, doy_rec: np.ndarray, doy_all: np.ndarray, lat: np.ndarray,
                   a: DriverAssumptions, months_rec: int) -> tuple[np.ndarray, str]:
    """T(doy) = m + A cos(2π (doy − d_max)/365) fitted per cell to the record (A ≥ 0); persistence of the
    record's mean when the record has fewer than ``harmonic_min_months`` months."""
    mean = np.nanmean(tair_rec, axis=1)
    if months_rec < a.harmonic_min_months:
        return np.broadcast_to(mean[:, None], (tair_rec.shape[0], doy_all.size)).copy(), "persistence of the record mean"
    peak = np.where(lat >= 0, a.warmest_doy, a.warmest_doy + DAYS_PER_YEAR / 2)[:, None]
    c_rec = np.cos(2 * np.pi * (doy_rec[None, :] - peak) / DAYS_PER_YEAR)
    ok = np.isfinite(tair_rec)
    n = ok.sum(axis=1)
    sc = np.where(ok, c_rec, 0).sum(axis=1)
    scc = np.where(ok, c_rec**2, 0).sum(axis=1)
    sy = np.where(ok, tair_rec, 0).sum(axis=1)
    scy = np.where(ok, c_rec * tair_rec, 0).sum(axis=1)
    det = n * scc - sc**2
    amp = np.where(np.abs(det) > 1e-9, (n * scy - sc * sy) / np.where(np.abs(det) > 1e-9, det, 1.0), 0.0)
    amp = np.maximum(amp, 0.0)
    m = (sy - amp * sc) / np.maximum(n, 1)
    c_all = np.cos(2 * np.pi * (doy_all[None, :] - peak) / DAYS_PER_YEAR)
    return m[:, None] + amp[:, None] * c_all, "annual harmonic fitted to the record"


def daily_drivers(values: Mapping[str, np.ndarray], times, lat: np.ndarray,
                  assumptions: DriverAssumptions = DriverAssumptions()) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Native-resolution drivers of a set of cells → every day of the whole years they touch.

    ``values``: canonical name → (cells, n_native) array; ``times``: the native time axis; ``lat`` (cells,).
    Returns (drivers name → (cells, n_days) float32 for every name in `DRIVERS`, days (datetime64[D]),
    mapped (cells,) bool, notes name → how the driver was obtained). See the module docstring for the rules.
    """
    a = assumptions
    cal = _Calendar.of(times)
    lat = np.asarray(lat, np.float64)
    n_cells = lat.size
    doy_all = (cal.days - cal.days.astype("datetime64[Y]")).astype(int) + 1
    rec_days = np.flatnonzero(cal.covered)
    doy_rec = doy_all[rec_days]
    months_rec = cal.months.size
    native_idx = cal.day_to_native[rec_days]
    if cal.resolution not in ("daily", "monthly"):  # aggregated days are numbered in order
        native_idx = np.arange(rec_days.size)

    def record(name, how="mean"):
        v = np.asarray(values[name], np.float64).reshape(n_cells, -1)
        return _to_days(v, cal, how, a.min_coverage)[:, native_idx]

    rec = {k: record(k) for k in DRIVERS if k in values}
    if "tair" in values and cal.resolution not in ("daily", "monthly"):
        for k, how in (("tmin", "min"), ("tmax", "max")):
            if k not in rec:
                rec[k] = record("tair", how)
    if "tair" not in rec:
        if "tmin" in rec and "tmax" in rec:
            rec["tair"] = (rec["tmin"] + rec["tmax"]) / 2
        else:
            raise KeyError(f"mapping needs tair (or tmin and tmax); the forcing has {sorted(values)}")
    notes = {k: "from the forcing" for k in rec}
    if "tair" in values and cal.resolution not in ("daily", "monthly") and "tmin" not in values:
        notes["tmin"] = notes["tmax"] = "daily minimum / maximum of the sub-daily tair"
    if cal.resolution == "monthly":
        notes = {k: f"{v}; each day carries its month's mean" for k, v in notes.items()}

    ok_share = np.stack([np.isfinite(v).mean(axis=1) for v in rec.values()]).min(axis=0)
    mapped = ok_share >= a.min_coverage
    rec = {k: _interpolate_gaps(v) for k, v in rec.items()}

    n_days = cal.days.size
    padded = not cal.covered.all()
    out = {}

    def place(record_values, fill):
        full = np.array(fill, np.float64, copy=True) if np.ndim(fill) == 2 else np.full((n_cells, n_days), fill, np.float64)
        full[:, rec_days] = record_values
        return full

    tair_fill, how = (None, "") if not padded else _harmonic_fill(rec["tair"], doy_rec, doy_all, lat, a, months_rec)
    out["tair"] = place(rec["tair"], tair_fill) if padded else rec["tair"]
    if padded:
        notes["tair"] += f"; days outside the record: {how}"
    for k, sign in (("tmin", -1), ("tmax", 1)):
        if k in rec:
            offset = np.nanmean(rec[k] - rec["tair"], axis=1)[:, None]
            out[k] = place(rec[k], out["tair"] + offset) if padded else rec[k]
            if padded:
                notes[k] += "; days outside the record: padded tair + the record's mean offset"
        else:
            out[k] = out["tair"] + sign * a.diurnal_range / 2
            notes[k] = a.describe(k)
    sw_clim = _angstrom_sw(lat, doy_all, a).astype(np.float64)
    if "sw_in" in rec:
        out["sw_in"] = place(rec["sw_in"], sw_clim) if padded else rec["sw_in"]
        if padded:
            notes["sw_in"] += "; days outside the record: " + a.describe("sw_in")
    else:
        out["sw_in"], notes["sw_in"] = sw_clim, a.describe("sw_in")
    vpd_clim = _svp_hpa(out["tair"]) * (1.0 - a.relative_humidity)
    if "vpd" in rec:
        out["vpd"] = place(rec["vpd"], vpd_clim) if padded else rec["vpd"]
        if padded:
            notes["vpd"] += "; days outside the record: " + a.describe("vpd")
    else:
        out["vpd"], notes["vpd"] = vpd_clim, a.describe("vpd")
    if "precip" in rec:
        out["precip"] = place(rec["precip"], np.nanmean(rec["precip"], axis=1)[:, None] * np.ones(n_days)) if padded \
            else rec["precip"]
        if padded:
            notes["precip"] += "; days outside the record: the record's mean rate"
    else:
        out["precip"], notes["precip"] = np.full((n_cells, n_days), a.precip), a.describe("precip")
    if "tsoil" in rec:
        out["tsoil"] = place(rec["tsoil"], out["tair"]) if padded else rec["tsoil"]
    else:
        out["tsoil"], notes["tsoil"] = out["tair"], a.describe("tsoil")
    if "co2" in rec:
        out["co2"] = place(rec["co2"], np.nanmean(rec["co2"], axis=1)[:, None] * np.ones(n_days)) if padded else rec["co2"]
    else:
        out["co2"], notes["co2"] = np.full((n_cells, n_days), a.co2), a.describe("co2")
    out = {k: np.where(mapped[:, None], v, np.nan).astype(np.float32) for k, v in out.items()}
    return out, cal.days, mapped, notes


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


def fast_path_reason(run) -> str | None:
    """None when the run's parameters depend on location and static attributes only (the fast path gives
    the model path's numbers); otherwise why not."""
    m = run.model
    if m.use_summary:
        return "the parameters read the encoder's window summary (model.use_summary = true)"
    if m.residual_head is not None:
        return "the run has a residual head (it reads the encoder's daily features)"
    if m.time_varying:
        return "the run has time-varying parameters"
    if m.site_attention is not None:
        return "the run uses site attention"
    if m.location is None:
        return "the run has no location encoder"
    return None


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
    for w in range(n):
        sl = slice(data.start[w], data.start[w] + win)
        fl[0, data.site[w], sl], fl[1, data.site[w], sl] = gpp_all[w], reco_all[w]
    fl[2] = fl[1] - fl[0]
    theta = {k: np.array([th[k][data.site == s].mean() for s in range(n_s)], np.float32) for k in names}
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
# The fast path for monthly forcing at scale: parameters once per cell, physics per cell-year from monthly
# means (each day carries its month's mean; no daily array is ever built)
# ---------------------------------------------------------------------------------------------------------

#: Days of each month in the model's 365-day year (windows drop 29 February).
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_MET_ORDER = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2")


def location_parameters(run, lat, lon, static: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Learned parameters of cells from location and static attributes alone (runs with
    `fast_path_reason` None): ``static`` maps the run's static names to raw values per cell; names it lacks
    take the training mean, as on grids. The region is unknown (−1) when the run has a region coordinate."""
    reason = fast_path_reason(run)
    if reason:
        raise ValueError(f"parameters of run {run.config.name!r} are not a function of location: {reason}")
    lat = np.asarray(lat, np.float32)
    norm = run.prepared.normaliser
    cols = []
    for name in run.config.data.static:
        if static is not None and name in static:
            v = np.asarray(static[name], np.float64)
            cols.append(norm.transform_array(name, v) if name in norm.mean else v)
        else:
            cols.append(np.zeros(lat.size))
    st = np.stack(cols, -1).astype(np.float32) if cols else np.zeros((lat.size, 0), np.float32)
    reg = np.full(lat.size, -1 if run.config.data.region else 0, np.int32)
    theta = _theta_jit()(run.model, jnp.asarray(lat), jnp.asarray(np.asarray(lon, np.float32)), jnp.asarray(st),
                         jnp.asarray(reg))
    return {k: np.asarray(v) for k, v in theta.items()}


def _theta_of(model, lat, lon, static, region):
    def one(la, lo, st, rg):
        emb = model.embed(model._locate(la, lo, st, rg))
        return model.parameters(jnp.zeros((1, 1)), emb)[0]

    return jax.vmap(one)(lat, lon, static, region)


def _year_fluxes(process, theta, monthly, lat, sw_from_climatology, vpd_from_rh, angstrom, rh):
    """Monthly means (cell, 12, [gpp, reco]) of one 365-day year per cell from monthly drivers laid out
    (12, len(_MET_ORDER), cell); each day reads its month's values. The year's daily drivers are built for all
    (day, cell) at once and run through `process_models.simulate.simulate_sites` in its time-major layout: every
    state-independent term (sun geometry, net radiation, PET, light and temperature responses) in one vectorised
    pass before the time loop, the loop over the sequential part only (issue 18)."""

    n = lat.shape[0]
    month_of_day = jnp.asarray(np.repeat(np.arange(12), DAYS_IN_MONTH), jnp.int32)
    doy = jnp.broadcast_to(jnp.arange(1, DAYS_PER_YEAR + 1, dtype=jnp.float32)[:, None], (DAYS_PER_YEAR, n))
    lat_d = jnp.broadcast_to(lat[None, :], (DAYS_PER_YEAR, n))
    daily = monthly[month_of_day]  # (day, field, cell): each day its month's values
    v = [daily[:, i] for i in range(len(_MET_ORDER))]
    sw = angstrom * extraterrestrial_radiation(lat_d, doy) * _MJ_PER_DAY_TO_W if sw_from_climatology else v[3]
    vpd = HPA_PER_KPA * saturation_vapour_pressure(v[0]) * (1.0 - rh) if vpd_from_rh else v[4]
    met = Met(tair=v[0], tmin=v[1], tmax=v[2], sw_in=sw.astype(jnp.float32), vpd=vpd.astype(jnp.float32),
              precip=v[5], tsoil=v[6], co2=v[7], patm=jnp.full((DAYS_PER_YEAR, n), C.P_STANDARD, jnp.float32),
              doy=doy, lat=lat_d)
    out = simulate_sites(process, theta, met, time_major=True).outputs
    flux = jnp.stack([jnp.broadcast_to(out.gpp, (DAYS_PER_YEAR, n)), jnp.broadcast_to(out.reco, (DAYS_PER_YEAR, n))], 1)
    weights = jax.nn.one_hot(month_of_day, 12, dtype=jnp.float32) / jnp.asarray(DAYS_IN_MONTH, jnp.float32)
    return jnp.einsum("dkc,dm->cmk", flux, weights)


_JITS: dict = {}


def _theta_jit():
    if "theta" not in _JITS:
        _JITS["theta"] = eqx.filter_jit(_theta_of)
    return _JITS["theta"]


def _year_jit():
    if "year" not in _JITS:
        _JITS["year"] = eqx.filter_jit(_year_fluxes)
    return _JITS["year"]


def monthly_fluxes_fast(run, monthly: Mapping[str, np.ndarray], lat, lon, *,
                        assumptions: DriverAssumptions = DriverAssumptions(), batch: int = 8192,
                        theta: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """GPP, Reco, NEE monthly means (cell, month, 3) for monthly drivers (name → (cell, 12·years), whole
    years from January) — the fast path at scale. Missing drivers as in `daily_drivers`; ``mat``/``map`` from
    the drivers; the parameters (``theta`` when given, else `location_parameters`) once per cell; every
    cell-year then runs from the model's initial state (as the 365-day windows of the model path), in
    batches of ``batch`` cell-years (one compilation)."""
    a = assumptions
    lat = np.asarray(lat, np.float32)
    n = lat.size
    if "tair" not in monthly:
        raise KeyError(f"monthly forcing needs tair; has {sorted(monthly)}")
    tair = np.asarray(monthly["tair"], np.float32).reshape(n, -1)
    n_months = tair.shape[1]
    if n_months % 12:
        raise ValueError(f"monthly forcing must cover whole years from January; got {n_months} months")
    years = n_months // 12
    fields = {"tair": tair}
    for k in _MET_ORDER[1:]:
        if k in monthly:
            fields[k] = np.asarray(monthly[k], np.float32).reshape(n, n_months)
    fields.setdefault("tmin", tair - np.float32(a.diurnal_range / 2))
    fields.setdefault("tmax", tair + np.float32(a.diurnal_range / 2))
    fields.setdefault("precip", np.full_like(tair, a.precip))
    fields.setdefault("tsoil", tair)
    fields.setdefault("co2", np.full_like(tair, a.co2))
    sw_clim, vpd_rh = "sw_in" not in fields, "vpd" not in fields
    fields.setdefault("sw_in", np.zeros_like(tair))
    fields.setdefault("vpd", np.zeros_like(tair))
    w = np.tile(DAYS_IN_MONTH, years).astype(np.float64)
    if theta is None:
        static = {"mat": (tair * w).sum(1) / w.sum(), "map": (fields["precip"] * w).sum(1) / w.sum() * DAYS_PER_YEAR}
        theta = location_parameters(run, lat, lon, static)
    # Parameters that do not vary between cells (fixed ones) stay scalars: fewer arrays streamed per day.
    theta = {k: (np.float32(np.asarray(v).reshape(-1)[0]) if np.all(np.asarray(v) == np.asarray(v).reshape(-1)[0])
                 else np.asarray(v, np.float32)) for k, v in theta.items()}
    stacked = np.stack([fields[k] for k in _MET_ORDER], -1).reshape(n * years, 12, len(_MET_ORDER))
    stacked = np.ascontiguousarray(stacked.transpose(1, 2, 0))  # (12, field, cell-year): time-major
    cell_of = np.repeat(np.arange(n), years)
    n_cy = n * years
    batch = min(batch, int(math.ceil(n_cy / 256) * 256))  # small inputs: a small padded batch
    out = np.empty((n_cy, 12, 2), np.float32)
    angstrom = np.float32(a.angstrom_a + a.angstrom_b * a.relative_sunshine)
    for i in range(0, n_cy, batch):
        idx = np.minimum(np.arange(i, i + batch), n_cy - 1)
        th = {k: jnp.asarray(v if np.ndim(v) == 0 else v[cell_of[idx]]) for k, v in theta.items()}
        res = _year_jit()(run.model.process, th, jnp.asarray(stacked[:, :, idx]), jnp.asarray(lat[cell_of[idx]]),
                          sw_clim, vpd_rh, angstrom, np.float32(a.relative_humidity))
        k = min(batch, n_cy - i)
        out[i:i + k] = np.asarray(res)[:k]
    out = out.reshape(n, n_months, 2)
    fl = np.concatenate([out, out[..., 1:2] - out[..., 0:1]], axis=-1)
    return fl, dict(theta)


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
# Budgets and figures
# ---------------------------------------------------------------------------------------------------------


def latitude_bands(lat: np.ndarray, lon: np.ndarray, width: float = 10.0) -> xr.DataArray:
    """Labels of ``width``-degree latitude bands on the grid (the default regions of a budget)."""
    lo = np.floor(np.asarray(lat) / width) * width
    labels = np.array([f"{a:+.0f}..{a + width:+.0f}N" for a in lo])
    return xr.DataArray(np.broadcast_to(labels[:, None], (len(lat), len(lon))), dims=("lat", "lon"),
                        coords={"lat": lat, "lon": lon})


def budget_table(mapped: xr.Dataset, groups: Mapping[str, xr.DataArray] | None = None):
    """Area-weighted budgets of a map: per group (``"domain"``: every mapped cell; ``"lat_band"``: 10°
    bands; ``"training_climate"``: cells whose static attributes lie within 3 training standard deviations
    or not; plus each given (lat, lon) label map, e.g. ``{"land_cover": lc}``) and label: mapped cells,
    area (km2), mean GPP/Reco/NEE over the mapped months (gC m-2 d-1, area-weighted) and totals over those
    months (TgC; flux × days of each month × area); where the map has calibrated bounds at `BUDGET_LEVEL`
    (``kgml map`` with a calibration record), ``<v>_total_tgc_lower_90`` / ``_upper_90``: the totals of the
    cell bounds (the full-correlation envelope, see `budget_markdown`). Returns a `pandas.DataFrame`."""
    groups = {"domain": None, "lat_band": latitude_bands(mapped.lat.values, mapped.lon.values), **dict(groups or {})}
    if "static_max_abs_z" in mapped:
        groups.setdefault("training_climate", xr.DataArray(np.where(
            mapped["static_max_abs_z"].values > 3, "extrapolated (z-score above 3)", "within 3 sd"), dims=("lat", "lon")))
    area = mapped["cell_area"].values.astype(np.float64)
    ok = mapped["mapped"].values.astype(bool)
    days = np.asarray(pd.DatetimeIndex(mapped.time.values).days_in_month, np.float64)
    fl = {v: mapped[v].values.astype(np.float64) for v in FLUXES}
    rows = []
    for group, labels in groups.items():
        lab = np.full(area.shape, "all", object) if labels is None else np.asarray(getattr(labels, "values", labels))
        if lab.shape != area.shape:
            raise ValueError(f"budget group {group!r}: labels shaped {lab.shape}, the grid is {area.shape}")
        for label in sorted({str(x) for x in lab[ok]}):
            sel = ok & (lab.astype(str) == label)
            a = area * sel
            row = {"group": group, "label": label, "cells": int(sel.sum()), "area_km2": float(a.sum() / 1e6)}
            for v in FLUXES:
                x = np.where(sel[None], fl[v], 0.0)
                w = np.where(np.isfinite(x), a[None], 0.0)
                x = np.nan_to_num(x)
                row[f"{v}_mean_gc_m2_d"] = float((x * w).sum() / max(w.sum(), 1e-30))
                row[f"{v}_total_tgc"] = float((x * w * days[:, None, None]).sum() / G_PER_TG)
                for side in ("lower", "upper"):
                    b = f"{v}_{side}_{BUDGET_LEVEL}"
                    if b in mapped:  # every cell-month at its bound together: the full-correlation envelope
                        xb = np.nan_to_num(np.where(sel[None], mapped[b].values.astype(np.float64), 0.0),
                                           posinf=np.inf, neginf=-np.inf)
                        row[f"{v}_total_tgc_{side}_{BUDGET_LEVEL}"] = float((xb * w * days[:, None, None]).sum()
                                                                            / G_PER_TG)
            rows.append(row)
    return pd.DataFrame(rows)


#: Level of the calibrated bounds carried to the budgets (`budget_table`), in percent.
BUDGET_LEVEL = 90


def budget_markdown(table, title: str = "") -> str:
    cols = ["group", "label", "cells", "area_km2"] + [f"{v}_{k}" for v in FLUXES for k in ("mean_gc_m2_d", "total_tgc")]
    bounds = [c for c in table.columns if "_total_tgc_" in str(c)]
    cols += bounds
    lines = ([f"## {title}", ""] if title else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    lines += ["", "Means: area-weighted over mapped cells and months (gC m-2 d-1); totals: over the mapped months "
              "(TgC). NEE > 0 is a source to the atmosphere."]
    if bounds:
        lines += ["", f"*_total_tgc_lower/upper_{BUDGET_LEVEL}: the totals of the calibrated {BUDGET_LEVEL} % cell bounds "
                  "(`kgml calibrate`, monthly means) — every cell-month at its bound together, i.e. errors fully "
                  "correlated over the region: exact if they are, wider than needed for Gaussian errors of any "
                  "correlation (the sd of a sum is at most the sum of the sds); the site calibration says nothing "
                  "of spatial correlation, so no narrower interval is claimed."]
    return "\n".join(lines) + "\n"


#: A field whose range is below this share of its magnitude is drawn as uniform, not stretched over the colours.
UNIFORM_RELATIVE_RANGE = 0.01


def colour_limits(values, *, diverging: bool) -> tuple[float | None, float | None, bool]:
    """(vmin, vmax, nearly_uniform) of a map's colour scale: symmetric about 0 for diverging fields; for
    the others the data range, unless it is below `UNIFORM_RELATIVE_RANGE` of the field's magnitude — then
    the median ± that share, so a parameter that varies by 0.03 % does not fill the whole colour map."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None, False
    if diverging:
        lim = float(np.max(np.abs(v))) or 1.0
        return -lim, lim, False
    lo, hi, mid = float(v.min()), float(v.max()), float(np.median(v))
    half = UNIFORM_RELATIVE_RANGE * abs(mid) / 2
    if hi - lo < 2 * half:
        return mid - half, mid + half, True
    return None, None, False


def plot_maps(ds: xr.Dataset, path, variables: Sequence[str] | None = None, *, title: str = "",
              cmap: Mapping[str, str] | None = None) -> Path | None:
    """PNG of the time-mean maps of ``variables`` (default: gpp, reco, nee, nee_sd if present, learned
    parameters)."""
    try:
        plt = pyplot()
    except ImportError:
        warnings.warn("matplotlib not installed (pip install 'kgml[plot]'): no figure written", stacklevel=2)
        return None

    if variables is None:
        variables = [v for v in (*FLUXES, "nee_sd") if v in ds] + [v for v in ds.data_vars
                                                                    if str(v).startswith("theta_") and not str(v).endswith("_sd")]
    variables = list(variables)
    n = len(variables)
    ncol = min(n, 3)
    nrow = int(math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), constrained_layout=True, squeeze=False)
    for ax, v in zip(axes.ravel(), variables, strict=False):
        da_ = ds[v].mean("time") if "time" in ds[v].dims else ds[v]
        vals = da_.values
        div = v.startswith("nee") and not v.endswith("_sd") or v.startswith("d_")
        kw = {"cmap": (cmap or {}).get(v, "RdBu_r" if div else "viridis")}
        vmin, vmax, uniform = colour_limits(vals, diverging=div)
        if vmin is not None:
            kw.update(vmin=vmin, vmax=vmax)
        im = ax.pcolormesh(ds.lon.values, ds.lat.values, vals, shading="nearest", **kw)
        fig.colorbar(im, ax=ax, shrink=0.85, label=str(ds[v].attrs.get("units", "")).replace("g m-2 d-1", "gC m-2 d-1"))
        ax.set(title=v + (" (mean over months)" if "time" in ds[v].dims else "") + (" (nearly uniform)" if uniform else ""),
               xlabel="lon", ylabel="lat")
        ax.set_aspect("equal", adjustable="box")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return write_png_atomic(fig, path)


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


