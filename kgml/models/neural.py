"""The pure-neural comparison model: the hybrid's encoder, location encoding and site attention, but no
physics — heads predict daily GPP, Reco and Rsoil (≥ 0) and the annual yield directly; NEE = Reco − GPP.

`NeuralModel` acts on one `kgml.models.hybrid.SiteWindow` and returns the same `kgml.models.hybrid.Predictions`, so the
objective, `kgml.training.fit`, checkpoints and `kgml.experiment` treat it like the hybrid (``model.kind``).
"""

# jaxtyping shape strings ("time feature") are not Python expressions.
# ruff: noqa: F722

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from kgml.models.base import AbstractNetworkModel
from kgml.models.hybrid import (
    DAYS_PER_YEAR,
    Predictions,
    SiteWindow,
    TechnologyTrend,
    _annual_yield,
    site_embedding,
)
from kgml.models.nn.encoders import TemporalEncoder
from kgml.models.nn.location import LocationEncoder
from kgml.models.nn.site_attention import SiteAttention

__all__ = ["FLUX_OUTPUTS", "NeuralModel", "build_neural", "head_parameter_count", "matching_head_width"]

#: Daily outputs of the flux head, in order (gC m-2 d-1).
FLUX_OUTPUTS = ("gpp", "reco", "rsoil")

#: Depth (hidden layers) of the flux and yield MLPs — the hybrid's `ParameterHead` depth.
HEAD_DEPTH = 2


