"""The distribution-shift benchmark (kgml.compare): region detection recovers a planted shift, frozen folds are
consistent with the data, every suite runs end to end in its tiny (--quick) form, and runs resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

from kgml.compare import regions_detect as rd
from kgml.compare.runner import MODELS, run_suite
from kgml.compare.suites import SUITES, fold_units, get_suite, load_folds, restrict_split

TEST_MODELS = ("rf", "gbm", "lstm", "process_global", "process_per_region", "hybrid_global", "hybrid_per_region",
               "hybrid_finetune", "hybrid_region_aware", "hybrid_pretrained")

# --- region detection -------------------------------------------------------------------------------------


def test_adjusted_rand_index_identities():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert rd.adjusted_rand_index(a, ["x", "x", "y", "y", "z", "z"]) == pytest.approx(1.0)  # relabelled
    assert rd.adjusted_rand_index(a, [0, 1, 0, 1, 0, 1]) < 0.0  # crossing partition: worse than chance
    # by hand (Hubert & Arabie 1985): Σ C(n_ij, 2) = 2, rows 6, columns 3, pairs 15 → (2 − 1.2)/(4.5 − 1.2)
    assert rd.adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3, abs=1e-12)


def test_choose_k_finds_separated_blobs_and_assignment_follows_location():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    truth = np.repeat([0, 1, 2], 10)
    x = centres[truth] + rng.normal(size=(30, 2))
    fit = rd.choose_k(x, k_max=6, seed=0)
    assert fit["k"] == 3
    assert rd.adjusted_rand_index(fit["labels"], truth) > 0.9
    # Unstructured points: no k reaches the silhouette threshold → one region.
    assert rd.choose_k(rng.uniform(size=(30, 2)), seed=0, min_silhouette=0.9)["k"] == 1
    # Held-out sites take the label of the training sites near them.
    loc = np.concatenate([rng.normal(0, 0.1, (5, 2)), rng.normal(5, 0.1, (5, 2))])
    got = rd.assign_sites(loc, ["A"] * 5 + ["B"] * 5, np.array([[0.1, -0.1], [4.9, 5.2]]))
    assert got.tolist() == ["A", "B"]


@pytest.fixture(scope="module")
def twin_states():
    """Two synthetic states with the same location and climate; only B has a planted shift of the
    heterotrophic respiration rate — so only the driver–flux relationship can tell them apart."""
    from kgml import synthetic as syn

    a = syn.StateClimate("A", 42.0, -93.6, 0.0, 1.0)
    b = syn.StateClimate("B", 42.0, -93.6, 0.0, 1.0)
    # Same block shape as the quick synthetic suite (6 sites × 1 year): one simulation compile for both.
    spec = syn.CorpusSpec(states=(a, b), vegetation=("maize",), sites_per_block=6, years=1,
                          state_shift={"B": {"rref_rh": 1.0}}, seed=0)
    return syn.make_corpus(spec)


@pytest.mark.slow
def test_region_detection_recovers_planted_shift(twin_states):
    ds = twin_states
    sites = ds.site.values.astype(str)
    sig = rd.site_signatures("cycle", ds=ds, targets=("nee", "reco"))
    det = rd.detect_regions(sig, sites, rd.location_features(ds), signature="cycle")
    assert det.k == 2
    assert rd.adjusted_rand_index(det.of(sites), ds.state.values) >= 0.8
    # Without the shift the same detection finds no such split (the ARI collapses).
    shuffled = sig[np.random.default_rng(0).permutation(len(sites))]
    det0 = rd.detect_regions(shuffled, sites, rd.location_features(ds))
    assert rd.adjusted_rand_index(det0.of(sites), ds.state.values) < 0.5
    assert rd.DetectedRegions.from_dict(json.loads(json.dumps(det.to_dict()))).labels == det.labels


# --- frozen folds ------------------------------------------------------------------------------------------


def test_synthetic_folds_frozen_and_consistent():
    suite = get_suite("synthetic_shift")
    splits = load_folds(suite)
    # The synthetic corpus's site IDs are deterministic: 3 states × 8 maize sites.
    expected = sorted(f"{s}-maize-{i:03d}" for s in ("IA", "IL", "NE") for i in range(8))
    assert fold_units(splits) == expected
    kinds = {}
    for s in splits:
        held = s.part(s.info["heldout"]).units
        assert not set(held) & set(s.train.units) and not set(held) & set(s.val.units)
        kinds.setdefault(s.info["fold_kind"], []).extend(held)
    for kind, held in kinds.items():  # every site is held out exactly once per fold kind
        assert sorted(held) == expected, kind
    ilo = next(s for s in splits if s.info.get("held_out_region") == "IL")
    assert all(u.startswith("IL-") for u in ilo.ood.units)
    small = restrict_split(splits[0], expected[:9])
    assert small is None or set(small.train.units) <= set(expected[:9])


# --- end to end --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = out / "RESULTS.md"
    results.write_text("# Results\n\n## Other section\n\ntext\n")
    # Every hybrid scope and the baselines whose compilation is cheap; the neural slot (one more compilation)
    # runs in the full benchmark and is tested in tests/kgml/test_neural.py.
    res = run_suite("synthetic_shift", out=out, quick=True, progress=False, results_md=results, models=TEST_MODELS)
    return out, res, results


@pytest.mark.slow
def test_synthetic_shift_quick_end_to_end(synthetic_run):
    out, res, results = synthetic_run
    d = out / "synthetic_shift"
    assert (d / "metrics.md").exists() and (d / "metrics.nc").exists()
    for stem in ("obs_vs_pred_site_kfold", "skill_cdf_site_kfold", "skill_by_region_site_kfold", "detected_regions"):
        png = d / f"{stem}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG", stem
    md = res.markdown
    for m in TEST_MODELS:  # every slot run has a row in every table
        assert f"| {m} |" in md
    with xr.open_dataset(d / "metrics.nc") as m:
        assert set(m.fold_kind.values) == {"site_kfold", "leave_state_out"}
        ran = [x for x in MODELS if res.status.get(x) == "ok"]
        assert set(ran) == set(TEST_MODELS)
        r2 = m["r2_median"].sel(model=ran, variable="nee").values
        assert np.isfinite(r2).all()
        assert float(m["carbon_balance_residual"].sel(model="hybrid_global", fold_kind="site_kfold",
                                                       variable="nee")) < 1e-4  # NEE = Reco − GPP exactly
        assert m["rmse_median"].attrs["units"] == "g m-2 d-1" and m["r2_median"].attrs["units"] == "1"
        assert "site_r2" in m and m["site_r2"].dims[-1] == "site"
    from tests.kgml.cf_check import assert_cf_units

    assert_cf_units(d / "metrics.nc")  # units on every metric, Conventions, history
    # The region-aware scope recorded its detected regions, with their agreement with the true states.
    assert res.detected and all("ari_all" in e for e in res.detected.values())
    # A dated block in the distribution-shift section, after the other sections.
    text = results.read_text()
    assert text.index("## Other section") < text.index("## Distribution shift") < text.index("### synthetic_shift")


def test_resume_skips_finished_pairs(synthetic_run):
    out, res, _ = synthetic_run
    folds = sorted((out / "synthetic_shift" / "folds").glob("*/*"))
    done = {p: p.stat().st_mtime_ns for p in sorted(folds[0].glob("*.nc"))}
    assert done
    redo = folds[0] / "rf.nc"
    redo.unlink()
    again = run_suite("synthetic_shift", out=out, quick=True, progress=False, models=("rf", "hybrid_global"),
                      figures=False)
    assert redo.exists()  # the missing pair was recomputed ...
    for p, t in done.items():  # ... and every finished pair was left alone
        if p != redo:
            assert p.stat().st_mtime_ns == t, p.name
    assert again.status["rf"] == "ok"


def test_a_run_with_fewer_models_or_fold_kinds_keeps_the_folders_models(synthetic_run, tmp_path, capsys):
    """A second run in the folder with ``models=("rf",)`` trains nothing and its table still holds every model the
    folder's metrics.nc scored (from their saved predictions, named on stderr); a run of one fold kind says which
    fold kinds its table leaves out (in a copy of the folder, so the other tests keep theirs)."""
    import shutil

    out, _, _ = synthetic_run
    copy = tmp_path / "copy"
    shutil.copytree(out / "synthetic_shift", copy / "synthetic_shift")
    d = copy / "synthetic_shift"
    with xr.open_dataset(d / "metrics.nc") as m:
        before = {str(x) for x in m.model.values}
    assert set(TEST_MODELS) <= before
    stamps = {p: p.stat().st_mtime_ns for p in d.glob("folds/*/*/*.nc")}
    capsys.readouterr()
    again = run_suite("synthetic_shift", out=copy, quick=True, progress=False, models=("rf",), figures=False)
    err = capsys.readouterr().err
    assert "scoring " in err and "nothing is trained" in err and "hybrid_global" in err
    with xr.open_dataset(d / "metrics.nc") as m:
        assert {str(x) for x in m.model.values} == before
        assert set(m.fold_kind.values) == {"site_kfold", "leave_state_out"}
    assert all(f"| {m} |" in again.markdown for m in TEST_MODELS)
    assert {p: p.stat().st_mtime_ns for p in d.glob("folds/*/*/*.nc")} == stamps  # nothing retrained
    run_suite("synthetic_shift", out=copy, quick=True, progress=False, models=("rf",), figures=False,
              fold_kinds=("site_kfold",))
    err = capsys.readouterr().err
    assert "fold kinds leave_state_out too" in err and "--fold-kinds" in err


def test_pretrained_slot_cached_once_and_fine_tuned_from_it(synthetic_run, monkeypatch):
    """hybrid_pretrained: one synthetic pretraining per suite (on disk, reused by every fold and by a resumed
    run, not retrained), and each fold's fine-tuning starts from exactly its weights."""
    import equinox as eqx
    import jax

    from kgml.compare import runner
    from kgml.experiment import load_run

    out, res, _ = synthetic_run
    d = out / "synthetic_shift"
    pre = d / "pretrained"
    history = json.loads((pre / "history.json").read_text())
    assert (pre / "done").exists() and history["history"][0]["step"] == 0
    folds = sorted(d.glob("folds/*/*/hybrid_pretrained.nc"))
    assert len(folds) == 2
    for f in folds:
        with xr.open_dataset(f) as p:
            assert str(pre) in p.attrs["init"]
    stamp = (pre / "checkpoint" / "best.eqx").stat().st_mtime_ns
    folds[0].unlink()
    inits = []
    original = runner.FoldContext.train

    def spy(self, cfg, split=None, *, init=None, directory=None, ds=None):
        inits.append(init)
        return original(self, cfg, split, init=init, directory=directory, ds=ds)

    monkeypatch.setattr(runner.FoldContext, "train", spy)
    # (rf and hybrid_global are there and skipped; they keep their rows in metrics.nc for the summary test)
    again = run_suite("synthetic_shift", out=out, quick=True, progress=False,
                      models=("rf", "hybrid_global", "hybrid_pretrained"), figures=False)
    assert again.status["hybrid_pretrained"] == "ok" and folds[0].exists()
    assert (pre / "checkpoint" / "best.eqx").stat().st_mtime_ns == stamp  # reused, not retrained
    assert len(inits) == 1 and inits[0] is not None
    start = jax.tree_util.tree_leaves(eqx.filter(inits[0].model, eqx.is_inexact_array))
    saved = jax.tree_util.tree_leaves(eqx.filter(load_run(pre).model, eqx.is_inexact_array))
    assert len(start) == len(saved) and all(np.array_equal(a, b) for a, b in zip(start, saved, strict=True))
    # ... with the suite's own task and loss scales, and the pretraining's input normaliser.
    assert inits[0].prepared.task.daily == tuple(get_suite("synthetic_shift").targets)
    assert inits[0].prepared.normaliser.to_dict() == load_run(pre).prepared.normaliser.to_dict()


