"""Users' files as they come: the cases that used to load silently wrong (issue 16) are now clear errors, or
warnings recorded in the dataset's attributes; good files in a folder next to a damaged one still load."""

from __future__ import annotations

import gzip
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

from kgml.data import stations as S
from kgml.data.schema import DataValidationError, DataWarning
from kgml.data.soil_respiration import read_cosore, read_cosore_dataset
from kgml.data.towers import read_fluxnet_dir, read_fluxnet_file, read_reddyproc_table
from kgml.data.yields import read_nass_county

from .fluxfiles import fluxnet_frame, fluxnet_name, write_fluxnet
from .test_soil_respiration_readers import hourly_rows, write_cosore


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return fn(*args, **kwargs)


# --- non-finite values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["inf", "Infinity", "1e999", "-inf"])
def test_infinite_tokens_are_out_of_range(tmp_path, token):
    frame = fluxnet_frame("DD", 40).astype({"TA_F": object})
    frame.loc[5, "TA_F"] = token
    path = write_fluxnet(tmp_path, frame=frame)
    with pytest.raises(DataValidationError) as info:
        _quiet(read_fluxnet_file, path, site_metadata=None)
    assert path.name in str(info.value) and info.value.variable == "tair"
    assert "1 value(s) outside the valid range" in info.value.problem and "inf" in info.value.problem


def test_infinite_value_in_an_apsim_met_file(tmp_path):
    path = tmp_path / "w.met"
    path.write_text("latitude = 42\nyear day radn maxt mint rain\n2001 1 8.6 4.0 -2.0 0\n2001 2 8.6 1e999 -2.0 0\n")
    with pytest.raises(S.StationDataError, match=r"w\.met: column 'maxt' has 1 value\(s\) outside .*first: inf"):
        S.read_apsim_met(path)


# --- damaged gzip ------------------------------------------------------------------------------------------


def _damage_inside_the_stream(path):
    """Flip one byte of the deflate data so that zlib itself fails (not only the CRC at the end)."""
    data = path.read_bytes()
    for i in range(20, len(data) - 8):
        bad = bytearray(data)
        bad[i] ^= 0xA5
        try:
            gzip.decompress(bytes(bad))
        except zlib.error:
            path.write_bytes(bytes(bad))
            return
        except (OSError, EOFError):
            continue
    raise AssertionError("no byte flip gave a zlib error")


def test_damaged_gzip_names_the_file_and_the_folder_keeps_the_good_ones(tmp_path):
    good = write_fluxnet(tmp_path, site="US-Go1")
    bad = write_fluxnet(tmp_path, site="US-Bd1", name=fluxnet_name("US-Bd1") + ".gz")
    _damage_inside_the_stream(bad)
    with pytest.raises(DataValidationError, match=rf"{bad.name}: cannot read file"):
        _quiet(read_fluxnet_file, bad, site_metadata=None)
    with pytest.warns(DataWarning, match=bad.name):
        ds = read_fluxnet_dir(tmp_path, site_metadata=None)
    assert list(ds.site.values) == ["US-Go1"] and bad.name in ds.attrs["skipped_files"]
    assert good.name in set(ds.source_file.values)


def test_damaged_gzip_cosore_dataset_is_skipped_by_name(tmp_path):
    root = tmp_path / "cosore" / "datasets"
    write_cosore(root / "d_good", hourly_rows())
    write_cosore(root / "d_bad", hourly_rows() * 40)
    _damage_inside_the_stream(root / "d_bad" / "data.csv.gz")
    with pytest.warns(DataWarning, match="d_bad"):
        ds = read_cosore(tmp_path / "cosore")
    assert list(ds.site.values) == ["d_good"] and "d_bad" in ds.attrs["skipped_files"]


# --- silent cases of the issue -----------------------------------------------------------------------------


