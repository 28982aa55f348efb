"""Station readers (APSIM .met, BioCro hourly CSV) — schema, aggregation goldens, clear errors on broken files —
and the weather generator fitted to the real Ames IA and Champaign IL series."""

from __future__ import annotations

import gzip
import json

import jax
import numpy as np
import pandas as pd
import pytest

from kgml.data import stations as S
from process_models import weather as W

# ---------------------------------------------------------------------------------------------------------
# Small files written by the tests
# ---------------------------------------------------------------------------------------------------------

MET_HEADER = """[weather.met.weather]
site = testsite
latitude = 42.03 (DECIMAL DEGREES)
longitude = 0
! a comment line
year day radn maxt mint rain
() () (MJ/m^2) (oC) (oC) (mm)
"""


def write_met(tmp_path, rows, header=MET_HEADER, name="test.met"):
    path = tmp_path / name
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


GOOD_MET_ROWS = ["2001 365 8.64 4.0 -2.0 0", "2002 1 17.28 10.0 0.0 5.5", "2002 3 4.32 -3.0 -10.0 0.25"]


def hourly_frame(n_days=2, year=2001, first_doy=59):
    hours = np.tile(np.arange(24), n_days)
    doy = np.repeat(np.arange(first_doy, first_doy + n_days), 24)
    temp = 10.0 + 5.0 * np.sin(2 * np.pi * (hours - 9) / 24)
    return pd.DataFrame(
        {
            "year": year, "doy": doy, "hour": hours, "time_zone_offset": -6,
            "precip": np.where(doy == first_doy, 0.5, 0.0),
            "rh": 0.6,
            "solar": np.where((hours >= 6) & (hours <= 18), 1000.0, -2.0),
            "temp": temp, "windspeed": 3.0,
        }
    )


def write_hourly(tmp_path, frame, name="hourly.csv.gz"):
    path = tmp_path / name
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)
    return path


def read_hourly(path, **kw):
    return S.read_biocro_hourly_weather(path, site="X", lat=40.0, lon=-88.0, **kw)


# ---------------------------------------------------------------------------------------------------------
# APSIM .met
# ---------------------------------------------------------------------------------------------------------


