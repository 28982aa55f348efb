"""Every dataset folder of ../shared/data loads through ``kgml data summary``'s readers, with the site/unit and year
counts its SOURCE.md states, metadata attached, and spot values and unit conversions checked against the raw files.

Audit (issue 3, "Tests on real data"): what each folder is checked for, and where.

| folder | counts | spot values / conversions | metadata |
|---|---|---|---|
| agds_fluxnet2015_daily_4sites | here, test_towers_real (days per site) | here (TA, PA kPa→Pa, P, GPP + QC) | test_towers_real, here |
| agridat_us_corn_soy_state | here, test_yield_readers | test_yield_readers (bu ac-1, °F, inch) | here (state FIPS) |
| apsimx_ames_ia_daily_weather | here, test_stations | test_stations (MJ→W) | test_stations |
| bcsd_obs_monthly_se_us_1999 | here, test_gridded | test_gridded (mm month-1 → mm d-1) | grid coordinates |
| bigleaf_examples | here, test_towers_real | test_towers_real (kPa→hPa, µmol→gC) | here (sites.csv beside) |
| biocro_champaign_il_hourly_weather | here (days = rows / 24) | test_stations (PAR→W, hourly→daily) | test_stations |
| biocro_soyface_soybean_biomass_2002-2006 | here | here (Mg ha-1 = t ha-1, std) | here |
| cosore | here (55 datasets, index, IGBP) | here (n_obs), test_soil_respiration_readers | here |
| dssat_midwest_maize_soybean_experiments | here, test_dssat | test_dssat (MJ→W, kg→t) | here (station location) |
| fluxnet2015_subset_dd_us-ne1 | here, test_towers_real | here (raw row), test_towers_real (vs MM) | here |
| fluxnet2015_subset_mm | here, test_towers_real (12,096 site-months) | test_towers_real | test_towers_real |
| fluxnet2020_warmwinter_fullset_dd | here, test_towers_real | test_towers_real | test_towers_real, here |
| ghcn_cams_monthly_tair_global_0p5deg_2018 | here, test_gridded | test_gridded (K→°C, SOURCE check) | grid coordinates |
| kgmlda_nldas2_county_daily_il2 | here | here (MJ→W, GPP) | here (county centroids) |
| khaki2020_corn_il40_weekly_daymet | here, test_yield_readers | test_yield_readers | test_yield_readers |
| oneflux_qca_ustar_hourly | here (files, years), test_towers_real | test_towers_real (µmol→gC) | test_towers_real, here |
| reddyproc_examples | here, test_towers_real | test_towers_real | test_towers_real, here |
| srdb | here, test_soil_respiration_readers | test_soil_respiration_readers (yr → d) | here |
| usda_nass_soybean_county_yield_you2017 | here, test_yield_readers | test_yield_readers (bu ac-1) | test_yield_readers |
| wfde5_hourly_forcing_uk_2017-01 | here, test_gridded | test_gridded (K, kg m-2 s-1, q → vpd) | grid coordinates |

Every folder is read once per session (the summary's readers, memoised), so COSORE is read once.
"""

from __future__ import annotations

import gzip
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from kgml.cli import main as kgml_main
from kgml.data import summary as summary_module
from kgml.data.schema import DataWarning
from kgml.data.summary import describe, load_folder
from kgml.variables import VARIABLES, normalise_units

pytestmark = pytest.mark.realdata

#: 1 MJ m-2 d-1 as a 24-h mean flux in W m-2 (1e6 J / 86400 s), written out independently.
MJ_DAY_TO_W = 1e6 / 86400.0

