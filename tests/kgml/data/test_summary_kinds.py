"""``kgml data summary`` dataset kinds on small synthetic folders: one-variable-per-file grids are read together
(so vpd exists), grids that do not share an axis are listed file by file, and the SoyFACE and KGML-DA county
folders are recognised and located through a county table beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.cli import main as kgml_main
from kgml.data.summary import find_kind, load_folder

from .cropfiles import soyface_frame, write_county_folder, write_csv, write_soyface


def _grid(path, name, units, values, lat=(50.25, 50.75), hours=48):
    time = pd.date_range("2017-01-01", periods=hours, freq="h")
    data = np.broadcast_to(np.asarray(values, dtype="float32"), (hours, len(lat), 2)).copy()
    xr.Dataset({name: (("time", "lat", "lon"), data, {"units": units})},
               coords={"time": time, "lat": list(lat), "lon": [-1.25, -0.75]}).to_netcdf(path)


def test_grids_of_one_product_are_read_together(tmp_path):
    folder = tmp_path / "forcing"
    folder.mkdir()
    _grid(folder / "air_temperature.nc", "Tair", "K", 283.15)
    _grid(folder / "specific_humidity.nc", "Qair", "kg kg-1", 0.005)
    kind, parts = load_folder(folder)
    assert kind == "gridded netCDF" and [label for label, _ in parts] == ["2 files, one grid"]
    ds = parts[0][1]
    assert {"tair", "qair", "vpd"} <= set(ds.data_vars) and float(ds.tair.max()) == pytest.approx(10.0, abs=1e-4)
    e = 0.005 * 101325.0 / (0.622 + 0.378 * 0.005)  # Pa, from q and the standard atmosphere
    es = 610.8 * np.exp(17.27 * 10.0 / (10.0 + 237.3))  # FAO-56 eq. 11 in Pa
    assert float(ds.vpd.mean()) == pytest.approx((es - e) / 100.0, rel=1e-4)
    other = tmp_path / "two_grids"
    other.mkdir()
    _grid(other / "a.nc", "Tair", "K", 283.15)
    _grid(other / "b.nc", "Tair", "K", 284.15, lat=(10.25, 10.75))
    assert [label for label, _ in load_folder(other)[1]] == ["a.nc", "b.nc"]


def test_crop_folders_recognised_and_located(tmp_path, capsys):
    data = tmp_path / "data"
    write_soyface(data / "soyface_biomass", 2005, "ambient", soyface_frame())
    write_soyface(data / "soyface_biomass", 2005, "co2", soyface_frame(seed=1))
    write_county_folder(data / "kgmlda_counties")
    write_csv(pd.DataFrame({"state_fips": [17, 17, 17], "county_fips": [1, 3, 19], "lon": [-91.2, -89.35, -88.2],
                            "lat": [39.99, 37.18, 40.14]}), data / "county_table" / "county_locations.csv")
    assert find_kind(data / "soyface_biomass").name == "SoyFACE soybean biomass by organ"
    assert find_kind(data / "county_table") is None
    soy = load_folder(data / "soyface_biomass")[1][0][1]
    assert float(soy.lat[0]) == 40.14 and list(soy.site.values) == ["SoyFACE_ambient", "SoyFACE_elevated"]
    county = load_folder(data / "kgmlda_counties")[1][0][1]
    assert list(county.lat.values) == [39.99, 37.18]
    code = kgml_main(["data", "summary", "--data-dir", str(data), "--only", "soyface_biomass", "kgmlda_counties"])
    out = capsys.readouterr().out
    assert code == 0 and "2 sites, 2005–2005 (1 year)" in out and "2 counties, DD, 2000–2001 (2 years)" in out
