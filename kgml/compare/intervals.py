"""Calibrated predictive intervals in the distribution-shift benchmark (``kgml bench shift --intervals``):
calibration sites carved out of each fold's training sites, split-conformal quantiles of every model slot
(`kgml.uncertainty`), their coverage and sharpness on the held-out sites, the random forest's quantile-forest
reference, a table, the metrics variables and a coverage figure.

Protocol. For each fold whose held-out sites are not training sites (site-grouped and leave-region-out
kinds; year-held-out folds: see below), `CALIBRATION_FRACTION` of the training sites (at least 2; deterministic: a generator seeded with the suite's
fold seed and the split's name) become *calibration* sites: no model is trained on them (they leave the
training part; the validation sites stay as they are), every slot predicts them with the held-out sites
(`calibration_path` beside `prediction_path`). The interval of a model is the ensemble mean over seeds ± q s,
q the site-weighted split-conformal quantile of |y − ŷ| / s on the fold's calibration sites
(`kgml.uncertainty.conformal_quantiles`), with s = σ̂ + β (``scale="seed spread"``): σ̂ the standard deviation
over the seeds, β the median σ̂ of the fold's calibration steps — the normalised nonconformity score with a
sensitivity term (Papadopoulos, Gammerman & Vovk 2008; Lei et al. 2018 §5.2), so a step where the seeds agree
exactly (GPP in winter) keeps a non-zero interval. One seed, or seeds that always agree (deterministic gradient
boosting): no seed-spread scale. Flux targets also get s = m̂ + β (``scale="magnitude"``): m̂ the predicted
magnitude of the flux — for a net flux the sum of the model's own predicted gross fluxes (NEE: GPP + Reco), else
|ŷ| — and β its median on the calibration steps. Flux errors grow with the flux (the eddy-covariance random
error σ = a + b|F|, Richardson et al. 2006, Agric. For. Meteorol. 136:1; model errors of a productive site are
larger in absolute terms than those of a desert), so an interval proportional to the predicted magnitude can
cover the large-flux sites without widening the small-flux ones. NEE = Reco − GPP crosses zero in spring and
autumn while both gross fluxes are large, and a model's NEE error is the difference of its two gross-flux errors,
each growing with its flux: so the gross sum is NEE's magnitude (a modelling choice, tested by the coverage).
``scale="residual"`` (s = 1) is reported for every slot as the comparison.
Because carving changes the training sets, ``--intervals`` runs write under ``<out>/<suite>/intervals`` and
never change the default benchmark numbers.

Annual aggregates (``<target>_annual``, daily and monthly flux suites): each site's annual flux
(gC m-2 yr-1: the day-weighted mean rate of a year whose every step is paired, × the days of the year) is
calibrated on its own — the nonconformity score is the normalised error of the calibration sites' *annual*
values (`kgml.uncertainty.aggregate_scores`), so whatever correlation the monthly or daily errors have
within a year is carried into q without assuming a form for it; the seed-spread scale of a year is
Σ σ̂ × days (the σ̂ of the annual total if the errors were fully correlated: the conservative form). Years are the units of the annual scores; sites stay the exchangeable units of the calibration.

Year-held-out folds (leave-years-out, forecast: every unit is trained on in some years and held out in
others): calibration *years* are carved out of the training years instead (`calibration_years_split`: whole
years, every unit; `n_calibration_years`: the fraction, raised to 9 so that the 90 % quantile is finite,
keeping ≥ 4 training years; forecast folds: the last known years, see there). The errors of the units of
one year share its weather, so the year is the exchangeable unit: the scores of a calibration year's units
weigh 1 together (`conformal_quantiles` keyed by year). Coverage is still scored per unit (p10 over units).
The exchangeability of calibration and test years is an assumption: across a trend, or with the forecast's
longer lead times, it fails in the direction of under-coverage. Aggregates (``<target>_aggregate``, annual
suites): the (area-weighted where the data have ``area_harvested``) mean over the units of each year — the
state yield of a state's counties — calibrated on the calibration years' *aggregate* errors
(`unit_aggregate`), which carries the between-unit correlation of the errors: averaging N counties shrinks
the error by √N only if they are independent, and one year's weather makes them not.

Reference: the random forest's quantile regression forest (Meinshausen 2006, JMLR 7:983;
`kgml.compare.baselines.FeatureBaseline.predict_quantiles`), first seed, uncalibrated, on the same folds and sites
(``scale="quantile forest"``), and the same forest conformalised on the same calibration units
(``scale="quantile forest + conformal"``: CQR, Romano, Patterson & Candès 2019, `_cqr_site_hits`), i.e. its width at
a calibrated coverage — the reference a calibrated interval's width is fairly compared with.
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
    Calibration,
    aggregate_scores,
    conformal_quantiles,
    coverage_scores,
    cqr_scores,
    nonconformity,
    site_tail_quantile,
)

__all__ = ["CALIBRATION_FRACTION", "MIN_CALIBRATION_YEARS", "QRF_QUANTILES", "calibration_path", "calibration_split",
           "calibration_years_split", "coverage_figure", "interval_rows", "intervals_dataset", "intervals_markdown",
           "n_calibration_years"]

#: Flux targets whose annual values per site are scored too (``<target>_annual``, gC m-2 yr-1).
ANNUAL_TARGETS = ("nee", "gpp", "reco", "rsoil")
#: Net fluxes whose magnitude scale is the sum of the model's predicted gross fluxes (`_magnitude`).
GROSS_FLUXES = {"nee": ("gpp", "reco")}
#: Share of a fold's training sites carved out for calibration.
CALIBRATION_FRACTION = 0.2
#: Fewest calibration years (or sites) with a finite 90 % split-conformal quantile: ⌈(n + 1)·0.9⌉ ≤ n.
MIN_CALIBRATION_YEARS = 9
#: Fewest training years a fold keeps when calibration years are carved out of it.
MIN_TRAINING_YEARS = 4
#: The site-tail rule (`kgml.uncertainty.site_tail_quantile`): the interval whose 10th-percentile held-out site
#: covers at least 80 % of its steps (issue 19's tail target), reported beside the pooled 90 % interval of each
#: scale (rows ``<scale>, p10 ≥ 80 % rule``; only the 90 % columns are filled).
SITE_TAIL = (0.8, 0.1)
TAIL_LEVEL = 0.9
TAIL_SUFFIX = ", p10 ≥ 80 % rule"
#: Quantiles of the quantile-forest reference: the ends of the central intervals at `LEVELS`.
QRF_QUANTILES = tuple(sorted({round((1 - lv) / 2, 4) for lv in LEVELS} | {round((1 + lv) / 2, 4) for lv in LEVELS}))


def calibration_path(fold_dir: Path, model: str, seed: int = 0) -> Path:
    """Calibration-site predictions of (fold, model, seed): ``<fold_dir>/<model>[_seed<k>]_calibration.nc``."""
    return Path(fold_dir) / f"{model}{seed_suffix(seed)}_calibration.nc"


def calibration_split(split: Split, *, fraction: float = CALIBRATION_FRACTION, seed: int = 0) -> tuple[Split | None, str]:
    """``split`` with calibration sites carved out of its training sites: they leave ``train`` and join the
    held-out part (so every slot predicts them), listed in ``info["calibration_sites"]``. A fold whose
    held-out sites are the training sites in other years (leave-years-out, forecast) gets calibration
    *years* instead (`calibration_years_split`). Returns (split, "") or (None, why) for a fold that holds
    out per-site years (no whole year to calibrate on). Raises ``ValueError`` when fewer than one training
    site would be left."""
    heldout = split.info.get("heldout", "test")
    held = split.part(heldout)
    train = sorted(map(str, split.train.units))
    if set(held.units) & set(train):
        if held.unit_years is not None or split.train.unit_years is not None or held.years is None \
                or split.train.years is None:
            return None, ("held-out years differ by site (no whole held-out year to calibrate on, no site held "
                          "out whole)")
        return calibration_years_split(split, fraction=fraction, seed=seed), ""
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


def n_calibration_years(n_train: int, fraction: float = CALIBRATION_FRACTION) -> int:
    """Calibration years carved out of ``n_train`` training years: ``fraction`` of them, raised to
    `MIN_CALIBRATION_YEARS` (the fewest with a finite 90 % quantile), but leaving at least
    `MIN_TRAINING_YEARS`; at least 2. Raises ``ValueError`` when that is impossible."""
    n = max(int(round(fraction * n_train)), MIN_CALIBRATION_YEARS)
    n = min(n, n_train - MIN_TRAINING_YEARS)
    if n < 2:
        raise ValueError(f"{n_train} training years: too few to carve 2 calibration years out of them and keep "
                         f"{MIN_TRAINING_YEARS} for training")
    return n


def calibration_years_split(split: Split, *, fraction: float = CALIBRATION_FRACTION, seed: int = 0) -> Split:
    """``split`` (every unit held out in some years, trained on in others) with calibration *years* carved
    out of its training years: whole years, every unit of them; they leave ``train`` and join the held-out
    part's years (every slot predicts them with the held-out years; the engine writes them apart), listed in
    ``info["calibration_years"]``; the held-out years in ``info["heldout_years"]``. How many:
    `n_calibration_years`. Which: in a forecast fold (``strategy == "forecast_origins"``) the *last* known
    years before the forecast origin, as a forecaster would calibrate on the most recent years it could
    have forecast; the validation years move to just before them (the models then train on the earliest
    years, are validated on the next and calibrated on the latest: the calibration errors are genuine
    forecasts, though at shorter lead times than the test years'); elsewhere (leave-years-out) a seeded draw
    of the training years (generator seeded with ``seed`` and the split's name). Raises ``ValueError`` when
    too few training years are left."""
    heldout = split.info.get("heldout", "test")
    held = split.part(heldout)
    train_y = sorted(split.train.years)
    val_y = sorted(split.val.years or ())
    n_cal = n_calibration_years(len(train_y), fraction)
    if split.strategy == "forecast_origins":
        known = sorted(set(train_y) | set(val_y))
        cal = known[len(known) - n_cal:]
        rest = known[:len(known) - n_cal]
        val = rest[len(rest) - len(val_y):] if val_y else []
        keep = [y for y in rest if y not in set(val)]
        where = "the last known years before the forecast origin"
    else:
        rng = np.random.default_rng([int(seed), zlib.crc32(split.name.encode())])
        cal = sorted(int(y) for y in rng.choice(train_y, size=n_cal, replace=False))
        keep, val = [y for y in train_y if y not in set(cal)], val_y
        where = "a seeded draw of the training years"
    parts = {"train": Part(split.train.units, keep),
             "val": Part(split.val.units if val else (), val or None),
             heldout: Part(held.units, sorted({*held.years, *cal}))}
    info = {**split.info, "calibration_years": [int(y) for y in cal], "heldout_years": [int(y) for y in held.years],
            "calibration_fraction": float(fraction), "calibration_by": "year", "calibration_choice": where}
    if split.strategy == "forecast_origins" and val:
        info["val_years_moved"] = [int(y) for y in val]
    return dataclasses.replace(split, **parts, info=info)


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


def _qrf_paired(pred: xr.Dataset, obs: xr.Dataset, var: str, obs_var: str, resolution: str, level: float
                ) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray] | None:
    """(lower, upper, observed) of the quantile forest's central ``level`` interval on (site, step), paired
    (NaN wherever a bound or the observation is missing); None when the prediction has no quantiles."""
    b = _qrf_bounds(pred, var, level)
    if b is None:
        return None
    name = f"{var}_monthly" if resolution == "monthly" else var
    lo, o = ev.paired(xr.Dataset({name: b[0].reset_coords(drop=True)}), obs, var, obs_var, resolution=resolution)
    hi, _ = ev.paired(xr.Dataset({name: b[1].reset_coords(drop=True)}), obs, var, obs_var, resolution=resolution)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(o)
    return lo.where(ok), hi.where(ok), o.where(ok)


def _bounds_hits(lo: xr.DataArray, hi: xr.DataArray, o: xr.DataArray, widen: float = 0.0) -> dict:
    """Per site: (hits, widths) of the interval [lo − widen, hi + widen] on its paired steps."""
    out = {}
    for s in lo.site.values:
        lv_, hv, ov = (np.asarray(a.sel(site=s).values, np.float64) for a in (lo, hi, o))
        ok = np.isfinite(lv_) & np.isfinite(hv) & np.isfinite(ov)
        if ok.any():
            a, b = lv_[ok] - widen, hv[ok] + widen
            out[str(s)] = ((ov[ok] >= a) & (ov[ok] <= b), b - a)
    return out


def _qrf_site_hits(pred: xr.Dataset, obs: xr.Dataset, var: str, obs_var: str, resolution: str) -> dict | None:
    """Per held-out site and level: (hits, widths) of the quantile-forest interval."""
    out = {}
    for lv in LEVELS:
        b = _qrf_paired(pred, obs, var, obs_var, resolution, lv)
        if b is None:
            return None
        for site, hw in _bounds_hits(*b).items():
            out.setdefault(site, {})[lv] = hw
    return out


def _cqr_site_hits(held: xr.Dataset, cal: xr.Dataset, obs: xr.Dataset, var: str, obs_var: str, resolution: str,
                   group, train: Sequence[str], held_units: Sequence[str], *, tail: bool = False
                   ) -> tuple[dict, dict, int, tuple | None] | None:
    """Conformalised quantile regression (Romano, Patterson & Candès 2019, NeurIPS 32, "CQR"): per level, the
    score of a calibration step is E = max(q̂_lo − y, y − q̂_hi) (`kgml.uncertainty.cqr_scores`; negative
    inside the forest's interval), Q its split-conformal quantile over the calibration units (each weighs 1,
    `conformal_quantiles`), and the held-out interval [q̂_lo − Q, q̂_hi + Q]. Returns (site → level → (hits,
    widths), level → Q, number of calibration units, the site-tail rule's (site → {TAIL_LEVEL: (hits, widths)},
    Q) on the `TAIL_LEVEL` base interval when ``tail``, else None) or None without quantiles or calibration units."""
    hits: dict = {}
    qs, n_cal, tail_out = {}, 0, None
    for lv in LEVELS:
        c, h = (_qrf_paired(cal, obs, var, obs_var, resolution, lv), _qrf_paired(held, obs, var, obs_var, resolution, lv))
        if c is None or h is None:
            return None
        scores = group(xr.DataArray(cqr_scores(c[2].values, c[0].values, c[1].values), coords=c[2].coords,
                                    dims=c[2].dims))
        try:
            calib = conformal_quantiles(scores, [lv], train_sites=train, test_sites=held_units)
        except ValueError:  # fewer than 2 calibration units with paired values
            return None
        qs[lv], n_cal = calib.q[lv], calib.n_sites
        for site, hw in _bounds_hits(*h, widen=calib.q[lv]).items():
            hits.setdefault(site, {})[lv] = hw
        if tail and lv == TAIL_LEVEL:
            q_t, _ = site_tail_quantile(scores, *SITE_TAIL, train_sites=train, test_sites=held_units)
            tail_out = ({site: {lv: hw} for site, hw in _bounds_hits(*h, widen=q_t).items()}, q_t)
    return hits, qs, n_cal, tail_out


def _add_hits(a: dict, hits: dict, split: Split, by_year: bool) -> None:
    """Add one fold's per-site (hits, widths) by level to an accumulator (pooled coverage, per-site coverage
    for the p10, summed widths)."""
    n = 0
    for site, by_lv in hits.items():
        k = len(next(iter(by_lv.values()))[0])
        cov = {"n": k, **{f"coverage_{round(lv * 100)}": float(h.mean()) for lv, (h, _) in by_lv.items()}}
        _pool_coverage(a["sites"], site if by_year else f"{split.name}/{site}", cov)  # year folds: over folds
        n += k
        for lv, (h, w) in by_lv.items():
            key = round(lv * 100)
            a["sums"][f"coverage_{key}"] = a["sums"].get(f"coverage_{key}", 0.0) + float(h.sum())
            a["sums"][f"width_{key}"] = a["sums"].get(f"width_{key}", 0.0) + float(w.sum())
    a["n"] += n
    a["folds"].append(split.name)


def interval_rows(suite, ds: xr.Dataset, folds: dict[str, list[Split]], directory: Path, models: Sequence[str],
                  seeds: Sequence[int], obs: xr.Dataset) -> tuple[list[dict], dict[str, str]]:
    """Coverage and sharpness of the calibrated intervals of every (model, fold kind, target) on the
    held-out sites, pooled over the kind's folds: per level pooled coverage, its 10th percentile over
    sites and the mean width; mean CRPS (`kgml.uncertainty.coverage_scores`). One row per scale (the
    protocol's; with several seeds also ``residual``, for comparison) and, for ``rf``, the uncalibrated
    quantile-forest reference (``scale="quantile forest"``). Returns (rows, notes by fold kind)."""
    rows, notes = [], {}
    weights = ds["area_harvested"] if "area_harvested" in ds else None
    for kind, splits in folds.items():
        if not splits or not ({"calibration_sites", "calibration_years"} & set(splits[0].info)):
            notes[kind] = "no calibration sites or years (held-out years differ by site)"
            continue
        few = [f"{sp.name} ({len(sp.info['calibration_years'])})" for sp in splits
               if 0 < len(sp.info.get("calibration_years", ())) < MIN_CALIBRATION_YEARS]
        if few:  # too few training years to carve 9 out: no finite 90 % quantile there
            notes[kind] = (f"fewer than {MIN_CALIBRATION_YEARS} calibration years in {', '.join(few)}: the 90 % "
                           "interval is unbounded (∞) in those folds")
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
                    _fold_intervals(acc, held, cal, obs, var, obs_var, suite.resolution, split, m, weights)
                for (label, scale), a in acc.items():
                    rows.append(_finish(a, m, kind, label, scale))
    return rows, notes


def _by_year(da: xr.DataArray) -> dict[str, np.ndarray]:
    """(site, year) values grouped by year: year → the values of its sites (the calibration units of a
    year-calibrated fold)."""
    return {str(int(y)): np.asarray(da.sel(year=y).values, np.float64) for y in da.year.values}


def unit_aggregate(y: xr.DataArray, yhat: xr.DataArray, sigma: xr.DataArray | None = None,
                   weights: xr.DataArray | None = None, *, min_fraction: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The aggregate over units of each year of (site, year) observations and predictions: the mean over
    the units paired that year (both finite), weighted by ``weights`` (e.g. harvested area, (site, year) or
    (site,)) when given — the state yield of its counties (t ha-1) when the units are a state's counties.
    NaN for a year with fewer than ``min_fraction`` of the units paired (a mean of a few counties is not the
    state's). With ``sigma`` (the step scale σ̂ + β) also its weighted mean: the σ̂ of the aggregate if the
    units' errors were fully correlated (the conservative scale; the calibration decides the width).
    Returns (observed, predicted, scale or None, years)."""
    y, yhat = y.transpose("site", "year"), yhat.transpose("site", "year")
    yv, pv = np.asarray(y.values, np.float64), np.asarray(yhat.values, np.float64)
    if weights is None:
        w = np.ones_like(yv)
    else:
        wd = weights.reindex(site=y.site.values)
        wd = wd.reindex(year=y.year.values) if "year" in wd.dims else wd.expand_dims(year=y.year.values, axis=-1)
        w = np.asarray(wd.transpose("site", "year").values, np.float64)
    ok = np.isfinite(yv) & np.isfinite(pv) & np.isfinite(w) & (w > 0)
    if sigma is not None:
        sv = np.asarray(sigma.transpose("site", "year").values, np.float64)
        ok &= np.isfinite(sv)
    w = np.where(ok, w, 0.0)
    total = w.sum(0)
    enough = ok.sum(0) >= max(1, min_fraction * yv.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        ya = np.where(enough, (w * np.where(ok, yv, 0.0)).sum(0) / total, np.nan)
        pa = np.where(enough, (w * np.where(ok, pv, 0.0)).sum(0) / total, np.nan)
        sa = None if sigma is None else np.where(enough, (w * np.where(ok, sv, 0.0)).sum(0) / total, np.nan)
    return ya, pa, sa, np.asarray(y.year.values, np.int64)


def _aggregate_views(oc, pc, sc, oh, ph, sh, weights) -> tuple:
    """The cross-unit aggregate of a year-calibrated fold: calibration scores per calibration year (one
    aggregate each), held-out aggregates of the held-out years as one series (``"all units"``)."""
    ya, pa, sa, yrs = unit_aggregate(oc, pc, sc, weights)
    cal = ({str(y): ya[i:i + 1] for i, y in enumerate(yrs)}, {str(y): pa[i:i + 1] for i, y in enumerate(yrs)},
           None if sa is None else {str(y): sa[i:i + 1] for i, y in enumerate(yrs)})
    yh, phh, shh, _ = unit_aggregate(oh, ph, sh, weights)
    return (*cal, {"all units": yh}, {"all units": phh}, None if shh is None else {"all units": shh})


def _magnitude(pred: xr.Dataset, var: str) -> xr.Dataset | None:
    """The predicted magnitude m̂ of ``var`` (same units): for a net flux the sum of the model's own predicted
    gross fluxes (`GROSS_FLUXES`: NEE → GPP + Reco, both ≥ 0), else |ŷ|; ``<v>_monthly`` variants alike. None
    when the prediction has neither."""
    out = {}
    for suffix in ("", "_monthly"):
        name = var + suffix
        parts = GROSS_FLUXES.get(var, ())
        if parts and all(f"{g}{suffix}" in pred for g in parts):
            out[name] = sum(abs(pred[f"{g}{suffix}"]) for g in parts)
        elif name in pred:
            out[name] = abs(pred[name])
    return xr.Dataset(out) if out else None


def _sensitivity(scale_c: xr.DataArray, pc: xr.DataArray) -> float:
    """β of a normalised score: the median scale over the calibration steps that are paired (0 when none)."""
    v = scale_c.values[np.isfinite(pc.values) & np.isfinite(scale_c.values)]
    return float(np.median(v)) if v.size else 0.0


def _fold_intervals(acc: dict, held: list, cal: list, obs, var: str, obs_var: str, resolution: str, split: Split,
                    model: str, weights: xr.DataArray | None = None) -> None:
    h_mean, h_sd = _mean_sd(held)
    c_mean, c_sd = _mean_sd(cal)
    try:
        ph, oh = ev.paired(h_mean, obs, var, obs_var, resolution=resolution)
        pc, oc = ev.paired(c_mean, obs, var, obs_var, resolution=resolution)
    except (KeyError, ValueError):
        return
    # scale name → (calibration σ, held-out σ) of the normalised score; None = the plain residual (σ = 1)
    scales: dict[str, tuple | None] = {}
    if h_sd is not None:
        sh, _ = ev.paired(h_sd, obs, var, obs_var, resolution=resolution)
        sc, _ = ev.paired(c_sd, obs, var, obs_var, resolution=resolution)
        beta = _sensitivity(sc, pc)
        # σ̂ + β, β the median spread of the fold's calibration steps: steps where the seeds agree exactly
        # (GPP in winter) keep a non-zero interval; seeds that always agree (deterministic slots): no spread scale.
        if beta > 0:
            scales["seed spread"] = (sc + beta, sh + beta)
    # the flux targets (those with annual totals) get the magnitude scale; yields do not
    mag_h, mag_c = (_magnitude(h_mean, var), _magnitude(c_mean, var)) if var in ANNUAL_TARGETS else (None, None)
    if mag_h is not None and mag_c is not None:
        mh, _ = ev.paired(mag_h, obs, var, obs_var, resolution=resolution)
        mc, _ = ev.paired(mag_c, obs, var, obs_var, resolution=resolution)
        beta = _sensitivity(mc, pc)
        if beta > 0:  # m̂ + β: errors grow with the flux (Richardson et al. 2006); β keeps m̂ ≈ 0 steps open
            scales["magnitude"] = (mc + beta, mh + beta)
    scales["residual"] = None
    by_year = "calibration_years" in split.info
    if by_year:  # the calibration units are whole years (each weighs 1); held-out coverage stays per site
        if resolution != "annual":
            return
        group = _by_year
        train = [str(int(y)) for y in (*split.train.years, *(split.val.years or ()))]
        held_units = [str(int(y)) for y in split.info["heldout_years"]]
    else:
        group = _by_site
        train = list(map(str, split.train.units)) + list(map(str, split.val.units))
        held_units = list(split.info.get("heldout_sites", []))
    yc0, pc0, yh0, ph0 = group(oc), group(pc), _by_site(oh), _by_site(ph)  # the same for every scale
    annual = not by_year and resolution in ("daily", "monthly") and var in ANNUAL_TARGETS
    if annual:
        (yrs_c, days_c), (yrs_h, days_h) = _step_days(oc, resolution), _step_days(oh, resolution)
    for scale, sig in scales.items():
        sig_c, sig_h = sig if sig is not None else (None, None)
        views = {var: (yc0, pc0, None if sig_c is None else group(sig_c), yh0, ph0,
                       None if sig_h is None else _by_site(sig_h))}
        if by_year:
            views[f"{var}_aggregate"] = _aggregate_views(oc, pc, sig_c, oh, ph, sig_h, weights)
        if annual:
            s_c = None if sig_c is None else _by_site(sig_c)
            s_h = None if sig_h is None else _by_site(sig_h)
            views[f"{var}_annual"] = (*_annual(yc0, pc0, s_c, yrs_c, days_c), *_annual(yh0, ph0, s_h, yrs_h, days_h))
        for label, (yc, pc_, sc_, yh, ph_, sh_) in views.items():
            scores = {s: nonconformity(yc[s], pc_[s], None if sc_ is None else sc_[s]) for s in yc}
            try:
                calib = conformal_quantiles(scores, train_sites=train, test_sites=held_units)
            except ValueError:  # fewer than 2 calibration sites with paired values (e.g. no complete year)
                continue
            res = coverage_scores(yh, ph_, calib, sh_, per_site=True)
            if not res["n"]:  # no held-out step (or complete year) to score
                continue
            a = acc.setdefault((label, scale), {"folds": [], "sites": {}, "n": 0, "sums": {}, "q": [], "n_cal": [],
                                                "by": "year" if by_year else "site"})
            _add(a, res, split.name, pool_units=by_year and label == var)
            a["q"].append({lv: calib.q[lv] for lv in LEVELS})
            a["n_cal"].append(calib.n_sites)
            if label == var and not by_year:  # the site-tail rule: the p10 held-out site covers ≥ SITE_TAIL[0]
                q_t, n_t = site_tail_quantile(scores, *SITE_TAIL, train_sites=train, test_sites=held_units)
                res = coverage_scores(yh, ph_, Calibration({TAIL_LEVEL: q_t}, n_t, 0, ()), sh_, per_site=True)
                res.pop("crps", None)
                a = acc.setdefault((label, f"{scale}{TAIL_SUFFIX}"), {"folds": [], "sites": {}, "n": 0, "sums": {},
                                                                      "q": [], "n_cal": []})
                _add(a, res, split.name)
                a["q"].append({TAIL_LEVEL: q_t})
                a["n_cal"].append(n_t)
    if model == "rf":
        hits = _qrf_site_hits(held[0], obs, var, obs_var, resolution)
        if hits:
            a = acc.setdefault((var, "quantile forest"), {"folds": [], "sites": {}, "n": 0, "sums": {}, "q": [], "n_cal": []})
            _add_hits(a, hits, split, by_year)
        cqr = _cqr_site_hits(held[0], cal[0], obs, var, obs_var, resolution, group, train, held_units,
                             tail=not by_year)
        if cqr and cqr[0]:
            a = acc.setdefault((var, "quantile forest + conformal"), {"folds": [], "sites": {}, "n": 0, "sums": {},
                                                                      "q": [], "n_cal": [],
                                                                      "by": "year" if by_year else "site"})
            _add_hits(a, cqr[0], split, by_year)
            a["q"].append(cqr[1])
            a["n_cal"].append(cqr[2])
            if cqr[3]:
                a = acc.setdefault((var, f"quantile forest + conformal{TAIL_SUFFIX}"),
                                   {"folds": [], "sites": {}, "n": 0, "sums": {}, "q": [], "n_cal": []})
                _add_hits(a, cqr[3][0], split, by_year)
                a["q"].append({TAIL_LEVEL: cqr[3][1]})
                a["n_cal"].append(cqr[2])


def _add(a: dict, res: dict, fold: str, *, pool_units: bool = False) -> None:
    """Add one fold's scores to the accumulator; per-unit coverage is kept per (fold, unit), or with
    ``pool_units`` per unit over the folds (year-held-out folds hold every unit out in each fold)."""
    n = res.get("n", 0)
    if not n:
        return
    a["folds"].append(fold)
    a["n"] += n
    for k, v in res.items():
        if k.startswith(("coverage_", "width_")) and not k.endswith("_p10") or k == "crps":
            a["sums"][k] = a["sums"].get(k, 0.0) + v * n
    for site, cov in res["sites"].items():
        _pool_coverage(a["sites"], site if pool_units else f"{fold}/{site}", cov)


def _pool_coverage(sites: dict, key: str, cov: dict) -> None:
    """Store a unit's coverage under ``key``; where the key is already there (the unit's held-out years of
    another fold), the two are pooled, weighted by their step counts ``n``."""
    if key in sites:
        old = sites[key]
        m = old["n"] + cov["n"]
        cov = {k: (old[k] * old["n"] + v * cov["n"]) / m if k != "n" else m for k, v in cov.items()}
    sites[key] = cov


def _finish(a: dict, model: str, kind: str, var: str, scale: str) -> dict:
    row = {"model": model, "fold_kind": kind, "variable": var, "scale": scale, "n_folds": len(a["folds"]),
           "n_sites": len(a["sites"]), "n": a["n"],
           "n_calibration_sites": int(np.sum(a["n_cal"])) if a["n_cal"] else 0,
           "calibrated_by": a.get("by", "site")}
    for lv in LEVELS:
        key = round(lv * 100)
        row[f"coverage_{key}"] = a["sums"].get(f"coverage_{key}", math.nan) / a["n"] if a["n"] else math.nan
        per = [c[f"coverage_{key}"] for c in a["sites"].values() if f"coverage_{key}" in c]
        row[f"coverage_{key}_p10"] = float(np.quantile(per, 0.1)) if per else math.nan
        row[f"width_{key}"] = a["sums"].get(f"width_{key}", math.nan) / a["n"] if a["n"] else math.nan
        qs = [q[lv] for q in a["q"] if lv in q]
        row[f"q_{key}"] = float(np.median(qs)) if qs else math.nan
    row["crps"] = a["sums"]["crps"] / a["n"] if "crps" in a["sums"] and a["n"] else math.nan
    # the share of held-out units whose own coverage of the 90 % interval reaches SITE_TAIL[0] (the site-tail
    # rule promises ≥ 1 − SITE_TAIL[1] of them)
    per = np.asarray([c[f"coverage_{round(TAIL_LEVEL * 100)}"] for c in a["sites"].values()
                      if f"coverage_{round(TAIL_LEVEL * 100)}" in c])
    row["share_sites_covered"] = float(np.mean(per >= SITE_TAIL[0] - 1e-12)) if per.size else math.nan
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
             "= seed spread: ŷ ± q (σ̂ + β), σ̂ over seeds, β its median on the calibration steps; magnitude (fluxes): "
             "ŷ ± q (m̂ + β), m̂ the predicted flux magnitude (NEE: the model's GPP + Reco; else |ŷ|), β its median "
             "on the calibration steps; residual: ŷ ± q; quantile forest: the RF's uncalibrated "
             "quantile regression forest (Meinshausen 2006); quantile forest + conformal: the same, conformalised on "
             "the calibration sites (CQR, Romano et al. 2019: [q̂_lo − Q, q̂_hi + Q]); '<scale>, p10 ≥ 80 % rule': the "
             "same scale with Q chosen so that a new site covers ≥ 80 % of its steps with probability ≥ 0.9 "
             "(`kgml.uncertainty.site_tail_quantile`: each calibration site's own 80 % score, their conformal 90 % "
             "over sites; on the 90 % base interval for the forest) — the width the p10 ≥ 80 % tail costs. Coverage pooled / p10 over held-out sites; width = "
             "mean interval width (units of the target; ``<target>_annual``: annual totals in gC m-2 yr-1, calibrated "
             "on the calibration sites' annual errors); CRPS of the calibrated Gaussian. ∞: fewer calibration "
             "sites than the level needs (⌈(n+1)·level⌉ > n).", "",
             "Year-held-out folds (leave-years-out, forecast): calibration *years* (whole years, every unit; "
             "`calibration_years_split`; forecast: the last known years) instead of sites, each year weighing 1; "
             "'(N y)' = calibration years summed over folds; coverage p10 over held-out units. "
             "``<target>_aggregate``: the mean over units of each held-out year (all units: the state yield of "
             "a state's counties), calibrated on the calibration years' aggregate errors (carries the "
             "between-unit correlation); its p10 is over folds.", ""]
    for kind in dict.fromkeys(r["fold_kind"] for r in rows):
        for var in dict.fromkeys(r["variable"] for r in rows if r["fold_kind"] == kind):
            mine = [r for r in rows if r["fold_kind"] == kind and r["variable"] == var]
            lines += [f"#### {kind} — {var}: intervals", "",
                      "| model | scale | folds | sites (cal) | cov 50 | cov 80 | cov 90 / p10 | width 50 | width 80 "
                      "| width 90 | CRPS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in mine:
                lines.append("| " + " | ".join([
                    r["model"], r["scale"], str(r["n_folds"]),
                    f"{r['n_sites']} ({r['n_calibration_sites']}{' y' if r.get('calibrated_by') == 'year' else ''})",
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
    """Empirical coverage (pooled: solid; p10 site or unit: dashed) against the nominal level: a row of panels
    per fold kind, a panel per target, a line per (model, scale); the diagonal is perfect calibration."""
    if not rows:
        return None
    plt = pyplot()
    kinds = list(dict.fromkeys(r["fold_kind"] for r in rows))
    panels = [(kind, var) for kind in kinds
              for var in dict.fromkeys(r["variable"] for r in rows if r["fold_kind"] == kind)]
    ncol = max(sum(1 for k, _ in panels if k == kind) for kind in kinds)
    fig, axes = plt.subplots(len(kinds), ncol, figsize=(3.6 * ncol, 3.4 * len(kinds)), squeeze=False)
    nominal = np.asarray(LEVELS)
    colour = {k: f"C{i}" for i, k in enumerate(dict.fromkeys((r["model"], r["scale"]) for r in rows))}
    used = set()
    for i, kind in enumerate(kinds):
        variables = [v for k, v in panels if k == kind]
        for j, var in enumerate(variables):
            ax = axes[i][j]
            used.add((i, j))
            ax.plot([0.4, 1.0], [0.4, 1.0], color="0.6", lw=1)
            for r in (r for r in rows if r["fold_kind"] == kind and r["variable"] == var
                      and not r["scale"].endswith(TAIL_SUFFIX)):  # one level only: not a curve
                pooled = [r[f"coverage_{round(lv * 100)}"] for lv in LEVELS]
                tail = [r[f"coverage_{round(lv * 100)}_p10"] for lv in LEVELS]
                line, = ax.plot(nominal, pooled, "o-", color=colour[(r["model"], r["scale"])],
                                label=f"{r['model']} ({r['scale']})")
                ax.plot(nominal, tail, "x--", color=line.get_color(), lw=0.8)
            ax.set(xlabel="nominal level", ylabel="empirical coverage", xlim=(0.4, 1.0), ylim=(0.0, 1.02))
            ax.set_title(f"{var}\n{kind}", fontsize=8)
            ax.grid(alpha=0.3)
    for i in range(len(kinds)):
        for j in range(ncol):
            if (i, j) not in used:
                axes[i][j].set_visible(False)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{title}: coverage of calibrated intervals (solid pooled, dashed p10 site or unit)", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_png_atomic(fig, path, dpi=130)
