"""Split-conformal intervals grouped by site: on a synthetic world with known noise the 90 % interval covers
90 % ± 3 % of held-out sites' steps; calibration sites must be distinct; CRPS matches its closed form."""

from __future__ import annotations

import numpy as np
import pytest

from kgml.uncertainty import (
    aggregate_scores,
    conformal_quantiles,
    coverage_scores,
    crps_gaussian,
    nonconformity,
    site_tail_quantile,
)


def _world(n_sites: int, n_steps: int, seed: int, hetero: bool):
    """Sites with a seasonal truth, a model with a site bias, and Gaussian noise of a known σ per site."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    sites = {}
    for i in range(n_sites):
        sd = float(np.exp(rng.normal(0, 0.5))) if hetero else 1.0
        truth = 3 + 2 * np.sin(2 * np.pi * t / 365)
        y = truth + rng.normal(0, sd, n_steps)
        yhat = truth + rng.normal(0, 0.3)  # a site-level bias the model does not know
        y[rng.random(n_steps) < 0.2] = np.nan  # gaps
        sites[f"s{i:02d}"] = (y, yhat, np.full(n_steps, np.hypot(sd, 0.3)) if hetero else None)
    return sites


@pytest.mark.parametrize("hetero", [False, True])
def test_90_percent_interval_covers_90_percent_of_held_out_sites(hetero):
    world = _world(120, 365, seed=3, hetero=hetero)
    names = sorted(world)
    cal, test = names[:40], names[40:]
    scores = {s: nonconformity(world[s][0], world[s][1], world[s][2]) for s in cal}
    calib = conformal_quantiles(scores, train_sites=(), test_sites=test)
    assert calib.n_sites == 40 and calib.q[0.5] < calib.q[0.8] < calib.q[0.9]
    res = coverage_scores({s: world[s][0] for s in test}, {s: world[s][1] for s in test}, calib,
                          None if not hetero else {s: world[s][2] for s in test})
    assert res["n_sites"] == 80
    assert 0.87 <= res["coverage_90"] <= 0.93, res
    assert 0.47 <= res["coverage_50"] <= 0.53, res
    assert res["coverage_90_p10"] < res["coverage_90"]
    assert res["width_50"] < res["width_80"] < res["width_90"]
    assert np.isfinite(res["crps"]) and res["crps"] > 0


def test_an_uninformed_interval_undercovers_a_noisier_world():
    """The calibration is what makes the coverage: a quantile from a quiet world fails on a noisy one."""
    quiet, noisy = _world(30, 365, 1, False), _world(30, 365, 2, False)
    for k in noisy:
        y, yhat, _ = noisy[k]
        noisy[k] = (yhat + 3 * (y - yhat), yhat, None)
    calib = conformal_quantiles({s: nonconformity(v[0], v[1]) for s, v in quiet.items()})
    res = coverage_scores({s: v[0] for s, v in noisy.items()}, {s: v[1] for s, v in noisy.items()}, calib)
    assert res["coverage_90"] < 0.6


def test_calibration_sites_must_be_distinct_and_enough():
    scores = {"a": np.ones(5), "b": np.ones(5)}
    with pytest.raises(ValueError, match="also training or test"):
        conformal_quantiles(scores, train_sites=["a"])
    with pytest.raises(ValueError, match="at least 2"):
        conformal_quantiles({"a": np.ones(5), "b": np.full(5, np.nan)})
    with pytest.raises(ValueError, match="level"):
        conformal_quantiles(scores, levels=(1.2,))


def test_nonconformity_never_turns_non_finite_into_numbers():
    s = nonconformity(np.array([1.0, np.nan, np.inf, 2.0]), np.array([0.0, 1.0, 1.0, 2.0]),
                      np.array([1.0, 1.0, 1.0, 0.0]))
    assert s[0] == 1.0 and np.isnan(s[1:]).all()


def test_crps_gaussian_closed_form():
    # At y = μ: CRPS = σ (2φ(0) − 1/√π) = σ (√(2/π) − 1/√π).
    assert crps_gaussian(np.array([0.0]), np.array([0.0]), 2.0)[0] == pytest.approx(
        2 * (np.sqrt(2 / np.pi) - 1 / np.sqrt(np.pi)), rel=1e-9)
    # far away it tends to |y − μ| − σ/√π
    assert crps_gaussian(np.array([50.0]), np.array([0.0]), 1.0)[0] == pytest.approx(50 - 1 / np.sqrt(np.pi), rel=1e-6)


def test_aggregates_need_whole_groups():
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    ya, pa, labels = aggregate_scores(y, np.ones(6), np.array([0, 0, 0, 1, 1, 1]))
    assert np.isnan(ya[0]) and ya[1] == 15.0 and pa[1] == 3.0 and list(labels) == [0, 1]


def test_nine_sites_give_a_finite_90_percent_quantile_despite_rounding():
    """⌈(9 + 1) · 0.9⌉ = 9 ≤ 9: the largest score, even when a site's 1/n_steps weights sum to 0.999…"""
    rng = np.random.default_rng(0)
    scores = {f"s{i}": rng.random(10) for i in range(9)}  # 81 × 0.1 + … rounds the CDF's top to 0.8999…98
    cal = conformal_quantiles(scores, levels=(0.9,))
    assert cal.q[0.9] == max(float(v.max()) for v in scores.values())
    assert conformal_quantiles(dict(list(scores.items())[:8]), levels=(0.9,)).q[0.9] == np.inf


def test_site_tail_rule_bounds_the_coverage_of_the_p10_site():
    """Sites whose noise differs 3-fold: the pooled 90 % interval covers the 10th-percentile site far less
    than 80 %; the site-tail rule (each calibration site's own 80 % score, their conformal 90 % over sites)
    gives an interval that covers ≥ 80 % of the steps of ~90 % of new sites — wider than the pooled one."""
    world = _world(1000, 120, seed=8, hetero=True)  # measured over seeds 1, 2, 3, 8: 0.91–0.94 of new sites
    names = sorted(world)
    cal, test = names[:400], names[400:]
    scores = {s: nonconformity(world[s][0], world[s][1]) for s in cal}  # one width for all sites (σ = 1)
    q, n = site_tail_quantile(scores, 0.8, 0.1, test_sites=test)
    assert n == 400 and np.isfinite(q)
    pooled = conformal_quantiles(scores, test_sites=test).q[0.9]
    per_site = np.array([np.mean(np.abs(world[s][0] - world[s][1])[np.isfinite(world[s][0])] <= q) for s in test])
    per_site_pooled = np.array([np.mean(np.abs(world[s][0] - world[s][1])[np.isfinite(world[s][0])] <= pooled)
                                for s in test])
    assert 0.87 <= (per_site >= 0.8).mean() <= 0.96, (per_site >= 0.8).mean()
    assert np.quantile(per_site_pooled, 0.1) < 0.76 and q > pooled
    assert site_tail_quantile({"a": [1.0, 2.0], "b": [3.0]}, 0.8, 0.1)[0] == np.inf  # too few sites: unbounded
    with pytest.raises(ValueError, match="also training or test"):
        site_tail_quantile({"a": [1.0], "b": [2.0]}, test_sites=["a"])
    with pytest.raises(ValueError, match="at least 2"):
        site_tail_quantile({"a": [1.0], "b": [np.nan]})
