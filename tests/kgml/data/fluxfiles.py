"""Small synthetic tower files in the published formats, written by code (no third-party data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns of a minimal FLUXNET2015 SUBSET file (units as in the FLUXNET2015 code table).
DD_COLUMNS = ("TA_F", "SW_IN_F", "VPD_F", "P_F", "PA_F", "SWC_F_MDS_1", "NEE_VUT_REF", "NEE_VUT_REF_QC",
              "GPP_NT_VUT_REF", "RECO_NT_VUT_REF")


def fluxnet_frame(resolution: str = "DD", n: int = 60, start: str = "2010-01-01", seed: int = 0) -> pd.DataFrame:
    """A plausible FLUXNET-format table (values in the file's own units) with its timestamp column(s)."""
    rng = np.random.default_rng(seed)
    freq = {"HH": "30min", "HR": "60min", "DD": "D", "MM": "MS", "YY": "YS", "WW": "7D"}[resolution]
    times = pd.date_range(start, periods=n, freq=freq)
    flux_scale = 1.0 if resolution in ("HH", "HR") else 1.0  # same numbers, units differ by resolution
    frame = pd.DataFrame(
        {
            "TA_F": rng.uniform(-5, 25, n).round(3),
            "SW_IN_F": rng.uniform(0, 300, n).round(3),
            "VPD_F": rng.uniform(0.5, 20, n).round(3),
            "P_F": rng.uniform(0, 5, n).round(3),
            "PA_F": rng.uniform(95, 101, n).round(3),
            "SWC_F_MDS_1": rng.uniform(10, 40, n).round(3),
            "NEE_VUT_REF": (rng.normal(0, 2, n) * flux_scale).round(4),
            "NEE_VUT_REF_QC": (rng.integers(0, 4, n) if resolution in ("HH", "HR") else rng.uniform(0, 1, n).round(3)),
            "GPP_NT_VUT_REF": rng.uniform(0, 10, n).round(4),
            "RECO_NT_VUT_REF": rng.uniform(0.5, 5, n).round(4),
        }
    )
    if resolution in ("HH", "HR", "WW"):
        fmt = "%Y%m%d%H%M" if resolution in ("HH", "HR") else "%Y%m%d"
        step = pd.Timedelta(freq)
        frame.insert(0, "TIMESTAMP_END", (times + step).strftime(fmt))
        frame.insert(0, "TIMESTAMP_START", times.strftime(fmt))
    else:
        fmt = {"DD": "%Y%m%d", "MM": "%Y%m", "YY": "%Y"}[resolution]
        frame.insert(0, "TIMESTAMP", times.strftime(fmt))
    return frame


def fluxnet_name(site: str = "US-Syn", resolution: str = "DD", years: str = "2010-2010") -> str:
    return f"FLX_{site}_FLUXNET2015_SUBSET_{resolution}_{years}_1-4.csv"


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    text = frame.to_csv(index=False, lineterminator="\n")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_fluxnet(directory: Path, site: str = "US-Syn", resolution: str = "DD", n: int = 60, seed: int = 0,
                  frame: pd.DataFrame | None = None, name: str | None = None) -> Path:
    frame = fluxnet_frame(resolution, n, seed=seed) if frame is None else frame
    return write_frame(frame, directory / (name or fluxnet_name(site, resolution)))


def write_qca(directory: Path, site: str = "US-Syn", year: int = 2010, n: int = 48, timezone: str | None = "-6",
              timeres: str = "hourly", seed: int = 0) -> Path:
    """An ONEFlux ``*_qca_ustar_*`` file: key,value header then TIMESTAMP_START,TIMESTAMP_END,NEE,TA,USTAR,SW_IN."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta("60min" if timeres == "hourly" else "30min")
    starts = pd.date_range(f"{year}-01-01", periods=n, freq=step)
    header = [f"site,{site}", f"year,{year}", "lat,41.1651", "lon,-96.4766"]
    if timezone is not None:
        header.append(f"timezone,{year}01010030,{timezone}")
    header += [f"timeres,{timeres}", "notes,synthetic"]
    rows = ["TIMESTAMP_START,TIMESTAMP_END,NEE,TA,USTAR,SW_IN"]
    nee = rng.normal(0, 5, n).round(2)
    nee[::7] = -9999
    for t, v in zip(starts, nee, strict=True):
        rows.append(f"{t:%Y%m%d%H%M},{t + step:%Y%m%d%H%M},{v},{rng.uniform(-5, 25):.2f},{rng.uniform(0.05, 1):.3f},{rng.uniform(0, 600):.1f}")
    path = directory / f"{site}_qca_ustar_{year}.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(header + rows) + "\n").encode()))
    return path
