"""Crop yield readers: USDA NASS county and state tables, the Illinois county corn table with weekly Daymet
weather (Khaki et al. 2020), Thompson's state yield-and-weather table and Wallace's 1925 Iowa counties.

Yields come as bushels per acre; ``crop_yield`` is t ha-1 at the crop's market moisture, converted with the
crop's own bushel weight (corn 56 lb at 15.5 %, soybean 60 lb at 13 %) from the exact pound and acre.
Outputs are on (county, year) with the county's 5-digit FIPS code as label, or (state, year) with the
two-letter postal code; weekly weather is (county, year, week).
"""

from __future__ import annotations

import calendar
import io
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of, is_gzip, one_file, open_bytes
from kgml.data.schema import (
    DataValidationError,
    DataWarning,
    check_field_counts,
    register_layout,
    validate_dataset,
)
from kgml.variables import convert_units, get_variable
from process_models.constants import HOURS_PER_DAY, HPA_PER_KPA, PA_PER_HPA
from process_models.forcing import saturation_vapour_pressure
from process_models.radiation import daylength

__all__ = [
    "ACRE_M2",
    "BUSHEL_WEIGHT_LB",
    "IL_COUNTY_FIPS",
    "KG_PER_LB",
    "STANDARD_MOISTURE",
    "US_STATES",
    "bushels_per_acre_to_t_ha",
    "county_name",
    "nass_state_crop",
    "read_khaki_corn",
    "read_nass_county",
    "read_county_locations",
    "read_nass_state",
    "read_thompson",
    "read_wallace_iowa",
    "read_you2017_soybean",
    "state_abbreviation",
    "you2017_tables",
]

# --- unit constants --------------------------------------------------------------------------------------

#: Kilograms per avoirdupois pound (kg lb-1), exact: International Yard and Pound Agreement (1959).
KG_PER_LB = 0.45359237
#: Square metres per international acre (m2 ac-1), exact: 1 acre = 43,560 ft² × (0.3048 m ft-1)² (1959).
ACRE_M2 = 4046.8564224
#: Square metres per hectare (m2 ha-1).
M2_PER_HA = 1.0e4
#: Kilograms per tonne (kg t-1).
KG_PER_T = 1.0e3
#: Millimetres per inch (mm in-1), exact (1959 agreement).
MM_PER_INCH = 25.4
#: Hectares per acre (ha ac-1).
HA_PER_ACRE = ACRE_M2 / M2_PER_HA

#: Legal bushel weights (lb bu-1) used by USDA NASS. USDA (1992) Weights, Measures, and Conversion Factors for
#: Agricultural Commodities and Their Products, Agricultural Handbook 697, Table 1.
BUSHEL_WEIGHT_LB: dict[str, float] = {"corn": 56.0, "soybean": 60.0, "wheat": 60.0, "sorghum": 56.0, "barley": 48.0, "oats": 32.0}
#: Market moisture (fraction, wet basis) at which NASS yields are reported: corn 15.5 %, soybean 13 %, wheat
#: 13.5 % (USDA AMS grain standards / ASABE D241.4; USDA Agricultural Handbook 697).
STANDARD_MOISTURE: dict[str, float] = {"corn": 0.155, "soybean": 0.13, "wheat": 0.135, "sorghum": 0.14}


def bushels_per_acre_to_t_ha(crop: str) -> float:
    """Factor from bu ac-1 to t ha-1 for ``crop``: lb bu-1 × kg lb-1 ÷ kg t-1 ÷ ha ac-1.

    Corn (56 lb): 0.062767; soybean (60 lb): 0.067251. The moisture basis is the crop's market moisture.
    """
    key = crop.lower()
    if key not in BUSHEL_WEIGHT_LB:
        raise ValueError(f"no bushel weight for crop {crop!r}; known: {sorted(BUSHEL_WEIGHT_LB)}")
    return BUSHEL_WEIGHT_LB[key] * KG_PER_LB / KG_PER_T / HA_PER_ACRE


#: Above any recorded county or state yield in bu ac-1 (US county corn records are ≈ 250 bu ac-1; NASS).
MAX_PLAUSIBLE_BU_AC = 400.0


# --- places ----------------------------------------------------------------------------------------------

