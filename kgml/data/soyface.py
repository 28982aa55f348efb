"""SoyFACE measured soybean biomass by organ (Champaign, IL; ambient and elevated CO2) → a (site, time) dataset.

The BioCro repository ships one table per year and CO2 treatment, ``<year>_<ambient|co2>_biomass.csv`` (plot means)
and ``..._biomass_std.csv`` (standard deviations across replicate plots): ``DOY`` and dry mass per organ in
Mg ha-1 (= t ha-1). Sites are the two treatments of the one field; times are the harvest days.
"""

from __future__ import annotations

import calendar
import difflib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of
from kgml.data.schema import DataValidationError, DataWarning, skip_or_raise, validate_dataset
from kgml.data.towers.common import _parse_table, _read_text
from kgml.data.yields import read_county_locations
from kgml.variables import UnitConversionError, convert_units, get_variable

__all__ = [
    "SOYFACE_COUNTY",
    "SOYFACE_ORGANS",
    "SOYFACE_TREATMENTS",
    "read_soyface_biomass",
    "read_soyface_table",
]

#: Source organ column stem → output variable (dry mass, t ha-1). ``Rep`` is the pods including their seed.
SOYFACE_ORGANS: dict[str, str] = {
    "Leaf": "leaf_biomass",
    "Stem": "stem_biomass",
    "Rep": "pod_biomass",
    "Seed": "grain_biomass",
    "Litter": "litter_biomass",
    "CumLitter": "litter_biomass_cumulative",
}
_LONG_NAMES = {
    "leaf_biomass": "green leaf dry mass",
    "stem_biomass": "stem dry mass",
    "pod_biomass": "pod dry mass including seed (BioCro 'Rep')",
    "grain_biomass": "seed dry mass",
    "litter_biomass": "leaf litter dry mass collected since the previous harvest",
    "litter_biomass_cumulative": "cumulative leaf litter dry mass",
}
#: File-name treatment → (site label, treatment, target CO2 mole fraction in ppm; NaN = ambient, not controlled).
#: Elevated CO2 target ≈ 550 ppm (Morgan et al. 2005, Global Change Biology 11:1856; the folder's SOURCE.md).
SOYFACE_TREATMENTS: dict[str, tuple[str, str, float]] = {
    "ambient": ("SoyFACE_ambient", "ambient", np.nan),
    "co2": ("SoyFACE_elevated", "elevated_co2", 550.0),
}
#: Champaign County, IL (FIPS GEOID): the SoyFACE field at the University of Illinois South Farms.
SOYFACE_COUNTY = 17019

#: Unit suffixes of the organ columns (``Leaf_Mg_per_ha``) → unit strings of kgml.variables.
_UNIT_SUFFIXES = {"Mg_per_ha": "t ha-1", "t_per_ha": "t ha-1", "kg_per_ha": "kg ha-1", "g_per_m2": "g m-2"}
_FILE_NAME = re.compile(r"^(?P<year>\d{4})_(?P<treatment>[A-Za-z0-9]+)_biomass(?P<std>_std)?(?:\.\w+)*$")
_TARGET_UNITS = "t ha-1"


def _organ_columns(path: Path, columns: list[str]) -> dict[str, tuple[str, str]]:
    """Organ stem → (column, source units); every organ must be present with a known unit suffix."""
    found: dict[str, tuple[str, str]] = {}
    for column in columns:
        stem, _, suffix = column.partition("_")
        if stem in SOYFACE_ORGANS:
            if suffix not in _UNIT_SUFFIXES:
                raise DataValidationError(
                    path, column, f"unknown unit suffix {suffix!r}; expected one of {sorted(_UNIT_SUFFIXES)} (e.g. Leaf_Mg_per_ha)"
                )
            found[stem] = (column, _UNIT_SUFFIXES[suffix])
    for stem in SOYFACE_ORGANS:
        if stem not in found:
            close = difflib.get_close_matches(f"{stem}_Mg_per_ha", columns, n=3, cutoff=0.6)
            hint = f"; similar columns: {close}" if close else ""
            raise DataValidationError(path, f"{stem}_Mg_per_ha", f"required organ column missing{hint} (found {columns})")
    return found


