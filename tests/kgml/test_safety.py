"""Careful-user faults on the command paths into a model: outputs that would overwrite an input, drivers in the
wrong units or non-finite, NaN drivers (NaN outputs + coverage, never zeros), corrupted checkpoints, and the
commands' one-line errors with exit status 2 (traceback only with --debug)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from kgml.cli import main
from kgml.data.schema import DataValidationError
from kgml.io import UnsafeOutputError, guard_outputs, write_csv_atomic, write_text_atomic


@pytest.fixture(scope="module")
def run_and_data():
    from kgml.experiment import corpus_spec
    from kgml.spatial.mapping import demo_run_config, train_demo_run
    from kgml.synthetic import make_corpus

    root = Path(tempfile.mkdtemp(prefix="kgml-safety-"))
    run = train_demo_run(root / "run", steps=3, sites_per_block=2)
    ds = make_corpus(corpus_spec(demo_run_config(0, 3, 2).data.corpus))
    keep = [v for v in ds.data_vars if "time" in ds[v].dims or "site" in ds[v].dims]
    ds = ds[keep]
    path = root / "drivers.nc"
    ds.to_netcdf(path)
    return run, ds, path


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


# --- the output guard --------------------------------------------------------------------------------------


def test_guard_refuses_inputs_by_name_symlink_hard_link_and_folder(tmp_path):
    data = tmp_path / "in.nc"
    data.write_bytes(b"x")
    folder = tmp_path / "forcing"
    folder.mkdir()
    (folder / "a.nc").write_bytes(b"y")
    (tmp_path / "link.nc").symlink_to(data)
    os.link(data, tmp_path / "hard.nc")
    os.link(folder / "a.nc", tmp_path / "hard_a.nc")
    for out, inputs, why in ((data, [data], "the input"), (tmp_path / "link.nc", [data], "the input"),
                             (tmp_path / "hard.nc", [data], "a hard link to the input"),
                             (folder / "a.nc", [folder], "inside the input folder"),
                             (folder, [folder], "the input .* \\(a folder\\)"),
                             (tmp_path / "hard_a.nc", [folder], "a hard link to the input .*a.nc"),
                             (tmp_path / "x" / ".." / "in.nc", [data], "the input")):
        with pytest.raises(UnsafeOutputError, match=f"refusing to write .*: it is {why}"):
            guard_outputs([out], inputs)
    guard_outputs([tmp_path / "new.nc"], [data, folder])  # a new file elsewhere is fine
    with pytest.raises(UnsafeOutputError, match="inside the input folder"):  # inside an input folder it is not
        guard_outputs([folder / "new.nc"], [folder])
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "best.eqx").write_bytes(b"w")
    (run / "config.json").write_text("{}")
    for name in ("checkpoint/best.eqx", "config.json"):
        with pytest.raises(UnsafeOutputError, match="a file of run"):
            guard_outputs([run / name], runs=[run])
    guard_outputs([run / "evaluate" / "metrics.json"], runs=[run])


@pytest.mark.slow
def test_predict_refuses_to_overwrite_its_input_or_the_run(run_and_data, capsys):
    run, _, path = run_and_data
    before = path.read_bytes()
    rc, out = _cli(capsys, "predict", run.directory, "--data", path, "--out", path)
    assert rc == 2 and path.read_bytes() == before
    assert "refusing to write" in out.err and "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1
    rc, out = _cli(capsys, "predict", run.directory, "--data", path, "--out", run.directory / "checkpoint" / "best.eqx")
    assert rc == 2 and "a file of run" in out.err


def test_map_refuses_to_overwrite_its_forcing(run_and_data, tmp_path, capsys):
    run, _, _ = run_and_data
    forcing = tmp_path / "f.nc"
    forcing.write_bytes(b"not read: refused before")
    rc, out = _cli(capsys, "map", run.directory, "--forcing", forcing, "--out", forcing)
    assert rc == 2 and "refusing to write" in out.err and forcing.read_bytes() == b"not read: refused before"
    (tmp_path / "out").mkdir()
    rc, out = _cli(capsys, "scenario", run.directory, "--forcing", tmp_path / "out", "--out", tmp_path / "out")
    assert rc == 2 and "(a folder)" in out.err


def test_train_refuses_a_run_directory_over_its_data(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "x"\n[data]\nsource = "synthetic"\n')
    rc, out = _cli(capsys, "train", cfg, "--out", cfg)
    assert rc == 2 and "refusing to write" in out.err


# --- drivers on the way into a model -----------------------------------------------------------------------


def _with(ds, path, **changes):
    out = ds.copy(deep=True)
    for name, fn in changes.items():
        out[name] = fn(out[name])
    out.to_netcdf(path)
    return path


@pytest.mark.parametrize("fault, words", [
    (("tair", lambda v: v + 273.15), ["tair", "kelvin"]),
    (("tair", lambda v: v.where(v.time != v.time[10], 1e30)), ["tair", "outside the valid range"]),
    (("sw_in", lambda v: v.where(v.time != v.time[3], np.inf)), ["sw_in", "infinite"]),
    (("precip", lambda v: v - 50.0), ["precip", "negative precipitation"]),
])
def test_predict_rejects_drivers_in_wrong_units_or_out_of_range(run_and_data, tmp_path, capsys, fault, words):
    run, ds, _ = run_and_data
    name, fn = fault
    path = _with(ds, tmp_path / "bad.nc", **{name: fn})
    rc, out = _cli(capsys, "predict", run.directory, "--data", path, "--out", tmp_path / "p.nc")
    assert rc == 2 and not (tmp_path / "p.nc").exists()
    assert "bad.nc" in out.err and len(out.err.strip().splitlines()) == 1
    for w in words:
        assert w in out.err, out.err


def test_units_attribute_that_is_not_canonical_is_refused(run_and_data):
    from kgml.experiment import predict_dataset

    run, ds, _ = run_and_data
    bad = ds.copy()
    bad["tair"] = bad.tair.assign_attrs(units="K") + 273.15
    with pytest.raises(DataValidationError, match=r"'tair'.*units 'K'.*convert_units"):
        predict_dataset(run, bad)


def test_nan_drivers_give_nan_outputs_and_a_coverage_record(run_and_data, tmp_path, capsys):
    run, ds, _ = run_and_data
    sites = ds.site.values
    gap = ds.copy(deep=True)
    sw = gap.sw_in.values.copy()
    sw[0, :] = np.nan  # a site without radiation
    sw[1, 100:110] = np.nan  # ten days missing at another
    gap["sw_in"] = (gap.sw_in.dims, sw, gap.sw_in.attrs)
    path = tmp_path / "gaps.nc"
    gap.to_netcdf(path)
    rc, out = _cli(capsys, "predict", run.directory, "--data", path, "--out", tmp_path / "p.nc")
    assert rc == 0, out.err
    assert "2 site(s) with missing drivers" in out.out
    with xr.open_dataset(tmp_path / "p.nc") as p:
        p = p.load()
    assert np.isnan(p.gpp.sel(site=sites[0]).values).all()  # not GPP = 0
    g1 = p.gpp.sel(site=sites[1]).values
    assert np.isnan(g1[100:110]).all() and np.isfinite(g1[:100]).all() and np.isfinite(g1[110:]).all()
    assert np.isfinite(p.gpp.sel(site=sites[2:]).values).all()
    cov = p.driver_coverage.values
    assert cov[0] == 0.0 and cov[1] == pytest.approx(1 - 10 / p.sizes["time"]) and (cov[2:] == 1).all()
    assert int(p.driver_missing.sel(site=sites[1], driver="sw_in")) == 10


def test_training_site_without_a_driver_is_an_error(run_and_data):
    from kgml.experiment import train_run
    from kgml.spatial.mapping import demo_run_config

    _, ds, _ = run_and_data
    bad = ds.copy(deep=True)
    sw = bad.sw_in.values.copy()
    sw[:, :] = np.where(np.arange(sw.shape[0])[:, None] == 0, np.nan, sw)
    bad["sw_in"] = (bad.sw_in.dims, sw, bad.sw_in.attrs)
    with pytest.raises(DataValidationError, match=r"'sw_in'.*no value at 1 training site"):
        train_run(demo_run_config(0, 1, 2), bad, progress=False)


def test_gridded_drivers_are_checked_before_mapping(run_and_data):
    from kgml.spatial.mapping import map_run

    run, _, _ = run_and_data
    t = np.arange("2018-01", "2018-03", dtype="datetime64[D]").astype("datetime64[ns]")
    shape = (2, 3, t.size)
    f = xr.Dataset({"tair": (("lat", "lon", "time"), np.full(shape, 10.0, np.float32), {"units": "degC"}),
                    "sw_in": (("lat", "lon", "time"), np.full(shape, 150.0, np.float32), {"units": "W m-2"}),
                    "vpd": (("lat", "lon", "time"), np.full(shape, 5.0, np.float32), {"units": "hPa"}),
                    "precip": (("lat", "lon", "time"), np.full(shape, 2.0, np.float32), {"units": "mm d-1"})},
                   coords={"lat": [40.0, 41.0], "lon": [-90.0, -89.0, -88.0], "time": t},
                   attrs={"source": "grid.nc"})
    hot = f.copy(deep=True)
    hot["tair"][:] = 1e30
    with pytest.raises(DataValidationError, match=r"grid.nc: variable 'tair'.*outside the valid range"):
        map_run([run], hot)
    kelvin = f.copy(deep=True)
    kelvin["tair"] = kelvin.tair + 283.15
    with pytest.raises(DataValidationError, match="kelvin"):
        map_run([run], kelvin)
    inf = f.copy(deep=True)
    inf["precip"][0, 0, 0] = np.inf
    with pytest.raises(DataValidationError, match=r"'precip'.*1 infinite"):
        map_run([run], inf)


# --- checkpoints on load -----------------------------------------------------------------------------------


def test_flipped_bits_in_the_weights_are_refused_by_predict(run_and_data, tmp_path, capsys):
    import shutil

    from kgml.experiment import load_run
    from kgml.training import CheckpointError

    run, _, path = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run.directory, copy)
    best = copy / "checkpoint" / "best.eqx"
    data = bytearray(best.read_bytes())
    data[-9] ^= 0x40  # inside the last array: still a loadable file, other numbers
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"best.eqx is corrupt \(its SHA-256"):
        load_run(copy)
    rc, out = _cli(capsys, "predict", copy, "--data", path, "--out", tmp_path / "p.nc")
    assert rc == 2 and "best.eqx is corrupt" in out.err and not (tmp_path / "p.nc").exists()


# --- errors and outputs ------------------------------------------------------------------------------------


def test_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nothing.toml"
    rc, out = _cli(capsys, "train", missing)
    assert rc == 2 and "error:" in out.err and "Traceback" not in out.err
    with pytest.raises(Exception):  # noqa: B017 - whichever error load_config raises, unhandled
        main(["--debug", "train", str(missing)])


def test_outputs_honour_the_umask(tmp_path):
    import pandas as pd

    old = os.umask(0o022)
    try:
        a = write_text_atomic("x\n", tmp_path / "a.md")
        b = write_csv_atomic(pd.DataFrame({"x": [1]}), tmp_path / "b.csv")
    finally:
        os.umask(old)
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    old = os.umask(0o077)
    try:
        c = write_text_atomic("x\n", tmp_path / "c.md")
    finally:
        os.umask(old)
    assert stat.S_IMODE(c.stat().st_mode) == 0o600


def test_resume_with_another_config_is_refused_before_config_json_is_rewritten(run_and_data, tmp_path):
    import dataclasses
    import json

    from kgml.experiment import run_experiment
    from kgml.spatial.mapping import demo_run_config
    from kgml.training import CheckpointError

    _, ds, _ = run_and_data
    cfg = demo_run_config(0, 2, 2)
    run_experiment(cfg, tmp_path, dataset=ds, progress=False, figures=False)
    saved = (tmp_path / "config.json").read_text()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=0.5, steps=4))
    with pytest.raises(CheckpointError, match=r"differs .*train\.learning_rate, train\.steps"):
        run_experiment(other, tmp_path, dataset=ds, progress=False, figures=False, resume=True)
    assert (tmp_path / "config.json").read_text() == saved
    run_experiment(other, tmp_path, dataset=ds, progress=False, figures=False, resume=True, force=True)
    assert json.loads((tmp_path / "config.before_resume.json").read_text()) == json.loads(saved)
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["config"]["train"]["learning_rate"] == 0.5
    assert meta["resumed_with"][0]["changed"] == ["train.learning_rate", "train.steps"]
