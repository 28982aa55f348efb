"""Synthetic pretraining corpora from the process model: parameter priors × forcing → noisy, gappy
observations with the true parameters, as an ``xr.Dataset`` (site × time) in the real-data schema.

A corpus is built block by block (one synthetic state × one vegetation type): per-site parameters are drawn
around the specs' defaults in unconstrained space, daily weather comes either from the stochastic generator
fitted on Ames, IA (shifted per state; ``CorpusSpec.weather = "generator"``, the default) or from real
site-years of the state's stations and counties (``"stations"``, `real_weather_years`),
`process_models.simulate.simulate_sites` runs all sites of a block at once, and an observation model adds
heteroscedastic noise and gaps (`NoiseModel`, `GapModel`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm import tqdm

from kgml.data.assemble import DIURNAL_RANGE, _fill_short_gaps, fluxnet_daily, il_corn
from kgml.data.formats import files_of, one_file
from kgml.data.nldas_county import read_nldas_county_weather
from kgml.data.stations import (
    ames_file,
    champaign_file,
    load_default_generator,
    read_ames_ia,
    read_champaign_il,
)
from kgml.data.yields import US_STATES, read_county_locations
from kgml.drivers import met_from_dataset
from kgml.io import write_netcdf_atomic
from kgml.paths import data_dir as resolve_data_dir
from kgml.variables import get_variable
from process_models import weather
from process_models.crop import Maize, Soybean
from process_models.ecosystem import CropEcosystem, Ecosystem, NaturalEcosystem, SoilChamber
from process_models.forcing import Met, make_met
from process_models.simulate import simulate_sites
from process_models.soil_respiration import DAMM, LloydTaylor, Q10Respiration

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
]

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


def build_model(vegetation: str, soil_respiration=None) -> Ecosystem:
    """The process model of a vegetation type: ``maize`` (Collatz C4 crop), ``soybean`` (Farquhar C3 crop)
    or ``grassland`` (light-use efficiency + growing-season-index phenology; every natural biome), or
    ``soil`` (`SoilChamber`: chamber soil respiration from measured soil temperature and water). ``soil_respiration`` replaces
    the default Lloyd–Taylor heterotrophic respiration (e.g. `Q10Respiration()`)."""
    if vegetation == "maize":
        return CropEcosystem(crop=Maize(), soil_respiration=soil_respiration)
    if vegetation == "soybean":
        return CropEcosystem(crop=Soybean(), soil_respiration=soil_respiration)
    if vegetation == "grassland":
        if soil_respiration is None:
            return NaturalEcosystem()
        return NaturalEcosystem(soil_respiration=soil_respiration)
    if vegetation == "soil":
        return SoilChamber() if soil_respiration is None else SoilChamber(soil_respiration=soil_respiration)
    raise ValueError(f"unknown vegetation {vegetation!r}; choose one of {(*VEGETATION, 'soil')}")


# ---------------------------------------------------------------------------------------------------------
# Observation model
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseModel:
    """Heteroscedastic observation errors (σ grows with the flux, as measured).

    - Tower NEE: Laplace (double-exponential) error with σ = ``nee_abs + nee_rel·|NEE|`` (gC m-2 d-1).
      Richardson et al. (2006) Agric. For. Meteorol. 136:1 found eddy-covariance random errors double-
      exponential with σ linear in |flux|; the defaults give daily σ ≈ 0.3–1 gC m-2 d-1, the size of the
      daily random uncertainty in FLUXNET2015 (Pastorello et al. 2020 Sci. Data 7:225, NEE_*_RANDUNC).
    - Partitioned Reco: Gaussian with σ = ``reco_abs + reco_rel·Reco``; GPP is then Reco_obs − NEE_obs, as
      in night-time partitioning (Reichstein et al. 2005 Glob. Change Biol. 11:1424), so the observed
      fluxes obey NEE = Reco − GPP like the products do.
    - Chamber soil respiration: log-normal multiplicative error with CV ``rsoil_cv`` (spatial and
      chamber-to-chamber variability ≈ 10–30 %, Savage & Davidson 2003 J. Exp. Bot. 54:891) plus a
      Gaussian floor ``rsoil_abs``.
    - Yield: Gaussian with σ = ``yield_abs + yield_rel·yield`` (t ha-1), field-to-county and survey error.
    """

    nee_abs: float = 0.25
    nee_rel: float = 0.15
    reco_abs: float = 0.2
    reco_rel: float = 0.1
    rsoil_cv: float = 0.15
    rsoil_abs: float = 0.05
    yield_abs: float = 0.2
    yield_rel: float = 0.05

    def scaled(self, factor: float) -> NoiseModel:
        """Every σ multiplied by ``factor`` (0 = noise-free)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class GapModel:
    """Where observations are missing.

    - Towers: each day is missing with probability ``tower_p_day`` (QC rejection, rain, low turbulence),
      plus ``tower_gaps_per_year`` (Poisson mean) outages per site-year of ``tower_gap_days`` (uniform
      between the two bounds) consecutive days (instrument failures); NEE, GPP and Reco share the gaps.
    - Chambers: campaign sampling, one measurement every ``rsoil_every_days`` days between days of year
      ``rsoil_season``, each kept with probability ``rsoil_p_keep``.
    - Yields: each (site, year) reported with probability ``yield_p_report``.
    - ``tower_fraction`` of the sites have towers, ``chamber_fraction`` chambers (the rest: no fluxes).
    """

    tower_p_day: float = 0.15
    tower_gaps_per_year: float = 3.0
    tower_gap_days: tuple[int, int] = (3, 30)
    rsoil_every_days: int = 7
    rsoil_season: tuple[int, int] = (90, 300)
    rsoil_p_keep: float = 0.8
    yield_p_report: float = 1.0
    tower_fraction: float = 1.0
    chamber_fraction: float = 1.0

    @classmethod
    def none(cls) -> GapModel:
        """Every day of every variable observed."""
        return cls(0.0, 0.0, (1, 1), 1, (1, DAYS_PER_YEAR), 1.0, 1.0, 1.0, 1.0)


