"""Issue 16, the cases test_safety.py does not reach: the output guard on partition, explain and data build; driver
checks on the explain, scenario and train paths; checkpoint verification by evaluate and map; every file that map,
explain and scenario write goes through the atomic writer and honours the umask; and every command answers bad
input with one line on stderr and exit status 2."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.cli import main
from kgml.data.schema import DataValidationError

from . import test_safety

#: The trained demo run and its drivers (test_safety's module fixture, trained once for this module too).
run_and_data = test_safety.run_and_data


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


def _one_line_error(rc, out, *words):
    assert rc == 2, (rc, out.err)
    assert "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1, out.err
    for w in words:
        assert w in out.err, out.err


def _grid(path: Path, **change) -> Path:
    """A small daily forcing grid (2 x 3 cells, 40 days) in canonical units; ``change`` maps a variable to a
    function applied to its values."""
    t = np.arange("2018-05-01", "2018-06-10", dtype="datetime64[D]").astype("datetime64[ns]")
    shape = (2, 3, t.size)
    values = {"tair": (18.0, "degC"), "sw_in": (220.0, "W m-2"), "vpd": (8.0, "hPa"), "precip": (2.0, "mm d-1")}
    ds = xr.Dataset({k: (("lat", "lon", "time"), np.full(shape, v, np.float32), {"units": u})
                     for k, (v, u) in values.items()},
                    coords={"lat": [40.25, 40.75], "lon": [-89.75, -89.25, -88.75], "time": t})
    for name, fn in change.items():
        ds[name] = ds[name].copy(data=fn(ds[name].values))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


_MAP = ("--scheduler", "sync")


# --- item 1: the output guard on the other writing commands ------------------------------------------------


def test_partition_explain_and_data_build_refuse_to_write_over_their_inputs(run_and_data, tmp_path, capsys):
    run, _, _ = run_and_data
    record = tmp_path / "DE-Tha_record.csv"
    record.write_text("DateTime,NEE,Ustar,Tair,rH,Rg\n2004-01-01 00:30:00,1.0,0.3,1.0,90.0,0.0\n")
    before = record.read_bytes()
    rc, out = _cli(capsys, "partition", record, "--out", record)
    _one_line_error(rc, out, "refusing to write")
    assert record.read_bytes() == before
    forcing = _grid(tmp_path / "f.nc")
    before = forcing.read_bytes()
    rc, out = _cli(capsys, "explain", run.directory, "--forcing", forcing, "--out", forcing, *_MAP)
    _one_line_error(rc, out, "refusing to write")
    assert forcing.read_bytes() == before
    data = tmp_path / "data"
    data.mkdir()
    rc, out = _cli(capsys, "data", "build", "fluxnet_daily", "--data-dir", data, "--out", data / "built.nc")
    _one_line_error(rc, out, "refusing to write", "inside the input folder")
    assert not (data / "built.nc").exists()


# --- item 2: drivers checked on the explain, scenario and train paths --------------------------------------


@pytest.mark.parametrize("command", ["explain", "scenario"])
@pytest.mark.parametrize("fault, words", [
    ({"tair": lambda v: v + 273.15}, ["tair", "kelvin"]),
    ({"precip": lambda v: np.where(np.arange(v.size).reshape(v.shape) == 5, np.inf, v)}, ["precip", "infinite"]),
    ({"precip": lambda v: v - 20.0}, ["precip"]),
])
def test_explain_and_scenario_refuse_bad_forcing(run_and_data, tmp_path, capsys, command, fault, words):
    run, _, _ = run_and_data
    forcing = _grid(tmp_path / "bad.nc", **fault)
    rc, out = _cli(capsys, command, run.directory, "--forcing", forcing, "--out", tmp_path / "out", *_MAP)
    _one_line_error(rc, out, *words)
    assert not any((tmp_path / "out").rglob("*.nc")) if (tmp_path / "out").exists() else True


def test_training_drivers_in_kelvin_are_an_error(run_and_data):
    from kgml.experiment import train_run
    from kgml.spatial.mapping import demo_run_config

    _, ds, _ = run_and_data
    bad = ds.copy(deep=True)
    bad["tair"] = bad.tair + 273.15
    with pytest.raises(DataValidationError, match=r"'tair'.*kelvin"):
        train_run(demo_run_config(0, 1, 2), bad, progress=False)


# --- item 3: evaluate and map verify the stored SHA-256 ------------------------------------------------------


def test_evaluate_and_map_refuse_a_checkpoint_with_flipped_bits(run_and_data, tmp_path, capsys):
    run, _, _ = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run.directory, copy)
    best = copy / "checkpoint" / "best.eqx"
    data = bytearray(best.read_bytes())
    data[-9] ^= 0x40  # inside the last array: still a loadable file, other numbers
    best.write_bytes(bytes(data))
    rc, out = _cli(capsys, "evaluate", copy)
    _one_line_error(rc, out, "best.eqx is corrupt")
    assert not (copy / "evaluate" / "metrics.json").exists()
    rc, out = _cli(capsys, "map", copy, "--forcing", _grid(tmp_path / "f.nc"), "--out", tmp_path / "m.nc", *_MAP)
    _one_line_error(rc, out, "best.eqx is corrupt")
    assert not (tmp_path / "m.nc").exists()


# --- item 7: every output of map, explain and scenario through the atomic writer, with the umask -----------


def test_map_explain_scenario_outputs_are_atomic_and_honour_the_umask(run_and_data, tmp_path, capsys, monkeypatch):
    run, _, _ = run_and_data
    forcing = _grid(tmp_path / "in" / "f.nc")
    replaced: list[str] = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        replaced.append(os.path.realpath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    old = os.umask(0o022)
    try:
        for argv in (("map", "--out", tmp_path / "out" / "m.nc"), ("explain", "--out", tmp_path / "out" / "ex"),
                     ("scenario", "--out", tmp_path / "out" / "sc", "--warming", "2")):
            rc, out = _cli(capsys, argv[0], run.directory, "--forcing", forcing, *argv[1:], *_MAP, "--repeats", "1") \
                if argv[0] == "explain" else _cli(capsys, argv[0], run.directory, "--forcing", forcing, *argv[1:], *_MAP)
            assert rc == 0, out.err
    finally:
        os.umask(old)
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    suffixes = {p.suffix for p in written}
    assert {".nc", ".csv", ".md"} <= suffixes, suffixes  # maps, budget/importance tables and their text
    not_atomic = [str(p) for p in written if os.path.realpath(p) not in replaced]
    assert not not_atomic, f"written without the atomic writer: {not_atomic}"
    wrong_mode = [(str(p), oct(stat.S_IMODE(p.stat().st_mode))) for p in written if stat.S_IMODE(p.stat().st_mode) != 0o644]
    assert not wrong_mode, wrong_mode
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


# --- item 6: every command, bad input → one line, exit 2 ---------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["predict", "{run}", "--data", "{tmp}/missing.nc", "--out", "{tmp}/p.nc"], ["missing.nc"]),
    (["evaluate", "{tmp}/no_run"], ["no_run"]),
    (["map", "{run}", "--forcing", "{tmp}/missing.nc", "--out", "{tmp}/m.nc"], ["missing.nc"]),
    (["explain", "{run}", "--forcing", "{tmp}/missing.nc", "--out", "{tmp}/ex"], ["missing.nc"]),
    (["scenario", "{run}", "--forcing", "{tmp}/missing.nc", "--out", "{tmp}/sc"], ["missing.nc"]),
    (["partition", "{tmp}/missing.csv", "--out", "{tmp}/p.nc"], ["missing.csv"]),
    (["partition", "{tmp}/notes.csv", "--out", "{tmp}/p.nc"], ["notes.csv", "not a tower record"]),
    (["gapfill", "{tmp}/missing.csv", "--out", "{tmp}/g.csv"], ["missing.csv"]),
    (["train", "{tmp}/missing.toml"], ["missing.toml"]),
    (["data", "build", "fluxnet_daily", "--data-dir", "{tmp}/no_data", "--out", "{tmp}/b.nc"], ["no_data"]),
    (["data", "summary", "--data-dir", "{tmp}", "--site", "US-Xyz"], ["--site", "--only"]),
])
def test_every_command_answers_bad_input_in_one_line_with_exit_2(run_and_data, tmp_path, capsys, argv, words):
    run, _, _ = run_and_data
    (tmp_path / "notes.csv").write_text("day,value\n1,2\n")
    filled = [a.format(run=run.directory, tmp=tmp_path) for a in argv]
    rc, out = _cli(capsys, *filled)
    _one_line_error(rc, out, *words)


def test_partition_takes_the_site_from_the_name_or_site_option(tmp_path, capsys):
    """``kgml partition`` on a FLUXNET-column table without a site in its name asks for --site, and a name that
    says another site than --site is an error (item 5 on the command line)."""
    from kgml.cli.partition import read_record

    from .data.fluxfiles import fluxnet_frame, write_frame

    frame = fluxnet_frame("HH", n=96)
    bare = write_frame(frame, tmp_path / "halfhourly.csv")
    with pytest.raises(DataValidationError, match=r"--site"):
        read_record(bare)
    assert list(read_record(bare, "US-Opt").site.values) == ["US-Opt"]
    named = write_frame(frame, tmp_path / "US-Nam_halfhourly.csv")
    assert list(read_record(named).site.values) == ["US-Nam"]
    with pytest.raises(DataValidationError, match="says site US-Nam but --site US-Opt"):
        read_record(named, "US-Opt")
    pd.testing.assert_index_equal(pd.Index(read_record(named).time.values), pd.Index(read_record(bare, "X").time.values))


def test_forcing_folders_give_their_netcdf_and_zarr_by_content(tmp_path):
    """``--forcing FOLDER`` takes the netCDF files it holds whatever they are called (magic bytes) and zarr stores
    by their metadata files, not by a ``.nc`` / ``.zarr`` suffix (item 5 on the mapping path)."""
    from kgml.spatial.forcing import _expand, is_zarr_store

    folder = tmp_path / "forcing"
    _grid(folder / "tair_2018.bin")
    (folder / "README.nc").write_text("not a netCDF file despite its name\n")
    store = folder / "store"
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}\n')
    (folder / "not_a_store.zarr").mkdir()
    assert is_zarr_store(store) and not is_zarr_store(folder / "not_a_store.zarr")
    assert _expand(folder) == [store, folder / "tair_2018.bin"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.nc").write_text("text\n")
    with pytest.raises(FileNotFoundError, match="no netCDF files or zarr stores"):
        _expand(empty)
