"""kgml.data.assemble.antecedent_drivers: trailing means against pandas' rolling windows, masks kept, the
relative index's reference, and the error for a site without precipitation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data.assemble import antecedent_drivers
from kgml.data.schema import DataValidationError


def _towers(rng):
    time = pd.date_range("2001-01-01", periods=800, freq="D")
    precip = rng.gamma(0.8, 3.0, (3, time.size))
    tair = 10 + 10 * np.sin(2 * np.pi * np.arange(time.size) / 365.25)[None] + rng.normal(size=(3, time.size))
    precip[1, :100] = np.nan  # a record that starts later
    tair[1, :100] = np.nan
    precip[2, 400] = np.nan  # one missing day
    return xr.Dataset({"precip": (("site", "time"), precip), "tair": (("site", "time"), tair)},
                      coords={"site": ["A", "B", "C"], "time": time})


def test_antecedent_drivers_are_trailing_means_of_the_record():
    ds = _towers(np.random.default_rng(1))
    out = antecedent_drivers(ds, precip_days=(90,), tair_days=(30,))
    for i in range(ds.site.size):
        p = pd.Series(ds.precip.values[i])
        ref = p.rolling(90, min_periods=1).mean() / p.mean()
        want = np.where(p.notna(), ref, np.nan)
        np.testing.assert_allclose(out.precip_rel_90d.values[i], want, rtol=1e-5, equal_nan=True)
        t = pd.Series(ds.tair.values[i])
        want_t = np.where(t.notna(), t.rolling(30, min_periods=1).mean(), np.nan)
        np.testing.assert_allclose(out.tair_30d.values[i], want_t, rtol=1e-5, atol=1e-5, equal_nan=True)
    # masks are the drivers' own: before the record and on the missing day
    assert np.isnan(out.precip_rel_90d.values[1, :100]).all() and np.isfinite(out.precip_rel_90d.values[1, 100:]).all()
    assert np.isnan(out.precip_rel_90d.values[2, 400]) and np.isfinite(out.precip_rel_90d.values[2, 401])
    # the relative index averages to about 1 over a long record
    assert abs(float(np.nanmean(out.precip_rel_90d.values[0, 365:])) - 1.0) < 0.15
    assert out.precip_rel_90d.attrs["units"] == "1" and out.tair_30d.attrs["units"] == "degC"
    assert "precip_rel_90d" not in ds  # the input is not changed


def test_antecedent_drivers_refuse_a_site_without_precipitation():
    ds = _towers(np.random.default_rng(2))
    ds["precip"][0] = 0.0
    with pytest.raises(DataValidationError, match="site A.*not positive"):
        antecedent_drivers(ds)
