"""Calibrated intervals of the benchmark (``kgml bench shift --intervals``): calibration sites carved out of
the training sites, the engine's interval scores on a synthetic world with known noise (the 90 % interval
covers 90 % ± 3 % of held-out site-steps), the quantile-forest reference, and the wiring of the run."""

from __future__ import annotations

import math
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
    # Leave-years-out folds hold the training sites out in other years: calibration years instead (below);
    # a fold whose held-out years differ by site has no whole year to calibrate on.
    per_site = Split("anomalous", "anomalous_year_out", 0, "site", Part(sites[:5], unit_years={u: (2001,) for u in sites[:5]}),
                     Part(), Part(sites[:5], unit_years={u: (2002,) for u in sites[:5]}), Part(), {"heldout": "test"})
    none, why = iv.calibration_split(per_site)
    assert none is None and "differ by site" in why
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


def _write_folds(directory, obs, preds, n_folds, fraction, model="model"):
    sites = list(map(str, obs.site.values))
    folds = []
    for k, test in enumerate(np.array_split(np.asarray(sites), n_folds)):
        train = [s for s in sites if s not in set(test)]
        split, _ = iv.calibration_split(_split(f"fold{k}", train, [], list(test)), fraction=fraction, seed=1)
        cal = split.info["calibration_sites"]
        fold_dir = directory / "folds" / "site_kfold" / split.name
        for sd, p in enumerate(preds):
            write_netcdf_atomic(p.sel(site=list(test)), prediction_path(fold_dir, model, sd))
            write_netcdf_atomic(p.sel(site=cal), iv.calibration_path(fold_dir, model, sd))
        folds.append(split)
    return {"site_kfold": folds}


SUITE = SimpleNamespace(targets=("nee",), resolution="daily", observed_name=lambda t: t)


def test_calibrated_90_percent_interval_covers_90_percent_of_held_out_sites(tmp_path):
    obs, preds = _world(180, 200, 8, seed=11)
    folds = _write_folds(tmp_path, obs, preds, n_folds=3, fraction=0.4)  # 48 calibration sites per fold
    rows, notes = iv.interval_rows(SUITE, obs, folds, tmp_path, ["model"], list(range(8)), obs)
    assert not notes
    by = {r["scale"]: r for r in rows}
    assert set(by) == {"seed spread", "magnitude", "residual"} | {f"{k}{iv.TAIL_SUFFIX}" for k in
                                                                  ("seed spread", "magnitude", "residual")}
    spread, resid = by["seed spread"], by["residual"]
    # the site-tail rule: wider than the pooled 90 % interval, and its p10 site covers about 80 % or more
    tail = by[f"seed spread{iv.TAIL_SUFFIX}"]
    assert tail["coverage_90_p10"] >= 0.77 and tail["width_90"] > spread["width_90"], tail
    assert math.isnan(tail["coverage_50"]) and math.isnan(tail["crps"])
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