@pytest.mark.parametrize("name", ["fluxnet_mm", "cosore_daily", "il_corn_yield", "state_yield"])
def test_real_suite_quick_end_to_end(name, dataset_dir, tmp_path):
    """The command on a few real sites and one fold of two kinds (random forest: the data, the frozen folds,
    scoring and outputs of the suite; the hybrid slots are exercised on synthetic_shift above): outputs
    written, and the sites loaded by the names in the frozen folds are the data's sites."""
    from kgml.cli import main
    from kgml.compare.suites import SuiteUnavailable

    suite = SUITES[name]
    root = dataset_dir(suite.dataset_folder).parent
    try:
        frozen = fold_units(load_folds(suite))
    except FileNotFoundError as err:
        pytest.skip(str(err))
    try:
        from kgml.data import assemble  # noqa: F401
    except ImportError as err:
        pytest.skip(f"kgml.data.assemble not available: {err}")
    argv = ["bench", "shift", "--suite", name, "--quick", "--data-dir", os.fspath(root), "--out", os.fspath(tmp_path),
            "--models", "rf", "--no-progress", "--no-figures"]
    try:
        code = main(argv)
    except SuiteUnavailable as err:  # pragma: no cover - depends on the data builders present
        pytest.skip(str(err))
    if code == 2:
        pytest.skip(f"suite {name} unavailable here")
    assert code == 0
    md = (tmp_path / name / "metrics.md").read_text()
    assert "| rf | " in md
    with xr.open_dataset(tmp_path / name / "metrics.nc") as m:
        assert np.isfinite(m["rmse_median"].sel(model="rf").values).all()
        scored = set(m.site.values.astype(str))
    assert scored and scored <= set(frozen)
    heldout = [p.parent.name for p in (tmp_path / name / "folds").glob("*/*/rf.nc")]
    assert len(heldout) == 2 or len(suite.folds) == 1


