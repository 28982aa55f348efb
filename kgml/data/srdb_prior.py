"""Knowledge of the soil-respiration level from the global Soil Respiration Database (SRDB): annual soil
respiration against climate and ecosystem type, fitted on SRDB records, as a prior for chamber sites.

The climate model is the one of Raich, Potter & Bhagawati (2002, Glob. Change Biol. 8:800, eq. 1), with an
offset per ecosystem type (Bond-Lamberty & Thomson 2010, Nature 464:579, fit Rs by biome):

    R_s,annual = F · exp(Q · MAT) · MAP / (K + MAP) · exp(b_type)        (gC m-2 yr-1)

MAT (°C) and MAP (mm yr-1) are the site's mean annual temperature and precipitation; F (gC m-2 yr-1), Q
(°C-1), K (mm yr-1) and the offsets ``b_type`` (–) are fitted by least squares on log R_s (K by a grid
search, the rest linear given K). Records used: annual Rs measured on unmanipulated sites, without SRDB's
problem flags Q12–Q14 or a known duplicate, with MAT and MAP given. Records within ``exclude_km`` of any
site the prior is applied to are left out, so that no chamber site's own SRDB record informs its prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from kgml.data.schema import DataValidationError

__all__ = ["IGBP_TO_SRDB", "SRDBPrior", "fit_srdb_prior", "srdb_usable"]

#: IGBP class → SRDB ``Ecosystem_type``.
IGBP_TO_SRDB = {
    "ENF": "Forest", "EBF": "Forest", "DNF": "Forest", "DBF": "Forest", "MF": "Forest",
    "GRA": "Grassland", "CRO": "Agriculture", "SAV": "Savanna", "WSA": "Savanna",
    "OSH": "Shrubland", "CSH": "Shrubland", "WET": "Wetland", "BSV": "Desert",
}

_BAD_FLAGS = ("Q12", "Q13", "Q14")
_K_GRID = np.geomspace(10.0, 5000.0, 60)
_DAYS_PER_YEAR = 365.25
_EARTH_RADIUS_KM = 6371.0


def _km(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@dataclass(frozen=True)
class SRDBPrior:
    """The fitted prior: ``F`` (gC m-2 yr-1), ``Q`` (°C-1), ``K`` (mm yr-1), offsets by ecosystem type (–), the
    residual SD of log R_s (–) and the number of records."""

    F: float
    Q: float
    K: float
    offsets: dict
    default_offset: float
    sd_log: float
    n_records: int
    n_excluded: int

    def annual(self, mat, map_, ecosystem: Sequence[str] | None = None) -> np.ndarray:
        """Annual soil respiration (gC m-2 yr-1); an unknown or missing ecosystem type gets
        ``default_offset`` (the record-weighted mean offset: the all-type level); NaN climate gives NaN."""
        mat, map_ = np.asarray(mat, np.float64), np.asarray(map_, np.float64)
        off = np.zeros(mat.shape) if ecosystem is None else np.array(
            [self.offsets.get(str(e), self.default_offset) for e in np.asarray(ecosystem).ravel()]).reshape(mat.shape)
        return self.F * np.exp(self.Q * mat) * map_ / (self.K + map_) * np.exp(off)

    def daily_mean(self, mat, map_, ecosystem: Sequence[str] | None = None) -> np.ndarray:
        """The annual value as a mean daily rate (gC m-2 d-1)."""
        return self.annual(mat, map_, ecosystem) / _DAYS_PER_YEAR

    def to_dict(self) -> dict:
        return {"F": self.F, "Q": self.Q, "K": self.K, "offsets": dict(self.offsets),
                "default_offset": self.default_offset, "sd_log": self.sd_log,
                "n_records": self.n_records, "n_excluded": self.n_excluded}


def srdb_usable(ds: xr.Dataset) -> np.ndarray:
    """Mask of the SRDB records (`kgml.data.soil_respiration.read_srdb`) the prior is fitted on."""
    n = ds.sizes["record"]
    ok = np.isfinite(ds["rs_annual"].values) & (ds["rs_annual"].values > 0)
    ok &= np.isfinite(ds["mat"].values) & np.isfinite(ds["map"].values) & (ds["map"].values > 0)
    for name, good in (("manipulation", lambda v: v in ("None", "")),):
        if name in ds.coords:
            ok &= np.array([good(str(v)) for v in ds[name].values])
    if "quality_flag" in ds.coords:
        flags = ds["quality_flag"].values.astype(str)
        ok &= np.array([not any(f in q for f in _BAD_FLAGS) for q in flags])
    if "duplicate_record" in ds.coords:
        ok &= np.array([str(v) in ("", "nan", "None") for v in ds["duplicate_record"].values])
    return ok if ok.shape == (n,) else np.broadcast_to(ok, (n,))


def fit_srdb_prior(ds: xr.Dataset, *, exclude_lat: Sequence[float] = (), exclude_lon: Sequence[float] = (),
                   exclude_km: float = 10.0, ecosystem_coord: str = "ecosystem_type") -> SRDBPrior:
    """Fit `SRDBPrior` on the usable SRDB records, leaving out those within ``exclude_km`` of any of the points
    (``exclude_lat``, ``exclude_lon``). Raises `DataValidationError` when fewer than 30 records remain."""
    source = ds.attrs.get("source", "SRDB")
    ok = srdb_usable(ds)
    lat, lon = ds["lat"].values.astype(float), ds["lon"].values.astype(float)
    n_excluded = 0
    if len(exclude_lat):
        near = np.zeros(ds.sizes["record"], bool)
        for la, lo in zip(exclude_lat, exclude_lon, strict=True):
            near |= np.nan_to_num(_km(lat, lon, la, lo), nan=np.inf) < exclude_km
        n_excluded = int((ok & near).sum())
        ok &= ~near
    if ok.sum() < 30:
        raise DataValidationError(source, "rs_annual", f"only {int(ok.sum())} usable SRDB records for the prior")
    y = np.log(ds["rs_annual"].values[ok].astype(float))
    mat, map_ = ds["mat"].values[ok].astype(float), ds["map"].values[ok].astype(float)
    types = (ds[ecosystem_coord].values[ok].astype(str) if ecosystem_coord in ds.coords
             else np.full(ok.sum(), ""))
    levels = sorted(str(t) for t in set(types) if t and t != "nan" and (types == t).sum() >= 20)
    best = None
    for k in _K_GRID:
        # log Rs − log(MAP/(K+MAP)) = log F + Q MAT + b_type   (b of the rarest/unknown types = 0)
        target = y - np.log(map_ / (k + map_))
        cols = [np.ones_like(mat), mat] + [(types == t).astype(float) for t in levels]
        x = np.stack(cols, 1)
        coef, *_ = np.linalg.lstsq(x, target, rcond=None)
        resid = target - x @ coef
        sse = float(resid @ resid)
        if best is None or sse < best[0]:
            best = (sse, k, coef, resid)
    sse, k, coef, resid = best
    offsets = {t: float(c) for t, c in zip(levels, coef[2:], strict=True)}
    counts = {t: int((types == t).sum()) for t in levels}
    default = float(sum(offsets[t] * counts[t] for t in levels) / len(types))  # rare/unknown types: 0
    return SRDBPrior(F=float(np.exp(coef[0])), Q=float(coef[1]), K=float(k), offsets=offsets, default_offset=default,
                     sd_log=float(resid.std()), n_records=int(ok.sum()), n_excluded=n_excluded)
