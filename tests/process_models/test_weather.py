"""Weather generator: bounds and properties, parameter recovery and statistic reproduction on a synthetic
series with known truth, gaps, determinism, vmap, JSON round trip."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import weather as W
from process_models.forcing import Met

N_YEARS_LONG = 100
N_DAYS_SHORT = 3 * 365


def _truth() -> W.WeatherGeneratorParams:
    """A hand-made continental mid-latitude climate (values of the order of the Ames fit)."""
    k = 2 * 3 + 1
    mean = np.zeros((2, 3, k), np.float32)
    var = np.zeros((2, 3, k), np.float32)
    mean[0, :, 0] = [16.0, 4.0, 190.0]  # dry: tmax, tmin, sw_in
    mean[1, :, 0] = [13.0, 5.0, 120.0]  # wet
    mean[:, 0, 1], mean[:, 1, 1] = -14.0, -12.0
    mean[0, 2, 1], mean[1, 2, 1] = -100.0, -60.0
    mean[:, 0, 2] = 1.5
    var[:, 0, 0], var[:, 1, 0], var[:, 2, 0] = 25.0, 20.0, 900.0
    var[:, 0, 1] = 6.0
    var[:, 2, 1] = -300.0
    return W.WeatherGeneratorParams(
        lat=jnp.float32(42.0),
        elevation=jnp.float32(0.0),
        wet_threshold=jnp.float32(0.1),
        p_wet_given_dry=jnp.linspace(0.15, 0.35, 12, dtype=jnp.float32),
        p_wet_given_wet=jnp.linspace(0.40, 0.60, 12, dtype=jnp.float32),
        amount_shape=jnp.full(12, 0.7, jnp.float32),
        amount_scale=jnp.linspace(4.0, 12.0, 12, dtype=jnp.float32),
        mean_coefs=jnp.asarray(mean),
        variance_coefs=jnp.asarray(var),
        ar_a=jnp.asarray(AR_A, jnp.float32),
        ar_b=jnp.asarray(_ar_b(), jnp.float32),
    )


#: Lag-1 matrix and lag-0 correlation of the standardised residuals (tmax, tmin, sw_in) of the truth.
AR_A = np.array([[0.6, 0.1, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 0.2]])
M0 = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.1], [0.2, 0.1, 1.0]])


def _ar_b():
    """B with B Bᵀ = M0 − A M0 Aᵀ, so the residuals are stationary with unit variance (Matalas 1967)."""
    return np.linalg.cholesky(M0 - AR_A @ M0 @ AR_A.T)


@pytest.fixture(scope="module")
def truth():
    return _truth()


@pytest.fixture(scope="module")
def long_series(truth):
    return W.generate_weather(truth, jax.random.key(11), n_years=N_YEARS_LONG)


@pytest.fixture(scope="module")
def fitted(long_series, truth):
    w = long_series
    return W.fit_weather_generator(w.tmin, w.tmax, w.sw_in, w.precip, w.doy, truth.lat, n_harmonics=3)


def _stats(w):
    return {k: np.asarray(v) for k, v in W.monthly_statistics(w.tmin, w.tmax, w.sw_in, w.precip, w.doy).items()}


# --- kernels ---------------------------------------------------------------------------------------------


def test_month_of_doy_golden():
    doy = jnp.asarray([1, 31, 32, 59, 60, 90, 91, 181, 182, 334, 335, 365, 366])
    expected = [0, 0, 1, 1, 2, 2, 3, 5, 6, 10, 11, 11, 11]
    np.testing.assert_array_equal(np.asarray(W.month_of_doy(doy)), expected)
    assert sum(W.DAYS_IN_MONTH) == W.DAYS_PER_GENERATOR_YEAR


def test_fourier_series_reproduces_a_known_cycle():
    doy = jnp.arange(1, 366)
    coefs = jnp.asarray([3.0, 2.0, -1.0, 0.5, 0.25])
    d = np.arange(365.0)
    omega = 2 * np.pi / 365
    expected = 3 + 2 * np.cos(omega * d) - np.sin(omega * d) + 0.5 * np.cos(2 * omega * d) + 0.25 * np.sin(2 * omega * d)
    np.testing.assert_allclose(np.asarray(W.fourier_series(coefs, doy)), expected, rtol=1e-5, atol=1e-5)


def test_gamma_shape_mle_matches_exact_mle():
    """Independent computation: scipy's numerical maximum-likelihood gamma fit (location fixed at 0)."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for shape in (0.3, 0.5, 0.8, 2.0, 8.0):
        x = rng.gamma(shape, 5.0, size=4000)
        exact, _, _ = stats.gamma.fit(x, floc=0.0)
        approx = float(W.gamma_shape_mle(x.mean(), np.log(x).mean()))
        assert approx == pytest.approx(exact, rel=2e-3)


