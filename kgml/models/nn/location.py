"""Location encoding: multi-scale sin/cos features of latitude/longitude, great-circle distances, and
`LocationEncoder` (an MLP over coordinates, static site attributes and an optional region embedding).
"""

# jaxtyping shape strings ("time feature") are not Python expressions.
# ruff: noqa: F722

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

__all__ = [
    "EARTH_RADIUS_KM",
    "LocationEncoder",
    "fourier_location_features",
    "haversine_km",
    "n_location_features",
]

#: Mean radius of the Earth R₁ = (2a + b)/3 (km). Moritz (2000) J. Geodesy 74:128, Geodetic Reference
#: System 1980 (IUGG mean radius 6371.0088 km).
EARTH_RADIUS_KM = 6371.0088


def n_location_features(n_scales: int) -> int:
    """Length of `fourier_location_features`: 2 + 4·n_scales."""
    return 2 + 4 * n_scales


def fourier_location_features(
    lat: Float[ArrayLike, ""], lon: Float[ArrayLike, ""], n_scales: int
) -> Float[Array, " 2+4*n_scales"]:
    """Multi-scale sin/cos features of one location (no xyz embedding).

    With φ = lat and λ = lon in radians (inputs in degrees north / east)::

        [sin φ, cos φ] ++ [sin(2ᵏλ), cos(2ᵏλ), sin(2ᵏ⁺¹φ), cos(2ᵏ⁺¹φ)  for k = 0 … n_scales−1]

    Longitude frequencies 2ᵏ are whole cycles around the globe, so every feature is continuous across
    the antimeridian (λ = ±180°). Latitude spans only π, so its frequencies start at 2 (period π = the
    whole range) and sin φ / cos φ are kept once, as the coarsest latitude scale. The finest scale
    resolves wavelengths of 360°/2^(n_scales−1) in longitude and 180°/2^n_scales in latitude.
    Multi-scale sinusoidal coordinates as in Mai et al. (2020) ICLR, "Space2Vec".
    """
    if n_scales < 0:
        raise ValueError(f"n_scales must be >= 0; got {n_scales}")
    phi = jnp.deg2rad(jnp.asarray(lat, dtype=jnp.float32))
    lam = jnp.deg2rad(jnp.asarray(lon, dtype=jnp.float32))
    if phi.shape != () or lam.shape != ():
        raise ValueError(
            f"fourier_location_features acts on one location (scalar lat, lon); got shapes "
            f"{phi.shape} and {lam.shape}: vmap over sites at the call site"
        )
    freq = 2.0 ** jnp.arange(n_scales, dtype=jnp.float32)
    per_scale = jnp.stack(
        [
            jnp.sin(freq * lam),
            jnp.cos(freq * lam),
            jnp.sin(2 * freq * phi),
            jnp.cos(2 * freq * phi),
        ],
        axis=-1,
    ).reshape(-1)
    return jnp.concatenate([jnp.stack([jnp.sin(phi), jnp.cos(phi)]), per_scale])


def haversine_km(
    lat1: Float[ArrayLike, "*shape"],
    lon1: Float[ArrayLike, "*shape"],
    lat2: Float[ArrayLike, "*shape"],
    lon2: Float[ArrayLike, "*shape"],
) -> Float[Array, "*shape"]:
    """Great-circle distance (km) between points in degrees, elementwise with broadcasting.

    d = 2R·atan2(√a, √(1−a)),  a = sin²(Δφ/2) + cos φ₁ cos φ₂ sin²(Δλ/2)  (Sinnott 1984, Sky Telesc.
    68:159), with R = `EARTH_RADIUS_KM`. The atan2 form stays accurate at 0 and at antipodes; √ is
    double-`where`-guarded so gradients are finite also at d = 0.
    """
    lat1, lon1, lat2, lon2 = (jnp.asarray(v, dtype=jnp.float32) for v in (lat1, lon1, lat2, lon2))
    # Differences are taken in degrees, before scaling, so identical points give exactly 0.
    half_dphi = jnp.deg2rad(lat2 - lat1) / 2
    half_dlam = jnp.deg2rad(lon2 - lon1) / 2
    a = (
        jnp.sin(half_dphi) ** 2
        + jnp.cos(jnp.deg2rad(lat1)) * jnp.cos(jnp.deg2rad(lat2)) * jnp.sin(half_dlam) ** 2
    )
    a = jnp.clip(a, 0.0, 1.0)

    def safe_sqrt(v):
        positive = v > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)

    return 2.0 * EARTH_RADIUS_KM * jnp.arctan2(safe_sqrt(a), safe_sqrt(1.0 - a))


