"""Small synthetic SoyFACE biomass tables and KGML-DA county files in the published formats, written by code."""

from __future__ import annotations

import calendar
from pathlib import Path

import numpy as np
import pandas as pd

SOYFACE_COLUMNS = ("Leaf_Mg_per_ha", "Stem_Mg_per_ha", "Rep_Mg_per_ha", "Seed_Mg_per_ha", "Litter_Mg_per_ha",
                   "CumLitter_Mg_per_ha")
WEATHER_COLUMNS = ("fips", "Year", "Day", "Tair", "RH", "Wind", "Precipitation", "Radiation", "GrowingSeason",
                   "CropType", "Bulk density", "Field capacity", "Wilting point", "Ks", "Sand content", "Silt content",
                   "SOC", "Fertilizer")


def soyface_frame(doys=(172, 186, 200, 214), seed: int = 0, scale: float = 1.0) -> pd.DataFrame:
    """A plausible biomass table (Mg ha-1): leaf, stem grow; pods and seed appear late; litter accumulates."""
    rng = np.random.default_rng(seed)
    n = len(doys)
    growth = np.linspace(0.2, 1.0, n)
    litter = rng.uniform(0, 0.3, n).round(4)
    return pd.DataFrame({
        "DOY": list(doys),
        "Leaf_Mg_per_ha": (2.0 * growth * scale).round(6),
        "Stem_Mg_per_ha": (4.0 * growth * scale).round(6),
        "Rep_Mg_per_ha": (np.maximum(growth - 0.5, 0) * 10 * scale).round(6),
        "Seed_Mg_per_ha": (np.maximum(growth - 0.6, 0) * 8 * scale).round(6),
        "Litter_Mg_per_ha": litter,
        "CumLitter_Mg_per_ha": np.cumsum(litter).round(4),
    })


def write_soyface(folder: Path, year: int = 2005, treatment: str = "ambient", frame: pd.DataFrame | None = None,
                  std: bool = True, text: str | None = None) -> Path:
    """``<year>_<treatment>_biomass.csv`` (and the ``_std`` table with 10 % of the means) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = soyface_frame() if frame is None else frame
    path = folder / f"{year}_{treatment}_biomass.csv"
    path.write_text(text if text is not None else frame.to_csv(index=False, lineterminator="\n"))
    if std:
        sd = frame.copy()
        for c in SOYFACE_COLUMNS:
            if c in sd:
                sd[c] = (sd[c].abs() * 0.1).round(6)
        (folder / f"{year}_{treatment}_biomass_std.csv").write_text(sd.to_csv(index=False, lineterminator="\n"))
    return path


def weather_frame(counties=(17001, 17003), years=(2000, 2001), days: int | None = 10, seed: int = 0) -> pd.DataFrame:
    """A county daily weather table as ``county_daily_inputs_*.csv`` (days 1..days of each year, or all days)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, fips in enumerate(counties):
        for year in years:
            n = days or (366 if calendar.isleap(year) else 365)
            for day in range(1, n + 1):
                rows.append({
                    "fips": fips, "Year": year, "Day": day,
                    "Tair": round(float(rng.uniform(-10, 30)), 5), "RH": round(float(rng.uniform(30, 95)), 4),
                    "Wind": round(float(rng.uniform(0.5, 9)), 5), "Precipitation": round(float(rng.gamma(0.5, 4)), 5),
                    "Radiation": round(float(rng.uniform(2, 30)), 5), "GrowingSeason": 0, "CropType": 0,
                    "Bulk density": 1.48 + 0.05 * k, "Field capacity": 0.31, "Wilting point": 0.18 + 0.02 * k,
                    "Ks": 29.5, "Sand content": 57.2, "Silt content": 683.8, "SOC": 19.0, "Fertilizer": 0,
                })
    return pd.DataFrame(rows, columns=list(WEATHER_COLUMNS))


def gpp_frame(counties=(17001,), crops=("corn", "soybean"), years=(2000,), days: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"fips": f, "crop": c, "year": y, "doy": d, "gpp": round(float(rng.uniform(0, 20)), 5)}
        for f in counties for c in crops for y in years for d in range(1, days + 1)
    ]
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(frame.to_csv(index=False, lineterminator="\n"))
    return path


def write_county_folder(folder: Path, weather: pd.DataFrame | None = None, gpp: pd.DataFrame | None = None) -> Path:
    write_csv(weather_frame() if weather is None else weather, folder / "county_daily_inputs_2000-2001.csv")
    write_csv(gpp_frame() if gpp is None else gpp, folder / "slope_gpp_county_daily.csv")
    return folder
