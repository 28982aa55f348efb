"""Synthetic pretraining corpora, block by block (one state × one vegetation type): parameters × forcing →
simulated fluxes → noisy, gappy observations with the true parameters, in the real-data schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm import tqdm

from kgml.io import write_netcdf_atomic
from kgml.synthetic.observation import GapModel, NoiseModel, observe
from kgml.synthetic.real_weather import (
    REAL_WEATHER_SOURCES,
    RealWeatherError,
    _counts,
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
    _attrs,
    build_model,
    generate_forcing,
    sample_parameters,
)
from process_models.ecosystem import CropEcosystem, Ecosystem
from process_models.forcing import Met
from process_models.simulate import simulate_sites
from process_models.soil_respiration import DAMM, LloydTaylor, Q10Respiration


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


def soil_respiration_model(name: str):
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
    sr = soil_respiration_model(spec.soil_respiration)
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
