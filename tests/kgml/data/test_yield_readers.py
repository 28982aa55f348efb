"""Yield readers: bushel conversions by hand, real tables against SOURCE.md and raw rows, broken tables."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest

from kgml.data.schema import DataValidationError
from kgml.data.yields import (
    IL_COUNTY_FIPS,
    bushels_per_acre_to_t_ha,
    read_khaki_corn,
    read_nass_county,
    read_nass_state,
    read_thompson,
    read_wallace_iowa,
    read_you2017_soybean,
)

# Hand conversion (USDA Agricultural Handbook 697): 1 bu/ac corn = 56 lb × 0.45359237 kg/lb / 0.40468564224 ha
# = 62.77 kg/ha; soybean 60 lb → 67.25 kg/ha.
CORN = 56 * 0.45359237 / 1000 / 0.40468564224
SOY = 60 * 0.45359237 / 1000 / 0.40468564224


def test_bushel_factors():
    assert bushels_per_acre_to_t_ha("corn") == pytest.approx(0.06277, abs=5e-6)
    assert bushels_per_acre_to_t_ha("soybean") == pytest.approx(0.06725, abs=5e-6)
    assert bushels_per_acre_to_t_ha("Corn") == pytest.approx(CORN, rel=1e-12)
    with pytest.raises(ValueError, match="no bushel weight"):
        bushels_per_acre_to_t_ha("quinoa")


# --- real data -------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_you2017_soybean_counties(dataset_dir):
    folder = dataset_dir("usda_nass_soybean_county_yield_you2017")
    ds = read_you2017_soybean(folder)
    assert ds.sizes["county"] == 1814 and list(ds.year.values) == list(range(2003, 2014))  # SOURCE.md
    assert int(np.isfinite(ds.crop_yield.values).sum()) == 16384
    assert len(set(ds.us_state.values)) == 31
    # Raw row "2013,1,1,41.2": Autauga County AL (FIPS 01001), 41.2 bu/ac soybean.
    assert float(ds.crop_yield.sel(county=1001, year=2013)) == pytest.approx(41.2 * SOY, rel=1e-6)
    assert ds.crop_yield.attrs["moisture_fraction"] == 0.13
    # county_locations.csv row "1,47,-87.114,32.334"
    assert float(ds.lat.sel(county=1047)) == pytest.approx(32.334) and float(ds.lon.sel(county=1047)) == pytest.approx(-87.114)
    assert int((ds.us_state == "IL").sum()) > 90 and int(ds.state_fips.sel(county=17019)) == 17
    hq = read_you2017_soybean(folder, high_quality=True)
    assert int(np.isfinite(hq.crop_yield.values).sum()) == 14995


@pytest.mark.realdata
def test_nass_state_tables(dataset_dir):
    folder = dataset_dir("agridat_us_corn_soy_state")
    corn = read_nass_state(folder / "nass.corn.txt")
    assert corn.crop.item() == "corn" and int(np.isfinite(corn.crop_yield.values).sum()) == 6381
    assert int(corn.year.min()) == 1866 and int(corn.year.max()) == 2011
    # Raw row: 1866 "Alabama" 1050000 9
    assert float(corn.crop_yield.sel(state="AL", year=1866)) == pytest.approx(9 * CORN, rel=1e-6)
    assert float(corn.area_harvested.sel(state="AL", year=1866)) == pytest.approx(1050000 * 0.40468564224, rel=1e-6)
    soy = read_nass_state(folder / "nass.soybean.txt")
    assert int(np.isfinite(soy.crop_yield.values).sum()) == 2528
    assert float(soy.crop_yield.sel(state="AL", year=1924)) == pytest.approx(6.5 * SOY, rel=1e-6)


@pytest.mark.realdata
def test_thompson_and_wallace(dataset_dir):
    folder = dataset_dir("agridat_us_corn_soy_state")
    th = read_thompson(folder / "thompson.cornsoy.txt")
    assert th.sizes == {"state": 5, "year": 33, "month": 4}
    il = th.sel(state="IL", year=1930)  # raw: Illinois 1930 23.26 64.3 3.36 71.9 1.01 79.1 1.97 76.4 26.5 17
    assert float(il.tair.sel(month=5)) == pytest.approx((64.3 - 32) * 5 / 9, rel=1e-5)
    assert float(il.precip.sel(month=6)) == pytest.approx(3.36 * 25.4 / 30, rel=1e-5)
    assert float(il.precip.sel(month=7)) == pytest.approx(1.01 * 25.4 / 31, rel=1e-5)
    assert np.isnan(float(il.precip.sel(month=5)))
    assert float(il.crop_yield) == pytest.approx(26.5 * CORN, rel=1e-6)
    assert float(il.soybean_yield) == pytest.approx(17 * SOY, rel=1e-6)
    assert float(il.precip_preseason) == pytest.approx(23.26 * 25.4, rel=1e-5)
    assert float(read_thompson(folder / "thompson.cornsoy.txt", crop="soybean").crop_yield.sel(state="IL", year=1930)) == pytest.approx(17 * SOY, rel=1e-6)
    wa = read_wallace_iowa(folder / "wallace.iowaland.txt")
    assert wa.sizes["county"] == 99
    assert float(wa.crop_yield.sel(county=19001, year=1925)) == pytest.approx(36 * CORN, rel=1e-6)  # adair, 36 bu/ac


@pytest.mark.slow
@pytest.mark.realdata
def test_khaki_corn_table(dataset_dir):
    folder = dataset_dir("khaki2020_corn_il40_weekly_daymet")
    ds = read_khaki_corn(folder)
    assert ds.sizes["county"] == 40 and int(ds.year.min()) == 1980 and int(ds.year.max()) == 2013
    assert int(np.isfinite(ds.crop_yield.values).sum()) == 1328
    adams = ds.sel(county=17001, year=1980)  # first raw row: adams 1980, 82.0 bu/ac, W_1_1 0.274725 …
    assert adams.county_name.item() == "adams"
    assert float(adams.crop_yield) == pytest.approx(82.0 * CORN, rel=1e-6)
    assert float(adams.precip.sel(week=1)) == pytest.approx(0.274725, rel=1e-5)
    assert float(adams.tmax.sel(week=1)) == pytest.approx(1.21978, rel=1e-5)  # W_4_1
    assert float(adams.vp.sel(week=1)) * 100 == pytest.approx(float(pd.read_csv(folder / "corn_il40_weekly_weather_yield.csv.gz", nrows=1)["W_6_1"].iloc[0]), rel=1e-5)
    # sw_in: daylight-mean srad (W_2_1 = 136.334) × daylength / 24 h, FAO-56 eqs. 24, 25, 34 written out here.
    lat, doy = math.radians(float(adams.lat)), 4.0
    decl = 0.409 * math.sin(2 * math.pi * doy / 365 - 1.39)
    daylength = 24 / math.pi * math.acos(-math.tan(lat) * math.tan(decl))
    assert float(adams.sw_in.sel(week=1)) == pytest.approx(136.334 * daylength / 24, rel=1e-4)
    assert ds.soil.dims == ("county", "soil_property", "soil_layer")
    assert np.nanmax(ds.vpd.values) < 60 and np.nanmin(ds.vpd.values) >= 0


@pytest.mark.realdata
def test_illinois_fips_agree_with_nass_centroids(dataset_dir):
    """FIPS from the name table must put each Khaki county at its NASS (You 2017) centroid."""
    ds = read_khaki_corn(dataset_dir("khaki2020_corn_il40_weekly_daymet"))
    loc = pd.read_csv(dataset_dir("usda_nass_soybean_county_yield_you2017") / "county_locations.csv")
    loc = loc.assign(geoid=loc.state_fips * 1000 + loc.county_fips).set_index("geoid")
    for county in ds.county.values:
        distance = math.hypot(float(ds.lat.sel(county=county)) - loc.loc[county, "lat"],
                              float(ds.lon.sel(county=county)) - loc.loc[county, "lon"])
        assert distance < 0.3, (county, distance)
    assert len(IL_COUNTY_FIPS) == 102 and len(set(IL_COUNTY_FIPS.values())) == 102


# --- broken files ----------------------------------------------------------------------------------------


def _county_csv(path, rows):
    pd.DataFrame(rows, columns=["year", "state_fips", "county_fips", "soybean_yield_bu_per_acre"]).to_csv(path, index=False)
    return path


def test_county_table_good_and_zero_placeholder(tmp_path):
    path = _county_csv(tmp_path / "y.csv", [[2010, 17, 19, 50.0], [2011, 17, 19, 0.0], [2010, 19, 1, 40.0]])
    ds = read_nass_county(path, "soybean")
    assert list(ds.county.values) == [17019, 19001] and list(ds.us_state.values) == ["IL", "IA"]
    assert np.isnan(float(ds.crop_yield.sel(county=17019, year=2011)))
    assert ds.attrs["n_zero_yields_masked"] == 1


def test_county_table_duplicates(tmp_path):
    path = _county_csv(tmp_path / "y.csv", [[2010, 17, 19, 50.0], [2010, 17, 19, 51.0]])
    with pytest.raises(DataValidationError, match=r"y\.csv.*repeat the same county/year"):
        read_nass_county(path, "soybean")


def test_county_table_missing_and_bad_columns(tmp_path):
    path = tmp_path / "y.csv"
    pd.DataFrame({"year": [2010], "state": [17], "county_fips": [19], "yield": [50]}).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="'state_fips'.*required column missing"):
        read_nass_county(path, "soybean")
    _county_csv(path, [[2010, 17, 19, "fifty"]])
    with pytest.raises(DataValidationError, match="soybean_yield_bu_per_acre.*row 2: 'fifty' is not a number"):
        read_nass_county(path, "soybean")
    _county_csv(path, [[2010, 17, 19, -5.0]])
    with pytest.raises(DataValidationError, match="negative yields"):
        read_nass_county(path, "soybean")
    _county_csv(path, [[2010, 17, 19, -9999.0], [2011, 17, 19, -9999.0]])
    with pytest.raises(DataValidationError, match="all yields are missing"):
        read_nass_county(path, "soybean")


def test_yield_given_in_kg_per_ha_is_caught(tmp_path):
    path = _county_csv(tmp_path / "y.csv", [[2010 + i, 17, 19, 3000.0 + i] for i in range(5)])
    with pytest.raises(DataValidationError, match="soybean_yield_bu_per_acre.*beyond any recorded yield: kg ha-1"):
        read_nass_county(path, "soybean")


def test_state_table_unknown_state_and_crop(tmp_path):
    path = tmp_path / "nass.corn.txt"
    path.write_text('year\tstate\tacres\tyield\n1900\t"Illinois"\t1e+05\t30\n1900\t"Atlantis"\t1e+05\t30\n')
    with pytest.raises(DataValidationError, match="state.*unknown US state '\"?Atlantis"):
        read_nass_state(path)
    other = tmp_path / "crops.txt"
    other.write_text('year\tstate\tacres\tyield\n1900\t"Illinois"\t1e+05\t30\n')
    with pytest.raises(DataValidationError, match="cannot tell the crop"):
        read_nass_state(other)
    assert float(read_nass_state(other, "corn").crop_yield.sel(state="IL", year=1900)) == pytest.approx(30 * CORN)


def _khaki_frame(county="adams"):
    row = {"loc_id": 0, "state": "illinois", "county": county, "lat": 39.98, "lon": -91.21, "year": 1990,
           "yield_bu_per_acre": 150.0}
    for i, value in enumerate([2.0, 300.0, 0.0, 25.0, 12.0, 1500.0], start=1):
        row.update({f"W_{i}_{j}": value for j in range(1, 53)})
    return pd.DataFrame([row])


@pytest.mark.slow
def test_khaki_broken(tmp_path):
    path = tmp_path / "k.csv.gz"
    with gzip.open(path, "wt") as fh:
        _khaki_frame().to_csv(fh, index=False)
    ds = read_khaki_corn(path)
    assert float(ds.crop_yield.item()) == pytest.approx(150 * CORN, rel=1e-6)
    assert float(ds.vp.isel(week=0).item()) == pytest.approx(15.0)
    with gzip.open(path, "wt") as fh:
        _khaki_frame().drop(columns="W_4_7").to_csv(fh, index=False)
    with pytest.raises(DataValidationError, match="W_4_7.*required column missing"):
        read_khaki_corn(path)
    with gzip.open(path, "wt") as fh:
        _khaki_frame(county="gotham").to_csv(fh, index=False)
    with pytest.raises(DataValidationError, match="county.*no FIPS code known for 'gotham'"):
        read_khaki_corn(path)
    frame = _khaki_frame()
    frame[[f"W_4_{j}" for j in range(1, 53)]] = 298.15  # tmax in K
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)
    with pytest.raises(DataValidationError, match="tmax.*kelvin"):
        read_khaki_corn(path)
