"""kgml.data.regions.site_aridity and the arid/humid climate-extrapolation split: a hot desert, a cold tundra with
less rain and a humid temperate site fall in the UNEP classes they belong to; "driest by MAP" holds out the
tundra, "most arid" the desert; on the real towers the known drylands are arid or semi-arid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data.regions import site_aridity
from kgml.data.splits import climate_extrapolation

#: id: (lat, mean tair °C, seasonal amplitude °C, sw_in W m-2, vpd hPa, precip mm d-1)
PLANTED = {
    "desert": (32.0, 20.0, 8.0, 260.0, 25.0, 0.8),   # ≈ 290 mm yr-1, high demand
    "tundra": (74.0, -9.0, 12.0, 90.0, 2.0, 0.6),    # ≈ 220 mm yr-1, little demand
    "humid": (47.0, 9.0, 9.0, 140.0, 5.0, 3.0),      # ≈ 1100 mm yr-1
}


def _planted(years: int = 3) -> xr.Dataset:
    time = pd.date_range("2001-01-01", periods=365 * years, freq="D")
    doy = time.day_of_year.values
    ids = list(PLANTED)
    season = -np.cos(2 * np.pi * (doy - 15) / 365.0)
    rows = {k: [] for k in ("tair", "sw_in", "vpd", "precip")}
    for s in ids:
        lat, t, amp, sw, vpd, p = PLANTED[s]
        rows["tair"].append(t + amp * season)
        rows["sw_in"].append(np.maximum(sw * (1 + 0.6 * season * np.sign(lat)), 5.0))
        rows["vpd"].append(np.maximum(vpd * (1 + 0.5 * season), 0.1))
        rows["precip"].append(np.full(time.size, p))
    data = {k: (("site", "time"), np.asarray(v, dtype=np.float32)) for k, v in rows.items()}
    data["tmin"] = (("site", "time"), data["tair"][1] - 5.0)
    data["tmax"] = (("site", "time"), data["tair"][1] + 5.0)
    return xr.Dataset(data, coords={"site": ids, "time": time, "lat": ("site", [PLANTED[s][0] for s in ids])})


def test_aridity_tells_a_cold_tundra_from_a_hot_desert():
    ds = _planted()
    ai, pet = site_aridity(ds)
    got = dict(zip(ds.site.values, ai, strict=True))
    pets = dict(zip(ds.site.values, pet, strict=True))
    # UNEP (1992) classes: the desert arid / semi-arid, the humid site humid (AI ≥ 0.65)
    assert 0.05 <= got["desert"] < 0.5 and got["humid"] >= 0.65
    # the tundra has the least rain but far less evaporative demand: not the most arid
    assert got["tundra"] > got["desert"]
    assert 800 < pets["desert"] < 2000 and pets["tundra"] < 450 and pets["tundra"] < pets["humid"] < pets["desert"]
    dry = climate_extrapolation(ds, by="dry", quantile=1 / 3, seed=0)
    arid = climate_extrapolation(ds, by="arid", quantile=1 / 3, seed=0)
    assert dry.ood.units == ("tundra",) and arid.ood.units == ("desert",)
    assert arid.info["variable"] == "aridity_index" and arid.info["threshold"] == pytest.approx(got["desert"])
    humid = climate_extrapolation(ds, by="humid", quantile=1 / 3, seed=0)
    assert humid.ood.units == ("humid",)
    with pytest.raises(ValueError, match="arid or humid"):
        climate_extrapolation(ds, by="sunny")


def test_aridity_is_nan_without_the_drivers():
    ds = _planted().drop_vars("sw_in")
    ai, pet = site_aridity(ds)
    assert np.isnan(ai).all() and np.isnan(pet).all()


def test_real_drylands_are_arid_or_semi_arid(dataset_dir):
    from kgml.compare.suites import get_suite, load_folds

    suite = get_suite("fluxnet_mm")
    sites = ["US-SRM", "ES-Amo", "US-SRC", "DE-Tha", "FR-Fon", "RU-Che"]
    ds = suite.load(dataset_dir("fluxnet2015_subset_mm").parent, True, sites)
    ai = dict(zip(ds.site.values.astype(str), site_aridity(ds)[0], strict=True))
    for s in ("US-SRM", "ES-Amo", "US-SRC"):  # Sonoran and Iberian drylands
        assert 0.05 <= ai[s] < 0.5, (s, ai[s])
    for s in ("DE-Tha", "FR-Fon"):  # temperate forests
        assert ai[s] >= 0.65, (s, ai[s])
    frozen = [s for s in load_folds(suite) if s.info.get("fold_kind") == "most_arid_sites_out"]
    assert len(frozen) == 1 and {"US-SRM", "ES-Amo"} <= set(frozen[0].ood.units)