class LocationEncoder(eqx.Module):
    """One site's location → an embedding ``(out,)``: an MLP over
    [`fourier_location_features`(lat, lon), static attributes, region embedding].

    ``static`` holds the site's normalised static attributes (IGBP one-hot, soil, climate normals, …).
    With ``n_regions > 0`` a learned `eqx.nn.Embedding` of the region index is appended; an index
    outside ``[0, n_regions)`` (use −1) means "unknown region" — e.g. a held-out region in a
    distribution-shift split — and contributes zeros.
    """

    mlp: eqx.nn.MLP
    region_embedding: eqx.nn.Embedding | None
    n_static: int = eqx.field(static=True)
    out: int = eqx.field(static=True)
    n_scales: int = eqx.field(static=True)
    n_regions: int = eqx.field(static=True)

    def __init__(
        self,
        n_static: int,
        out: int,
        n_scales: int = 4,
        n_regions: int = 0,
        region_dim: int = 8,
        *,
        hidden: int = 64,
        depth: int = 2,
        key: PRNGKeyArray,
    ):
        if n_static < 0 or n_regions < 0 or out < 1:
            raise ValueError(
                f"LocationEncoder: need n_static >= 0, n_regions >= 0, out >= 1; got n_static={n_static}, "
                f"n_regions={n_regions}, out={out}"
            )
        mlp_key, region_key = jax.random.split(key)
        region_width = region_dim if n_regions > 0 else 0
        in_size = n_location_features(n_scales) + n_static + region_width
        self.mlp = eqx.nn.MLP(
            in_size, out, width_size=hidden, depth=depth, activation=jax.nn.gelu, key=mlp_key
        )
        self.region_embedding = (
            eqx.nn.Embedding(n_regions, region_dim, key=region_key) if n_regions > 0 else None
        )
        self.n_static = n_static
        self.out = out
        self.n_scales = n_scales
        self.n_regions = n_regions

    def __call__(
        self,
        lat: Float[ArrayLike, ""],
        lon: Float[ArrayLike, ""],
        static: Float[Array, " n_static"] | None = None,
        region: Int[ArrayLike, ""] | None = None,
    ) -> Float[Array, " out"]:
        parts = [fourier_location_features(lat, lon, self.n_scales)]
        if static is None:
            if self.n_static:
                raise ValueError(
                    f"LocationEncoder was built with n_static={self.n_static}: pass static"
                )
        else:
            static = jnp.asarray(static, dtype=jnp.float32)
            if static.shape != (self.n_static,):
                raise ValueError(
                    f"LocationEncoder: static must have shape ({self.n_static},) for one site; got {static.shape}"
                )
            parts.append(static)
        if self.region_embedding is not None:
            if region is None:
                raise ValueError(
                    f"LocationEncoder was built with n_regions={self.n_regions}: pass region "
                    "(an integer index; -1 for an unknown region)"
                )
            region = jnp.asarray(region)
            known = (region >= 0) & (region < self.n_regions)
            embedded = self.region_embedding(jnp.clip(region, 0, self.n_regions - 1))
            parts.append(jnp.where(known, embedded, 0.0))
        return self.mlp(jnp.concatenate(parts))
