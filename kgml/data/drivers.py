"""The physics layer's daily drivers from a (site, time) dataset: required ones are errors when missing,
optional ones get a documented default that is warned once and recorded.

Required: ``tmin``, ``tmax`` (°C), ``sw_in`` (W m-2), ``precip`` (mm d-1). Derived when absent, as in
`process_models.forcing.make_met` (documented approximations, not fallbacks): ``tair`` = (tmin + tmax)/2,
``vpd`` from tmin/tmax (dew point ≈ tmin), ``tsoil`` = tair. Optional with a default: ``co2`` (400 ppm) and
``patm`` (standard pressure, 101325 Pa).
"""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping, Sequence

import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError, DataWarning
from process_models import constants as C
from process_models.forcing import Met, make_met

__all__ = ["OPTIONAL_DRIVER_DEFAULTS", "REQUIRED_DRIVERS", "fill_driver_gaps", "met_from_dataset"]

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

    A missing required driver (`REQUIRED_DRIVERS`) is a `DataValidationError` naming it; ``tair``, ``vpd``
    and ``tsoil`` are derived as in `make_met` when absent; a missing ``co2`` or ``patm`` takes its
    `OPTIONAL_DRIVER_DEFAULTS` value, warned once per process and written into ``defaults`` (driver →
    "value units") when given, so that outputs can record it. ``doy`` comes from the time coordinate, ``lat``
    from the site coordinate.
    """
    source = ds.encoding.get("source")
    missing = [k for k in REQUIRED_DRIVERS if k not in ds]
    if missing:
        hint = " (the dataset has tair: derive tmin/tmax explicitly, e.g. tair ∓ a diurnal range / 2 as " \
               "kgml.data.assemble does)" if "tair" in ds and set(missing) & {"tmin", "tmax"} else ""
        raise DataValidationError(source, missing[0], f"required driver(s) {missing} missing{hint}")
    doy = np.asarray(ds.time.dt.dayofyear.values, np.float32)
    n_sites = ds.sizes["site"]
    doy = np.broadcast_to(doy, (n_sites, doy.size))
    lat = np.asarray(ds["lat"].values, np.float32)[:, None]

    def get(name):
        return ds[name].transpose("site", "time").values.astype(np.float32) if name in ds else None

    kwargs = {k: get(k) for k in ("tmin", "tmax", "sw_in", "precip", "tair", "vpd", "tsoil")}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "swc" in ds:  # % in the dataset (kgml.variables), m3 m-3 in Met
        kwargs["swc"] = get("swc") / 100.0
    for k, (value, units) in OPTIONAL_DRIVER_DEFAULTS.items():
        if k in ds:
            kwargs[k] = get(k)
        else:
            kwargs[k] = np.float32(value)
            if defaults is not None:
                defaults[k] = f"{value:g} {units}"
            _warn_once(k, f"{source or 'dataset'}: driver {k!r} not in the data: using {value:g} {units} "
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
