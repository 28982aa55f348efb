"""Differentiable process models of terrestrial carbon and water fluxes and crop growth (JAX + equinox).

Pure kernels (one site, one time step, documented units and citations) composed by small final
`equinox.Module`s that declare their learnable `ParameterSpec`s. No files, no xarray, no ML.
"""

from process_models.forcing import Met, make_met
from process_models.parameters import (
    ParameterBoundsError,
    ParameterSpec,
    UnknownParameterError,
    check_parameters,
    collect_specs,
    constrain,
    default_parameters,
    make_parameters,
    unconstrain,
)

__all__ = [
    "Met",
    "ParameterBoundsError",
    "ParameterSpec",
    "UnknownParameterError",
    "check_parameters",
    "collect_specs",
    "constrain",
    "default_parameters",
    "make_met",
    "make_parameters",
    "unconstrain",
]
