"""Gap-filling: MDS on constructed cases with hand-computed fills (every look-up stage and quality class,
tolerances at their edges), the vectorised code against a per-gap loop, DE-Tha 1998 against the reference
tool's fills and on artificial gaps, the ML fillers, and the ``kgml gapfill`` command round trip."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from kgml.data.schema import DataValidationError
from kgml.fluxsite.gapfill import (
    gap_run_lengths,
    mds_gapfill,
    mds_gapfill_dataset,
    mds_gapfill_loop,
    ml_gapfill,
    time_features,
)

SPD = 48


def far_series(n_days: int = 160, seed: int = 0):
    """Observed NEE everywhere; drivers unique per step and pairwise further apart than any tolerance
    (SW_IN 100, TA 10, VPD 20 apart), so nothing matches unless a test places a match."""
    n = n_days * SPD
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    y = np.round(rng.normal(0.0, 5.0, n), 2)
    return y, 5000.0 + 100.0 * i, -2000.0 - 10.0 * i, 3000.0 + 20.0 * i


def mds(y, sw, ta, vpd, **kw):
    return mds_gapfill(y, sw, ta, vpd, steps_per_day=kw.pop("steps_per_day", SPD), **kw)


def put(arrays, j, sw=None, ta=None, vpd=None):
    _, s, t, v = arrays
    if sw is not None:
        s[j] = sw
    if ta is not None:
        t[j] = ta
    if vpd is not None:
        v[j] = vpd


def check_fill(res, g, values, qc, method, window):
    values = np.asarray(values, dtype=float)
    assert res.qc[g] == qc
    assert res.method[g] == method
    assert res.window[g] == window
    assert res.n[g] == values.size
    value = res.filled[g] if qc > 0 else res.estimate[g]  # observed steps: the fill_all estimate
    assert value == pytest.approx(values.mean(), abs=1e-12)
    assert res.sd[g] == pytest.approx(values.std(ddof=1), abs=1e-12)


# --- look-up table stages -------------------------------------------------------------------------------


def test_lut_three_drivers_7_days_with_tolerance_edges():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 50 * SPD
    y[g] = np.nan
    put(arrays, g, 300.0, 10.0, 8.0)
    j1, j2 = g - 7 * SPD, g + 3  # window edge (inclusive) and a close one
    put(arrays, j1, 349.9, 12.4, 12.9)
    put(arrays, j2, 300.0, 7.6, 3.1)
    put(arrays, g + 7 * SPD + 1, 300.0, 10.0, 8.0)  # one step outside ±7 d
    put(arrays, g + 10, 300.0, 12.5, 8.0)  # TA exactly 2.5 away: strict <
    put(arrays, g - 10, 300.0, 10.0, 13.0)  # VPD exactly 5 away
    put(arrays, g + 11, 350.0, 10.0, 8.0)  # SW_IN exactly 50 away
    put(arrays, g + 12, 300.0, 10.0, 8.0)
    y[g + 12] = np.nan  # matching drivers but no flux
    put(arrays, g + 13, 300.0, np.nan, 8.0)  # a candidate with a missing driver never matches
    res = mds(y, sw, ta, vpd)
    check_fill(res, g, [y[j1], y[j2]], qc=1, method=1, window=14)


@pytest.mark.parametrize(
    ("sw_gap", "inside", "outside"),
    [
        (30.0, [59.0, 0.5], [60.0, 65.0]),  # tolerance min(50, 30) = 30
        (5.0, [24.9, -14.9], [25.0, 40.0]),  # at least 20
        (400.0, [449.0, 351.0], [450.0, 350.0]),  # at most 50
    ],
)
def test_sw_in_tolerance_is_tightened_to_20_50(sw_gap, inside, outside):
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 40 * SPD
    y[g] = np.nan
    put(arrays, g, sw_gap, 10.0, 5.0)
    for k, value in enumerate(inside):
        put(arrays, g + 100 + k, value, 10.0, 5.0)
    for k, value in enumerate(outside):
        put(arrays, g - 100 - k, value, 10.0, 5.0)
    check_fill(mds(y, sw, ta, vpd), g, [y[g + 100], y[g + 101]], qc=1, method=1, window=14)


def test_sw_in_tolerance_options():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 40 * SPD
    y[g] = np.nan
    put(arrays, g, 400.0, 10.0, 5.0)
    for k, value in enumerate([420.0, 370.0, 440.0]):
        put(arrays, g + 5 + k, value, 10.0, 5.0)
    res = mds(y, sw, ta, vpd, sw_in_tolerance=35.0)  # 440 now outside
    check_fill(res, g, [y[g + 5], y[g + 6]], qc=1, method=1, window=14)


def test_lut_three_drivers_14_days_is_class_b():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 60 * SPD
    y[g] = np.nan
    put(arrays, g, 500.0, 20.0, 10.0)
    j1, j2 = g + 14 * SPD, g - 8 * SPD
    put(arrays, j1, 500.0, 20.0, 10.0)
    put(arrays, j2, 520.0, 21.0, 12.0)
    put(arrays, g + 14 * SPD + 1, 500.0, 20.0, 10.0)
    check_fill(mds(y, sw, ta, vpd), g, [y[j1], y[j2]], qc=2, method=1, window=28)


def test_lut_sw_in_only_7_days():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 60 * SPD
    y[g] = np.nan
    put(arrays, g, 500.0, 20.0, 10.0)
    j1, j2, j3 = g - 7 * SPD, g + 50, g + 51
    put(arrays, j1, 510.0)
    put(arrays, j2, 460.0)
    put(arrays, j3, 500.0, ta=np.nan)  # TA is not a condition in this stage
    put(arrays, g + 7 * SPD + 1, 500.0)
    check_fill(mds(y, sw, ta, vpd), g, [y[j1], y[j2], y[j3]], qc=1, method=2, window=14)


def blocked_gap(arrays, g):
    """Remove 5 whole days around step g so that the diurnal course within ±2 days finds nothing."""
    y = arrays[0]
    day = g // SPD
    y[(day - 2) * SPD : (day + 3) * SPD] = np.nan


@pytest.mark.parametrize(
    ("offset_days", "qc", "window"),
    [(21, 2, 42), (28, 2, 56), (35, 3, 70)],  # 56 is the last B of the three-driver look-up
)
def test_lut_three_drivers_long_windows(offset_days, qc, window):
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 80 * SPD + 20
    blocked_gap(arrays, g)
    put(arrays, g, 600.0, 15.0, 9.0)
    j1, j2 = g + offset_days * SPD, g - (offset_days - 6) * SPD
    put(arrays, j1, 600.0, 15.0, 9.0)
    put(arrays, j2, 640.0, 13.0, 6.0)
    check_fill(mds(y, sw, ta, vpd), g, [y[j1], y[j2]], qc=qc, method=1, window=window)


@pytest.mark.parametrize(("offset_days", "qc", "window"), [(14, 2, 28), (21, 3, 42)])
def test_lut_sw_in_only_long_windows(offset_days, qc, window):
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 80 * SPD + 20
    blocked_gap(arrays, g)
    put(arrays, g, 600.0, 15.0, 9.0)
    j1, j2 = g + offset_days * SPD, g - offset_days * SPD
    put(arrays, j1, 620.0)
    put(arrays, j2, 590.0)
    check_fill(mds(y, sw, ta, vpd), g, [y[j1], y[j2]], qc=qc, method=2, window=window)


# --- mean diurnal course ----------------------------------------------------------------------------------


def test_mdc_same_day():
    y, sw, ta, vpd = far_series()
    g = 30 * SPD + 24
    y[g] = np.nan
    check_fill(mds(y, sw, ta, vpd), g, y[[g - 2, g - 1, g + 1, g + 2]], qc=1, method=3, window=1)


def test_mdc_needs_two_values_then_widens_to_one_day():
    y, sw, ta, vpd = far_series()
    g = 30 * SPD + 24
    y[g - 2 : g + 2] = np.nan  # only g + 2 left on the same day
    expected = [y[g + 2], *y[g - SPD - 2 : g - SPD + 3], *y[g + SPD - 2 : g + SPD + 3]]
    check_fill(mds(y, sw, ta, vpd), g, expected, qc=2, method=3, window=3)


def test_mdc_two_days_is_last_class_b():
    y, sw, ta, vpd = far_series()
    g = 30 * SPD + 24
    for d in (-1, 0, 1):
        y[g + d * SPD - 2 : g + d * SPD + 3] = np.nan
    expected = np.concatenate([y[g + d * SPD - 2 : g + d * SPD + 3] for d in (-2, 2)])
    check_fill(mds(y, sw, ta, vpd), g, expected, qc=2, method=3, window=5)


def test_mdc_seven_days_is_class_c():
    arrays = far_series()
    y = arrays[0]
    g = 80 * SPD + 20
    blocked_gap(arrays, g)
    idx = [g + d * SPD + k for d in range(-7, 8) for k in range(-2, 3)]
    expected = [y[i] for i in idx if np.isfinite(y[i])]
    check_fill(mds(*arrays), g, expected, qc=3, method=3, window=15)


def test_mdc_hourly_uses_two_records_either_side():
    y, sw, ta, vpd = far_series(n_days=60)
    g = 30 * 24 + 12
    y[g] = np.nan
    res = mds(y, sw, ta, vpd, steps_per_day=24)
    check_fill(res, g, y[[g - 2, g - 1, g + 1, g + 2]], qc=1, method=3, window=1)


def test_hourly_lut_window_edge():
    arrays = far_series(n_days=60)
    y, sw, ta, vpd = arrays
    g = 30 * 24
    y[g] = np.nan
    put(arrays, g, 300.0, 10.0, 8.0)
    put(arrays, g + 7 * 24, 300.0, 10.0, 8.0)
    put(arrays, g - 7 * 24, 310.0, 11.0, 9.0)
    put(arrays, g - 7 * 24 - 1, 300.0, 10.0, 8.0)
    res = mds(y, sw, ta, vpd, steps_per_day=24)
    check_fill(res, g, [y[g + 7 * 24], y[g - 7 * 24]], qc=1, method=1, window=14)


# --- long gaps, missing drivers, options --------------------------------------------------------------------


def test_gaps_longer_than_60_days_are_not_filled():
    y, sw, ta, vpd = far_series(n_days=200)
    y[10 * SPD : 70 * SPD] = np.nan  # exactly 60 days: filled
    y[100 * SPD : 160 * SPD + 1] = np.nan  # one step more: left as a gap
    res = mds(y, sw, ta, vpd)
    assert np.isfinite(res.filled[10 * SPD : 70 * SPD]).all()
    assert np.isnan(res.filled[100 * SPD : 160 * SPD + 1]).all()
    assert (res.qc[100 * SPD : 160 * SPD + 1] == -1).all()
    assert (res.n[100 * SPD : 160 * SPD + 1] == 0).all()
    res = mds(y, sw, ta, vpd, max_gap_days=61)
    assert np.isfinite(res.filled).all()


def test_missing_driver_at_the_gap_falls_through_to_the_diurnal_course():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 50 * SPD
    y[g] = np.nan
    put(arrays, g, np.nan, 10.0, 8.0)
    put(arrays, g + 7, 300.0, 10.0, 8.0)
    put(arrays, g + 8, 300.0, 10.0, 8.0)
    check_fill(mds(y, sw, ta, vpd), g, y[[g - 2, g - 1, g + 1, g + 2]], qc=1, method=3, window=1)


def test_without_vpd_only_sw_in_lookups_are_used():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 50 * SPD
    y[g] = np.nan
    put(arrays, g, 300.0, 10.0, 8.0)
    put(arrays, g + 5, 310.0)  # TA far away: irrelevant without VPD
    put(arrays, g + 6, 290.0)
    with pytest.warns(UserWarning, match="no vpd"):
        res = mds_gapfill(y, sw, ta, None)
    check_fill(res, g, [y[g + 5], y[g + 6]], qc=1, method=2, window=14)


def test_fill_all_keeps_gap_fills_and_estimates_observed_steps():
    arrays = far_series()
    y, sw, ta, vpd = arrays
    g = 50 * SPD
    y[g] = np.nan
    put(arrays, g, 300.0, 10.0, 8.0)
    put(arrays, g + 3, 300.0, 10.0, 8.0)
    put(arrays, g + 4, 300.0, 10.0, 8.0)
    gaps_only = mds(y, sw, ta, vpd)
    every = mds(y, sw, ta, vpd, fill_all=True)
    gap = np.isnan(y)
    # identical up to summation order (the sums are matrix-vector products over different blocks)
    np.testing.assert_allclose(every.filled, gaps_only.filled, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(every.estimate[gap], gaps_only.estimate[gap], rtol=1e-12, atol=1e-12)
    assert np.isnan(gaps_only.sd[~gap]).all()
    # an observed step's own value is among those averaged (REddyProc FillAll)
    check_fill(every, g + 3, [y[g + 3], y[g + 4]], qc=0, method=1, window=14)
    assert every.estimate_qc[g + 3] == 1
    assert np.isfinite(every.sd[~gap]).all()


def test_daily_data():
    arrays = far_series(n_days=400)
    y, sw, ta, vpd = arrays
    g = 200
    y[g] = np.nan
    put(arrays, g, 150.0, 12.0, 6.0)
    put(arrays, g - 7, 160.0, 13.0, 7.0)
    put(arrays, g + 7, 150.0, 12.0, 6.0)
    put(arrays, g + 8, 150.0, 12.0, 6.0)
    res = mds(y, sw, ta, vpd, steps_per_day=1)
    check_fill(res, g, [y[g - 7], y[g + 7]], qc=1, method=1, window=14)
    y[300] = np.nan  # unique drivers: the diurnal course degenerates to neighbouring days
    res = mds(y, sw, ta, vpd, steps_per_day=1)
    check_fill(res, 300, [y[299], y[301]], qc=2, method=3, window=3)


def test_vectorised_equals_per_gap_loop_on_random_series():
    rng = np.random.default_rng(3)
    n = 90 * SPD
    hour = (np.arange(n) % SPD) / 2.0
    sw = np.maximum(0.0, 700 * np.sin(np.pi * (hour - 6) / 12)) * rng.uniform(0.3, 1.0, n)
    ta = np.round(10 + 6 * np.sin(np.pi * (hour - 9) / 12) + rng.normal(0, 2, n), 1)
    vpd = np.round(np.maximum(0.0, 4 + 0.5 * ta + rng.normal(0, 2, n)), 1)
    y = np.round(2.0 - 0.02 * sw + rng.normal(0, 1, n), 2)
    y[rng.random(n) < 0.3] = np.nan
    y[20 * SPD : 26 * SPD] = np.nan
    sw[rng.random(n) < 0.02] = np.nan
    ta[rng.random(n) < 0.02] = np.nan
    for fill_all in (False, True):
        fast = mds_gapfill(y, sw, ta, vpd, fill_all=fill_all)
        slow = mds_gapfill_loop(y, sw, ta, vpd, fill_all=fill_all)
        for field in ("filled", "qc", "estimate", "estimate_qc", "sd", "n", "method", "window"):
            np.testing.assert_allclose(getattr(fast, field), getattr(slow, field), rtol=1e-9, atol=1e-9, err_msg=field)


def test_gap_run_lengths():
    np.testing.assert_array_equal(
        gap_run_lengths(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=bool)), [2, 2, 0, 1, 0, 0, 3, 3, 3]
    )
    assert gap_run_lengths(np.zeros(0, dtype=bool)).size == 0


@pytest.mark.parametrize(
    ("change", "variable", "message"),
    [
        (lambda a: a[0].__setitem__(slice(None), np.nan), "flux", "all values are missing"),
        (lambda a: a[1].__setitem__(slice(None), np.nan), "sw_in", "shortwave"),
        (lambda a: a.__setitem__(2, a[2][:-1]), "tair", "length"),
    ],
)
def test_bad_input_names_the_variable(change, variable, message):
    arrays = list(far_series(n_days=10))
    change(arrays)
    with pytest.raises(DataValidationError, match=message) as err:
        mds_gapfill(*arrays, source="site.csv")
    assert err.value.variable == variable
    assert "site.csv" in str(err.value)


def test_missing_sw_in_is_an_error():
    y = far_series(n_days=10)[0]
    with pytest.raises(DataValidationError, match="shortwave"):
        mds_gapfill(y, None)


# --- datasets and real data -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detha98(dataset_dir):
    """DE-Tha 1998 REddyProc example as float64 arrays straight from the text (-9999 → NaN)."""
    path = dataset_dir("reddyproc_examples") / "Example_DETha98.txt"
    raw = pd.read_csv(path, sep="\t", skiprows=[1], lineterminator="\r").replace(-9999.0, np.nan)
    return path, {c: raw[c].to_numpy(dtype=float) for c in ("NEE", "Rg", "Tair", "VPD")}


@pytest.mark.realdata
def test_detha98_vectorised_equals_loop(detha98):
    _, d = detha98
    fast = mds_gapfill(d["NEE"], d["Rg"], d["Tair"], d["VPD"])
    slow = mds_gapfill_loop(d["NEE"], d["Rg"], d["Tair"], d["VPD"])
    for field in ("filled", "qc", "sd", "n", "method", "window"):
        np.testing.assert_allclose(getattr(fast, field), getattr(slow, field), rtol=1e-10, atol=1e-10, err_msg=field)
    gap = np.isnan(d["NEE"])
    assert np.isfinite(fast.filled).all()
    counts = np.bincount(fast.qc[gap], minlength=4)
    assert counts[1] > 0.85 * gap.sum() and counts[2] > 0 and counts[3] > 0  # every class occurs


@pytest.mark.realdata
def test_detha98_against_reference_tool_fills(dataset_dir):
    """Provenance: ``Example_DE-Tha.1996.1998.hourly_selVars.nc`` (REddyProc examples) holds ``NEE_f``, gap-filled
    by the La Thuile / PV-Wave MDS of Reichstein et al. 2005 that REddyProc re-implements (its code notes where
    it is deliberately not congruent: window lengths, quality limits). That file has rH not VPD: VPD is
    computed as REddyProc's fCalcVPDfromRHandTair does. Expected: most fills identical, the rest close."""
    import xarray as xr

    ds = xr.open_dataset(dataset_dir("reddyproc_examples") / "Example_DE-Tha.1996.1998.hourly_selVars.nc", decode_times=False)
    get = {v: ds[v].values.ravel().astype(float) for v in ("NEE", "NEE_f", "Rg", "rH", "Tair", "year")}
    ds.close()
    sel = get["year"] == 1998
    ta = get["Tair"][sel]
    vpd = 6.1078 * np.exp(17.08085 * ta / (234.175 + ta)) * (1.0 - get["rH"][sel] / 100.0)
    res = mds_gapfill(get["NEE"][sel], get["Rg"][sel], ta, vpd)
    gap = np.isnan(get["NEE"][sel]) & np.isfinite(get["NEE_f"][sel])
    diff = res.filled[gap] - get["NEE_f"][sel][gap]
    assert gap.sum() > 6000
    assert np.mean(np.abs(diff) < 0.01) > 0.75  # 0.82 when written
    assert np.sqrt(np.mean(diff**2)) < 0.4  # µmol m-2 s-1; 0.25 when written
    assert abs(diff.mean()) < 0.05


