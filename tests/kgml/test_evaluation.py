"""kgml.evaluation: scores against hand-computed values and identities, NaN masks, summaries over sites
against numpy, the scale decomposition identity, to_monthly, and the physical-consistency scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml import evaluation as ev
from kgml.metrics import scores
from process_models.parameters import ParameterSpec


def _daily(values: dict[str, np.ndarray], sites=None, start="2001-01-01", groups=None) -> xr.Dataset:
    n_sites, n_time = next(iter(values.values())).shape
    sites = sites or [f"S{i}" for i in range(n_sites)]
    coords = {"site": sites, "time": pd.date_range(start, periods=n_time, freq="D")}
    if groups is not None:
        coords["igbp_group"] = ("site", np.asarray(groups))
    return xr.Dataset({k: (("site", "time"), v.astype(np.float64), {"units": "gC m-2 d-1"})
                       for k, v in values.items()}, coords=coords)


def _monthly(values: dict[str, np.ndarray], first_code=2001 * 12) -> xr.Dataset:
    n_sites, n_month = next(iter(values.values())).shape
    return xr.Dataset({k: (("site", "month"), v, {"units": "gC m-2 d-1"}) for k, v in values.items()},
                      coords={"site": [f"S{i}" for i in range(n_sites)], "month": first_code + np.arange(n_month)})


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(42)


def test_hand_computed_scores():
    # obs (1, 2, 3, 4), pred (1, 3, 2, 5): errors (0, 1, -1, 1); Σ(o−ō)² = 5; Σ(p−p̄)² = 8.75;
    # Σ(p−p̄)(o−ō) = 5.5 → r² = 5.5²/(8.75·5); α = √(8.75/5); β = 2.75/2.5.
    obs = _daily({"gpp": np.array([[1.0, 2, 3, 4]])})
    pred = _daily({"gpp": np.array([[1.0, 3, 2, 5]])})
    s = ev.score_sites(pred, obs, ["gpp"]).sel(variable="gpp", site="S0")
    r = 5.5 / math.sqrt(43.75)
    kge = 1 - math.sqrt((r - 1) ** 2 + (math.sqrt(1.75) - 1) ** 2 + 0.1**2)
    assert float(s.rmse) == pytest.approx(math.sqrt(0.75))
    assert float(s.bias) == pytest.approx(0.25)
    assert float(s.nse) == pytest.approx(1 - 3 / 5)
    assert float(s.r2) == pytest.approx(30.25 / 43.75)
    assert float(s.kge) == pytest.approx(kge)
    assert kge == pytest.approx(0.6223313898, abs=1e-9)
    assert int(s.n) == 4


def test_perfect_and_mean_predictions(rng):
    obs = _daily({"reco": rng.gamma(2.0, 1.0, (3, 50))})
    s = ev.score_sites(obs, obs, ["reco"])
    for m in ("nse", "kge", "r2"):
        np.testing.assert_allclose(s[m].values, 1.0)
        assert float(s[f"pooled_{m}"].values[0]) == pytest.approx(1.0)
    np.testing.assert_allclose(s.rmse.values, 0.0, atol=1e-12)
    np.testing.assert_allclose(s.bias.values, 0.0, atol=1e-12)
    # each site's own observed mean: NSE = 0, RMSE = the (population) standard deviation, bias 0
    mean_pred = obs.copy()
    mean_pred["reco"] = obs.reco * 0 + obs.reco.mean("time")
    s = ev.score_sites(mean_pred, obs, ["reco"])
    np.testing.assert_allclose(s.nse.values, 0.0, atol=1e-12)
    np.testing.assert_allclose(s.rmse.values[0], obs.reco.std("time").values)
    r2 = s.r2.values  # a constant prediction has no correlation (NaN, or ~0 where rounding leaves a spread)
    assert np.all(np.isnan(r2) | (r2 < 1e-12))


def test_nan_masks_are_respected(rng):
    o = rng.normal(size=(2, 40))
    p = o + rng.normal(scale=0.3, size=o.shape)
    p_bad, o_bad = p.copy(), o.copy()
    p_bad[0, :5] = 1e6  # wildly wrong where the observation is missing ...
    o_bad[0, :5] = np.nan
    o_bad[1, 10:12] = 1e6  # ... and where the prediction is missing
    p_bad[1, 10:12] = np.nan
    s = ev.score_sites(_daily({"nee": p_bad}), _daily({"nee": o_bad}), ["nee"])
    assert s.n.values.tolist() == [[35, 38]]
    ok0 = np.arange(40) >= 5
    ok1 = ~np.isin(np.arange(40), [10, 11])
    assert float(s.rmse.values[0, 0]) == pytest.approx(np.sqrt(np.mean((p[0, ok0] - o[0, ok0]) ** 2)))
    assert float(s.r2.values[0, 1]) == pytest.approx(np.corrcoef(p[1, ok1], o[1, ok1])[0, 1] ** 2)
    assert int(s.pooled_n.values[0]) == 73


def test_summary_median_tail_pooled_worst_group_against_numpy(rng):
    n_sites = 11
    o = rng.gamma(3.0, 1.0, (n_sites, 60))
    noise = rng.normal(size=o.shape) * np.linspace(0.1, 2.0, n_sites)[:, None]
    groups = np.array(["forest"] * 4 + ["grass"] * 4 + ["crop"] * 3)
    obs = _daily({"gpp": o}, groups=groups)
    pred = _daily({"gpp": o + noise + 0.2}, groups=groups)
    s = ev.score_sites(pred, obs, ["gpp"], group="igbp_group")
    summary = ev.summarise(s)["variables"]["gpp"]
    per_site = [scores(pred.gpp.values[i], obs.gpp.values[i], ev.METRIC_NAMES) for i in range(n_sites)]
    col = {m: np.array([d[m] for d in per_site]) for m in ev.METRIC_NAMES}
    for m in ev.METRIC_NAMES:
        assert summary["median"][m] == pytest.approx(np.median(col[m]))
    assert summary["tail"]["rmse_p90"] == pytest.approx(np.percentile(col["rmse"], 90))
    assert summary["tail"]["abs_bias_p90"] == pytest.approx(np.percentile(np.abs(col["bias"]), 90))
    assert summary["tail"]["nse_p10"] == pytest.approx(np.percentile(col["nse"], 10))
    assert summary["tail"]["r2_p10"] == pytest.approx(np.percentile(col["r2"], 10))
    assert summary["tail"]["r2_p10"] <= summary["median"]["r2"] and summary["tail"]["rmse_p90"] >= summary["median"]["rmse"]
    assert summary["pooled"]["rmse"] == pytest.approx(np.sqrt(np.mean(noise**2 + 0.4 * noise + 0.04)))
    # noise grows with the site index: the last group (crop, sites 8-10) is worst
    group_nse = {g: scores(pred.gpp.values[groups == g], obs.gpp.values[groups == g])["nse"] for g in set(groups)}
    worst = min(group_nse, key=group_nse.get)
    assert worst == "crop"
    assert summary["worst_group"]["nse"] == {"group": "crop", "value": pytest.approx(group_nse["crop"]), "n_sites": 3}
    assert summary["worst_group"]["rmse"]["group"] == "crop"
    big = ev.summarise(s, min_group_sites=4)["variables"]["gpp"]["worst_group"]
    assert big["nse"]["group"] == "grass" and big["nse"]["n_sites"] == 4
    assert s.group_sites.sel(variable="gpp").values.tolist() == [3, 4, 4]  # crop, forest, grass
    assert summary["n_sites"] == n_sites and summary["n"] == o.size


def test_metric_order_and_markdown(rng):
    assert ev.metric_order("nee")[:2] == ("r2", "rmse")
    assert ev.metric_order("nee_monthly")[0] == "r2" and ev.metric_order("nee")[-1] == "kge"
    assert ev.metric_order("gpp")[0] != "rmse"
    o = rng.normal(size=(3, 30))
    ds = _daily({"nee": o, "gpp": np.abs(o)})
    md = ev.scores_markdown(ev.summarise(ev.score_sites(ds, ds, ["nee", "gpp"])), "t")
    rows = [ln for ln in md.splitlines() if ln.startswith("| nee")]
    assert [r.split("|")[2].strip() for r in rows] == list(ev.metric_order("nee"))
    assert "(p10)" in rows[0] and "(p90)" in rows[1]


def test_to_monthly_means_codes_and_coverage():
    days = pd.date_range("2001-01-01", "2001-03-31", freq="D")  # 31 + 28 + 31 days
    v = np.arange(days.size, dtype=np.float64)[None, :].repeat(2, 0)
    v[1, 31:50] = np.nan  # site 1: 9 of 28 February days left (< half) → NaN
    v[1, 0:10] = np.nan  # 21 of 31 January days left → mean of those
    ds = xr.Dataset({"gpp": (("site", "time"), v, {"units": "gC m-2 d-1"})},
                    coords={"site": ["A", "B"], "time": days, "igbp": ("site", ["GRA", "CRO"])})
    m = ev.to_monthly(ds)
    assert m.gpp_monthly.dims == ("site", "month")
    assert m.month.values.tolist() == [2001 * 12, 2001 * 12 + 1, 2001 * 12 + 2]
    np.testing.assert_allclose(m.gpp_monthly.values[0], [15.0, 44.5, 74.0])
    assert m.gpp_monthly.values[1, 0] == pytest.approx(np.arange(10, 31).mean())
    assert np.isnan(m.gpp_monthly.values[1, 1])
    assert m.gpp_monthly.attrs["units"] == "gC m-2 d-1" and m.igbp.values.tolist() == ["GRA", "CRO"]


def test_monthly_scores_from_daily_predictions_and_mapping(rng):
    o = rng.gamma(2.0, 1.0, (2, 730))
    daily = _daily({"nee": o + rng.normal(scale=0.5, size=o.shape), "true_nee": o})
    obs = ev.to_monthly(daily, ["true_nee"]).rename(true_nee_monthly="nee_monthly")
    s = ev.score_sites(daily, obs, ["nee"], resolution="monthly")
    assert int(s.n.values.sum()) == 48
    direct = ev.score_sites(ev.to_monthly(daily, ["nee"]), obs, ["nee"], resolution="monthly")
    np.testing.assert_allclose(s.rmse.values, direct.rmse.values)
    mapped = ev.score_sites(daily, daily, {"nee": "true_nee"})
    assert mapped.observed_as.values.tolist() == ["true_nee"] and float(mapped.pooled_r2[0]) < 1.0
    with pytest.raises(KeyError, match="rsoil"):
        ev.score_sites(daily, daily, ["rsoil"])


def test_decomposition_identity_and_perfect_scores(rng):
    n_sites, n_years = 3, 4
    t = np.arange(12 * n_years)
    o = (5 + rng.normal(size=(n_sites, 1)) + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.5, size=(n_sites, t.size)))
    o[0, 5:9] = np.nan  # uneven coverage
    p = o + rng.normal(scale=0.3, size=o.shape)
    obs, pred = _monthly({"gpp_monthly": o}), _monthly({"gpp_monthly": p})
    d = ev.decompose(pred, obs, "gpp")
    cal = (d.month.values % 12)
    for label, x in (("pred", p), ("obs", o)):
        rebuilt = d[f"site_mean_{label}"].values[:, None] + d[f"seasonal_{label}"].values[:, cal] + d[f"anomaly_{label}"].values
        ok = np.isfinite(o)
        np.testing.assert_allclose(rebuilt[ok], x[ok], rtol=1e-12)
        assert np.isnan(d[f"anomaly_{label}"].values[~ok]).all()
    # site mean over the paired months; IAV = annual mean of anomalies
    assert float(d.site_mean_obs[0]) == pytest.approx(np.nanmean(o[0]))
    year1 = d.anomaly_obs.values[1, 12:24].mean()
    assert float(d.iav_obs.sel(iav_year=2002).values[1]) == pytest.approx(year1)
    # per site, the anomalies of each calendar month sum to zero
    np.testing.assert_allclose(np.nansum(d.anomaly_obs.values[:, cal == 3], axis=1), 0.0, atol=1e-9)
    perfect = ev.decomposition_scores(obs, obs, "gpp")
    assert set(perfect) == {"total", "site_mean", "seasonal", "anomaly", "iav"}
    for comp, sc in perfect.items():
        assert sc["nse"] == pytest.approx(1.0), comp
    sc = ev.decomposition_scores(pred, obs, "gpp")
    assert sc["site_mean"]["n"] == n_sites and sc["iav"]["n"] == n_sites * n_years
    assert sc["seasonal"]["r2"] > sc["anomaly"]["r2"]


def test_carbon_balance_and_residual_size():
    gpp = np.array([[2.0, 4.0, np.nan]])
    reco = np.array([[3.0, 3.0, 1.0]])
    pred = _daily({"gpp": gpp, "reco": reco, "nee": reco - gpp})
    assert ev.carbon_balance_residual(pred)["max_abs"] == 0.0
    pred["nee"] = pred.nee + xr.DataArray([[0.5, -0.1, 0.0]], dims=("site", "time"))
    r = ev.carbon_balance_residual(pred)
    assert r["n"] == 2 and r["mean_abs"] == pytest.approx(0.3) and r["max_abs"] == pytest.approx(0.5)
    assert r["relative"] == pytest.approx(0.3 / ((1.5 + 1.1) / 2))
    pred["gpp_physics"] = pred.gpp * 0.5
    size = ev.residual_size(pred)
    assert set(size) == {"gpp"} and size["gpp"]["mean_abs"] == pytest.approx(1.5)
    assert size["gpp"]["relative"] == pytest.approx(1.0)


def test_share_at_bounds_linear_and_log():
    lin = ParameterSpec("a", 1.0, 0.0, 10.0, "-", "test")
    log = ParameterSpec("k", 1.0, 1e-3, 1e3, "d-1", "test", transform="loglogit")
    theta = {"a": np.array([0.05, 5.0, 9.95, 9.8]),  # 1 % of the range = 0.1 → 2 of 4 at a bound
             "k": np.array([1.1e-3, 1.0, 0.5e3]),  # log range 13.8: 1.1e-3 within 1 %; 500 is not
             "unknown": np.array([0.0])}
    r = ev.share_at_bounds(theta, [lin, log])
    assert r["per_parameter"] == {"a": 0.5, "k": pytest.approx(1 / 3)}
    assert r["n"] == 7 and r["share"] == pytest.approx(3 / 7)
    assert ev.share_at_bounds(theta, [lin, log], names=["k"])["share"] == pytest.approx(1 / 3)
    ds = xr.Dataset({"theta_a": ("site", theta["a"])})
    assert ev.share_at_bounds(ds, {"a": lin})["share"] == 0.5


def test_temperature_monotonicity_and_slope(rng):
    tair = rng.normal(15, 8, (4, 100))
    ds = _daily({"tair": tair, "sw_in": rng.uniform(50, 300, tair.shape)})
    q10 = np.array([2.0, 2.0, 0.5, 1.5])[:, None]  # site 2 has a falling response

    def predict(d):
        return xr.Dataset({"reco": (("site", "time"), q10 ** ((d.tair.values - 10) / 10), {"units": "gC m-2 d-1"})},
                          coords={"site": d.site, "time": d.time})

    r = ev.temperature_monotonicity(predict, ds)
    assert r["fraction_increasing"] == 0.75 and r["n_sites"] == 4 and r["temperatures"] == ["tair"]
    assert float(r["sensitivity"].values[2]) < 0 < float(r["sensitivity"].values[0])
    s = ev.temperature_slope(predict(ds), ds)
    assert s["fraction_positive"] == 0.75 and float(s["slope"].values[2]) < 0
    with pytest.raises(KeyError, match="temperature"):
        ev.temperature_monotonicity(predict, ds.drop_vars("tair"))


def test_reference_skill_against_a_climatology():
    """Held-out years against the site's own climatology: a model that knows each site's planted departure
    scores skill ≈ 1 and the departures' sign everywhere; the climatology itself scores skill 0; the
    mirror-image model gets every sign wrong and negative skill."""
    rng = np.random.default_rng(3)
    n_sites, months = 20, np.arange(2005 * 12, 2006 * 12)
    clim = 2.0 * np.sin(2 * np.pi * (months % 12) / 12)[None, :] + rng.normal(0, 1, (n_sites, 1))
    shift = rng.choice([-1.0, 1.0], n_sites)[:, None] * rng.uniform(0.5, 1.5, (n_sites, 1))
    obs_v = clim + shift + rng.normal(0, 0.05, (n_sites, months.size))
    obs_v[0, :3] = np.nan  # a gap: not scored

    def ds(v):
        return xr.Dataset({"nee_monthly": (("site", "month"), v)}, coords={"site": [f"s{i}" for i in range(n_sites)],
                                                                         "month": months})

    obs, ref = ds(obs_v), ds(clim)
    good = ev.reference_skill(ds(clim + shift), obs, ref, "nee", resolution="monthly")
    assert good["n_sites"] == n_sites and good["skill_median"] > 0.99 and good["sign_agreement"] == 1.0
    assert good["mean_anomaly_r2"] > 0.99 and good["anomaly_r2"] > 0.95
    same = ev.reference_skill(ref, obs, ref, "nee", resolution="monthly")
    assert same["skill_median"] == pytest.approx(0.0) and math.isnan(same["anomaly_r2"])
    bad = ev.reference_skill(ds(clim - shift), obs, ref, "nee", resolution="monthly")
    assert bad["sign_agreement"] == 0.0 and bad["skill_median"] < -2.0


def test_departure_skill_cancels_a_models_bias():
    """A model with a wrong mean seasonal cycle (×1.5 + 2) but the right departure of the held-out year has
    departure R² ≈ 1 and every sign right; a model that repeats the same year everywhere has no departure."""
    rng = np.random.default_rng(5)
    n_sites, months = 15, np.arange(2001 * 12, 2004 * 12)
    year = months // 12
    clim = 2.0 * np.sin(2 * np.pi * (months % 12) / 12)[None, :] + rng.normal(0, 1, (n_sites, 1))
    test_year = {f"s{i}": [2001 + i % 3] for i in range(n_sites)}
    shift = rng.choice([-1.0, 1.0], n_sites) * rng.uniform(0.5, 1.5, n_sites)
    dep = np.stack([np.where(year == test_year[f"s{i}"][0], shift[i], 0.0) for i in range(n_sites)])
    obs_v = clim + dep + rng.normal(0, 0.05, clim.shape)

    def ds(v):
        return xr.Dataset({"nee_monthly": (("site", "month"), v)}, coords={"site": list(test_year), "month": months})

    good = ev.departure_skill(ds(1.5 * clim + 2.0 + dep), ds(obs_v), "nee", test_years=test_year)
    assert good["n_sites"] == n_sites and good["departure_r2"] > 0.95 and good["sign_agreement"] == 1.0
    assert good["mean_departure_corr"] > 0.99
    flat = ev.departure_skill(ds(1.5 * clim + 2.0), ds(obs_v), "nee", test_years=test_year)
    assert flat["sign_agreement"] == 0.0 and math.isnan(flat["mean_departure_corr"])


@pytest.mark.parametrize("coherent", [0.0, 0.4])
def test_noise_ceiling_matches_a_perfect_model_on_noisy_observations(coherent):
    """A planted world: truth = seasonal cycle + anomalies (sd 0.5) + a year effect; observations = truth +
    independent noise of known σ (varying by step) + a year-coherent error. The ceiling is what the true
    flux itself scores against the observations (anomaly and IAV R² and NSE, pooled), within sampling error,
    and it falls when the year-coherent error is added."""
    rng = np.random.default_rng(7)
    n_sites, n_years = 60, 8
    t = np.arange(12 * n_years)
    truth = (2 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.5, size=(n_sites, t.size))
             + np.repeat(rng.normal(scale=0.3, size=(n_sites, n_years)), 12, axis=1))
    sigma = rng.uniform(0.2, 0.6, size=truth.shape)
    noise = sigma * rng.normal(size=truth.shape)
    noise += coherent * np.repeat(rng.normal(size=(n_sites, n_years)), 12, axis=1)
    obs_v = truth + noise
    obs_v[3, 10:20] = np.nan
    obs = _monthly({"nee_monthly": obs_v})
    sig = obs["nee_monthly"].copy(data=sigma)
    sig[5, :6] = np.nan  # unknown uncertainty: those steps are left out
    coh = None if coherent == 0 else sig.copy(data=np.full(truth.shape, coherent))
    c = ev.noise_ceiling(obs, "nee", sig, coherent=coh)
    assert c["n_sites"] == n_sites and c["share_unknown"] == pytest.approx(6 / np.isfinite(obs_v).sum())
    keep = np.isfinite(sig.values)
    perfect = _monthly({"nee_monthly": np.where(keep, truth, np.nan)})
    sc = ev.decomposition_scores(perfect, _monthly({"nee_monthly": np.where(keep, obs_v, np.nan)}), "nee")
    for comp in ("anomaly", "iav"):
        assert c[comp] == pytest.approx(sc[comp]["nse"], abs=0.05), comp
        assert c[comp] == pytest.approx(sc[comp]["r2"], abs=0.05), comp
    assert 0.3 < c["anomaly"] < 0.8
    if coherent:
        plain = ev.noise_ceiling(obs, "nee", sig)
        assert c["iav"] < plain["iav"] - 0.2 and c["anomaly"] < plain["anomaly"]
    with pytest.raises(ValueError, match="negative"):
        ev.noise_ceiling(obs, "nee", -sig)
