"""Presets: TOML files turned into frozen, validated run configurations.

A preset holds the data source, the task, shared training settings and one table per model
variant (`sequnet`, `tcn`, `wavenet`) whose `architecture` names a network config in
`models.configs.CONFIGS`; the defaults are the paper's Tables 2 and 3. `resolve` merges, in
order, the dataclass defaults, the preset's `[data]`/`[train]`, the variant's `train = {...}`
overrides and the command line's `--set section.key=value` strings into a `RunConfig`. Every key
is checked against the dataclass fields and every value against their type hints, so a typo or a
wrong type is refused with a `ConfigError` naming the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.configs import CONFIGS, ConfigValueError, NetworkConfig
from sequnet_cli.errors import CheckpointError, ConfigError
from sequnet_cli.tasks import TASK_NAMES

AudioInput = Literal["one-hot", "one-hot+amplitude"]
AudioOutput = Literal["softmax", "logistic-mixture"]
LossReduction = Literal["mean", "sum"]
OVERRIDE_SECTIONS = ("data", "train", "model")
SEEDS = 2**32  # training seeds: every epoch's batch order is seeded from one
_TOP_LEVEL_KEYS = ("description", "task", "model", "data", "train")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is cut into frames or excerpts."""

    dataset: str  # benchmark key, or a folder / .mat / .pickle path
    frames_per_beat: int = 4  # MIDI folders: frames per quarter note, at the file's tempo
    frame_seconds: float = 0.0  # > 0: a fixed frame length instead of following the beats
    sample_rate: int = 16000
    excerpt_targets: int = 5000  # audio: the loss is on the last N samples of each excerpt
    valid_fraction: float = 0.1  # user folders without a split of their own
    test_fraction: float = 0.1
    audio_input: AudioInput = "one-hot"  # see sequnet_cli.tasks.audio_coding
    audio_output: AudioOutput = "softmax"
    mixtures: int = 10  # audio: logistic components of a "logistic-mixture" output

    def __post_init__(self) -> None:
        _check_ranges(self, {"frames_per_beat": 1, "mixtures": 1, "sample_rate": 1,
                             "excerpt_targets": 1})  # fmt: skip
        for name in ("valid_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigValueError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigValueError(
                "valid_fraction",
                f"+ data.test_fraction must leave pieces to train on (sum < 1), got "
                f"{self.valid_fraction} + {self.test_fraction}",
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and stopping. Whichever of epochs, steps and minutes comes first ends a run."""

    epochs: int = 100
    steps: int = 0  # optimizer steps; 0 = no limit
    minutes: float = 0.0  # 0 = no limit
    batch_size: int = 16
    lr: float = 1e-3
    clip: float = 0.0  # gradient-norm clipping; 0 = off
    patience: int = 10  # epochs without improvement before the learning rate is halved
    lr_decay_after: int = 10  # the halving applies only after this many epochs (paper §5.1)
    seed: int = 0
    eval_every: int = 0  # audio: validate and checkpoint every N steps; 0 = once per epoch
    eval_batches: int = 8  # audio: fixed excerpt batches for validation / test bpa
    ema: float = 0.0  # > 0: also average the weights (this decay, warmed up); the better is kept
    weight_decay: float = 0.0  # > 0: AdamW's decoupled weight decay instead of plain Adam
    threads: int = 0  # CPU threads for training; 0 = all cores but one (devices.training_threads)
    loss: LossReduction = "mean"  # per predicted frame/sample, or "sum" over the batch (authors')

    def __post_init__(self) -> None:
        _check_ranges(self, {"batch_size": 1, "eval_batches": 1})
        if not self.lr > 0:
            raise ConfigValueError("lr", f"must be greater than 0, got {self.lr}")
        if not 0 <= self.ema < 1:
            raise ConfigValueError(
                "ema", f"must be in [0, 1) (a decay such as 0.999), got {self.ema}"
            )
        if self.seed >= SEEDS:
            raise ConfigValueError("seed", f"must be below 2**32, got {self.seed}")


@dataclass(frozen=True)
class ModelConfig:
    """A model variant of a preset: its name, the architecture key and the network's config."""

    name: str
    architecture: str
    network: NetworkConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, stored in every checkpoint so sampling repeats nothing."""

    preset: str
    description: str
    task: str
    data: DataConfig
    train: TrainConfig
    model: ModelConfig

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists); `from_dict` reverses it."""
        return {
            "preset": self.preset,
            "description": self.description,
            "task": self.task,
            "data": plain_values(dataclasses.asdict(self.data)),
            "train": plain_values(dataclasses.asdict(self.train)),
            "model": {
                "name": self.model.name,
                "architecture": self.model.architecture,
                "network": plain_values(dataclasses.asdict(self.model.network)),
            },
        }

    @classmethod
    def from_dict(cls, values: object) -> RunConfig:
        """Rebuild a config stored by `to_dict`; anything malformed raises `CheckpointError`."""
        hint = (
            "the run was written by an incompatible sequnet version or edited by hand; retrain it"
        )
        try:
            if not isinstance(values, Mapping):
                raise ConfigError(f"expected a table, got {type(values).__name__}")
            model = _table(values.get("model"), "model")
            return _build(
                preset=_string(values.get("preset"), "preset"),
                description=_string(values.get("description", ""), "description"),
                task=_string(values.get("task"), "task"),
                variant=_string(model.get("name"), "model.name"),
                architecture=_string(model.get("architecture"), "model.architecture"),
                sections={
                    "data": _table(values.get("data"), "data"),
                    "train": _table(values.get("train"), "train"),
                    "model": _table(model.get("network"), "model.network"),
                },
                where="the stored run config",
            )
        except ConfigError as error:
            raise CheckpointError(f"invalid stored run config: {error}; {hint}") from error


@dataclass(frozen=True)
class PresetFile:
    """A parsed, checked preset file; values are coerced but not yet merged with overrides."""

    name: str
    source: str  # the file it came from
    description: str
    task: str
    default_model: str
    data: Mapping[str, Any]
    train: Mapping[str, Any]
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def list_presets() -> list[str]:
    """Names of the presets shipped in the `presets` package, sorted."""
    folder = importlib.resources.files("presets")
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    )


