"""Learnable physical parameters: their specification and the bounded transforms.

The optimiser and the neural heads only ever see unconstrained real numbers; `ParameterSpec.to_physical`
maps them into ``[lower, upper]``, so a physical parameter cannot leave its bounds by construction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

Transform = Literal["logit", "loglogit"]

#: Smallest distance from a bound (as a fraction of the range) that `to_unconstrained` maps to a
#: finite value; values closer to a bound are mapped as if they were this close.
_EDGE = 1e-6


class ParameterBoundsError(ValueError):
    """A physical parameter value given by a user lies outside its declared bounds."""


class UnknownParameterError(KeyError):
    """A parameter name that no component of the model declares."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """A learnable physical parameter: default, bounds, units and the source of its values.

    Attributes:
        name: canonical name (``q10``, ``vcmax25``); unique across a composed model.
        default: default physical value, strictly inside ``(lower, upper)``.
        lower, upper: physical bounds, ``lower < upper``.
        units: units of the physical value (``"gC m-2 d-1"``, ``"-"`` for dimensionless).
        reference: citation for the default and the range.
        transform: ``"logit"`` maps a linear range; ``"loglogit"`` maps ``log(value)`` linearly and suits
            rates spanning decades (requires ``lower > 0``).
        description: one line on what the parameter means.
    """

    name: str
    default: float
    lower: float
    upper: float
    units: str
    reference: str
    transform: Transform = "logit"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"ParameterSpec {self.name!r}: lower={self.lower} must be < upper={self.upper}")
        if not self.lower < self.default < self.upper:
            raise ValueError(
                f"ParameterSpec {self.name!r}: default={self.default} must lie strictly inside "
                f"({self.lower}, {self.upper})"
            )
        if self.transform not in ("logit", "loglogit"):
            raise ValueError(f"ParameterSpec {self.name!r}: unknown transform {self.transform!r}")
        if self.transform == "loglogit" and self.lower <= 0:
            raise ValueError(f"ParameterSpec {self.name!r}: transform 'loglogit' needs lower > 0")

    # The bounds in the space where the sigmoid interpolates.
    def _edges(self) -> tuple[float, float]:
        if self.transform == "loglogit":
            return math.log(self.lower), math.log(self.upper)
        return self.lower, self.upper

    def to_physical(self, unconstrained: ArrayLike) -> Array:
        """Map an unconstrained value u ∈ ℝ into [lower, upper]: lo·(1−σ(u)) + hi·σ(u) (in log space for
        ``loglogit``). Written as a convex combination so that u = ±∞ gives exactly the bounds."""
        lo, hi = self._edges()
        s = jax.nn.sigmoid(jnp.asarray(unconstrained))
        z = lo * (1.0 - s) + hi * s
        x = jnp.exp(z) if self.transform == "loglogit" else z
        # Guard against rounding only (exp and float32 can land an ulp outside); interior gradients are
        # untouched, so this is not a clip of the model but of the arithmetic.
        lower, upper = _representable_bounds(self.lower, self.upper, x.dtype)
        return jnp.clip(x, lower, upper)

    def to_unconstrained(self, value: ArrayLike) -> Array:
        """Inverse of `to_physical`. Values at a bound map to a large finite number, not ±∞."""
        lo, hi = self._edges()
        x = jnp.asarray(value)
        if self.transform == "loglogit":
            x = jnp.log(jnp.maximum(x, self.lower))
        frac = jnp.clip((x - lo) / (hi - lo), _EDGE, 1.0 - _EDGE)
        return jnp.log(frac) - jnp.log1p(-frac)

    @property
    def default_unconstrained(self) -> float:
        """The unconstrained image of the default, computed in Python floats (usable inside ``jit``)."""
        lo, hi = self._edges()
        x = math.log(self.default) if self.transform == "loglogit" else self.default
        frac = min(max((x - lo) / (hi - lo), _EDGE), 1.0 - _EDGE)
        return math.log(frac) - math.log1p(-frac)

    def check(self, value: ArrayLike, *, where: str = "") -> None:
        """Raise `ParameterBoundsError` naming this parameter if any concrete value is out of bounds or
        not finite. Traced values (inside jit) cannot be inspected and are left to the transforms."""
        if isinstance(value, jax.core.Tracer):
            return
        arr = np.asarray(value, dtype=float)
        context = f" ({where})" if where else ""
        if not np.all(np.isfinite(arr)):
            raise ParameterBoundsError(
                f"parameter {self.name!r}{context}: non-finite value(s) {arr[~np.isfinite(arr)][:3]}"
            )
        bad = (arr < self.lower) | (arr > self.upper)
        if np.any(bad):
            raise ParameterBoundsError(
                f"parameter {self.name!r}{context}: value(s) {arr[bad][:3]} outside its bounds "
                f"[{self.lower}, {self.upper}] {self.units} (source of the bounds: {self.reference})"
            )


def _representable_bounds(lower: float, upper: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The bounds rounded inwards to ``dtype``, so that every value in between is truly in bounds."""
    lo = np.asarray(lower, dtype=dtype)
    hi = np.asarray(upper, dtype=dtype)
    if float(lo) < lower:
        lo = np.nextafter(lo, np.asarray(np.inf, dtype=dtype))
    if float(hi) > upper:
        hi = np.nextafter(hi, np.asarray(-np.inf, dtype=dtype))
    return lo, hi


