"""Masked losses at each observation's resolution, and the constraints: identities, gradients, golden values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.models import constraints, losses
from process_models.crop import MAIZE_STANDARD_MOISTURE, grain_yield
from process_models.soil_respiration import LloydTaylor, Q10Respiration

# --- losses ---------------------------------------------------------------------------------------------


def test_masked_mse_ignores_masked_entries_and_nan():
    pred = jnp.array([1.0, 2.0, 3.0, 4.0])
    obs = jnp.array([1.0, 0.0, jnp.nan, 2.0])
    mask = jnp.array([True, True, False, True])
    assert float(losses.masked_mse(pred, obs, mask)) == pytest.approx((0 + 4 + 4) / 3)
    assert float(losses.masked_mse(pred, obs, mask, scale=2.0)) == pytest.approx((0 + 1 + 1) / 3)
    g = jax.grad(lambda p: losses.masked_mse(p, obs, mask))(pred)
    assert np.all(np.isfinite(g)) and float(g[2]) == 0.0
    # nothing observed: 0, zero finite gradient
    none = jnp.zeros(4, bool)
    assert float(losses.masked_mse(pred, obs, none)) == 0.0
    assert np.all(jax.grad(lambda p: losses.masked_mse(p, obs, none))(pred) == 0.0)


def test_masked_mse_pools_observations_across_windows():
    # one window with 1 observation and one with 3: every observation counts once
    pred = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    obs = jnp.zeros((2, 3))
    mask = jnp.array([[True, False, False], [True, True, True]])
    assert float(losses.masked_mse(pred, obs, mask)) == pytest.approx(1.0 / 4)


def test_monthly_means_match_numpy():
    rng = np.random.default_rng(0)
    daily = rng.normal(size=(2, 365)).astype(np.float32)
    days_in_month = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    month = np.repeat(np.arange(12), days_in_month)
    got = np.asarray(losses.monthly_means(jnp.asarray(daily), jnp.asarray(np.tile(month, (2, 1))), 12))
    want = np.stack([[daily[s, month == m].mean() for m in range(12)] for s in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # days outside every month slot (−1) are ignored
    idx = np.where(np.arange(365) < 100, month, -1)
    got = np.asarray(losses.monthly_means(jnp.asarray(daily[0]), jnp.asarray(idx), 12))
    assert got[5] == 0.0 and got[0] == pytest.approx(daily[0, :31].mean(), rel=1e-5)


def test_annual_values_and_sums():
    x = jnp.arange(730.0)
    np.testing.assert_array_equal(losses.annual_values(x), [364.0, 729.0])
    np.testing.assert_allclose(losses.annual_sums(x), [np.arange(365).sum(), np.arange(365, 730).sum()])
    assert losses.annual_values(jnp.arange(100.0)).shape == (0,)


def test_multitask_loss_weights_and_errors():
    pred = {"a": jnp.ones(3), "b": jnp.zeros(3)}
    obs = {"a": jnp.zeros(3), "b": jnp.ones(3)}
    masks = {"a": jnp.ones(3, bool), "b": jnp.ones(3, bool)}
    total, parts = losses.multitask_loss(pred, obs, masks, {"a": 2.0}, {"a": 1.0, "b": 2.0})
    assert float(parts["a"]) == 1.0 and float(parts["b"]) == 0.25
    assert float(total) == pytest.approx(2.0 * 1.0 + 0.25)
    with pytest.raises(KeyError, match="no loss scale"):
        losses.multitask_loss(pred, obs, masks, {}, {"a": 1.0})


# --- structural constraint -------------------------------------------------------------------------------


def test_nonnegative_correction_identities():
    x = jnp.array([0.0, 0.0, 0.5, 2.0, 2.0, 5.0])
    r = jnp.array([-1.0, 1.0, -3.0, -0.5, 0.7, -100.0])
    y = np.asarray(constraints.nonnegative_correction(x, r))
    x, r = np.asarray(x), np.asarray(r)
    assert np.all(np.asarray(y) >= 0.0)
    np.testing.assert_allclose(constraints.nonnegative_correction(jnp.asarray(x), jnp.zeros(6)), x)  # no correction
    np.testing.assert_allclose(y[[1, 4]], (x + r)[[1, 4]])  # positive corrections are additive
    np.testing.assert_allclose(y[[2, 3]], (x * np.exp(r / np.where(x > 0, x, 1.0)))[[2, 3]], rtol=1e-6)
    assert float(y[0]) == 0.0


@pytest.mark.parametrize("x", [0.0, 1e-6, 0.3, 4.0])
def test_nonnegative_correction_gradient_finite_and_continuous(x):
    f = lambda r: constraints.nonnegative_correction(jnp.asarray(x), r)  # noqa: E731
    for r in (-50.0, -1.0, -1e-4, 0.0, 1e-4, 2.0):
        g = float(jax.grad(f)(jnp.asarray(r)))
        assert np.isfinite(g)
    if x > 1e-3:
        # C¹ at r = 0: slope 1 from both sides
        assert float(jax.grad(f)(jnp.asarray(-1e-5))) == pytest.approx(1.0, abs=1e-3)
        assert float(jax.grad(f)(jnp.asarray(1e-5))) == pytest.approx(1.0, abs=1e-6)
    gx = jax.grad(lambda xx: constraints.nonnegative_correction(xx, jnp.asarray(-0.5)))(jnp.asarray(x))
    assert np.isfinite(float(gx))


# --- soft constraints ------------------------------------------------------------------------------------


def test_prior_penalty_zero_at_defaults():
    specs = Q10Respiration.parameter_specs
    u = {s.name: jnp.asarray(s.default_unconstrained) for s in specs}
    assert float(constraints.prior_penalty(u, specs)) == pytest.approx(0.0, abs=1e-10)
    u2 = {**u, "q10_rh": u["q10_rh"] + 2.0}
    assert float(constraints.prior_penalty(u2, specs)) == pytest.approx(4.0 / 3, rel=1e-5)
    assert float(constraints.prior_penalty(u2, specs, sd=2.0)) == pytest.approx(1.0 / 3, rel=1e-5)
    # also inside jit (the defaults are computed eagerly)
    assert float(jax.jit(lambda d: constraints.prior_penalty(d, specs))(u2)) == pytest.approx(4.0 / 3, rel=1e-5)
    with pytest.raises(KeyError):
        constraints.prior_penalty({"nope": jnp.zeros(())}, specs)


def test_residual_penalty():
    assert float(constraints.residual_penalty({}, {})) == 0.0
    r = {"gpp": jnp.full(4, 2.0), "reco": jnp.zeros(4)}
    assert float(constraints.residual_penalty(r, {"gpp": 2.0})) == pytest.approx(0.5)


def test_monotone_penalty_and_check():
    up = jnp.array([0.0, 1.0, 1.0, 3.0])
    down = jnp.array([0.0, 1.0, 0.5, 3.0])
    assert float(constraints.monotone_penalty(up)) == 0.0
    assert float(constraints.monotone_penalty(down)) == pytest.approx(0.25 / 3)
    assert bool(constraints.is_monotone_increasing(up)) and not bool(constraints.is_monotone_increasing(down))


@pytest.mark.parametrize("module", [Q10Respiration(), LloydTaylor()])
def test_builtin_temperature_responses_are_monotone(module):
    class Holder:
        soil_respiration = module

    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = {s.name: jnp.asarray(rng.uniform(s.lower, s.upper)) for s in module.parameter_specs}
        assert float(constraints.temperature_response_penalty(Holder, theta)) == 0.0


def test_temperature_penalty_flags_decreasing_response():
    class Decreasing:
        @staticmethod
        def soil_respiration(theta, t, swc):
            return theta["rref_rh"] * jnp.exp(-0.05 * t)

    assert float(constraints.temperature_response_penalty(Decreasing, {"rref_rh": jnp.asarray(1.0)})) > 0.0


def test_grain_carbon_inverts_process_model_yield():
    c = jnp.array([0.0, 150.0, 420.0])
    y = grain_yield(c, MAIZE_STANDARD_MOISTURE)
    np.testing.assert_allclose(constraints.grain_carbon(y, MAIZE_STANDARD_MOISTURE), c, rtol=1e-6)


def test_yield_consistency_penalty():
    gpp = jnp.array([1800.0])  # gC m-2 yr-1, a productive maize field
    # 11 t ha-1 ≈ 418 gC m-2 of grain: well inside 0.5 × 1800
    assert float(constraints.yield_consistency_penalty(jnp.array([11.0]), gpp, MAIZE_STANDARD_MOISTURE)) == 0.0
    # 30 t ha-1 with 1000 gC m-2 GPP is impossible
    bad = constraints.yield_consistency_penalty(jnp.array([30.0]), jnp.array([1000.0]), MAIZE_STANDARD_MOISTURE)
    assert float(bad) > 0.0
