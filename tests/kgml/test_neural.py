"""Model kinds: the pure-neural model (carbon identities, same size as the hybrid), the process model with a
calibrated global parameter set (untrained = the process model), and checkpoints of every kind."""

from __future__ import annotations

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml import synthetic as syn
from kgml.config import (
    ConfigError,
    CorpusConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
)
from kgml.experiment import count_parameters, load_run, new_model, prepare, train_run, windows
from kgml.models.hybrid import HybridModel, ProcessModel, predict
from kgml.models.neural import NeuralModel, head_parameter_count
from process_models.simulate import simulate

_predict = eqx.filter_jit(predict)

#: Tiny: 2 maize sites, 1 year, hidden 8, 2 steps.
CFG = ExperimentConfig(
    name="kinds",
    data=DataConfig(corpus=CorpusConfig(states=("IA",), sites_per_block=2, years=1, seed=3), val_fraction=0.0,
                    test_fraction=0.0, n_context=1),
    model=ModelConfig(hidden=8, location_dim=8, embed_dim=8, head_hidden=8, site_attention=True,
                      learned=("vmax25_c4", "rref_rh", "k_ext"), global_params=("e0_rh",), residual=("gpp",)),
    train=TrainConfig(steps=2, batch_size=2, eval_every=1, warmup_steps=0, learning_rate=0.01),
)


def _kind(kind: str, config: ExperimentConfig = CFG) -> ExperimentConfig:
    residual = () if kind == "process" else config.model.residual
    return dataclasses.replace(config, name=f"kinds-{kind}",
                               model=dataclasses.replace(config.model, kind=kind, residual=residual))


@pytest.fixture(scope="module")
def setup():
    from kgml.experiment import load_data

    ds = load_data(CFG)
    prepared = prepare(ds, CFG)
    data = windows(ds, CFG, prepared, require_targets=False)
    return ds, prepared, data


