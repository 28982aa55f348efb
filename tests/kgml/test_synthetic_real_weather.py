"""Real-weather site-years (`kgml.synthetic.real_weather_years`) and the corpus they drive
(``CorpusSpec(weather="stations")``): whole 365-day years, plausible drivers, seeded draws that reproduce the
source series exactly, and clear errors for a missing source."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kgml import synthetic as syn

#: Ranges a real Midwest daily series must stay in (generous; a unit mistake or a parsing error leaves them).
PLAUSIBLE = {"tmin": (-45.0, 35.0), "tmax": (-35.0, 46.0), "tair": (-40.0, 40.0), "sw_in": (0.0, 420.0),
             "vpd": (0.0, 80.0), "precip": (0.0, 300.0)}
#: Small sources only (the 40 weekly Daymet counties and the hourly Champaign file are slower to read).
FAST = ("ames_ia", "il_counties_nldas", "us_ne1")


@pytest.fixture(scope="module")
def pool(dataset_dir):
    for name in FAST:
        for folder in syn.REAL_WEATHER_SOURCES[name].datasets:
            dataset_dir(folder)  # skips, naming the folder, when it is absent
    return syn.real_weather_years(dataset_dir(syn.REAL_WEATHER_SOURCES["ames_ia"].datasets[0]).parent, sources=FAST)



def test_real_weather_years_are_whole_plausible_years(pool):
    assert pool.sizes["day"] == syn.DAYS_PER_YEAR == 365
    assert pool["day"].values.tolist() == list(range(1, 366))
    assert pool.attrs["sources_used"] == ", ".join(FAST) and pool.attrs["sources_skipped"] == ""
    assert set(pool["state"].values.astype(str)) == {"IA", "IL", "NE"}
    for v, (lo, hi) in PLAUSIBLE.items():
        x = pool[v].values
        assert np.isfinite(x).all(), v
        assert lo <= x.min() and x.max() <= hi, (v, x.min(), x.max())
        assert pool[v].attrs["units"]
    assert (pool["tmin"].values <= pool["tair"].values + 1e-4).all()
    assert (pool["tair"].values <= pool["tmax"].values + 1e-4).all()
    # Seasonality: July is warmer and sunnier than January at every site-year.
    jan, jul = slice(0, 31), slice(181, 212)
    assert (pool["tair"].values[:, jul].mean(1) > pool["tair"].values[:, jan].mean(1) + 10).all()
    assert (pool["sw_in"].values[:, jul].mean(1) > pool["sw_in"].values[:, jan].mean(1)).all()
    # US-Ne1: the truncated 2001-05-30 … 2012-11-26 copy gives exactly the whole years 2002–2011.
    ne1 = pool["source"].values == "us_ne1"
    assert pool["year"].values[ne1].tolist() == list(range(2002, 2012))
    # The NLDAS counties lack daily extremes: tmin/tmax = tair ∓ DIURNAL_RANGE/2.
    from kgml.data.assemble import DIURNAL_RANGE

    nl = pool["source"].values == "il_counties_nldas"
    np.testing.assert_allclose(pool["tmax"].values[nl] - pool["tmin"].values[nl], DIURNAL_RANGE, atol=1e-4)


def test_leap_year_drops_29_february(pool, data_dir):
    """Ames 2004 (a leap year): day 60 of the pool is 1 March, the day after 28 February (day 59)."""
    from kgml.data.stations import read_ames_ia

    i = np.flatnonzero((pool["station"].values == "Ames_IA") & (pool["year"].values == 2004))
    assert i.size == 1
    raw = read_ames_ia(data_dir)
    day = raw["tmax"].sel(time=slice("2004-01-01", "2004-12-31")).values
    assert day.size == 366
    np.testing.assert_allclose(pool["tmax"].values[i[0]], np.delete(day, 59), rtol=0, atol=1e-6)


def test_station_corpus_is_seeded_and_reproduces_the_source_series(pool):
    spec = syn.CorpusSpec(vegetation=("maize",), sites_per_block=3, years=2, seed=5, weather="stations",
                          weather_sources=FAST, gaps=syn.GapModel.none())
    a = syn.make_corpus(spec, weather_pool=pool)
    b = syn.make_corpus(spec, weather_pool=pool)
    for v in ("tair", "precip", "nee", "crop_yield"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert (a["weather_year"].values == b["weather_year"].values).all()
    c = syn.make_corpus(dataclasses.replace(spec, seed=6), weather_pool=pool)
    assert not (c["weather_year"].values == a["weather_year"].values).all()

    station = pool["station"].values.astype(str)
    state_of = dict(zip(station, pool["state"].values.astype(str), strict=True))
    for s in range(a.sizes["site"]):
        st = str(a["weather_station"].values[s])
        assert state_of[st] == str(a["state"].values[s])  # a state's sites draw from its own pool
        first = np.flatnonzero(station == st)[0]
        assert a["lat"].values[s] == pytest.approx(float(pool["lat"].values[first]))
        assert a["lon"].values[s] == pytest.approx(float(pool["lon"].values[first]))
        for k, year in enumerate(a["weather_year"].values[s]):
            i = np.flatnonzero((station == st) & (pool["year"].values == year))
            assert i.size == 1
            days = slice(k * syn.DAYS_PER_YEAR, (k + 1) * syn.DAYS_PER_YEAR)
            for v in syn.REAL_WEATHER_VARIABLES:
                np.testing.assert_array_equal(a[v].values[s, days], pool[v].values[i[0]], err_msg=f"{st} {year} {v}")
    assert a.attrs["weather"].startswith("stations")
    assert "US-Ne1" in a.attrs["weather_site_years"]
    # Same parameter draws as with the generator: only the weather differs.
    g = syn.make_corpus(dataclasses.replace(spec, weather="generator"))
    np.testing.assert_array_equal(a["theta_vmax25_c4"].values, g["theta_vmax25_c4"].values)
    assert "weather_year" not in g.coords


def test_missing_source_is_a_clear_error_or_skipped_when_asked(tmp_path, dataset_dir):
    ames = dataset_dir(syn.REAL_WEATHER_SOURCES["ames_ia"].datasets[0])
    (tmp_path / ames.name).symlink_to(ames, target_is_directory=True)
    with pytest.raises(syn.RealWeatherError, match="us_ne1.*fluxnet2015_subset_dd_us-ne1"):
        syn.real_weather_years(tmp_path, sources=("ames_ia", "us_ne1"))
    ds = syn.real_weather_years(tmp_path, sources=("ames_ia", "us_ne1"), missing="skip")
    assert ds.attrs["sources_used"] == "ames_ia"
    assert "us_ne1" in ds.attrs["sources_skipped"]
    assert set(ds["source"].values.astype(str)) == {"ames_ia"}
    with pytest.raises(syn.RealWeatherError, match="none of the real-weather sources"):
        syn.real_weather_years(tmp_path, sources=("us_ne1",), missing="skip")
    # A state without real weather in the pool is an error naming the state, not a silent generator fallback.
    spec = syn.CorpusSpec(vegetation=("maize",), sites_per_block=1, years=1, weather="stations",
                          weather_sources=("ames_ia",))
    with pytest.raises(syn.RealWeatherError, match="state 'IL'"):
        syn.make_corpus(spec, weather_pool=ds)
    with pytest.raises(ValueError, match="unknown real-weather source"):
        syn.real_weather_years(tmp_path, sources=("mars",))


def test_broken_source_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "apsimx_ames_ia_daily_weather"
    folder.mkdir()
    (folder / "Ames_2000-2018_excl2014-2015.met").write_text(
        "latitude = 42.0\nyear day radn maxt mint rain\n2001 1 5.0 20.0 310.0 0.0\n")
    with pytest.raises(syn.RealWeatherError, match="ames_ia"):
        syn.real_weather_years(tmp_path, sources=("ames_ia",), missing="skip")
