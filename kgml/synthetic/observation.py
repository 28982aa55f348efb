"""The observation model of the synthetic corpora: heteroscedastic noise and gaps of towers, chambers and
yield records (`NoiseModel`, `GapModel`, `observe`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kgml.synthetic.world import DAYS_PER_YEAR


@dataclass(frozen=True)
class NoiseModel:
    """Heteroscedastic observation errors (σ grows with the flux, as measured).

    - Tower NEE: Laplace (double-exponential) error with σ = ``nee_abs + nee_rel·|NEE|`` (gC m-2 d-1).
      Richardson et al. (2006) Agric. For. Meteorol. 136:1 found eddy-covariance random errors double-
      exponential with σ linear in |flux|; the defaults give daily σ ≈ 0.3–1 gC m-2 d-1, the size of the
      daily random uncertainty in FLUXNET2015 (Pastorello et al. 2020 Sci. Data 7:225, NEE_*_RANDUNC).
    - Partitioned Reco: Gaussian with σ = ``reco_abs + reco_rel·Reco``; GPP is then Reco_obs − NEE_obs, as
      in night-time partitioning (Reichstein et al. 2005 Glob. Change Biol. 11:1424), so the observed
      fluxes obey NEE = Reco − GPP like the products do.
    - Chamber soil respiration: log-normal multiplicative error with CV ``rsoil_cv`` (spatial and
      chamber-to-chamber variability ≈ 10–30 %, Savage & Davidson 2003 J. Exp. Bot. 54:891) plus a
      Gaussian floor ``rsoil_abs``.
    - Yield: Gaussian with σ = ``yield_abs + yield_rel·yield`` (t ha-1), field-to-county and survey error.
    """

    nee_abs: float = 0.25
    nee_rel: float = 0.15
    reco_abs: float = 0.2
    reco_rel: float = 0.1
    rsoil_cv: float = 0.15
    rsoil_abs: float = 0.05
    yield_abs: float = 0.2
    yield_rel: float = 0.05

    def scaled(self, factor: float) -> NoiseModel:
        """Every σ multiplied by ``factor`` (0 = noise-free)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class GapModel:
    """Where observations are missing.

    - Towers: each day is missing with probability ``tower_p_day`` (QC rejection, rain, low turbulence),
      plus ``tower_gaps_per_year`` (Poisson mean) outages per site-year of ``tower_gap_days`` (uniform
      between the two bounds) consecutive days (instrument failures); NEE, GPP and Reco share the gaps.
    - Chambers: campaign sampling, one measurement every ``rsoil_every_days`` days between days of year
      ``rsoil_season``, each kept with probability ``rsoil_p_keep``.
    - Yields: each (site, year) reported with probability ``yield_p_report``.
    - ``tower_fraction`` of the sites have towers, ``chamber_fraction`` chambers (the rest: no fluxes).
    """

    tower_p_day: float = 0.15
    tower_gaps_per_year: float = 3.0
    tower_gap_days: tuple[int, int] = (3, 30)
    rsoil_every_days: int = 7
    rsoil_season: tuple[int, int] = (90, 300)
    rsoil_p_keep: float = 0.8
    yield_p_report: float = 1.0
    tower_fraction: float = 1.0
    chamber_fraction: float = 1.0

    @classmethod
    def none(cls) -> GapModel:
        """Every day of every variable observed."""
        return cls(0.0, 0.0, (1, 1), 1, (1, DAYS_PER_YEAR), 1.0, 1.0, 1.0, 1.0)


def _tower_mask(rng: np.random.Generator, n_sites: int, n_days: int, gaps: GapModel) -> np.ndarray:
    ok = rng.random((n_sites, n_days)) >= gaps.tower_p_day
    years = n_days / DAYS_PER_YEAR
    lo, hi = gaps.tower_gap_days
    for s in range(n_sites):
        for _ in range(rng.poisson(gaps.tower_gaps_per_year * years)):
            length = int(rng.integers(lo, hi + 1))
            start = int(rng.integers(0, max(n_days - length, 1)))
            ok[s, start : start + length] = False
    return ok


def _chamber_mask(rng: np.random.Generator, n_sites: int, doy: np.ndarray, gaps: GapModel) -> np.ndarray:
    n_days = doy.shape[-1]
    offset = rng.integers(0, gaps.rsoil_every_days, size=(n_sites, 1))
    day = np.arange(n_days)[None, :]
    on_schedule = (day - offset) % gaps.rsoil_every_days == 0
    lo, hi = gaps.rsoil_season
    in_season = (doy >= lo) & (doy <= hi)
    return on_schedule & in_season & (rng.random((n_sites, n_days)) < gaps.rsoil_p_keep)


def observe(
    truth: Mapping[str, np.ndarray],
    doy: np.ndarray,
    rng: np.random.Generator,
    noise: NoiseModel = NoiseModel(),
    gaps: GapModel = GapModel(),
) -> dict[str, np.ndarray]:
    """Noisy, gappy observations (NaN = missing) of true daily ``nee``, ``reco``, ``rsoil`` (site, time) and
    annual ``crop_yield`` (site, year) (NaN where there is no crop). Returns ``nee``, ``gpp``, ``reco``,
    ``rsoil`` and ``crop_yield``; see `NoiseModel` and `GapModel` for the error and gap models."""
    nee, reco, rsoil = (np.asarray(truth[k], np.float64) for k in ("nee", "reco", "rsoil"))
    n_sites, n_days = nee.shape
    nee_obs = nee + rng.laplace(0.0, 1.0, nee.shape) * (noise.nee_abs + noise.nee_rel * np.abs(nee)) / np.sqrt(2)
    reco_obs = reco + rng.normal(0.0, 1.0, reco.shape) * (noise.reco_abs + noise.reco_rel * np.abs(reco))
    gpp_obs = reco_obs - nee_obs
    cv = noise.rsoil_cv
    rsoil_obs = rsoil * np.exp(cv * rng.normal(size=rsoil.shape) - 0.5 * cv**2) + noise.rsoil_abs * rng.normal(
        size=rsoil.shape
    )
    tower = _tower_mask(rng, n_sites, n_days, gaps) & (rng.random((n_sites, 1)) < gaps.tower_fraction)
    chamber = _chamber_mask(rng, n_sites, np.broadcast_to(doy, nee.shape), gaps)
    chamber &= rng.random((n_sites, 1)) < gaps.chamber_fraction
    out = {
        "nee": np.where(tower, nee_obs, np.nan),
        "gpp": np.where(tower, gpp_obs, np.nan),
        "reco": np.where(tower, reco_obs, np.nan),
        "rsoil": np.where(chamber, rsoil_obs, np.nan),
    }
    y = np.asarray(truth["crop_yield"], np.float64)
    y_obs = y + rng.normal(size=y.shape) * (noise.yield_abs + noise.yield_rel * np.abs(y))
    reported = rng.random(y.shape) < gaps.yield_p_report
    out["crop_yield"] = np.where(reported & np.isfinite(y), np.maximum(y_obs, 0.0), np.nan)
    return {k: v.astype(np.float32) for k, v in out.items()}