#: folder → (dataset kind, {label: (unit dimension, units, first year, last year, years)}); from each SOURCE.md
#: unless marked "raw" (counted in the raw file by a test below).
EXPECTED: dict[str, tuple[str, dict[str, tuple[str | None, int, int, int, int]]]] = {
    "agds_fluxnet2015_daily_4sites": ("FLUXNET-column daily tables", {"DD": ("site", 3, 1997, 2014, 18)}),
    "agridat_us_corn_soy_state": ("NASS / agridat yield tables", {
        "nass.corn.txt": ("state", 48, 1866, 2011, 146),  # 48 states: raw
        "nass.soybean.txt": ("state", 31, 1924, 2011, 88),  # 31 states: raw
        "thompson.cornsoy.txt": ("state", 5, 1930, 1962, 33),
        "wallace.iowaland.txt": ("county", 99, 1925, 1925, 1),
    }),
    "apsimx_ames_ia_daily_weather": ("APSIM .met weather", {
        "Ames_2000-2018_excl2014-2015.met": (None, 1, 2000, 2018, 17),
    }),
    "bcsd_obs_monthly_se_us_1999": ("gridded netCDF", {"bcsd_obs_1999.nc": ("grid", 33 * 81, 1999, 1999, 1)}),
    "bigleaf_examples": ("bigleaf example tables", {"HH": ("site", 3, 2010, 2014, 3)}),
    "biocro_champaign_il_hourly_weather": ("BioCro hourly weather", {"hourly → daily": (None, 1, 1995, 2023, 27)}),
    "biocro_soyface_soybean_biomass_2002-2006": ("SoyFACE soybean biomass by organ", {
        "biomass by organ": ("site", 2, 2002, 2006, 4),
    }),
    "cosore": ("COSORE chamber soil respiration", {"daily": ("site", 266, 2001, 2020, 20)}),  # 266 ports: raw
    "dssat_midwest_maize_soybean_experiments": ("DSSAT experiments and weather", {
        "experiments": ("site", 36, 1979, 1999, 6),  # 36 treatments of 13 experiments (test_dssat)
        "weather": ("site", 9, 1979, 1999, 21),
    }),
    "fluxnet2015_subset_dd_us-ne1": ("FLUXNET / ONEFlux / ICOS tower files", {"DD": ("site", 1, 2001, 2012, 12)}),
    "fluxnet2015_subset_mm": ("FLUXNET / ONEFlux / ICOS tower files", {"MM": ("site", 137, 1991, 2014, 24)}),
    "fluxnet2020_warmwinter_fullset_dd": ("FLUXNET / ONEFlux / ICOS tower files", {"DD": ("site", 6, 2017, 2020, 4)}),
    "ghcn_cams_monthly_tair_global_0p5deg_2018": ("gridded netCDF", {"air.mon.mean.nc": ("grid", 360 * 720, 2018, 2018, 1)}),
    "kgmlda_nldas2_county_daily_il2": ("county NLDAS-2 weather + SLOPE GPP (KGML-DA)", {
        "weather + soil + GPP by crop": ("county", 2, 2000, 2020, 19),
    }),
    "khaki2020_corn_il40_weekly_daymet": ("county corn yield + weekly Daymet", {
        "corn_il40_weekly_weather_yield.csv.gz": ("county", 40, 1980, 2013, 34),
    }),
    "oneflux_qca_ustar_hourly": ("ONEFlux measured NEE (qca_ustar)", {
        "CA-Cbo": ("site", 1, 1995, 2020, 26),  # 27 files 1994–2020; 1994 is all -9999 (test below)
        "US-Ne1": ("site", 1, 2001, 2020, 20),
        "US-Vcm": ("site", 1, 2007, 2021, 15),
    }),
    "reddyproc_examples": ("REddyProc example tables", {
        "Example_DETha98.txt": ("site", 1, 1998, 1998, 1),
        "DEGebExample_DE-Geb_2004-2006_halfhourly.csv": ("site", 1, 2004, 2006, 3),
        "Example_DE-Tha.1996.1998.hourly_selVars.nc": ("site", 1, 1996, 1998, 3),
    }),
    "srdb": ("SRDB soil respiration database", {"srdb-data.csv": ("record", 12272, 1961, 2018, 56)}),  # 56: raw
    "usda_nass_soybean_county_yield_you2017": ("NASS county yields (You et al. 2017)", {
        "soybean county": ("county", 1814, 2003, 2013, 11),
    }),
    "wfde5_hourly_forcing_uk_2017-01": ("gridded netCDF", {"6 files, one grid": ("grid", 20 * 28, 2017, 2017, 1)}),
}

