"""Calibrated intervals of the benchmark (``kgml bench shift --intervals``): calibration sites carved out of
the training sites, the engine's interval scores on a synthetic world with known noise (the 90 % interval
covers 90 % ± 3 % of held-out site-steps), the quantile-forest reference, and the wiring of the run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.compare import intervals as iv
from kgml.compare.figures import prediction_path
from kgml.data.splits import Part, Split
from kgml.io import write_netcdf_atomic


def _split(name, train, val, test, years=None):
    return Split(name, "kfold_by_site", 0, "site", Part(train, years), Part(val, years), Part(test, years), Part(),
                 {"heldout": "test", "fold_kind": "site_kfold"})


def test_calibration_sites_are_carved_out_of_training_deterministically():
    sites = [f"s{i:03d}" for i in range(40)]
    split = _split("fold0", sites[:30], sites[30:35], sites[35:])
    a, why = iv.calibration_split(split, seed=7)
    b, _ = iv.calibration_split(split, seed=7)
    assert why == "" and a.info["calibration_sites"] == b.info["calibration_sites"]
    cal = set(a.info["calibration_sites"])
    assert len(cal) == 6 and cal <= set(sites[:30])
    assert not cal & set(a.train.units) and not cal & set(a.val.units)
    assert set(a.test.units) == cal | set(sites[35:]) and a.info["heldout_sites"] == sites[35:]
    assert len(a.train.units) == 24 and list(a.val.units) == sites[30:35]
    other, _ = iv.calibration_split(_split("fold1", sites[:30], sites[30:35], sites[35:]), seed=7)
    assert other.info["calibration_sites"] != a.info["calibration_sites"]  # seeded by the split's name
    # Leave-years-out folds hold the training sites out in other years: no site calibration.
    years = Split("years", "year_blocks", 0, "site", Part(sites[:5], [2001]), Part(), Part(sites[:5], [2002]), Part(),
                  {"heldout": "test"})
    none, why = iv.calibration_split(years)
    assert none is None and "other years" in why
    with pytest.raises(ValueError, match="too few"):
        iv.calibration_split(_split("tiny", sites[:2], [], sites[2:4]))


def _world(n_sites: int, n_days: int, n_seeds: int, seed: int, noise_scale: float = 1.0):
    """Sites with a seasonal truth and Gaussian noise of a known, site-specific σ; each seed's prediction
    is the truth plus a seed perturbation proportional to the site's σ (so the seed spread is informative)."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2001-01-01", periods=n_days, freq="D")
    t = np.arange(n_days)
    sd = np.exp(rng.normal(0.0, 0.5, n_sites))[:, None]
    truth = 3 + 2 * np.sin(2 * np.pi * t / 365)[None, :] + rng.normal(0, 0.1, (n_sites, 1))
    obs = truth + noise_scale * sd * rng.normal(size=(n_sites, n_days))
    obs[rng.random(obs.shape) < 0.2] = np.nan
    sites = [f"s{i:03d}" for i in range(n_sites)]
    preds = [truth + 0.3 * sd * rng.normal(size=(n_sites, 1)) for _ in range(n_seeds)]
    coords = {"site": sites, "time": time}
    return (xr.Dataset({"nee": (("site", "time"), obs, {"units": "gC m-2 d-1"})}, coords=coords),
            [xr.Dataset({"nee": (("site", "time"), p, {"units": "gC m-2 d-1"})}, coords=coords) for p in preds])


def _write_folds(directory, obs, preds, n_folds, fraction):
    sites = list(map(str, obs.site.values))
    folds = []
    for k, test in enumerate(np.array_split(np.asarray(sites), n_folds)):
        train = [s for s in sites if s not in set(test)]
        split, _ = iv.calibration_split(_split(f"fold{k}", train, [], list(test)), fraction=fraction, seed=1)
        cal = split.info["calibration_sites"]
        fold_dir = directory / "folds" / "site_kfold" / split.name
        for sd, p in enumerate(preds):
            write_netcdf_atomic(p.sel(site=list(test)), prediction_path(fold_dir, "model", sd))
            write_netcdf_atomic(p.sel(site=cal), iv.calibration_path(fold_dir, "model", sd))
        folds.append(split)
    return {"site_kfold": folds}


SUITE = SimpleNamespace(targets=("nee",), resolution="daily", observed_name=lambda t: t)


