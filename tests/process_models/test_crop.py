"""Maize and soybean: sowing, development, allocation, carbon closure, yield, gradients, vmap = loop.

The crop is driven by a prescribed daily NPP series (a bell over the season) on the deterministic
Midwest-like climate of `conftest.seasonal_met`, so these tests do not depend on photosynthesis.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from process_models import constants as C
from process_models.crop import (
    GDD_TBASE_C,
    GDD_TUPPER_C,
    KILLING_FROST_C,
    MAIZE_SHAPE,
    SOYBEAN_SHAPE,
    Crop,
    CropState,
    Maize,
    Soybean,
    allocation_fractions,
    grain_yield,
)
from process_models.forcing import Met, make_met
from process_models.parameters import collect_specs, default_parameters
from process_models.phenology import gdd_increment

CROPS = {"maize": Maize(), "soybean": Soybean()}

# Season NPP (gC m-2) of a well-watered Midwest crop, for the plausibility test. Maize: 12–14 t ha-1
# irrigated maize at Mead, NE has GPP ≈ 1700–1900 gC m-2 and NPP ≈ 0.5 GPP (Verma et al. 2005 Agric. For.
# Meteorol. 131:77; Suyker & Verma 2012 Agric. For. Meteorol. 165:12) → ≈ 900. Soybean: GPP ≈ 900–1000
# → NPP ≈ 450. With the default parameters the model maps 8–14 t ha-1 of maize to a season NPP of
# ≈ 640–1120 gC m-2 and 2.5–4.5 t ha-1 of soybean to ≈ 260–470 gC m-2 (yield is nearly proportional
# to season NPP: 12.5 t ha-1 per 1000 gC m-2 for maize, 9.5 t ha-1 per 1000 gC m-2 for soybean).
TYPICAL_SEASON_NPP = {"maize": 900.0, "soybean": 400.0}
PLAUSIBLE_YIELD = {
    "maize": (8.0, 14.0),
    "soybean": (2.5, 4.5),
}  # t ha-1 at market moisture (NASS 2010s)
HI_REGIMES = {"maize": (0.55, 0.62), "soybean": (0.45, 0.58)}  # hi_max values for the gradient test
BELL = {"maize": (200.0, 25.0), "soybean": (210.0, 22.0)}  # centre doy, width (d) of the NPP bell


def seasonal_met(n_years: int = 1, lat: float = 41.0, warming: float = 0.0) -> Met:
    """Central-Iowa-like daily weather, no randomness: tmean −5…24 °C peaking mid-July (Des Moines
    normals), diurnal range 11 °C. Same cycle as `tests/process_models/conftest.py`; only temperature,
    ``doy`` and ``lat`` matter to the crop."""
    doy = np.tile(np.arange(1, 366), n_years).astype(np.float32)
    tmean = 9.5 - 14.5 * np.cos(2 * np.pi * (doy - 15) / 365.0) + warming
    return make_met(tmin=tmean - 5.5, tmax=tmean + 5.5, sw_in=200.0, precip=2.0, doy=doy, lat=lat)


def bell_npp(doy, name: str, total: float) -> np.ndarray:
    """A Gaussian daily NPP series (gC m-2 d-1) summing to ``total`` over the days given."""
    centre, width = BELL[name]
    w = np.exp(-0.5 * ((np.asarray(doy, float) - centre) / width) ** 2)
    return (total * w / w.sum()).astype(np.float32)


def _run(crop: Crop, theta, met: Met, npp):
    def body(state, inputs):
        met_t, npp_t = inputs
        state = crop.step(theta, state, met_t, npp_t)
        return state, state

    _, trajectory = jax.lax.scan(body, crop.init_state(), (met, npp))
    return trajectory


run = eqx.filter_jit(_run)


def _theta(name: str, **overrides):
    theta = default_parameters(CROPS[name].parameter_specs)
    theta.update({f"{name}_{k}": jnp.float32(v) for k, v in overrides.items()})
    return theta


def _harvest_index(traj) -> int:
    h = np.flatnonzero(np.asarray(traj.harvested) > 0.5)
    assert h.size == 1, f"expected one harvest, got {h.size}"
    return int(h[0])


# --- specs and kernels -------------------------------------------------------------------------------


def test_specs_are_prefixed_unique_and_combine_for_a_rotation():
    for name, crop in CROPS.items():
        assert all(s.name.startswith(f"{name}_") for s in crop.parameter_specs)
        assert len({s.name for s in crop.parameter_specs}) == len(crop.parameter_specs)
        assert all(s.reference for s in crop.parameter_specs)
    both = collect_specs(Maize.parameter_specs, Soybean.parameter_specs)
    assert len(both) == len(Maize.parameter_specs) + len(Soybean.parameter_specs)
    assert Maize.pathway == "C4" and Soybean.pathway == "C3"
    with pytest.raises(TypeError):
        Crop()  # abstract


@pytest.mark.parametrize("shape", [MAIZE_SHAPE, SOYBEAN_SHAPE])
def test_allocation_fractions_are_a_partition_over_random_parameters(shape):
    rng = np.random.default_rng(0)
    n = 500
    gdd = rng.uniform(0.0, 2000.0, n)
    gdd_grain = rng.uniform(0.35 * 800, 0.7 * 2000, n)
    root0 = rng.uniform(0.1, 0.8, n)
    leaf0 = rng.uniform(0.3, 0.85, n)
    fr = np.asarray(allocation_fractions(gdd, gdd_grain, root0, leaf0, shape))
    assert np.all(fr >= 0) and np.all(fr <= 1)
    np.testing.assert_allclose(fr.sum(axis=0), 1.0, atol=1e-6)
    # At sowing the root share is exactly the parameter and nothing goes to grain; long after the
    # switch everything does.
    leaf, stem, root, grain = np.asarray(allocation_fractions(0.0, gdd_grain, root0, leaf0, shape))
    np.testing.assert_allclose(root, root0 * (1 - grain), rtol=1e-5)
    np.testing.assert_allclose(leaf, (1 - root0) * leaf0 * (1 - grain), rtol=1e-2)
    assert np.all(grain < 0.07)  # σ(−gdd_grain / scale), at most σ(−280/100)
    late = np.asarray(
        allocation_fractions(gdd_grain + 12 * shape.grain_scale_gdd, gdd_grain, root0, leaf0, shape)
    )
    assert np.all(late[3] > 0.999)


def test_grain_yield_golden_values():
    # Hand computation: 1 t ha-1 of maize at 15.5 % moisture = 100 g m-2 fresh = 84.5 g DM = 38.025 gC.
    assert float(grain_yield(38.025, 0.155)) == pytest.approx(1.0, rel=1e-6)
    # 3.5 t ha-1 of soybean at 13 %: 350 × 0.87 × 0.45 = 137.025 gC m-2.
    assert float(grain_yield(137.025, 0.13)) == pytest.approx(3.5, rel=1e-6)
    assert Maize.standard_moisture == 0.155 and Soybean.standard_moisture == 0.13


# --- one season ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CROPS)
def test_sowing_happens_on_the_sowing_day_with_the_seed_carbon(name):
    crop, met = CROPS[name], seasonal_met(1)
    npp = bell_npp(met.doy, name, TYPICAL_SEASON_NPP[name])
    for sowing_doy, expected_doy in ((121.0, 121), (130.4, 131)):
        theta = _theta(name, sowing_doy=sowing_doy)
        traj = run(crop, theta, met, npp)
        active = np.asarray(traj.active)
        first = int(np.argmax(active > 0.5))
        assert int(met.doy[first]) == expected_doy
        assert np.all(active[:first] == 0)
        seed = float(theta[f"{name}_seed_c"])
        assert float(traj.sown_c[first]) == pytest.approx(seed)
        assert float(jnp.sum(traj.sown_c)) == pytest.approx(seed)  # once a year
        assert 0 < float(traj.lai[first]) < 0.2  # a seedling canopy


@pytest.mark.parametrize("name", CROPS)
def test_maturity_arrives_earlier_when_warmer(name):
    crop, theta = CROPS[name], _theta(name)
    days = []
    for warming in (0.0, 1.0, 2.0):
        met = seasonal_met(1, warming=warming)
        traj = run(crop, theta, met, bell_npp(met.doy, name, TYPICAL_SEASON_NPP[name]))
        i = _harvest_index(traj)
        days.append(i)
        # Harvest at maturity: the thermal time of the day before was still short of gdd_maturity.
        gdd_before = float(traj.gdd[i - 1])
        dgdd = float(gdd_increment(met.tmin[i], met.tmax[i], GDD_TBASE_C, GDD_TUPPER_C))
        assert gdd_before < float(theta[f"{name}_gdd_maturity"]) <= gdd_before + dgdd + 1e-3
    assert days[0] > days[1] > days[2]
    # Realistic calendar for the default varieties: harvest in September (doy 244–273).
    assert 244 <= days[0] + 1 <= 273


def test_a_cool_year_ends_with_the_first_killing_frost():
    crop, theta = Maize(), _theta("maize")
    met = seasonal_met(1, warming=-1.5)  # ≈ 1350 °C d after sowing: the hybrid cannot mature
    traj = run(crop, theta, met, bell_npp(met.doy, "maize", TYPICAL_SEASON_NPP["maize"]))
    i = _harvest_index(traj)
    frost_days = np.flatnonzero((np.asarray(met.tmin) <= KILLING_FROST_C) & (np.arange(365) > 150))
    assert i == frost_days[0]
    assert float(traj.gdd[i - 1]) < float(theta["maize_gdd_maturity"])
    assert float(traj.yield_[i]) > 0


@pytest.mark.parametrize("name", CROPS)
def test_more_npp_gives_more_yield_and_typical_npp_a_plausible_yield(name):
    crop, theta, met = CROPS[name], _theta(name), seasonal_met(1)
    totals = np.array([0.3, 0.6, 0.8, 1.0, 1.2, 1.5]) * TYPICAL_SEASON_NPP[name]
    yields = [float(run(crop, theta, met, bell_npp(met.doy, name, t)).yield_[-1]) for t in totals]
    assert np.all(np.diff(yields) > 0), yields
    lo, hi = PLAUSIBLE_YIELD[name]
    typical = yields[3]
    assert lo < typical < hi, (
        f"{name}: {typical:.2f} t ha-1 from {TYPICAL_SEASON_NPP[name]} gC m-2 NPP"
    )


@pytest.mark.parametrize("name", CROPS)
def test_harvest_index_ceiling_holds_and_state_returns_to_fallow(name):
    crop, theta, met = CROPS[name], _theta(name), seasonal_met(1)
    traj = run(crop, theta, met, bell_npp(met.doy, name, TYPICAL_SEASON_NPP[name]))
    i = _harvest_index(traj)
    before = jax.tree_util.tree_map(lambda x: float(x[i - 1]), traj)
    aboveground = before.leaf + before.stem + before.grain
    assert before.grain <= float(theta[f"{name}_hi_max"]) * aboveground * (1 + 1e-6)
    assert before.grain / aboveground > 0.3  # grain filling really happened
    moisture = crop.standard_moisture
    expected = before.grain / C.CARBON_FRACTION_DRY_MATTER / (1 - moisture) * C.T_HA_PER_G_M2
    # Harvest-day growth is added before harvest, so the yield is at least the day-before grain.
    assert float(traj.yield_[i]) == pytest.approx(
        float(traj.harvest_c[i]) / 0.45 / (1 - moisture) * 0.01, rel=1e-6
    )
    assert expected <= float(traj.yield_[i]) <= expected * 1.02
    after = jax.tree_util.tree_map(lambda x: np.asarray(x[i:]), traj)
    for pool in (
        after.leaf,
        after.stem,
        after.root,
        after.grain,
        after.lai,
        after.active,
        after.gdd,
    ):
        assert np.all(pool == 0)
    assert (
        np.all(after.yield_ == after.yield_[0]) and after.yield_[0] > 0
    )  # held until the next harvest
    np.testing.assert_allclose(
        np.asarray(traj.lai),
        np.asarray(traj.leaf) / C.CARBON_FRACTION_DRY_MATTER * float(theta[f"{name}_sla"]),
        rtol=1e-5,
    )


def _closure_residual(traj):
    """Daily Δlive − (sown + npp_applied − litter − harvest), in float64 from the float32 fields."""
    t = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), traj)
    live = t.leaf + t.stem + t.root + t.grain
    d_live = np.diff(np.concatenate([[0.0], live]))
    return d_live, t


@pytest.mark.parametrize("name", CROPS)
def test_carbon_balance_closes_and_pools_stay_non_negative_under_negative_npp(name):
    crop, theta, met = CROPS[name], _theta(name), seasonal_met(1)
    npp = bell_npp(met.doy, name, TYPICAL_SEASON_NPP[name]).astype(np.float64)
    npp[60:100] = -0.5  # respiration outside the season: nothing to draw from
    npp[170:200] = -2.0  # a month of respiration above GPP mid-season
    npp[205] = -1.0e4  # a day that would empty every pool
    npp[215:225] = 1.5
    npp = npp.astype(np.float32)
    traj = run(crop, theta, met, npp)
    for pool in (traj.leaf, traj.stem, traj.root, traj.grain, traj.lai):
        assert np.all(np.asarray(pool) >= 0)
    d_live, t = _closure_residual(traj)
    applied = np.asarray(npp, np.float64) - t.npp_unassigned
    residual = d_live - (t.sown_c + applied - t.litter_c - t.harvest_c)
    scale = max(1.0, float(np.max(t.leaf + t.stem + t.root + t.grain)))
    assert (
        np.max(np.abs(residual)) < 4e-7 * scale * 8
    )  # a few float32 ulps of the largest pool, per day
    # Over the whole year: Σ npp = Δ live pools + harvested + litter − seed + unassigned, to float32 rounding.
    total = np.sum(np.asarray(npp, np.float64))
    budget = (
        d_live.sum()
        + t.harvest_c.sum()
        + t.litter_c.sum()
        - t.sown_c.sum()
        + t.npp_unassigned.sum()
    )
    assert total == pytest.approx(budget, abs=1e-5 * float(np.sum(np.abs(npp))))
    # The fallow-season respiration and the excess of the emptying day are reported, not lost.
    assert float(t.npp_unassigned[60:100].sum()) == pytest.approx(-0.5 * 40, rel=1e-6)
    assert float(t.npp_unassigned[205]) < -1.0e4 + 2000
    assert (
        float(traj.leaf[205]) == 0.0 and float(traj.active[205]) == 1.0
    )  # empty, but still in season


@pytest.mark.parametrize("name", CROPS)
def test_multi_year_run_resows_and_harvests_every_year(name):
    crop, theta = CROPS[name], _theta(name)
    met = seasonal_met(3)
    npp = np.tile(bell_npp(np.arange(1, 366), name, TYPICAL_SEASON_NPP[name]), 3)
    traj = run(crop, theta, met, npp)
    sown = np.flatnonzero(np.asarray(traj.sown_c) > 0)
    harvested = np.flatnonzero(np.asarray(traj.harvested) > 0.5)
    assert sown.size == 3 and harvested.size == 3
    assert np.all(np.asarray(met.doy)[sown] == round(float(theta[f"{name}_sowing_doy"])))
    assert np.all(sown < harvested)
    yields = np.asarray(traj.yield_)[harvested]
    np.testing.assert_allclose(yields, yields[0], rtol=1e-5)  # same weather, same NPP, same yield


@pytest.mark.parametrize("name", CROPS)
def test_vmap_over_sites_equals_a_python_loop(name):
    crop = CROPS[name]
    warmings = (-1.0, 0.0, 1.5)
    mets = [
        seasonal_met(1, lat=lat, warming=w)
        for lat, w in zip((44.0, 41.0, 38.0), warmings, strict=True)
    ]
    met = Met(*[None if f[0] is None else jnp.stack(f) for f in zip(*mets, strict=True)])
    npp = jnp.stack(
        [
            bell_npp(m.doy, name, TYPICAL_SEASON_NPP[name] * s)
            for m, s in zip(mets, (0.8, 1.0, 1.2), strict=True)
        ]
    )
    base = _theta(name)
    theta = dict(base)
    theta[f"{name}_gdd_maturity"] = base[f"{name}_gdd_maturity"] * jnp.array(
        [0.9, 1.0, 1.1], jnp.float32
    )
    theta[f"{name}_sla"] = base[f"{name}_sla"] * jnp.array([1.2, 1.0, 0.8], jnp.float32)
    axes = {k: (0 if jnp.ndim(v) == 1 else None) for k, v in theta.items()}
    batched = eqx.filter_jit(jax.vmap(lambda th, m, n: _run(crop, th, m, n), in_axes=(axes, 0, 0)))(
        theta, met, npp
    )
    for i, m in enumerate(mets):
        theta_i = {k: (v[i] if jnp.ndim(v) == 1 else v) for k, v in theta.items()}
        single = run(crop, theta_i, m, npp[i])
        for field in CropState._fields:
            np.testing.assert_allclose(
                np.asarray(getattr(batched, field)[i]),
                np.asarray(getattr(single, field)),
                rtol=1e-5,
                atol=1e-5,
                err_msg=field,
            )


# --- gradients ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CROPS)
def test_yield_gradients_are_finite_and_equal_finite_differences_in_float64(name):
    crop = CROPS[name]
    with jax.enable_x64(True):
        met = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), seasonal_met(1))
        npp = jnp.asarray(
            bell_npp(np.asarray(met.doy), name, TYPICAL_SEASON_NPP[name]), jnp.float64
        )
        theta = {k: jnp.asarray(v, jnp.float64) for k, v in _theta(name).items()}
        # Off-integer sowing day, so that ±h does not move the (discrete) sowing event.
        theta[f"{name}_sowing_doy"] = jnp.float64(float(theta[f"{name}_sowing_doy"]) - 0.5)
        season_yield = jax.jit(lambda th: _run(crop, th, met, npp).yield_[-1])
        value_and_grad = jax.jit(jax.value_and_grad(lambda th: _run(crop, th, met, npp).yield_[-1]))
        # At the default ceiling the harvest-index cap binds (grain = hi_max × aboveground; `minimum` has a
        # kink there but is smooth on either side); for maize 0.62 does not bind, soybean binds at both.
        for hi in HI_REGIMES[name]:
            theta[f"{name}_hi_max"] = jnp.float64(hi)
            value, grads = value_and_grad(theta)
            assert float(value) > 0
            for key, g in grads.items():
                assert np.isfinite(float(g)), key
                h = 1e-6 * max(1.0, abs(float(theta[key])))
                up = season_yield({**theta, key: theta[key] + h})
                dn = season_yield({**theta, key: theta[key] - h})
                fd = float(up - dn) / (2 * h)
                assert float(g) == pytest.approx(fd, rel=1e-5, abs=1e-8), key
            assert float(grads[f"{name}_sowing_doy"]) == 0.0  # a discrete event
            assert (
                float(grads[f"{name}_dvs_grain"]) < 0
            )  # a later switch fills grain for a shorter time


@pytest.mark.parametrize("name", CROPS)
def test_gradients_are_finite_at_the_parameter_bounds(name):
    crop, met = CROPS[name], seasonal_met(1)
    npp = jnp.asarray(bell_npp(met.doy, name, TYPICAL_SEASON_NPP[name]))

    @eqx.filter_jit
    def grads(th):
        return jax.grad(
            lambda t: _run(crop, t, met, npp).yield_[-1] + jnp.sum(_run(crop, t, met, npp).lai)
        )(th)

    for side in ("lower", "upper"):
        theta = {s.name: jnp.float32(getattr(s, side)) for s in crop.parameter_specs}
        g = grads(theta)
        bad = [k for k, v in g.items() if not np.isfinite(float(v))]
        assert not bad, f"non-finite gradients at the {side} bounds: {bad}"
