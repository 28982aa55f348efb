"""Friction-velocity (u*) threshold estimation and filtering of night-time eddy-covariance NEE: the
moving-point test of Papale et al. (2006, Biogeosciences 3:571) as REddyProc's ``sEstUstarThold`` runs it
(Wutzler et al. 2018, Biogeosciences 15:5015), on numpy arrays.

At night, with weak turbulence (low u*), CO2 is stored or drained below the sensor and the measured NEE
underestimates respiration. The threshold is the u* above which night-time NEE no longer increases:

1. Records: night (SW_IN < ``night_sw_in``, 10 W m-2) with finite NEE, air temperature and u*.
2. Seasons: Jan–Feb, Mar–May, Jun–Aug, Sep–Nov and Dec, where a December and the following Jan–Feb form one
   season labelled by the December's year (REddyProc ``usCreateSeasonFactorMonth``).
3. In each season, ``ta_classes`` (7) air-temperature classes of equal size; a class is used only with at least
   ``min_records_temp`` (100) records and when |corr(T, u*)| < ``corr_check`` (0.5), so that u* does not stand
   in for temperature.
4. In each class, ``ustar_classes`` (20) u* classes of equal size (ties kept together); the mean NEE and u* of
   each. Forward two-point test ("FW2"): the threshold is the mean u* of the first class i for which both
   class i and class i+1 reach ``plateau_crit`` (95 %) of the mean NEE of the ``plateau_forward`` (10)
   classes above i.
5. Season: the median over its temperature classes (at least ``min_valid_temp_fraction`` of them valid); year:
   the largest season value (the most conservative), or the estimate of the year's records pooled in one
   season when the year has fewer than ``min_records_year`` records or no season value; overall: the median
   over years.

`estimate_ustar_threshold` returns all three levels; with ``n_boot`` the overall threshold's bootstrap
distribution (records resampled within seasons, seeded) gives its 5/50/95 % quantiles, the scenarios of
REddyProc ``sEstimateUstarScenarios``. `ustar_filter` marks the night-time records below a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgml.progress import bar

__all__ = ["UstarThreshold", "estimate_ustar_threshold", "fw2_threshold", "seasons_of", "ustar_filter"]

NIGHT_SW_IN = 10.0  #: W m-2; REddyProc usControlUstarSubsetting swThr


class UstarError(ValueError):
    """The u* threshold could not be estimated (too few night-time records, no plateau anywhere)."""


def fw2_threshold(ustar_mean: np.ndarray, nee_mean: np.ndarray, *, plateau_forward: int = 10,
                  plateau_crit: float = 0.95) -> float:
    """The forward two-point plateau test on u*-binned means (step 4 of the module docstring); NaN when no
    class reaches the plateau."""
    u = np.asarray(ustar_mean, np.float64)
    f = np.asarray(nee_mean, np.float64)
    for i in range(f.size - 1):
        plateau = np.nanmean(f[i + 1 : min(i + 1 + plateau_forward, f.size)])
        if f[i] >= plateau_crit * plateau and f[i + 1] >= plateau_crit * plateau:
            return float(u[i])
    return float("nan")


def _equal_bins(order_values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index (0…n_bins−1) of each value: classes of (nearly) equal size over the sorted values, never
    splitting equal values between two classes."""
    n = order_values.size
    order = np.argsort(order_values, kind="stable")
    sorted_v = order_values[order]
    bins = np.empty(n, np.int64)
    edges = [int(round(k * n / n_bins)) for k in range(n_bins + 1)]
    b = np.zeros(n, np.int64)
    for k in range(n_bins):
        b[edges[k] : edges[k + 1]] = k
    # keep ties together: a value equal to the previous one takes the previous one's class
    for i in range(1, n):
        if sorted_v[i] == sorted_v[i - 1]:
            b[i] = b[i - 1]
    bins[order] = b
    return bins


