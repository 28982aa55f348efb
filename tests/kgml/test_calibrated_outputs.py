"""Calibrated interval bounds in the outputs: ``kgml calibrate`` on sites the run never saw writes a record;
``kgml predict`` (daily) and ``kgml map`` (monthly means) then write ``<v>_lower_<pct>``/``<v>_upper_<pct>``
with valid CF units, linked from ``<v>`` by ``ancillary_variables``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from kgml import mapping as M
from kgml.experiment import corpus_spec
from kgml.synthetic import make_corpus
from kgml.uncertainty import add_bounds, read_calibration_record


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny demonstration run and a netCDF of 12 other synthetic sites (other seed, other names)."""
    root = tmp_path_factory.mktemp("calibrated")
    run = M.train_demo_run(root / "run0", steps=3, sites_per_block=2)
    spec = dataclasses.replace(corpus_spec(run.config.data.corpus), seed=99, sites_per_block=4)
    ds = make_corpus(spec)
    ds = ds.assign_coords(site=[f"cal_{s}" for s in ds.site.values.astype(str)])
    path = root / "calibration_sites.nc"
    ds.to_netcdf(path)
    train = root / "train_sites.nc"
    make_corpus(corpus_spec(run.config.data.corpus)).to_netcdf(train)
    return run, path, train, root


def test_calibrate_predict_and_map_write_cf_bounds(demo, tmp_path):
    from kgml.cli import main
    from tests.kgml.cf_check import assert_cf_units

    run, data, _, _ = demo
    run_dir = str(run.directory)
    assert main(["calibrate", run_dir, "--dataset", str(data)]) == 0
    rec = read_calibration_record(run.directory / "calibration.json")
    assert rec["scale"] == "residual" and rec["n_members"] == 1
    nee = rec["entries"]["daily"]["nee"]
    assert nee["n_sites"] == 12 and all(s.startswith("cal_") for s in nee["sites"])
    q = {float(k): v for k, v in nee["q"].items()}
    assert 0 < q[0.5] < q[0.8] < q[0.9] < np.inf
    assert "nee" in rec["entries"]["monthly"]

    out = tmp_path / "pred.nc"
    assert main(["predict", run_dir, "--dataset", str(data), "--out", str(out)]) == 0
    assert_cf_units(out)
    with xr.open_dataset(out) as p:
        names = p["nee"].attrs["ancillary_variables"].split()
        assert names == [f"nee_{side}_{pct}" for pct in (50, 80, 90) for side in ("lower", "upper")]
        for n in names:
            assert p[n].attrs["units"] == p["nee"].attrs["units"] == "g m-2 d-1"
            assert "carbon" in p[n].attrs["comment"] and p[n].dims == p["nee"].dims
        width = (p["nee_upper_90"] - p["nee_lower_90"]).values
        ok = np.isfinite(width)
        assert ok.any() and np.allclose(width[ok], 2 * q[0.9], rtol=1e-5)
        assert (p["nee_lower_50"] >= p["nee_lower_90"]).where(np.isfinite(p["nee"])).fillna(True).all()

    from tests.kgml.test_mapping import monthly_grid

    forcing = tmp_path / "grid.nc"
    monthly_grid().to_netcdf(forcing)
    m_out = tmp_path / "map.nc"
    assert main(["map", run_dir, "--forcing", str(forcing), "--scheduler", "sync", "--out", str(m_out)]) == 0
    assert_cf_units(m_out)
    with xr.open_dataset(m_out) as m:
        assert "nee_upper_90" in m["nee"].attrs["ancillary_variables"].split()
        assert m["nee_upper_90"].dims == ("time", "lat", "lon")
        q_m = rec["entries"]["monthly"]["nee"]["q"]["0.9"]
        w = (m["nee_upper_90"] - m["nee_lower_90"]).values
        assert np.allclose(w[np.isfinite(w)], 2 * q_m, rtol=1e-5)
    import pandas as pd

    budget = pd.read_csv(tmp_path / "map_budget.csv").set_index(["group", "label"]).loc[("domain", "all")]
    assert budget["nee_total_tgc_lower_90"] < budget["nee_total_tgc"] < budget["nee_total_tgc_upper_90"]
    assert "full" in (tmp_path / "map_budget.md").read_text() and "nee_total_tgc_upper_90" in (
        tmp_path / "map_budget.md").read_text()


def test_calibration_refuses_training_sites_and_bad_records(demo, tmp_path):
    from kgml.cli.calibrate import calibrate_runs

    run, _, train, _ = demo
    with xr.open_dataset(train) as f:
        ds = f.load()
    with pytest.raises(ValueError, match="training or validation sites"):
        calibrate_runs([run], ds, [str(ds.site.values[0]), str(ds.site.values[1])])
    with pytest.raises(ValueError, match="at least 2 sites"):
        calibrate_runs([run], ds)  # every site of this corpus is a training site
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "kgml split-conformal calibration", "scale": "residual",
                               "entries": {"daily": {"nee": {"q": {"0.9": -1.0}}}}}))
    with pytest.raises(ValueError, match="bad.json: entries.daily.nee.q"):
        read_calibration_record(bad)


def test_ensemble_record_needs_the_spread():
    ds = xr.Dataset({"nee": (("site", "time"), np.zeros((2, 3)), {"units": "gC m-2 d-1"})})
    rec = {"scale": "ensemble spread", "n_members": 3,
           "entries": {"daily": {"nee": {"q": {"0.9": 2.0}, "n_sites": 10}}}}
    with pytest.raises(ValueError, match="no 'nee_sd'"):
        add_bounds(ds, rec, "daily")
    out, done = add_bounds(ds.assign(nee_sd=ds.nee + 0.5), rec, "daily")
    assert done == ["nee"] and float(out.nee_upper_90.max()) == pytest.approx(1.0)
    unbounded = {"scale": "residual", "n_members": 1, "entries": {"daily": {"nee": {"q": {"0.9": None}, "n_sites": 3}}}}
    out, _ = add_bounds(ds, unbounded, "daily")
    assert np.isinf(out.nee_upper_90.values).all()


def test_an_ensemble_is_calibrated_on_its_spread_plus_beta(demo):
    """Two members (the second with its parameter head perturbed): the record is scaled by the spread, with β
    the median spread, and the bounds of a map-like output use σ̂ + β."""
    import equinox as eqx
    import jax

    from kgml.cli.calibrate import calibrate_runs

    run, data, _, _ = demo
    params, static = eqx.partition(run.model.parameter_head, eqx.is_array)
    head = eqx.combine(jax.tree_util.tree_map(lambda a: 1.3 * a + 0.05, params), static)
    other = dataclasses.replace(run, model=eqx.tree_at(lambda m: m.parameter_head, run.model, head), directory=None)
    with xr.open_dataset(data) as f:
        ds = f.load()
    rec = calibrate_runs([run, other], ds)
    assert rec["scale"] == "ensemble spread" and rec["n_members"] == 2
    e = rec["entries"]["daily"]["nee"]
    assert e["beta"] > 0 and 0 < e["q"]["0.5"] < e["q"]["0.9"] < np.inf
    out = xr.Dataset({"nee": (("site", "time"), np.zeros((1, 2))), "nee_sd": (("site", "time"), np.ones((1, 2)))})
    bounded, _ = add_bounds(out, rec, "daily")
    assert float(bounded.nee_upper_90.max()) == pytest.approx(e["q"]["0.9"] * (1 + e["beta"]), rel=1e-6)
