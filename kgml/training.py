"""One `fit()` for pretraining and fine-tuning: they differ only in the data and in which parts of the model
are trainable. AdamW + warm-up/cosine schedule + global-norm clipping, early stopping on the validation loss,
atomic checkpoints (equinox leaves + JSON, never pickle; the files replaced as one set, verified by SHA-256 on
every load) and exact resume (refused when the configuration changed, unless forced).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import equinox as eqx
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from kgml.config import TrainConfig
from kgml.io import apply_umask, atomic_path, fsync_path, write_text_atomic
from kgml.progress import COMPILING_NOTE, is_quiet, note

__all__ = [
    "CheckpointError",
    "FitResult",
    "check_resume_config",
    "fit",
    "load_checkpoint_state",
    "recover_checkpoint",
    "load_model",
    "make_optimizer",
    "paired_batch_indices",
    "paired_sampler",
    "read_metadata",
    "save_model",
    "trainable_filter",
]

CHECKPOINT_FORMAT = 1
_FILES = ("model.eqx", "best.eqx", "opt_state.eqx")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or does not match the model."""


class Data(Protocol):
    def __len__(self) -> int: ...

    def batch(self, index) -> Any: ...


@dataclass
class FitResult:
    """The best model (lowest validation loss; the last one without validation data), the training
    history (one dict per evaluation), and where training stopped."""

    model: Any
    history: list[dict] = field(default_factory=list)
    best_step: int = 0
    best_val: float = math.inf
    step: int = 0
    stopped_early: bool = False
    last_model: Any = None


# ---------------------------------------------------------------------------------------------------------
# Trainable parts
# ---------------------------------------------------------------------------------------------------------


def trainable_filter(model, parts: Sequence[str] = ()):
    """A filter pytree (for `eqx.partition`) marking the floating-point arrays of the top-level fields named
    in ``parts`` as trainable (all of them when ``parts`` is empty); everything else is frozen."""
    if not parts:
        return jax.tree_util.tree_map(eqx.is_inexact_array, model)
    spec = jax.tree_util.tree_map(lambda _: False, model)
    for name in parts:
        if not hasattr(model, name):
            fields = [f for f in getattr(model, "__dataclass_fields__", {})]
            raise KeyError(f"trainable part {name!r} is not a field of {type(model).__name__} (fields: {fields})")
        sub = getattr(model, name)
        if sub is None:
            continue
        spec = eqx.tree_at(lambda m, n=name: getattr(m, n), spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, sub))
    return spec


@functools.lru_cache(maxsize=64)
def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) after global-norm clipping, with a linear
    warm-up to ``learning_rate`` then cosine decay to 5 % of it (or constant). Cached per config, so the
    same object (and the same compiled training step) serves every run with these settings."""
    steps = max(cfg.steps, 1)
    warmup = min(cfg.warmup_steps, max(steps - 1, 0))
    if cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, cfg.learning_rate, warmup_steps=warmup, decay_steps=steps, end_value=0.05 * cfg.learning_rate)
    else:
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)), optax.constant_schedule(cfg.learning_rate)],
            [max(warmup, 1)])
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adamw(schedule, weight_decay=cfg.weight_decay))


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(model, path: str | os.PathLike) -> Path:
    """Serialise a model's arrays (`eqx.tree_serialise_leaves`) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        eqx.tree_serialise_leaves(tmp, model)
    return path


def load_model(path: str | os.PathLike, like):
    """Read arrays saved by `save_model` into the structure of ``like`` (a model built from the same config).
    Errors say which file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        return eqx.tree_deserialise_leaves(path, like)
    except Exception as err:  # numpy/equinox raise several types for truncated or mismatched files
        raise CheckpointError(
            f"cannot read model {path}: {type(err).__name__}: {err}. The file is corrupt or was written by a "
            "model of another configuration; retrain or restore the run's files."
        ) from None


def _set_paths(directory: Path) -> tuple[Path, Path]:
    """Where the next set is written, and where the previous one waits while the new one is swapped in."""
    return directory.parent / f".{directory.name}.new", directory.parent / f".{directory.name}.old"


def _is_complete(directory: Path) -> bool:
    try:
        load_checkpoint_state(directory, recover=False)
    except CheckpointError:
        return False
    return True


def recover_checkpoint(directory: str | os.PathLike) -> None:
    """Finish or undo a checkpoint swap that a kill interrupted (see `_save_checkpoint`): with no set under
    ``directory``'s name, the complete new one (else the previous one) takes it; leftovers are removed."""
    directory = Path(directory)
    new, old = _set_paths(directory)
    if not directory.exists():
        for candidate in (new, old):
            if candidate.is_dir() and _is_complete(candidate):
                os.replace(candidate, directory)
                fsync_path(directory.parent)
                break
    if directory.exists():
        for leftover in (new, old):  # new: never swapped in (the previous set is intact); old: already replaced
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)