@pytest.mark.realdata
def test_detha98_artificial_gaps_in_published_range(detha98):
    """Remove 10 % of the measured half-hours at random and fill them. Moffat et al. (2007, Agric. For. Meteorol.
    147:209) compare gap-fillers on artificial gaps at European forest sites: MDS RMSEs are a few µmol m-2 s-1
    with negligible bias; we require 2–4.5 µmol m-2 s-1, |bias| < 0.3 and r² > 0.7 (3.2, −0.02, 0.80 when written)."""
    _, d = detha98
    rng = np.random.default_rng(1)
    obs = np.flatnonzero(np.isfinite(d["NEE"]))
    removed = rng.choice(obs, size=obs.size // 10, replace=False)
    y = d["NEE"].copy()
    y[removed] = np.nan
    res = mds_gapfill(y, d["Rg"], d["Tair"], d["VPD"])
    err = res.filled[removed] - d["NEE"][removed]
    assert 2.0 < np.sqrt(np.mean(err**2)) < 4.5
    assert abs(err.mean()) < 0.3
    assert np.corrcoef(res.filled[removed], d["NEE"][removed])[0, 1] ** 2 > 0.7
    assert 0.55 < np.mean(np.abs(err) < res.sd[removed]) < 0.9  # fsd is a usable 1-σ


@pytest.mark.realdata
def test_dataset_wrapper_matches_arrays_and_handles_missing_rows(detha98):
    from kgml.data.towers import read_reddyproc_table

    path, _ = detha98
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_reddyproc_table(path)
    out = mds_gapfill_dataset(ds)
    g = lambda v: ds[v].values[0].astype(float)  # noqa: E731
    ref = mds_gapfill(g("nee"), g("sw_in"), g("tair"), g("vpd"))
    np.testing.assert_allclose(out["nee_f"].values[0], ref.filled, rtol=1e-6)
    assert out["nee_f"].attrs["units"] == "gC m-2 d-1"
    dropped = ds.isel(time=np.r_[0:100, 101:ds.sizes["time"]])  # a row missing from the time axis
    out2 = mds_gapfill_dataset(dropped)
    assert out2.sizes["time"] == ds.sizes["time"] - 1
    assert np.isfinite(out2["nee_f"].values).all()


# --- machine-learning fillers ---------------------------------------------------------------------------


def synthetic_tower(n_days=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_days * SPD
    times = np.datetime64("2020-05-01") + np.arange(n) * np.timedelta64(30, "m")
    hour = (np.arange(n) % SPD) / 2.0
    sw = np.maximum(0.0, 800 * np.sin(np.pi * (hour - 6) / 12)) * rng.uniform(0.4, 1.0, n)
    ta = 15 + 6 * np.sin(np.pi * (hour - 9) / 12) + rng.normal(0, 1, n)
    vpd = np.maximum(0.0, 5 + 0.6 * (ta - 15) + rng.normal(0, 1, n))
    truth = 3.0 * np.exp(0.07 * (ta - 15)) - 25 * sw / (sw + 400)
    y = truth + rng.normal(0, 0.5, n)
    return times, sw, ta, vpd, y


@pytest.mark.parametrize("model", ["gbm", "rf"])
def test_ml_filler_recovers_synthetic_flux_with_calibrated_sd(model):
    pytest.importorskip("sklearn")
    times, sw, ta, vpd, y = synthetic_tower()
    rng = np.random.default_rng(1)
    gaps = rng.random(y.size) < 0.2
    gaps[20 * SPD : 27 * SPD] = True  # a week-long gap
    obs = y.copy()
    obs[gaps] = np.nan
    res = ml_gapfill(obs, {"sw_in": sw, "tair": ta, "vpd": vpd}, times, model=model, n_estimators=60)
    err = res.filled[gaps] - y[gaps]
    assert np.sqrt(np.mean(err**2)) < 1.0  # noise σ = 0.5
    # σ calibrated on held-out days: ±1σ covers close to the nominal 68 % of gap errors
    assert 0.55 < np.mean(np.abs(err) < res.sd[gaps]) < 0.82
    assert res.calibration != 1.0
    raw = ml_gapfill(obs, {"sw_in": sw, "tair": ta, "vpd": vpd}, times, model=model, n_estimators=60, calibrate=False)
    np.testing.assert_allclose(res.sd[gaps], raw.sd[gaps] * res.calibration, rtol=1e-9)
    np.testing.assert_array_equal(res.filled, raw.filled)
    assert (res.qc[gaps] == 1).all() and (res.qc[~gaps] == 0).all()
    np.testing.assert_array_equal(res.filled[~gaps], y[~gaps])


def test_calibration_split_holds_out_whole_days():
    from kgml.fluxsite.gapfill import calibration_split

    observed = np.ones(100 * SPD, bool)
    observed[::7] = False
    held = calibration_split(observed, SPD, seed=3)
    assert 0.08 < held.sum() / observed.sum() <= 0.10
    assert not (held & ~observed).any()
    by_day = held.reshape(100, SPD) | ~observed.reshape(100, SPD)
    assert np.all(by_day.all(axis=1) | ~held.reshape(100, SPD).any(axis=1))  # a day is held out whole or not at all
    np.testing.assert_array_equal(held, calibration_split(observed, SPD, seed=3))


def test_hybrid_gapfill_dataset_two_sites():
    import xarray as xr

    from kgml.fluxsite.fluxhybrid import HybridConfig
    from kgml.fluxsite.gapfill import hybrid_gapfill_dataset

    sites = []
    for seed in (0, 1):
        times, sw, ta, vpd, y = synthetic_tower(n_days=12, seed=seed)
        y[np.random.default_rng(seed).random(y.size) < 0.2] = np.nan
        sites.append((y, sw, ta, vpd))
    arr = lambda k: (("site", "time"), np.stack([s[k] for s in sites]).astype(np.float32))  # noqa: E731
    ds = xr.Dataset(
        {"nee": arr(0), "sw_in": arr(1), "tair": arr(2), "vpd": arr(3)},
        coords={"site": ["XX-One", "XX-Two"], "time": times},
        attrs={"source": "constructed", "time_resolution": "HH"},
    )
    ds["nee"].attrs["units"] = "gC m-2 d-1"
    out = hybrid_gapfill_dataset(ds, config=HybridConfig(members=2, max_steps=300))
    assert set(out.data_vars) == {"nee_f", "nee_fsd", "nee_fqc", "gpp_hybrid", "reco_hybrid", "q10_reco"}
    assert out["gpp_hybrid"].attrs["units"] == "gC m-2 d-1"
    obs = np.isfinite(ds["nee"].values)
    np.testing.assert_array_equal(out["nee_f"].values[obs], ds["nee"].values[obs])
    assert np.isfinite(out["nee_f"].values).all() and (out["nee_fqc"].values[~obs] == 1).all()
    np.testing.assert_allclose(
        out["nee_f"].values[~obs], (out["reco_hybrid"] - out["gpp_hybrid"]).values[~obs], atol=1e-4
    )
    assert np.all((out["q10_reco"].values >= 1.0) & (out["q10_reco"].values <= 5.0))


def test_ml_filler_errors():
    pytest.importorskip("sklearn")
    times, sw, ta, vpd, y = synthetic_tower(n_days=5)
    with pytest.raises(DataValidationError, match="no driver"):
        ml_gapfill(y, {}, times)
    with pytest.raises(DataValidationError, match="all missing") as err:
        ml_gapfill(y, {"sw_in": np.full(y.size, np.nan)}, times)
    assert err.value.variable == "sw_in"
    with pytest.raises(DataValidationError, match="not strictly increasing"):
        ml_gapfill(y, {"sw_in": sw}, times[::-1])
    with pytest.raises(ValueError, match="model"):
        ml_gapfill(y, {"sw_in": sw}, times, model="svm")


def test_time_features():
    t = np.datetime64("2021-01-01") + np.arange(96) * np.timedelta64(30, "m")
    f = time_features(t)
    assert set(f) == {"doy_sin", "doy_cos", "days", "hour_sin", "hour_cos"}
    assert f["days"][48] == 1.0
    np.testing.assert_allclose(f["hour_sin"][:48], f["hour_sin"][48:])
    daily = time_features(np.datetime64("2021-01-01") + np.arange(10) * np.timedelta64(1, "D"))
    assert "hour_sin" not in daily


@pytest.mark.realdata
def test_cosore_forest_soil_co2_gapfill(dataset_dir):
    """Daily chamber soil respiration at a deciduous forest (COSORE d20190626_VARGAS): remove 10 % of the days,
    fill with the random forest on soil temperature and moisture; R² > 0.8 (0.95 when written)."""
    pytest.importorskip("sklearn")
    from kgml.data.soil_respiration import read_cosore_dataset
    from kgml.fluxsite.gapfill import soil_co2_gapfill

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_cosore_dataset(dataset_dir("cosore") / "datasets" / "d20190626_VARGAS", aggregate_ports=True)
    y = ds["rsoil"].values[0].astype(float)
    rng = np.random.default_rng(0)
    obs = np.flatnonzero(np.isfinite(y))
    removed = rng.choice(obs, obs.size // 10, replace=False)
    holed = ds.copy(deep=True)
    holed["rsoil"].values[0, removed] = np.nan
    out = soil_co2_gapfill(holed, n_estimators=60)
    filled = out["rsoil_f"].values[0][removed]
    assert np.isfinite(filled).all()
    assert np.corrcoef(filled, y[removed])[0, 1] ** 2 > 0.8
    assert np.isfinite(out["rsoil_fsd"].values[0][removed]).all()
    assert (out["rsoil_fqc"].values[0][np.isfinite(y) & ~np.isin(np.arange(y.size), removed)] == 0).all()


# --- the kgml gapfill command -----------------------------------------------------------------------------


def run_cli(*args):
    from kgml.cli import main

    return main(["gapfill", *map(str, args)])


def original_fields_kept(src_lines, out_lines, sep, added):
    assert len(src_lines) == len(out_lines)
    for a, b in zip(src_lines, out_lines, strict=True):
        if a.strip():
            assert b.startswith(a + sep) or b == a
            if b != a:
                assert b[len(a) + 1 :].count(sep) == added - 1


@pytest.mark.realdata
def test_cli_round_trips_a_fluxnet_daily_file(dataset_dir, tmp_path, capsys):
    from kgml.data.towers import read_fluxnet_file

    src = dataset_dir("fluxnet2015_subset_dd_us-ne1") / "FLX_US-Ne1_FLUXNET2015_SUBSET_DD_2001-2013_1-4.csv"
    out = tmp_path / src.name
    assert run_cli(src, "--out", out) == 0
    assert "NEE_VUT_REF: 13 gaps" in capsys.readouterr().out
    a, b = src.read_text().splitlines(), out.read_text().splitlines()
    original_fields_kept(a, b, ",", 6)
    table = pd.read_csv(out)
    raw = pd.read_csv(src)
    assert list(table.columns[: raw.shape[1]]) == list(raw.columns)
    gaps = (raw["NEE_VUT_REF_QC"] < 0.5).to_numpy()
    y = raw["NEE_VUT_REF"].to_numpy(dtype=float, copy=True)
    y[gaps] = np.nan
    ref = mds_gapfill(y, raw["SW_IN_F"], raw["TA_F"], raw["VPD_F"], steps_per_day=1, fill_all=True)
    np.testing.assert_allclose(table["NEE_VUT_REF_F_MDS"], ref.filled, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(table["NEE_VUT_REF_F_MDS_QC"], ref.qc)
    np.testing.assert_array_equal(table["NEE_VUT_REF_F_MDS"][~gaps], raw["NEE_VUT_REF"][~gaps])
    assert (table["NEE_VUT_REF_F_MDS_QC"][gaps] > 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before, after = read_fluxnet_file(src), read_fluxnet_file(out)
    np.testing.assert_array_equal(before["nee"].values, after["nee"].values)


@pytest.mark.realdata
def test_cli_round_trips_reddyproc_table_byte_for_byte(detha98, tmp_path):
    path, d = detha98
    out = tmp_path / "filled.txt"
    assert run_cli(path, "--out", out, "--gaps-only") == 0
    src_bytes, out_bytes = path.read_bytes(), out.read_bytes()
    assert b"\r" in out_bytes and b"\n" not in out_bytes  # CR line endings kept
    src_lines, out_lines = src_bytes.decode().split("\r"), out_bytes.decode().split("\r")
    original_fields_kept(src_lines, out_lines, "\t", 6)
    assert out_lines[0].endswith("NEE_f\tNEE_fqc\tNEE_fsd\tNEE_fnum\tNEE_fmeth\tNEE_fwin")
    assert out_lines[1].endswith("--\t--\t--\t--\t--\tdays")
    table = pd.read_csv(out, sep="\t", skiprows=[1], lineterminator="\r")
    ref = mds_gapfill(d["NEE"], d["Rg"], d["Tair"], d["VPD"])
    np.testing.assert_allclose(table["NEE_f"], ref.filled, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(table["NEE_fqc"], ref.qc)
    assert (table["NEE_fsd"][np.isfinite(d["NEE"])] == -9999).all()  # --gaps-only: no estimate for measured


@pytest.mark.realdata
def test_cli_gzip_ameriflux_file_with_metadata_lines(dataset_dir, tmp_path, capsys):
    src = dataset_dir("oneflux_qca_ustar_hourly") / "US-Ne1" / "US-Ne1_qca_ustar_2010.csv.gz"
    out = tmp_path / "ne1.csv.gz"
    assert run_cli(src, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "24 steps per day" in printed and "SW_IN only" in printed
    a = gzip.open(src, "rt").read().splitlines()
    b = gzip.open(out, "rt").read().splitlines()
    original_fields_kept(a[23:], b[23:], ",", 6)
    assert a[:23] == b[:23]  # the key,value metadata lines
    table = pd.read_csv(out, skiprows=23)
    nee = table["NEE"].replace(-9999.0, np.nan)
    assert (table["NEE_F_MDS"][nee.notna()] == table["NEE"][nee.notna()]).all()
    assert (table.loc[nee.isna(), "NEE_F_MDS_QC"] >= 1).all()


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    src = write_fluxnet(tmp_path / "FLX_XX-Tst_FLUXNET2015_FULLSET_HH_2020-2020_1.csv")
    assert run_cli(src, "--out", src) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    assert run_cli(src, "--out", out) == 2
    assert out.read_text() == "keep me"
    assert run_cli(src, "--out", out, "--force") == 0
    assert out.read_text().startswith("TIMESTAMP_START")


def write_fluxnet(path, n_days=20, drop=(), nee=None, order=None):
    rng = np.random.default_rng(0)
    n = n_days * SPD
    start = pd.Timestamp("2020-06-01") + pd.to_timedelta(np.arange(n) * 30, unit="min")
    hour = (np.arange(n) % SPD) / 2.0
    cols = {
        "TIMESTAMP_START": start.strftime("%Y%m%d%H%M"),
        "TIMESTAMP_END": (start + pd.Timedelta(minutes=30)).strftime("%Y%m%d%H%M"),
        "NEE": np.round(rng.normal(0, 5, n), 3) if nee is None else nee,
        "SW_IN": np.round(np.maximum(0, 700 * np.sin(np.pi * (hour - 6) / 12)), 1),
        "TA": np.round(15 + rng.normal(0, 3, n), 2),
        "VPD": np.round(np.abs(rng.normal(8, 3, n)), 2),
    }
    frame = pd.DataFrame(cols)
    frame.loc[rng.random(n) < 0.2, "NEE"] = -9999
    if order is not None:
        frame = frame.iloc[order]
    frame = frame.drop(columns=list(drop))
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("kwargs", "column", "message"),
    [
        ({"drop": ["SW_IN"]}, "SW_IN_F", "shortwave"),
        ({"nee": np.full(20 * SPD, -9999.0)}, "NEE", "all values are missing"),
        ({"order": np.r_[0:10, 11, 10, 12 : 20 * SPD]}, "TIMESTAMP_START", "not monotonic"),
        ({"order": np.r_[0:10, 11 : 20 * SPD]}, "TIMESTAMP_START", "irregular step"),
    ],
)
def test_cli_bad_input_names_file_column_and_problem(tmp_path, capsys, kwargs, column, message):
    src = write_fluxnet(tmp_path / "bad.csv", **kwargs)
    assert run_cli(src, "--out", tmp_path / "out.csv") == 2
    err = capsys.readouterr().err
    assert str(src) in err and repr(column) in err and message in err
    assert not (tmp_path / "out.csv").exists()


def test_cli_fills_constructed_file_and_ml_method(tmp_path):
    src = write_fluxnet(tmp_path / "site.csv")
    out = tmp_path / "site_filled.csv"
    assert run_cli(src, "--out", out, "--gaps-only") == 0
    table = pd.read_csv(out)
    nee = table["NEE"].replace(-9999.0, np.nan).to_numpy()
    ref = mds_gapfill(nee, table["SW_IN"], table["TA"], table["VPD"])
    np.testing.assert_allclose(table["NEE_F_MDS"], ref.filled, rtol=1e-6)
    if pytest.importorskip("sklearn"):
        out2 = tmp_path / "site_rf.csv"
        from kgml.cli.gapfill import gapfill_file

        report = gapfill_file(src, out2, method="rf", fill_all=False)
        assert report.added == ["NEE_F_RF", "NEE_F_RF_QC", "NEE_F_RF_SD"]
        t2 = pd.read_csv(out2)
        assert (t2["NEE_F_RF"] != -9999).all()