def test_calibrated_90_percent_interval_covers_90_percent_of_held_out_sites(tmp_path):
    obs, preds = _world(180, 200, 8, seed=11)
    folds = _write_folds(tmp_path, obs, preds, n_folds=3, fraction=0.4)  # 48 calibration sites per fold
    rows, notes = iv.interval_rows(SUITE, obs, folds, tmp_path, ["model"], list(range(8)), obs)
    assert not notes
    by = {r["scale"]: r for r in rows}
    assert set(by) == {"seed spread", "residual"}
    spread, resid = by["seed spread"], by["residual"]
    assert spread["n_sites"] == 180 and spread["n_folds"] == 3 and spread["n_calibration_sites"] == 3 * 48
    assert 0.87 <= spread["coverage_90"] <= 0.93, spread
    assert 0.47 <= spread["coverage_50"] <= 0.53, spread
    assert 0.87 <= resid["coverage_90"] <= 0.93, resid
    # The spread of 8 seeds knows which sites are noisy: the worst sites are covered better than with one
    # width (measured 0.80 vs 0.73; with σ̂ alone, no β, 3 seeds were too noisy a scale: 0.69 vs 0.73).
    assert spread["coverage_90_p10"] > resid["coverage_90_p10"] + 0.03
    assert spread["crps"] < resid["crps"]
    assert spread["width_50"] < spread["width_80"] < spread["width_90"]
    md = iv.intervals_markdown(rows, {"leave_years_out": "no site"}, list(range(8)))
    assert "| model | seed spread | 3 | 180 (144) |" in md and "leave_years_out: no site." in md
    ds = xr.Dataset(coords=iv.intervals_dataset(rows)["coords"]).assign(iv.intervals_dataset(rows)["data_vars"])
    assert ds["interval_coverage"].sel(level=0.9).values[0] == pytest.approx(spread["coverage_90"])
    png = iv.coverage_figure(rows, tmp_path / "coverage.png", "synthetic")
    assert png.stat().st_size > 1000


def test_calibration_on_a_quieter_world_undercovers():
    """The calibration sites decide the width: calibrated on a quiet world, held-out sites of a noisier one
    (a distribution shift the calibration did not see) fall far below 90 %."""
    obs, preds = _world(60, 200, 1, seed=3)
    noisy, _ = _world(60, 200, 1, seed=3, noise_scale=2.5)
    mixed = xr.concat([obs.isel(site=slice(0, 40)), noisy.isel(site=slice(40, None))], dim="site")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        split, _ = iv.calibration_split(_split("f", list(mixed.site.values[:40]), [], list(mixed.site.values[40:])),
                                        fraction=1.0 - 1 / 40, seed=0)
        fold_dir = Path(d) / "folds" / "site_kfold" / "f"
        write_netcdf_atomic(preds[0].sel(site=list(mixed.site.values[40:])), prediction_path(fold_dir, "m"))
        write_netcdf_atomic(preds[0].sel(site=split.info["calibration_sites"]), iv.calibration_path(fold_dir, "m"))
        rows, _ = iv.interval_rows(SUITE, mixed, {"site_kfold": [split]}, Path(d), ["m"], [0], mixed)
    assert rows[0]["scale"] == "residual" and rows[0]["coverage_90"] < 0.7


def test_quantile_forest_reference_covers_known_noise():
    from sklearn.ensemble import RandomForestRegressor

    from kgml.compare.baselines import _forest_quantiles

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, (3000, 2))
    y = np.sin(x[:, 0]) + (0.2 + 0.3 * x[:, 1]) * rng.normal(size=3000)
    rf = RandomForestRegressor(50, min_samples_leaf=5, max_features=1 / 2, random_state=0).fit(x[:2000], y[:2000])
    q = _forest_quantiles(rf, x[:2000], y[:2000], x[2000:], np.array([0.05, 0.5, 0.95]), chunk=300)
    assert (np.diff(q, axis=1) >= 0).all()
    inside = (y[2000:] >= q[:, 0]) & (y[2000:] <= q[:, 2])
    assert 0.85 <= inside.mean() <= 0.95
    wide = x[2000:, 1] > 3  # heteroscedastic: wider where the noise is larger
    assert (q[wide, 2] - q[wide, 0]).mean() > 2 * (q[x[2000:, 1] < 1, 2] - q[x[2000:, 1] < 1, 0]).mean()


@pytest.mark.slow
def test_bench_shift_intervals_quick(tmp_path):
    """The engine with ``intervals``: calibration sites predicted beside the held-out ones and never trained
    on, the default run's directory left alone, interval variables in metrics.nc and a table in metrics.md."""
    from kgml.compare.runner import run_suite

    res = run_suite("synthetic_shift", out=tmp_path, quick=True, progress=False, models=("rf",),
                    fold_kinds=("site_kfold",), intervals=True, figures=True)
    assert res.directory == tmp_path / "synthetic_shift" / "intervals"
    assert not (tmp_path / "synthetic_shift" / "metrics.nc").exists()
    fold_dir = next((res.directory / "folds" / "site_kfold").iterdir())
    with xr.open_dataset(fold_dir / "rf.nc") as held, xr.open_dataset(fold_dir / "rf_calibration.nc") as cal:
        assert not set(held.site.values.astype(str)) & set(cal.site.values.astype(str))
        assert "nee_qrf" in held and held["nee_qrf"].sizes["quantile"] == len(iv.QRF_QUANTILES)
    assert "Calibrated predictive intervals" in res.markdown and "quantile forest" in res.markdown
    with xr.open_dataset(res.directory / "metrics.nc") as m:
        assert set(m.interval_scale.values) == {"residual", "quantile forest"}
        assert float(m.interval_coverage.sel(level=0.5).min()) >= 0.0
    assert (res.directory / "coverage.png").exists()


