"""The coupled model: balance identities, crop responses, vmap = loop, gradients through a season."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models.ecosystem import NaturalEcosystem, maize, soybean
from process_models.forcing import Met
from process_models.parameters import ParameterBoundsError
from process_models.simulate import simulate, simulate_sites

from .conftest import seasonal_met

MODELS = {"grassland": NaturalEcosystem, "maize": maize, "soybean": soybean}


def _run(model, met, **overrides):
    theta = model.default_parameters()
    theta.update({k: jnp.float32(v) for k, v in overrides.items()})
    return simulate(model, theta, met)


@pytest.mark.parametrize("name", MODELS)
def test_carbon_identities_hold_exactly(name):
    model = MODELS[name]()
    out = _run(model, seasonal_met(2)).outputs
    # Exact by construction; XLA's fused float32 arithmetic may round the last bit differently.
    eps = np.finfo(np.float32).eps
    for lhs, a, b, sign in ((out.nee, out.reco, out.gpp, -1), (out.reco, out.ra, out.rh, 1),
                            (out.npp, out.gpp, out.ra, -1)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        err = np.abs(np.asarray(lhs, np.float64) - (a + sign * b))
        assert np.all(err <= 4 * eps * (np.abs(a) + np.abs(b)) + 1e-30)
    assert np.all(np.asarray(out.gpp) >= 0) and np.all(np.asarray(out.rh) >= 0)
    assert np.all(np.isfinite(np.asarray(out.nee)))
    # Rsoil lies between Rh and Reco.
    assert np.all(np.asarray(out.rsoil) >= np.asarray(out.rh) - 1e-6)
    assert np.all(np.asarray(out.rsoil) <= np.asarray(out.reco) + 1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_water_balance_closes(name):
    model = MODELS[name]()
    met = seasonal_met(2)
    theta = model.default_parameters()
    w0 = float(model.init_state(theta).w)
    out = simulate(model, theta, met).outputs
    storage_change = float(out.w[-1]) - w0
    budget = float(jnp.sum(met.precip) - jnp.sum(out.et) - jnp.sum(out.drainage))
    assert budget == pytest.approx(storage_change, abs=1e-2)  # mm over two years, float32 sums
    assert np.all(np.asarray(out.et) >= 0) and np.all(np.asarray(out.drainage) >= 0)


def test_natural_vegetation_has_a_plausible_annual_cycle():
    out = _run(NaturalEcosystem(), seasonal_met(1)).outputs
    gpp = np.asarray(out.gpp)
    assert gpp[170:220].mean() > 5 * gpp[:40].mean() + 0.1  # summer ≫ winter
    annual_gpp = gpp.sum()
    assert 300 < annual_gpp < 2500  # gC m-2 yr-1, temperate grassland/forest range (Beer et al. 2010)


@pytest.mark.parametrize("factory", [maize, soybean])
def test_crop_yield_goes_the_right_way(factory):
    model = factory()
    base = float(_run(model, seasonal_met(1)).outputs.crop_yield[-1])
    brighter = float(_run(model, seasonal_met(1, sw_scale=0.8)).outputs.crop_yield[-1])
    drought = float(_run(model, seasonal_met(1, rain_mm=0.5)).outputs.crop_yield[-1])
    assert base > 0
    assert brighter > base
    assert drought < base


def test_maize_yield_is_in_a_midwest_range():
    y = float(_run(maize(), seasonal_met(1)).outputs.crop_yield[-1])
    assert 5.0 < y < 16.0  # t ha-1 at 15.5 % moisture; US Midwest means 9–12 (NASS 2010s)


def test_out_of_bounds_parameter_names_itself():
    model = NaturalEcosystem()
    theta = model.default_parameters()
    theta["k_ext"] = jnp.float32(5.0)
    with pytest.raises(ParameterBoundsError, match="k_ext"):
        simulate(model, theta, seasonal_met(1))


def test_vmap_over_sites_equals_a_loop():
    model = maize()
    mets = [seasonal_met(1, lat=lat, warming=dt) for lat, dt in ((38.0, 1.5), (41.0, 0.0), (44.0, -1.0))]
    met = Met(*[None if f[0] is None else jnp.stack(f) for f in zip(*mets, strict=True)])
    theta = model.default_parameters()
    theta["k_ext"] = jnp.array([0.45, 0.5, 0.6])
    batched = simulate_sites(model, theta, met).outputs
    for i, m in enumerate(mets):
        single = simulate(model, {**theta, "k_ext": theta["k_ext"][i]}, m).outputs
        np.testing.assert_allclose(np.asarray(batched.nee[i]), np.asarray(single.nee), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(batched.crop_yield[i]), np.asarray(single.crop_yield), rtol=1e-5, atol=1e-6
        )
    met_tm = Met(*[None if f is None else f.T for f in met])
    time_major = simulate_sites(model, theta, met_tm, time_major=True).outputs
    np.testing.assert_allclose(np.asarray(time_major.nee).T, np.asarray(batched.nee), rtol=1e-6, atol=1e-6)


def test_constant_daily_parameters_equal_static_ones():
    model = NaturalEcosystem()
    met = seasonal_met(1)
    theta = model.default_parameters()
    static = simulate(model, theta, met).outputs.nee
    daily = simulate(model, theta, met, theta_daily={"k_ext": jnp.full(365, theta["k_ext"])}).outputs.nee
    np.testing.assert_allclose(np.asarray(static), np.asarray(daily), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_of_a_masked_loss_are_finite_for_every_parameter(name):
    model = MODELS[name]()
    met = seasonal_met(1)
    theta = model.default_parameters()
    obs = simulate(model, theta, met).outputs.nee * 1.1 + 0.2
    obs = obs.at[::3].set(jnp.nan)  # gaps, as in a tower record
    mask = jnp.isfinite(obs)

    def loss(th):
        pred = simulate(model, th, met).outputs.nee
        resid = jnp.where(mask, pred - jnp.where(mask, obs, 0.0), 0.0)
        return jnp.sum(resid**2) / jnp.sum(mask)

    grads = jax.grad(loss)(theta)
    bad = [k for k, g in grads.items() if not np.isfinite(float(g))]
    assert not bad, f"non-finite gradients for {bad}"
    assert sum(abs(float(g)) > 0 for g in grads.values()) >= len(grads) // 2


def test_gradient_matches_finite_differences_in_float64():
    model = NaturalEcosystem()
    with jax.enable_x64(True):
        met = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), seasonal_met(1))
        theta = {k: jnp.asarray(v, jnp.float64) for k, v in model.default_parameters().items()}

        def annual_nee(th):
            return jnp.sum(simulate(model, th, met).outputs.nee)

        g = jax.grad(annual_nee)(theta)
        for name in ("k_ext", "rref_rh", "e0_rh", "lue_max"):
            if name not in theta:
                continue
            h = 1e-5 * max(1.0, abs(float(theta[name])))
            up = annual_nee({**theta, name: theta[name] + h})
            dn = annual_nee({**theta, name: theta[name] - h})
            fd = float(up - dn) / (2 * h)
            assert float(g[name]) == pytest.approx(fd, rel=1e-4, abs=1e-6), name


# --- SoilChamber: chamber soil respiration from measured soil temperature and water -------------------


def test_soil_chamber_equals_its_respiration_component_on_measured_drivers():
    from process_models.ecosystem import SoilChamber
    from process_models.forcing import make_met
    from process_models.soil_respiration import DAMM

    n = 60
    t = np.linspace(-2.0, 28.0, n).astype(np.float32)
    swc = np.linspace(0.08, 0.42, n).astype(np.float32)
    met = make_met(tmin=t, tmax=t, sw_in=np.zeros(n), precip=np.zeros(n), doy=np.arange(1, n + 1), lat=40.0,
                   tsoil=t, swc=swc)
    for component in (None, DAMM()):
        model = SoilChamber() if component is None else SoilChamber(soil_respiration=component)
        theta = model.default_parameters()
        out = simulate(model, theta, met).outputs
        expected = model.soil_respiration(theta, jnp.asarray(t), jnp.asarray(swc))
        np.testing.assert_allclose(out.rsoil, expected, rtol=1e-6)
        np.testing.assert_array_equal(out.nee, out.reco)
        np.testing.assert_array_equal(out.gpp, 0.0)
        assert np.isnan(out.et).all()  # not modelled: NaN, never a silent zero
    # warmer soil at the same water → more efflux (Lloyd–Taylor default)
    model = SoilChamber()
    rs = simulate(model, model.default_parameters(), met._replace(swc=jnp.full(n, 0.25))).outputs.rsoil
    assert np.all(np.diff(np.asarray(rs)) > 0)


def test_soil_chamber_without_measured_swc_says_so():
    from process_models.ecosystem import SoilChamber
    from process_models.forcing import make_met

    met = make_met(tmin=np.zeros(5), tmax=np.zeros(5), sw_in=np.zeros(5), precip=np.zeros(5), doy=np.arange(1, 6),
                   lat=40.0)
    model = SoilChamber()
    with pytest.raises(ValueError, match="met.swc"):
        simulate(model, model.default_parameters(), met)


# --- NaturalEcosystem(soil_water=...): measured soil water in the stress and moisture responses ------------


def _unobserved_equals_bucket(mode: str, field: str):
    """(met, plain model, observed model, θ, bucket outputs): with every observation NaN the ``mode`` model's
    outputs equal the bucket model's exactly (asserted)."""
    met = seasonal_met(1)
    n = met.tair.shape[0]
    plain, observed = NaturalEcosystem(), NaturalEcosystem(soil_water=mode)
    theta = plain.default_parameters()
    base = simulate(plain, theta, met._replace(**{field: jnp.full(n, jnp.nan)})).outputs
    same = simulate(observed, theta, met._replace(**{field: jnp.full(n, jnp.nan)})).outputs
    for name in ("gpp", "reco", "nee", "water_stress", "swc", "et", "w"):
        np.testing.assert_array_equal(getattr(same, name), getattr(base, name), err_msg=name)
    return met, plain, observed, theta, base