def _mlp_parameter_count(in_size: int, out_size: int, width: int, depth: int) -> int:
    """Weights + biases of `eqx.nn.MLP(in_size, out_size, width, depth)`."""
    if depth == 0:
        return (in_size + 1) * out_size
    return (in_size + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_size


def head_parameter_count(width: int, *, hidden: int, embed_dim: int, annual: bool = True) -> int:
    """Trainable parameters of the `NeuralModel` heads of ``width`` (flux head + yield head)."""
    n = _mlp_parameter_count(hidden + embed_dim, len(FLUX_OUTPUTS), width, HEAD_DEPTH)
    if annual:
        n += _mlp_parameter_count(hidden + embed_dim, 1, width, HEAD_DEPTH)
    return n


def matching_head_width(budget: int, *, hidden: int, embed_dim: int, annual: bool = True) -> int:
    """The head width (≥ 1) whose `head_parameter_count` is closest to ``budget`` — the parameters a hybrid
    of the same encoder spends on its parameter and residual heads — so both models have the same size."""
    best, best_err = 1, math.inf
    for width in range(1, 4097):
        n = head_parameter_count(width, hidden=hidden, embed_dim=embed_dim, annual=annual)
        if abs(n - budget) < best_err:
            best, best_err = width, abs(n - budget)
        if n > budget:
            break
    return best


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class NeuralModel(AbstractNetworkModel):
    """Encoder + location encoding (+ site attention) → flux head and yield head; no process model.

    For one site window the site embedding is made exactly as in `kgml.models.hybrid.HybridModel`. The flux head
    is an MLP of [daily encoder features h_t, site embedding] giving, with ``s_k`` the target's typical
    spread (the loss scale), ``GPP_t = s_gpp·softplus(·)``, ``Reco_t = s_reco·softplus(·)``,
    ``Rsoil_t = s_rsoil·softplus(·)`` (all ≥ 0, gC m-2 d-1) and ``NEE_t = Reco_t − GPP_t`` exactly. The yield
    head is an MLP of [site embedding, mean of h_t over each whole calendar year of the window] giving
    ``yield = s_yield·softplus(·)`` (t ha-1) per year; without a yield head (``annual=False``) the yield is
    NaN. With a ``technology`` trend (`kgml.models.hybrid.TechnologyTrend`, the hybrid's bounded trend on
    yield potential) the head's yield is scaled by the trend's factor of each calendar year, as the hybrid's
    physics yield is: a network that sees no year otherwise cannot extrapolate a technology trend. Not
    predicted, hence NaN: ``et``, ``lai`` and the physics-only fluxes. ``residual``, ``theta``,
    ``theta_daily`` and ``unconstrained`` are empty dicts. Output layers start at zero weights with biases
    that put every output at its target's mean (the initial prediction is that constant).
    """

    encoder: eqx.Module
    location: eqx.Module | None
    embed: eqx.nn.Linear
    context_proj: eqx.nn.Linear | None
    site_attention: eqx.Module | None
    flux_head: eqx.nn.MLP
    yield_head: eqx.nn.MLP | None
    flux_scales: tuple[float, ...] = eqx.field(static=True)
    technology: TechnologyTrend | None = None
    yield_scale: float = eqx.field(static=True, default=1.0)
    use_summary: bool = eqx.field(static=True, default=True)

    #: No physics layer (``has_physics`` is False) and no physical parameters.
    process: ClassVar[None] = None
    learned: ClassVar[tuple[str, ...]] = ()
    time_varying: ClassVar[tuple[str, ...]] = ()
    residual_targets: ClassVar[tuple[str, ...]] = ()

    @property
    def global_unconstrained(self) -> dict[str, Array]:
        return {}

    @property
    def specs(self) -> dict:
        return {}

    def embedding(self, w: SiteWindow) -> tuple[Array, Array]:
        """(daily features (time, hidden), site embedding (embed_dim,)) — as the hybrid."""
        return site_embedding(self, w)

    def fluxes(self, h_seq: Float[Array, "time hidden"], emb: Float[Array, " embed"]) -> dict[str, Array]:
        """Daily GPP, Reco, Rsoil (gC m-2 d-1, ≥ 0) from the daily features and the site embedding."""
        inputs = jnp.concatenate([h_seq, jnp.broadcast_to(emb, (h_seq.shape[0], emb.shape[0]))], axis=1)
        raw = jax.vmap(self.flux_head)(inputs)
        return {k: self.flux_scales[i] * jax.nn.softplus(raw[:, i]) for i, k in enumerate(FLUX_OUTPUTS)}

    def annual_yield(self, h_seq: Float[Array, "time hidden"], emb: Float[Array, " embed"]) -> Float[Array, " year"]:
        """Yield (t ha-1) of each whole year of the window (NaN without a yield head)."""
        n_years = h_seq.shape[0] // DAYS_PER_YEAR
        if self.yield_head is None:
            return jnp.full((n_years,), jnp.nan)
        pooled = h_seq[: n_years * DAYS_PER_YEAR].reshape(n_years, DAYS_PER_YEAR, -1).mean(axis=1)
        inputs = jnp.concatenate([jnp.broadcast_to(emb, (n_years, emb.shape[0])), pooled], axis=1)
        return self.yield_scale * jax.nn.softplus(jax.vmap(self.yield_head)(inputs)[:, 0])

    def __call__(self, w: SiteWindow) -> Predictions:
        h_seq, emb = self.embedding(w)
        f = self.fluxes(h_seq, emb)
        gpp, reco, nee = _exact_difference(f["gpp"], f["reco"])
        nan = jnp.full((h_seq.shape[0],), jnp.nan)
        return Predictions(
            gpp=gpp, reco=reco, nee=nee, rsoil=f["rsoil"], et=nan, lai=nan,
            crop_yield=_annual_yield(self.technology, self.annual_yield(h_seq, emb), w), gpp_physics=nan, reco_physics=nan, rsoil_physics=nan,
            residual={}, theta={}, theta_daily={}, unconstrained={},
        )


def _exact_difference(gpp: Array, reco: Array) -> tuple[Array, Array, Array]:
    """(gpp, reco, reco − gpp) with NEE exactly the difference of the returned values. Computed directly,
    XLA (CPU) may fuse a second copy of the transcendental functions behind GPP and Reco into the
    subtraction and round them differently (observed: ~1e-7 relative); reading both from the materialised
    inputs of a scan step avoids that (an optimization barrier does not: it is removed before fusion)."""
    _, out = jax.lax.scan(lambda c, v: (c, (v[0], v[1], v[1] - v[0])), None, (gpp, reco))
    return out


def _zero_last_layer(mlp: eqx.nn.MLP, bias) -> eqx.nn.MLP:
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.asarray(bias, last.bias.dtype)))


