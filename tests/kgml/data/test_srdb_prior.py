"""The SRDB soil-respiration prior: a planted climate law and ecosystem offsets are recovered; records near
the sites it is applied to are left out; on the real SRDB the fitted law rises with temperature and
precipitation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from kgml.data.schema import DataValidationError
from kgml.data.srdb_prior import fit_srdb_prior


def _fake_srdb(n=600, seed=0, F=1200.0, Q=0.05, K=400.0, offsets=None):
    rng = np.random.default_rng(seed)
    offsets = offsets or {"Forest": 0.2, "Grassland": -0.3, "Agriculture": 0.0}
    mat = rng.uniform(-5, 28, n)
    map_ = rng.uniform(150, 3000, n)
    types = rng.choice(list(offsets), n)
    rs = F * np.exp(Q * mat) * map_ / (K + map_) * np.exp([offsets[t] for t in types]) * np.exp(rng.normal(0, 0.05, n))
    lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    return xr.Dataset(
        {"rs_annual": ("record", rs), "mat": ("record", mat), "map": ("record", map_)},
        coords={"record": np.arange(n), "lat": ("record", lat), "lon": ("record", lon),
                "ecosystem_type": ("record", types.astype(object)),
                "manipulation": ("record", np.full(n, "None", dtype=object)),
                "quality_flag": ("record", np.full(n, "", dtype=object))},
    ), offsets


def test_planted_law_and_offsets_recovered():
    ds, offsets = _fake_srdb()
    p = fit_srdb_prior(ds)
    assert p.Q == pytest.approx(0.05, abs=0.005)
    assert 250 < p.K < 650
    rel = {t: p.offsets[t] - p.offsets["Agriculture"] for t in offsets}
    for t, b in offsets.items():
        assert rel[t] == pytest.approx(b, abs=0.05)
    assert p.sd_log < 0.08
    # prediction at a known point
    forest = p.annual(np.array([10.0]), np.array([1000.0]), ["Forest"])[0]
    assert forest == pytest.approx(1200 * np.exp(0.5) * 1000 / 1400 * np.exp(0.2), rel=0.1)
    assert np.isnan(p.annual(np.array([np.nan]), np.array([800.0]), ["Forest"])[0])


def test_records_near_the_target_sites_are_left_out():
    ds, _ = _fake_srdb()
    lat, lon = ds["lat"].values[:5], ds["lon"].values[:5]
    p = fit_srdb_prior(ds, exclude_lat=lat, exclude_lon=lon, exclude_km=1.0)
    assert p.n_excluded == 5 and p.n_records == ds.sizes["record"] - 5


def test_too_few_records_is_an_error():
    ds, _ = _fake_srdb(n=20)
    with pytest.raises(DataValidationError, match="usable SRDB records"):
        fit_srdb_prior(ds)


def _srdb_dir() -> Path | None:
    root = os.environ.get("KGML_DATA") or str(Path(__file__).resolve().parents[3] / ".." / "shared" / "data")
    path = Path(root) / "srdb"
    return path if (path / "srdb-data.csv").exists() else None


@pytest.mark.realdata
@pytest.mark.skipif(_srdb_dir() is None, reason="SRDB (srdb/srdb-data.csv) not found under KGML_DATA or ../shared/data")
def test_real_srdb_prior_rises_with_temperature_and_precipitation():
    from kgml.data.soil_respiration import read_srdb

    p = fit_srdb_prior(read_srdb(_srdb_dir()))
    assert p.n_records > 1000
    assert 0.0 < p.Q < 0.15  # Raich et al. (2002): Q = 0.05452 °C-1 (monthly fit)
    a = p.annual(np.array([5.0, 20.0, 20.0]), np.array([800.0, 800.0, 2000.0]), ["Forest"] * 3)
    assert a[0] < a[1] < a[2]
    assert 200 < a[1] < 3000  # gC m-2 yr-1, the range of SRDB forests
