"""Yields in unseen years (issue 14): the bounded technology factor, the forecasting fold kind (no test year
in training on any axis), the naive yield baselines, and the trend term of the process model / hybrid
recovering a planted trend while the physics keeps a planted drought year."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from kgml.compare.baselines import FeatureBaseline, YieldBaseline
from kgml.compare.suites import FOLDS_DIR, forecast_origins, get_suite, select_part
from process_models.crop import TECHNOLOGY_SPECS, technology_factor

# --- the technology factor ----------------------------------------------------------------------------


def test_technology_factor_is_one_at_reference_rises_and_levels_off():
    years = jnp.arange(1900.0, 2101.0)
    rate, gain, ref = 0.015, 0.4, 1996.0
    tau = np.asarray(technology_factor(years, rate, gain, ref))
    assert tau[years.tolist().index(ref)] == pytest.approx(1.0)
    assert np.all(np.diff(tau) > 0)  # grows with the year
    assert np.all(tau > np.exp(-gain)) and np.all(tau < np.exp(gain))  # bounded, never negative
    # near the reference year: 1 + rate per year; a century away: at the plateau
    slope = float(jax.grad(lambda y: technology_factor(y, rate, gain, ref))(ref))
    assert slope == pytest.approx(rate, rel=1e-4)
    assert tau[-1] == pytest.approx(np.exp(gain), rel=1e-3)
    # no unbounded growth: 50 more years beyond 2100 add less than 0.5 %
    assert technology_factor(2150.0, rate, gain, ref) / technology_factor(2100.0, rate, gain, ref) < 1.005


def test_technology_factor_gradients_finite_at_the_bounds():
    specs = {s.name: s for s in TECHNOLOGY_SPECS}

    def f(u):
        return technology_factor(2013.0, specs["tech_rate"].to_physical(u[0]),
                                 specs["tech_max_gain"].to_physical(u[1]), 1996.0)

    for u in ([-30.0, -30.0], [30.0, 30.0], [0.0, 0.0]):
        g = jax.grad(f)(jnp.asarray(u))
        assert np.all(np.isfinite(np.asarray(g)))


# --- the forecasting fold kind ------------------------------------------------------------------------


def _panel(years=range(1980, 2000), n_sites=3) -> xr.Dataset:
    years = np.asarray(list(years), np.int32)
    time = xr.date_range(f"{years[0]}-01-01", f"{years[-1]}-12-31", freq="D", calendar="noleap", use_cftime=True)
    months = np.asarray([y * 12 + m for y in years for m in range(12)])
    rng = np.random.default_rng(0)
    sites = [f"S{i}" for i in range(n_sites)]
    return xr.Dataset(
        {"tair": (("site", "time"), rng.normal(size=(n_sites, time.size)).astype(np.float32)),
         "crop_yield": (("site", "year"), rng.normal(8, 1, (n_sites, years.size)).astype(np.float32)),
         "nee_monthly": (("site", "month"), rng.normal(size=(n_sites, months.size)).astype(np.float32))},
        coords={"site": sites, "time": time, "year": years, "month": months})


def _years_on_every_axis(ds: xr.Dataset) -> dict[str, set[int]]:
    return {"time": set(ds.time.dt.year.values.tolist()), "year": set(int(y) for y in ds.year.values),
            "month": set(int(m) // 12 for m in ds.month.values)}


def test_forecast_folds_never_train_on_a_test_year():
    ds = _panel()
    splits = forecast_origins(ds, (1988, 1993), 4, val_years=2)
    assert [s.info["years"] for s in splits] == [[1989, 1992], [1994, 1997]]
    for split in splits:
        test = _years_on_every_axis(select_part(ds, split, "test"))
        assert test["time"] == test["year"] == test["month"] == set(split.test.years)
        for part in ("train", "val"):
            seen = _years_on_every_axis(select_part(ds, split, part))
            for axis in ("time", "year", "month"):
                assert not seen[axis] & test[axis], (split.name, part, axis)
                assert max(seen[axis]) <= split.info["origin"] < min(test[axis])
    with pytest.raises(ValueError, match="forecast origin 1998"):
        forecast_origins(ds, (1998,), 4)


@pytest.mark.parametrize("suite", ["il_corn_yield", "state_yield"])
def test_frozen_forecast_folds_look_only_backwards(suite):
    """The frozen forecasting folds (benchmarks/folds): every unit in train and test, every known year
    before every test year, several origins; the kind is declared by the suite."""
    assert "forecast" in [k.name for k in get_suite(suite).folds]
    data = json.loads((FOLDS_DIR / f"{suite}.json").read_text())
    fc = [s for s in data["splits"] if s["info"].get("fold_kind") == "forecast"]
    assert len(fc) >= 2
    for s in fc:
        known = s["train"]["years"] + (s["val"]["years"] or [])
        assert max(known) == s["info"]["origin"] < min(s["test"]["years"])
        assert s["train"]["units"] == s["test"]["units"]
    assert len({s["info"]["origin"] for s in fc}) == len(fc)


# --- naive yield baselines ----------------------------------------------------------------------------


def _trend_panel() -> xr.Dataset:
    ds = _panel(range(1990, 2006), n_sites=3).drop_vars(["nee_monthly", "month"])
    yrs = ds.year.values.astype(np.float64)
    lines = np.stack([5 + 0.1 * (yrs - 1990), 7 + 0.2 * (yrs - 1990), 6 - 0.05 * (yrs - 1990)])
    ds["crop_yield"] = (("site", "year"), lines.astype(np.float32), {"units": "t ha-1"})
    ds["precip"] = ds["tair"] ** 2
    return ds


def test_yield_baselines_recover_lines_and_refuse_unseen_units():
    ds = _trend_panel()
    train, test = ds.sel(year=ds.year <= 2000), ds.sel(year=ds.year > 2000)
    truth = test.crop_yield.values
    unit = YieldBaseline("unit_trend").fit(train).predict(test)
    np.testing.assert_allclose(unit.crop_yield.values, truth, rtol=1e-5)
    mean = YieldBaseline("unit_mean").fit(train).predict(test)
    np.testing.assert_allclose(mean.crop_yield.values[:, 0], train.crop_yield.mean("year").values, rtol=1e-5)
    region = YieldBaseline("region_trend").fit(train).predict(test)
    slope = np.polyfit(np.tile(train.year.values, 3), train.crop_yield.values.ravel(), 1)[0]
    np.testing.assert_allclose(np.diff(region.crop_yield.values[0]), slope, rtol=1e-4)
    assert np.all(region.crop_yield.values[0] == region.crop_yield.values[1])  # one line for all units
    rf = YieldBaseline("trend_rf", n_estimators=20, n_jobs=1, features=("tair", "precip")).fit(train).predict(test)
    assert np.isfinite(rf.crop_yield.values).all() and rf.crop_yield.dims == ("site", "year")
    # a training unit without yields (a flux tower in a yield study's training data) has no line: the residual
    # forest leaves it out instead of failing, and the units with lines predict exactly as without it
    tower = train.isel(site=[0]).assign_coords(site=["TOWER"])
    tower["crop_yield"] = xr.full_like(tower["crop_yield"], np.nan)
    with_tower = xr.concat([train, tower], "site")
    rf2 = YieldBaseline("trend_rf", n_estimators=20, n_jobs=1, features=("tair", "precip")).fit(with_tower)
    assert "TOWER" not in rf2.units_
    np.testing.assert_allclose(rf2.predict(test).crop_yield.values, rf.crop_yield.values, rtol=1e-6)
    with pytest.raises(ValueError, match="TOWER"):  # ... and predicting it still says it has no line
        rf2.predict(with_tower)
    with pytest.raises(ValueError, match="S2"):
        YieldBaseline("unit_trend").fit(train.isel(site=[0, 1])).predict(test)
    with pytest.raises(ValueError, match="kind must be"):
        YieldBaseline("quadratic")


def test_feature_baseline_reads_the_year_for_yields_only():
    ds = _trend_panel()
    fb = FeatureBaseline("rf", n_estimators=5, n_jobs=1, year_feature=True).fit(
        ds, targets=("crop_yield",), features=("tair",), resolution="annual")
    assert fb.feature_names_[-1] == "year"
    with pytest.raises(ValueError, match="year_feature"):
        FeatureBaseline("rf", year_feature=True).fit(ds, targets=("nee",), features=("tair",), resolution="daily")


# --- the trend term: a planted trend and a planted drought year, both recovered ----------------------

PLANTED_RATE = 0.022
REFERENCE_YEAR = 1995.0
DROUGHT_YEAR = 1997


@pytest.fixture(scope="module")
def planted():
    """One synthetic maize site, 1990–2001 (generator weather), a rain-free July–August in 1997, yields =
    physics at the default parameters × a planted technology factor (rate 2.2 % per year, plateau 0.4)."""
    from kgml.synthetic import STATES, build_model, corpus_block, generate_forcing

    years = 12
    met = generate_forcing(STATES[1], 1, years, jax.random.PRNGKey(3))
    precip = np.asarray(met.precip).copy()
    day = np.arange(precip.shape[1])
    drought = (day // 365 == DROUGHT_YEAR - 1990) & (day % 365 + 1 >= 182) & (day % 365 + 1 <= 243)
    precip[:, drought] = 0.0
    met = met._replace(precip=jnp.asarray(precip))
    model = build_model("maize")
    theta = {s.name: jnp.full((1,), s.default) for s in model.parameter_specs}
    ds = corpus_block(model, theta, met, site_ids=["P1"], lat=np.array([40.0]), lon=np.array([-89.0]), state="IL",
                      vegetation="maize", rng=np.random.default_rng(0), start_year=1990)
    physics = ds["true_crop_yield"].values[0].astype(np.float64)
    tau = np.asarray(technology_factor(ds.year.values.astype(np.float32), PLANTED_RATE, 0.4, REFERENCE_YEAR))
    ds["crop_yield"] = (("site", "year"), (physics * tau)[None].astype(np.float32), {"units": "t ha-1"})
    return ds, physics, tau


def _trend_config(kind: str):
    from kgml.config import config_from_dict

    model = {"kind": kind, "technology_trend": True, "technology_reference_year": REFERENCE_YEAR, "learned": []}
    if kind == "hybrid":
        model.update(hidden=8, embed_dim=8, head_hidden=8, location_dim=8, n_scales=2, use_summary=False)
    return config_from_dict({
        "name": f"trend-{kind}", "seed": 0,
        "data": {"source": "(test)", "vegetation": "maize", "features": ["tair", "sw_in", "vpd", "precip"],
                 "static": [], "daily_targets": [], "yield_target": True, "window_days": 365},
        "model": model,
        "train": {"steps": 150, "batch_size": 12, "eval_every": 1000, "warmup_steps": 5, "checkpoint_every": 10_000,
                  "learning_rate": 3e-3},
    })


@pytest.mark.slow
def test_process_model_trend_recovers_planted_trend_and_keeps_the_drought(planted):
    from kgml.data.splits import Part, Split
    from kgml.experiment import predict_dataset, train_run

    ds, physics, tau = planted
    split = Split("all", "test", 0, "site", Part(["P1"]), Part(), Part(), Part())
    run = train_run(_trend_config("process"), ds, split=split, progress=False)
    th = run.model.technology.theta()
    assert float(th["tech_rate"]) == pytest.approx(PLANTED_RATE, rel=0.1)
    pred = predict_dataset(run, ds, batch_size=12).crop_yield.values[0]
    obs = ds.crop_yield.values[0]
    np.testing.assert_allclose(pred, obs, rtol=0.05)
    # the drought year: observed far below its neighbours, and so is the prediction (the physics, not the
    # trend, explains it)
    i = DROUGHT_YEAR - 1990
    assert physics[i] < 0.75 * np.median(physics)
    assert pred[i] / np.median(pred) == pytest.approx(obs[i] / np.median(obs), rel=0.05)


@pytest.mark.slow
def test_hybrid_trend_starts_as_process_times_factor_and_learns_the_rate(planted):
    """The hybrid with the trend: untrained it is the untrained hybrid × τ(default); trained on the planted
    series (physics parameters fixed) it moves the rate to the planted one."""
    from kgml.data.splits import Part, Split
    from kgml.experiment import Run, predict_dataset, prepare, train_run
    from kgml.experiment import new_model as make

    ds, physics, tau = planted
    cfg = _trend_config("hybrid")
    prepared = prepare(ds, cfg)
    trended = make(cfg, prepared)
    assert trended.technology is not None
    plain = make(dataclasses_replace_model(cfg, technology_trend=False), prepared)
    a = predict_dataset(Run(trended, cfg, prepared), ds, batch_size=12).crop_yield.values[0]
    b = predict_dataset(Run(plain, dataclasses_replace_model(cfg, technology_trend=False), prepared), ds,
                        batch_size=12).crop_yield.values[0]
    default = {s.name: s.default for s in TECHNOLOGY_SPECS}
    factor = np.asarray(technology_factor(ds.year.values.astype(np.float32), default["tech_rate"],
                                          default["tech_max_gain"], REFERENCE_YEAR))
    np.testing.assert_allclose(a, b * factor, rtol=1e-5)
    split = Split("all", "test", 0, "site", Part(["P1"]), Part(), Part(), Part())
    run = train_run(cfg, ds, split=split, progress=False)
    assert float(run.model.technology.theta()["tech_rate"]) == pytest.approx(PLANTED_RATE, rel=0.15)


def dataclasses_replace_model(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


def test_il_corn_quick_bench_runs_naive_baselines_per_fold_kind(dataset_dir, tmp_path):
    """`kgml bench shift` on a few real counties: the per-unit trend runs on the forecasting folds and is
    reported not available (for that kind only) where whole counties are held out; the region trend runs on
    both."""
    from kgml.cli import main

    suite = get_suite("il_corn_yield")
    root = dataset_dir(suite.dataset_folder).parent
    argv = ["bench", "shift", "--suite", "il_corn_yield", "--quick", "--data-dir", str(root), "--out", str(tmp_path),
            "--models", "yield_unit_trend,yield_region_trend", "--fold-kinds", "forecast,leave_county_out",
            "--no-progress", "--no-figures", "--no-results"]
    assert main(argv) == 0
    have = {(p.parent.parent.name, p.stem) for p in (tmp_path / "il_corn_yield" / "folds").glob("*/*/*.nc")}
    assert have == {("forecast", "yield_unit_trend"), ("forecast", "yield_region_trend"),
                    ("leave_county_out", "yield_region_trend")}
    md = (tmp_path / "il_corn_yield" / "metrics.md").read_text()
    assert "| yield_unit_trend | – | not available" in md


@pytest.mark.slow
def test_neural_trend_scales_the_networks_yield_and_is_trained(planted):
    """The same-size network with the trend (the `neural_trend` bench slot): untrained it is the untrained
    network × τ(default) exactly; training moves the trend's rate (its gradient reaches the trend)."""
    from kgml.data.splits import Part, Split
    from kgml.experiment import Run, predict_dataset, prepare, train_run
    from kgml.experiment import new_model as make

    ds, physics, tau = planted
    cfg = dataclasses_replace_model(_trend_config("hybrid"), kind="neural")
    prepared = prepare(ds, cfg)
    trended = make(cfg, prepared)
    assert trended.technology is not None
    plain_cfg = dataclasses_replace_model(cfg, technology_trend=False)
    plain = make(plain_cfg, prepared)
    assert plain.technology is None
    a = predict_dataset(Run(trended, cfg, prepared), ds, batch_size=12).crop_yield.values[0]
    b = predict_dataset(Run(plain, plain_cfg, prepared), ds, batch_size=12).crop_yield.values[0]
    default = {s.name: s.default for s in TECHNOLOGY_SPECS}
    factor = np.asarray(technology_factor(ds.year.values.astype(np.float32), default["tech_rate"],
                                          default["tech_max_gain"], REFERENCE_YEAR))
    np.testing.assert_allclose(a, b * factor, rtol=1e-5)
    assert not np.allclose(factor, 1.0)  # the years span the reference: the factor is not a constant 1
    split = Split("all", "test", 0, "site", Part(["P1"]), Part(), Part(), Part())
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=30))
    run = train_run(short, ds, split=split, progress=False)
    assert float(run.model.technology.theta()["tech_rate"]) != pytest.approx(default["tech_rate"], rel=1e-3)


