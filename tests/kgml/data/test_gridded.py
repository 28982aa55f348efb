"""Gridded netCDF readers: the three shared grids against their raw values, aggregation by hand, and
deliberately broken files (wrong units, missing units, bad or repeated times)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.data.gridded import (
    aggregate_daily,
    aggregate_monthly,
    open_gridded,
    read_bcsd_obs,
    read_ghcn_cams,
    read_gridded,
    read_wfde5,
    specific_humidity_to_vpd,
)
from kgml.data.schema import DataValidationError


def es_kpa(t):
    """FAO-56 eq. 11, written out independently of process_models."""
    return 0.6108 * np.exp(17.27 * t / (t + 237.3))


def hourly_grid(path, *, hours=48, tair_units="K", lon=(0.25, 0.75, 359.75), lat=(41.0, 40.0), start="2017-01-01",
                drop_units=False):
    time = pd.date_range(start, periods=hours, freq="h")
    shape = (hours, len(lat), len(lon))
    hour = np.arange(hours)[:, None, None] * np.ones(shape)
    tair = 273.15 + 5.0 + 3.0 * np.sin(2 * np.pi * hour / 24) + np.arange(len(lon))[None, None, :]
    ds = xr.Dataset(
        {
            "Tair": (("time", "lat", "lon"), tair.astype("float32"),
                     {} if drop_units else {"units": tair_units, "standard_name": "air_temperature"}),
            "pr": (("time", "lat", "lon"), np.full(shape, 1.0 / 3600, dtype="float32"),
                   {"units": "kg m-2 s-1", "standard_name": "precipitation_flux"}),
            "SWdown": (("time", "lat", "lon"), (100.0 + hour).astype("float32"), {"units": "W m-2"}),
        },
        coords={"time": time, "lat": ("lat", list(lat), {"units": "degrees_north"}),
                "lon": ("lon", list(lon), {"units": "degrees_east"})},
    )
    ds.to_netcdf(path)
    return path


# --- real data -------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_ghcn_cams(dataset_dir):
    folder = dataset_dir("ghcn_cams_monthly_tair_global_0p5deg_2018")
    ds = read_ghcn_cams(folder)
    assert ds.sizes == {"lat": 360, "lon": 720, "time": 8}
    assert float(ds.lon.min()) == -179.75 and float(ds.lon.max()) == 179.75 and bool((ds.lat.diff("lat") > 0).all())
    assert ds.tair.attrs["units"] == "degC"
    # SOURCE.md check: IL/IA/IN box (37–43.5 N, 84–97 W) mean 269.2 K in January, 297.5 K in July 2018.
    box = ds.tair.sel(lat=slice(37, 43.5), lon=slice(-97, -84)).mean(["lat", "lon"])
    assert float(box.sel(time="2018-01-01")) + 273.15 == pytest.approx(269.2, abs=0.05)
    assert float(box.sel(time="2018-07-01")) + 273.15 == pytest.approx(297.5, abs=0.05)
    with netCDF4.Dataset(folder / "air.mon.mean.nc") as raw:  # raw cell: lat index 100 (39.75 N), lon 540 (270.25 E)
        lat, lon, value = float(raw["lat"][100]), float(raw["lon"][540]), float(raw["air"][6, 100, 540])
    assert float(ds.tair.sel(lat=lat, lon=lon - 360, time="2018-07-01")) == pytest.approx(value - 273.15, abs=1e-4)


@pytest.mark.realdata
def test_bcsd_obs(dataset_dir):
    folder = dataset_dir("bcsd_obs_monthly_se_us_1999")
    ds = read_bcsd_obs(folder)
    assert ds.sizes == {"lat": 33, "lon": 81, "time": 12}
    assert str(ds.time.values[0])[:10] == "1999-01-01" and str(ds.time.values[1])[:10] == "1999-02-01"
    with netCDF4.Dataset(folder / "bcsd_obs_1999.nc") as raw:
        pr, tas = float(raw["pr"][1, 10, 20]), float(raw["tas"][1, 10, 20])
        lat, lon = float(raw["latitude"][10]), float(raw["longitude"][20])
    cell = ds.sel(lat=lat, lon=lon, time="1999-02-01")
    assert float(cell.precip) == pytest.approx(pr / 28, rel=1e-5)  # mm per month → mm d-1 (February 1999: 28 d)
    assert float(cell.tair) == pytest.approx(tas, rel=1e-6)


@pytest.mark.realdata
def test_wfde5_hourly_to_daily_and_monthly(dataset_dir):
    folder = dataset_dir("wfde5_hourly_forcing_uk_2017-01")
    hourly = read_wfde5(folder, resolution=None)
    assert hourly.attrs["resolution"] == "hourly" and hourly.sizes == {"lat": 20, "lon": 28, "time": 744}
    daily = aggregate_daily(hourly)
    assert daily.sizes["time"] == 31
    with netCDF4.Dataset(folder / "air_temperature.nc") as raw:
        lat_i, lon_i = int(np.argwhere(~np.ma.getmaskarray(raw["Tair"][0]))[0][0]), int(np.argwhere(~np.ma.getmaskarray(raw["Tair"][0]))[0][1])
        lat, lon = float(raw["lat"][lat_i]), float(raw["lon"][lon_i])
        t_k = np.asarray(raw["Tair"][24:48, lat_i, lon_i], dtype=float)  # 2 January, 00–23 UTC
    with netCDF4.Dataset(folder / "precipitation_flux.nc") as raw:
        pr = np.asarray(raw["pr"][24:48, lat_i, lon_i], dtype=float)
    with netCDF4.Dataset(folder / "specific_humidity.nc") as raw:
        q = np.asarray(raw["Qair"][24:48, lat_i, lon_i], dtype=float)
    cell = daily.sel(lat=lat, lon=lon, time="2017-01-02")
    assert float(cell.tair) == pytest.approx(t_k.mean() - 273.15, abs=1e-3)
    assert float(cell.tmin) == pytest.approx(t_k.min() - 273.15, abs=1e-3)
    assert float(cell.tmax) == pytest.approx(t_k.max() - 273.15, abs=1e-3)
    assert float(cell.precip) == pytest.approx(pr.mean() * 86400, rel=1e-4)
    e_pa = q * 101325.0 / (0.622 + 0.378 * q)
    vpd = np.maximum(es_kpa(t_k - 273.15) * 1000 - e_pa, 0) / 100
    assert float(cell.vpd) == pytest.approx(vpd.mean(), rel=1e-3)
    assert cell.tmin.attrs["cell_methods"] == "time: minimum"
    monthly = aggregate_monthly(hourly)
    assert monthly.sizes["time"] == 1
    np.testing.assert_allclose(monthly.tair.isel(time=0).values, daily.tair.mean("time").values, rtol=1e-5, atol=1e-5)
    assert "mean over days" in monthly.tmin.attrs["cell_methods"]


# --- synthetic ------------------------------------------------------------------------------------------


def test_hourly_to_daily_by_hand(tmp_path):
    path = hourly_grid(tmp_path / "g.nc")
    ds = open_gridded(path)
    assert list(ds.lon.values) == [-0.25, 0.25, 0.75] and list(ds.lat.values) == [40.0, 41.0]
    daily = aggregate_daily(ds)
    # lon index 1 in the file (0.75 E) has +1 °C; sin over a full day averages to 0.
    assert float(daily.tair.sel(lat=40.0, lon=0.75).isel(time=0)) == pytest.approx(6.0, abs=1e-4)
    assert float(daily.tmax.sel(lat=40.0, lon=0.75).isel(time=0)) == pytest.approx(9.0, abs=1e-3)
    assert float(daily.precip.isel(lat=0, lon=0, time=0)) == pytest.approx(24.0, rel=1e-5)  # 1 mm each hour
    assert float(daily.sw_in.isel(lat=0, lon=0, time=1)) == pytest.approx(100.0 + np.mean(np.arange(24, 48)), rel=1e-6)
    assert read_gridded(path, resolution="daily").sizes["time"] == 2


def test_coverage_rule_on_days(tmp_path):
    path = hourly_grid(tmp_path / "g.nc")
    ds = open_gridded(path)
    ds["tair"][0, 0, 30:36] = np.nan  # 6 of 24 hours of day 2 missing at one cell
    assert np.isnan(float(aggregate_daily(ds).tair[0, 0, 1]))  # 18/24 < 0.8
    assert np.isfinite(float(aggregate_daily(ds, min_coverage=0.7).tair[0, 0, 1]))


def test_specific_humidity_to_vpd_by_hand():
    t, e, p = 20.0, 1000.0, 101325.0
    q = 0.622 * e / (p - 0.378 * e)
    assert specific_humidity_to_vpd(q, t, p) == pytest.approx((es_kpa(t) * 1000 - e) / 100, rel=1e-4)


def test_monthly_totals(tmp_path):
    time = pd.date_range("1999-01-31", periods=3, freq="ME")
    ds = xr.Dataset({"pr": (("time", "latitude", "longitude"), np.full((3, 1, 2), 62.0), {"units": "mm/m"}),
                     "tas": (("time", "latitude", "longitude"), np.full((3, 1, 2), 10.0), {"units": "C"})},
                    coords={"time": time, "latitude": [35.0], "longitude": [-80.0, -79.875]})
    ds.to_netcdf(tmp_path / "m.nc")
    out = read_bcsd_obs(tmp_path / "m.nc")
    np.testing.assert_allclose(out.precip.isel(lat=0, lon=0).values, [62 / 31, 62 / 28, 62 / 31], rtol=1e-6)
    assert str(out.time.values[0])[:10] == "1999-01-01"


# --- broken ---------------------------------------------------------------------------------------------


def test_kelvin_labelled_celsius(tmp_path):
    path = hourly_grid(tmp_path / "k.nc", tair_units="degC")
    with pytest.raises(DataValidationError, match=r"k\.nc.*'Tair'.*outside the valid range of tair.*kelvin"):
        open_gridded(path)


def test_missing_units(tmp_path):
    path = hourly_grid(tmp_path / "u.nc", drop_units=True)
    with pytest.raises(DataValidationError, match=r"u\.nc.*'Tair'.*no 'units' attribute"):
        open_gridded(path)
    assert float(open_gridded(path, units={"Tair": "K"}).tair.isel(time=0, lat=0, lon=1)) == pytest.approx(5.0, abs=1e-4)


def test_bad_time_axes(tmp_path):
    ds = xr.open_dataset(hourly_grid(tmp_path / "g.nc")).load()
    ds.isel(time=[0, 1, 1, 2]).to_netcdf(tmp_path / "dup.nc")
    with pytest.raises(DataValidationError, match=r"dup\.nc.*'time'.*duplicate time"):
        open_gridded(tmp_path / "dup.nc")
    ds.isel(time=[0, 2, 1]).to_netcdf(tmp_path / "back.nc")
    with pytest.raises(DataValidationError, match=r"back\.nc.*'time'.*not increasing"):
        open_gridded(tmp_path / "back.nc")
    raw = xr.Dataset({"tas": (("time", "lat", "lon"), np.zeros((2, 1, 1)), {"units": "degC"})},
                     coords={"time": ("time", [0.0, 1.0], {"units": "furlongs since 2000-01-01"}), "lat": [1.0], "lon": [1.0]})
    raw.to_netcdf(tmp_path / "furlong.nc")
    with pytest.raises(DataValidationError, match=r"furlong\.nc.*'time'.*cannot decode"):
        open_gridded(tmp_path / "furlong.nc")


def test_mismatched_grids_and_aggregation_errors(tmp_path):
    a = hourly_grid(tmp_path / "a.nc")
    b = hourly_grid(tmp_path / "b.nc", lat=(42.0, 40.0))
    with pytest.raises(DataValidationError, match=r"b\.nc.*'lat'.*differs"):
        open_gridded([a, b])
    monthly = xr.Dataset({"tas": (("time", "lat", "lon"), np.zeros((3, 1, 1)), {"units": "degC"})},
                         coords={"time": pd.date_range("2000-01-01", periods=3, freq="MS"), "lat": [1.0], "lon": [1.0]})
    monthly.to_netcdf(tmp_path / "mon.nc")
    with pytest.raises(DataValidationError, match="nothing to aggregate to days"):
        aggregate_daily(open_gridded(tmp_path / "mon.nc"))
