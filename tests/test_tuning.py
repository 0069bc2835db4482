"""Search spaces are checked like the rest of a preset; a config written as a preset reads back."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from sequnet_cli.config import (
    apply_search_values,
    list_presets,
    load_preset,
    preset_text,
    resolve,
)
from sequnet_cli.errors import ConfigError

SPACE = """
train.lr = { low = 1e-3, high = 0.1, log = true }
train.clip = { low = 0.1, high = 1.0, optional = true }
model.width = { low = 4, high = 8, step = 2 }
"""
WITH_SPACE = """
description = "tiny"
task = "piano-roll"
model = "small"
[data]
dataset = "jsb"
[train]
epochs = 2
batch_size = 2
[tune]
{space}
[small]
architecture = "sequnet"
channels = [6, 6]
"""
TINY = WITH_SPACE.format(space=SPACE)


def write_preset(tmp_path: Path, text: str = TINY, name: str = "tiny") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


# --- search spaces ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["jsb", "nottingham", "musedata", "piano-midi"])
def test_symbolic_presets_search_the_papers_space(preset: str) -> None:
    file = load_preset(preset)
    assert set(file.spaces) == set(file.variants)
    for space in file.spaces.values():
        ranges = {searched.key: searched for searched in space}
        lr, clip = ranges["train.lr"], ranges["train.clip"]
        assert lr.log and math.log(lr.low) == pytest.approx(-12, abs=1e-4)
        assert math.log(lr.high) == pytest.approx(-2, abs=1e-4)
        assert clip.optional and (clip.low, clip.high) == (0.01, 1.0)
        assert {"model.dropout", "model.kernel_size", "model.stages", "model.width"} <= set(ranges)


def test_a_variant_adds_to_the_shared_space() -> None:
    spaces = load_preset("jsb").spaces
    assert "train.weight_decay" in [searched.key for searched in spaces["sequnet"]]
    assert "train.weight_decay" not in [searched.key for searched in spaces["tcn"]]


def test_presets_without_a_tune_table_have_no_space() -> None:
    assert all(not load_preset(name).spaces for name in ("piano", "piano-small"))


def test_a_variants_table_wins_and_quoted_keys_are_read(tmp_path: Path) -> None:
    text = TINY.replace("train.lr =", '"train.lr" =') + (
        "[small.tune]\nmodel.width = { choices = [4, 6] }\n"
    )
    (space,) = load_preset(write_preset(tmp_path, text)).spaces.values()
    ranges = {searched.key: searched for searched in space}
    assert ranges["train.lr"].log
    assert ranges["model.width"].choices == (4, 6)
    assert ranges["model.width"].edges() == (4, 6)
    assert ranges["train.clip"].edges() == (0.1, 1.0, 0.0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("train.lrr = { low = 1, high = 2 }", "unknown key 'tune.train.lrr'"),
        ("optim.lr = { low = 1, high = 2 }", "unknown key 'tune.optim'"),
        ("train.lr = { lo = 1e-4, high = 1e-2 }", "unknown key 'tune.train.lr.lo'"),
        ("train.lr = 0.1", "tune.train.lr must be a table"),
        ("train.lr = { low = 1e-2, high = 1e-4 }", "tune.train.lr .* is an empty range"),
        ("train.lr = { low = 1e-2, high = 1e-2 }", "tune.train.lr .* is an empty range"),
        ("train.lr = { high = 1e-2 }", "tune.train.lr .* needs low and high"),
        ("train.lr = { low = nan, high = 1.0 }", "tune.train.lr.low .* finite"),
        ("train.clip = { low = 0.0, high = 1.0, log = true }", "so low must be above 0"),
        ("train.lr = { low = 1e-3, high = 0.1, optional = true }", "train.lr must be greater"),
        ("train.batch_size = { low = 1.5, high = 4 }", "train.batch_size.low must be an integer"),
        ("model.width = { low = 4, high = 9, step = 2 }", "tune.model.width.step .* divide"),
        ("model.width = { low = 4, high = 8, step = 2, log = true }", "combined with log"),
        ("model.kernel_size = { choices = [] }", "non-empty list"),
        ("model.kernel_size = { choices = [3, 3] }", "repeats a value"),
        ("model.kernel_size = { choices = [3], low = 2 }", "has choices and low"),
        ("model.kernel_size = { choices = [1, 3] }", "model.kernel_size must be at least 2"),
        ("model.channels = { low = 4, high = 8 }", "list setting .* model.width"),
        ("model.dropout = { low = 0.0, high = 1.0 }", r"dropout must be in \[0, 1\), got 1.0"),
        ("train.loss = { low = 1, high = 2 }", "tune.train.loss .* not a number"),
        ('train.loss = { choices = ["mean", "max"] }', "train.loss.choices must be one of"),
    ],
)
def test_bad_spaces_are_refused_naming_the_key(tmp_path: Path, entry: str, message: str) -> None:
    text = WITH_SPACE.format(space=entry)
    with pytest.raises(ConfigError, match=message):
        load_preset(write_preset(tmp_path, text))


def test_a_shared_key_must_suit_every_variant(tmp_path: Path) -> None:
    text = TINY.replace("[tune]", "[tune]\nmodel.dropout = { low = 0.0, high = 0.5 }") + (
        '[other]\narchitecture = "residual-sequnet"\nchannels = 4\nlevels = 2\n'
    )
    with pytest.raises(ConfigError, match=r"unknown key 'tune.model.dropout' .*model other"):
        load_preset(write_preset(tmp_path, text))


@pytest.mark.parametrize(
    ("preset", "model"),
    [("jsb", "sequnet"), ("jsb", "tcn"), ("piano", "sequnet"), ("piano", "wavenet")],
)
def test_width_and_stages_apply_to_every_architecture(preset: str, model: str) -> None:
    config = resolve(preset, model, [])
    changed = apply_search_values(config, {"model.width": 12, "model.stages": 3, "train.lr": 0.01})
    assert (changed.model.network.width, changed.model.network.stages) == (12, 3)
    assert (changed.train.lr, changed.data) == (0.01, config.data)
    only_width = apply_search_values(config, {"model.width": 12})
    assert only_width.model.network.stages == config.model.network.stages


def _every_shipped_variant() -> list[tuple[str, str]]:
    return [(name, variant) for name in list_presets() for variant in load_preset(name).variants]


@pytest.mark.parametrize(("preset", "model"), _every_shipped_variant())
def test_a_config_written_as_a_preset_resolves_to_itself(
    tmp_path: Path, preset: str, model: str
) -> None:
    config = resolve(preset, model, [])
    path = tmp_path / "written.toml"
    path.write_text(preset_text(config, "a comment\non two lines"))
    assert resolve(str(path), None, []) == dataclasses.replace(config, preset="written")


def test_odd_names_and_text_survive_a_written_preset(tmp_path: Path) -> None:
    config = resolve("jsb", "tcn", ['data.dataset=/my music/ä "b" \\c'])
    config = dataclasses.replace(
        config,
        description='say "hi"\\\n\tthere \x7f ♫',
        model=dataclasses.replace(config.model, name="my model"),
    )
    path = tmp_path / "odd.toml"
    path.write_text(preset_text(config))
    assert resolve(str(path), None, []) == dataclasses.replace(config, preset="odd")
