"""Run an `Ecosystem` through time with `lax.scan` (one site) and over many sites with `vmap`: the
state-independent terms of every day first, in one vectorised pass, then the loop over the sequential part only.

No I/O: forcing arrives as a `Met` of arrays, outputs leave as a `DailyOutput` of arrays with a time axis.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
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
    """Simulate one site over the days of ``met`` (every field shaped ``(time,)``, or a scalar where constant in
    time, e.g. latitude).

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


#: Rematerialisation of the time loop's body in the reverse pass (`jax.checkpoint` policy). The loop holds only
#: the sequential part of a day (`Ecosystem.advance`; everything state-independent is computed before it by
#: `Ecosystem.drivers`, everything else after it by `Ecosystem.finish`), so recomputing it is cheap while
#: storing its residuals would cost memory traffic per day: nothing inside the body is saved.
BODY_REMAT_POLICY = jax.checkpoint_policies.nothing_saveable


def _broadcast_leaves(tree, shape):
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, shape), tree)


def _split_in_time(tree, n_days: int):
    """(the leaves the loop scans, one slice per day; a function of one day's slices giving the day's tree).

    A leaf whose leading (time) axis has ``n_days`` entries is scanned; a scalar, or a leaf with a leading axis
    of 1 (e.g. latitude shaped ``(1, site)`` in the time-major layout, or a driver computed from such fields
    alone), is the same every day and is handed to each day whole. So the vectorised passes before and after the
    loop compute the terms of such fields once per site (the sun geometry: two sines and cosines per site, three
    per day, instead of five per site-day). Leaves are checked in the tree's order (an `OrderedDict` keeps the
    forcing first, so that a misshapen field is named rather than a driver computed from it)."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    scanned, constant = [], []
    for path, x in with_path:
        x = jnp.asarray(x)
        if x.ndim and x.shape[0] == n_days:
            scanned.append(x)
            constant.append(None)
        elif x.ndim == 0 or x.shape[0] == 1:
            scanned.append(None)
            constant.append(x[0] if x.ndim else x)
        else:
            raise ValueError(f"{jax.tree_util.keystr(path, simple=True, separator='.')} has shape {x.shape} (time "
                             f"first): its time axis must have {n_days} days or 1 (constant in time)")

    def day(scanned_t):
        return jax.tree_util.tree_unflatten(treedef, [c if s is None else s for s, c in zip(scanned_t, constant, strict=True)])

    return scanned, day


def _run(model, theta, met, state, theta_daily) -> Simulation:
    if state is None:
        state = model.init_state(theta)
    theta_all = {**theta, **theta_daily}
    # One vectorised pass over all days for every state-independent term, before the loop.
    drivers = model.drivers(theta_all, met)
    n_days = met.tair.shape[0]
    scanned, day = _split_in_time(OrderedDict(met=met, drivers=drivers, theta_daily=theta_daily), n_days)

    @functools.partial(jax.checkpoint, policy=BODY_REMAT_POLICY)
    def body(carry, inputs):
        today = day(inputs)
        new, carried = model.advance({**theta, **today["theta_daily"]}, carry, today["met"], today["drivers"])
        new = jax.tree_util.tree_map(lambda a, b: jnp.broadcast_to(a, b.shape).astype(b.dtype), new, carry)
        return new, carried

    final, carried = jax.lax.scan(body, state, scanned, length=n_days)
    outputs = _broadcast_leaves(model.finish(theta_all, met, drivers, carried), met.tair.shape)
    return Simulation(outputs=outputs, final_state=final)


_simulate = eqx.filter_jit(_run)


def simulate_sites(
    model: Ecosystem,
    theta: Mapping[str, Array],
    met: Met,
    state: EcosystemState | None = None,
    time_major: bool = False,
) -> Simulation:
    """Simulate many sites at once: ``met`` fields shaped ``(site, time)``; each parameter either a scalar
    (shared by all sites) or shaped ``(site,)`` (one value per site, e.g. a parameter ensemble).

    Equivalent to a Python loop of `simulate` over sites (tested); computed as one scan over days whose
    steps act on all sites at once. With ``time_major=True`` the forcing fields are shaped ``(time, site)``
    and so are the outputs, which saves two transposes of every array (the fast layout for large runs).

    A field may also be given at a broadcastable shape: constant in time (``(site, 1)``, time-major ``(1, site)``;
    e.g. latitude), the same for all sites (``(1, time)``, time-major ``(time, 1)``; e.g. the day of year, CO2),
    or a scalar. Results equal those of the full-shaped fields (tested); the state-independent terms of such
    fields are then computed at their own size (the sun geometry once per site and once per day).
    """
    theta = {k: jnp.asarray(v) for k, v in theta.items()}
    _check(model, theta)
    n_sites = met.tair.shape[1 if time_major else 0]
    for name, value in theta.items():
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != n_sites):
            raise ValueError(
                f"parameter {name!r} has shape {value.shape}; expected a scalar or ({n_sites},) for "
                f"{n_sites} sites"
            )
    return _simulate_sites(model, theta, met, state, time_major)


def _run_sites(model, theta, met, state, time_major: bool = False) -> Simulation:
    """All sites advance together, day by day: every kernel is elementwise, so a day of ``n`` sites is one
    step on arrays shaped ``(site,)``. Equivalent to ``vmap`` of `_run` (tested), but scanning a time-major
    layout keeps each day's inputs contiguous, which is about twice as fast on CPU."""
    n_sites = met.tair.shape[1 if time_major else 0]
    met_tm = met if time_major else jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1) if x.ndim == 2 else x, met)
    if state is None:
        state = model.init_state(theta)
    # Every component's state is one scalar per site (the component contract).
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_sites,)), state)
    # One vectorised pass over all (day, site) for every state-independent term, before the loop; per-site
    # parameters (site,) broadcast against the time-major (time, site) drivers.
    drivers = model.drivers(theta, met_tm)
    scanned, day = _split_in_time(OrderedDict(met=met_tm, drivers=drivers), met_tm.tair.shape[0])

    @functools.partial(jax.checkpoint, policy=BODY_REMAT_POLICY)
    def body(carry, inputs):
        today = day(inputs)
        new, carried = model.advance(theta, carry, today["met"], today["drivers"])
        # Components whose state does not depend on the site return scalars; keep the carry's shape.
        new = jax.tree_util.tree_map(lambda a, b: jnp.broadcast_to(a, b.shape).astype(b.dtype), new, carry)
        return new, _broadcast_leaves(carried, (n_sites,))

    final, carried = jax.lax.scan(body, state, scanned, length=met_tm.tair.shape[0])
    # Everything downstream of the sequential part, for all (day, site) at once.
    outputs = _broadcast_leaves(model.finish(theta, met_tm, drivers, carried), met_tm.tair.shape)
    if not time_major:
        outputs = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), outputs)
    return Simulation(outputs=outputs, final_state=final)


_simulate_sites = eqx.filter_jit(_run_sites)
