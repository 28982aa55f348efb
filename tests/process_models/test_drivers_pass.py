"""The drivers pass (issue 18): every state-independent term computed before the time loop, the loop over the
sequential part only. The daily outputs must equal those of the implementation before it (all terms inside the
loop), stored in tests/golden/ecosystem_daily.json by tests/golden/make_ecosystem_golden.py, within 1e-5 relative."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models.ecosystem import NaturalEcosystem
from process_models.forcing import make_met
from process_models.phenology import PrescribedLAI
from process_models.simulate import simulate, simulate_sites

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN = json.loads((GOLDEN_DIR / "ecosystem_daily.json").read_text())
_spec = importlib.util.spec_from_file_location("make_ecosystem_golden", GOLDEN_DIR / "make_ecosystem_golden.py")
MAKE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(MAKE)
MODELS = MAKE.models()
RTOL = 1e-5


def _met():
    f = {k: np.asarray(v, np.float32) for k, v in GOLDEN["inputs"].items()}
    n_sites, n_days = f["tmin"].shape
    doy = np.broadcast_to(np.arange(1, n_days + 1, dtype=np.float32), (n_sites, n_days))
    lat = np.broadcast_to(np.asarray(GOLDEN["lat"], np.float32)[:, None], (n_sites, n_days))
    return make_met(doy=doy, lat=lat, **f)


def _theta(name):
    return {k: np.asarray(v, np.float32) for k, v in GOLDEN["models"][name]["theta"].items()}


def _assert_matches(name, outputs, site=None):
    for field, expected in GOLDEN["models"][name]["outputs"].items():
        expected = np.asarray(expected, np.float64)
        if site is not None:
            expected = expected[site]
        got = np.asarray(getattr(outputs, field), np.float64)
        # relative to the series' scale, so that values crossing zero (NEE) are compared fairly
        scale = np.max(np.abs(expected)) + 1e-12
        err = np.max(np.abs(got - expected)) / scale
        assert err <= RTOL, f"{name}.{field}: max relative difference {err:.2e} > {RTOL:.0e}"


def test_golden_covers_every_model():
    assert set(GOLDEN["models"]) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_simulate_sites_equals_previous_implementation(name):
    out = simulate_sites(MODELS[name], _theta(name), _met()).outputs
    _assert_matches(name, out)


@pytest.mark.parametrize("name", list(MODELS))
def test_time_major_layout_equals_previous_implementation(name):
    met = _met()
    met_tm = type(met)(*[None if v is None else jnp.asarray(v).T for v in met])
    out = simulate_sites(MODELS[name], _theta(name), met_tm, time_major=True).outputs
    _assert_matches(name, jax.tree_util.tree_map(lambda x: x.T, out))


@pytest.mark.parametrize("name", ["lue_prescribed_lai", "maize"])
def test_single_site_simulate_equals_previous_implementation(name):
    met = _met()
    theta = _theta(name)
    for site in range(2):
        one = type(met)(*[None if v is None else v[site] for v in met])
        out = simulate(MODELS[name], {k: v[site] for k, v in theta.items()}, one).outputs
        _assert_matches(name, out, site=site)


@pytest.mark.parametrize("name", ["lue_prescribed_lai", "lue_gsi", "soybean"])
def test_step_by_step_equals_the_loop(name):
    """`Ecosystem.step` (drivers computed on the spot, one day) chained in Python gives the loop's outputs."""
    model, met, theta = MODELS[name], _met(), _theta(name)
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (2,)), model.init_state(theta))
    step = jax.jit(model.step)
    got = []
    for t in range(40):
        state, out = step(theta, state, type(met)(*[None if v is None else v[:, t] for v in met]))
        got.append(np.asarray(out.nee))
    ref = np.asarray(GOLDEN["models"][name]["outputs"]["nee"])[:, :40]
    np.testing.assert_allclose(np.stack(got, 1), ref, rtol=0, atol=RTOL * np.max(np.abs(ref)))


