"""Predictions and observations are paired by calendar date, never by position: the model's windows drop
29 February (365-day years), real records keep it (issue 17: `shapes (1,7300) (1,7305)` at the figure step)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml import synthetic as syn
from kgml.config import CorpusConfig, DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from kgml.metrics import align_labels, score_table

DAYS = pd.date_range("2003-01-01", "2005-12-31", freq="D")  # 2004 is a leap year: 1096 days
NOLEAP = DAYS[~((DAYS.month == 2) & (DAYS.day == 29))]


def test_scores_pair_by_date_across_a_leap_year():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2, DAYS.size))
    obs = xr.Dataset({"nee": (("site", "time"), truth)}, coords={"site": ["a", "b"], "time": DAYS})
    leap = (DAYS.month == 2) & (DAYS.day == 29)
    obs["nee"][:, leap] = 1e6  # a wild value on 29 February: must never be paired with anything
    pred = obs.sel(time=NOLEAP).copy(deep=True)  # perfect predictions, without 29 February
    rows = score_table(pred, obs, ["nee"])
    every = {r["key"]: r for r in rows if r["scope"] in ("all", "site")}
    assert every["all"]["n"] == 2 * 1095
    assert every["all"]["rmse"] == 0.0 and every["a"]["rmse"] == 0.0
    p, o = align_labels(pred.nee, obs.nee)
    assert p.shape == o.shape == (2, 1095) and (p.time.values == o.time.values).all()
    # by position the pairs would be shifted by a day after 28 February 2004: far from perfect
    positional = np.sqrt(np.nanmean((pred.nee.values - obs.nee.values[:, :1095]) ** 2))
    assert positional > 0.5


def test_align_labels_names_a_missing_dimension():
    pred = xr.DataArray(np.zeros((1, 3)), dims=("site", "time"), name="nee",
                        coords={"site": ["a"], "time": DAYS[:3]})
    obs = xr.DataArray(np.zeros(1), dims=("site",), name="nee_total", coords={"site": ["a"]})
    with pytest.raises(ValueError, match="lacks the dimension"):
        align_labels(pred, obs)


def _leap_record() -> xr.Dataset:
    """A 3-year synthetic grassland corpus put on the real calendar 2003–2005: 29 February 2004 repeats
    28 February's drivers and has no target (as a tower record with a gap there)."""
    corpus = syn.make_corpus(syn.CorpusSpec(vegetation=("grassland",), sites_per_block=2, years=3))
    corpus = corpus.assign_coords(time=NOLEAP)
    ds = corpus.reindex(time=DAYS, method="ffill")
    leap = (DAYS.month == 2) & (DAYS.day == 29)
    for name in ds.data_vars:
        if "time" in ds[name].dims and (name in ("nee", "gpp", "reco", "rsoil") or name.startswith("true_")):
            ds[name][{"time": np.flatnonzero(leap)}] = np.nan
    ds["nee"][{"time": np.flatnonzero(leap)}] = 50.0  # observed, but not by the model: never paired
    return ds


@pytest.mark.slow
def test_train_on_a_record_spanning_leap_years(tmp_path):
    """run_experiment on a daily record with 29 February: no crash at the figure step, scores on the dates
    both have, and the held-out NEE figure written."""
    from kgml.experiment import run_experiment

    ds = _leap_record()
    cfg = ExperimentConfig(
        name="leap",
        data=DataConfig(corpus=CorpusConfig(), vegetation="grassland", daily_targets=("nee",),
                        yield_target=False, test_fraction=0.34),
        model=ModelConfig(hidden=4, location_dim=4, embed_dim=4, head_hidden=4, learned=("rref_rh", "lue_max")),
        train=TrainConfig(steps=2, batch_size=2, eval_every=1),
    )
    result = run_experiment(cfg, tmp_path / "run", dataset=ds, progress=False)
    assert (tmp_path / "run" / "nee_heldout.png").exists()
    pred = result["predictions"]
    assert pred.sizes["time"] == 1095
    test = list(result["run"].split.test.units)
    row = next(r for r in result["rows"] if r["variable"] == "nee" and r["reference"] == "obs"
               and r["scope"] == "all")
    obs = ds.nee.sel(site=test, time=NOLEAP)
    both = np.isfinite(obs.values) & np.isfinite(pred.nee.sel(site=test).transpose("site", "time").values)
    assert row["n"] == int(both.sum()) > 0
    from tests.kgml.cf_check import assert_cf_units, flux_unit_spellings

    # the run log and the loss history (stdlib logging, CSV)
    log = (tmp_path / "run" / "run.log").read_text()
    assert "split sites_seed0" in log and "held-out nee vs obs" in log and " INFO kgml.experiment: " in log
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,") and len(history) == 1 + len(result["run"].history)
    assert_cf_units(tmp_path / "run" / "predictions.nc")  # CF units, Conventions and history on the output
    assert flux_unit_spellings(tmp_path / "run" / "predictions.nc") == {"g m-2 d-1"}