def test_read_apsim_met_schema_and_values(tmp_path):
    ds = S.read_apsim_met(write_met(tmp_path, GOOD_MET_ROWS), lon=-93.6)
    assert list(ds.sizes) == ["time"] and ds.sizes["time"] == 3
    np.testing.assert_array_equal(
        ds.time.values, np.array(["2001-12-31", "2002-01-01", "2002-01-03"], dtype="datetime64[ns]")
    )
    assert str(ds["site"].values) == "testsite"
    assert float(ds["lat"]) == 42.03 and float(ds["lon"]) == -93.6
    for name, attrs in S.DAILY_VARIABLES.items():
        assert ds[name].attrs["units"] == attrs["units"]
    np.testing.assert_allclose(ds.sw_in.values, [100.0, 200.0, 50.0], rtol=1e-6)  # MJ m-2 d-1 / 0.0864
    np.testing.assert_allclose(ds.tair.values, [1.0, 5.0, -6.5])
    np.testing.assert_allclose(ds.precip.values, [0.0, 5.5, 0.25])
    # vpd with dew point = tmin: e_s = (e°(tmax) + e°(tmin))/2, e_a = e°(tmin); FAO-56 Table 2.3 e°(10) = 1.228,
    # e°(0) = 0.611 kPa → (1.228 − 0.611)/2 kPa = 3.085 hPa
    assert float(ds.vpd[1]) == pytest.approx(3.085, abs=0.01)
    # the gap (2002-01-02) is kept as a gap; complete_daily_calendar makes it a NaN day
    full = S.complete_daily_calendar(ds)
    assert full.sizes["time"] == 4 and np.isnan(full.tmax.values[2])


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        (GOOD_MET_ROWS, MET_HEADER.replace(" rain", " precipitation"), r"missing column\(s\) \['rain'\]"),
        (["2001 1 8 4.0 -2.0 0", "2001 2 8 4.0 x 0"], MET_HEADER, r"line 9, column 'mint': cannot parse 'x'"),
        (["2001 1 8 4.0 -2.0 0", "2001 2 8 4.0 0"], MET_HEADER, r"line 9 has 5 values"),
        (["2001 1 8 4.0 -2.0 0", "2001 1 8 4.0 -2.0 0"], MET_HEADER, r"duplicate time stamp 2001 day 1"),
        (["2001 2 8 4.0 -2.0 0", "2001 1 8 4.0 -2.0 0"], MET_HEADER, r"non-monotonic"),
        (["2001 1 8 277.0 271.0 0", "2001 2 8 278.0 270.0 0"], MET_HEADER, r"'maxt'.*looks like kelvin"),
        (["2001 1 8 4.0 -2.0 NaN", "2001 2 8 4.0 -2.0 NaN"], MET_HEADER, r"column 'rain' has no valid values"),
        (["2001 1 8 4.0 -2.0 -99"], MET_HEADER, r"'rain'.*missing-value code"),
        (["2001 1 900 4.0 -2.0 0"], MET_HEADER, r"'radn'.*looks like W m-2"),
        (["2001 366 8 4.0 -2.0 0"], MET_HEADER, r"invalid date year=2001 day-of-year=366"),
        (GOOD_MET_ROWS, MET_HEADER.replace("latitude = 42.03 (DECIMAL DEGREES)\n", ""), r"no 'latitude"),
    ],
)
def test_read_apsim_met_errors_name_file_and_column(tmp_path, rows, header, match):
    path = write_met(tmp_path, rows, header)
    with pytest.raises(S.StationDataError, match=match) as info:
        S.read_apsim_met(path)
    assert str(path) in str(info.value)


def test_read_apsim_met_missing_file(tmp_path):
    with pytest.raises(S.StationDataError, match="file not found"):
        S.read_apsim_met(tmp_path / "absent.met")


# ---------------------------------------------------------------------------------------------------------
# BioCro hourly CSV → daily
# ---------------------------------------------------------------------------------------------------------


def test_hourly_aggregation_golden(tmp_path):
    ds = read_hourly(write_hourly(tmp_path, hourly_frame()))
    assert ds.sizes["time"] == 2
    np.testing.assert_array_equal(ds.time.values, np.array(["2001-02-28", "2001-03-01"], dtype="datetime64[ns]"))
    np.testing.assert_allclose(ds.tmax.values, 15.0, atol=1e-4)
    np.testing.assert_allclose(ds.tmin.values, 5.0, atol=1e-4)
    np.testing.assert_allclose(ds.tair.values, 10.0, atol=1e-4)
    np.testing.assert_allclose(ds.precip.values, [12.0, 0.0], rtol=1e-6)  # 0.5 mm h-1 × 24 h
    # 13 daylight hours of PAR 1000 µmol m-2 s-1, night −2 → 0: SW = 13/24 · 1000 / (4.57 · 0.45) W m-2
    np.testing.assert_allclose(ds.sw_in.values, 13 / 24 * 1000 / (4.57 * 0.45), rtol=1e-5)
    # vpd: hourly mean of e°(T)(1 − rh), e°(T) = 0.6108 exp(17.27 T/(T + 237.3)) kPa (FAO-56 eq. 11)
    hours = np.arange(24)
    temp = 10.0 + 5.0 * np.sin(2 * np.pi * (hours - 9) / 24)
    expected = np.mean(10 * 0.6108 * np.exp(17.27 * temp / (temp + 237.3)) * 0.4)
    np.testing.assert_allclose(ds.vpd.values, expected, rtol=1e-5)
    assert "20 of 24" in ds.sw_in.attrs["coverage_rule"] and "PAR" in ds.sw_in.attrs["derivation"]


