"""Multi-model ensembles of the benchmark (``--models a+b``): the mean of the members' saved predictions seed
by seed, NaN where any member is, only the variables all members predict; validated names; a quick run scores
the ensemble beside its members."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.compare import ensembles as en
from kgml.compare import intervals as iv
from kgml.compare.figures import prediction_path
from kgml.data.splits import Part, Split
from kgml.io import write_netcdf_atomic


def _pred(values, extra=None):
    time = pd.date_range("2001-01-01", periods=values.shape[1], freq="D")
    ds = xr.Dataset({"nee": (("site", "time"), values, {"units": "gC m-2 d-1", "long_name": "NEE"})},
                    coords={"site": ["a", "b"], "time": time}, attrs={"model": "x", "fit_seconds": 2.0})
    if extra is not None:
        ds["nee_qrf"] = (("site", "time", "quantile"), np.repeat(values[:, :, None], 3, axis=2))
        ds = ds.assign_coords(quantile=[0.05, 0.5, 0.95])
    return ds


def test_ensemble_is_the_members_mean_seed_by_seed(tmp_path):
    split = Split("f0", "kfold_by_site", 0, "site", Part(["c"]), Part(), Part(["a", "b"]), Part(), {})
    fold = tmp_path / "folds" / "site_kfold" / "f0"
    rng = np.random.default_rng(0)
    vals = {(m, s): rng.normal(size=(2, 5)) for m in ("rf", "neural") for s in (0, 1)}
    vals[("neural", 1)][0, 2] = np.nan
    for (m, s), v in vals.items():
        write_netcdf_atomic(_pred(v, extra=m == "rf"), prediction_path(fold, m, s))
    write_netcdf_atomic(_pred(vals[("rf", 0)]), iv.calibration_path(fold, "rf", 0))  # neural has none
    status = en.write_ensembles(tmp_path, {"site_kfold": [split]}, ["rf+neural"], [0, 1, 2],
                                extra_paths=(iv.calibration_path,))
    assert "1 fold-seeds lack a member" in status["rf+neural"]  # seed 2: no member file
    for s in (0, 1):
        with xr.open_dataset(prediction_path(fold, "rf+neural", s)) as e:
            want = (vals[("rf", s)] + vals[("neural", s)]) / 2
            np.testing.assert_allclose(e["nee"].values, want, rtol=1e-6)  # NaN where a member is NaN
            with xr.open_dataset(prediction_path(fold, "rf", s)) as member:  # the member's CF attributes
                assert "nee_qrf" not in e and e["nee"].attrs["units"] == member["nee"].attrs["units"]
            assert e.attrs["model"] == "rf+neural" and e.attrs["members"] == "rf, neural"
            assert e.attrs["fit_seconds"] == 4.0 and e.attrs["n_parameters"] == -1
    assert np.isnan(xr.open_dataset(prediction_path(fold, "rf+neural", 1))["nee"].values[0, 2])
    assert not prediction_path(fold, "rf+neural", 2).exists()
    assert not iv.calibration_path(fold, "rf+neural", 0).exists()  # a member lacks its calibration file


def test_ensemble_names_are_validated():
    en.validate("rf+neural", ["rf", "neural"])
    for bad, why in (("rf+rf", "different"), ("rf+", "different"), ("rf+lasso", "unknown members")):
        with pytest.raises(ValueError, match=why):
            en.validate(bad, ["rf", "neural"])
    assert en.is_ensemble("rf+neural") and not en.is_ensemble("rf") and en.members("a+b+c") == ("a", "b", "c")


def test_quick_run_scores_an_ensemble_beside_its_members(tmp_path):
    from kgml.compare.runner import run_suite

    res = run_suite("synthetic_shift", out=tmp_path, quick=True, progress=False, models=("rf+gbm",),
                    fold_kinds=("site_kfold",), figures=False)
    assert res.status["rf+gbm"] == "ensemble of rf, gbm" and {"rf", "gbm"} <= set(res.status)
    with xr.open_dataset(res.directory / "metrics.nc") as m:
        assert {"rf+gbm", "rf", "gbm"} <= set(m.model.values.astype(str))
    fold = next((res.directory / "folds" / "site_kfold").iterdir())
    with (xr.open_dataset(prediction_path(fold, "rf")) as a, xr.open_dataset(prediction_path(fold, "gbm")) as b,
          xr.open_dataset(prediction_path(fold, "rf+gbm")) as e):
        np.testing.assert_allclose(e["nee"].values, (a["nee"].values + b["nee"].values) / 2, rtol=1e-5)
    assert "`rf+gbm` multi-model mean of random forest" in res.markdown
    with pytest.raises(ValueError, match="unknown members"):
        run_suite("synthetic_shift", out=tmp_path, quick=True, progress=False, models=("rf+nope",))