def load_preset(name_or_path: str) -> PresetFile:
    """Load a shipped preset by name, or a user's preset file by path (`*.toml`)."""
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".toml") or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist; check the path")
        return _parse_preset(path.stem, str(path), path.read_bytes())
    resource = importlib.resources.files("presets") / f"{name_or_path}.toml"
    if not resource.is_file():
        raise ConfigError(
            f"unknown preset '{name_or_path}'; available presets: {', '.join(list_presets())} "
            "(or pass the path of your own .toml file)"
        )
    return _parse_preset(name_or_path, f"presets/{name_or_path}.toml", resource.read_bytes())


def resolve(preset: str | PresetFile, model: str | None, overrides: list[str]) -> RunConfig:
    """Merge a preset, a model variant (None: the preset's default) and `--set` overrides."""
    file = preset if isinstance(preset, PresetFile) else load_preset(preset)
    name = model or file.default_model
    if name not in file.variants:
        raise ConfigError(
            f"preset {file.name} has no model '{name}'; its models: {', '.join(file.variants)}"
        )
    variant = dict(file.variants[name])
    architecture = variant.pop("architecture")
    sections = {
        "data": dict(file.data),
        "train": {**file.train, **variant.pop("train", {})},
        "model": variant,
    }
    _apply_overrides(sections, architecture, overrides)
    where = f"preset {file.name}" + (" with the --set overrides" if overrides else "")
    return _build(file.name, file.description, file.task, name, architecture, sections, where)


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A copy of a resolved config with `--set section.key=value` overrides applied."""
    sections = {
        "data": dataclasses.asdict(config.data),
        "train": dataclasses.asdict(config.train),
        "model": dataclasses.asdict(config.model.network),
    }
    _apply_overrides(sections, config.model.architecture, overrides)
    return _build(
        config.preset,
        config.description,
        config.task,
        config.model.name,
        config.model.architecture,
        sections,
        "--set",
    )


# --- parsing a preset file ------------------------------------------------------------------


def _parse_preset(name: str, source: str, raw: bytes) -> PresetFile:
    """Check a preset's structure and coerce its values; see the module docstring for the schema."""
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"preset {source} is not valid TOML: {error}; fix the file") from error
    where = f"preset {name}"
    for key, value in document.items():
        if key not in _TOP_LEVEL_KEYS and not isinstance(value, dict):
            raise ConfigError(
                f"unknown key '{key}' in {where}; known keys: {', '.join(_TOP_LEVEL_KEYS)} "
                "and one table per model variant"
            )
    task = _string(document.get("task"), "task", where)
    if task not in TASK_NAMES:
        raise ConfigError(f"task in {where} must be one of {', '.join(TASK_NAMES)}, got '{task}'")
    data = _check_section(
        _table(document.get("data", {}), "data", where), DataConfig, "data", where
    )
    if "dataset" not in data:
        raise ConfigError(f'{where} has no data.dataset; add dataset = "<benchmark or path>"')
    train = _check_section(
        _table(document.get("train", {}), "train", where), TrainConfig, "train", where
    )
    variants = {
        key: _parse_variant(key, value, where)
        for key, value in document.items()
        if key not in _TOP_LEVEL_KEYS
    }
    if not variants:
        raise ConfigError(f"{where} defines no model; add a table such as [sequnet]")
    default = _string(document.get("model", next(iter(variants))), "model", where)
    if default not in variants:
        raise ConfigError(
            f"model = '{default}' in {where} names no table; its models: {', '.join(variants)}"
        )
    description = _string(document.get("description", ""), "description", where)
    return PresetFile(name, source, description, task, default, data, train, variants)


