"""Area-weighted budgets of a map by region or latitude band, their markdown tables, and PNG maps with
units."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from kgml.io import pyplot, write_png_atomic
from kgml.spatial.grid_drivers import (
    FLUXES,
    G_PER_TG,
)

# ---------------------------------------------------------------------------------------------------------
# Budgets and figures
# ---------------------------------------------------------------------------------------------------------


def latitude_bands(lat: np.ndarray, lon: np.ndarray, width: float = 10.0) -> xr.DataArray:
    """Labels of ``width``-degree latitude bands on the grid (the default regions of a budget)."""
    lo = np.floor(np.asarray(lat) / width) * width
    labels = np.array([f"{a:+.0f}..{a + width:+.0f}N" for a in lo])
    return xr.DataArray(np.broadcast_to(labels[:, None], (len(lat), len(lon))), dims=("lat", "lon"),
                        coords={"lat": lat, "lon": lon})


def budget_table(mapped: xr.Dataset, groups: Mapping[str, xr.DataArray] | None = None):
    """Area-weighted budgets of a map: per group (``"domain"``: every mapped cell; ``"lat_band"``: 10°
    bands; ``"training_climate"``: cells whose static attributes lie within 3 training standard deviations
    or not; plus each given (lat, lon) label map, e.g. ``{"land_cover": lc}``) and label: mapped cells,
    area (km2), mean GPP/Reco/NEE over the mapped months (gC m-2 d-1, area-weighted) and totals over those
    months (TgC; flux × days of each month × area); where the map has calibrated bounds at `BUDGET_LEVEL`
    (``kgml map`` with a calibration record), ``<v>_total_tgc_lower_90`` / ``_upper_90``: the totals of the
    cell bounds (the full-correlation envelope, see `budget_markdown`). Returns a `pandas.DataFrame`."""
    groups = {"domain": None, "lat_band": latitude_bands(mapped.lat.values, mapped.lon.values), **dict(groups or {})}
    if "static_max_abs_z" in mapped:
        groups.setdefault("training_climate", xr.DataArray(np.where(
            mapped["static_max_abs_z"].values > 3, "extrapolated (z-score above 3)", "within 3 sd"), dims=("lat", "lon")))
    area = mapped["cell_area"].values.astype(np.float64)
    ok = mapped["mapped"].values.astype(bool)
    days = np.asarray(pd.DatetimeIndex(mapped.time.values).days_in_month, np.float64)
    fl = {v: mapped[v].values.astype(np.float64) for v in FLUXES}
    rows = []
    for group, labels in groups.items():
        lab = np.full(area.shape, "all", object) if labels is None else np.asarray(getattr(labels, "values", labels))
        if lab.shape != area.shape:
            raise ValueError(f"budget group {group!r}: labels shaped {lab.shape}, the grid is {area.shape}")
        for label in sorted({str(x) for x in lab[ok]}):
            sel = ok & (lab.astype(str) == label)
            a = area * sel
            row = {"group": group, "label": label, "cells": int(sel.sum()), "area_km2": float(a.sum() / 1e6)}
            for v in FLUXES:
                x = np.where(sel[None], fl[v], 0.0)
                w = np.where(np.isfinite(x), a[None], 0.0)
                x = np.nan_to_num(x)
                row[f"{v}_mean_gc_m2_d"] = float((x * w).sum() / max(w.sum(), 1e-30))
                row[f"{v}_total_tgc"] = float((x * w * days[:, None, None]).sum() / G_PER_TG)
                for side in ("lower", "upper"):
                    b = f"{v}_{side}_{BUDGET_LEVEL}"
                    if b in mapped:  # every cell-month at its bound together: the full-correlation envelope
                        xb = np.nan_to_num(np.where(sel[None], mapped[b].values.astype(np.float64), 0.0),
                                           posinf=np.inf, neginf=-np.inf)
                        row[f"{v}_total_tgc_{side}_{BUDGET_LEVEL}"] = float((xb * w * days[:, None, None]).sum()
                                                                            / G_PER_TG)
            rows.append(row)
    return pd.DataFrame(rows)


#: Level of the calibrated bounds carried to the budgets (`budget_table`), in percent.
BUDGET_LEVEL = 90


def budget_markdown(table, title: str = "") -> str:
    cols = ["group", "label", "cells", "area_km2"] + [f"{v}_{k}" for v in FLUXES for k in ("mean_gc_m2_d", "total_tgc")]
    bounds = [c for c in table.columns if "_total_tgc_" in str(c)]
    cols += bounds
    lines = ([f"## {title}", ""] if title else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    lines += ["", "Means: area-weighted over mapped cells and months (gC m-2 d-1); totals: over the mapped months "
              "(TgC). NEE > 0 is a source to the atmosphere."]
    if bounds:
        lines += ["", f"*_total_tgc_lower/upper_{BUDGET_LEVEL}: the totals of the calibrated {BUDGET_LEVEL} % cell bounds "
                  "(`kgml calibrate`, monthly means) — every cell-month at its bound together, i.e. errors fully "
                  "correlated over the region: exact if they are, wider than needed for Gaussian errors of any "
                  "correlation (the sd of a sum is at most the sum of the sds); the site calibration says nothing "
                  "of spatial correlation, so no narrower interval is claimed."]
    return "\n".join(lines) + "\n"


#: A field whose range is below this share of its magnitude is drawn as uniform, not stretched over the colours.
UNIFORM_RELATIVE_RANGE = 0.01


def colour_limits(values, *, diverging: bool) -> tuple[float | None, float | None, bool]:
    """(vmin, vmax, nearly_uniform) of a map's colour scale: symmetric about 0 for diverging fields; for
    the others the data range, unless it is below `UNIFORM_RELATIVE_RANGE` of the field's magnitude — then
    the median ± that share, so a parameter that varies by 0.03 % does not fill the whole colour map."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None, False
    if diverging:
        lim = float(np.max(np.abs(v))) or 1.0
        return -lim, lim, False
    lo, hi, mid = float(v.min()), float(v.max()), float(np.median(v))
    half = UNIFORM_RELATIVE_RANGE * abs(mid) / 2
    if hi - lo < 2 * half:
        return mid - half, mid + half, True
    return None, None, False


