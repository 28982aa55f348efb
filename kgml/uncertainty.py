"""Predictive intervals calibrated for sites a model has never seen: split-conformal prediction grouped by
site, coverage and sharpness scores, and intervals of aggregates (annual sums) with their correlation.

Split-conformal prediction (Vovk et al. 2005; Lei et al. 2018, JASA 113:1094) with *sites* as the
exchangeable units: the nonconformity score of a paired step is its normalised absolute error
``s = |y − ŷ| / σ̂`` (``σ̂`` the ensemble spread of the point prediction, or 1); the calibration quantile at
level 1 − α is the ⌈(n + 1)(1 − α)⌉-th smallest score of the calibration sites, and the interval of a new
prediction is ``ŷ ± q σ̂``. Scores are pooled over the calibration sites' steps; so that no single long
record decides ``q``, each site's steps are weighted by 1 / (its number of steps) — the quantile is then
taken of the site-weighted empirical distribution (the sites, not the steps, are the exchangeable units;
"weighted conformal", Tibshirani et al. 2019 NeurIPS). Calibration sites must be distinct from the training
and the test sites (`conformal_quantiles` checks it when given the training and test sites).

Aggregates (annual NEE of a site, a region's budget, a county's yield over years): errors of the steps of
one site are correlated, so a step interval cannot be summed. The aggregate is calibrated on its own: the
nonconformity score is the normalised error of the calibration sites' *aggregates* (`aggregate_scores`),
which carries whatever correlation the errors have, without assuming a form for it.

Scores: empirical coverage (pooled, per site, its 10th percentile over sites), mean interval width, and the
continuous ranked probability score of a Gaussian predictive distribution with the calibrated σ
(Gneiting & Raftery 2007, JASA 102:359, eq. 21).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "LEVELS",
    "Calibration",
    "aggregate_scores",
    "conformal_quantiles",
    "coverage_scores",
    "cqr_scores",
    "crps_gaussian",
    "interval",
    "nonconformity",
    "site_tail_quantile",
]

#: Nominal coverage levels of the predictive intervals.
LEVELS = (0.5, 0.8, 0.9)


@dataclass(frozen=True)
class Calibration:
    """Calibration quantiles ``q[level]`` of the normalised absolute error, from ``n_sites`` sites."""

    q: Mapping[float, float]
    n_sites: int
    n_steps: int
    sites: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"q": {str(k): float(v) for k, v in self.q.items()}, "n_sites": self.n_sites,
                "n_steps": self.n_steps, "sites": list(self.sites)}


def nonconformity(y: np.ndarray, yhat: np.ndarray, sigma: np.ndarray | float | None = None) -> np.ndarray:
    """|y − ŷ| / σ̂ (σ̂ = 1 when None); NaN where any input is not finite or σ̂ ≤ 0 (never made a number)."""
    y, yhat = np.asarray(y, np.float64), np.asarray(yhat, np.float64)
    s = np.ones_like(yhat) if sigma is None else np.broadcast_to(np.asarray(sigma, np.float64), yhat.shape)
    ok = np.isfinite(y) & np.isfinite(yhat) & np.isfinite(s) & (s > 0)
    return np.where(ok, np.abs(y - yhat) / np.where(ok, s, 1.0), np.nan)


def cqr_scores(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nonconformity of conformalised quantile regression (Romano, Patterson & Candès 2019, NeurIPS 32, eq. 6):
    E = max(q̂_lo − y, y − q̂_hi), the signed distance of y outside a base interval [q̂_lo, q̂_hi] (negative
    inside it); the calibrated interval is [q̂_lo − Q, q̂_hi + Q], Q the conformal quantile of E. NaN where
    any input is not finite or q̂_lo > q̂_hi (never made a number)."""
    y, lo, hi = (np.asarray(a, np.float64) for a in (y, lower, upper))
    ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)
    return np.where(ok, np.maximum(lo - y, y - hi), np.nan)


