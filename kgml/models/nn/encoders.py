"""Temporal encoders over one site's daily drivers (GRU / LSTM, self-attention over time, attention
pooling) and `TemporalEncoder`, which composes them into (per-step features, window summary).
"""

# jaxtyping shape strings ("time feature") are not Python expressions.
# ruff: noqa: F722

from __future__ import annotations

import abc
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

__all__ = [
    "AttentionPool",
    "GRUEncoder",
    "LSTMEncoder",
    "RecurrentEncoder",
    "TemporalAttention",
    "TemporalEncoder",
]


def _full_mask(mask: Bool[Array, " time"] | None, n_time: int) -> Bool[Array, " time"]:
    if mask is None:
        return jnp.ones((n_time,), dtype=bool)
    if mask.shape != (n_time,):
        raise ValueError(f"mask must have shape (time,) = ({n_time},); got {mask.shape}")
    return mask.astype(bool)


def _check_sequence(h, hidden: int, where: str) -> None:
    if h.ndim != 2 or h.shape[1] != hidden:
        raise ValueError(
            f"{where} expects h of shape (time, {hidden}) for one site; got {h.shape} "
            "(vmap over sites at the call site)"
        )


def _check_heads(hidden: int, n_heads: int, where: str) -> None:
    if n_heads < 1 or hidden % n_heads != 0:
        raise ValueError(
            f"{where}: hidden={hidden} must be a positive multiple of n_heads={n_heads} "
            "(each head gets hidden // n_heads features)"
        )


# --- recurrent encoders -------------------------------------------------------------------------


