"""Features shared by the site tools (gap-filling, flux hybrid, partitioning): cyclic time features of a
flux record and the calibration hold-out of observed steps used to calibrate a filler's uncertainty."""

from __future__ import annotations

import numpy as np

__all__ = ["calibration_split", "time_features"]


def time_features(times) -> dict[str, np.ndarray]:
    """Cyclic day-of-year and time-of-day features and elapsed days, from datetime64 stamps (period starts).

    Sub-daily steps get ``hour_sin``/``hour_cos`` of the period midpoint; daily data none.
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size < 2:
        raise ValueError("time_features needs at least two timestamps")
    step = np.diff(t).min()
    mid = t + step // 2
    year_start = mid.astype("datetime64[Y]").astype("datetime64[ns]")
    doy = (mid - year_start) / np.timedelta64(1, "D")
    feats = {
        "doy_sin": np.sin(2 * np.pi * doy / 365.25),
        "doy_cos": np.cos(2 * np.pi * doy / 365.25),
        "days": (t - t[0]) / np.timedelta64(1, "D"),
    }
    if step < np.timedelta64(1, "D"):
        hour = (mid - mid.astype("datetime64[D]").astype("datetime64[ns]")) / np.timedelta64(1, "h")
        feats["hour_sin"] = np.sin(2 * np.pi * hour / 24.0)
        feats["hour_cos"] = np.cos(2 * np.pi * hour / 24.0)
    return feats


def calibration_split(observed: np.ndarray, steps_per_day: int, seed: int = 0, fraction: float = 0.10) -> np.ndarray:
    """Observed steps held out to calibrate an uncertainty: ``fraction`` of them in whole blocks drawn at random
    (one day for sub-daily data, a week for daily data, single steps when ``steps_per_day`` is 0 = unknown)."""
    observed = np.asarray(observed, dtype=bool)
    n = observed.size
    block = 1 if steps_per_day <= 0 else (steps_per_day if steps_per_day > 1 else 7)
    starts = np.arange(0, n, block)
    counts = np.add.reduceat(observed.astype(np.int64), starts)
    order = np.random.default_rng(seed).permutation(starts.size)
    take = order[np.cumsum(counts[order]) <= fraction * observed.sum()]
    held = np.zeros(starts.size, dtype=bool)
    held[take if take.size else order[:1]] = True
    return np.repeat(held, block)[:n] & observed