def _weighted_quantile(scores: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest score whose weighted empirical CDF, with the test point's weight added at +∞ (the
    finite-sample correction of split conformal), reaches ``level``."""
    order = np.argsort(scores, kind="stable")
    s, w = scores[order], weights[order]
    # Each calibration site weighs 1 in total; the new site weighs 1 too, placed at +∞.
    cdf = np.cumsum(w) / (w.sum() + 1.0)
    # A tolerance for the rounding of the summed weights (9 sites of 1/n_steps each sum to 8.999…: the 90 %
    # quantile of 9 sites is their largest score, not +∞).
    i = int(np.searchsorted(cdf, level - 1e-9, side="left"))
    return float(s[i]) if i < s.size else math.inf


def conformal_quantiles(
    scores_by_site: Mapping[str, np.ndarray],
    levels: Sequence[float] = LEVELS,
    *,
    train_sites: Sequence[str] = (),
    test_sites: Sequence[str] = (),
) -> Calibration:
    """Split-conformal quantiles of the nonconformity scores of the calibration sites (one array of scores
    per site; NaN = unpaired step). Each site weighs 1 in total (its steps 1 / n_steps each). Raises
    ``ValueError`` when a calibration site is also a training or test site, when fewer than 2 sites have
    scores, or for a level outside (0, 1)."""
    overlap = set(scores_by_site) & (set(map(str, train_sites)) | set(map(str, test_sites)))
    if overlap:
        raise ValueError(f"calibration sites {sorted(overlap)[:5]} are also training or test sites")
    vals, wts, used = [], [], []
    for site, sc in scores_by_site.items():
        sc = np.asarray(sc, np.float64).ravel()
        sc = sc[np.isfinite(sc)]
        if sc.size:
            vals.append(sc)
            wts.append(np.full(sc.size, 1.0 / sc.size))
            used.append(str(site))
    if len(used) < 2:
        raise ValueError(f"conformal calibration needs at least 2 calibration sites with paired values, got "
                         f"{len(used)}")
    s, w = np.concatenate(vals), np.concatenate(wts)
    q = {}
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"coverage level must be in (0, 1), got {level}")
        q[float(level)] = _weighted_quantile(s, w, float(level))
    return Calibration(q, len(used), int(s.size), tuple(used))


def site_tail_quantile(scores_by_site: Mapping[str, np.ndarray], site_coverage: float = 0.8, tail: float = 0.1,
                       *, train_sites: Sequence[str] = (), test_sites: Sequence[str] = ()) -> tuple[float, int]:
    """The scale factor Q whose interval covers at least ``site_coverage`` of a *new site's* steps with
    probability ≥ 1 − ``tail`` — a bound on the per-site coverage tail (the p10 site at ``tail`` = 0.1),
    not on pooled coverage. Each calibration site i gives r_i, the smallest q with at least ``site_coverage``
    of its own scores ≤ q (the ⌈c·n_i⌉-th smallest); the sites are the exchangeable units, so Q is the
    ⌈(n + 1)(1 − tail)⌉-th smallest r_i: the r_i of exchangeable sites are exchangeable, so a new site's r
    is ≤ Q with probability ≥ 1 − tail (split conformal with the site as the unit, the two-layer setting of
    Dunn, Wasserman & Ramdas 2023, JASA 118:2491), and r ≤ Q means its coverage is ≥ ``site_coverage``.
    Returns (Q, n sites); Q = ∞ with too few sites. Raises ``ValueError`` as `conformal_quantiles` (overlapping sites, < 2 sites, bad levels)."""
    if not (0.0 < site_coverage < 1.0 and 0.0 < tail < 1.0):
        raise ValueError(f"site_coverage and tail must be in (0, 1), got {site_coverage}, {tail}")
    overlap = set(scores_by_site) & (set(map(str, train_sites)) | set(map(str, test_sites)))
    if overlap:
        raise ValueError(f"calibration sites {sorted(overlap)[:5]} are also training or test sites")
    r = []
    for sc in scores_by_site.values():
        sc = np.sort(np.asarray(sc, np.float64).ravel())
        sc = sc[np.isfinite(sc)]
        if sc.size:
            r.append(sc[max(0, math.ceil(site_coverage * sc.size - 1e-9) - 1)])
    if len(r) < 2:
        raise ValueError(f"conformal calibration needs at least 2 calibration sites with paired values, got {len(r)}")
    r = np.sort(np.asarray(r))
    k = math.ceil((len(r) + 1) * (1.0 - tail) - 1e-9)
    return (float(r[k - 1]) if k <= len(r) else math.inf), len(r)


def interval(yhat: np.ndarray, q: float, sigma: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) = ŷ ∓ q σ̂ (σ̂ = 1 when None)."""
    yhat = np.asarray(yhat, np.float64)
    s = 1.0 if sigma is None else np.asarray(sigma, np.float64)
    return yhat - q * s, yhat + q * s


def crps_gaussian(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """CRPS of N(μ, σ²) at y (units of y): σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − μ)/σ
    (Gneiting & Raftery 2007, eq. 21)."""
    y, mu = np.asarray(y, np.float64), np.asarray(mu, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), mu.shape)
    z = (y - mu) / sigma
    phi = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    return sigma * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _z(level: float) -> float:
    """z of the standard normal at the central interval's upper end for a level: Φ⁻¹((1 + level)/2)."""
    return NormalDist().inv_cdf((1.0 + level) / 2.0)