def read_soyface_table(path: str | os.PathLike, year: int | None = None) -> pd.DataFrame:
    """One SoyFACE biomass table → DataFrame indexed by harvest date with the output variable names, in t ha-1.

    ``year`` defaults to the one in the file name. Errors (`DataValidationError`, naming the file, the column and
    the line): empty file, missing or renamed columns, truncated rows, non-numeric cells, day of year outside the
    year, repeated or decreasing days, negative masses, masses beyond any soybean crop (a unit mistake: kg ha-1
    or g m-2 written as Mg ha-1) and organs with no value at all. -9999 and NA are missing values.
    """
    path = Path(path)
    if year is None:
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise DataValidationError(path, None, "cannot tell the year from the file name (expected <year>_<treatment>_biomass.csv)")
        year = int(match.group("year"))
    frame = _parse_table(path, _read_text(path).splitlines(), na_strings=("NA",))
    if "DOY" not in frame.columns:
        raise DataValidationError(path, "DOY", f"required column missing (found {list(frame.columns)})")
    doy = frame["DOY"].to_numpy(dtype=float)
    bad = ~np.isfinite(doy) | (doy != np.round(doy))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(path, "DOY", f"day of year {frame['DOY'].iloc[i]!r} at line {i + 2} is not a whole number")
    days_in_year = 366 if calendar.isleap(year) else 365
    bad = (doy < 1) | (doy > days_in_year)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(path, "DOY", f"day of year {int(doy[i])} at line {i + 2} is outside 1–{days_in_year} ({year})")
    steps = np.diff(doy)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        kind = "repeated" if steps[i - 1] == 0 else "goes back in time"
        raise DataValidationError(path, "DOY", f"day of year {int(doy[i])} at line {i + 2} {kind} (harvests must be in increasing order)")
    organs = _organ_columns(path, list(frame.columns))
    out = {}
    biomass = get_variable("biomass")
    for stem, (column, units) in organs.items():
        raw = frame[column].to_numpy(dtype=float)
        if not np.isfinite(raw).any():
            raise DataValidationError(path, column, "all values are missing")
        try:
            values = np.asarray(convert_units(raw, units, _TARGET_UNITS), dtype=float)
        except UnitConversionError as err:  # pragma: no cover - every suffix maps to a convertible unit
            raise DataValidationError(path, column, str(err)) from err
        negative = values < 0
        if negative.any():
            i = int(np.argmax(negative))
            raise DataValidationError(path, column, f"negative dry mass {raw[i]:g} at line {i + 2}")
        out_of_range = biomass.out_of_range(values)
        if out_of_range.any():
            i = int(np.argmax(out_of_range))
            hint = biomass.diagnose(values[np.isfinite(values)]) or ""
            raise DataValidationError(
                path, column,
                f"{int(out_of_range.sum())} value(s) above {biomass.valid_max:g} t ha-1 (first {raw[i]:g} at line {i + 2}, "
                f"read as {units}): no soybean crop is that heavy. Likely unit mistake: {hint}",
            )
        out[SOYFACE_ORGANS[stem]] = values
    dates = pd.Timestamp(year=year, month=1, day=1) + pd.to_timedelta(doy - 1, unit="D")
    return pd.DataFrame(out, index=pd.DatetimeIndex(dates, name="time"))


