"""Autotrophic respiration: the Ra = Rm + Rg identity, the 20 °C reference, Q10 scaling, growth share,
monotonicity over random parameters, gradients against finite differences at the bounds, vmap = loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models.autotrophic import AutotrophicRespiration, RaStep
from process_models.parameters import constrain, default_parameters

MODEL = AutotrophicRespiration()
SPECS = AutotrophicRespiration.parameter_specs


def _random_theta(rng, n=None, low=-4.0, high=4.0):
    return constrain(SPECS, {s.name: jnp.asarray(rng.uniform(low, high, n), jnp.float32) for s in SPECS})


def test_hand_computed_day():
    # Defaults (m20 = 0.01 gC gC-1 d-1, Q10 = 2, r_g = 0.25): GPP 10, B = 300 gC m-2 at 25 °C.
    theta = default_parameters(SPECS)
    out = MODEL(theta, 10.0, 300.0, 25.0)
    rm = 0.01 * 300.0 * 2.0 ** 0.5
    rg = 0.25 * (10.0 - rm)
    assert float(out.rm) == pytest.approx(rm, rel=1e-6)
    assert float(out.rg) == pytest.approx(rg, rel=1e-6)
    assert float(out.ra) == pytest.approx(rm + rg, rel=1e-6)
    assert isinstance(out, RaStep)


@pytest.mark.parametrize("seed", range(3))
def test_identities_over_random_parameters(seed):
    rng = np.random.default_rng(seed)
    n = 200
    theta = _random_theta(rng, n)
    gpp = jnp.asarray(rng.uniform(0, 20, n), jnp.float32)
    biomass = jnp.asarray(rng.uniform(0, 1500, n), jnp.float32)
    tair = jnp.asarray(rng.uniform(-20, 40, n), jnp.float32)
    out = MODEL(theta, gpp, biomass, tair)
    np.testing.assert_array_equal(out.ra, out.rm + out.rg)
    assert np.all(np.asarray(out.rm) >= 0) and np.all(np.asarray(out.rg) >= 0)
    # At the 20 °C reference Rm = rm_ref · biomass; Q10 scaling per 10 K.
    at20 = MODEL(theta, gpp, biomass, 20.0)
    np.testing.assert_allclose(at20.rm, theta["rm_ref"] * biomass, rtol=1e-6)
    at30 = MODEL(theta, gpp, biomass, 30.0)
    np.testing.assert_allclose(at30.rm, at20.rm * theta["q10_ra"], rtol=1e-5)
    # Growth respiration: the given share of what maintenance leaves, none when maintenance exceeds GPP.
    surplus = np.asarray(gpp - out.rm)
    expected = np.where(surplus > 0, np.asarray(theta["growth_resp_frac"]) * surplus, 0.0)
    np.testing.assert_allclose(out.rg, expected, rtol=1e-5, atol=1e-6)
    assert np.any(surplus < 0) and np.any(surplus > 0)  # both regimes exercised
    # NPP share: Ra never exceeds GPP while GPP covers maintenance.
    covered = surplus > 0
    assert np.all(np.asarray(out.ra)[covered] <= np.asarray(gpp)[covered] * (1 + 1e-6))


def test_monotone_in_temperature_and_biomass():
    rng = np.random.default_rng(7)
    theta = _random_theta(rng, (25, 1))
    t = jnp.linspace(-10, 40, 51)[None, :]
    rm = np.asarray(MODEL(theta, 0.0, 500.0, t).rm)
    assert np.all(np.diff(rm, axis=1) > 0)
    b = jnp.linspace(0, 2000, 41)[None, :]
    rm_b = np.asarray(MODEL(theta, 0.0, b, 20.0).rm)
    assert np.all(rm_b[:, 0] == 0) and np.all(np.diff(rm_b, axis=1) > 0)


def test_negative_biomass_is_taken_as_none():
    theta = default_parameters(SPECS)
    out = MODEL(theta, 5.0, -10.0, 20.0)
    assert float(out.rm) == 0.0 and float(out.rg) == pytest.approx(0.25 * 5.0)


def test_vmap_equals_python_loop():
    rng = np.random.default_rng(3)
    n = 6
    theta = _random_theta(rng, n)
    gpp, biomass, tair = (jnp.asarray(rng.uniform(lo, hi, n), jnp.float32) for lo, hi in
                          ((0, 15), (50, 800), (-5, 35)))
    batched = jax.vmap(MODEL)(theta, gpp, biomass, tair)
    for i in range(n):
        one = MODEL({k: v[i] for k, v in theta.items()}, gpp[i], biomass[i], tair[i])
        for field in RaStep._fields:
            assert float(getattr(batched, field)[i]) == pytest.approx(float(getattr(one, field)), rel=1e-6)


@pytest.mark.parametrize("where", ["interior", "upper", "lower"])
def test_gradients_match_finite_differences(where):
    rng = np.random.default_rng(12)
    if where == "interior":
        u = {s.name: float(rng.uniform(-2, 2)) for s in SPECS}
    else:
        u = {s.name: (10.0 if where == "upper" else -10.0) for s in SPECS}
    gpp = rng.uniform(2, 15, 8)
    biomass = rng.uniform(20, 400, 8)
    tair = rng.uniform(-5, 30, 8)
    eps = 1e-5
    with jax.enable_x64(True):
        def loss(u):
            out = MODEL(constrain(SPECS, u), jnp.asarray(gpp), jnp.asarray(biomass), jnp.asarray(tair))
            return jnp.sum(out.ra) + jnp.sum(out.rg)

        u64 = {k: jnp.float64(v) for k, v in u.items()}
        value = float(loss(u64))
        grad = jax.grad(loss)(u64)
        for k in u64:
            g = float(grad[k])
            assert math.isfinite(g), k
            fd = (float(loss({**u64, k: u64[k] + eps})) - float(loss({**u64, k: u64[k] - eps}))) / (2 * eps)
            assert g == pytest.approx(fd, rel=2e-4, abs=1e-9 * max(abs(value), 1.0)), k
        if where == "interior":
            assert all(abs(float(g)) > 0 for g in grad.values())