def test_summary_table_copies_the_metrics_file(synthetic_run, capsys):
    """`kgml bench summary` prints, per suite, the medians and tails stored in metrics.nc (bold = best median)
    and names the file it lacks."""
    from kgml.cli import main
    from kgml.compare.summary import summary_markdown

    out, _, _ = synthetic_run
    md = summary_markdown(out, metrics_by_variable={"nee": ["r2", "rmse"]})
    with xr.open_dataset(out / "synthetic_shift" / "metrics.nc") as m:
        sel = dict(model="hybrid_global", fold_kind="site_kfold", variable="nee")
        r2, tail = float(m["r2_median"].sel(sel)), float(m["r2_p10"].sel(sel))
        rmse = m["rmse_median"].sel(fold_kind="site_kfold", variable="nee")
        best_rmse_model = str(rmse.model[int(rmse.argmin())].values)
    row = next(line for line in md.splitlines() if line.startswith("| hybrid_global |"))
    assert f"{r2:.2f}" in row.split("|")[2] and f"{tail:.2f}" in row.split("|")[2]
    best_row = next(line for line in md.splitlines() if line.startswith(f"| {best_rmse_model} |"))
    assert "**" in best_row.split("|")[3]  # the lowest RMSE median is bold
    assert main(["bench", "summary", "--out", str(out), "--metric", "nee=r2,rmse"]) == 0
    assert "### synthetic_shift" in capsys.readouterr().out
    assert main(["bench", "summary", "--out", str(out), "--suites", "cosore_daily"]) == 2
    assert main(["bench", "summary", "--out", str(out), "--metric", "nee=mae"]) == 2


