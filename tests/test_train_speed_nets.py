"""benchmarks/train_speed.py's issue-18 network: every JAX variant (layer-by-layer scan, hand-written
reverse passes, the wavefront schedule, block-causal attention) computes the same loss and gradients as the
plain layer-by-layer scan with dense attention; with torch installed, the same forward as PyTorch's
`nn.GRU` + `nn.MultiheadAttention` with copied weights. No timing here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _train_speed():
    sys.path.insert(0, str(_BENCH))  # train_speed imports its sibling record.py
    try:
        spec = importlib.util.spec_from_file_location("bench_train_speed", _BENCH / "train_speed.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # equinox modules (dataclasses) look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_BENCH))
    return module


class _Args:
    batch, days, hidden, layers = 3, 17, 8, 3


def _net(ts, gru, attention):
    net = ts.StackedGRUAttention(ts.PK_FEATURES, _Args.hidden, _Args.layers, ts.PK_TARGETS, gru=gru,
                                 attention=attention, key=jax.random.PRNGKey(0))
    # non-zero recurrent biases, so that b_hn inside the reset product is exercised
    return eqx.tree_at(lambda m: [p["b_hh"] for p in m.layers], net, [p["b_hh"] + 0.1 for p in net.layers])


@pytest.mark.slow
def test_variants_equal_the_plain_scan():
    ts = _train_speed()
    x, y = (jnp.asarray(a) for a in ts.pk_data(_Args))

    def value_and_grad(net):
        return eqx.filter_value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(net)

    loss0, grad0 = value_and_grad(_net(ts, "scan", "dense"))
    for gru in ts.GRU_KINDS:
        for attention in ts.ATTENTION_KINDS:
            loss, grad = value_and_grad(_net(ts, gru, attention))
            np.testing.assert_allclose(loss, loss0, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad0), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{gru}/{attention}")


@pytest.mark.slow
def test_forward_equals_pytorch():
    torch = pytest.importorskip("torch", reason="torch is not a kgml dependency; install it to compare")
    ts = _train_speed()
    net = _net(ts, "vjp", "blocked")
    hidden = _Args.hidden
    gru = torch.nn.GRU(ts.PK_FEATURES, hidden, _Args.layers, batch_first=True)
    mha = torch.nn.MultiheadAttention(hidden, ts.PK_HEADS, batch_first=True)
    with torch.no_grad():
        for i, p in enumerate(net.layers):
            for name, value in (("weight_ih", p["w_ih"].T), ("weight_hh", p["w_hh"].T),
                                ("bias_ih", p["b_ih"]), ("bias_hh", p["b_hh"])):
                getattr(gru, f"{name}_l{i}").copy_(torch.tensor(np.array(value)))
        mha.in_proj_weight.copy_(torch.tensor(np.array(net.w_in.T)))
        mha.in_proj_bias.copy_(torch.tensor(np.array(net.b_in)))
        mha.out_proj.weight.copy_(torch.tensor(np.array(net.w_out.T)))
        mha.out_proj.bias.copy_(torch.tensor(np.array(net.b_out)))
        x = ts.pk_data(_Args)[0]
        h = gru(torch.tensor(x))[0]
        normed = torch.nn.functional.layer_norm(h, (hidden,))
        causal = torch.triu(torch.ones(_Args.days, _Args.days, dtype=torch.bool), 1)
        att = mha(normed, normed, normed, attn_mask=causal, need_weights=False)[0]
        want = (h + att).numpy() @ np.array(net.w_read) + np.array(net.b_read)
    np.testing.assert_allclose(net(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
