"""Fallbacks made explicit: a missing required driver is an error naming it; optional drivers (CO2,
pressure) take a documented default that is warned and recorded; a site without any value of a driver stays
NaN (never 0 °C); NaN static attributes are warned and recorded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data import drivers
from kgml.data.drivers import fill_driver_gaps, met_from_dataset
from kgml.data.normalisation import Normaliser
from kgml.data.schema import DataValidationError, DataWarning
from kgml.models.hybrid import _static


def _ds(drop=(), **extra):
    time = pd.date_range("2001-01-01", periods=365, freq="D")
    doy = np.arange(365)
    base = {
        "tmin": 5 + 10 * np.sin(2 * np.pi * (doy - 100) / 365),
        "tmax": 15 + 10 * np.sin(2 * np.pi * (doy - 100) / 365),
        "sw_in": 150 + 100 * np.sin(2 * np.pi * (doy - 80) / 365),
        "precip": np.full(365, 2.0),
    }
    data = {k: (("site", "time"), np.stack([v, v])) for k, v in base.items() if k not in drop}
    data.update(extra)
    return xr.Dataset(data, coords={"site": ["a", "b"], "time": time, "lat": ("site", [41.0, 42.0]),
                                    "lon": ("site", [-93.0, -90.0])})


def test_missing_required_driver_is_an_error_naming_it():
    with pytest.raises(DataValidationError, match="sw_in"):
        met_from_dataset(_ds(drop=("sw_in",)))
    with pytest.raises(DataValidationError, match="tmin"):
        met_from_dataset(_ds(drop=("tmin", "tmax")))
    # only the mean temperature: used for both, warned and recorded (not silent)
    defaults: dict[str, str] = {}
    drivers._WARNED.clear()  # warned once per process
    with pytest.warns(DataWarning, match="no tmin/tmax"):
        met = met_from_dataset(_ds(drop=("tmin", "tmax"), tair=(("site", "time"), np.full((2, 365), 10.0))),
                               defaults=defaults)
    assert defaults["tmin"] == "tair (no diurnal range)" and float(np.asarray(met.tmax).max()) == 10.0


def test_optional_driver_defaults_are_recorded():
    defaults: dict[str, str] = {}
    met = met_from_dataset(_ds(), defaults=defaults)
    assert defaults == {"co2": "400 ppm", "patm": "101325 Pa"}
    assert float(np.asarray(met.co2).mean()) == 400.0
    defaults = {}
    met_from_dataset(_ds(co2=(("site", "time"), np.full((2, 365), 410.0))), defaults=defaults)
    assert "co2" not in defaults


def test_a_site_without_a_driver_stays_nan_and_is_recorded():
    v = np.stack([np.r_[np.nan, 1.0, np.nan, 3.0, np.nan], np.full(5, np.nan)])
    empty: dict[str, list[str]] = {}
    out = fill_driver_gaps(v, "tair", ["a", "b"], empty)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 2.0, 3.0, 3.0])
    assert np.isnan(out[1]).all()  # not 0 °C
    assert empty == {"tair": ["b"]}


def test_nan_static_attribute_is_warned_and_recorded():
    ds = _ds().assign_coords(mat=("site", [10.0, np.nan]))
    norm = Normaliser.fit(ds.assign_coords(mat=("site", [10.0, 12.0])), variables=["mat"])
    filled: dict[str, list[str]] = {}
    with pytest.warns(DataWarning, match="'mat' is NaN at 1 site"):
        st = _static(ds, ["mat"], norm, filled=filled)
    assert filled == {"mat": ["b"]} and st[1, 0] == 0.0 and np.isfinite(st).all()


def test_flagged_soil_water_fill_never_reaches_the_physics():
    """swc (%) becomes m3 m-3 for the physics, and NaN wherever swc_measured says the value is a fill."""
    swc = np.stack([np.full(365, 30.0), np.full(365, 22.0)])
    flag = np.stack([np.r_[np.ones(200), np.zeros(165)], np.zeros(365)])
    met = met_from_dataset(_ds(swc=(("site", "time"), swc), swc_measured=(("site", "time"), flag)))
    got = np.asarray(met.swc)
    np.testing.assert_allclose(got[0, :200], 0.30, rtol=1e-6)
    assert np.isnan(got[0, 200:]).all() and np.isnan(got[1]).all()
    unflagged = np.asarray(met_from_dataset(_ds(swc=(("site", "time"), swc))).swc)
    np.testing.assert_allclose(unflagged, swc / 100.0, rtol=1e-6)  # without a flag: every value is measured