def test_stationary_wet_fraction_identity():
    p_wd, p_ww = jnp.asarray(0.2), jnp.asarray(0.6)
    pi = W.stationary_wet_fraction(p_wd, p_ww)
    # π = π P(W|W) + (1 − π) P(W|D)
    assert float(pi) == pytest.approx(float(pi * p_ww + (1 - pi) * p_wd), rel=1e-6)
    assert float(W.stationary_wet_fraction(0.3, 0.3)) == pytest.approx(0.3, rel=1e-6)


# --- properties of generated weather ------------------------------------------------------------------------


def _stressed(truth, factor):
    """Same climate with every variance multiplied (drives many draws into the bounds)."""
    return W.WeatherGeneratorParams(**{**vars(truth), "variance_coefs": truth.variance_coefs * factor})


@pytest.mark.parametrize("factor", [1.0, 9.0])
def test_generated_weather_respects_bounds(truth, factor):
    params = _stressed(truth, factor)
    keys = jax.random.split(jax.random.key(3), 4)
    w = jax.vmap(lambda k: W.generate_weather(params, k, N_DAYS_SHORT))(keys)
    assert w.tmax.shape == (4, N_DAYS_SHORT)
    for field in w:
        assert bool(jnp.all(jnp.isfinite(field)))
    assert bool(jnp.all(w.tmax >= w.tmin))
    assert bool(jnp.all((w.tair >= w.tmin) & (w.tair <= w.tmax)))
    assert bool(jnp.all(w.precip >= 0.0))
    assert bool(jnp.all((w.precip == 0.0) | (w.precip > params.wet_threshold)))
    clear_sky = W.clear_sky_shortwave(params.lat, w.doy)
    assert bool(jnp.all(w.sw_in >= 0.0))
    assert bool(jnp.all(w.sw_in <= clear_sky * (1 + 1e-6)))
    assert bool(jnp.all(w.vpd >= 0.0))
    np.testing.assert_array_equal(np.asarray(w.doy[0, :3]), [1, 2, 3])
    if factor > 1:  # the stressed climate must actually reach the bounds, or this test proves nothing
        assert bool(jnp.any(w.sw_in == 0.0)) and bool(jnp.any(w.sw_in == clear_sky))


def test_deterministic_given_key_and_keys_differ(truth):
    a = W.generate_weather(truth, jax.random.key(5), N_DAYS_SHORT)
    b = W.generate_weather(truth, jax.random.key(5), N_DAYS_SHORT)
    c = W.generate_weather(truth, jax.random.key(6), N_DAYS_SHORT)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.tmax), np.asarray(c.tmax))


def test_start_doy_and_n_years(truth):
    w = W.generate_weather(truth, jax.random.key(0), N_DAYS_SHORT, start_doy=300)
    assert w.doy[0] == 300 and w.doy[65] == 365 and w.doy[66] == 1
    with pytest.raises(ValueError, match="exactly one"):
        W.generate_weather(truth, jax.random.key(0), 10, n_years=1)
    with pytest.raises(ValueError, match="start_doy"):
        W.generate_weather(truth, jax.random.key(0), 10, start_doy=0)