def test_nee_only_suite_trains_the_physics_on_nee_and_the_told_reference_on_every_flux():
    """fluxnet_mm_nee_only: the hybrid's and process model's config hold NEE as the only target, the
    same-size network (no physics to reach GPP/Reco otherwise) is told every flux; all three are scored."""
    from kgml.compare.runner import base_config

    suite = get_suite("fluxnet_mm_nee_only")
    assert suite.targets == ("nee", "gpp", "reco") and suite.train_targets == ("nee",)
    assert base_config(suite).data.monthly_targets == ("nee",)
    assert base_config(suite, told=True).data.monthly_targets == ("nee", "gpp", "reco")
    assert base_config(get_suite("fluxnet_mm")).data.monthly_targets == ("nee", "gpp", "reco")
    # the variant runs on fluxnet_mm's frozen folds
    from kgml.compare.suites import folds_path

    assert folds_path(suite) == folds_path(get_suite("fluxnet_mm"))


@pytest.mark.slow
@pytest.mark.realdata
def test_cosore_srdb_suite_gives_every_site_a_finite_prior_level(dataset_dir):
    suite = get_suite("cosore_daily_srdb")
    root = dataset_dir("cosore").parent
    if not (root / "srdb" / "srdb-data.csv").exists():
        pytest.skip(f"SRDB not found under {root}")
    ds = suite.load(root, True, None)
    level = ds["rs_srdb"].values
    assert "rs_srdb" in suite.static and ds["rs_srdb"].attrs["units"] == "g m-2 d-1"
    assert np.all(np.isfinite(level)) and np.all((level > 0.1) & (level < 15.0))