Specs = tuple[ParameterSpec, ...]


def collect_specs(*groups: Iterable[ParameterSpec]) -> Specs:
    """Union of parameter specs from several components, ordered by first appearance.

    A name may appear in several components (e.g. soil porosity is read by the bucket and by DAMM) only
    if the specs are identical; otherwise it is an error, because one value cannot satisfy both.
    """
    out: dict[str, ParameterSpec] = {}
    for group in groups:
        for spec in group:
            prior = out.get(spec.name)
            if prior is None:
                out[spec.name] = spec
            elif prior != spec:
                raise ValueError(
                    f"parameter {spec.name!r} is declared twice with different specs:\n  {prior}\n  {spec}"
                )
    return tuple(out.values())


def _by_name(specs: Iterable[ParameterSpec]) -> dict[str, ParameterSpec]:
    return {s.name: s for s in specs}


def check_parameters(
    specs: Iterable[ParameterSpec], theta: Mapping[str, ArrayLike], *, complete: bool = True
) -> None:
    """Validate a physical parameter mapping: no unknown names, (if ``complete``) none missing, all in
    bounds. Errors name the parameter."""
    table = _by_name(specs)
    unknown = sorted(set(theta) - set(table))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {unknown}; this model declares {sorted(table)}"
        )
    if complete:
        missing = sorted(set(table) - set(theta))
        if missing:
            raise UnknownParameterError(f"missing parameter(s) {missing}")
    for name, value in theta.items():
        table[name].check(value)


def default_parameters(specs: Iterable[ParameterSpec], dtype=jnp.float32) -> dict[str, Array]:
    """Physical default values, one scalar array per parameter."""
    return {s.name: jnp.asarray(s.default, dtype=dtype) for s in specs}


def make_parameters(specs: Iterable[ParameterSpec], dtype=jnp.float32, **overrides: ArrayLike) -> dict[str, Array]:
    """Defaults updated with user-given physical values, which are checked against their bounds.

    >>> make_parameters(LloydTaylor.parameter_specs, rref=1.2)  # doctest: +SKIP
    """
    specs = tuple(specs)
    check_parameters(specs, overrides, complete=False)
    theta = default_parameters(specs, dtype)
    theta.update({k: jnp.asarray(v, dtype=dtype) for k, v in overrides.items()})
    return theta


def constrain(specs: Iterable[ParameterSpec], unconstrained: Mapping[str, ArrayLike]) -> dict[str, Array]:
    """Unconstrained values → physical values, parameter by parameter (names must be declared)."""
    table = _by_name(specs)
    unknown = sorted(set(unconstrained) - set(table))
    if unknown:
        raise UnknownParameterError(f"unknown parameter(s) {unknown}; declared: {sorted(table)}")
    return {k: table[k].to_physical(v) for k, v in unconstrained.items()}


def unconstrain(specs: Iterable[ParameterSpec], theta: Mapping[str, ArrayLike]) -> dict[str, Array]:
    """Physical values (checked against their bounds) → unconstrained values."""
    table = _by_name(specs)
    check_parameters(table.values(), theta, complete=False)
    return {k: table[k].to_unconstrained(v) for k, v in theta.items()}
