"""Aggregation of a tower dataset to a coarser resolution with a coverage threshold."""

from __future__ import annotations

import numpy as np
import xarray as xr

from kgml.data.towers.common import (
    _STEP,
)

# --- aggregation --------------------------------------------------------------------------------------


def aggregate_to(ds: xr.Dataset, resolution: str, *, min_coverage: float = 0.5) -> xr.Dataset:
    """Aggregate a HH/HR/DD dataset to a coarser resolution (HR, DD, MM, YY) as the mean of rates.

    Because fluxes and precipitation are rates (gC m-2 d-1, mm d-1), the mean is the right aggregate for every
    variable. A period keeps a value only where the fraction of its expected sub-steps that are observed is at
    least ``min_coverage`` (expected = calendar length / the source step, so missing rows count as gaps).
    """
    source_res = ds.attrs.get("time_resolution")
    order = ["HH", "HR", "DD", "MM", "YY"]
    if source_res not in ("HH", "HR", "DD") or resolution not in order or order.index(resolution) <= order.index(source_res):
        raise ValueError(f"cannot aggregate {source_res} to {resolution}; source must be HH/HR/DD and finer than the target")
    freq = {"HR": "1h", "DD": "1D", "MM": "MS", "YY": "YS"}[resolution]
    step = _STEP[source_res]
    resampled = ds.resample(time=freq)
    mean = resampled.mean(skipna=True)
    count = resampled.count()
    periods = mean["time"].values
    nxt = {
        "HR": periods + np.timedelta64(1, "h"),
        "DD": periods + np.timedelta64(1, "D"),
        "MM": (periods.astype("datetime64[M]") + 1).astype("datetime64[ns]"),
        "YY": (periods.astype("datetime64[Y]") + 1).astype("datetime64[ns]"),
    }[resolution]
    expected = xr.DataArray((nxt - periods) / step, dims="time", coords={"time": periods})
    out = mean.where(count / expected >= min_coverage)
    for name in out.data_vars:
        out[name] = out[name].transpose(*ds[name].dims).astype(np.float32).assign_attrs(ds[name].attrs)
    out.attrs = {**ds.attrs, "time_resolution": resolution, "aggregation": f"mean of {source_res} rates, min_coverage={min_coverage}"}
    keep = [n for n in out.data_vars if bool(np.isfinite(out[n].values).any())]
    return out[keep]
