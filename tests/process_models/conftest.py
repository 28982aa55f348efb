"""Deterministic seasonal forcing for process-model tests (a Midwest-like climate, no randomness)."""

from __future__ import annotations

import numpy as np
import pytest

from process_models.forcing import make_met
from process_models.radiation import MJ_PER_DAY_PER_W, clear_sky_radiation


def seasonal_met(
    n_years: int = 1,
    lat: float = 41.0,
    warming: float = 0.0,
    sw_scale: float = 0.7,
    rain_mm: float = 10.0,
    rain_every: int = 4,
    co2: float = 400.0,
):
    """A smooth seasonal cycle: tmean −5…24 °C (peak mid-July), diurnal range 11 °C, shortwave a fixed
    fraction of clear-sky, rain every ``rain_every`` days, ``rain_mm`` on average, ±60 % seasonally
    (≈ 900 mm yr-1 by default, as in central Iowa). Returns a `Met` shaped (days,)."""
    doy = np.tile(np.arange(1, 366), n_years).astype(np.float32)
    tmean = 9.5 - 14.5 * np.cos(2 * np.pi * (doy - 15) / 365.0) + warming
    sw = sw_scale * np.asarray(clear_sky_radiation(lat, doy)) / MJ_PER_DAY_PER_W
    # Rain events every `rain_every` days, larger in early summer (Midwest: June wettest, January driest).
    seasonal = 1.0 + 0.6 * np.cos(2 * np.pi * (doy - 165) / 365.0)
    precip = np.where(np.arange(doy.size) % rain_every == 0, rain_mm * seasonal, 0.0)
    return make_met(
        tmin=tmean - 5.5, tmax=tmean + 5.5, sw_in=sw, precip=precip, doy=doy, lat=lat, co2=co2
    )


@pytest.fixture
def met_year():
    return seasonal_met(1)
