"""Regions as coordinates; splits that never put one site (or one site-year) in two parts, reproducible from a
seed and round-tripping through JSON."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data.regions import (
    add_regions,
    climate_zone,
    continent_from_latlon,
    region_maps,
    register_region_map,
    set_region,
    us_state_from_fips,
    us_state_from_latlon,
)
from kgml.data.splits import (
    Part,
    Split,
    anomalous_year_out,
    climate_extrapolation,
    kfold_by_site,
    leave_one_site_out,
    leave_region_out,
    load_splits,
    save_splits,
    temporal_holdout,
    years_kfold_within_sites,
)

SITES = {  # id: (lat, lon, igbp, mat, map); coordinates from the FLUXNET2015 site table
    "US-Ne1": (41.1651, -96.4766, "CRO", 10.1, 790.0),
    "US-Ne3": (41.1797, -96.4397, "CRO", 10.1, 784.0),
    "US-Ha1": (42.5378, -72.1715, "DBF", 6.6, 1071.0),
    "US-SRM": (31.8214, -110.8661, "WSA", 17.9, 380.0),
    "US-Wi6": (46.6249, -91.2982, "OSH", 4.5, 800.0),
    "US-LWW": (34.9604, -97.9789, "GRA", 15.6, 840.0),
    "DE-Tha": (50.9626, 13.5651, "ENF", 8.2, 843.0),
    "FR-Pue": (43.7413, 3.5957, "EBF", 13.5, 883.0),
    "AU-DaS": (-14.1593, 131.3881, "SAV", 27.2, 976.0),
    "BR-Sa1": (-2.8567, -54.9589, "EBF", 26.0, 2000.0),
    "CN-Cha": (42.4025, 128.0958, "MF", 4.0, 700.0),
    "ZA-Kru": (-25.0197, 31.4969, "SAV", 21.9, 547.0),
    "GL-ZaH": (74.4733, -20.5503, "GRA", -9.0, 220.0),
    "CA-Oas": (53.6289, -106.1978, "DBF", 0.3, 429.0),
}


def _dataset(n_years=6, seed=0):
    ids = sorted(SITES)
    rng = np.random.default_rng(seed)
    time = xr.date_range("2001-01-01", periods=12 * n_years, freq="MS", use_cftime=False)
    mat = np.array([SITES[s][3] for s in ids])
    season = 10 * np.sin(2 * np.pi * (np.arange(time.size) % 12) / 12)
    tair = mat[:, None] + season[None, :] + rng.normal(0, 0.1, (len(ids), time.size))
    precip = np.array([SITES[s][4] for s in ids])[:, None] / 365.25 * np.ones(time.size)
    return xr.Dataset(
        {
            "tair": (("site", "time"), tair.astype(np.float32), {"units": "degC"}),
            "precip": (("site", "time"), precip.astype(np.float32), {"units": "mm d-1"}),
            "nee": (("site", "time"), rng.normal(0, 1, (len(ids), time.size)).astype(np.float32), {"units": "gC m-2 d-1"}),
        },
        coords={
            "site": ids,
            "time": time,
            "lat": ("site", [SITES[s][0] for s in ids]),
            "lon": ("site", [SITES[s][1] for s in ids]),
            "igbp": ("site", [SITES[s][2] for s in ids]),
        },
        attrs={"time_resolution": "MM"},
    )


def test_us_states():
    lat = [SITES[s][0] for s in ("US-Ne1", "US-Ha1", "US-SRM", "US-Wi6", "US-LWW")]
    lon = [SITES[s][1] for s in ("US-Ne1", "US-Ha1", "US-SRM", "US-Wi6", "US-LWW")]
    assert us_state_from_latlon(lat, lon).tolist() == ["NE", "MA", "AZ", "WI", "OK"]
    assert us_state_from_latlon([40.0062, 35.8884], [-88.2904, -106.532]).tolist() == ["IL", "NM"]  # US-Bo1, US-Vcm
    assert us_state_from_latlon([50.96], [13.57]).tolist() == [""]
    assert us_state_from_fips([17001, "19169", 31, 99]).tolist() == ["IL", "IA", "NE", ""]


def test_continents_and_climate():
    ds = add_regions(_dataset(), ["continent", "country", "climate_zone", "igbp_group", "us_state"])
    got = dict(zip(ds.site.values, ds.continent.values, strict=True))
    assert got["DE-Tha"] == "Europe" and got["AU-DaS"] == "Oceania" and got["BR-Sa1"] == "South America"
    assert got["ZA-Kru"] == "Africa" and got["CN-Cha"] == "Asia" and got["GL-ZaH"] == "North America"
    assert continent_from_latlon([48.0, -30.0, 35.0], [2.0, 140.0, 105.0]).tolist() == ["Europe", "Oceania", "Asia"]
    zones = dict(zip(ds.site.values, ds.climate_zone.values, strict=True))
    assert zones["BR-Sa1"] == "A" and zones["US-SRM"] == "B" and zones["GL-ZaH"] == "E" and zones["DE-Tha"] == "C"
    assert str(ds.us_state.sel(site="CA-Oas").values) == ""  # a Canadian site never gets a US state
    assert str(ds.igbp_group.sel(site="US-Ne1").values) == "cropland"
    # the Kottek aridity threshold: 10·(2·MAT + 14) mm
    assert climate_zone([20.0, 20.0], [539.0, 541.0]).tolist() == ["B", "A"]
    assert climate_zone([np.nan], [500.0]).tolist() == [""]


def test_user_region_map():
    def basin(ds):
        return np.where(ds.lon.values < -100, "west", "east")

    register_region_map("test_basin", basin, overwrite=True)
    assert "test_basin" in region_maps()
    ds = set_region(_dataset(), "test_basin")
    assert ds.region.attrs["region_map"] == "test_basin" and str(ds.region.sel(site="US-SRM").values) == "west"
    with pytest.raises(ValueError, match="already registered"):
        register_region_map("test_basin", basin)


def _assert_disjoint(split: Split):
    seen = {}
    for name in ("train", "val", "test", "ood"):
        part = split.part(name)
        for unit in part.units:
            for year in (part.years if part.years is not None else ["all"]):
                key = (unit, year)
                assert key not in seen and (unit, "all") not in seen, f"{key} in {seen.get(key)} and {name}"
                seen[key] = name
    if split.strategy != "temporal_holdout":
        units = [u for n in ("train", "val", "test", "ood") for u in split.part(n).units]
        assert len(units) == len(set(units))


def test_site_splits_disjoint_and_deterministic(tmp_path):
    ds = _dataset()
    folds = kfold_by_site(ds, k=4, seed=7)
    for split in folds:
        _assert_disjoint(split)
        assert len(split.train) + len(split.val) + len(split.test) == ds.sizes["site"]
    tested = sorted(u for s in folds for u in s.test.units)
    assert tested == sorted(ds.site.values.tolist())  # every site is held out exactly once
    assert [s.to_dict() for s in kfold_by_site(ds, k=4, seed=7)] == [s.to_dict() for s in folds]
    assert [s.test.units for s in kfold_by_site(ds, k=4, seed=8)] != [s.test.units for s in folds]
    loso = leave_one_site_out(ds, seed=1)
    assert len(loso) == ds.sizes["site"] and all(len(s.test) == 1 for s in loso)
    for split in loso:
        _assert_disjoint(split)
    path = save_splits(folds + loso, tmp_path / "splits.json")
    assert [s.to_dict() for s in load_splits(path)] == [s.to_dict() for s in folds + loso]
    assert load_splits(path)[0] == folds[0]


def test_region_temporal_and_climate_splits(tmp_path):
    ds = add_regions(_dataset(), ["continent"])
    lro = leave_region_out(ds, "continent", seed=3)
    held = {s.info["held_out_region"]: s for s in lro}
    assert set(held) == {"Africa", "Asia", "Europe", "North America", "Oceania", "South America"}
    na = held["North America"]
    assert set(na.ood.units) == {s for s, c in zip(ds.site.values, ds.continent.values, strict=True) if c == "North America"}
    for split in lro:
        _assert_disjoint(split)
    temporal = temporal_holdout(ds, ood_years=2, seed=5)
    _assert_disjoint(temporal)
    assert temporal.ood.years == (2005, 2006) and set(temporal.val.years + temporal.test.years) < {2001, 2002, 2003, 2004}
    sub = temporal.select(ds, "ood")
    assert set(sub.time.dt.year.values) == {2005, 2006} and sub.attrs["split_part"] == "ood"
    warm = climate_extrapolation(ds, by="warm", quantile=0.25, seed=2)
    _assert_disjoint(warm)
    mat = {s: SITES[s][3] for s in SITES}
    assert set(warm.ood.units) == set(sorted(mat, key=mat.get)[-4:])  # the 4 warmest of 14 (from the data)
    dry = climate_extrapolation(ds, by="dry", quantile=0.2, seed=2)
    assert "GL-ZaH" in dry.ood.units and "US-SRM" in dry.ood.units
    save_splits([warm, dry, temporal, *lro], tmp_path / "s.json")
    assert load_splits(tmp_path / "s.json") == [warm, dry, temporal, *lro]


def test_split_refuses_overlap():
    with pytest.raises(ValueError, match="both"):
        Split("bad", "manual", 0, "site", Part(["A", "B"]), Part(["B"]), Part(), Part())
    Split("ok", "manual", 0, "site", Part(["A"], [2001]), Part(["A"], [2002]), Part(), Part())
    with pytest.raises(ValueError, match="both"):
        Split("bad", "manual", 0, "site", Part(["A"], [2001, 2002]), Part(["A"], [2002]), Part(), Part())


def test_select_restricts_every_time_axis_of_a_part():
    """A years-out split: no training part may hold a value of a test year on any time axis (daily ``time``,
    annual ``year``, monthly ``month`` codes) — the leak that let test-year yields reach the training scalers."""
    units = ["a", "b", "c"]
    time = pd.date_range("2001-01-01", "2004-12-31", freq="D")
    years = np.arange(2001, 2005)
    months = np.arange(2001 * 12, 2005 * 12)
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "tair": (("site", "time"), rng.normal(size=(3, time.size))),
            "crop_yield": (("site", "year"), rng.normal(size=(3, years.size))),
            "nee_monthly": (("site", "month"), rng.normal(size=(3, months.size))),
        },
        coords={"site": units, "time": time, "year": years, "month": months},
    )
    test_years, train_years = (2003, 2004), (2001, 2002)
    split = Split("yrs", "years", 0, "site", Part(units, train_years), Part(), Part(units, test_years), Part())
    train = split.select(ds, "train")
    assert sorted(set(train["time"].dt.year.values)) == list(train_years)
    assert list(train["year"].values) == list(train_years)
    assert sorted(set(int(m) // 12 for m in train["month"].values)) == list(train_years)
    test = split.select(ds, "test")
    assert list(test["year"].values) == list(test_years)
    assert sorted(set(int(m) // 12 for m in test["month"].values)) == list(test_years)
    # the values themselves are the dataset's, not reindexed or filled
    np.testing.assert_array_equal(train["crop_yield"].values, ds["crop_yield"].values[:, :2])


def _daily_towers(n_years=6, seed=0):
    """Daily drivers and monthly NEE of 8 sites; site i's year 2001 + (i mod n_years) is planted dry (precip
    × 0.3) and hot (tair + 3 °C). Site "short" has only 2 observed years (never tested)."""
    rng = np.random.default_rng(seed)
    units = [f"S{i}" for i in range(7)] + ["short"]
    time = pd.date_range("2001-01-01", periods=365 * n_years + n_years // 4 + 1, freq="D")
    time = time[time.year < 2001 + n_years]
    months = np.arange(2001 * 12, (2001 + n_years) * 12)
    tair = 10 + 10 * np.sin(2 * np.pi * time.day_of_year.values / 365.25)[None] + rng.normal(0, 1, (8, time.size))
    precip = rng.gamma(2.0, 1.0, (8, time.size))
    planted = {}
    for i, u in enumerate(units[:7]):
        y = 2001 + i % n_years
        planted[u] = y
        tair[i, time.year == y] += 3.0
        precip[i, time.year == y] *= 0.3
    nee = rng.normal(0, 1, (8, months.size))
    nee[7, months // 12 >= 2003] = np.nan
    return xr.Dataset(
        {"tair": (("site", "time"), tair), "precip": (("site", "time"), precip),
         "nee_monthly": (("site", "month"), nee), "nee_monthly_qc": (("site", "month"), np.ones_like(nee))},
        coords={"site": units, "time": time, "month": months},
    ), planted


@pytest.mark.parametrize("by", ["dry", "hot"])
def test_anomalous_year_out_holds_out_each_sites_planted_year(tmp_path, by):
    """Per-site held-out years: each tested site's planted extreme year is its test year, no (site, year) of
    the test part reaches train or val on any axis, the drivers stay, and the split round-trips the JSON."""
    ds, planted = _daily_towers()
    split = anomalous_year_out(ds, by=by, val_fraction=0.15, seed=3)
    assert "short" not in split.test.units and "short" in split.train.units + split.val.units
    assert len(split.val) == 1 and not set(split.val.units) & set(split.test.units)
    assert len(split.test) == 6
    for u in split.test.units:
        assert split.test.years_of(u) == (planted[u],)
        assert planted[u] not in split.train.years_of(u)
    test, train, val = (split.select(ds, p) for p in ("test", "train", "val"))
    for u in split.test.units:
        y = planted[u]
        codes = test.month.values
        obs_test = np.isfinite(test.nee_monthly.sel(site=u).values)
        assert obs_test[codes // 12 == y].all() and not obs_test[codes // 12 != y].any()
        obs_train = np.isfinite(train.nee_monthly.sel(site=u).values)
        assert not obs_train[codes // 12 == y].any() and obs_train[codes // 12 != y].all()
        assert not np.isfinite(train.nee_monthly_qc.sel(site=u).values[codes // 12 == y]).any()
        assert np.isfinite(train.tair.sel(site=u).values).all()  # drivers of the held-out year stay
    assert np.isfinite(val.nee_monthly.values).sum() == np.isfinite(ds.nee_monthly.sel(site=list(split.val.units))).sum()
    save_splits([split], tmp_path / "a.json")
    assert load_splits(tmp_path / "a.json") == [split]
    with pytest.raises(ValueError, match="both"):  # the test year may not be given to train as well
        Split("bad", "manual", 0, "site", Part(["S0"], unit_years={"S0": [2001, 2002]}), Part(),
              Part(["S0"], unit_years={"S0": [2002]}), Part())


def test_per_unit_years_merge_subset_and_old_files(tmp_path):
    train = Part(["A", "B"], unit_years={"A": [2001, 2002], "B": [2003]})
    val = Part(["C"])
    merged = train.union(val)
    assert merged.years_of("A") == (2001, 2002) and merged.years_of("C") is None
    assert train.subset(["B"]) == Part(["B"], unit_years={"B": [2003]})
    assert "unit_years" not in Part(["A"], [2001]).to_dict()  # files without the key are written as before
    with pytest.raises(ValueError, match="exactly"):
        Part(["A", "B"], unit_years={"A": [2001]})
    with pytest.raises(ValueError, match="not both"):
        Part(["A"], [2001], unit_years={"A": [2001]})


def test_years_kfold_within_sites_predicts_every_eligible_year_once_with_no_leak(tmp_path):
    """Known sites, unseen years: over the k folds every eligible year of every tested site is a test year
    exactly once, never in that fold's train or val on any axis; the site with 2 observed years and the val
    site are never tested; drivers stay; the folds round-trip the JSON."""
    ds, _ = _daily_towers()
    folds = years_kfold_within_sites(ds, 4, seed=3)
    assert len(folds) == 4 and len({f.name for f in folds}) == 4
    seen: dict[str, list[int]] = {}
    for f in folds:
        assert "short" not in f.test.units and not set(f.val.units) & set(f.test.units)
        assert f.val.units == folds[0].val.units and len(f.val) == 1
        train, val = f.select(ds, "train"), f.select(ds, "val")
        for u in f.test.units:
            ys = f.test.years_of(u)
            seen.setdefault(u, []).extend(ys)
            assert not set(ys) & set(f.train.years_of(u))
            codes = train.month.values // 12
            assert not np.isfinite(train.nee_monthly.sel(site=u).values[np.isin(codes, ys)]).any()
            assert np.isfinite(train.nee_monthly.sel(site=u).values[~np.isin(codes, ys)]).all()
            assert np.isfinite(train.tair.sel(site=u).values).all()
            assert u not in val.site.values
    assert sorted(seen) == [f"S{i}" for i in range(7) if f"S{i}" not in folds[0].val.units]
    for u, ys in seen.items():
        assert sorted(ys) == list(range(2001, 2007)), u  # every year once
    assert load_splits(save_splits(folds, tmp_path / "k.json")) == folds
    with pytest.raises(ValueError, match="at least 2"):
        years_kfold_within_sites(ds, 1)
    with pytest.raises(ValueError, match="no site"):
        years_kfold_within_sites(ds, 3, min_years=20)