def test_yield_tables_count_every_seed_saved_in_each_directory(tmp_path):
    """`kgml.compare.yields` reads seed 0 (``model.nc``) and seed N (``model_seedN.nc``) files alike, so the
    output directories of ``--seed N`` runs contribute their seeds to the mean ± sd."""
    from kgml.compare.yields import _seeds_saved
    from kgml.data.splits import Part, Split

    split = Split("forecast5_from1998", "forecast", 0, "year", Part(["a"]), Part(), Part(["b"]), Part())
    folder = tmp_path / "folds" / "forecast" / split.name
    folder.mkdir(parents=True)
    for name in ("m.nc", "m_seed2.nc", "m_seed1.nc", "m_other.nc", "mx_seed3.nc"):
        (folder / name).write_bytes(b"")
    assert _seeds_saved(tmp_path, "forecast", [split], "m") == [0, 1, 2]
    assert _seeds_saved(tmp_path, "forecast", [split], "other") == []


# --- the trend's rate per site (issue 14: per-county knowledge in the trended hybrid) -----------------


def test_per_site_rate_recovers_two_planted_rates_and_stays_bounded():
    """`TechnologyTrend` with a per-site rate, fitted on two sites' series with planted rates 0.8 % and 2.6 %
    per year (shared plateau 0.5, years 1980–2010) times weather-like noise, recovers both rates; an unknown site
    (index −1) gets the shared rate; offsets far out of range still give rates inside the bounds."""
    import equinox as eqx
    import optax

    from kgml.models.hybrid import TechnologyTrend

    years = jnp.arange(1980.0, 2011.0)
    planted = (0.008, 0.026)
    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.normal(0.0, 0.03, (2, years.size)), jnp.float32)
    obs = jnp.stack([8.0 * technology_factor(years, r, 0.5, 1995.0) for r in planted]) * jnp.exp(noise)
    trend = TechnologyTrend.create(1995.0, n_sites=2)
    assert trend.site_rate is not None and trend.site_rate.shape == (2,)
    default = {s.name: s.default for s in TECHNOLOGY_SPECS}
    assert float(trend.theta(jnp.asarray(1))["tech_rate"]) == pytest.approx(default["tech_rate"], rel=1e-5)
    params = (trend, jnp.zeros(2))  # + a free log-level per site (the physics' yield level, here a constant)

    def loss(p):
        tr, level = p
        pred = jnp.stack([jnp.exp(level[i]) * 8.0 * tr(years, jnp.asarray(i)) for i in range(2)])
        return jnp.mean((jnp.log(pred) - jnp.log(obs)) ** 2)

    opt = optax.adam(3e-3)
    state = opt.init(eqx.filter(params, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(p, s):
        g = eqx.filter_grad(loss)(p)
        upd, s = opt.update(g, s)
        return eqx.apply_updates(p, upd), s

    for _ in range(1500):
        params, state = step(params, state)
    fitted = params[0]
    rates = [float(fitted.theta(jnp.asarray(i))["tech_rate"]) for i in range(2)]
    assert rates[0] == pytest.approx(planted[0], abs=0.002)
    assert rates[1] == pytest.approx(planted[1], abs=0.002)
    assert float(fitted.theta(jnp.asarray(-1))["tech_rate"]) == pytest.approx(float(fitted.theta()["tech_rate"]))
    extreme = eqx.tree_at(lambda t: t.site_rate, fitted, jnp.asarray([-100.0, 100.0]))
    lo, hi = (float(extreme.theta(jnp.asarray(i))["tech_rate"]) for i in range(2))
    spec = {s.name: s for s in TECHNOLOGY_SPECS}["tech_rate"]
    assert spec.lower <= lo < 1e-4 and spec.upper - 1e-4 < hi <= spec.upper  # never negative, never past 4 %/yr


def test_per_site_level_and_rate_recover_two_planted_counties():
    """With the per-site level too, two sites differing in level (×0.8 and ×1.15) and in rate (0.8 % and 2.6 %
    per year) are both recovered from their series alone; levels stay inside exp(±LEVEL_MAX)."""
    import equinox as eqx
    import optax

    from kgml.models.hybrid import TechnologyTrend

    years = jnp.arange(1980.0, 2011.0)
    rates, levels = (0.008, 0.026), (0.8, 1.15)
    noise = jnp.asarray(np.random.default_rng(1).normal(0.0, 0.03, (2, years.size)), jnp.float32)
    obs = jnp.stack([8.0 * lv * technology_factor(years, r, 0.5, 1995.0) for r, lv in zip(rates, levels, strict=True)])
    obs = obs * jnp.exp(noise)
    trend = TechnologyTrend.create(1995.0, n_sites=2, site_level=True)
    assert float(trend.level(jnp.asarray(0))) == pytest.approx(1.0)

    def loss(tr):
        pred = jnp.stack([8.0 * tr(years, jnp.asarray(i)) for i in range(2)])
        return jnp.mean((jnp.log(pred) - jnp.log(obs)) ** 2)

    opt = optax.adam(3e-3)
    state = opt.init(eqx.filter(trend, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(p, s):
        upd, s = opt.update(eqx.filter_grad(loss)(p), s)
        return eqx.apply_updates(p, upd), s

    for _ in range(1500):
        trend, state = step(trend, state)
    for i in range(2):
        assert float(trend.theta(jnp.asarray(i))["tech_rate"]) == pytest.approx(rates[i], abs=0.002)
        assert float(trend.level(jnp.asarray(i))) == pytest.approx(levels[i], rel=0.03)
    assert float(trend.level(jnp.asarray(-1))) == 1.0  # an unknown site: no level of its own
    far = eqx.tree_at(lambda t: t.site_level, trend, jnp.asarray([-100.0, 100.0]))
    lmax = TechnologyTrend.LEVEL_MAX
    assert np.exp(-lmax) - 1e-6 <= float(far.level(jnp.asarray(0))) and float(far.level(jnp.asarray(1))) <= np.exp(lmax) + 1e-6
    with pytest.raises(ValueError, match="per-site level needs n_sites"):
        TechnologyTrend.create(1995.0, site_level=True)


@pytest.mark.slow
def test_per_site_rate_config_needs_the_trend_and_a_site_index(planted):
    """``model.technology_site_rate`` builds one rate per region of ``data.region`` (here the site IDs) in the
    hybrid, and untrained it is the shared-rate hybrid exactly; without the trend, without the region
    coordinate, or for the network, a clear config error."""
    from kgml.config import ConfigError
    from kgml.experiment import Run, new_model, predict_dataset, prepare

    ds, _, _ = planted
    ds = ds.assign_coords(site_key=("site", ds.site.values.astype(str)))
    base = _trend_config("hybrid")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, region="site_key"),
                              model=dataclasses.replace(base.model, technology_site_rate=True))
    prepared = prepare(ds, cfg)
    model = new_model(cfg, prepared)
    assert model.technology.site_rate.shape == (1,)
    shared_cfg = dataclasses_replace_model(cfg, technology_site_rate=False)
    shared = new_model(shared_cfg, prepared)
    assert shared.technology.site_rate is None
    a = predict_dataset(Run(model, cfg, prepared), ds, batch_size=12).crop_yield.values
    b = predict_dataset(Run(shared, shared_cfg, prepared), ds, batch_size=12).crop_yield.values
    np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ConfigError, match="technology_site_rate needs technology_trend"):
        no_trend = dataclasses_replace_model(cfg, technology_trend=False)
        new_model(no_trend, prepare(ds, no_trend))
    with pytest.raises(ConfigError, match="region coordinate 'county'"):
        no_region = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, region="county"))
        new_model(no_region, prepare(ds, no_region))
    with pytest.raises(ConfigError, match="are for kind = 'hybrid'"):
        neural = dataclasses_replace_model(cfg, kind="neural")
        new_model(neural, prepare(ds, neural))
    level_only = dataclasses_replace_model(cfg, technology_site_rate=False, technology_site_level=True)
    tech = new_model(level_only, prepare(ds, level_only)).technology
    assert tech.site_level.shape == (1,) and tech.site_rate is None
    with pytest.raises(ConfigError, match="technology_site_level needs technology_trend"):
        no_trend = dataclasses_replace_model(level_only, technology_trend=False)
        new_model(no_trend, prepare(ds, no_trend))
    leveled = dataclasses_replace_model(cfg, technology_site_level=True)
    tech = new_model(leveled, prepare(ds, leveled)).technology
    assert tech.site_level.shape == (1,) and tech.site_rate.shape == (1,)
    # the learned level of each site is written with the predictions (theta_tech_level, per site)
    import equinox as eqx

    from kgml.models.hybrid import TechnologyTrend

    prepared_level = prepare(ds, level_only)
    model = new_model(level_only, prepared_level)
    model = eqx.tree_at(lambda m: m.technology.site_level, model, jnp.asarray([0.05]))
    pred = predict_dataset(Run(model, level_only, prepared_level), ds, batch_size=12)
    expected = np.exp(TechnologyTrend.LEVEL_MAX * np.tanh(TechnologyTrend.GAIN * 0.05))
    np.testing.assert_allclose(pred.theta_tech_level.values, expected, rtol=1e-6)
    assert pred.theta_tech_level.attrs["units"] == "1"


