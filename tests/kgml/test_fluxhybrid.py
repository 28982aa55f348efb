"""The site-level flux hybrid (kgml.fluxsite.fluxhybrid): structure and identities of the modules, recovery of a known Q10
and of the true GPP/Reco partitioning on a constructed half-hourly series, gap-filling contract (observed values
untouched, flags), calibrated uncertainty, the record features, and the ``kgml gapfill --method hybrid`` round trip
on a real FLUXNET file."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from kgml.data.schema import DataValidationError
from kgml.fluxsite.fluxhybrid import (
    Q10_RECO_SPEC,
    TREF_C,
    FluxHybrid,
    FluxNeural,
    HybridConfig,
    flux_inputs,
    hybrid_gapfill,
    record_features,
)

SPD = 48
TRUE_Q10 = 2.0


def constructed_site(n_days=60, seed=0, noise=0.4):
    """Half-hourly NEE = Rb(season) Q10^((TA − 15)/10) − LUE(VPD) SW_IN + noise, with a known Q10 = 2 and
    LUE = 0.02 exp(−0.05 VPD) (flux units per W m-2); TA has diel and synoptic (3-day) variation."""
    rng = np.random.default_rng(seed)
    n = n_days * SPD
    times = np.datetime64("2020-04-01") + np.arange(n) * np.timedelta64(30, "m")
    hour = (np.arange(n) % SPD) / 2.0
    day = np.arange(n) // SPD
    sw = np.maximum(0.0, 850 * np.sin(np.pi * (hour - 6) / 12)) * rng.uniform(0.3, 1.0, n_days)[day]
    knots = np.arange(0, n + 3 * SPD, 3 * SPD)
    synoptic = np.interp(np.arange(n), knots, rng.normal(0, 3, knots.size))
    ta = 14 + 4 * np.sin(2 * np.pi * day / 365) + 5 * np.sin(np.pi * (hour - 9) / 12) + synoptic
    vpd = np.maximum(0.5, 6 + 0.8 * (ta - 14) + rng.normal(0, 1, n))
    gpp = 0.02 * np.exp(-0.05 * vpd) * sw
    reco = (3.0 + np.sin(2 * np.pi * (day - 30) / 365)) * TRUE_Q10 ** ((ta - TREF_C) / 10)
    y = reco - gpp + rng.normal(0, noise, n)
    return times, {"sw_in": sw, "tair": ta, "vpd": vpd}, y, gpp, reco


@pytest.fixture(scope="module")
def fitted():
    times, drivers, y, gpp, reco = constructed_site()
    rng = np.random.default_rng(1)
    gaps = rng.random(y.size) < 0.15
    gaps[30 * SPD : 37 * SPD] = True  # a week-long gap
    obs = np.where(gaps, np.nan, y)
    drivers = dict(drivers)
    vpd = drivers["vpd"].copy()
    vpd[31 * SPD + 5] = np.nan  # a missing driver inside the gap: interpolated and flagged
    drivers["vpd"] = vpd
    res = hybrid_gapfill(obs, drivers, times, config=HybridConfig(members=3, max_steps=2500))
    return dict(res=res, y=y, obs=obs, gaps=gaps, gpp=gpp, reco=reco)


def test_recovers_q10_and_the_true_partitioning(fitted):
    res = fitted["res"]
    assert np.all(np.abs(res.fit.q10 / TRUE_Q10 - 1) < 0.10), res.fit.q10
    for name in ("gpp", "reco"):
        est, true = getattr(res, name), fitted[name]
        assert np.corrcoef(est, true)[0, 1] ** 2 > 0.97, name
        assert abs(est.mean() / true.mean() - 1) < 0.05, name
    assert np.all(res.gpp >= 0) and np.all(res.reco > 0)
    night = constructed_site()[1]["sw_in"] == 0
    assert np.all(res.gpp[night] == 0)  # GPP = LUE · SW_IN


def test_nee_is_reco_minus_gpp(fitted):
    fit = fitted["res"].fit
    np.testing.assert_allclose(fit.nee_members, fit.reco_members - fit.gpp_members, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fit.nee, fit.reco - fit.gpp, rtol=0, atol=1e-5)


def test_observed_values_untouched_and_fills_flagged(fitted):
    res, obs, gaps = fitted["res"], fitted["obs"], fitted["gaps"]
    np.testing.assert_array_equal(res.filled[~gaps], obs[~gaps])
    assert np.isfinite(res.filled).all()
    np.testing.assert_array_equal(res.filled[gaps], res.estimate[gaps])
    assert (res.qc[~gaps] == 0).all()
    assert res.qc[31 * SPD + 5] == 2
    assert set(np.unique(res.qc[gaps])) == {1, 2}
    err = res.filled[gaps] - fitted["y"][gaps]
    assert np.sqrt(np.mean(err**2)) < 0.6  # noise σ = 0.4


def test_uncertainty_is_calibrated_on_gaps(fitted):
    res, gaps = fitted["res"], fitted["gaps"]
    z = np.abs(res.filled[gaps] - fitted["y"][gaps]) / res.sd[gaps]
    assert 0.58 < np.mean(z < 1.0) < 0.78  # nominal 0.683
    assert 0.83 < np.mean(z < 1.645) < 0.96  # nominal 0.90
    assert 0.5 < res.fit.calibration < 2.0
    assert res.fit.validation.sum() > 0.05 * np.isfinite(fitted["obs"]).sum()


def test_modules_structure_bounds_and_gradients():
    key = jax.random.PRNGKey(0)
    model = FluxHybrid(3, 2, hidden=4, depth=1, key=key)
    x, z = jnp.ones(3), jnp.zeros(2)

    @eqx.filter_jit
    def probe(m):
        at_ref = m(x, z, jnp.asarray(0.0), jnp.asarray(TREF_C))
        warmer = m(x, z, jnp.asarray(0.0), jnp.asarray(TREF_C + 10.0))
        grads = eqx.filter_grad(lambda m: m(x, z, jnp.asarray(0.7), jnp.asarray(22.0))[0])(m)
        return at_ref, warmer[2], m.q10(), grads

    (nee, gpp, reco), r25, q10, grads = probe(model)
    assert gpp == 0 and reco > 0 and nee == reco - gpp
    # at TREF the temperature factor is 1; 10 K warmer multiplies Reco by Q10
    assert float(r25 / reco) == pytest.approx(float(q10), rel=1e-5)
    assert float(q10) == pytest.approx(Q10_RECO_SPEC.default, rel=1e-5)
    for raw in (-1e4, 1e4):  # Q10 stays inside its bounds whatever the optimiser does
        q = float(probe(eqx.tree_at(lambda m: m.q10_raw, model, jnp.asarray(raw, jnp.float32)))[2])
        assert Q10_RECO_SPEC.lower <= q <= Q10_RECO_SPEC.upper
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(grads.q10_raw)) > 0
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(grads.lue_net))
    neural = FluxNeural(3, 2, hidden=4, depth=1, key=key)
    out = eqx.filter_jit(lambda m: m(x, z, jnp.asarray(0.5), jnp.asarray(20.0)))(neural)
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2]) and np.isnan(neural.q10())


def test_neural_filler_fills_without_partitioning():
    times, drivers, y, _, _ = constructed_site(n_days=20, seed=3)
    gaps = np.zeros(y.size, bool)
    gaps[5 * SPD : 6 * SPD] = True
    res = hybrid_gapfill(np.where(gaps, np.nan, y), drivers, times, model="neural",
                         config=HybridConfig(members=2, max_steps=600))
    np.testing.assert_array_equal(res.filled[~gaps], y[~gaps])
    assert np.isnan(res.gpp).all() and np.isnan(res.fit.q10).all()
    assert np.sqrt(np.mean((res.filled[gaps] - y[gaps]) ** 2)) < 1.5  # fluxes span about ±10


def test_record_features_by_hand():
    y = np.array([1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0, 8.0])
    f = record_features(y, np.zeros(8), 1, half_days=1)["nee_smooth"]
    # windows of ±1 day over observed values only; day 4 has none within ±1 → interpolated between days 3 and 5
    expected = np.array([1.0, 2.0, 3.0, 3.0, 5.0, 7.0, 7.5, 7.5])
    np.testing.assert_allclose(f, expected)
    sw = np.tile([0.0, 0.0, 500.0, 500.0], 3)  # 4 steps a day: two night, two day
    nee = np.tile([4.0, 6.0, -10.0, -12.0], 3)
    sub = record_features(nee, sw, 4, half_days=1)
    np.testing.assert_allclose(sub["nee_night"], 5.0)
    np.testing.assert_allclose(sub["gpp_proxy"], 16.0)


def test_inputs_and_errors_name_the_variable():
    times, drivers, y, _, _ = constructed_site(n_days=5)
    inp = flux_inputs(times, drivers["sw_in"], drivers["tair"], drivers["vpd"], flux=y)
    assert "tair" in inp.x_names and "sw_in" in inp.x_names and "gpp_proxy" in inp.x_names
    assert "tair" not in inp.z_names and "nee_night" in inp.z_names  # Reco sees TA only through Q10
    assert np.allclose(inp.x.mean(axis=0), 0, atol=1e-5)
    daily = flux_inputs(times[::SPD], drivers["sw_in"][::SPD], drivers["tair"][::SPD])
    assert "sw_in" not in daily.x_names  # daily GPP is linear in SW_IN
    with pytest.raises(DataValidationError, match="all values are missing") as err:
        hybrid_gapfill(y, {"sw_in": drivers["sw_in"], "tair": np.full(y.size, np.nan)}, times)
    assert err.value.variable == "tair"
    with pytest.raises(DataValidationError, match="at least 100") as err:
        hybrid_gapfill(np.where(np.arange(y.size) < 50, y, np.nan), drivers, times)
    with pytest.raises(DataValidationError, match="unknown driver"):
        hybrid_gapfill(y, {**drivers, "precip": y}, times)
    with pytest.raises(ValueError, match="members"):
        HybridConfig(members=0)


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_hybrid_round_trips_a_fluxnet_daily_file(dataset_dir, tmp_path, capsys):
    from kgml.cli import main

    src = dataset_dir("fluxnet2015_subset_dd_us-ne1") / "FLX_US-Ne1_FLUXNET2015_SUBSET_DD_2001-2013_1-4.csv"
    out = tmp_path / src.name
    assert main(["gapfill", str(src), "--out", str(out), "--method", "hybrid"]) == 0
    printed = capsys.readouterr().out
    assert "NEE_VUT_REF: 13 gaps, filled 13" in printed and "Q10 =" in printed
    a, b = src.read_text().splitlines(), out.read_text().splitlines()
    assert len(a) == len(b)
    assert all(y.startswith(x + ",") for x, y in zip(a, b, strict=True))
    raw, table = pd.read_csv(src), pd.read_csv(out)
    col = "NEE_VUT_REF_F_HYB"
    assert list(table.columns[raw.shape[1]:]) == [col, f"{col}_QC", f"{col}_SD", f"{col}_GPP", f"{col}_RECO"]
    gaps = (raw["NEE_VUT_REF_QC"] < 0.5).to_numpy()
    np.testing.assert_array_equal(table[col][~gaps], raw["NEE_VUT_REF"][~gaps])
    assert (table[f"{col}_QC"][gaps] > 0).all() and (table[f"{col}_QC"][~gaps] == 0).all()
    np.testing.assert_allclose(table[col][gaps], table[f"{col}_RECO"][gaps] - table[f"{col}_GPP"][gaps], atol=1e-4)
    assert (table[f"{col}_SD"] > 0).all() and (table[f"{col}_GPP"] >= 0).all()
    # the hybrid's GPP tracks FLUXNET's night-time GPP of the same file (r² 0.9 when written)
    assert np.corrcoef(table[f"{col}_GPP"], raw["GPP_NT_VUT_REF"])[0, 1] ** 2 > 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from kgml.data.towers import read_fluxnet_file

        np.testing.assert_array_equal(read_fluxnet_file(src)["nee"].values, read_fluxnet_file(out)["nee"].values)
