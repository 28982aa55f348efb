"""The few-towers curve (issue 15 item 3): seeded, nested draws of training towers on fixed held-out towers,
and the tower-like pretraining corpus (real drivers, IGBP priors, the tower's gaps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.compare.towers_curve import draw_train_towers, parse_train_towers, towers_kind
from kgml.data.splits import Part, Split
from kgml.synthetic.tower_corpus import BPLUT_LUE_MAX, tower_corpus, tower_years


def _split(n_train=12, name="kfold10_fold0"):
    train = [f"T{i:02d}" for i in range(n_train)]
    return Split(name, "kfold", 1, "site", Part(train), Part(("V0", "V1")), Part(("H0", "H1", "H2")), Part(),
                 {"fold_kind": "site_kfold"})


def test_draw_is_deterministic_per_seed_and_differs_between_seeds():
    sp = _split()
    a = draw_train_towers(sp, 5, seed=0)
    b = draw_train_towers(sp, 5, seed=0)
    assert a.train.units == b.train.units
    draws = {draw_train_towers(sp, 5, seed=s).train.units for s in range(6)}
    assert len(draws) > 1  # different seeds draw different towers


def test_draws_are_nested_subsets_and_keep_val_and_test():
    sp = _split()
    for seed in range(3):
        prev = set()
        for n in (2, 5, 8, 12):
            d = draw_train_towers(sp, n, seed, towers_kind("site_kfold", n))
            units = set(d.train.units)
            assert len(units) == n and units <= set(sp.train.units) and prev <= units
            assert not units & (set(d.test.units) | set(d.val.units))  # held-out towers never train
            assert d.test == sp.test and d.val == sp.val and d.name == sp.name
            assert d.info["fold_kind"] == f"site_kfold_towers{n}" and d.info["train_towers"] == n
            prev = units


def test_more_towers_than_the_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="only 12 training towers"):
        draw_train_towers(_split(), 13, seed=0)


def test_parse_train_towers():
    assert parse_train_towers("5,10, 20,all") == (5, 10, 20, "all")
    assert towers_kind("site_kfold", "all") == "site_kfold"
    for bad in ("0", "five", ""):
        with pytest.raises(ValueError, match="--train-towers"):
            parse_train_towers(bad)


def _towers_ds():
    time = pd.date_range("2001-01-01", "2003-12-31", freq="D")
    n = time.size
    doy = time.day_of_year.values
    sites = ["A", "B", "C"]
    season = np.sin(2 * np.pi * (doy - 110) / 365.0)
    tair = np.stack([10 + 12 * season + k for k in range(3)]).astype(np.float32)
    sw = np.stack([180 + 120 * season] * 3).astype(np.float32)
    vpd = np.stack([6 + 5 * season.clip(0)] * 3).astype(np.float32)
    pr = np.full((3, n), 2.0, np.float32)
    tair[2, 400] = np.nan  # site C: 2002 incomplete → no two consecutive complete years
    month = np.arange(2001 * 12, 2004 * 12)
    nee = np.full((3, month.size), -1.0, np.float32)
    nee[0, 3] = np.nan  # site A misses April of its first year
    dv = {"tair": (("site", "time"), tair), "tmin": (("site", "time"), tair - 5), "tmax": (("site", "time"), tair + 5),
          "sw_in": (("site", "time"), sw), "vpd": (("site", "time"), vpd), "precip": (("site", "time"), pr),
          "nee_monthly": (("site", "month"), nee)}
    coords = {"site": sites, "time": time, "month": month, "lat": ("site", [45.0, 40.0, 50.0]),
              "lon": ("site", [10.0, -90.0, 20.0]), "igbp": ("site", ["ENF", "WET", "GRA"]),
              "mat": ("site", [10.0, 11.0, 12.0]), "map": ("site", [730.0, 730.0, 730.0])}
    return xr.Dataset(dv, coords=coords)


def test_tower_corpus_uses_the_towers_drivers_priors_and_gaps():
    ds = _towers_ds()
    assert tower_years(ds, "C") == [2001, 2003]
    c = tower_corpus(ds, ["A", "B", "C"], years=2, draws=2, prior_sd=0.0, seed=0)
    assert c.attrs["towers_skipped"] == "C" and c.sizes["site"] == 4 and c.sizes["time"] == 730
    assert list(c["source_tower"].values) == ["A", "A", "B", "B"]
    # ε_max prior: the C6 BPLUT value of the class (ENF); WET has no MOD17 biome → the spec's default (1.3).
    np.testing.assert_allclose(c["theta_lue_max"].values, [BPLUT_LUE_MAX["ENF"]] * 2 + [1.3] * 2, rtol=1e-4)
    # drivers are the tower's own (2001-2002 or 2002-2003 windows): the same seasonal cycle, site B 1 °C warmer
    np.testing.assert_allclose(c["tair"].sel(site="B-d0").values[:365].mean() - 1.0,
                               c["tair"].sel(site="A-d0").values[:365].mean(), atol=0.05)
    assert float(c["mat"].sel(site="A-d0")) == 10.0  # the tower's static inputs
    # gap pattern: every day of a month is missing where the source tower lacks that month's NEE
    starts = set()
    for site in ("A-d0", "A-d1", "B-d0"):
        start = c["source_years"].sel(site=site).item().split("-")[0]
        starts.add(start)
        april = c["nee"].sel(site=site).values[90:120]
        assert np.isnan(april).all() == (site.startswith("A") and start == "2001")
    assert np.isfinite(c["nee"].values).mean() > 0.5  # the default daily gaps remove only some days


def test_tower_corpus_never_reads_flux_values():
    ds = _towers_ds()
    other = ds.copy()
    other["nee_monthly"] = other["nee_monthly"] * 5.0 + 3.0  # same gaps, other values
    a = tower_corpus(ds, ["A", "B"], years=2, draws=1, seed=3)
    b = tower_corpus(other, ["A", "B"], years=2, draws=1, seed=3)
    xr.testing.assert_identical(a, b)


def test_tower_corpus_rejects_unknown_towers():
    with pytest.raises(ValueError, match="not in the dataset"):
        tower_corpus(_towers_ds(), ["Z"])


def test_steady_state_balance_zeroes_the_mean_nee():
    ds = _towers_ds()
    c = tower_corpus(ds, ["A", "B"], years=2, draws=2, seed=1, balance="steady_state")
    true = c["true_nee"].values.mean(axis=1)
    inside = (c["theta_rref_rh"].values > 0.05) & (c["theta_rref_rh"].values < 15.0)
    assert inside.any()
    np.testing.assert_allclose(true[inside], 0.0, atol=1e-3)  # mean Rh = mean NPP → mean NEE = 0
    with pytest.raises(ValueError, match="balance"):
        tower_corpus(ds, ["A"], balance="sink")


def test_cli_rejects_a_bad_tower_count(tmp_path, capsys):
    from kgml.cli import main

    rc = main(["bench", "shift", "--suite", "fluxnet_mm", "--train-towers", "5,zero", "--out", str(tmp_path),
               "--no-results", "--no-progress"])
    assert rc == 2
    assert "'zero' is neither a positive integer nor 'all'" in capsys.readouterr().err


def test_gap_rows_measure_the_distance_to_the_towers():
    from kgml.compare.towers_gap import gap_rows

    ds = _towers_ds()
    for v in ("gpp", "reco"):
        ds[f"{v}_monthly"] = ds["nee_monthly"] * 0 + 2.0
    shifted = ds.copy()
    shifted["tair"] = shifted["tair"] + 3.0
    rows = {(r["variable"], r["source"]): r for r in gap_rows(ds, {"same": ds, "warm": shifted})}
    assert rows[("tair", "same")]["w1"] == pytest.approx(0.0, abs=1e-9)
    assert rows[("tair", "warm")]["w1"] == pytest.approx(3.0, abs=0.05)  # a shift of 3 °C moves W1 by 3 °C
    assert rows[("tair", "warm")]["mean"] == pytest.approx(rows[("tair", "towers")]["mean"] + 3.0, abs=0.05)


def test_curve_on_the_tiny_synthetic_suite_resumes_and_scores_each_draw(tmp_path):
    from kgml.compare.towers_curve import run_towers_curve

    kw = dict(out=tmp_path, quick=True, models=["rf"], fold_kinds=["site_kfold"], seeds=2, progress=False,
              figures=False)
    res = run_towers_curve("synthetic_shift", (2, "all"), **kw)
    fold = next((tmp_path / "synthetic_shift" / "folds" / "site_kfold_towers2").iterdir())
    assert (fold / "rf.nc").exists() and (fold / "rf_seed1.nc").exists()
    kinds = {r["fold_kind"] for r in res.rows}
    assert kinds == {"site_kfold_towers2", "site_kfold"}
    stamp = (fold / "rf.nc").stat().st_mtime_ns
    run_towers_curve("synthetic_shift", (2, "all"), **kw)  # resumed: nothing retrained
    assert (fold / "rf.nc").stat().st_mtime_ns == stamp
    assert "Few towers, real data: the curve" in (tmp_path / "synthetic_shift" / "metrics.md").read_text()
    with pytest.raises(ValueError, match="training towers"):
        run_towers_curve("synthetic_shift", (500,), **kw)