def _parse_variant(name: str, table: dict[str, Any], where: str) -> dict[str, Any]:
    """Check one `[variant]` table: an architecture, its network fields and `train` overrides."""
    if "architecture" not in table:
        raise ConfigError(
            f"table [{name}] in {where} has no architecture, so it is not a model variant; "
            f"known tables: data, train and model tables with architecture = one of "
            f"{', '.join(CONFIGS)}"
        )
    architecture = _string(table["architecture"], f"{name}.architecture", where)
    if architecture not in CONFIGS:
        raise ConfigError(
            f"{name}.architecture in {where} must be one of {', '.join(CONFIGS)}, "
            f"got '{architecture}'"
        )
    hints = _field_hints(CONFIGS[architecture])
    known = ["architecture", "train", *hints]
    checked: dict[str, Any] = {"architecture": architecture}
    for key, value in table.items():
        if key == "train":
            section = _table(value, f"{name}.train", where)
            checked["train"] = _check_section(section, TrainConfig, f"{name}.train", where)
        elif key in hints:
            checked[key] = _coerce(value, hints[key], f"{name}.{key}", where)
        elif key != "architecture":
            raise _unknown_key(f"{name}.{key}", where, known)
    return checked


def _check_section(
    values: Mapping[str, Any], cls: type, section: str, where: str
) -> dict[str, Any]:
    """Coerce a table's values to the field types of `cls`; unknown keys are refused."""
    hints = _field_hints(cls)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(f"{section}.{key}", where, list(hints))
        checked[key] = _coerce(value, hints[key], f"{section}.{key}", where)
    return checked


# --- overrides -------------------------------------------------------------------------------


def _apply_overrides(
    sections: dict[str, dict[str, Any]], architecture: str, overrides: list[str]
) -> None:
    """Write each `section.key=value` override into `sections[section]`, validated."""
    hints = {
        "data": _field_hints(DataConfig),
        "train": _field_hints(TrainConfig),
        "model": _field_hints(CONFIGS[architecture]),
    }
    for text in overrides:
        section, key, raw = _split_override(text)
        where = f"--set {text}"
        if key not in hints[section]:
            raise _unknown_key(f"{section}.{key}", where, list(hints[section]))
        hint = hints[section][key]
        value = raw if hint is str or typing.get_origin(hint) is Literal else _parse_value(raw)
        sections[section][key] = _coerce(value, hint, f"{section}.{key}", where)


