"""Typed configs: TOML in, JSON round trip, unknown keys and wrong types rejected naming the section."""

from __future__ import annotations

import dataclasses

import pytest

from kgml.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    merge_config,
    save_config,
)

TOML = """
name = "iowa-maize"
seed = 3
grouping = "per_region"

[data]
vegetation = "maize"
features = ["tair", "sw_in"]
n_context = 2

[data.corpus]
sites_per_block = 5
state_shift = { IL = { rref_rh = 0.4 } }

[model]
hidden = 16
global_params = ["q10_rh"]
fixed = { e0_rh = 300.0 }

[loss]
weights = { rsoil = 0.1 }

[train]
steps = 50
learning_rate = 0.01
trainable = ["parameter_head"]
"""


def test_toml_to_typed_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    cfg = load_config(path)
    assert cfg.name == "iowa-maize" and cfg.grouping == "per_region"
    assert cfg.data.features == ("tair", "sw_in")  # lists become tuples
    assert cfg.data.corpus.state_shift == {"IL": {"rref_rh": 0.4}}
    assert cfg.model.fixed == {"e0_rh": 300.0}
    assert cfg.train.learning_rate == 0.01 and cfg.train.trainable == ("parameter_head",)
    assert cfg.train.batch_size == ExperimentConfig().train.batch_size  # defaults fill the rest
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_json_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    cfg = load_config(path)
    saved = save_config(cfg, tmp_path / "config.json")
    assert load_config(saved) == cfg
    assert config_from_dict(config_to_dict(ExperimentConfig())) == ExperimentConfig()


@pytest.mark.parametrize(
    ("data", "section", "key"),
    [
        ({"lr": 0.1}, "experiment", "lr"),
        ({"train": {"lr": 0.1}}, "train", "lr"),
        ({"data": {"corpus": {"n_sites": 3}}}, "data.corpus", "n_sites"),
        ({"model": {"hiden": 3}}, "model", "hiden"),
    ],
)
def test_unknown_keys_name_key_and_section(data, section, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert f"'{key}'" in str(err.value) and f"[{section}]" in str(err.value)


def test_unknown_key_error_names_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nstep = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*'step'.*\[train\]"):
        load_config(path)


@pytest.mark.parametrize(
    "data",
    [
        {"train": {"steps": 1.5}},
        {"train": {"steps": True}},
        {"model": {"attention": "yes"}},
        {"data": {"features": "tair"}},
        {"train": "fast"},
        {"grouping": "by_state"},
        {"model": {"encoder": "transformer"}},
        {"model": {"residual": ["nee"]}},
    ],
)
def test_wrong_values_rejected(data):
    with pytest.raises(ConfigError):
        config_from_dict(data)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"train": {"learning_rate": -0.01}}, "[train] learning_rate"),
        ({"train": {"learning_rate": float("nan")}}, "[train] learning_rate"),
        ({"train": {"learning_rate": float("inf")}}, "[train] learning_rate"),
        ({"train": {"steps": 0}}, "[train] steps"),
        ({"train": {"steps": -5}}, "[train] steps"),
        ({"train": {"batch_size": -4}}, "[train] batch_size"),
        ({"train": {"eval_every": 0}}, "[train] eval_every"),
        ({"train": {"checkpoint_every": 0}}, "[train] checkpoint_every"),
        ({"train": {"patience": 0}}, "[train] patience"),
        ({"train": {"clip_norm": 0.0}}, "[train] clip_norm"),
        ({"data": {"test_fraction": -0.3}}, "[data] test_fraction"),
        ({"data": {"val_fraction": 1.0}}, "[data] val_fraction"),
        ({"data": {"window_days": 0}}, "[data] window_days"),
        ({"data": {"corpus": {"years": 0}}}, "[data.corpus] years"),
        ({"model": {"hidden": 0}}, "[model] hidden"),
        ({"loss": {"weights": {"nee": -1.0}}}, "[loss] weights.nee"),
        ({"loss": {"prior_sd": 0.0}}, "[loss] prior_sd"),
    ],
)
def test_out_of_range_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith(key + " must be"), str(info.value)


def test_bad_value_in_a_file_is_one_line_exit_2(tmp_path, capsys):
    from kgml.cli import main

    path = tmp_path / "bad.toml"
    path.write_text("[train]\nlearning_rate = nan\n")
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgml train: error: ") and "bad.toml: [train] learning_rate must be" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_merge_delta_for_fine_tuning():
    base = ExperimentConfig()
    tuned = merge_config(base, {"train": {"steps": 7, "trainable": ["parameter_head"]}, "data": {"max_train_sites": 2}})
    assert tuned.train.steps == 7 and tuned.train.trainable == ("parameter_head",)
    assert tuned.data.max_train_sites == 2
    assert tuned.model == base.model
    with pytest.raises(ConfigError, match=r"'stepz'.*\[train\]"):
        merge_config(base, {"train": {"stepz": 7}})
