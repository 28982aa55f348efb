"""Calibrated predictive intervals in the distribution-shift benchmark (``kgml bench shift --intervals``):
calibration sites carved out of each fold's training sites, split-conformal quantiles of every model slot
(`kgml.uncertainty`), their coverage and sharpness on the held-out sites, the random forest's quantile-forest
reference, a table, the metrics variables and a coverage figure.

Protocol. For each fold whose held-out sites are not training sites (site-grouped and leave-region-out
kinds; leave-years-out folds hold the same sites out in other years and get no site-calibrated interval),
`CALIBRATION_FRACTION` of the training sites (at least 2; deterministic: a generator seeded with the suite's
fold seed and the split's name) become *calibration* sites: no model is trained on them (they leave the
training part; the validation sites stay as they are), every slot predicts them with the held-out sites
(`calibration_path` beside `prediction_path`). The interval of a model is the ensemble mean over seeds ± q s,
q the site-weighted split-conformal quantile of |y − ŷ| / s on the fold's calibration sites
(`kgml.uncertainty.conformal_quantiles`), with s = σ̂ + β (``scale="seed spread"``): σ̂ the standard deviation
over the seeds, β the median σ̂ of the fold's calibration steps — the normalised nonconformity score with a
sensitivity term (Papadopoulos, Gammerman & Vovk 2008; Lei et al. 2018 §5.2), so a step where the seeds agree
exactly (GPP in winter) keeps a non-zero interval. One seed, or seeds that always agree (deterministic gradient
boosting): s = 1 only (``scale="residual"``, reported for every slot as the comparison).
Because carving changes the training sets, ``--intervals`` runs write under ``<out>/<suite>/intervals`` and
never change the default benchmark numbers.

Annual aggregates (``<target>_annual``, daily and monthly flux suites): each site's annual flux
(gC m-2 yr-1: the day-weighted mean rate of a year whose every step is paired, × the days of the year) is
calibrated on its own — the nonconformity score is the normalised error of the calibration sites' *annual*
values (`kgml.uncertainty.aggregate_scores`), so whatever correlation the monthly or daily errors have
within a year is carried into q without assuming a form for it; the seed-spread scale of a year is
Σ σ̂ × days (the σ̂ of the annual total if the errors were fully correlated: the conservative form). Years are the units of the annual scores; sites stay the exchangeable units of the calibration.

Reference: the random forest's quantile regression forest (Meinshausen 2006, JMLR 7:983;
`kgml.compare.baselines.FeatureBaseline.predict_quantiles`), first seed, uncalibrated, on the same folds and sites.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from kgml import evaluation as ev
from kgml.compare.figures import seed_suffix
from kgml.data.splits import Part, Split
from kgml.io import pyplot, write_png_atomic
from kgml.uncertainty import (
    LEVELS,
    aggregate_scores,
    conformal_quantiles,
    coverage_scores,
    nonconformity,
)

__all__ = ["CALIBRATION_FRACTION", "QRF_QUANTILES", "calibration_path", "calibration_split", "coverage_figure",
           "interval_rows", "intervals_dataset", "intervals_markdown"]

#: Flux targets whose annual values per site are scored too (``<target>_annual``, gC m-2 yr-1).
ANNUAL_TARGETS = ("nee", "gpp", "reco", "rsoil")
#: Share of a fold's training sites carved out for calibration.
CALIBRATION_FRACTION = 0.2
#: Quantiles of the quantile-forest reference: the ends of the central intervals at `LEVELS`.
QRF_QUANTILES = tuple(sorted({round((1 - lv) / 2, 4) for lv in LEVELS} | {round((1 + lv) / 2, 4) for lv in LEVELS}))


def calibration_path(fold_dir: Path, model: str, seed: int = 0) -> Path:
    """Calibration-site predictions of (fold, model, seed): ``<fold_dir>/<model>[_seed<k>]_calibration.nc``."""
    return Path(fold_dir) / f"{model}{seed_suffix(seed)}_calibration.nc"


def calibration_split(split: Split, *, fraction: float = CALIBRATION_FRACTION, seed: int = 0) -> tuple[Split | None, str]:
    """``split`` with calibration sites carved out of its training sites: they leave ``train`` and join the
    held-out part (so every slot predicts them), listed in ``info["calibration_sites"]``. Returns (split,
    "") or (None, why) for a fold whose held-out sites are also training sites (leave-years-out). Raises
    ``ValueError`` when fewer than one training site would be left."""
    heldout = split.info.get("heldout", "test")
    held = split.part(heldout)
    train = sorted(map(str, split.train.units))
    if set(held.units) & set(train):
        return None, "held-out sites are training sites in other years (no site-calibrated interval)"
    n_cal = max(2, int(round(fraction * len(train))))
    if len(train) - n_cal < 1:
        raise ValueError(f"fold {split.name!r} has {len(train)} training sites: too few to carve {n_cal} "
                         "calibration sites out of them")
    rng = np.random.default_rng([int(seed), zlib.crc32(split.name.encode())])
    cal = sorted(rng.choice(train, size=n_cal, replace=False).tolist())
    keep = [u for u in train if u not in set(cal)]
    parts = {"train": split.train.subset(keep), heldout: Part([*held.units, *cal], held.years)}
    info = {**split.info, "calibration_sites": cal, "heldout_sites": list(map(str, held.units)),
            "calibration_fraction": float(fraction)}
    return dataclasses.replace(split, **parts, info=info), ""


def _load(path: Path) -> xr.Dataset | None:
    if not path.exists():
        return None
    with xr.open_dataset(path) as f:
        return f.load()


def _mean_sd(preds: list[xr.Dataset]) -> tuple[xr.Dataset, xr.Dataset | None]:
    if len(preds) == 1:
        return preds[0], None
    stack = xr.concat(preds, dim="seed", coords="minimal", compat="override", join="outer", combine_attrs="override")
    return stack.mean("seed"), stack.std("seed", ddof=1)


def _by_site(da: xr.DataArray) -> dict[str, np.ndarray]:
    return {str(s): np.asarray(da.sel(site=s).values, np.float64) for s in da.site.values}


def _step_days(da: xr.DataArray, resolution: str) -> tuple[np.ndarray, np.ndarray]:
    """(year, days) of each step of a (site, step) array: daily steps weigh 1 day, monthly ones their month's
    days (month code year*12 + month − 1)."""
    if resolution == "monthly":
        import calendar

        codes = np.asarray(da["month"].values, np.int64)
        years, months = codes // 12, codes % 12 + 1
        return years, np.asarray([calendar.monthrange(int(y), int(m))[1] for y, m in zip(years, months, strict=True)],
                                 np.float64)
    return np.asarray(da["time"].dt.year.values, np.int64), np.ones(da.sizes["time"])


def _annual(y: dict, yhat: dict, sig: dict | None, years: np.ndarray, days: np.ndarray) -> tuple[dict, dict, dict | None]:
    """Per site: annual flux (gC m-2 yr-1) of every year that the step axis covers whole (≥ 365 days) and
    whose steps are all paired — observed, predicted and the σ̂ scale — from the rates (gC m-2 d-1) of its
    steps: Σ rate × days (`kgml.uncertainty.aggregate_scores`, sum over the year's steps)."""
    labels, inverse = np.unique(years, return_inverse=True)
    whole = np.bincount(inverse, weights=days) >= 365
    ya, pa, sa = {}, {}, ({} if sig is not None else None)
    for site in y:
        obs, pred, s = aggregate_scores(y[site] * days, yhat[site] * days, years, how="sum", min_fraction=1.0,
                                        sigma=None if sig is None else sig[site] * days)
        ya[site], pa[site] = np.where(whole, obs, np.nan), np.where(whole, pred, np.nan)
        if sa is not None:
            sa[site] = np.where(whole, s, np.nan)
    return ya, pa, sa


def _qrf_bounds(pred: xr.Dataset, var: str, level: float) -> tuple[xr.DataArray, xr.DataArray] | None:
    name = f"{var}_qrf"
    if name not in pred:
        name = f"{var}_monthly_qrf"
        if name not in pred:
            return None
    qa = pred[name]
    lo, hi = round((1 - level) / 2, 4), round((1 + level) / 2, 4)
    return qa.sel(quantile=lo, method="nearest"), qa.sel(quantile=hi, method="nearest")


def _qrf_site_hits(pred: xr.Dataset, obs: xr.Dataset, var: str, obs_var: str, resolution: str) -> dict | None:
    """Per held-out site and level: (hits, widths) of the quantile-forest interval."""
    out = {}
    for lv in LEVELS:
        b = _qrf_bounds(pred, var, lv)
        if b is None:
            return None
        lo_ds = xr.Dataset({var: b[0].reset_coords(drop=True)})
        hi_ds = xr.Dataset({var: b[1].reset_coords(drop=True)})
        if resolution == "monthly":
            lo_ds = lo_ds.rename({var: f"{var}_monthly"})
            hi_ds = hi_ds.rename({var: f"{var}_monthly"})
        lo, o = ev.paired(lo_ds, obs, var, obs_var, resolution=resolution)
        hi, _ = ev.paired(hi_ds, obs, var, obs_var, resolution=resolution)
        for s in lo.site.values:
            lv_, hv, ov = (np.asarray(a.sel(site=s).values, np.float64) for a in (lo, hi, o))
            ok = np.isfinite(lv_) & np.isfinite(hv) & np.isfinite(ov)
            if ok.any():
                out.setdefault(str(s), {})[lv] = ((ov[ok] >= lv_[ok]) & (ov[ok] <= hv[ok]), hv[ok] - lv_[ok])
    return out


def interval_rows(suite, ds: xr.Dataset, folds: dict[str, list[Split]], directory: Path, models: Sequence[str],
                  seeds: Sequence[int], obs: xr.Dataset) -> tuple[list[dict], dict[str, str]]:
    """Coverage and sharpness of the calibrated intervals of every (model, fold kind, target) on the
    held-out sites, pooled over the kind's folds: per level pooled coverage, its 10th percentile over
    sites and the mean width; mean CRPS (`kgml.uncertainty.coverage_scores`). One row per scale (the
    protocol's; with several seeds also ``residual``, for comparison) and, for ``rf``, the uncalibrated
    quantile-forest reference (``scale="quantile forest"``). Returns (rows, notes by fold kind)."""
    rows, notes = [], {}
    for kind, splits in folds.items():
        if not splits or "calibration_sites" not in splits[0].info:
            notes[kind] = "no calibration sites (held-out sites are training sites in other years)"
            continue
        for m in models:
            for var in suite.targets:
                obs_var = suite.observed_name(var)
                acc: dict[str, dict] = {}
                for split in splits:
                    fold_dir = directory / "folds" / kind / split.name
                    held = [p for sd in seeds if (p := _load(fold_dir / f"{m}{seed_suffix(sd)}.nc")) is not None]
                    cal = [p for sd in seeds if (p := _load(calibration_path(fold_dir, m, sd))) is not None]
                    if not held or len(cal) != len(held):
                        continue
                    _fold_intervals(acc, held, cal, obs, var, obs_var, suite.resolution, split, m)
                for (label, scale), a in acc.items():
                    rows.append(_finish(a, m, kind, label, scale))
    return rows, notes


def _fold_intervals(acc: dict, held: list, cal: list, obs, var: str, obs_var: str, resolution: str, split: Split,
                    model: str) -> None:
    h_mean, h_sd = _mean_sd(held)
    c_mean, c_sd = _mean_sd(cal)
    try:
        ph, oh = ev.paired(h_mean, obs, var, obs_var, resolution=resolution)
        pc, oc = ev.paired(c_mean, obs, var, obs_var, resolution=resolution)
    except (KeyError, ValueError):
        return
    scales = ["residual"]
    sig_h = sig_c = None
    if h_sd is not None:
        sh, _ = ev.paired(h_sd, obs, var, obs_var, resolution=resolution)
        sc, _ = ev.paired(c_sd, obs, var, obs_var, resolution=resolution)
        spread_c = sc.values[np.isfinite(pc.values) & np.isfinite(sc.values)]
        beta = float(np.median(spread_c)) if spread_c.size else 0.0
        # σ̂ + β, β the median spread of the fold's calibration steps: steps where the seeds agree exactly
        # (GPP in winter) keep a non-zero interval; seeds that always agree (deterministic slots): residual only.
        if beta > 0:
            scales = ["seed spread", "residual"]
            sig_h, sig_c = _by_site(sh + beta), _by_site(sc + beta)
    train = list(map(str, split.train.units)) + list(map(str, split.val.units))
    held_sites = list(split.info.get("heldout_sites", []))
    views = {var: (_by_site(oc), _by_site(pc), sig_c, _by_site(oh), _by_site(ph), sig_h)}
    if resolution in ("daily", "monthly") and var in ANNUAL_TARGETS:
        yrs_c, days_c = _step_days(oc, resolution)
        yrs_h, days_h = _step_days(oh, resolution)
        views[f"{var}_annual"] = (*_annual(views[var][0], views[var][1], sig_c, yrs_c, days_c),
                                  *_annual(views[var][3], views[var][4], sig_h, yrs_h, days_h))
    for label, (yc, pc_, sc_, yh, ph_, sh_) in views.items():
        for scale in scales:
            use_c = sc_ if scale == "seed spread" else None
            use_h = sh_ if scale == "seed spread" else None
            scores = {s: nonconformity(yc[s], pc_[s], None if use_c is None else use_c[s]) for s in yc}
            try:
                calib = conformal_quantiles(scores, train_sites=train, test_sites=held_sites)
            except ValueError:  # fewer than 2 calibration sites with paired values (e.g. no complete year)
                continue
            res = coverage_scores(yh, ph_, calib, use_h, per_site=True)
            if not res["n"]:  # no held-out step (or complete year) to score
                continue
            a = acc.setdefault((label, scale), {"folds": [], "sites": {}, "n": 0, "sums": {}, "q": [], "n_cal": []})
            _add(a, res, split.name)
            a["q"].append({lv: calib.q[lv] for lv in LEVELS})
            a["n_cal"].append(calib.n_sites)
    if model == "rf":
        hits = _qrf_site_hits(held[0], obs, var, obs_var, resolution)
        if hits:
            a = acc.setdefault((var, "quantile forest"), {"folds": [], "sites": {}, "n": 0, "sums": {}, "q": [], "n_cal": []})
            n = 0
            for site, by_lv in hits.items():
                a["sites"][f"{split.name}/{site}"] = {f"coverage_{round(lv * 100)}": float(h.mean())
                                                      for lv, (h, _) in by_lv.items()}
                k = len(next(iter(by_lv.values()))[0])
                n += k
                for lv, (h, w) in by_lv.items():
                    key = round(lv * 100)
                    a["sums"][f"coverage_{key}"] = a["sums"].get(f"coverage_{key}", 0.0) + float(h.sum())
                    a["sums"][f"width_{key}"] = a["sums"].get(f"width_{key}", 0.0) + float(w.sum())
            a["n"] += n
            a["folds"].append(split.name)


def _add(a: dict, res: dict, fold: str) -> None:
    n = res.get("n", 0)
    if not n:
        return
    a["folds"].append(fold)
    a["n"] += n
    for k, v in res.items():
        if k.startswith(("coverage_", "width_")) and not k.endswith("_p10") or k == "crps":
            a["sums"][k] = a["sums"].get(k, 0.0) + v * n
    for site, cov in res["sites"].items():
        a["sites"][f"{fold}/{site}"] = cov


def _finish(a: dict, model: str, kind: str, var: str, scale: str) -> dict:
    row = {"model": model, "fold_kind": kind, "variable": var, "scale": scale, "n_folds": len(a["folds"]),
           "n_sites": len(a["sites"]), "n": a["n"],
           "n_calibration_sites": int(np.sum(a["n_cal"])) if a["n_cal"] else 0}
    for lv in LEVELS:
        key = round(lv * 100)
        row[f"coverage_{key}"] = a["sums"].get(f"coverage_{key}", math.nan) / a["n"] if a["n"] else math.nan
        per = [c[f"coverage_{key}"] for c in a["sites"].values() if f"coverage_{key}" in c]
        row[f"coverage_{key}_p10"] = float(np.quantile(per, 0.1)) if per else math.nan
        row[f"width_{key}"] = a["sums"].get(f"width_{key}", math.nan) / a["n"] if a["n"] else math.nan
        qs = [q[lv] for q in a["q"]]
        row[f"q_{key}"] = float(np.median(qs)) if qs else math.nan
    row["crps"] = a["sums"]["crps"] / a["n"] if "crps" in a["sums"] and a["n"] else math.nan
    return row


def _cell(x: float, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return fmt.format(x)


def intervals_markdown(rows: list[dict], notes: dict[str, str], seeds: Sequence[int],
                       fraction: float = CALIBRATION_FRACTION) -> str:
    """One table per fold kind and target: coverage of the 50/80/90 % intervals pooled and at the p10 site,
    mean widths and CRPS, per model and scale."""
    lines = ["### Calibrated predictive intervals (held-out sites)", "",
             f"Split-conformal by site (`kgml.compare.intervals`): {round(100 * fraction)} % of each fold's training sites "
             f"carved out for calibration (no model trained on them); seeds {', '.join(map(str, seeds))}. scale "
             "= seed spread: ŷ ± q (σ̂ + β), σ̂ over seeds, β its median on the calibration steps; residual: ŷ ± q; quantile forest: the RF's uncalibrated "
             "quantile regression forest (Meinshausen 2006). Coverage pooled / p10 over held-out sites; width = "
             "mean interval width (units of the target; ``<target>_annual``: annual totals in gC m-2 yr-1, calibrated "
             "on the calibration sites' annual errors); CRPS of the calibrated Gaussian. ∞: fewer calibration "
             "sites than the level needs (⌈(n+1)·level⌉ > n).", ""]
    for kind in dict.fromkeys(r["fold_kind"] for r in rows):
        for var in dict.fromkeys(r["variable"] for r in rows if r["fold_kind"] == kind):
            mine = [r for r in rows if r["fold_kind"] == kind and r["variable"] == var]
            lines += [f"#### {kind} — {var}: intervals", "",
                      "| model | scale | folds | sites (cal) | cov 50 | cov 80 | cov 90 / p10 | width 50 | width 80 "
                      "| width 90 | CRPS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in mine:
                lines.append("| " + " | ".join([
                    r["model"], r["scale"], str(r["n_folds"]), f"{r['n_sites']} ({r['n_calibration_sites']})",
                    _cell(r["coverage_50"]), _cell(r["coverage_80"]),
                    f"{_cell(r['coverage_90'])} / {_cell(r['coverage_90_p10'])}",
                    _cell(r["width_50"], "{:.3g}"), _cell(r["width_80"], "{:.3g}"), _cell(r["width_90"], "{:.3g}"),
                    _cell(r["crps"], "{:.3g}")]) + " |")
            lines.append("")
    for kind, note in notes.items():
        lines += [f"{kind}: {note}.", ""]
    return "\n".join(lines)


def intervals_dataset(rows: list[dict]) -> dict:
    """Data variables for the metrics netCDF: ``interval_coverage``, ``interval_coverage_p10``,
    ``interval_width`` on (interval_row, level) and ``interval_crps`` on (interval_row,), with the row's
    model, scale, fold kind and variable as coordinates."""
    if not rows:
        return {}
    levels = [round(lv * 100) for lv in LEVELS]
    n = len(rows)
    cov, p10, width = (np.full((n, len(levels)), np.nan) for _ in range(3))
    for i, r in enumerate(rows):
        for j, k in enumerate(levels):
            cov[i, j], p10[i, j], width[i, j] = r[f"coverage_{k}"], r[f"coverage_{k}_p10"], r[f"width_{k}"]
    coords = {"interval_row": np.arange(n), "level": np.asarray(LEVELS),
              "interval_model": ("interval_row", [r["model"] for r in rows]),
              "interval_scale": ("interval_row", [r["scale"] for r in rows]),
              "interval_fold_kind": ("interval_row", [r["fold_kind"] for r in rows]),
              "interval_variable": ("interval_row", [r["variable"] for r in rows])}
    return {"coords": coords, "data_vars": {
        "interval_coverage": (("interval_row", "level"), cov, {
            "units": "1", "long_name": "share of held-out site-steps inside the calibrated interval"}),
        "interval_coverage_p10": (("interval_row", "level"), p10, {
            "units": "1", "long_name": "10th percentile over held-out sites of the per-site coverage"}),
        "interval_width": (("interval_row", "level"), width, {
            "long_name": "mean width of the interval (units of interval_variable)"}),
        "interval_crps": (("interval_row",), np.asarray([r["crps"] for r in rows], np.float64), {
            "long_name": "mean CRPS of the calibrated Gaussian (units of interval_variable)"}),
    }}


def coverage_figure(rows: list[dict], path: Path, title: str) -> Path | None:
    """Empirical coverage (pooled: solid; p10 site: dashed) against the nominal level, one panel per target,
    a line per (model, scale) of the first fold kind that has rows; the diagonal is perfect calibration."""
    if not rows:
        return None
    plt = pyplot()
    kind = rows[0]["fold_kind"]
    variables = list(dict.fromkeys(r["variable"] for r in rows if r["fold_kind"] == kind))
    ncol = min(3, len(variables))
    nrow = -(-len(variables) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax in axes.ravel()[len(variables):]:
        ax.set_visible(False)
    nominal = np.asarray(LEVELS)
    colour = {k: f"C{i}" for i, k in enumerate(dict.fromkeys((r["model"], r["scale"]) for r in rows))}
    for ax, var in zip(axes.ravel(), variables, strict=False):
        ax.plot([0.4, 1.0], [0.4, 1.0], color="0.6", lw=1)
        for r in (r for r in rows if r["fold_kind"] == kind and r["variable"] == var):
            pooled = [r[f"coverage_{round(lv * 100)}"] for lv in LEVELS]
            tail = [r[f"coverage_{round(lv * 100)}_p10"] for lv in LEVELS]
            line, = ax.plot(nominal, pooled, "o-", color=colour[(r["model"], r["scale"])],
                            label=f"{r['model']} ({r['scale']})")
            ax.plot(nominal, tail, "x--", color=line.get_color(), lw=0.8)
        ax.set(xlabel="nominal level", ylabel="empirical coverage", title=f"{var} — {kind}", xlim=(0.4, 1.0),
               ylim=(0.0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{title}: coverage of calibrated intervals (solid pooled, dashed p10 site)", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_png_atomic(fig, path, dpi=130)
