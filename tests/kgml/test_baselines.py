"""kgml.compare.baselines on a tiny synthetic corpus: the feature baselines beat the training mean on held-out
sites, the LSTM trains, outputs have the layout of kgml.experiment.predict_dataset, bad inputs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from kgml import evaluation as ev
from kgml.compare.baselines import FeatureBaseline, LSTMBaseline, default_features, default_static

TOWER = ("nee", "gpp", "reco")


@pytest.fixture(scope="module")
def corpus():
    from kgml.synthetic import CorpusSpec, make_corpus

    return make_corpus(CorpusSpec(sites_per_block=2, years=2, monthly_fraction=1.0))


@pytest.fixture(scope="module")
def parts(corpus):
    sites = corpus.site.values
    return corpus.isel(site=np.arange(0, sites.size, 2)), corpus.isel(site=np.arange(1, sites.size, 2))


@pytest.fixture(scope="module")
def reference_layout(corpus):
    """What `predict_dataset` returns for ``corpus``: `predictions_to_dataset` on its windows (with
    placeholder values; no model needs to run to get the layout)."""
    from kgml.data.normalisation import Normaliser
    from kgml.models.hybrid import Predictions, TaskSpec, predictions_to_dataset, prepare_windows

    feats = ("tair", "sw_in")
    data = prepare_windows(corpus, features=feats, static=(), task=TaskSpec(daily=(), annual=True),
                           normaliser=Normaliser.fit(corpus, feats))
    z = np.zeros((len(data), 365), np.float32)
    pred = Predictions(gpp=z, reco=z, nee=z, rsoil=z, et=z, lai=z, crop_yield=np.zeros((len(data), 1)),
                       gpp_physics=z, reco_physics=z, rsoil_physics=z, residual={}, theta={}, theta_daily={},
                       unconstrained={})
    return predictions_to_dataset(pred, data)


def _mean_rmse(train, test, name):
    mean = float(np.nanmean(train[name].values))
    o = test[name].values
    return float(np.sqrt(np.nanmean((o - mean) ** 2)))


@pytest.mark.slow
def test_random_forest_monthly_beats_training_mean(parts):
    train, test = parts
    rf = FeatureBaseline("rf", n_estimators=60, seed=1).fit(train, targets=TOWER, resolution="monthly")
    assert rf.features_ == default_features(train) == ("tair", "sw_in", "vpd", "precip", "tsoil")
    assert rf.static_ == default_static(train) == ("map", "mat", "soil_carbon")
    pred = rf.predict(test)
    assert set(pred.data_vars) == {"nee_monthly", "gpp_monthly", "reco_monthly"}
    assert pred.gpp_monthly.dims == ("site", "month") and pred.gpp_monthly.attrs["units"] == "gC m-2 d-1"
    scores = ev.score_sites(pred, test, list(TOWER), resolution="monthly")
    for v in TOWER:
        rmse = float(scores.pooled_rmse.sel(variable=v))
        assert rmse < _mean_rmse(train, test, f"{v}_monthly"), v
    assert float(scores.pooled_r2.sel(variable="gpp")) > 0.3
    again = FeatureBaseline("rf", n_estimators=60, seed=1).fit(train, targets=TOWER, resolution="monthly")
    xr.testing.assert_identical(again.predict(test), pred)  # seeded


@pytest.mark.slow
def test_boosting_daily_and_annual_layout(parts, reference_layout):
    train, test = parts
    gbm = FeatureBaseline("gbm", n_estimators=40).fit(train, targets="rsoil", resolution="daily")
    pred = gbm.predict(test)
    assert pred.rsoil.dims == reference_layout.rsoil.dims == ("site", "time")
    assert np.isfinite(pred.rsoil.values).all()
    s = ev.score_sites(pred, test, ["rsoil"])
    assert float(s.pooled_rmse[0]) < _mean_rmse(train, test, "rsoil")
    crops = train.isel(site=np.flatnonzero(train.vegetation.values != "grassland"))
    rf = FeatureBaseline("rf", n_estimators=20).fit(crops, targets="crop_yield", resolution="annual")
    assert len(rf.feature_names_) == 5 * len(rf.features_) + len(rf.static_)
    y = rf.predict(test)
    assert y.crop_yield.dims == reference_layout.crop_yield.dims == ("site", "year")
    np.testing.assert_array_equal(y.year.values, reference_layout.year.values)
    assert np.isfinite(y.crop_yield.values).all() and y.crop_yield.attrs["units"] == "t ha-1"


@pytest.mark.slow
def test_lstm_trains_and_matches_predict_dataset_layout(parts, corpus, reference_layout):
    train, test = parts
    lstm = LSTMBaseline(hidden=8, steps=6, eval_every=3, batch_size=4, learning_rate=1e-2, seed=0)
    lstm.fit(train, targets=TOWER, resolution="monthly")
    h = lstm.history_
    assert [e["step"] for e in h] == [0, 3, 6]
    assert h[-1]["train_loss"] < h[0]["train_loss"] and np.isfinite(h[-1]["val_loss"])
    pred = lstm.predict(corpus)
    for v in TOWER:
        assert pred[v].dims == reference_layout[v].dims
        assert pred[f"{v}_monthly"].dims == ("site", "month")
    np.testing.assert_array_equal(pred.site.values, reference_layout.site.values)
    np.testing.assert_array_equal(pred.time.values, reference_layout.time.values)
    np.testing.assert_array_equal(pred.month.values, corpus.month.values)
    assert np.isfinite(pred.nee.values).all()
    s = ev.score_sites(pred.sel(site=test.site.values), test, list(TOWER), resolution="monthly")
    assert (s.n.values > 0).all()


def test_bad_inputs_fail_clearly(parts):
    train, test = parts
    site = str(train.site.values[1])
    broken = train.copy(deep=True)
    broken["vpd"][1, 40] = np.nan
    with pytest.raises(ValueError, match=rf"'vpd' is NaN at site '{site}'"):
        FeatureBaseline("rf", n_estimators=5).fit(broken, targets=TOWER, resolution="monthly")
    with pytest.raises(ValueError, match=rf"'vpd' is NaN at site '{site}'"):
        LSTMBaseline(hidden=4, steps=1).fit(broken, targets=TOWER, resolution="monthly")
    rf = FeatureBaseline("rf", n_estimators=5).fit(train, targets="gpp", resolution="monthly")
    with pytest.raises(ValueError, match="'vpd' is NaN"):
        rf.predict(broken)
    out = rf.predict(broken, missing="nan").gpp_monthly
    assert np.isnan(out.sel(site=site).values).sum() == 1 and np.isfinite(out.values).sum() == out.size - 1
    with pytest.raises(ValueError, match="kind"):
        FeatureBaseline("xgboost")
    with pytest.raises(ValueError, match="resolution"):
        FeatureBaseline().fit(train, targets="gpp", resolution="hourly")
    with pytest.raises(ValueError, match="FeatureBaseline"):
        LSTMBaseline().fit(train, targets="crop_yield", resolution="annual")
    with pytest.raises(KeyError, match="precip_total"):
        FeatureBaseline().fit(train, targets="gpp", features=["precip_total"], resolution="monthly")
    with pytest.raises(RuntimeError, match="before fit"):
        LSTMBaseline().predict(test)
