"""A researcher's first day (issue 17): from the shipped configs and the real data to a trained and evaluated
run on the command line — `kgml data build`, builder sources in configs, `kgml train --help` documenting
every key, and `kgml evaluate RUN` reproducing the run's own held-out scores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import xarray as xr

from kgml.cli import main
from kgml.config import (
    DataConfig,
    ExperimentConfig,
    config_reference,
    load_config,
    save_config,
)
from kgml.data import assemble
from kgml.data.splits import load_splits

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.toml"))


def test_train_help_documents_every_config_key(capsys):
    ref = config_reference()
    for section in ("[data]", "[data.corpus]", "[model]", "[loss]", "[train]"):
        assert section in ref
    for cls in (ExperimentConfig, DataConfig):
        for f in dataclasses.fields(cls):
            if f.name not in ("data", "model", "loss", "train", "corpus"):
                assert f"    {f.name} = " in ref, f.name
    assert "keyword options of a builder" in ref  # the key comments are shown
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "configs/tower_warmwinter.toml" in out and "    data_dir = " in out


def test_shipped_train_configs_are_accepted():
    assert {p.stem for p in SHIPPED} >= {"tower_warmwinter", "chamber_cosore", "yield_il_corn"}
    targets = set()
    for path in SHIPPED:
        cfg = load_config(path)
        name = assemble.builder_name(cfg.data.source)
        assert name is not None, path
        assert set(cfg.data.options) <= set(assemble.builder_options(name)), path
        targets |= set(cfg.data.daily_targets) | ({"crop_yield"} if cfg.data.yield_target else set())
    assert {"nee", "rsoil", "crop_yield"} <= targets


def test_builder_names_and_options_are_checked():
    assert assemble.builder_name("kgml.data.assemble.il_corn") == "il_corn"
    assert assemble.builder_name("runs/data.nc") is None
    with pytest.raises(ValueError, match="unknown dataset builder"):
        assemble.builder_name("kgml.data.assemble.nope")
    with pytest.raises(ValueError, match="has no option 'site'.*'sites'"):
        assemble.build("fluxnet_daily", None, site=["US-Ne1"])


@pytest.mark.realdata
def test_data_build_writes_the_kgml_layout(data_dir, tmp_path, capsys):
    out = tmp_path / "il.nc"
    assert main(["data", "build", "il_corn", "--data-dir", str(data_dir), "--out", str(out),
                 "--option", "years=[2012, 2013]", "--option", 'counties=["17001", "17019"]']) == 0
    assert "wrote" in capsys.readouterr().out
    with xr.open_dataset(out) as ds:
        assert ds.sizes["site"] == 2 and {"site", "time", "year"} <= set(ds.dims)
        assert "crop_yield" in ds and "history" in ds.attrs and ds.attrs["Conventions"].startswith("CF")
        again = assemble.il_corn(data_dir, counties=["17001", "17019"], years=[2012, 2013])
        xr.testing.assert_allclose(ds.crop_yield, again.crop_yield)
    from tests.kgml.cf_check import assert_cf_units

    assert_cf_units(out)


@pytest.mark.realdata
@pytest.mark.slow
def test_train_then_evaluate_reproduces_the_held_out_scores(data_dir, tmp_path, capsys):
    """The shipped tower config (shortened): `kgml train` then `kgml evaluate RUN` gives exactly the run's
    own held-out rows, and reports the training sites apart, marked."""
    cfg = load_config(REPO / "configs" / "tower_warmwinter.toml")
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir)),
        model=dataclasses.replace(cfg.model, hidden=4, location_dim=4, embed_dim=4, head_hidden=4),
        train=dataclasses.replace(cfg.train, steps=3, batch_size=4, eval_every=1))
    path = save_config(cfg, tmp_path / "tower.json")
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-figures"]) == 0
    assert main(["evaluate", str(run)]) == 0
    trained = json.loads((run / "metrics.json").read_text())["rows"]
    evaluated = json.loads((run / "evaluate" / "metrics.json").read_text())
    held_out = [{k: v for k, v in r.items() if k not in ("part", "dataset")} for r in evaluated if r["part"] == "test"]
    assert held_out == trained and len(trained) > 0
    parts = {r["part"] for r in evaluated}
    assert parts == {"test", "val", "train"}
    split = load_splits(run / "splits.json")[0]
    for part in ("train", "test"):
        assert {r["key"] for r in evaluated if r["part"] == part and r["scope"] == "site"} == set(split.part(part).units)
    md = (run / "evaluate" / "metrics.md").read_text()
    assert "held-out (test) sites" in md and "training sites (not held out)" in md


@pytest.mark.realdata
@pytest.mark.slow
def test_evaluate_a_synthetic_run_on_the_yield_layouts_of_the_suites(data_dir, tmp_path, capsys):
    """A run trained on the synthetic corpus, evaluated under a data directory, reads the county-yield
    layout through its builder (as the il_corn suite does) and reports those sites as not used in training."""
    if not (data_dir / "khaki2020_corn_il40_weekly_daymet").exists():
        pytest.skip("khaki2020_corn_il40_weekly_daymet not in the data directory")
    from kgml.config import CorpusConfig, ModelConfig, TrainConfig

    cfg = ExperimentConfig(
        name="tiny-maize",
        data=DataConfig(corpus=CorpusConfig(sites_per_block=2, years=1), features=("tair", "sw_in", "vpd", "precip"),
                        daily_targets=("nee",), yield_target=True),
        model=ModelConfig(hidden=4, location_dim=4, embed_dim=4, head_hidden=4),
        train=TrainConfig(steps=2, batch_size=2, eval_every=1))
    path = save_config(cfg, tmp_path / "tiny.json")
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-figures"]) == 0
    only = tmp_path / "data"
    only.mkdir()
    (only / "khaki2020_corn_il40_weekly_daymet").symlink_to(data_dir / "khaki2020_corn_il40_weekly_daymet")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="soil_carbon"):
        assert main(["evaluate", str(run), "--data-dir", str(only)]) == 0
    assert "il_corn: sites not used in training (40 sites)" in capsys.readouterr().out
    rows = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert {r["dataset"] for r in rows} == {"il_corn"} and {r["part"] for r in rows} == {"unseen"}
    assert any(r["variable"] == "crop_yield" and r["scope"] == "all" and r["n"] > 1000 for r in rows)
