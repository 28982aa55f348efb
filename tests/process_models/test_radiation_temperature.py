"""Radiation (FAO-56 worked examples) and temperature-response identities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import radiation as R
from process_models import temperature as T
from process_models.forcing import make_met, saturation_vapour_pressure


def test_fao56_example_8_extraterrestrial_radiation():
    # Allen et al. (1998) FAO-56 Example 8: 20°S on 3 September (J = 246) → R_a = 32.2 MJ m-2 d-1.
    assert float(R.extraterrestrial_radiation(-20.0, 246)) == pytest.approx(32.2, abs=0.05)


def test_fao56_example_9_daylight_hours():
    # FAO-56 Example 9: 20°S on 3 September → N = 11.7 h.
    assert float(R.daylength(-20.0, 246)) == pytest.approx(11.7, abs=0.05)


def test_fao56_example_11_net_longwave_and_net_radiation():
    # FAO-56 Example 11: Rio de Janeiro (22°54'S) 15 May (J=135), n=7.1 h → R_s = 14.5 MJ m-2 d-1,
    # Tmax 25.1 °C, Tmin 19.1 °C, e_a 2.1 kPa, R_so = 18.8, albedo 0.23 → R_nl = 3.5, R_n = 7.7 MJ m-2 d-1.
    sw = 14.5 / R.MJ_PER_DAY_PER_W
    rn = R.net_radiation(sw, 19.1, 25.1, 2.1, -(22 + 54 / 60), 135, 0.23)
    assert float(rn) == pytest.approx(7.7, abs=0.15)


def test_fully_overcast_day_net_longwave_is_a_loss():
    # A fully overcast day (R_s ≈ 2 % of R_so): the relative shortwave is bounded below at 0.3 (ASCE-EWRI 2005
    # eq. 18), so the cloudiness factor 1.35 R_s/R_so − 0.35 is 0.055 (≥ 0.05) and net longwave R_nl stays a
    # loss (R_n < R_ns). With the old 0.25 bound the factor was −0.0125 and R_nl turned into a gain.
    lat, doy, albedo = 45.0, 180, 0.23
    rso = float(R.clear_sky_radiation(lat, doy))
    rs = 0.02 * rso
    sw = rs / R.MJ_PER_DAY_PER_W
    rn = float(R.net_radiation(sw, 8.0, 12.0, 1.2, lat, doy, albedo))
    rns = (1 - albedo) * rs
    rnl = rns - rn
    assert R.RS_RSO_MIN == 0.3
    assert 1.35 * R.RS_RSO_MIN - 0.35 >= 0.05
    assert rnl > 0  # a loss
    # it equals the closed form with the cloudiness factor at its bound
    from process_models.constants import KELVIN_OFFSET, STEFAN_BOLTZMANN_MJ_DAY
    expect = STEFAN_BOLTZMANN_MJ_DAY * ((12 + KELVIN_OFFSET) ** 4 + (8 + KELVIN_OFFSET) ** 4) / 2 \
        * (0.34 - 0.14 * np.sqrt(1.2)) * (1.35 * 0.3 - 0.35)
    assert rnl == pytest.approx(expect, rel=1e-4)


def test_fao56_saturation_vapour_pressure_table():
    # FAO-56 Annex 2, Table 2.3: e°(20 °C) = 2.338 kPa, e°(30 °C) = 4.243 kPa.
    np.testing.assert_allclose(saturation_vapour_pressure(jnp.array([20.0, 30.0])), [2.338, 4.243], atol=2e-3)


def test_polar_night_and_day_are_defined():
    assert float(R.daylength(80.0, 355)) == pytest.approx(0.0, abs=1e-4)
    assert float(R.daylength(80.0, 172)) == pytest.approx(24.0, abs=1e-4)
    assert float(R.extraterrestrial_radiation(80.0, 355)) == pytest.approx(0.0, abs=1e-3)
    rn = R.net_radiation(0.0, -30.0, -20.0, 0.05, 80.0, 355, 0.8)
    assert np.isfinite(float(rn)) and float(rn) < 0  # longwave loss only


def test_fapar_beer_law():
    assert float(R.fapar_from_lai(0.0, 0.5)) == 0.0
    assert float(R.fapar_from_lai(4.0, 0.5)) == pytest.approx(1 - np.exp(-2.0), rel=1e-6)
    g = jax.grad(R.fapar_from_lai)(0.0, 0.5)
    assert float(g) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_responses_are_one_at_reference_and_monotone(seed):
    rng = np.random.default_rng(seed)
    q10, e0, ea = rng.uniform(1.1, 4.0), rng.uniform(50, 400), rng.uniform(2e4, 9e4)
    tref = rng.uniform(0, 30)
    assert float(T.q10_response(tref, q10, tref)) == pytest.approx(1.0, abs=1e-6)
    assert float(T.lloyd_taylor_response(10.0, e0)) == pytest.approx(1.0, abs=1e-6)
    assert float(T.arrhenius_response(298.15, ea)) == pytest.approx(1.0, abs=1e-6)
    assert float(T.peaked_arrhenius_response(298.15, ea, 2e5, 650.0)) == pytest.approx(1.0, abs=1e-5)
    t = jnp.linspace(-20.0, 40.0, 61)
    for f in (T.q10_response(t, q10, tref), T.lloyd_taylor_response(t, e0),
              T.arrhenius_response(t + 273.15, ea)):
        assert np.all(np.diff(np.asarray(f)) > 0)


def test_lloyd_taylor_published_value_and_safe_below_t0():
    # Lloyd & Taylor (1994) eq. 11 with E0 = 308.56 K, T0 = 227.13 K: R(20 °C)/R(10 °C)
    # = exp(308.56 (1/56.02 − 1/66.02)) ≈ 2.30 (their apparent Q10 near 10–20 °C).
    ratio = float(T.lloyd_taylor_response(20.0, 308.56))
    assert ratio == pytest.approx(np.exp(308.56 * (1 / 56.02 - 1 / 66.02)), rel=1e-5)
    assert 2.2 < ratio < 2.4
    g = jax.grad(lambda t: T.lloyd_taylor_response(t, 308.56))(jnp.float32(-60.0))
    assert np.isfinite(float(g))


def test_peaked_arrhenius_declines_at_high_temperature():
    t = jnp.array([25.0, 35.0, 45.0, 55.0]) + 273.15
    f = np.asarray(T.peaked_arrhenius_response(t, 6.5e4, 2e5, 650.0))
    assert f[1] > f[0] and f[3] < f[2]


def test_make_met_derives_documented_drivers():
    met = make_met(tmin=10.0, tmax=20.0, sw_in=200.0, precip=[0.0, 1.0], doy=180, lat=41.0)
    assert met.tair.shape == (2,) and float(met.tair[0]) == pytest.approx(15.0)
    es = (saturation_vapour_pressure(20.0) + saturation_vapour_pressure(10.0)) / 2
    assert float(met.vpd[0]) == pytest.approx(10 * float(es - saturation_vapour_pressure(10.0)), rel=1e-5)
    assert met.lai is None


def test_arccos_polynomial_equals_arccos_to_float32_precision():
    """Abramowitz & Stegun 4.4.46 (|ε| ≤ 2e-8) against float64 arccos over [−1, 1], with a finite gradient."""
    from process_models.radiation import arccos_polynomial

    x = np.linspace(-1.0, 1.0, 200_001).astype(np.float32)
    err = np.abs(np.asarray(arccos_polynomial(x), np.float64) - np.arccos(x.astype(np.float64)))
    assert err.max() < 1e-6
    assert float(arccos_polynomial(np.float32(-1.0))) == pytest.approx(np.pi, abs=1e-6)
    g = jax.vmap(jax.grad(arccos_polynomial))(jnp.asarray([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(g)[1:4], -1 / np.sqrt(1 - np.array([0.25, 0.0, 0.25])), rtol=1e-4)


def test_geometry_at_the_fields_own_shapes_equals_per_site_day():
    """Latitude per site against day of year per day (the sines computed apart, issue 18) gives the per-site-day
    values, its gradient too, and so does a vmap over sites (the cond then becomes a select)."""
    lat = jnp.asarray([-70.0, -10.0, 0.0, 35.0, 52.5, 80.0])[None, :]
    doy = jnp.arange(1.0, 366.0)[:, None]
    full_lat, full_doy = jnp.broadcast_to(lat, (365, 6)), jnp.broadcast_to(doy, (365, 6))
    ra = R.extraterrestrial_radiation(lat, doy)
    # float32: the sines taken apart round differently near polar day and night (≤ 2e-5 MJ m-2 d-1 seen)
    np.testing.assert_allclose(ra, R.extraterrestrial_radiation(full_lat, full_doy), rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(R.daylength(lat, doy), R.daylength(full_lat, full_doy), atol=1e-4)  # h
    g = jax.grad(lambda la: jnp.sum(R.extraterrestrial_radiation(la, doy)))(lat)
    g_full = jax.grad(lambda la: jnp.sum(R.extraterrestrial_radiation(jnp.broadcast_to(la, (365, 6)),
                                                                              full_doy)))(lat)
    np.testing.assert_allclose(g, g_full, rtol=1e-4, atol=1e-4)
    per_site = jax.vmap(lambda la: R.extraterrestrial_radiation(la[None], doy[:, 0]))(lat[0])
    np.testing.assert_allclose(per_site.T, ra, rtol=1e-5, atol=5e-5)
