"""Regions as coordinates: US state, country, continent, a Köppen-like climate zone, IGBP class (and group).

A *region map* is a function ``fn(ds) -> labels`` giving one string label per site (or county); "" means
unknown. Built-in maps are registered below; users add their own with `register_region_map` (e.g. a
polygon lookup with shapely, or a table of site → basin) and then use them in splits and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import xarray as xr

from process_models.radiation import net_radiation
from process_models.water import actual_vapour_pressure, priestley_taylor_pet

__all__ = [
    "CLIMATE_ZONES",
    "IGBP_GROUPS",
    "add_regions",
    "climate_zone",
    "continent_from_country",
    "continent_from_latlon",
    "country_from_site_id",
    "get_region_map",
    "region_maps",
    "register_region_map",
    "set_region",
    "site_aridity",
    "site_climate",
    "us_state_from_fips",
    "us_state_from_latlon",
]

RegionMap = Callable[[xr.Dataset], np.ndarray]

# --- US states ----------------------------------------------------------------------------------------

#: FIPS state code → USPS abbreviation (US Census Bureau, ANSI/FIPS 5-2).
_FIPS_STATE = {
    1: "AL", 2: "AK", 4: "AZ", 5: "AR", 6: "CA", 8: "CO", 9: "CT", 10: "DE", 11: "DC", 12: "FL", 13: "GA",
    15: "HI", 16: "ID", 17: "IL", 18: "IN", 19: "IA", 20: "KS", 21: "KY", 22: "LA", 23: "ME", 24: "MD",
    25: "MA", 26: "MI", 27: "MN", 28: "MS", 29: "MO", 30: "MT", 31: "NE", 32: "NV", 33: "NH", 34: "NJ",
    35: "NM", 36: "NY", 37: "NC", 38: "ND", 39: "OH", 40: "OK", 41: "OR", 42: "PA", 44: "RI", 45: "SC",
    46: "SD", 47: "TN", 48: "TX", 49: "UT", 50: "VT", 51: "VA", 53: "WA", 54: "WV", 55: "WI", 56: "WY",
    72: "PR",
}

#: Approximate state extents (lat_min, lat_max, lon_min, lon_max), from the US Census state bounding boxes,
#: rounded; MN, MI and TX split in two boxes where one box would swallow a neighbour (WI, OK). A heuristic only.
_STATE_BOXES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "AL": ((30.14, 35.01, -88.47, -84.89),), "AZ": ((31.33, 37.00, -114.82, -109.04),),
    "AR": ((33.00, 36.50, -94.62, -89.64),), "CA": ((32.53, 42.01, -124.41, -114.13),),
    "CO": ((36.99, 41.00, -109.06, -102.04),), "CT": ((40.98, 42.05, -73.73, -71.79),),
    "DE": ((38.45, 39.84, -75.79, -75.05),), "DC": ((38.79, 39.00, -77.12, -76.91),),
    "FL": ((24.52, 31.00, -87.63, -80.03),), "GA": ((30.36, 35.00, -85.61, -80.84),),
    "ID": ((41.99, 49.00, -117.24, -111.04),), "IL": ((36.97, 42.51, -91.51, -87.50),),
    "IN": ((37.77, 41.76, -88.10, -84.78),), "IA": ((40.38, 43.50, -96.64, -90.14),),
    "KS": ((36.99, 40.00, -102.05, -94.59),), "KY": ((36.50, 39.15, -89.57, -81.96),),
    "LA": ((28.93, 33.02, -94.04, -88.82),), "ME": ((43.06, 47.46, -71.08, -66.95),),
    "MD": ((37.91, 39.72, -79.49, -75.05),), "MA": ((41.24, 42.89, -73.51, -69.93),),
    "MI": ((41.70, 45.80, -86.80, -82.41), (45.10, 47.50, -90.42, -83.40)),
    "MN": ((43.50, 46.70, -97.24, -92.30), (46.70, 49.38, -97.24, -89.49)),
    "MS": ((30.17, 35.00, -91.66, -88.10),), "MO": ((35.99, 40.61, -95.77, -89.10),),
    "MT": ((44.36, 49.00, -116.05, -104.04),), "NE": ((40.00, 43.00, -104.05, -95.31),),
    "NV": ((35.00, 42.00, -120.01, -114.04),), "NH": ((42.70, 45.31, -72.56, -70.70),),
    "NJ": ((38.93, 41.36, -75.56, -73.89),), "NM": ((31.33, 37.00, -109.05, -103.00),),
    "NY": ((40.50, 45.02, -79.76, -71.86),), "NC": ((33.84, 36.59, -84.32, -75.46),),
    "ND": ((45.94, 49.00, -104.05, -96.55),), "OH": ((38.40, 41.98, -84.82, -80.52),),
    "OK": ((33.62, 37.00, -103.00, -94.43),), "OR": ((41.99, 46.29, -124.57, -116.46),),
    "PA": ((39.72, 42.27, -80.52, -74.69),), "RI": ((41.15, 42.02, -71.91, -71.12),),
    "SC": ((32.03, 35.22, -83.35, -78.54),), "SD": ((42.48, 45.95, -104.06, -96.44),),
    "TN": ((34.98, 36.68, -90.31, -81.65),),
    "TX": ((25.84, 34.00, -106.65, -93.51), (34.00, 36.50, -103.04, -100.00)),
    "UT": ((37.00, 42.00, -114.05, -109.04),), "VT": ((42.73, 45.02, -73.44, -71.46),),
    "VA": ((36.54, 39.47, -83.68, -75.24),), "WA": ((45.54, 49.00, -124.85, -116.92),),
    "WV": ((37.20, 40.64, -82.64, -77.72),), "WI": ((42.49, 47.31, -92.89, -86.25),),
    "WY": ((40.99, 45.01, -111.06, -104.05),), "AK": ((51.20, 71.50, -179.20, -129.90),),
    "HI": ((18.90, 22.30, -160.30, -154.80),), "PR": ((17.88, 18.52, -67.95, -65.22),),
}


def us_state_from_fips(fips) -> np.ndarray:
    """USPS state code from a state (1–2 digit) or county (4–5 digit) FIPS code; "" when unknown."""
    codes = np.atleast_1d(np.asarray(fips))
    out = []
    for code in codes:
        try:
            value = int(str(code).strip())
        except ValueError:
            out.append("")
            continue
        state = value // 1000 if value >= 1000 else value
        out.append(_FIPS_STATE.get(state, ""))
    return np.array(out, dtype=str)


def us_state_from_latlon(lat, lon) -> np.ndarray:
    """US state from coordinates by approximate bounding boxes ("" outside the US).

    Where boxes overlap the state whose box contains the point most deeply wins. Exact near borders only
    to ~0.5°; use FIPS codes or register a polygon-based region map when that matters.
    """
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    out = []
    for y, x in zip(lat, lon, strict=True):
        best, depth = "", -1.0
        if np.isfinite(y) and np.isfinite(x):
            for state, boxes in _STATE_BOXES.items():
                for y0, y1, x0, x1 in boxes:
                    if y0 <= y <= y1 and x0 <= x <= x1:
                        d = min(y - y0, y1 - y, x - x0, x1 - x)
                        if d > depth:
                            best, depth = state, d
        out.append(best)
    return np.array(out, dtype=str)


# --- countries and continents ------------------------------------------------------------------------

_CONTINENT_COUNTRIES = {
    "Africa": "BW BF CD CG CI CM DZ EG ET GA GH KE MA MG ML MW MZ NA NE NG RW SD SN SS TN TZ UG ZA ZM ZW",
    "Asia": "AE BD BT CN ID IL IN IR JP KG KH KR KZ LA LK MM MN MY NP PH PK SA SG TH TJ TM TR TW UZ VN",
    "Europe": "AT BE BG BY CH CY CZ DE DK EE ES FI FR GB GR HR HU IE IS IT LT LU LV NL NO PL PT RO RS RU SE SI SJ SK UA UK",
    "North America": "BZ CA CR CU DO GL GT HN HT JM MX NI PA PR SV US",
    "South America": "AR BO BR CL CO EC GF GY PE PY SR UY VE",
    "Oceania": "AU FJ NC NZ PG SB VU",
    "Antarctica": "AQ",
}
_COUNTRY_CONTINENT = {c: cont for cont, codes in _CONTINENT_COUNTRIES.items() for c in codes.split()}

#: Coarse continent boxes (lat_min, lat_max, lon_min, lon_max), checked in order; first match wins.
_CONTINENT_BOXES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("Antarctica", (-90.0, -60.0, -180.0, 180.0)),
    ("Oceania", (-50.0, -10.0, 110.0, 180.0)),
    ("Oceania", (-50.0, 0.0, 140.0, 180.0)),
    ("South America", (-56.0, 13.0, -82.0, -34.0)),
    ("North America", (7.0, 84.0, -170.0, -52.0)),
    ("North America", (59.0, 84.0, -75.0, -10.0)),  # Greenland
    ("Africa", (-35.0, 37.5, -18.0, 52.0)),
    ("Europe", (35.0, 72.0, -25.0, 40.0)),
    ("Europe", (72.0, 82.0, 0.0, 35.0)),  # Svalbard
    ("Asia", (-11.0, 82.0, 25.0, 180.0)),
)


def country_from_site_id(site_ids) -> np.ndarray:
    """ISO country code from FLUXNET-style site IDs (``US-Ne1`` → ``US``); "" when not in that form."""
    ids = np.atleast_1d(np.asarray(site_ids, dtype=str))
    return np.array([s[:2] if len(s) >= 3 and s[2] == "-" and s[:2].isalpha() else "" for s in ids], dtype=str)


def continent_from_country(codes) -> np.ndarray:
    """Continent name from ISO alpha-2 country codes ("" when unknown)."""
    return np.array([_COUNTRY_CONTINENT.get(str(c).upper(), "") for c in np.atleast_1d(codes)], dtype=str)


def continent_from_latlon(lat, lon) -> np.ndarray:
    """Continent from coordinates by coarse boxes (approximate along the Europe/Asia/Africa seams)."""
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    out = []
    for y, x in zip(lat, lon, strict=True):
        label = ""
        if np.isfinite(y) and np.isfinite(x):
            for name, (y0, y1, x0, x1) in _CONTINENT_BOXES:
                if y0 <= y <= y1 and x0 <= x <= x1:
                    label = name
                    break
        out.append(label)
    return np.array(out, dtype=str)


# --- climate ------------------------------------------------------------------------------------------

#: Köppen-like zones from mean annual temperature (MAT, °C) and precipitation (MAP, mm yr-1).
CLIMATE_ZONES = {
    "A": "tropical",
    "B": "arid",
    "C": "temperate",
    "D": "continental/boreal",
    "E": "polar/alpine",
}


def climate_zone(mat, map_mm) -> np.ndarray:
    """Köppen-like zone letter from MAT (°C) and MAP (mm yr-1); "" when either is missing.

    B (arid) when MAP < 10·P_th with P_th = 2·MAT + 14 mm (Kottek et al. 2006, Meteorol. Z. 15:259, the
    threshold for evenly distributed precipitation); otherwise by MAT alone, as a stand-in for the monthly
    Köppen rules: A ≥ 20 °C, C ≥ 8 °C, D ≥ −6 °C, else E. Monthly data would be needed for true Köppen.
    """
    mat = np.atleast_1d(np.asarray(mat, dtype=float))
    map_mm = np.atleast_1d(np.asarray(map_mm, dtype=float))
    mat, map_mm = np.broadcast_arrays(mat, map_mm)
    out = np.full(mat.shape, "", dtype="<U1")
    ok = np.isfinite(mat) & np.isfinite(map_mm)
    threshold = 10.0 * np.maximum(2.0 * mat + 14.0, 0.0)
    arid = ok & (map_mm < threshold)
    out[ok & ~arid & (mat >= 20.0)] = "A"
    out[ok & ~arid & (mat >= 8.0) & (mat < 20.0)] = "C"
    out[ok & ~arid & (mat >= -6.0) & (mat < 8.0)] = "D"
    out[ok & ~arid & (mat < -6.0)] = "E"
    out[arid] = "B"
    return out


def _climatological_mean(da: xr.DataArray, annual: bool = False) -> np.ndarray:
    """Per-site mean over ``time``: the mean of the 12 calendar-month climatologies where every month has data
    (so a record of summers only does not look warm), else (and for ``annual`` series) the plain mean."""
    plain = da.mean("time", skipna=True).values
    if annual:
        return plain
    clim = da.groupby("time.month").mean("time", skipna=True)
    full = clim.count("month").values == 12
    return np.where(full, clim.mean("month").values, plain)


def site_climate(ds: xr.Dataset, dim: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(MAT °C, MAP mm yr-1) per site: from ``mat``/``map`` coordinates where given, else from the data.

    From data, the mean over the 12 calendar-month climatologies is used when every month has data (so a
    record of summers only does not look warm), else the plain mean; MAP = mean precip (mm d-1) × 365.25.
    """
    dim = dim or _unit_dim(ds)
    n = ds.sizes[dim]

    def from_data(name: str, scale: float) -> np.ndarray:
        if name not in ds or "time" not in ds[name].dims:
            return np.full(n, np.nan)
        return _climatological_mean(ds[name], annual=ds.attrs.get("time_resolution", "") == "YY") * scale

    mat = from_data("tair", 1.0)
    map_mm = from_data("precip", 365.25)
    if "mat" in ds.coords:
        given = np.asarray(ds["mat"].values, dtype=float)
        mat = np.where(np.isfinite(given), given, mat)
    if "map" in ds.coords:
        given = np.asarray(ds["map"].values, dtype=float)
        map_mm = np.where(np.isfinite(given), given, map_mm)
    return np.asarray(mat, dtype=float), np.asarray(map_mm, dtype=float)