def _split_override(text: str) -> tuple[str, str, str]:
    """`"train.lr=1e-4"` -> `("train", "lr", "1e-4")`."""
    target, equals, raw = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not equals or not dot or not key:
        raise ConfigError(f"--set expects section.key=value (e.g. train.lr=0.0001), got '{text}'")
    if section not in OVERRIDE_SECTIONS:
        raise ConfigError(
            f"unknown section '{section}' in --set {text}; sections: {', '.join(OVERRIDE_SECTIONS)}"
        )
    return section, key.strip(), raw.strip()


def _parse_value(raw: str) -> object:
    """A TOML value (`3`, `1e-4`, `[64, 64]`, `true`); failing that a Python float, else the text."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw.strip("\"'")


# --- building and checking the dataclasses ---------------------------------------------------


def _build(
    preset: str,
    description: str,
    task: str,
    variant: str,
    architecture: str,
    sections: Mapping[str, Mapping[str, Any]],
    where: str,
) -> RunConfig:
    """Construct the frozen config from coerced values; required fields and ranges are checked."""
    if task not in TASK_NAMES:
        raise ConfigError(f"task must be one of {', '.join(TASK_NAMES)}, got '{task}'")
    if architecture not in CONFIGS:
        raise ConfigError(f"unknown architecture '{architecture}'; known: {', '.join(CONFIGS)}")
    data = _instantiate(DataConfig, sections["data"], "data", where)
    train = _instantiate(TrainConfig, sections["train"], "train", where)
    network = _instantiate(CONFIGS[architecture], sections["model"], "model", where)
    return RunConfig(
        preset, description, task, data, train, ModelConfig(variant, architecture, network)
    )


def _instantiate(cls: type, values: Mapping[str, Any], section: str, where: str) -> Any:
    """`cls(**values)` after checking names and types; the dataclass checks the ranges itself.

    A missing required field or a value out of range is a `ConfigError` naming the key.
    """
    checked = _check_section(values, cls, section, where)
    for item in dataclasses.fields(cls):
        no_default = (
            item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        )
        if no_default and item.name not in checked:
            raise ConfigError(f"{section}.{item.name} is required in {where}; add it")
    try:
        return cls(**checked)
    except ConfigValueError as error:
        raise ConfigError(f"{section}.{error.field} {error.reason} in {where}") from error


def _check_ranges(config: Any, minimums: Mapping[str, int]) -> None:
    """Refuse NaN and negative numbers, and counts below their minimum (`minimums`, else 0).

    Called by the configs' `__post_init__`; raises `ConfigValueError`.
    """
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        minimum = minimums.get(item.name, 0)
        if math.isnan(value) or value < minimum:
            raise ConfigValueError(item.name, f"must be at least {minimum}, got {value}")


# --- types -----------------------------------------------------------------------------------


def _field_hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {item.name: hints[item.name] for item in dataclasses.fields(cls)}


def _coerce(value: object, hint: Any, key: str, where: str = "") -> object:
    """Check `value` against `hint`: ints pass for floats, lists become tuples, bools are not ints."""
    context = f" in {where}" if where else ""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        choices = ", ".join(str(choice) for choice in typing.get_args(hint))
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}{context}")
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key, where)
            except ConfigError:
                continue
    elif origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if isinstance(value, list | tuple) and all(_is_instance(v, item_hint) for v in value):
            return tuple(float(v) if item_hint is float else v for v in value)
    elif _is_instance(value, hint):
        return float(value) if hint is float else value  # type: ignore[arg-type]
    raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}{context}")


def _is_instance(value: object, hint: Any) -> bool:
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(choice) for choice in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _table(value: object, key: str, where: str = "") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        context = f" in {where}" if where else ""
        raise ConfigError(f"{key} must be a table, got {value!r}{context}")
    return dict(value)


def _string(value: object, key: str, where: str = "") -> str:
    if value is None:
        raise ConfigError(f"{key} is missing{' in ' + where if where else ''}; add it")
    return typing.cast(str, _coerce(value, str, key, where))


def _unknown_key(key: str, where: str, known: list[str]) -> ConfigError:
    return ConfigError(f"unknown key '{key}' in {where}; known keys: {', '.join(known)}")


def plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """A dataclass's `asdict` with tuples as lists, so it survives JSON unchanged."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in values.items()
    }
