"""Typed, frozen experiment configuration: TOML in (`load_config`), JSON saved with every run
(`save_config`); unknown keys are errors that name the key and its section.

A fine-tuning run is the pretraining run's config plus a delta (`merge_config`), like neuralhydrology.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from kgml.io import write_text_atomic

__all__ = [
    "ConfigError",
    "CorpusConfig",
    "DataConfig",
    "ExperimentConfig",
    "LossConfig",
    "MODEL_KINDS",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "config_reference",
    "config_reference_markdown",
    "config_to_dict",
    "load_config",
    "merge_config",
    "save_config",
    "table_from_dict",
]


class ConfigError(ValueError):
    """A configuration key or value that is not accepted; the message names the section and the key."""


def _check(section: str, obj, rules: Mapping[str, str]) -> None:
    """Value checks of a config section; ``rules``: key → ``"positive"`` (finite, > 0), ``"non_negative"``
    (finite, >= 0), ``"fraction"`` ([0, 1)), ``"unit_interval"`` ([0, 1]). The error names the key."""
    wants = {"positive": "a finite number > 0", "non_negative": "a finite number >= 0",
             "fraction": "a fraction in [0, 1)", "unit_interval": "a fraction in [0, 1]"}
    for key, rule in rules.items():
        value = getattr(obj, key)
        values = value.items() if isinstance(value, Mapping) else [(None, value)]
        for sub, v in values:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and {
                "positive": v > 0, "non_negative": v >= 0, "fraction": 0 <= v < 1, "unit_interval": 0 <= v <= 1,
            }[rule]
            if not ok:
                name = key if sub is None else f"{key}.{sub}"
                raise ConfigError(f"[{section}] {name} must be {wants[rule]}, got {v!r}")


@dataclass(frozen=True)
class CorpusConfig:
    """Synthetic corpus (`kgml.synthetic.CorpusSpec`): sites per state × vegetation block, years, prior."""

    states: tuple[str, ...] = ("IA", "IL", "NE")
    vegetation: tuple[str, ...] = ("maize",)
    sites_per_block: int = 8
    years: int = 2
    prior_sd: float = 0.3
    varying: tuple[str, ...] | None = None  #: None: `kgml.synthetic.SITE_VARYING`
    state_shift: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    covariate_params: tuple[str, ...] = ("rref_rh",)
    noise_scale: float = 1.0  #: multiplies every σ of `kgml.synthetic.NoiseModel`
    gaps: str = "default"  #: "default" (`GapModel()`) or "none"
    tower_fraction: float = 1.0
    monthly_fraction: float = 0.0
    soil_respiration: str = "lloyd_taylor"
    seed: int = 0

    def __post_init__(self):
        _check("data.corpus", self, {"sites_per_block": "positive", "years": "positive", "prior_sd": "non_negative",
                                     "noise_scale": "non_negative", "tower_fraction": "unit_interval",
                                     "monthly_fraction": "unit_interval"})


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how they become windows.

    ``source``: ``"synthetic"`` (built from ``corpus``), the name of a real-data builder of
    `kgml.data.assemble.BUILDERS` (``"fluxnet_daily"``, ``"fluxnet_monthly"``, ``"cosore_daily"``, ``"il_corn"``,
    ``"state_yield"``; also with the ``kgml.data.assemble.`` prefix) read from ``data_dir`` (empty:
    ``$KGML_DATA`` or ../shared/data) with the builder's keyword ``options`` (e.g. ``sites``, ``datasets``,
    ``counties``, ``years``), or the path of a (site, time) netCDF dataset in the kgml schema (``kgml data
    build NAME --out FILE.nc`` writes one). ``vegetation`` selects sites with that ``vegetation`` coordinate (and the process model).
    Sites are split whole: ``test_fraction`` / ``val_fraction`` of the sites (seeded), or the sites listed
    in ``test_sites``; ``region`` is the site coordinate used for region embeddings and per-region runs.
    """

    source: str = "synthetic"
    data_dir: str = ""  #: real-data directory of a builder ``source`` (empty: $KGML_DATA or ../shared/data)
    options: Mapping[str, Any] = field(default_factory=dict)  #: keyword options of a builder ``source``
    corpus: CorpusConfig = CorpusConfig()
    vegetation: str = "maize"
    features: tuple[str, ...] = ("tair", "sw_in", "vpd", "precip", "tsoil")
    static: tuple[str, ...] = ("soil_carbon",)
    daily_targets: tuple[str, ...] = ("nee", "gpp", "reco", "rsoil")
    monthly_targets: tuple[str, ...] = ()
    yield_target: bool = True
    window_days: int = 365
    region: str = "state"
    regions: tuple[str, ...] = ()  #: restrict to these regions (empty: all)
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    test_sites: tuple[str, ...] = ()
    n_context: int = 0  #: context sites per site for site attention (0: none)
    max_train_sites: int = 0  #: keep at most this many training sites (0: all); few-site fine-tuning

    def __post_init__(self):
        _check("data", self, {"window_days": "positive", "val_fraction": "fraction", "test_fraction": "fraction",
                              "n_context": "non_negative", "max_train_sites": "non_negative"})


