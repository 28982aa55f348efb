"""SoyFACE biomass and KGML-DA county (NLDAS-2 weather + SLOPE GPP) readers on small synthetic files: values and
unit conversions by hand, and deliberately broken files whose errors must name the file, the column and the problem
while a good file in the same folder still loads."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from kgml.data.nldas_county import (
    read_nldas_county,
    read_nldas_county_weather,
    read_slope_gpp_county,
)
from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.soyface import read_soyface_biomass, read_soyface_table

from .cropfiles import (
    gpp_frame,
    soyface_frame,
    weather_frame,
    write_county_folder,
    write_csv,
    write_soyface,
)

#: 1 MJ m-2 d-1 as a 24-h mean flux: 1e6 J / 86400 s (written out independently of kgml.variables).
MJ_DAY_TO_W = 1e6 / 86400.0


def es_hpa(t):
    """FAO-56 eq. 11 in hPa, written out independently of process_models."""
    return 6.108 * np.exp(17.27 * t / (t + 237.3))


def _locations(tmp_path):
    return write_csv(pd.DataFrame({"state_fips": [17, 17, 17], "county_fips": [1, 3, 19],
                                   "lon": [-91.195, -89.35, -88.2], "lat": [39.986, 37.184, 40.14]}),
                     tmp_path / "county_locations.csv")


# --- SoyFACE ---------------------------------------------------------------------------------------------


def test_soyface_values_units_and_metadata(tmp_path):
    folder = tmp_path / "soyface"
    amb = soyface_frame(seed=1)
    write_soyface(folder, 2005, "ambient", amb)
    write_soyface(folder, 2005, "co2", soyface_frame(seed=2, scale=1.2))
    write_soyface(folder, 2006, "ambient", soyface_frame((170, 190), seed=3), std=False)
    ds = read_soyface_biomass(folder, locations=_locations(tmp_path))
    assert list(ds.site.values) == ["SoyFACE_ambient", "SoyFACE_elevated"]
    assert ds.sizes["time"] == 6 and str(ds.time.values[0])[:10] == "2005-06-21"  # 2005 DOY 172
    one = ds.sel(site="SoyFACE_ambient", time="2005-06-21")
    assert float(one.leaf_biomass) == pytest.approx(amb.Leaf_Mg_per_ha[0], rel=1e-6)  # Mg ha-1 = t ha-1
    assert float(one.pod_biomass) == pytest.approx(amb.Rep_Mg_per_ha[0], abs=1e-7)
    assert float(one.leaf_biomass_sd) == pytest.approx(0.1 * amb.Leaf_Mg_per_ha[0], rel=1e-5)
    last = ds.sel(site="SoyFACE_ambient", time="2005-08-02")
    assert float(last.biomass) == pytest.approx(amb.Leaf_Mg_per_ha[3] + amb.Stem_Mg_per_ha[3] + amb.Rep_Mg_per_ha[3], rel=1e-6)
    assert ds.biomass.attrs["units"] == "t ha-1" and ds.grain_biomass.attrs["units"] == "t ha-1"
    assert np.isnan(float(ds.leaf_biomass_sd.sel(site="SoyFACE_ambient", time="2006-06-19")))  # no std table
    assert np.isnan(float(ds.leaf_biomass.sel(site="SoyFACE_elevated", time="2006-06-19")))  # not harvested
    assert ds.attrs["missing_std_tables"] == "2006_ambient"
    assert float(ds.co2_target.sel(site="SoyFACE_elevated")) == 550.0 and np.isnan(float(ds.co2_target[0]))
    assert float(ds.lat[0]) == pytest.approx(40.14) and float(ds.lon[0]) == pytest.approx(-88.2)
    assert int(ds.county[0]) == 17019 and ds.igbp.values[0] == "CRO" and ds.crop.item() == "soybean"
    with pytest.warns(DataWarning, match="no lat/lon"):
        read_soyface_biomass(folder)


def test_soyface_other_mass_units_convert(tmp_path):
    frame = soyface_frame()
    kg = frame.rename(columns={c: c.replace("Mg_per_ha", "kg_per_ha") for c in frame.columns})
    for c in kg.columns[1:]:
        kg[c] = kg[c] * 1000.0
    path = write_soyface(tmp_path, 2004, "ambient", kg, std=False)
    table = read_soyface_table(path)
    np.testing.assert_allclose(table.leaf_biomass.to_numpy(), frame.Leaf_Mg_per_ha.to_numpy(), rtol=1e-12)


def _lines(frame):
    return frame.to_csv(index=False, lineterminator="\n").splitlines()


BROKEN_SOYFACE = {
    "truncated row": (lambda ls: "\n".join(ls[:3] + [ls[3][:12]] + ls[4:]), r"line 4 has \d+ fields"),
    "renamed column": (lambda ls: "\n".join([ls[0].replace("Leaf_Mg_per_ha", "LeafMass_Mg_per_ha")] + ls[1:]), "Leaf.*similar columns"),
    "no DOY": (lambda ls: "\n".join([ls[0].replace("DOY", "Day")] + ls[1:]), "'DOY'.*required column missing"),
    "repeated day": (lambda ls: "\n".join(ls[:3] + [ls[2]] + ls[3:]), "DOY.*line 4 repeated"),
    "day goes back": (lambda ls: "\n".join([ls[0], ls[2], ls[1], *ls[3:]]), "DOY.*goes back"),
    "day outside year": (lambda ls: "\n".join(ls[:-1] + ["367" + ls[-1][3:]]), "DOY.*outside 1–365"),
    "empty": (lambda ls: ls[0] + "\n", "no data rows"),
    "non-numeric": (lambda ls: "\n".join(ls[:2] + [ls[2].replace(ls[2].split(",")[1], "abc", 1)] + ls[3:]), "non-numeric value 'abc'"),
    "all missing": (lambda ls: "\n".join([ls[0]] + [",".join(r.split(",")[:2] + ["-9999"] + r.split(",")[3:]) for r in ls[1:]]),
                    "Stem_Mg_per_ha.*all values are missing"),
    "unknown unit": (lambda ls: "\n".join([ls[0].replace("Seed_Mg_per_ha", "Seed_lb_per_acre")] + ls[1:]), "unknown unit suffix 'lb_per_acre'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SOYFACE))
def test_soyface_broken_file_named_and_good_file_kept(tmp_path, case):
    edit, match = BROKEN_SOYFACE[case]
    folder = tmp_path / "soyface"
    write_soyface(folder, 2004, "ambient", soyface_frame(seed=4))
    bad = write_soyface(folder, 2005, "co2", std=False, text=edit(_lines(soyface_frame(seed=5))) + "\n")
    with pytest.raises(DataValidationError, match=match) as info:
        read_soyface_table(bad)
    assert bad.name in str(info.value)
    with pytest.warns(DataWarning, match=bad.name):
        ds = read_soyface_biomass(folder, lat=40.0, lon=-88.0)
    assert list(ds.site.values) == ["SoyFACE_ambient"] and bad.name in ds.attrs["skipped_files"]
    with pytest.raises(DataValidationError, match=bad.name):
        read_soyface_biomass(folder, lat=40.0, lon=-88.0, errors="raise")


@pytest.mark.parametrize(("factor", "column", "hint"), [(1000.0, "Stem_Mg_per_ha", "kg ha-1"), (-1.0, "Leaf_Mg_per_ha", "negative")])
def test_soyface_unit_mistakes(tmp_path, factor, column, hint):
    frame = soyface_frame(scale=3.0)
    frame[column] = frame[column] * factor
    path = write_soyface(tmp_path, 2002, "ambient", frame, std=False)
    with pytest.raises(DataValidationError, match=hint) as info:
        read_soyface_table(path)
    assert info.value.variable == column and path.name in str(info.value)


def test_soyface_std_table_mismatch_and_strange_names(tmp_path):
    folder = tmp_path / "soyface"
    write_soyface(folder, 2005, "ambient", soyface_frame())
    sd = soyface_frame((172, 186, 200, 215))
    (folder / "2005_ambient_biomass_std.csv").write_text(sd.to_csv(index=False))
    (folder / "2005_ozone_biomass.csv").write_text(soyface_frame().to_csv(index=False))
    with pytest.warns(DataWarning) as record:
        ds = read_soyface_biomass(folder, lat=40.0, lon=-88.0)
    messages = " ".join(str(w.message) for w in record)
    assert "differ from the means table" in messages and "2005_ozone_biomass.csv" in messages
    assert "leaf_biomass" in ds and "leaf_biomass_sd" not in ds
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="no SoyFACE biomass table"):
        read_soyface_biomass(empty)


# --- KGML-DA county weather and GPP ----------------------------------------------------------------------


def test_county_weather_values_and_conversions(tmp_path):
    frame = weather_frame(years=(2000, 2001), days=5)
    path = write_csv(frame, tmp_path / "county_daily_inputs_2000-2001.csv")
    ds = read_nldas_county_weather(path)
    assert ds.sizes == {"county": 2, "time": 10} and list(ds.county.values) == [17001, 17003]
    row = frame.iloc[6]  # county 17001, 2001 day 2
    day = ds.sel(county=17001, time="2001-01-02")
    assert float(day.tair) == pytest.approx(row.Tair, rel=1e-6) and float(day.rh) == pytest.approx(row.RH, rel=1e-6)
    assert float(day.ws) == pytest.approx(row.Wind, rel=1e-6) and float(day.precip) == pytest.approx(row.Precipitation, rel=1e-6)
    assert float(day.sw_in) == pytest.approx(row.Radiation * MJ_DAY_TO_W, rel=1e-6)
    assert float(day.vpd) == pytest.approx(es_hpa(row.Tair) * (1 - row.RH / 100), rel=1e-4)
    assert float(ds.soil_wilting_point.sel(county=17003)) == pytest.approx(0.20) and ds.soil_ks.attrs["units"] == "unknown"
    assert ds.attrs["time_resolution"] == "DD" and ds.sw_in.attrs["units"] == "W m-2"
    # a column already in W m-2, declared so, is kept as is
    watts = frame.assign(Radiation=frame.Radiation * MJ_DAY_TO_W)
    ds_w = read_nldas_county_weather(write_csv(watts, tmp_path / "w.csv"), units={"Radiation": "W m-2"})
    np.testing.assert_allclose(ds_w.sw_in.values, ds.sw_in.values, rtol=1e-6)


def test_county_folder_merges_weather_gpp_and_places(tmp_path):
    folder = write_county_folder(tmp_path / "kgmlda", weather_frame(years=(2000,), days=5),
                                 gpp_frame(counties=(17001,), years=(2000,), days=3))
    ds = read_nldas_county(folder, locations=_locations(tmp_path))
    assert ds.gpp.dims == ("county", "crop", "time") and list(ds.crop.values) == ["corn", "soybean"]
    raw = gpp_frame(counties=(17001,), years=(2000,), days=3)
    first = raw[(raw.crop == "soybean") & (raw.doy == 2)].gpp.iloc[0]
    assert float(ds.gpp.sel(county=17001, crop="soybean", time="2000-01-02")) == pytest.approx(first, rel=1e-6)
    assert np.isnan(ds.gpp.sel(county=17003).values).all()  # no GPP rows for that county
    assert list(ds.county_name.values) == ["adams", "alexander"] and list(ds.us_state.values) == ["IL", "IL"]
    assert float(ds.lat.sel(county=17003)) == pytest.approx(37.184) and float(ds.lon.sel(county=17001)) == pytest.approx(-91.195)
    assert "31 December is missing" in ds.attrs["notes"]  # 2000 is a leap year without doy 366
    with pytest.warns(DataWarning, match="no lat/lon"):
        read_nldas_county(folder)


def _edit(frame, fn):
    out = frame.copy()
    fn(out)
    return out


BROKEN_WEATHER = {
    "kelvin": (lambda f: f.__setitem__("Tair", f.Tair + 273.15), "Tair", "kelvin"),
    "rh fraction": (lambda f: f.__setitem__("RH", f.RH / 100), "RH", "fraction"),
    "radiation in W m-2": (lambda f: f.__setitem__("Radiation", f.Radiation * 50), "Radiation", "already in W m-2"),
    "all missing": (lambda f: f.__setitem__("Wind", -9999), "Wind", "all values are missing"),
    "soil varies": (lambda f: f.loc.__setitem__((3, "Bulk density"), 1.7), "Bulk density", "varies within county 17001"),
    "bad fips": (lambda f: f.loc.__setitem__((2, "fips"), 17), "fips", "5-digit"),
    "day 367": (lambda f: f.loc.__setitem__((4, "Day"), 367), "Day", "is not a date"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_WEATHER))
def test_county_weather_broken_values(tmp_path, case):
    fn, column, match = BROKEN_WEATHER[case]
    path = write_csv(_edit(weather_frame(days=6), fn), tmp_path / "county_daily_inputs_bad.csv")
    with pytest.raises(DataValidationError, match=match) as info:
        read_nldas_county_weather(path)
    assert info.value.variable == column and path.name in str(info.value)


def test_county_weather_broken_structure(tmp_path):
    frame = weather_frame(days=4)
    lines = frame.to_csv(index=False, lineterminator="\n").splitlines()
    cases = {
        "truncated": ("\n".join(lines[:5] + [lines[5][:30]] + lines[6:]), r"line 6 has \d+ fields"),
        "renamed": ("\n".join([lines[0].replace("Tair", "Tavg")] + lines[1:]), "'Tair'.*required column missing"),
        "repeated": ("\n".join(lines[:3] + [lines[2]] + lines[3:]), "fips 17001.*line 4 repeats"),
        "backwards": ("\n".join([lines[0], lines[2], lines[1], *lines[3:]]), "goes back in time"),
        "empty": (lines[0] + "\n", "no data rows"),
    }
    for name, (text, match) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text + "\n")
        with pytest.raises(DataValidationError, match=match) as info:
            read_nldas_county_weather(path)
        assert path.name in str(info.value), name
    placeholders = frame.assign(Fertilizer=1.0)
    with pytest.warns(DataWarning, match="Fertilizer"):
        read_nldas_county_weather(write_csv(placeholders, tmp_path / "ph.csv"))


def test_gpp_broken_and_good_weather_still_loads(tmp_path):
    gpp = gpp_frame(days=4)
    lines = gpp.to_csv(index=False, lineterminator="\n").splitlines()
    for text, column, match in (
        ("\n".join(lines[:3] + [lines[2]] + lines[3:]), "doy", "repeats"),
        ("\n".join([lines[0].replace("gpp", "GPP_NT")] + lines[1:]), "gpp", "required column missing"),
        ("\n".join(lines[:2] + [lines[2].replace(",corn,", ",,")] + lines[3:]), "crop", "empty crop name at line 3"),
    ):
        folder = write_county_folder(tmp_path / f"case_{column}", weather_frame(days=3))
        (folder / "slope_gpp_county_daily.csv").write_text(text + "\n")
        with pytest.raises(DataValidationError, match=match) as info:
            read_slope_gpp_county(folder / "slope_gpp_county_daily.csv")
        assert info.value.variable == column
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            ds = read_nldas_county(folder, locations=_locations(tmp_path))
        assert any("slope_gpp_county_daily.csv" in str(w.message) for w in record)
        assert "gpp" not in ds and "tair" in ds and "slope_gpp_county_daily.csv" in ds.attrs["skipped_files"]
        with pytest.raises(DataValidationError):
            read_nldas_county(folder, locations=_locations(tmp_path), errors="raise")