def _save_checkpoint(directory: Path, model, best_model, opt_state, state: dict, metadata: Mapping | None) -> None:
    """Write the checkpoint as one set: every file goes into a new directory beside ``directory``, is flushed
    to disk, then the directory is renamed into place. The previous set stays complete under its name until
    the new one is (a kill at any point leaves one complete set: `recover_checkpoint`)."""
    recover_checkpoint(directory)
    new, old = _set_paths(directory)
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in (*_FILES, "meta.json", "trainer.json"))
        if foreign:
            raise CheckpointError(f"checkpoint directory {directory} also holds {foreign}: checkpoints are replaced "
                                  "as a whole directory, give them a directory of their own")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    apply_umask(new, directory=True)
    save_model(model, new / "model.eqx")
    save_model(best_model, new / "best.eqx")
    save_model(opt_state, new / "opt_state.eqx")
    if metadata is None and (directory / "meta.json").is_file():
        metadata = json.loads((directory / "meta.json").read_text())
    if metadata is not None:
        write_text_atomic(json.dumps(metadata, indent=1, default=_json_default) + "\n", new / "meta.json")
    files = [*_FILES, *(("meta.json",) if metadata is not None else ())]
    state = {**state, "format_version": CHECKPOINT_FORMAT, "sha256": {f: _sha256(new / f) for f in files}}
    # Written last: a set is complete only once its trainer.json names the hashes of complete files.
    write_text_atomic(json.dumps(state, indent=1, default=_json_default) + "\n", new / "trainer.json")
    fsync_path(new)
    if directory.exists():
        os.replace(directory, old)
    os.replace(new, directory)
    fsync_path(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def _json_default(obj):
    if isinstance(obj, np.generic | jax.Array):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_checkpoint_state(directory: str | os.PathLike, *, recover: bool = True) -> dict:
    """The trainer state of a checkpoint directory, after checking that its files are complete and intact
    (each file's SHA-256 against trainer.json; a mismatch names the file). ``recover`` first completes a
    swap that a kill interrupted (`recover_checkpoint`)."""
    directory = Path(directory)
    if recover:
        recover_checkpoint(directory)
    trainer = directory / "trainer.json"
    if not trainer.is_file():
        raise CheckpointError(f"no checkpoint in {directory} (trainer.json missing)")
    try:
        state = json.loads(trainer.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{trainer} is corrupt ({err}); delete the directory to start afresh") from None
    if state.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{trainer}: unsupported checkpoint format {state.get('format_version')!r}")
    for name, digest in state.get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(
                f"checkpoint file {path} is corrupt (its SHA-256 does not match trainer.json); restore it or "
                "delete the directory to train from scratch"
            )
    return state


def read_metadata(directory: str | os.PathLike) -> dict:
    """The ``meta.json`` of a checkpoint (config, normaliser, region map, …)."""
    recover_checkpoint(directory)
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a kgml run directory")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); restore the run's files or retrain") from None


def _config_diff(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_resume_config(recorded: Mapping | None, config: Mapping | None, where: object, *, force: bool) -> list[str]:
    """The keys in which ``config`` (this run's, as a dict) differs from ``recorded`` (the run's saved one).
    A difference is a `CheckpointError` naming the keys unless ``force``; then the keys are returned so that
    the caller records both configs."""
    if recorded is None or config is None:
        return []
    changed = _config_diff(json.loads(json.dumps(recorded, default=_json_default)),
                           json.loads(json.dumps(config, default=_json_default)))
    if changed and not force:
        shown = ", ".join(changed[:8]) + (" …" if len(changed) > 8 else "")
        raise CheckpointError(f"cannot resume {where}: the configuration differs from the one it was trained with "
                              f"({shown}); resume with the same config, or pass --force (force=True) to continue "
                              "with the new one (both are recorded)")
    return changed


# ---------------------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------------------


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Windows of step ``step``: epoch e = step // (n // batch_size) draws permutation(seed, e); the batch is
    its (step mod steps-per-epoch)-th slice. A pure function of (seed, step), so a resumed run sees exactly
    the batches the uninterrupted run would have seen."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.sort(order[pos * batch_size : (pos + 1) * batch_size])


def paired_batch_indices(site: np.ndarray, year: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Windows of step ``step`` for the anomaly-aware loss (`kgml.models.losses.paired_anomaly_mse`): the first
    ``batch_size // 2`` are the `_batch_indices` draw of that many windows (every window in turn, as without
    pairing); window i + half is a window of the same site as window i in another year, drawn with
    (seed, step), or — for a site with one year only — any other window (that row is then unpaired: the loss
    tells by site and year). An odd batch gets one more window of the draw at the end. A pure function of
    (seed, step): resumed runs see the same batches."""
    site, year = np.asarray(site), np.asarray(year)
    n = site.size
    half = batch_size // 2
    if half < 1 or n < 2:
        raise ValueError(f"paired batches need batch_size >= 2 and >= 2 windows, got {batch_size} and {n}")
    anchors = _batch_indices(n, half + batch_size % 2, seed, step)
    rng = np.random.default_rng([seed, step, 1])
    partners = []
    for i in anchors[:half]:
        mine = np.flatnonzero((site == site[i]) & (year != year[i]))
        pool = mine if mine.size else np.delete(np.arange(n), i)
        partners.append(int(pool[rng.integers(pool.size)]))
    return np.concatenate([anchors[:half], partners, anchors[half:]]).astype(np.int64)


def paired_sampler(site: np.ndarray, year: np.ndarray, batch_size: int, seed: int) -> Callable[[int], np.ndarray]:
    """``step -> window indices`` of `paired_batch_indices` (the ``sampler`` of `fit`)."""
    site, year = np.asarray(site).copy(), np.asarray(year).copy()
    return lambda step: paired_batch_indices(site, year, min(batch_size, site.size), seed, step)


def _evaluate(loss_fn, model, data: Data, batch_size: int, monitor: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    n = len(data)
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(i + batch_size, n))
        _, aux = _eval_jit(loss_fn, model, data.batch(idx))
        for k, v in aux.items():
            totals[k] = totals.get(k, 0.0) + float(v) * idx.size
    out = {k: v / n for k, v in totals.items()}
    out["monitor"] = out.get(monitor, out.get("loss", math.nan))
    return out


@eqx.filter_jit
def _eval_jit(loss_fn, model, batch):
    return loss_fn(model, batch)


@eqx.filter_jit
def _train_step(diff, static, opt_state, batch, optimizer, loss_fn):
    """One optimiser step on the trainable part ``diff``. Module-level and keyed on hashable ``optimizer``
    and ``loss_fn`` (see `make_optimizer`), so runs of the same shapes and settings share one compilation."""

    def objective(d):
        return loss_fn(eqx.combine(d, static), batch)

    (_, aux), grads = eqx.filter_value_and_grad(objective, has_aux=True)(diff)
    updates, opt_state = optimizer.update(grads, opt_state, diff)
    return eqx.apply_updates(diff, updates), opt_state, aux


def fit(
    model,
    train: Data,
    val: Data | None,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict]],
    cfg: TrainConfig,
    *,
    trainable: Sequence[str] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    metadata: Mapping | None = None,
    progress: bool = True,
    max_steps_this_call: int | None = None,
    monitor: str = "data",
    description: str = "training",
    force: bool = False,
    sampler: Callable[[int], np.ndarray] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and return the best model on ``val``.

    ``loss_fn(model, batch) -> (loss, aux)`` with ``aux`` a dict of scalars; the validation monitor is
    ``aux[monitor]`` (default the data loss, falling back to ``aux["loss"]``). ``trainable`` (default
    ``cfg.trainable``) names the model's top-level parts to update (empty: all); the rest stay frozen.
    The validation loss is computed before the first step and every ``cfg.eval_every`` steps; after
    ``cfg.patience`` evaluations without improvement training stops, and the best model (possibly the
    initial one) is returned. With ``checkpoint_dir``, the current and best models, optimiser
    state and trainer state (+ ``metadata`` as meta.json) are written every ``cfg.checkpoint_every`` steps
    and at the end; ``resume=True`` continues from the checkpoint there exactly (same batches, same
    optimiser state, same running loss sums). Resuming with a ``metadata["config"]`` that differs from the
    checkpoint's is refused unless ``force`` (then both are recorded: meta.json ``resumed_with``).
    ``max_steps_this_call`` stops early without finishing (as if interrupted). ``sampler(step)``: the
    training windows of a step (default `_batch_indices`; `paired_sampler` for the anomaly-aware loss).
    """
    parts = cfg.trainable if trainable is None else tuple(trainable)
    filter_spec = trainable_filter(model, parts)
    diff, static = eqx.partition(model, filter_spec)
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(diff)
    n = len(train)
    if n == 0:
        raise ValueError("no training windows")
    batch_size = min(cfg.batch_size, n)
    start, best_val, best_step, bad, history = 0, math.inf, 0, 0, []
    best_diff = diff
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    running: dict[str, float] = {}
    if directory is not None:
        recover_checkpoint(directory)
    if resume and directory is not None and (directory / "trainer.json").exists():
        state = load_checkpoint_state(directory)
        recorded = read_metadata(directory) if (directory / "meta.json").is_file() else {}
        changed = check_resume_config(recorded.get("config"), (metadata or {}).get("config"), directory, force=force)
        if changed:
            metadata = {**dict(metadata or {}), "resumed_with": [
                *recorded.get("resumed_with", []),
                {"step": state["step"], "changed": changed, "previous_config": recorded.get("config")}]}
        elif metadata is not None and recorded.get("resumed_with"):
            metadata = {**dict(metadata), "resumed_with": recorded["resumed_with"]}
        if state.get("trainable") != list(parts):
            raise CheckpointError(
                f"checkpoint in {directory} trained parts {state.get('trainable')}, this run trains {list(parts)}")
        model = load_model(directory / "model.eqx", model)
        best_model = load_model(directory / "best.eqx", model)
        diff, static = eqx.partition(model, filter_spec)
        best_diff, _ = eqx.partition(best_model, filter_spec)
        opt_state = load_model(directory / "opt_state.eqx", opt_state)
        start, best_val, best_step, bad = state["step"], state["best_val"], state["best_step"], state["bad_evals"]
        history = state["history"]
        running = {k: float(v) for k, v in state.get("running", {}).items()}
        if state.get("stopped_early"):
            return FitResult(best_model, history, best_step, best_val, start, True, model)

    def checkpoint(step, stopped):
        if directory is None:
            return
        state = {"step": step, "best_val": best_val, "best_step": best_step, "bad_evals": bad, "history": history,
                 "trainable": list(parts), "stopped_early": stopped, "batch_size": batch_size, "seed": cfg.seed,
                 "running": running}  # sums since the last report: the next logged train loss stays right
        # Before any evaluation the best model is the current one, as `fit` returns it.
        best = best_diff if evaluated else diff
        _save_checkpoint(directory, eqx.combine(diff, static), eqx.combine(best, static), opt_state, state,
                         metadata)


    evaluated = bool(history)
    if start == 0 and val is not None and len(val):
        # The starting point is a candidate too: fine-tuning that only overfits returns the initial model.
        ev = _evaluate(loss_fn, eqx.combine(diff, static), val, batch_size, monitor)
        history.append({"step": 0, **{f"val_{k}": v for k, v in ev.items()}})
        best_val, best_step, best_diff, evaluated = float(ev["monitor"]), 0, diff, True
    end = cfg.steps if max_steps_this_call is None else min(cfg.steps, start + max_steps_this_call)
    show = progress and not is_quiet()
    if show and start < end:
        note(f"{description}: {COMPILING_NOTE}" if description else COMPILING_NOTE)
    bar = None  # made after the first (compiling) step, so that its rate and ETA count training steps only
    stopped = False
    step = start
    try:
        while step < end:
            idx = _batch_indices(n, batch_size, cfg.seed, step) if sampler is None else sampler(step)
            batch = train.batch(idx)
            diff, opt_state, aux = _train_step(diff, static, opt_state, batch, optimizer, loss_fn)
            step += 1
            for k, v in aux.items():
                running[k] = running.get(k, 0.0) + float(v)
            if bar is None:
                bar = tqdm(total=cfg.steps, initial=step, desc=description, unit="step", disable=not show,
                           leave=False)
            else:
                bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                count = cfg.eval_every if step % cfg.eval_every == 0 else (step % cfg.eval_every or cfg.eval_every)
                record = {"step": step, **{f"train_{k}": v / count for k, v in running.items()}}
                running = {}
                current = eqx.combine(diff, static)
                if val is not None and len(val):
                    ev = _evaluate(loss_fn, current, val, batch_size, monitor)
                    record.update({f"val_{k}": v for k, v in ev.items()})
                    score = ev["monitor"]
                else:
                    score = record.get(f"train_{monitor}", record.get("train_loss", math.nan))
                evaluated = True
                if score < best_val:
                    best_val, best_step, bad, best_diff = float(score), step, 0, diff
                else:
                    bad += 1
                history.append(record)
                bar.set_postfix(train=f"{record.get('train_loss', math.nan):.3g}", val=f"{score:.3g}")
                if bad >= cfg.patience:
                    stopped = True
                    break
            if directory is not None and step % cfg.checkpoint_every == 0:
                checkpoint(step, False)
    finally:
        if bar is not None:
            bar.close()
    checkpoint(step, stopped)
    final = eqx.combine(diff, static)
    best = eqx.combine(best_diff, static) if evaluated else final
    return FitResult(best, history, best_step, best_val, step, stopped, final)
