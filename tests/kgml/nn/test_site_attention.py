"""Site attention (masking, no-context identity, distance bias, permutation invariance, gradients,
jit+vmap, keys) and nearest_context against a brute-force float64 numpy haversine."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.models.nn import EARTH_RADIUS_KM, SiteAttention, nearest_context
from tests.kgml.nn._helpers import _normal, assert_grads_reach_every_leaf

DIM, N_CTX = 8, 5
MASK = np.array([True, False, True, True, False])






@eqx.filter_jit
def _apply(model, query, context, mask, distance=None):
    return model(query, context, mask, distance)


@eqx.filter_jit
def _grads(model, query, context, mask, distance):
    """Gradients of a projection loss with respect to (model, query, context, distance)."""
    weights = _normal(42, (DIM,))

    def loss(args):
        model, query, context, distance = args
        return jnp.sum(weights * model(query, context, mask, distance))

    return eqx.filter_grad(loss)((model, query, context, distance))


def _example(seed=0):
    query = _normal(seed, (DIM,))
    context = _normal(seed + 1000, (N_CTX, DIM))
    distance = jnp.asarray(
        np.random.default_rng(seed).uniform(5.0, 300.0, N_CTX), dtype=jnp.float32
    )
    return query, context, jnp.asarray(MASK), distance


def _model(seed=0, n_heads=2):
    return SiteAttention(DIM, n_heads, key=jax.random.PRNGKey(seed))


@pytest.mark.parametrize("with_distance", [False, True])
def test_masked_sites_have_no_influence_and_nan_does_not_leak(with_distance):
    model = _model()
    query, context, mask, distance = _example()
    if not with_distance:
        distance = None
    masked = ~MASK
    base = _apply(model, query, context, mask, distance)
    assert base.shape == (DIM,) and np.all(np.isfinite(base))
    assert np.any(base != query)
    perturbed = context.at[masked].set(1e4)
    poisoned = context.at[masked].set(jnp.nan)
    for ctx in (perturbed, poisoned):
        dist = None if distance is None else distance.at[masked].set(jnp.nan)
        np.testing.assert_array_equal(_apply(model, query, ctx, mask, dist), base)
    # Unmasked sites do matter (so the test above can fail).
    assert np.any(_apply(model, query, context.at[0].add(1.0), mask, distance) != base)

    grads = _grads(
        model, query, poisoned, mask, distance.at[masked].set(jnp.nan) if with_distance else None
    )
    for g in jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(grads[2][masked], 0.0)


def test_all_false_mask_returns_query():
    model = _model()
    query, context, _, distance = _example()
    none = jnp.zeros(N_CTX, dtype=bool)
    nan_context = jnp.full_like(context, jnp.nan)
    nan_distance = jnp.full_like(distance, jnp.nan)
    np.testing.assert_array_equal(_apply(model, query, nan_context, none, nan_distance), query)
    np.testing.assert_array_equal(_apply(model, query, context, none), query)
    grads = _grads(model, query, nan_context, none, nan_distance)
    for g in jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert np.all(np.isfinite(g))
    np.testing.assert_allclose(grads[1], _normal(42, (DIM,)))  # identity


def test_non_finite_distance_counts_as_masked():
    """`nearest_context` pads with inf distances; such sites must be absent, not poison the output."""
    model = _model()
    query, context, mask, distance = _example()
    padded = distance.at[~MASK].set(jnp.inf)
    np.testing.assert_array_equal(
        _apply(model, query, context, jnp.ones(N_CTX, dtype=bool), padded),
        _apply(model, query, context, mask, distance),
    )
    all_inf = jnp.full(N_CTX, jnp.inf)
    np.testing.assert_array_equal(
        _apply(model, query, context, jnp.ones(N_CTX, dtype=bool), all_inf), query
    )


def test_permutation_invariance_over_context_sites():
    model = _model()
    query, context, mask, distance = _example()
    order = np.array([3, 0, 4, 2, 1])
    np.testing.assert_allclose(
        _apply(model, query, context[order], mask[order], distance[order]),
        _apply(model, query, context, mask, distance),
        rtol=1e-5,
        atol=1e-6,
    )


def test_distance_bias_discounts_far_sites():
    """A site 20,000 km away is effectively ignored: every head's logit penalty is at least
    softplus(ρ)·d/ℓ = 0.1 · 20000/100 = 20 at initialisation (weight ≤ e⁻²⁰ relative to the near site)."""
    model = _model()
    query, context, _, _ = _example()
    two = jnp.array([True, True, False, False, False])
    one = jnp.array([True, False, False, False, False])
    far = jnp.array([20.0, 2.0e4, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(
        _apply(model, query, context, two, far), _apply(model, query, context, one, far), atol=1e-5
    )
    # Without the distance the second site does count.
    assert not np.allclose(
        _apply(model, query, context, two), _apply(model, query, context, one), atol=1e-3
    )


def test_gradients_reach_every_leaf():
    model = _model()
    query, context, mask, distance = _example()
    grads = _grads(model, query, context, mask, distance)
    assert_grads_reach_every_leaf(grads[0])


def test_jit_vmap_equals_loop_and_keys():
    model = _model()
    batch = [_example(seed) for seed in range(3)]
    query, context, mask, distance = (jnp.stack(parts) for parts in zip(*batch, strict=True))
    mask = mask.at[1].set(False)  # one site without any context
    batched = eqx.filter_jit(lambda m, *a: jax.vmap(m)(*a))(model, query, context, mask, distance)
    for i in range(3):
        np.testing.assert_allclose(
            batched[i],
            _apply(model, query[i], context[i], mask[i], distance[i]),
            rtol=1e-5,
            atol=1e-6,
        )
    np.testing.assert_array_equal(batched[1], query[1])
    assert eqx.tree_equal(_model(3), _model(3))
    assert not eqx.tree_equal(_model(3), _model(4))


def test_bad_shapes_are_rejected():
    model = _model()
    query, context, mask, distance = _example()
    with pytest.raises(ValueError, match="one site"):
        model(jnp.stack([query, query]), context, mask)
    with pytest.raises(ValueError, match="distance_km"):
        model(query, context, mask, distance[:3])
    with pytest.raises(ValueError, match="n_heads"):
        SiteAttention(DIM, 3, key=jax.random.PRNGKey(0))


# --- nearest_context -----------------------------------------------------------------------------


def _brute_force_distances(lat, lon):
    """Float64 numpy haversine (arcsin form) for every pair; independent of kgml.models.nn.location."""
    p, lam = np.radians(lat), np.radians(lon)
    dp = p[None, :] - p[:, None]
    dl = lam[None, :] - lam[:, None]
    a = np.sin(dp / 2) ** 2 + np.cos(p)[:, None] * np.cos(p)[None, :] * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def test_nearest_context_against_brute_force():
    rng = np.random.default_rng(1)
    lat = rng.uniform(35, 48, 12)  # a Midwest-sized cloud, spanning a few hundred km
    lon = rng.uniform(-104, -82, 12)
    k = 4
    indices, distance = nearest_context(jnp.asarray(lat), jnp.asarray(lon), k)
    assert indices.shape == distance.shape == (12, k)
    assert indices.dtype.kind == "i"
    d = _brute_force_distances(lat, lon)
    np.fill_diagonal(d, np.inf)
    want = np.sort(d, axis=1)[:, :k]
    np.testing.assert_allclose(distance, want, rtol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(d, np.asarray(indices), axis=1), want, rtol=1e-5)
    assert not np.any(np.asarray(indices) == np.arange(12)[:, None])  # never itself

    with_self, d_self = nearest_context(lat, lon, 1, exclude_self=False)
    np.testing.assert_array_equal(with_self[:, 0], np.arange(12))
    np.testing.assert_array_equal(d_self[:, 0], 0.0)


def test_nearest_context_candidates_and_padding():
    lat = np.array([40.0, 40.5, 41.0, 45.0])
    lon = np.array([-90.0, -90.0, -90.0, -90.0])
    candidates = np.array([True, False, True, False])  # e.g. sites with training observations
    indices, distance = nearest_context(lat, lon, 2, candidates=candidates)
    # Site 0's only other candidate is 2; its second slot is padding (inf).
    assert int(indices[0, 0]) == 2 and np.isinf(distance[0, 1])
    # Non-candidate sites still get context, from candidates only.
    assert set(np.asarray(indices[1]).tolist()) == {0, 2}
    assert set(np.asarray(indices[3]).tolist()) == {0, 2} and int(indices[3, 0]) == 2
    assert np.all(np.isfinite(distance[1])) and np.all(np.isfinite(distance[3]))
    with pytest.raises(ValueError, match="k"):
        nearest_context(lat, lon, 5)
    with pytest.raises(ValueError, match="k"):
        nearest_context(lat, lon, 0)