def _county_csv(path, n=40):
    rows = [[2000 + i % 20, 17, 1 + 2 * (i // 20), 40.0 + i] for i in range(n)]
    pd.DataFrame(rows, columns=["year", "state_fips", "county_fips", "soybean_yield_bu_per_acre"]).to_csv(path, index=False)
    return path


def test_truncated_county_table_is_an_error(tmp_path):
    path = _county_csv(tmp_path / "y.csv")
    text = path.read_text()
    whole = read_nass_county(path, "soybean")
    assert "warnings" not in whole.attrs
    cut = text.rstrip("\n")
    path.write_text(cut[: cut.rfind(",")])  # cut inside the last row: FIPS without its yield
    with pytest.raises(DataValidationError, match=r"y\.csv: the last row .* has 3 of 4 fields .* truncated"):
        read_nass_county(path, "soybean")
    path.write_text(cut[: cut.rfind(",") + 2])  # inside the yield value: kept, with a warning on record
    with pytest.warns(DataWarning, match="does not end with a newline"):
        ds = read_nass_county(path, "soybean")
    assert "may be cut short" in ds.attrs["warnings"]


def test_tonnes_per_hectare_in_a_bushel_column_is_an_error(tmp_path):
    path = tmp_path / "y.csv"
    rows = [[2010, 17, c, 3.1 + 0.01 * c] for c in range(1, 40, 2)]  # soybean t ha-1
    pd.DataFrame(rows, columns=["year", "state_fips", "county_fips", "soybean_yield_bu_per_acre"]).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"soybean_yield_bu_per_acre.*median yield 3\.3.*t ha-1"):
        read_nass_county(path, "soybean")


def test_cosore_non_numeric_flux_rows_are_warned_and_counted(tmp_path):
    rows = hourly_rows()
    for r in rows[::2]:
        r["CSR_FLUX_CO2"] = "err"  # exactly half the rows: below the "systematic" threshold
    with pytest.warns(DataWarning, match=r"'CSR_FLUX_CO2': 12 of 24 values are not numbers"):
        ds = read_cosore_dataset(write_cosore(tmp_path / "half", rows))
    assert ds.attrs["n_CSR_FLUX_CO2_non_numeric"] == 12
    for r in rows:
        r["CSR_FLUX_CO2"] = "err"
    with pytest.raises(DataValidationError, match="not numbers"):
        read_cosore_dataset(write_cosore(tmp_path / "all", rows))


def test_cosore_dataset_without_description_is_reported(tmp_path):
    root = tmp_path / "cosore" / "datasets"
    write_cosore(root / "d_good", hourly_rows())
    write_cosore(root / "d_nodesc", hourly_rows())
    (root / "d_nodesc" / "DESCRIPTION.txt").unlink()
    with pytest.warns(DataWarning, match="d_nodesc"):
        ds = read_cosore(tmp_path / "cosore")
    assert "d_nodesc" in ds.attrs["skipped_files"] and "DESCRIPTION.txt is missing" in ds.attrs["skipped_files"]


def test_reddyproc_table_without_nee_is_an_error(tmp_path):
    path = tmp_path / "Example_DETst.txt"
    lines = ["Year\tDoY\tHour\tLE\tRg\tTair", "-\t-\t-\tWm-2\tWm-2\tdegC"]
    lines += [f"1998\t1\t{0.5 * (i + 1)}\t10\t0\t2.5" for i in range(48)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"Example_DETst\.txt: variable 'nee': required column .* missing"):
        _quiet(read_reddyproc_table, path, site="DE-Tst")


def test_swapped_apsim_tmax_tmin(tmp_path):
    head = "latitude = 42\nyear day radn maxt mint rain\n"
    swapped = [f"2001 {d} 10 {-2.0 + d % 3} {8.0 + d % 5} 0" for d in range(1, 31)]
    path = tmp_path / "s.met"
    path.write_text(head + "\n".join(swapped) + "\n")
    with pytest.raises(S.StationDataError, match=r"'mint' exceeds 'maxt' on 30 of 30 days: .* swapped"):
        S.read_apsim_met(path)
    few = [f"2001 {d} 10 {8.0 if d > 2 else -5.0} -2.0 0" for d in range(1, 31)]
    path.write_text(head + "\n".join(few) + "\n")
    with pytest.warns(DataWarning, match="exceeds 'maxt' on 2 of 30 days"):
        ds = S.read_apsim_met(path)
    assert "2 of 30 days" in ds.attrs["warnings"]
    np.testing.assert_array_equal(ds.tmax.values[:2], [-5.0, -5.0])  # kept as given, not altered


# --- formats recognised by content -------------------------------------------------------------------------


def test_fluxnet_daily_table_under_another_name_is_recognised(tmp_path):
    from kgml.data.summary import find_kind, load_folder

    from .fluxfiles import write_frame

    write_frame(fluxnet_frame("DD", 30), tmp_path / "US-Xyz tower export.csv")
    write_frame(fluxnet_frame("DD", 30, seed=1), tmp_path / "second_copy_US-Abc.csv.gz")
    assert find_kind(tmp_path).name == "FLUXNET-column daily tables"
    _, [(_, ds)] = load_folder(tmp_path)
    assert sorted(ds.site.values) == ["US-Abc", "US-Xyz"] and ds.sizes["time"] == 30


def test_table_without_a_site_in_its_name_asks_for_it(tmp_path):
    from kgml.data.summary import load_folder

    from .fluxfiles import write_frame

    write_frame(fluxnet_frame("DD", 30), tmp_path / "tower.csv")
    with pytest.raises(DataValidationError, match=r"tower\.csv.*cannot tell the site .*pass site="):
        load_folder(tmp_path)
    pd.DataFrame({"site": ["US-Tow"], "lat": [40.0], "lon": [-90.0]}).to_csv(tmp_path / "sites.csv", index=False)
    _, [(_, ds)] = load_folder(tmp_path)  # the folder's site table names the one site
    assert list(ds.site.values) == ["US-Tow"] and float(ds.lat[0]) == 40.0


def test_biocro_hourly_weather_is_found_by_its_columns(tmp_path):
    from .. import test_stations as T

    folder = tmp_path / S.CHAMPAIGN_DATASET
    folder.mkdir()
    T.hourly_frame().to_csv(folder / "my station export.csv", index=False)
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    assert [p.name for p in S.biocro_hourly_files(folder)] == ["my station export.csv"]
    ds = S.read_champaign_il(tmp_path)
    assert ds.sizes["time"] == 2


def test_vpd_in_kpa_is_caught_even_where_it_exceeds_one(tmp_path):
    frame = fluxnet_frame("DD", 60)
    rh = np.random.default_rng(1).uniform(0.3, 0.95, len(frame))
    es_kpa = 0.6108 * np.exp(17.27 * frame["TA_F"] / (frame["TA_F"] + 237.3))  # FAO-56 eq. 11, written out
    frame["VPD_F"] = (es_kpa * (1 - rh)).round(4)  # kPa in an hPa column
    assert frame["VPD_F"].max() > 1.0  # the old rule ("never exceeds 1") missed it
    path = write_fluxnet(tmp_path, frame=frame)
    with pytest.raises(DataValidationError, match=r"'vpd': vpd never exceeds .* saturation vapour pressure .*kPa"):
        _quiet(read_fluxnet_file, path, site_metadata=None)
    ok = write_fluxnet(tmp_path, site="US-Okk", frame=fluxnet_frame("DD", 60))
    assert "vpd" in _quiet(read_fluxnet_file, ok, site_metadata=None)
