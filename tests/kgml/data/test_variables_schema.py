"""The variable registry, unit conversions and `validate_dataset`: every failure names source, variable, problem."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from kgml.data.schema import DataValidationError, DataWarning, register_layout, validate_dataset
from kgml.variables import (
    UMOL_CO2_M2_S_TO_GC_M2_D,
    VARIABLES,
    UnitConversionError,
    Variable,
    conversion_factor,
    convert_units,
    find_variable,
    get_variable,
    normalise_units,
    register_variable,
)

REQUIRED = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "swc", "tsoil", "co2", "patm", "ws", "rh", "nee",
            "gpp", "reco", "rsoil", "rh_soil", "le", "h", "crop_yield", "lai")


def test_registry_has_the_canonical_variables():
    for name in REQUIRED:
        var = get_variable(name)
        assert var.valid_min < var.valid_max and var.units and var.long_name
    units = {n: get_variable(n).units for n in ("tair", "sw_in", "vpd", "precip", "swc", "nee", "crop_yield", "patm")}
    assert units == {"tair": "degC", "sw_in": "W m-2", "vpd": "hPa", "precip": "mm d-1", "swc": "%",
                     "nee": "gC m-2 d-1", "crop_yield": "t ha-1", "patm": "Pa"}
    assert get_variable("nee").fluxnet[0] == "NEE_VUT_REF" and find_variable("TA_F", "fluxnet").name == "tair"
    assert find_variable("CSR_FLUX_CO2", "cosore").name == "rsoil"


def test_unknown_variable_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean 'tair'"):
        get_variable("tiar")


def test_register_variable_conflict_and_user_variable():
    var = Variable("test_var_xyz", "1", "a user variable", 0.0, 1.0)
    register_variable(var)
    assert VARIABLES["test_var_xyz"] is var
    register_variable(var)  # identical re-registration is fine
    with pytest.raises(ValueError, match="already registered"):
        register_variable(Variable("test_var_xyz", "1", "other", 0.0, 2.0))
    with pytest.raises(ValueError, match="below"):
        register_variable(Variable("test_var_bad", "1", "bad", 1.0, 0.0))


def test_conversions_exact():
    assert UMOL_CO2_M2_S_TO_GC_M2_D == 12.0107e-6 * 86400.0
    assert conversion_factor("umolCO2 m-2 s-1", "gC m-2 d-1") == UMOL_CO2_M2_S_TO_GC_M2_D
    assert conversion_factor("gC m-2 d-1", "µmol m-2 s-1") == pytest.approx(1.0 / UMOL_CO2_M2_S_TO_GC_M2_D, rel=1e-15)
    assert convert_units(300.0, "K", "deg C") == pytest.approx(26.85, abs=1e-12)
    assert convert_units(26.85, "degC", "K") == pytest.approx(300.0, abs=1e-12)
    assert convert_units(212.0, "degF", "degC") == pytest.approx(100.0)
    assert convert_units(1.0, "kPa", "hPa") == 10.0 and convert_units(101.325, "kPa", "Pa") == pytest.approx(101325.0)
    assert convert_units(0.25, "m3 m-3", "%") == 25.0
    assert convert_units(1.0, "MJ m-2 d-1", "W m-2") == pytest.approx(1e6 / 86400.0)
    assert convert_units(1000.0, "kg ha-1", "t ha-1") == pytest.approx(1.0)
    assert normalise_units("deg C") == "degC" and normalise_units("ppm") == "umol mol-1"
    with pytest.raises(UnitConversionError):
        conversion_factor("W m-2", "degC")


def _ds(name="tair", values=(10.0, 12.0, 11.0), units="degC", times=None, sites=("US-Aaa",)):
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n = values.shape[1]
    times = np.arange("2000-01-01", n, dtype="datetime64[D]").astype("datetime64[ns]") if times is None else np.asarray(times, dtype="datetime64[ns]")
    return xr.Dataset({name: (("site", "time"), values, {"units": units})}, coords={"site": list(sites), "time": times})


def _fails(ds, variable, *words, source="file.csv"):
    with pytest.raises(DataValidationError) as info:
        validate_dataset(ds, source)
    msg = str(info.value)
    assert msg.startswith(source) and info.value.variable == variable
    for w in words:
        assert w in msg, msg
    return info.value


def test_validate_accepts_good_and_rejects_bad():
    validate_dataset(_ds(), "good.csv")
    _fails(_ds(values=(280.0, 290.0, 285.0)), "tair", "outside the valid range", "kelvin", "site=US-Aaa", "2000-01-01")
    _fails(_ds(units="K"), "tair", "registry expects 'degC'")
    ds = _ds()
    del ds.tair.attrs["units"]
    _fails(ds, "tair", "no 'units'")
    _fails(_ds("swc", np.linspace(0.1, 0.4, 10), "%"), "swc", "fraction", "multiply by 100")
    _fails(_ds(values=(np.nan, np.nan, np.nan)), "tair", "all values are missing")
    _fails(_ds("patm", (98.0, 99.0, 97.0), "Pa"), "patm", "kPa")
    _fails(_ds("crop_yield", (150.0, 180.0, 170.0), "t ha-1"), "crop_yield", "bu ac-1")


def test_validate_time_axis():
    t = np.array(["2000-01-01", "2000-01-02", "2000-01-02"], dtype="datetime64[ns]")
    _fails(_ds(times=t), "time", "duplicate")
    t = np.array(["2000-01-01", "2000-01-03", "2000-01-02"], dtype="datetime64[ns]")
    _fails(_ds(times=t), "time", "not monotonic")
    ds = _ds().assign_coords(time=[1, 2, 3])
    _fails(ds, "time", "datetime64")


def test_validate_layout_and_empty():
    bad = xr.Dataset({"tair": (("station", "day"), np.ones((1, 3)), {"units": "degC"})})
    _fails(bad, None, "match no allowed layout")
    empty = _ds().isel(site=slice(0, 0))
    _fails(empty, "site", "empty")
    county = xr.Dataset(
        {"crop_yield": (("county", "year"), np.full((2, 3), 10.0), {"units": "t ha-1"})},
        coords={"county": [17001, 17003], "year": [2001, 2002, 2003], "state": ("county", ["IL", "IL"])},
    )
    validate_dataset(county, "yields.csv")  # a repeated label coordinate on another dim is fine
    grid = xr.Dataset(
        {"tair": (("lat", "lon", "time"), np.zeros((2, 2, 3)), {"units": "degC"})},
        coords={"lat": [40.0, 41.0], "lon": [-90.0, -89.0], "time": np.arange(3).astype("datetime64[D]").astype("datetime64[ns]")},
    )
    validate_dataset(grid, "grid.nc")
    register_layout("plot_time_test", ("plot", "time"))
    plots = xr.Dataset({"lai": (("plot", "time"), np.ones((1, 2)), {"units": "m2 m-2"})},
                       coords={"plot": ["p1"], "time": np.arange(2).astype("datetime64[D]").astype("datetime64[ns]")})
    validate_dataset(plots, "plots.csv")
    _fails(_ds().assign_coords(lat=("site", [95.0])), "lat", "outside")


def test_suspicious_units_warn():
    with pytest.warns(DataWarning, match="kPa"):
        validate_dataset(_ds("vpd", np.full((1, 40), 0.5), "hPa"), "vpd.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_dataset(_ds("vpd", np.linspace(1, 30, 40)[None], "hPa"), "vpd.csv")
