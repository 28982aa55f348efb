"""Mapping over grids (`kgml.spatial.mapping`): driver preparation, the model and fast paths, dask local vs
distributed, CF output, budgets, a real grid, and the `kgml map | explain | scenario` commands."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from kgml.spatial import mapping as M
from kgml.spatial.grid_drivers import _angstrom_sw


@functools.lru_cache(maxsize=1)
def demo_run():
    """One tiny demonstration run for the mapping, attribution and scenario tests (trained once a session)."""
    import tempfile

    return M.train_demo_run(Path(tempfile.mkdtemp(prefix="kgml-map-")) / "run0", steps=3, sites_per_block=2)


@pytest.fixture(scope="module")
def runs():
    """The demonstration run (saved to disk) and a second ensemble member: the same run with its parameter
    head's weights perturbed (a stand-in for a member trained with another seed)."""
    import equinox as eqx
    import jax

    r0 = demo_run()
    params, static = eqx.partition(r0.model.parameter_head, eqx.is_array)
    head1 = eqx.combine(jax.tree_util.tree_map(lambda a: 1.3 * a + 0.05, params), static)
    r1 = dataclasses.replace(r0, model=eqx.tree_at(lambda m: m.parameter_head, r0.model, head1), directory=None)
    return r0, r1


def monthly_grid(year=2019, months=12, seed=0, ocean=True):
    lat = np.array([40.25, 40.75, 41.25])
    lon = np.array([-95.75, -95.25, -94.75, -94.25])
    times = np.arange(f"{year}-01", np.datetime64(f"{year}-01") + months, dtype="datetime64[M]").astype("datetime64[ns]")
    m = np.arange(months)
    rng = np.random.default_rng(seed)
    tair = 10 - 14 * np.cos(2 * np.pi * (m + 0.5) / 12)[None, None] + rng.normal(0, 1, (3, 4, months))
    precip = rng.gamma(4.0, 0.6, (3, 4, months))
    if ocean:
        tair[0, 0] = precip[0, 0] = np.nan
    return xr.Dataset({"tair": (("lat", "lon", "time"), tair.astype(np.float32), {"units": "degC"}),
                       "precip": (("lat", "lon", "time"), precip.astype(np.float32), {"units": "mm d-1"})},
                      coords={"lat": lat, "lon": lon, "time": times})


# --- drivers ----------------------------------------------------------------------------------------------


def test_monthly_drivers_pad_short_records_and_name_assumptions():
    times = np.arange("2018-01", "2018-09", dtype="datetime64[M]")
    m = np.arange(8)
    tair = np.stack([5 - 10 * np.cos(2 * np.pi * (m + 0.5) / 12), np.full(8, np.nan)])
    tair[1, :2] = 3.0  # 2 of 8 months: below the coverage rule
    drivers, days, mapped, notes = M.daily_drivers({"tair": tair}, times, np.array([50.0, 50.0]))
    assert days.size == 365 and days[0] == np.datetime64("2018-01-01")
    assert mapped.tolist() == [True, False] and np.isnan(drivers["tair"][1]).all()
    t = drivers["tair"][0]
    # each covered day carries its month's mean
    assert np.allclose(t[:31], tair[0, 0]) and np.allclose(t[31:59], tair[0, 1]) and np.allclose(t[212], tair[0, 7])
    # padded Sep–Dec follow the fitted harmonic: warmer in September than in December
    assert t[250] > t[350] and np.isfinite(t).all()
    assert "harmonic" in notes["tair"] and "constant 2 mm d-1" == notes["precip"] and "tair" in notes["tsoil"]
    assert np.allclose(drivers["tmax"][0] - drivers["tmin"][0], 10.0)
    # a one-month record is padded by persistence of its mean
    d1, _, _, n1 = M.daily_drivers({"tair": np.array([[2.0]])}, np.array(["2017-01"], "datetime64[M]"), np.array([55.0]))
    assert "persistence" in n1["tair"] and np.allclose(d1["tair"], 2.0)