#: Coordinates on the unit dimension that must be defined for every unit (site metadata attached).
LOCATED = {"site": ("lat", "lon"), "county": ("lat", "lon"), "state": ("state_fips",)}
#: Where SOURCE.md gives no location for some units: folder/label → coordinates not required.
UNLOCATED = {
    ("srdb", "srdb-data.csv"): "SRDB records without coordinates in the literature (checked below: > 95 % have them)",
}


@pytest.fixture(scope="session")
def load(data_dir):
    """``load(folder)`` → (kind, [(label, Dataset), ...]) through the summary's readers, once per session."""
    memo: dict[str, tuple[str, list]] = {}

    def get(name: str):
        folder = data_dir / name
        if not folder.is_dir():
            pytest.skip(f"dataset {name!r} not found under {data_dir}")
        if name not in memo:
            memo[name] = load_folder(folder)
        return memo[name]

    return get


def _part(load, name: str, label: str):
    return dict(load(name)[1])[label]


def test_readme_lists_exactly_the_tested_folders(data_dir):
    readme = (data_dir / "README.md").read_text()
    listed = re.findall(r"^\| ([a-z0-9_.\-]+) \|", readme, flags=re.MULTILINE)
    listed = [n for n in listed if n != "folder"]
    assert sorted(listed) == sorted(EXPECTED)
    present = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert set(present) <= set(EXPECTED), f"folders without an expectation here: {set(present) - set(EXPECTED)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_folder_loads_with_source_counts(load, name):
    kind, parts = load(name)
    expected_kind, expected = EXPECTED[name]
    assert kind == expected_kind
    assert [label for label, _ in parts] == list(expected)
    for label, ds in parts:
        d = describe(ds)
        unit_dim, n_units, first, last, n_years = expected[label]
        assert (d["unit_dim"], d["n_units"]) == (unit_dim, n_units), label
        assert d["years"] == (first, last, n_years), label
        for var_name, da in ds.data_vars.items():
            assert "units" in da.attrs, (label, var_name)
            if var_name in VARIABLES:  # canonical variables in canonical units
                assert normalise_units(da.attrs["units"]) == normalise_units(VARIABLES[var_name].units), (label, var_name)
        assert any(np.isfinite(da.values).any() for da in ds.data_vars.values())
        if unit_dim in LOCATED and (name, label) not in UNLOCATED:
            for coord in LOCATED[unit_dim]:
                assert coord in ds.coords and ds[coord].dims == (unit_dim,), (label, coord)
                values = ds[coord].values
                assert (np.isfinite(values) if values.dtype.kind == "f" else values != "").all(), (label, coord)
        if unit_dim == "grid":
            assert ds["lat"].attrs["units"] == "degrees_north" and bool((np.diff(ds.lat.values) > 0).all())