class RecurrentEncoder(eqx.Module):
    """Abstract recurrent encoder: a sequence of drivers → the sequence of hidden states.

    Acts on one site window (``time`` first); `jax.vmap` at the call site. ``mask`` marks valid steps
    (True = observed; None = all valid). The state starts at zero. At a masked step the input is replaced by zeros (so NaN cannot leak),
    the cell is evaluated, and its result discarded: the state after a masked step equals the state
    before it, so a gap neither changes the memory nor the output at later steps.
    """

    in_features: eqx.AbstractVar[int]
    hidden: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init_state(self):
        """The state before the first step (a pytree of ``(hidden,)`` zeros)."""

    @abc.abstractmethod
    def step(self, state, x: Float[Array, " feature"]):
        """One cell update: (state, input) → new state."""

    @abc.abstractmethod
    def output(self, state) -> Float[Array, " hidden"]:
        """The hidden vector exposed for a state."""

    def __call__(
        self, x: Float[Array, "time feature"], mask: Bool[Array, " time"] | None = None
    ) -> Float[Array, "time hidden"]:
        """Hidden states after each step, ``(time, hidden)``; ``mask`` (True = valid) as above."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (time, {self.in_features}) for one site; got "
                f"{x.shape} (vmap over sites at the call site)"
            )
        valid = _full_mask(mask, x.shape[0])
        x_safe = jnp.where(valid[:, None], x, 0.0)

        def body(state, inputs):
            x_t, valid_t = inputs
            proposed = self.step(state, x_t)
            state = jax.tree.map(lambda new, old: jnp.where(valid_t, new, old), proposed, state)
            return state, self.output(state)

        _, hs = jax.lax.scan(body, self.init_state(), (x_safe, valid))
        return hs


class GRUEncoder(RecurrentEncoder):
    """GRU over time (Cho et al. 2014, arXiv:1406.1078) built on `eqx.nn.GRUCell`."""

    cell: eqx.nn.GRUCell
    in_features: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    def __init__(self, in_features: int, hidden: int, *, key: PRNGKeyArray):
        self.cell = eqx.nn.GRUCell(in_features, hidden, key=key)
        self.in_features = in_features
        self.hidden = hidden

    def init_state(self) -> Float[Array, " hidden"]:
        return jnp.zeros((self.hidden,))

    def step(
        self, state: Float[Array, " hidden"], x: Float[Array, " feature"]
    ) -> Float[Array, " hidden"]:
        return self.cell(x, state)

    def output(self, state: Float[Array, " hidden"]) -> Float[Array, " hidden"]:
        return state


class LSTMEncoder(RecurrentEncoder):
    """LSTM over time (Hochreiter & Schmidhuber 1997, Neural Comput. 9:1735) on `eqx.nn.LSTMCell`;
    the output is the hidden state ``h`` (the cell state ``c`` is internal)."""

    cell: eqx.nn.LSTMCell
    in_features: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    def __init__(self, in_features: int, hidden: int, *, key: PRNGKeyArray):
        self.cell = eqx.nn.LSTMCell(in_features, hidden, key=key)
        self.in_features = in_features
        self.hidden = hidden

    def init_state(self) -> tuple[Float[Array, " hidden"], Float[Array, " hidden"]]:
        return jnp.zeros((self.hidden,)), jnp.zeros((self.hidden,))

    def step(self, state, x: Float[Array, " feature"]):
        return self.cell(x, state)

    def output(self, state) -> Float[Array, " hidden"]:
        return state[0]


# --- attention over time ------------------------------------------------------------------------


class TemporalAttention(eqx.Module):
    """Multi-head self-attention over time with a pre-norm residual (Vaswani et al. 2017; pre-LN as in
    Xiong et al. 2020, arXiv:2002.04745):  ``out_t = h_t + MHA(LN(h)_t, LN(h), LN(h))``.

    ``causal=True`` (default) lets step t attend only to steps ≤ t, so per-step features (and hence
    time-varying parameters) never depend on future drivers; ``causal=False`` is full attention over the
    window. Masked steps are never attended to; every step still has an output (its query is its own
    state — the recurrent encoders carry a finite state through gaps). A step with no valid key
    (e.g. a gap at the window start under causal attention) gets ``out_t = h_t``. No positional
    encoding: order is already in the recurrent states.
    """

    attention: eqx.nn.MultiheadAttention
    norm: eqx.nn.LayerNorm
    hidden: int = eqx.field(static=True)
    n_heads: int = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(self, hidden: int, n_heads: int = 4, *, causal: bool = True, key: PRNGKeyArray):
        _check_heads(hidden, n_heads, "TemporalAttention")
        self.attention = eqx.nn.MultiheadAttention(n_heads, hidden, key=key)
        self.norm = eqx.nn.LayerNorm(hidden)
        self.hidden = hidden
        self.n_heads = n_heads
        self.causal = causal

    def __call__(
        self, h: Float[Array, "time hidden"], mask: Bool[Array, " time"] | None = None
    ) -> Float[Array, "time hidden"]:
        _check_sequence(h, self.hidden, "TemporalAttention")
        n_time = h.shape[0]
        valid = _full_mask(mask, n_time)
        normed = jax.vmap(self.norm)(h)
        # Masked steps are zeroed before the norm (not after), so NaN there cannot reach gradients.
        keys = jax.vmap(self.norm)(jnp.where(valid[:, None], h, 0.0))
        allowed = jnp.broadcast_to(valid[None, :], (n_time, n_time))
        if self.causal:
            allowed = allowed & jnp.tril(jnp.ones((n_time, n_time), dtype=bool))
        attended = self.attention(normed, keys, keys, mask=allowed)
        has_key = jnp.any(allowed, axis=1)
        return h + jnp.where(has_key[:, None], attended, 0.0)


class AttentionPool(eqx.Module):
    """Attention pooling with a learned query (Lee et al. 2019, Set Transformer's PMA, one seed):
    ``summary = MHA(q, LN(h), LN(h))`` over the valid steps. All steps masked → zeros."""

    query: Float[Array, " hidden"]
    attention: eqx.nn.MultiheadAttention
    norm: eqx.nn.LayerNorm
    hidden: int = eqx.field(static=True)

    def __init__(self, hidden: int, n_heads: int = 4, *, key: PRNGKeyArray):
        _check_heads(hidden, n_heads, "AttentionPool")
        query_key, attention_key = jax.random.split(key)
        self.query = jax.random.normal(query_key, (hidden,)) / jnp.sqrt(hidden)
        self.attention = eqx.nn.MultiheadAttention(n_heads, hidden, key=attention_key)
        self.norm = eqx.nn.LayerNorm(hidden)
        self.hidden = hidden

    def __call__(
        self, h: Float[Array, "time hidden"], mask: Bool[Array, " time"] | None = None
    ) -> Float[Array, " hidden"]:
        _check_sequence(h, self.hidden, "AttentionPool")
        valid = _full_mask(mask, h.shape[0])
        keys = jax.vmap(self.norm)(jnp.where(valid[:, None], h, 0.0))
        pooled = self.attention(self.query[None, :], keys, keys, mask=valid[None, :])[0]
        return jnp.where(jnp.any(valid), pooled, 0.0)


# --- composition --------------------------------------------------------------------------------


class TemporalEncoder(eqx.Module):
    """Recurrent encoder (+ optional temporal self-attention) → (per-step features, window summary).

    ``attention=True``: per-step features are `TemporalAttention` over the recurrent states and the
    summary is an `AttentionPool` over them. ``attention=False``: per-step features are the recurrent
    states and the summary is the final state (the state after the last valid step, since gaps carry it).
    """

    recurrent: RecurrentEncoder
    self_attention: TemporalAttention | None
    pool: AttentionPool | None
    in_features: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        hidden: int,
        kind: Literal["gru", "lstm"] = "gru",
        attention: bool = True,
        *,
        n_heads: int = 4,
        causal: bool = True,
        key: PRNGKeyArray,
    ):
        recurrent_key, attention_key, pool_key = jax.random.split(key, 3)
        if kind == "gru":
            self.recurrent = GRUEncoder(in_features, hidden, key=recurrent_key)
        elif kind == "lstm":
            self.recurrent = LSTMEncoder(in_features, hidden, key=recurrent_key)
        else:
            raise ValueError(f"TemporalEncoder: kind must be 'gru' or 'lstm'; got {kind!r}")
        if attention:
            self.self_attention = TemporalAttention(
                hidden, n_heads, causal=causal, key=attention_key
            )
            self.pool = AttentionPool(hidden, n_heads, key=pool_key)
        else:
            self.self_attention = None
            self.pool = None
        self.in_features = in_features
        self.hidden = hidden

    def __call__(
        self, x: Float[Array, "time feature"], mask: Bool[Array, " time"] | None = None
    ) -> tuple[Float[Array, "time hidden"], Float[Array, " hidden"]]:
        states = self.recurrent(x, mask)
        if self.self_attention is None or self.pool is None:
            return states, states[-1]
        features = self.self_attention(states, mask)
        return features, self.pool(features, mask)
