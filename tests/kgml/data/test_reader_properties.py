"""Property-based tests (hypothesis) on the readers: random valid tables round-trip exactly, -9999 becomes NaN where
it was, QC masking is monotone in its threshold, random unit mistakes are always caught (naming the variable and
the file), and splits are deterministic and disjoint for random site sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgml.data.nldas_county import read_nldas_county_weather
from kgml.data.schema import DataValidationError, validate_dataset
from kgml.data.soyface import read_soyface_table
from kgml.data.splits import kfold_by_site, leave_one_site_out, load_splits, save_splits
from kgml.data.towers import QCPolicy, read_fluxnet_file
from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D

from .cropfiles import soyface_frame, weather_frame, write_csv, write_soyface
from .fluxfiles import fluxnet_frame, fluxnet_name, write_fluxnet

META = {"US-Syn": {"lat": 41.0, "lon": -96.0}}
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: 1 MJ m-2 d-1 as a 24-h mean flux (1e6 J / 86400 s), written out independently.
MJ_DAY_TO_W = 1e6 / 86400.0


# --- FLUXNET tables --------------------------------------------------------------------------------------


@SETTINGS
@given(
    resolution=st.sampled_from(["HH", "DD", "MM"]),
    n=st.integers(5, 40),
    seed=st.integers(0, 10_000),
    thresholds=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    flags=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    holes=st.lists(st.integers(0, 39), max_size=8),
)
def test_qc_masking_is_monotone_and_keeps_raw_values(tmp_path_factory, resolution, n, seed, thresholds, flags, holes):
    frame = fluxnet_frame(resolution, n, seed=seed)
    holes = sorted({h for h in holes if 0 < h < n})
    frame.loc[holes, "NEE_VUT_REF"] = -9999
    frame.loc[0, "NEE_VUT_REF_QC"] = 0 if resolution == "HH" else 1.0  # one value passes every policy
    path = write_fluxnet(tmp_path_factory.mktemp("qc"), frame=frame, name=fluxnet_name("US-Syn", resolution))
    factor = UMOL_CO2_M2_S_TO_GC_M2_D if resolution == "HH" else 1.0
    raw, qc = frame.NEE_VUT_REF.to_numpy(float), frame.NEE_VUT_REF_QC.to_numpy(float)
    if resolution == "HH":
        loose, strict = max(flags), min(flags)
        policies = (QCPolicy(max_flag=loose), QCPolicy(max_flag=strict))
        passes = (qc <= loose, qc <= strict)
    else:
        loose, strict = min(thresholds), max(thresholds)
        policies = (QCPolicy(min_fraction=loose), QCPolicy(min_fraction=strict))
        passes = (qc >= loose, qc >= strict)
    kept = []
    for policy, ok in zip(policies, passes, strict=True):
        nee = read_fluxnet_file(path, qc=policy, site_metadata=META).nee.values[0]
        expected = np.where(ok & (raw != -9999), raw * factor, np.nan)
        np.testing.assert_allclose(nee, expected, rtol=1e-6, equal_nan=True)
        kept.append(np.isfinite(nee))
    assert not (kept[1] & ~kept[0]).any()  # a stricter threshold never keeps a value the looser one dropped
    assert np.isnan(read_fluxnet_file(path, qc=policies[0], site_metadata=META).nee.values[0][holes]).all()


#: Unit mistakes in a FLUXNET DD file: column → (how the wrong numbers are made, canonical variable, hint).
FLUXNET_MISTAKES = {
    "TA_F": (lambda v: v + 273.15, "tair", "kelvin"),
    "SWC_F_MDS_1": (lambda v: v / 100.0, "swc", "fraction"),
    "PA_F": (lambda v: v * 10.0, "patm", "outside the valid range"),  # hPa in the kPa column
    "VPD_F": (lambda v: v * 100.0, "vpd", "Pa"),
}


@SETTINGS
@given(column=st.sampled_from(sorted(FLUXNET_MISTAKES)), n=st.integers(5, 30), seed=st.integers(0, 10_000))
def test_fluxnet_unit_mistakes_are_always_caught(tmp_path_factory, column, n, seed):
    frame = fluxnet_frame("DD", n, seed=seed)
    frame["VPD_F"] = np.random.default_rng(seed).uniform(2.0, 20.0, n).round(3)  # hPa, clearly not kPa
    make, variable, hint = FLUXNET_MISTAKES[column]
    frame[column] = make(frame[column])
    path = write_fluxnet(tmp_path_factory.mktemp("units"), frame=frame)
    with pytest.raises(DataValidationError, match=hint) as info:
        read_fluxnet_file(path, site_metadata=META, qc=QCPolicy(enabled=False))
    assert info.value.variable == variable and path.name in str(info.value)


#: Unit mistakes on canonical variables: variable → (plausible values in canonical units, mistake, hint).
SCHEMA_MISTAKES = {
    "tair": ((-30.0, 40.0), lambda v: v + 273.15, "kelvin"),
    "rh": ((20.0, 100.0), lambda v: v / 100.0, "fraction"),
    "swc": ((5.0, 60.0), lambda v: v / 100.0, "fraction"),
    "patm": ((80_000.0, 103_000.0), lambda v: v / 1000.0, "kPa"),
    "sw_in": ((50.0, 350.0), lambda v: v * 86400.0, "sw_in above 1500"),
    "gpp": ((1.0, 20.0), lambda v: v * 365.0, "annual total"),
    "crop_yield": ((3.0, 15.0), lambda v: v / 0.06277, "bu ac-1"),
}


@SETTINGS
@given(variable=st.sampled_from(sorted(SCHEMA_MISTAKES)), n=st.integers(5, 60), seed=st.integers(0, 10_000))
def test_schema_catches_random_unit_mistakes(variable, n, seed):
    from kgml.variables import get_variable

    (lo, hi), mistake, hint = SCHEMA_MISTAKES[variable]
    values = np.random.default_rng(seed).uniform(lo, hi, (1, n))
    coords = {"site": ["US-Syn"], "time": pd.date_range("2010-01-01", periods=n, freq="D")}
    ds = xr.Dataset({variable: (("site", "time"), values, {"units": get_variable(variable).units})}, coords=coords)
    validate_dataset(ds, source="synthetic.nc", warn_suspicious=False)  # the right units pass
    bad = ds.copy(data={variable: mistake(values)})
    with pytest.raises(DataValidationError, match=hint) as info:
        validate_dataset(bad, source="synthetic.nc")
    assert info.value.variable == variable and "synthetic.nc" in str(info.value)


# --- SoyFACE and county tables ---------------------------------------------------------------------------


@SETTINGS
@given(
    doys=st.lists(st.integers(150, 300), min_size=2, max_size=10, unique=True),
    year=st.sampled_from([2002, 2004, 2005, 2006]),
    masses=st.lists(st.floats(0.0, 12.0, allow_nan=False), min_size=60, max_size=60),
    shuffle=st.booleans(),
)
def test_soyface_tables_roundtrip_and_order(tmp_path_factory, doys, year, masses, shuffle):
    doys = sorted(doys)
    frame = soyface_frame(doys)
    for i, column in enumerate(frame.columns[1:]):
        frame[column] = np.round(masses[i * 10 : i * 10 + len(doys)], 6)
    if shuffle:
        frame = frame.iloc[[1, 0, *range(2, len(doys))]].reset_index(drop=True)
    path = write_soyface(tmp_path_factory.mktemp("soy"), year, "ambient", frame, std=False)
    if shuffle:
        with pytest.raises(DataValidationError, match="goes back in time") as info:
            read_soyface_table(path)
        assert info.value.variable == "DOY"
        return
    table = read_soyface_table(path)
    assert list(table.index) == list(pd.Timestamp(f"{year}-01-01") + pd.to_timedelta(np.array(doys) - 1, unit="D"))
    np.testing.assert_array_equal(table.leaf_biomass.to_numpy(), frame.Leaf_Mg_per_ha.to_numpy())  # factor 1
    np.testing.assert_array_equal(table.grain_biomass.to_numpy(), frame.Seed_Mg_per_ha.to_numpy())


@SETTINGS
@given(
    counties=st.lists(st.sampled_from([17001, 17003, 17019, 19169]), min_size=1, max_size=3, unique=True),
    days=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    missing=st.lists(st.integers(0, 35), max_size=5),
    swap=st.booleans(),
)
def test_county_weather_roundtrip(tmp_path_factory, counties, days, seed, missing, swap):
    frame = weather_frame(tuple(sorted(counties)), (2003,), days=days, seed=seed)
    holes = sorted({m for m in missing if m < len(frame)})
    frame.loc[holes, "Wind"] = -9999
    if swap:
        frame = frame.iloc[[1, 0, *range(2, len(frame))]].reset_index(drop=True)
    path = write_csv(frame, tmp_path_factory.mktemp("county") / "county_daily_inputs.csv")
    if swap:
        with pytest.raises(DataValidationError, match="goes back in time") as info:
            read_nldas_county_weather(path)
        assert info.value.variable == "Day" and path.name in str(info.value)
        return
    if len(holes) == len(frame):
        return
    ds = read_nldas_county_weather(path)
    assert list(ds.county.values) == sorted(counties) and ds.sizes["time"] == days
    dates = (pd.Timestamp("2003-01-01") + pd.to_timedelta(frame.Day - 1, unit="D")).to_numpy()
    rows = ds.sel(county=xr.DataArray(frame.fips.to_numpy(), dims="row"), time=xr.DataArray(dates, dims="row"))
    np.testing.assert_allclose(rows.sw_in.values, frame.Radiation * MJ_DAY_TO_W, rtol=1e-6)
    np.testing.assert_allclose(rows.tair.values, frame.Tair, rtol=1e-6)
    wind = rows.ws.values
    assert np.isnan(wind[holes]).all() and np.isfinite(np.delete(wind, holes)).all()


# --- splits ----------------------------------------------------------------------------------------------

SITE_IDS = st.lists(st.from_regex(r"[A-Z]{2}-[A-Z][a-z0-9]{2}", fullmatch=True), min_size=3, max_size=25, unique=True)


@SETTINGS
@given(sites=SITE_IDS, k=st.integers(2, 6), seed=st.integers(0, 2**31 - 1), val=st.floats(0.0, 0.4))
def test_site_splits_deterministic_disjoint_and_complete(tmp_path_factory, sites, k, seed, val):
    k = min(k, len(sites))
    folds = kfold_by_site(sites, k=k, seed=seed, val_fraction=val)
    assert [f.to_dict() for f in kfold_by_site(list(reversed(sites)), k=k, seed=seed, val_fraction=val)] == [f.to_dict() for f in folds]
    tested = sorted(u for f in folds for u in f.test.units)
    assert tested == sorted(sites)  # every site held out exactly once
    loso = leave_one_site_out(sites, seed=seed, val_fraction=val)
    assert sorted(s.test.units[0] for s in loso) == sorted(sites)
    for split in [*folds, *loso]:
        parts = [split.train.units, split.val.units, split.test.units, split.ood.units]
        flat = [u for p in parts for u in p]
        assert len(flat) == len(set(flat)) and sorted(flat) == sorted(sites)
        assert len(split.train) >= 1
    path = save_splits([*folds, *loso], tmp_path_factory.mktemp("splits") / "splits.json")
    assert load_splits(path) == [*folds, *loso]
