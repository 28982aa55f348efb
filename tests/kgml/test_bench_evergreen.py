"""Issue 20 item 4, lever "deciduous vs evergreen phenology by vegetation type": the evergreen share of the canopy
from the IGBP class (`kgml.compare.suites.evergreen_fraction`), read and checked by `met_from_dataset`, and the
``hybrid_evergreen`` slot whose physics keeps it green (`process_models.phenology.EvergreenGSI`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.compare.suites import EVERGREEN_FRACTION, evergreen_fraction, get_suite
from kgml.data.drivers import met_from_dataset
from kgml.data.schema import DataValidationError


def _sites(classes):
    n = len(classes)
    time = pd.date_range("2003-01-01", periods=4, freq="D")
    return xr.Dataset(
        {k: (("site", "time"), np.full((n, 4), v, np.float32)) for k, v in
         {"tmin": 2.0, "tmax": 12.0, "sw_in": 150.0, "precip": 1.0, "co2": 400.0, "patm": 1e5}.items()},
        coords={"site": [f"S{i}" for i in range(n)], "time": time, "lat": ("site", np.full(n, 45.0)),
                "igbp": ("site", classes)})


def test_evergreen_share_follows_the_igbp_class():
    ds = evergreen_fraction(_sites(["ENF", " ebf", "MF", "DBF", "DNF", "OSH", "GRA", ""]))
    assert ds["evergreen"].values.tolist() == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert ds["evergreen"].attrs["units"] == "1" and set(EVERGREEN_FRACTION) == {"ENF", "EBF", "MF"}
    with pytest.raises(KeyError, match="no 'igbp' site coordinate"):
        evergreen_fraction(xr.Dataset(coords={"site": ["a"]}))


def test_met_from_dataset_reads_the_evergreen_share_and_refuses_a_bad_one():
    ds = evergreen_fraction(_sites(["ENF", "GRA"]))
    met = met_from_dataset(ds)
    np.testing.assert_array_equal(met.evergreen, [[1.0] * 4, [0.0] * 4])
    assert met_from_dataset(_sites(["ENF", "GRA"])).evergreen is None  # not given: not made up
    for bad in (np.nan, 1.5, -0.1):
        with pytest.raises(DataValidationError, match="evergreen.*'S1'"):
            met_from_dataset(ds.assign_coords(evergreen=("site", np.array([1.0, bad], np.float32))))


def test_every_fluxnet_suite_carries_the_evergreen_share(dataset_dir):
    data = dataset_dir("fluxnet2015_subset_mm").parent
    for name in ("fluxnet_mm", "fluxnet_mm_igbp"):
        ds = get_suite(name).load(data, True, None)
        classes = np.char.upper(np.char.strip(ds["igbp"].values.astype(str)))
        expect = [EVERGREEN_FRACTION.get(str(c), 0.0) for c in classes]
        np.testing.assert_array_equal(ds["evergreen"].values, expect)


@pytest.mark.slow
def test_evergreen_slot_trains_the_evergreen_phenology(tmp_path, dataset_dir):
    """hybrid_evergreen on fluxnet_mm (quick): the trained physics is EvergreenGSI, the held-out predictions are
    finite; data without the evergreen share: not available."""
    from kgml.compare.runner import SLOTS, NotAvailable

    from .test_bench import _fold_context, _slot_and_run

    data = dataset_dir("fluxnet2015_subset_mm").parent
    ctx = _fold_context(tmp_path / "a", "fluxnet_mm", data, "site_kfold")
    pred, run = _slot_and_run(ctx, "hybrid_evergreen")
    assert run.config.model.phenology == "gsi_evergreen" and run.model.process.phenology.evergreen
    assert np.isfinite(pred["nee"].values).any()
    ctx.ds = ctx.ds.drop_vars("evergreen")
    with pytest.raises(NotAvailable, match="evergreen"):
        SLOTS["hybrid_evergreen"](ctx)
