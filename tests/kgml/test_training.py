"""`fit`: learning, freezing, early stopping, checkpoints (no pickle) and exact resume — on a tiny stand-in."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.config import TrainConfig
from kgml.training import (
    CheckpointError,
    _batch_indices,
    fit,
    load_checkpoint_state,
    load_model,
    save_model,
    trainable_filter,
)


class Data:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def batch(self, index):
        return jnp.asarray(self.x[index]), jnp.asarray(self.y[index])


class Tiny(eqx.Module):
    body: eqx.nn.Linear
    head: eqx.nn.Linear

    def __call__(self, x):
        return self.head(jnp.tanh(self.body(x)))[0]


def loss_fn(model, batch):
    x, y = batch
    err = jnp.mean((jax.vmap(model)(x) - y) ** 2)
    return err, {"loss": err, "data": err}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.5 * x[:, 1]).astype(np.float32)
    model = Tiny(eqx.nn.Linear(3, 8, key=jax.random.PRNGKey(0)), eqx.nn.Linear(8, 1, key=jax.random.PRNGKey(1)))
    return model, Data(x[:60], y[:60]), Data(x[60:], y[60:])


CFG = TrainConfig(steps=60, batch_size=8, learning_rate=0.02, eval_every=10, checkpoint_every=20, patience=100,
                  warmup_steps=5)


def _leaves(model):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]


def test_fit_reduces_loss(problem):
    model, train, val = problem
    before = float(loss_fn(model, val.batch(np.arange(len(val))))[0])
    result = fit(model, train, val, loss_fn, CFG, progress=False)
    after = float(loss_fn(result.model, val.batch(np.arange(len(val))))[0])
    assert after < 0.5 * before
    assert result.history[-1]["step"] == 60 and "val_data" in result.history[-1]
    assert result.history[0]["step"] == 0  # the starting point is evaluated
    assert result.best_val == pytest.approx(min(h["val_monitor"] for h in result.history))


def test_frozen_parts_do_not_change(problem):
    model, train, val = problem
    result = fit(model, train, val, loss_fn, CFG, trainable=("head",), progress=False)
    np.testing.assert_array_equal(result.last_model.body.weight, model.body.weight)
    assert not np.array_equal(result.last_model.head.weight, model.head.weight)
    with pytest.raises(KeyError, match="not a field"):
        trainable_filter(model, ("encoder",))


def test_resume_continues_exactly(problem, tmp_path):
    model, train, val = problem
    straight = fit(model, train, val, loss_fn, CFG, progress=False)
    # stopped after 30 of 60 steps (the call writes its checkpoint as it stops), then resumed
    first = fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, max_steps_this_call=30)
    assert first.step == 30
    assert load_checkpoint_state(tmp_path)["step"] == 30
    resumed = fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert resumed.step == 60
    for a, b in zip(_leaves(straight.last_model), _leaves(resumed.last_model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(straight.model), _leaves(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]


def test_resume_logs_the_true_running_loss(problem, tmp_path):
    """Interrupted between two reports (step 25 of a report every 10), the resumed run logs the same
    training loss at step 30 as the uninterrupted one (the running sum is part of the checkpoint)."""
    model, train, val = problem
    cfg = CFG.__class__(**{**CFG.__dict__, "checkpoint_every": 5})
    straight = fit(model, train, val, loss_fn, cfg, progress=False)
    fit(model, train, val, loss_fn, cfg, progress=False, checkpoint_dir=tmp_path, max_steps_this_call=25)
    assert load_checkpoint_state(tmp_path)["running"]  # a partial sum since step 20
    resumed = fit(model, train, val, loss_fn, cfg, progress=False, checkpoint_dir=tmp_path, resume=True)
    want = {h["step"]: h["train_loss"] for h in straight.history if "train_loss" in h}
    got = {h["step"]: h["train_loss"] for h in resumed.history if "train_loss" in h}
    assert got.keys() == want.keys()
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), step


def test_checkpoint_is_replaced_as_a_set(problem, tmp_path, monkeypatch):
    """A kill while the next set is written (here: an error after two of its files) leaves the previous set
    complete under its name; a kill between the two renames of the swap is finished on the next load."""
    import kgml.training as T

    model, train, val = problem
    ckpt = tmp_path / "checkpoint"
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=ckpt, max_steps_this_call=20)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    calls = {"n": 0}
    real_save = T.save_model

    def dying_save(m, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed while writing the set's third file
        return real_save(m, path)

    monkeypatch.setattr(T, "save_model", dying_save)
    with pytest.raises(KeyboardInterrupt):
        fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=ckpt, resume=True,
            max_steps_this_call=20)
    monkeypatch.setattr(T, "save_model", real_save)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # the old set, untouched
    assert load_checkpoint_state(ckpt)["step"] == 20
    assert not (tmp_path / ".checkpoint.new").exists()  # the partial set is cleared on load
    # killed between "old set aside" and "new set in place": the complete new set takes the name
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=ckpt, resume=True, max_steps_this_call=10)
    new, old = tmp_path / ".checkpoint.new", tmp_path / ".checkpoint.old"
    import shutil

    shutil.copytree(ckpt, new)
    ckpt.rename(old)
    assert load_checkpoint_state(ckpt)["step"] == 30
    assert not new.exists() and not old.exists()
    resumed = fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=ckpt, resume=True)
    assert resumed.step == 60


def test_resume_with_a_changed_config_is_refused_unless_forced(problem, tmp_path):
    model, train, val = problem
    meta = {"config": {"train": {"learning_rate": 0.02}}}
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, metadata=meta, max_steps_this_call=10)
    changed = {"config": {"train": {"learning_rate": 0.5}}}
    with pytest.raises(CheckpointError, match=r"configuration differs.*train\.learning_rate.*--force"):
        fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, metadata=changed, resume=True)
    assert json.loads((tmp_path / "meta.json").read_text()) == meta  # nothing rewritten
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, metadata=changed, resume=True,
        force=True, max_steps_this_call=10)
    got = json.loads((tmp_path / "meta.json").read_text())
    assert got["config"] == changed["config"]  # both recorded
    assert got["resumed_with"] == [{"step": 10, "changed": ["train.learning_rate"],
                                    "previous_config": meta["config"]}]


def test_flipped_bits_in_any_checkpoint_file_name_it(problem, tmp_path):
    model, train, val = problem
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, metadata={"a": 1},
        max_steps_this_call=10)
    for name in ("best.eqx", "meta.json"):
        path = tmp_path / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        original = path.read_bytes()
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=rf"{name} is corrupt \(its SHA-256"):
            load_checkpoint_state(tmp_path)
        path.write_bytes(original)


def test_checkpoint_files_are_not_pickle(problem, tmp_path):
    model, train, val = problem
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, metadata={"normaliser": {"a": 1}},
        max_steps_this_call=10)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.eqx", "meta.json", "model.eqx", "opt_state.eqx", "trainer.json"]
    for name in ("model.eqx", "best.eqx", "opt_state.eqx"):
        assert not (tmp_path / name).read_bytes().startswith(b"\x80")  # pickle protocol marker
    assert json.loads((tmp_path / "meta.json").read_text()) == {"normaliser": {"a": 1}}
    state = json.loads((tmp_path / "trainer.json").read_text())
    assert state["step"] == 10 and set(state["sha256"]) == {"model.eqx", "best.eqx", "opt_state.eqx", "meta.json"}


def test_corrupt_or_incomplete_checkpoint_is_a_clear_error(problem, tmp_path):
    model, train, val = problem
    fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, max_steps_this_call=10)
    with (tmp_path / "model.eqx").open("r+b") as f:
        f.seek(20)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="model.eqx is corrupt"):
        fit(model, train, val, loss_fn, CFG, progress=False, checkpoint_dir=tmp_path, resume=True)
    (tmp_path / "opt_state.eqx").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint_state(tmp_path)
    (tmp_path / "trainer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint_state(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint_state(tmp_path / "nothing")


def test_model_file_of_another_shape(problem, tmp_path):
    model, _, _ = problem
    path = save_model(model, tmp_path / "m.eqx")
    other = Tiny(eqx.nn.Linear(3, 5, key=jax.random.PRNGKey(0)), eqx.nn.Linear(5, 1, key=jax.random.PRNGKey(1)))
    with pytest.raises(CheckpointError, match="another configuration"):
        load_model(path, other)
    back = load_model(path, model)
    for a, b in zip(_leaves(back), _leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_stopping(problem):
    model, train, val = problem
    # a learning rate too small to move float32 weights of order 0.1 (0 itself is refused by TrainConfig)
    cfg = TrainConfig(steps=200, batch_size=8, learning_rate=1e-12, eval_every=5, patience=2, warmup_steps=0,
                      schedule="constant")
    result = fit(model, train, val, loss_fn, cfg, progress=False)
    # learning rate ~0: no improvement on the initial model (evaluated at step 0) → stop after `patience` evals
    assert result.stopped_early and result.step == 10 and result.best_step == 0
    assert result.history[0]["step"] == 0


def test_batch_indices_deterministic_and_cover_epoch():
    a = [_batch_indices(20, 5, 3, s) for s in range(4)]
    b = [_batch_indices(20, 5, 3, s) for s in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(20))
    assert not np.array_equal(_batch_indices(20, 5, 3, 4), a[0])  # next epoch reshuffles
