"""Driver attribution (`kgml.spatial.attribution`): exact sensitivities against finite differences, permutation
importance that is zero for a driver the physics ignores, parameters back on the grid."""

from __future__ import annotations

import numpy as np
import pytest

from kgml.spatial import attribution as A
from kgml.spatial import mapping as M
from tests.kgml.test_mapping import demo_run


@pytest.fixture(scope="module")
def setup():
    import xarray as xr

    run = demo_run()
    lat, lon = np.array([35.25, 35.75]), np.array([-80.25, -79.75, -79.25])
    times = np.arange("2019-01", "2020-01", dtype="datetime64[M]").astype("datetime64[ns]")
    rng = np.random.default_rng(3)
    m = np.arange(12)
    tair = 14 - 10 * np.cos(2 * np.pi * (m + 0.5) / 12)[None, None] + rng.normal(0, 2, (2, 3, 12))
    precip = rng.gamma(3.0, 1.0, (2, 3, 12))
    f = xr.Dataset({"tair": (("lat", "lon", "time"), tair.astype(np.float32)),
                    "precip": (("lat", "lon", "time"), precip.astype(np.float32))},
                   coords={"lat": lat, "lon": lon, "time": times})
    ds, cell, _ = M.grid_sites(f, run.config)
    return run, ds, cell, f


@pytest.mark.slow
def test_sensitivities_equal_finite_differences(setup):
    from kgml.experiment import predict_dataset

    run, ds, _, _ = setup
    s = A.driver_sensitivities(run, ds, drivers=("tair", "sw_in"))
    h = {"tair": 0.05, "sw_in": 0.5}
    for d, group in (("tair", ("tair", "tmin", "tmax", "tsoil")), ("sw_in", ("sw_in",))):
        up, dn = ds.copy(), ds.copy()
        for f in group:
            up[f], dn[f] = ds[f] + h[d], ds[f] - h[d]
        fd = (predict_dataset(run, up, missing_static="zero").reco.mean("time")
              - predict_dataset(run, dn, missing_static="zero").reco.mean("time")) / (2 * h[d])
        np.testing.assert_allclose(s[f"dreco_d{d}"].values, fd.values, rtol=0.1, atol=2e-3)
    assert (s.dreco_dtair.values > 0).all()  # Q10 > 1: warmer soils respire more
    np.testing.assert_allclose(s.nee.values, (s.reco - s.gpp).values, atol=1e-5)


def test_permutation_importance_and_grid(setup):
    run, ds, cell, f = setup
    imp = A.permutation_importance(run, ds, drivers=("tair", "co2"), n_repeats=2).set_index("driver")
    assert imp.loc["co2", "importance"] == 0.0  # light-use-efficiency GPP ignores CO2
    assert imp.loc["tair", "importance"] > 0.0
    s = A.driver_sensitivities(run, ds, drivers=("tair",))
    grid = A.to_grid(s, cell, f.lat.values, f.lon.values)
    assert grid.theta_q10_rh.shape == (2, 3) and np.isfinite(grid.theta_q10_rh.values).all()
    assert grid.dnee_dtair.values[cell[0][0], cell[1][0]] == s.dnee_dtair.values[0]


def test_sensitivities_on_a_leap_year_record(setup):
    """A site dataset whose daily axis holds 29 February (windows drop it) is accepted, with or without a
    day mask on the dataset's own time axis."""
    import pandas as pd
    import xarray as xr

    run, ds, _, _ = setup
    one = ds.isel(site=[0])
    leap = pd.date_range("2020-01-01", "2020-12-31", freq="D")
    base = pd.date_range("2019-01-01", "2019-12-31", freq="D")
    src = np.concatenate([np.arange(59), [58], np.arange(59, 365)])  # 29 Feb repeats 28 Feb
    one = one.isel(time=src).assign_coords(time=leap) if one.sizes["time"] == base.size else None
    if one is None:
        pytest.skip("fixture dataset is not one daily year")
    assert isinstance(one, xr.Dataset) and one.sizes["time"] == 366
    s = A.driver_sensitivities(run, one, drivers=("tair",))
    assert np.isfinite(s.dnee_dtair.values).all()
    mask = np.zeros(366, bool)
    mask[150:240] = True
    s2 = A.driver_sensitivities(run, one, drivers=("tair",), day_mask=mask)
    assert np.isfinite(s2.dnee_dtair.values).all() and not np.allclose(s2.nee.values, s.nee.values)
