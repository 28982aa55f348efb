"""Training-step speed on this machine: the hybrid model (encoder + heads + process model, one AdamW step
through `kgml.training`), a plain GRU regressor of the same size in JAX, and the same GRU in PyTorch when it
is installed. The last printed line is one JSON object with ``jax_samples_per_s``, ``torch_samples_per_s``
and ``ratio`` (JAX GRU / PyTorch GRU), plus the hybrid's figures.

    python benchmarks/train_speed.py [--batch 16] [--days 365] [--hidden 32] [--repeats 5] [--steps 20]

A sample is one site window of ``--days`` daily steps with 7 input features and 4 daily targets. Both GRUs
are one layer, ``--hidden`` units, a linear read-out at every step, MSE loss and an Adam step; the time is
the best of ``--repeats`` runs of ``--steps`` steps after a warm-up (compilation excluded). PyTorch uses as
many threads as XLA (every core). Speed is recorded in benchmarks/RESULTS.md, never asserted in tests.

    python benchmarks/train_speed.py --pykgml [--pairs 3] [--steps 3] [--variants scan/dense,vjp/blocked]

The issue-18 workload (the PyKGML tutorial size): batch 64 × 365 days × 19 features, GRU 3 × 128 + causal
self-attention, the same network (same parameter count, checked) in JAX and in PyTorch, timed interleaved
in one process (A B A B …, ``--pairs`` rounds) with pair-by-pair ratios and their median; PyTorch at as
many threads as XLA uses and at 1 (``--torch-threads``); then the hybrid's own `kgml.training` step at that
batch, window and hidden size (``--hybrid-only`` for that part alone). Without torch installed the PyTorch
part is skipped with a message. The JSON line goes to results.jsonl as ``train_speed_pykgml``.
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

from kgml.machine import cpu_model

N_FEATURES, N_TARGETS = 7, 4


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="site windows per step")
    p.add_argument("--days", type=int, default=365, help="days per window")
    p.add_argument("--hidden", type=int, default=32, help="GRU hidden units (the hybrid's encoder too)")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (best is reported)")
    p.add_argument("--no-hybrid", action="store_true", help="skip the hybrid model")
    p.add_argument("--pykgml", action="store_true",
                   help="the issue-18 workload instead: 19 features, GRU --layers × --hidden + attention, "
                        "JAX and PyTorch interleaved (defaults then: batch 64, hidden 128, 3 layers, 3 steps)")
    p.add_argument("--hybrid-only", action="store_true", help="time only the hybrid (--pykgml)")
    p.add_argument("--torch-threads", default=None,
                   help="PyTorch thread counts to time, comma-separated (--pykgml; default: the cores XLA uses, and 1)")
    p.add_argument("--layers", type=int, default=3, help="stacked GRU layers (--pykgml)")
    p.add_argument("--pairs", type=int, default=3, help="interleaved rounds A B A B … (--pykgml)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds idle before each timed block (--pykgml)")
    p.add_argument("--variants", default="scan/dense,vjp/blocked",
                   help="JAX networks to time, comma-separated GRU/attention with GRU in scan, vjp, wavefront, "
                        "wavefront_vjp and attention in dense, blocked (--pykgml)")
    args = p.parse_args(argv)
    if args.pykgml:  # the size unless given explicitly
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, value in (("--batch", 64), ("--hidden", 128), ("--steps", 3)):
            if flag not in given:
                setattr(args, flag[2:], value)
    return args


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


def _adam_runner(model, x, y):
    """A function that runs one jitted Adam step (MSE loss, incl. backward) of ``model`` on (x, y) and blocks
    until it is done; the model and optimiser state advance with each call."""
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

    return run


def jax_gru_step_time(args) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.days, N_FEATURES)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(args.batch, args.days, N_TARGETS)), jnp.float32)
    model = GRURegressor(N_FEATURES, args.hidden, N_TARGETS, key=jax.random.PRNGKey(0))
    return _best(_adam_runner(model, x, y), args.steps, args.repeats)


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


# --- the issue-18 workload: PyKGML tutorial size, GRU 3 × 128 + attention, interleaved A B A B -----------

PK_FEATURES, PK_TARGETS, PK_HEADS = 19, 4, 4
GRU_KINDS = ("scan", "vjp", "wavefront", "wavefront_vjp")
ATTENTION_KINDS = ("dense", "blocked")


def _gru_gates(gi_t, gh, h, hidden):
    """PyTorch's GRU cell (gate order r, z, n; b_hn inside the reset product): returns h', r, z, n."""
    r = jax.nn.sigmoid(gi_t[..., :hidden] + gh[..., :hidden])
    z = jax.nn.sigmoid(gi_t[..., hidden : 2 * hidden] + gh[..., hidden : 2 * hidden])
    n = jnp.tanh(gi_t[..., 2 * hidden :] + r * gh[..., 2 * hidden :])
    return n + z * (h - n), r, z, n


def gru_scan(gi, w_hh, b_hh):
    """One GRU layer's recurrence, time-major: ``gi`` (time, batch, 3H) = the hoisted input projection
    (incl. b_ih) → hidden states (time, batch, H), from h = 0; plain `lax.scan`, reverse pass by autodiff."""
    hidden = w_hh.shape[0]

    def step(h, gi_t):
        h = _gru_gates(gi_t, h @ w_hh + b_hh, h, hidden)[0]
        return h, h

    return jax.lax.scan(step, jnp.zeros(gi.shape[1:-1] + (hidden,), gi.dtype), gi)[1]


@jax.custom_vjp
def gru_scan_vjp(gi, w_hh, b_hh):
    """`gru_scan` (same math, same result) with a hand-written reverse pass: the forward scan saves the
    gates; the reverse scan carries only dh (one matrix product per step, dgh @ W_hhᵀ) and the weight
    gradient dW_hh = Σ_t h_{t-1}ᵀ dgh_t is one large matrix product after the loop (as cuDNN does), not a
    small one accumulated inside it."""
    return _gru_vjp_fwd(gi, w_hh, b_hh)[0]


def _gru_vjp_fwd(gi, w_hh, b_hh):
    hidden = w_hh.shape[0]

    def step(h, gi_t):
        gh = h @ w_hh + b_hh
        h_new, r, z, n = _gru_gates(gi_t, gh, h, hidden)
        return h_new, (h_new, r, z, n, gh[..., 2 * hidden :])

    _, (hs, r, z, n, ghn) = jax.lax.scan(step, jnp.zeros(gi.shape[1:-1] + (hidden,), gi.dtype), gi)
    return hs, (hs, r, z, n, ghn, w_hh)


def _gru_vjp_bwd(res, dhs):
    hs, r, z, n, ghn, w_hh = res
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])
    w_hh_t = w_hh.T

    def step(dh, inputs):
        dh_out, hp, r_t, z_t, n_t, ghn_t = inputs
        dh = dh + dh_out
        dan = dh * (1.0 - z_t) * (1.0 - n_t * n_t)  # d(pre-activation of n)
        dar = dan * ghn_t * r_t * (1.0 - r_t)
        daz = dh * (hp - n_t) * z_t * (1.0 - z_t)
        dgh = jnp.concatenate([dar, daz, dan * r_t], axis=-1)
        return dh * z_t + dgh @ w_hh_t, (jnp.concatenate([dar, daz, dan], axis=-1), dgh)

    _, (dgi, dgh) = jax.lax.scan(step, jnp.zeros_like(hs[0]), (dhs, h_prev, r, z, n, ghn), reverse=True)
    return dgi, jnp.einsum("tbh,tbg->hg", h_prev, dgh), dgh.sum(axis=(0, 1))


gru_scan_vjp.defvjp(_gru_vjp_fwd, _gru_vjp_bwd)


def _wavefront_inputs(x, layers):
    n_layers = len(layers)
    gi0 = jnp.einsum("tbf,fg->tbg", x, layers[0]["w_ih"]) + layers[0]["b_ih"]
    gi0 = jnp.concatenate([gi0, jnp.zeros((n_layers - 1,) + gi0.shape[1:], gi0.dtype)])
    w_ih = jnp.stack([p["w_ih"] for p in layers[1:]])
    b_ih = jnp.stack([p["b_ih"] for p in layers[1:]])
    w_hh = jnp.stack([p["w_hh"] for p in layers])
    b_hh = jnp.stack([p["b_hh"] for p in layers])
    return gi0, w_ih, b_ih, w_hh, b_hh


def _wavefront_step(h, s, gi0_t, w_ih, b_ih, w_hh, b_hh):
    """One skewed step for all layers: (new carry, (r, z, n, gh_n)) — layer l starts at step l."""
    hidden = w_hh.shape[1]
    gi = jnp.concatenate([gi0_t[None], jnp.einsum("lbh,lhg->lbg", h[:-1], w_ih) + b_ih[:, None]])
    gh = jnp.einsum("lbh,lhg->lbg", h, w_hh) + b_hh[:, None]
    h_new, r, z, n = _gru_gates(gi, gh, h, hidden)
    active = (s >= jnp.arange(h.shape[0]))[:, None, None]
    return jnp.where(active, h_new, h), (r, z, n, gh[..., 2 * hidden :])


def gru_wavefront(x, layers):
    """All stacked layers in ONE scan on a skewed schedule: at loop step s layer l advances time s - l, so
    the layers' recurrent products are one batched matrix product per step (and layers ≥ 1 their input
    products too); layer 0's input projection is hoisted. Same math as layer by layer; T + L - 1 steps;
    reverse pass by autodiff. x: (time, batch, feature) → top layer's states (time, batch, H)."""
    n_layers, hidden = len(layers), layers[0]["w_hh"].shape[0]
    gi0, w_ih, b_ih, w_hh, b_hh = _wavefront_inputs(x, layers)

    def step(h, inputs):
        h, _ = _wavefront_step(h, *inputs, w_ih, b_ih, w_hh, b_hh)
        return h, h[-1]

    h0 = jnp.zeros((n_layers, x.shape[1], hidden), x.dtype)
    _, top = jax.lax.scan(step, h0, (jnp.arange(gi0.shape[0]), gi0))
    return top[n_layers - 1 :]