def test_assumed_sw_in_is_fao56_angstrom():
    """FAO-56 example 8: R_a = 32.2 MJ m-2 d-1 at 20° S on 3 September (doy 246); with a = 0.25, b = 0.5 and
    n/N = 0.5, R_s = 0.5 R_a = 16.1 MJ m-2 d-1 = 186.3 W m-2."""
    sw = _angstrom_sw(np.array([-20.0]), np.array([246]), M.DriverAssumptions())
    assert sw[0, 0] == pytest.approx(0.5 * 32.2e6 / 86400, rel=3e-3)


def test_hourly_fields_become_daily_with_extremes_and_coverage():
    times = np.arange("2017-01-01T00", "2017-01-03T00", dtype="datetime64[h]")
    hours = np.arange(48) % 24
    tair = (5 + 4 * np.sin(2 * np.pi * (hours - 9) / 24))[None].astype(float)
    tair2 = tair.copy()
    tair2[0, 24:44] = np.nan  # day 2 has 4 of 24 hours
    drivers, days, mapped, notes = M.daily_drivers({"tair": np.concatenate([tair, tair2])}, times, np.array([52.0, 52.0]))
    assert np.allclose(drivers["tair"][0, :2], tair[0, :24].mean(), atol=1e-5)
    assert drivers["tmax"][0, 0] == pytest.approx(tair[0, :24].max()) and drivers["tmin"][0, 0] == pytest.approx(tair[0, :24].min())
    assert mapped.tolist() == [True, False]  # 1 of 2 record days covered < min_coverage
    assert "sub-daily" in notes["tmin"]


# --- mapping --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mapped(runs):
    return M.map_run(list(runs), monthly_grid(), chunks={"lat": 2, "lon": 2}, scheduler="sync", batch_size=8)


def test_map_run_is_cf_with_ensemble_parameters_and_mask(mapped, runs):
    ds = mapped
    assert ds.attrs["Conventions"] == "CF-1.8" and len(ds.attrs["config_sha256"].split()) == 2
    assert json.loads(ds.attrs["config_json"])["name"] == runs[0].config.name
    assert ds.mapped.values[0, 0] == 0 and ds.mapped.values.sum() == 11
    for v in ("gpp", "reco", "nee", "gpp_sd", "nee_sd", "theta_q10_rh", "theta_lue_max", "theta_rref_rh_sd"):
        assert v in ds and ds[v].attrs.get("units") is not None, v
    ok = ds.mapped.values.astype(bool)
    assert np.isnan(ds.nee.values[:, 0, 0]).all() and np.isfinite(ds.nee.values[:, ok]).all()
    np.testing.assert_allclose(ds.nee.values[:, ok], (ds.reco - ds.gpp).values[:, ok], atol=1e-5)
    assert (ds.gpp_sd.values[:, ok] >= 0).all() and ds.gpp_sd.values[:, ok].max() > 0  # members differ
    assert ds.sizes["time"] == 12 and "precip" in ds.attrs["drivers_from_forcing"]
    assert "FAO-56" in json.loads(ds.attrs["driver_sources"])["sw_in"]


