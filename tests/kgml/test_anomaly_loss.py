"""Issue 20 item 4, lever "anomaly-aware loss": `kgml.models.losses.paired_anomaly_mse` sees only the anomalies
(the seasonal cycle and a site's bias cancel in the year-to-year difference), `kgml.training.paired_batch_indices`
pairs two years of one site, and ``loss.anomaly`` adds the term (and the paired batches) only when it is > 0."""

from __future__ import annotations

import numpy as np
import pytest

from kgml import losses
from kgml.config import ConfigError, LossConfig
from kgml.training import _batch_indices, paired_batch_indices


def test_paired_anomaly_mse_scores_the_anomalies_only():
    """Two years of one site: a seasonal cycle, a planted anomaly in year 1. A prediction with the right
    cycle but a bias of 5 and no anomaly is scored by the anomaly alone; one with the bias and the anomaly
    scores 0; an unpaired row and an odd last window do not count."""
    month = np.arange(12)
    cycle = 3.0 * np.sin(2 * np.pi * month / 12)
    anomaly = np.where((month >= 5) & (month <= 7), 2.0, 0.0)
    obs = np.stack([cycle + anomaly, cycle, cycle + 9.0, cycle - 1.0, cycle])  # rows 0|2 paired, 1|3 not, 4 odd
    mask = np.ones_like(obs, bool)
    mask[0, 0] = False  # a month missing in one year: left out of its pair
    pred_no_anomaly = np.stack([cycle + 5.0, cycle + 5.0, cycle, cycle, cycle + 50.0])
    pair = np.array([True, False])
    got = float(losses.paired_anomaly_mse(pred_no_anomaly, obs, mask, pair, 2.0))
    # pair (0, 2): d_pred = 5, d_obs = anomaly − 9 on months 1..11
    want = np.mean(((5.0 - (anomaly[1:] - 9.0)) / 2.0) ** 2)
    assert got == pytest.approx(want, rel=1e-6)
    pred_exact = np.stack([cycle + anomaly + 7.0, cycle, cycle + 16.0, cycle + 100.0, cycle])
    assert float(losses.paired_anomaly_mse(pred_exact, obs, mask, pair, 2.0)) == pytest.approx(0.0, abs=1e-9)
    # ... though its plain error is large: the two losses measure different things
    assert float(losses.masked_mse(pred_exact[[0, 2]], obs[[0, 2]], mask[[0, 2]], 2.0)) == pytest.approx(3.5**2)
    assert float(losses.paired_anomaly_mse(obs, obs, mask, np.array([False, False]), 1.0)) == 0.0


def test_paired_batch_indices_pair_two_years_of_one_site():
    site = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    year = np.array([2001, 2002, 2003, 2005, 2001, 2004, 2000, 2001, 2002, 2003])
    seen = set()
    for step in range(12):
        idx = paired_batch_indices(site, year, 5, seed=3, step=step)
        assert idx.shape == (5,)
        np.testing.assert_array_equal(idx, paired_batch_indices(site, year, 5, seed=3, step=step))  # resumable
        half = 2
        anchors, partners = idx[:half], idx[half:2 * half]
        np.testing.assert_array_equal(np.r_[anchors, idx[-1]], _batch_indices(site.size, 3, 3, step))
        for a, b in zip(anchors, partners, strict=True):
            if site[a] == 1:  # one year only: another window, unpaired
                assert b != a
            else:
                assert site[b] == site[a] and year[b] != year[a]
        seen |= set(np.r_[anchors, idx[-1]].tolist())
    assert seen == set(range(site.size))  # every window is drawn (as an anchor or the odd one)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        paired_batch_indices(site, year, 1, seed=0, step=0)


def test_loss_config_anomaly_weight_is_checked():
    assert LossConfig().anomaly == 0.0  # default: off
    with pytest.raises(ConfigError):
        LossConfig(anomaly=-1.0)


@pytest.fixture(scope="module")
def monthly_setup():
    """A tiny hybrid (quick bench sizes) on a 2-year synthetic corpus with monthly NEE/GPP/Reco."""
    from kgml.compare.runner import _replace, base_config
    from kgml.compare.suites import get_suite
    from kgml.experiment import new_model, prepare, windows
    from kgml.synthetic import CorpusSpec, make_corpus

    ds = make_corpus(CorpusSpec(sites_per_block=1, years=2, monthly_fraction=1.0))
    cfg = base_config(get_suite("fluxnet_mm"), quick=True)
    cfg = _replace(cfg, data={"features": ("tair", "sw_in", "vpd", "precip")})
    prepared = prepare(ds, cfg)
    data = windows(ds, cfg, prepared, require_targets=True)
    return ds, cfg, prepared, new_model(cfg, prepared), data


def test_objective_adds_the_anomaly_term_only_when_switched_on(monthly_setup):
    from kgml.compare.runner import _replace
    from kgml.experiment import objective

    _, cfg, prepared, model, data = monthly_setup
    idx = paired_batch_indices(data.site, data.years, 4, seed=0, step=0)
    assert (data.site[idx[:2]] == data.site[idx[2:4]]).all()
    batch = data.batch(idx)
    off_total, off = objective(cfg, prepared)(model, batch)
    on_total, on = objective(_replace(cfg, loss={"anomaly": 2.0}), prepared)(model, batch)
    assert "anomaly" not in off and float(on["anomaly"]) > 0.0
    assert float(on["data"]) == pytest.approx(float(off["data"]))  # the monitor is unchanged
    assert float(on_total) == pytest.approx(float(off_total) + 2.0 * float(on["anomaly"]), rel=1e-5)
    # four different sites (no pair in the batch): the term is 0
    first = np.array([int(np.flatnonzero(data.site == s)[0]) for s in np.unique(data.site)[:4]])
    _, un = objective(_replace(cfg, loss={"anomaly": 2.0}), prepared)(model, data.batch(first))
    assert float(un["anomaly"]) == 0.0


def test_train_run_pairs_batches_only_with_the_anomaly_loss(monthly_setup, monkeypatch):
    """`train_run` hands `fit` the paired sampler when loss.anomaly > 0, none otherwise; batch size 1 is
    refused with the anomaly loss."""
    from kgml import experiment
    from kgml.compare.runner import _replace

    ds, cfg, *_ = monthly_setup
    seen = []

    class Stop(Exception):
        pass

    def fake_fit(*args, sampler=None, **kwargs):
        seen.append(sampler)
        raise Stop

    monkeypatch.setattr(experiment, "fit", fake_fit)
    cfg = _replace(cfg, train={"batch_size": 4})
    for c in (cfg, _replace(cfg, loss={"anomaly": 1.0})):
        with pytest.raises(Stop):
            experiment.train_run(c, ds, progress=False)
    assert seen[0] is None and callable(seen[1])
    idx = seen[1](0)
    assert idx.shape == (4,)
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        experiment.train_run(_replace(cfg, loss={"anomaly": 1.0}, train={"batch_size": 1}), ds, progress=False)