def test_summary_command_lists_every_folder(load, data_dir, capsys, monkeypatch):
    """``kgml data summary --data-dir DIR`` over the whole folder: every dataset recognised, exit code 0 (the
    readers are the memoised ones above, so this costs no second read)."""
    monkeypatch.setattr(summary_module, "load_folder", lambda folder, cache=False: load(folder.name))
    code = kgml_main(["data", "summary", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert code == 0
    for name, (kind, _) in EXPECTED.items():
        if (data_dir / name).is_dir():
            assert f"{name}  [{kind}]" in out
    assert "not recognised" not in out and "Error" not in out
    assert "2 sites, 2002–2006 (4 years)" in out and "2 counties, DD, 2000–2020 (19 years)" in out
    assert re.search(r"wfde5.*\n  6 files, one grid: 560 grid cells, hourly.*\n.*vpd 100%", out)


# --- folders whose spot values, conversions or metadata were not checked elsewhere ----------------------


def test_agds_spot_values_and_units(load, dataset_dir):
    ds = _part(load, "agds_fluxnet2015_daily_4sites", "DD")
    raw = pd.read_csv(dataset_dir("agds_fluxnet2015_daily_4sites") / "CH-Dav_daily.csv")
    row = raw[raw.TIMESTAMP == "2005-07-01"].iloc[0]
    day = ds.sel(site="CH-Dav", time="2005-07-01")
    assert float(day.tair) == pytest.approx(row.TA_F, rel=1e-6)
    assert float(day.patm) == pytest.approx(row.PA_F * 1000.0, rel=1e-6)  # kPa → Pa
    assert float(day.precip) == pytest.approx(row.P_F, rel=1e-6, abs=1e-9)
    assert float(day.vpd) == pytest.approx(row.VPD_F, rel=1e-6)  # hPa as published
    # default QC: GPP follows NEE_VUT_REF_QC (fraction of good half-hours) ≥ 0.5
    kept = raw.NEE_VUT_REF_QC.to_numpy() >= 0.5
    gpp = ds.gpp.sel(site="CH-Dav", time=pd.to_datetime(raw.TIMESTAMP).to_numpy()).values
    np.testing.assert_allclose(gpp[kept], raw.GPP_NT_VUT_REF.to_numpy()[kept], rtol=1e-6)
    assert np.isnan(gpp[~kept & raw.GPP_NT_VUT_REF.notna().to_numpy()]).all() and (~kept).sum() > 0
    meta = ds.sel(site="FR-Pue")
    assert (float(meta.lat), float(meta.lon), str(meta.igbp.values)) == (43.7414, 3.5958, "EBF")  # sites.csv row


def test_us_ne1_daily_raw_row_and_site_metadata(load, dataset_dir):
    ds = _part(load, "fluxnet2015_subset_dd_us-ne1", "DD")
    raw = pd.read_csv(next(dataset_dir("fluxnet2015_subset_dd_us-ne1").glob("FLX_*.csv")),
                      usecols=["TIMESTAMP", "TA_F", "P_F", "PA_F", "NEE_VUT_REF", "NEE_VUT_REF_QC", "SWC_F_MDS_1"])
    assert len(raw) == 4199  # SOURCE.md: 4,199 consecutive days
    row = raw[raw.TIMESTAMP == 20050715].iloc[0]
    day = ds.sel(site="US-Ne1", time="2005-07-15")
    assert float(day.tair) == pytest.approx(row.TA_F, rel=1e-6)
    assert float(day.patm) == pytest.approx(row.PA_F * 1000.0, rel=1e-6)
    assert float(day.nee) == pytest.approx(row.NEE_VUT_REF, rel=1e-6) if row.NEE_VUT_REF_QC >= 0.5 else np.isnan(float(day.nee))
    assert "swc" not in ds or np.isnan(ds.swc.values).all() == (raw.SWC_F_MDS_1 == -9999).all()
    meta = ds.sel(site="US-Ne1")  # SOURCE.md: 41.1651 N, -96.4766 E, 361 m, CRO, MAT 10.1 °C, MAP 790 mm
    assert (float(meta.lat), float(meta.lon), float(meta.elevation), str(meta.igbp.values)) == (41.1651, -96.4766, 361.0, "CRO")
    assert float(meta.mat) == pytest.approx(10.1, abs=0.05) and float(meta["map"]) == pytest.approx(790, abs=1)


def test_towers_beside_a_site_table_get_it(load):
    bigleaf = _part(load, "bigleaf_examples", "HH")
    assert str(bigleaf.igbp.sel(site="DE-Tha").values) == "ENF" and str(bigleaf.igbp.sel(site="AT-Neu").values) == "GRA"
    geb = _part(load, "reddyproc_examples", "DEGebExample_DE-Geb_2004-2006_halfhourly.csv")
    assert str(geb.igbp.values[0]) == "CRO" and np.isfinite(geb.lat.values).all()
    warm = _part(load, "fluxnet2020_warmwinter_fullset_dd", "DD")
    assert {str(s): str(i) for s, i in zip(warm.site.values, warm.igbp.values, strict=True)} == {
        "BE-Lcr": "DBF", "DK-Gds": "ENF", "FI-Ken": "ENF", "FR-LGt": "WET", "FR-Tou": "GRA", "IT-BFt": "DBF"}  # SOURCE.md


def test_qca_files_per_site_and_the_empty_year(load, dataset_dir):
    root = dataset_dir("oneflux_qca_ustar_hourly")
    parts = dict(load("oneflux_qca_ustar_hourly")[1])
    for site, (n_files, res) in {"US-Ne1": (20, "HR"), "CA-Cbo": (27, "HH"), "US-Vcm": (15, "HH")}.items():
        assert len(list((root / site).glob("*_qca_ustar_*.csv.gz"))) == n_files  # SOURCE.md
        assert parts[site].attrs["time_resolution"] == res
    # CA-Cbo 1994: every value is -9999 in the raw file, so the year is skipped (and said so)
    with gzip.open(root / "CA-Cbo" / "CA-Cbo_qca_ustar_1994.csv.gz", "rt") as fh:
        rows = [ln.split(",") for ln in fh.read().splitlines() if ln[:4] == "1994"]
    assert rows and all(v == "-9999" for r in rows for v in r[2:])
    assert "CA-Cbo_qca_ustar_1994" in parts["CA-Cbo"].attrs["skipped_files"]
    assert parts["US-Vcm"].lat.item() == pytest.approx(35.8884) and parts["CA-Cbo"].utc_offset.item() == -5.0


def test_agridat_state_counts_from_raw(load, dataset_dir):
    folder = dataset_dir("agridat_us_corn_soy_state")
    for name in ("nass.corn.txt", "nass.soybean.txt"):
        raw = pd.read_csv(folder / name, sep="\t")
        ds = _part(load, "agridat_us_corn_soy_state", name)
        assert ds.sizes["state"] == raw.state.nunique() and int(np.isfinite(ds.crop_yield.values).sum()) == len(raw)
    assert int(_part(load, "agridat_us_corn_soy_state", "nass.corn.txt").state_fips.sel(state="IL")) == 17


def test_srdb_years_and_locations(load, dataset_dir):
    ds = _part(load, "srdb", "srdb-data.csv")
    raw = pd.read_csv(dataset_dir("srdb") / "srdb-data.csv", usecols=["Study_midyear", "Latitude"], low_memory=False)
    years = np.floor(raw.Study_midyear.dropna())
    assert (int(years.min()), int(years.max()), years.nunique()) == (1961, 2018, 56)
    assert np.isfinite(ds.lat.values).mean() > 0.95 and int(np.isfinite(ds.lat.values).sum()) == int(raw.Latitude.notna().sum())


def test_biocro_daily_count(load):
    ds = _part(load, "biocro_champaign_il_hourly_weather", "hourly → daily")
    assert ds.sizes["time"] == 236_688 // 24  # SOURCE.md: 236,688 hourly rows
    assert float(ds.lat) == 40.05 and float(ds.lon) == -88.37  # SURFRAD Bondville (SOURCE.md)


def test_dssat_experiments_located_at_their_weather_station(dataset_dir):
    from kgml.data.dssat import read_dssat_experiments

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = read_dssat_experiments(dataset_dir("dssat_midwest_maize_soybean_experiments") / "experiments", lon_hemisphere="W")
    assert np.isfinite(ds.lat.values).all() and ((ds.lat > 40) & (ds.lat < 46) & (ds.lon > -96) & (ds.lon < -81)).all()
    # IUCA7901.SBX FIELDS says XCRD 42.2, YCRD -82.37 (swapped, and not Iowa): the station header (42.20 N,
    # -93.70) is used instead
    castana = ds.sel(site="IUCA7901/1")
    assert (float(castana.lat), float(castana.lon)) == (42.2, -93.7) and "IUCA7901.WTH" in str(castana.location_source.values)
    assert (float(ds.lat.sel(site="OHWO8801/1")), float(ds.lon.sel(site="OHWO8801/1"))) == (40.78, -81.93)  # Wooster OH


def test_cosore_folder_against_index_and_source(load, dataset_dir):
    folder = dataset_dir("cosore")
    ds = _part(load, "cosore", "daily")
    index = pd.read_csv(folder / "datasets_index.csv")
    assert len(index) == 55 and int(index.n_rows.sum()) == 2_455_360  # SOURCE.md
    assert index.start.min()[:7] == "2001-12" and index.end.max()[:7] == "2020-02"
    classes = index.igbp.value_counts()
    named = {"Deciduous broadleaf forest": 15, "Evergreen needleleaf forest": 10, "Evergreen broadleaf forest": 7,
             "Grassland": 5, "Open shrubland": 3, "Wetland": 3, "Woody savanna": 3, "Mixed forests": 2, "Cropland": 2}
    assert {k: int(classes[k]) for k in named} == named and int(classes.sum()) - sum(named.values()) == 5  # "others 5"
    read = set(ds.dataset.values.tolist())
    skipped = {line.split(":")[0] for line in ds.attrs["skipped_files"].splitlines()}
    assert read | skipped == set(index.dataset) and not read & skipped and len(read) == 52
    assert skipped == {"d20200407_WANG", "d20200808_MINIAT", "d20200825_MINIAT"}
    by_dataset = index.set_index("dataset")
    first = {d: str(ds.igbp_description.values[ds.dataset.values == d][0]) for d in read}
    assert all(first[d] == by_dataset.loc[d, "igbp"] for d in read)
    assert set(ds.igbp.values[np.isin(ds.igbp_description.values, ["Deciduous broadleaf forest"])]) == {"DBF"}
    assert np.isfinite(ds.lat.values).all() and np.isfinite(ds.lon.values).all()
    t0, t1 = pd.Timestamp(ds.time.values[0]), pd.Timestamp(ds.time.values[-1])
    assert (t0.year, t0.month, t1.year, t1.month) == (2001, 12, 2020, 2)
    # every finite raw flux of three small datasets is counted in n_obs, and the daily value is µmol → gC
    for name in ("d20190526_MINIONS_NCU_OLD", "d20190526_RAICH_diel", "d20200213_SEIBT"):
        raw = pd.read_csv(folder / "datasets" / name / "data.csv.gz", usecols=["CSR_PORT", "CSR_FLUX_CO2"])
        assert int(ds.n_obs.sel(site=ds.dataset == name).sum()) == int(raw.CSR_FLUX_CO2.notna().sum()), name
    assert float(ds.rsoil.max()) < 100 and ds.rsoil.attrs["units"] == "gC m-2 d-1"
    seibt = pd.read_csv(folder / "datasets" / "d20200213_SEIBT" / "data.csv.gz")
    day = seibt[(seibt.CSR_PORT == 2) & seibt.CSR_TIMESTAMP_BEGIN.str.startswith("2013-04-02")]
    assert float(ds.rsoil.sel(site="d20200213_SEIBT/2", time="2013-04-02")) == pytest.approx(
        day.CSR_FLUX_CO2.mean() * 12.0107e-6 * 86400, rel=1e-5)


def test_soyface_against_raw_tables(load, dataset_dir):
    folder = dataset_dir("biocro_soyface_soybean_biomass_2002-2006")
    ds = _part(load, "biocro_soyface_soybean_biomass_2002-2006", "biomass by organ")
    assert ds.attrs["skipped_files"] == "" and ds.attrs["missing_std_tables"] == ""
    assert len(list(folder.glob("*.csv"))) == 16  # SOURCE.md: 16 CSV files
    n_harvests = pd.Series(pd.DatetimeIndex(ds.time.values).year).value_counts().sort_index().to_dict()
    assert n_harvests == {2002: 8, 2004: 9, 2005: 8, 2006: 8}  # "~8 harvests per season", raw row counts
    doy = pd.DatetimeIndex(ds.time.values).day_of_year
    assert doy.min() == 170 and doy.max() == 288  # SOURCE.md: DOY 170–288
    for year, treatment, site in ((2002, "ambient", "SoyFACE_ambient"), (2006, "co2", "SoyFACE_elevated")):
        raw = pd.read_csv(folder / f"{year}_{treatment}_biomass.csv")
        std = pd.read_csv(folder / f"{year}_{treatment}_biomass_std.csv")
        times = (pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(raw.DOY - 1, unit="D")).to_numpy()
        got = ds.sel(site=site, time=times)
        np.testing.assert_allclose(got.leaf_biomass.values, raw.Leaf_Mg_per_ha, rtol=1e-6)  # Mg ha-1 = t ha-1
        np.testing.assert_allclose(got.pod_biomass.values, raw.Rep_Mg_per_ha, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.grain_biomass.values, raw.Seed_Mg_per_ha, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.litter_biomass_cumulative.values, raw.CumLitter_Mg_per_ha, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.stem_biomass_sd.values, std.Stem_Mg_per_ha, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.biomass.values, raw.Leaf_Mg_per_ha + raw.Stem_Mg_per_ha + raw.Rep_Mg_per_ha, rtol=1e-6)
    assert float(ds.leaf_biomass.sel(site="SoyFACE_ambient", time="2002-06-28")) == pytest.approx(0.180284339443109, rel=1e-6)
    assert list(ds.treatment.values) == ["ambient", "elevated_co2"] and float(ds.co2_target[1]) == 550.0
    assert int(ds.county[0]) == 17019 and 39.8 < float(ds.lat[0]) < 40.4 and -88.5 < float(ds.lon[0]) < -87.9


def test_kgmlda_counties_against_raw(load, dataset_dir):
    folder = dataset_dir("kgmlda_nldas2_county_daily_il2")
    ds = _part(load, "kgmlda_nldas2_county_daily_il2", "weather + soil + GPP by crop")
    weather = pd.read_csv(folder / "county_daily_inputs_2000-2020.csv")
    gpp = pd.read_csv(folder / "slope_gpp_county_daily.csv")
    assert (len(weather), len(gpp)) == (13_882, 27_740)  # SOURCE.md
    assert int(np.isfinite(ds.tair.values).sum()) == 13_882 and int(np.isfinite(ds.gpp.values).sum()) == 27_740
    years = set(pd.DatetimeIndex(ds.time.values).year)
    assert years == set(range(2000, 2021)) - {2014, 2015}  # held-out years absent
    first = weather.iloc[0]  # 17001, 2000, day 1
    day = ds.sel(county=17001, time="2000-01-01")
    assert float(day.tair) == pytest.approx(first.Tair, rel=1e-6) and float(day.rh) == pytest.approx(first.RH, rel=1e-6)
    assert float(day.sw_in) == pytest.approx(first.Radiation * MJ_DAY_TO_W, rel=1e-6)
    assert float(day.precip) == pytest.approx(first.Precipitation, abs=1e-9) and float(day.ws) == pytest.approx(first.Wind, rel=1e-6)
    july = gpp[(gpp.fips == 17003) & (gpp.crop == "soybean") & (gpp.year == 2012) & (gpp.doy == 200)].gpp.iloc[0]
    assert float(ds.gpp.sel(county=17003, crop="soybean", time="2012-07-18")) == pytest.approx(july, rel=1e-6)  # 2012 is leap: doy 200 = 18 July
    annual = ds.gpp.groupby("time.year").sum("time")
    assert 1400 < float(annual.sel(crop="corn").median()) < 1900 and 1000 < float(annual.sel(crop="soybean").median()) < 1300
    assert float(ds.soil_bulk_density.sel(county=17001)) == pytest.approx(first["Bulk density"], rel=1e-9)
    assert list(ds.county_name.values) == ["adams", "alexander"]
    assert (float(ds.lat.sel(county=17001)), float(ds.lon.sel(county=17001))) == (39.986, -91.195)  # You 2017 table
