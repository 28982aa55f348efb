"""Training-step speed on this machine: the hybrid model (encoder + heads + process model, one AdamW step
through `kgml.training`), a plain GRU regressor of the same size in JAX, and the same GRU in PyTorch when it
is installed. The last printed line is one JSON object with ``jax_samples_per_s``, ``torch_samples_per_s``
and ``ratio`` (JAX GRU / PyTorch GRU), plus the hybrid's figures.

    python benchmarks/train_speed.py [--batch 16] [--days 365] [--hidden 32] [--repeats 5] [--steps 20]

A sample is one site window of ``--days`` daily steps with 7 input features and 4 daily targets. Both GRUs
are one layer, ``--hidden`` units, a linear read-out at every step, MSE loss and an Adam step; the time is
the best of ``--repeats`` runs of ``--steps`` steps after a warm-up (compilation excluded). PyTorch uses as
many threads as XLA (every core). Speed is recorded in benchmarks/RESULTS.md, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from record import append_result, load_average

N_FEATURES, N_TARGETS = 7, 4


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="site windows per step")
    p.add_argument("--days", type=int, default=365, help="days per window")
    p.add_argument("--hidden", type=int, default=32, help="GRU hidden units (the hybrid's encoder too)")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (best is reported)")
    p.add_argument("--no-hybrid", action="store_true", help="skip the hybrid model")
    return p.parse_args(argv)


def _best(fn, steps: int, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - t0) / steps)
    return min(times)


# --- JAX GRU ---------------------------------------------------------------------------------------------


class GRURegressor(eqx.Module):
    """One-layer GRU (PyTorch's equations and gate order r, z, n) + a linear read-out per step.

    The input projections of all steps are one matrix product before the scan (as cuDNN and PyTorch do);
    the scan carries only the recurrent part, over a batch of sequences at once (time-major)."""

    w_ih: jax.Array
    w_hh: jax.Array
    b_ih: jax.Array
    b_hh: jax.Array
    readout: eqx.nn.Linear

    def __init__(self, n_in: int, hidden: int, n_out: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        lim = 1.0 / np.sqrt(hidden)
        self.w_ih = jax.random.uniform(k1, (n_in, 3 * hidden), minval=-lim, maxval=lim)
        self.w_hh = jax.random.uniform(k2, (hidden, 3 * hidden), minval=-lim, maxval=lim)
        self.b_ih = jnp.zeros(3 * hidden)
        self.b_hh = jnp.zeros(3 * hidden)
        self.readout = eqx.nn.Linear(hidden, n_out, key=k3)

    def __call__(self, x):  # x: (batch, time, feature)
        hidden = self.w_hh.shape[0]
        gi = jnp.einsum("btf,fg->tbg", x, self.w_ih) + self.b_ih

        def step(h, gi_t):
            gh = h @ self.w_hh + self.b_hh
            r = jax.nn.sigmoid(gi_t[:, :hidden] + gh[:, :hidden])
            z = jax.nn.sigmoid(gi_t[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
            n = jnp.tanh(gi_t[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
            h = (1.0 - z) * n + z * h
            return h, h

        _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], hidden)), gi)
        return jnp.einsum("tbh,oh->bto", hs, self.readout.weight) + self.readout.bias


def jax_gru_step_time(args) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.days, N_FEATURES)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(args.batch, args.days, N_TARGETS)), jnp.float32)
    model = GRURegressor(N_FEATURES, args.hidden, N_TARGETS, key=jax.random.PRNGKey(0))
    opt = optax.adam(1e-3)
    state = [model, opt.init(eqx.filter(model, eqx.is_array))]

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        updates, opt_state = opt.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    def run():
        m, s, loss = step(state[0], state[1], x, y)
        loss.block_until_ready()
        state[0], state[1] = m, s

    return _best(run, args.steps, args.repeats)


# --- PyTorch GRU -----------------------------------------------------------------------------------------


def torch_gru_step_time(args) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(N_FEATURES, args.hidden, batch_first=True)
            self.readout = torch.nn.Linear(args.hidden, N_TARGETS)

        def forward(self, x):
            return self.readout(self.gru(x)[0])

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(args.batch, args.days, N_FEATURES)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(args.batch, args.days, N_TARGETS)), dtype=torch.float32)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def run():
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()

    return _best(run, args.steps, args.repeats)


# --- the hybrid ------------------------------------------------------------------------------------------


def hybrid_step_time(args) -> float:
    from kgml.config import TrainConfig
    from kgml.data.normalisation import Normaliser
    from kgml.models.hybrid import (
        HybridObjective,
        TaskSpec,
        build_hybrid,
        prepare_windows,
        target_scales,
    )
    from kgml.synthetic import CorpusSpec, build_model, make_corpus
    from kgml.training import _batch_indices, _train_step, make_optimizer

    features = ("tair", "sw_in", "vpd", "precip", "tsoil")  # + sin/cos(doy) = 7 inputs
    n_sites = max(args.batch // 3 + 1, 2)
    ds = make_corpus(CorpusSpec(vegetation=("maize",), sites_per_block=n_sites, years=max(args.days // 365, 1)))
    norm = Normaliser.fit(ds, (*features, "soil_carbon"))
    task = TaskSpec(daily=("nee", "gpp", "reco", "rsoil"), monthly=(), annual=True)
    scales = target_scales(ds, task)
    data = prepare_windows(ds, features=features, static=("soil_carbon",), task=task, normaliser=norm,
                           window_days=args.days, scales=scales)
    model = build_hybrid(build_model("maize"), n_features=len(features) + 2, n_static=1, n_summary=8,
                         key=jax.random.PRNGKey(0), hidden=args.hidden, attention=False,
                         residual=("gpp", "reco"))
    objective = HybridObjective.create(task, scales)
    optimizer = make_optimizer(TrainConfig(steps=10_000))
    diff, static = eqx.partition(model, eqx.is_inexact_array)
    state = [diff, optimizer.init(diff)]
    batch = data.batch(_batch_indices(len(data), min(args.batch, len(data)), 0, 0))

    def run():
        d, s, aux = _train_step(state[0], static, state[1], batch, optimizer, objective)
        aux["loss"].block_until_ready()
        state[0], state[1] = d, s

    return _best(run, args.steps, args.repeats), int(batch[0].x.shape[0])


def main(argv=None) -> dict:
    args = _parse(argv)
    load0 = load_average()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"python {sys.version.split()[0]}, jax {jax.__version__} ({jax.default_backend()})")
    print(f"batch {args.batch} windows × {args.days} days, {N_FEATURES} features, hidden {args.hidden}")
    t_jax = jax_gru_step_time(args)
    print(f"JAX GRU      : {1e3 * t_jax:8.2f} ms/step  {args.batch / t_jax:9.1f} samples/s")
    t_torch = torch_gru_step_time(args)
    if t_torch is None:
        print("PyTorch GRU  : not installed (pip install torch) — skipped")
    else:
        import torch

        print(f"PyTorch GRU  : {1e3 * t_torch:8.2f} ms/step  {args.batch / t_torch:9.1f} samples/s "
              f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    result = {
        "batch": args.batch, "days": args.days, "hidden": args.hidden,
        "jax_samples_per_s": args.batch / t_jax,
        "torch_samples_per_s": None if t_torch is None else args.batch / t_torch,
        "ratio": None if t_torch is None else t_torch / t_jax,
    }
    if not args.no_hybrid:
        t_hybrid, b = hybrid_step_time(args)
        print(f"hybrid (maize, GRU {args.hidden} + heads + process model): {1e3 * t_hybrid:8.2f} ms/step  "
              f"{b / t_hybrid:9.1f} samples/s")
        result["hybrid_samples_per_s"] = b / t_hybrid
        result["hybrid_vs_jax_gru"] = (b / t_hybrid) / (args.batch / t_jax)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}))
    print(f"load average: start {load0}, end {load_average()}")
    if argv is None:  # a command-line run: record it
        append_result("train_speed", {k: v for k, v in result.items() if v is not None}, load_start=load0)
    return result


if __name__ == "__main__":
    main()
