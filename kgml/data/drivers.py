"""Checks of the drivers on every path into a model (train, predict, evaluate, map, explain, scenario): units and
valid ranges from the registry (`kgml.variables`) with its unit-mistake hints, non-finite values, and the record
of which (site, day) had every driver — prediction leaves the others NaN, never fills them with zeros.

Building the physics layer's `Met` from a dataset (`met_from_dataset`): required drivers (``tmin``, ``tmax``,
``sw_in``, ``precip``) are errors when missing; ``tair``, ``vpd`` and ``tsoil`` are derived as in
`process_models.forcing.make_met` (documented approximations); ``co2`` (400 ppm) and ``patm`` (101325 Pa)
take a default when absent, warned once and recorded (``driver_defaults``); a site without any value of a
driver stays NaN (`fill_driver_gaps`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, MutableMapping, Sequence

import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError, DataWarning
from kgml.variables import VARIABLES, normalise_units
from process_models import constants as C
from process_models.forcing import Met, make_met

__all__ = [
    "OPTIONAL_DRIVER_DEFAULTS",
    "PHYSICS_DRIVERS",
    "REQUIRED_DRIVERS",
    "check_driver_values",
    "check_drivers",
    "check_gridded_drivers",
    "driver_coverage",
    "fill_driver_gaps",
    "mask_missing_drivers",
    "met_from_dataset",
    "model_drivers",
    "require_driver_values",
]

#: Drivers the process models read from a (site, time) dataset when present (`met_from_dataset`).
PHYSICS_DRIVERS = ("tmin", "tmax", "tair", "sw_in", "precip", "vpd", "tsoil", "swc", "co2", "patm")

#: Fraction of the finite (tmin, tmax) pairs with tmin > tmax above which the two columns are taken as swapped.
SWAPPED_FRACTION = 0.5


def _source(ds: xr.Dataset, source) -> str:
    return str(source if source is not None else ds.attrs.get("source", "<dataset>"))


def check_driver_values(name: str, values: np.ndarray, source: str, units: str | None = None,
                        where: str = "", counted: bool = True) -> None:
    """One driver's values against the registry: ``units`` (when given) must be the canonical ones, ±inf is an
    error, finite values must lie in the valid range (the message carries the likely unit mistake), and a
    *certain* unit mistake (e.g. a 0–1 fraction where % is expected) is an error even in range. NaN (a gap)
    is allowed: gaps are masked, see `mask_missing_drivers`."""
    var = VARIABLES.get(name)
    if var is None:
        return
    if units is not None and normalise_units(units) != normalise_units(var.units):
        raise DataValidationError(source, name, f"units {units!r} but the model expects {var.units!r}; convert "
                                  f"with kgml.variables.convert_units(x, {units!r}, {var.units!r})")
    arr = np.asarray(values, dtype=np.float64)
    infinite = np.isinf(arr)
    if infinite.any():
        raise DataValidationError(source, name, f"{int(infinite.sum())} infinite value(s){where}: out of range "
                                  f"[{var.valid_min}, {var.valid_max}] {var.units} (overflow or a missing-value "
                                  "code?); set gaps to NaN")
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return
    bad = (finite < var.valid_min) | (finite > var.valid_max)
    if bad.any():
        hint = var.diagnose(finite)
        raise DataValidationError(
            source, name,
            f"{f'{int(bad.sum())} value(s)' if counted else 'values'}{where} outside the valid range [{var.valid_min}, {var.valid_max}] "
            f"{var.units} (found min {finite.min():.4g}, max {finite.max():.4g})"
            + (f". Likely unit mistake: {hint}" if hint else ""))
    certain = var.diagnose(finite, certain_only=True)
    if certain:
        raise DataValidationError(source, name, f"values in range but implausible: {certain}")


def _check_swapped(tmin: np.ndarray, tmax: np.ndarray, source: str) -> None:
    both = np.isfinite(tmin) & np.isfinite(tmax)
    swapped = both & (tmin > tmax)
    if both.any() and swapped.sum() > SWAPPED_FRACTION * both.sum():
        raise DataValidationError(source, "tmin", f"tmin exceeds tmax on {int(swapped.sum())} of {int(both.sum())} "
                                  "days: are the tmin and tmax columns swapped?")


def check_drivers(ds: xr.Dataset, names: Iterable[str], source=None) -> None:
    """Check the drivers ``names`` (those present in ``ds``; registered ones) before they go into a model:
    `check_driver_values` for each, and tmin/tmax not swapped. Raises `DataValidationError`."""
    src = _source(ds, source)
    present = [n for n in dict.fromkeys(names) if n in ds.data_vars]
    for name in present:
        da = ds[name]
        check_driver_values(name, da.values, src, da.attrs.get("units"))
    if "tmin" in ds and "tmax" in ds:
        _check_swapped(np.asarray(ds["tmin"].values, float), np.asarray(ds["tmax"].values, float), src)


def require_driver_values(ds: xr.Dataset, names: Sequence[str], source=None, targets: Sequence[str] = ()) -> None:
    """Every site of ``ds`` (training sites) that has an observed value of one of ``targets`` (all sites when
    ``targets`` is empty) has some value of each driver in ``names``: a driver that a site lacks entirely
    cannot be interpolated, and a zero in its place would be trained on as a measurement. A site without
    targets there (e.g. a county whose record ends before the training years) contributes no window, so its
    missing drivers do no harm."""
    src = _source(ds, source)
    observed = np.ones(ds.sizes["site"], bool)
    present = [t for t in targets if t in ds.data_vars]
    if present:
        observed = np.zeros(ds.sizes["site"], bool)
        for t in present:
            observed |= np.isfinite(np.asarray(ds[t].transpose("site", ...).values, float)).reshape(
                ds.sizes["site"], -1).any(axis=1)
    for name in names:
        v = np.asarray(ds[name].transpose("site", ...).values, float).reshape(ds.sizes["site"], -1)
        empty = ~np.isfinite(v).any(axis=1) & observed
        if empty.any():
            sites = ds.site.values.astype(str)[empty].tolist()
            raise DataValidationError(src, name, f"no value at {len(sites)} training site(s) {sites[:5]}: give the "
                                      "driver, or leave these sites out of training")


def model_drivers(ds: xr.Dataset, features: Sequence[str]) -> list[str]:
    """The drivers of ``ds`` that a model with these ``features`` reads: its features and the physics drivers."""
    return [n for n in dict.fromkeys([*features, *PHYSICS_DRIVERS]) if n in ds.data_vars and "time" in ds[n].dims]


def driver_coverage(ds: xr.Dataset, names: Sequence[str]) -> tuple[np.ndarray, xr.Dataset]:
    """(complete, record): ``complete`` (site, time) is True where every driver in ``names`` is finite;
    ``record`` holds per site ``driver_coverage`` (fraction of days with every driver) and ``driver_missing``
    (site, driver: days without it)."""
    n_site, n_time = ds.sizes["site"], ds.sizes["time"]
    complete = np.ones((n_site, n_time), bool)
    missing = np.zeros((n_site, len(names)), np.int32)
    for j, name in enumerate(names):
        ok = np.broadcast_to(np.isfinite(np.asarray(ds[name].transpose(..., "time").values, float)), (n_site, n_time))
        complete &= ok
        missing[:, j] = (~ok).sum(axis=1)
    record = xr.Dataset(
        {"driver_coverage": ("site", (complete.sum(axis=1) / max(n_time, 1)).astype(np.float32),
                             {"units": "1", "long_name": "fraction of days with every driver; outputs are NaN on "
                              "the other days"}),
         "driver_missing": (("site", "driver"), missing, {"units": "1", "long_name": "days without this driver"})},
        coords={"site": ds.site.values, "driver": list(names)})
    return complete, record


def mask_missing_drivers(pred: xr.Dataset, ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """``pred`` with its (site, time) outputs NaN where a driver in ``names`` was missing in ``ds`` and its
    (site, year) outputs NaN in years with such a day, plus the `driver_coverage` record."""
    if not names:
        return pred
    obs = ds[list(names)].sel(site=pred.site.values).reindex(time=pred.time.values)
    complete, record = driver_coverage(obs, list(names))
    ok = xr.DataArray(complete, dims=("site", "time"), coords={"site": pred.site.values, "time": pred.time.values})
    out = pred.copy()
    year_ok = None
    if "year" in pred.dims:
        years = pd_years(pred.time.values)
        year_ok = np.stack([complete[:, years == y].all(axis=1) if (years == y).any() else np.ones(len(pred.site), bool)
                            for y in pred.year.values], axis=1)
    for name, da in pred.data_vars.items():
        if set(da.dims) == {"site", "time"}:
            out[name] = da.where(ok)
        elif year_ok is not None and set(da.dims) == {"site", "year"}:
            out[name] = da.where(xr.DataArray(year_ok, dims=("site", "year"),
                                              coords={"site": pred.site.values, "year": pred.year.values}))
        out[name].attrs = dict(da.attrs)
    return out.merge(record.assign_coords(site=pred.site.values))


def pd_years(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[Y]").astype(int) + 1970


def check_gridded_drivers(forcing: xr.Dataset, names: Sequence[str], source=None) -> None:
    """Range and non-finite checks of gridded (lazy) drivers before mapping: per variable its count of ±inf
    and its finite min and max are computed (one pass over the data); the error names the file, the variable
    and the likely unit mistake. NaN cells are allowed (they are not mapped)."""
    import dask

    src = _source(forcing, source)
    todo = [n for n in names if n in forcing and n in VARIABLES]
    if not todo:
        return
    lazy = []
    for name in todo:
        da = forcing[name]
        finite = da.where(np.isfinite(da))
        lazy.append((np.isinf(da).sum().data, finite.min().data, finite.max().data))
    for name, (n_inf, lo, hi) in zip(todo, dask.compute(*lazy), strict=True):
        var = VARIABLES[name]
        if int(n_inf):
            raise DataValidationError(src, name, f"{int(n_inf)} infinite value(s): out of range [{var.valid_min}, "
                                      f"{var.valid_max}] {var.units} (overflow or a missing-value code?); set gaps "
                                      "to NaN")
        sample = np.array([float(lo), float(hi)], np.float64)
        check_driver_values(name, sample[np.isfinite(sample)], src, forcing[name].attrs.get("units"), counted=False)


#: Drivers the physics cannot run without.
REQUIRED_DRIVERS = ("tmin", "tmax", "sw_in", "precip")

#: Optional drivers and the value used when a dataset lacks them (recorded as ``driver_defaults``).
OPTIONAL_DRIVER_DEFAULTS = {"co2": (400.0, "ppm"), "patm": (C.P_STANDARD, "Pa")}

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, DataWarning, stacklevel=3)


def met_from_dataset(ds: xr.Dataset, *, defaults: MutableMapping[str, str] | None = None) -> Met:
    """The raw daily drivers of a (site, time) dataset as a `Met` of numpy float32 arrays (site, time).

    A missing required driver (`REQUIRED_DRIVERS`) is a `DataValidationError` naming it, except tmin/tmax
    where ``tair`` is given: both become ``tair`` (no diurnal range), warned once and recorded in ``defaults``;
    ``tair``, ``vpd`` and ``tsoil`` are derived as in `make_met` when absent; a missing ``co2`` or ``patm`` takes its
    `OPTIONAL_DRIVER_DEFAULTS` value, warned once per process and written into ``defaults`` (driver →
    "value units") when given, so that outputs can record it. ``doy`` comes from the time coordinate, ``lat``
    from the site coordinate. ``swc`` (%) becomes m3 m-3, NaN wherever a ``swc_measured`` flag says 0 (a fill
    that feature models read is not a measurement the physics may use); ``swc_rew`` becomes ``rew``.
    """
    source = _source(ds, ds.encoding.get("source"))
    have_range = "tmin" in ds and "tmax" in ds
    missing = [k for k in REQUIRED_DRIVERS if k not in ds and not (k in ("tmin", "tmax") and "tair" in ds)]
    if missing:
        raise DataValidationError(source, missing[0], f"required driver(s) {missing} missing")
    doy = np.asarray(ds.time.dt.dayofyear.values, np.float32)
    n_sites = ds.sizes["site"]
    doy = np.broadcast_to(doy, (n_sites, doy.size))
    lat = np.asarray(ds["lat"].values, np.float32)[:, None]

    def get(name):
        return ds[name].transpose("site", "time").values.astype(np.float32) if name in ds else None

    kwargs = {k: get(k) for k in ("tmin", "tmax", "sw_in", "precip", "tair", "vpd", "tsoil")}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if not have_range:
        # Only the mean temperature: tmin = tmax = tair (no diurnal range), warned once and recorded.
        kwargs["tmin"] = kwargs["tmax"] = kwargs["tair"]
        if defaults is not None:
            defaults["tmin"] = defaults["tmax"] = "tair (no diurnal range)"
        _warn_once("tmin/tmax", f"{source}: no tmin/tmax: using tair for both (no diurnal range; "
                                "affects net radiation and derived VPD; recorded as driver_defaults)")
    if "swc" in ds:  # % in the dataset (kgml.variables), m3 m-3 in Met
        kwargs["swc"] = get("swc") / 100.0
        if "swc_measured" in ds:  # the fill a feature model reads is never a measurement for the physics
            kwargs["swc"] = np.where(get("swc_measured") > 0.5, kwargs["swc"], np.nan).astype(np.float32)
    if "swc_rew" in ds:  # relative extractable water (0–1), NaN where not measured
        kwargs["rew"] = get("swc_rew")
    if "evergreen" in ds:  # evergreen share of the canopy (0–1), a site constant (site,) or on (site, time)
        ev = ds["evergreen"]
        ev = ev.transpose("site", "time") if "time" in ev.dims else ev.transpose("site").expand_dims(time=1, axis=1)
        v = ev.values.astype(np.float32)
        bad = ~np.isfinite(v) | (v < 0) | (v > 1)
        if bad.any():
            site = str(ds.site.values[np.nonzero(bad.any(axis=1))[0][0]])
            raise DataValidationError(source, "evergreen", f"must be a fraction in [0, 1] at every site (site {site!r} "
                                      "has a missing or out-of-range value)")
        kwargs["evergreen"] = v
    for k, (value, units) in OPTIONAL_DRIVER_DEFAULTS.items():
        if k in ds:
            kwargs[k] = get(k)
        else:
            kwargs[k] = np.float32(value)
            if defaults is not None:
                defaults[k] = f"{value:g} {units}"
            _warn_once(k, f"{source}: driver {k!r} not in the data: using {value:g} {units} "
                          f"everywhere (recorded as driver_defaults)")
    met = make_met(doy=doy, lat=lat, **kwargs)
    return Met(*(None if v is None else np.asarray(v) for v in met))


def fill_driver_gaps(values: np.ndarray, name: str, sites: Sequence[str],
                     empty: dict[str, list[str]] | None = None) -> np.ndarray:
    """Fill NaN in a (site, time) driver by linear interpolation in time (constant beyond the ends; a single
    value: that value). A site without any value of the driver stays NaN — its physics outputs are NaN, never
    those of a made-up 0 — and is recorded in ``empty`` (driver → sites) when given."""
    out = values.astype(np.float64).copy()
    t = np.arange(out.shape[1])
    ok_all = np.isfinite(out)
    for s in range(out.shape[0]):
        ok = ok_all[s]
        if ok.all():
            continue
        if not ok.any():
            if empty is not None:
                empty.setdefault(name, []).append(str(sites[s]))
            continue
        out[s] = np.interp(t, t[ok], out[s, ok])
    return out.astype(np.float32)
