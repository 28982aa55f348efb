"""Processed datasets cached as netCDF: a second read of a FLUXNET folder or of COSORE comes from the cache (the
readers are not called again), and a changed source file, site table or option gives a fresh read."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from kgml.cli import main as kgml_main
from kgml.data import soil_respiration, towers
from kgml.data.cache import resolve_cache
from kgml.data.soil_respiration import read_cosore
from kgml.data.towers import QCPolicy, read_fluxnet_dir

from .fluxfiles import write_fluxnet
from .test_soil_respiration_readers import hourly_rows, write_cosore

SITES = "SITE_ID,LOCATION_LAT,LOCATION_LONG,IGBP\nUS-Aa1,41,-96,CRO\nUS-Aa2,42,-95,GRA\n"


def _towers(folder):
    folder.mkdir()
    write_fluxnet(folder, site="US-Aa1")
    write_fluxnet(folder, site="US-Aa2", seed=1)
    (folder / "sites.csv").write_text(SITES)
    return folder


def _refuse(*args, **kwargs):
    raise AssertionError("the reader ran although the cache holds this result")


def test_fluxnet_folder_cache_hit_and_invalidation(tmp_path, monkeypatch):
    folder = _towers(tmp_path / "towers")
    cache = tmp_path / "cache"
    fresh = read_fluxnet_dir(folder)
    first = read_fluxnet_dir(folder, cache=cache)
    assert "kgml_cache_key" in first.attrs and len(os.listdir(cache)) == 1
    xr.testing.assert_equal(first, fresh)
    assert list(first.igbp.values) == ["CRO", "GRA"] and first.attrs["time_resolution"] == "DD"
    with monkeypatch.context() as m:
        m.setattr(towers.fluxnet, "read_fluxnet_file", _refuse)  # where read_fluxnet_dir looks it up
        again = read_fluxnet_dir(folder, cache=cache)
        xr.testing.assert_identical(again, first)
        with pytest.raises(AssertionError, match="the reader ran"):  # another option is another entry
            read_fluxnet_dir(folder, cache=cache, qc=QCPolicy(min_fraction=0.9))
    # a changed source file: a fresh read with the new value
    path = next(folder.glob("FLX_US-Aa1*"))
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = "12.345"  # TA_F of the first day
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    changed = read_fluxnet_dir(folder, cache=cache)
    assert float(changed.tair.sel(site="US-Aa1").values[0]) == pytest.approx(12.345, rel=1e-6)
    assert changed.attrs["kgml_cache_key"] != first.attrs["kgml_cache_key"]
    # a changed site table too
    (folder / "sites.csv").write_text(SITES.replace("CRO", "GRA"))
    assert list(read_fluxnet_dir(folder, cache=cache).igbp.values) == ["GRA", "GRA"]
    assert len(os.listdir(cache)) == 3 and not any(f.startswith(".") for f in os.listdir(cache))


def test_cosore_cache_hit_and_invalidation(tmp_path, monkeypatch):
    root = tmp_path / "cosore" / "datasets"
    write_cosore(root / "d1_A", hourly_rows("2020-06-01") + hourly_rows("2020-06-02", flux=3.0))
    write_cosore(root / "d2_B", hourly_rows("2020-07-01", port=2))
    cache = tmp_path / "cache"
    first = read_cosore(tmp_path / "cosore", cache=cache)
    xr.testing.assert_equal(first, read_cosore(tmp_path / "cosore"))
    with monkeypatch.context() as m:
        m.setattr(soil_respiration, "read_cosore_dataset", _refuse)
        xr.testing.assert_identical(read_cosore(tmp_path / "cosore", cache=cache), first)
    write_cosore(root / "d2_B", hourly_rows("2020-07-01", port=2, flux=5.0))  # new flux values
    changed = read_cosore(tmp_path / "cosore", cache=cache)
    assert float(changed.rh_soil.sel(site="d2_B", time="2020-07-01")) == pytest.approx(5.0 * 12.0107e-6 * 86400, rel=1e-5)
    assert float(first.rh_soil.sel(site="d2_B", time="2020-07-01")) == pytest.approx(2.0 * 12.0107e-6 * 86400, rel=1e-5)
    assert np.array_equal(changed.site.values, first.site.values)


def test_cache_argument_and_cli_flag(tmp_path, monkeypatch):
    assert resolve_cache(False) is None and resolve_cache(None) is None
    assert resolve_cache(tmp_path / "c") == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.setenv("KGML_CACHE", str(tmp_path / "env"))
    assert resolve_cache(True) == tmp_path / "env"
    data = tmp_path / "data"
    data.mkdir()
    _towers(data / "towers")
    assert kgml_main(["data", "summary", "--data-dir", str(data), "--cache"]) == 0
    assert len(os.listdir(tmp_path / "env")) == 1
    monkeypatch.setattr(towers.fluxnet, "read_fluxnet_file", _refuse)
    assert kgml_main(["data", "summary", "--data-dir", str(data), "--cache", str(tmp_path / "env")]) == 0
    assert kgml_main(["data", "summary", "--data-dir", str(data)]) == 1  # without the cache the reader runs
