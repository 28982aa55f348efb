"""Real weather for synthetic corpora: whole site-years of the Midwest stations, counties and the US-Ne1
tower (`real_weather_years`, `station_forcing`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from kgml.data.assemble import DIURNAL_RANGE, _fill_short_gaps, fluxnet_daily, il_corn
from kgml.data.formats import files_of, one_file
from kgml.data.nldas_county import read_nldas_county_weather
from kgml.data.stations import (
    ames_file,
    champaign_file,
    read_ames_ia,
    read_champaign_il,
)
from kgml.data.yields import US_STATES, read_county_locations
from kgml.paths import data_dir as resolve_data_dir
from kgml.synthetic.world import DAYS_PER_YEAR, _attrs
from kgml.variables import get_variable
from process_models.forcing import Met, make_met

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



