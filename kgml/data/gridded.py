"""Gridded forcing from CF netCDF: time decoding, lat/lon normalisation, canonical names and units, and
aggregation of sub-daily fields to daily and monthly means (with CF cell methods and a coverage rule).

Variables are recognised by CF ``standard_name`` first, then by common names (WFDE5 ``Tair``/``Rainf``,
CMIP ``tas``/``pr``, NOAA ``air``); specific humidity becomes ``vpd`` with the surface pressure (a ``PSurf``
field, a given value, or the standard atmosphere). Output dims are (lat, lon, time), lat ascending, lon in
[-180, 180). Days are UTC calendar days; a period is labelled by its first instant.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.data.formats import files_of
from kgml.data.schema import DataValidationError, DataWarning, validate_dataset
from kgml.data.soil_respiration import mask_spikes
from kgml.variables import UnitConversionError, convert_units, get_variable, normalise_units
from process_models.constants import EPSILON_WATER_AIR, P_STANDARD, PA_PER_HPA
from process_models.forcing import saturation_vapour_pressure

__all__ = [
    "DEFAULT_MIN_COVERAGE",
    "STANDARD_NAMES",
    "aggregate_daily",
    "aggregate_monthly",
    "is_monthly_grid",
    "open_gridded",
    "read_bcsd_obs",
    "read_ghcn_cams",
    "read_gridded",
    "read_monthly_grid",
    "read_wfde5",
    "specific_humidity_to_vpd",
]

#: Minimum fraction of a period's expected time steps that must be valid for its aggregate (else NaN).
DEFAULT_MIN_COVERAGE = 0.8

#: CF standard names → canonical variables (``qair`` is an intermediate kept in kg kg-1).
STANDARD_NAMES: dict[str, str] = {
    "air_temperature": "tair",
    "precipitation_flux": "precip",
    "rainfall_flux": "precip",
    "lwe_precipitation_rate": "precip",
    "specific_humidity": "qair",
    "surface_downwelling_shortwave_flux_in_air": "sw_in",
    "surface_downwelling_longwave_flux_in_air": "lw_in",
    "wind_speed": "ws",
    "surface_air_pressure": "patm",
    "relative_humidity": "rh",
    "water_vapor_saturation_deficit_in_air": "vpd",
}
#: Common variable names (lower case) → canonical variables, used when there is no standard_name.
COMMON_NAMES: dict[str, str] = {
    "tair": "tair", "tas": "tair", "air": "tair", "t2m": "tair", "temp": "tair",
    "tasmin": "tmin", "tmin": "tmin", "tasmax": "tmax", "tmax": "tmax",
    "rainf": "precip", "pr": "precip", "prcp": "precip", "precip": "precip", "tp": "precip", "ppt": "precip",
    "qair": "qair", "huss": "qair", "q": "qair",
    "swdown": "sw_in", "rsds": "sw_in", "srad": "sw_in", "lwdown": "lw_in", "rlds": "lw_in",
    "wind": "ws", "sfcwind": "ws", "ws": "ws", "psurf": "patm", "ps": "patm", "sp": "patm",
    "vpd": "vpd", "rh": "rh", "hurs": "rh",
}
#: Unit spellings met in gridded products that the registry does not list.
_EXTRA_UNITS = {"degk": "K", "deg k": "K", "degrees k": "K", "kelvin": "K", "kg/kg": "kg kg-1", "kg kg-1": "kg kg-1",
                "1": "kg kg-1"}
#: Monthly totals: converted to mm d-1 with the number of days of each month.
_MONTHLY_TOTAL_UNITS = {"mm/m", "mm/month", "mm month-1", "mm mon-1", "mm/mon"}

_LAT_NAMES = ("lat", "latitude", "y", "nav_lat")
_LON_NAMES = ("lon", "longitude", "x", "nav_lon")
_CELL_METHOD = {"tmin": "minimum", "tmax": "maximum"}


# ---------------------------------------------------------------------------------------------------------
# Opening


def specific_humidity_to_vpd(qair, tair, patm):
    """VPD (hPa) from specific humidity q (kg kg-1), air temperature (°C) and pressure (Pa).

    e = q p / (ε + (1 − ε) q) (Pa; Wallace & Hobbs 2006, eq. 3.57 inverted), e°(T) from FAO-56 eq. 11;
    VPD = (e° − e) / 100, floored at 0 (supersaturation).
    """
    e_pa = qair * patm / (EPSILON_WATER_AIR + (1.0 - EPSILON_WATER_AIR) * qair)
    es_pa = np.asarray(saturation_vapour_pressure(np.asarray(tair, dtype=np.float32)), dtype=float) * 1000.0
    return np.maximum(es_pa - e_pa, 0.0) / PA_PER_HPA


def _coordinate(ds: xr.Dataset, names: Sequence[str], standard: str, source: Path) -> str:
    for name in ds.variables:
        if ds[name].attrs.get("standard_name") == standard and ds[name].ndim == 1:
            return str(name)
    for name in names:
        for candidate in ds.variables:
            if str(candidate).lower() == name and ds[candidate].ndim == 1:
                return str(candidate)
    raise DataValidationError(source, standard, f"no {standard} coordinate found (looked for {', '.join(names)})")


def _canonical_name(name: str, da: xr.DataArray, variables: Mapping[str, str]) -> str | None:
    if name in variables:
        return variables[name]
    standard = da.attrs.get("standard_name")
    if standard in STANDARD_NAMES:
        candidate = STANDARD_NAMES[standard]
        if candidate == "tair" and name.lower() in ("tasmin", "tmin"):
            return "tmin"
        if candidate == "tair" and name.lower() in ("tasmax", "tmax"):
            return "tmax"
        return candidate
    return COMMON_NAMES.get(name.lower())


def _open_one(path: Path) -> xr.Dataset:
    if not path.exists():
        raise DataValidationError(path, None, "file not found")
    try:
        return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=False))
    except ValueError as err:
        raise DataValidationError(path, "time", f"cannot decode the time axis: {err}") from err
    except OSError as err:
        raise DataValidationError(path, None, f"cannot open as netCDF: {err}") from err


def _normalise_grid(ds: xr.Dataset, path: Path) -> xr.Dataset:
    lat = _coordinate(ds, _LAT_NAMES, "latitude", path)
    lon = _coordinate(ds, _LON_NAMES, "longitude", path)
    if "time" not in ds.dims:
        time_name = next((str(n) for n in ds.variables if ds[n].attrs.get("standard_name") == "time" or str(n).lower() == "time"), None)
        if time_name is None:
            raise DataValidationError(path, "time", "no time coordinate")
        ds = ds.rename({time_name: "time"})
    ds = ds.rename({lat: "lat", lon: "lon"}) if (lat, lon) != ("lat", "lon") else ds
    times = ds["time"].values
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DataValidationError(path, "time", f"time did not decode to dates (units {ds['time'].attrs.get('units')!r})")
    if np.isnat(times).any():
        raise DataValidationError(path, "time", "missing (NaT) time values")
    steps = np.diff(times)
    if (steps == np.timedelta64(0)).any():
        raise DataValidationError(path, "time", f"duplicate time {times[1:][steps == np.timedelta64(0)][0]}")
    if (steps < np.timedelta64(0)).any():
        raise DataValidationError(path, "time", f"time not increasing (goes back at {times[1:][steps < np.timedelta64(0)][0]})")
    lon_values = ds["lon"].values.astype(float)
    if np.nanmax(lon_values) > 180.0:
        ds = ds.assign_coords(lon=((lon_values + 180.0) % 360.0) - 180.0)
    return ds.sortby("lat").sortby("lon")


def _units_of(name: str, da: xr.DataArray, units: Mapping[str, str], path: Path) -> str:
    raw = units.get(name, da.attrs.get("units"))
    if raw is None or str(raw).strip() == "":
        raise DataValidationError(path, name, "no 'units' attribute; pass units={name: '...'} to say what they are")
    text = " ".join(str(raw).strip().split())
    return _EXTRA_UNITS.get(text.lower(), text)


def _to_canonical(name: str, canonical: str, da: xr.DataArray, raw_units: str, path: Path, counts: dict) -> xr.DataArray:
    values = da.values.astype(float)
    if raw_units.lower() in _MONTHLY_TOTAL_UNITS and canonical == "precip":
        days = pd.DatetimeIndex(da["time"].values).days_in_month.to_numpy(dtype=float)
        shape = [1] * da.ndim
        shape[da.dims.index("time")] = days.size
        values = values / days.reshape(shape)
        comment = f"{name} ({raw_units}, monthly total) ÷ days in month"
    elif canonical == "qair":
        if normalise_units(raw_units) not in ("kg kg-1", "1") and raw_units != "kg kg-1":
            raise DataValidationError(path, name, f"specific humidity units {raw_units!r}; expected kg kg-1")
        if np.nanmax(values) > 0.1:
            raise DataValidationError(path, name, f"specific humidity up to {np.nanmax(values):.3g}: g kg-1 given as kg kg-1?")
        return da.copy(data=values).assign_attrs(units="kg kg-1", long_name="specific humidity", comment=f"{name}")
    else:
        target = get_variable(canonical).units
        try:
            values = np.asarray(convert_units(values, raw_units, target), dtype=float)
        except UnitConversionError as err:
            raise DataValidationError(path, name, f"cannot convert {raw_units!r} to {target!r} for {canonical}: {err}") from err
        comment = f"{name} ({raw_units})"
    values = mask_spikes(values, canonical, path, name, counts)
    attrs = {**get_variable(canonical).attrs(), "comment": f"from {comment}"}
    return xr.DataArray(values.astype("float32"), dims=da.dims, coords=da.coords, attrs=attrs)


def open_gridded(
    paths: str | Path | Sequence[str | Path],
    *,
    variables: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    psurf: float | None = None,
    validate: bool = True,
) -> xr.Dataset:
    """netCDF file(s) → canonical variables at their native time resolution on (lat, lon, time).

    ``variables`` maps source names to canonical ones where recognition fails; ``units`` supplies units for
    variables that lack (or misstate) them. Unrecognised variables are dropped (listed in ``attrs``). Files
    are merged by variable (one variable per file, as WFDE5) and must share the grid and time axis.
    Specific humidity is turned into ``vpd`` using ``patm`` from the files, else ``psurf`` (Pa), else the
    standard atmosphere (101325 Pa; noted in the attrs). Isolated values outside the registry's valid range
    are masked and counted; a variable mostly out of range is an error suggesting the unit mistake.
    """
    variables = dict(variables or {})
    units = dict(units or {})
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not path_list:
        raise DataValidationError(None, None, "no files given")
    pieces: dict[str, xr.DataArray] = {}
    dropped: list[str] = []
    counts: dict[str, int] = {}
    reference: xr.Dataset | None = None
    ref_path = path_list[0]
    for path in path_list:
        with _open_one(path) as raw:
            ds = _normalise_grid(raw, path).load()
        if reference is None:
            reference = ds
        else:
            for dim in ("lat", "lon", "time"):
                if ds.sizes[dim] != reference.sizes[dim] or not np.array_equal(ds[dim].values, reference[dim].values):
                    raise DataValidationError(path, dim, f"{dim} axis differs from {ref_path.name}")
        for name, da in ds.data_vars.items():
            name = str(name)
            if not {"lat", "lon", "time"} <= set(da.dims):
                continue
            canonical = _canonical_name(name, da, variables)
            if canonical is None:
                dropped.append(f"{path.name}:{name}")
                continue
            if canonical in pieces:
                raise DataValidationError(path, name, f"a second source for {canonical}")
            raw_units = _units_of(name, da, units, path)
            pieces[canonical] = _to_canonical(name, canonical, da.transpose("lat", "lon", "time"), raw_units, path, counts)
    if not pieces:
        raise DataValidationError(path_list[0], None, f"no recognised variable (found {dropped})")
    out = xr.Dataset(pieces)
    notes = []
    if "qair" in out and "tair" not in out:
        notes.append("specific humidity kept as qair: vpd needs air temperature (open it together with Tair)")
    elif "qair" in out:
        if "patm" in out:
            pressure, pressure_note = out["patm"].values.astype(float), "surface pressure field"
        elif psurf is not None:
            pressure, pressure_note = float(psurf), f"given surface pressure {psurf} Pa"
        else:
            pressure, pressure_note = P_STANDARD, f"standard atmosphere {P_STANDARD} Pa (no pressure field)"
            notes.append("vpd uses the standard-atmosphere pressure; pass psurf= or a PSurf file for elevated terrain")
        vpd = specific_humidity_to_vpd(out["qair"].values.astype(float), out["tair"].values.astype(float), pressure)
        out["vpd"] = (("lat", "lon", "time"), vpd.astype("float32"), {
            **get_variable("vpd").attrs(), "comment": f"from specific humidity, air temperature and {pressure_note}",
        })
    out = out.transpose("lat", "lon", "time")
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    parents = {p.parent for p in path_list}
    out.attrs.update(
        source=str(path_list[0]) if len(path_list) == 1 else str(parents.pop()) if len(parents) == 1 else " ".join(map(str, path_list)),
        files=" ".join(p.name for p in path_list),
        resolution=_resolution(out["time"].values),
        dropped_variables=" ".join(dropped),
        notes="; ".join(notes),
        **counts,
    )
    for key in ("title", "references", "reference", "institution", "licence", "license"):
        if reference is not None and key in reference.attrs:
            out.attrs[f"source_{key}"] = str(reference.attrs[key])
    if validate:
        validate_dataset(out, source=out.attrs["source"], layout="grid")
    return out


def _resolution(times: np.ndarray) -> str:
    if times.size < 2:
        return "unknown"
    step = pd.Timedelta(np.median(np.diff(times)))
    if step <= pd.Timedelta(hours=1):
        return "hourly" if step == pd.Timedelta(hours=1) else f"{int(step.total_seconds() // 60)}min"
    if step < pd.Timedelta(days=1):
        return f"{int(step.total_seconds() // 3600)}h"
    if step == pd.Timedelta(days=1):
        return "daily"
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        return "monthly"
    return f"{step.days}d"


# ---------------------------------------------------------------------------------------------------------
# Aggregation


def _aggregate(ds: xr.Dataset, freq: str, expected: xr.DataArray | float, min_coverage: float, period: str) -> xr.Dataset:
    out = xr.Dataset()
    grouped = ds.resample(time=freq, label="left", closed="left")
    counts = grouped.count()
    means = grouped.mean()
    for name, da in ds.data_vars.items():
        # Daily extremes of sub-daily data are extremes; a month of daily minima is their mean.
        how = _CELL_METHOD.get(str(name), "mean") if period == "day" else "mean"
        value = {"mean": means[name], "minimum": grouped.min()[name], "maximum": grouped.max()[name]}[how]
        coverage = counts[name] / expected
        value = value.where(coverage >= min_coverage)
        prior = da.attrs.get("cell_methods", "")
        method = f"{prior} time: mean over days" if prior and period == "month" else f"time: {how}"
        out[name] = value.astype("float32").assign_attrs({**da.attrs, "cell_methods": method})
    if "tair" in ds and "tmin" not in ds and ds.attrs.get("resolution") not in ("daily", "monthly") and period == "day":
        for extreme, how in (("tmin", "min"), ("tmax", "max")):
            value = getattr(grouped, how)()["tair"].where(counts["tair"] / expected >= min_coverage)
            out[extreme] = value.astype("float32").assign_attrs(
                {**get_variable(extreme).attrs(), "cell_methods": f"time: {_CELL_METHOD[extreme]}",
                 "comment": f"{how} of the sub-daily tair"}
            )
    out = out.transpose("lat", "lon", "time")
    out.attrs = dict(ds.attrs)
    out.attrs["min_coverage"] = min_coverage
    return out


def _step(ds: xr.Dataset) -> pd.Timedelta:
    times = ds["time"].values
    if times.size < 2:
        raise DataValidationError(ds.attrs.get("source"), "time", "need at least two time steps to aggregate")
    steps = np.diff(times)
    step = pd.Timedelta(np.median(steps))
    if not (steps == np.timedelta64(step)).all() and step < pd.Timedelta(days=28):
        irregular = int((steps != np.timedelta64(step)).sum())
        warnings.warn(f"{ds.attrs.get('source')}: {irregular} irregular time steps (usual {step}); "
                      "gaps count as missing", DataWarning, stacklevel=3)
    return step


def aggregate_daily(ds: xr.Dataset, *, min_coverage: float = DEFAULT_MIN_COVERAGE, validate: bool = True) -> xr.Dataset:
    """Sub-daily (lat, lon, time) fields → daily: means (precip stays a rate, mm d-1), plus ``tmin``/``tmax``
    as the minimum/maximum of sub-daily ``tair``. A day needs ``min_coverage`` of its expected steps."""
    step = _step(ds)
    if step >= pd.Timedelta(days=1):
        raise DataValidationError(ds.attrs.get("source"), "time", f"already at {step} resolution; nothing to aggregate to days")
    if (pd.Timedelta(days=1) % step) != pd.Timedelta(0):
        raise DataValidationError(ds.attrs.get("source"), "time", f"step {step} does not divide a day")
    per_day = pd.Timedelta(days=1) / step
    out = _aggregate(ds, "1D", float(per_day), min_coverage, "day")
    out.attrs["resolution"] = "daily"
    out["time"].attrs["long_name"] = "start of the UTC day"
    if validate:  # the native fields were checked (and warned about) when opened
        validate_dataset(out, source=out.attrs.get("source"), layout="grid", warn_suspicious=False)
    return out


def aggregate_monthly(ds: xr.Dataset, *, min_coverage: float = DEFAULT_MIN_COVERAGE, validate: bool = True) -> xr.Dataset:
    """Daily or sub-daily (lat, lon, time) fields → monthly means (sub-daily goes through days first)."""
    step = _step(ds)
    if step < pd.Timedelta(days=1):
        ds = aggregate_daily(ds, min_coverage=min_coverage, validate=False)
    elif step > pd.Timedelta(days=1):
        raise DataValidationError(ds.attrs.get("source"), "time", f"already at {step} resolution; cannot make months")
    month_start = pd.DatetimeIndex(ds["time"].values).to_period("M").start_time
    months = pd.date_range(month_start.min(), month_start.max(), freq="MS")
    expected = xr.DataArray(months.days_in_month.to_numpy(dtype=float), dims="time", coords={"time": months.values})
    out = _aggregate(ds, "MS", expected, min_coverage, "month")
    out.attrs["resolution"] = "monthly"
    out["time"].attrs["long_name"] = "first day of the month"
    if validate:
        validate_dataset(out, source=out.attrs.get("source"), layout="grid", warn_suspicious=False)
    return out


def read_gridded(
    paths: str | Path | Sequence[str | Path],
    *,
    resolution: str | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    **kwargs,
) -> xr.Dataset:
    """`open_gridded` then, if asked, `aggregate_daily` (``resolution='daily'``) or `aggregate_monthly`."""
    ds = open_gridded(paths, **kwargs)
    if resolution in (None, ds.attrs.get("resolution")):
        return ds
    if resolution == "daily":
        return aggregate_daily(ds, min_coverage=min_coverage)
    if resolution == "monthly":
        return aggregate_monthly(ds, min_coverage=min_coverage)
    raise ValueError(f"resolution must be None, 'daily' or 'monthly', got {resolution!r}")


def _monthly_labels(ds: xr.Dataset) -> xr.Dataset:
    """Label monthly values by the first day of their month (products stamp the 1st, 15th or last day)."""
    starts = pd.DatetimeIndex(ds["time"].values).to_period("M").start_time
    if starts.duplicated().any():
        raise DataValidationError(ds.attrs.get("source"), "time", "two values in one month")
    ds = ds.assign_coords(time=starts.values.astype("datetime64[ns]"))
    ds["time"].attrs["long_name"] = "first day of the month"
    ds.attrs["resolution"] = "monthly"
    for name in ds.data_vars:
        ds[name].attrs.setdefault("cell_methods", "time: mean")
    return ds


# ---------------------------------------------------------------------------------------------------------
# The shared datasets


def _grid_files(path: Path) -> list[Path]:
    """The gridded netCDF files of a folder, recognised by content (`kgml.data.formats`), or ``[path]``."""
    if not path.is_dir():
        return [path]
    files = files_of(path, "netcdf_grid")
    if not files:
        raise DataValidationError(path, None, "no gridded netCDF file (recognised by content: netCDF with lat/lon)")
    return files


def read_wfde5(folder: str | Path, *, resolution: str | None = "daily", psurf: float | None = None,
               min_coverage: float = DEFAULT_MIN_COVERAGE) -> xr.Dataset:
    """WFDE5 hourly forcing (one variable per netCDF file in ``folder``) → daily (default), monthly or hourly."""
    return read_gridded(_grid_files(Path(folder)), resolution=resolution, min_coverage=min_coverage, psurf=psurf)


def read_monthly_grid(path: str | Path) -> xr.Dataset:
    """A monthly gridded product (one netCDF file, or the one such file of a folder), values labelled by the
    first day of their month."""
    path = Path(path)
    files = _grid_files(path)
    if len(files) != 1:
        raise DataValidationError(path, None, f"expected one gridded netCDF file, found {[p.name for p in files]}")
    ds = _monthly_labels(open_gridded(files[0], validate=False))
    validate_dataset(ds, source=files[0], layout="grid")
    return ds


def is_monthly_grid(path: str | Path) -> bool:
    """Whether a netCDF grid's time step is a month (read with `read_monthly_grid`)."""
    with _open_one(Path(path)) as raw:
        ds = _normalise_grid(raw, Path(path))
        return _resolution(ds["time"].values) == "monthly"


def read_ghcn_cams(path: str | Path) -> xr.Dataset:
    """NOAA CPC GHCN-CAMS monthly 2-m air temperature (``air`` in degK) → ``tair`` °C, monthly."""
    return read_monthly_grid(path)


def read_bcsd_obs(path: str | Path) -> xr.Dataset:
    """Maurer et al. (2002) BCSD observed monthly grids (``pr`` mm per month, ``tas`` °C) → monthly
    ``precip`` (mm d-1) and ``tair`` (°C)."""
    return read_monthly_grid(path)