def _gross_world(n_sites: int, n_days: int, seed: int):
    """Sites whose GPP and Reco (gC m-2 d-1) differ 10-fold in size and whose NEE error has σ = 0.15 (GPP +
    Reco): a desert beside a cornfield. One prediction (the truth) of NEE, GPP and Reco."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2001-01-01", periods=n_days, freq="D")
    season = np.clip(np.sin(2 * np.pi * (np.arange(n_days) - 80) / 365), 0, None)[None, :]
    size = np.exp(rng.uniform(np.log(0.5), np.log(5.0), (n_sites, 1)))
    gpp = size * 3 * season
    reco = size * (0.8 + 1.5 * season)
    nee = reco - gpp
    obs = nee + 0.15 * (gpp + reco) * rng.normal(size=nee.shape)
    coords = {"site": [f"g{i:03d}" for i in range(n_sites)], "time": time}
    da = lambda v: (("site", "time"), v, {"units": "gC m-2 d-1"})  # noqa: E731
    return (xr.Dataset({"nee": da(obs)}, coords=coords),
            xr.Dataset({"nee": da(nee), "gpp": da(gpp), "reco": da(reco)}, coords=coords))


def test_magnitude_scale_covers_the_large_flux_sites():
    """Errors that grow with the gross fluxes: the residual interval (one width for all) covers the small-flux
    sites always and the large-flux ones far less than 90 %; ŷ ± q (GPP + Reco + β) covers the p10 site much
    better, at the same pooled coverage, and is narrower on average."""
    import tempfile
    from pathlib import Path

    obs, pred = _gross_world(150, 240, seed=2)
    with tempfile.TemporaryDirectory() as d:
        folds = _write_folds(Path(d), obs, [pred], n_folds=3, fraction=0.4)
        rows, _ = iv.interval_rows(SUITE, obs, folds, Path(d), ["model"], [0], obs)
    by = {r["scale"]: r for r in rows if r["variable"] == "nee" and not r["scale"].endswith(iv.TAIL_SUFFIX)}
    assert set(by) == {"magnitude", "residual"}
    mag, resid = by["magnitude"], by["residual"]
    assert 0.87 <= mag["coverage_90"] <= 0.93 and 0.87 <= resid["coverage_90"] <= 0.93, (mag, resid)
    assert mag["coverage_90_p10"] > resid["coverage_90_p10"] + 0.05, (mag, resid)  # measured 0.85 vs 0.75
    assert mag["width_90"] < resid["width_90"] and mag["crps"] < resid["crps"]
    # NEE's magnitude is the sum of the gross fluxes, not |NEE| (which is ~0 where they balance)
    m = iv._magnitude(pred, "nee")["nee"]
    np.testing.assert_allclose(m.values, (pred.gpp + pred.reco).values)
    assert float(iv._magnitude(pred.drop_vars(["gpp", "reco"]), "nee")["nee"].min()) >= 0
    assert iv._magnitude(pred, "crop_yield") is None


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
    by = {r["scale"]: r for r in rows if not r["scale"].endswith(iv.TAIL_SUFFIX)}
    assert set(by) == {"magnitude", "residual"}
    assert by["residual"]["coverage_90"] < 0.7 and by["magnitude"]["coverage_90"] < 0.7


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
        base = {"magnitude", "residual", "quantile forest + conformal"}
        assert set(m.interval_scale.values) == base | {"quantile forest"} | {f"{b}{iv.TAIL_SUFFIX}" for b in base}
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


def test_interval_runs_leave_out_fold_kinds_without_whole_held_out_sites_or_years():
    from kgml.compare.runner import calibration_folds

    sites = [f"s{i:02d}" for i in range(20)]
    site_fold = _split("f0", sites[:15], [], sites[15:])
    years = Split("y0", "year_blocks", 0, "site", Part(sites, range(1990, 2010)), Part(), Part(sites, [2010, 2011]),
                  Part(), {"heldout": "test"})
    per_site = Split("a0", "anomalous_year_out", 0, "site", Part(sites, unit_years={u: (2001,) for u in sites}),
                     Part(), Part(sites, unit_years={u: (2002,) for u in sites}), Part(), {"heldout": "test"})
    out, notes = calibration_folds({"site_kfold": [site_fold], "leave_years_out": [years],
                                    "anomalous_year": [per_site]}, 0.3)
    assert list(out) == ["site_kfold", "leave_years_out"] and "differ by site" in notes["anomalous_year"]
    assert len(out["site_kfold"][0].info["calibration_sites"]) == 4
    assert out["site_kfold"][0].info["calibration_fraction"] == 0.3
    assert len(out["leave_years_out"][0].info["calibration_years"]) == 9  # raised from 0.3 × 20 = 6 to 9
    with pytest.raises(ValueError, match="no fold kind"):
        calibration_folds({"anomalous_year": [per_site]})


def test_cli_refuses_a_bad_calibration_fraction(tmp_path, capsys):
    from kgml.cli import main

    assert main(["bench", "shift", "--suite", "synthetic_shift", "--quick", "--intervals", "--calibration-fraction",
                 "1.5", "--out", str(tmp_path)]) == 2
    assert "--calibration-fraction must be in (0, 1)" in capsys.readouterr().err


# --- year-calibrated intervals (leave-years-out and forecast folds; county and state yield) ---------------


def _year_split(name, units, train, val, test, strategy="year_blocks"):
    return Split(name, strategy, 0, "site", Part(units, train), Part(units if val else (), val or None),
                 Part(units, test), Part(), {"heldout": "test", "fold_kind": "leave_years_out"})


def test_calibration_years_are_whole_training_years_drawn_deterministically():
    units = [f"c{i:02d}" for i in range(6)]
    years = list(range(1980, 2014))
    test, val = years[7:14], [1981, 1999, 2005, 2010]
    train = [y for y in years if y not in set(test) | set(val)]  # 23 years
    split = _year_split("years5_block1", units, train, val, test)
    a, why = iv.calibration_split(split, seed=3)
    b, _ = iv.calibration_split(split, seed=3)
    assert why == "" and a.info["calibration_years"] == b.info["calibration_years"]
    cal = a.info["calibration_years"]
    # 20 % of 23 = 5 years would leave the 90 % quantile infinite (⌈6 × 0.9⌉ = 6 > 5): raised to 9.
    assert len(cal) == iv.MIN_CALIBRATION_YEARS == 9 and set(cal) <= set(train)
    assert not set(cal) & set(a.train.years) and sorted({*a.train.years, *cal}) == train
    assert a.val.years == tuple(val) and set(a.test.years) == set(test) | set(cal)
    assert a.info["heldout_years"] == test and a.info["calibration_by"] == "year"
    assert list(a.train.units) == list(a.test.units) == units  # whole years: every unit of them
    other, _ = iv.calibration_split(_year_split("years5_block2", units, train, val, test), seed=3)
    assert other.info["calibration_years"] != cal  # seeded by the split's name
    assert iv.n_calibration_years(60, 0.2) == 12 and iv.n_calibration_years(10, 0.2) == 6  # keeps 4 for training
    with pytest.raises(ValueError, match="too few"):
        iv.calibration_split(_year_split("tiny", units, [1990, 1991, 1992, 1993, 1994], [], [1995]))


def test_forecast_folds_calibrate_on_the_last_known_years():
    """A forecaster calibrates on the most recent years it could have forecast: the last known years, the
    validation years moved to just before them, the models trained on the earliest; nothing after the origin."""
    units = ["a", "b"]
    split = _year_split("forecast5_from1998", units, list(range(1980, 1997)), [1997, 1998], list(range(1999, 2004)),
                        strategy="forecast_origins")
    a, _ = iv.calibration_split(split, seed=0)
    assert a.info["calibration_years"] == list(range(1990, 1999))
    assert a.val.years == (1988, 1989) and a.train.years == tuple(range(1980, 1988))
    assert max(a.train.years) < min(a.val.years) and max(a.val.years) < min(a.info["calibration_years"])
    assert a.info["heldout_years"] == list(range(1999, 2004)) and a.info["val_years_moved"] == [1988, 1989]


def _county_world(n_units: int, n_years: int, rho: float, seed: int, sd: float = 0.5):
    """(site, year) yields whose errors share a year effect: e = sd (√ρ a_year + √(1 − ρ) b_site,year), so the
    errors of two counties in one year correlate with ρ (one year's weather); each year is one draw."""
    rng = np.random.default_rng(seed)
    years = np.arange(1001, 1001 + n_years)
    units = [f"c{i:02d}" for i in range(n_units)]
    truth = 8 + 0.02 * (years - 1001)[None, :] + rng.normal(0, 1.0, (n_units, 1))
    err = sd * (np.sqrt(rho) * rng.normal(size=(1, n_years)) + np.sqrt(1 - rho) * rng.normal(size=(n_units, n_years)))
    coords = {"site": units, "year": years}
    obs = xr.Dataset({"crop_yield": (("site", "year"), truth + err, {"units": "t ha-1"})}, coords=coords)
    pred = xr.Dataset({"crop_yield": (("site", "year"), truth, {"units": "t ha-1"})}, coords=coords)
    return obs, pred, err


def _write_year_folds(directory, obs, pred, n_folds, fraction):
    years = [int(y) for y in obs.year.values]
    units = list(map(str, obs.site.values))
    folds = []
    for k, test in enumerate(np.array_split(np.asarray(years), n_folds)):
        train = [y for y in years if y not in set(test.tolist())]
        split, _ = iv.calibration_split(_year_split(f"years_block{k}", units, train, [], test.tolist()),
                                        fraction=fraction, seed=1)
        fold_dir = directory / "folds" / "leave_years_out" / split.name
        write_netcdf_atomic(pred.sel(year=split.info["heldout_years"]), prediction_path(fold_dir, "model"))
        write_netcdf_atomic(pred.sel(year=split.info["calibration_years"]), iv.calibration_path(fold_dir, "model"))
        folds.append(split)
    return {"leave_years_out": folds}


ANNUAL = SimpleNamespace(targets=("crop_yield",), resolution="annual", observed_name=lambda t: t)


def test_county_and_state_yield_intervals_carry_the_between_county_correlation(tmp_path):
    """County-year and state (mean of counties) yield intervals on a world whose county errors in one year
    correlate (ρ = 0.6): calibrated by years, both 90 % intervals cover 90 % ± 3 % of held-out years; the
    state interval built as if the counties were independent (the county quantile / √N) covers far less."""
    n_units, n_years = 20, 1200
    obs, pred, err = _county_world(n_units, n_years, rho=0.6, seed=2)
    folds = _write_year_folds(tmp_path, obs, pred, n_folds=6, fraction=0.2)  # 200 calibration years per fold
    rows, notes = iv.interval_rows(ANNUAL, obs, folds, tmp_path, ["model"], [0], obs)
    assert not notes
    by = {r["variable"]: r for r in rows}
    county, state = by["crop_yield"], by["crop_yield_aggregate"]
    assert county["calibrated_by"] == state["calibrated_by"] == "year"
    assert county["n_sites"] == n_units and county["n"] == n_units * n_years
    assert state["n"] == n_years and county["n_calibration_sites"] == 6 * 200
    assert 0.87 <= county["coverage_90"] <= 0.93, county
    assert 0.87 <= state["coverage_90"] <= 0.93, state
    assert 0.47 <= state["coverage_50"] <= 0.53, state
    # Independence: the mean of N county errors would have a quantile q/√N; with ρ = 0.6 the state's error
    # is √(ρ + (1 − ρ)/N) ≈ 0.79 sd, not 0.22 sd: the naive interval is ~3.5× too narrow.
    state_err = err.mean(0)
    naive = county["q_90"] / np.sqrt(n_units)
    assert (np.abs(state_err) <= naive).mean() < 0.4
    assert state["width_90"] > 3.0 * 2 * naive
    md = iv.intervals_markdown(rows, {}, [0])
    assert "crop_yield_aggregate" in md and "| model | residual | 6 | 20 (1200 y) |" in md


def test_year_calibration_weighs_each_year_once():
    """Grouped by year, a year with many units counts as much as one with few: calibrated on years with
    many quiet units and few noisy ones, the quantile follows the years, not the unit-years."""
    from kgml.uncertainty import conformal_quantiles

    quiet = {str(1990 + i): np.full(50, 1.0) for i in range(10)}
    noisy = {str(2000 + i): np.full(1, 5.0) for i in range(10)}
    cal = conformal_quantiles({**quiet, **noisy}, levels=(0.5, 0.9))
    assert cal.q[0.9] == 5.0  # half the years are noisy: the 90 % quantile is theirs
    assert cal.n_sites == 20


def test_unit_aggregate_is_the_area_weighted_mean_of_paired_units():
    coords = {"site": ["a", "b", "c"], "year": [2001, 2002]}
    y = xr.DataArray([[10.0, 8.0], [6.0, np.nan], [4.0, np.nan]], coords=coords, dims=("site", "year"))
    p = y.fillna(0.0) + 1.0
    area = xr.DataArray([1.0, 3.0, 0.0], coords={"site": ["a", "b", "c"]}, dims="site")
    ya, pa, sa, yrs = iv.unit_aggregate(y, p, None, area)
    assert yrs.tolist() == [2001, 2002] and sa is None
    assert ya[0] == pytest.approx((10 + 3 * 6) / 4) and pa[0] == pytest.approx(ya[0] + 1)  # c has no area
    assert np.isnan(ya[1])  # one of three units paired in 2002: not a state yield
    ya, _, _, _ = iv.unit_aggregate(y, p)
    assert ya[0] == pytest.approx(20 / 3)


def test_bench_shift_year_intervals_on_real_counties(tmp_path, dataset_dir):
    """`kgml bench shift --intervals` on a few real Illinois counties, forecast folds: the calibration years
    are predicted apart from the forecast years and never trained on, and the county and state tables come out."""
    from kgml.cli import main
    from kgml.compare.suites import get_suite

    suite = get_suite("il_corn_yield")
    root = dataset_dir(suite.dataset_folder).parent
    argv = ["bench", "shift", "--suite", "il_corn_yield", "--quick", "--data-dir", str(root), "--out", str(tmp_path),
            "--models", "yield_unit_trend", "--fold-kinds", "forecast", "--intervals", "--no-progress",
            "--no-figures", "--no-results"]
    assert main(argv) == 0
    run = tmp_path / "il_corn_yield" / "intervals"
    fold = run / "folds" / "forecast" / "forecast5_from1998"  # --quick: the first origin
    with xr.open_dataset(fold / "yield_unit_trend.nc") as held, \
            xr.open_dataset(fold / "yield_unit_trend_calibration.nc") as cal:
        assert held.year.values.tolist() == list(range(1999, 2004))
        assert cal.year.values.tolist() == list(range(1990, 1999))
    md = (run / "metrics.md").read_text()
    assert "forecast — crop_yield: intervals" in md and "forecast — crop_yield_aggregate: intervals" in md


def test_too_few_calibration_years_are_reported_as_an_unbounded_90_percent_interval(tmp_path):
    """12 years, 2 held out: 10 training years give 6 calibration years (4 kept for training); ⌈7 · 0.9⌉ = 7 > 6,
    so the 90 % interval is ∞ and the table says why."""
    obs, pred, _ = _county_world(5, 12, rho=0.5, seed=0)
    folds = _write_year_folds(tmp_path, obs, pred, n_folds=6, fraction=0.2)
    assert {len(s.info["calibration_years"]) for s in folds["leave_years_out"]} == {6}
    rows, notes = iv.interval_rows(ANNUAL, obs, folds, tmp_path, ["model"], [0], obs)
    assert all(math.isinf(r["width_90"]) for r in rows) and all(math.isfinite(r["width_80"]) for r in rows)
    assert "fewer than 9 calibration years" in notes["leave_years_out"]
    assert "∞" in iv.intervals_markdown(rows, notes, [0])


def test_conformalised_quantile_forest_restores_coverage_of_a_too_narrow_forest(tmp_path):
    """A quantile forest whose intervals are 0.6 of the true noise (it under-covers: ~68 % at 90 %) is
    conformalised on the calibration sites (CQR): its 90 % interval then covers 90 % ± 3 % of the held-out
    site-steps, and is wider than the forest's own by the calibrated margin on both sides."""
    from statistics import NormalDist

    from kgml.uncertainty import cqr_scores

    obs, preds = _world(180, 200, 1, seed=4)
    rng = np.random.default_rng(9)
    sd = np.nanstd(obs["nee"].values - preds[0]["nee"].values, axis=1)[:, None, None]
    qs = np.asarray(iv.QRF_QUANTILES)
    z = np.asarray([NormalDist().inv_cdf(q) for q in qs])[None, None, :]
    centre = preds[0]["nee"].values[:, :, None] + 0.05 * rng.normal(size=(180, 1, 1))
    qrf = xr.DataArray(centre + 0.6 * sd * z, dims=("site", "time", "quantile"),
                       coords={"site": obs.site.values, "time": obs.time.values, "quantile": qs})
    pred = preds[0].assign(nee_qrf=qrf)
    folds = _write_folds(tmp_path, obs, [pred], n_folds=3, fraction=0.4, model="rf")
    rows, _ = iv.interval_rows(SUITE, obs, folds, tmp_path, ["rf"], [0], obs)
    by = {r["scale"]: r for r in rows}
    assert {"quantile forest", "quantile forest + conformal"} <= set(by)
    raw, cqr = by["quantile forest"], by["quantile forest + conformal"]
    assert raw["coverage_90"] < 0.75, raw
    assert 0.87 <= cqr["coverage_90"] <= 0.93 and 0.47 <= cqr["coverage_50"] <= 0.53, cqr
    assert cqr["n_calibration_sites"] == 3 * 48 and cqr["n_sites"] == 180
    assert cqr["q_90"] > 0 and cqr["width_90"] == pytest.approx(raw["width_90"] + 2 * cqr["q_90"], rel=0.02)
    # the score: signed distance outside the interval, negative inside, NaN (never a number) for bad input
    np.testing.assert_allclose(cqr_scores([0.0, 3.0, 1.5], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]), [1.0, 1.0, -0.5])
    assert np.isnan(cqr_scores([np.nan, 1.0, 1.0], [0.0, np.inf, 2.0], [1.0, 2.0, 1.0])).all()


def test_an_exactly_valid_site_tail_rule_meets_p10_by_chance_with_few_calibration_sites():
    """benchmarks/interval_reach.py's Monte Carlo: with 19 calibration sites per fold and 125 held-out sites, a
    rule that is exactly valid (≥ 90 % of new sites covered ≥ 80 % on average) meets 'p10 ≥ 80 %' only about
    half the time; with many calibration sites the share concentrates at 0.9."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "interval_reach", Path(__file__).resolve().parents[2] / "benchmarks" / "interval_reach.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p, mean, sd = mod.valid_rule_chance([19] * 10, [13] * 5 + [12] * 5, draws=3000)
    assert 0.40 <= p <= 0.65 and abs(mean - 0.9) < 0.01 and 0.02 < sd < 0.05, (p, mean, sd)
    p_many, mean_many, sd_many = mod.valid_rule_chance([999] * 10, [13] * 5 + [12] * 5, draws=500)
    assert abs(mean_many - 0.9) < 0.01 and sd_many < sd