def test_observed_water_all_missing_equals_the_bucket_and_measured_follows_fao56():
    """With every swc NaN the observed-water model equals the bucket model exactly; where measured, w_rel =
    (θ − θ_wp)/(θ_fc − θ_wp) of the same soil parameters, K_s = FAO-56 eq. 84 of it, Rh reads θ, and the water
    balance (w, ET) stays the bucket's."""
    from process_models.moisture import fao56_water_stress, soil_water_limits

    met, plain, observed, theta, base = _unobserved_equals_bucket("observed", "swc")
    n = met.tair.shape[0]

    theta_fc, theta_wp = (float(v) for v in soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"]))
    swc = np.full(n, np.nan, np.float32)
    swc[150:240] = theta_wp + 0.2 * (theta_fc - theta_wp)  # a measured summer drought
    out = simulate(observed, theta, met._replace(swc=jnp.asarray(swc))).outputs
    expected = fao56_water_stress(0.2, theta["depletion_frac"])
    np.testing.assert_allclose(out.water_stress[150:240], expected, rtol=1e-5)
    np.testing.assert_allclose(out.swc[150:240], swc[150:240], rtol=1e-6)
    np.testing.assert_array_equal(out.water_stress[:150], base.water_stress[:150])
    np.testing.assert_array_equal(out.et, base.et)  # the store is not nudged
    np.testing.assert_array_equal(out.w, base.w)
    assert float(out.gpp[150:240].sum()) < 0.6 * float(base.gpp[150:240].sum())  # the drought is felt
    assert not np.allclose(out.rh[150:240], base.rh[150:240])  # and reaches Rh through θ


def test_observed_water_gradients_are_finite_with_missing_observations():
    met = seasonal_met(1)
    n = met.tair.shape[0]
    swc = np.full(n, np.nan, np.float32)
    swc[100:200] = 0.18
    met = met._replace(swc=jnp.asarray(swc))
    model = NaturalEcosystem(soil_water="observed")
    theta = model.default_parameters()
    grads = jax.grad(lambda th: jnp.sum(simulate(model, th, met).outputs.nee))(theta)
    bad = [k for k, g in grads.items() if not np.isfinite(np.asarray(g)).all()]
    assert not bad, bad
    assert abs(float(grads["wp_frac"])) > 0  # the observation's stress depends on the soil's limits


def test_observed_water_without_swc_says_so():
    model = NaturalEcosystem(soil_water="observed")
    with pytest.raises(ValueError, match="met.swc"):
        simulate(model, model.default_parameters(), seasonal_met(1))


def test_observed_rew_sets_relative_water_and_stress_and_keeps_the_water_balance():
    """soil_water="observed_rew": where REW is given, w_rel = REW, K_s = FAO-56 eq. 84 of it, swc = θ_wp + REW
    (θ_fc − θ_wp) of the model's soil; NaN REW → the bucket's; a wet REW never stresses; unknown modes refuse."""
    from process_models.moisture import fao56_water_stress, soil_water_limits

    met, plain, model, theta, base = _unobserved_equals_bucket("observed_rew", "rew")
    n = met.tair.shape[0]
    rew = np.full(n, np.nan, np.float32)
    rew[150:240] = 0.1
    rew[0:60] = 1.0
    out = simulate(model, theta, met._replace(rew=jnp.asarray(rew))).outputs
    np.testing.assert_allclose(out.water_stress[150:240], fao56_water_stress(0.1, theta["depletion_frac"]), rtol=1e-6)
    theta_fc, theta_wp = soil_water_limits(theta["porosity"], theta["fc_frac"], theta["wp_frac"])
    np.testing.assert_allclose(out.swc[150:240], theta_wp + 0.1 * (theta_fc - theta_wp), rtol=1e-5)
    np.testing.assert_array_equal(out.water_stress[:60], 1.0)
    np.testing.assert_array_equal(out.et, base.et)
    np.testing.assert_array_equal(out.water_stress[60:150], base.water_stress[60:150])
    grads = jax.grad(lambda th: jnp.sum(simulate(model, th, met._replace(rew=jnp.asarray(rew))).outputs.nee))(theta)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
    with pytest.raises(ValueError, match="met.rew"):
        simulate(model, theta, met)
    with pytest.raises(ValueError, match="soil_water"):
        NaturalEcosystem(soil_water="measured")


def test_water_limited_phenology_follows_the_bucket():
    """WaterLimitedGSI: with the water ramp never binding it equals Jolly's GSI; in a rainless year the bucket
    empties and the leaf area falls towards lai_min, and so does GPP; gradients stay finite."""
    from process_models.phenology import WaterLimitedGSI

    met = seasonal_met(1)
    plain, limited = NaturalEcosystem(), NaturalEcosystem(phenology=WaterLimitedGSI())
    theta = limited.default_parameters()
    theta0 = plain.default_parameters()
    never = {**theta, "gsi_water_low": jnp.float32(0.0), "gsi_water_span": jnp.float32(0.05)}
    wet = met._replace(precip=jnp.full_like(met.precip, 8.0))  # the bucket stays near full
    np.testing.assert_allclose(simulate(limited, never, wet).outputs.lai, simulate(plain, theta0, wet).outputs.lai,
                               rtol=1e-6)
    dry = met._replace(precip=jnp.zeros_like(met.precip))
    base, out = simulate(plain, theta0, dry).outputs, simulate(limited, theta, dry).outputs
    lai_min = float(theta["lai_min_fraction"] * theta["lai_max"])
    assert float(out.lai[-60:].mean()) < float(base.lai[-60:].mean())
    assert float(out.lai.min()) >= lai_min - 1e-5
    assert float(out.gpp.sum()) < float(base.gpp.sum())
    grads = jax.grad(lambda th: jnp.sum(simulate(limited, th, dry).outputs.nee))(theta)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
    assert abs(float(grads["gsi_water_span"])) > 0
    with pytest.raises(ValueError, match="wrel"):
        WaterLimitedGSI()(theta, WaterLimitedGSI().init_state(), met)


def test_evergreen_phenology_keeps_the_evergreen_share_of_the_leaf_area():
    """EvergreenGSI: e = 0 is Jolly's GSI exactly; e = 1 a constant LAI = lai_max all year (the winter GPP still
    falls through the LUE's minimum-temperature scalar); e = 0.5 halfway; per-site e through simulate_sites; a
    missing met.evergreen is an error, not a default; gradients stay finite."""
    from process_models.phenology import EvergreenGSI

    met = seasonal_met(1)
    plain, ever = NaturalEcosystem(), NaturalEcosystem(phenology=EvergreenGSI())
    theta = ever.default_parameters()
    base = simulate(plain, theta, met).outputs
    full = lambda e: met._replace(evergreen=jnp.full_like(met.tair, e))  # noqa: E731
    np.testing.assert_array_equal(simulate(ever, theta, full(0.0)).outputs.lai, base.lai)
    out1 = simulate(ever, theta, full(1.0)).outputs
    np.testing.assert_allclose(out1.lai, theta["lai_max"], rtol=1e-6)
    assert float(base.lai.min()) < 0.5 * float(theta["lai_max"])  # the GSI sheds leaves in winter here
    winter, summer = slice(0, 30), slice(180, 210)
    assert float(out1.gpp[winter].mean()) < 0.5 * float(out1.gpp[summer].mean())
    half = simulate(ever, theta, full(0.5)).outputs
    np.testing.assert_allclose(half.lai, 0.5 * (out1.lai + base.lai), rtol=1e-5)
    # per site: a (site, 1) evergreen share broadcast over the days
    two = Met(*(None if v is None else jnp.stack([v, v]) for v in met))._replace(
        evergreen=jnp.asarray([[0.0], [1.0]], jnp.float32))
    both = simulate_sites(ever, {k: jnp.stack([v, v]) for k, v in theta.items()}, two).outputs
    np.testing.assert_allclose(both.lai[0], base.lai, rtol=1e-6)
    np.testing.assert_allclose(both.lai[1], theta["lai_max"], rtol=1e-6)
    grads = jax.grad(lambda th: jnp.sum(simulate(ever, th, full(0.5)).outputs.nee))(theta)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
    with pytest.raises(ValueError, match="met.evergreen"):
        simulate(ever, theta, met)