#: Model kinds (``[model] kind``): the hybrid, the pure-neural comparison (`kgml.models.neural.NeuralModel`) and
#: the process model with one calibrated parameter set (`kgml.models.hybrid.ProcessModel`).
MODEL_KINDS = ("hybrid", "neural", "process")


@dataclass(frozen=True)
class ModelConfig:
    """The model: encoder, location encoding, site attention, heads, and the physics layer.

    ``kind``: ``"hybrid"`` (network → process-model parameters → process model), ``"neural"`` (the same
    encoder, location encoding and site attention; heads predict the fluxes and the yield directly, no
    physics; the physics keys below only size it: its heads get ``neural_width``, or with 0 the width that
    makes its parameter count that of the hybrid of this config) or ``"process"`` (no network: ``learned``
    and ``global_params`` are calibrated as one global set; ``residual`` and ``time_varying`` must be empty).
    """

    kind: str = "hybrid"
    neural_width: int = 0  #: head width of kind "neural" (0: as many parameters as the hybrid)
    encoder: str = "gru"
    hidden: int = 32
    attention: bool = False
    location: bool = True
    location_dim: int = 16
    n_scales: int = 4
    region_embedding: bool = False
    region_dim: int = 4
    site_attention: bool = False
    n_heads: int = 2
    embed_dim: int = 32
    head_hidden: int = 32
    use_summary: bool = True  #: the encoder's window summary joins the site embedding
    learned: tuple[str, ...] | None = None  #: None: every parameter of the process model
    global_params: tuple[str, ...] = ()  #: learned but shared by all sites (e.g. q10_rh)
    time_varying: tuple[str, ...] = ()
    fixed: Mapping[str, float] = field(default_factory=dict)  #: physical values of non-learned parameters
    residual: tuple[str, ...] = ()  #: residual corrections of these fluxes (gpp, reco, rsoil)
    residual_scale: float = 1.0  #: bound of the residual (gC m-2 d-1)
    soil_respiration: str = "lloyd_taylor"
    #: soil water of the natural-vegetation physics: "bucket" (its own), "observed" (the dataset's measured
    #: ``swc``) or "observed_rew" (its relative extractable water ``swc_rew``) drives GPP water stress and the Rh
    #: moisture response where measured (`kgml.synthetic.build_model`)
    soil_water: str = "bucket"
    #: phenology of the natural-vegetation physics: "gsi" (Jolly et al. 2005), "gsi_water" (also limited by
    #: the bucket's soil water, `process_models.phenology.WaterLimitedGSI`) or "gsi_evergreen" (the evergreen share
    #: of the canopy, the data's ``evergreen`` variable, keeps its leaves: `process_models.phenology.EvergreenGSI`)
    phenology: str = "gsi"
    #: photosynthesis of the natural-vegetation physics: "lue" (MOD17 light-use efficiency, linear in absorbed
    #: light), "farquhar_c3" (big-leaf Farquhar C3, saturating in light: `process_models.photosynthesis.FarquharC3`)
    #: "pmodel" (`process_models.photosynthesis.PModel`) or "pmodel_acclimated" (the P-model whose evergreen share,
    #: the data's ``evergreen`` variable, is down-regulated in the cold season: `...photosynthesis.AcclimatedPModel`)
    photosynthesis: str = "lue"
    #: bounded technology trend on the crop's yield potential (`kgml.models.hybrid.TechnologyTrend`; yield targets)
    technology_trend: bool = False
    technology_reference_year: float = 2000.0  #: year at which the technology factor is 1
    #: the trend's rate learned per site (one per region of ``data.region``, inside the rate's bounds; hybrid only)
    technology_site_rate: bool = False
    #: a bounded yield level per site (one per region of ``data.region``; `kgml.models.hybrid.TechnologyTrend`)
    technology_site_level: bool = False

    def __post_init__(self):
        _check("model", self, {k: "positive" for k in ("hidden", "location_dim", "n_scales", "region_dim", "n_heads",
                                                        "embed_dim", "head_hidden", "residual_scale")})
        if self.soil_water not in ("bucket", "observed", "observed_rew"):
            raise ConfigError(f"[model] soil_water must be 'bucket', 'observed' or 'observed_rew', got {self.soil_water!r}")
        if self.phenology not in ("gsi", "gsi_water", "gsi_evergreen"):
            raise ConfigError(f"[model] phenology must be 'gsi', 'gsi_water' or 'gsi_evergreen', got {self.phenology!r}")
        if self.photosynthesis not in ("lue", "farquhar_c3", "pmodel", "pmodel_acclimated"):
            raise ConfigError("[model] photosynthesis must be 'lue', 'farquhar_c3', 'pmodel' or 'pmodel_acclimated', "
                              f"got {self.photosynthesis!r}")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the data losses (per target; 1 when absent) and of the soft constraints."""

    weights: Mapping[str, float] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)  #: per-target error scale; default: data spread
    prior: float = 1e-3
    prior_sd: float = 1.0
    residual: float = 1e-2
    monotone: float = 1.0
    yield_consistency: float = 1.0
    # Training batches pair each window with another year of the same site (`kgml.training.paired_sampler`)
    # and the error of the year-to-year difference of every monthly target is added with this weight.
    anomaly: float = 0.0  #: weight of the anomaly-aware term (kgml.models.losses.paired_anomaly_mse); 0 = off

    def __post_init__(self):
        _check("loss", self, {"weights": "non_negative", "scales": "positive", "prior": "non_negative",
                              "prior_sd": "positive", "residual": "non_negative", "monotone": "non_negative",
                              "yield_consistency": "non_negative", "anomaly": "non_negative"})


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: AdamW with warm-up + cosine (or constant) schedule and global-norm clipping; early
    stopping on the validation loss; ``trainable``: top-level model parts to train (empty: all)."""

    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    eval_every: int = 25
    patience: int = 6
    trainable: tuple[str, ...] = ()
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self):
        _check("train", self, {"steps": "positive", "batch_size": "positive", "learning_rate": "positive",
                               "warmup_steps": "non_negative", "weight_decay": "non_negative", "clip_norm": "positive",
                               "eval_every": "positive", "patience": "positive", "checkpoint_every": "positive"})


