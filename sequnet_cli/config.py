"""Presets: TOML files turned into frozen, validated run configurations.

A preset holds the data source, the task, shared training settings and one table per model
variant (`sequnet`, `tcn`, `wavenet`) whose `architecture` names a network config in
`models.configs.CONFIGS`; the defaults are the paper's Tables 2 and 3. `resolve` merges, in
order, the dataclass defaults, the preset's `[data]`/`[train]`, the variant's `train = {...}`
overrides and the command line's `--set section.key=value` strings into a `RunConfig`. Every key
is checked against the dataclass fields and every value against their type hints, so a typo or a
wrong type is refused with a `ConfigError` naming the key, never silently ignored.

A preset may also declare the space `sequnet tune` searches: a `[tune]` table shared by its
variants and a `[variant.tune]` table per variant, each mapping `--set`-style keys
(`train.lr`, `model.dropout`, and `model.width` / `model.stages`, which every architecture
understands) to a range or a list of choices. They are checked as strictly as the rest, each end
of a range against the config it would build. The module is long because it is the one place
that knows the preset schema: the run settings, the search space and writing a config back out
as a preset.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import re
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
Precision = Literal["auto", "fp32", "bf16"]
OVERRIDE_SECTIONS = ("data", "train", "model")
SEEDS = 2**32  # training seeds: every epoch's batch order is seeded from one
_TOP_LEVEL_KEYS = ("description", "task", "model", "data", "train", "tune")
# Searched model settings that every architecture understands (`NetworkConfig.with_stages`).
SEARCH_KNOBS = {"width": int, "stages": int}
_RANGE_KEYS = ("low", "high", "log", "step", "optional", "choices")


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
    # "auto": SEQUNET_PRECISION if set, else bfloat16 autocast on CUDA GPUs that support it and
    # float32 elsewhere (devices.autocast_dtype).
    precision: Precision = "auto"
    capture: bool = True  # CUDA: replay batches of a repeated shape as a captured CUDA graph

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


Choice = bool | int | float | str


@dataclass(frozen=True)
class SearchRange:
    """One searched setting of a preset's `[tune]` space; `key` is a `--set`-style name.

    Either `choices`, or the range `low`..`high` (integers when the setting is one), on a log
    scale with `log`, in steps of `step` when it is given; `optional` also tries 0, "off" (the
    paper's search tries clipping off, or on with a magnitude in [0.01, 1.0]).
    """

    key: str
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    log: bool = False
    step: float | None = None
    optional: bool = False
    choices: tuple[Choice, ...] = ()

    def edges(self) -> tuple[Choice, ...]:
        """The values whose validity bounds the whole range: its ends, the choices, off."""
        if self.choices:
            return self.choices
        ends = (self.low, self.high, 0) if self.optional else (self.low, self.high)
        return tuple(int(end) if self.integer else float(end) for end in ends)


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
    spaces: Mapping[str, tuple[SearchRange, ...]] = field(default_factory=dict)  # per variant


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
    file = PresetFile(name, source, description, task, default, data, train, variants)
    spaces = _parse_spaces(document, file, where)
    return dataclasses.replace(file, spaces=spaces)


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
    known = ["architecture", "train", "tune", *hints]
    checked: dict[str, Any] = {"architecture": architecture}
    for key, value in table.items():
        if key == "train":
            section = _table(value, f"{name}.train", where)
            checked["train"] = _check_section(section, TrainConfig, f"{name}.train", where)
        elif key in hints:
            checked[key] = _coerce(value, hints[key], f"{name}.{key}", where)
        elif key not in ("architecture", "tune"):  # the search space is read by _parse_spaces
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


# --- the search space ------------------------------------------------------------------------


def _parse_spaces(
    document: Mapping[str, Any], file: PresetFile, where: str
) -> dict[str, tuple[SearchRange, ...]]:
    """Each variant's search space: the shared `[tune]` table, then the variant's own."""
    shared = _tune_entries(document.get("tune", {}), "tune", where)
    spaces = {}
    for name, variant in file.variants.items():
        own = _tune_entries(document[name].get("tune", {}), f"{name}.tune", where)
        entries = {**shared, **own}
        if not entries:
            continue
        hints = _search_hints(variant["architecture"])
        context = f"{where} (model {name})"
        ranges = tuple(
            _parse_range(key, label, spec, hints, context) for key, (label, spec) in entries.items()
        )
        _check_edges(file, name, ranges, {key: label for key, (label, _) in entries.items()})
        spaces[name] = ranges
    return spaces


def _tune_entries(table: object, label: str, where: str) -> dict[str, tuple[str, object]]:
    """`section.key` -> (its name in the file, its range table), from a `[tune]` table.

    TOML reads `train.lr = {...}` as a `train` table holding `lr`; a quoted `"train.lr"` key
    is accepted as well.
    """
    entries: dict[str, tuple[str, object]] = {}
    for first, value in _table(table, label, where).items():
        if "." in first:
            entries[first] = (f"{label}.{first}", value)
        elif first in OVERRIDE_SECTIONS:
            for key, spec in _table(value, f"{label}.{first}", where).items():
                entries[f"{first}.{key}"] = (f"{label}.{first}.{key}", spec)
        else:
            raise ConfigError(
                f"unknown key '{label}.{first}' in {where}; a search space names settings as "
                f"section.key with section one of {', '.join(OVERRIDE_SECTIONS)} "
                "(e.g. train.lr = { low = 1e-5, high = 1e-2, log = true })"
            )
    return entries


def _search_hints(architecture: str) -> dict[str, dict[str, Any]]:
    """Section -> searchable key -> type hint, for a variant of `architecture`."""
    return {
        "data": _field_hints(DataConfig),
        "train": _field_hints(TrainConfig),
        "model": {**_field_hints(CONFIGS[architecture]), **SEARCH_KNOBS},
    }


def _parse_range(
    key: str, label: str, spec: object, hints: Mapping[str, Mapping[str, Any]], where: str
) -> SearchRange:
    """Check one `key = { low, high, ... }` or `key = { choices = [...] }` entry."""
    section, _, name = key.partition(".")
    if name not in hints.get(section, {}):
        known = [f"{s}.{k}" for s, keys in hints.items() for k in keys]
        raise _unknown_key(label, where, known)
    hint = hints[section][name]
    table = _table(spec, label, where)
    for option in table:
        if option not in _RANGE_KEYS:
            raise _unknown_key(f"{label}.{option}", where, list(_RANGE_KEYS))
    if typing.get_origin(hint) is tuple:
        raise ConfigError(
            f"{label} in {where} is a list setting and cannot be searched; search its width and "
            "count with model.width and model.stages instead"
        )
    if "choices" in table:
        return _parse_choices(key, label, table, hint, where)
    if hint not in (int, float):
        raise ConfigError(f"{label} in {where} is not a number; give choices = [...] instead")
    return _parse_numeric_range(key, label, table, hint, where)


def _parse_choices(
    key: str, label: str, table: Mapping[str, Any], hint: Any, where: str
) -> SearchRange:
    if len(table) > 1:
        others = ", ".join(option for option in table if option != "choices")
        raise ConfigError(f"{label} in {where} has choices and {others}; give one or the other")
    values = table["choices"]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{label}.choices in {where} must be a non-empty list, got {values!r}")
    choices = tuple(_coerce(value, hint, f"{label}.choices", where) for value in values)
    if len(set(choices)) < len(choices):
        raise ConfigError(f"{label}.choices in {where} repeats a value: {values!r}")
    return SearchRange(key, choices=typing.cast(tuple[Choice, ...], choices))


def _parse_numeric_range(
    key: str, label: str, table: Mapping[str, Any], hint: type, where: str
) -> SearchRange:
    if "low" not in table or "high" not in table:
        raise ConfigError(f"{label} in {where} needs low and high (or choices = [...])")
    low, high = (_finite(table[end], hint, f"{label}.{end}", where) for end in ("low", "high"))
    if not low < high:
        raise ConfigError(
            f"{label} in {where} is an empty range: low = {low} must be below high = {high}"
        )
    log = _coerce(table.get("log", False), bool, f"{label}.log", where)
    optional = _coerce(table.get("optional", False), bool, f"{label}.optional", where)
    step = None
    if "step" in table:
        step = _finite(table["step"], hint, f"{label}.step", where)
        intervals = (high - low) / step if step > 0 else math.nan
        if log or not abs(intervals - round(intervals)) < 1e-9 or intervals < 1:
            raise ConfigError(
                f"{label}.step in {where} must be positive, divide high - low = {high - low} "
                f"and not be combined with log, got {step}"
            )
    if log and low <= 0:
        raise ConfigError(f"{label} in {where} has log = true, so low must be above 0, got {low}")
    return SearchRange(key, low, high, hint is int, bool(log), step, bool(optional))


def _finite(value: object, hint: type, key: str, where: str) -> float:
    number = typing.cast(float, _coerce(value, hint, key, where))
    if not math.isfinite(number):
        raise ConfigError(f"{key} in {where} must be a finite number, got {value!r}")
    return number


def _check_edges(
    file: PresetFile, variant: str, ranges: tuple[SearchRange, ...], labels: Mapping[str, str]
) -> None:
    """Refuse a range whose ends (or choices, or off) would make an invalid config."""
    base = resolve(file, variant, [])
    for searched in ranges:
        for value in searched.edges():
            where = f"the search space ({labels[searched.key]} = {value!r}) of preset {file.name}"
            where += f", model {variant}"
            apply_search_values(base, {searched.key: value}, where)


def apply_search_values(
    config: RunConfig, values: Mapping[str, Choice], where: str = "the search"
) -> RunConfig:
    """A copy of `config` with searched values, keyed as in `[tune]` (`train.lr`,
    `model.width`, ...); an invalid value is a `ConfigError` naming the key and `where`."""
    network = config.model.network
    if any(f"model.{knob}" in values for knob in SEARCH_KNOBS):
        count = int(values.get("model.stages", network.stages))
        width = int(values.get("model.width", network.width))
        try:
            network = network.with_stages(count, width)
        except ConfigValueError as error:
            raise ConfigError(f"model.{error.field} {error.reason} in {where}") from error
    sections = {
        "data": dataclasses.asdict(config.data),
        "train": dataclasses.asdict(config.train),
        "model": dataclasses.asdict(network),
    }
    for key, value in values.items():
        section, _, name = key.partition(".")
        if name not in SEARCH_KNOBS or section != "model":
            sections[section][name] = value
    return _build(
        config.preset,
        config.description,
        config.task,
        config.model.name,
        config.model.architecture,
        sections,
        where,
    )


# --- writing a config as a preset -------------------------------------------------------------


def preset_text(config: RunConfig, comment: str = "") -> str:
    """A preset file holding exactly `config` as its one model variant: every setting written
    out, so that `resolve` of the file gives `config` back (under the file's name)."""
    name = config.model.name
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [
        f"description = {_toml_value(config.description)}",
        f"task = {_toml_value(config.task)}",
        f"model = {_toml_value(name)}",
    ]
    tables = {
        "data": dataclasses.asdict(config.data),
        "train": dataclasses.asdict(config.train),
        _toml_key(name): {
            "architecture": config.model.architecture,
            **dataclasses.asdict(config.model.network),
        },
    }
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # Python's shortest round-trip form is valid TOML (1e-05, inf)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # JSON's escapes are TOML's; TOML also wants DEL escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


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