def test_fast_path_and_monthly_kernel_equal_the_model_path(runs, mapped):
    run = runs[0]
    f = monthly_grid()
    model = M.map_run(run, f, chunks={"lat": 3, "lon": 4}, scheduler="sync", path="model", batch_size=16)
    fast = M.map_run(run, f, chunks={"lat": 3, "lon": 4}, scheduler="sync", path="fast", batch_size=16)
    for v in ("gpp", "reco", "nee", "theta_q10_rh"):
        np.testing.assert_allclose(fast[v].values, model[v].values, atol=2e-5, rtol=1e-5, equal_nan=True)
    ok = model.mapped.values.astype(bool)
    fl, theta = M.monthly_fluxes_fast(run, {k: f[k].values[ok] for k in ("tair", "precip")},
                                      np.broadcast_to(f.lat.values[:, None], ok.shape)[ok],
                                      np.broadcast_to(f.lon.values[None], ok.shape)[ok])
    for j, v in enumerate(M.FLUXES):
        np.testing.assert_allclose(fl[..., j], model[v].values[:, ok].T, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(theta["q10_rh"], model.theta_q10_rh.values[ok], rtol=1e-6)


def test_distributed_scheduler_matches_local(runs, mapped):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dist = M.map_run(list(runs), monthly_grid(), chunks={"lat": 2, "lon": 2}, scheduler=cluster.scheduler_address,
                         batch_size=8)
    for v in ("gpp", "reco", "nee", "nee_sd", "theta_q10_rh"):
        np.testing.assert_allclose(dist[v].values, mapped[v].values, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_written_file_budgets_and_areas(mapped, tmp_path):
    path = M.write_map(mapped, tmp_path / "m.nc")
    with xr.open_dataset(path) as back:
        assert back.time.attrs["bounds"] == "time_bnds" and back.nee.attrs["cell_methods"] == "time: mean"
        np.testing.assert_allclose(back.nee.values, mapped.nee.values, equal_nan=True)
    # a global 1° grid covers the sphere: Σ areas = 4πR²
    area = M.cell_area(np.arange(-89.5, 90), np.arange(-179.5, 180))
    assert area.sum() == pytest.approx(4 * np.pi * M.EARTH_RADIUS**2, rel=1e-9)
    # budgets: a constant field gives flux × days × area; land-cover groups add up to the domain
    flat = mapped.copy()
    for v, c in (("gpp", 2.0), ("reco", 3.0), ("nee", 1.0)):
        flat[v] = xr.where(flat.mapped == 1, c, np.nan).expand_dims(time=flat.time).transpose("time", "lat", "lon")
    lc = xr.DataArray(np.where(np.arange(4)[None] < 2, "crop", "forest").repeat(3, 0), dims=("lat", "lon"))
    t = M.budget_table(flat, {"land_cover": lc})
    dom = t[t.group == "domain"].iloc[0]
    area_ok = (mapped.cell_area.values * mapped.mapped.values).sum()
    assert dom.gpp_total_tgc == pytest.approx(2.0 * 365 * area_ok / 1e12, rel=1e-6)
    assert dom.nee_mean_gc_m2_d == pytest.approx(1.0)
    assert t[t.group == "land_cover"].reco_total_tgc.sum() == pytest.approx(dom.reco_total_tgc, rel=1e-9)


def test_real_wfde5_window_maps_to_a_cf_file_and_figure(runs, dataset_dir, tmp_path):
    from kgml.data.gridded import read_wfde5

    folder = dataset_dir("wfde5_hourly_forcing_uk_2017-01")
    f = M.open_forcing(folder, bbox=(52.0, 53.6, -4.0, -1.0), chunks={"lat": 2, "lon": 3})
    assert {"tair", "precip", "sw_in", "vpd"} <= set(f.data_vars) and f.attrs["resolution"] == "hourly"
    assert "air_temperature.nc:" in f.attrs["forcing_sha256"]
    ref = read_wfde5(folder).sel(lat=f.lat, lon=f.lon)  # the eager, validated reader agrees
    drivers, days, mapped, _ = M.daily_drivers({k: f[k].values.reshape(-1, f.sizes["time"]) for k in f.data_vars},
                                               f.time.values, np.repeat(f.lat.values, f.sizes["lon"]))
    np.testing.assert_allclose(drivers["tair"][:, :31], ref.tair.values.reshape(-1, 31), atol=1e-4, equal_nan=True)
    out = M.map_run(runs[0], f, scheduler="sync", batch_size=16)
    assert out.sizes["time"] == 1 and out.mapped.sum() > 0 and "padded" in out.attrs["short_record_padding"]
    assert np.isfinite(out.gpp.values[0][out.mapped.values == 1]).all()
    M.write_map(out, tmp_path / "uk.nc")
    png = M.plot_maps(out, tmp_path / "uk.png")
    assert png.stat().st_size > 5000


@pytest.mark.slow
def test_commands_map_explain_scenario_on_a_real_grid(runs, dataset_dir, tmp_path):
    from kgml.cli import main

    run_dir = str(runs[0].directory)
    bcsd = str(dataset_dir("bcsd_obs_monthly_se_us_1999"))
    common = ["--forcing", bcsd, "--bbox", "35.0,35.5,-80.0,-79.4", "--scheduler", "sync"]
    assert main(["map", run_dir, *common, "--out", str(tmp_path / "m.nc")]) == 0
    with xr.open_dataset(tmp_path / "m.nc") as m:
        assert m.sizes["time"] == 12 and m.mapped.sum() > 0 and "bcsd_obs_1999.nc" in m.attrs["forcing_sha256"]
    assert (tmp_path / "m.png").exists() and "domain" in (tmp_path / "m_budget.md").read_text()
    assert main(["explain", run_dir, *common, "--out", str(tmp_path / "ex"), "--repeats", "1"]) == 0
    with xr.open_dataset(tmp_path / "ex" / "sensitivity.nc") as s:
        assert "dnee_dtair" in s and "theta_q10_rh" in s and np.isfinite(s.dnee_dtair.values).any()
    assert (tmp_path / "ex" / "sensitivity_nee.png").exists()
    assert main(["scenario", run_dir, *common, "--out", str(tmp_path / "sc"), "--warming", "2",
                 "--precip-change", "-0.1", "--shift-years", "31"]) == 0
    with xr.open_dataset(tmp_path / "sc" / "scenario.nc") as sc, xr.open_dataset(tmp_path / "sc" / "difference.nc") as d:
        assert str(sc.time.values[0])[:4] == "2030" and "d_nee" in d
    assert "reco_total_tgc_change" in (tmp_path / "sc" / "budget_changes.md").read_text()
    from tests.kgml.cf_check import assert_cf_units, flux_unit_spellings

    for nc in ("m.nc", "ex/sensitivity.nc", "sc/baseline.nc", "sc/scenario.nc", "sc/difference.nc"):
        assert_cf_units(tmp_path / nc)
    assert flux_unit_spellings(tmp_path / "m.nc") == {"g m-2 d-1"}


def test_runs_of_other_model_kinds_are_refused_by_name(runs):
    """Mapping and attribution read the hybrid's heads and physics: a neural or process run is an error
    naming its kind, never a silent fallback."""
    from kgml.models.hybrid import build_process_model
    from kgml.spatial import attribution as A

    r0, _ = runs
    cfg = dataclasses.replace(r0.config, model=dataclasses.replace(r0.config.model, kind="process"))
    proc = dataclasses.replace(r0, model=build_process_model(r0.model.process), config=cfg, directory=None)
    with pytest.raises(ValueError, match="kind 'process'"):
        M.map_run(proc, monthly_grid(months=2))
    with pytest.raises(ValueError, match="needs a hybrid run"):
        A.driver_sensitivities(proc, None)


def test_nearly_uniform_parameter_maps_are_not_stretched():
    from kgml.spatial.budgets import colour_limits

    lo, hi, uniform = colour_limits(np.array([1.0000, 1.0003, np.nan]), diverging=False)  # 0.03 % range
    assert uniform and lo < 1.0 and hi > 1.0003 and (hi - lo) == pytest.approx(0.01, rel=0.05)
    assert colour_limits(np.array([1.0, 2.0]), diverging=False) == (None, None, False)
    assert colour_limits(np.array([-1.0, 3.0]), diverging=True) == (-3.0, 3.0, False)
