"""Delta-method scenarios (`kgml.spatial.scenarios`): the deltas on the forcing, and budget changes that vanish for
a null scenario and for CO2 under light-use-efficiency physics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from kgml.spatial.scenarios import Scenario, apply_scenario, budget_changes, run_scenario
from tests.kgml.test_mapping import demo_run


def forcing():
    lat, lon = np.array([40.25, 40.75]), np.array([-90.25, -89.75])
    times = np.arange("2019-01", "2020-01", dtype="datetime64[M]").astype("datetime64[ns]")
    m = np.arange(12)
    tair = np.broadcast_to(10 - 12 * np.cos(2 * np.pi * (m + 0.5) / 12), (2, 2, 12)).astype(np.float32)
    return xr.Dataset({"tair": (("lat", "lon", "time"), tair), "vpd": (("lat", "lon", "time"), np.full_like(tair, 8.0)),
                       "precip": (("lat", "lon", "time"), np.full_like(tair, 2.5))},
                      coords={"lat": lat, "lon": lon, "time": times}, attrs={"resolution": "monthly"})


def test_deltas_on_the_forcing():
    from process_models.forcing import saturation_vapour_pressure

    f = forcing()
    s = apply_scenario(f, Scenario("w", warming=2.0, precip_change=-0.1, co2=600.0, shift_years=31))
    np.testing.assert_allclose(s.tair.values, f.tair.values + 2.0, rtol=1e-6)
    np.testing.assert_allclose(s.precip.values, 2.25, rtol=1e-6)
    t = f.tair.values
    ratio = np.asarray(saturation_vapour_pressure(t + 2.0)) / np.asarray(saturation_vapour_pressure(t))
    np.testing.assert_allclose(s.vpd.values, 8.0 * ratio, rtol=1e-5)  # constant relative humidity
    assert float(s.co2.min()) == float(s.co2.max()) == 600.0
    assert str(s.time.values[0])[:7] == "2050-01" and s.attrs["scenario"] == "w"
    with pytest.raises(ValueError, match="negative"):
        Scenario(precip_change=-1.0)


def test_null_and_co2_scenarios_change_nothing_warming_raises_respiration():
    run = demo_run()
    f = forcing()
    res = run_scenario(run, f, Scenario("co2", co2_change=200.0), scheduler="sync", path="fast")
    assert np.abs(res["difference"].d_nee.values).max() == 0.0  # LUE grassland ignores CO2
    assert (res["budget"].nee_total_tgc_change == 0).all()
    warm = run_scenario(run, f, Scenario("warm", warming=3.0), scheduler="sync", path="fast")
    d = warm["difference"]
    assert (d.d_reco.values > 0).all()
    table = warm["budget"]
    np.testing.assert_allclose(table.reco_total_tgc_change, table.reco_total_tgc_scenario - table.reco_total_tgc_base)
    assert budget_changes(warm["baseline"], warm["baseline"]).gpp_total_tgc_change.abs().max() == 0.0


def test_a_driver_delta_the_physics_cannot_feel_is_warned_about():
    from kgml.spatial.scenarios import ScenarioWarning, physics_response, scenario_warnings
    from kgml.synthetic import build_model

    assert physics_response(build_model("grassland"), "co2", 400.0, 800.0) == 0.0  # light-use efficiency
    assert physics_response(build_model("soybean"), "co2", 400.0, 800.0) > 0.1  # C3 photosynthesis
    run = demo_run()  # a grassland run without co2 among its features
    assert "co2" not in run.config.data.features
    with pytest.warns(ScenarioWarning, match="--co2/--co2-change cannot act on run"):
        res = run_scenario(run, forcing(), Scenario("co2", co2=550.0), scheduler="sync", path="fast")
    assert res["warnings"] and "scenario_warnings" in res["difference"].attrs
    assert scenario_warnings(run, Scenario("warm", warming=2.0)) == []


def test_budget_changes_cover_identical_cells():
    """A cell mapped only in the baseline, and warming that moves cells out of the training climate, must
    not change which cells a group's baseline and scenario budgets cover (issue 17: 765 vs 447 cells)."""
    run = demo_run()
    base = run_scenario(run, forcing(), Scenario("none"), scheduler="sync", path="fast")["baseline"]
    scen = base.copy(deep=True)
    scen["mapped"][0, 0] = 0
    for v in ("gpp", "reco", "nee"):
        scen[v][:, 0, 0] = np.nan
    scen["gpp"] = scen["gpp"] + np.float32(1.0)
    if "static_max_abs_z" in scen:
        scen["static_max_abs_z"][:] = 10.0  # every cell "extrapolated" under the scenario
    table = budget_changes(base, scen)
    dom = table[table.group == "domain"].iloc[0]
    assert dom.cells == int(base.mapped.sum()) - 1
    np.testing.assert_allclose(dom.gpp_mean_gc_m2_d_change, 1.0, rtol=1e-5)
    np.testing.assert_allclose(table.reco_total_tgc_change, 0.0, atol=1e-9)
    if "static_max_abs_z" in base:
        labels = set(table[table.group == "training_climate"].label)
        assert labels <= {"within 3 sd", "extrapolated (z-score above 3)"}
        np.testing.assert_allclose(table[table.group == "training_climate"].gpp_mean_gc_m2_d_change, 1.0, rtol=1e-5)
