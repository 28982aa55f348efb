"""COSORE and SRDB readers: real-data spot checks against the raw files, and deliberately broken inputs."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.soil_respiration import read_cosore, read_cosore_dataset, read_srdb

#: µmol CO2 m-2 s-1 → gC m-2 d-1, written out independently: 12.0107 g mol-1 × 1e-6 mol µmol-1 × 86400 s d-1.
UMOL_TO_GC_DAY = 12.0107e-6 * 86400.0

DESCRIPTION = """# DESCRIPTION.txt
# comment lines are ignored
\t\t%d day of month; %H hour (a comment line without #, as in real COSORE files)
CSR_SITE_NAME: Test site
CSR_LONGITUDE: -90.5
CSR_LATITUDE: 40.25
CSR_ELEVATION: 200
CSR_TIMEZONE: {tz}
CSR_IGBP: Deciduous broadleaf forest
CSR_SITE_ID: US-Tst
CSR_TIMESTAMP_FORMAT: %Y-%m-%d %H:%M:%S
CSR_TIMESTAMP_TZ: {tz}
CSR_PRIMARY_PUB: 10.0000/test
"""
PORTS = """# PORTS.txt
CSR_PORT,\tCSR_MSMT_VAR,\tCSR_TREATMENT,\tCSR_AREA,\tCSR_SPECIES
1,\t\tRs,\t\tNone,\t\t317.8,\t\t"Quercus rubra, Acer rubrum"
2,\t\tRh,\t\tTrenched,\t317.8,\t\tNone
"""


def hourly_rows(day: str = "2020-06-01", hours=range(24), port: int = 1, flux: float = 2.0, utc_offset: int = 5):
    """Rows of a flux table for local ``day`` (local = UTC − utc_offset h); flux constant, T5 and SM5 set."""
    rows = []
    for h in hours:
        start = pd.Timestamp(day) + pd.Timedelta(hours=h + utc_offset)
        rows.append({
            "CSR_PORT": port,
            "CSR_TIMESTAMP_BEGIN": f"{start:%Y-%m-%d %H:%M:%S}+00:00",
            "CSR_TIMESTAMP_END": f"{start + pd.Timedelta(minutes=2):%Y-%m-%d %H:%M:%S}+00:00",
            "CSR_FLUX_CO2": flux,
            "CSR_T5": 15.0,
            "CSR_SM5": 0.25,
        })
    return rows


def write_cosore(folder, rows, *, tz="Etc/GMT+5", ports=PORTS, gz=True, description=DESCRIPTION):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "DESCRIPTION.txt").write_text(description.format(tz=tz))
    (folder / "PORTS.txt").write_text(ports)
    frame = pd.DataFrame(rows)
    if gz:
        with gzip.open(folder / "data.csv.gz", "wt") as fh:
            frame.to_csv(fh, index=False)
    else:
        frame.to_csv(folder / "data.csv", index=False)
    return folder


# --- real data -------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_cosore_single_port_day_matches_hand_computation(dataset_dir):
    folder = dataset_dir("cosore") / "datasets" / "d20190526_MINIONS_IMNL"
    ds = read_cosore_dataset(folder)
    assert list(ds.site.values) == ["d20190526_MINIONS_IMNL"]
    assert ds.igbp.item() == "ENF" and ds.timezone.item() == "Etc/GMT+9"
    assert ds.lat.item() == pytest.approx(68.5593) and ds.lon.item() == pytest.approx(-149.51605)
    # Raw rows of data.csv.gz (UTC starts 2016-08-20 09:57:30 … 2016-08-21 08:57:30, 2.5-min chambers) → local
    # (UTC−9) hours of the midpoint; the 05:57Z (local 20 h) measurement is absent from the file.
    local_hour_flux = {
        0: 1.098166, 1: 0.879843, 2: 0.725964, 3: 0.785248, 4: 0.777381, 5: 0.836741, 6: 1.640263, 7: 2.177105,
        8: 2.314376, 9: 1.894305, 10: 1.483330, 11: 1.292121, 12: 1.353597, 13: 1.081167, 14: 1.181773,
        15: 1.111988, 16: 1.027901, 17: 1.360467, 18: 1.395626, 19: 1.465489, 21: 1.520786, 22: 1.918530,
        23: 1.817699,
    }
    blocks: dict[int, list[float]] = {}
    for hour, flux in local_hour_flux.items():
        blocks.setdefault(hour // 3, []).append(flux)
    expected = np.mean([np.mean(v) for v in blocks.values()]) * UMOL_TO_GC_DAY
    day = ds.sel(time="2016-08-20")
    assert float(day.rsoil.item()) == pytest.approx(expected, rel=1e-5)
    assert int(day.n_obs.item()) == 23
    assert float(day.coverage.item()) == 1.0


@pytest.mark.realdata
def test_cosore_day_resolution_dataset_keeps_recorded_dates(dataset_dir):
    # SEIBT wrote "%Y %j" (no time of day) in UTC: 2013-04-01 00:00Z must stay 1 April, not 31 March local.
    ds = read_cosore_dataset(dataset_dir("cosore") / "datasets" / "d20200213_SEIBT")
    assert ds.attrs["timestamp_resolution"] == "day"
    assert str(ds.time.values[0])[:10] == "2013-04-01"
    assert np.isnan(ds.coverage.values).all()
    raw = pd.read_csv(dataset_dir("cosore") / "datasets" / "d20200213_SEIBT" / "data.csv.gz")
    first = raw[(raw.CSR_PORT == 1) & raw.CSR_TIMESTAMP_BEGIN.str.startswith("2013-04-01")]
    expected = first.CSR_FLUX_CO2.mean() * UMOL_TO_GC_DAY
    assert float(ds.rsoil.sel(site="d20200213_SEIBT/1", time="2013-04-01")) == pytest.approx(expected, rel=1e-5)
    assert float(ds.swc.sel(site="d20200213_SEIBT/1", time="2013-04-01")) == pytest.approx(first.CSR_SM5.mean() * 100, rel=1e-5)


@pytest.mark.realdata
def test_srdb_loads_with_site_attributes(dataset_dir):
    ds = read_srdb(dataset_dir("srdb"))
    assert ds.sizes["record"] == 12272  # SOURCE.md
    first = ds.sel(record=1)
    assert first.site_name.item() == "BOREAS NSA-D1998" and first.quality_flag.item() == "Q02"
    assert float(first.rs_annual) == 255.0 and float(first.rh_annual) == 262.0
    assert float(first.rsoil) == pytest.approx(255.0 / 365.25, rel=1e-6)
    assert float(first.lat) == pytest.approx(56.63) and float(first.lon) == pytest.approx(-99.94)
    assert ds.rs_annual.attrs["units"] == "gC m-2 yr-1"
    assert ds.attrs["n_rsoil_out_of_range"] == 1  # the 40997 gC m-2 yr-1 record, masked only in rsoil
    assert np.nanmax(ds.rs_annual.values) == pytest.approx(40997.0)
    assert np.nanmax(ds.rsoil.values) < 100.0


# --- synthetic, good ------------------------------------------------------------------------------------


def test_local_day_and_units_from_utc(tmp_path):
    rows = hourly_rows(flux=2.0) + hourly_rows(port=2, flux=1.0)
    ds = read_cosore_dataset(write_cosore(tmp_path / "dtest", rows))
    assert list(ds.site.values) == ["dtest/1", "dtest/2"]
    assert list(ds.msmt_var.values) == ["Rs", "Rh"]
    assert list(ds.treatment.values) == ["None", "Trenched"]
    # 24 local hours of 1 June (05:00Z 1 June … 04:00Z 2 June) all land on 1 June local.
    assert ds.sizes["time"] == 1 and str(ds.time.values[0])[:10] == "2020-06-01"
    assert float(ds.rsoil.sel(site="dtest/1").item()) == pytest.approx(2.0 * UMOL_TO_GC_DAY, rel=1e-6)
    assert np.isnan(float(ds.rsoil.sel(site="dtest/2").item()))
    assert float(ds.rh_soil.sel(site="dtest/2").item()) == pytest.approx(1.0 * UMOL_TO_GC_DAY, rel=1e-6)
    assert float(ds.swc.sel(site="dtest/1").item()) == pytest.approx(25.0)
    assert ds.igbp.values[0] == "DBF" and ds.tsoil_depth.values[0] == 5.0


def test_utc_offset_string_equals_iana_zone(tmp_path):
    rows = hourly_rows()
    a = read_cosore_dataset(write_cosore(tmp_path / "a", rows, tz="Etc/GMT+5"))
    b = read_cosore_dataset(write_cosore(tmp_path / "b", rows, tz="UTC-5"))
    np.testing.assert_array_equal(a.time.values, b.time.values)
    np.testing.assert_allclose(a.rsoil.values, b.rsoil.values)


def test_coverage_rule(tmp_path):
    # Two 3-h blocks of eight observed: below min_coverage 0.5, kept at 0.
    rows = hourly_rows(hours=[0, 1, 2, 3, 4, 5]) + hourly_rows(day="2020-06-02", flux=4.0)
    folder = write_cosore(tmp_path / "cov", rows)
    strict = read_cosore_dataset(folder)
    assert np.isnan(float(strict.rsoil.sel(time="2020-06-01").item()))
    assert float(strict.coverage.sel(time="2020-06-01").item()) == pytest.approx(0.25)
    lenient = read_cosore_dataset(folder, min_coverage=0.0)
    assert float(lenient.rsoil.sel(time="2020-06-01").item()) == pytest.approx(2.0 * UMOL_TO_GC_DAY, rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    hours=st.sets(st.integers(0, 23), min_size=12, max_size=24),
    fluxes=st.lists(st.floats(0.1, 20.0), min_size=24, max_size=24),
)
def test_daily_value_is_a_mean_of_the_observations(tmp_path_factory, hours, fluxes):
    rows = [dict(r, CSR_FLUX_CO2=fluxes[h]) for h, r in zip(sorted(hours), hourly_rows(hours=sorted(hours)), strict=True)]
    folder = write_cosore(tmp_path_factory.mktemp("prop") / "p", rows)
    ds = read_cosore_dataset(folder, min_coverage=0.0)
    value = float(ds.rsoil.isel(site=0, time=0))
    observed = [fluxes[h] * UMOL_TO_GC_DAY for h in hours]
    assert min(observed) - 1e-4 <= value <= max(observed) + 1e-4
    # Equal weight per 3-h block: the daily value is the mean of the block means.
    blocks: dict[int, list[float]] = {}
    for h in hours:
        blocks.setdefault(h // 3, []).append(fluxes[h])
    assert value == pytest.approx(np.mean([np.mean(b) for b in blocks.values()]) * UMOL_TO_GC_DAY, rel=1e-5)


def test_spikes_are_masked_and_counted(tmp_path):
    rows = hourly_rows()
    rows[3]["CSR_FLUX_CO2"] = -232398.0  # a real COSORE spike (d20191214_PANG)
    ds = read_cosore_dataset(write_cosore(tmp_path / "spike", rows))
    assert ds.attrs["n_rsoil_out_of_range"] == 1
    assert float(ds.rsoil.isel(site=0, time=0)) == pytest.approx(2.0 * UMOL_TO_GC_DAY, rel=1e-6)


def test_aggregate_ports(tmp_path):
    rows = hourly_rows(flux=2.0) + hourly_rows(port=3, flux=4.0) + hourly_rows(port=2, flux=1.0)
    ports = PORTS + "3,\t\tRs,\t\tNone,\t\t317.8,\t\tNone\n"
    ds = read_cosore_dataset(write_cosore(tmp_path / "agg", rows, ports=ports), aggregate_ports=True)
    assert sorted(ds.site.values) == ["agg/Rh/Trenched", "agg/Rs/None"]
    assert float(ds.rsoil.sel(site="agg/Rs/None").item()) == pytest.approx(3.0 * UMOL_TO_GC_DAY, rel=1e-6)


# --- synthetic, broken -----------------------------------------------------------------------------------


def test_renamed_flux_column_is_named(tmp_path):
    rows = [{("CSR_FLUX" if k == "CSR_FLUX_CO2" else k): v for k, v in r.items()} for r in hourly_rows()]
    with pytest.raises(DataValidationError, match=r"data\.csv\.gz.*CSR_FLUX_CO2.*required column missing"):
        read_cosore_dataset(write_cosore(tmp_path / "renamed", rows))


def test_all_missing_flux(tmp_path):
    rows = [dict(r, CSR_FLUX_CO2=None) for r in hourly_rows()]
    with pytest.raises(DataValidationError, match="CSR_FLUX_CO2.*all CO2 flux values are missing"):
        read_cosore_dataset(write_cosore(tmp_path / "empty", rows))


def test_unknown_time_zone(tmp_path):
    with pytest.raises(DataValidationError, match=r"DESCRIPTION\.txt.*CSR_TIMEZONE.*unknown time zone 'Mars/Olympus'"):
        read_cosore_dataset(write_cosore(tmp_path / "tz", hourly_rows(), tz="Mars/Olympus"))


def test_conflicting_duplicates(tmp_path):
    rows = hourly_rows() + [dict(hourly_rows()[0], CSR_FLUX_CO2=4.0)]
    folder = write_cosore(tmp_path / "dup", rows)
    with pytest.raises(DataValidationError, match="CSR_TIMESTAMP_BEGIN.*repeat a port and timestamp"):
        read_cosore_dataset(folder, duplicates="error")
    with pytest.warns(DataWarning, match="averaged"):
        ds = read_cosore_dataset(folder)
    assert ds.attrs["n_conflicting_duplicates_averaged"] == 1
    exact = write_cosore(tmp_path / "exact", hourly_rows() + hourly_rows()[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_cosore_dataset(exact, duplicates="error").attrs["n_exact_duplicates_dropped"] == 5


def test_soil_moisture_percent_for_fraction(tmp_path):
    rows = [dict(r, CSR_SM5=25.0 + i % 3) for i, r in enumerate(hourly_rows())]
    folder = write_cosore(tmp_path / "sm", rows)
    with pytest.raises(DataValidationError, match="CSR_SM5.*looks like %"):
        read_cosore_dataset(folder, swc_units="m3 m-3")
    ds = read_cosore_dataset(folder)  # auto: accepted as %, noted
    assert float(ds.swc.isel(site=0, time=0)) == pytest.approx(26.0, abs=0.5)
    assert "holds %" in ds.attrs["notes"]


def test_flux_in_wrong_units(tmp_path):
    rows = [dict(r, CSR_FLUX_CO2=2000.0 + i) for i, r in enumerate(hourly_rows())]  # nmol given as µmol
    with pytest.raises(DataValidationError, match="CSR_FLUX_CO2.*outside the valid range of rsoil.*wrong units"):
        read_cosore_dataset(write_cosore(tmp_path / "nmol", rows))


def test_soil_temperature_in_kelvin(tmp_path):
    rows = [dict(r, CSR_T5=288.15 + 0.1 * i) for i, r in enumerate(hourly_rows())]
    with pytest.raises(DataValidationError, match="CSR_T5.*kelvin"):
        read_cosore_dataset(write_cosore(tmp_path / "kelvin", rows))


def test_truncated_gzip(tmp_path):
    folder = write_cosore(tmp_path / "trunc", hourly_rows())
    data = (folder / "data.csv.gz").read_bytes()
    (folder / "data.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataValidationError, match=r"data\.csv\.gz.*cannot parse"):
        read_cosore_dataset(folder)


def test_bad_timestamps_named(tmp_path):
    rows = hourly_rows()
    rows[2]["CSR_TIMESTAMP_BEGIN"] = "2020-13-45 99:00:00"
    with pytest.raises(DataValidationError, match="CSR_TIMESTAMP_BEGIN.*unreadable timestamps"):
        read_cosore_dataset(write_cosore(tmp_path / "ts", rows))


def test_good_dataset_still_loads_beside_broken_ones(tmp_path):
    root = tmp_path / "cosore"
    write_cosore(root / "datasets" / "d1_good", hourly_rows())
    write_cosore(root / "datasets" / "d2_badtz", hourly_rows(), tz="Nowhere/Land")
    write_cosore(root / "datasets" / "d3_empty", [dict(r, CSR_FLUX_CO2=None) for r in hourly_rows()])
    with pytest.warns(DataWarning) as caught:
        ds = read_cosore(root)
    messages = " ".join(str(w.message) for w in caught)
    assert "d2_badtz skipped" in messages and "d3_empty skipped" in messages
    assert list(ds.site.values) == ["d1_good"]  # one port: the dataset name is the site
    assert "d2_badtz" in ds.attrs["skipped_files"] and "d3_empty" in ds.attrs["skipped_files"]
    with pytest.raises(DataValidationError, match="Nowhere/Land"):
        read_cosore(root, errors="raise")


def _srdb_frame():
    return pd.DataFrame({
        "Record_number": [1, 2, 3], "Study_number": [10, 10, 11], "Quality_flag": ["Q0", "Q12", "Q0"],
        "Site_name": ["a", "b", "c"], "Latitude": [40.0, 41.0, -3.0], "Longitude": [-90.0, -91.0, 20.0],
        "Study_midyear": [2001.5, 2002.0, 1999.5], "Rs_annual": [730.5, 365.25, -9999.0],
        "Rh_annual": [365.25, None, 100.0], "Duplicate_record": [None, None, 10],
    })


def test_srdb_synthetic_and_flags(tmp_path):
    path = tmp_path / "srdb-data.csv"
    _srdb_frame().to_csv(path, index=False)
    ds = read_srdb(path)
    np.testing.assert_allclose(ds.rsoil.values[:2], [2.0, 1.0], rtol=1e-6)
    assert np.isnan(ds.rsoil.values[2])  # -9999 sentinel
    assert list(ds.year.values) == [2001, 2002, 1999]
    assert read_srdb(path, drop_quality_flags=["Q12"]).sizes["record"] == 2
    assert read_srdb(path, drop_duplicates=True).sizes["record"] == 2


def test_srdb_broken(tmp_path):
    path = tmp_path / "srdb-data.csv"
    _srdb_frame().drop(columns="Rs_annual").to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="Rs_annual.*required SRDB column missing"):
        read_srdb(path)
    _srdb_frame().assign(Record_number=[1, 1, 2]).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="Record_number.*duplicate record numbers"):
        read_srdb(path)