def gru_wavefront_vjp(x, layers):
    """`gru_wavefront`'s forward (same schedule, same result) with the hand-written reverse pass of
    `_wavefront_bwd`."""
    gi0, w_ih, b_ih, w_hh, b_hh = _wavefront_inputs(x, layers)
    return _wavefront_core(gi0, w_ih, b_ih, w_hh, b_hh)[len(layers) - 1 :]


@jax.custom_vjp
def _wavefront_core(gi0, w_ih, b_ih, w_hh, b_hh):
    return _wavefront_fwd(gi0, w_ih, b_ih, w_hh, b_hh)[0]


def _wavefront_fwd(gi0, w_ih, b_ih, w_hh, b_hh):
    n_layers, hidden = w_hh.shape[0], w_hh.shape[1]

    def step(h, inputs):
        h_new, gates = _wavefront_step(h, *inputs, w_ih, b_ih, w_hh, b_hh)
        return h_new, (h_new, *gates)

    h0 = jnp.zeros((n_layers, gi0.shape[1], hidden), gi0.dtype)
    _, (hs, r, z, n, ghn) = jax.lax.scan(step, h0, (jnp.arange(gi0.shape[0]), gi0))
    return hs[:, -1], (hs, r, z, n, ghn, w_ih, w_hh)


