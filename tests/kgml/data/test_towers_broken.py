"""Deliberately broken tower files: each error names the file, the variable and the problem; good files
in the same folder still load (errors="warn"); unit conversions and QC on synthetic files are exact."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest

from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.towers import (
    QCPolicy,
    aggregate_to,
    parse_fluxnet_filename,
    read_ameriflux_base,
    read_fluxnet_dir,
    read_fluxnet_file,
    read_oneflux_qca,
)
from kgml.variables import UMOL_CO2_M2_S_TO_GC_M2_D

from .fluxfiles import fluxnet_frame, fluxnet_name, write_fluxnet, write_frame, write_qca

NO_QC = QCPolicy(enabled=False)


def _expect(path, variable, *words, **kwargs):
    """Read ``path`` and check the error names the file, the variable and the problem words."""
    with pytest.raises(DataValidationError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # "no lat/lon" for these table-less files
        read_fluxnet_file(path, site_metadata=None, **kwargs)
    err = info.value
    message = str(err)
    assert path.name in message
    if variable is not None:
        assert err.variable == variable and repr(variable) in message
    for word in words:
        assert word in message, message
    return err


# --- a good file and its exact conversions ---------------------------------------------------------------


def test_good_daily_file_exact_values(tmp_path):
    frame = fluxnet_frame("DD", 40)
    path = write_fluxnet(tmp_path, frame=frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # no site table here
        ds = read_fluxnet_file(path, qc=NO_QC, site_metadata=None)
    assert ds.sizes == {"site": 1, "time": 40}
    assert ds.attrs["time_resolution"] == "DD"
    np.testing.assert_allclose(ds.tair.values[0], frame.TA_F, rtol=1e-6)
    np.testing.assert_allclose(ds.nee.values[0], frame.NEE_VUT_REF, rtol=1e-6)  # DD already gC m-2 d-1
    np.testing.assert_allclose(ds.patm.values[0], frame.PA_F * 1000.0, rtol=1e-6)  # kPa → Pa
    np.testing.assert_allclose(ds.precip.values[0], frame.P_F, rtol=1e-6)
    assert ds.nee.attrs["units"] == "gC m-2 d-1" and ds.patm.attrs["units"] == "Pa"
    assert str(ds.time.values[0])[:10] == "2010-01-01"


def test_half_hourly_units_and_qc_flags(tmp_path):
    frame = fluxnet_frame("HH", 96)
    path = write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Syn", "HH"))
    ds = read_fluxnet_file(path, site_metadata={"US-Syn": {"lat": 41.0, "lon": -96.0}}, qc=QCPolicy(max_flag=1))
    assert ds.attrs["time_resolution"] == "HH"
    expected = frame.NEE_VUT_REF * UMOL_CO2_M2_S_TO_GC_M2_D
    keep = frame.NEE_VUT_REF_QC <= 1
    np.testing.assert_allclose(ds.nee.values[0][keep], expected[keep], rtol=1e-6)
    assert np.isnan(ds.nee.values[0][~keep]).all()
    assert np.isnan(ds.gpp.values[0][~keep]).all()  # partitioned fluxes follow NEE_VUT_REF_QC
    assert np.isfinite(ds.tair.values[0]).all()  # met drivers are not QC-masked by default
    np.testing.assert_allclose(ds.precip.values[0], frame.P_F * 48.0, rtol=1e-6)  # mm per half-hour → mm d-1
    assert UMOL_CO2_M2_S_TO_GC_M2_D == pytest.approx(12.0107e-6 * 86400.0, rel=1e-12)


def test_daily_qc_fraction_threshold(tmp_path):
    frame = fluxnet_frame("DD", 50)
    path = write_fluxnet(tmp_path, frame=frame)
    ds = read_fluxnet_file(path, qc=QCPolicy(min_fraction=0.7), site_metadata={"US-Syn": {"lat": 1.0, "lon": 1.0}})
    bad = frame.NEE_VUT_REF_QC < 0.7
    assert np.isnan(ds.nee.values[0][bad]).all() and np.isfinite(ds.nee.values[0][~bad]).all()


def test_yearly_totals_become_daily_rates(tmp_path):
    frame = fluxnet_frame("YY", 4, seed=3)  # 2010..2013
    frame["NEE_VUT_REF"] = [-365.0, -366.0, 730.0, 0.0]
    path = write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Syn", "YY", "2010-2013"))
    ds = read_fluxnet_file(path, qc=NO_QC, site_metadata={"US-Syn": {"lat": 1.0, "lon": 1.0}})
    np.testing.assert_allclose(ds.nee.values[0], [-1.0, -366.0 / 365.0, 730.0 / 366.0, 0.0], rtol=1e-6)  # 2012 has 366 days
    assert ds.attrs["time_resolution"] == "YY"


def test_weekly_and_monthly_resolutions(tmp_path):
    meta = {"US-Syn": {"lat": 1.0, "lon": 1.0}}
    ww = read_fluxnet_file(write_fluxnet(tmp_path, resolution="WW", n=10, name=fluxnet_name("US-Syn", "WW")), site_metadata=meta)
    assert ww.attrs["time_resolution"] == "WW"
    mm = read_fluxnet_file(write_fluxnet(tmp_path, resolution="MM", n=14, name=fluxnet_name("US-Syn", "MM")), site_metadata=meta)
    assert mm.attrs["time_resolution"] == "MM" and str(mm.time.values[1])[:10] == "2010-02-01"


def test_filename_parsing():
    info = parse_fluxnet_filename("FLX_BE-Lcr_FLUXNET2015_FULLSET_DD_2019-2020_beta-3.csv.gz")
    assert (info.site, info.dataset, info.resolution, info.first_year, info.version) == ("BE-Lcr", "FULLSET", "DD", 2019, "beta-3")
    assert parse_fluxnet_filename("AMF_US-Ne1_FLUXNET_SUBSET_HR_2001-2020_3-5.csv").resolution == "HR"
    assert parse_fluxnet_filename("notes.csv") is None


# --- broken files ----------------------------------------------------------------------------------------


def test_truncated_row(tmp_path):
    path = write_fluxnet(tmp_path)
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rfind(",", 0, len(text) - 20)] + "\n")  # cut the last row mid-way
    _expect(path, None, "malformed row", "truncated")


def test_truncated_gzip_stream(tmp_path):
    path = write_fluxnet(tmp_path, name=fluxnet_name() + ".gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect(path, None, "cannot read file")


def test_missing_and_renamed_columns(tmp_path):
    frame = fluxnet_frame("DD", 30).rename(columns={"NEE_VUT_REF": "NEE_VUT_REFX"})
    err = _expect(write_fluxnet(tmp_path, frame=frame), "nee", "NEE_VUT_REF", "not found", "NEE_VUT_REFX")
    assert "similar" in err.problem
    frame = fluxnet_frame("DD", 30).drop(columns=["TIMESTAMP"])
    _expect(write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Ab1")), "time", "TIMESTAMP")


def test_all_missing_variable(tmp_path):
    frame = fluxnet_frame("DD", 30)
    frame["NEE_VUT_REF"] = -9999
    _expect(write_fluxnet(tmp_path, frame=frame), "nee", "all values are missing")
    frame = fluxnet_frame("DD", 30)
    frame["SWC_F_MDS_1"] = -9999  # an optional variable that is all missing is simply omitted
    ds = read_fluxnet_file(write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Ab2")), site_metadata={"US-Ab2": {"lat": 1, "lon": 1}})
    assert "swc" not in ds and "nee" in ds


def test_duplicate_and_non_monotonic_timestamps(tmp_path):
    frame = fluxnet_frame("DD", 30)
    frame.loc[10, "TIMESTAMP"] = frame.loc[9, "TIMESTAMP"]
    _expect(write_fluxnet(tmp_path, frame=frame), "TIMESTAMP", "duplicate timestamp", "2010-01-10")
    frame = fluxnet_frame("DD", 30)
    frame.loc[[10, 11], "TIMESTAMP"] = frame.loc[[11, 10], "TIMESTAMP"].to_numpy()
    _expect(write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Ab3")), "TIMESTAMP", "not monotonic")


def test_mixed_resolutions(tmp_path):
    frame = fluxnet_frame("DD", 30)
    frame.loc[5, "TIMESTAMP"] = "201001"  # a monthly stamp in a daily file
    _expect(write_fluxnet(tmp_path, frame=frame), "TIMESTAMP", "mixed timestamp formats")
    monthly = fluxnet_frame("MM", 12)
    _expect(write_fluxnet(tmp_path, frame=monthly, name=fluxnet_name("US-Ab4", "DD")), "TIMESTAMP", "says DD", "MM")
    hh = fluxnet_frame("HH", 20)
    hh.loc[5:, "TIMESTAMP_START"] = (
        np.asarray(hh.loc[5:, "TIMESTAMP_START"].astype(np.int64)) + 15
    ).astype(str)  # 15-minute shift: off the half-hour grid
    _expect(write_fluxnet(tmp_path, frame=hh, name=fluxnet_name("US-Ab5", "HH")), "TIMESTAMP_START", "averaging periods")


def test_mixed_resolution_directory(tmp_path):
    write_fluxnet(tmp_path, site="US-Aa1", resolution="DD")
    write_fluxnet(tmp_path, site="US-Aa2", resolution="MM", n=12, name=fluxnet_name("US-Aa2", "MM"))
    with pytest.raises(DataValidationError, match=r"mixed resolutions.*DD.*MM"):
        read_fluxnet_dir(tmp_path, site_metadata=None)
    ds = read_fluxnet_dir(tmp_path, resolution="MM", site_metadata={"US-Aa2": {"lat": 1, "lon": 2}})
    assert list(ds.site.values) == ["US-Aa2"]


def test_wrong_units_kelvin_and_fraction(tmp_path):
    frame = fluxnet_frame("DD", 30)
    frame["TA_F"] = frame["TA_F"] + 273.15
    err = _expect(write_fluxnet(tmp_path, frame=frame), "tair", "outside the valid range", "kelvin")
    assert "273.15" in err.problem
    frame = fluxnet_frame("DD", 30)
    frame["SWC_F_MDS_1"] = frame["SWC_F_MDS_1"] / 100.0
    _expect(write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Ab6")), "swc", "fraction", "multiply by 100")
    frame = fluxnet_frame("DD", 30)
    frame["PA_F"] = frame["PA_F"] * 10.0  # hPa where kPa is expected
    _expect(write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Ab7")), "patm", "outside the valid range")


def test_invalid_policy_drop_and_mask(tmp_path):
    frame = fluxnet_frame("DD", 30)
    frame["SWC_F_MDS_1"] = frame["SWC_F_MDS_1"] / 100.0
    frame.loc[3, "VPD_F"] = 500.0  # one spike
    path = write_fluxnet(tmp_path, frame=frame)
    meta = {"US-Syn": {"lat": 1, "lon": 1}}
    with pytest.warns(DataWarning) as record:
        ds = read_fluxnet_file(path, invalid="drop", site_metadata=meta)
    messages = " ".join(str(w.message) for w in record)
    assert "'swc'" in messages and "'vpd'" in messages and path.name in messages
    assert "swc" not in ds and "vpd" not in ds and "nee" in ds
    with pytest.warns(DataWarning):
        ds = read_fluxnet_file(path, invalid="mask", site_metadata=meta)
    assert np.isnan(ds.vpd.values[0, 3]) and np.isfinite(ds.vpd.values[0, 4]) and "swc" not in ds


def test_non_numeric_and_empty_site(tmp_path):
    frame = fluxnet_frame("DD", 30).astype({"TA_F": object})
    frame.loc[4, "TA_F"] = "abc"
    _expect(write_fluxnet(tmp_path, frame=frame), "TA_F", "non-numeric", "abc")
    empty = tmp_path / fluxnet_name("US-Emp")
    empty.write_text(",".join(fluxnet_frame("DD", 1).columns) + "\n")
    _expect(empty, None, "no data rows", "empty site")


def test_bad_site_does_not_lose_the_others(tmp_path):
    good = [write_fluxnet(tmp_path, site=s, seed=i) for i, s in enumerate(("US-Aa1", "US-Aa2"))]
    frame = fluxnet_frame("DD", 60)
    frame["TA_F"] = frame["TA_F"] + 273.15
    bad = write_fluxnet(tmp_path, site="US-Bad", frame=frame)
    truncated = write_fluxnet(tmp_path, site="US-Tru")
    truncated.write_text(truncated.read_text()[:-30])
    meta = {s: {"lat": 40.0, "lon": -90.0, "igbp": "CRO"} for s in ("US-Aa1", "US-Aa2", "US-Bad", "US-Tru")}
    with pytest.warns(DataWarning) as record:
        ds = read_fluxnet_dir(tmp_path, site_metadata=meta)
    assert sorted(ds.site.values) == ["US-Aa1", "US-Aa2"]
    messages = " ".join(str(w.message) for w in record)
    assert bad.name in messages and "'tair'" in messages and truncated.name in messages
    assert bad.name in ds.attrs["skipped_files"] and truncated.name in ds.attrs["skipped_files"]
    assert set(ds.source_file.values) == {p.name for p in good}
    assert list(ds.igbp.values) == ["CRO", "CRO"]
    with pytest.raises(DataValidationError, match="US-Bad|US-Tru"):
        read_fluxnet_dir(tmp_path, site_metadata=meta, errors="raise")


def test_all_files_bad_raises(tmp_path):
    frame = fluxnet_frame("DD", 20)
    frame["NEE_VUT_REF"] = -9999
    write_fluxnet(tmp_path, frame=frame)
    with pytest.warns(DataWarning), pytest.raises(DataValidationError, match="no file could be read"):
        read_fluxnet_dir(tmp_path)


# --- ONEFlux measured NEE and AmeriFlux BASE -----------------------------------------------------------


def test_qca_file_and_timezones(tmp_path):
    path = write_qca(tmp_path, n=48)
    ds = read_oneflux_qca(path)
    assert ds.attrs["time_resolution"] == "HR" and ds.utc_offset.item() == -6.0 and ds.lat.item() == 41.1651
    assert np.isnan(ds.nee.values[0, ::7]).all()
    for tz, words in ((None, "no 'timezone'"), ("CST", "unknown time zone"), ("+19", "[-12, 14]")):
        p = write_qca(tmp_path / "x", timezone=tz) if (tmp_path / "x").mkdir(exist_ok=True) is None else None
        with pytest.raises(DataValidationError) as info:
            read_oneflux_qca(p)
        assert info.value.variable == "timezone" and p.name in str(info.value) and words in str(info.value)
    p = write_qca(tmp_path / "x", timezone=None)
    assert read_oneflux_qca(p, utc_offset=-5).utc_offset.item() == -5.0
    wrong = write_qca(tmp_path / "x", timeres="halfhourly", n=10)
    text = gzip.decompress(wrong.read_bytes()).decode().replace("timeres,halfhourly", "timeres,hourly")
    wrong.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataValidationError, match="timeres=hourly"):
        read_oneflux_qca(wrong)


def test_ameriflux_base(tmp_path):
    rng = np.random.default_rng(1)
    n = 48
    starts = np.arange(np.datetime64("2015-06-01T00:00"), np.datetime64("2015-06-01T00:00") + np.timedelta64(30 * n, "m"), np.timedelta64(30, "m"))
    lines = ["# Site: US-Syn", "# Version: 1-5", "TIMESTAMP_START,TIMESTAMP_END,FC,TA_1_1_1,P,PA,SWC_1_1_1"]
    fc = rng.normal(0, 5, n).round(2)
    for t, f in zip(starts, fc, strict=True):
        e = t + np.timedelta64(30, "m")
        lines.append(f"{str(t).replace('-', '').replace('T', '').replace(':', '')},{str(e).replace('-', '').replace('T', '').replace(':', '')},{f},21.5,0.2,97.1,25")
    path = tmp_path / "AMF_US-Syn_BASE_HH_1-5.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = read_ameriflux_base(path, utc_offset=-6, site_metadata={"US-Syn": {"lat": 40.0, "lon": -90.0}})
    np.testing.assert_allclose(ds.nee.values[0], fc * UMOL_CO2_M2_S_TO_GC_M2_D, rtol=1e-6)
    np.testing.assert_allclose(ds.precip.values[0], 0.2 * 48, rtol=1e-6)
    assert ds.tair.attrs["source_column"] == "TA_1_1_1" and ds.utc_offset.item() == -6.0
    hr = tmp_path / "AMF_US-Syn_BASE_HR_1-5.csv"
    hr.write_text(path.read_text())
    with pytest.raises(DataValidationError, match="says HR but the timestamps are HH"):
        read_ameriflux_base(hr)


def test_aggregate_half_hourly_to_daily_with_coverage(tmp_path):
    frame = fluxnet_frame("HH", 96)  # two days
    frame.loc[:30, "NEE_VUT_REF"] = -9999  # day 1 keeps 17 of 48 half-hours (35 %)
    path = write_fluxnet(tmp_path, frame=frame, name=fluxnet_name("US-Syn", "HH"))
    ds = read_fluxnet_file(path, qc=NO_QC, site_metadata={"US-Syn": {"lat": 1, "lon": 1}})
    daily = aggregate_to(ds, "DD", min_coverage=0.5)
    assert daily.sizes["time"] == 2 and np.isnan(daily.nee.values[0, 0])
    np.testing.assert_allclose(daily.nee.values[0, 1], frame.NEE_VUT_REF[48:].mean() * UMOL_CO2_M2_S_TO_GC_M2_D, rtol=1e-5)
    np.testing.assert_allclose(daily.tair.values[0], [frame.TA_F[:48].mean(), frame.TA_F[48:].mean()], rtol=1e-5)


def test_write_frame_roundtrip_gz(tmp_path):
    frame = fluxnet_frame("DD", 10)
    path = write_frame(frame, tmp_path / (fluxnet_name() + ".gz"))
    ds = read_fluxnet_file(path, qc=NO_QC, site_metadata={"US-Syn": {"lat": 1, "lon": 1}})
    np.testing.assert_allclose(ds.gpp.values[0], frame.GPP_NT_VUT_REF, rtol=1e-6)
