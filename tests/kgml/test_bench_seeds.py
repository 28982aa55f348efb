"""Issue 20 in the distribution-shift benchmark: the FLUXCOM scale decomposition of every suite (identity on
a series with a planted anomaly, and the component scores it reports), seed ensembles, and the ablation
switch of ``kgml bench shift`` on the tiny synthetic suite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from kgml import evaluation as ev
from kgml.compare import runner


def _monthly(values: np.ndarray, name: str = "nee_monthly", first_code: int = 2001 * 12) -> xr.Dataset:
    sites = [f"S{i}" for i in range(values.shape[0])]
    return xr.Dataset({name: (("site", "month"), values, {"units": "gC m-2 d-1"})},
                      coords={"site": sites, "month": first_code + np.arange(values.shape[1])})


@pytest.fixture(scope="module")
def planted():
    """Four sites × five years of monthly NEE: site means, a seasonal cycle, noise, and a planted drought
    anomaly (+2 gC m-2 d-1 in June–August of 2003 at site S1); two months missing at S2."""
    rng = np.random.default_rng(20)
    n_sites, n_years = 4, 5
    t = np.arange(12 * n_years)
    month = t % 12 + 1
    year = 2001 + t // 12
    obs = (rng.normal(0.0, 1.0, (n_sites, 1)) - 2.0 * np.sin(2 * np.pi * (t - 3) / 12)
           + rng.normal(0.0, 0.05, (n_sites, t.size)))
    bump = (year == 2003) & np.isin(month, (6, 7, 8))
    obs[1, bump] += 2.0
    obs[2, 30:32] = np.nan
    return obs, bump, month, year


def test_decomposition_identity_with_planted_anomaly(planted):
    obs, bump, month, year = planted
    o = _monthly(obs)
    d = ev.decompose(o, o, "nee")
    rebuilt = (d.site_mean_obs.values[:, None] + d.seasonal_obs.values[:, month - 1] + d.anomaly_obs.values)
    paired = np.isfinite(obs)
    np.testing.assert_allclose(rebuilt[paired], obs[paired], rtol=0, atol=1e-12)  # every paired step
    assert np.isnan(d.anomaly_obs.values[~paired]).all()
    # The planted +2 sits in the anomalies of S1 (less the fifth the mean seasonal cycle absorbs), not elsewhere.
    a = d.anomaly_obs.values[1]
    assert np.mean(a[bump]) == pytest.approx(2.0 * (1 - 1 / 5), abs=0.25)
    assert abs(np.mean(a[~bump & np.isin(month, (6, 7, 8))])) < 0.6
    # ... and makes 2003 the outlying year of S1's inter-annual variability (3 of 12 months × 1.6).
    iav = d.iav_obs.sel(site="S1")
    assert int(iav.idxmax()) == 2003 and float(iav.sel(iav_year=2003)) == pytest.approx(0.4, abs=0.1)


def test_benchmark_decomposition_separates_cycle_from_anomaly(planted):
    """`decomposition_stats` (the benchmark's columns): a climatology (each site's own mean seasonal cycle)
    scores the site means and the seasonal cycle perfectly but not the anomalies; a model that saw the
    planted drought scores the anomalies and IAV."""
    obs, bump, month, year = planted
    o = _monthly(obs)
    d = ev.decompose(o, o, "nee")
    clim = d.site_mean_obs.values[:, None] + d.seasonal_obs.values[:, month - 1]
    st = runner.decomposition_stats(_monthly(clim), o, "nee", "nee", "monthly")
    assert st["site_mean_r2"] == pytest.approx(1.0) and st["seasonal_nse"] == pytest.approx(1.0)
    assert st["anomaly_nse"] < 0.05 and st["iav_nse"] < 0.05
    drought = clim.copy()
    drought[1, bump] += 2.0 * (1 - 1 / 5)
    st2 = runner.decomposition_stats(_monthly(drought), o, "nee", "nee", "monthly")
    assert np.isnan(st["anomaly_r2"])  # a constant (zero) anomaly has no correlation: NaN, not 0
    assert st2["anomaly_nse"] > st["anomaly_nse"] + 0.2 and st2["anomaly_r2"] > 0.5 and st2["iav_r2"] > 0.5
    assert set(st) == set(runner.DECOMPOSITION_STATS)
    # At annual resolution there is no seasonal cycle: NaN, not a made-up score.
    ann = xr.Dataset({"y": (("site", "year"), obs[:, :5])}, coords={"site": o.site.values, "year": np.arange(2001, 2006)})
    st3 = runner.decomposition_stats(ann, ann, "y", "y", "annual")
    assert np.isnan(st3["seasonal_r2"]) and st3["anomaly_nse"] == pytest.approx(1.0)


def test_seed_mean_averages_and_keeps_attributes():
    a = _monthly(np.array([[1.0, 2.0, np.nan]]))
    b = _monthly(np.array([[3.0, 2.0, np.nan]]))
    a.attrs["learned"] = "vmax"
    m = runner.seed_mean([a, b])
    np.testing.assert_allclose(m.nee_monthly.values, [[2.0, 2.0, np.nan]])
    assert m.attrs["learned"] == "vmax" and m.attrs["n_seeds"] == 2
    assert runner.prediction_path("f", "rf", 0).name == "rf.nc"
    assert runner.prediction_path("f", "rf", 2).name == "rf_seed2.nc"


@pytest.mark.slow
def test_ablation_switch_on_tiny_suite(tmp_path, capsys):
    """``kgml bench shift --ablate --seeds 2`` on the quick synthetic suite: every ablation slot runs with both
    seeds, the tables and metrics.nc carry the decomposition, the seed spread and the Δ of each component,
    and the Δ equals the difference of the two models' per-seed scores; a rerun trains nothing."""
    from kgml.cli import main

    out = tmp_path / "bench"
    args = ["bench", "shift", "--suite", "synthetic_shift", "--quick", "--ablate", "--seeds", "2", "--out", str(out),
            "--fold-kinds", "site_kfold", "--no-figures", "--no-progress", "--no-results"]
    assert main(args) == 0
    md = capsys.readouterr().out
    fold = next((out / "synthetic_shift" / "folds" / "site_kfold").iterdir())
    for m in runner.ablation_models():
        assert (fold / f"{m}.nc").exists() and (fold / f"{m}_seed1.nc").exists(), m
    assert "Scale decomposition and seed spread" in md and "Ablations of the global hybrid" in md
    for comp in runner.ABLATIONS:
        assert f"| {comp} (" in md, comp
    with xr.open_dataset(out / "synthetic_shift" / "metrics.nc") as m:
        assert m.sizes["seed"] == 2 and "anomaly_r2" in m and "iav_nse" in m
        assert int(m["n_seeds"].sel(model="hybrid_global", fold_kind="site_kfold", variable="nee")) == 2
        seed_r2 = m["seed_r2_median"].sel(fold_kind="site_kfold", variable="nee")
        assert np.isfinite(seed_r2.sel(model="hybrid_global").values).all()
        # paired by seed over the seeds both scored (a tiny network may predict a constant: R² NaN)
        diff = (seed_r2.sel(model="hybrid_global") - seed_r2.sel(model="neural")).values
        assert np.isfinite(diff).any()
        want = np.nanmean(diff)
        got = float(m["ablation_delta"].sel(component="physics layer", ablation_fold_kind="site_kfold",
                                            quantity="r2_median"))
        assert got == pytest.approx(float(want), abs=1e-9)
        assert str(m["ablation_without"].sel(component="physics layer").values) == "neural"
    stamps = {p: p.stat().st_mtime_ns for p in fold.glob("*.nc")}
    assert main(args) == 0  # resumed: every (fold, model, seed) is there
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert main(["bench", "shift", "--suite", "synthetic_shift", "--quick", "--seeds", "0", "--out", str(out)]) == 2


