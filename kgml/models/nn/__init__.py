"""Neural parts of the hybrid model: temporal encoders, location encoding, site attention and heads.

Every module acts on one example (one site); `jax.vmap` over sites at the call site.
"""

from kgml.models.nn.encoders import (
    AttentionPool,
    GRUEncoder,
    LSTMEncoder,
    RecurrentEncoder,
    TemporalAttention,
    TemporalEncoder,
)
from kgml.models.nn.heads import ParameterHead, ResidualHead
from kgml.models.nn.location import (
    EARTH_RADIUS_KM,
    LocationEncoder,
    fourier_location_features,
    haversine_km,
    n_location_features,
)
from kgml.models.nn.site_attention import SiteAttention, nearest_context

__all__ = [
    "EARTH_RADIUS_KM",
    "AttentionPool",
    "GRUEncoder",
    "LSTMEncoder",
    "LocationEncoder",
    "ParameterHead",
    "RecurrentEncoder",
    "ResidualHead",
    "SiteAttention",
    "TemporalAttention",
    "TemporalEncoder",
    "fourier_location_features",
    "haversine_km",
    "n_location_features",
    "nearest_context",
]
