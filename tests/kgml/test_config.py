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
