"""Output heads: `ParameterHead` (process-model parameters through their bounded transforms) and
`ResidualHead` (a bounded, initially zero correction of selected fluxes).
"""

# jaxtyping shape strings ("time feature") are not Python expressions.
# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from process_models.parameters import ParameterSpec

__all__ = ["ParameterHead", "ResidualHead"]


def _zero_init_mlp(
    in_size: int, biases: tuple[float, ...], hidden: int, depth: int, key: PRNGKeyArray
) -> eqx.nn.MLP:
    """An MLP whose last layer has zero weights and the given biases: it outputs exactly ``biases``
    whatever the (finite) input, until training moves the last layer (zero-initialised output layers,
    as in ReZero, Bachlechner et al. 2021, UAI)."""
    mlp = eqx.nn.MLP(
        in_size, len(biases), width_size=hidden, depth=depth, activation=jax.nn.gelu, key=key
    )
    last = mlp.layers[-1]
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (jnp.zeros_like(last.weight), jnp.asarray(biases, dtype=last.bias.dtype)),
    )


class ParameterHead(eqx.Module):
    """Site embedding (and per-step features) → physical process-model parameters.

    Differentiable parameter learning (Tsai et al. 2021, Nat. Commun. 12:5988): the network outputs
    unconstrained values u, and each parameter is ``spec.to_physical(u)``, so it cannot leave
    ``[spec.lower, spec.upper]`` whatever the weights. Static parameters come from an MLP of the
    embedding; parameters named in ``time_varying`` come, at each step t, from an MLP of
    ``[embedding, h_seq[t]]``.

    Initialisation: both MLPs' last layers have zero weights and bias ``spec.default_unconstrained``,
    so an untrained head returns the specs' defaults (to float32 rounding of the transform) for any
    input — an untrained hybrid is the process model. The hidden layers receive gradient once the last
    layer has moved off zero (after the first optimiser step).

    Attributes:
        specs: the parameters' specs, in output order.
        names: all parameter names (``specs`` order).
        static_names, time_varying: the names of each kind, in ``specs`` order.
    """

    static_mlp: eqx.nn.MLP | None
    time_varying_mlp: eqx.nn.MLP | None
    specs: tuple[ParameterSpec, ...] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    static_names: tuple[str, ...] = eqx.field(static=True)
    time_varying: tuple[str, ...] = eqx.field(static=True)
    in_dim: int = eqx.field(static=True)
    seq_dim: int = eqx.field(static=True)

    def __init__(
        self,
        in_dim: int,
        specs: tuple[ParameterSpec, ...],
        time_varying: tuple[str, ...] = (),
        seq_dim: int = 0,
        hidden: int = 64,
        *,
        depth: int = 2,
        key: PRNGKeyArray,
    ):
        specs = tuple(specs)
        names = tuple(s.name for s in specs)
        if not specs:
            raise ValueError("ParameterHead needs at least one ParameterSpec")
        if len(set(names)) != len(names):
            raise ValueError(f"ParameterHead: duplicate parameter names in specs {names}")
        unknown = sorted(set(time_varying) - set(names))
        if unknown:
            raise ValueError(
                f"ParameterHead: time_varying names {unknown} are not among the specs {names}"
            )
        if time_varying and seq_dim < 1:
            raise ValueError(
                f"ParameterHead: time-varying parameters {tuple(time_varying)} need per-step features; "
                f"give seq_dim >= 1 (got {seq_dim})"
            )
        static_key, tv_key = jax.random.split(key)
        tv_set = set(time_varying)
        static_specs = tuple(s for s in specs if s.name not in tv_set)
        tv_specs = tuple(s for s in specs if s.name in tv_set)
        self.static_mlp = (
            _zero_init_mlp(
                in_dim,
                tuple(s.default_unconstrained for s in static_specs),
                hidden,
                depth,
                static_key,
            )
            if static_specs
            else None
        )
        self.time_varying_mlp = (
            _zero_init_mlp(
                in_dim + seq_dim,
                tuple(s.default_unconstrained for s in tv_specs),
                hidden,
                depth,
                tv_key,
            )
            if tv_specs
            else None
        )
        self.specs = specs
        self.names = names
        self.static_names = tuple(s.name for s in static_specs)
        self.time_varying = tuple(s.name for s in tv_specs)
        self.in_dim = in_dim
        self.seq_dim = seq_dim

    def unconstrained(
        self, embedding: Float[Array, " in_dim"], h_seq: Float[Array, "time seq_dim"] | None = None
    ) -> tuple[dict[str, Float[Array, ""]], dict[str, Float[Array, " time"]]]:
        """The unconstrained values u (before ``spec.to_physical``): (static, time-varying)."""
        if embedding.shape != (self.in_dim,):
            raise ValueError(
                f"ParameterHead: embedding must have shape ({self.in_dim},) for one site; got {embedding.shape}"
            )
        static: dict[str, Array] = {}
        if self.static_mlp is not None:
            values = self.static_mlp(embedding)
            static = {name: values[i] for i, name in enumerate(self.static_names)}
        varying: dict[str, Array] = {}
        if self.time_varying_mlp is not None:
            if h_seq is None or h_seq.ndim != 2 or h_seq.shape[1] != self.seq_dim:
                raise ValueError(
                    f"ParameterHead: time-varying parameters {self.time_varying} need h_seq of shape "
                    f"(time, {self.seq_dim}); got {None if h_seq is None else h_seq.shape}"
                )
            inputs = jnp.concatenate(
                [jnp.broadcast_to(embedding, (h_seq.shape[0], self.in_dim)), h_seq], axis=1
            )
            values = jax.vmap(self.time_varying_mlp)(inputs)
            varying = {name: values[:, i] for i, name in enumerate(self.time_varying)}
        return static, varying

    def __call__(
        self, embedding: Float[Array, " in_dim"], h_seq: Float[Array, "time seq_dim"] | None = None
    ) -> tuple[dict[str, Float[Array, ""]], dict[str, Float[Array, " time"]]]:
        """Physical parameters: (static ``name → ()``, time-varying ``name → (time,)``)."""
        static, varying = self.unconstrained(embedding, h_seq)
        table = {s.name: s for s in self.specs}
        return (
            {name: table[name].to_physical(u) for name, u in static.items()},
            {name: table[name].to_physical(u) for name, u in varying.items()},
        )


