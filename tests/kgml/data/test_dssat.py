"""DSSAT readers: every .WTH and experiment file of the shared folder, spot values from the raw text, and
deliberately broken files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kgml.data.dssat import (
    parse_dssat_date,
    parse_dssat_tables,
    read_dssat_experiment,
    read_dssat_experiments,
    read_dssat_weather,
    read_wth,
)
from kgml.data.schema import DataValidationError, DataWarning

MJ_DAY_TO_W = 1e6 / 86400.0

WTH_HEADER = """*WEATHER DATA : Test station

@ INSI      LAT     LONG  ELEV   TAV   AMP REFHT WNDHT
  TEST   42.000   93.770   320   8.3  16.7   2.0   1.0
@DATE  SRAD  TMAX  TMIN  RAIN  DEWP  WIND
"""


def wth_lines(n=5, start=1, year=82):
    return [f"{year:02d}{start + i:03d}  {10 + i:4.1f}  {5.0 + i:4.1f}  {-2.0 + i:4.1f}   {i:3.1f}  -3.0  86.4" for i in range(n)]


def write_wth(path, lines, header=WTH_HEADER):
    path.write_text(header + "\n".join(lines) + "\n")
    return path


# --- real data -------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_every_weather_file_loads(dataset_dir):
    folder = dataset_dir("dssat_midwest_maize_soybean_experiments") / "weather"
    files = sorted(folder.glob("*.WTH"))
    assert len(files) == 44
    for path in files:
        with warnings.catch_warnings():
            # IUAF8501 (tmin > tmax once), IUAF9701 (a repeated day), IUAF9401 (blank RAIN on some days)
            warnings.simplefilter("ignore", DataWarning)
            ds = read_wth(path, lon_hemisphere="W", duplicate_dates="drop", blank_cells="missing")
        assert ds.sizes["site"] == 1 and ds.sizes["time"] >= 150, path.name
        assert -100 < float(ds.lon.item()) < -80 and 40 < float(ds.lat.item()) < 46, path.name
        assert np.nanmax(ds.sw_in.values) < 400 and np.nanmin(ds.precip.values) >= 0, path.name


@pytest.mark.realdata
def test_weather_spot_values_and_traps(dataset_dir):
    folder = dataset_dir("dssat_midwest_maize_soybean_experiments") / "weather"
    # AMES8201: first row "82001   5.3 -10.6 -20.0   0.0 -99   -99" (trailing text comments on later rows,
    # a DOS Ctrl-Z at the end); header LONG 93.770 means 93.77 W.
    ds = read_wth(folder / "AMES8201.WTH", lon_hemisphere="W")
    day = ds.isel(site=0).sel(time="1982-01-01")
    assert float(day.sw_in) == pytest.approx(5.3 * MJ_DAY_TO_W, rel=1e-6)
    assert float(day.tmax) == pytest.approx(-10.6) and float(day.tmin) == pytest.approx(-20.0)
    assert float(ds.lon.item()) == pytest.approx(-93.77) and ds.station.item() == "AME2"
    assert str(ds.time.values[-1])[:10] == "1982-12-31"
    assert np.isnan(float(day.ws))  # WIND -99
    assert float(read_wth(folder / "AMES8201.WTH").lon.item()) == pytest.approx(93.77)  # header kept as written
    # IUAF9701 repeats 97200 with different values: an error unless repeated days are dropped.
    with pytest.raises(DataValidationError, match="IUAF9701.WTH.*DATE.*1997-07-19 repeated"):
        read_wth(folder / "IUAF9701.WTH")
    with pytest.warns(DataWarning, match="repeated"):
        dropped = read_wth(folder / "IUAF9701.WTH", duplicate_dates="drop")
    assert np.isnan(float(dropped.tmax.sel(time="1997-07-19").item()))
    # IUAF8501 day 60 has TMIN 10.5 above TMAX 2.2: masked, counted.
    with pytest.warns(DataWarning, match="TMIN 10.5 above TMAX 2.2"):
        iuaf85 = read_wth(folder / "IUAF8501.WTH")
    assert iuaf85.attrs["n_tmin_above_tmax"] == 1
    # CLMO8501 has PAR (mol m-2 d-1): first row PAR 51.20.
    clmo = read_wth(folder / "CLMO8501.WTH")
    assert float(clmo.ppfd_in.isel(site=0, time=0)) == pytest.approx(51.2 * 1e6 / 86400, rel=1e-6)


@pytest.mark.realdata
def test_weather_folder_by_station(dataset_dir):
    folder = dataset_dir("dssat_midwest_maize_soybean_experiments") / "weather"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = read_dssat_weather(folder, lon_hemisphere="W", duplicate_dates="drop", blank_cells="missing")
    assert sorted(ds.site.values) == ["AMES01", "CLMO01", "IUAF01", "IUAF02", "IUAM01", "IUAM02", "IUCA01", "IUCA02", "OHWO01"]
    assert ds.attrs["skipped_files"] == ""
    assert str(ds.time.values[0])[:10] == "1979-01-01" and str(ds.time.values[-1])[:10] == "1999-12-31"
    assert float(ds.tmax.sel(site="AMES01", time="1982-01-01")) == pytest.approx(-10.6)


@pytest.mark.realdata
def test_experiments_measured_values(dataset_dir):
    folder = dataset_dir("dssat_midwest_maize_soybean_experiments") / "experiments"
    ds = read_dssat_experiments(folder)
    assert ds.attrs["skipped_files"] == ""
    assert ds.sizes["site"] == 36  # 13 experiments' treatments
    # IUAF9901.MZA treatment 4: HWAM 10350, CWAM 24443, LAIX 4.00 (kg ha-1 dry matter)
    s = ds.sel(site="IUAF9901/4")
    assert float(s.crop_yield) == pytest.approx(10.350, rel=1e-6) and s.crop_yield.attrs["moisture_fraction"] == 0.0
    assert float(s.biomass_maturity) == pytest.approx(24.443, rel=1e-6) and float(s.lai_max) == pytest.approx(4.0)
    assert s.crop.item() == "maize" and s.cultivar.item() == "DK 611" and s.soil_id.item() == "ISUV950008"
    assert str(s.planting_date.values)[:10] == "1999-05-27"
    # IUAF9901.MZT treatment 1, 99225: LAID 1.93, CWAD 7420
    t = ds.sel(site="IUAF9901/1", time="1999-08-13")
    assert float(t.lai) == pytest.approx(1.93) and float(t.biomass) == pytest.approx(7.42, rel=1e-6)
    # IUCA7901.SBT: three replicate rows on 79163 for treatment 1, LAID .14 .16 .16
    r = ds.sel(site="IUCA7901/1", time="1979-06-12")
    assert float(r.lai) == pytest.approx(np.mean([0.14, 0.16, 0.16]), rel=1e-5) and int(r.n_replicates) == 3
    # IUAM8801.SBT has a second table (soil water): SW1D 0.191 on 88182 for treatment 1
    assert float(ds.dssat_sw1d.sel(site="IUAM8801/1", time="1988-06-30")) == pytest.approx(0.191)
    # OHWO8801.SBA: HWAM 3976, soybean, cultivar Williams-82; ADAT 193 day of year
    o = ds.sel(site="OHWO8801/1")
    assert float(o.crop_yield) == pytest.approx(3.976) and o.crop.item() == "soybean"
    assert float(o.anthesis_doy) == 193


# --- parsing details -------------------------------------------------------------------------------------


def test_dates():
    assert parse_dssat_date("82001") == np.datetime64("1982-01-01")
    assert parse_dssat_date("00366") == np.datetime64("2000-12-31")
    assert parse_dssat_date("2019032") == np.datetime64("2019-02-01")
    assert np.isnat(parse_dssat_date("-99"))
    with pytest.raises(DataValidationError, match="day of year 366 outside 1–365"):
        parse_dssat_date("99366")
    with pytest.raises(DataValidationError, match="not YYDDD"):
        parse_dssat_date("1999-01-01")


def test_fixed_width_tables(tmp_path):
    path = tmp_path / "T.MZX"
    path.write_text(
        "*TREATMENTS                        -------------FACTOR LEVELS------------\n"
        "@N R O C TNAME.................... CU FL SA IC MP MI MF MR MC MT ME MH SM\n"
        " 1 1 0 0 N=56 KG/HA  POP=4.7 PL/M2  1  1  0  1  1  0  1  0  0  0  0  1  1\n"
        "*CULTIVARS\n@C CR INGENO CNAME\n 1 MZ IB1052 DK 611\n"
        "*FIELDS\n@L ID_FIELD WSTA....  FLSA  FLOB  FLDT  FLDD  FLDS  FLST SLTX  SLDP  ID_SOIL    FLNAME\n"
        " 1 IUAF0001 IUAF9901   -99     0 DR000     0     0 00000 -99    110  ISUV950008 -99\n"
    )
    tables = parse_dssat_tables(path)
    treatments, cultivars, fields = tables
    assert treatments.rows[0][treatments.columns.index("TNAME")] == "N=56 KG/HA  POP=4.7 PL/M2"
    assert treatments.rows[0][treatments.columns.index("MH")] == "1"
    assert cultivars.rows[0][cultivars.columns.index("CNAME")] == "DK 611"
    assert fields.rows[0][fields.columns.index("ID_SOIL")] == "ISUV950008"
    assert fields.rows[0][fields.columns.index("WSTA")] == "IUAF9901"


def test_synthetic_weather(tmp_path):
    ds = read_wth(write_wth(tmp_path / "TEST8201.WTH", wth_lines()), lon_hemisphere="W")
    assert float(ds.sw_in.isel(site=0, time=0)) == pytest.approx(10.0 * MJ_DAY_TO_W)
    assert float(ds.ws.isel(site=0, time=0)) == pytest.approx(1.0)  # 86.4 km/d
    # vpd from dew point −3 °C, tmax 5, tmin −2: FAO-56 eqs. 11–12 written out
    es = lambda t: 0.6108 * np.exp(17.27 * t / (t + 237.3))  # noqa: E731
    assert float(ds.vpd.isel(site=0, time=0)) == pytest.approx(10 * (0.5 * (es(5.0) + es(-2.0)) - es(-3.0)), rel=1e-4)
    gap = read_wth(write_wth(tmp_path / "GAPS8201.WTH", wth_lines(2) + wth_lines(2, start=5)))
    assert gap.sizes["time"] == 6 and np.isnan(gap.tmax.isel(site=0, time=2))


# --- broken files ----------------------------------------------------------------------------------------


def test_missing_column(tmp_path):
    header = WTH_HEADER.replace("TMAX", "TMX ")
    with pytest.raises(DataValidationError, match=r"BAD.WTH.*TMAX.*required column missing"):
        read_wth(write_wth(tmp_path / "BAD.WTH", wth_lines(), header=header))


def test_repeated_and_backward_dates(tmp_path):
    lines = wth_lines(3) + wth_lines(1, start=3)
    with pytest.raises(DataValidationError, match="DATE.*line 9: date 1982-01-03 repeated"):
        read_wth(write_wth(tmp_path / "REP.WTH", lines))
    lines = wth_lines(3) + wth_lines(1, start=1)
    with pytest.raises(DataValidationError, match="DATE.*goes back in time"):
        read_wth(write_wth(tmp_path / "BACK.WTH", lines))


def test_bad_day_of_year_and_truncated_row(tmp_path):
    lines = wth_lines(2) + ["82367  10.0   5.0  -2.0   0.0  -3.0  86.4"]
    with pytest.raises(DataValidationError, match="DATE.*line 8.*day of year 367"):
        read_wth(write_wth(tmp_path / "DOY.WTH", lines))
    lines = wth_lines(2) + ["82003  10.0"]
    with pytest.raises(DataValidationError, match="TMAX.*line 8: truncated row"):
        read_wth(write_wth(tmp_path / "TRUNC.WTH", lines))
    with pytest.warns(DataWarning, match="blank values read as missing"):
        ds = read_wth(tmp_path / "TRUNC.WTH", blank_cells="missing")
    assert np.isnan(float(ds.tmax.isel(site=0, time=2))) and float(ds.sw_in.isel(site=0, time=2)) > 0


def test_temperatures_in_kelvin(tmp_path):
    lines = [f"82{d:03d}  10.0 {290.0 + d:5.1f} {280.0 + d:5.1f}   0.0  -3.0  86.4" for d in range(1, 6)]
    with pytest.raises(DataValidationError, match="TMAX.*outside the valid range of tmax.*kelvin"):
        read_wth(write_wth(tmp_path / "KELV.WTH", lines))


def test_all_missing_rain_and_swapped_columns(tmp_path):
    lines = [line[:24] + "   -99" + line[30:] for line in wth_lines()]
    with pytest.raises(DataValidationError, match="RAIN.*all values are missing"):
        read_wth(write_wth(tmp_path / "NORAIN.WTH", lines))
    lines = [f"82{d:03d}  10.0  -5.0  10.0   0.0  -3.0  86.4" for d in range(1, 6)]
    with pytest.raises(DataValidationError, match="TMIN.*swapped"):
        read_wth(write_wth(tmp_path / "SWAP.WTH", lines))


def test_good_file_beside_broken_one(tmp_path):
    write_wth(tmp_path / "GOOD8201.WTH", wth_lines())
    write_wth(tmp_path / "BADD8201.WTH", wth_lines(2) + ["82367  10.0   5.0  -2.0   0.0  -3.0  86.4"])
    with pytest.warns(DataWarning, match="BADD8201.WTH"):
        ds = read_dssat_weather(tmp_path)
    assert list(ds.site.values) == ["GOOD01"] and "BADD8201.WTH" in ds.attrs["skipped_files"]


def test_experiment_errors(tmp_path):
    x = tmp_path / "TEST0001.MZX"
    x.write_text("*EXP.DETAILS: test\n*GENERAL\n@PEOPLE\nnobody\n")
    with pytest.raises(DataValidationError, match="TNAME.*no \\*TREATMENTS table"):
        read_dssat_experiment(x)
    x.write_text(
        "*TREATMENTS\n@N R O C TNAME.................... CU FL SA IC MP MI MF MR MC MT ME MH SM\n"
        " 1 1 0 0 only one                   0  0  0  0  0  0  0  0  0  0  0  0  0\n"
    )
    with pytest.raises(DataValidationError, match="no measured data"):
        read_dssat_experiment(x)
    (tmp_path / "TEST0001.MZT").write_text(
        "*EXP. DATA (T): test\n@TRNO   DATE  LAID  CWAD\n     1 99168  0.50   100\n     2 99168  0.60   120\n"
    )
    with pytest.raises(DataValidationError, match=r"TEST0001.MZT.*TRNO.*treatments \[2\] are not in"):
        read_dssat_experiment(x)
    (tmp_path / "TEST0001.MZT").write_text(
        "*EXP. DATA (T): test\n@TRNO   DATE  LAID  CWAD\n     1 99168  0.50   100\n     1 99168  0.70   140\n"
    )
    ds = read_dssat_experiment(x)
    assert float(ds.lai.item()) == pytest.approx(0.6) and float(ds.biomass.item()) == pytest.approx(0.12)
    (tmp_path / "TEST0001.MZT").write_text(
        "*EXP. DATA (T): test\n@TRNO   DATE  LAID  CWAD\n     1 99168    50   100\n     1 99169    60   140\n"
    )
    with pytest.raises(DataValidationError, match="LAID.*outside the valid range of lai"):
        read_dssat_experiment(x)