def _perturbed(model, scale, seed=0):
    """Every floating array plus noise (numpy: no per-shape compilation), moving zero-initialised layers."""
    rng = np.random.default_rng(seed)
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(arrays)
    leaves = [np.asarray(a) + scale * rng.normal(size=a.shape).astype(np.float32) for a in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


@pytest.mark.slow
def test_neural_model_keeps_the_carbon_identities(setup):
    _, prepared, data = setup
    model = new_model(_kind("neural"), prepared)
    assert isinstance(model, NeuralModel) and model.process is None
    inputs, _ = data.batch()
    start = _predict(model, inputs)  # untrained: constant at the targets' means
    np.testing.assert_allclose(start.gpp[0, 0], prepared.means["gpp"], rtol=1e-4)
    np.testing.assert_allclose(start.crop_yield[0, 0], prepared.means["crop_yield"], rtol=1e-4)
    pred = _predict(_perturbed(model, 0.3, seed=2), inputs)  # heads far from their start, pre-activations < 0
    assert pred.gpp.shape == pred.reco.shape == pred.rsoil.shape == (len(data), 365)
    assert pred.crop_yield.shape == (len(data), 1)
    for name in ("gpp", "reco", "rsoil", "crop_yield"):
        v = np.asarray(getattr(pred, name))
        assert np.all(np.isfinite(v)) and np.all(v >= 0.0), name
    assert float(jnp.std(pred.gpp)) > 0.0 and float(jnp.std(pred.reco)) > 0.0
    np.testing.assert_array_equal(pred.nee, pred.reco - pred.gpp)  # exactly
    assert np.all(np.isnan(pred.et)) and np.all(np.isnan(pred.gpp_physics))  # not predicted
    assert pred.theta == {} and pred.residual == {}


@pytest.mark.parametrize("sizes", [{}, {"hidden": 16, "embed_dim": 16, "head_hidden": 32, "residual": ("gpp", "reco"),
                                        "learned": None, "time_varying": ("rref_rh",)}])
def test_neural_model_has_the_size_of_the_hybrid(setup, sizes):
    _, prepared, _ = setup
    cfg = dataclasses.replace(CFG, model=dataclasses.replace(CFG.model, **sizes))
    hybrid, neural = new_model(cfg, prepared), new_model(_kind("neural", cfg), prepared)
    assert isinstance(hybrid, HybridModel)
    ratio = count_parameters(neural) / count_parameters(hybrid)
    assert 0.9 < ratio < 1.1, (count_parameters(neural), count_parameters(hybrid))
    # the same encoder, location encoding and site attention; the analytic head count is the real one
    for part in ("encoder", "location", "embed", "context_proj", "site_attention"):
        assert count_parameters(getattr(neural, part)) == count_parameters(getattr(hybrid, part)), part
    width = neural.flux_head.width_size
    heads = count_parameters(neural.flux_head) + count_parameters(neural.yield_head)
    assert heads == head_parameter_count(width, hidden=cfg.model.hidden, embed_dim=cfg.model.embed_dim)
    fixed = new_model(dataclasses.replace(_kind("neural", cfg), model=dataclasses.replace(
        _kind("neural", cfg).model, neural_width=3)), prepared)
    assert fixed.flux_head.width_size == 3


def test_untrained_process_kind_is_the_process_model(setup):
    _, prepared, data = setup
    model = new_model(_kind("process"), prepared)
    assert isinstance(model, ProcessModel) and count_parameters(model) == 4  # 3 learned + 1 global, one set
    inputs, _ = data.batch()
    pred = _predict(model, inputs)
    process = syn.build_model("maize")
    for w in range(len(data)):
        ref = simulate(process, process.default_parameters(), jax.tree_util.tree_map(lambda a, w=w: a[w],
                                                                                      inputs.met)).outputs
        np.testing.assert_allclose(pred.nee[w], ref.nee, atol=1e-4)
        np.testing.assert_allclose(pred.crop_yield[w], ref.crop_yield[364::365], atol=1e-4)
    np.testing.assert_array_equal(pred.gpp, pred.gpp_physics)
    defaults = process.default_parameters()
    for name, value in pred.theta.items():
        np.testing.assert_allclose(value, defaults[name], rtol=1e-4, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hybrid", "neural", "process"])
def test_checkpoint_round_trip_of_every_kind(setup, tmp_path, kind):
    ds, _, data = setup
    cfg = _kind(kind)
    run = train_run(cfg, ds, tmp_path, progress=False)
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["model_kind"] == kind
    back = load_run(tmp_path)
    assert type(back.model) is type(run.model) and back.config == cfg
    inputs, _ = data.batch()
    a, b = _predict(run.model, inputs), _predict(back.model, inputs)
    np.testing.assert_array_equal(a.nee, b.nee)
    np.testing.assert_array_equal(a.crop_yield, b.crop_yield)
    # the hybrid objective trains every part of every kind (2 steps: the zero-initialised output layers
    # move in the first, the layers before them in the second)
    last, start = load_run(tmp_path, which="model").model, new_model(cfg, run.prepared)
    parts = {"hybrid": ("encoder", "location", "site_attention", "parameter_head", "residual_head",
                        "global_unconstrained"),
             "neural": ("encoder", "location", "site_attention", "flux_head", "yield_head"),
             "process": ("global_unconstrained",)}[kind]
    for part in parts:
        moved = [np.any(np.asarray(x) != np.asarray(y)) for x, y in zip(
            jax.tree_util.tree_leaves(eqx.filter(getattr(last, part), eqx.is_inexact_array)),
            jax.tree_util.tree_leaves(eqx.filter(getattr(start, part), eqx.is_inexact_array)), strict=True)]
        assert any(moved), part
    assert np.isfinite(run.history[-1]["train_loss"])
    if kind == "neural":  # no physics, no knowledge-guided penalties
        assert run.history[-1]["train_penalty_yield_consistency"] == 0.0
    for name, value in _predict(last, inputs).theta.items():  # physical parameters stay within the bounds
        spec = last.specs[name]
        assert np.all((np.asarray(value) >= spec.lower) & (np.asarray(value) <= spec.upper)), name
    # a checkpoint whose kind is unknown is refused, naming the key
    meta["config"]["model"]["kind"] = "transformer"
    (tmp_path / "checkpoint" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"meta.json.*\[model\] kind"):
        load_run(tmp_path)


def test_unknown_or_inconsistent_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"\[model\] kind.*'hybrid', 'neural', 'process'.*'lstm'"):
        config_from_dict({"model": {"kind": "lstm"}})
    with pytest.raises(ConfigError, match=r"kind = 'process'.*residual"):
        config_from_dict({"model": {"kind": "process", "residual": ["gpp"]}})
    with pytest.raises(ConfigError, match="neural_width"):
        config_from_dict({"model": {"kind": "neural", "neural_width": -1}})
    assert config_from_dict({"model": {"kind": "neural"}}).model.kind == "neural"
