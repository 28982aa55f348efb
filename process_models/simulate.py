"""Run an `Ecosystem` through time with `lax.scan` (one site) and over many sites with `vmap`.

No I/O: forcing arrives as a `Met` of arrays, outputs leave as a `DailyOutput` of arrays with a time axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from process_models.ecosystem import DailyOutput, Ecosystem, EcosystemState
from process_models.forcing import Met
from process_models.parameters import check_parameters


class Simulation(NamedTuple):
    """Outputs with a leading ``time`` axis (``site, time`` from `simulate_sites`) and the final state."""

    outputs: DailyOutput
    final_state: EcosystemState


def _check(model: Ecosystem, theta: Mapping[str, Array]) -> None:
    # Concrete values only; under an outer jit the bounded transforms are the guarantee.
    check_parameters(model.parameter_specs, theta)


def simulate(
    model: Ecosystem,
    theta: Mapping[str, Array],
    met: Met,
    state: EcosystemState | None = None,
    theta_daily: Mapping[str, Array] | None = None,
) -> Simulation:
    """Simulate one site over the days of ``met`` (every field shaped ``(time,)``).

    Args:
        model: the coupled model (structure only).
        theta: physical parameters, scalars (constant in time).
        met: daily forcing with a leading time axis.
        state: initial state; default `model.init_state(theta)` (full bucket, fallow / dormant).
        theta_daily: optional time-varying parameters shaped ``(time,)`` (e.g. from a neural head); they
            override ``theta`` of the same name day by day.
    """
    theta = dict(theta)
    _check(model, {**theta, **(theta_daily or {})})
    return _simulate(model, theta, met, state, dict(theta_daily or {}))


def _run(model, theta, met, state, theta_daily) -> Simulation:
    if state is None:
        state = model.init_state(theta)

    def body(carry, inputs):
        met_t, theta_t = inputs
        carry, out = model.step({**theta, **theta_t}, carry, met_t)
        return carry, out

    final, outputs = jax.lax.scan(body, state, (met, theta_daily))
    return Simulation(outputs=outputs, final_state=final)


_simulate = eqx.filter_jit(_run)


def simulate_sites(
    model: Ecosystem,
    theta: Mapping[str, Array],
    met: Met,
    state: EcosystemState | None = None,
) -> Simulation:
    """Simulate many sites at once: ``met`` fields shaped ``(site, time)``; each parameter either a scalar
    (shared by all sites) or shaped ``(site,)`` (one value per site, e.g. a parameter ensemble).

    Equivalent to a Python loop of `simulate` over sites (tested), computed with `vmap`.
    """
    theta = {k: jnp.asarray(v) for k, v in theta.items()}
    _check(model, theta)
    n_sites = met.tair.shape[0]
    for name, value in theta.items():
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != n_sites):
            raise ValueError(
                f"parameter {name!r} has shape {value.shape}; expected a scalar or ({n_sites},) for "
                f"{n_sites} sites"
            )
    return _simulate_sites(model, theta, met, state)


@eqx.filter_jit
def _simulate_sites(model, theta, met, state) -> Simulation:
    theta_axes = {k: (0 if v.ndim == 1 else None) for k, v in theta.items()}
    state_axes = None if state is None else 0

    def one(theta_s, met_s, state_s):
        return _run(model, theta_s, met_s, state_s, {})

    return jax.vmap(one, in_axes=(theta_axes, 0, state_axes))(theta, met, state)
