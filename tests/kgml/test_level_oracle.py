"""benchmarks/level_oracle.py: a prediction right in shape but off in level by a constant per site scores NSE 1
with the site's level known, and far below without it; a prediction off in shape stays below 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def _load():
    spec = importlib.util.spec_from_file_location(
        "level_oracle", Path(__file__).resolve().parents[2] / "benchmarks" / "level_oracle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_level_oracle_removes_the_site_mean_error_only():
    mod = _load()
    rng = np.random.default_rng(0)
    time = pd.date_range("2001-01-01", periods=200, freq="D")
    truth = 2 + np.sin(np.arange(200) / 20.0)[None, :] * rng.uniform(0.5, 2, (6, 1))
    obs = xr.Dataset({"rsoil": (("site", "time"), truth)}, coords={"site": list("abcdef"), "time": time})
    offset = rng.choice([-1.5, 1.5], (6, 1))
    shifted = obs.assign(rsoil=obs.rsoil + offset)
    sc = mod.level_scores(shifted, obs, "rsoil", "rsoil", "daily")
    np.testing.assert_allclose(sc["nse_level"], 1.0, atol=1e-12)
    np.testing.assert_allclose(sc["kge_level"], 1.0, atol=1e-12)
    assert (sc["nse"] < 0).all() and np.allclose(np.abs(sc["mean_error"]), 1.5)
    scaled = mod.level_scores(obs.assign(rsoil=obs.rsoil * np.exp(offset)), obs, "rsoil", "rsoil", "daily")
    np.testing.assert_allclose(scaled["nse_rate"], 1.0, atol=1e-12)  # a wrong base rate: the scale oracle fixes it
    assert (scaled["nse_level"] < 1 - 1e-3).all()  # a shift does not
    flat = obs.assign(rsoil=obs.rsoil * 0 + obs.rsoil.mean("time"))  # right level, no dynamics
    sc_flat = mod.level_scores(flat.assign(rsoil=flat.rsoil + 0.1 * rng.normal(size=(6, 200))), obs, "rsoil",
                               "rsoil", "daily")
    assert (sc_flat["nse_level"] < 0.05).all()


def test_level_transfer_learns_a_level_that_the_site_attributes_carry():
    """Sites whose mean is 1 + 0.5 MAT: the forest of the training sites' means predicts the held-out sites'
    levels from MAT (R² > 0.8) and never sees a held-out site's observations; shifted to it, the prediction's NSE
    rises towards the oracle's."""
    from types import SimpleNamespace

    from kgml.data.splits import Part, Split

    mod = _load()
    rng = np.random.default_rng(1)
    n, t = 60, 120
    sites = [f"s{i:02d}" for i in range(n)]
    mat = rng.uniform(0, 20, n)
    time = pd.date_range("2001-01-01", periods=t, freq="D")
    shape = np.sin(np.arange(t) / 15.0)[None, :]
    truth = (1 + 0.5 * mat)[:, None] + shape
    obs = xr.Dataset({"rsoil": (("site", "time"), truth)}, coords={"site": sites, "time": time, "mat": ("site", mat)})
    suite = SimpleNamespace(static=("mat",), features=(), resolution="daily")
    splits = [Split(f"f{k}", "kfold_by_site", 0, "site", Part([s for s in sites if s not in held]), Part(), Part(held),
                    Part(), {"heldout": "test"}) for k, held in enumerate(np.array_split(np.asarray(sites), 3))]
    levels = mod.level_transfer(obs, obs, suite, splits, "rsoil", "rsoil")
    assert set(levels) == set(sites)
    lv = np.array([levels[s] for s in sites])
    assert np.corrcoef(lv, 1 + 0.5 * mat)[0, 1] ** 2 > 0.8
    pred = obs.assign(rsoil=obs.rsoil * 0 + shape + 6.0)  # right shape, one level for all
    sc = mod.level_scores(pred, obs, "rsoil", "rsoil", "daily", levels)
    assert np.median(sc["nse_transfer"]) > np.median(sc["nse"]) + 0.5
