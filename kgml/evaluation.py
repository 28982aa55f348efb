"""Evaluation of predictions against observations on xarray: per-site and per-group skill, summaries over
held-out sites (median and bad tail), the FLUXCOM scale decomposition (site mean, mean seasonal cycle,
anomalies, inter-annual variability), and physical-consistency scores of a trained model.

Scalar metrics (NaN = missing) come from `kgml.metrics`. Predictions are the layout of
`kgml.experiment.predict_dataset` (daily ``nee`` on (site, time), ``<v>_monthly`` on (site, month) with the
month code ``year*12 + month-1``, ``crop_yield`` on (site, year)); observations are a Contract-A dataset.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from kgml.metrics import METRICS, add_metric_units, scores

__all__ = [
    "BAD_TAIL",
    "METRIC_NAMES",
    "RESOLUTIONS",
    "carbon_balance_residual",
    "decompose",
    "decomposition_scores",
    "metric_order",
    "noise_ceiling",
    "paired",
    "departure_scores",
    "departure_skill",
    "departures",
    "reference_skill",
    "residual_size",
    "score_sites",
    "scores_markdown",
    "share_at_bounds",
    "summarise",
    "temperature_monotonicity",
    "temperature_slope",
    "to_monthly",
]

RESOLUTIONS = ("daily", "monthly", "annual")
_STEP_DIM = {"daily": "time", "monthly": "month", "annual": "year"}
METRIC_NAMES = ("rmse", "bias", "r2", "nse", "kge")

#: The bad tail of each metric over sites: (summary key, percentile). Error metrics are bad when large, so
#: their 90th percentile is reported (``rmse_p90``; for bias the 90th percentile of |bias|); skill metrics are
#: bad when small, so their 10th percentile is reported (``r2_p10``, ``nse_p10``, ``kge_p10``).
BAD_TAIL = {"rmse": ("rmse_p90", 90.0), "bias": ("abs_bias_p90", 90.0), "r2": ("r2_p10", 10.0),
            "nse": ("nse_p10", 10.0), "kge": ("kge_p10", 10.0)}
_SKILL = ("r2", "nse", "kge")


def metric_order(variable: str) -> tuple[str, ...]:
    """The order in which to read the metrics of ``variable``. NEE averages near zero over a year, so
    KGE's bias ratio μp/μo (and NSE's reference, the mean) say little about it: NEE leads with R² and
    RMSE. Gross fluxes, soil respiration and yields lead with NSE and KGE."""
    if variable.removeprefix("true_").startswith("nee"):
        return ("r2", "rmse", "bias", "nse", "kge")
    return ("nse", "kge", "r2", "rmse", "bias")


# ---------------------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------------------


def _month_code(time: xr.DataArray) -> np.ndarray:
    return np.asarray(time.dt.year.values, np.int64) * 12 + np.asarray(time.dt.month.values, np.int64) - 1


def to_monthly(pred_daily: xr.Dataset, variables: Sequence[str] | None = None, *,
               min_fraction: float = 0.5) -> xr.Dataset:
    """Monthly means of daily (site, time) variables as ``<v>_monthly`` on (site, month), the month code
    ``year*12 + month-1`` of Contract A (so a daily model can be scored against monthly FLUXNET targets).

    A month is NaN at a site where fewer than ``min_fraction`` of its days on the time axis are finite
    (29 February, when dropped from the axis, does not count as missing). ``variables`` default: every
    data variable with dims (site, time). Units and site coordinates are kept.
    """
    if "time" not in pred_daily.dims:
        raise ValueError(f"to_monthly needs a daily dataset with a 'time' dim; dims are {tuple(pred_daily.dims)}")
    names = [str(v) for v in pred_daily.data_vars if set(pred_daily[v].dims) == {"site", "time"}] \
        if variables is None else list(variables)
    codes = _month_code(pred_daily.time)
    months, inverse = np.unique(codes, return_inverse=True)
    days_in_axis = np.bincount(inverse, minlength=months.size).astype(np.float64)
    onehot = np.zeros((codes.size, months.size))
    onehot[np.arange(codes.size), inverse] = 1.0
    out = {}
    for name in names:
        if name not in pred_daily:
            raise KeyError(f"to_monthly: variable {name!r} not in the dataset (has {sorted(map(str, pred_daily.data_vars))})")
        da = pred_daily[name]
        if set(da.dims) != {"site", "time"}:
            raise ValueError(f"to_monthly: {name!r} has dims {da.dims}, expected (site, time)")
        v = np.asarray(da.transpose("site", "time").values, np.float64)
        ok = np.isfinite(v)
        total = np.where(ok, v, 0.0) @ onehot
        count = ok.astype(np.float64) @ onehot
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where((count > 0) & (count >= min_fraction * days_in_axis), total / count, np.nan)
        attrs = {k: da.attrs[k] for k in ("units", "long_name") if k in da.attrs}
        attrs["cell_methods"] = "time: mean (monthly)"
        out[f"{name}_monthly"] = (("site", "month"), mean.astype(np.float32), attrs)
    coords = {"site": pred_daily.site.values, "month": ("month", months,
                                                        {"long_name": "months since year 0 (year*12 + month-1)"})}
    for c, v in pred_daily.coords.items():
        if c != "site" and v.dims == ("site",):
            coords[c] = v
    attrs = dict(pred_daily.attrs)
    if "time_resolution" in attrs:
        attrs["time_resolution"] = "monthly"
    return xr.Dataset(out, coords=coords, attrs=attrs)


def _at_resolution(ds: xr.Dataset, name: str, resolution: str, where: str) -> xr.DataArray:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    dim = _STEP_DIM[resolution]
    if resolution == "monthly":
        base = name.removesuffix("_monthly")
        for cand in (f"{base}_monthly", name):
            if cand in ds and "month" in ds[cand].dims:
                return ds[cand]
        if base in ds and "time" in ds[base].dims:
            return to_monthly(ds, [base])[f"{base}_monthly"]
        raise KeyError(f"{where}: neither {base + '_monthly'!r} on (site, month) nor daily {base!r} on "
                       f"(site, time) is in the dataset (has {sorted(map(str, ds.data_vars))})")
    if name not in ds:
        raise KeyError(f"{where}: variable {name!r} not in the dataset (has {sorted(map(str, ds.data_vars))})")
    da = ds[name]
    if set(da.dims) != {"site", dim}:
        raise ValueError(f"{where}: {name!r} has dims {da.dims}; {resolution} scores need (site, {dim})")
    return da


def paired(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str | None = None, *,
           resolution: str = "daily", sites: Sequence[str] | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """Prediction and observation of ``variable`` (observation name ``obs_variable``, default the same) on
    (site, step) at ``resolution``, on their common sites and steps, both NaN wherever either is missing.
    At monthly resolution ``<v>_monthly`` is used where present, else the monthly means of daily ``v``."""
    p = _at_resolution(pred, variable, resolution, "prediction")
    o = _at_resolution(obs, obs_variable or variable, resolution, "observation")
    dim = _STEP_DIM[resolution]
    if sites is None:
        obs_sites = set(o.site.values.tolist())
        sites = [s for s in p.site.values.tolist() if s in obs_sites]
    if not len(sites):
        raise ValueError(f"no site is both predicted and observed for {variable!r}")
    p = p.sel(site=list(sites)).transpose("site", dim)
    o = o.sel(site=list(sites)).transpose("site", dim)
    p, o = xr.align(p.reset_coords(drop=True), o.reset_coords(drop=True), join="inner")
    ok = np.isfinite(p) & np.isfinite(o)
    return p.where(ok), o.where(ok)


# ---------------------------------------------------------------------------------------------------------
# Per-site, per-group, pooled scores and their summary
# ---------------------------------------------------------------------------------------------------------


def _pairs(variables: Mapping[str, str] | Sequence[str] | str) -> dict[str, str]:
    if isinstance(variables, str):
        return {variables: variables}
    return dict(variables) if isinstance(variables, Mapping) else {v: v for v in variables}


def score_sites(
    pred: xr.Dataset,
    obs: xr.Dataset,
    variables: Mapping[str, str] | Sequence[str] | str,
    *,
    resolution: str = "daily",
    group: str | None = None,
    metrics: Sequence[str] = METRIC_NAMES,
) -> xr.Dataset:
    """Skill of ``pred`` against ``obs`` on the sites both have.

    ``variables``: names present in both, or a mapping prediction name → observation name (e.g.
    ``{"nee": "true_nee"}``). ``group``: a site coordinate of ``obs`` (or ``pred``) with region labels
    (``igbp_group``, ``climate_zone``, ``state``).

    Returns a dataset with dims (variable, site[, group]): per site ``rmse``, ``bias`` (units of the
    variable), ``r2``, ``nse``, ``kge`` and ``n`` (pairs); ``pooled_<metric>``/``pooled_n`` over all pairs of
    all sites; with ``group``, ``group_<metric>``/``group_n`` pooled within each group, ``group_sites`` (sites
    with pairs in each group) and the site's label as the coordinate named ``group``. Attributes record the resolution and the group coordinate.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise KeyError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    pairs = _pairs(variables)
    obs_sites = set(obs.site.values.tolist())
    sites = [s for s in pred.site.values.tolist() if s in obs_sites]
    if not sites:
        raise ValueError("pred and obs have no site in common")
    labels = None
    if group is not None:
        if group in ("group", "variable", "site"):
            raise ValueError(f"group coordinate may not be called {group!r}")
        src = obs if group in obs.coords else pred if group in pred.coords else None
        if src is None or src[group].dims != ("site",):
            raise KeyError(f"group {group!r} is not a site coordinate of obs or pred")
        labels = src[group].sel(site=sites).values.astype(str)
    groups = sorted(set(labels.tolist())) if labels is not None else []
    names = list(metrics) + ["n"]
    per_site = {m: np.full((len(pairs), len(sites)), np.nan) for m in names}
    pooled = {m: np.full(len(pairs), np.nan) for m in names}
    per_group = {m: np.full((len(pairs), len(groups)), np.nan) for m in names}
    group_sites = np.zeros((len(pairs), len(groups)), np.int64)
    units = []
    for i, (pname, oname) in enumerate(pairs.items()):
        p, o = paired(pred, obs, pname, oname, resolution=resolution, sites=sites)
        units.append(str(o.attrs.get("units", p.attrs.get("units", ""))))
        pv, ov = p.values, o.values
        for j in range(len(sites)):
            for m, v in scores(pv[j], ov[j], metrics).items():
                per_site[m][i, j] = v
        for m, v in scores(pv, ov, metrics).items():
            pooled[m][i] = v
        for k, g in enumerate(groups):
            sel = labels == g
            for m, v in scores(pv[sel], ov[sel], metrics).items():
                per_group[m][i, k] = v
            group_sites[i, k] = int((per_site["n"][i, sel] > 0).sum())
    data = {}
    for m in names:
        dtype = np.int64 if m == "n" else np.float64
        data[m] = (("variable", "site"), per_site[m].astype(dtype))
        data[f"pooled_{m}"] = (("variable",), pooled[m].astype(dtype))
        if groups:
            data[f"group_{m}"] = (("variable", "group"), per_group[m].astype(dtype))
    coords: dict[str, Any] = {"variable": list(pairs), "site": sites, "units": ("variable", units),
                              "observed_as": ("variable", list(pairs.values()))}
    if groups:
        data["group_sites"] = (("variable", "group"), group_sites)
        coords["group"] = groups
        coords[group] = ("site", labels)

    return add_metric_units(xr.Dataset(data, coords=coords), units).assign_attrs({
        "resolution": resolution, "group": group or "", "metrics": ", ".join(metrics),
        "comment": "rmse, bias (prediction - observation) in the variable's units; r2 = squared Pearson "
                   "correlation; nse = Nash-Sutcliffe efficiency; kge = Kling-Gupta efficiency (kgml.metrics)",
    })


