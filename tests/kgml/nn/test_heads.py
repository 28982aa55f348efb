"""Heads: ParameterHead starts at the specs' defaults and cannot leave the bounds; ResidualHead starts at
zero and is bounded by its scale; gradients, jit+vmap, keys, argument checks."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.models.nn import ParameterHead, ResidualHead
from process_models.parameters import collect_specs
from process_models.soil_respiration import DAMM, LloydTaylor, Q10Respiration
from tests.kgml.nn._helpers import _normal, assert_grads_reach_every_leaf

# Real specs of the process models: linear (logit) and decade-spanning (loglogit) ranges.
SPECS = collect_specs(
    Q10Respiration.parameter_specs, LloydTaylor.parameter_specs, DAMM.parameter_specs
)
TIME_VARYING = (SPECS[0].name, SPECS[-1].name)
IN_DIM, SEQ_DIM, N_TIME = 5, 4, 6






def _head(seed=0, time_varying=TIME_VARYING):
    return ParameterHead(
        IN_DIM, SPECS, time_varying, seq_dim=SEQ_DIM, hidden=8, key=jax.random.PRNGKey(seed)
    )


def _inputs(seed=1, scale=1.0):
    return _normal(seed, (IN_DIM,), scale), _normal(seed + 1000, (N_TIME, SEQ_DIM), scale)


@eqx.filter_jit
def _apply(head, *args):
    return head(*args)


def _randomise(module, seed, scale):
    """Replace every float array leaf by scale × N(0, 1) (a badly trained network)."""
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    leaves = [_normal(seed * 100 + i, leaf.shape, scale) for i, leaf in enumerate(leaves)]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


@pytest.mark.slow
def test_parameter_head_names_and_shapes():
    head = _head()
    assert head.names == tuple(s.name for s in SPECS)
    assert head.time_varying == TIME_VARYING
    assert set(head.static_names) == set(head.names) - set(TIME_VARYING)
    static, varying = _apply(head, *_inputs())
    # (jit returns dicts with sorted keys, so compare as sets)
    assert set(static) == set(head.static_names) and set(varying) == set(head.time_varying)
    assert all(v.shape == () for v in static.values())
    assert all(v.shape == (N_TIME,) for v in varying.values())


@pytest.mark.parametrize("seed", [1, 2])
def test_parameter_head_starts_at_the_defaults(seed):
    head = _head()
    embedding, h_seq = _inputs(seed, scale=10.0)
    u_static, u_varying = _apply(head.unconstrained, embedding, h_seq)
    static, varying = _apply(head, embedding, h_seq)
    for spec in SPECS:
        if spec.name in u_static:
            u, theta = u_static[spec.name], static[spec.name]
        else:
            u, theta = u_varying[spec.name], varying[spec.name]
        # Unconstrained: exactly the transform's value of the default (zero last-layer weights).
        np.testing.assert_array_equal(u, np.float32(spec.default_unconstrained))
        # Physical: the default, up to the float32 round trip of the transform.
        np.testing.assert_array_equal(
            theta, spec.to_physical(np.float32(spec.default_unconstrained))
        )
        np.testing.assert_allclose(theta, spec.default, rtol=2e-6)


def test_parameter_head_outputs_stay_in_bounds_for_wild_weights():
    lower = np.array([s.lower for s in SPECS], dtype=np.float32)
    upper = np.array([s.upper for s in SPECS], dtype=np.float32)
    order = {s.name: i for i, s in enumerate(SPECS)}
    hits = np.zeros((2, len(SPECS)), dtype=bool)
    for seed in range(4):
        head = _randomise(_head(), seed, scale=30.0)
        static, varying = _apply(head, *_inputs(seed, scale=100.0))
        for name, value in (static | varying).items():
            i = order[name]
            value = np.asarray(value)
            assert np.all(np.isfinite(value)), name
            assert np.all((value >= lower[i]) & (value <= upper[i])), (
                name,
                value,
                lower[i],
                upper[i],
            )
            hits[0, i] |= np.any(np.isclose(value, lower[i], rtol=1e-3))
            hits[1, i] |= np.any(np.isclose(value, upper[i], rtol=1e-3))
    assert hits.any(), "the test never pushed a parameter to a bound; make the weights larger"


def test_parameter_head_gradients():
    head = _head()
    embedding, h_seq = _inputs()

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(head):
        static, varying = head(embedding, h_seq)
        return sum(jnp.sum(v) * (i + 1) for i, v in enumerate((static | varying).values()))

    # At initialisation only the (zero) last layers receive gradient ...
    at_init = grads(head)
    for mlp in (at_init.static_mlp, at_init.time_varying_mlp):
        assert np.all(np.asarray(mlp.layers[-1].weight) != 0)
        np.testing.assert_array_equal(mlp.layers[0].weight, 0.0)
    # ... and once they are off zero (after one optimiser step), every leaf does.
    moved = eqx.tree_at(
        lambda h: (h.static_mlp.layers[-1].weight, h.time_varying_mlp.layers[-1].weight),
        head,
        replace_fn=lambda w: w - 0.1 * jnp.sign(w + 1.0),
    )
    assert_grads_reach_every_leaf(grads(moved))


def test_parameter_head_jit_vmap_equals_loop_and_keys():
    head = _randomise(_head(), 7, scale=0.3)
    embeddings = _normal(3, (3, IN_DIM))
    h_seqs = _normal(4, (3, N_TIME, SEQ_DIM))
    static_b, varying_b = eqx.filter_jit(lambda h, e, s: jax.vmap(h)(e, s))(
        head, embeddings, h_seqs
    )
    for i in range(3):
        static, varying = _apply(head, embeddings[i], h_seqs[i])
        for name in static:
            np.testing.assert_allclose(static_b[name][i], static[name], rtol=1e-5)
        for name in varying:
            np.testing.assert_allclose(varying_b[name][i], varying[name], rtol=1e-5)
    assert eqx.tree_equal(_head(5), _head(5))
    assert not eqx.tree_equal(_head(5), _head(6))


def test_parameter_head_static_only_and_argument_checks():
    head = ParameterHead(IN_DIM, SPECS, key=jax.random.PRNGKey(0))
    static, varying = head(jnp.zeros(IN_DIM))
    assert varying == {} and set(static) == set(head.names)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="seq_dim"):
        ParameterHead(IN_DIM, SPECS, TIME_VARYING, key=key)
    with pytest.raises(ValueError, match="not among"):
        ParameterHead(IN_DIM, SPECS, ("no_such_parameter",), seq_dim=SEQ_DIM, key=key)
    with pytest.raises(ValueError, match="duplicate"):
        ParameterHead(IN_DIM, SPECS + SPECS[:1], key=key)
    with pytest.raises(ValueError, match="h_seq"):
        _head()(jnp.zeros(IN_DIM))
    with pytest.raises(ValueError, match="embedding"):
        _head()(jnp.zeros(IN_DIM + 1), jnp.zeros((N_TIME, SEQ_DIM)))


# --- ResidualHead --------------------------------------------------------------------------------

SCALES = {"gpp": 2.0, "reco": 0.5}


def _residual(seed=0, scale=None):
    return ResidualHead(
        SEQ_DIM, tuple(SCALES), SCALES if scale is None else scale, key=jax.random.PRNGKey(seed)
    )


def test_residual_head_starts_at_zero():
    out = _apply(_residual(), _inputs(scale=100.0)[1])
    assert set(out) == set(SCALES)
    for value in out.values():
        assert value.shape == (N_TIME,)
        np.testing.assert_array_equal(value, 0.0)


def test_residual_head_is_bounded_by_scale():
    _, h_seq = _inputs(scale=100.0)
    for seed in range(3):
        out = _apply(_randomise(_residual(), seed, scale=10.0), h_seq)
        for name, value in out.items():
            assert np.all(np.abs(value) <= SCALES[name]), name
            assert (
                np.max(np.abs(value)) > 0.9 * SCALES[name]
            )  # saturates near, not beyond, the scale
    uniform = _residual(scale=1.5)
    assert uniform.scales == (1.5, 1.5)


def test_residual_head_gradients_and_keys():
    head = _residual()
    _, h_seq = _inputs()
    grads = eqx.filter_grad(lambda m: jnp.sum(m(h_seq)["gpp"] - 3.0 * m(h_seq)["reco"]))(head)
    assert_grads_reach_every_leaf(grads)
    # Exactly zero at initialisation, whatever the key.
    assert eqx.tree_equal(_residual(1), _residual(2))


def test_residual_head_argument_checks():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="missing"):
        ResidualHead(SEQ_DIM, ("gpp", "reco"), {"gpp": 1.0}, key=key)
    with pytest.raises(ValueError, match="> 0"):
        ResidualHead(SEQ_DIM, ("gpp",), 0.0, key=key)
    with pytest.raises(ValueError, match="unique"):
        ResidualHead(SEQ_DIM, ("gpp", "gpp"), 1.0, key=key)
    with pytest.raises(ValueError, match="h_seq"):
        _residual()(jnp.zeros((N_TIME, SEQ_DIM + 1)))
