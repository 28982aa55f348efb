"""u* threshold estimation (Papale et al. 2006 moving-point test as REddyProc sEstUstarThold) and filtering,
checked against REddyProc's own regression values and the shared REddyProc example (DE-Tha 1998)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kgml.fluxsite.ustar import (
    UstarError,
    estimate_ustar_threshold,
    fw2_threshold,
    seasons_of,
    ustar_filter,
)

# Binned means from REddyProc tests/testthat/test_UStarFilter.R ("usEstUstarThresholdSingleFw2Binned"): the
# package's expected threshold is 0.46 (tolerance 0.01).
UST = [0.2767, 0.3267, 0.3411, 0.3633, 0.3844, 0.4011, 0.4178, 0.4344, 0.4622, 0.4956, 0.5211, 0.5533, 0.5878,
       0.6022, 0.6244, 0.6544, 0.6933, 0.77, 0.9367, 2.11]
NEE = [1.105, 1.2689, 1.2244, 0.9089, 0.8889, 1.1333, 1.8589, 1.4678, 2.3022, 1.95, 0.9489, 1.0989, 2.3667, 0.9856,
       1.3078, 1.6356, 1.7578, 1.8422, 1.59, -0.3167]


def test_fw2_matches_reddyprocs_regression_value():
    assert fw2_threshold(UST, NEE) == pytest.approx(0.46, abs=0.01)
    assert np.isnan(fw2_threshold(UST[:5], [1.0, 2.0, 3.0, 4.0, 5.0]))  # rising everywhere: no plateau


def test_seasons_join_december_with_the_next_winter():
    t = np.array(["1998-01-15", "1998-03-01", "1998-12-10", "1999-02-01", "1999-06-30"], dtype="datetime64[ns]")
    label, year = seasons_of(t)
    assert label.tolist() == [1998001, 1998003, 1998012, 1998012, 1999006]
    assert year.tolist() == [1998, 1998, 1998, 1998, 1999]


def synthetic_night(threshold: float, n_days: int = 365, seed: int = 0):
    """Half-hourly nights whose NEE is Lloyd–Taylor respiration, damped below ``threshold`` u* (storage),
    with noise; u* independent of temperature."""
    rng = np.random.default_rng(seed)
    times = np.arange("2001-01-01", n_days, dtype="datetime64[D]").astype("datetime64[m]")
    times = (times[:, None] + np.arange(48) * np.timedelta64(30, "m")).ravel()
    hour = (times - times.astype("datetime64[D]")).astype(np.int64) / 60
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(np.int64)
    tair = 8 - 10 * np.cos(2 * np.pi * doy / 365) + rng.normal(0, 2, times.size)
    sw = np.where((hour > 6) & (hour < 18), 300.0, 0.0)
    ustar = rng.gamma(3.0, 0.15, times.size)
    resp = 3.0 * np.exp(308.56 * (1 / 56.02 - 1 / (tair + 46.02)))
    nee = resp * np.minimum(1.0, ustar / threshold) + rng.normal(0, 0.3, times.size)
    return nee, tair, ustar, sw, times


def test_recovers_a_known_threshold():
    for true in (0.25, 0.4):
        nee, tair, ustar, sw, times = synthetic_night(true)
        got = estimate_ustar_threshold(nee, tair, ustar, sw, times, n_boot=20, seed=1)
        seasons = [v for v in got.by_season.values() if np.isfinite(v)]
        assert len(seasons) == 5 and np.median(seasons) == pytest.approx(true, abs=0.03), (true, got.by_season)
        # the year takes its most conservative (largest) season: never below the truth by more than the noise
        assert got.threshold == max(seasons) and true - 0.03 <= got.threshold <= true + 0.1
        assert got.quantiles["U05"] <= got.quantiles["U50"] <= got.quantiles["U95"]


def test_filter_discards_low_turbulence_nights_only():
    bad = ustar_filter([0.1, 0.5, 0.1, np.nan], [0.0, 0.0, 400.0, 0.0], 0.3)
    assert bad.tolist() == [True, False, False, True]


def test_too_few_night_records_is_an_error():
    nee, tair, ustar, sw, times = synthetic_night(0.3, n_days=3)
    with pytest.raises(UstarError, match="valid night-time records"):
        estimate_ustar_threshold(nee, tair, ustar, sw, times, source="tower.csv")


@pytest.mark.realdata
def test_de_tha_1998_threshold_as_reddyproc(dataset_dir):
    """REddyProc's sEstUstarThold on Example_DETha98 gives 0.42 (its regression test, tolerance 0.01)."""
    from kgml.data.towers import read_reddyproc_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_reddyproc_table(dataset_dir("reddyproc_examples") / "Example_DETha98.txt")
    g = lambda v: ds[v].values[0]  # noqa: E731
    got = estimate_ustar_threshold(g("nee"), g("tair"), g("ustar"), g("sw_in"), ds.time.values)
    assert got.threshold == pytest.approx(0.42, abs=0.01)
    assert sorted(got.by_season) == [1998001, 1998003, 1998006, 1998009, 1998012]
    assert got.by_year[1998] == max(v for v in got.by_season.values() if np.isfinite(v))


@pytest.mark.realdata
@pytest.mark.slow
def test_partition_command_on_the_reddyproc_example(dataset_dir, tmp_path, capsys):
    """`kgml partition` on 90 spring days of DE-Tha 1998 (REddyProc format): u* threshold estimated and
    applied, MDS gap-filling, night-time and daytime GPP/Reco in a CF netCDF."""
    import xarray as xr

    from kgml.cli import main
    from tests.kgml.cf_check import assert_cf_units

    src = dataset_dir("reddyproc_examples") / "Example_DETha98.txt"
    lines = src.read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rows = [ln for ln in lines[2:] if ln.strip() and 100 <= float(ln.split("\t")[1]) < 190]
    short = tmp_path / "DE-Tha_spring.txt"
    short.write_text("\n".join(lines[:2] + rows) + "\n")
    out = tmp_path / "part.nc"
    assert main(["partition", str(short), "--site", "DE-Tha", "--out", str(out), "--lat", "50.9636",
                 "--lon", "13.5669", "--utc-offset", "1"]) == 0
    printed = capsys.readouterr().out
    assert "u* threshold" in printed and "nt: mean GPP" in printed and "dt: mean GPP" in printed
    assert_cf_units(out)
    with xr.open_dataset(out) as p:
        assert 0.1 < p.attrs["ustar_threshold"] < 1.0
        assert p.attrs["ustar_threshold_U05"] <= p.attrs["ustar_threshold_U95"]
        gpp = p.gpp_nt.values[0]
        assert np.isfinite(gpp).mean() > 0.95 and 2.0 < np.nanmean(gpp) < 15.0  # spring spruce GPP, gC m-2 d-1
        assert np.isfinite(p.gpp_dt.values).mean() > 0.9
        assert np.isfinite(p.nee_f.values).all()
        assert "u* below" in p.nee.attrs["comment"]
