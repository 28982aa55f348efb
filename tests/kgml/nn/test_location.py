"""Location encoding: the Fourier features' formula and continuity, haversine against an independent
numpy computation and textbook distances, LocationEncoder (regions, gradients, jit+vmap, keys)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kgml.models.nn import (
    EARTH_RADIUS_KM,
    LocationEncoder,
    fourier_location_features,
    haversine_km,
    n_location_features,
)
from tests.kgml.nn._helpers import _normal, assert_grads_reach_every_leaf


@pytest.mark.parametrize("n_scales", [0, 1, 3])
def test_fourier_features_formula(n_scales):
    lat, lon = 41.18, -96.44  # US-Ne1 (Mead, Nebraska)
    got = fourier_location_features(lat, lon, n_scales)
    assert got.shape == (n_location_features(n_scales),) == (2 + 4 * n_scales,)
    phi, lam = math.radians(lat), math.radians(lon)
    want = [math.sin(phi), math.cos(phi)]
    for k in range(n_scales):
        f = 2.0**k
        want += [math.sin(f * lam), math.cos(f * lam), math.sin(2 * f * phi), math.cos(2 * f * phi)]
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_fourier_features_continuous_and_distinct():
    east = fourier_location_features(10.0, 180.0, 4)
    west = fourier_location_features(10.0, -180.0, 4)
    np.testing.assert_allclose(east, west, atol=1e-5)  # the antimeridian is not a seam
    # No duplicated columns: every pair of features differs somewhere on a grid of locations.
    lats, lons = np.meshgrid(np.linspace(-80, 80, 7), np.linspace(-170, 170, 9))
    table = jax.vmap(lambda a, b: fourier_location_features(a, b, 3))(lats.ravel(), lons.ravel())
    assert np.all(np.abs(table) <= 1.0 + 1e-6)
    corr = np.corrcoef(np.asarray(table).T)
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    assert np.all(np.abs(off) < 0.999)
    with pytest.raises(ValueError, match="vmap"):
        fourier_location_features(jnp.zeros(2), jnp.zeros(2), 2)


def _haversine_numpy(lat1, lon1, lat2, lon2):
    """Independent float64 numpy haversine (arcsin form)."""
    p1, l1, p2, l2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def test_haversine_against_numpy_and_known_distances():
    haversine = jax.jit(haversine_km)
    rng = np.random.default_rng(0)
    lat1, lat2 = rng.uniform(-89, 89, (2, 200))
    lon1, lon2 = rng.uniform(-180, 180, (2, 200))
    np.testing.assert_allclose(
        haversine(lat1, lon1, lat2, lon2),
        _haversine_numpy(lat1, lon1, lat2, lon2),
        rtol=1e-5,
        atol=0.05,
    )
    quarter_meridian = EARTH_RADIUS_KM * math.pi / 2
    np.testing.assert_allclose(haversine(0.0, 0.0, 90.0, 0.0), quarter_meridian, rtol=1e-6)
    np.testing.assert_allclose(haversine(0.0, 0.0, 0.0, 180.0), 2 * quarter_meridian, rtol=1e-6)
    np.testing.assert_allclose(
        haversine(0.0, 0.0, 0.0, 1.0), EARTH_RADIUS_KM * math.pi / 180, rtol=1e-5
    )
    np.testing.assert_allclose(
        haversine(10.0, 179.5, 10.0, -179.5), haversine(10.0, 0.0, 10.0, 1.0), rtol=1e-4
    )
    assert float(haversine(41.18, -96.44, 41.18, -96.44)) == 0.0
    grads = jax.grad(lambda a, b: haversine_km(a, b, 41.18, -96.44), argnums=(0, 1))(41.18, -96.44)
    assert np.all(np.isfinite(grads))  # finite also at zero distance


def _encoder(key=0, **kwargs):
    kwargs = {"n_static": 3, "out": 6, "n_scales": 2, "hidden": 8} | kwargs
    return LocationEncoder(
        kwargs.pop("n_static"), kwargs.pop("out"), key=jax.random.PRNGKey(key), **kwargs
    )


@eqx.filter_jit
def _apply(encoder, lat, lon, static=None, region=None):
    return encoder(lat, lon, static, region)


@pytest.mark.slow
def test_location_encoder_shapes_and_regions():
    encoder = _encoder(n_regions=3, region_dim=4)
    lat, lon, static = jnp.asarray(41.18), jnp.asarray(-96.44), jnp.array([0.5, -1.0, 2.0])

    def at(encoder, region):
        return _apply(encoder, lat, lon, static, jnp.asarray(region))

    out = at(encoder, 1)
    assert out.shape == (6,) and np.all(np.isfinite(out))
    assert not np.allclose(at(encoder, 0), at(encoder, 1))
    # An unknown region (-1 or >= n_regions) contributes a zero embedding.
    zeroed = eqx.tree_at(lambda e: e.region_embedding.weight, encoder, jnp.zeros((3, 4)))
    np.testing.assert_array_equal(at(encoder, -1), at(zeroed, 0))
    np.testing.assert_array_equal(at(encoder, 3), at(encoder, -1))
    with pytest.raises(ValueError, match="region"):
        encoder(lat, lon, static)
    with pytest.raises(ValueError, match="static"):
        encoder(lat, lon, jnp.zeros(2), 0)
    no_static = _encoder(n_static=0)
    assert no_static(0.0, 0.0).shape == (6,)
    np.testing.assert_array_equal(no_static(0.0, 0.0), no_static(0.0, 0.0, jnp.zeros(0)))


def test_location_encoder_gradients_reach_every_leaf():
    encoder = _encoder(n_regions=2, region_dim=4)
    static = jnp.array([0.5, -1.0, 2.0])
    weights = _normal(5, (6,))

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(encoder):
        return jnp.sum(weights * encoder(41.18, -96.44, static, 1))

    # Only the looked-up row of the region table can receive gradient.
    g = grads(encoder)
    np.testing.assert_array_equal(g.region_embedding.weight[0], 0.0)
    assert_grads_reach_every_leaf(
        eqx.tree_at(lambda t: t.region_embedding.weight, g, replace_fn=lambda w: w[1])
    )


def test_location_encoder_jit_vmap_equals_loop_and_keys():
    encoder = _encoder(n_regions=2, region_dim=4)
    lat = jnp.array([41.18, 40.0, -3.0])
    lon = jnp.array([-96.44, -88.3, 120.0])
    static = _normal(1, (3, 3))
    region = jnp.array([0, 1, -1])
    batched = eqx.filter_jit(lambda e, *a: jax.vmap(e)(*a))(encoder, lat, lon, static, region)
    for i in range(3):
        single = _apply(encoder, lat[i], lon[i], static[i], region[i])
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)
    assert eqx.tree_equal(_encoder(key=4), _encoder(key=4))
    assert not eqx.tree_equal(_encoder(key=4), _encoder(key=5))
