"""kgml.data.disaggregate: Killworth's mean-preserving interpolation keeps every monthly mean exactly, recovers a
smooth daily cycle far better than holding the mean, respects lower bounds, splits at missing months, refuses
series that are not month-held; the dataset wrapper keeps tmin/tmax offsets and leaves precipitation held."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data.disaggregate import mean_preserving_daily, smooth_monthly_drivers
from kgml.data.schema import DataValidationError

DAYS = pd.date_range("2001-01-01", "2004-12-31", freq="D").values
MONTH = DAYS.astype("datetime64[M]").astype(np.int64)
DOY = (DAYS - DAYS.astype("datetime64[Y]")).astype("timedelta64[D]").astype(np.int64)
STARTS = np.flatnonzero(np.r_[True, np.diff(MONTH) != 0])
LENGTHS = np.diff(np.r_[STARTS, DAYS.size])


def _monthly_means(x):
    return np.add.reduceat(x, STARTS, axis=-1) / LENGTHS


def _held(x):
    return np.repeat(_monthly_means(x), LENGTHS, axis=-1)


def _truth():
    """Two daily series: an air-temperature cycle crossing 0 °C and a shortwave cycle clipped at zero in winter."""
    tair = 8.0 - 14.0 * np.cos(2 * np.pi * (DOY + 10) / 365.0)
    sw = np.maximum(0.0, 120.0 - 200.0 * np.cos(2 * np.pi * DOY / 365.0))
    return tair, sw


def test_monthly_means_are_kept_and_the_daily_cycle_recovered():
    tair, sw = _truth()
    for truth, lower in ((tair, None), (sw, 0.0)):
        held = _held(truth)[None]
        out = mean_preserving_daily(held, MONTH, lower=lower)[0]
        np.testing.assert_allclose(_monthly_means(out), _monthly_means(truth), rtol=1e-10, atol=1e-9)
        rmse_held = np.sqrt(np.mean((held[0] - truth) ** 2))
        rmse = np.sqrt(np.mean((out - truth) ** 2))
        assert rmse < 0.2 * rmse_held, (rmse, rmse_held)
        if lower is None:  # continuous: no step at month boundaries, day-to-day change as the true cycle's
            assert np.abs(np.diff(out)).max() < 1.5 * np.abs(np.diff(truth)).max()
        else:  # the rescaling of clipped months leaves small steps, far below the held series' own
            assert out.min() >= lower
            assert np.abs(np.diff(out)).max() < 0.25 * np.abs(np.diff(held[0])).max()
    # a straight line of monthly means away from the record's ends is reproduced closely (to month-length effects)
    line = np.linspace(0.0, 30.0, DAYS.size)
    out = mean_preserving_daily(_held(line)[None], MONTH)[0]
    inner = slice(60, -60)
    assert np.abs(out[inner] - line[inner]).max() < 0.05


def test_missing_months_split_the_record_and_single_months_stay_held():
    tair, _ = _truth()
    held = np.stack([_held(tair), _held(tair)])
    held[0, STARTS[5]:STARTS[7]] = np.nan  # two missing months: two segments
    held[1, :STARTS[1]] = np.nan  # record starts in February ...
    held[1, STARTS[2]:STARTS[3]] = np.nan  # ... with a one-month segment (February) before a gap
    out = mean_preserving_daily(held, MONTH)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(held))
    ok = np.isfinite(_monthly_means(held))
    np.testing.assert_allclose(_monthly_means(np.nan_to_num(out))[ok], _monthly_means(held)[ok], atol=1e-9)
    feb = slice(STARTS[1], STARTS[2])
    np.testing.assert_array_equal(out[1, feb], held[1, feb])


def test_series_that_are_not_month_held_or_below_bound_are_refused():
    tair, sw = _truth()
    with pytest.raises(DataValidationError, match="not held on every day"):
        mean_preserving_daily(tair[None], MONTH, name="tair")
    part = _held(tair)[None].copy()
    part[0, 40] = np.nan  # one day of February missing
    with pytest.raises(DataValidationError, match="tair.*not held"):
        mean_preserving_daily(part, MONTH, name="tair")
    with pytest.raises(DataValidationError, match="lower bound"):
        mean_preserving_daily(_held(tair)[None], MONTH, lower=0.0, name="sw_in")
    with pytest.raises(ValueError, match="non-decreasing"):
        mean_preserving_daily(_held(sw)[None], MONTH[::-1])


def test_dataset_wrapper_keeps_offsets_and_precipitation():
    tair, sw = _truth()
    held_t = _held(tair)
    ds = xr.Dataset({
        "tair": (("site", "time"), held_t[None].astype(np.float32), {"units": "degC", "comment": "x; the month's "
                 "mean held on every day of the month (monthly mean preserved exactly)"}),
        "tmin": (("site", "time"), (held_t - 5)[None].astype(np.float32), {"units": "degC"}),
        "tmax": (("site", "time"), (held_t + 5)[None].astype(np.float32), {"units": "degC"}),
        "sw_in": (("site", "time"), _held(sw)[None].astype(np.float32), {"units": "W m-2"}),
        "precip": (("site", "time"), _held(np.full(DAYS.size, 2.0) + (DOY % 40 == 0))[None].astype(np.float32)),
    }, coords={"site": ["A"], "time": DAYS})
    out = smooth_monthly_drivers(ds)
    np.testing.assert_allclose(out.tmax.values - out.tair.values, 5.0, atol=1e-4)
    np.testing.assert_allclose(out.tair.values - out.tmin.values, 5.0, atol=1e-4)
    np.testing.assert_array_equal(out.precip.values, ds.precip.values)
    assert out.tair.dtype == np.float32 and "Killworth" in out.tair.attrs["comment"]
    assert "held on every day" not in out.tair.attrs["comment"] and out.tair.attrs["comment"].startswith("x; ")
    assert "Killworth" in out.attrs["driver_method"]
    np.testing.assert_allclose(_monthly_means(out.sw_in.values[0].astype(np.float64)), _monthly_means(_held(sw)),
                               rtol=1e-5, atol=1e-3)
    assert not np.array_equal(out.tair.values, ds.tair.values)
    with pytest.raises(DataValidationError, match="daily axis"):
        smooth_monthly_drivers(ds.isel(time=slice(None, None, 2)))