class ResidualHead(eqx.Module):
    """Bounded per-step corrections of selected outputs: ``r_target(t) = scale_target · tanh(W h_t + b)``.

    ``|r| < scale`` by construction; ``scale`` is in the target's units (gC m-2 d-1 for fluxes), one
    float for all targets or a mapping per target. The linear layer starts at zero weights and bias, so
    an untrained head outputs exactly 0 (the hybrid starts as the pure physics layer). How a correction
    is applied (e.g. keeping GPP ≥ 0 and NEE = Reco − GPP) is the hybrid model's business.
    """

    linear: eqx.nn.Linear
    targets: tuple[str, ...] = eqx.field(static=True)
    scales: tuple[float, ...] = eqx.field(static=True)
    seq_dim: int = eqx.field(static=True)

    def __init__(
        self,
        seq_dim: int,
        targets: tuple[str, ...],
        scale: float | Mapping[str, float],
        *,
        key: PRNGKeyArray,
    ):
        targets = tuple(targets)
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"ResidualHead: targets must be non-empty and unique; got {targets}")
        if isinstance(scale, Mapping):
            missing = sorted(set(targets) - set(scale))
            extra = sorted(set(scale) - set(targets))
            if missing or extra:
                raise ValueError(
                    f"ResidualHead: scale mapping must name exactly the targets {targets}; "
                    f"missing {missing}, unknown {extra}"
                )
            scales = tuple(float(scale[t]) for t in targets)
        else:
            scales = (float(scale),) * len(targets)
        bad = [(t, s) for t, s in zip(targets, scales, strict=True) if not s > 0]
        if bad:
            raise ValueError(f"ResidualHead: scales must be > 0 (units of the target); got {bad}")
        linear = eqx.nn.Linear(seq_dim, len(targets), key=key)
        self.linear = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            linear,
            (jnp.zeros_like(linear.weight), jnp.zeros_like(linear.bias)),
        )
        self.targets = targets
        self.scales = scales
        self.seq_dim = seq_dim

    def __call__(self, h_seq: Float[Array, "time seq_dim"]) -> dict[str, Float[Array, " time"]]:
        if h_seq.ndim != 2 or h_seq.shape[1] != self.seq_dim:
            raise ValueError(
                f"ResidualHead: h_seq must have shape (time, {self.seq_dim}) for one site; got {h_seq.shape}"
            )
        raw = jnp.tanh(jax.vmap(self.linear)(h_seq))
        return {t: self.scales[i] * raw[:, i] for i, t in enumerate(self.targets)}