#: US states (and DC): name → (postal code, state FIPS code). US Census Bureau, FIPS PUB 5-2 / INCITS 38.
US_STATES: dict[str, tuple[str, int]] = {
    "Alabama": ("AL", 1), "Alaska": ("AK", 2), "Arizona": ("AZ", 4), "Arkansas": ("AR", 5),
    "California": ("CA", 6), "Colorado": ("CO", 8), "Connecticut": ("CT", 9), "Delaware": ("DE", 10),
    "District of Columbia": ("DC", 11), "Florida": ("FL", 12), "Georgia": ("GA", 13), "Hawaii": ("HI", 15),
    "Idaho": ("ID", 16), "Illinois": ("IL", 17), "Indiana": ("IN", 18), "Iowa": ("IA", 19), "Kansas": ("KS", 20),
    "Kentucky": ("KY", 21), "Louisiana": ("LA", 22), "Maine": ("ME", 23), "Maryland": ("MD", 24),
    "Massachusetts": ("MA", 25), "Michigan": ("MI", 26), "Minnesota": ("MN", 27), "Mississippi": ("MS", 28),
    "Missouri": ("MO", 29), "Montana": ("MT", 30), "Nebraska": ("NE", 31), "Nevada": ("NV", 32),
    "New Hampshire": ("NH", 33), "New Jersey": ("NJ", 34), "New Mexico": ("NM", 35), "New York": ("NY", 36),
    "North Carolina": ("NC", 37), "North Dakota": ("ND", 38), "Ohio": ("OH", 39), "Oklahoma": ("OK", 40),
    "Oregon": ("OR", 41), "Pennsylvania": ("PA", 42), "Rhode Island": ("RI", 44), "South Carolina": ("SC", 45),
    "South Dakota": ("SD", 46), "Tennessee": ("TN", 47), "Texas": ("TX", 48), "Utah": ("UT", 49),
    "Vermont": ("VT", 50), "Virginia": ("VA", 51), "Washington": ("WA", 53), "West Virginia": ("WV", 54),
    "Wisconsin": ("WI", 55), "Wyoming": ("WY", 56),
}
_STATE_BY_KEY = {name.lower(): (abbr, fips) for name, (abbr, fips) in US_STATES.items()}
_STATE_BY_KEY.update({abbr.lower(): (abbr, fips) for abbr, fips in US_STATES.values()})
_STATE_BY_FIPS = {fips: abbr for abbr, fips in US_STATES.values()}

#: Illinois county name (lower case) → county FIPS code (3 digits; GEOID = 17000 + code). US Census Bureau.
IL_COUNTY_FIPS: dict[str, int] = {
    "adams": 1, "alexander": 3, "bond": 5, "boone": 7, "brown": 9, "bureau": 11, "calhoun": 13, "carroll": 15,
    "cass": 17, "champaign": 19, "christian": 21, "clark": 23, "clay": 25, "clinton": 27, "coles": 29,
    "cook": 31, "crawford": 33, "cumberland": 35, "dekalb": 37, "de witt": 39, "douglas": 41, "dupage": 43,
    "edgar": 45, "edwards": 47, "effingham": 49, "fayette": 51, "ford": 53, "franklin": 55, "fulton": 57,
    "gallatin": 59, "greene": 61, "grundy": 63, "hamilton": 65, "hancock": 67, "hardin": 69, "henderson": 71,
    "henry": 73, "iroquois": 75, "jackson": 77, "jasper": 79, "jefferson": 81, "jersey": 83, "jo daviess": 85,
    "johnson": 87, "kane": 89, "kankakee": 91, "kendall": 93, "knox": 95, "lake": 97, "lasalle": 99,
    "lawrence": 101, "lee": 103, "livingston": 105, "logan": 107, "mcdonough": 109, "mchenry": 111,
    "mclean": 113, "macon": 115, "macoupin": 117, "madison": 119, "marion": 121, "marshall": 123, "mason": 125,
    "massac": 127, "menard": 129, "mercer": 131, "monroe": 133, "montgomery": 135, "morgan": 137,
    "moultrie": 139, "ogle": 141, "peoria": 143, "perry": 145, "piatt": 147, "pike": 149, "pope": 151,
    "pulaski": 153, "putnam": 155, "randolph": 157, "richland": 159, "rock island": 161, "st. clair": 163,
    "saline": 165, "sangamon": 167, "schuyler": 169, "scott": 171, "shelby": 173, "stark": 175,
    "stephenson": 177, "tazewell": 179, "union": 181, "vermilion": 183, "wabash": 185, "warren": 187,
    "washington": 189, "wayne": 191, "white": 193, "whiteside": 195, "will": 197, "williamson": 199,
    "winnebago": 201, "woodford": 203,
}
_COUNTY_FIPS_BY_STATE: dict[str, dict[str, int]] = {"IL": IL_COUNTY_FIPS}

register_layout("county_year_week", ("county", "year", "week"))
register_layout("county_year_week_planting", ("county", "year", "week", "planting_week"))
register_layout("state_year_month", ("state", "year", "month"))


def state_abbreviation(name: str, source: object = None) -> str:
    """Two-letter postal code of a US state given by name (any case) or code; unknown names are an error."""
    key = " ".join(str(name).replace('"', "").split()).lower()
    if key not in _STATE_BY_KEY:
        raise DataValidationError(source, "state", f"unknown US state {name!r}")
    return _STATE_BY_KEY[key][0]


def _county_key(name: str) -> str:
    key = " ".join(str(name).lower().replace("-", " ").split())
    return {"de kalb": "dekalb", "du page": "dupage", "la salle": "lasalle", "saint clair": "st. clair",
            "st clair": "st. clair", "dewitt": "de witt"}.get(key, key)


# --- shared checks ---------------------------------------------------------------------------------------


