"""Heterotrophic respiration: reference identities, Lloyd & Taylor (1994) and DAMM (Davidson et al. 2012)
against independent numpy implementations, monotonicity, moisture limits, gradients, masks, vmap = loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import soil_respiration as S
from process_models.moisture import SOIL_SPECS
from process_models.parameters import collect_specs, constrain, default_parameters
from process_models.water import Bucket

VARIANTS = {"q10": S.Q10Respiration, "lloyd_taylor": S.LloydTaylor, "damm": S.DAMM}

#: WFPS at which the moisture scalar of Q10/Lloyd–Taylor peaks (= 1).
WFPS_OPT = 0.55


def _random_theta(rng, specs, n=None, low=-4.0, high=4.0, dtype=jnp.float32):
    u = {s.name: jnp.asarray(rng.uniform(low, high, n), dtype) for s in specs}
    return constrain(specs, u)


# ------------------------------------------------------------------------------------------------
# Identities and golden values
# ------------------------------------------------------------------------------------------------


def test_shared_specs_and_a_consistent_union():
    assert S.Q10Respiration.parameter_specs[0] is S.LloydTaylor.parameter_specs[0] is S.RREF_RH_SPEC
    assert S.LloydTaylor.parameter_specs[-1] is SOIL_SPECS[0]  # porosity, the bucket's own spec
    names = [s.name for s in collect_specs(*(v.parameter_specs for v in VARIANTS.values()), Bucket.parameter_specs)]
    assert len(names) == len(set(names))
    assert {"rref_rh", "q10_rh", "e0_rh", "alpha_sx_damm", "ea_sx_damm", "km_sx_damm", "km_o2_damm"} <= set(names)


@pytest.mark.parametrize("seed", range(3))
def test_rh_equals_rref_at_10c_and_optimal_moisture(seed):
    rng = np.random.default_rng(seed)
    for cls in (S.Q10Respiration, S.LloydTaylor):
        theta = _random_theta(rng, cls.parameter_specs, n=50)
        swc = WFPS_OPT * theta["porosity"]
        rh = cls()(theta, jnp.full(50, 10.0), swc)
        np.testing.assert_allclose(rh, theta["rref_rh"], rtol=1e-5)


def test_q10_doubles_per_10k_with_q10_2():
    theta = dict(default_parameters(S.Q10Respiration.parameter_specs), q10_rh=jnp.float32(2.0))
    swc = WFPS_OPT * theta["porosity"]
    rh = S.Q10Respiration()(theta, jnp.array([0.0, 10.0, 20.0, 30.0]), swc)
    np.testing.assert_allclose(np.asarray(rh) / float(theta["rref_rh"]), [0.5, 1.0, 2.0, 4.0], rtol=1e-5)


def test_lloyd_taylor_reproduces_the_published_curve():
    # Lloyd & Taylor (1994) Funct. Ecol. 8:315, eq. 11, evaluated by hand in numpy with T in K:
    # R/R10 = exp(308.56 (1/56.02 − 1/(T − 227.13))); 56.02 = 283.15 − 227.13.
    t_c = np.array([-10.0, 0.0, 5.0, 20.0, 30.0])
    by_hand = np.exp(308.56 * (1.0 / 56.02 - 1.0 / (t_c + 273.15 - 227.13)))
    # The two anchors quoted in the literature for the LT curve: ≈ 0.30 at 0 °C and ≈ 2.30 at 20 °C.
    assert by_hand[1] == pytest.approx(0.302, abs=1e-3) and by_hand[3] == pytest.approx(2.303, abs=1e-3)
    theta = dict(default_parameters(S.LloydTaylor.parameter_specs), rref_rh=jnp.float32(1.0))
    assert float(theta["e0_rh"]) == pytest.approx(308.56)
    rh = S.LloydTaylor()(theta, jnp.asarray(t_c, jnp.float32), WFPS_OPT * theta["porosity"])
    np.testing.assert_allclose(rh, by_hand, rtol=2e-5)


def _damm_numpy(t_c, theta_w, porosity, alpha=5.38e10, ea_kj=72.26, km_sx=9.95e-7, km_o2=0.121,
                p=4.14e-4, sx_tot=0.048, d_liq=3.17, d_gas=1.67, depth_cm=10.0):
    """Independent DAMM in float64 numpy, written from Davidson et al. (2012) eqs. 1–6 with their gas constant
    R = 8.314472e-3 kJ K-1 mol-1 and Table 1 values. Returns mg C cm-3 h-1 and mg C m-2 h-1."""
    vmax = alpha * np.exp(-ea_kj / (8.314472e-3 * (t_c + 273.15)))
    sx = p * sx_tot * d_liq * theta_w**3
    air = np.maximum(porosity - theta_w, 0.0)
    o2 = d_gas * 0.209 * air ** (4.0 / 3.0)
    rate = vmax * sx / (km_sx + sx) * o2 / (km_o2 + o2)
    return rate, rate * 1e4 * depth_cm


def test_damm_matches_an_independent_implementation():
    porosity = 0.68  # Harvard Forest topsoil (bulk density 0.8 / particle density 2.52), Davidson et al. (2012)
    t_c, theta_w = np.meshgrid(np.linspace(0.0, 30.0, 7), np.linspace(0.05, 0.65, 13))
    _, areal_mg_h = _damm_numpy(t_c, theta_w, porosity)
    theta = dict(default_parameters(S.DAMM.parameter_specs), porosity=jnp.float32(porosity))
    rh = S.DAMM()(theta, jnp.asarray(t_c, jnp.float32), jnp.asarray(theta_w, jnp.float32))
    # gC m-2 d-1 = mg C m-2 h-1 × 24 / 1000. R differs from CODATA by 1e-6 relative: negligible.
    np.testing.assert_allclose(rh, areal_mg_h * 24.0 / 1000.0, rtol=2e-4)


def test_damm_magnitude_is_that_of_a_temperate_forest_soil():
    # Davidson et al. (2012) fit trenched-plot (heterotrophic) chamber fluxes at Harvard Forest of the order
    # of 10²  mg C m-2 h-1 in summer; soil respiration there peaks at ~5–8 gC m-2 d-1 (total, incl. roots).
    theta = dict(default_parameters(S.DAMM.parameter_specs), porosity=jnp.float32(0.68))
    summer = float(S.DAMM()(theta, 20.0, 0.3))
    assert 1.0 < summer < 10.0
    assert float(S.DAMM()(theta, 5.0, 0.3)) < 0.5 * summer
    assert 20 < summer * 1000 / 24 < 400  # mg C m-2 h-1


# ------------------------------------------------------------------------------------------------
# Properties over random in-bound parameters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_rh_is_positive_and_increases_with_temperature(name):
    rng = np.random.default_rng(1)
    model = VARIANTS[name]()
    theta = _random_theta(rng, model.parameter_specs, n=(30, 1))
    swc = theta["porosity"] * jnp.asarray(rng.uniform(0.2, 0.8, (30, 1)), jnp.float32)
    t = jnp.linspace(-20.0, 40.0, 61)[None, :]
    rh = np.asarray(model(theta, t, swc))
    assert rh.shape == (30, 61) and np.all(np.isfinite(rh)) and np.all(rh > 0)
    assert np.all(np.diff(rh, axis=1) > 0)


def test_damm_is_limited_when_very_dry_and_when_very_wet():
    rng = np.random.default_rng(2)
    model = S.DAMM()
    theta = _random_theta(rng, model.parameter_specs, n=(20, 1))
    frac = jnp.linspace(0.0, 1.0, 101)[None, :]
    rh = np.asarray(model(theta, 20.0, frac * theta["porosity"]))
    assert np.all(rh[:, 0] == 0) and np.all(rh[:, -1] == 0)  # no substrate / no O2
    peak = rh.argmax(axis=1)
    assert np.all((peak > 0) & (peak < 100))
    for row, k in zip(rh, peak, strict=True):  # unimodal: rises to the optimum, then falls
        assert np.all(np.diff(row[: k + 1]) >= 0) and np.all(np.diff(row[k:]) <= 0)
    # Default parameters: both ends well below the optimum.
    theta0 = default_parameters(model.parameter_specs)
    p = float(theta0["porosity"])
    mid, dry, wet = (float(model(theta0, 20.0, f * p)) for f in (0.5, 0.1, 0.98))
    assert dry < 0.2 * mid and wet < 0.2 * mid


@pytest.mark.parametrize("name", VARIANTS)
def test_extreme_drivers_stay_finite_and_non_negative(name):
    model = VARIANTS[name]()
    theta = default_parameters(model.parameter_specs)
    t = jnp.array([-60.0, -40.0, 0.0, 45.0, 60.0])[:, None]
    swc = jnp.array([-0.05, 0.0, 0.2, float(theta["porosity"]), 0.9])[None, :]
    rh = np.asarray(model(theta, t, swc))
    assert np.all(np.isfinite(rh)) and np.all(rh >= 0)
    grads = jax.grad(lambda th: jnp.sum(model(th, t, swc)))(theta)
    assert all(np.isfinite(float(g)) for g in grads.values())


@pytest.mark.parametrize("name", VARIANTS)
def test_vmap_equals_python_loop(name):
    rng = np.random.default_rng(5)
    model = VARIANTS[name]()
    n = 5
    theta = _random_theta(rng, model.parameter_specs, n=n)
    tsoil = jnp.asarray(rng.uniform(-5, 30, n), jnp.float32)
    swc = jnp.asarray(rng.uniform(0.05, 0.4, n), jnp.float32)
    batched = jax.vmap(model)(theta, tsoil, swc)
    loop = [model({k: v[i] for k, v in theta.items()}, tsoil[i], swc[i]) for i in range(n)]
    np.testing.assert_allclose(batched, loop, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["interior", "upper", "lower"])
@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_match_finite_differences(name, where):
    rng = np.random.default_rng(9)
    model = VARIANTS[name]()
    specs = model.parameter_specs
    if where == "interior":
        u = {s.name: float(rng.uniform(-2, 2)) for s in specs}
    else:
        u = {s.name: (10.0 if where == "upper" else -10.0) for s in specs}
    tsoil = rng.uniform(-5, 30, 6)
    frac = rng.uniform(0.1, 0.9, 6)  # of porosity

    eps = 1e-5
    with jax.enable_x64(True):
        def loss(u):
            theta = constrain(specs, u)
            return jnp.sum(model(theta, jnp.asarray(tsoil), jnp.asarray(frac) * theta["porosity"]))

        u64 = {k: jnp.float64(v) for k, v in u.items()}
        f = jax.jit(loss)
        value = float(f(u64))
        grad = jax.jit(jax.grad(loss))(u64)
        for k in u64:
            g = float(grad[k])
            assert math.isfinite(g), k
            fd = (float(f({**u64, k: u64[k] + eps})) - float(f({**u64, k: u64[k] - eps}))) / (2 * eps)
            assert g == pytest.approx(fd, rel=2e-4, abs=1e-9 * max(abs(value), 1.0)), k
        if where == "interior":
            assert all(abs(float(g)) > 0 for g in grad.values())


@pytest.mark.parametrize("name", VARIANTS)
def test_nan_in_a_masked_driver_does_not_poison_gradients(name):
    """Gaps (NaN) in soil temperature and moisture are replaced upstream with ``jnp.where`` and masked out of
    the loss: the gradient is finite and equals the gradient computed on the valid elements alone."""
    rng = np.random.default_rng(4)
    model = VARIANTS[name]()
    tsoil = rng.uniform(0, 25, 6)
    swc = rng.uniform(0.1, 0.35, 6)
    tsoil[1] = np.nan
    swc[4] = np.nan
    valid = np.isfinite(tsoil) & np.isfinite(swc)
    u = {s.name: jnp.float32(rng.uniform(-2, 2)) for s in model.parameter_specs}

    def loss(u, tsoil, swc, valid):
        theta = constrain(model.parameter_specs, u)
        rh = model(theta, jnp.where(valid, tsoil, 10.0), jnp.where(valid, swc, 0.2))
        return jnp.sum(jnp.where(valid, rh, 0.0))

    args = (jnp.asarray(tsoil, jnp.float32), jnp.asarray(swc, jnp.float32), jnp.asarray(valid))
    g = jax.grad(loss)(u, *args)
    assert all(np.isfinite(float(v)) for v in g.values())
    g_ref = jax.grad(loss)(u, *(a[valid] for a in args))
    for k in g:
        assert float(g[k]) == pytest.approx(float(g_ref[k]), rel=1e-5, abs=1e-8), k