def _county_lat_lon(locations, lat: float | None, lon: float | None) -> tuple[float, float, str]:
    if lat is not None and lon is not None:
        return float(lat), float(lon), "given by the caller"
    if locations is None:
        return np.nan, np.nan, ""
    table = locations if isinstance(locations, pd.DataFrame) else read_county_locations(locations)
    if SOYFACE_COUNTY not in table.index:
        return np.nan, np.nan, ""
    row = table.loc[SOYFACE_COUNTY]
    return float(row["lat"]), float(row["lon"]), "Champaign County centroid (county locations table); SoyFACE lies in the county"


def read_soyface_biomass(
    folder: str | os.PathLike,
    *,
    locations: str | os.PathLike | pd.DataFrame | None = None,
    lat: float | None = None,
    lon: float | None = None,
    errors: str = "warn",
    validate: bool = True,
) -> xr.Dataset:
    """Every ``<year>_<ambient|co2>_biomass[_std].csv`` of ``folder`` → dataset on (site, time).

    * ``site`` = CO2 treatment: ``SoyFACE_ambient`` and ``SoyFACE_elevated`` (target ≈ 550 ppm); coordinates
      ``treatment``, ``co2_target`` (ppm, NaN for ambient), ``county`` (FIPS 17019), ``us_state``, ``igbp`` (CRO),
      ``lat``/``lon`` (explicit, or the Champaign County centroid from a ``locations`` table such as the You et
      al. 2017 ``county_locations.csv``; else NaN with a warning).
    * ``time`` = harvest day (year + DOY); days harvested in one treatment only are NaN in the other.
    * Plot means → ``leaf_biomass``, ``stem_biomass``, ``pod_biomass`` (pods incl. seed), ``grain_biomass``
      (seed), ``litter_biomass``, ``litter_biomass_cumulative`` (t ha-1 dry mass, from Mg ha-1: factor 1) and
      ``biomass`` = leaf + stem + pod (living above-ground dry mass, as DSSAT's CWAD); standard deviations
      across replicate plots → ``<name>_sd``. A late-season leaf mass of 0 is senescence, not a missing value.
    * A std table must list the same harvest days as its means table. A file that fails is skipped with a
      `DataWarning` and listed in ``attrs["skipped_files"]`` (``errors='warn'``) or raises (``errors='raise'``);
      names that look like biomass tables but do not parse (e.g. an unknown treatment) are reported the same way.
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"errors must be 'warn' or 'raise', got {errors!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataValidationError(folder, None, "folder not found")
    skipped: list[str] = []

    def fail(err: DataValidationError) -> None:
        skip_or_raise(err, errors, skipped, "SoyFACE table", Path(err.source).name)

    means: dict[tuple[str, int], pd.DataFrame] = {}
    stds: dict[tuple[str, int], pd.DataFrame] = {}
    # the tables by content (DOY and organ columns), and files named as tables (read so that a broken one is
    # reported, not passed over)
    tables = files_of(folder, "soyface", named=_FILE_NAME)
    std_paths: dict[tuple[str, int], Path] = {}
    for path in tables:
        match = _FILE_NAME.match(path.name)
        if match is None or match.group("treatment") not in SOYFACE_TREATMENTS:
            fail(DataValidationError(
                path, None, f"not a SoyFACE biomass table name: expected <year>_<{'|'.join(SOYFACE_TREATMENTS)}>_biomass[_std].csv"
            ))
            continue
        key = (match.group("treatment"), int(match.group("year")))
        try:
            table = read_soyface_table(path, key[1])
        except DataValidationError as err:
            fail(err)
            continue
        (stds if match.group("std") else means)[key] = table
        if match.group("std"):
            std_paths[key] = path
    for key, table in list(stds.items()):
        mean = means.get(key)
        if mean is None:
            del stds[key]
            fail(DataValidationError(std_paths[key], None, "standard deviations without their means table"))
        elif not mean.index.equals(table.index):
            del stds[key]
            fail(DataValidationError(
                std_paths[key], "DOY",
                f"harvest days {table.index.day_of_year.tolist()} differ from the means table's {mean.index.day_of_year.tolist()}",
            ))
    if not means:
        raise DataValidationError(folder, None, f"no SoyFACE biomass table could be read ({skipped[:3] or 'no biomass table (DOY and organ columns) found'})")
    missing_std = sorted(f"{y}_{t}" for (t, y) in means if (t, y) not in stds)
    treatments = [t for t in SOYFACE_TREATMENTS if any(k[0] == t for k in means)]
    times = pd.DatetimeIndex(sorted({t for table in means.values() for t in table.index}), name="time")
    names = list(SOYFACE_ORGANS.values())
    data = {n: np.full((len(treatments), times.size), np.nan) for n in [*names, *(f"{n}_sd" for n in names)]}
    for (treatment, year), table in means.items():
        row = treatments.index(treatment)
        cols = times.get_indexer(table.index)
        for n in names:
            data[n][row, cols] = table[n].to_numpy()
        std = stds.get((treatment, year))
        if std is not None:
            for n in names:
                data[f"{n}_sd"][row, cols] = std[n].to_numpy()
    data_vars = {}
    for n in names:
        attrs = {"units": _TARGET_UNITS, "long_name": _LONG_NAMES[n], "comment": "plot mean (Mg ha-1 = t ha-1)"}
        data_vars[n] = (("site", "time"), data[n].astype("float32"), attrs)
        data_vars[f"{n}_sd"] = (("site", "time"), data[f"{n}_sd"].astype("float32"),
                                {"units": _TARGET_UNITS, "long_name": f"{_LONG_NAMES[n]}, standard deviation across replicate plots"})
    living = data["leaf_biomass"] + data["stem_biomass"] + data["pod_biomass"]
    data_vars["biomass"] = (("site", "time"), living.astype("float32"), {
        **get_variable("biomass").attrs(), "comment": "leaf + stem + pod (incl. seed) dry mass; litter excluded",
    })
    site_lat, site_lon, location_note = _county_lat_lon(locations, lat, lon)
    if not np.isfinite(site_lat):
        warnings.warn(f"{folder}: no lat/lon for SoyFACE; pass locations= (a county table) or lat=, lon=", DataWarning, stacklevel=2)
    labels = [SOYFACE_TREATMENTS[t][0] for t in treatments]
    ds = xr.Dataset(
        {k: v for k, v in data_vars.items() if not k.endswith("_sd") or np.isfinite(v[1]).any()},
        coords={
            "site": labels,
            "time": ("time", times.values.astype("datetime64[ns]"), {"long_name": "harvest day (local date)"}),
            "treatment": ("site", [SOYFACE_TREATMENTS[t][1] for t in treatments]),
            "co2_target": ("site", np.array([SOYFACE_TREATMENTS[t][2] for t in treatments]), {"units": "umol mol-1"}),
            "county": ("site", np.full(len(treatments), SOYFACE_COUNTY, dtype=np.int64)),
            "us_state": ("site", ["IL"] * len(treatments)),
            "igbp": ("site", ["CRO"] * len(treatments)),
            "lat": ("site", np.full(len(treatments), site_lat), {"units": "degrees_north", "comment": location_note}),
            "lon": ("site", np.full(len(treatments), site_lon), {"units": "degrees_east", "comment": location_note}),
            "crop": "soybean",
        },
        attrs={
            "source": str(folder),
            "title": "SoyFACE soybean biomass by organ, ambient and elevated CO2",
            "references": "Matthews et al. (2022) in silico Plants 4:diab032, doi:10.1093/insilicoplants/diab032; "
            "Morgan et al. (2005) Global Change Biology 11:1856; data from the BioCro repository",
            "sampling": "destructive harvests, about every two weeks in season",
            "years": " ".join(str(y) for y in sorted({k[1] for k in means})),
            "missing_std_tables": " ".join(missing_std),
            "skipped_files": "\n".join(skipped),
        },
    )
    if validate:
        validate_dataset(ds, source=folder, layout="site_time")
    return ds