def test_cf_spelling_of_kgml_units():
    """Every unit kgml declares (variable registry, physics parameters, prediction outputs) has a UDUNITS-2
    spelling cf-units accepts, and kgml's converter reads that spelling back (one flux unit)."""
    cf = pytest.importorskip("cf_units", reason="cf-units is in the test extra")
    from kgml.io import cf_units
    from kgml.models.hybrid import _UNITS
    from kgml.synthetic import build_model
    from kgml.variables import VARIABLES, convert_units

    declared = {v.units for v in VARIABLES.values()} | set(_UNITS.values())
    for veg in ("maize", "soybean", "grassland", "soil"):
        declared |= {s.units for s in build_model(veg).parameter_specs}
    for units in sorted(declared):
        spelled, note = cf_units(units)
        unit = cf.Unit(spelled)
        assert not unit.is_no_unit() and not unit.is_unknown(), (units, spelled)
        if units.startswith("gC"):
            assert "carbon" in note
    assert cf_units("gC m-2 d-1") == ("g m-2 d-1", "grams of carbon")
    assert cf_units("-") == ("1", "")
    assert convert_units(2.0, "g m-2 d-1", "gC m-2 d-1") == 2.0  # the written spelling converts
    assert convert_units(1.0, "Mg ha-1", "t ha-1") == 1.0  # megagram = tonne
    assert convert_units(1.0, "mg ha-1", "t ha-1") == pytest.approx(1e-9)  # milligram, not tonne (case kept)
    from kgml.variables import units_label  # plot axes carry units

    assert units_label("nee_monthly") == " (gC m-2 d-1)" and units_label("crop_yield") == " (t ha-1)"


def test_monthly_targets_are_scored_by_month_code():
    """A run with monthly targets (FLUXNET MM layout) is scored on the monthly means of its daily
    predictions, paired by month code: perfect predictions score RMSE 0 on every observed month."""
    from kgml.experiment import evaluate_predictions

    rng = np.random.default_rng(2)
    daily = rng.normal(size=(2, NOLEAP.size)).astype(np.float32)
    pred = xr.Dataset({"nee": (("site", "time"), daily, {"units": "gC m-2 d-1"})},
                      coords={"site": ["a", "b"], "time": NOLEAP})
    codes = NOLEAP.year.values * 12 + NOLEAP.month.values - 1
    months = np.unique(codes)
    means = np.stack([[daily[s, codes == m].mean() for m in months] for s in range(2)])
    means[0, 3] = np.nan  # a month without an observation
    obs = xr.Dataset({"nee_monthly": (("site", "month"), means)}, coords={"site": ["a", "b"], "month": months})
    cfg = ExperimentConfig(data=DataConfig(daily_targets=(), monthly_targets=("nee",), yield_target=False))
    row = next(r for r in evaluate_predictions(pred, obs, cfg) if r["scope"] == "all")
    assert row["variable"] == "nee_monthly" and row["n"] == 2 * months.size - 1
    assert row["rmse"] == pytest.approx(0.0, abs=1e-6)

