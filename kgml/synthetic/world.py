"""The synthetic world: the states' climates, vegetation types and their process models, daily forcing from
the weather generator, and per-site parameters drawn around the specs' defaults in unconstrained space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from kgml.data.stations import (
    load_default_generator,
)
from kgml.variables import get_variable
from process_models import weather
from process_models.crop import Maize, Soybean
from process_models.ecosystem import (
    SOIL_WATER_MODES,
    CropEcosystem,
    Ecosystem,
    NaturalEcosystem,
    SoilChamber,
)
from process_models.forcing import Met, make_met
from process_models.phenology import EvergreenGSI, GrowingSeasonIndex, WaterLimitedGSI
from process_models.photosynthesis import AcclimatedPModel, FarquharC3, LightUseEfficiency, PModel

#: The weather generator and the corpora use a 365-day ("noleap") calendar.
DAYS_PER_YEAR = 365

#: Driver variables stored in a corpus (canonical names and units of `kgml.variables`).
DRIVERS = ("tair", "tmin", "tmax", "sw_in", "vpd", "precip", "tsoil", "co2", "patm")

#: Daily carbon fluxes observed by towers (nee, gpp, reco) and chambers (rsoil), gC m-2 d-1.
FLUXES = ("nee", "gpp", "reco", "rsoil")

VEGETATION = ("maize", "soybean", "grassland")


@dataclass(frozen=True)
class StateClimate:
    """A synthetic state: a centre, and a documented shift of the Ames-fitted weather."""

    name: str
    lat: float
    lon: float
    warming: float  # °C added to tmin and tmax
    precip_scale: float  # multiplies daily precipitation


#: Three Midwest-like states. The shifts are assumptions of the demo, chosen to follow the observed
#: gradient (NOAA 1991–2020 normals: central Illinois ~1 °C warmer and ~10 % wetter than central Iowa;
#: eastern Nebraska ~25 % drier).
STATES = (
    StateClimate("IA", 42.0, -93.6, 0.0, 1.0),
    StateClimate("IL", 40.1, -88.2, 1.0, 1.10),
    StateClimate("NE", 41.2, -96.5, 0.3, 0.75),
)

#: Parameters that vary from site to site by default (those present in a model are drawn).
SITE_VARYING = (
    "rref_rh", "e0_rh", "k_ext", "lue_max", "vcmax25", "vmax25_c4", "root_depth", "rm_ref",
    "maize_sowing_doy", "soybean_sowing_doy",
)


#: Phenologies of the natural-vegetation physics (`build_model`, ``[model] phenology``).
PHENOLOGIES = {"gsi": GrowingSeasonIndex, "gsi_water": WaterLimitedGSI, "gsi_evergreen": EvergreenGSI}
#: Photosynthesis of the natural-vegetation physics (`build_model`, ``[model] photosynthesis``): MOD17 light-use
#: efficiency (linear in absorbed light), big-leaf Farquhar C3 (light-saturating through Jmax and Vcmax) or the
#: P-model (linear in absorbed light, acclimated χ), optionally with the evergreen share's cold-season
#: down-regulation (Mäkelä et al. 2004).
PHOTOSYNTHESES = {"lue": LightUseEfficiency, "farquhar_c3": FarquharC3, "pmodel": PModel,
                  "pmodel_acclimated": AcclimatedPModel}


def build_model(vegetation: str, soil_respiration=None, soil_water: str = "bucket", phenology: str = "gsi",
                photosynthesis: str = "lue") -> Ecosystem:
    """The process model of a vegetation type: ``maize`` (Collatz C4 crop), ``soybean`` (Farquhar C3 crop)
    or ``grassland`` (light-use efficiency + growing-season-index phenology; every natural biome), or
    ``soil`` (`SoilChamber`: chamber soil respiration from measured soil temperature and water). ``soil_respiration`` replaces
    the default Lloyd–Taylor heterotrophic respiration (e.g. `Q10Respiration()`). ``soil_water``: ``"bucket"``
    (the model's own soil water) or, for natural vegetation only, ``"observed"`` / ``"observed_rew"`` (the
    measured ``swc`` / its relative extractable water drive water stress and the Rh moisture response where
    finite; `NaturalEcosystem.soil_water`). ``phenology``: ``"gsi"`` (Jolly et al. 2005) or, for natural
    vegetation, ``"gsi_water"`` (`WaterLimitedGSI`: leaf area also limited by the bucket's soil water) or
    ``"gsi_evergreen"`` (`EvergreenGSI`: the evergreen share ``met.evergreen`` of the canopy keeps its leaves).
    ``photosynthesis`` (natural vegetation): ``"lue"`` (`LightUseEfficiency`, MOD17), ``"farquhar_c3"``
    (`FarquharC3`: big-leaf Farquhar et al. 1980, saturating in light), ``"pmodel"`` (`PModel`, Stocker et al.
    2020) or ``"pmodel_acclimated"`` (`AcclimatedPModel`: the evergreen share ``met.evergreen`` down-regulates its
    photosynthesis in the cold season, Mäkelä et al. 2004)."""
    if photosynthesis not in PHOTOSYNTHESES:
        raise ValueError(f"unknown photosynthesis {photosynthesis!r}; choose one of {tuple(PHOTOSYNTHESES)}")
    if photosynthesis != "lue" and vegetation != "grassland":
        raise ValueError(f"photosynthesis={photosynthesis!r} is for natural vegetation ('grassland'), not {vegetation!r}")
    if phenology not in PHENOLOGIES:
        raise ValueError(f"unknown phenology {phenology!r}; choose one of {tuple(PHENOLOGIES)}")
    if phenology != "gsi" and vegetation != "grassland":
        raise ValueError(f"phenology={phenology!r} is for natural vegetation ('grassland'), not {vegetation!r}")
    if soil_water not in SOIL_WATER_MODES:
        raise ValueError(f"unknown soil_water {soil_water!r}; choose one of {SOIL_WATER_MODES}")
    if soil_water != "bucket" and vegetation != "grassland":
        raise ValueError(f"soil_water={soil_water!r} is for natural vegetation ('grassland'), not {vegetation!r}")
    if vegetation == "maize":
        return CropEcosystem(crop=Maize(), soil_respiration=soil_respiration)
    if vegetation == "soybean":
        return CropEcosystem(crop=Soybean(), soil_respiration=soil_respiration)
    if vegetation == "grassland":
        kw = {"soil_water": soil_water, "phenology": PHENOLOGIES[phenology](),
              "photosynthesis": PHOTOSYNTHESES[photosynthesis]()}
        if soil_respiration is None:
            return NaturalEcosystem(**kw)
        return NaturalEcosystem(soil_respiration=soil_respiration, **kw)
    if vegetation == "soil":
        return SoilChamber() if soil_respiration is None else SoilChamber(soil_respiration=soil_respiration)
    raise ValueError(f"unknown vegetation {vegetation!r}; choose one of {(*VEGETATION, 'soil')}")





@eqx.filter_jit
def _weather_sites(params, keys, n_days: int):
    return jax.vmap(lambda k: weather.generate_weather(params, k, n_days))(keys)


def generate_forcing(state: StateClimate, n_sites: int, years: int, key, lat=None) -> Met:
    """Daily `Met` shaped (site, day) for one state: weather from the Ames-fitted generator, with the
    state's warming added to tmin and tmax (tair and vpd re-derived from them) and its rain scaled.
    ``lat`` (site,) sets each site's latitude (radiation geometry); default the state's centre."""
    keys = jax.random.split(key, n_sites)
    wx = _weather_sites(load_default_generator(), keys, DAYS_PER_YEAR * years)
    lat = state.lat if lat is None else jnp.asarray(lat, jnp.float32)[:, None]
    return make_met(
        tmin=wx.tmin + state.warming,
        tmax=wx.tmax + state.warming,
        sw_in=wx.sw_in,
        precip=wx.precip * state.precip_scale,
        doy=wx.doy,
        lat=lat,
    )


def sample_parameters(
    model: Ecosystem,
    n_sites: int,
    key,
    *,
    prior_sd: float = 0.3,
    varying: Sequence[str] | None = SITE_VARYING,
    shift: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
    covariate: np.ndarray | None = None,
    covariate_params: Sequence[str] = (),
    covariate_corr: float = 0.8,
) -> dict[str, jnp.ndarray]:
    """Per-site physical parameters drawn from a prior around the specs' defaults, in unconstrained space:

        u = default_unconstrained + shift[name] + prior_sd · z,    θ = spec.to_physical(u)

    for names in ``varying`` (``None``: every parameter of the model); the others stay at their defaults.
    ``fixed`` sets physical values (scalars or (site,)) that override everything. For names in
    ``covariate_params``, z = ρ·covariate + √(1−ρ²)·ε with ρ = ``covariate_corr``: an observable site
    attribute (e.g. a soil-carbon index, standard normal) then predicts the parameter, as soil maps do.
    """
    theta = model.default_parameters()
    shift = dict(shift or {})
    names = [s.name for s in model.parameter_specs]
    unknown = sorted((set(shift) | set(fixed or {}) | set(covariate_params)) - set(names))
    if unknown:
        raise KeyError(f"parameters {unknown} are not declared by this model (declares {names})")
    for spec in model.parameter_specs:
        if (varying is not None and spec.name not in varying) and spec.name not in shift:
            continue
        key, sub = jax.random.split(key)
        z = jax.random.normal(sub, (n_sites,))
        if spec.name in covariate_params:
            if covariate is None:
                raise ValueError("covariate_params given without a covariate")
            rho = covariate_corr
            z = rho * jnp.asarray(covariate, jnp.float32) + np.sqrt(1.0 - rho**2) * z
        sd = prior_sd if (varying is None or spec.name in varying) else 0.0
        u = spec.default_unconstrained + shift.get(spec.name, 0.0) + sd * z
        theta[spec.name] = spec.to_physical(u)
    for name, value in (fixed or {}).items():
        theta[name] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n_sites,))
    return theta


_EXTRA_ATTRS = {"et": {"units": "mm d-1", "long_name": "evapotranspiration"}}


def _attrs(name: str) -> dict:
    if name in _EXTRA_ATTRS:
        return dict(_EXTRA_ATTRS[name])
    var = get_variable(name)
    return {"units": var.units, "long_name": var.long_name}