def _monthly_world(n_sites: int, n_years: int, rho: float, seed: int):
    """Monthly rates (gC m-2 d-1) whose errors are AR(1) in time (correlation ``rho`` month to month)."""
    rng = np.random.default_rng(seed)
    codes = np.arange(2001 * 12, (2001 + n_years) * 12)
    n = codes.size
    truth = 1 + 2 * np.sin(2 * np.pi * (codes % 12) / 12)[None, :] + rng.normal(0, 0.2, (n_sites, 1))
    err = np.zeros((n_sites, n))
    err[:, 0] = rng.normal(size=n_sites)
    for t in range(1, n):
        err[:, t] = rho * err[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=n_sites)
    sites = [f"m{i:03d}" for i in range(n_sites)]
    coords = {"site": sites, "month": codes}
    obs = xr.Dataset({"nee_monthly": (("site", "month"), truth + err, {"units": "gC m-2 d-1"})}, coords=coords)
    pred = xr.Dataset({"nee_monthly": (("site", "month"), truth, {"units": "gC m-2 d-1"})}, coords=coords)
    return obs, pred, err


def test_annual_totals_are_calibrated_with_their_correlation(tmp_path):
    """Annual NEE of held-out sites from monthly predictions whose errors are correlated month to month: the
    interval calibrated on the calibration sites' annual errors covers ~90 %; summing the monthly interval as
    if the months were independent covers far less."""
    obs, pred, err = _monthly_world(150, 6, rho=0.8, seed=5)
    folds = _write_folds(tmp_path, obs, [pred], n_folds=3, fraction=0.4)
    suite = SimpleNamespace(targets=("nee",), resolution="monthly", observed_name=lambda t: t)
    rows, _ = iv.interval_rows(suite, obs, folds, tmp_path, ["model"], [0], obs)
    by = {r["variable"]: r for r in rows}
    step, annual = by["nee"], by["nee_annual"]
    assert annual["scale"] == "residual" and annual["n"] == 150 * 6 and annual["n_sites"] == 150
    assert 0.87 <= step["coverage_90"] <= 0.93, step
    assert 0.86 <= annual["coverage_90"] <= 0.94, annual
    # Independence: half-width of the annual total = q (monthly) × sqrt(Σ days²) — too narrow by ~√((1+ρ)/(1−ρ)).
    import calendar

    days = np.array([calendar.monthrange(int(c // 12), int(c % 12 + 1))[1] for c in obs.month.values], float)
    total_err = (err * days).reshape(150, 6, 12).sum(-1)
    naive = step["q_90"] * np.sqrt((days.reshape(6, 12) ** 2).sum(-1))
    assert (np.abs(total_err) <= naive).mean() < 0.6
    assert annual["width_90"] > 2.0 * naive.mean()


def test_interval_runs_leave_out_fold_kinds_without_held_out_sites():
    from kgml.compare.runner import calibration_folds

    sites = [f"s{i:02d}" for i in range(20)]
    site_fold = _split("f0", sites[:15], [], sites[15:])
    years = Split("y0", "year_blocks", 0, "site", Part(sites, [2001]), Part(), Part(sites, [2002]), Part(),
                  {"heldout": "test"})
    out, notes = calibration_folds({"site_kfold": [site_fold], "leave_years_out": [years]}, 0.3)
    assert list(out) == ["site_kfold"] and "other years" in notes["leave_years_out"]
    assert len(out["site_kfold"][0].info["calibration_sites"]) == 4
    assert out["site_kfold"][0].info["calibration_fraction"] == 0.3
    with pytest.raises(ValueError, match="no fold kind"):
        calibration_folds({"leave_years_out": [years]})


def test_cli_refuses_a_bad_calibration_fraction(tmp_path, capsys):
    from kgml.cli import main

    assert main(["bench", "shift", "--suite", "synthetic_shift", "--quick", "--intervals", "--calibration-fraction",
                 "1.5", "--out", str(tmp_path)]) == 2
    assert "--calibration-fraction must be in (0, 1)" in capsys.readouterr().err
