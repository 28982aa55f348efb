"""Smoke run of the process-model half of `kgml demo` on tiny sizes."""

from __future__ import annotations

import numpy as np
import xarray as xr

from kgml.demo import simulate_states


def test_process_model_demo_writes_cf_netcdf_and_a_table(tmp_path):
    result = simulate_states(tmp_path, sites_per_state=2, years=1, seed=0, figure=False)
    with xr.open_dataset(result["netcdf"]) as ds:
        assert ds.attrs["Conventions"].startswith("CF-")
        assert ds.sizes["site"] == 3 * 3 * 2 and ds.sizes["time"] == 365
        for name in ("gpp", "reco", "nee", "crop_yield"):
            assert "units" in ds[name].attrs and np.all(np.isfinite(ds[name].values))
        np.testing.assert_allclose(ds.nee.values, ds.reco.values - ds.gpp.values, atol=1e-4)
        grass = ds.crop_yield.where(ds.vegetation == "grassland", drop=True)
        assert float(np.abs(grass).max()) == 0.0
    assert len(result["summary"]) == 9
    assert result["table"].count("\n| ") == 9  # one row per state × vegetation
