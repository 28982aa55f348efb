"""Growing degree days (golden values), the growing-season index and its LAI, prescribed LAI."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models.forcing import Met, make_met
from process_models.parameters import default_parameters
from process_models.phenology import (
    GrowingSeasonIndex,
    GSIState,
    Phenology,
    PrescribedLAI,
    daily_growing_season_index,
    ema_weight,
    gdd_increment,
)
from process_models.radiation import daylength

GSI = GrowingSeasonIndex()

# --- growing degree days -----------------------------------------------------------------------------

# Golden values computed by hand with McMaster & Wilhelm (1997) method 2 (extremes floored at T_base and
# capped at T_upper before averaging). Columns: tmin, tmax, tbase, tupper, expected GDD (°C d), and what
# method 1 (floor the mean) would give, to show the case discriminates the methods.
GDD_GOLDEN = [
    (15.0, 25.0, 10.0, 30.0, 10.0, 10.0),  # both inside: (15 + 25)/2 − 10
    (5.0, 25.0, 10.0, 30.0, 7.5, 5.0),  # tmin floored: (10 + 25)/2 − 10
    (20.0, 35.0, 10.0, 30.0, 15.0, 17.5),  # tmax capped: (20 + 30)/2 − 10
    (25.0, 38.0, 10.0, 30.0, 17.5, 21.5),  # (25 + 30)/2 − 10
    (32.0, 40.0, 10.0, 30.0, 20.0, 26.0),  # both capped: the maximum, T_upper − T_base
    (-5.0, 8.0, 10.0, 30.0, 0.0, 0.0),  # both floored: nothing
    (4.0, 18.0, 10.0, 30.0, 4.0, 1.0),  # mean 11 > base but tmin < base: methods differ 4×
    (-5.0, 15.0, 0.0, 100.0, 7.5, 5.0),  # a wheat-like 0 °C base (McMaster & Wilhelm's first case)
]


@pytest.mark.parametrize("tmin, tmax, tbase, tupper, expected, method1", GDD_GOLDEN)
def test_gdd_increment_golden_values(tmin, tmax, tbase, tupper, expected, method1):
    assert float(gdd_increment(tmin, tmax, tbase, tupper)) == pytest.approx(expected, abs=1e-6)
    if expected != method1:
        assert float(gdd_increment(tmin, tmax, tbase, tupper)) != pytest.approx(method1, abs=1e-3)


def test_gdd_increment_matches_the_fahrenheit_corn_heat_unit():
    # 86/50 °F corn GDD (AMS Glossary, "corn heat unit"): Tmax 95 °F → 86, Tmin 60 °F:
    # (86 + 60)/2 − 50 = 23 GDD°F; the °C kernel on the same day times 9/5 must agree.
    tmax_c, tmin_c = (95.0 - 32.0) / 1.8, (60.0 - 32.0) / 1.8
    assert float(gdd_increment(tmin_c, tmax_c, 10.0, 30.0)) * 1.8 == pytest.approx(23.0, rel=1e-5)


def test_gdd_increment_properties_and_gradients():
    rng = np.random.default_rng(1)
    tmin = rng.uniform(-20, 35, 1000).astype(np.float32)
    tmax = tmin + rng.uniform(0, 20, 1000).astype(np.float32)
    g = np.asarray(gdd_increment(tmin, tmax, 10.0, 30.0))
    assert np.all(g >= 0) and np.all(g <= 20.0 + 1e-6)
    # Monotone non-decreasing in each extreme.
    assert np.all(np.asarray(gdd_increment(tmin + 1, tmax, 10.0, 30.0)) >= g - 1e-6)
    assert np.all(np.asarray(gdd_increment(tmin, tmax + 1, 10.0, 30.0)) >= g - 1e-6)
    grad = jax.vmap(jax.grad(gdd_increment, argnums=(0, 1)), in_axes=(0, 0, None, None))
    dmin, dmax = (np.asarray(x) for x in grad(jnp.asarray(tmin), jnp.asarray(tmax), 10.0, 30.0))
    assert np.all(np.isfinite(dmin)) and np.all(np.isfinite(dmax))
    assert set(np.unique(np.round(dmin, 6))) <= {0.0, 0.5}  # ½ inside the thresholds, 0 outside


# --- growing-season index ----------------------------------------------------------------------------


def _met(tmin, vpd, doy, lat=45.0, lai=None) -> Met:
    tmin = jnp.asarray(tmin, jnp.float32)
    return make_met(
        tmin=tmin, tmax=tmin + 10.0, sw_in=150.0, precip=0.0, doy=doy, lat=lat, vpd=vpd, lai=lai
    )


def _run(phenology: Phenology, theta, met: Met):
    def body(state, met_t):
        state, lai = phenology(theta, state, met_t)
        return state, (lai, state)

    _, (lai, states) = jax.lax.scan(body, phenology.init_state(), met)
    return lai, states


run = eqx.filter_jit(_run)


def test_daily_index_uses_the_jolly_thresholds():
    theta = default_parameters(GSI.parameter_specs)
    args = [theta[k] for k in ("gsi_tmin_low", "gsi_tmin_span", "gsi_vpd_low", "gsi_vpd_span")]
    args += [theta["gsi_photoperiod_low"], theta["gsi_photoperiod_span"]]
    # Jolly et al. (2005) Fig. 1 corners: T_min −2/5 °C, VPD 900/4100 Pa, photoperiod 10/11 h.
    cases = [
        ((-2.0, 5.0, 14.0), 0.0),  # tmin at the lower threshold
        ((5.0, 5.0, 14.0), 1.0),  # everything favourable
        ((1.5, 5.0, 14.0), 0.5),  # tmin halfway
        ((10.0, 9.0, 14.0), 1.0),  # VPD at 900 Pa
        ((10.0, 25.0, 14.0), 0.5),  # VPD 2500 Pa, halfway
        ((10.0, 41.0, 14.0), 0.0),  # VPD at 4100 Pa
        ((10.0, 5.0, 10.5), 0.5),  # photoperiod halfway
        ((10.0, 5.0, 9.0), 0.0),  # short days
        ((1.5, 25.0, 10.5), 0.125),  # the product
    ]
    for (tmin, vpd, photo), expected in cases:
        value = float(daily_growing_season_index(tmin, vpd, photo, *args))
        assert value == pytest.approx(expected, abs=1e-6), (tmin, vpd, photo)


def test_ema_is_a_bias_corrected_running_mean_with_the_21_day_mean_age():
    alpha = ema_weight(21)
    assert alpha == pytest.approx(1 / 11)
    assert (1 - alpha) / alpha == pytest.approx(
        (21 - 1) / 2
    )  # mean age of past days: 10 d for both
    # Independent computation: explicit weighted average over a random daily index.
    rng = np.random.default_rng(2)
    n = 80
    tmin = rng.uniform(-5, 8, n)
    vpd = rng.uniform(5, 45, n)
    doy = np.full(n, 172.0)  # long days at 45° N: photoperiod index 1
    met = _met(tmin, vpd, doy)
    theta = default_parameters(GSI.parameter_specs)
    _, states = run(GSI, theta, met)
    igsi = np.asarray(GSI.daily_index(theta, met), np.float64)
    for t in (0, 5, 20, n - 1):
        w = alpha * (1 - alpha) ** np.arange(t, -1, -1)
        expected = np.sum(w * igsi[: t + 1]) / np.sum(w)
        assert float(GSI.gsi(jax.tree_util.tree_map(lambda x, t=t: x[t], states))) == pytest.approx(
            expected, rel=1e-5, abs=1e-6
        )
    assert float(GSI.gsi(GSI.init_state())) == 0.0


def test_gsi_is_zero_in_a_cold_dark_winter_and_one_in_summer():
    theta = default_parameters(GSI.parameter_specs)
    lai_max = float(theta["lai_max"])
    lai_min = float(theta["lai_min_fraction"]) * lai_max
    # 60 winter days at 45° N: frost and < 10 h days.
    winter = _met(np.full(60, -10.0), 3.0, np.arange(335, 395) % 365 + 1)
    assert float(jnp.max(daylength(45.0, winter.doy))) < 10.0
    lai, states = run(GSI, theta, winter)
    assert np.all(np.asarray(jax.vmap(GSI.gsi)(states)) == 0.0)
    np.testing.assert_allclose(np.asarray(lai), lai_min, rtol=1e-6)
    # 60 summer days: warm nights, moist air, long days → GSI = 1 exactly (bias-corrected mean).
    summer = _met(np.full(60, 15.0), 5.0, np.arange(150, 210))
    lai, states = run(GSI, theta, summer)
    np.testing.assert_allclose(np.asarray(jax.vmap(GSI.gsi)(states)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(lai), lai_max, rtol=1e-6)


def test_lai_follows_the_seasons_and_stays_within_its_bounds():
    doy = np.arange(1, 366, dtype=np.float32)
    tmean = 9.5 - 14.5 * np.cos(2 * np.pi * (doy - 15) / 365.0)  # central Iowa-like
    met = make_met(tmin=tmean - 5.5, tmax=tmean + 5.5, sw_in=150.0, precip=1.0, doy=doy, lat=41.0)
    rng = np.random.default_rng(3)
    for _ in range(3):  # random parameters within their bounds
        theta = {
            s.name: jnp.float32(
                rng.uniform(s.lower, s.upper) if s.name != "lai_min_fraction" else 0.1
            )
            for s in GSI.parameter_specs
        }
        lai, _ = run(GSI, theta, met)
        lai = np.asarray(lai)
        lai_max = float(theta["lai_max"])
        assert np.all(lai >= 0.1 * lai_max * (1 - 1e-6)) and np.all(lai <= lai_max * (1 + 1e-6))
    theta = default_parameters(GSI.parameter_specs)
    lai = np.asarray(run(GSI, theta, met)[0])
    assert lai[:60].max() < 0.2 * float(theta["lai_max"])  # Jan–Feb dormant
    assert lai[180:220].min() > 0.8 * float(theta["lai_max"])  # July green
    green_up = int(np.argmax(lai > 0.5 * float(theta["lai_max"]))) + 1
    assert 90 < green_up < 150  # spring green-up between April and May


def test_gsi_gradients_finite_and_equal_finite_differences_in_float64():
    # Late winter to spring: every ramp is active on some day.
    doy = np.arange(20, 120, dtype=np.float64)
    rng = np.random.default_rng(4)
    tmin = -4.0 + 12.0 * (doy - 20) / 100 + rng.normal(0, 2, doy.size)
    vpd = rng.uniform(5.0, 40.0, doy.size)
    with jax.enable_x64(True):
        met = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), _met(tmin, vpd, doy))
        theta = {
            k: jnp.asarray(v, jnp.float64)
            for k, v in default_parameters(GSI.parameter_specs).items()
        }

        def mean_lai(th):
            return jnp.mean(_run(GSI, th, met)[0])

        f = jax.jit(mean_lai)
        grads = jax.jit(jax.grad(mean_lai))(theta)
        for key, g in grads.items():
            h = 1e-6 * max(1.0, abs(float(theta[key])))
            fd = (
                float(f({**theta, key: theta[key] + h})) - float(f({**theta, key: theta[key] - h}))
            ) / (2 * h)
            assert np.isfinite(float(g)) and float(g) != 0.0, key
            assert float(g) == pytest.approx(fd, rel=1e-5, abs=1e-9), key


def test_gsi_gradients_finite_at_the_parameter_bounds():
    met = _met(np.linspace(-5, 15, 50), 20.0, np.arange(80, 130))
    grad = eqx.filter_jit(jax.grad(lambda th: jnp.sum(_run(GSI, th, met)[0])))
    for side in ("lower", "upper"):
        theta = {s.name: jnp.float32(getattr(s, side)) for s in GSI.parameter_specs}
        g = grad(theta)
        assert all(np.isfinite(float(v)) for v in g.values()), side


def test_vmap_over_sites_equals_a_loop():
    theta = default_parameters(GSI.parameter_specs)
    doy = np.arange(1, 366, dtype=np.float32)
    mets = [
        make_met(
            tmin=9.5 - 14.5 * np.cos(2 * np.pi * (doy - 15) / 365.0) + dt - 5.5,
            tmax=9.5 - 14.5 * np.cos(2 * np.pi * (doy - 15) / 365.0) + dt + 5.5,
            sw_in=150.0,
            precip=1.0,
            doy=doy,
            lat=lat,
        )
        for lat, dt in ((35.0, 3.0), (45.0, 0.0), (55.0, -3.0))
    ]
    met = Met(*[None if f[0] is None else jnp.stack(f) for f in zip(*mets, strict=True)])
    lai_max = jnp.array([3.0, 5.0, 7.0], jnp.float32)
    batched = eqx.filter_jit(jax.vmap(lambda lm, m: _run(GSI, {**theta, "lai_max": lm}, m)[0]))(
        lai_max, met
    )
    for i, m in enumerate(mets):
        single = run(GSI, {**theta, "lai_max": lai_max[i]}, m)[0]
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(single), rtol=1e-6, atol=1e-6)


def test_state_is_float_scalars():
    state = GSI.init_state()
    assert isinstance(state, GSIState)
    assert all(x.shape == () and jnp.issubdtype(x.dtype, jnp.floating) for x in state)
    assert PrescribedLAI().init_state().shape == ()
    assert PrescribedLAI.parameter_specs == ()
    with pytest.raises(TypeError):
        Phenology()  # abstract


# --- prescribed LAI ----------------------------------------------------------------------------------


def test_prescribed_lai_passes_the_forcing_through():
    lai_obs = np.array([0.0, 0.3, 2.5, 5.1, -0.01], np.float32)  # a small negative retrieval → 0
    met = _met(np.full(5, 10.0), 10.0, np.arange(1, 6), lai=lai_obs)
    lai, states = run(PrescribedLAI(), {}, met)
    np.testing.assert_array_equal(np.asarray(lai), np.maximum(lai_obs, 0.0))
    assert np.all(np.asarray(states) == 0.0)
    with pytest.raises(ValueError, match="met.lai"):
        PrescribedLAI()({}, jnp.zeros(()), _met(10.0, 10.0, 1))