def test_anomalous_year_folds_end_to_end(tmp_path, dataset_dir):
    """fluxnet_mm's per-site held-out years through the engine: the scored predictions hold only each test
    site's held-out year, every year is kept beside them, the naive site climatology runs there and is
    'not available' where whole sites are held out, and metrics.md has the table against it."""
    from kgml.compare.runner import all_years_path, prediction_path

    data = dataset_dir("fluxnet2015_subset_mm").parent
    res = run_suite("fluxnet_mm", out=tmp_path, data_dir=data, quick=True, progress=False, figures=False,
                    models=("rf", "site_climatology"), fold_kinds=("driest_year_out",))
    split = next(s for s in load_folds(get_suite("fluxnet_mm")) if s.info["fold_kind"] == "driest_year_out")
    fold_dir = tmp_path / "fluxnet_mm" / "folds" / "driest_year_out" / split.name
    with xr.open_dataset(prediction_path(fold_dir, "rf")) as p, xr.open_dataset(all_years_path(fold_dir, "rf")) as a:
        assert p.site.size >= 1
        for site in p.site.values.astype(str):
            (year,) = split.test.years_of(site)
            finite = np.isfinite(p.nee_monthly.sel(site=site).values)
            years = p.month.values // 12
            assert finite.any() and (years[finite] == year).all()
            assert (np.isfinite(a.nee_monthly.sel(site=site).values) & (years != year)).any()
    assert "Skill against the site climatology" in res.markdown
    assert res.status["site_climatology"] == "ok"
    res2 = run_suite("fluxnet_mm", out=tmp_path / "k", data_dir=data, quick=True, progress=False, figures=False,
                     models=("site_climatology", "hybrid_site_embedding"), fold_kinds=("site_kfold",))
    assert res2.status["site_climatology"].startswith("not available")
    assert res2.status["hybrid_site_embedding"].startswith("not available")




def test_years_within_sites_folds_end_to_end(tmp_path, dataset_dir):
    """fluxnet_mm's known-site, unseen-year folds through the engine: each fold's scored predictions hold only
    its test years at each tested tower, every year is predicted beside them, and metrics.md has the table
    against the tower's own climatology."""
    from kgml.compare.runner import all_years_path, prediction_path

    data = dataset_dir("fluxnet2015_subset_mm").parent
    res = run_suite("fluxnet_mm", out=tmp_path, data_dir=data, quick=True, progress=False, figures=False,
                    models=("rf", "site_climatology"), fold_kinds=("years_within_sites",))
    assert res.status == {"rf": "ok", "site_climatology": "ok"}
    splits = [s for s in load_folds(get_suite("fluxnet_mm")) if s.info["fold_kind"] == "years_within_sites"]
    assert len(splits) == 5
    fold_dir = tmp_path / "fluxnet_mm" / "folds" / "years_within_sites" / splits[0].name
    with xr.open_dataset(prediction_path(fold_dir, "rf")) as p, xr.open_dataset(all_years_path(fold_dir, "rf")) as a:
        assert p.site.size >= 1
        for site in p.site.values.astype(str):
            ys = splits[0].test.years_of(site)
            finite = np.isfinite(p.nee_monthly.sel(site=site).values)
            years = p.month.values // 12
            assert finite.any() and np.isin(years[finite], ys).all()
            assert (np.isfinite(a.nee_monthly.sel(site=site).values) & ~np.isin(years, ys)).any()
    assert "Skill against the site climatology" in res.markdown
    assert "| measurement-noise ceiling (the true flux) |" in res.markdown
    assert "predicts each year's anomaly with the opposite sign" in res.markdown

def test_departures_of_several_year_folds_come_from_each_folds_own_model():
    """With several folds of per-site held-out years, a held-out year's departure must come from the model of
    the fold that held it out: every other fold's model trained on that year. Planted: each fold's model
    reproduces its training years exactly and knows nothing of its test year; scored fold by fold its
    departures carry no skill, while one combined set of every-year predictions (the first fold's model for
    all years) would score the other folds' years as known."""
    from types import SimpleNamespace

    from kgml import evaluation as ev
    from kgml.compare.runner import _combine, _reference_scores
    from kgml.data.splits import Part

    rng = np.random.default_rng(0)
    n_sites, years = 30, np.arange(2001, 2006)
    months = np.arange(years[0] * 12, (years[-1] + 1) * 12)
    sites = [f"S{i}" for i in range(n_sites)]
    obs_v = 3 * np.sin(2 * np.pi * months / 12)[None] + rng.normal(size=(n_sites, months.size))

    def ds(v):
        return xr.Dataset({"nee_monthly": (("site", "month"), v)}, coords={"site": sites, "month": months})

    held, every, scored = [], [], []
    for y in years[:2]:
        test = months // 12 == y
        clim = np.stack([obs_v[:, ~test & (months % 12 == m)].mean(axis=1) for m in range(12)], axis=1)
        guess = clim[:, months % 12] + rng.normal(scale=0.1, size=obs_v.shape)
        every.append(ds(np.where(test, guess, obs_v)))
        scored.append(ds(np.where(test, guess, np.nan)))
        held.append(Part(sites, unit_years={u: [int(y)] for u in sites}))
    suite = SimpleNamespace(observed_name=lambda t: t, resolution="monthly")
    ref = _combine(scored)
    got = _reference_scores(_combine(scored), every, suite, "nee", ds(obs_v), ref, held)
    assert abs(got["departure_corr"]) < 0.2 and got["n_site_years"] == 2 * n_sites and got["n_sites"] == n_sites
    leaky = ev.departure_skill(_combine(every), ds(obs_v), "nee",
                               test_years={u: [2001, 2002] for u in sites}, resolution="monthly")
    assert leaky["departure_corr"] > 0.5