@dataclass(frozen=True)
class ExperimentConfig:
    """A run: data, model, loss and training, plus how sites are grouped (``"global"``: one model;
    ``"per_region"``: one model per value of ``data.region``) and an optional pretrained run to start from."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    grouping: str = "global"
    init_from: str = ""

    def __post_init__(self):
        if self.grouping not in ("global", "per_region"):
            raise ConfigError(f"[experiment] grouping must be 'global' or 'per_region', got {self.grouping!r}")
        if self.model.kind not in MODEL_KINDS:
            raise ConfigError(f"[model] kind must be one of {', '.join(map(repr, MODEL_KINDS))}, "
                              f"got {self.model.kind!r}")
        if self.model.kind == "process" and (self.model.residual or self.model.time_varying):
            raise ConfigError("[model] kind = 'process' has no network: residual and time_varying must be empty "
                              f"(got residual={list(self.model.residual)}, time_varying={list(self.model.time_varying)})")
        if self.model.neural_width < 0:
            raise ConfigError(f"[model] neural_width must be >= 0 (0: match the hybrid), got {self.model.neural_width}")
        if self.model.encoder not in ("gru", "lstm"):
            raise ConfigError(f"[model] encoder must be 'gru' or 'lstm', got {self.model.encoder!r}")
        if self.train.schedule not in ("cosine", "constant"):
            raise ConfigError(f"[train] schedule must be 'cosine' or 'constant', got {self.train.schedule!r}")
        bad = set(self.model.residual) - {"gpp", "reco", "rsoil"}
        if bad:
            raise ConfigError(f"[model] residual: {sorted(bad)} not correctable; choose from gpp, reco, rsoil "
                              "(NEE follows from them)")


_SECTION_NAMES = {
    ExperimentConfig: "experiment",
    DataConfig: "data",
    CorpusConfig: "data.corpus",
    ModelConfig: "model",
    LossConfig: "loss",
    TrainConfig: "train",
}


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                last = err
        raise last or ConfigError(f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table (section), got {value!r}")
        # a table of a registered section keeps its name; any other is named by its key ("[model]")
        return _from_dict(tp, value, _SECTION_NAMES.get(tp) or where.rsplit(" ", 1)[-1])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(v, item, where) for v in value)
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        args = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls, d: Mapping[str, Any], section: str | None = None):
    section = section or _SECTION_NAMES.get(cls, cls.__name__)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in section [{section}]"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; known keys: {sorted(names)}"
        )
    kwargs = {k: _convert(v, hints[k], f"[{section}] {k}") for k, v in d.items()}
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return name or str(tp).replace("typing.", "").replace("collections.abc.", "")


def _key_comments(cls) -> dict[str, str]:
    """The ``#:`` comments after each field in the class's source (the key documentation)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^\n]*#:\s*([^\n]*)$", src, re.M)}


