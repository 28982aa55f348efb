"""Gap-filling of flux time series: marginal distribution sampling (MDS, Reichstein et al. 2005, as REddyProc
implements it) and machine-learning fillers (gradient boosting, random forest) with a per-gap uncertainty.

Array functions come first (numpy in, numpy out); `mds_gapfill_dataset`, `ml_gapfill_dataset` and
`soil_co2_gapfill` apply them to the (site, time) datasets of `kgml.data` and return xarray.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError
from kgml.fluxsite.features import calibration_split, time_features
from kgml.fluxsite.fluxhybrid import hybrid_gapfill
from kgml.progress import bar

__all__ = [
    "FILL_METHODS",
    "MDS_OUTPUT_VARIABLES",
    "QUALITY_CLASSES",
    "FillResult",
    "MDSResult",
    "gap_run_lengths",
    "mds_gapfill",
    "mds_gapfill_dataset",
    "mds_gapfill_loop",
    "ml_gapfill",
    "ml_gapfill_dataset",
    "SOIL_CO2_DRIVERS",
    "calibration_split",
    "hybrid_gapfill_dataset",
    "soil_co2_gapfill",
    "time_features",
]

#: Fill quality flag → class of Reichstein et al. (2005) (REddyProc ``*_fqc``); 0 = original value.
QUALITY_CLASSES: dict[int, str] = {0: "original", 1: "A", 2: "B", 3: "C"}
#: Fill method code (REddyProc ``*_fmeth``) → what was averaged.
FILL_METHODS: dict[int, str] = {
    1: "look-up table: similar SW_IN, TA and VPD",
    2: "look-up table: similar SW_IN only",
    3: "mean diurnal course: same time of day on neighbouring days",
}
#: Not filled (a long gap, or no usable neighbour within the largest window).
NOT_FILLED = -1

# REddyProc sMDSGapFill, steps 1-8 (Wutzler et al. 2018, Biogeosciences 15:5015, their code EddyGapfilling.R,
# following Reichstein et al. 2005, Glob. Change Biol. 11:1424, Appendix A). Windows are ± days.
_LUT_ALL = "lut3"
_LUT_SW = "lut1"
_MDC = "mdc"
_SCHEDULE: tuple[tuple[str, int], ...] = (
    (_LUT_ALL, 7),
    (_LUT_ALL, 14),
    (_LUT_SW, 7),
    (_MDC, 0),
    (_MDC, 1),
    (_MDC, 2),
    *((_LUT_ALL, w) for w in range(21, 71, 7)),
    *((_LUT_SW, w) for w in range(14, 71, 7)),
    *((_MDC, w) for w in range(7, 211, 7)),
)
_METHOD_CODE = {_LUT_ALL: 1, _LUT_SW: 2, _MDC: 3}
# Elements (targets × candidates × conditions) handled per vectorised block: bounds memory (~50 MB).
_BLOCK_ELEMENTS = 2_000_000


def _quality(kind: str, days: int) -> tuple[int, float]:
    """REddyProc's quality flag and full window length (days) of a fill from stage ``kind`` at ± ``days``."""
    if kind == _MDC:
        window = 2 * days + 1
        return (1 if window <= 1 else 2 if window <= 5 else 3), float(window)
    window = 2 * days
    limit_b = 56 if kind == _LUT_ALL else 28
    return (1 if window <= 14 else 2 if window <= limit_b else 3), float(window)


@dataclass(frozen=True)
class MDSResult:
    """Output of `mds_gapfill`, one value per time step (REddyProc column in brackets).

    filled (``_f``): observations where present, the MDS estimate in gaps, NaN where a gap could not be filled.
    qc (``_fqc``): 0 observed, 1/2/3 = quality class A/B/C of the fill, -1 not filled.
    estimate (``_fall``): the MDS estimate wherever one was made (gaps; every step when ``fill_all``).
    estimate_qc (``_fall_qc``): its quality flag (1–3; -1 none).
    sd (``_fsd``): standard deviation (ddof=1) of the values averaged — the fill uncertainty.
    n (``_fnum``): number of values averaged (0 none).
    method (``_fmeth``): 1 LUT(SW_IN, TA, VPD), 2 LUT(SW_IN), 3 mean diurnal course; 0 none.
    window (``_fwin``): full window length in days; NaN none.
    """

    filled: np.ndarray
    qc: np.ndarray
    estimate: np.ndarray
    estimate_qc: np.ndarray
    sd: np.ndarray
    n: np.ndarray
    method: np.ndarray
    window: np.ndarray