def coverage_scores(
    y_by_site: Mapping[str, np.ndarray],
    yhat_by_site: Mapping[str, np.ndarray],
    calibration: Calibration,
    sigma_by_site: Mapping[str, np.ndarray] | None = None,
    *,
    tail: float = 0.1,
    per_site: bool = False,
) -> dict:
    """Coverage and sharpness of the calibrated intervals on held-out sites: for each level, the pooled
    coverage (share of paired steps inside), the ``tail`` quantile of per-site coverage over sites (the bad
    tail: p10), mean width; and the mean CRPS of the Gaussian whose σ is the calibrated one, read from the
    80 % quantile: σ = q₀.₈ σ̂ / z₀.₈, z₀.₈ = Φ⁻¹(0.9) = 1.2816. ``per_site``: also ``sites`` = site →
    {``coverage_<level>``, ``n``} (to pool several folds' held-out sites)."""
    out: dict = {"n_sites": 0, "n": 0}
    sites_out: dict = {}
    inside = {lv: [] for lv in calibration.q}
    per_site = {lv: [] for lv in calibration.q}
    widths = {lv: [] for lv in calibration.q}
    crps = []
    ref = 0.8 if 0.8 in calibration.q else max(calibration.q)
    z_ref = _z(ref)
    for site, y in y_by_site.items():
        y = np.asarray(y, np.float64).ravel()
        yhat = np.asarray(yhat_by_site[site], np.float64).ravel()
        sig = np.ones_like(yhat) if sigma_by_site is None else np.broadcast_to(
            np.asarray(sigma_by_site[site], np.float64).ravel(), yhat.shape)
        ok = np.isfinite(y) & np.isfinite(yhat) & np.isfinite(sig)
        if not ok.any():
            continue
        out["n_sites"] += 1
        out["n"] += int(ok.sum())
        sites_out[str(site)] = {"n": int(ok.sum())}
        for lv, q in calibration.q.items():
            lo, hi = interval(yhat[ok], q, sig[ok])
            hit = (y[ok] >= lo) & (y[ok] <= hi)
            inside[lv].append(hit)
            per_site[lv].append(float(hit.mean()))
            sites_out[str(site)][f"coverage_{round(lv * 100):d}"] = float(hit.mean())
            widths[lv].append(hi - lo)
        crps.append(crps_gaussian(y[ok], yhat[ok], np.maximum(calibration.q[ref] * sig[ok] / z_ref, 1e-12)))
    if per_site:
        out["sites"] = sites_out
    if not out["n_sites"]:
        return out
    for lv in calibration.q:
        key = f"{round(lv * 100):d}"
        out[f"coverage_{key}"] = float(np.concatenate(inside[lv]).mean())
        out[f"coverage_{key}_p{round(tail * 100):d}"] = float(np.quantile(per_site[lv], tail))
        out[f"width_{key}"] = float(np.concatenate(widths[lv]).mean())
    out["crps"] = float(np.concatenate(crps).mean())
    return out