def plot_maps(ds: xr.Dataset, path, variables: Sequence[str] | None = None, *, title: str = "",
              cmap: Mapping[str, str] | None = None) -> Path | None:
    """PNG of the time-mean maps of ``variables`` (default: gpp, reco, nee, nee_sd if present, learned
    parameters)."""
    try:
        plt = pyplot()
    except ImportError:
        warnings.warn("matplotlib not installed (pip install 'kgml[plot]'): no figure written", stacklevel=2)
        return None

    if variables is None:
        variables = [v for v in (*FLUXES, "nee_sd") if v in ds] + [v for v in ds.data_vars
                                                                    if str(v).startswith("theta_") and not str(v).endswith("_sd")]
    variables = list(variables)
    n = len(variables)
    ncol = min(n, 3)
    nrow = int(math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), constrained_layout=True, squeeze=False)
    for ax, v in zip(axes.ravel(), variables, strict=False):
        da_ = ds[v].mean("time") if "time" in ds[v].dims else ds[v]
        vals = da_.values
        div = v.startswith("nee") and not v.endswith("_sd") or v.startswith("d_")
        kw = {"cmap": (cmap or {}).get(v, "RdBu_r" if div else "viridis")}
        vmin, vmax, uniform = colour_limits(vals, diverging=div)
        if vmin is not None:
            kw.update(vmin=vmin, vmax=vmax)
        im = ax.pcolormesh(ds.lon.values, ds.lat.values, vals, shading="nearest", **kw)
        fig.colorbar(im, ax=ax, shrink=0.85, label=str(ds[v].attrs.get("units", "")).replace("g m-2 d-1", "gC m-2 d-1"))
        ax.set(title=v + (" (mean over months)" if "time" in ds[v].dims else "") + (" (nearly uniform)" if uniform else ""),
               xlabel="lon", ylabel="lat")
        ax.set_aspect("equal", adjustable="box")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return write_png_atomic(fig, path)