def _check_last_row(path: Path, n_columns: int, sep: str) -> list[str]:
    """A text table cut short (a copy or download that stopped) ends without a newline: its last row with
    fewer fields than the header is an error (pandas would fill them with NaN, and a FIPS code cut in two
    makes a phantom county); a complete-looking last row is kept with a warning (its last value may be cut)."""
    if not path.is_file() or is_gzip(path):
        return []
    size = path.stat().st_size
    if size == 0:
        return []
    with path.open("rb") as fh:
        fh.seek(max(size - 4096, 0))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")):
        return []
    last = tail.splitlines()[-1].decode("utf-8", errors="replace")
    fields = len(last.split(sep))
    if fields < n_columns:
        raise DataValidationError(path, None, f"the last row {last!r} has {fields} of {n_columns} fields and the file "
                                  "does not end with a newline: the file is truncated; download or copy it again")
    message = (f"{path}: the file does not end with a newline: its last row {last!r} may be cut short (truncated "
               "file?)")
    warnings.warn(message, DataWarning, stacklevel=3)
    return [message]


def _read_table(path: Path, sep: str = ",", required: Sequence[str] = ()) -> pd.DataFrame:
    if not path.exists():
        raise DataValidationError(path, None, "file not found")
    notes = []
    try:
        if not is_gzip(path):  # gzip by its magic bytes, whatever the file is called
            raw = path.read_bytes()
            header = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
            notes = _check_last_row(path, len(header.split(sep)), sep)
            check_field_counts(path, raw, sep)
        else:
            raw = open_bytes(path)
        df = pd.read_csv(io.BytesIO(raw), sep=sep, low_memory=False)
    except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as err:
        if isinstance(err, DataValidationError):
            raise
        raise DataValidationError(path, None, f"cannot parse: {err}") from err
    df.columns = [str(c).strip().strip('"') for c in df.columns]
    df.attrs["warnings"] = notes
    for column in required:
        if column not in df.columns:
            raise DataValidationError(path, column, f"required column missing; found {list(df.columns)[:12]}")
    if df.empty:
        raise DataValidationError(path, None, "no data rows")
    return df


def _numeric_column(df: pd.DataFrame, column: str, path: Path, *, sentinels=(-9999.0, -999.0, -99.0)) -> np.ndarray:
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
    text = raw.astype(str).str.strip()
    bad = np.isnan(values) & raw.notna().to_numpy() & ~text.isin(["", "NA", "nan", "NaN", "."]).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataValidationError(path, column, f"row {row + 2}: {raw.iloc[row]!r} is not a number")
    values[np.isin(values, sentinels)] = np.nan
    return values


#: A yield table whose median is below this is not in bu ac-1: the lowest US national means on record are
#: ~11 bu ac-1 (soybean, 1924) and ~18 bu ac-1 (corn, 1930s; USDA NASS Quick Stats), while t ha-1 columns have
#: medians of 2–4 (soybean) and 5–11 (corn).
MIN_PLAUSIBLE_MEDIAN_BU_AC = 15.0


def _yield_variable(values_bu_ac: np.ndarray, crop: str, dims: tuple[str, ...], path: Path, column: str) -> xr.DataArray:
    """bu ac-1 → ``crop_yield`` t ha-1; negative yields are errors, all-missing too."""
    finite = values_bu_ac[np.isfinite(values_bu_ac)]
    if finite.size == 0:
        raise DataValidationError(path, column, "all yields are missing")
    if (finite < 0).any():
        raise DataValidationError(path, column, f"negative yields (min {finite.min():.4g} bu ac-1)")
    if np.median(finite) < MIN_PLAUSIBLE_MEDIAN_BU_AC:
        raise DataValidationError(
            path, column, f"median yield {np.median(finite):.4g} 'bu ac-1' is below any US average on record (corn "
            f"and soybean national means never fell below ~11 bu ac-1): is the column in t ha-1? (× 1/"
            f"{bushels_per_acre_to_t_ha(crop):.5f} gives bu ac-1)")
    if np.median(finite) > MAX_PLAUSIBLE_BU_AC:
        raise DataValidationError(
            path, column, f"median yield {np.median(finite):.4g} 'bu ac-1' is beyond any recorded yield: kg ha-1 or lb ac-1?"
        )
    factor = bushels_per_acre_to_t_ha(crop)
    moisture = STANDARD_MOISTURE.get(crop.lower())
    basis = f"{moisture:.1%} moisture (market standard)" if moisture is not None else "as reported"
    return xr.DataArray(
        (values_bu_ac * factor).astype("float32"),
        dims=dims,
        attrs={
            **get_variable("crop_yield").attrs(),
            "moisture_basis": basis,
            "source_units": "bu ac-1",
            "conversion_factor": factor,
            "moisture_fraction": moisture if moisture is not None else np.nan,
            "comment": f"{crop} {column} (bu ac-1) × {factor:.6f} ({BUSHEL_WEIGHT_LB[crop.lower()]:g} lb bu-1)",
        },
    )


def _dense(index_a: np.ndarray, index_b: np.ndarray, values: np.ndarray, a_labels, b_labels) -> np.ndarray:
    out = np.full((len(a_labels), len(b_labels)), np.nan)
    ia = pd.Index(a_labels).get_indexer(index_a)
    ib = pd.Index(b_labels).get_indexer(index_b)
    out[ia, ib] = values
    return out


def _check_unique(df: pd.DataFrame, keys: list[str], path: Path) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise DataValidationError(path, keys[-1], f"{int(dup.sum())} rows repeat the same {'/'.join(keys)} (first {first})")


# --- NASS county -----------------------------------------------------------------------------------------