def aggregate_scores(
    y: np.ndarray, yhat: np.ndarray, groups: np.ndarray, *, how: str = "sum", min_fraction: float = 1.0,
    sigma: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate paired steps by ``groups`` (e.g. year of each day of one site) into (observed aggregate,
    predicted aggregate, labels): ``how`` = "sum" or "mean"; a group counts only where at least
    ``min_fraction`` of its steps are paired (an aggregate of a half-observed year is not an annual value),
    else NaN. With ``sigma`` the third value is the aggregated σ̂ assuming full correlation (Σσ̂: the
    conservative scale), to normalise the aggregates' nonconformity; without it, the labels."""
    y, yhat, groups = np.asarray(y, np.float64), np.asarray(yhat, np.float64), np.asarray(groups)
    labels = np.unique(groups)
    ya, pa, sa = (np.full(labels.size, np.nan) for _ in range(3))
    for i, g in enumerate(labels):
        m = groups == g
        ok = np.isfinite(y[m]) & np.isfinite(yhat[m])
        if ok.mean() < min_fraction or not ok.any():
            continue
        f = np.sum if how == "sum" else np.mean
        ya[i], pa[i] = f(y[m][ok]), f(yhat[m][ok])
        if sigma is not None:
            sa[i] = f(np.asarray(sigma, np.float64)[m][ok])
    return ya, pa, (sa if sigma is not None else labels)


# ---------------------------------------------------------------------------------------------------------
# Calibration records of trained runs, and interval bounds as CF variables
# ---------------------------------------------------------------------------------------------------------

#: ``kind`` of a calibration record (``calibration.json`` of a run, written by ``kgml calibrate``).
RECORD_KIND = "kgml split-conformal calibration"
#: Scales of a record: ``residual`` (ŷ ± q) or ``ensemble spread`` (ŷ ± q σ̂, σ̂ the ``<v>_sd`` of the output).
RECORD_SCALES = ("residual", "ensemble spread")


def calibration_record(entries: Mapping[str, Mapping[str, Calibration]], *, scale: str, n_members: int,
                       runs: Sequence[str] = (), data: str = "") -> dict:
    """A JSON-ready calibration record: ``entries[resolution][variable]`` = `Calibration` (resolution
    ``daily`` for ``kgml predict``'s (site, time) output, ``monthly`` for ``kgml map``'s monthly means); an
    infinite quantile (too few calibration sites for the level) is stored as null."""
    if scale not in RECORD_SCALES:
        raise ValueError(f"calibration scale must be one of {RECORD_SCALES}, got {scale!r}")
    out = {"kind": RECORD_KIND, "format_version": 1, "scale": scale, "n_members": int(n_members),
           "runs": [str(r) for r in runs], "data": str(data), "entries": {}}
    for res, by_var in entries.items():
        out["entries"][res] = {}
        for var, cal in by_var.items():
            d = cal.to_dict()
            d["q"] = {k: (None if not math.isfinite(v) else v) for k, v in d["q"].items()}
            out["entries"][res][var] = d
    return out


def read_calibration_record(path) -> dict:
    """A calibration record from JSON, checked: raises ``ValueError`` naming the file and what is wrong."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the calibration record ({err})") from None
    if not isinstance(rec, dict) or rec.get("kind") != RECORD_KIND:
        raise ValueError(f"{path}: not a kgml calibration record (kind must be {RECORD_KIND!r})")
    if rec.get("scale") not in RECORD_SCALES:
        raise ValueError(f"{path}: scale must be one of {RECORD_SCALES}, got {rec.get('scale')!r}")
    for res, by_var in dict(rec.get("entries") or {}).items():
        for var, e in dict(by_var).items():
            for k, v in dict(e.get("q") or {}).items():
                lv = float(k)
                if not 0 < lv < 1 or not (v is None or (isinstance(v, int | float) and v >= 0)):
                    raise ValueError(f"{path}: entries.{res}.{var}.q[{k!r}] = {v!r}: need a level in (0, 1) and a "
                                     "quantile ≥ 0 (null = unbounded)")
    return rec


def add_bounds(ds, record: Mapping, resolution: str, *, sd_suffix: str = "_sd"):
    """``ds`` with the calibrated interval bounds of every variable of ``record["entries"][resolution]``
    present in it: ``<v>_lower_<pct>`` / ``<v>_upper_<pct>`` (``<v>`` ∓ q, or ∓ q σ̂ with σ̂ = ``<v><sd_suffix>``
    when the record's scale is the ensemble spread), same units, linked from ``<v>`` by CF
    ``ancillary_variables``; with the ensemble spread the scale is σ̂ + β, β the entry's ``beta`` (0 when
    absent). Raises ``ValueError`` when the record wants a spread the dataset lacks. Returns
    (dataset, names of the variables given bounds)."""
    entries = dict(record.get("entries", {}).get(resolution, {}))
    out = ds.copy()
    done = []
    for var, e in entries.items():
        if var not in out:
            continue
        sigma = 1.0
        if record["scale"] == "ensemble spread":
            sd = f"{var}{sd_suffix}"
            if sd not in out:
                raise ValueError(f"the calibration record scales {var!r} by the spread of {record['n_members']} "
                                 f"members, but the output has no {sd!r} (map with the same ensemble)")
            sigma = out[sd] + float(e.get("beta", 0.0))  # σ̂ + β (β: the record's sensitivity term)
        units = out[var].attrs.get("units", "")
        names = []
        for k, q in sorted(e["q"].items(), key=lambda kv: float(kv[0])):
            pct = round(float(k) * 100)
            qv = math.inf if q is None else float(q)
            for side, sign in (("lower", -1.0), ("upper", 1.0)):
                name = f"{var}_{side}_{pct}"
                out[name] = (out[var] + sign * qv * sigma).astype(np.float32)
                out[name].attrs = {
                    "units": units,
                    "long_name": f"{side} bound of the central {pct} % predictive interval of {var}",
                    "comment": "; ".join(c for c in (
                        f"split-conformal, calibrated on {e['n_sites']} sites not used in training "
                        f"({record['scale']}; kgml.uncertainty)", out[var].attrs.get("comment", "")) if c),
                    "coverage_level": float(k),
                    **({"cell_methods": out[var].attrs["cell_methods"]} if "cell_methods" in out[var].attrs else {})}
                names.append(name)
        out[var].attrs = {**out[var].attrs, "ancillary_variables": " ".join(names)}
        done.append(var)
    return out, done