def test_vmap_over_stacked_params(truth):
    warm = W.WeatherGeneratorParams(**{**vars(truth), "mean_coefs": truth.mean_coefs.at[:, :2, 0].add(5.0)})
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), truth, warm)
    w = jax.vmap(lambda p: W.generate_weather(p, jax.random.key(0), N_DAYS_SHORT))(stacked)
    diff = float(jnp.mean(w.tmax[1] - w.tmax[0]))
    assert diff == pytest.approx(5.0, abs=1e-3)  # same key → same residuals and occurrence


def test_to_met(truth):
    w = W.generate_weather(truth, jax.random.key(0), N_DAYS_SHORT)
    met = W.to_met(w, lat=truth.lat, co2=415.0)
    assert isinstance(met, Met)
    assert met.tair.shape == (N_DAYS_SHORT,) and met.co2.shape == (N_DAYS_SHORT,)
    assert float(met.co2[0]) == pytest.approx(415.0)
    np.testing.assert_allclose(np.asarray(met.tair), np.asarray((w.tmin + w.tmax) / 2), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(met.vpd), np.asarray(w.vpd))


# --- fitting: recovery of a known truth, and reproduction of statistics ---------------------------------------


def test_fit_recovers_known_parameters(truth, fitted):
    np.testing.assert_allclose(np.asarray(fitted.p_wet_given_dry), np.asarray(truth.p_wet_given_dry), atol=0.04)
    np.testing.assert_allclose(np.asarray(fitted.p_wet_given_wet), np.asarray(truth.p_wet_given_wet), atol=0.05)
    mean_fit = np.asarray(fitted.amount_shape * fitted.amount_scale)
    mean_true = np.asarray(truth.amount_shape * truth.amount_scale)
    np.testing.assert_allclose(mean_fit, mean_true, rtol=0.12)
    np.testing.assert_allclose(np.asarray(fitted.amount_shape), 0.7, rtol=0.15)
    doy = jnp.arange(1, 366)
    for state in (0, 1):
        for var in (0, 1):  # tmax, tmin (°C); pointwise standard error of the curve ≈ 0.15–0.3 °C
            est = np.asarray(W.fourier_series(fitted.mean_coefs[state, var], doy))
            ref = np.asarray(W.fourier_series(truth.mean_coefs[state, var], doy))
            assert np.max(np.abs(est - ref)) < 0.6, (state, var)
            assert np.mean(np.abs(est - ref)) < 0.25, (state, var)
        est = np.asarray(W.seasonal_std(fitted.variance_coefs[state, 0], doy))
        ref = np.asarray(W.seasonal_std(truth.variance_coefs[state, 0], doy))
        np.testing.assert_allclose(est, ref, rtol=0.08)
    np.testing.assert_allclose(np.asarray(fitted.ar_a[:2, :2]), np.asarray(truth.ar_a[:2, :2]), atol=0.06)


def test_fit_then_generate_reproduces_statistics(long_series, fitted):
    observed = _stats(long_series)
    simulated = _stats(W.generate_weather(fitted, jax.random.key(12), n_years=N_YEARS_LONG))
    np.testing.assert_allclose(simulated["wet_fraction"], observed["wet_fraction"], atol=0.03)
    np.testing.assert_allclose(simulated["wet_amount_mean"], observed["wet_amount_mean"], rtol=0.15)
    np.testing.assert_allclose(simulated["tmax_mean"], observed["tmax_mean"], atol=0.6)
    np.testing.assert_allclose(simulated["tmin_mean"], observed["tmin_mean"], atol=0.6)
    np.testing.assert_allclose(simulated["tmax_std"], observed["tmax_std"], rtol=0.08)
    assert simulated["tmax_lag1_autocorr"] == pytest.approx(float(observed["tmax_lag1_autocorr"]), abs=0.03)
    assert simulated["annual_precip"] == pytest.approx(float(observed["annual_precip"]), rel=0.06)