def gap_run_lengths(missing: np.ndarray) -> np.ndarray:
    """For each element, the length of the run of consecutive True values it belongs to (0 where False)."""
    missing = np.asarray(missing, dtype=bool)
    if missing.size == 0:
        return np.zeros(0, dtype=np.int64)
    padded = np.concatenate([[False], missing, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    out = np.zeros(missing.size, dtype=np.int64)
    run_id = np.cumsum(np.diff(padded.astype(np.int8))[:-1] == 1) - 1
    lengths = ends - starts
    out[missing] = lengths[run_id[missing]]
    return out


def _as_float(name: str, values, n: int | None, source) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataValidationError(source, name, f"expected a 1-D time series, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise DataValidationError(source, name, f"length {arr.size} differs from the flux series ({n} steps)")
    return arr


def _block_size(width: int, k: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, width * max(k, 1)))


def _lut_stats(
    targets: np.ndarray,
    half: int,
    obs_pos: np.ndarray,
    obs_y: np.ndarray,
    obs_met: np.ndarray,
    centre: np.ndarray,
    tol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sd of observed values within ±``half`` steps of each target whose drivers all lie
    strictly within ``tol`` of the target's (``|x_j − x_gap| < tol``, REddyProc sFillLUT).

    Targets (sorted) are taken in blocks of nearby steps; a block's candidate windows overlap, so their union
    is one contiguous slice of the observations and each block is a dense targets × candidates comparison
    (no gather), with the sums as matrix–vector products.
    """
    m = targets.size
    count = np.zeros(m, dtype=np.int64)
    mean = np.full(m, np.nan)
    sd = np.full(m, np.nan)
    if m == 0 or obs_pos.size == 0:
        return count, mean, sd
    span = max(1, min(half // 4, 96))
    key = targets // span
    cuts = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [m]])
    los = np.searchsorted(obs_pos, targets[starts] - half, side="left")
    his = np.searchsorted(obs_pos, targets[ends - 1] + half, side="right")
    y2 = obs_y * obs_y
    for a, b, lo, hi in zip(starts, ends, los, his, strict=True):
        if hi <= lo:
            continue
        t = targets[a:b]
        ok = np.abs(obs_pos[None, lo:hi] - t[:, None]) <= half
        for c in range(obs_met.shape[1]):
            d = obs_met[None, lo:hi, c] - centre[a:b, c, None]
            np.abs(d, out=d)
            ok &= d < tol[a:b, c, None]
        w = ok.astype(np.float64)
        cnt = ok.sum(axis=1)
        s = w @ obs_y[lo:hi]
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = s / cnt
            # sum of squared deviations = Σy² − μ Σy (non-negative up to rounding)
            var = np.maximum(w @ y2[lo:hi] - mu * s, 0.0) / (cnt - 1)
        count[a:b] = cnt
        mean[a:b] = mu
        sd[a:b] = np.sqrt(var)
    return count, mean, sd


def _mdc_stats(
    targets: np.ndarray, days: int, steps_per_day: int, half_width: int, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sd of observed values at the same time of day (± ``half_width`` steps) on the days
    within ± ``days`` (REddyProc sFillMDC)."""
    day_offsets = np.arange(-days, days + 1) * steps_per_day
    offsets = (day_offsets[:, None] + np.arange(-half_width, half_width + 1)[None, :]).ravel()
    count = np.zeros(targets.size, dtype=np.int64)
    mean = np.full(targets.size, np.nan)
    sd = np.full(targets.size, np.nan)
    n = y.size
    step = _block_size(offsets.size, 1)
    for a in range(0, targets.size, step):
        b = min(a + step, targets.size)
        idx = targets[a:b, None] + offsets
        inside = (idx >= 0) & (idx < n)
        np.clip(idx, 0, n - 1, out=idx)
        vals = y[idx]
        ok = inside & np.isfinite(vals)
        _masked_stats(vals, ok, count, mean, sd, slice(a, b))
    return count, mean, sd


def _masked_stats(vals, ok, count, mean, sd, where: slice) -> None:
    cnt = ok.sum(axis=1)
    zero = np.where(ok, vals, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = zero.sum(axis=1) / cnt
        dev = np.where(ok, vals - mu[:, None], 0.0)
        var = (dev * dev).sum(axis=1) / (cnt - 1)
    count[where] = cnt
    mean[where] = mu
    sd[where] = np.sqrt(var)


def mds_gapfill(
    flux,
    sw_in,
    tair=None,
    vpd=None,
    *,
    steps_per_day: int = 48,
    sw_in_tolerance: float = 50.0,
    sw_in_tolerance_min: float = 20.0,
    tair_tolerance: float = 2.5,
    vpd_tolerance: float = 5.0,
    mdc_half_width: int | None = None,
    max_gap_days: float = 60.0,
    fill_all: bool = False,
    source: object = None,
    progress: bool = False,
) -> MDSResult:
    """Marginal distribution sampling (Reichstein et al. 2005, Appendix A) exactly as REddyProc's sMDSGapFill.

    Every gap (NaN in ``flux``) is filled by the mean of observed fluxes found by the first of these
    look-ups that yields at least two values (stages of REddyProc, windows ± days around the gap):

    1. ±7, ±14 d: SW_IN within ``max(tol_min, min(tol, SW_IN_gap))`` (20–50 W m-2), TA within 2.5 °C and
       VPD within 5 hPa of the gap's (strict ``<``; a candidate or gap with a missing driver never matches);
    2. ±7 d: SW_IN only;
    3. mean diurnal course: the same time of day ± ``mdc_half_width`` steps on the same day, then ±1, ±2 d;
    4. ±21 … ±70 d (step 7) with all three drivers, then ±14 … ±70 d with SW_IN only;
    5. mean diurnal course ±7 … ±210 d (step 7).

    Quality flags (REddyProc, full window length w in days): LUT with three drivers 1 if w ≤ 14, 2 if
    w ≤ 56, else 3; SW_IN-only LUT 1 if w ≤ 14, 2 if w ≤ 28, else 3; diurnal course (w = 2d+1) 1 if w ≤ 1,
    2 if w ≤ 5, else 3. (The paper states 28 days where REddyProc uses 14.) As in REddyProc, runs of gaps
    longer than ``max_gap_days`` are not filled, and when TA or VPD is absent altogether only the SW_IN
    look-ups and the diurnal course are used (a warning says so).

    Args:
        flux: series to fill (any units; NaN = gap), length n.
        sw_in: incoming shortwave radiation (W m-2). tair: air temperature (°C). vpd: vapour pressure
            deficit (hPa). All length n; NaN = missing.
        steps_per_day: 48 half-hourly, 24 hourly (1 daily works, with the day as the only "time of day").
        mdc_half_width: steps either side of the same time of day in the diurnal course; default 2 when
            ``steps_per_day ≥ 24`` (REddyProc's fixed ``-2:2`` records: ±1 h half-hourly, ±2 h hourly), else 0.
        fill_all: also estimate every observed step (its own value included, as REddyProc's ``FillAll``),
            giving ``sd`` everywhere for uncertainty budgets. Gap values are the same either way.
        source: file or dataset name used in error messages.
        progress: a progress bar over the look-up stages (seconds on a year of half-hours).
    """
    y = _as_float("flux", flux, None, source)
    n = y.size
    if n == 0:
        raise DataValidationError(source, "flux", "empty series: nothing to gap-fill")
    if not np.isfinite(y).any():
        raise DataValidationError(source, "flux", "all values are missing: nothing to fill from")
    if int(steps_per_day) != steps_per_day or steps_per_day < 1:
        raise ValueError(f"steps_per_day must be a positive integer, got {steps_per_day!r}")
    steps_per_day = int(steps_per_day)
    if sw_in is None:
        raise DataValidationError(source, "sw_in", "MDS needs incoming shortwave radiation (SW_IN); none given")
    sw = _as_float("sw_in", sw_in, n, source)
    if not np.isfinite(sw).any():
        raise DataValidationError(source, "sw_in", "all values are missing; MDS needs incoming shortwave radiation")
    ta = _as_float("tair", tair, n, source) if tair is not None else None
    vp = _as_float("vpd", vpd, n, source) if vpd is not None else None
    full = ta is not None and vp is not None and np.isfinite(ta).any() and np.isfinite(vp).any()
    if not full:
        missing = [name for name, v in (("tair", ta), ("vpd", vp)) if v is None or not np.isfinite(v).any()]
        warnings.warn(
            f"{source or 'mds_gapfill'}: no {' or '.join(missing)}; MDS uses SW_IN-only look-ups and the mean "
            "diurnal course (REddyProc's 'limited MDS')",
            stacklevel=2,
        )
    if mdc_half_width is None:
        mdc_half_width = 2 if steps_per_day >= 24 else 0

    observed = np.isfinite(y)
    runs = gap_run_lengths(~observed)
    long_gap = runs > max_gap_days * steps_per_day
    todo = (np.ones(n, dtype=bool) if fill_all else ~observed) & ~long_gap

    estimate = np.full(n, np.nan)
    estimate_qc = np.full(n, NOT_FILLED, dtype=np.int8)
    sd = np.full(n, np.nan)
    count = np.zeros(n, dtype=np.int64)
    method = np.zeros(n, dtype=np.int8)
    window = np.full(n, np.nan)

    obs_pos = np.flatnonzero(observed)
    obs_y = y[obs_pos]
    met_all = np.stack([sw, ta, vp], axis=1) if full else sw[:, None]
    sw_tol = np.maximum(np.minimum(sw_in_tolerance, np.where(np.isfinite(sw), sw, np.inf)), sw_in_tolerance_min)
    tol_all = np.stack([sw_tol, np.full(n, tair_tolerance), np.full(n, vpd_tolerance)], axis=1) if full else sw_tol[:, None]
    obs_met = met_all[obs_pos]

    for kind, days in bar(_SCHEDULE, desc="MDS look-ups", unit="stage", disable=not progress, leave=False):
        targets = np.flatnonzero(todo)
        if targets.size == 0:
            break
        if kind == _LUT_ALL and not full:
            continue
        if kind == _MDC:
            cnt, mu, sdev = _mdc_stats(targets, days, steps_per_day, mdc_half_width, y)
        else:
            cols = slice(None) if kind == _LUT_ALL else slice(0, 1)
            cnt, mu, sdev = _lut_stats(
                targets, days * steps_per_day, obs_pos, obs_y, obs_met[:, cols],
                met_all[targets][:, cols], tol_all[targets][:, cols],
            )
        hit = cnt > 1
        if not hit.any():
            continue
        where = targets[hit]
        flag, win = _quality(kind, days)
        estimate[where] = mu[hit]
        sd[where] = sdev[hit]
        count[where] = cnt[hit]
        estimate_qc[where] = flag
        method[where] = _METHOD_CODE[kind]
        window[where] = win
        todo[where] = False

    filled = np.where(observed, y, estimate)
    qc = np.where(observed, 0, estimate_qc).astype(np.int8)
    return MDSResult(filled, qc, estimate, estimate_qc, sd, count, method, window)


def mds_gapfill_loop(
    flux, sw_in, tair, vpd, *, steps_per_day: int = 48, max_gap_days: float = 60.0, fill_all: bool = False
) -> MDSResult:
    """Reference: a plain per-gap transcription of REddyProc's sFillLUT / sFillMDC loops (default tolerances,
    all three drivers). Slow; kept to test and benchmark the vectorised `mds_gapfill` against."""
    y = np.asarray(flux, dtype=np.float64)
    sw, ta, vp = (np.asarray(v, dtype=np.float64) for v in (sw_in, tair, vpd))
    n, dts = y.size, steps_per_day
    observed = np.isfinite(y)
    long_gap = gap_run_lengths(~observed) > max_gap_days * dts
    todo = (np.ones(n, dtype=bool) if fill_all else ~observed) & ~long_gap
    est = np.full(n, np.nan)
    est_qc = np.full(n, NOT_FILLED, dtype=np.int8)
    sd = np.full(n, np.nan)
    cnt = np.zeros(n, dtype=np.int64)
    meth = np.zeros(n, dtype=np.int8)
    win = np.full(n, np.nan)
    for kind, days in _SCHEDULE:
        for gap in np.flatnonzero(todo):
            if kind == _MDC:
                idx = [gap + k for k in range(-2, 3)]
                for day in range(1, days + 1):
                    idx += [gap - day * dts + k for k in range(-2, 3)] + [gap + day * dts + k for k in range(-2, 3)]
                idx = np.array([i for i in idx if 0 <= i < n], dtype=np.int64)
                values = y[idx][observed[idx]]
            else:
                start, end = max(gap - days * dts, 0), min(gap + days * dts, n - 1)
                rows = slice(start, end + 1)
                tol_sw = max(min(50.0, sw[gap]) if np.isfinite(sw[gap]) else 50.0, 20.0)
                with np.errstate(invalid="ignore"):
                    ok = observed[rows] & (np.abs(sw[rows] - sw[gap]) < tol_sw)
                    if kind == _LUT_ALL:
                        ok &= (np.abs(ta[rows] - ta[gap]) < 2.5) & (np.abs(vp[rows] - vp[gap]) < 5.0)
                values = y[rows][ok]
            if values.size > 1:
                est[gap], sd[gap], cnt[gap] = values.mean(), values.std(ddof=1), values.size
                est_qc[gap], win[gap] = _quality(kind, days)
                meth[gap] = _METHOD_CODE[kind]
                todo[gap] = False
    filled = np.where(observed, y, est)
    return MDSResult(filled, np.where(observed, 0, est_qc).astype(np.int8), est, est_qc, sd, cnt, meth, win)


# --- datasets -------------------------------------------------------------------------------------------

#: Variables `mds_gapfill_dataset` adds for variable ``v`` (REddyProc suffixes) → (long name, units or None).
MDS_OUTPUT_VARIABLES: dict[str, tuple[str, str | None]] = {
    "f": ("gap-filled by marginal distribution sampling (observed where present)", "same"),
    "fqc": ("fill quality: 0 observed, 1 A, 2 B, 3 C (Reichstein et al. 2005); NaN not filled", "1"),
    "fall": ("MDS estimate (every step when fill_all)", "same"),
    "fsd": ("standard deviation of the values averaged for the fill (uncertainty)", "same"),
    "fnum": ("number of values averaged", "1"),
    "fmeth": ("fill method: 1 LUT(SW_IN,TA,VPD), 2 LUT(SW_IN), 3 mean diurnal course", "1"),
    "fwin": ("full window length of the look-up", "d"),
}

_STEPS_PER_DAY = {"HH": 48, "HR": 24, "DD": 1}


def _regular_time(ds: xr.Dataset, source) -> tuple[xr.Dataset, int, np.ndarray]:
    """Check a strictly increasing time axis; reindex onto a complete regular grid (MDS counts steps)."""
    times = ds["time"].values
    if times.size < 2:
        raise DataValidationError(source, "time", "need at least two time steps")
    steps = np.diff(times)
    if np.any(steps <= np.timedelta64(0, "ns")):
        i = int(np.flatnonzero(steps <= np.timedelta64(0, "ns"))[0]) + 1
        raise DataValidationError(
            source, "time", f"timestamps not strictly increasing at step {i} ({times[i]} after {times[i - 1]}): "
            "sort the records and remove duplicates first",
        )
    res = ds.attrs.get("time_resolution")
    step = np.timedelta64(86400 // _STEPS_PER_DAY[res], "s") if res in _STEPS_PER_DAY else steps.min()
    per_day = int(np.timedelta64(1, "D") / step)
    if per_day < 1 or np.timedelta64(1, "D") % step != np.timedelta64(0, "ns"):
        raise DataValidationError(source, "time", f"time step {step} does not divide a day; MDS needs HH, HR or DD data")
    off = (times - times[0]) % step != np.timedelta64(0, "ns")
    if np.any(off):
        i = int(np.flatnonzero(off)[0])
        raise DataValidationError(source, "time", f"timestamp {times[i]} is off the {step} grid")
    grid = np.arange(times[0], times[-1] + step, step)
    if grid.size != times.size:
        ds = ds.reindex(time=grid)
    return ds, per_day, times


def _site_series(ds: xr.Dataset, name: str, site) -> np.ndarray | None:
    if name not in ds:
        return None
    da = ds[name]
    if "site" in da.dims:
        da = da.sel(site=site)
    return np.asarray(da.values, dtype=np.float64)


def mds_gapfill_dataset(
    ds: xr.Dataset,
    variable: str = "nee",
    *,
    drivers: tuple[str, str, str] = ("sw_in", "tair", "vpd"),
    **options,
) -> xr.Dataset:
    """MDS (`mds_gapfill`) on every site of a HH/HR/DD ``(site, time)`` dataset from `kgml.data`.

    Returns a dataset on the input's time axis with ``{variable}_f``, ``_fqc``, ``_fall``, ``_fsd``,
    ``_fnum``, ``_fmeth``, ``_fwin`` (see `MDS_OUTPUT_VARIABLES`; flags are float with NaN = not filled).
    Missing rows in the time axis are treated as gaps. ``options`` go to `mds_gapfill`.
    """
    source = ds.attrs.get("source", "<dataset>")
    if variable not in ds:
        raise DataValidationError(source, variable, f"not in the dataset (has {sorted(map(str, ds.data_vars))})")
    if drivers[0] not in ds:
        raise DataValidationError(source, drivers[0], "MDS needs incoming shortwave radiation; variable not in the dataset")
    full, per_day, times = _regular_time(ds, source)
    sites = full["site"].values if "site" in full.dims else [None]
    units = full[variable].attrs.get("units", "")
    out = {key: np.full((len(sites), full.sizes["time"]), np.nan) for key in MDS_OUTPUT_VARIABLES}
    for i, site in enumerate(sites):
        series = _site_series(full, variable, site)
        where = f"{source} (site {site})" if site is not None else source
        res = mds_gapfill(
            series, _site_series(full, drivers[0], site), _site_series(full, drivers[1], site),
            _site_series(full, drivers[2], site), steps_per_day=per_day, source=where, **options,
        )
        out["f"][i] = res.filled
        out["fqc"][i] = np.where(res.qc >= 0, res.qc, np.nan)
        out["fall"][i] = res.estimate
        out["fsd"][i] = res.sd
        out["fnum"][i] = res.n
        out["fmeth"][i] = np.where(res.method > 0, res.method, np.nan)
        out["fwin"][i] = res.window
    data_vars = {}
    for key, (long_name, unit) in MDS_OUTPUT_VARIABLES.items():
        attrs = {"long_name": f"{variable} {long_name}", "units": units if unit == "same" else unit}
        data_vars[f"{variable}_{key}"] = (("site", "time"), out[key].astype(np.float32), attrs)
    result = xr.Dataset(data_vars, coords={"site": full["site"].values, "time": full["time"].values})
    result.attrs = {
        "source": str(source),
        "gapfill_method": "MDS, Reichstein et al. (2005) Glob. Change Biol. 11:1424 as in REddyProc (Wutzler et al. 2018)",
    }
    return result.sel(time=times)


# --- machine-learning fillers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FillResult:
    """Output of `ml_gapfill`, one value per step. filled: observed where present, else the model estimate.
    estimate: model prediction (gaps; every step when ``fill_all``). sd: per-step uncertainty (1 σ).
    qc: 0 observed, 1 filled with every driver present, 2 filled with some driver missing, -1 not filled.
    calibration: the factor the raw σ was multiplied by so that ±σ covers 68.3 % of held-out residuals (1 = none)."""

    filled: np.ndarray
    estimate: np.ndarray
    sd: np.ndarray
    qc: np.ndarray
    calibration: float = 1.0


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the machine-learning gap-fillers need scikit-learn: pip install 'kgml[ml]' (or scikit-learn)"
        ) from err


#: One σ of a normal distribution as quantiles: the gradient-boosting uncertainty is (q84 − q16) / 2.
_SIGMA_QUANTILES = (0.15865525393145707, 0.8413447460685429)


def ml_gapfill(
    flux,
    drivers: Mapping[str, Sequence[float] | np.ndarray],
    times=None,
    *,
    model: str = "gbm",
    fill_all: bool = False,
    seed: int = 0,
    n_estimators: int = 200,
    min_observed: int = 30,
    n_jobs: int | None = 1,
    calibrate: bool = True,
    source: object = None,
) -> FillResult:
    """Fill gaps with a regression model on drivers + time features, trained on the series' own observations.

    ``model="gbm"``: scikit-learn HistGradientBoostingRegressor (squared error) for the estimate and two
    quantile-loss models (15.9 % and 84.1 %) whose half-distance is the per-step σ. ``model="rf"``: a random
    forest (Breiman 2001, Mach. Learn. 45:5); σ² = variance of the trees' predictions + the out-of-bag
    residual variance. Both accept NaN drivers (tree models route them); time features come from
    `time_features` when ``times`` is given. ``n_jobs`` threads (default 1: OpenMP spin-waiting makes more
    threads than free cores many times slower on a shared machine; None or -1 = all cores). Needs
    scikit-learn (``pip install 'kgml[ml]'``).

    ``calibrate`` (default): the raw σ of both models is too narrow out of sample (quantile models and forest
    spread are fitted in-sample). The model is first fitted without a held-out 10 % of the observed steps (whole
    days, or weeks for daily data, when ``times`` is given), and σ is multiplied by the factor c for which
    ±cσ covers 68.3 % of the held-out errors; then it is refitted on every observation (twice the fitting time).
    """
    _require_sklearn()
    y = _as_float("flux", flux, None, source)
    n = y.size
    if not drivers:
        raise DataValidationError(source, "drivers", "no driver given; the ML filler needs at least one")
    columns = {name: _as_float(name, v, n, source) for name, v in drivers.items()}
    for name, v in columns.items():
        if not np.isfinite(v).any():
            raise DataValidationError(source, name, "driver is all missing")
    driver_matrix = np.stack(list(columns.values()), axis=1)
    if times is not None:
        t = np.asarray(times, dtype="datetime64[ns]")
        if t.size != n:
            raise DataValidationError(source, "time", f"{t.size} timestamps for {n} flux values")
        if np.any(np.diff(t) <= np.timedelta64(0, "ns")):
            i = int(np.flatnonzero(np.diff(t) <= np.timedelta64(0, "ns"))[0]) + 1
            raise DataValidationError(source, "time", f"timestamps not strictly increasing at step {i}")
        extra = np.stack(list(time_features(t).values()), axis=1)
        x = np.concatenate([driver_matrix, extra], axis=1)
    else:
        x = driver_matrix
    observed = np.isfinite(y)
    if observed.sum() < min_observed:
        raise DataValidationError(
            source, "flux", f"only {int(observed.sum())} observed values; the ML filler needs at least {min_observed}"
        )
    if model not in ("gbm", "rf"):
        raise ValueError(f"model must be 'gbm' or 'rf', got {model!r}")
    todo = np.ones(n, dtype=bool) if fill_all else ~observed
    estimate = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    calibration = 1.0
    if todo.any():
        if calibrate:
            per_day = int(round(np.timedelta64(1, "D") / np.diff(t).min())) if times is not None else 1
            held = calibration_split(observed, per_day if times is not None else 0, seed)
            if held.sum() >= 10:
                est_h, sd_h = np.full(n, np.nan), np.full(n, np.nan)
                _fit_predict(model, x[observed & ~held], y[observed & ~held], x[held], held, est_h, sd_h, seed,
                             n_estimators, n_jobs)
                with np.errstate(invalid="ignore", divide="ignore"):
                    z = np.abs(est_h[held] - y[held]) / sd_h[held]
                z = z[np.isfinite(z)]
                if z.size >= 10:
                    calibration = float(np.quantile(z, _ONE_SIGMA))
        _fit_predict(model, x[observed], y[observed], x[todo], todo, estimate, sd, seed, n_estimators, n_jobs)
        sd *= calibration
    complete = np.isfinite(driver_matrix).all(axis=1)
    qc = np.where(observed, 0, np.where(np.isfinite(estimate), np.where(complete, 1, 2), NOT_FILLED)).astype(np.int8)
    filled = np.where(observed, y, estimate)
    return FillResult(filled, estimate, sd, qc, calibration)


#: Fraction of a normal distribution within ±1σ.
_ONE_SIGMA = 0.6826894921370859


def _fit_predict(model, x_fit, y_fit, x_new, todo, estimate, sd, seed, n_estimators, n_jobs) -> None:
    from threadpoolctl import threadpool_limits

    threads = None if n_jobs in (None, -1) else int(n_jobs)
    with threadpool_limits(limits=threads, user_api="openmp"):
        if model == "gbm":
            from sklearn.ensemble import HistGradientBoostingRegressor

            common = dict(max_iter=n_estimators, learning_rate=0.1, random_state=seed, early_stopping=False)
            mean_model = HistGradientBoostingRegressor(**common).fit(x_fit, y_fit)
            lo_model = HistGradientBoostingRegressor(loss="quantile", quantile=_SIGMA_QUANTILES[0], **common)
            hi_model = HistGradientBoostingRegressor(loss="quantile", quantile=_SIGMA_QUANTILES[1], **common)
            estimate[todo] = mean_model.predict(x_new)
            spread = hi_model.fit(x_fit, y_fit).predict(x_new) - lo_model.fit(x_fit, y_fit).predict(x_new)
            sd[todo] = np.maximum(spread, 0.0) / 2.0
        elif model == "rf":
            from sklearn.ensemble import RandomForestRegressor

            forest = RandomForestRegressor(
                n_estimators=n_estimators, min_samples_leaf=5, oob_score=True, random_state=seed, n_jobs=threads
            ).fit(x_fit, y_fit)
            per_tree = np.stack([tree.predict(x_new) for tree in forest.estimators_])
            estimate[todo] = per_tree.mean(axis=0)
            oob_var = float(np.nanmean((forest.oob_prediction_ - y_fit) ** 2))
            sd[todo] = np.sqrt(per_tree.var(axis=0) + oob_var)
        else:
            raise ValueError(f"model must be 'gbm' or 'rf', got {model!r}")


def ml_gapfill_dataset(
    ds: xr.Dataset,
    variable: str = "nee",
    drivers: Sequence[str] = ("sw_in", "tair", "vpd"),
    **options,
) -> xr.Dataset:
    """`ml_gapfill` on every site of a ``(site, time)`` dataset; returns ``{variable}_f``, ``_fsd``, ``_fqc``.

    Drivers absent from the dataset are skipped (at least one must be present); a site whose flux has too
    few observations is left unfilled with a warning naming it.
    """
    source = ds.attrs.get("source", "<dataset>")
    if variable not in ds:
        raise DataValidationError(source, variable, f"not in the dataset (has {sorted(map(str, ds.data_vars))})")
    present = [d for d in drivers if d in ds]
    if not present:
        raise DataValidationError(source, variable, f"none of the drivers {list(drivers)} is in the dataset")
    times = ds["time"].values
    sites = ds["site"].values if "site" in ds.dims else [None]
    f = np.full((len(sites), times.size), np.nan)
    fsd, fqc = f.copy(), f.copy()
    for i, site in enumerate(sites):
        y = _site_series(ds, variable, site)
        where = f"{source} (site {site})" if site is not None else source
        cols = {d: _site_series(ds, d, site) for d in present}
        cols = {d: v for d, v in cols.items() if np.isfinite(v).any()}
        try:
            if not cols:
                raise DataValidationError(where, variable, f"every driver {present} is all missing")
            res = ml_gapfill(y, cols, times, source=where, **options)
        except DataValidationError as err:
            warnings.warn(f"{err}; site left unfilled", stacklevel=2)
            f[i] = y
            fqc[i] = np.where(np.isfinite(y), 0, np.nan)
            continue
        f[i], fsd[i] = res.filled, res.sd
        fqc[i] = np.where(res.qc >= 0, res.qc, np.nan)
    units = ds[variable].attrs.get("units", "")
    return xr.Dataset(
        {
            f"{variable}_f": (("site", "time"), f.astype(np.float32), {"long_name": f"{variable} gap-filled (ML)", "units": units}),
            f"{variable}_fsd": (("site", "time"), fsd.astype(np.float32), {"long_name": f"{variable} fill uncertainty (1 sigma)", "units": units}),
            f"{variable}_fqc": (("site", "time"), fqc.astype(np.float32), {"long_name": "0 observed, 1 filled, 2 filled with a driver missing", "units": "1"}),
        },
        coords={"site": sites if sites[0] is not None else ["site"], "time": times},
        attrs={"source": str(source), "gapfill_method": f"ml_gapfill drivers={present} {options}"},
    )


def hybrid_gapfill_dataset(
    ds: xr.Dataset,
    variable: str = "nee",
    drivers: Sequence[str] = ("sw_in", "tair", "vpd", "swc"),
    *,
    model: str = "hybrid",
    **options,
) -> xr.Dataset:
    """`kgml.fluxsite.fluxhybrid.hybrid_gapfill` on every site of a (site, time) tower dataset (any regular step: HH, HR, DD).

    Returns ``{variable}_f`` (observed where present), ``_fsd`` (calibrated 1 σ, every step), ``_fqc`` (0 observed,
    1 filled, 2 filled where a driver was interpolated), the partitioning of the same model ``gpp_hybrid``,
    ``reco_hybrid`` (``model="hybrid"``; same units as ``variable``) and the learned ``q10_reco`` per site
    (ensemble mean). A site that cannot be fitted (too few observations, no SW_IN or TA) is left unfilled with
    a warning naming it. ``options`` go to `hybrid_gapfill` (``config=HybridConfig(...)``, ``record``).
    """
    source = ds.attrs.get("source", "<dataset>")
    if variable not in ds:
        raise DataValidationError(source, variable, f"not in the dataset (has {sorted(map(str, ds.data_vars))})")
    full, _, times = _regular_time(ds, source)
    sites = full["site"].values if "site" in full.dims else [None]
    shape = (len(sites), full.sizes["time"])
    out = {k: np.full(shape, np.nan) for k in ("f", "fsd", "fqc", "gpp", "reco")}
    q10 = np.full(len(sites), np.nan)
    for i, site in enumerate(sites):
        y = _site_series(full, variable, site)
        where = f"{source} (site {site})" if site is not None else source
        cols = {d: _site_series(full, d, site) for d in drivers if d in full}
        try:
            res = hybrid_gapfill(y, cols, full["time"].values, model=model, source=where, **options)
        except DataValidationError as err:
            warnings.warn(f"{err}; site left unfilled", stacklevel=2)
            out["f"][i] = y
            out["fqc"][i] = np.where(np.isfinite(y), 0, np.nan)
            continue
        out["f"][i], out["fsd"][i], out["fqc"][i] = res.filled, res.sd, res.qc
        out["gpp"][i], out["reco"][i] = res.gpp, res.reco
        q10[i] = float(np.mean(res.fit.q10))
    units = full[variable].attrs.get("units", "")
    dims = ("site", "time")
    label = "flux hybrid" if model == "hybrid" else "neural filler"
    data_vars = {
        f"{variable}_f": (dims, out["f"].astype(np.float32), {"long_name": f"{variable} gap-filled ({label})", "units": units}),
        f"{variable}_fsd": (dims, out["fsd"].astype(np.float32), {"long_name": f"{variable} {label} uncertainty (1 sigma, calibrated)", "units": units}),
        f"{variable}_fqc": (dims, out["fqc"].astype(np.float32), {"long_name": "0 observed, 1 filled, 2 filled where a driver was interpolated", "units": "1"}),
    }
    if model == "hybrid":
        data_vars["gpp_hybrid"] = (dims, out["gpp"].astype(np.float32), {"long_name": "GPP of the flux hybrid (LUE_NN x SW_IN)", "units": units})
        data_vars["reco_hybrid"] = (dims, out["reco"].astype(np.float32), {"long_name": "ecosystem respiration of the flux hybrid (Rb_NN x Q10)", "units": units})
        data_vars["q10_reco"] = (("site",), q10.astype(np.float32), {"long_name": "learned Q10 of ecosystem respiration (ensemble mean)", "units": "1"})
    result = xr.Dataset(data_vars, coords={"site": sites if sites[0] is not None else ["site"], "time": full["time"].values})
    result.attrs = {
        "source": str(source),
        "gapfill_method": (
            f"kgml.fluxsite.fluxhybrid ({model}): NEE = Reco - GPP, GPP = LUE_NN x SW_IN, Reco = Rb_NN x Q10^((TA-15)/10) "
            "(Reichstein et al. 2022; Tramontana et al. 2020 Glob. Change Biol. 26:5235), deep ensemble"
        ),
    }
    return result.sel(time=times)


#: Drivers of the daily chamber soil-CO2 filler (COSORE): soil temperature, soil moisture, air temperature.
SOIL_CO2_DRIVERS = ("tsoil", "swc", "tair")


def soil_co2_gapfill(ds: xr.Dataset, variable: str = "rsoil", **options) -> xr.Dataset:
    """Daily chamber soil-CO2 flux gap-filling (COSORE): a random forest on soil temperature, soil moisture and
    air temperature (those present) plus season, trained on each chamber series' own days — the
    machine-learning approach of forest soil-CO2 gap-filling studies (here `ml_gapfill` with ``model="rf"``).

    ``ds`` is a daily (site, time) dataset from `kgml.data.soil_respiration.read_cosore_dataset`.
    """
    times = ds["time"].values
    if times.size < 2 or np.any(np.diff(times) % np.timedelta64(1, "D") != np.timedelta64(0, "ns")):
        raise DataValidationError(ds.attrs.get("source"), "time", "soil_co2_gapfill expects daily data (a step of whole days)")
    options = {"model": "rf", **options}
    return ml_gapfill_dataset(ds, variable, SOIL_CO2_DRIVERS, **options)