def seasons_of(times) -> tuple[np.ndarray, np.ndarray]:
    """(season label, season year) per record: ``year*1000 + start month`` with seasons starting in March,
    June, September and December; January–February join the previous December's season when that December
    is in the record, else form their own (``year*1000 + 1``)."""
    t = np.asarray(times).astype("datetime64[M]")
    year = t.astype("datetime64[Y]").astype(np.int64) + 1970
    month = t.astype(np.int64) % 12 + 1
    start = np.select([month >= 12, month >= 9, month >= 6, month >= 3], [12, 9, 6, 3], 1)
    label = year * 1000 + start
    winter = start == 1
    decembers = set((year[month == 12]).tolist())
    prev = np.array([y - 1 in decembers for y in year[winter]], bool)
    w = np.flatnonzero(winter)
    label[w[prev]] = (year[w[prev]] - 1) * 1000 + 12
    return label, label // 1000


@dataclass
class UstarThreshold:
    """Result of `estimate_ustar_threshold` (u* in m s-1)."""

    threshold: float  #: overall: median over years
    by_year: dict[int, float]
    by_season: dict[int, float]  #: season label → median over its temperature classes (NaN: none valid)
    by_class: dict[int, list[float]]  #: season label → estimate of each temperature class
    pooled_years: list[int] = field(default_factory=list)  #: years estimated from their records pooled
    quantiles: dict[str, float] = field(default_factory=dict)  #: bootstrap "U05", "U50", "U95" (with n_boot)
    n_records: int = 0


def _class_estimate(nee, tair, ustar, *, ustar_classes, corr_check, min_records_temp, plateau_forward, plateau_crit):
    if nee.size < min_records_temp:
        return float("nan")
    if np.std(tair) > 0 and np.std(ustar) > 0 and abs(np.corrcoef(tair, ustar)[0, 1]) >= corr_check:
        return float("nan")
    b = _equal_bins(ustar, ustar_classes)
    used = np.unique(b)
    u_mean = np.array([ustar[b == k].mean() for k in used])
    f_mean = np.array([nee[b == k].mean() for k in used])
    return fw2_threshold(u_mean, f_mean, plateau_forward=plateau_forward, plateau_crit=plateau_crit)


def _season_estimate(nee, tair, ustar, *, ta_classes, min_records_season, min_valid_temp_fraction, **kw):
    if nee.size < min_records_season:
        return float("nan"), []
    tb = _equal_bins(tair, ta_classes)
    per_class = [_class_estimate(nee[tb == k], tair[tb == k], ustar[tb == k], **kw) for k in np.unique(tb)]
    ok = np.isfinite(per_class)
    if ok.sum() == 0 or ok.mean() < min_valid_temp_fraction:
        return float("nan"), per_class
    return float(np.median(np.asarray(per_class)[ok])), per_class


