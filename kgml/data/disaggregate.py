"""Monthly drivers to smooth daily series that keep every monthly mean.

A monthly driver held on every day of its month (`kgml.data.assemble.fluxnet_monthly`) steps at each month's
boundary: the daily physics sees mid-April on 1 April and a jump on 1 May. `mean_preserving_daily` replaces the
steps by the mean-preserving linear interpolation of Killworth (1996, J. Phys. Oceanogr. 26:136–142,
doi:10.1175/1520-0485(1996)026<0136:TIOFFI>2.0.CO;2): a piecewise-linear daily series through one pseudo-value
per month, placed at the month's midpoint, with the pseudo-values solved (one tridiagonal system per record
segment, month lengths exact) so that each month's mean of the daily series equals the monthly value exactly.
Plain linear interpolation between the monthly means (e.g. LPJ, Sitch et al. 2003 Glob. Change Biol. 9:161)
flattens the seasonal extremes, and its monthly means differ from the data; this one does not.

A driver with a physical lower bound (shortwave radiation, vapour-pressure deficit ≥ 0) is clipped there and each
month's part above the bound is rescaled so that its mean is again the monthly value (the bound and the mean both
hold exactly; Rymes & Myers 2001, Sol. Energy 71:225, treat bounds by iteration). Precipitation is left as it is:
a month's total spread as a uniform daily rate is the documented choice for a flux that is intermittent in
reality, and smoothing a rate would invent nothing of its timing. A month with a missing value splits the record
into segments, interpolated separately; a segment of one month stays held.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError

__all__ = ["SMOOTHED_DRIVERS", "mean_preserving_daily", "smooth_monthly_drivers"]

#: Drivers `smooth_monthly_drivers` interpolates, with their physical lower bound (None: unbounded). tmin and
#: tmax follow tair (their offsets from it kept); precip, co2, patm and soil water stay held.
SMOOTHED_DRIVERS: Mapping[str, float | None] = {"tair": None, "tsoil": None, "sw_in": 0.0, "vpd": 0.0}

#: Relative tolerance of the "held on every day of its month" check.
_HELD_RTOL = 1e-5


def _segments(ok: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _interpolation(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For months of ``lengths`` days: L (day × month), the linear interpolation through pseudo-values at the
    months' midpoints evaluated at the days' centres (held flat before the first and after the last midpoint),
    and A = (month mean of L) (month × month), tridiagonal."""
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    mids = (bounds[:-1] + bounds[1:]) / 2.0
    centres = np.arange(bounds[-1]) + 0.5
    n = len(lengths)
    interp = np.empty((bounds[-1], n))
    for k in range(n):
        interp[:, k] = np.interp(centres, mids, np.eye(n)[k])
    a = np.add.reduceat(interp, bounds[:-1], axis=0) / lengths[:, None]
    return interp, a


def mean_preserving_daily(daily: np.ndarray, month_of_day: np.ndarray, *, lower: float | None = None,
                          name: str = "driver", source: object = None) -> np.ndarray:
    """Killworth's mean-preserving linear interpolation of a month-held daily series (see the module).

    ``daily`` (site, day): each month's value held on its days (NaN where missing); ``month_of_day`` (day,):
    the month each day belongs to (non-decreasing integers; consecutive days of one month share it). Returns a
    float64 (site, day) array whose mean over every month equals the held value (to rounding), continuous and
    piecewise linear within each record segment, ≥ ``lower`` where given. A month whose days are not one
    value, or only partly missing, is an error naming ``name`` (not a month-held series).
    """
    x = np.asarray(daily, dtype=np.float64)
    month = np.asarray(month_of_day)
    if x.ndim != 2 or month.shape != (x.shape[1],):
        raise ValueError(f"daily must be (site, day) and month_of_day (day,), got {x.shape} and {month.shape}")
    if np.any(np.diff(month) < 0):
        raise ValueError("month_of_day must be non-decreasing")
    starts = np.flatnonzero(np.concatenate([[True], np.diff(month) != 0]))
    lengths = np.diff(np.concatenate([starts, [len(month)]]))
    first = x[:, starts]
    finite = np.isfinite(x)
    n_finite = np.add.reduceat(finite, starts, axis=1)
    partial = (n_finite > 0) & (n_finite < lengths)
    held = np.repeat(first, lengths, axis=1)
    off = finite & ~np.isclose(x, held, rtol=_HELD_RTOL, atol=_HELD_RTOL)
    if partial.any() or off.any():
        s = int(np.argmax((partial.any(axis=1)) | off.any(axis=1)))
        raise DataValidationError(source, name, f"site index {s}: not held on every day of its month (a month "
                                  "with differing or partly missing daily values); only month-held series are "
                                  "disaggregated")
    if lower is not None and np.any(first[np.isfinite(first)] < lower):
        raise DataValidationError(source, name, f"monthly value below its lower bound {lower:g}")
    out = np.full_like(x, np.nan)
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for s in range(x.shape[0]):
        for m0, m1 in _segments(np.isfinite(first[s])):
            d0, d1 = starts[m0], starts[m0] + lengths[m0:m1].sum()
            if m1 - m0 == 1:
                out[s, d0:d1] = first[s, m0]
                continue
            if (m0, m1) not in cache:
                cache[(m0, m1)] = _interpolation(lengths[m0:m1])
            interp, a = cache[(m0, m1)]
            y = interp @ np.linalg.solve(a, first[s, m0:m1])
            if lower is not None:
                y = _restore_means(np.maximum(y, lower), first[s, m0:m1], lengths[m0:m1], lower)
            out[s, d0:d1] = y
    return out