def _wavefront_bwd(res, dtop):
    """The reverse pass layer by layer from the top (each a `_gru_vjp_bwd` reverse scan on that layer's
    unskewed saved gates: one matrix product per step); the input-side products of every layer — dW_ih and
    the cotangent passed down, dgi @ W_ihᵀ — are one large matrix product each, outside the loops."""
    hs, r, z, n, ghn, w_ih, w_hh = res
    n_layers, n_time = w_hh.shape[0], hs.shape[0] - w_hh.shape[0] + 1
    d_w_ih, d_b_ih, d_w_hh, d_b_hh = [None] * (n_layers - 1), [None] * (n_layers - 1), [None] * n_layers, [None] * n_layers
    dhs = dtop[n_layers - 1 :]
    for layer in range(n_layers - 1, -1, -1):
        own = [a[layer : layer + n_time, layer] for a in (hs, r, z, n, ghn)]  # unskew: time t at step t + l
        dgi, d_w_hh[layer], d_b_hh[layer] = _gru_vjp_bwd((*own, w_hh[layer]), dhs)
        if layer > 0:
            below = hs[layer - 1 : layer - 1 + n_time, layer - 1]  # the input of this layer
            d_w_ih[layer - 1] = jnp.einsum("tbh,tbg->hg", below, dgi)
            d_b_ih[layer - 1] = dgi.sum(axis=(0, 1))
            dhs = dgi @ w_ih[layer - 1].T
    d_gi0 = jnp.concatenate([dgi, jnp.zeros((n_layers - 1,) + dgi.shape[1:], dgi.dtype)])
    return d_gi0, jnp.stack(d_w_ih), jnp.stack(d_b_ih), jnp.stack(d_w_hh), jnp.stack(d_b_hh)