def build_neural(
    *,
    n_features: int,
    n_static: int,
    n_summary: int,
    key: PRNGKeyArray,
    encoder: str = "gru",
    hidden: int = 32,
    attention: bool = False,
    location: bool = True,
    location_dim: int = 16,
    n_scales: int = 4,
    n_regions: int = 0,
    region_dim: int = 4,
    site_attention: bool = False,
    n_heads: int = 2,
    embed_dim: int = 32,
    head_width: int = 32,
    annual: bool = True,
    scales: Mapping[str, float] | None = None,
    means: Mapping[str, float] | None = None,
    use_summary: bool = True,
    technology_trend: bool = False,
    technology_reference_year: float = 2000.0,
) -> NeuralModel:
    """Assemble a `NeuralModel`: encoder, location encoder, embedding and site attention built exactly as by
    `kgml.models.hybrid.build_hybrid` with the same arguments; flux and yield heads of ``head_width`` (use
    `matching_head_width` for a model as large as a given hybrid). ``scales`` (target name → typical
    spread, e.g. the loss scales) sets the output scales of gpp, reco, rsoil and crop_yield (default 1);
    ``means`` (target name → mean observed value) their initial values (default: the scale).
    ``technology_trend``: the yields are scaled by a learned, bounded `TechnologyTrend` (factor 1 at
    ``technology_reference_year``), as in `kgml.models.hybrid.build_hybrid`."""
    if head_width < 1:
        raise ValueError(f"head_width must be >= 1, got {head_width}")
    if not use_summary and not location:
        raise ValueError("use_summary=False needs the location encoder: the embedding would be empty")
    scales = {k: float(scales.get(k, 1.0)) for k in (*FLUX_OUTPUTS, "crop_yield")} if scales else dict.fromkeys(
        (*FLUX_OUTPUTS, "crop_yield"), 1.0)
    means = dict(means or {})

    def start(name):  # bias b with s·softplus(b) = the target's mean (at least 1 % of its scale)
        return _inverse_softplus(max(float(means.get(name, scales[name])) / scales[name], 0.01))

    keys = jax.random.split(key, 7)  # the hybrid's key layout: same encoder weights for the same key
    enc = TemporalEncoder(n_features, hidden, kind=encoder, attention=attention, n_heads=n_heads, key=keys[0])
    loc = None
    in_dim = hidden if use_summary else 0
    if location:
        loc = LocationEncoder(n_static, location_dim, n_scales=n_scales, n_regions=n_regions,
                              region_dim=region_dim, key=keys[1])
        in_dim += location_dim
    embed = eqx.nn.Linear(in_dim, embed_dim, key=keys[2])
    ctx_proj = att = None
    if site_attention:
        if loc is None:
            raise ValueError("site attention needs the location encoder (location = true)")
        ctx_proj = eqx.nn.Linear(location_dim + n_summary, embed_dim, key=keys[3])
        att = SiteAttention(embed_dim, n_heads=n_heads, key=keys[4])
    flux = _zero_last_layer(eqx.nn.MLP(hidden + embed_dim, len(FLUX_OUTPUTS), head_width, HEAD_DEPTH,
                                       activation=jax.nn.gelu, key=keys[5]), [start(k) for k in FLUX_OUTPUTS])
    yhead = None
    if annual:
        yhead = _zero_last_layer(eqx.nn.MLP(hidden + embed_dim, 1, head_width, HEAD_DEPTH, activation=jax.nn.gelu,
                                            key=keys[6]), [start("crop_yield")])
    return NeuralModel(
        encoder=enc, location=loc, embed=embed, context_proj=ctx_proj, site_attention=att, flux_head=flux,
        yield_head=yhead, flux_scales=tuple(scales[k] for k in FLUX_OUTPUTS), yield_scale=scales["crop_yield"],
        use_summary=use_summary,
        technology=TechnologyTrend.create(technology_reference_year) if technology_trend else None,
    )
