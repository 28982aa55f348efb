"""The studies of experiments/ are configs of the `kgml bench shift` engine: a study's ``hybrid_per_region`` is
the bench's (same predictions for the same fold, config and seed, also for a held-out region without training
sites, which takes the nearest region's model), a failing slot names itself and its fold, a slot that does not
apply is recorded, and a study config with an unknown key is rejected naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from kgml.compare import runner, studies
from kgml.config import ConfigError, config_from_dict
from kgml.data.splits import load_splits

TINY_TOML = """
name = "tiny"
seed = 0

[study]
models = ["hybrid_per_region"]
folds = ["unit_kfold"]
k = 3
max_folds = 1
val_fraction = 0.0

[data]
source = "kgml.synthetic.make_corpus"
vegetation = "maize"
features = ["tair", "sw_in", "vpd", "precip"]
static = []
daily_targets = ["nee"]
yield_target = false
window_days = 365
region = "state"

[model]
hidden = 8
location_dim = 8
n_scales = 2
embed_dim = 8
head_hidden = 8
region_dim = 2

[train]
steps = 3
batch_size = 1
eval_every = 3
warmup_steps = 1
checkpoint_every = 1000
"""


@pytest.fixture(scope="module")
def tiny_corpus():
    """One synthetic maize site in each of IA, IL and NE, one year: every held-out site's state has no
    training site in a 3-fold split."""
    from kgml.synthetic import STATES, CorpusSpec, make_corpus

    return make_corpus(CorpusSpec(states=STATES, vegetation=("maize",), sites_per_block=1, years=1, seed=0))


@pytest.fixture()
def tiny_study(tiny_corpus, monkeypatch, tmp_path):
    spec = studies.StudySpec("tiny", "three synthetic sites", lambda root, s: tiny_corpus, ("nee",), "daily",
                             "site", "sites")
    monkeypatch.setitem(studies.STUDIES, "tiny", spec)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return spec, path


@pytest.mark.slow
def test_study_hybrid_per_region_is_the_bench_model(tiny_study, tiny_corpus, tmp_path):
    from kgml.compare.suites import get_suite
    from kgml.experiment import select_sites

    _, path = tiny_study
    res = studies.run_study("tiny", data_dir=tmp_path, out=tmp_path / "runs", config_path=path, progress=False)
    assert res.status["hybrid_per_region"] == "ok"
    d = res.directory
    (split,) = load_splits(d / "splits.json")
    labels = dict(zip(tiny_corpus.site.values.astype(str), tiny_corpus.state.values.astype(str), strict=True))
    (held,) = split.test.units
    assert labels[held] not in {labels[u] for u in split.train.units}  # a region without training sites
    with xr.open_dataset(d / "folds" / "unit_kfold" / split.name / "hybrid_per_region.nc") as f:
        study_pred = f.load()
    assert study_pred.attrs["region_models"] == ", ".join(sorted({labels[u] for u in split.train.units}))

    # The bench's slot on the same data, fold, config (loss scales included) and seed.
    cfg = config_from_dict(json.loads((d / "config.json").read_text()))
    ds = select_sites(tiny_corpus, cfg)
    ctx = runner.FoldContext(get_suite("synthetic_shift"), ds, split, tmp_path / "bench" / "folds" / "k" / split.name,
                             cfg, False, "theta+cycle")
    bench_pred = runner.SLOTS["hybrid_per_region"](ctx)
    assert study_pred.site.values.astype(str).tolist() == [held]
    a = study_pred["nee"].values
    b = bench_pred["nee"].sel(site=[held]).values
    assert np.isfinite(a).any()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ... and not the global model, which the studies used for such a region before they ran on the engine.
    glob = ctx.predict(ctx.global_run(), ctx.heldout_ds())["nee"].values
    assert not np.allclose(a, glob, rtol=1e-3, atol=1e-4)


def test_engine_failure_policy(tiny_study, tiny_corpus, tmp_path):
    spec, path = tiny_study
    config, s = studies.load_study_config(path)
    folds = studies.make_folds(tiny_corpus, spec, s)
    suite = studies.study_suite(spec, config, s, tiny_corpus)

    def not_here(ctx):
        raise runner.NotAvailable("needs something this study lacks")

    def broken(ctx):
        raise ValueError("a bug")

    status = runner.run_folds(suite, tiny_corpus, folds, tmp_path, config, ["na"], slots={"na": not_here},
                              progress=False)
    assert status == {"na": "not available: needs something this study lacks"}
    with pytest.raises(ValueError, match="a bug") as info:
        runner.run_folds(suite, tiny_corpus, folds, tmp_path, config, ["broken"], slots={"broken": broken},
                         progress=False)
    note = " ".join(info.value.__notes__)
    assert "'broken'" in note and f"unit_kfold/{folds['unit_kfold'][0].name}" in note


def test_study_config_unknown_key_named(tmp_path):
    for section, text in (("study", "[study]\nmax_fold = 1\n"), ("model", "[model]\nhiden = 8\n"),
                          ("study", "[quick.study]\nrf_tree = 3\n")):
        path = tmp_path / "bad.toml"
        path.write_text('name = "x"\n' + text)
        key = text.split("\n")[1].split(" =")[0]
        with pytest.raises(ConfigError, match=rf"unknown key '{key}' in section \[{section}\]"):
            studies.load_study_config(path, quick=True)
    # the study aliases are the engine's slot functions
    slots = studies.study_slots()
    assert slots["hybrid"] is runner.SLOTS["hybrid_global"] and slots["process"] is runner.SLOTS["process_global"]
    assert slots["hybrid_per_region"] is runner.SLOTS["hybrid_per_region"]


def test_demo_skill_is_the_benchmark_scorer(tiny_corpus):
    """The demo's table cells (`kgml.compare.demo_hybrid._skill`, from `kgml.evaluation.score_sites`) equal the pooled metrics
    over all held-out site-days (and within each state) that the demo computed by hand before."""
    from kgml import metrics
    from kgml.compare.demo_hybrid import _skill

    ds = tiny_corpus
    rng = np.random.default_rng(0)
    pred = xr.Dataset({"nee": ds.true_nee + rng.normal(0, 0.5, ds.true_nee.shape),
                       "crop_yield": ds.true_crop_yield * 1.1,
                       "theta_rref_rh": ds.theta_rref_rh * 1.2})
    out = _skill(pred, ds)
    assert set(out) == {"all", *ds.state.values.astype(str)}
    for state, sc in out.items():
        sel = np.ones(ds.sizes["site"], bool) if state == "all" else ds.state.values == state
        p, t = pred.nee.values[sel], ds.true_nee.values[sel]
        assert sc["nee_rmse"] == pytest.approx(metrics.rmse(p, t), rel=1e-9)
        assert sc["nee_r2"] == pytest.approx(metrics.r2(p, t), rel=1e-9)
        assert sc["nee_nse"] == pytest.approx(metrics.nse(p, t), rel=1e-9)
        assert sc["yield_rmse"] == pytest.approx(
            metrics.rmse(pred.crop_yield.values[sel], ds.true_crop_yield.values[sel]), rel=1e-9)
        assert sc["rref_err"] == pytest.approx(0.2, rel=1e-5)


def test_yield_studies_carry_the_benchs_technology_trend(tiny_study, tiny_corpus):
    """A yield study's suite has the reference year of its bench suite (the same data), so its trended slots
    (``hybrid_trend``, ``yield_unit_trend``, … in the study configs) configure the trend as the bench does; a flux
    study has none, and the trended slot says it does not apply instead of running without the trend."""
    from kgml.compare.suites import get_suite

    _, path = tiny_study
    config, s = studies.load_study_config(path)
    years = {}
    for name, spec in studies.STUDIES.items():
        suite = studies.study_suite(spec, config, s, tiny_corpus)
        years[name] = suite.trend_reference_year
        if spec.trend_suite:
            cfg = runner.trend_config(config, suite)
            assert cfg.model.technology_trend and cfg.model.technology_reference_year == suite.trend_reference_year
        else:
            with pytest.raises(runner.NotAvailable, match="trend"):
                runner.trend_config(config, suite)
    assert years["midwest_states"] == get_suite("state_yield").trend_reference_year == 1946
    assert years["illinois_corn"] == get_suite("il_corn_yield").trend_reference_year == 1996
    assert years["fluxnet_regions"] == years["cosore_soil_respiration"] == years["us_ne1_daily"] == 0
    for name in ("midwest_states", "illinois_corn"):  # the shipped configs run the trended slots and naive lines
        _, full = studies.load_study_config(studies.study_config_path(name))
        assert {"hybrid_trend", "yield_unit_trend", "yield_trend_rf"} <= set(full.models), name