def _tower_mask(rng: np.random.Generator, n_sites: int, n_days: int, gaps: GapModel) -> np.ndarray:
    ok = rng.random((n_sites, n_days)) >= gaps.tower_p_day
    years = n_days / DAYS_PER_YEAR
    lo, hi = gaps.tower_gap_days
    for s in range(n_sites):
        for _ in range(rng.poisson(gaps.tower_gaps_per_year * years)):
            length = int(rng.integers(lo, hi + 1))
            start = int(rng.integers(0, max(n_days - length, 1)))
            ok[s, start : start + length] = False
    return ok


def _chamber_mask(rng: np.random.Generator, n_sites: int, doy: np.ndarray, gaps: GapModel) -> np.ndarray:
    n_days = doy.shape[-1]
    offset = rng.integers(0, gaps.rsoil_every_days, size=(n_sites, 1))
    day = np.arange(n_days)[None, :]
    on_schedule = (day - offset) % gaps.rsoil_every_days == 0
    lo, hi = gaps.rsoil_season
    in_season = (doy >= lo) & (doy <= hi)
    return on_schedule & in_season & (rng.random((n_sites, n_days)) < gaps.rsoil_p_keep)


def observe(
    truth: Mapping[str, np.ndarray],
    doy: np.ndarray,
    rng: np.random.Generator,
    noise: NoiseModel = NoiseModel(),
    gaps: GapModel = GapModel(),
) -> dict[str, np.ndarray]:
    """Noisy, gappy observations (NaN = missing) of true daily ``nee``, ``reco``, ``rsoil`` (site, time) and
    annual ``crop_yield`` (site, year) (NaN where there is no crop). Returns ``nee``, ``gpp``, ``reco``,
    ``rsoil`` and ``crop_yield``; see `NoiseModel` and `GapModel` for the error and gap models."""
    nee, reco, rsoil = (np.asarray(truth[k], np.float64) for k in ("nee", "reco", "rsoil"))
    n_sites, n_days = nee.shape
    nee_obs = nee + rng.laplace(0.0, 1.0, nee.shape) * (noise.nee_abs + noise.nee_rel * np.abs(nee)) / np.sqrt(2)
    reco_obs = reco + rng.normal(0.0, 1.0, reco.shape) * (noise.reco_abs + noise.reco_rel * np.abs(reco))
    gpp_obs = reco_obs - nee_obs
    cv = noise.rsoil_cv
    rsoil_obs = rsoil * np.exp(cv * rng.normal(size=rsoil.shape) - 0.5 * cv**2) + noise.rsoil_abs * rng.normal(
        size=rsoil.shape
    )
    tower = _tower_mask(rng, n_sites, n_days, gaps) & (rng.random((n_sites, 1)) < gaps.tower_fraction)
    chamber = _chamber_mask(rng, n_sites, np.broadcast_to(doy, nee.shape), gaps)
    chamber &= rng.random((n_sites, 1)) < gaps.chamber_fraction
    out = {
        "nee": np.where(tower, nee_obs, np.nan),
        "gpp": np.where(tower, gpp_obs, np.nan),
        "reco": np.where(tower, reco_obs, np.nan),
        "rsoil": np.where(chamber, rsoil_obs, np.nan),
    }
    y = np.asarray(truth["crop_yield"], np.float64)
    y_obs = y + rng.normal(size=y.shape) * (noise.yield_abs + noise.yield_rel * np.abs(y))
    reported = rng.random(y.shape) < gaps.yield_p_report
    out["crop_yield"] = np.where(reported & np.isfinite(y), np.maximum(y_obs, 0.0), np.nan)
    return {k: v.astype(np.float32) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------
# Forcing and parameters
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Real weather: whole site-years of the Midwest stations, counties and the US-Ne1 tower
# ---------------------------------------------------------------------------------------------------------

#: Daily drivers of a real-weather site-year (canonical names and units of `kgml.variables`).
REAL_WEATHER_VARIABLES = ("tmin", "tmax", "tair", "sw_in", "vpd", "precip")

#: Longest run of missing days (per variable) that `real_weather_years` fills by linear interpolation.
REAL_WEATHER_MAX_FILL_DAYS = 3


class RealWeatherError(ValueError):
    """A real-weather source that is missing or unusable; the message names the source and its folder or file."""


@dataclass(frozen=True)
class RealWeatherSource:
    """One source of real daily weather: the state its series stand for, the data folders it reads (under the
    data directory), what it is, and how its drivers are made (the reader in ``kgml.data`` that does it)."""

    name: str
    state: str
    datasets: tuple[str, ...]
    description: str
    drivers: str


#: The real-weather sources, in pool order. Every reader is the project's own (`kgml.data`); nothing is re-parsed.
REAL_WEATHER_SOURCES: dict[str, RealWeatherSource] = {s.name: s for s in (
    RealWeatherSource(
        "ames_ia", "IA", ("apsimx_ames_ia_daily_weather",),
        "Ames, IA station, daily 2000–2018 without 2014–2015 (`kgml.data.stations.read_ames_ia`)",
        "tmin/tmax/sw_in/precip observed; tair = (tmin+tmax)/2; vpd with dew point ≈ tmin (FAO-56 eqs. 12, 48)"),
    RealWeatherSource(
        "champaign_il", "IL", ("biocro_champaign_il_hourly_weather",),
        "Champaign, IL, hourly 1995–2023 without 2014–2015 aggregated to days (`kgml.data.stations.read_champaign_il`)",
        "tmin/tmax/tair from hourly temperature; sw_in from PAR (45 % of shortwave); vpd from hourly RH"),
    RealWeatherSource(
        "il_counties_daymet", "IL", ("khaki2020_corn_il40_weekly_daymet",),
        "40 Illinois counties, weekly Daymet 1980–2013 (`kgml.data.assemble.il_corn`)",
        "weekly Daymet means held on each day of the week (days 365–366 take week 52): no day-to-day variation "
        "within a week, rain spread evenly over the week"),
    RealWeatherSource(
        "il_counties_nldas", "IL", ("kgmlda_nldas2_county_daily_il2", "usda_nass_soybean_county_yield_you2017"),
        "Adams and Alexander counties, IL, daily NLDAS-2 2000–2020 without 2014–2015 "
        "(`kgml.data.nldas_county.read_nldas_county_weather`; centroids from the You et al. 2017 county_locations.csv)",
        "tair, sw_in, precip and vpd (from RH) observed as daily means; tmin/tmax = tair ∓ DIURNAL_RANGE/2 "
        "(no daily extremes in the source)"),
    RealWeatherSource(
        "us_ne1", "NE", ("fluxnet2015_subset_dd_us-ne1",),
        "US-Ne1 tower (Mead, NE), FLUXNET2015 DD 2001-05-30 … 2012-11-26 (`kgml.data.assemble.fluxnet_daily`)",
        "TA_F, SW_IN_F, VPD_F, P_F (gaps ≤ 7 d interpolated by the reader); tmin/tmax = tair ∓ DIURNAL_RANGE/2 "
        "(FLUXNET DD has no daily extremes)"),
)}


def _station_table(ds: xr.Dataset, station: str, state: str) -> xr.Dataset:
    """One station's daily dataset (dim ``time``, scalar lat/lon) as a (station, time) dataset."""
    out = xr.Dataset({v: ds[v].reset_coords(drop=True) for v in REAL_WEATHER_VARIABLES})
    out = out.expand_dims(station=[station])
    return out.assign_coords(lat=("station", [float(ds["lat"])]), lon=("station", [float(ds["lon"])]),
                             state=("station", [state]))


def _load_ames_ia(root) -> tuple[xr.Dataset, list[str]]:
    return _station_table(read_ames_ia(root), "Ames_IA", "IA"), [str(ames_file(root))]


def _load_champaign_il(root) -> tuple[xr.Dataset, list[str]]:
    return _station_table(read_champaign_il(root), "Champaign_IL", "IL"), [str(champaign_file(root))]


def _load_il_counties_daymet(root) -> tuple[xr.Dataset, list[str]]:
    ds = il_corn(root)
    out = xr.Dataset({v: (("station", "time"), ds[v].transpose("site", "time").values) for v in REAL_WEATHER_VARIABLES},
                     coords={"station": [f"daymet_{s}" for s in ds.site.values.astype(str)], "time": ds.time.values,
                             "lat": ("station", ds["lat"].values.astype(float)),
                             "lon": ("station", ds["lon"].values.astype(float)),
                             "state": ("station", ds["state"].values.astype(str))})
    return out, [str(ds.attrs.get("source", root / "khaki2020_corn_il40_weekly_daymet"))]


def _load_il_counties_nldas(root) -> tuple[xr.Dataset, list[str]]:
    folder = root / "kgmlda_nldas2_county_daily_il2"
    files = files_of(folder, "nldas_weather")  # recognised by their columns, whatever they are called
    if not files:
        raise RealWeatherError(f"{folder}: no county weather table (fips, Year, Day, Tair, ...)")
    ds = xr.merge([read_nldas_county_weather(f) for f in files], join="outer", compat="no_conflicts",
                  combine_attrs="drop")
    locations = one_file(root / "usda_nass_soybean_county_yield_you2017", "county_locations", "county centroid table")
    table = read_county_locations(locations).reindex(ds["county"].values.astype(np.int64))
    if not np.isfinite(table["lat"].to_numpy(dtype=float)).all():
        unknown = ds["county"].values[~np.isfinite(table["lat"].to_numpy(dtype=float))].tolist()
        raise RealWeatherError(f"{locations}: no centroid for NLDAS counties {unknown}")
    state_of_fips = {fips: abbr for abbr, fips in US_STATES.values()}
    tair = ds["tair"].transpose("county", "time").values
    values = {"tair": tair, "tmin": tair - DIURNAL_RANGE / 2, "tmax": tair + DIURNAL_RANGE / 2,
              **{v: ds[v].transpose("county", "time").values for v in ("sw_in", "vpd", "precip")}}
    counties = ds["county"].values.astype(np.int64)
    out = xr.Dataset({v: (("station", "time"), values[v]) for v in REAL_WEATHER_VARIABLES},
                     coords={"station": [f"nldas_{c}" for c in counties], "time": ds.time.values,
                             "lat": ("station", table["lat"].to_numpy(dtype=float)),
                             "lon": ("station", table["lon"].to_numpy(dtype=float)),
                             "state": ("station", [state_of_fips.get(int(c) // 1000, str(int(c) // 1000))
                                                   for c in counties])})
    return out, [str(f) for f in files] + [str(locations)]


def _load_us_ne1(root) -> tuple[xr.Dataset, list[str]]:

    with warnings.catch_warnings():  # the Warm Winter folder is not needed for US-Ne1
        warnings.simplefilter("ignore")
        ds = fluxnet_daily(root, sites=["US-Ne1"], cache=False)
    out = xr.Dataset({v: (("station", "time"), ds[v].transpose("site", "time").values) for v in REAL_WEATHER_VARIABLES},
                     coords={"station": ds.site.values.astype(str), "time": ds.time.values,
                             "lat": ("station", ds["lat"].values.astype(float)),
                             "lon": ("station", ds["lon"].values.astype(float)),
                             "state": ("station", ["NE"] * ds.sizes["site"])})
    return out, [f for f in str(ds.attrs.get("source", "")).split("\n") if f]


_REAL_WEATHER_LOADERS = {
    "ames_ia": _load_ames_ia, "champaign_il": _load_champaign_il, "il_counties_daymet": _load_il_counties_daymet,
    "il_counties_nldas": _load_il_counties_nldas, "us_ne1": _load_us_ne1,
}


def _fill_runs(values: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation along the last axis of interior NaN runs of at most ``max_gap`` steps, per row."""
    return _fill_short_gaps(values, max_gap)


def _whole_years(table: xr.Dataset, name: str, files: Sequence[str], max_fill_days: int) -> dict[str, np.ndarray]:
    """Cut a (station, time) table into whole 365-day years (29 February dropped) with every driver finite
    after filling runs of ≤ ``max_fill_days`` missing days; also range-checks the drivers."""
    times = np.asarray(table.time.values).astype("datetime64[D]")
    if times.size == 0:
        raise RealWeatherError(f"real-weather source {name!r} ({', '.join(files)}): no days")
    first, last = times.min().astype("datetime64[Y]"), times.max().astype("datetime64[Y]")
    days = np.arange(first.astype("datetime64[D]"), (last + 1).astype("datetime64[D]"), np.timedelta64(1, "D"))
    table = table.assign_coords(time=times).reindex(time=days)
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12  # 0 = January
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    keep_day = ~((month == 1) & (day_of_month == 29))  # drop 29 February
    raw, filled = {}, {}
    for v in REAL_WEATHER_VARIABLES:
        x = table[v].transpose("station", "time").values.astype(np.float64)
        var = get_variable(v)
        bad = np.isfinite(x) & ((x < var.valid_min) | (x > var.valid_max))
        if bad.any():
            s, t = (int(i[0]) for i in np.nonzero(bad))
            raise RealWeatherError(
                f"real-weather source {name!r} ({', '.join(files)}): {v} = {x[s, t]:g} {var.units} on {days[t]} at "
                f"{table.station.values[s]} is outside [{var.valid_min}, {var.valid_max}] {var.units}")
        raw[v] = x
        filled[v] = _fill_runs(x, max_fill_days)
    out = {k: [] for k in ("station", "year", "lat", "lon", "state", "filled_days", *REAL_WEATHER_VARIABLES)}
    for s, station in enumerate(table.station.values.astype(str)):
        for y in np.unique(years):
            sel = (years == y) & keep_day
            block = np.stack([filled[v][s, sel] for v in REAL_WEATHER_VARIABLES])
            if block.shape[1] != DAYS_PER_YEAR or not np.isfinite(block).all():
                continue
            was_missing = np.stack([~np.isfinite(raw[v][s, sel]) for v in REAL_WEATHER_VARIABLES]).any(axis=0)
            out["station"].append(station)
            out["year"].append(int(y))
            out["lat"].append(float(table["lat"].values[s]))
            out["lon"].append(float(table["lon"].values[s]))
            out["state"].append(str(table["state"].values[s]))
            out["filled_days"].append(int(was_missing.sum()))
            for i, v in enumerate(REAL_WEATHER_VARIABLES):
                out[v].append(block[i])
    if not out["station"]:
        raise RealWeatherError(f"real-weather source {name!r} ({', '.join(files)}): no whole year with every driver "
                               f"after filling gaps of ≤ {max_fill_days} days")
    return {k: np.asarray(v) for k, v in out.items()}


def real_weather_years(
    data_dir=None,
    *,
    sources: Sequence[str] = tuple(REAL_WEATHER_SOURCES),
    missing: str = "raise",
    max_fill_days: int = REAL_WEATHER_MAX_FILL_DAYS,
) -> xr.Dataset:
    """Whole years of REAL daily weather from Midwest stations, counties and the US-Ne1 tower: a pool of
    site-years for `make_corpus` with ``CorpusSpec(weather="stations")``.

    Returns a dataset on (``sample``, ``day``): one sample is one site-year, ``day`` 1–365 is the day of a
    365-day year. Variables ``tmin``, ``tmax``, ``tair`` (°C), ``sw_in`` (W m-2, 24-h mean), ``vpd`` (hPa),
    ``precip`` (mm d-1); coordinates on ``sample``: ``source`` (a key of `REAL_WEATHER_SOURCES`), ``station``
    (station or county id, unique across sources), ``state``, ``lat``, ``lon``, ``year`` (calendar year) and
    ``filled_days`` (days of the year where any driver was interpolated). Samples are ordered by source (in
    ``sources`` order), station and year, so a seeded draw is reproducible.

    How years are made, per source and station: the reader's daily series is put on a complete calendar;
    every interior run of at most ``max_fill_days`` (default 3) missing days of a driver is filled by linear
    interpolation between its neighbours (runs may cross 1 January); 29 February of leap years is dropped;
    a calendar year is kept only if all 365 remaining days of all six drivers are then finite — any other year
    (a longer gap, a year the record covers only in part, a held-out year) is skipped. How each source makes
    its drivers (e.g. tmin/tmax = tair ∓ `kgml.data.assemble.DIURNAL_RANGE`/2 where the source has no daily
    extremes: NLDAS county means and US-Ne1; weekly Daymet held daily) is in `REAL_WEATHER_SOURCES` and in the
    ``source_drivers`` attribute. The process model (`process_models.forcing.make_met`) also reads tsoil,
    co2 and patm: they are left to its defaults (tsoil = tair, 400 ppm, standard pressure), as for the
    generator's weather.

    ``missing="raise"`` (default): a source whose data folder is absent is a `RealWeatherError` naming the
    source and folder. ``missing="skip"``: use whatever is available — absent sources are skipped and listed
    in ``attrs["sources_skipped"]`` (``attrs["sources_used"]`` lists the rest); at least one must remain. A
    source that is present but unreadable, out of range or without a single whole year is always an error.
    """
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")
    unknown = [s for s in sources if s not in REAL_WEATHER_SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown real-weather source(s) {unknown or list(sources)}; choose from "
                         f"{list(REAL_WEATHER_SOURCES)}")
    root = resolve_data_dir(data_dir)
    parts, used, skipped, files_used = [], [], [], []
    for name in sources:
        src = REAL_WEATHER_SOURCES[name]
        absent = [d for d in src.datasets if not (root / d).is_dir()]
        if absent:
            if missing == "skip":
                skipped.append(f"{name} (no {', '.join(absent)} under {root})")
                continue
            raise RealWeatherError(f"real-weather source {name!r} ({src.description}) needs dataset folder(s) "
                                   f"{absent} under {root}; pass the data directory, or drop the source from the "
                                   "sources / use missing='skip' to use whatever is available")
        try:
            table, files = _REAL_WEATHER_LOADERS[name](root)
        except RealWeatherError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise RealWeatherError(f"real-weather source {name!r} ({', '.join(src.datasets)} under {root}) cannot be "
                                   f"read: {err}") from err
        part = _whole_years(table, name, files, max_fill_days)
        part["source"] = np.full(part["station"].size, name)
        parts.append(part)
        used.append(name)
        files_used += files
    if not parts:
        raise RealWeatherError(f"none of the real-weather sources {list(sources)} is available under {root}: "
                               + "; ".join(skipped))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    day = np.arange(1, DAYS_PER_YEAR + 1, dtype=np.int32)
    ds = xr.Dataset(
        {v: (("sample", "day"), cat[v].astype(np.float32), _attrs(v)) for v in REAL_WEATHER_VARIABLES},
        coords={
            "day": ("day", day, {"long_name": "day of the 365-day year (29 February dropped)"}),
            "source": ("sample", cat["source"].astype(str)),
            "station": ("sample", cat["station"].astype(str)),
            "state": ("sample", cat["state"].astype(str)),
            "lat": ("sample", cat["lat"].astype(np.float32), {"units": "degrees_north"}),
            "lon": ("sample", cat["lon"].astype(np.float32), {"units": "degrees_east"}),
            "year": ("sample", cat["year"].astype(np.int32), {"long_name": "calendar year of the weather"}),
            "filled_days": ("sample", cat["filled_days"].astype(np.int32),
                            {"long_name": f"days with a driver interpolated (gaps ≤ {max_fill_days} d)"}),
        },
        attrs={
            "title": "real daily weather site-years (kgml.synthetic.real_weather_years)",
            "sources_used": ", ".join(used),
            "sources_skipped": "; ".join(skipped),
            "source_files": "\n".join(files_used),
            "source_drivers": "\n".join(f"{n}: {REAL_WEATHER_SOURCES[n].drivers}" for n in used),
            "max_fill_days": max_fill_days,
            "method": "complete calendar; interior gaps ≤ max_fill_days linearly interpolated; 29 Feb dropped; "
                      "years with any remaining gap skipped",
        },
    )
    return ds


def _counts(values) -> str:
    names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))


def station_forcing(
    pool: xr.Dataset, state: str, n_sites: int, years: int, rng: np.random.Generator
) -> tuple[Met, dict[str, np.ndarray]]:
    """Daily `Met` (site, day) of ``n_sites`` synthetic sites of ``state`` from a `real_weather_years` pool.

    Each site draws (with ``rng``) a source uniformly among the state's sources in the pool, then a station
    uniformly among that source's stations (the site takes the station's lat/lon), then ``years`` of that
    station's site-years (without replacement while the station has enough, else with), one per simulated
    year, in the drawn order. Drawing the source first keeps the 40 weekly Daymet counties from swamping the
    Illinois pool. Returns the `Met` and the draws: ``sample`` (site, year) indices into the pool,
    ``station``, ``source``, ``lat``, ``lon`` (site,), ``weather_year`` (site, year).
    """
    mine = np.flatnonzero(pool["state"].values.astype(str) == state)
    if mine.size == 0:
        raise RealWeatherError(f"no real-weather site-years for state {state!r}: the pool has states "
                               f"{sorted(set(pool['state'].values.astype(str)))} (sources "
                               f"{pool.attrs.get('sources_used', '?')}); use weather='generator' for this state")
    source = pool["source"].values.astype(str)
    station = pool["station"].values.astype(str)
    sources = list(dict.fromkeys(source[mine]))
    samples = np.empty((n_sites, years), np.int64)
    for i in range(n_sites):
        src = sources[int(rng.integers(len(sources)))]
        stations = list(dict.fromkeys(station[mine][source[mine] == src]))
        st = stations[int(rng.integers(len(stations)))]
        idx = mine[(source[mine] == src) & (station[mine] == st)]
        samples[i] = rng.choice(idx, size=years, replace=idx.size < years)
    flat = samples.reshape(-1)
    drivers = {v: pool[v].values[flat].reshape(n_sites, years * DAYS_PER_YEAR) for v in REAL_WEATHER_VARIABLES}
    lat = pool["lat"].values[samples[:, 0]].astype(np.float32)
    lon = pool["lon"].values[samples[:, 0]].astype(np.float32)
    doy = np.tile(np.arange(1, DAYS_PER_YEAR + 1, dtype=np.float32), years)
    met = make_met(tmin=drivers["tmin"], tmax=drivers["tmax"], tair=drivers["tair"], vpd=drivers["vpd"],
                   sw_in=drivers["sw_in"], precip=drivers["precip"], doy=doy, lat=lat[:, None])
    draws = {"sample": samples, "station": station[samples[:, 0]], "source": source[samples[:, 0]], "lat": lat,
             "lon": lon, "weather_year": pool["year"].values[samples].astype(np.int32)}
    return met, draws



# ---------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusSpec:
    """What to simulate: ``sites_per_block`` sites for every state × vegetation, ``years`` years each.

    ``state_shift`` maps a state name to unconstrained offsets of parameters (a known regional shift, e.g.
    ``{"IL": {"rref_rh": 0.4}}``); ``covariate_params`` are tied to the ``soil_carbon`` site attribute with
    correlation ``covariate_corr`` (1: the attribute determines them).

    ``weather``: ``"generator"`` (default) — the stochastic generator fitted on Ames, IA, shifted per state
    (`generate_forcing`), sites spread ± ``site_spread_deg`` around the state's centre; ``"stations"`` — real
    site-years (`real_weather_years` of ``weather_sources``, ``weather_missing`` = "raise" | "skip") drawn per
    site as `station_forcing` documents, the site placed at its station (IA: Ames; IL: Champaign and the
    Daymet/NLDAS counties; NE: US-Ne1). Parameters, soil carbon and noise use the same random streams in both.
    """

    states: tuple[StateClimate, ...] = STATES
    vegetation: tuple[str, ...] = VEGETATION
    sites_per_block: int = 8
    years: int = 2
    prior_sd: float = 0.3
    varying: tuple[str, ...] | None = SITE_VARYING
    state_shift: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    covariate_params: tuple[str, ...] = ("rref_rh",)
    covariate_corr: float = 0.8
    site_spread_deg: float = 1.0
    noise: NoiseModel = NoiseModel()
    gaps: GapModel = GapModel()
    monthly_fraction: float = 0.0
    soil_respiration: str = "lloyd_taylor"
    seed: int = 0
    weather: str = "generator"
    weather_sources: tuple[str, ...] = tuple(REAL_WEATHER_SOURCES)
    weather_missing: str = "raise"


def _soil_respiration(name: str):
    table = {"lloyd_taylor": LloydTaylor, "q10": Q10Respiration, "damm": DAMM}
    if name not in table:
        raise ValueError(f"unknown soil respiration {name!r}; choose one of {sorted(table)}")
    return table[name]()


def time_coordinate(years: int, start_year: int = 2001) -> xr.DataArray:
    """Daily noleap time axis of ``years`` years from 1 January ``start_year`` (cftime)."""
    index = xr.date_range(f"{start_year:04d}-01-01", periods=DAYS_PER_YEAR * years, freq="D",
                          calendar="noleap", use_cftime=True)
    return xr.DataArray(index, dims="time", name="time")


def corpus_block(
    model: Ecosystem,
    theta: Mapping[str, jnp.ndarray],
    met: Met,
    *,
    site_ids: Sequence[str],
    lat: np.ndarray,
    lon: np.ndarray,
    state: str | Sequence[str],
    vegetation: str,
    rng: np.random.Generator,
    noise: NoiseModel = NoiseModel(),
    gaps: GapModel = GapModel(),
    static: Mapping[str, np.ndarray] | None = None,
    start_year: int = 2001,
    keep_truth: bool = True,
) -> xr.Dataset:
    """Simulate ``model`` for given per-site ``theta`` and (site, day) ``met`` (whole 365-day years from
    1 January) and wrap drivers, noisy observations, the truth and the true parameters as a Dataset."""
    n_sites, n_days = met.tair.shape
    if n_days % DAYS_PER_YEAR:
        raise ValueError(f"forcing has {n_days} days; corpora need whole {DAYS_PER_YEAR}-day years")
    years = n_days // DAYS_PER_YEAR
    out = simulate_sites(model, theta, met).outputs
    truth = {k: np.asarray(getattr(out, k)) for k in ("gpp", "reco", "nee", "rsoil", "et", "lai")}
    annual = np.asarray(out.crop_yield)[:, DAYS_PER_YEAR - 1 :: DAYS_PER_YEAR]
    if not isinstance(model, CropEcosystem):
        annual = np.full_like(annual, np.nan)
    truth["crop_yield"] = annual
    doy = np.asarray(met.doy)
    obs = observe(truth, doy, rng, noise, gaps)

    time = time_coordinate(years, start_year)
    year = np.arange(start_year, start_year + years, dtype=np.int32)
    dv: dict[str, tuple] = {}
    for name in DRIVERS:
        dv[name] = (("site", "time"), np.asarray(getattr(met, name), np.float32), _attrs(name))
    for name in FLUXES:
        dv[name] = (("site", "time"), obs[name], {**_attrs(name), "comment": "synthetic observation"})
        if keep_truth:
            dv[f"true_{name}"] = (("site", "time"), truth[name].astype(np.float32), {**_attrs(name), "comment": "noise-free"})
    dv["crop_yield"] = (("site", "year"), obs["crop_yield"], {**_attrs("crop_yield"), "comment": "synthetic observation"})
    if keep_truth:
        dv["true_crop_yield"] = (("site", "year"), annual.astype(np.float32), _attrs("crop_yield"))
        for name in ("et", "lai"):
            dv[f"true_{name}"] = (("site", "time"), truth[name].astype(np.float32), _attrs(name))
    for spec in model.parameter_specs:
        value = np.broadcast_to(np.asarray(theta[spec.name], np.float32), (n_sites,))
        dv[f"theta_{spec.name}"] = (("site",), value.copy(), {
            "units": spec.units, "long_name": f"true {spec.description or spec.name}", "reference": spec.reference,
        })
    tair = np.asarray(met.tair)
    precip = np.asarray(met.precip)
    coords = {
        "site": list(site_ids),
        "time": time,
        "year": ("year", year),
        "lat": ("site", np.asarray(lat, np.float32), {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("site", np.asarray(lon, np.float32), {"units": "degrees_east", "standard_name": "longitude"}),
        "state": ("site", np.broadcast_to(np.asarray(state, dtype=object), (n_sites,)).astype(str)),
        "vegetation": ("site", np.full(n_sites, vegetation)),
        "mat": ("site", tair.mean(axis=1).astype(np.float32), {"units": "degC", "long_name": "mean annual air temperature"}),
        "map": ("site", (precip.mean(axis=1) * DAYS_PER_YEAR).astype(np.float32),
                {"units": "mm yr-1", "long_name": "mean annual precipitation"}),
    }
    for name, values in (static or {}).items():
        coords[name] = ("site", np.asarray(values, np.float32))
    return xr.Dataset(dv, coords=coords)


_EXTRA_ATTRS = {"et": {"units": "mm d-1", "long_name": "evapotranspiration"}}


def _attrs(name: str) -> dict:
    if name in _EXTRA_ATTRS:
        return dict(_EXTRA_ATTRS[name])
    var = get_variable(name)
    return {"units": var.units, "long_name": var.long_name}


def make_corpus(
    spec: CorpusSpec = CorpusSpec(),
    *,
    progress: bool = False,
    data_dir=None,
    weather_pool: xr.Dataset | None = None,
) -> xr.Dataset:
    """Simulate every state × vegetation block of ``spec`` and concatenate the blocks along ``site``.

    With the weather generator, sites of a state are spread uniformly within ± ``site_spread_deg`` of its
    centre; with ``spec.weather == "stations"`` each site sits at the station whose real years drive it
    (`station_forcing`; the pool is ``weather_pool``, else `real_weather_years` read from ``data_dir``),
    and the corpus records the draws: coordinates ``weather_station``, ``weather_source`` (site) and
    ``weather_year`` (site, year: the calendar year of the real weather of each simulated year), and attrs
    ``weather_sources_used``/``weather_sources_skipped``/``weather_site_years``. Each site gets a
    ``soil_carbon`` attribute (standard normal) that predicts the ``covariate_params``. A share
    ``monthly_fraction`` of the sites report tower fluxes only as monthly means (``*_monthly``, dims site ×
    month); their daily tower values are removed.
    """
    if spec.weather not in ("generator", "stations"):
        raise ValueError(f"CorpusSpec.weather must be 'generator' or 'stations', got {spec.weather!r}")
    pool = None
    if spec.weather == "stations":
        if weather_pool is None:
            pool = real_weather_years(data_dir, sources=spec.weather_sources, missing=spec.weather_missing)
        else:
            pool = weather_pool.isel(sample=np.isin(weather_pool["source"].values.astype(str),
                                                    list(spec.weather_sources)))
            if pool.sizes["sample"] == 0:
                raise RealWeatherError(f"the weather pool has none of the sources {list(spec.weather_sources)}")
    key = jax.random.PRNGKey(spec.seed)
    blocks = []
    jobs = [(s, v) for s in spec.states for v in spec.vegetation]
    if progress:
        jobs = tqdm(jobs, desc="synthetic corpus", unit="block")
    sr = _soil_respiration(spec.soil_respiration)
    n = spec.sites_per_block
    for b, (state, vegetation) in enumerate(jobs):
        key, k_loc, k_met, k_par, k_cov = jax.random.split(key, 5)
        rng = np.random.default_rng([spec.seed, b])
        model = build_model(vegetation, sr)
        soil_carbon = np.asarray(jax.random.normal(k_cov, (n,)))
        if pool is None:
            loc = np.asarray(jax.random.uniform(k_loc, (2, n), minval=-1.0, maxval=1.0)) * spec.site_spread_deg
            lat, lon = state.lat + loc[0], state.lon + 1.3 * loc[1]
            met = generate_forcing(state, n, spec.years, k_met, lat=lat)
        else:
            met, draws = station_forcing(pool, state.name, n, spec.years, np.random.default_rng([spec.seed, b, 1]))
            lat, lon = draws["lat"], draws["lon"]
        names = {s.name for s in model.parameter_specs}
        theta = sample_parameters(
            model, n, k_par, prior_sd=spec.prior_sd, varying=spec.varying,
            shift={k: v for k, v in spec.state_shift.get(state.name, {}).items() if k in names},
            fixed={k: v for k, v in spec.fixed.items() if k in names},
            covariate=soil_carbon, covariate_params=[p for p in spec.covariate_params if p in names],
            covariate_corr=spec.covariate_corr,
        )
        ids = [f"{state.name}-{vegetation}-{i:03d}" for i in range(n)]
        block = corpus_block(
            model, theta, met, site_ids=ids, lat=lat, lon=lon, state=state.name, vegetation=vegetation, rng=rng,
            noise=spec.noise, gaps=spec.gaps, static={"soil_carbon": soil_carbon},
        )
        if pool is not None:
            block = block.assign_coords(
                weather_station=("site", draws["station"], {"long_name": "station or county of the real weather"}),
                weather_source=("site", draws["source"], {"long_name": "kgml.synthetic.REAL_WEATHER_SOURCES key"}),
                weather_year=(("site", "year"), draws["weather_year"],
                              {"long_name": "calendar year of the real weather driving this simulated year"}),
            )
        blocks.append(block)
    ds = xr.concat(blocks, dim="site", data_vars="all", coords="different", compat="equals", join="outer",
                   combine_attrs="override")
    if spec.monthly_fraction > 0:
        ds = _make_monthly(ds, spec.monthly_fraction, np.random.default_rng([spec.seed, 10_000]))
    ds.attrs.update(
        Conventions="CF-1.8",
        title="kgml synthetic corpus",
        source="kgml.synthetic.make_corpus (process_models)",
        corpus_spec=repr(spec),
        time_resolution="daily",
    )
    if pool is not None:
        pairs = sorted({(st, int(y)) for st, ys in zip(ds["weather_station"].values.astype(str),
                                                       ds["weather_year"].values, strict=True) for y in ys})
        ds.attrs.update(
            weather="stations: real site-years (kgml.synthetic.real_weather_years, station_forcing)",
            weather_sources_used=", ".join(dict.fromkeys(ds["weather_source"].values.astype(str))),
            weather_pool_sources=pool.attrs.get("sources_used", ""),
            weather_sources_skipped=pool.attrs.get("sources_skipped", ""),
            weather_site_years="; ".join(f"{st} {y}" for st, y in pairs),
            weather_pool_site_years=_counts(pool["source"].values),
        )
    else:
        ds.attrs["weather"] = "generator: stochastic weather fitted on Ames, IA, shifted per state"
    return ds


def monthly_means(da: xr.DataArray) -> xr.DataArray:
    """Monthly means of a daily (site, time) variable on a (site, month) axis, NaN where a month has fewer
    than half of its days observed (the FLUXNET MM convention of gap-filled data is not reproduced)."""
    month = da.time.dt.year * 12 + da.time.dt.month - 1
    grouped = da.groupby(month.rename("month"))
    mean = grouped.mean("time", skipna=True)
    frac = da.notnull().groupby(month.rename("month")).mean("time")
    return mean.where(frac >= 0.5)


def _make_monthly(ds: xr.Dataset, fraction: float, rng: np.random.Generator) -> xr.Dataset:
    monthly_sites = rng.random(ds.sizes["site"]) < fraction
    ds = ds.copy()
    for name in ("nee", "gpp", "reco"):
        mm = monthly_means(ds[name]).where(xr.DataArray(monthly_sites, dims="site"))
        ds[f"{name}_monthly"] = mm.astype(np.float32).assign_attrs(
            {**_attrs(name), "cell_methods": "time: mean (monthly)"})
        ds[name] = ds[name].where(xr.DataArray(~monthly_sites, dims="site"))
    ds = ds.assign_coords(monthly_tower=("site", monthly_sites))
    ds["month"].attrs.update(long_name="months since year 0 (year*12 + month-1)")
    return ds


def save_corpus(ds: xr.Dataset, path) -> None:
    """Write a corpus as CF netCDF atomically (`kgml.io.write_netcdf_atomic`)."""
    write_netcdf_atomic(ds, path)
