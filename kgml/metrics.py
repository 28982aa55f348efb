"""Skill scores on numpy arrays with NaN as missing: RMSE, bias, R², NSE, KGE; and per-site / per-group
tables of them from xarray predictions and observations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["METRICS", "add_metric_units", "align_labels", "bias", "kge", "nse", "r2", "rmse", "score_table", "scores"]


_SAME_UNITS = ("rmse", "bias", "mae")  #: metrics in the scored variable's units
_DIMENSIONLESS = ("r2", "nse", "kge", "share", "fraction", "positive")
_COUNTS = ("n", "n_sites", "n_folds", "n_parameters", "group_sites", "sites")


def add_metric_units(ds: xr.Dataset, variable_units: str | list[str]) -> xr.Dataset:
    """Set ``units`` on the metric variables of a score dataset (by name: ``rmse``, ``site_rmse``,
    ``rmse_p90``, ``pooled_bias``, …): RMSE and bias in the scored variable's units (when every scored
    variable has the same units; otherwise the ``units`` coordinate says them and the attribute is left
    unset with a comment), R², NSE, KGE, shares and counts "1", ``*_seconds`` "s"."""
    units = sorted({u for u in np.atleast_1d(variable_units).astype(str) if u}) if len(
        np.atleast_1d(variable_units)) else []
    for name in ds.data_vars:
        tokens = str(name).split("_")
        if any(t in _SAME_UNITS for t in tokens):
            if len(units) == 1:
                ds[name].attrs["units"] = units[0]
            else:
                ds[name].attrs["comment"] = "in the units of each scored variable (coordinate units)"
        elif str(name).endswith("_seconds"):
            ds[name].attrs["units"] = "s"
        elif any(t in _DIMENSIONLESS for t in tokens) or str(name) in _COUNTS or tokens[-1] == "n":
            ds[name].attrs["units"] = "1"
    return ds


def align_labels(pred: xr.DataArray, obs: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """``pred`` and ``obs`` on the coordinate labels they share (site, time, year, …; inner join), in the
    same order: pairs by calendar date, never by position (predictions drop 29 February; observations
    keep it). Non-dimension coordinates are dropped so that they cannot block the join."""
    p = pred.reset_coords(drop=True)
    o = obs.reset_coords(drop=True)
    missing = [d for d in p.dims if d not in o.dims]
    if missing:
        raise ValueError(f"observation {obs.name!r} lacks the dimension(s) {missing} of prediction {pred.name!r}")
    p, o = xr.align(p, o, join="inner")
    extra = [d for d in o.dims if d not in p.dims]
    if extra:
        raise ValueError(f"observation {obs.name!r} has dimension(s) {extra} that prediction {pred.name!r} lacks")
    return p, o.transpose(*p.dims)


def _pair(pred, obs) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, np.float64).ravel()
    o = np.asarray(obs, np.float64).ravel()
    if p.shape != o.shape:
        raise ValueError(f"prediction and observation shapes differ: {p.shape} vs {o.shape}")
    ok = np.isfinite(p) & np.isfinite(o)
    return p[ok], o[ok]


def rmse(pred, obs) -> float:
    """Root-mean-square error over pairs where both are finite (NaN when there are none)."""
    p, o = _pair(pred, obs)
    return float(np.sqrt(np.mean((p - o) ** 2))) if p.size else float("nan")


def bias(pred, obs) -> float:
    """Mean error, prediction − observation."""
    p, o = _pair(pred, obs)
    return float(np.mean(p - o)) if p.size else float("nan")


def r2(pred, obs) -> float:
    """Squared Pearson correlation."""
    p, o = _pair(pred, obs)
    if p.size < 2 or p.std() == 0 or o.std() == 0:
        return float("nan")
    return float(np.corrcoef(p, o)[0, 1] ** 2)


def nse(pred, obs) -> float:
    """Nash–Sutcliffe efficiency 1 − Σ(p−o)²/Σ(o−ō)² (Nash & Sutcliffe 1970 J. Hydrol. 10:282)."""
    p, o = _pair(pred, obs)
    den = np.sum((o - o.mean()) ** 2) if p.size else 0.0
    return float(1.0 - np.sum((p - o) ** 2) / den) if den > 0 else float("nan")


def kge(pred, obs) -> float:
    """Kling–Gupta efficiency 1 − √((r−1)² + (α−1)² + (β−1)²), α = σp/σo, β = μp/μo (Gupta et al. 2009
    J. Hydrol. 377:80). β is undefined for μo = 0 (NEE can average to zero): NaN then."""
    p, o = _pair(pred, obs)
    if p.size < 2 or o.std() == 0 or p.std() == 0 or o.mean() == 0:
        return float("nan")
    r = np.corrcoef(p, o)[0, 1]
    return float(1.0 - np.sqrt((r - 1) ** 2 + (p.std() / o.std() - 1) ** 2 + (p.mean() / o.mean() - 1) ** 2))


METRICS: dict[str, Callable] = {"rmse": rmse, "bias": bias, "r2": r2, "nse": nse, "kge": kge}


def scores(pred, obs, metrics: Sequence[str] = ("rmse", "bias", "r2", "nse")) -> dict[str, float]:
    """Every named metric plus ``n`` (number of pairs)."""
    out = {m: METRICS[m](pred, obs) for m in metrics}
    out["n"] = int(_pair(pred, obs)[0].size)
    return out


def score_table(
    pred: xr.Dataset,
    obs: xr.Dataset,
    variables: Mapping[str, str] | Sequence[str],
    *,
    group: str | None = None,
    metrics: Sequence[str] = ("rmse", "bias", "r2", "nse"),
) -> list[dict]:
    """Rows of scores per variable for all sites together, each group of ``group`` (a site coordinate of
    ``obs``), and each site. ``variables`` maps prediction name → observation name (or a list of names
    present in both). Rows: {variable, scope ('all'|'group'|'site'), key, n, metrics...}."""
    pairs = dict(variables) if isinstance(variables, Mapping) else {v: v for v in variables}
    rows = []
    sites = [s for s in pred.site.values if s in set(obs.site.values)]
    for pname, oname in pairs.items():
        if pname not in pred or oname not in obs:
            continue
        p, o = align_labels(pred[pname].sel(site=sites).transpose("site", ...),
                            obs[oname].sel(site=sites))
        kept = p.site.values
        rows.append({"variable": pname, "scope": "all", "key": "all", **scores(p.values, o.values, metrics)})
        if group is not None and group in obs.coords:
            labels = obs[group].sel(site=kept).values.astype(str)
            for g in sorted(set(labels)):
                sel = labels == g
                rows.append({"variable": pname, "scope": "group", "key": g,
                             **scores(p.values[sel], o.values[sel], metrics)})
        for i, s in enumerate(kept):
            rows.append({"variable": pname, "scope": "site", "key": str(s), **scores(p.values[i], o.values[i], metrics)})
    return rows