def _finite(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a[np.isfinite(a)]


def summarise(scores_ds: xr.Dataset, *, min_group_sites: int = 1) -> dict:
    """Summary of `score_sites` output over its sites (normally the held-out sites), per variable:

    - ``median``: median over sites of each metric (bias signed);
    - ``tail``: the bad tail over sites — ``rmse_p90`` and ``abs_bias_p90`` (90th percentile of RMSE and of
      |bias|: large is bad) and ``r2_p10``, ``nse_p10``, ``kge_p10`` (10th percentile: small is bad);
    - ``pooled``: the metrics over all pairs of all sites at once;
    - ``worst_group`` (when scored with ``group``): for each metric the group whose pooled score is worst
      (lowest skill, highest RMSE, largest |bias|) among groups with at least ``min_group_sites`` sites —
      the WILDS worst-group score (Koh et al. 2021, ICML); single-site groups are noisy, so benchmarks over
      many biomes may ask for 3 or more;
    - ``n_sites`` (sites with at least one pair), ``n`` (pairs), ``metric_order`` (`metric_order`).
    Percentiles are numpy's linear interpolation over the sites where the metric is finite.
    """
    metrics = [m for m in METRIC_NAMES if m in scores_ds]
    out: dict[str, Any] = {"resolution": scores_ds.attrs.get("resolution", ""),
                           "group": scores_ds.attrs.get("group", ""), "variables": {}}
    for var in scores_ds.variable.values.tolist():
        s = scores_ds.sel(variable=var)
        has = np.asarray(s["n"].values) > 0
        entry: dict[str, Any] = {
            "n_sites": int(has.sum()), "n": int(np.asarray(s["n"].values).sum()),
            "units": str(s["units"].values) if "units" in s.coords else "",
            "metric_order": [m for m in metric_order(var) if m in metrics],
            "median": {}, "tail": {}, "pooled": {},
        }
        for m in metrics:
            vals = _finite(s[m].values)
            key, q = BAD_TAIL[m]
            entry["median"][m] = float(np.median(vals)) if vals.size else math.nan
            tail_vals = np.abs(vals) if m == "bias" else vals
            entry["tail"][key] = float(np.percentile(tail_vals, q)) if vals.size else math.nan
            entry["pooled"][m] = float(s[f"pooled_{m}"].values)
        if "group" in scores_ds.dims:
            worst = {}
            groups = scores_ds.group.values.astype(str)
            for m in metrics:
                v = np.asarray(s[f"group_{m}"].values, np.float64)
                ok = np.isfinite(v) & (np.asarray(s["group_sites"].values) >= min_group_sites)
                if not ok.any():
                    worst[m] = {"group": "", "value": math.nan, "n_sites": 0}
                    continue
                badness = -v if m in _SKILL else (np.abs(v) if m == "bias" else v)
                k = int(np.argmax(np.where(ok, badness, -np.inf)))
                worst[m] = {"group": str(groups[k]), "value": float(v[k]),
                            "n_sites": int(s["group_sites"].values[k])}
            entry["worst_group"] = worst
        out["variables"][var] = entry
    return out


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def scores_markdown(summary: Mapping, title: str = "") -> str:
    """A markdown table of a `summarise` result: one row per variable and metric, metrics in
    `metric_order` (so NEE starts with R² and RMSE)."""
    group = summary.get("group") or ""
    lines = [f"## {title}", ""] if title else []
    head = "| variable | metric | sites | median | bad tail | pooled |"
    rule = "|---|---|---|---|---|---|"
    if group:
        head += f" worst {group} |"
        rule += "---|"
    lines += [head, rule]
    for var, e in summary["variables"].items():
        for m in e["metric_order"]:
            key = BAD_TAIL[m][0]
            row = (f"| {var} | {m} | {e['n_sites']} | {_fmt(e['median'][m])} | {_fmt(e['tail'][key])} "
                   f"({key.split('_')[-1]}) | {_fmt(e['pooled'][m])} |")
            if group and "worst_group" in e:
                w = e["worst_group"][m]
                row += f" {w['group']} ({w['n_sites']} sites): {_fmt(w['value'])} |" if w["group"] else " – |"
            lines.append(row)
    res = summary.get("resolution", "")
    lines += ["", f"Resolution {res}. Median and bad tail over sites: p90 of RMSE and of |bias| (large is bad), "
                  "p10 of R², NSE, KGE (small is bad); pooled = all site-steps together."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Scale decomposition
# ---------------------------------------------------------------------------------------------------------


def _calendar(values: xr.DataArray, resolution: str) -> tuple[np.ndarray, np.ndarray]:
    """(year, calendar month 1..12) of each step of a paired array."""
    dim = _STEP_DIM[resolution]
    if resolution == "daily":
        return np.asarray(values.time.dt.year.values), np.asarray(values.time.dt.month.values)
    if resolution == "monthly":
        code = np.asarray(values[dim].values, np.int64)
        return code // 12, code % 12 + 1
    year = np.asarray(values[dim].values, np.int64)
    return year, np.zeros_like(year)


def decompose(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str | None = None, *,
              resolution: str = "monthly", min_year_fraction: float = 0.5, min_years: int = 2) -> xr.Dataset:
    """Split prediction and observation of ``variable`` into the temporal scales of the FLUXCOM evaluation
    (Tramontana et al. 2016 Biogeosciences 13:4291, Sect. 2.5; Jung et al. 2020 Biogeosciences 17:1343,
    Sect. 2.4), each site on the steps where both are observed (one mask for both):

    - ``site_mean`` (site): mean over the site's paired steps — across-site variability;
    - ``seasonal`` (site, month_of_year): mean seasonal cycle (mean of each calendar month over years)
      minus the site mean;
    - ``anomaly`` (site, step): value minus the mean seasonal cycle of its calendar month;
    - ``iav`` (site, year): annual mean of the anomalies — inter-annual variability — for years with at least
      ``min_year_fraction`` of their steps paired, at sites with at least ``min_years`` such years.

    so that value = site_mean + seasonal[month of year] + anomaly at every paired step. Removing the seasonal
    cycle before the annual mean keeps a missing month from biasing a year. At annual resolution there is no
    seasonal cycle: anomaly = iav = value − site mean. Variables ``<component>_pred`` / ``<component>_obs``.
    """
    p, o = paired(pred, obs, variable, obs_variable, resolution=resolution)
    dim = _STEP_DIM[resolution]
    year, cal = _calendar(p, resolution)
    out = {}
    years = np.unique(year)
    for label, da in (("pred", p), ("obs", o)):
        v = np.asarray(da.values, np.float64)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore"):
            site_mean = np.nanmean(np.where(ok, v, np.nan), axis=1) if v.size else np.zeros(0)
        site_mean = np.where(ok.any(axis=1), site_mean, np.nan) if v.size else site_mean
        if resolution == "annual":
            msc = np.broadcast_to(site_mean[:, None], v.shape)
        else:
            seasonal = np.full((v.shape[0], 12), np.nan)
            for m in range(1, 13):
                sel = cal == m
                cnt = ok[:, sel].sum(axis=1)
                tot = np.where(ok[:, sel], v[:, sel], 0.0).sum(axis=1)
                seasonal[:, m - 1] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
            msc = seasonal[:, np.clip(cal - 1, 0, 11)]
            out[f"seasonal_{label}"] = (("site", "month_of_year"), seasonal - site_mean[:, None])
        anomaly = np.where(ok, v - msc, np.nan)
        iav = np.full((v.shape[0], years.size), np.nan)
        for k, y in enumerate(years):
            sel = year == y
            cnt = ok[:, sel].sum(axis=1)
            good = cnt >= max(min_year_fraction * sel.sum(), 1)
            iav[:, k] = np.where(good, np.where(ok[:, sel], anomaly[:, sel], 0.0).sum(axis=1) / np.maximum(cnt, 1),
                                 np.nan)
        enough = np.isfinite(iav).sum(axis=1) >= min_years
        iav = np.where(enough[:, None], iav, np.nan)
        out[f"site_mean_{label}"] = (("site",), site_mean)
        out[f"anomaly_{label}"] = (("site", dim), anomaly)
        out[f"iav_{label}"] = (("site", "iav_year"), iav)
    coords: dict[str, Any] = {"site": p.site.values, dim: p[dim].values, "iav_year": years}
    if resolution != "annual":
        coords["month_of_year"] = np.arange(1, 13)
    units = str(o.attrs.get("units", ""))
    ds = xr.Dataset(out, coords=coords, attrs={
        "variable": variable, "resolution": resolution, "units": units,
        "reference": "Tramontana et al. 2016 Biogeosciences 13:4291; Jung et al. 2020 Biogeosciences 17:1343",
    })
    for name in ds.data_vars:
        ds[name].attrs["units"] = units
    return ds


def decomposition_scores(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str | None = None, *,
                         resolution: str = "monthly", metrics: Sequence[str] = METRIC_NAMES,
                         **kwargs) -> dict[str, dict[str, float]]:
    """Scores of each `decompose` component, pooled over sites: ``site_mean`` across sites (one value per
    site), ``seasonal`` over site × calendar month, ``anomaly`` over site-steps, ``iav`` over site-years;
    and ``total`` (the values themselves, pooled), as in Jung et al. (2020, Fig. 3)."""
    d = decompose(pred, obs, variable, obs_variable, resolution=resolution, **kwargs)
    p, o = paired(pred, obs, variable, obs_variable, resolution=resolution)
    out = {"total": scores(p.values, o.values, metrics)}
    for comp in ("site_mean", "seasonal", "anomaly", "iav"):
        if f"{comp}_pred" in d:
            out[comp] = scores(d[f"{comp}_pred"].values, d[f"{comp}_obs"].values, metrics)
    return out


def noise_ceiling(obs: xr.Dataset, variable: str, sigma: xr.DataArray, *, coherent: xr.DataArray | None = None,
                  resolution: str = "monthly", sites: Sequence[str] | None = None, min_year_fraction: float = 0.5,
                  min_years: int = 2) -> dict[str, float]:
    """The pooled anomaly and IAV R² (and NSE) that a model predicting the *true* flux exactly could expect
    against these observations, given their own error: 1 − Σ Var(noise) / Σ (x − x̄)², x the observed
    component of `decompose` (an observation = truth + independent error, so E[r²] of truth against it is
    Var(truth) / Var(observation); the noise reaches a component through the same linear map that makes the
    component, e.g. anomaly = e_t − mean of e over the site's same calendar month).

    ``sigma`` (site, step; units of the variable): the standard deviation of an error independent between
    steps (the FLUXNET2015 random uncertainty NEE_VUT_REF_RANDUNC, Pastorello et al. 2020 Sci. Data 7:225).
    ``coherent`` (optional, same layout): the standard deviation of an error shared by all steps of a site's
    year (z_y ~ N(0, 1) per site-year times ``coherent``): the year-specific u* threshold of the VUT processing
    shifts every month of a year together. Only steps with a finite observation and finite σ (and coherent σ)
    are used: ``share_unknown`` is the share of observed steps left out for want of an uncertainty. Components
    are taken on those steps with the definitions of `decompose` (``min_year_fraction``, ``min_years``)."""
    o = _at_resolution(obs, variable, resolution, "observation")
    dim = _STEP_DIM[resolution]
    if sites is not None:
        o = o.sel(site=list(sites))
    o = o.transpose("site", dim).reset_coords(drop=True)
    sig = sigma.reindex_like(o).transpose("site", dim)
    coh = None if coherent is None else coherent.reindex_like(o).transpose("site", dim)
    for name, da in (("sigma", sig), ("coherent", coh)):
        if da is not None and bool((da < 0).any()):
            raise ValueError(f"noise_ceiling: {name} of {variable!r} has negative standard deviations")
    known = np.isfinite(sig) if coh is None else np.isfinite(sig) & np.isfinite(coh)
    observed = np.isfinite(o)
    n_obs = int(observed.sum())
    o = o.where(known)
    ds = o.to_dataset(name="v")
    with warnings.catch_warnings():  # a site without a known step: its mean is NaN, as in `decompose`
        warnings.simplefilter("ignore", RuntimeWarning)
        d = decompose(ds, ds, "v", resolution=resolution, min_year_fraction=min_year_fraction, min_years=min_years)
    year, cal = _calendar(o, resolution)
    anom, iav = d["anomaly_obs"].values, d["iav_obs"].values
    years = d["iav_year"].values
    s_r = np.nan_to_num(sig.values)
    s_c = None if coh is None else np.nan_to_num(coh.values)
    noise_a = noise_i = 0.0
    for i in range(o.shape[0]):
        idx = np.flatnonzero(np.isfinite(anom[i]))
        if idx.size == 0:
            continue
        c, y = cal[idx], year[idx]
        same_m = c[:, None] == c[None, :]
        m = np.eye(idx.size) - same_m / same_m.sum(axis=1, keepdims=True)
        cov = np.diag(s_r[i, idx] ** 2)
        if s_c is not None:
            cov = cov + np.outer(s_c[i, idx], s_c[i, idx]) * (y[:, None] == y[None, :])
        noise_a += float(np.einsum("ij,jk,ik->", m, cov, m))
        good = np.flatnonzero(np.isfinite(iav[i]))
        if good.size:
            rows = np.stack([(y == years[k]) / max((y == years[k]).sum(), 1) for k in good]) @ m
            noise_i += float(np.einsum("ij,jk,ik->", rows, cov, rows))

    def ceiling(x, noise):
        x = x[np.isfinite(x)]
        den = float(np.sum((x - x.mean()) ** 2)) if x.size > 1 else 0.0
        return 1.0 - noise / den if den > 0 else math.nan

    return {"anomaly": ceiling(anom, noise_a), "iav": ceiling(iav, noise_i),
            "anomaly_sd": float(np.nanstd(anom)), "iav_sd": float(np.nanstd(iav)),
            "n_steps": int(np.isfinite(anom).sum()), "n_site_years": int(np.isfinite(iav).sum()),
            "n_sites": int(np.isfinite(anom).any(axis=1).sum()),
            "share_unknown": 1.0 - int(np.isfinite(o).sum()) / n_obs if n_obs else math.nan}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (NaN for fewer than 3 pairs or a constant side)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.size > 2 and a.std() > 0 and b.std() > 0 else math.nan


def reference_skill(pred: xr.Dataset, obs: xr.Dataset, ref: xr.Dataset, variable: str,
                    obs_variable: str | None = None, *, resolution: str = "monthly") -> dict[str, float]:
    """Skill against a reference prediction ``ref`` (e.g. the site's own mean seasonal cycle of its training
    years: the naive forecast of a held-out year), on the steps where prediction, observation and reference
    are all finite:

    - ``skill_median`` / ``skill_p10``: over sites, the MSE skill score 1 − MSE(pred)/MSE(ref) (> 0: better
      than the reference; Murphy 1988 Mon. Weather Rev. 116:2417);
    - ``anomaly_r2`` / ``anomaly_nse``: pooled over site-steps, of the departures from the reference,
      pred − ref against obs − ref (does the model see how this year differs from the usual one?);
    - ``mean_anomaly_r2`` / ``mean_anomaly_corr`` / ``sign_agreement``: across sites, of each site's mean
      departure over its paired steps (the held-out year's mean anomaly), and the share of sites where the
      predicted mean departure has the sign of the observed one;
    - ``n_sites``."""
    p, o = paired(pred, obs, variable, obs_variable, resolution=resolution)
    r, _ = paired(ref, obs, variable, obs_variable, resolution=resolution, sites=p.site.values.tolist())
    p, o, r = xr.align(p, o, r, join="inner")
    pv, ov, rv = (np.asarray(a.values, np.float64) for a in (p, o, r))
    ok = np.isfinite(pv) & np.isfinite(ov) & np.isfinite(rv)
    skill, mp, mo = [], [], []
    for i in range(pv.shape[0]):
        k = ok[i]
        if k.sum() < 2:
            continue
        mse_ref = np.mean((rv[i, k] - ov[i, k]) ** 2)
        if mse_ref > 0:
            skill.append(1.0 - np.mean((pv[i, k] - ov[i, k]) ** 2) / mse_ref)
        mp.append(np.mean(pv[i, k] - rv[i, k]))
        mo.append(np.mean(ov[i, k] - rv[i, k]))
    dp, do = (pv - rv)[ok], (ov - rv)[ok]
    mp, mo = np.asarray(mp), np.asarray(mo)
    corr = _corr(mp, mo)
    skill = np.asarray(skill)
    return {
        "n_sites": int(mp.size),
        "skill_median": float(np.median(skill)) if skill.size else math.nan,
        "skill_p10": float(np.percentile(skill, 10)) if skill.size else math.nan,
        "anomaly_r2": METRICS["r2"](dp, do), "anomaly_nse": METRICS["nse"](dp, do),
        "mean_anomaly_r2": METRICS["r2"](mp, mo), "mean_anomaly_corr": corr,
        "sign_agreement": float(np.mean(np.sign(mp) == np.sign(mo))) if mp.size else math.nan,
    }


def departures(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str | None = None, *,
               test_years: Mapping[str, Sequence[int]], resolution: str = "monthly") -> dict[str, np.ndarray]:
    """The departures that `departure_skill` scores, as arrays (predicted, observed): ``step_pred`` /
    ``step_obs`` per test site-step; ``year_pred`` / ``year_obs`` per test site-year (mean departure of the
    year's paired steps: the held-out year's anomaly); ``site_pred`` / ``site_obs`` per site (mean over all its
    test steps; pooled over folds, one entry per site and fold); ``site`` / ``year_site`` the site of each
    entry. So that departures of several folds can be pooled before they are scored."""
    p, o = paired(pred, obs, variable, obs_variable, resolution=resolution)
    year, cal = _calendar(p, resolution)
    pv, ov = np.asarray(p.values, np.float64), np.asarray(o.values, np.float64)
    ok = np.isfinite(pv) & np.isfinite(ov)
    out: dict[str, list] = {k: [] for k in ("step_pred", "step_obs", "year_pred", "year_obs", "site_pred",
                                             "site_obs", "site", "year_site")}
    for i, site in enumerate(p.site.values.astype(str)):
        ys = test_years.get(site)
        if not ys:
            continue
        test = np.isin(year, np.asarray(list(ys), np.int64))
        dp, do, yr = [], [], []
        for m in np.unique(cal[test & ok[i]]):
            base = ok[i] & ~test & (cal == m)
            here = ok[i] & test & (cal == m)
            if not base.any():
                continue
            dp.append(pv[i, here] - pv[i, base].mean())
            do.append(ov[i, here] - ov[i, base].mean())
            yr.append(year[here])
        if not dp:
            continue
        dp, do, yr = np.concatenate(dp), np.concatenate(do), np.concatenate(yr)
        out["step_pred"].append(dp)
        out["step_obs"].append(do)
        out["site_pred"].append([dp.mean()])
        out["site_obs"].append([do.mean()])
        out["site"].append([site])
        for y in np.unique(yr):
            out["year_pred"].append([dp[yr == y].mean()])
            out["year_obs"].append([do[yr == y].mean()])
            out["year_site"].append([site])
    return {k: (np.concatenate(v) if v else np.zeros(0, object if k in ("site", "year_site") else np.float64))
            for k, v in out.items()}


def departure_skill(pred: xr.Dataset, obs: xr.Dataset, variable: str, obs_variable: str | None = None, *,
                    test_years: Mapping[str, Sequence[int]], resolution: str = "monthly") -> dict[str, float]:
    """Does a model see how a held-out year departs from the site's usual year? ``pred`` holds the model's
    predictions of *every* year of each site (drivers of all years; ``test_years`` gives each site's held-out
    years, the others are its training years). Per site and calendar month, the departure of a test-year step
    is its value minus the mean of that calendar month over the training years — the model's own climatology
    for the prediction, the observed one for the observation, both on the steps where the observation exists,
    so that a model's bias in its mean seasonal cycle cancels (`departures`). Returns ``departure_r2`` /
    ``departure_nse`` (pooled over test site-steps), ``mean_departure_r2`` / ``mean_departure_corr`` (across
    sites, of each site's mean departure over its test steps: the held-out year's anomaly), ``sign_agreement``
    (share of sites whose predicted mean departure has the observed sign) and ``n_sites``."""
    d = departures(pred, obs, variable, obs_variable, test_years=test_years, resolution=resolution)
    return departure_scores(d)


def departure_scores(d: Mapping[str, np.ndarray]) -> dict[str, float]:
    """`departure_skill`'s scores of (possibly pooled) `departures`, plus ``year_departure_*`` over site-years."""
    dp_all, do_all, mp, mo = d["step_pred"], d["step_obs"], d["site_pred"], d["site_obs"]
    yp, yo = d["year_pred"], d["year_obs"]
    return {
        "n_sites": int(np.unique(d["site"]).size), "departure_corr": _corr(dp_all, do_all),
        "departure_r2": METRICS["r2"](dp_all, do_all), "departure_nse": METRICS["nse"](dp_all, do_all),
        "mean_departure_r2": METRICS["r2"](mp, mo), "mean_departure_corr": _corr(mp, mo),
        "sign_agreement": float(np.mean(np.sign(mp) == np.sign(mo))) if mp.size else math.nan,
        "n_site_years": int(yp.size), "year_departure_corr": _corr(yp, yo),
        "year_departure_nse": METRICS["nse"](yp, yo),
    }


# ---------------------------------------------------------------------------------------------------------
# Physical consistency
# ---------------------------------------------------------------------------------------------------------


def carbon_balance_residual(pred: xr.Dataset, *, nee: str = "nee", gpp: str = "gpp", reco: str = "reco") -> dict:
    """|NEE − (Reco − GPP)| (gC m-2 d-1) over the steps where all three are finite: ``mean_abs``,
    ``max_abs``, ``relative`` (mean_abs / mean |NEE|) and ``n``. Zero up to rounding for models that
    make NEE = Reco − GPP by construction (the hybrid, the neural model); a check for models that predict
    the three fluxes separately (feature baselines)."""
    for name in (nee, gpp, reco):
        if name not in pred:
            raise KeyError(f"carbon_balance_residual: {name!r} not in predictions (has {sorted(map(str, pred.data_vars))})")
    n_, g_, r_ = (np.asarray(pred[v].values, np.float64) for v in (nee, gpp, reco))
    resid = np.abs(n_ - (r_ - g_))
    ok = np.isfinite(resid)
    if not ok.any():
        return {"mean_abs": math.nan, "max_abs": math.nan, "relative": math.nan, "n": 0}
    mean_abs = float(resid[ok].mean())
    scale = float(np.abs(n_[ok]).mean())
    return {"mean_abs": mean_abs, "max_abs": float(resid[ok].max()),
            "relative": mean_abs / scale if scale > 0 else math.nan, "n": int(ok.sum())}


def share_at_bounds(theta, specs, *, tolerance: float = 0.01, names: Sequence[str] | None = None) -> dict:
    """Share of learned parameter values within ``tolerance`` (default 1 %) of the width of their range
    from a bound. The width is measured where the bounded transform interpolates: linear range for
    ``logit`` specs, log range for ``loglogit`` specs (rates spanning decades).

    ``theta``: a mapping name → values (any shape), or a predictions dataset with ``theta_<name>``
    variables (`kgml.experiment.predict_dataset`). ``specs``: `ParameterSpec`s (or a name → spec mapping);
    parameters without a spec or without values are skipped; ``names`` restricts the count to the learned
    ones (e.g. ``run.model.learned``: fixed parameters sit at their defaults and would dilute the share).
    Returns ``share`` (all values), ``per_parameter`` {name: share} and ``n``.
    """
    spec_map = dict(specs) if isinstance(specs, Mapping) else {s.name: s for s in specs}
    if isinstance(theta, xr.Dataset):
        values = {k.removeprefix("theta_"): theta[k].values for k in theta.data_vars if k.startswith("theta_")}
    else:
        values = {k: np.asarray(v) for k, v in theta.items()}
    if names is not None:
        values = {k: v for k, v in values.items() if k in set(names)}
    per, total, at = {}, 0, 0
    for name, v in values.items():
        spec = spec_map.get(name)
        if spec is None:
            continue
        v = np.asarray(v, np.float64).ravel()
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        if spec.transform == "loglogit":
            lo, hi, x = math.log(spec.lower), math.log(spec.upper), np.log(np.maximum(v, spec.lower))
        else:
            lo, hi, x = spec.lower, spec.upper, v
        frac = (x - lo) / (hi - lo)
        hit = (frac <= tolerance) | (frac >= 1.0 - tolerance)
        per[name] = float(hit.mean())
        total += v.size
        at += int(hit.sum())
    return {"share": at / total if total else math.nan, "per_parameter": per, "n": total}


def temperature_monotonicity(
    predict: Callable[[xr.Dataset], xr.Dataset | xr.DataArray],
    ds: xr.Dataset,
    *,
    variable: str = "reco",
    delta: float = 1.0,
    temperatures: Sequence[str] = ("tair", "tmin", "tmax", "tsoil"),
) -> dict:
    """Does predicted ecosystem respiration rise with temperature? A finite difference through the model:
    ``predict`` (the caller's function: dataset → predictions dataset, e.g.
    ``lambda d: predict_dataset(run, d)``, or → the DataArray itself) is called on ``ds`` and on ``ds`` with
    every temperature driver in ``temperatures`` warmed by ``delta`` °C (other drivers unchanged).

    Returns ``fraction_increasing`` (sites whose mean change is > 0), ``sensitivity`` (site,) the mean
    d``variable``/dT (units per K) and ``n_sites``. Every respiration model in process_models rises with
    temperature below its optimum, so a fraction well below 1 flags a model that learnt a spurious response.
    """
    warm = ds.copy()
    shifted = [t for t in temperatures if t in ds]
    if not shifted:
        raise KeyError(f"none of the temperature drivers {list(temperatures)} is in the dataset")
    for t in shifted:
        warm[t] = ds[t] + delta

    def get(d):
        out = predict(d)
        da = out[variable] if isinstance(out, xr.Dataset) else out
        return da

    base, hot = get(ds), get(warm)
    diff = (hot - base) / delta
    other = [d for d in diff.dims if d != "site"]
    sens = diff.mean(other, skipna=True) if other else diff
    v = np.asarray(sens.values, np.float64)
    ok = np.isfinite(v)
    sens.attrs["units"] = f"{base.attrs.get('units', '')} K-1".strip()
    return {"fraction_increasing": float((v[ok] > 0).mean()) if ok.any() else math.nan,
            "sensitivity": sens, "n_sites": int(ok.sum()), "temperatures": shifted}


def temperature_slope(pred: xr.Dataset, ds: xr.Dataset, *, variable: str = "reco", temperature: str = "tair") -> dict:
    """Ordinary least-squares slope of predicted ``variable`` on the driver ``temperature`` per site (units
    per K) over the steps where both are finite; ``fraction_positive`` of the sites. A model-free check of
    predictions already made (note that it mixes in the seasonal co-variation of light and temperature;
    `temperature_monotonicity` isolates temperature)."""
    p = pred[variable]
    t = ds[temperature]
    p, t = xr.align(p.reset_coords(drop=True), t.reset_coords(drop=True), join="inner")
    other = [d for d in p.dims if d != "site"]
    pv = np.asarray(p.transpose("site", *other).values, np.float64).reshape(p.sizes["site"], -1)
    tv = np.asarray(t.transpose("site", *other).values, np.float64).reshape(t.sizes["site"], -1)
    slopes = np.full(pv.shape[0], np.nan)
    for i in range(pv.shape[0]):
        ok = np.isfinite(pv[i]) & np.isfinite(tv[i])
        if ok.sum() >= 3 and tv[i, ok].std() > 0:
            x = tv[i, ok] - tv[i, ok].mean()
            slopes[i] = float((x * (pv[i, ok] - pv[i, ok].mean())).sum() / (x * x).sum())
    ok = np.isfinite(slopes)
    return {"fraction_positive": float((slopes[ok] > 0).mean()) if ok.any() else math.nan,
            "slope": xr.DataArray(slopes, dims="site", coords={"site": p.site.values}), "n_sites": int(ok.sum())}


def residual_size(pred: xr.Dataset, variables: Sequence[str] = ("gpp", "reco", "rsoil")) -> dict:
    """How much the residual head changes the physics: for each ``v`` with ``v_physics`` in ``pred``,
    ``mean_abs`` = mean |v − v_physics| (gC m-2 d-1) and ``relative`` = mean_abs / mean |v_physics|."""
    out = {}
    for v in variables:
        if v not in pred or f"{v}_physics" not in pred:
            continue
        a = np.asarray(pred[v].values, np.float64)
        b = np.asarray(pred[f"{v}_physics"].values, np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        if not ok.any():
            continue
        mean_abs = float(np.abs(a[ok] - b[ok]).mean())
        scale = float(np.abs(b[ok]).mean())
        out[v] = {"mean_abs": mean_abs, "relative": mean_abs / scale if scale > 0 else math.nan}
    return out