def test_summary_prints_decomposition_and_seed_range(tmp_path):
    """`kgml bench summary` copies the component scores and the per-seed range of metrics.nc."""
    from kgml.compare.suites import get_suite
    from kgml.compare.summary import summary_markdown
    from kgml.io import write_netcdf_atomic

    suite = get_suite("synthetic_shift")
    rows = []
    for k, var in enumerate(suite.targets):
        st = {s: 0.1 * (k + 1) for s in runner._STATS}
        st.update({s: 0.01 * (i + 1) + k for i, s in enumerate(runner.DECOMPOSITION_STATS)})
        seed_values = {s: [math.nan] * 2 for s in runner.SEED_STATS}
        seed_values["r2_median"] = [0.41, 0.47]
        rows.append({"model": "hybrid_global", "fold_kind": "site_kfold", "variable": var, **st, "n_seeds": 2,
                     "seed_values": seed_values})
    ds = runner.metrics_dataset(suite, rows, {}, {}, {}, seeds=[0, 1])
    write_netcdf_atomic(ds, tmp_path / "synthetic_shift" / "metrics.nc")
    md = summary_markdown(tmp_path)
    row = [line for line in md.splitlines() if line.startswith("| hybrid_global | 2 |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[2] == "0.41–0.47"  # NEE R² median over the two seeds
    # NEE site mean R² / NSE, then seasonal: the values written above
    assert cells[5] == "0.01 / 0.02" and cells[6] == "0.03 / 0.04" and cells[8] == "0.07 / 0.08"


def test_a_run_of_another_seed_alone_draws_its_figures(tmp_path):
    """A bench run of seed 1 only (no seed-0 files) scores and draws the figures from seed 1's predictions
    (it used to look for seed 0's and fail at the end of the run)."""
    from kgml.cli import main

    out = tmp_path / "bench"
    args = ["bench", "shift", "--suite", "synthetic_shift", "--quick", "--seed", "1", "--models", "rf",
            "--fold-kinds", "site_kfold", "--out", str(out), "--no-progress", "--no-results"]
    assert main(args) == 0
    fold = next((out / "synthetic_shift" / "folds" / "site_kfold").iterdir())
    assert (fold / "rf_seed1.nc").exists() and not (fold / "rf.nc").exists()
    assert list((out / "synthetic_shift").glob("obs_vs_pred_*.png"))