def _fold_context(where, suite_name: str, data, kind: str, index: int = 0):
    """The quick `FoldContext` of one frozen fold (``index`` of fold kind ``kind``) of a suite, seed 0."""
    from kgml.compare.runner import FoldContext, base_config, prepare_suite

    suite = get_suite(suite_name)
    ds, folds = prepare_suite(suite, data_dir=data, quick=True, fold_kinds=(kind,))
    split = folds[kind][index]
    return FoldContext(suite, ds, split, where / "folds" / kind / split.name, base_config(suite, quick=True, seed=0),
                       True, "")


def _slot_and_run(ctx, slot: str):
    """(held-out prediction, trained run) of a model slot on a fold context: the run is caught on its way out of
    ``ctx.train``."""
    from kgml.compare.runner import SLOTS

    trained = {}
    original = ctx.train

    def spy(cfg, *a, **kw):
        trained["run"] = original(cfg, *a, **kw)
        return trained["run"]

    ctx.train = spy
    pred = SLOTS[slot](ctx)
    return pred, trained["run"]


@pytest.mark.slow
def test_site_embedding_slot_learns_one_embedding_per_training_site(tmp_path, dataset_dir):
    """hybrid_site_embedding on held-out years: its location encoder has one embedding row per training site,
    the held-out sites among them, and its predictions of their held-out year are finite."""
    from kgml.compare.runner import FoldContext, base_config, prepare_suite

    suite = get_suite("fluxnet_mm")
    data = dataset_dir("fluxnet2015_subset_mm").parent
    ds, folds = prepare_suite(suite, data_dir=data, quick=True, fold_kinds=("driest_year_out",))
    split = folds["driest_year_out"][0]
    cfg = base_config(suite, quick=True, seed=0)
    ctx = FoldContext(suite, ds, split, tmp_path / "a" / "folds" / "k" / split.name, cfg, True, "")
    pred, run = _slot_and_run(ctx, "hybrid_site_embedding")
    assert set(run.prepared.region_map) == set(split.train.units)
    assert set(split.test.units) <= set(run.prepared.region_map)
    assert run.model.location.region_embedding.weight.shape[0] == len(split.train.units)
    assert np.isfinite(pred["nee"].values).any()


@pytest.mark.slow
@pytest.mark.parametrize("slot,mode", [("hybrid_observed_water", "observed"), ("hybrid_observed_rew", "observed_rew")])
def test_observed_water_slot_drives_the_physics_with_measured_swc(tmp_path, dataset_dir, slot, mode):
    """The observed-soil-water slots on fluxnet_mm_soil (quick): the trained physics reads the towers' SWC (or
    its REW), its held-out predictions are finite, and on fluxnet_mm (no SWC) the slot is not available."""
    from kgml.compare.runner import SLOTS, NotAvailable

    data = dataset_dir("fluxnet2015_subset_mm").parent
    ctx = _fold_context(tmp_path / "a", "fluxnet_mm_soil", data, "site_kfold")
    pred, run = _slot_and_run(ctx, slot)
    assert run.config.model.soil_water == mode and run.model.process.soil_water == mode
    assert np.isfinite(pred["nee"].values).any()
    with pytest.raises(NotAvailable, match="swc"):
        SLOTS[slot](_fold_context(tmp_path / "b", "fluxnet_mm", data, "site_kfold"))