_wavefront_core.defvjp(_wavefront_fwd, _wavefront_bwd)


def causal_attention_blocked(q, k, v, n_blocks: int = 5):
    """Causal softmax attention, (batch, heads, time, head_dim), by query blocks: block i's queries meet
    only the keys up to its last step (the others are masked anyway), so about (n+1)/2n of the dense
    score matrix is computed. Same result as dense masked attention (max-subtracted softmax)."""
    n_time, scale = q.shape[2], 1.0 / np.sqrt(q.shape[-1])
    size, outs = -(-n_time // n_blocks), []
    for lo in range(0, n_time, size):
        hi = min(lo + size, n_time)
        s = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, lo:hi] * scale, k[:, :, :hi])
        s = jnp.where(jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :], s, -jnp.inf)
        e = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", e, v[:, :, :hi]) / e.sum(-1)[..., None])
    return jnp.concatenate(outs, axis=2)


class StackedGRUAttention(eqx.Module):
    """The issue-18 network: ``layers`` stacked GRU layers (PyTorch `nn.GRU` equations and gate order)
    → pre-LayerNorm causal multi-head self-attention with a residual (`nn.MultiheadAttention`'s
    parameters: packed in-projection with bias, out-projection with bias) → a linear read-out per day.
    ``gru``: "scan" (layer by layer, input projections hoisted, autodiff), "vjp" (layer by layer, the
    hand-written reverse pass of `gru_scan_vjp`), "wavefront" (`gru_wavefront`) or "wavefront_vjp"
    (`gru_wavefront_vjp`); ``attention``: "dense" (`jax.nn.dot_product_attention`, is_causal) or
    "blocked" (`causal_attention_blocked`). All the same math."""

    layers: list
    ln_w: jax.Array
    ln_b: jax.Array
    w_in: jax.Array
    b_in: jax.Array
    w_out: jax.Array
    b_out: jax.Array
    w_read: jax.Array
    b_read: jax.Array
    gru: str = eqx.field(static=True)
    attention: str = eqx.field(static=True)

    def __init__(self, n_in, hidden, n_layers, n_out, *, gru="vjp", attention="blocked", key):
        if gru not in GRU_KINDS or attention not in ATTENTION_KINDS:
            raise ValueError(f"gru must be one of {GRU_KINDS}, attention one of {ATTENTION_KINDS}; "
                             f"got {gru!r}, {attention!r}")
        keys = iter(jax.random.split(key, 3 * n_layers + 3))
        lim = 1.0 / np.sqrt(hidden)

        def u(shape, k, lim=lim):
            return jax.random.uniform(k, shape, minval=-lim, maxval=lim)

        self.layers = [
            {"w_ih": u((n_in if i == 0 else hidden, 3 * hidden), next(keys)),
             "w_hh": u((hidden, 3 * hidden), next(keys)),
             "b_ih": u((3 * hidden,), next(keys)), "b_hh": jnp.zeros(3 * hidden)}
            for i in range(n_layers)
        ]
        self.ln_w, self.ln_b = jnp.ones(hidden), jnp.zeros(hidden)
        self.w_in, self.b_in = u((hidden, 3 * hidden), next(keys), np.sqrt(6.0 / (4 * hidden))), jnp.zeros(3 * hidden)
        self.w_out, self.b_out = u((hidden, hidden), next(keys)), jnp.zeros(hidden)
        self.w_read, self.b_read = u((hidden, n_out), next(keys)), jnp.zeros(n_out)
        self.gru = gru
        self.attention = attention

    def recurrent(self, x):  # x: (batch, time, feature) → (time, batch, hidden)
        h = jnp.swapaxes(x, 0, 1)
        if self.gru == "wavefront":
            return gru_wavefront(h, self.layers)
        if self.gru == "wavefront_vjp":
            return gru_wavefront_vjp(h, self.layers)
        recur = gru_scan_vjp if self.gru == "vjp" else gru_scan
        for p in self.layers:
            h = recur(jnp.einsum("tbf,fg->tbg", h, p["w_ih"]) + p["b_ih"], p["w_hh"], p["b_hh"])
        return h

    def __call__(self, x):
        h = self.recurrent(x)  # (time, batch, hidden)
        mu = h.mean(-1, keepdims=True)
        normed = (h - mu) * jax.lax.rsqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * self.ln_w + self.ln_b
        q, k, v = jnp.split(normed @ self.w_in + self.b_in, 3, axis=-1)
        t, b, hidden = h.shape
        if self.attention == "dense":
            heads = [a.reshape(t, b, PK_HEADS, hidden // PK_HEADS).transpose(1, 0, 2, 3) for a in (q, k, v)]
            att = jax.nn.dot_product_attention(*heads, is_causal=True)  # (batch, time, heads, head_dim)
        else:
            heads = [a.reshape(t, b, PK_HEADS, hidden // PK_HEADS).transpose(1, 2, 0, 3) for a in (q, k, v)]
            att = causal_attention_blocked(*heads).transpose(0, 2, 1, 3)
        out = jnp.swapaxes(h, 0, 1) + att.reshape(b, t, hidden) @ self.w_out + self.b_out
        return out @ self.w_read + self.b_read


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


def pk_data(args):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.days, PK_FEATURES)).astype(np.float32)
    y = rng.normal(size=(args.batch, args.days, PK_TARGETS)).astype(np.float32)
    return x, y


def pk_jax_runner(args, variant: str):
    """(run one Adam step, parameter count) for the JAX network ``variant`` = "GRU/attention"."""
    gru, _, attention = variant.partition("/")
    x, y = (jnp.asarray(a) for a in pk_data(args))
    model = StackedGRUAttention(PK_FEATURES, args.hidden, args.layers, PK_TARGETS, gru=gru,
                                attention=attention or "blocked", key=jax.random.PRNGKey(0))
    return _adam_runner(model, x, y), _count(model)


def pk_torch_runner(args, threads: int):
    """(run one Adam step with ``torch.set_num_threads(n)``: a function of n, parameter count) for the same
    network in PyTorch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hidden, n_time = args.hidden, args.days

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(PK_FEATURES, hidden, num_layers=args.layers, batch_first=True)
            self.norm = torch.nn.LayerNorm(hidden)
            self.attention = torch.nn.MultiheadAttention(hidden, PK_HEADS, batch_first=True)
            self.readout = torch.nn.Linear(hidden, PK_TARGETS)
            self.register_buffer("causal", torch.triu(torch.ones(n_time, n_time, dtype=torch.bool), 1))

        def forward(self, x):
            h = self.gru(x)[0]
            normed = self.norm(h)
            att = self.attention(normed, normed, normed, attn_mask=self.causal, need_weights=False,
                                 is_causal=True)[0]
            return self.readout(h + att)

    x, y = (torch.from_numpy(a) for a in pk_data(args))
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def run_with(n):
        def run():
            torch.set_num_threads(n)
            opt.zero_grad()
            loss = torch.mean((net(x) - y) ** 2)
            loss.backward()
            opt.step()

        return run

    return run_with, sum(p.numel() for p in net.parameters())


def pk_hybrid_runner(args):
    """(run one `kgml.training._train_step`, batch, n_inputs, parameter count) for the hybrid at the same
    batch, window and hidden size with temporal attention: the encoder is one GRU layer (`TemporalEncoder`
    has no stacked layers) and the synthetic corpus has 9 drivers (+ sin/cos day of year = 11 inputs)."""
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

    features = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2", "patm")
    ds = make_corpus(CorpusSpec(vegetation=("maize",), sites_per_block=max(args.batch // 3 + 1, 2),
                                years=max(args.days // 365, 1)))
    norm = Normaliser.fit(ds, (*features, "soil_carbon"))
    task = TaskSpec(daily=("nee", "gpp", "reco", "rsoil"), monthly=(), annual=True)
    scales = target_scales(ds, task)
    data = prepare_windows(ds, features=features, static=("soil_carbon",), task=task, normaliser=norm,
                           window_days=args.days, scales=scales)
    model = build_hybrid(build_model("maize"), n_features=len(features) + 2, n_static=1, n_summary=8,
                         key=jax.random.PRNGKey(0), hidden=args.hidden, attention=True, n_heads=PK_HEADS,
                         residual=("gpp", "reco"))
    objective = HybridObjective.create(task, scales)
    optimizer = make_optimizer(TrainConfig(steps=10_000))
    batch = data.batch(_batch_indices(len(data), min(args.batch, len(data)), 0, 0))

    def runner(model):
        diff, static = eqx.partition(model, eqx.is_inexact_array)
        state = [diff, optimizer.init(diff)]

        def run():
            d, s, aux = _train_step(state[0], static, state[1], batch, optimizer, objective)
            aux["loss"].block_until_ready()
            state[0], state[1] = d, s

        return run

    runs = {"hybrid": runner(model)}
    return runs, int(batch[0].x.shape[0]), len(features) + 2, _count(eqx.filter(model, eqx.is_inexact_array))


def _block(fn, steps: int) -> float:
    """Mean seconds per call over ``steps`` calls (the caller has warmed ``fn`` up)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def pykgml_main(args) -> dict:
    load0 = load_average()
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores ({threads} usable); python "
          f"{sys.version.split()[0]}, jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device)")
    if os.environ.get("XLA_FLAGS"):
        print(f"XLA_FLAGS={os.environ['XLA_FLAGS']}")
    print(f"workload: batch {args.batch} windows × {args.days} days × {PK_FEATURES} features → {PK_TARGETS} daily "
          f"targets; GRU {args.layers} × {args.hidden} + pre-LN causal self-attention ({PK_HEADS} heads, residual) "
          f"+ linear read-out; MSE, one Adam step incl. backward; float32")
    variants = [] if args.hybrid_only else [v for v in args.variants.split(",") if v]
    runners, n_jax = {}, None
    for v in variants:
        runners[f"jax_{v}"], n_jax = pk_jax_runner(args, v)
    if n_jax is not None:
        print(f"JAX parameters: {n_jax:,}")
    torch_run = None if args.hybrid_only else pk_torch_runner(args, threads)
    if args.hybrid_only:
        pass
    elif torch_run is None:
        print("PyTorch: not installed (pip install torch --index-url https://download.pytorch.org/whl/cpu) — "
              "the PyTorch part and the ratios are skipped")
    else:
        import torch

        run_with, n_torch = torch_run
        # by default the cores XLA uses and 1: on a shared machine a straggling OpenMP thread stalls every barrier
        counts = [int(n) for n in args.torch_threads.split(",")] if args.torch_threads else sorted({threads, 1})[::-1]
        torch_names = [f"torch_{n}t" for n in counts]
        for n, name in zip(counts, torch_names, strict=True):
            runners[name] = run_with(n)
        print(f"PyTorch parameters: {n_torch:,} (torch {torch.__version__}; torch_Nt: torch.set_num_threads(N); "
              f"XLA's CPU client uses {threads} cores)")
        if n_torch != n_jax:
            raise RuntimeError(f"parameter counts differ: JAX {n_jax}, PyTorch {n_torch}")
    for name, fn in runners.items():  # warm-up / compile, outside the timed blocks
        t0 = time.perf_counter()
        fn()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in runners}
    for i in range(args.pairs if runners else 0):
        for name, fn in runners.items():  # A B (C …) in turn, the same order every round
            time.sleep(args.pause)  # let the other framework's thread pool go idle
            times[name].append(_block(fn, args.steps))
        row = "  ".join(f"{n} {1e3 * times[n][-1]:7.1f} ms" for n in runners)
        print(f"round {i + 1}: {row}  (load {load_average()[0]})")
    result = {"batch": args.batch, "days": args.days, "features": PK_FEATURES, "hidden": args.hidden,
              "layers": args.layers, "params": n_jax, "steps_per_block": args.steps, "pairs": args.pairs,
              "xla_flags": os.environ.get("XLA_FLAGS")}
    if torch_run is not None:
        result["torch_threads"] = ",".join(str(n) for n in counts)
        # per round, the faster of the two thread settings: the ratio against PyTorch at its best
        times["torch_best"] = [min(ts) for ts in zip(*(times[n] for n in torch_names), strict=True)]
        for v in variants:
            for t_name in (*torch_names, "torch_best"):
                ratios = [tt / tj for tt, tj in zip(times[t_name], times[f"jax_{v}"], strict=True)]
                print(f"{t_name} / jax_{v}, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
                      f"median {np.median(ratios):.2f}×")
                result[f"ratio_{v}_vs_{t_name}_median"] = float(np.median(ratios))
                result[f"ratio_{v}_vs_{t_name}_min"] = float(min(ratios))
    if not args.no_hybrid:
        runs, b, n_in, n_hyb = pk_hybrid_runner(args)
        print(f"hybrid: maize; TemporalEncoder GRU 1 × {args.hidden} + attention ({PK_HEADS} heads) + pool, "
              f"location, heads, process model; {n_in} inputs, {n_hyb:,} parameters; batch {b}; "
              "kgml.training._train_step (AdamW)")
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s")
        hyb = {name: [] for name in runs}
        for i in range(args.pairs):
            for name, run in runs.items():
                hyb[name].append(_block(run, args.steps))
            print(f"hybrid round {i + 1}: " + "  ".join(f"{n} {1e3 * hyb[n][-1]:7.1f} ms" for n in runs)
                  + f"  (load {load_average()[0]})")
        for name, ts in hyb.items():
            result[f"{name}_ms_median"] = 1e3 * float(np.median(ts))
            result[f"{name}_samples_per_s"] = b / float(np.median(ts))
        result["hybrid_batch"] = b
    for name, ts in times.items():
        if name != "torch_best":
            result[f"{name}_ms_median"] = 1e3 * float(np.median(ts))
            result[f"{name}_samples_per_s"] = args.batch / float(np.median(ts))
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}))
    print(f"load average: start {load0}, end {load_average()} (shared machine)")
    return result


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.pykgml:
        load0 = load_average()
        result = pykgml_main(args)
        if argv is None:  # a command-line run: record it
            append_result("train_speed_pykgml", {k: v for k, v in result.items() if v is not None},
                          load_start=load0)
        return result
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