def test_gradient_through_the_drivers_pass_matches_finite_differences():
    """Parameters that act only before the loop (albedo → PET) or only after it (lue_max) get their gradient."""
    model = NaturalEcosystem(phenology=PrescribedLAI())
    met = _met()
    theta = {k: jnp.asarray(v, jnp.float32) for k, v in model.default_parameters().items()}

    def loss(albedo, lue_max):
        th = {**theta, "albedo": albedo, "lue_max": lue_max}
        out = simulate_sites(model, th, met).outputs
        return jnp.mean(out.nee) + jnp.mean(out.et)

    g = jax.grad(loss, argnums=(0, 1))(jnp.float32(0.2), jnp.float32(1.3))
    for i, (x0, h) in enumerate(((0.2, 1e-2), (1.3, 5e-2))):
        args = [jnp.float32(0.2), jnp.float32(1.3)]
        args[i] = jnp.float32(x0 + h)
        up = loss(*args)
        args[i] = jnp.float32(x0 - h)
        fd = (up - loss(*args)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(fd), rel=2e-2, abs=1e-4)
        assert float(g[i]) != 0.0


def _compact(met, time_major=False):
    """Latitude per site, day of year per day, CO2 and air pressure once: the same values as `_met`."""
    lat, doy, co2, patm = met.lat[:, :1], met.doy[:1, :], met.co2[:1, :1], met.patm[:1, :1]
    met = met._replace(lat=lat, doy=doy, co2=co2, patm=patm)
    return type(met)(*[None if v is None else jnp.asarray(v).T for v in met]) if time_major else met


@pytest.mark.parametrize("name", list(MODELS))
def test_fields_at_their_own_shapes_equal_the_full_shaped_forcing(name):
    """Constant-in-time and same-for-every-site fields may be given at their own shapes (issue 18): the outputs
    equal the previous implementation's in both layouts."""
    _assert_matches(name, simulate_sites(MODELS[name], _theta(name), _compact(_met())).outputs)
    out = simulate_sites(MODELS[name], _theta(name), _compact(_met(), time_major=True), time_major=True).outputs
    _assert_matches(name, jax.tree_util.tree_map(lambda x: x.T, out))


@pytest.mark.parametrize("name", ["lue_gsi", "maize"])
def test_single_site_with_scalar_latitude(name):
    met, theta = _met(), _theta(name)
    for site in range(2):
        one = type(met)(*[None if v is None else v[site] for v in met])
        one = one._replace(lat=one.lat[0], co2=one.co2[:1], patm=one.patm[0])
        out = simulate(MODELS[name], {k: v[site] for k, v in theta.items()}, one).outputs
        _assert_matches(name, out, site=site)


def test_a_field_with_the_wrong_time_axis_is_refused_by_name():
    met = _met()
    bad = met._replace(tsoil=met.tsoil[:, :10])
    with pytest.raises(ValueError, match=r"met\.tsoil has shape \(10, 2\) \(time first\): its time axis must have 365 days or 1"):
        simulate_sites(MODELS["lue_prescribed_lai"], _theta("lue_prescribed_lai"), bad)


def test_gradient_with_compact_fields_equals_full_fields():
    model = MODELS["lue_gsi"]
    theta = {k: jnp.asarray(v) for k, v in _theta("lue_gsi").items()}

    def loss(th, met):
        return jnp.mean(simulate_sites(model, th, met).outputs.nee ** 2)

    g_full = jax.grad(loss)(theta, _met())
    g_compact = jax.grad(loss)(theta, _compact(_met()))
    for k in theta:
        np.testing.assert_allclose(np.asarray(g_compact[k]), np.asarray(g_full[k]), rtol=1e-4,
                                   atol=1e-6 * (np.max(np.abs(np.asarray(g_full[k]))) + 1e-12), err_msg=k)