def read_county_locations(path: str | Path) -> pd.DataFrame:
    """A county table ``state_fips, county_fips, lon, lat`` (as ``county_locations.csv`` of the You et al. 2017
    folder) → DataFrame indexed by the 5-digit FIPS GEOID with ``lat`` and ``lon`` (degrees). Repeated counties
    and non-numeric cells are errors naming the file."""
    path = Path(path)
    loc = _read_table(path, required=("state_fips", "county_fips", "lon", "lat"))
    geoid = _numeric_column(loc, "state_fips", path) * 1000 + _numeric_column(loc, "county_fips", path)
    if np.isnan(geoid).any():
        raise DataValidationError(path, "county_fips", "rows without state or county FIPS code")
    out = pd.DataFrame({"county": geoid.astype(np.int64), "lat": _numeric_column(loc, "lat", path),
                        "lon": _numeric_column(loc, "lon", path)})
    _check_unique(out, ["county"], path)
    return out.set_index("county")


def county_name(geoid: int) -> str:
    """County name (lower case, as in `IL_COUNTY_FIPS`) of a FIPS GEOID, or "" when not in the name tables."""
    state = _STATE_BY_FIPS.get(int(geoid) // 1000, "")
    table = _COUNTY_FIPS_BY_STATE.get(state, {})
    return next((name for name, code in table.items() if code == int(geoid) % 1000), "")


def read_nass_county(
    path: str | Path,
    crop: str,
    *,
    locations: str | Path | None = None,
    yield_column: str | None = None,
    zero_is_missing: bool = True,
    validate: bool = True,
) -> xr.Dataset:
    """NASS county yields (``year, state_fips, county_fips, <yield bu/ac>``) → ``crop_yield`` on (county, year).

    ``county`` is the 5-digit FIPS GEOID (state × 1000 + county); coordinates ``us_state`` (postal code),
    ``state_fips``, ``county_fips`` and, given a ``locations`` table (``state_fips, county_fips, lon, lat``),
    ``lat``/``lon``. The yield column defaults to the one whose name contains "yield". A yield of exactly 0
    is a placeholder, not a harvest, in the compilations we read: masked unless ``zero_is_missing=False``.
    Repeated county-years are an error.
    """
    path = Path(path)
    df = _read_table(path, required=("year", "state_fips", "county_fips"))
    if yield_column is None:
        candidates = [c for c in df.columns if "yield" in c.lower()]
        if len(candidates) != 1:
            raise DataValidationError(path, "yield", f"cannot tell the yield column among {list(df.columns)}")
        yield_column = candidates[0]
    elif yield_column not in df.columns:
        raise DataValidationError(path, yield_column, f"column missing; found {list(df.columns)}")
    years = _numeric_column(df, "year", path)
    st = _numeric_column(df, "state_fips", path)
    co = _numeric_column(df, "county_fips", path)
    if np.isnan(years).any() or np.isnan(st).any() or np.isnan(co).any():
        raise DataValidationError(path, "year", "rows without year or FIPS codes")
    values = _numeric_column(df, yield_column, path)
    n_zero = int(np.sum(values == 0.0))
    if zero_is_missing:
        values[values == 0.0] = np.nan
    geoid = (st * 1000 + co).astype(np.int64)
    table = pd.DataFrame({"county": geoid, "year": years.astype(np.int64), "value": values})
    _check_unique(table, ["county", "year"], path)
    counties = np.sort(table["county"].unique())
    year_axis = np.arange(table["year"].min(), table["year"].max() + 1, dtype=np.int64)
    grid = _dense(table["county"].to_numpy(), table["year"].to_numpy(), table["value"].to_numpy(), counties, year_axis)
    ds = xr.Dataset(
        {"crop_yield": _yield_variable(grid, crop, ("county", "year"), path, yield_column)},
        coords={"county": counties, "year": year_axis},
    )
    state_fips = (counties // 1000).astype(np.int32)
    unknown = sorted(set(state_fips.tolist()) - set(_STATE_BY_FIPS))
    if unknown:
        raise DataValidationError(path, "state_fips", f"unknown state FIPS codes {unknown}")
    ds = ds.assign_coords(
        us_state=("county", [_STATE_BY_FIPS[int(s)] for s in state_fips]),
        state_fips=("county", state_fips),
        county_fips=("county", (counties % 1000).astype(np.int32)),
        crop=crop,
    )
    if locations is not None:
        loc = read_county_locations(locations).reindex(counties)
        ds = ds.assign_coords(lat=("county", loc["lat"].to_numpy()), lon=("county", loc["lon"].to_numpy()))
        ds["lat"].attrs.update(units="degrees_north", long_name="county centroid latitude")
        ds["lon"].attrs.update(units="degrees_east", long_name="county centroid longitude")
    ds.attrs.update(source=str(path), title=f"NASS county {crop} yield", n_zero_yields_masked=n_zero if zero_is_missing else 0)
    if df.attrs.get("warnings"):
        ds.attrs["warnings"] = "; ".join(df.attrs["warnings"])
    if validate:
        validate_dataset(ds, source=path, layout="county_year")
    return ds


def you2017_tables(folder: str | Path) -> tuple[Path, Path | None]:
    """(full table, high-quality subset or None) of a You et al. (2017) folder, recognised by content: the yield
    tables (``year, state_fips, county_fips, soybean_yield_bu_per_acre``) whatever they are called; with two, the
    high-quality one is the smaller, and its (year, county) rows must all be in the other."""
    folder = Path(folder)
    tables = files_of(folder, "you2017_yield")
    if not tables or len(tables) > 2:
        raise DataValidationError(folder, None, f"expected one or two NASS county yield tables (year, state_fips, "
                                  f"county_fips, <crop>_yield_bu_per_acre), found {[p.name for p in tables] or 'none'}")
    if len(tables) == 1:
        return tables[0], None
    keys = {p: pd.read_csv(io.BytesIO(open_bytes(p)), usecols=["year", "state_fips", "county_fips"]) for p in tables}
    small, full = sorted(tables, key=lambda p: (len(keys[p]), p.name))
    inner = keys[small].merge(keys[full].drop_duplicates(), how="left", indicator=True)
    if len(keys[small]) == len(keys[full]) or (inner["_merge"] != "both").any():
        raise DataValidationError(folder, None, f"two county yield tables {[p.name for p in tables]} but neither is a "
                                  "subset of the other (the high-quality table is); pass the file to read_nass_county")
    return full, small


def read_you2017_soybean(folder: str | Path, *, high_quality: bool = False, validate: bool = True) -> xr.Dataset:
    """The You et al. (2017) NASS county soybean table (``usda_nass_soybean_county_yield_you2017``); files are
    recognised by content (`you2017_tables`, the county centroid table by its columns)."""
    folder = Path(folder)
    full, hq = you2017_tables(folder)
    if high_quality and hq is None:
        raise DataValidationError(folder, None, "no high-quality county table (a subset of the full one) in the folder")
    ds = read_nass_county(hq if high_quality else full, "soybean",
                          locations=one_file(folder, "county_locations", "county centroid table"), validate=validate)
    ds.attrs["references"] = "USDA NASS Quick Stats; You et al. (2017) AAAI-17 (Deep Gaussian Process for crop yield)"
    return ds


# --- NASS state (agridat) --------------------------------------------------------------------------------


def nass_state_crop(path: str | Path) -> str:
    """The crop of an agridat ``nass.<crop>`` state table, from its name (the table's columns do not say)."""
    crop = next((c for c in BUSHEL_WEIGHT_LB if c in Path(path).name.lower()), None)
    if crop is None:
        raise DataValidationError(path, None, f"cannot tell the crop from the file name; pass crop= one of "
                                  f"{sorted(BUSHEL_WEIGHT_LB)}")
    return crop


def read_nass_state(path: str | Path, crop: str | None = None, *, validate: bool = True) -> xr.Dataset:
    """agridat ``nass.<crop>.txt`` (tab separated ``year state acres yield``) → (state, year).

    ``crop_yield`` t ha-1 and ``area_harvested`` ha (from acres). ``crop`` defaults to the one named in the
    file name (corn / soybean / wheat ...).
    """
    path = Path(path)
    if crop is None:
        crop = nass_state_crop(path)
    df = _read_table(path, sep="\t", required=("year", "state", "acres", "yield"))
    states = [state_abbreviation(s, path) for s in df["state"]]
    years = _numeric_column(df, "year", path).astype(np.int64)
    table = pd.DataFrame({"state": states, "year": years, "yield": _numeric_column(df, "yield", path),
                          "acres": _numeric_column(df, "acres", path)})
    _check_unique(table, ["state", "year"], path)
    state_axis = sorted(table["state"].unique())
    year_axis = np.arange(years.min(), years.max() + 1, dtype=np.int64)
    grid_y = _dense(table["state"].to_numpy(), table["year"].to_numpy(), table["yield"].to_numpy(), state_axis, year_axis)
    grid_a = _dense(table["state"].to_numpy(), table["year"].to_numpy(), table["acres"].to_numpy(), state_axis, year_axis)
    ds = xr.Dataset(
        {
            "crop_yield": _yield_variable(grid_y, crop, ("state", "year"), path, "yield"),
            "area_harvested": (("state", "year"), (grid_a * HA_PER_ACRE).astype("float32"),
                               {"units": "ha", "long_name": "area harvested", "comment": f"acres × {HA_PER_ACRE:.6f}"}),
        },
        coords={"state": state_axis, "year": year_axis, "crop": crop},
    )
    ds = ds.assign_coords(state_fips=("state", np.array([_STATE_BY_KEY[s.lower()][1] for s in state_axis], dtype=np.int32)))
    ds.attrs.update(source=str(path), title=f"USDA NASS state {crop} yields (agridat)",
                    references="USDA NASS; Wright, K. (2025) agridat R package v1.26")
    if validate:
        validate_dataset(ds, source=path, layout="state_year")
    return ds


def _fahrenheit_to_celsius(values: np.ndarray) -> np.ndarray:
    return np.asarray(convert_units(values, "degF", "degC"))


def read_thompson(path: str | Path, crop: str = "corn", *, validate: bool = True) -> xr.Dataset:
    """agridat ``thompson.cornsoy.txt``: state corn and soybean yields with growing-season weather, 1930–1962.

    Output on (state, year[, month]): ``crop_yield`` (t ha-1, market moisture) of ``crop`` ("corn" or
    "soybean") and the other crop's as ``<other>_yield`` (one variable cannot hold two bushel weights);
    monthly ``tair`` (°C from °F; May–August) and ``precip`` (mm d-1 from the month's inches; June–August)
    on ``month``; ``precip_preseason`` (mm, the pre-season total in Thompson's rain0).
    """
    if crop not in ("corn", "soybean"):
        raise ValueError(f"crop must be 'corn' or 'soybean', got {crop!r}")
    path = Path(path)
    temp_cols = {5: "temp5", 6: "temp6", 7: "temp7", 8: "temp8"}
    rain_cols = {6: "rain6", 7: "rain7", 8: "rain8"}
    df = _read_table(path, sep="\t", required=("state", "year", "rain0", *temp_cols.values(), *rain_cols.values(), "corn", "soy"))
    states = [state_abbreviation(s, path) for s in df["state"]]
    years = _numeric_column(df, "year", path).astype(np.int64)
    df = df.assign(state=states, year=years)
    _check_unique(df, ["state", "year"], path)
    state_axis = sorted(set(states))
    year_axis = np.arange(years.min(), years.max() + 1, dtype=np.int64)
    months = np.array([5, 6, 7, 8])

    def grid(column: str) -> np.ndarray:
        return _dense(df["state"].to_numpy(), df["year"].to_numpy(), _numeric_column(df, column, path), state_axis, year_axis)

    tair = np.full((len(state_axis), len(year_axis), months.size), np.nan)
    precip = np.full_like(tair, np.nan)
    for k, month in enumerate(months):
        if month in temp_cols:
            tair[..., k] = _fahrenheit_to_celsius(grid(temp_cols[month]))
        if month in rain_cols:
            days = np.array([calendar.monthrange(int(y), int(month))[1] for y in year_axis], dtype=float)
            precip[..., k] = grid(rain_cols[month]) * MM_PER_INCH / days[None, :]
    corn = _yield_variable(grid("corn"), "corn", ("state", "year"), path, "corn")
    soy = _yield_variable(grid("soy"), "soybean", ("state", "year"), path, "soy")
    ds = xr.Dataset(
        {
            "crop_yield": corn if crop == "corn" else soy,
            ("soybean_yield" if crop == "corn" else "corn_yield"): (soy if crop == "corn" else corn).assign_attrs(
                long_name=f"{'soybean' if crop == 'corn' else 'corn'} grain yield"
            ),
            "tair": (("state", "year", "month"), tair.astype("float32"),
                     {**get_variable("tair").attrs(), "cell_methods": "time: mean within months", "comment": "°F → °C"}),
            "precip": (("state", "year", "month"), precip.astype("float32"),
                       {**get_variable("precip").attrs(), "cell_methods": "time: mean within months",
                        "comment": "monthly total inches × 25.4 ÷ days in month"}),
            "precip_preseason": (("state", "year"), (grid("rain0") * MM_PER_INCH).astype("float32"),
                                 {"units": "mm", "long_name": "pre-season precipitation total (Thompson rain0)"}),
        },
        coords={"state": state_axis, "year": year_axis, "month": months, "crop": crop,
                "state_fips": ("state", np.array([_STATE_BY_KEY[s.lower()][1] for s in state_axis], dtype=np.int32))},
    )
    ds.attrs.update(source=str(path), title="Thompson (1969) corn/soybean yield and weather, 5 states",
                    references="Thompson, L. M. (1969, 1970) CARD reports, Iowa State Univ.; agridat v1.26")
    if validate:
        validate_dataset(ds, source=path, layout="state_year_month")
    return ds


def read_wallace_iowa(path: str | Path, *, validate: bool = True) -> xr.Dataset:
    """agridat ``wallace.iowaland.txt``: Iowa counties in 1925 → (county, year=1925) corn yield and land use."""
    path = Path(path)
    df = _read_table(path, sep="\t", required=("county", "fips", "lat", "long", "yield", "corn", "grain", "untillable"))
    fips = _numeric_column(df, "fips", path).astype(np.int64)
    if pd.Series(fips).duplicated().any():
        raise DataValidationError(path, "fips", "repeated county FIPS codes")
    order = np.argsort(fips)
    fips = fips[order]

    def col(name: str) -> np.ndarray:
        return _numeric_column(df, name, path)[order][:, None]

    ds = xr.Dataset(
        {
            "crop_yield": _yield_variable(col("yield"), "corn", ("county", "year"), path, "yield"),
            "corn_fraction": (("county", "year"), col("corn").astype("float32"), {"units": "%", "long_name": "land in corn"}),
            "small_grain_fraction": (("county", "year"), col("grain").astype("float32"), {"units": "%", "long_name": "land in small grains"}),
            "untillable_fraction": (("county", "year"), col("untillable").astype("float32"), {"units": "%", "long_name": "untillable land"}),
        },
        coords={
            "county": fips,
            "year": np.array([1925], dtype=np.int64),
            "county_name": ("county", df["county"].astype(str).to_numpy()[order]),
            "us_state": ("county", ["IA"] * fips.size),
            "lat": ("county", col("lat")[:, 0], {"units": "degrees_north"}),
            "lon": ("county", col("long")[:, 0], {"units": "degrees_east"}),
            "crop": "corn",
        },
    )
    for column, name in (("fedval", "land_value_federal"), ("stval", "land_value_state")):
        if column in df.columns:
            ds[name] = (("county", "year"), col(column).astype("float32"), {"units": "USD ac-1", "long_name": f"1925 land value ({column})"})
    ds.attrs.update(source=str(path), title="Wallace (1926) Iowa farmland by county, 1925",
                    references="Wallace, H. A. (1926) J. Land & Public Utility Economics 2:385, doi:10.2307/3138610")
    if validate:
        validate_dataset(ds, source=path, layout="county_year")
    return ds


# --- Khaki et al. (2020) Illinois counties with weekly Daymet weather ------------------------------------

#: Weekly Daymet variables in the Khaki W_i_j columns (i = 1..6), with their source units (Khaki et al. 2020).
KHAKI_WEATHER = ("prcp", "srad", "swe", "tmax", "tmin", "vp")
KHAKI_WEEKS = 52
KHAKI_SOIL_PROPERTIES = 11
KHAKI_SOIL_LAYERS = ("0-5", "5-15", "15-30", "30-60", "60-100", "100-200")
KHAKI_PLANTING_WEEKS = 16
_DAYS_PER_WEEK = 7


def _saturation_vapour_pressure_hpa(t_celsius: np.ndarray) -> np.ndarray:
    # saturation_vapour_pressure gives kPa (FAO-56 eq. 11).
    return np.asarray(saturation_vapour_pressure(np.asarray(t_celsius, dtype=np.float32)), dtype=float) * HPA_PER_KPA


def _daylength_hours(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    return np.asarray(daylength(np.asarray(lat, dtype=np.float32), np.asarray(doy, dtype=np.float32)), dtype=float)


def read_khaki_corn(path: str | Path, *, validate: bool = True) -> xr.Dataset:
    """Khaki et al. (2020) Illinois county corn table → (county, year) yield + (county, year, week) weather.

    * ``crop_yield`` t ha-1 (corn, 15.5 % moisture) from ``yield_bu_per_acre``.
    * Weekly means of Daymet daily weather (week w = days 7w−6 … 7w of the year): ``precip`` mm d-1,
      ``tmax``/``tmin``/``tair`` °C (tair = (tmax+tmin)/2), ``swe`` mm, ``vp`` hPa (from Pa), ``sw_in`` W m-2 as
      a 24-h mean = Daymet's daylight-mean srad × daylength/24 h (FAO-56 eq. 34 at the county latitude and the
      week's middle day), and ``vpd`` hPa = (e°(tmax)+e°(tmin))/2 − vp (FAO-56 eqs. 11–12) on the weekly means.
    * Static coordinates: ``soil`` (county, soil_property, soil_layer; SoilGrids units, variables not named
      in the source), county name, lat/lon, FIPS; ``planting_progress`` (% of state acreage planted per
      week, NASS Crop Progress) on (county, year, planting_week).
    ``path`` is the .csv.gz or its folder. The county label is the FIPS GEOID, looked up by state and name.
    """
    path = Path(path)
    file = one_file(path, "khaki", "county corn yield + weekly weather table") if path.is_dir() else path
    weather_cols = [f"W_{i}_{j}" for i in range(1, len(KHAKI_WEATHER) + 1) for j in range(1, KHAKI_WEEKS + 1)]
    soil_cols = [f"S_{i}_{j}" for i in range(1, KHAKI_SOIL_PROPERTIES + 1) for j in range(1, len(KHAKI_SOIL_LAYERS) + 1)]
    plant_cols = [f"P_{k}" for k in range(1, KHAKI_PLANTING_WEEKS + 1)]
    df = _read_table(file, required=("loc_id", "state", "county", "lat", "lon", "year", "yield_bu_per_acre", *weather_cols))
    meta = pd.DataFrame({
        "loc_id": _numeric_column(df, "loc_id", file).astype(np.int64),
        "year": _numeric_column(df, "year", file).astype(np.int64),
        "county_name": df["county"].astype(str).to_numpy(),
        "state": df["state"].astype(str).to_numpy(),
        "lat": _numeric_column(df, "lat", file),
        "lon": _numeric_column(df, "lon", file),
    })
    _check_unique(meta, ["loc_id", "year"], file)
    fips = []
    for state_name, county_name in zip(df["state"], df["county"], strict=True):
        abbr, state_code = _STATE_BY_KEY.get(str(state_name).strip().lower(), (None, None))
        table = _COUNTY_FIPS_BY_STATE.get(abbr or "", {})
        code = table.get(_county_key(county_name))
        if code is None:
            raise DataValidationError(file, "county", f"no FIPS code known for {county_name!r}, {state_name!r}")
        fips.append(state_code * 1000 + code)
    meta["county"] = np.array(fips, dtype=np.int64)
    counties = np.sort(meta["county"].unique())
    year_axis = np.arange(meta["year"].min(), meta["year"].max() + 1, dtype=np.int64)
    ci = pd.Index(counties).get_indexer(meta["county"])
    yi = pd.Index(year_axis).get_indexer(meta["year"])
    first = meta.groupby("county").first().reindex(counties)

    def cube(columns: list[str], width: int) -> np.ndarray:
        out = np.full((counties.size, year_axis.size, width), np.nan)
        values = np.column_stack([_numeric_column(df, c, file) for c in columns])
        out[ci, yi, :] = values
        return out

    weekly = {name: cube(weather_cols[i * KHAKI_WEEKS:(i + 1) * KHAKI_WEEKS], KHAKI_WEEKS) for i, name in enumerate(KHAKI_WEATHER)}
    weeks = np.arange(1, KHAKI_WEEKS + 1)
    mid_doy = (weeks - 1) * _DAYS_PER_WEEK + (_DAYS_PER_WEEK + 1) / 2
    lat = first["lat"].to_numpy(dtype=float)
    dayl = _daylength_hours(lat[:, None], mid_doy[None, :])[:, None, :]
    sw_in = weekly["srad"] * dayl / HOURS_PER_DAY
    vp_hpa = weekly["vp"] / PA_PER_HPA
    es = 0.5 * (_saturation_vapour_pressure_hpa(weekly["tmax"]) + _saturation_vapour_pressure_hpa(weekly["tmin"]))
    vpd = np.maximum(es - vp_hpa, 0.0)
    yields = np.full((counties.size, year_axis.size), np.nan)
    yields[ci, yi] = _numeric_column(df, "yield_bu_per_acre", file)
    dims3 = ("county", "year", "week")

    def weekly_var(name: str, values: np.ndarray, comment: str) -> tuple:
        return (dims3, values.astype("float32"), {**get_variable(name).attrs(), "cell_methods": "time: mean within weeks", "comment": comment})

    tmax_min_bad = np.nanmax(weekly["tmin"] - weekly["tmax"])
    if tmax_min_bad > 0.5:
        raise DataValidationError(file, "W_5_*", f"weekly tmin exceeds tmax by up to {tmax_min_bad:.3g} °C: are W_4/W_5 swapped?")
    ds = xr.Dataset(
        {
            "crop_yield": _yield_variable(yields, "corn", ("county", "year"), file, "yield_bu_per_acre"),
            "precip": weekly_var("precip", weekly["prcp"], "Daymet prcp (W_1_j), mm d-1"),
            "sw_in": weekly_var("sw_in", sw_in, "Daymet daylight-mean srad (W_2_j) × daylength / 24 h"),
            "swe": weekly_var("swe", weekly["swe"], "Daymet swe (W_3_j), kg m-2 = mm"),
            "tmax": weekly_var("tmax", weekly["tmax"], "Daymet tmax (W_4_j)"),
            "tmin": weekly_var("tmin", weekly["tmin"], "Daymet tmin (W_5_j)"),
            "tair": weekly_var("tair", 0.5 * (weekly["tmax"] + weekly["tmin"]), "(tmax + tmin) / 2"),
            "vp": weekly_var("vp", vp_hpa, "Daymet vp (W_6_j), Pa / 100"),
            "vpd": weekly_var("vpd", vpd, "(e°(tmax) + e°(tmin)) / 2 − vp on weekly means (FAO-56 eqs. 11–12)"),
        },
        coords={
            "county": counties,
            "year": year_axis,
            "week": weeks,
            "week_mid_doy": ("week", mid_doy),
            "county_name": ("county", first["county_name"].to_numpy()),
            "us_state": ("county", [state_abbreviation(s, file) for s in first["state"]]),
            "loc_id": ("county", first["loc_id"].to_numpy(dtype=np.int64)),
            "lat": ("county", lat, {"units": "degrees_north"}),
            "lon": ("county", first["lon"].to_numpy(dtype=float), {"units": "degrees_east"}),
            "crop": "corn",
        },
    )
    if all(c in df.columns for c in plant_cols):
        ds["planting_progress"] = (("county", "year", "planting_week"), cube(plant_cols, KHAKI_PLANTING_WEEKS).astype("float32"),
                                   {"units": "%", "long_name": "state corn acreage planted in the week (NASS Crop Progress)"})
        ds = ds.assign_coords(planting_week=np.arange(1, KHAKI_PLANTING_WEEKS + 1))
    if all(c in df.columns for c in soil_cols):
        soil = cube(soil_cols, len(soil_cols))
        static = np.nanmean(soil, axis=1).reshape(counties.size, KHAKI_SOIL_PROPERTIES, len(KHAKI_SOIL_LAYERS))
        ds = ds.assign_coords(
            soil=(("county", "soil_property", "soil_layer"), static.astype("float32"),
                  {"units": "SoilGrids integer units", "long_name": "SoilGrids250m properties (S_i_j)"}),
            soil_property=np.arange(1, KHAKI_SOIL_PROPERTIES + 1),
            soil_layer=list(KHAKI_SOIL_LAYERS),
        )
        ds["soil_layer"].attrs["units"] = "cm"
    ds.attrs.update(
        source=str(file),
        title="Khaki et al. (2020) Illinois county corn yield with weekly Daymet weather",
        references="Khaki, Wang & Archontoulis (2020) Front. Plant Sci. 10:1750, doi:10.3389/fpls.2019.01750; Daymet; NASS",
    )
    if validate:
        validate_dataset(ds, source=file)
    return ds