@pytest.mark.slow
def test_global_sensitivity_slot_learns_one_temperature_sensitivity(tmp_path, dataset_dir):
    """hybrid_global_sensitivity on fluxnet_mm (quick): E0 of Rh and Q10 of Ra are single learned values (not
    predicted per site, moved from their defaults by training), the base rates stay per site, and the held-out
    predictions carry that one E0."""
    from kgml.compare.runner import SENSITIVITY_PARAMS

    ctx = _fold_context(tmp_path / "a", "fluxnet_mm", dataset_dir("fluxnet2015_subset_mm").parent, "site_kfold")
    pred, run = _slot_and_run(ctx, "hybrid_global_sensitivity")
    assert set(run.config.model.global_params) == set(SENSITIVITY_PARAMS)
    assert not set(SENSITIVITY_PARAMS) & set(run.model.learned) and "rref_rh" in run.model.learned
    specs = {s.name: s for s in run.model.process.parameter_specs}
    for name in SENSITIVITY_PARAMS:
        u = float(run.model.global_unconstrained[name])
        assert u != pytest.approx(float(specs[name].default_unconstrained), abs=1e-6)  # trained
    e0 = pred["theta_e0_rh"].values
    want = float(specs["e0_rh"].to_physical(run.model.global_unconstrained["e0_rh"]))
    np.testing.assert_allclose(e0[np.isfinite(e0)], want, rtol=1e-5)  # every held-out site: the one global value
    assert np.isfinite(pred["nee"].values).any()


@pytest.mark.slow
def test_water_phenology_slot_trains_the_water_limited_gsi(tmp_path, dataset_dir):
    """hybrid_water_phenology on fluxnet_mm (quick): the trained physics' phenology is water-limited and learns
    its two water parameters per site; held-out predictions finite; a crop suite says not available."""
    from kgml.compare.runner import SLOTS, FoldContext, NotAvailable

    ctx = _fold_context(tmp_path / "a", "fluxnet_mm", dataset_dir("fluxnet2015_subset_mm").parent, "site_kfold")
    ds, split = ctx.ds, ctx.split
    pred, run = _slot_and_run(ctx, "hybrid_water_phenology")
    assert run.config.model.phenology == "gsi_water" and run.model.process.phenology.water_limited
    assert {"gsi_water_low", "gsi_water_span"} <= set(run.model.learned)
    assert np.isfinite(pred["nee"].values).any()
    crop = get_suite("il_corn_yield")
    with pytest.raises(NotAvailable, match="natural-vegetation"):
        SLOTS["hybrid_water_phenology"](FoldContext(crop, ds, split, tmp_path / "c", ctx.config, True, ""))


@pytest.mark.slow
@pytest.mark.parametrize("slot", ["hybrid_trend_site_embedding", "hybrid_trend_site_rate",
                                  "hybrid_trend_site_level_rate", "hybrid_trend_site_level"])
def test_trend_site_slots_learn_per_county_embedding_and_rate(tmp_path, dataset_dir, slot):
    """The trended hybrid with a learned embedding per training county (and, for hybrid_trend_site_rate, a rate
    per county) on a forecasting fold of the IL corn suite: one embedding row (and one rate) per training county,
    every held-out county among them, the rates inside their bounds, finite forecasts."""
    from kgml.compare.runner import FoldContext, base_config, prepare_suite
    from process_models.crop import TECHNOLOGY_SPECS

    suite = get_suite("il_corn_yield")
    data = dataset_dir(suite.dataset_folder).parent
    ds, folds = prepare_suite(suite, data_dir=data, quick=True, fold_kinds=("forecast",))
    split = folds["forecast"][-1]
    ctx = FoldContext(suite, ds, split, tmp_path / "a" / "folds" / "k" / split.name, base_config(suite, quick=True,
                                                                                                  seed=0), True, "")
    pred, run = _slot_and_run(ctx, slot)
    n = len(split.train.units)
    assert set(run.prepared.region_map) == set(split.train.units) >= set(split.test.units)
    assert run.model.location.region_embedding.weight.shape[0] == n
    assert run.model.technology is not None
    tech = run.model.technology
    assert (tech.site_level is not None) == slot.startswith("hybrid_trend_site_level")
    if slot == "hybrid_trend_site_level":
        assert tech.site_level.shape == (n,) and tech.site_rate is None
        assert np.ptp([float(tech.level(np.int32(i))) for i in range(n)]) > 0  # trained: levels moved apart
    elif slot != "hybrid_trend_site_embedding":
        assert run.model.technology.site_rate.shape == (n,)
        spec = {s.name: s for s in TECHNOLOGY_SPECS}["tech_rate"]
        rates = np.array([float(run.model.technology.theta(np.int32(i))["tech_rate"]) for i in range(n)])
        assert np.all((rates >= spec.lower) & (rates <= spec.upper))
        assert np.ptp(rates) > 0  # trained: the counties' rates moved apart
    else:
        assert run.model.technology.site_rate is None
    assert np.isfinite(pred["crop_yield"].values).any()
    # the validation years' RMSE (variants are compared there, not on the forecast years)
    assert 0 < pred.attrs["val_rmse_crop_yield"] < 10