def _reference_rows(cls) -> list[tuple[str, str, str, str]]:
    """(key, default as TOML/JSON, type, comment) of every non-table field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    notes = _key_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = json.dumps(default) if isinstance(default, str) else json.dumps(config_to_dict(default))
        rows.append((f.name, shown, _type_name(hints[f.name]), notes.get(f.name, "")))
    return rows


def config_reference() -> str:
    """Plain-text reference of every config section and key with its default, type and comment, generated
    from the config dataclasses (``kgml train --help`` prints it)."""
    lines = []
    for cls, section in _SECTION_NAMES.items():
        lines.append(f"[{section}]" if section != "experiment" else "top level (before any [section])")
        for para in (cls.__doc__ or "").strip().split("\n\n"):
            lines += textwrap.wrap(" ".join(para.split()), 100, initial_indent="  ", subsequent_indent="  ")
        for name, shown, type_name, note in _reference_rows(cls):
            lines.append(f"    {name} = {shown}  ({type_name})" + (f"  # {note}" if note else ""))
        lines.append("")
    return "\n".join(lines)


def config_reference_markdown(heading_level: int = 2) -> str:
    """Markdown reference of every config section and key (a table per section: key, default, type,
    meaning), generated from the config dataclasses like `config_reference` (the documentation site's
    configuration page is this text)."""
    hashes = "#" * heading_level
    out = []
    for cls, section in _SECTION_NAMES.items():
        title = f"`[{section}]`" if section != "experiment" else "Top level (before any `[section]`)"
        out += [f"{hashes} {title}", "", f"`{cls.__module__}.{cls.__name__}`", ""]
        out += [" ".join(p.split()) + "\n" for p in (cls.__doc__ or "").strip().split("\n\n")]
        out += ["| key | default | type | meaning |", "|---|---|---|---|"]
        for name, shown, type_name, note in _reference_rows(cls):
            cell = shown.replace("|", "\\|")
            out.append(f"| `{name}` | `{cell}` | `{type_name.replace('|', '∣')}` | {note.replace('|', '∣')} |")
        out.append("")
    return "\n".join(out)


def table_from_dict(cls, d: Mapping[str, Any], section: str):
    """The frozen dataclass ``cls`` from one TOML table ``[section]``: the parser of every kgml config
    (experiment, study, demo sizes). Values are checked against the field types; an unknown key is a
    `ConfigError` naming the key and the section."""
    return _from_dict(cls, d, section)


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Build an `ExperimentConfig` from nested mappings (TOML tables / JSON objects)."""
    return _from_dict(ExperimentConfig, d)


def config_to_dict(config) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) that `config_from_dict` reads back unchanged."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(config)


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read a TOML (or a saved JSON) config; errors name the file, the section and the key."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            with path.open("rb") as f:
                data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}") from None
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the config as JSON atomically."""
    return write_text_atomic(json.dumps(config_to_dict(config), indent=1) + "\n", path)


def _deep_merge(base: dict, delta: Mapping, where: str) -> dict:
    out = dict(base)
    for k, v in delta.items():
        if k not in base:
            raise ConfigError(f"unknown key {k!r} in section [{where}]; known keys: {sorted(base)}")
        if isinstance(v, Mapping) and isinstance(base[k], dict) and k not in ("state_shift", "fixed", "weights", "scales",
                                                                                        "options"):
            out[k] = _deep_merge(base[k], v, f"{where}.{k}" if where != "experiment" else k)
        else:
            out[k] = v
    return out


def merge_config(base: ExperimentConfig, delta: Mapping[str, Any]) -> ExperimentConfig:
    """``base`` with the keys of ``delta`` (nested tables) replaced — a fine-tuning run as a delta."""
    return config_from_dict(_deep_merge(config_to_dict(base), delta, "experiment"))


def load_delta(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML delta file (only the keys that change)."""
    with Path(path).open("rb") as f:
        return tomllib.load(f)
