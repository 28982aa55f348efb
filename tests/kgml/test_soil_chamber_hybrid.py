"""The soil-chamber physics layer (`process_models.ecosystem.SoilChamber`, vegetation "soil") inside the
hybrid: a dataset with measured soil temperature and water and daily rsoil goes through the windows, an
untrained hybrid equals the process model, and gradients reach the respiration parameters."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml import synthetic as syn
from kgml.data.normalisation import Normaliser
from kgml.models.hybrid import TaskSpec, build_hybrid, predict, prepare_windows, target_scales
from process_models.forcing import make_met
from process_models.simulate import simulate

FEATURES = ("tsoil", "swc", "tair")


@pytest.fixture(scope="module")
def chamber_setup():
    rng = np.random.default_rng(3)
    time = pd.date_range("2010-01-01", periods=365, freq="D")
    doy = time.day_of_year.values
    n = 3
    tsoil = 10 + 12 * np.sin(2 * np.pi * (doy - 110) / 365)[None, :] + rng.normal(0, 1, (n, 365))
    swc = 25 + 8 * np.cos(2 * np.pi * doy / 365)[None, :] + rng.normal(0, 1, (n, 365))  # %
    model = syn.build_model("soil")
    theta = model.default_parameters()
    rref = np.array([0.8, 1.5, 2.5], np.float32)
    met = make_met(tmin=tsoil, tmax=tsoil, sw_in=np.zeros_like(tsoil), precip=np.zeros_like(tsoil),
                       doy=np.broadcast_to(doy, tsoil.shape), lat=40.0, tsoil=tsoil, swc=swc / 100)
    rs = np.stack([np.asarray(simulate(model, {**theta, "rref_rh": jnp.float32(r)},
                                       jax.tree_util.tree_map(lambda a, i=i: a[i], met)).outputs.rsoil)
                   for i, r in enumerate(rref)])
    rs[:, ::5] = np.nan  # gaps
    f32 = np.float32
    ds = xr.Dataset(
        {"tsoil": (("site", "time"), tsoil.astype(f32)), "tair": (("site", "time"), tsoil.astype(f32)),
         "swc": (("site", "time"), swc.astype(f32)), "sw_in": (("site", "time"), np.full_like(tsoil, 150, f32)),
         "precip": (("site", "time"), np.zeros_like(tsoil, f32)), "rsoil": (("site", "time"), rs.astype(f32))},
        coords={"site": ["a", "b", "c"], "time": time, "lat": ("site", np.array([40.0, 41.0, 42.0], f32)),
                "lon": ("site", np.array([-90.0, -91.0, -92.0], f32)),
                "vegetation": ("site", ["soil"] * 3), "mat": ("site", np.array([9.0, 10.0, 11.0], f32))},
    )
    norm = Normaliser.fit(ds, (*FEATURES, "mat"))
    task = TaskSpec(daily=("rsoil",), annual=False)
    data = prepare_windows(ds, features=FEATURES, static=("mat",), task=task, normaliser=norm,
                           scales=target_scales(ds, task), require_targets=True)
    hybrid = build_hybrid(model, n_features=data.inputs.x.shape[-1], n_static=1,
                          n_summary=data.inputs.context_summary.shape[-1], key=jax.random.PRNGKey(0), hidden=8,
                          location_dim=8, embed_dim=8, head_hidden=8, learned=("rref_rh",), global_params=("e0_rh",))
    return ds, data, hybrid, model


def test_untrained_soil_hybrid_is_the_chamber_model(chamber_setup):
    ds, data, hybrid, model = chamber_setup
    inputs, _ = data.batch(np.arange(3))
    assert inputs.met.swc is not None
    np.testing.assert_allclose(inputs.met.swc[1], ds.swc.values[1] / 100, rtol=1e-6)
    pred = eqx.filter_jit(predict)(hybrid, inputs)
    ref = simulate(model, model.default_parameters(), jax.tree_util.tree_map(lambda a: a[1], inputs.met)).outputs
    np.testing.assert_allclose(pred.rsoil[1], ref.rsoil, rtol=1e-4)
    np.testing.assert_array_equal(pred.gpp, 0.0)


def test_gradients_reach_the_chamber_parameters(chamber_setup):
    _, data, hybrid, _ = chamber_setup
    inputs, targets = data.batch(np.arange(3))

    def loss(m):
        p = jax.vmap(m)(inputs)
        err = jnp.where(targets.daily_mask[..., 0], p.rsoil - targets.daily[..., 0], 0.0)
        return jnp.mean(err**2)

    grads = eqx.filter_grad(loss)(hybrid)
    g_e0 = grads.global_unconstrained["e0_rh"]
    leaves = [x for x in jax.tree_util.tree_leaves(eqx.filter(grads.parameter_head, eqx.is_array))]
    assert np.isfinite(float(g_e0)) and abs(float(g_e0)) > 0
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    assert max(float(jnp.max(jnp.abs(x))) for x in leaves) > 0
