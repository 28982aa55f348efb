"""Synthetic pretraining corpora from the process model: parameter priors × forcing → noisy, gappy
observations with the true parameters, as an ``xr.Dataset`` (site × time) in the real-data schema.

A corpus is built block by block (one synthetic state × one vegetation type): per-site parameters are drawn
around the specs' defaults in unconstrained space, daily weather comes either from the stochastic generator
fitted on Ames, IA (shifted per state; ``CorpusSpec.weather = "generator"``, the default) or from real
site-years of the state's stations and counties (``"stations"``, `real_weather_years`),
`process_models.simulate.simulate_sites` runs all sites of a block at once, and an observation model adds
heteroscedastic noise and gaps (`NoiseModel`, `GapModel`).

The package by idea: `world` (states, vegetation, forcing, parameters), `observation` (noise and gaps),
`real_weather` (station and county site-years), `corpus` (blocks and corpora).
"""

from kgml.data.drivers import met_from_dataset
from kgml.synthetic.corpus import (
    CorpusSpec,
    corpus_block,
    make_corpus,
    monthly_means,
    save_corpus,
    soil_respiration_model,
    time_coordinate,
)
from kgml.synthetic.observation import (
    GapModel,
    NoiseModel,
    observe,
)
from kgml.synthetic.real_weather import (
    REAL_WEATHER_MAX_FILL_DAYS,
    REAL_WEATHER_SOURCES,
    REAL_WEATHER_VARIABLES,
    RealWeatherError,
    RealWeatherSource,
    real_weather_years,
    station_forcing,
)
from kgml.synthetic.world import (
    DAYS_PER_YEAR,
    DRIVERS,
    FLUXES,
    SITE_VARYING,
    STATES,
    VEGETATION,
    StateClimate,
    build_model,
    generate_forcing,
    sample_parameters,
)

__all__ = [
    "DAYS_PER_YEAR",
    "DRIVERS",
    "FLUXES",
    "REAL_WEATHER_SOURCES",
    "RealWeatherError",
    "STATES",
    "SITE_VARYING",
    "VEGETATION",
    "CorpusSpec",
    "GapModel",
    "NoiseModel",
    "StateClimate",
    "build_model",
    "corpus_block",
    "generate_forcing",
    "make_corpus",
    "met_from_dataset",
    "observe",
    "real_weather_years",
    "sample_parameters",
    "save_corpus",
    "station_forcing",
    "REAL_WEATHER_MAX_FILL_DAYS",
    "REAL_WEATHER_VARIABLES",
    "RealWeatherSource",
    "monthly_means",
    "soil_respiration_model",
    "time_coordinate",
]