def test_hourly_coverage_rule(tmp_path):
    frame = hourly_frame(n_days=4)  # the 4th day is complete
    day1 = frame.doy == 59
    frame.loc[day1 & (frame.hour < 4), "temp"] = np.nan  # 20 valid hours: kept
    day2 = frame.doy == 60
    frame.loc[day2 & (frame.hour < 5), "temp"] = np.nan  # 19 valid hours: NaN
    frame = frame[~((frame.doy == 61) & (frame.hour >= 20))]  # 20 rows present: kept
    ds = read_hourly(write_hourly(tmp_path, frame))
    np.testing.assert_array_equal(np.isfinite(ds.tmax.values), [True, False, True, True])
    assert np.isnan(ds.vpd.values[1]) and np.isfinite(ds.sw_in.values[1])  # per-variable rule
    ds_strict = read_hourly(write_hourly(tmp_path, frame, "b.csv.gz"), min_valid_hours=21)
    np.testing.assert_array_equal(np.isfinite(ds_strict.tmax.values), [False, False, False, True])
    np.testing.assert_array_equal(np.isfinite(ds_strict.sw_in.values), [True, True, False, True])
    frame = frame[frame.doy != 62]
    with pytest.raises(S.StationDataError, match=r"column 'tmin' has no valid values after daily aggregation"):
        read_hourly(write_hourly(tmp_path, frame, "c.csv.gz"), min_valid_hours=24)


