"""The five real-data studies of experiments/ run end to end with ``--quick`` (tiny: a few units, 1-3 years,
hidden 8, 3 training steps) through their own thin run.py scripts, and write what the issue asks for:
metrics with the baselines beside the hybrid, CF netCDF predictions of the held-out units only, figures.
Each study skips when its real data is absent."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from kgml.compare.studies import STUDIES, load_study_config, study_config_path
from kgml.data.splits import load_splits

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "illinois_corn": ("khaki2020_corn_il40_weekly_daymet",),
    "midwest_states": ("agridat_us_corn_soy_state", "fluxnet2015_subset_mm"),
    "fluxnet_regions": ("fluxnet2015_subset_mm",),
    "cosore_soil_respiration": ("cosore", "fluxnet2015_subset_mm"),
    "us_ne1_daily": ("fluxnet2015_subset_dd_us-ne1",),
}
NAMES = sorted(STUDIES)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory, data_dir):
    """Run every study's run.py --quick once (in this process, so imports are shared); name -> output dir or
    the reason it was skipped."""
    out = tmp_path_factory.mktemp("studies")
    done = {}
    for name in NAMES:
        missing = [f for f in FOLDERS[name] if not (data_dir / f).exists()]
        if missing:
            done[name] = f"dataset(s) {missing} not found under {data_dir}"
            continue
        argv = sys.argv
        sys.argv = [str(ROOT / "experiments" / name / "run.py"), "--quick", "--data-dir", str(data_dir),
                    "--out", str(out)]
        try:
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_path(sys.argv[0], run_name="__main__")
        finally:
            sys.argv = argv
        assert exit_info.value.code == 0
        done[name] = out / name
    return done


def _dir(quick_runs, name) -> Path:
    d = quick_runs[name]
    if isinstance(d, str):
        pytest.skip(d)
    return d


def test_every_study_has_a_thin_script_config_and_readme():
    for name in NAMES:
        folder = ROOT / "experiments" / name
        script = (folder / "run.py").read_text()
        assert f'main("{name}")' in script and len(script.splitlines()) < 20, name
        assert (folder / "README.md").exists(), name
        full, s = load_study_config(study_config_path(name))
        quick, sq = load_study_config(study_config_path(name), quick=True)
        assert quick.model.hidden <= 8 and quick.train.steps <= 5, name
        assert full.train.steps > quick.train.steps, name
        assert {"hybrid", "rf"} <= set(sq.models) and "hybrid" in s.models, name
        assert any(m.startswith("process") for m in s.models), name  # the process-only baseline beside the hybrid


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_quick_study_outputs(quick_runs, name):
    d = _dir(quick_runs, name)
    spec = STUDIES[name]
    for f in ("metrics.md", "metrics.json", "summary.json", "splits.json", "config.json", "study.json"):
        assert (d / f).stat().st_size > 0, f
    figures = sorted(d.glob("*.png"))
    assert figures and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures)
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["quick"] is True
    _, s = load_study_config(study_config_path(name), quick=True)
    rows = metrics["rows"]
    models = {r["model"] for r in rows}
    assert set(s.models) <= models, metrics["status"]  # every configured model ran and was scored
    for r in rows:
        assert r["variable"] in spec.targets
        assert r["n_sites"] >= 1 and r["n"] >= 1
        assert math.isfinite(r["rmse_median"]) and r["rmse_median"] >= 0 and math.isfinite(r["rmse_p90"])
        assert r["rmse_p90"] >= r["rmse_median"] - 1e-9
    md = (d / "metrics.md").read_text()
    assert all(f"| {m} |" in md for m in s.models)
    assert "--quick" in md


@pytest.mark.parametrize("name", NAMES)
def test_quick_predictions_are_cf_and_held_out(quick_runs, name):
    d = _dir(quick_runs, name)
    spec = STUDIES[name]
    splits = {sp.name: sp.to_dict() for sp in load_splits(d / "splits.json")}
    files = sorted((d / "predictions").glob("*.nc"))
    assert files
    for path in files:
        with xr.open_dataset(path) as pred:
            assert pred.attrs["Conventions"] == "CF-1.8"
            for key in ("title", "source", "history", "model", "fold_kind"):
                assert pred.attrs.get(key), key
            kind = pred.attrs["fold_kind"]
            folds = [sp for sp in splits.values() if (kind == "years_out") == (sp["strategy"] == "years_out")]
            assert folds
            test_units = {u for sp in folds for u in sp["test"]["units"]}
            train_units = {u for sp in folds for u in sp["train"]["units"]}
            sites = set(pred.site.values.astype(str))
            assert sites <= test_units  # only held-out units are predicted
            if kind == "unit_kfold":
                assert not sites & train_units  # whole units held out
            names = [f"{t}_monthly" if spec.resolution == "monthly" else t for t in spec.targets]
            for v in names:
                assert v in pred, (path.name, v)
                assert pred[v].attrs.get("units"), (path.name, v)
                assert np.isfinite(pred[v].values).any(), (path.name, v)
            if kind == "years_out":
                years = {y for sp in folds for y in sp["test"]["years"]}
                if "year" in pred.dims and spec.resolution == "annual":
                    ok = np.isfinite(pred["crop_yield"].values).any(axis=0)
                    assert set(pred.year.values[ok].tolist()) <= years
                elif "time" in pred.dims:
                    v = pred[names[0]].values
                    assert set(pred.time.dt.year.values[np.isfinite(v).any(axis=0)].tolist()) <= years


def test_study_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[study]\nmodles = ["hybrid"]\n')
    with pytest.raises(ValueError, match="modles"):
        load_study_config(bad)
    bad.write_text('name = "x"\n[study]\nmodels = ["hybird"]\n')
    with pytest.raises(ValueError, match="hybird"):
        load_study_config(bad)