def _restore_means(y: np.ndarray, means: np.ndarray, lengths: np.ndarray, lower: float) -> np.ndarray:
    """Rescale each month's part of ``y`` above ``lower`` so that the month's mean is ``means`` again."""
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    got = np.add.reduceat(y, bounds[:-1]) / lengths
    excess = got - lower
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(excess > 0, (means - lower) / excess, 0.0)
    return lower + (y - lower) * np.repeat(scale, lengths)


#: How `kgml.data.assemble` describes a month-held driver (replaced in the comment of a smoothed one).
_HELD_PHRASE = "the month's mean held on every day of the month (monthly mean preserved exactly)"


def _comment(attrs: Mapping, method: str) -> str:
    old = str(attrs.get("comment", ""))
    return old.replace(_HELD_PHRASE, method) if _HELD_PHRASE in old else "; ".join(p for p in (old, method) if p)


def smooth_monthly_drivers(ds: xr.Dataset, drivers: Mapping[str, float | None] | None = None) -> xr.Dataset:
    """``ds`` with its month-held daily drivers replaced by `mean_preserving_daily` (every monthly mean kept).

    ``drivers`` maps each name to its lower bound (default `SMOOTHED_DRIVERS`; names absent from ``ds`` are
    skipped). tmin and tmax, where present, keep their daily offsets from tair. The dataset's ``time`` must be
    daily; a driver that is not held within its months is an error (`mean_preserving_daily`). Attributes record
    the method (``driver_method``, each variable's ``comment``)."""
    drivers = SMOOTHED_DRIVERS if drivers is None else drivers
    source = ds.attrs.get("source")
    times = np.asarray(ds["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DataValidationError(source, "time", "not a datetime axis; smoothing needs daily dates")
    if len(times) > 1 and not np.all(np.diff(times.astype("datetime64[D]").astype(np.int64)) == 1):
        raise DataValidationError(source, "time", "not a contiguous daily axis")
    month = times.astype("datetime64[M]").astype(np.int64)
    out = ds.copy()
    method = ("Killworth (1996) mean-preserving linear interpolation of the monthly means (each month's mean "
              "kept exactly; bounded drivers clipped and rescaled within the month; kgml.data.disaggregate)")
    for name, lower in drivers.items():
        if name not in ds:
            continue
        da = ds[name].transpose("site", "time")
        smooth = mean_preserving_daily(da.values, month, lower=lower, name=name, source=source)
        if name == "tair":
            for dep in ("tmin", "tmax"):
                if dep in ds:
                    offset = ds[dep].transpose("site", "time").values.astype(np.float64) - da.values
                    out[dep] = (("site", "time"), (smooth + offset).astype(ds[dep].dtype),
                                {**ds[dep].attrs, "comment": _comment(ds[dep].attrs, f"tair from {method}")})
        out[name] = (("site", "time"), smooth.astype(da.dtype),
                     {**da.attrs, "comment": _comment(da.attrs, f"daily series: {method}")})
    done = ", ".join(n for n in drivers if n in ds)
    out.attrs["driver_method"] = "; ".join(p for p in (ds.attrs.get("driver_method", ""), f"then {done}: {method}") if p)
    return out
