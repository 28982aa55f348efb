"""The interface of every site model kind: hybrid, same-size neural network and calibrated process model.

A site model maps one site window (`kgml.models.hybrid.SiteWindow`: normalised drivers, raw drivers for the
physics, location, static attributes, context) to `kgml.models.hybrid.Predictions`. Code that trains, scores or
maps a model reads only what this interface declares: ``process`` (the physics layer, or None for a model
without physics), ``specs`` (its parameters), ``learned`` (per-site parameters), ``global_unconstrained``
(one learned value per parameter shared by all sites), ``time_varying`` and ``residual_targets``.
The kinds are final classes (`kgml.models.hybrid.HybridModel`, `kgml.models.hybrid.ProcessModel`,
`kgml.models.neural.NeuralModel`) chosen by ``[model] kind``; nothing probes a model's capabilities by attribute.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx

__all__ = ["AbstractNetworkModel", "AbstractSiteModel"]


class AbstractSiteModel(eqx.Module):
    """One model kind: ``__call__(window) -> Predictions`` plus what it learns.

    - ``process``: the `process_models.ecosystem.Ecosystem` physics layer, or None (no physics);
    - ``learned``: parameters predicted per site; ``time_varying``: those also predicted per day;
    - ``residual_targets``: fluxes corrected by a bounded residual head;
    - ``global_unconstrained``: single learned values (unconstrained space) shared by all sites;
    - ``specs``: name → `ParameterSpec` of every physical parameter (empty without physics).
    """

    process: eqx.AbstractVar[Any]
    learned: eqx.AbstractVar[tuple[str, ...]]
    time_varying: eqx.AbstractVar[tuple[str, ...]]
    residual_targets: eqx.AbstractVar[tuple[str, ...]]
    # ``global_unconstrained`` (dict name → unconstrained value) is a field of the hybrid and process kinds
    # and an (empty) property of the neural network; equinox cannot declare one abstract member for both.

    @property
    @abc.abstractmethod
    def specs(self) -> dict:
        """Name → `ParameterSpec` of the physics layer's parameters ({} without physics)."""

    @abc.abstractmethod
    def __call__(self, w) -> Any:
        """`kgml.models.hybrid.Predictions` for one site window."""

    @property
    def has_physics(self) -> bool:
        """Whether fluxes come through a process model (False for the same-size neural network)."""
        return self.process is not None


class AbstractNetworkModel(AbstractSiteModel):
    """A site model with a learned site embedding (hybrid and neural network): an encoder of the drivers,
    the location encoding and, optionally, site attention over context sites."""

    @abc.abstractmethod
    def embedding(self, w) -> tuple[Any, Any]:
        """(daily features (time, hidden), site embedding (embed_dim,)) of one window."""
