"""Smoke run of the process-model half of `kgml demo` on tiny sizes; the comparison rows and the pretraining
curve's configuration (training runs are covered by tests/kgml/test_neural.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib
import xarray as xr

from kgml.compare.demo import simulate_states
from kgml.compare.demo_hybrid import (
    NEURAL,
    PROCESS_CALIBRATED,
    DemoSizes,
    _comparison_table,
    demo_config,
    neural_config,
    process_config,
)
from kgml.compare.pretraining_curve import CurveSizes, _curve_split, _tower_order
from kgml.config import ConfigError


@pytest.mark.slow
def test_process_model_demo_writes_cf_netcdf_and_a_table(tmp_path):
    result = simulate_states(tmp_path, sites_per_state=2, years=1, seed=0, figure=False)
    with xr.open_dataset(result["netcdf"]) as ds:
        assert ds.attrs["Conventions"].startswith("CF-")
        assert ds.sizes["site"] == 3 * 3 * 2 and ds.sizes["time"] == 365
        for name in ("gpp", "reco", "nee", "crop_yield"):
            assert "units" in ds[name].attrs and np.all(np.isfinite(ds[name].values))
        np.testing.assert_allclose(ds.nee.values, ds.reco.values - ds.gpp.values, atol=1e-4)
        grass = ds.crop_yield.where(ds.vegetation == "grassland", drop=True)
        assert float(np.abs(grass).max()) == 0.0
    assert len(result["summary"]) == 9
    assert result["table"].count("\n| ") == 9  # one row per state × vegetation


def test_comparison_models_and_table_rows():
    """The demo's comparison rows: the process model calibrated as one global set (no residual) and a neural
    model of the hybrid's size; a model without rref_rh shows '–', not 'nan %'."""
    sizes = DemoSizes.quick()
    cfg = demo_config(sizes, seed=0)
    proc = process_config(cfg, sizes)
    assert proc.model.kind == "process" and proc.model.residual == () and proc.model.learned == cfg.model.learned
    assert proc.train.steps == sizes.process_steps and proc.train.learning_rate == sizes.process_learning_rate
    neural = neural_config(cfg)
    assert neural.model.kind == "neural" and neural.model.hidden == cfg.model.hidden
    row = {"nee_rmse": 1.0, "nee_r2": 0.5, "nee_nse": 0.5, "yield_rmse": 2.0, "rref_err": 0.25}
    scores = {PROCESS_CALIBRATED: {"all": row, "IA": row}, NEURAL: {"all": {**row, "rref_err": float("nan")}}}
    table = _comparison_table(scores, {"sites_per_state": [1], "pretrained": [1.0], "scratch": [1.1]}, sizes,
                              {"global, pretrained": 1000, NEURAL: 990, PROCESS_CALIBRATED: 7})
    lines = table.splitlines()
    assert any(line.startswith(f"| {PROCESS_CALIBRATED} | 1.00 |") and line.endswith("| 25 % |") for line in lines)
    assert any(line.startswith(f"| {NEURAL} | – |") and line.endswith("| – |") for line in lines)
    assert "nan" not in table and "990 trainable values vs 1,000" in table


def test_pretraining_curve_sizes_from_toml():
    """The experiment's TOML files are valid `CurveSizes` (the quick one equals `CurveSizes.quick()`); an
    unknown key is an error naming it."""
    folder = Path(__file__).resolve().parents[2] / "experiments" / "pretraining_curve"
    for name, expected in (("quick.toml", CurveSizes.quick()), ("curve.toml", CurveSizes())):
        with (folder / name).open("rb") as f:
            assert CurveSizes.from_dict(tomllib.load(f)) == expected, name
    with pytest.raises(ConfigError, match="'n_site'"):
        CurveSizes.from_dict({"n_site": [1]})
    with pytest.raises(ConfigError, match=r"'hiden'.*\[model\]"):
        CurveSizes.from_dict({"model": {"hiden": 3}})
    # towers alternate between states, nested in n, never validation or test sites
    sites = [f"{s}-maize-{i:03d}" for s in ("IA", "IL", "NE") for i in range(5)]
    world = xr.Dataset(coords={"site": sites, "state": ("site", [s[:2] for s in sites])})
    pool, val, test = _curve_split(world, ["IA", "IL", "NE"], test_per_state=2)
    order = _tower_order(pool, seed=1)
    assert [s[:2] for s in order[:3]] == ["IA", "IL", "NE"] and len(order) == 6
    assert not set(order) & (set(val) | set(test)) and len(test) == 6 and len(val) == 3
    assert _tower_order(pool, seed=1) == order != _tower_order(pool, seed=2)