def test_memory_suite_gives_every_model_the_antecedent_drivers(dataset_dir):
    """fluxnet_mm_memory: the antecedent drivers are features of every model, masked like the drivers they come
    from, and the suite runs on fluxnet_mm's frozen folds (both fold kinds)."""
    from kgml.compare.suites import folds_path

    suite = get_suite("fluxnet_mm_memory")
    ds = suite.load(dataset_dir("fluxnet2015_subset_mm").parent, True, ["US-Ne1", "AT-Neu"])
    for name in ("precip_rel_90d", "precip_rel_365d", "tair_90d"):
        assert name in suite.features and name in ds
        np.testing.assert_array_equal(np.isfinite(ds[name].values), np.isfinite(ds["precip"].values))
    assert folds_path(suite) == folds_path(get_suite("fluxnet_mm"))
    assert {k.name for k in suite.folds} == {"site_kfold", "years_within_sites"}



def test_smooth_suite_keeps_every_monthly_mean_of_fluxnet_mm(dataset_dir):
    """fluxnet_mm_smooth: the same towers, targets and masks as fluxnet_mm, the smoothed drivers' monthly means
    equal the held ones (so models reading monthly means see the same inputs), precipitation is unchanged, and
    the suite runs on fluxnet_mm's frozen folds."""
    from kgml.compare.suites import folds_path
    from kgml.evaluation import to_monthly

    data = dataset_dir("fluxnet2015_subset_mm").parent
    sites = ["US-Ne1", "AT-Neu"]
    held = get_suite("fluxnet_mm").load(data, True, sites)
    suite = get_suite("fluxnet_mm_smooth")
    smooth = suite.load(data, True, sites)
    np.testing.assert_array_equal(smooth.nee_monthly.values, held.nee_monthly.values)
    np.testing.assert_array_equal(smooth.precip.values, held.precip.values)
    for name in ("tair", "sw_in", "vpd", "tsoil", "tmin"):
        np.testing.assert_array_equal(np.isfinite(smooth[name].values), np.isfinite(held[name].values))
        assert not np.allclose(smooth[name].values, held[name].values, equal_nan=True)
        a = to_monthly(smooth.astype("float64"), [name])[f"{name}_monthly"].values
        b = to_monthly(held.astype("float64"), [name])[f"{name}_monthly"].values
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, equal_nan=True)
    assert float(smooth.sw_in.min()) >= 0 and float(smooth.vpd.min()) >= 0
    assert folds_path(suite) == folds_path(get_suite("fluxnet_mm"))

def test_noise_ceilings_of_a_fold_kind_are_those_of_its_held_out_towers(dataset_dir):
    """The ceiling row of the decomposition is `kgml.evaluation.noise_ceiling` of the held-out towers' observed
    NEE with FLUXNET2015's published errors; a suite without published errors has none."""
    from kgml import evaluation as ev
    from kgml.compare.runner import noise_ceilings, prepare_suite
    from kgml.data.assemble import fluxnet_monthly_uncertainty

    data = dataset_dir("fluxnet2015_subset_mm").parent
    suite = get_suite("fluxnet_mm")
    ds, folds = prepare_suite(suite, data_dir=data, quick=True, fold_kinds=("site_kfold",))
    got = noise_ceilings(suite, ds, folds, data)[("site_kfold", "nee")]
    held = sorted(set(folds["site_kfold"][0].test.units) & set(ds.site.values.astype(str)))
    u = fluxnet_monthly_uncertainty(data, sites=held)
    want = ev.noise_ceiling(ds, "nee", u.nee_randunc, coherent=u.nee_ustar_sd, sites=held)
    assert got["anomaly"] == pytest.approx(want["anomaly"]) and got["iav"] == pytest.approx(want["iav"])
    assert 0.5 < got["anomaly"] < 1.0 and got["n_sites"] == len(held)
    assert noise_ceilings(get_suite("synthetic_shift"), ds, folds, data) == {}