#: IGBP classes grouped into broad vegetation types.
IGBP_GROUPS = {
    "ENF": "forest", "EBF": "forest", "DNF": "forest", "DBF": "forest", "MF": "forest",
    "CSH": "shrubland", "OSH": "shrubland", "WSA": "savanna", "SAV": "savanna", "GRA": "grassland",
    "CRO": "cropland", "CVM": "cropland", "WET": "wetland", "SNO": "other", "BSV": "other", "URB": "other",
    "WAT": "other",
}


# --- registry -----------------------------------------------------------------------------------------


#: Priestley–Taylor coefficient and surface albedo of the reference PET in `site_aridity` (a well-watered
#: grass reference: α = 1.26, Priestley & Taylor 1972; albedo 0.23, FAO-56 eq. 38).
REFERENCE_PT_ALPHA = 1.26
REFERENCE_ALBEDO = 0.23


def site_aridity(ds: xr.Dataset, dim: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(aridity index P/PET, reference PET mm yr-1) per site: the UNEP aridity index (UNEP 1992, World Atlas of
    Desertification; hyper-arid < 0.05 ≤ arid < 0.2 ≤ semi-arid < 0.5 ≤ dry sub-humid < 0.65 ≤ humid), MAP from
    `site_climate` over the annual Priestley–Taylor PET (`process_models.water.priestley_taylor_pet`, α =
    `REFERENCE_PT_ALPHA`, net radiation by FAO-56 eqs. 38–40 at albedo `REFERENCE_ALBEDO`) of the site's own
    daily drivers (tair, tmin, tmax, sw_in, vpd, lat, doy; patm where given, else 101.325 kPa), averaged like MAT
    (the mean of the 12 calendar-month climatologies where every month has data). Unlike MAP alone it tells a
    cold, dry-air tundra (little rain, less evaporative demand) from a hot desert. NaN where a driver is missing
    for the whole record or PET is not positive."""
    dim = dim or _unit_dim(ds)
    n = ds.sizes[dim]
    _, map_mm = site_climate(ds, dim)
    need = ("tair", "tmin", "tmax", "sw_in", "vpd")
    if any(v not in ds or "time" not in ds[v].dims for v in need) or "lat" not in ds.coords:
        return np.full(n, np.nan), np.full(n, np.nan)
    get = {v: ds[v].transpose(dim, "time").values.astype(np.float64) for v in need}
    lat = np.asarray(ds["lat"].values, dtype=np.float64)[:, None]
    times = ds["time"].values
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(np.int64) + 1
    patm = ds["patm"].transpose(dim, "time").values.astype(np.float64) if "patm" in ds else 101325.0
    ea = actual_vapour_pressure(get["tair"], get["vpd"])  # kPa, from VPD in hPa
    rn = net_radiation(get["sw_in"], get["tmin"], get["tmax"], ea, lat, doy[None, :].astype(np.float64),
                       REFERENCE_ALBEDO)
    pet = np.asarray(priestley_taylor_pet(get["tair"], rn, np.where(np.isfinite(patm), patm, 101325.0),
                                          REFERENCE_PT_ALPHA), dtype=np.float64)
    pet = np.where(np.isfinite(get["tair"]) & np.isfinite(get["sw_in"]) & np.isfinite(get["vpd"]), pet, np.nan)
    pet_yr = _climatological_mean(xr.DataArray(pet, dims=(dim, "time"), coords={"time": times})) * 365.25
    with np.errstate(invalid="ignore", divide="ignore"):
        ai = np.where(np.isfinite(pet_yr) & (pet_yr > 0), map_mm / pet_yr, np.nan)
    return ai, np.where(pet_yr > 0, pet_yr, np.nan)


def _unit_dim(ds: xr.Dataset) -> str:
    for dim in ("site", "county", "state"):
        if dim in ds.dims:
            return dim
    raise ValueError(f"no site/county/state dimension in dataset (dims: {list(ds.dims)})")


def _coord(ds: xr.Dataset, names: Sequence[str]) -> np.ndarray | None:
    for name in names:
        if name in ds.coords or name in ds.data_vars:
            return np.asarray(ds[name].values)
    return None


def _us_state(ds: xr.Dataset) -> np.ndarray:
    dim = _unit_dim(ds)
    for name in ("state_fips", "fips", "county_fips"):
        codes = _coord(ds, [name])
        if codes is not None:
            return us_state_from_fips(codes)
    if dim in ("county", "state") and np.issubdtype(ds[dim].dtype, np.integer):
        return us_state_from_fips(ds[dim].values)
    lat, lon = _coord(ds, ["lat"]), _coord(ds, ["lon"])
    if lat is None or lon is None:
        return np.full(ds.sizes[dim], "", dtype=str)
    out = us_state_from_latlon(lat, lon)
    ids = ds[dim].values.astype(str)
    country = country_from_site_id(ids)
    # a FLUXNET ID outside the US (CA-, MX-) never gets a US state from an overlapping box
    return np.where((country == "") | (country == "US"), out, "")


def _continent(ds: xr.Dataset) -> np.ndarray:
    dim = _unit_dim(ds)
    by_id = continent_from_country(country_from_site_id(ds[dim].values.astype(str)))
    lat, lon = _coord(ds, ["lat"]), _coord(ds, ["lon"])
    by_box = continent_from_latlon(lat, lon) if lat is not None and lon is not None else np.full(by_id.shape, "")
    return np.where(by_id != "", by_id, by_box)


def _climate(ds: xr.Dataset) -> np.ndarray:
    return climate_zone(*site_climate(ds))


def _igbp(ds: xr.Dataset) -> np.ndarray:
    values = _coord(ds, ["igbp"])
    return np.full(ds.sizes[_unit_dim(ds)], "", dtype=str) if values is None else values.astype(str)


def _igbp_group(ds: xr.Dataset) -> np.ndarray:
    return np.array([IGBP_GROUPS.get(c, "") for c in _igbp(ds)], dtype=str)


def _country(ds: xr.Dataset) -> np.ndarray:
    return country_from_site_id(ds[_unit_dim(ds)].values.astype(str))


_REGION_MAPS: dict[str, RegionMap] = {
    "us_state": _us_state,
    "country": _country,
    "continent": _continent,
    "climate_zone": _climate,
    "igbp": _igbp,
    "igbp_group": _igbp_group,
}


def register_region_map(name: str, fn: RegionMap, *, overwrite: bool = False) -> None:
    """Register ``fn(ds) -> labels`` (one string per site/county, "" unknown) under ``name``."""
    if not callable(fn):
        raise TypeError("a region map must be callable: fn(ds) -> array of labels")
    if name in _REGION_MAPS and not overwrite:
        raise ValueError(f"region map {name!r} already registered; pass overwrite=True to replace it")
    _REGION_MAPS[name] = fn


def region_maps() -> tuple[str, ...]:
    """Names of the registered region maps."""
    return tuple(_REGION_MAPS)


def get_region_map(name: str) -> RegionMap:
    try:
        return _REGION_MAPS[name]
    except KeyError:
        raise KeyError(f"unknown region map {name!r}; registered: {sorted(_REGION_MAPS)}") from None


def _labels(ds: xr.Dataset, name: str) -> np.ndarray:
    dim = _unit_dim(ds)
    labels = np.asarray(get_region_map(name)(ds)).astype(str)
    if labels.shape != (ds.sizes[dim],):
        raise ValueError(f"region map {name!r} returned shape {labels.shape}, expected ({ds.sizes[dim]},)")
    return labels


def add_regions(ds: xr.Dataset, names: Iterable[str] = ("continent", "climate_zone", "igbp_group")) -> xr.Dataset:
    """Add one coordinate per region map (named after the map) on the site/county dimension."""
    dim = _unit_dim(ds)
    return ds.assign_coords({name: (dim, _labels(ds, name), {"region_map": name}) for name in names})


def set_region(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Set the ``region`` coordinate (used by splits and evaluation) from the region map ``name``."""
    dim = _unit_dim(ds)
    return ds.assign_coords(region=(dim, _labels(ds, name), {"region_map": name}))
