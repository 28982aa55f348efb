"""The hybrid model: it starts as the process model, keeps the carbon identities, passes gradients to every
part, recovers known parameters from synthetic truth, and runs through the whole pipeline on tiny data."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from kgml import synthetic as syn
from kgml.config import CorpusConfig, DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from kgml.data.normalisation import Normaliser
from kgml.models.hybrid import (
    HybridObjective,
    TaskSpec,
    build_hybrid,
    context_pool,
    predict,
    prepare_windows,
    target_scales,
)
from kgml.training import fit
from process_models.simulate import simulate, simulate_sites
from process_models.soil_respiration import Q10Respiration

FEATURES = ("tair", "sw_in", "vpd", "precip", "tsoil")


@pytest.fixture(scope="module")
def maize_setup():
    """Tiny maize corpus (two whole years, a third of the sites with monthly towers) and its windows."""
    ds = syn.make_corpus(syn.CorpusSpec(vegetation=("maize",), sites_per_block=2, years=2, seed=11,
                                        monthly_fraction=0.5))
    norm = Normaliser.fit(ds, (*FEATURES, "soil_carbon"))
    task = TaskSpec(daily=("nee", "gpp", "reco", "rsoil"), monthly=("nee",), annual=True)
    scales = target_scales(ds, task)
    pool = context_pool(ds, static=("soil_carbon",), normaliser=norm, task=task, scales=scales)
    data = prepare_windows(ds, features=FEATURES, static=("soil_carbon",), task=task, normaliser=norm,
                           region="state", region_map={"IA": 0, "IL": 1, "NE": 2}, context=pool, n_context=2,
                           scales=scales)
    model = build_hybrid(
        syn.build_model("maize"), n_features=data.inputs.x.shape[-1], n_static=1,
        n_summary=data.inputs.context_summary.shape[-1], key=jax.random.PRNGKey(0), hidden=8, location_dim=8,
        embed_dim=8, head_hidden=8, n_regions=3, site_attention=True, n_heads=2,
        learned=("vmax25_c4", "rref_rh", "k_ext"), global_params=("e0_rh",), time_varying=("rref_rh",),
        residual=("gpp", "reco"), residual_scale=1.0,
    )
    return ds, data, model, task, scales


@pytest.mark.slow
def test_untrained_hybrid_is_the_process_model(maize_setup):
    ds, data, model, _, _ = maize_setup
    inputs, _ = data.batch(np.arange(2))
    pred = eqx.filter_jit(predict)(model, inputs)
    process = syn.build_model("maize")
    ref = simulate(process, process.default_parameters(), jax.tree_util.tree_map(lambda a: a[0], inputs.met)).outputs
    np.testing.assert_allclose(pred.nee[0], ref.nee, atol=1e-4)
    np.testing.assert_allclose(pred.gpp[0], ref.gpp, atol=1e-4)
    np.testing.assert_allclose(pred.crop_yield[0], ref.crop_yield[364::365], atol=1e-4)
    for name, value in pred.theta.items():
        assert float(jnp.max(jnp.abs(value - process.default_parameters()[name]))) < 1e-3 * max(
            1.0, abs(float(process.default_parameters()[name]))), name


def _perturbed(model, scale, seed=0):
    """Every floating array of the model plus noise (moves zero-initialised last layers off zero)."""
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(arrays)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


@pytest.mark.slow
def test_structural_constraints_hold_with_large_residuals(maize_setup):
    _, data, model, _, _ = maize_setup
    # a residual head pushed hard in both directions
    model = eqx.tree_at(lambda m: m.residual_head.linear.bias, model, jnp.array([-30.0, 30.0]))
    model = _perturbed(model, 0.5, seed=1)
    pred = eqx.filter_jit(predict)(model, data.batch(np.arange(4))[0])
    assert np.all(np.asarray(pred.gpp) >= 0.0) and np.all(np.asarray(pred.reco) >= 0.0)
    np.testing.assert_array_equal(pred.nee, pred.reco - pred.gpp)  # exactly
    assert float(jnp.max(jnp.abs(pred.residual["gpp"]))) <= 1.0  # bounded by residual_scale
    assert pred.theta_daily["rref_rh"].shape == (4, 365)
    for spec in model.process.parameter_specs:  # physical parameters stay in bounds
        v = np.asarray(pred.theta_daily[spec.name] if spec.name in pred.theta_daily else pred.theta[spec.name])
        assert np.all((v >= spec.lower) & (v <= spec.upper)), spec.name


@pytest.mark.slow
def test_gradients_reach_heads_encoder_attention_and_physics(maize_setup):
    _, data, model, task, scales = maize_setup
    model = _perturbed(model, 0.05)
    objective = HybridObjective.create(task, scales)
    batch = data.batch(np.arange(4))
    (loss, aux), grads = eqx.filter_jit(eqx.filter_value_and_grad(objective, has_aux=True))(model, batch)
    assert np.isfinite(float(loss)) and float(aux["nee_monthly"]) > 0 and float(aux["crop_yield"]) > 0

    def norm(tree):
        leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
        assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
        return float(sum(jnp.sum(x**2) for x in leaves)) ** 0.5

    for part in ("encoder", "location", "embed", "context_proj", "site_attention", "parameter_head",
                 "residual_head"):
        assert norm(getattr(grads, part)) > 0.0, part
    g_e0 = float(grads.global_unconstrained["e0_rh"])
    assert g_e0 != 0.0
    # the physics gradient is the derivative of the loss: compare with a central finite difference
    h = 0.02

    def loss_at(delta):
        m = eqx.tree_at(lambda m: m.global_unconstrained["e0_rh"], model,
                        model.global_unconstrained["e0_rh"] + delta)
        return float(eqx.filter_jit(objective)(m, batch)[0])

    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert g_e0 == pytest.approx(fd, rel=0.05, abs=1e-4)


def test_windows_align_targets_at_their_resolution(maize_setup):
    ds, data, _, _, _ = maize_setup
    t = data.targets
    assert data.inputs.x.shape[1:] == (365, len(FEATURES) + 2) and t.monthly.shape[1:] == (12, 1)
    for w in range(len(data)):
        s, year = data.site[w], int(data.years[w])
        site = ds.site.values[s]
        # annual yield of the window's year
        y = ds.crop_yield.sel(site=site, year=year).values
        assert (np.isfinite(y) and t.annual[w, 0] == pytest.approx(float(y))) or not t.annual_mask[w, 0]
        # daily NEE of the window's days
        np.testing.assert_array_equal(t.daily_mask[w, :, 0], np.isfinite(ds.nee.sel(site=site).values[
            data.start[w] : data.start[w] + 365]))
        # monthly NEE of the window's months (month code = year*12 + month-1)
        mm = ds.nee_monthly.sel(site=site, month=year * 12 + np.arange(12)).values
        np.testing.assert_array_equal(t.monthly_mask[w, :, 0], np.isfinite(mm))
        np.testing.assert_allclose(t.monthly[w, :, 0][np.isfinite(mm)], mm[np.isfinite(mm)], rtol=1e-6)
        # context sites are other sites, never the site itself
        ctx = data.inputs.context_mask[w]
        assert ctx.any() and np.all(data.inputs.context_distance_km[w][ctx] > 0)
        assert not np.any(np.isclose(data.inputs.context_lat[w][ctx], ds.lat.values[s]) &
                          np.isclose(data.inputs.context_lon[w][ctx], ds.lon.values[s]))
    assert t.month_index.max() == 11 and t.month_index.min() == 0


def test_windows_need_a_complete_daily_axis(maize_setup):
    """Whole-year windows are cut (by `kgml.data.batching.make_windows`) every 365 days from the first 1 January;
    a window over a time axis with a missing day would span more than its days: refused, saying what to do."""
    ds, data, _, task, scales = maize_setup
    norm = Normaliser.fit(ds, (*FEATURES, "soil_carbon"))
    late = ds.isel(time=slice(40, None))  # starts in February: the first window starts on the next 1 January
    w = prepare_windows(late, features=FEATURES, static=("soil_carbon",), task=task, normaliser=norm, scales=scales)
    assert len(w) == ds.sizes["site"] and np.all(w.start == 365 - 40) and np.all(w.years == data.years.max())
    gappy = ds.isel(time=np.r_[0:100, 101:ds.sizes["time"]])
    with pytest.raises(ValueError, match="not contiguous.*366 calendar days.*Reindex"):
        prepare_windows(gappy, features=FEATURES, static=("soil_carbon",), task=task, normaliser=norm, scales=scales)


# --- parameter recovery --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def respiration_truth():
    """Grassland sites with Q10 = 1.5 everywhere and a base respiration rref_rh that varies from site to site
    as a function of an observed soil-carbon attribute (the only way a network can know it)."""
    spec = syn.CorpusSpec(vegetation=("grassland",), sites_per_block=6, years=1, varying=("rref_rh",), prior_sd=0.5,
                          fixed={"q10_rh": 1.5}, covariate_params=("rref_rh",), covariate_corr=1.0,
                          soil_respiration="q10", seed=1)
    return syn.make_corpus(spec)


@pytest.mark.slow
@pytest.mark.parametrize("features", [("sw_in", "vpd", "precip"), ("sw_in", "vpd", "precip", "tair", "tsoil")],
                         ids=["no-temperature-input", "temperature-input"])
@pytest.mark.slow
def test_recovers_q10_and_site_varying_base_respiration(respiration_truth, features):
    """Q10 is learned as one global value and rref_rh per site from the static attribute; with temperature
    also among the network's inputs (the equifinality trap of hybrid respiration models, Reichstein et al.
    2022), the static-per-site structure still forces the temperature response into Q10."""
    ds = respiration_truth
    norm = Normaliser.fit(ds, (*features, "soil_carbon"))
    task = TaskSpec(daily=("reco", "rsoil"), monthly=(), annual=False)
    scales = target_scales(ds, task)
    data = prepare_windows(ds, features=features, static=("soil_carbon",), task=task, normaliser=norm,
                           scales=scales)
    process = syn.build_model("grassland", Q10Respiration())
    model = build_hybrid(process, n_features=data.inputs.x.shape[-1], n_static=1, n_summary=4,
                         key=jax.random.PRNGKey(0), hidden=8, location_dim=8, embed_dim=8, head_hidden=16,
                         learned=("rref_rh",), global_params=("q10_rh",))
    start_q10 = float(model.specs["q10_rh"].to_physical(model.global_unconstrained["q10_rh"]))
    assert abs(start_q10 - 1.5) > 0.4  # starts at the default 2.0, far from the truth
    # 23 chamber values per site vs ~270 tower days: weight chambers down so neither dominates per value
    objective = HybridObjective.create(task, scales, {"rsoil": 0.1}, prior=0.0)
    cfg = TrainConfig(steps=500, batch_size=6, learning_rate=0.02, eval_every=100, patience=100, warmup_steps=10)
    result = fit(model, data, None, objective, cfg, progress=False)
    pred = eqx.filter_jit(predict)(result.model, data.batch()[0])
    q10 = float(pred.theta["q10_rh"][0])
    rref = np.asarray(pred.theta["rref_rh"])
    truth = ds.theta_rref_rh.values[data.site]
    assert q10 == pytest.approx(1.5, rel=0.05)
    rel = np.abs(rref / truth - 1.0)
    assert np.median(rel) < 0.05 and np.max(rel) < 0.10, (q10, rel.round(3))


def test_truth_reproduces_the_observations(respiration_truth):
    """The synthetic truth is what the process model gives with the stored parameters (so recovering them is
    a meaningful target)."""
    ds = respiration_truth
    process = syn.build_model("grassland", Q10Respiration())
    theta = {s.name: jnp.asarray(ds[f"theta_{s.name}"].values) for s in process.parameter_specs}
    out = simulate_sites(process, theta, jax.tree_util.tree_map(jnp.asarray, syn.met_from_dataset(ds))).outputs
    np.testing.assert_allclose(out.reco, ds.true_reco.values, rtol=1e-5, atol=1e-5)


# --- the whole pipeline -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_smoke(tmp_path):
    """Config → synthetic data → train (with checkpoint) → predictions netCDF, metrics, figures → reload the
    run → identical predictions → fine-tune from it → command line."""
    from kgml.cli import main
    from kgml.config import save_config
    from kgml.experiment import load_run, predict_dataset, run_experiment

    cfg = ExperimentConfig(
        name="smoke",
        data=DataConfig(corpus=CorpusConfig(vegetation=("grassland",), sites_per_block=2, years=1),
                        vegetation="grassland", daily_targets=("nee", "reco"), yield_target=False, n_context=2),
        model=ModelConfig(hidden=4, location_dim=4, embed_dim=4, head_hidden=4, learned=("rref_rh", "lue_max"),
                          site_attention=True, residual=("reco",)),
        train=TrainConfig(steps=4, batch_size=2, eval_every=2),
    )
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    for name in ("config.json", "splits.json", "predictions.nc", "metrics.json", "metrics.md", "nee_heldout.png",
                 "training.png", "checkpoint/best.eqx", "checkpoint/meta.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert any(r["variable"] == "nee" and r["reference"] == "truth" for r in result["rows"])
    run = load_run(tmp_path / "run")
    assert run.config == cfg and run.prepared.region_map == {"IA": 0, "IL": 1, "NE": 2}
    with xr.open_dataset(tmp_path / "run" / "predictions.nc") as saved:
        again = predict_dataset(run, result["run"].split.select(
            syn.make_corpus(syn.CorpusSpec(vegetation=("grassland",), sites_per_block=2, years=1)), "test"))
        np.testing.assert_allclose(again.nee.values, saved.nee.sel(site=again.site.values).values, atol=1e-5)
    # fine-tuning from the run through the command line, as a config delta
    delta = tmp_path / "delta.toml"
    delta.write_text("[train]\nsteps = 2\ntrainable = [\"parameter_head\"]\n")
    assert main(["finetune", str(tmp_path / "run"), str(delta), "--out", str(tmp_path / "ft"), "--no-figures"]) == 0
    tuned = load_run(tmp_path / "ft")
    assert tuned.config.init_from and tuned.config.train.steps == 2
    np.testing.assert_array_equal(tuned.model.encoder.recurrent.cell.weight_ih, run.model.encoder.recurrent.cell.weight_ih)
    save_config(dataclasses.replace(cfg, name="smoke-cli"), tmp_path / "cfg.json")
    assert main(["predict", str(tmp_path / "ft"), "--out", str(tmp_path / "p.nc")]) == 0
    with xr.open_dataset(tmp_path / "p.nc") as p:
        assert {"nee", "gpp", "reco", "theta_rref_rh"} <= set(p.data_vars)
    # one model per state: sub-runs per region, pooled held-out metrics
    per_state = dataclasses.replace(cfg, name="smoke-per-state", grouping="per_region",
                                    data=dataclasses.replace(cfg.data, test_fraction=0.5, val_fraction=0.0))
    result = run_experiment(per_state, tmp_path / "per_state", progress=False, figures=False)
    assert sorted(result["runs"]) == ["IA", "IL", "NE"]
    assert (tmp_path / "per_state" / "IL" / "checkpoint" / "best.eqx").exists()
    assert {r["key"] for r in result["rows"] if r["scope"] == "group"} == {"IA", "IL", "NE"}


def test_predictions_to_dataset_equals_the_loop_over_windows():
    """Window predictions back on (site, time): where two-year windows overlap, the later window's value, as a loop
    over the windows in order writes; yields per (site, year) the same way; θ the mean over a site's windows, NaN
    for a site without one."""
    import types

    from kgml.models.hybrid import _UNITS, predictions_to_dataset

    rng = np.random.default_rng(1)
    n_s, n_t, win = 5, 1100, 730
    site, start = np.array([0, 0, 1, 1, 2, 4, 4]), np.array([0, 365, 0, 365, 0, 0, 365])
    class Data(types.SimpleNamespace):
        def __len__(self):
            return len(self.site)

    data = Data(sites=[f"s{i}" for i in range(n_s)], times=np.arange(n_t), site=site, start=start,
                years=2000 + start // 365)
    fields = {k: rng.normal(size=(len(site), win)).astype(np.float32) for k in _UNITS}
    pred = types.SimpleNamespace(**fields, crop_yield=rng.normal(size=(len(site), 2)).astype(np.float32),
                                 theta={"a": rng.normal(size=len(site)).astype(np.float32)})
    ds = predictions_to_dataset(pred, data)
    for name in _UNITS:
        ref = np.full((n_s, n_t), np.nan, np.float32)
        for w in range(len(site)):
            ref[site[w], start[w]:start[w] + win] = fields[name][w]
        np.testing.assert_array_equal(ds[name].values, ref)
    years = ds.year.values
    ref = np.full((n_s, years.size), np.nan, np.float32)
    for w in range(len(site)):
        for j in range(2):
            ref[site[w], np.searchsorted(years, data.years[w] + j)] = pred.crop_yield[w, j]
    np.testing.assert_array_equal(ds.crop_yield.values, ref)
    theta = ds.theta_a.values
    for s in range(n_s):
        sel = site == s
        assert (np.isnan(theta[s]) and not sel.any()) or theta[s] == pytest.approx(pred.theta["a"][sel].mean())