def _estimate(nee, tair, ustar, season, year, opts) -> tuple[float, dict, dict, dict, list]:
    season_kw = {k: opts[k] for k in ("ta_classes", "min_records_season", "min_valid_temp_fraction")}
    class_kw = {k: opts[k] for k in ("ustar_classes", "corr_check", "min_records_temp", "plateau_forward",
                                     "plateau_crit")}
    by_season, by_class = {}, {}
    for s in np.unique(season):
        sel = season == s
        by_season[int(s)], by_class[int(s)] = _season_estimate(nee[sel], tair[sel], ustar[sel], **season_kw, **class_kw)
    by_year, pooled = {}, []
    for y in np.unique(year):
        sel = year == y
        values = [v for s, v in by_season.items() if s // 1000 == y and np.isfinite(v)]
        if sel.sum() >= opts["min_records_year"] and values:
            by_year[int(y)] = float(max(values))
        else:
            by_year[int(y)] = _season_estimate(nee[sel], tair[sel], ustar[sel], **season_kw, **class_kw)[0]
            pooled.append(int(y))
    finite = [v for v in by_year.values() if np.isfinite(v)]
    return (float(np.median(finite)) if finite else float("nan")), by_year, by_season, by_class, pooled


def estimate_ustar_threshold(
    nee,
    tair,
    ustar,
    sw_in,
    times,
    *,
    night_sw_in: float = NIGHT_SW_IN,
    ta_classes: int = 7,
    ustar_classes: int = 20,
    corr_check: float = 0.5,
    plateau_forward: int = 10,
    plateau_crit: float = 0.95,
    min_records_temp: int = 100,
    min_records_season: int = 160,
    min_records_year: int = 3000,
    min_valid_temp_fraction: float = 0.2,
    n_boot: int = 0,
    seed: int = 0,
    source: object = None,
    progress: bool = False,
) -> UstarThreshold:
    """u* threshold (m s-1) of a half-hourly or hourly record by the moving-point test (module docstring).
    ``nee`` measured NEE (any flux unit: only its shape against u* matters; NaN where missing or gap-filled),
    ``tair`` °C, ``ustar`` m s-1, ``sw_in`` W m-2, ``times`` datetime64. Defaults are REddyProc's
    (usControlUstarEst, usControlUstarSubsetting). ``n_boot`` > 0 adds the 5/50/95 % bootstrap quantiles (``progress``: a bar over the draws)."""
    arrays = [np.asarray(a, np.float64).ravel() for a in (nee, tair, ustar, sw_in)]
    times = np.asarray(times)
    if any(a.size != times.size for a in arrays):
        raise ValueError(f"{source or 'u* threshold'}: nee, tair, ustar, sw_in and times differ in length "
                         f"({[a.size for a in arrays]} vs {times.size})")
    nee, tair, ustar, sw_in = arrays
    ok = np.isfinite(nee) & np.isfinite(tair) & np.isfinite(ustar) & np.isfinite(sw_in) & (sw_in < night_sw_in)
    if ok.sum() < min_records_season:
        raise UstarError(f"{source or 'u* threshold'}: {int(ok.sum())} valid night-time records (SW_IN < "
                         f"{night_sw_in} W m-2 with NEE, TA and USTAR); at least {min_records_season} needed")
    season, year = seasons_of(times[ok])
    opts = dict(ta_classes=ta_classes, ustar_classes=ustar_classes, corr_check=corr_check,
                plateau_forward=plateau_forward, plateau_crit=plateau_crit, min_records_temp=min_records_temp,
                min_records_season=min_records_season, min_records_year=min_records_year,
                min_valid_temp_fraction=min_valid_temp_fraction)
    x = (nee[ok], tair[ok], ustar[ok])
    overall, by_year, by_season, by_class, pooled = _estimate(*x, season, year, opts)
    if not np.isfinite(overall):
        raise UstarError(f"{source or 'u* threshold'}: no season or year shows a night-time NEE plateau in u*")
    out = UstarThreshold(overall, by_year, by_season, by_class, pooled, n_records=int(ok.sum()))
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in bar(range(n_boot), desc="u* bootstrap", unit="draw", disable=not progress, leave=False):
            idx = np.concatenate([rng.choice(np.flatnonzero(season == s), size=int((season == s).sum()))
                                  for s in np.unique(season)])
            draws.append(_estimate(*(a[idx] for a in x), season[idx], year[idx], opts)[0])
        draws = np.asarray(draws)
        draws = draws[np.isfinite(draws)]
        if draws.size:
            out.quantiles = {f"U{int(q * 100):02d}": float(np.quantile(draws, q)) for q in (0.05, 0.5, 0.95)}
    return out


def ustar_filter(ustar, sw_in, threshold: float, *, night_sw_in: float = NIGHT_SW_IN) -> np.ndarray:
    """True for the records to discard: night-time (SW_IN < ``night_sw_in``) with u* below ``threshold`` or
    missing (REddyProc ``sApplyUStarScen``: daytime records are kept)."""
    u = np.asarray(ustar, np.float64)
    night = np.asarray(sw_in, np.float64) < night_sw_in
    return night & ~(u >= threshold)