def test_validation_rows_pool_the_folds_validation_rmse_per_seed(tmp_path):
    """`kgml.compare.yields.validation_rows` reads ``val_rmse_crop_yield`` of every fold and seed: per seed the
    root of the mean squared RMSE over the folds, then mean ± sd over seeds; a model missing it on a fold has
    no row."""
    from kgml.compare.yields import validation_markdown, validation_rows
    from kgml.data.splits import Part, Split

    splits = [Split(f"forecast5_from{y}", "forecast", 0, "year", Part(["a"]), Part(), Part(["b"]), Part())
              for y in (1998, 2003)]
    values = {("m", 0): (1.0, 2.0), ("m", 1): (2.0, 2.0), ("n", 0): (1.0, None)}
    for (model, seed), per_fold in values.items():
        for split, v in zip(splits, per_fold, strict=True):
            folder = tmp_path / "s" / "folds" / "forecast" / split.name
            folder.mkdir(parents=True, exist_ok=True)
            d = xr.Dataset({"crop_yield": ("site", [1.0])}, coords={"site": ["a"]})
            if v is not None:
                d.attrs["val_rmse_crop_yield"] = v
            d.to_netcdf(folder / (f"{model}.nc" if seed == 0 else f"{model}_seed{seed}.nc"))
    rows = validation_rows({"forecast": splits}, [tmp_path], ["m", "n"], "s")
    assert [r["model"] for r in rows] == ["m"]
    per_seed = [np.sqrt((1.0 + 4.0) / 2), 2.0]
    assert rows[0]["n_seeds"] == 2
    assert rows[0]["val_rmse"] == pytest.approx(np.mean(per_seed))
    assert rows[0]["val_rmse_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert "| m | 2 | 1.791 ± 0.30 |" in validation_markdown(rows, "s")


def test_floor_rows_find_the_drought_year_and_the_weather_share_a_target_needs(tmp_path):
    """`kgml.compare.yields.floor_rows` on a planted series (per-unit lines + noise + one drought year): the
    hindsight line's RMSE is the one `np.polyfit` on all years gives, the drought year is found, the share of
    variance a 10 % target needs is 1 − (0.1 · mean / RMSE)², a perfect forecast scores 0 % and a model
    predicting the hindsight line has r = 0 with its departures."""
    from kgml.compare.yields import _hindsight_lines, floor_markdown, floor_rows
    from kgml.data.splits import Part, Split

    rng = np.random.default_rng(3)
    years = np.arange(1980, 2014)
    sites = [f"u{i}" for i in range(6)]
    y = (5 + rng.uniform(-1, 1, (6, 1)) + 0.12 * (years - 1980)[None, :] + rng.normal(0, 0.6, (6, years.size)))
    y[:, years == 2012] -= 4.0
    ds = xr.Dataset({"crop_yield": (("site", "year"), y)}, coords={"site": sites, "year": years})
    splits = [Split(f"forecast5_from{o}", "forecast", 0, "year", Part(sites, years=range(1980, o - 1)),
                    Part(sites, years=(o - 1, o)), Part(sites, years=range(o + 1, o + 6)), Part())
              for o in (2003, 2008)]
    line = _hindsight_lines(ds["crop_yield"])
    for name, pred in {"perfect": y, "line": line}.items():
        folder_preds = xr.Dataset({"crop_yield": (("site", "year"), pred)}, coords=ds.coords)
        for split in splits:
            folder = tmp_path / "s" / "folds" / "forecast" / split.name
            folder.mkdir(parents=True, exist_ok=True)
            folder_preds.sel(year=list(split.test.years)).to_netcdf(folder / f"{name}.nc")
    f = floor_rows(ds, splits, [tmp_path], ["perfect", "line", "absent"], "s")
    assert f["worst_year"] == 2012 and f["n_worst"] == 6 and f["n_cells"] == 60
    test = (years >= 2004)[None, :].repeat(6, 0)
    fit = np.array([np.polyval(np.polyfit(years, row, 1), years) for row in y])
    rmse = np.sqrt(np.mean((fit - y)[test] ** 2))
    assert f["hindsight_pct"] == pytest.approx(100 * rmse / y[test].mean())
    assert f["needed_pct"] == pytest.approx(100 * (1 - (0.1 * y[test].mean() / rmse) ** 2))
    assert f["hindsight_pct_without_worst"] < f["hindsight_pct"]
    rows = {r["model"]: r for r in f["models"]}
    assert set(rows) == {"perfect", "line"}
    assert rows["perfect"]["pct"] == pytest.approx(0.0, abs=1e-9)
    assert rows["line"]["pct"] == pytest.approx(f["hindsight_pct"])
    assert rows["line"]["worst_share"] > 30 and np.isnan(rows["line"]["corr_hindsight_residual"])
    assert rows["perfect"]["corr_hindsight_residual"] == pytest.approx(1.0)
    assert "worst year 2012" in floor_markdown(f)
