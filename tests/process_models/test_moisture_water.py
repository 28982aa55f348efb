"""Soil-water kernels and the Priestley–Taylor bucket: identities over random parameters, FAO-56 golden values,
exact water balance over two years, drought, gradients against finite differences, masks, vmap = loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import moisture as M
from process_models import water as W
from process_models.forcing import Met, saturation_vapour_pressure
from process_models.parameters import constrain, default_parameters
from process_models.radiation import MJ_PER_DAY_PER_W, clear_sky_radiation

SPECS = W.Bucket.parameter_specs
BUCKET = W.Bucket()


def _random_unconstrained(rng, specs, low=-4.0, high=4.0):
    return {s.name: float(rng.uniform(low, high)) for s in specs}


def _theta(u, dtype=jnp.float32):
    return constrain(SPECS, {k: jnp.asarray(v, dtype) for k, v in u.items()})


def _met(dtype=jnp.float32, **fields) -> Met:
    """A `Met` of the given dtype (make_met fixes float32; the float64 gradient checks need float64)."""
    defaults = dict(tair=20.0, tmin=14.0, tmax=26.0, sw_in=220.0, vpd=8.0, precip=0.0, tsoil=18.0,
                    co2=400.0, patm=101325.0, doy=180.0, lat=41.0)
    defaults.update(fields)
    arrays = {k: jnp.asarray(np.asarray(v, dtype=np.float64), dtype) for k, v in defaults.items()}
    shape = jnp.broadcast_shapes(*(a.shape for a in arrays.values()))
    return Met(**{k: jnp.broadcast_to(a, shape) for k, a in arrays.items()})


def _random_forcing(rng, n_days: int, lat: float = 41.0, start_doy: int = 1):
    """Random daily weather around a temperate seasonal cycle, with heavy storms to force drainage."""
    doy = ((np.arange(n_days) + start_doy - 1) % 365 + 1).astype(np.float64)
    tair = 10.0 - 14.0 * np.cos(2 * np.pi * (doy - 15) / 365.0) + rng.normal(0.0, 3.0, n_days)
    half_range = rng.uniform(3.0, 7.0, n_days)
    rso = np.asarray(clear_sky_radiation(lat, doy)) / MJ_PER_DAY_PER_W
    sw = rso * rng.uniform(0.2, 0.95, n_days)
    es = np.asarray(saturation_vapour_pressure(tair))
    vpd = 10.0 * es * rng.uniform(0.05, 0.7, n_days)
    precip = np.where(rng.uniform(size=n_days) < 0.35, rng.exponential(8.0, n_days), 0.0)
    precip[rng.choice(n_days, max(1, n_days // 120), replace=False)] = 90.0
    lai = 0.3 + 3.5 * np.clip(np.sin(2 * np.pi * (doy - 100) / 365.0), 0.0, None)
    met = dict(tair=tair, tmin=tair - half_range, tmax=tair + half_range, sw_in=sw, vpd=vpd, precip=precip,
               tsoil=tair, doy=doy, lat=lat, patm=101325.0 * rng.uniform(0.88, 1.0))
    return met, lai


def _run_bucket(theta, met: Met, lai, w0):
    """Scan the bucket through the days of ``met``; also return PET and whc computed in the same trace."""

    def body(w, inputs):
        met_t, lai_t = inputs
        step = BUCKET(theta, w, met_t, lai_t)
        return step.w, (step, BUCKET.pet(theta, met_t))

    _, (steps, pet) = jax.lax.scan(body, w0, (met, lai))
    return steps, pet, M.water_holding_capacity(theta)


# ------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_soil_limits_are_ordered_for_any_in_bound_parameters(seed):
    rng = np.random.default_rng(seed)
    specs = M.SOIL_SPECS
    u = {s.name: jnp.asarray(rng.uniform(-10, 10, 200), jnp.float32) for s in specs}
    theta = constrain(specs, u)
    theta_fc, theta_wp = M.soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
    assert np.all(np.asarray(theta_wp) < np.asarray(theta_fc))
    assert np.all(np.asarray(theta_fc) < np.asarray(theta["porosity"]))
    whc = M.water_holding_capacity(theta)
    assert np.all(np.asarray(whc) > 0)
    np.testing.assert_allclose(whc, (theta_fc - theta_wp) * theta["root_depth"], rtol=1e-5)
    # swc spans [θ_wp, θ_fc] as w spans [0, whc].
    np.testing.assert_allclose(M.volumetric_water(0.0, theta), theta_wp, rtol=1e-6)
    np.testing.assert_allclose(M.volumetric_water(whc, theta), theta_fc, rtol=1e-5)


def test_default_soil_is_a_loam():
    # Saxton & Rawls (2006) Table 3, loam: θ_1500 = 0.14, θ_33 = 0.28, θ_S = 0.46 (%v / 100).
    theta = default_parameters(M.SOIL_SPECS)
    theta_fc, theta_wp = M.soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
    assert float(theta_fc) == pytest.approx(0.28, abs=0.015)
    assert float(theta_wp) == pytest.approx(0.14, abs=0.01)
    assert float(M.water_holding_capacity(theta)) == pytest.approx(135.0, rel=1e-6)  # mm over 1 m


def test_relative_water_limits_and_guards():
    np.testing.assert_allclose(M.relative_water(jnp.array([-1.0, 0.0, 50.0, 100.0, 130.0]), 100.0),
                               [0.0, 0.0, 0.5, 1.0, 1.0])
    assert float(M.relative_water(5.0, 0.0)) == 0.0
    g = jax.grad(M.relative_water, argnums=(0, 1))(100.0, 100.0)  # gradient passes at the bound
    assert float(g[0]) == pytest.approx(0.01) and float(g[1]) == pytest.approx(-0.01)


def test_fao56_water_stress_equation_84():
    # FAO-56 eq. 84 with TAW = 100 mm, p = 0.5: D_r = 75 mm → K_s = (100 − 75) / ((1 − 0.5) 100) = 0.5.
    taw, p = 100.0, 0.5
    depletion = jnp.array([0.0, 30.0, 50.0, 75.0, 100.0])
    ks = M.fao56_water_stress((taw - depletion) / taw, p)
    np.testing.assert_allclose(ks, [1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0.1, 0.8)
        wrel = jnp.linspace(0.0, 1.0, 101)
        ks = np.asarray(M.fao56_water_stress(wrel, p))
        expected = np.minimum(np.asarray(wrel) / (1 - p), 1.0)
        np.testing.assert_allclose(ks, expected, atol=1e-6)
        assert np.all(np.diff(ks) >= 0)


def test_rh_moisture_response_matches_parton_curve():
    # Independent evaluation of Parton et al. (1996) / Kelly et al. (2000) coarse-texture coefficients.
    a, b, c, d = 0.55, 1.70, -0.007, 3.22
    wfps = np.linspace(0.0, 1.0, 201)
    expected = ((wfps - b) / (a - b)) ** (d * (b - a) / (a - c)) * ((wfps - c) / (a - c)) ** d
    porosity = 0.45
    got = np.asarray(M.rh_moisture_response(jnp.asarray(wfps * porosity, jnp.float32), porosity))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-9)
    assert float(M.rh_moisture_response(0.55 * porosity, porosity)) == pytest.approx(1.0, abs=5e-6)
    assert got.max() <= 1.0 + 5e-6
    peak = int(np.argmax(got))
    assert wfps[peak] == pytest.approx(0.55, abs=0.005)
    assert np.all(np.diff(got[: peak + 1]) > 0) and np.all(np.diff(got[peak:]) < 0)
    assert got[0] < 1e-3 and 0.2 < got[-1] < 0.3  # dry: ~0; saturated: ≈ 0.25 (O2 limited)
    # Observations beyond [0, φ] are limited, not NaN; gradient finite everywhere.
    vals = M.rh_moisture_response(jnp.array([-0.1, 0.6]), porosity)
    assert np.all(np.isfinite(np.asarray(vals)))
    grads = jax.vmap(jax.grad(M.rh_moisture_response))(jnp.array([0.0, 0.1, 0.45, 0.6]), jnp.full(4, porosity))
    assert np.all(np.isfinite(np.asarray(grads)))


def test_fao56_example_18_priestley_taylor():
    # FAO-56 Example 18 (Brussels, 6 July; 100 m; Tmax 21.5, Tmin 12.3 °C): published Δ = 0.122 kPa °C-1,
    # P = 100.1 kPa, γ = 0.0666 kPa °C-1, R_n = 13.28 MJ m-2 d-1 (G = 0).
    tmean = (21.5 + 12.3) / 2
    assert float(W.slope_vapour_pressure_curve(tmean)) == pytest.approx(0.122, abs=5e-4)
    assert float(W.psychrometric_constant(100.1e3)) == pytest.approx(0.0666, abs=2e-4)
    by_hand = 1.26 * 0.122 / (0.122 + 0.0666) * 13.28 / 2.45  # Priestley & Taylor (1972), λ = 2.45 MJ kg-1
    pet = float(W.priestley_taylor_pet(tmean, 13.28, 100.1e3, 1.26))
    assert pet == pytest.approx(by_hand, rel=3e-3)
    # PT over a well-watered surface is close to, and in humid climates slightly above, the FAO-56
    # Penman–Monteith ET0 of the example (3.9 mm d-1).
    assert 3.5 < pet < 5.0
    assert float(W.priestley_taylor_pet(tmean, -2.0, 100.1e3, 1.26)) == 0.0  # net loss: no negative PET


def test_pet_of_a_sunny_summer_day_is_plausible():
    theta = default_parameters(SPECS)
    met = _met(tair=25.0, tmin=19.0, tmax=31.0, sw_in=250.0, vpd=12.0, doy=190.0, lat=42.0)
    pet = float(BUCKET.pet(theta, met))
    assert 3.0 < pet < 6.5  # mm d-1; 21.6 MJ m-2 d-1 of sunshine at 25 °C
    # More sunshine → more PET; a higher α → proportionally more.
    assert float(BUCKET.pet(theta, met._replace(sw_in=met.sw_in + 50))) > pet
    theta2 = dict(theta, pt_alpha=jnp.float32(1.5))
    assert float(BUCKET.pet(theta2, met)) == pytest.approx(pet * 1.5 / 1.26, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# The bucket
# ------------------------------------------------------------------------------------------------


def test_water_balance_closes_over_two_years_of_random_weather():
    rng = np.random.default_rng(42)
    n_sites, n_days = 3, 730
    forcing = [_random_forcing(rng, n_days) for _ in range(n_sites)]
    met = _met(**{k: np.stack([f[0][k] * np.ones(n_days) for f in forcing]) for k in forcing[0][0]})
    lai = jnp.asarray(np.stack([f[1] for f in forcing]), jnp.float32)
    u = {s.name: jnp.asarray(rng.uniform(-4, 4, n_sites), jnp.float32) for s in SPECS}
    theta = constrain(SPECS, u)
    w0 = M.water_holding_capacity(theta) * jnp.asarray(rng.uniform(0, 1, n_sites), jnp.float32)

    steps, pet, whc = jax.jit(jax.vmap(_run_bucket))(theta, met, lai, w0)
    w = np.asarray(steps.w, np.float64)
    et, drainage = np.asarray(steps.et, np.float64), np.asarray(steps.drainage, np.float64)
    precip = np.asarray(met.precip, np.float64)
    w_prev = np.concatenate([np.asarray(w0, np.float64)[:, None], w[:, :-1]], axis=1)

    # Daily identity to float32 rounding: w_new = w + P − ET − D.
    residual = w_prev + precip - et - drainage - w
    assert np.all(np.abs(residual) <= 4 * np.finfo(np.float32).eps * np.maximum(w_prev + precip, 1.0))
    # Two-year budget: Σ P − Σ ET − Σ D = Δ storage.
    budget = precip.sum(1) - et.sum(1) - drainage.sum(1)
    np.testing.assert_allclose(budget, w[:, -1] - np.asarray(w0, np.float64), atol=2e-3)
    # Bounds hold exactly, fluxes are non-negative, ET never exceeds PET.
    whc32 = np.asarray(whc)[:, None]
    assert np.all(np.asarray(steps.w) >= 0) and np.all(np.asarray(steps.w) <= whc32)
    assert np.all(et >= 0) and np.all(drainage >= 0)
    assert np.all(np.asarray(steps.et) <= np.asarray(pet) * (1 + 1e-6) + 1e-7)
    assert drainage.sum() > 100  # storms did drain
    ws = np.asarray(steps.water_stress)
    assert np.all((ws >= 0) & (ws <= 1)) and ws.min() < 1  # some stress over two years
    np.testing.assert_allclose(steps.wrel, np.asarray(steps.w) / whc32, rtol=1e-6, atol=1e-7)
    swc = np.asarray(steps.swc)
    theta_fc, theta_wp = M.soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
    assert np.all(swc >= np.asarray(theta_wp)[:, None] * (1 - 1e-6))
    assert np.all(swc <= np.asarray(theta_fc)[:, None] * (1 + 1e-6))


def test_drought_dries_the_bucket_and_raises_stress():
    theta = default_parameters(SPECS)
    n = 150
    met = _met(tair=np.full(n, 22.0), tmin=16.0, tmax=28.0, sw_in=250.0, vpd=12.0, doy=190.0, precip=0.0)
    steps, pet, whc = jax.jit(_run_bucket)(theta, met, jnp.full(n, 3.0), M.water_holding_capacity(theta))
    w = np.asarray(steps.w)
    assert np.all(np.diff(w) < 0)  # loses water every day
    ws = np.asarray(steps.water_stress)
    assert ws[0] == 1.0 and np.all(np.diff(ws) <= 0) and ws[-1] < 0.3
    et = np.asarray(steps.et)
    assert et[-1] < 0.3 * et[0]  # supply-limited
    assert np.all(et <= np.asarray(pet) * (1 + 1e-6))
    assert np.all(np.asarray(steps.drainage) == 0)
    np.testing.assert_allclose(et.sum(), float(whc) - w[-1], rtol=1e-5)  # every mm lost is ET


def test_et_cannot_exceed_the_water_present():
    # The smallest bucket the bounds allow (≈ 2 mm) under a large demand: ET takes exactly what is there.
    u = {"porosity": -10.0, "fc_frac": -10.0, "wp_frac": 10.0, "root_depth": -10.0, "et_supply_max": 10.0,
         "pt_alpha": 10.0, "albedo": -10.0, "depletion_frac": 0.0, "k_ext": 0.0}
    theta = _theta(u)
    whc = float(M.water_holding_capacity(theta))
    assert whc < 2.5
    met = _met(tair=30.0, tmin=22.0, tmax=38.0, sw_in=320.0, vpd=30.0, precip=jnp.array([0.0, 0.7]))
    step = jax.vmap(BUCKET, in_axes=(None, None, 0, None))(theta, 0.8 * whc, met, 3.0)
    assert float(BUCKET.pet(theta, met)[0]) > 5 * whc
    np.testing.assert_allclose(step.et, [0.8 * whc, 0.8 * whc + 0.7], rtol=1e-6)
    assert np.all(np.asarray(step.w) == 0.0) and np.all(np.asarray(step.drainage) == 0.0)
    assert np.all(np.asarray(step.water_stress) == 0.0)


def test_bare_soil_still_evaporates_and_a_canopy_transpires_more_when_wet():
    theta = default_parameters(SPECS)
    met = _met()
    full = M.water_holding_capacity(theta)
    bare = BUCKET(theta, full, met, 0.0)
    canopy = BUCKET(theta, full, met, 4.0)
    pet = float(BUCKET.pet(theta, met))
    assert float(bare.et) == pytest.approx(pet, rel=1e-5)  # wet bare soil evaporates at PET
    assert 0.0 < float(canopy.et) <= pet * (1 + 1e-6)
    half = BUCKET(theta, 0.5 * full, met, 0.0)
    assert float(half.et) == pytest.approx(0.25 * pet, rel=1e-4)  # Lee & Pielke β(0.5) = 1/4
    # Drying hits the bare soil harder than a canopy drawing on the whole root zone.
    half_canopy = BUCKET(theta, 0.5 * full, met, 4.0)
    assert float(half_canopy.et) > float(half.et)


def test_soil_evaporation_efficiency():
    wrel = jnp.linspace(0.0, 1.0, 101)
    beta = np.asarray(W.soil_evaporation_efficiency(wrel))
    np.testing.assert_allclose(beta[[0, 50, 100]], [0.0, 0.25, 1.0], atol=1e-6)
    assert np.all(np.diff(beta) > 0)
    # Near potential while wet (stage 1), far below the linear β of Manabe (1969) once half empty.
    assert beta[90] > 0.9 and np.all(beta[:51] <= np.asarray(wrel)[:51] ** 2 + 1e-7)


def test_soil_evaporation_efficiency_equals_the_cosine_form():
    # The loop's polynomial sin⁴(πw/2) is Lee & Pielke's ¼(1 − cos πw)², to float32 rounding, relative too.
    w = np.linspace(0.0, 1.0, 20001)
    ref = 0.25 * (1.0 - np.cos(np.pi * w)) ** 2
    beta = np.asarray(W.soil_evaporation_efficiency(jnp.asarray(w, jnp.float32)), np.float64)
    np.testing.assert_allclose(beta, ref, rtol=2e-6, atol=1e-12)
    s = np.asarray(W.sin_half_pi(jnp.asarray(w, jnp.float32)), np.float64)
    np.testing.assert_allclose(s, np.sin(np.pi / 2 * w), rtol=1e-6, atol=1e-12)


def test_vmap_equals_python_loop():
    rng = np.random.default_rng(7)
    n = 4
    u = [_random_unconstrained(rng, SPECS) for _ in range(n)]
    thetas = [_theta(ui) for ui in u]
    mets = [_met(tair=t, tmin=t - 5, tmax=t + 5, sw_in=s, precip=p)
            for t, s, p in zip(rng.uniform(0, 30, n), rng.uniform(50, 300, n), rng.uniform(0, 40, n), strict=True)]
    ws = [float(rng.uniform(0, 1)) * float(M.water_holding_capacity(th)) for th in thetas]
    lais = rng.uniform(0, 5, n)
    loop = [BUCKET(th, w, m, lai) for th, w, m, lai in zip(thetas, ws, mets, lais, strict=True)]
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *thetas)
    mstack = jax.tree.map(lambda *xs: jnp.stack(xs), *mets)
    batched = jax.vmap(BUCKET)(stack, jnp.asarray(ws, jnp.float32), mstack, jnp.asarray(lais, jnp.float32))
    for field in W.WaterStep._fields:
        np.testing.assert_allclose(
            getattr(batched, field), [getattr(s, field) for s in loop], rtol=1e-6, atol=1e-6, err_msg=field
        )


def _grad_matches_finite_differences(loss, u, eps=1e-5, rtol=2e-4):
    """jax.grad of ``loss`` against central differences in float64, for every parameter."""
    with jax.enable_x64(True):
        u64 = {k: jnp.asarray(v, jnp.float64) for k, v in u.items()}
        f = jax.jit(loss)
        value = float(f(u64))
        grad = jax.jit(jax.grad(loss))(u64)
        for name in u64:
            g = float(grad[name])
            assert math.isfinite(g), name
            up = float(f({**u64, name: u64[name] + eps}))
            down = float(f({**u64, name: u64[name] - eps}))
            fd = (up - down) / (2 * eps)
            assert g == pytest.approx(fd, rel=rtol, abs=1e-8 * max(abs(value), 1.0)), name
        return value, grad


@pytest.mark.parametrize("where", ["interior", "upper", "lower"])
def test_gradients_of_et_and_w_match_finite_differences(where):
    rng = np.random.default_rng(3)
    n_days = 25
    met_np, lai_np = _random_forcing(rng, n_days, start_doy=160)  # early summer: real demand
    met_np["precip"] = 0.3 * met_np["precip"]  # and a dry spell, so that supply and stress both bind
    if where == "interior":
        u = _random_unconstrained(rng, SPECS, -2.0, 2.0)
    else:
        sign = 10.0 if where == "upper" else -10.0
        u = {s.name: sign for s in SPECS}

    def loss(u):
        dtype = next(iter(u.values())).dtype
        theta = constrain(SPECS, u)
        met = _met(dtype, **met_np)
        w0 = 0.3 * M.water_holding_capacity(theta)
        steps, _, _ = _run_bucket(theta, met, jnp.asarray(lai_np, dtype), w0)
        return jnp.sum(steps.et) + steps.w[-1] + jnp.sum(steps.water_stress)

    value, grad = _grad_matches_finite_differences(loss, u)
    assert value > 0
    if where == "interior":  # every parameter matters somewhere in 25 days
        assert all(abs(float(g)) > 0 for g in grad.values()), grad


def test_nan_in_a_masked_driver_does_not_poison_gradients():
    """A gap (NaN) in one site's forcing is replaced upstream with ``jnp.where`` and the site is masked out of
    the loss; the gradient for the other sites is finite and equals the gradient without that site."""
    rng = np.random.default_rng(11)
    n = 4
    sw = rng.uniform(100, 300, n)
    precip = rng.uniform(0, 20, n)
    sw[2], precip[2] = np.nan, np.nan
    valid = jnp.asarray(np.isfinite(sw))
    met = _met(sw_in=sw, precip=precip)
    u = {k: jnp.asarray(v, jnp.float32) for k, v in _random_unconstrained(rng, SPECS).items()}

    def loss(u, met, valid):
        theta = constrain(SPECS, u)
        clean = met._replace(sw_in=jnp.where(valid, met.sw_in, 0.0), precip=jnp.where(valid, met.precip, 0.0))
        w0 = 0.5 * M.water_holding_capacity(theta)
        step = jax.vmap(BUCKET, in_axes=(None, None, 0, None))(theta, w0, clean, 2.0)
        return jnp.sum(jnp.where(valid, step.et + step.w, 0.0))

    g = jax.grad(loss)(u, met, valid)
    assert all(np.isfinite(float(v)) for v in g.values())
    keep = np.asarray(valid)
    subset = jax.tree.map(lambda x: x[keep], met)
    g_ref = jax.grad(loss)(u, subset, jnp.ones(int(keep.sum()), bool))
    for k in g:
        assert float(g[k]) == pytest.approx(float(g_ref[k]), rel=1e-5, abs=1e-7), k