def _broken(kind):
    frame = hourly_frame()
    if kind == "missing":
        return frame.drop(columns="rh")
    if kind == "unparsable":
        frame = frame.astype({"temp": object})
        frame.loc[5, "temp"] = "warm"
        return frame
    if kind == "duplicate":
        frame.loc[3, "hour"] = 2
        return frame
    if kind == "backwards":
        return pd.concat([frame.iloc[24:], frame.iloc[:24]])
    if kind == "kelvin":
        frame["temp"] = frame["temp"] + 273.15
        return frame
    if kind == "percent":
        frame["rh"] = 60.0
        return frame
    if kind == "all_missing":
        frame["temp"] = np.nan
        return frame
    if kind == "bad_hour":
        frame.loc[7, "hour"] = 24
        return frame
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", r"missing column\(s\) \['rh'\]"),
        ("unparsable", r"line 7, column 'temp': cannot parse 'warm'"),
        ("duplicate", r"duplicate time stamp year 2001 doy 59 hour 2 on line 5"),
        ("backwards", r"non-monotonic"),
        ("kelvin", r"'temp'.*looks like kelvin"),
        ("percent", r"'rh'.*looks like percent"),
        ("all_missing", r"column 'temp' has no valid values"),
        ("bad_hour", r"column 'hour': 24"),
    ],
)
def test_hourly_errors_name_file_and_column(tmp_path, kind, match):
    path = write_hourly(tmp_path, _broken(kind))
    with pytest.raises(S.StationDataError, match=match) as info:
        read_hourly(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Packaged default generator
# ---------------------------------------------------------------------------------------------------------


def test_default_generator_resource_loads_and_records_its_source():
    params = S.load_default_generator()
    assert float(params.lat) == pytest.approx(42.03)
    text = (S._RESOURCE_DIR / S.DEFAULT_GENERATOR_RESOURCE).read_text()
    doc = json.loads(text)
    assert doc["source"]["file"] == S.ames_file().name and doc["fitted_on"] and doc["source"]["sha256"]
    w = W.generate_weather(params, jax.random.key(0), 365)
    assert float(w.tmax.mean()) == pytest.approx(14.9, abs=2.0)  # Ames annual mean tmax ≈ 14.9 °C


# ---------------------------------------------------------------------------------------------------------
# Real data (skipped when absent)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ames(request):
    dataset_dir = request.getfixturevalue("dataset_dir")
    return S.read_ames_ia(dataset_dir(S.AMES_DATASET).parent)


@pytest.fixture(scope="module")
def champaign(request):
    dataset_dir = request.getfixturevalue("dataset_dir")
    return S.read_champaign_il(dataset_dir(S.CHAMPAIGN_DATASET).parent)


@pytest.mark.realdata
def test_real_ames_schema(ames):
    assert ames.sizes["time"] == 6012
    assert str(ames["site"].values) == "Ames_IA" and float(ames["lat"]) == 42.03
    years = ames.time.dt.year.values
    assert not np.isin(years, [2014, 2015]).any()
    assert float(ames.sw_in[0]) == pytest.approx(4.0 / 0.0864, rel=1e-5)  # first row radn = 4 MJ m-2 d-1
    assert all(int(ames[v].isnull().sum()) == 0 for v in S.DAILY_VARIABLES)


@pytest.mark.realdata
def test_real_champaign_schema_and_daily_golden(champaign, dataset_dir):
    assert {"tmin", "tmax", "tair", "sw_in", "precip", "vpd"} <= set(champaign.data_vars)
    assert float(champaign["lat"]) == S.CHAMPAIGN_LAT
    years = champaign.time.dt.year.values
    assert years.min() == 1995 and years.max() == 2023 and not np.isin(years, [2014, 2015]).any()
    # independent aggregation of one day straight from the raw file
    raw = pd.read_csv(S.champaign_file(dataset_dir(S.CHAMPAIGN_DATASET).parent))
    day = raw[(raw.year == 2010) & (raw.doy == 200)]
    got = champaign.sel(time="2010-07-19")
    assert float(got.tmax) == pytest.approx(day.temp.max(), abs=1e-4)
    assert float(got.sw_in) == pytest.approx(day.solar.clip(lower=0).mean() / (4.57 * 0.45), rel=1e-5)
    assert float(got.precip) == pytest.approx(day.precip.sum(), rel=1e-5)
    # early 1995 has no temperature: those days are NaN, radiation is still there
    assert np.isnan(float(champaign.tmax[0])) and np.isfinite(float(champaign.sw_in[0]))


def _observed_vs_simulated(ds):
    params = S.fit_generator_from_dataset(ds)
    x = S.generator_inputs(ds)
    obs = W.monthly_statistics(x["tmin"], x["tmax"], x["sw_in"], x["precip"], x["doy"])
    w = W.generate_weather(params, jax.random.key(2024), n_years=100)
    sim = W.monthly_statistics(w.tmin, w.tmax, w.sw_in, w.precip, w.doy)
    return {k: np.asarray(v) for k, v in obs.items()}, {k: np.asarray(v) for k, v in sim.items()}, params


@pytest.mark.realdata
@pytest.mark.parametrize("station", ["ames", "champaign"])
def test_real_station_generator_reproduces_climate(request, station):
    obs, sim, _ = _observed_vs_simulated(request.getfixturevalue(station))
    np.testing.assert_allclose(sim["tmax_mean"], obs["tmax_mean"], atol=1.0)
    np.testing.assert_allclose(sim["tmin_mean"], obs["tmin_mean"], atol=1.0)
    np.testing.assert_allclose(sim["wet_fraction"], obs["wet_fraction"], atol=0.05)
    assert sim["annual_precip"] == pytest.approx(float(obs["annual_precip"]), rel=0.10)
    np.testing.assert_allclose(sim["sw_in_mean"], obs["sw_in_mean"], rtol=0.06)


@pytest.mark.realdata
def test_packaged_default_matches_a_refit(ames, dataset_dir, tmp_path):
    """The committed JSON is what `fit_default_generator` produces from the data."""
    doc = S.fit_default_generator(dataset_dir(S.AMES_DATASET).parent, tmp_path / "refit.json")
    refit = W.params_from_dict(json.loads((tmp_path / "refit.json").read_text())["params"])
    packaged = S.load_default_generator()
    for a, b in zip(jax.tree_util.tree_leaves(refit), jax.tree_util.tree_leaves(packaged), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)
    assert doc["source"]["n_valid_days"] == 6012
