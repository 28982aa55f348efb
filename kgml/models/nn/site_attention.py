"""Site attention: one site attends over context sites (nearest towers, sites of its region), so that
information moves from observed to unobserved places; and `nearest_context` to pick those sites.
"""

# jaxtyping shape strings ("time feature") are not Python expressions.
# ruff: noqa: F722

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from kgml.models.nn.location import haversine_km

__all__ = ["SiteAttention", "nearest_context"]


class SiteAttention(eqx.Module):
    """Multi-head attention of one site (``query``) over its context sites, pre-norm residual::

        out = query + W_o · concat_h Σ_j softmax_j(q_h·k_hj / √d_h + b_h(d_j)) v_hj,
        q = W_q LN_q(query),  k, v = W_k LN_c(context_j), W_v LN_c(context_j)

    (Vaswani et al. 2017; pre-LN residual as in Xiong et al. 2020, arXiv:2002.04745). With
    ``distance_km`` the logits get a learned per-head distance bias b_h(d) = −softplus(ρ_h)·d/ℓ
    (ℓ = ``length_scale_km``; an ALiBi-style linear penalty, Press et al. 2022, ICLR), so attention
    decays with distance, faster or slower per head; the decay rates start log-spaced over
    [0.1, 10] per ℓ so heads begin at different spatial scales.

    Masked context sites (``context_mask`` False, or a non-finite ``distance_km``) have no influence at
    all, and NaN in their embedding or distance cannot leak. With no valid context site the output is
    exactly ``query``.
    """

    query_norm: eqx.nn.LayerNorm
    context_norm: eqx.nn.LayerNorm
    query_proj: eqx.nn.Linear
    key_proj: eqx.nn.Linear
    value_proj: eqx.nn.Linear
    output_proj: eqx.nn.Linear
    distance_decay: Float[Array, " n_heads"]
    dim: int = eqx.field(static=True)
    n_heads: int = eqx.field(static=True)
    length_scale_km: float = eqx.field(static=True)

    def __init__(
        self, dim: int, n_heads: int = 4, *, length_scale_km: float = 100.0, key: PRNGKeyArray
    ):
        if n_heads < 1 or dim % n_heads != 0:
            raise ValueError(
                f"SiteAttention: dim={dim} must be a positive multiple of n_heads={n_heads}"
            )
        if not length_scale_km > 0:
            raise ValueError(f"SiteAttention: length_scale_km must be > 0; got {length_scale_km}")
        q_key, k_key, v_key, o_key = jax.random.split(key, 4)
        self.query_norm = eqx.nn.LayerNorm(dim)
        self.context_norm = eqx.nn.LayerNorm(dim)
        self.query_proj = eqx.nn.Linear(dim, dim, key=q_key)
        self.key_proj = eqx.nn.Linear(dim, dim, key=k_key)
        self.value_proj = eqx.nn.Linear(dim, dim, key=v_key)
        self.output_proj = eqx.nn.Linear(dim, dim, key=o_key)
        rates = jnp.logspace(-1.0, 1.0, n_heads) if n_heads > 1 else jnp.ones((1,))
        self.distance_decay = jnp.log(jnp.expm1(rates))  # inverse softplus
        self.dim = dim
        self.n_heads = n_heads
        self.length_scale_km = float(length_scale_km)

    def __call__(
        self,
        query: Float[Array, " dim"],
        context: Float[Array, "n_ctx dim"],
        context_mask: Bool[Array, " n_ctx"],
        distance_km: Float[Array, " n_ctx"] | None = None,
    ) -> Float[Array, " dim"]:
        n_ctx = context.shape[0]
        if (
            query.shape != (self.dim,)
            or context.shape != (n_ctx, self.dim)
            or context_mask.shape != (n_ctx,)
        ):
            raise ValueError(
                f"SiteAttention(dim={self.dim}) acts on one site: query ({self.dim},), context (n_ctx, "
                f"{self.dim}), context_mask (n_ctx,); got {query.shape}, {context.shape}, {context_mask.shape}"
            )
        valid = context_mask.astype(bool)
        if distance_km is not None:
            if distance_km.shape != (n_ctx,):
                raise ValueError(
                    f"SiteAttention: distance_km must have shape ({n_ctx},); got {distance_km.shape}"
                )
            # A site at an unknown (NaN) or infinite distance, e.g. `nearest_context` padding, is absent.
            valid = valid & jnp.isfinite(distance_km)
        head_dim = self.dim // self.n_heads
        context = jnp.where(valid[:, None], context, 0.0)
        q = self.query_proj(self.query_norm(query)).reshape(self.n_heads, head_dim)
        normed = jax.vmap(self.context_norm)(context)
        k = jax.vmap(self.key_proj)(normed).reshape(n_ctx, self.n_heads, head_dim)
        v = jax.vmap(self.value_proj)(normed).reshape(n_ctx, self.n_heads, head_dim)
        logits = jnp.einsum("hd,chd->hc", q, k) / math.sqrt(head_dim)
        if distance_km is not None:
            distance = jnp.where(valid, distance_km, 0.0)
            decay = jax.nn.softplus(self.distance_decay)
            logits = logits - decay[:, None] * (distance[None, :] / self.length_scale_km)
        # A large finite (not -inf) fill keeps an all-masked row finite; that row is discarded below.
        logits = jnp.where(valid[None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        attended = jnp.einsum("hc,chd->hd", weights, v).reshape(self.dim)
        update = self.output_proj(attended)
        return query + jnp.where(jnp.any(valid), update, 0.0)


def nearest_context(
    lat: Float[ArrayLike, " site"],
    lon: Float[ArrayLike, " site"],
    k: int,
    exclude_self: bool = True,
    *,
    candidates: Bool[ArrayLike, " site"] | None = None,
) -> tuple[Int[Array, "site k"], Float[Array, "site k"]]:
    """The ``k`` nearest sites to each site by great-circle (haversine) distance.

    Args:
        lat, lon: site coordinates (degrees north / east), shape ``(site,)``.
        k: context size (static), ``1 <= k <= site``.
        exclude_self: a site is never its own context (co-located distinct sites still are).
        candidates: optional ``(site,)`` boolean; only these sites may be context (e.g. sites with
            observations in the training split), while every site gets a context.

    Returns:
        ``(indices, distance_km)``, each ``(site, k)``, nearest first. Where fewer than ``k`` sites are
        eligible, the remaining entries have ``distance_km = inf`` (their index is arbitrary);
        `SiteAttention` treats a non-finite distance as masked (``jnp.isfinite(distance_km)`` is the
        context mask).

    Memory is O(site²); for many query points against few towers, call it on towers + a chunk.
    """
    lat = jnp.asarray(lat, dtype=jnp.float32)
    lon = jnp.asarray(lon, dtype=jnp.float32)
    if lat.ndim != 1 or lat.shape != lon.shape:
        raise ValueError(
            f"nearest_context: lat and lon must be 1-D of equal length; got {lat.shape}, {lon.shape}"
        )
    n_site = lat.shape[0]
    if not 1 <= k <= n_site:
        raise ValueError(f"nearest_context: need 1 <= k <= number of sites ({n_site}); got k={k}")
    distance = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    eligible = jnp.ones((n_site, n_site), dtype=bool)
    if exclude_self:
        eligible = eligible & ~jnp.eye(n_site, dtype=bool)
    if candidates is not None:
        candidates = jnp.asarray(candidates, dtype=bool)
        if candidates.shape != (n_site,):
            raise ValueError(
                f"nearest_context: candidates must have shape ({n_site},); got {candidates.shape}"
            )
        eligible = eligible & candidates[None, :]
    distance = jnp.where(eligible, distance, jnp.inf)
    neg_distance, indices = jax.lax.top_k(-distance, k)
    return indices, -neg_distance
