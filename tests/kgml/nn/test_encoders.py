"""Temporal encoders: shapes, equality with a hand-written loop over the cell, masking (no influence, no
NaN leak), causality, gradients to every leaf, jit+vmap, determinism."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.models.nn import (
    AttentionPool,
    GRUEncoder,
    LSTMEncoder,
    TemporalAttention,
    TemporalEncoder,
)
from tests.kgml.nn._helpers import _normal, assert_grads_reach_every_leaf

N_TIME, N_FEATURE, HIDDEN = 9, 3, 8
MASK = np.array([True, True, False, True, False, False, True, True, False])




def _inputs(seed: int = 0):
    return _normal(seed, (N_TIME, N_FEATURE))


def _projection_loss(out, seed: int = 99):
    """A scalar with a generic gradient (a plain sum can cancel, e.g. through a layer norm)."""
    leaves = jax.tree.leaves(out)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return sum(
        jnp.sum(leaf * jax.random.normal(k, leaf.shape))
        for leaf, k in zip(leaves, keys, strict=True)
    )




@eqx.filter_jit
def _apply(model, x, mask=None):
    return model(x, mask)


@eqx.filter_jit
def _grads(model, x, mask=None):
    """Gradients of a projection loss with respect to (model, x)."""
    return eqx.filter_grad(lambda mx: _projection_loss(mx[0](mx[1], mask)))((model, x))


ENCODERS = [
    pytest.param(lambda key: GRUEncoder(N_FEATURE, HIDDEN, key=key), id="gru"),
    pytest.param(lambda key: LSTMEncoder(N_FEATURE, HIDDEN, key=key), id="lstm"),
    pytest.param(
        lambda key: TemporalEncoder(N_FEATURE, HIDDEN, "gru", True, key=key), id="temporal-gru-attn"
    ),
    pytest.param(
        lambda key: TemporalEncoder(N_FEATURE, HIDDEN, "lstm", True, key=key),
        id="temporal-lstm-attn",
    ),
    pytest.param(
        lambda key: TemporalEncoder(N_FEATURE, HIDDEN, "gru", False, key=key), id="temporal-gru"
    ),
]


def _manual_loop(encoder, x, mask):
    """Python loop over the equinox cell; masked steps are skipped (the state is carried)."""
    if isinstance(encoder, GRUEncoder):
        state = jnp.zeros(HIDDEN)
    else:
        state = (jnp.zeros(HIDDEN), jnp.zeros(HIDDEN))
    outputs = []
    for t in range(x.shape[0]):
        if mask[t]:
            state = encoder.cell(x[t], state)
        outputs.append(state if isinstance(encoder, GRUEncoder) else state[0])
    return jnp.stack(outputs)


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder])
@pytest.mark.parametrize("masked", [False, True])
def test_recurrent_equals_manual_loop(cls, masked):
    encoder = cls(N_FEATURE, HIDDEN, key=jax.random.PRNGKey(1))
    x = _inputs()
    mask = MASK if masked else np.ones(N_TIME, dtype=bool)
    got = encoder(x, jnp.asarray(mask) if masked else None)
    want = _manual_loop(encoder, x, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The state is carried unchanged through a gap.
    if masked:
        for t in np.flatnonzero(~mask):
            if t > 0:
                np.testing.assert_array_equal(got[t], got[t - 1])


@pytest.mark.slow
@pytest.mark.parametrize("make", ENCODERS)
def test_shapes_masked_steps_have_no_influence_and_nan_does_not_leak(make):
    model = make(jax.random.PRNGKey(2))
    x = _inputs()
    mask = jnp.asarray(MASK)
    masked_rows = ~MASK[:, None]
    perturbed = jnp.where(masked_rows, 1e3 * _inputs(seed=5), x)
    poisoned = jnp.where(masked_rows, jnp.nan, x)

    base = _apply(model, x, mask)
    shapes = [(N_TIME, HIDDEN), (HIDDEN,)] if isinstance(base, tuple) else [(N_TIME, HIDDEN)]
    assert [leaf.shape for leaf in jax.tree.leaves(base)] == shapes
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(base))
    for other in (_apply(model, perturbed, mask), _apply(model, poisoned, mask)):
        for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(other), strict=True):
            np.testing.assert_array_equal(a, b)

    grad_model, grad_x = _grads(model, poisoned, mask)
    assert all(
        np.all(np.isfinite(g))
        for g in jax.tree.leaves(eqx.filter(grad_model, eqx.is_inexact_array))
    )
    assert np.all(np.isfinite(grad_x))
    np.testing.assert_array_equal(grad_x[~MASK], 0.0)
    assert np.any(grad_x[MASK] != 0)


def test_unmasked_steps_do_influence():
    """The masking test above could pass trivially if inputs were ignored: they are not."""
    model = TemporalEncoder(N_FEATURE, HIDDEN, key=jax.random.PRNGKey(2))
    x = _inputs()
    features, summary = _apply(model, x)
    features2, summary2 = _apply(model, x.at[0].add(1.0))
    assert np.all(np.any(features != features2, axis=1))
    assert np.any(summary != summary2)


@pytest.mark.parametrize("make", ENCODERS)
def test_gradients_reach_every_leaf(make):
    grads, _ = _grads(make(jax.random.PRNGKey(3)), _inputs(), jnp.asarray(MASK))
    assert_grads_reach_every_leaf(grads)


def test_jit_vmap_equals_loop():
    model = TemporalEncoder(N_FEATURE, HIDDEN, "lstm", key=jax.random.PRNGKey(4))
    xs = _normal(5, (3, N_TIME, N_FEATURE))
    masks = jnp.asarray(np.random.default_rng(6).random((3, N_TIME)) < 0.7)
    features, summaries = eqx.filter_jit(lambda m, x, k: jax.vmap(m)(x, k))(model, xs, masks)
    for i in range(3):
        f, s = _apply(model, xs[i], masks[i])
        np.testing.assert_allclose(features[i], f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(summaries[i], s, rtol=1e-5, atol=1e-6)


def test_determinism_from_keys():
    a = TemporalEncoder(N_FEATURE, HIDDEN, key=jax.random.PRNGKey(7))
    b = TemporalEncoder(N_FEATURE, HIDDEN, key=jax.random.PRNGKey(7))
    c = TemporalEncoder(N_FEATURE, HIDDEN, key=jax.random.PRNGKey(8))
    assert eqx.tree_equal(a, b)
    assert not eqx.tree_equal(a, c)
    x = _inputs()
    np.testing.assert_array_equal(_apply(a, x)[0], _apply(b, x)[0])


@pytest.mark.parametrize("causal", [True, False])
def test_temporal_attention_causality(causal):
    attention = TemporalAttention(HIDDEN, 2, causal=causal, key=jax.random.PRNGKey(9))
    h = _normal(10, (N_TIME, HIDDEN))
    out = _apply(attention, h)
    out_future_changed = _apply(attention, h.at[-1].add(1.0))
    past_unchanged = np.array_equal(out[:-1], out_future_changed[:-1])
    assert past_unchanged == causal


def test_temporal_attention_without_valid_keys_is_identity():
    attention = TemporalAttention(HIDDEN, 2, key=jax.random.PRNGKey(11))
    h = _normal(12, (N_TIME, HIDDEN))
    np.testing.assert_array_equal(_apply(attention, h, jnp.zeros(N_TIME, dtype=bool)), h)
    # Causal with the first two steps masked: those steps see no key and pass through unchanged.
    mask = jnp.arange(N_TIME) >= 2
    out = _apply(attention, h, mask)
    np.testing.assert_array_equal(out[:2], h[:2])
    assert np.all(np.any(out[2:] != h[2:], axis=1))


@pytest.mark.slow
def test_attention_pool_masking():
    pool = AttentionPool(HIDDEN, 2, key=jax.random.PRNGKey(13))
    h = _normal(14, (N_TIME, HIDDEN))
    mask = jnp.asarray(MASK)
    base = _apply(pool, h, mask)
    np.testing.assert_array_equal(base, _apply(pool, jnp.where(mask[:, None], h, jnp.nan), mask))
    assert np.any(base != _apply(pool, h))
    # All steps masked: zeros, and gradients stay finite even with NaN inputs.
    none = jnp.zeros(N_TIME, dtype=bool)
    nan_h = jnp.full_like(h, jnp.nan)
    np.testing.assert_array_equal(_apply(pool, nan_h, none), 0.0)
    grads, grad_h = _grads(pool, nan_h, none)
    np.testing.assert_array_equal(grad_h, 0.0)
    assert all(
        np.all(np.isfinite(g)) for g in jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    )


def test_bad_arguments_are_rejected():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="kind"):
        TemporalEncoder(N_FEATURE, HIDDEN, "rnn", key=key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_heads"):
        TemporalAttention(6, 4, key=key)
    encoder = GRUEncoder(N_FEATURE, HIDDEN, key=key)
    with pytest.raises(ValueError, match="vmap"):
        encoder(jnp.zeros((2, N_TIME, N_FEATURE)))
    with pytest.raises(ValueError, match="mask"):
        encoder(_inputs(), jnp.ones(N_TIME + 1, dtype=bool))
