"""Contract-A datasets built from the real data (kgml.data.assemble): values against the raw files, the layout,
errors on broken copies, and the whole path through `kgml.models.hybrid.prepare_windows`. Small slices only; skips
with the reason where a folder is absent."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data import assemble
from kgml.data.normalisation import Normaliser
from kgml.data.schema import DataValidationError
from kgml.models.hybrid import TaskSpec, prepare_windows
from kgml.paths import DataNotFoundError

pytestmark = pytest.mark.realdata

MM = "fluxnet2015_subset_mm"
NE1_MM = "FLX_US-Ne1_FLUXNET2015_SUBSET_MM_2001-2013_1-4.csv"
SITE_COORDS = ("lat", "lon", "igbp", "igbp_group", "continent", "climate_zone", "country", "state", "vegetation",
               "mat", "map")
DRIVERS = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kgml_cache")


def _check_layout(ds: xr.Dataset, vegetation=None):
    assert ds.attrs["Conventions"] == "CF-1.8"
    for key in ("title", "source", "history", "time_resolution"):
        assert ds.attrs[key], key
    assert ds.attrs["time_resolution"] == "daily"
    assert ds.site.dtype.kind == "U"
    for name in SITE_COORDS:
        assert name in ds.coords and ds[name].dims == ("site",), name
    assert np.isfinite(ds.lat.values).all() and np.isfinite(ds.mat.values).all() and np.isfinite(ds["map"].values).all()
    assert ds["mat"].attrs["units"] == "degC" and ds["map"].attrs["units"] == "mm yr-1"
    for name in ds.data_vars:
        assert "units" in ds[name].attrs and "long_name" in ds[name].attrs, name
    for name in DRIVERS:
        assert ds[name].dims == ("site", "time") and ds[name].dtype == np.float32, name
    assert ds.tair.attrs["units"] == "degC" and ds.sw_in.attrs["units"] == "W m-2"
    assert ds.vpd.attrs["units"] == "hPa" and ds.precip.attrs["units"] == "mm d-1"
    days = ds.time.values
    assert days[0] == np.datetime64(f"{str(days[0])[:4]}-01-01") and str(days[-1])[5:10] == "12-31"
    assert (np.diff(days) == np.timedelta64(1, "D")).all()
    if vegetation is not None:
        assert set(ds.vegetation.values.astype(str)) == set(vegetation)


def _windows(ds, task, features=("tair", "sw_in", "vpd", "precip")):
    static = ("mat", "map")
    with warnings.catch_warnings():  # one-site slices have constant statics
        warnings.filterwarnings("ignore", message=".*is constant in the training data.*")
        norm = Normaliser.fit(ds, [*features, *static])
    w = prepare_windows(ds, features=features, static=static, task=task, normaliser=norm, require_targets=True)
    assert len(w) > 0
    assert np.isfinite(w.inputs.x).all() and w.inputs.x_mask.all()
    for field in w.inputs.met:
        if field is not None:
            assert np.isfinite(np.asarray(field)).all()
    return w


# --- FLUXNET2015 monthly --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monthly(dataset_dir, cache):
    dataset_dir(MM)
    return assemble.fluxnet_monthly(sites=["US-Ne1", "AT-Neu"], cache=cache)


@pytest.mark.slow
def test_fluxnet_monthly_layout(monthly):
    _check_layout(monthly, vegetation={"grassland"})
    assert sorted(monthly.site.values.tolist()) == ["AT-Neu", "US-Ne1"]
    ne1 = monthly.sel(site="US-Ne1")
    assert str(ne1.igbp.values) == "CRO" and str(ne1.state.values) == "NE" and str(ne1.country.values) == "US"
    assert str(ne1.continent.values) == "North America" and str(ne1.igbp_group.values) == "cropland"
    for name in ("nee_monthly", "gpp_monthly", "reco_monthly"):
        assert monthly[name].dims == ("site", "month") and monthly[name].attrs["units"] == "gC m-2 d-1"
    # the month axis is the code year*12 + month-1 of every month of the daily axis
    codes = np.unique(monthly.time.dt.year.values * 12 + monthly.time.dt.month.values - 1)
    np.testing.assert_array_equal(monthly.month.values, codes)
    assert monthly.time.values[0] == np.datetime64("2001-01-01") and str(monthly.time.values[-1])[:10] == "2013-12-31"


def test_fluxnet_monthly_values_match_the_raw_file(monthly, dataset_dir):
    raw = pd.read_csv(dataset_dir(MM) / NE1_MM)
    ne1 = monthly.sel(site="US-Ne1")
    # the monthly mean of the daily expansion equals the file's TA_F, P_F and SW_IN_F (every month)
    daily = ne1[["tair", "precip", "sw_in", "tmin"]].resample(time="MS").mean()
    np.testing.assert_allclose(daily.tair.values, raw["TA_F"].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(daily.precip.values, raw["P_F"].to_numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(daily.sw_in.values, raw["SW_IN_F"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(daily.tmin.values, raw["TA_F"].to_numpy() - assemble.DIURNAL_RANGE / 2, atol=1e-4)
    # targets: NEE_VUT_REF where its QC fraction passes, NaN where not
    codes = (raw["TIMESTAMP"] // 100) * 12 + raw["TIMESTAMP"] % 100 - 1
    nee = ne1.nee_monthly.sel(month=codes.to_numpy()).values
    gpp = ne1.gpp_monthly.sel(month=codes.to_numpy()).values
    good = (raw["NEE_VUT_REF_QC"] >= assemble.DEFAULT_QC_MIN).to_numpy() & (raw["NEE_VUT_REF"] != -9999).to_numpy()
    assert good.any() and (~good).any()  # both cases are exercised
    np.testing.assert_allclose(nee[good], raw["NEE_VUT_REF"].to_numpy()[good], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpp[good], raw["GPP_NT_VUT_REF"].to_numpy()[good], rtol=1e-5, atol=1e-6)
    assert np.isnan(nee[~good]).all() and np.isnan(gpp[~good]).all()


def test_fluxnet_monthly_qc_threshold_and_min_months(dataset_dir, cache):
    dataset_dir(MM)
    loose = assemble.fluxnet_monthly(sites=["US-Ne1"], qc_min=0.0, cache=cache)
    strict = assemble.fluxnet_monthly(sites=["US-Ne1"], qc_min=0.9, cache=cache)
    assert int(loose.nee_monthly.count()) > int(strict.nee_monthly.count()) > 0
    assert np.nanmin(strict.nee_monthly_qc.where(strict.nee_monthly.notnull()).values) >= 0.9
    with pytest.raises(DataValidationError, match="min_months"):
        assemble.fluxnet_monthly(sites=["US-Ne1"], min_months=10_000, cache=cache)


def test_fluxnet_monthly_windows(monthly):
    w = _windows(monthly, TaskSpec(daily=(), monthly=("nee", "gpp", "reco"), annual=False),
                 features=("tair", "sw_in", "vpd", "precip", "tsoil"))
    # AT-Neu's record is 2002–2012 on a 2001–2013 axis: its windows outside the record carry no target and are
    # dropped, so every window lies inside its site's own years
    sites = np.asarray(w.sites)[w.site]
    first = monthly.first_year.sel(site=sites).values
    last = monthly.last_year.sel(site=sites).values
    assert ((w.years >= first) & (w.years <= last)).all()
    assert (w.years[sites == "AT-Neu"] >= 2002).all()
    # whole calendar-year windows hold every monthly target (12 slots a year)
    n_targets = sum(int(monthly[f"{v}_monthly"].count()) for v in ("nee", "gpp", "reco"))
    assert int(w.targets.monthly_mask.sum()) == n_targets


def test_fluxnet_monthly_errors(dataset_dir, tmp_path, cache):
    src = dataset_dir(MM)
    with pytest.raises(DataValidationError, match="empty site selection"):
        assemble.fluxnet_monthly(sites=[], cache=False)
    with pytest.raises(DataValidationError, match="no FLUXNET files|XX-Nop"):
        assemble.fluxnet_monthly(sites=["XX-Nop"], cache=False)
    with pytest.raises(DataNotFoundError, match=MM):
        assemble.fluxnet_monthly(tmp_path, cache=False)
    # a broken copy: the NEE column of one file renamed → that site cannot be read, and asking for it says so
    broken = tmp_path / MM
    broken.mkdir()
    shutil.copy(src / "sites.csv", broken / "sites.csv")
    shutil.copy(src / NE1_MM, broken / NE1_MM)
    at_neu = next(src.glob("FLX_AT-Neu_*"))
    text = at_neu.read_text().replace("NEE_VUT_REF,", "NEE_VUT_REFX,", 1)
    (broken / at_neu.name).write_text(text)
    ds = assemble.fluxnet_monthly(tmp_path, cache=False)
    assert ds.site.values.tolist() == ["US-Ne1"] and "AT-Neu" in ds.attrs["skipped_files"]
    with pytest.raises(DataValidationError, match="AT-Neu"):
        assemble.fluxnet_monthly(tmp_path, sites=["AT-Neu", "US-Ne1"], cache=False)



def test_fluxnet_monthly_uncertainty_against_the_raw_file_and_errors(dataset_dir, tmp_path):
    """NEE_VUT_REF_RANDUNC as it is in the file (-9999 → NaN) and the u* spread (NEE_VUT_75 − NEE_VUT_25)/1.349
    on the month codes of `fluxnet_monthly`; a broken copy (column absent, negative uncertainty, an inf token)
    is an error naming file and column."""
    src = dataset_dir(MM)
    raw = pd.read_csv(src / NE1_MM).replace(-9999, np.nan)
    u = assemble.fluxnet_monthly_uncertainty(src.parent, sites=["US-Ne1"])
    codes = ((raw["TIMESTAMP"] // 100) * 12 + raw["TIMESTAMP"] % 100 - 1).to_numpy()
    got = u.nee_randunc.sel(site="US-Ne1", month=codes).values
    np.testing.assert_allclose(got, raw["NEE_VUT_REF_RANDUNC"].to_numpy(), rtol=1e-12)
    spread = (raw["NEE_VUT_75"] - raw["NEE_VUT_25"]).abs().to_numpy() / assemble.IQR_TO_SD
    np.testing.assert_allclose(u.nee_ustar_sd.sel(site="US-Ne1", month=codes).values, spread, rtol=1e-12)
    assert np.isfinite(got).sum() > 100 and u.nee_randunc.attrs["units"] == "gC m-2 d-1"
    with pytest.raises(DataValidationError, match="XX-Nop"):
        assemble.fluxnet_monthly_uncertainty(src.parent, sites=["XX-Nop"])
    broken = tmp_path / MM
    broken.mkdir()
    text = (src / NE1_MM).read_text()
    header, first, rest = text.split("\n", 2)
    cols = header.split(",")
    k = cols.index("NEE_VUT_REF_RANDUNC")
    for name, body, match in (
            ("absent", text.replace("NEE_VUT_REF_RANDUNC", "NEE_VUT_REF_RANDUNX", 1), "NEE_VUT_REF_RANDUNC.*absent"),
            ("negative", "\n".join([header, ",".join(v if i != k else "-0.5" for i, v in enumerate(first.split(","))),
                                    rest]), "negative"),
            ("inf", "\n".join([header, ",".join(v if i != k else "inf" for i, v in enumerate(first.split(","))),
                               rest]), "infinite")):
        (broken / NE1_MM).write_text(body)
        with pytest.raises(DataValidationError, match=match) as err:
            assemble.fluxnet_monthly_uncertainty(tmp_path, sites=["US-Ne1"])
        assert NE1_MM in str(err.value), name

# --- FLUXNET daily --------------------------------------------------------------------------------------


def test_fluxnet_daily(dataset_dir, cache):
    folder = dataset_dir("fluxnet2015_subset_dd_us-ne1")
    ds = assemble.fluxnet_daily(sites=["US-Ne1"], cache=cache)
    _check_layout(ds, vegetation={"maize"})
    raw = pd.read_csv(next(folder.glob("FLX_US-Ne1_*_DD_*.csv")))
    times = pd.to_datetime(raw["TIMESTAMP"].astype(str), format="%Y%m%d").to_numpy()
    nee = ds.nee.sel(site="US-Ne1", time=times).values
    tair = ds.tair.sel(site="US-Ne1", time=times).values
    np.testing.assert_allclose(tair, raw["TA_F"].to_numpy(), atol=1e-4)
    years = times.astype("datetime64[Y]").astype(int) + 1970
    whole = (years > 2001) & (years < 2012)  # 2001 and 2012 are partial in this copy: masked site-years
    good = whole & (raw["NEE_VUT_REF_QC"] >= assemble.DEFAULT_QC_MIN).to_numpy() & (raw["NEE_VUT_REF"] != -9999).to_numpy()
    np.testing.assert_allclose(nee[good], raw["NEE_VUT_REF"].to_numpy()[good], rtol=1e-5, atol=1e-6)
    assert np.isnan(nee[~good]).all() and (~good[whole]).any()
    assert ds.attrs["masked_site_years"] == 2
    w = _windows(ds, TaskSpec(daily=("nee", "gpp", "reco"), annual=False))
    assert sorted(set(w.years.tolist())) == list(range(2002, 2012))


# --- COSORE ---------------------------------------------------------------------------------------------


COSORE_SETS = ["d20190424_ZHANG_oak", "d20200120_CHANG"]


@pytest.mark.slow
def test_cosore_daily(dataset_dir, cache):
    dataset_dir("cosore")
    dataset_dir(MM)
    ds = assemble.cosore_daily(datasets=COSORE_SETS, cache=cache)
    _check_layout(ds, vegetation={"soil"})
    assert ds.rsoil.attrs["units"] == "gC m-2 d-1" and ds.swc.attrs["units"] == "%"
    oak = ds.sel(site=[s for s in ds.site.values if s.startswith("d20190424_ZHANG_oak")][0])
    assert str(oak.colocated_tower.values) == "US-MMS"
    inside = (ds.time.dt.year >= ds.first_year) & (ds.time.dt.year <= ds.last_year)
    for v in ("tair", "sw_in", "vpd", "precip", "tsoil", "swc"):
        src = ds[f"{v}_source"]
        assert ((src < 4) == inside).all(), v  # every day of the site's years is filled, none outside
        assert bool(np.isfinite(ds[v].where(inside)).sum() == inside.sum()), v
    assert set(np.unique(ds.sw_in_source.where(inside, 4).values)) <= {2, 3, 4}  # never measured by chambers
    has = ds.rsoil.notnull()
    assert bool((ds.tsoil_source.where(has) <= 1).sum() == has.sum())  # targets only where tsoil is measured
    assert (ds.n_rsoil_days >= 60).all()
    _windows(ds, TaskSpec(daily=("rsoil",), annual=False), features=("tair", "sw_in", "tsoil", "swc"))
    with pytest.raises(DataValidationError, match="unknown COSORE dataset"):
        assemble.cosore_daily(datasets=["d2099_NOPE"], cache=cache)


# --- crop yields ----------------------------------------------------------------------------------------


def test_il_corn(dataset_dir):
    folder = dataset_dir("khaki2020_corn_il40_weekly_daymet")
    ds = assemble.il_corn(counties=["champaign", "17001"], years=[1988, 2012])
    _check_layout(ds, vegetation={"maize"})
    assert ds.site.values.tolist() == ["17001", "17019"] and ds.year.values.tolist() == [1988, 2012]
    assert ds.crop_yield.dims == ("site", "year") and ds.crop_yield.attrs["units"] == "t ha-1"
    raw = pd.read_csv(folder / "corn_il40_weekly_weather_yield.csv.gz")
    row = raw[(raw["county"].str.lower() == "champaign") & (raw["year"] == 2012)].iloc[0]
    bu_ac_to_t_ha = 56 * 0.45359237 / 4046.8564224  # 56 lb bushel, t per lb, ha per acre: kg m-2 = 10 t ha-1
    np.testing.assert_allclose(float(ds.crop_yield.sel(site="17019", year=2012)),
                               row["yield_bu_per_acre"] * bu_ac_to_t_ha * 10, rtol=1e-5)
    champaign = ds.sel(site="17019", time=slice("2012-01-01", "2012-01-07"))
    np.testing.assert_allclose(float(champaign.tmax.mean()), row["W_4_1"], rtol=1e-5)
    np.testing.assert_allclose(float(champaign.precip.mean()), row["W_1_1"], rtol=1e-5, atol=1e-6)
    # days 365–366 carry week 52
    np.testing.assert_allclose(float(ds.tmin.sel(site="17019", time="2012-12-31")), row["W_5_52"], rtol=1e-5)
    w = _windows(ds, TaskSpec(daily=(), annual=True))
    assert int(w.targets.annual_mask.sum()) == 4
    with pytest.raises(DataValidationError, match="unknown county"):
        assemble.il_corn(counties=["atlantis"])
    with pytest.raises(DataValidationError, match="not in the table"):
        assemble.il_corn(years=[1850])


def test_state_yield(dataset_dir, cache):
    folder = dataset_dir("agridat_us_corn_soy_state")
    dataset_dir(MM)
    ds = assemble.state_yield(cache=cache)
    _check_layout(ds, vegetation={"maize"})
    assert sorted(ds.site.values.tolist()) == ["IA", "IL", "IN", "MO", "OH"]
    raw = pd.read_csv(folder / "thompson.cornsoy.txt", sep="\t")
    row = raw[(raw["state"] == "Iowa") & (raw["year"] == 1936)].iloc[0]
    july = ds.sel(site="IA", time=slice("1936-07-01", "1936-07-31"))
    np.testing.assert_allclose(float(july.tair.mean()), (row["temp7"] - 32) * 5 / 9, atol=1e-4)
    np.testing.assert_allclose(float(july.precip.sum()), row["rain7"] * 25.4, rtol=1e-5)
    assert (july.tair_source == 0).all() and (ds.tair_source.sel(site="IA", time="1936-01-15") == 1)
    _windows(ds, TaskSpec(daily=(), annual=True))


# --- helpers (no data needed) ---------------------------------------------------------------------------


def test_gap_filling_and_pressure_helpers():
    x = np.array([[1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0, np.nan]])
    filled = assemble._fill_short_gaps(x, 2)
    np.testing.assert_allclose(filled[0, :3], [1.0, 2.0, 3.0])
    assert np.isnan(filled[0, 3:6]).all() and np.isnan(filled[0, 7])  # long and trailing gaps stay
    # FAO-56 Example 2 (Allen et al. 1998): 1800 m → 81.8 kPa; unknown elevation → standard pressure
    p = assemble._pressure_from_elevation(np.array([1800.0, np.nan]))
    np.testing.assert_allclose(p, [81.8e3, 101325.0], rtol=1e-3)
    years = np.array([2000, 2000, 2001, 2001])
    drivers = {v: np.ones((1, 4)) for v in assemble.REQUIRED_DRIVERS}
    drivers["precip"][0, 3] = np.nan
    mask = assemble._year_mask(drivers, years, np.ones((1, 4), bool))
    np.testing.assert_array_equal(mask[0], [False, False, True, True])


def test_fluxnet_monthly_soil_water_measured_or_marked(dataset_dir, cache):
    """``soil_water``: swc is the file's SWC_F_MDS_1 where the tower measures it (AT-Neu, most months), the one
    all-tower fill value with swc_measured 0 where it does not (US-Ne1's column is all −9999; BE-Bra has no
    column), and no target changes."""
    dataset_dir(MM)
    sites = ["AT-Neu", "BE-Bra", "US-Ne1"]
    ds = assemble.fluxnet_monthly(sites=sites, cache=cache, soil_water=True)
    plain = assemble.fluxnet_monthly(sites=sites, cache=cache)
    np.testing.assert_array_equal(ds.nee_monthly.values, plain.nee_monthly.values)
    raw = pd.read_csv(dataset_dir(MM) / "FLX_AT-Neu_FLUXNET2015_SUBSET_MM_2002-2012_1-4.csv")
    neu = ds.sel(site="AT-Neu").sel(time=slice("2002-01-01", "2012-12-31"))
    daily = neu[["swc", "swc_measured"]].resample(time="MS").mean()
    measured = (raw["SWC_F_MDS_1"] != -9999).to_numpy()
    assert measured.sum() > 100 and (~measured).any()
    np.testing.assert_allclose(daily.swc.values[measured], raw["SWC_F_MDS_1"].to_numpy()[measured], rtol=1e-5)
    assert (daily.swc_measured.values[measured] == 1).all()
    fills = []
    for site in ("BE-Bra", "US-Ne1"):
        one = ds.sel(site=site)
        inside = np.isfinite(one.tair.values)
        assert (one.swc_measured.values[inside] == 0).all() and np.isnan(one.swc.values[~inside]).all()
        fills += np.unique(one.swc.values[inside]).tolist()
    assert len(set(fills)) == 1 and ds.swc.attrs["units"] == "%"
    # relative extractable water of the tower's own record: 0 at its driest month, 1 at its wettest, NaN unmeasured
    theta = raw["SWC_F_MDS_1"].to_numpy()[measured]
    np.testing.assert_allclose(neu.swc_rew.resample(time="MS").mean().values[measured],
                               (theta - theta.min()) / (theta.max() - theta.min()), rtol=1e-4, atol=1e-6)
    assert np.isnan(ds.sel(site="BE-Bra").swc_rew.values).all()
