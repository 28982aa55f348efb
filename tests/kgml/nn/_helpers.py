"""Helpers shared by the kgml.models.nn tests."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _normal(seed, shape, scale=1.0):
    """Test inputs from numpy (no XLA compilation per shape, unlike jax.random)."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype=jnp.float32)


def assert_grads_reach_every_leaf(grads):
    """Every inexact array leaf of ``grads`` is finite and not identically zero."""
    leaves = jax.tree_util.tree_leaves_with_path(eqx.filter(grads, eqx.is_inexact_array))
    assert leaves, "no array leaves in the gradient"
    for path, g in leaves:
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), f"non-finite gradient at {name}"
        assert np.any(np.asarray(g) != 0), f"no gradient reaches {name}"