def _transition_reference(precip, threshold, month_of_day):
    """Independent numpy count of D→W and W→W transitions by month, over consecutive valid days only."""
    valid = np.isfinite(precip)
    wet = valid & (np.nan_to_num(precip) > threshold)
    pair = valid[1:] & valid[:-1]
    m = month_of_day[1:]
    n_d = np.bincount(m[pair & ~wet[:-1]], minlength=12)
    n_dw = np.bincount(m[pair & ~wet[:-1] & wet[1:]], minlength=12)
    n_w = np.bincount(m[pair & wet[:-1]], minlength=12)
    n_ww = np.bincount(m[pair & wet[:-1] & wet[1:]], minlength=12)
    return (n_dw + 0.5) / (n_d + 1.0), (n_ww + 0.5) / (n_w + 1.0)


def test_gaps_create_no_fake_transitions(truth):
    w = W.generate_weather(truth, jax.random.key(21), N_DAYS_SHORT)
    precip = np.asarray(w.precip).copy()
    doy = np.asarray(w.doy)
    precip[100:160] = np.nan  # a two-month gap (all dry if NaN were read as 0)
    precip[700:705] = np.nan
    args = (w.tmin, w.tmax, w.sw_in)
    fit_nan = W.fit_weather_generator(*args, precip, doy, truth.lat, n_harmonics=2)
    p_wd, p_ww = _transition_reference(precip, 0.1, np.asarray(W.month_of_doy(doy)))
    np.testing.assert_allclose(np.asarray(fit_nan.p_wet_given_dry), p_wd, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fit_nan.p_wet_given_wet), p_ww, rtol=1e-5)
    # the same gap given as a mask instead of NaN
    mask = np.isfinite(precip)
    fit_mask = W.fit_weather_generator(*args, np.asarray(w.precip), doy, truth.lat, mask, n_harmonics=2)
    for a, b in zip(jax.tree_util.tree_leaves(fit_nan), jax.tree_util.tree_leaves(fit_mask), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # NaN in a temperature only removes that day from the continuous fit, never crashes it
    tmax = np.asarray(w.tmax).copy()
    tmax[::7] = np.nan
    fit_t = W.fit_weather_generator(w.tmin, tmax, w.sw_in, precip, doy, truth.lat, n_harmonics=2)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(fit_t))


def test_fit_rejects_mismatched_lengths(truth):
    with pytest.raises(ValueError, match="equal length"):
        W.fit_weather_generator(jnp.zeros(10), jnp.zeros(10), jnp.zeros(10), jnp.zeros(9), jnp.arange(10), 42.0)


# --- serialisation -----------------------------------------------------------------------------------------


def test_json_round_trip(fitted):
    text = json.dumps(W.params_to_dict(fitted))
    back = W.params_from_dict(json.loads(text))
    for a, b in zip(jax.tree_util.tree_leaves(fitted), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = W.generate_weather(fitted, jax.random.key(1), N_DAYS_SHORT)
    y = W.generate_weather(back, jax.random.key(1), N_DAYS_SHORT)
    np.testing.assert_array_equal(np.asarray(x.precip), np.asarray(y.precip))


def test_params_from_dict_errors(fitted):
    good = W.params_to_dict(fitted)
    missing = json.loads(json.dumps(good))
    del missing["fields"]["ar_a"]
    with pytest.raises(ValueError, match="missing fields \\['ar_a'\\]"):
        W.params_from_dict(missing)
    bad_shape = json.loads(json.dumps(good))
    bad_shape["fields"]["p_wet_given_dry"] = [0.1] * 11
    with pytest.raises(ValueError, match="p_wet_given_dry"):
        W.params_from_dict(bad_shape)
    with pytest.raises(ValueError, match="format"):
        W.params_from_dict({**good, "format": "something else"})
