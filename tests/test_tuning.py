"""`sequnet tune`: spaces are checked, and tiny studies run, continue, prune and fail well."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from cli import Result, assert_one_error_line, run, succeed
from optuna.trial import FrozenTrial, TrialState
from test_cli_piano_roll import write_song

from sequnet_cli import tuning
from sequnet_cli.checkpoints import Run
from sequnet_cli.config import (
    apply_search_values,
    list_presets,
    load_preset,
    preset_text,
    resolve,
)
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.paths import runs_dir, studies_dir
from sequnet_cli.tuning import trials as trials_module

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


@pytest.fixture
def midi_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "songs"
    folder.mkdir()
    for index in range(6):
        write_song(folder / f"song{index}.mid", [60 + index, 64 + index, 67])
    return folder


def tune(capsys: pytest.CaptureFixture[str], preset: str, data: Path, *extra: str) -> Result:
    return run(capsys, "tune", preset, "--data", str(data), *extra)


def study_trials(name: str = "tiny-small") -> list[FrozenTrial]:
    storage = f"sqlite:///{studies_dir() / 'studies.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def states(trials: list[FrozenTrial]) -> list[TrialState]:
    return [trial.state for trial in trials]


def run_names() -> list[str]:
    return sorted(path.name for path in runs_dir().iterdir())


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


@pytest.mark.parametrize("preset", ["nottingham", "musedata", "piano-midi"])
def test_presets_trained_in_batches_search_the_batch_size(preset: str) -> None:
    for space in load_preset(preset).spaces.values():
        (batch,) = [searched for searched in space if searched.key == "train.batch_size"]
        assert 16 in batch.choices


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


# --- studies ----------------------------------------------------------------------------------


def test_a_study_runs_continues_and_writes_a_preset_that_trains(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, midi_folder: Path
) -> None:
    preset = write_preset(tmp_path)
    out = tune(capsys, preset, midi_folder, "--trials", "2", "--minutes-per-trial", "5").out
    assert states(study_trials()) == [TrialState.COMPLETE] * 2
    assert "2 of 2 trials finished" in out and "best preset:" in out
    assert [name.rsplit("-", 2)[0] for name in run_names()] == [
        "tiny-small-trial0",
        "tiny-small-trial1",
    ]

    # The same command with more trials continues the study; with as many, it runs none.
    succeed(
        capsys,
        "tune",
        preset,
        "--data",
        str(midi_folder),
        "--trials",
        "3",
        "--minutes-per-trial",
        "5",
    )
    succeed(
        capsys,
        "tune",
        preset,
        "--data",
        str(midi_folder),
        "--trials",
        "3",
        "--minutes-per-trial",
        "5",
    )
    trials = study_trials()
    assert states(trials) == [TrialState.COMPLETE] * 3 and len(run_names()) == 3

    # The best preset holds the best trial's settings without its time limit, and trains.
    best = min(trials, key=lambda trial: trial.value)
    trial_config = Run.open(runs_dir() / best.user_attrs["run"]).config
    assert trial_config.train.minutes == 5
    path = studies_dir() / "tiny-small-best.toml"
    written = resolve(str(path), None, [])
    assert written == dataclasses.replace(
        trial_config,
        preset="tiny-small-best",
        description=written.description,
        train=dataclasses.replace(trial_config.train, minutes=0.0),
    )
    assert f"trial {best.number}" in written.description
    succeed(capsys, "train", str(path), "--epochs", "1")
    assert len(run_names()) == 4

    shown = succeed(capsys, "tune", preset, "--show").out
    assert "best first" in shown and "3 finished" in shown and "complete" in shown


def test_a_study_refuses_to_continue_under_other_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, midi_folder: Path
) -> None:
    preset = write_preset(tmp_path.joinpath())
    succeed(capsys, "tune", preset, "--data", str(midi_folder), "--trials", "1")
    result = tune(capsys, preset, midi_folder, "--trials", "2", "--set", "train.epochs=3")
    assert_one_error_line(result, "study tiny-small", "train.epochs: 2 then, 3 now", "--study")
    assert len(study_trials()) == 1
    other = tune(
        capsys,
        preset,
        midi_folder,
        "--trials",
        "1",
        "--set",
        "train.epochs=1",
        "--study",
        "shorter",
    )
    assert other.code == 0, other.err
    assert states(study_trials("shorter")) == [TrialState.COMPLETE]


def test_ctrl_c_marks_the_running_trial_and_the_study_resumes(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    midi_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real, calls = trials_module.train_run, []

    def interrupt_the_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:  # Ctrl-C at the end of the trial's first epoch

            def press_ctrl_c(state: object) -> bool:
                raise KeyboardInterrupt

            kwargs["on_period"] = press_ctrl_c
        return real(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_run", interrupt_the_second)
    preset = write_preset(tmp_path)
    result = tune(capsys, preset, midi_folder, "--trials", "2")
    assert_one_error_line(result, "interrupted", "run the same command to continue")
    trials = study_trials()
    assert states(trials) == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["failure"] == "interrupted"

    # An interrupted trial does not count: running again runs one more.
    monkeypatch.setattr(trials_module, "train_run", real)
    again = succeed(capsys, "tune", preset, "--data", str(midi_folder), "--trials", "2").out
    assert states(study_trials()) == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "2 of 2 trials finished" in again


def test_trials_below_the_median_are_pruned(tmp_path: Path, midi_folder: Path) -> None:
    settings = tuning.SearchSettings(random_trials=1, prune_after=1, warmup_validations=1)
    plan = tuning.plan_study(
        write_preset(tmp_path),
        None,
        [f"data.dataset={midi_folder}", "train.epochs=4"],
        trials=2,
        settings=settings,
    )
    study = tuning.open_study(plan, create=True)
    # A learning rate that learns, then one that barely moves: worse at the first validation.
    study.enqueue_trial({"train.lr": 0.1, "train.clip on": False, "model.width": 8})
    study.enqueue_trial({"train.lr": 0.001, "train.clip on": False, "model.width": 8})
    tuning.run_study(plan)
    good, bad = study_trials()
    assert (good.state, bad.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert (len(good.intermediate_values), len(bad.intermediate_values)) == (4, 1)
    assert Run.open(runs_dir() / bad.user_attrs["run"]).summary().epochs == 1


def test_a_failed_trial_is_recorded_and_the_search_goes_on(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    midi_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real, calls = trials_module.train_run, []

    def out_of_memory_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise DeviceError("out of memory at batch size 2; lower it")
        return real(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_run", out_of_memory_first)
    result = succeed(
        capsys, "tune", write_preset(tmp_path), "--data", str(midi_folder), "--trials", "2"
    )
    failed, complete = study_trials()
    assert (failed.state, complete.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert failed.user_attrs["failure"].startswith("out of memory")
    assert "failed" in result.out and "out of memory" in result.out


def test_a_failure_every_trial_would_meet_ends_the_search(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = tune(capsys, write_preset(tmp_path), empty, "--trials", "3")
    assert_one_error_line(result, str(empty))
    (trial,) = study_trials()
    assert trial.state == TrialState.FAIL and str(empty) in trial.user_attrs["failure"]


def test_jobs_share_the_trials_and_the_cpu_threads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, midi_folder: Path
) -> None:
    result = tune(capsys, write_preset(tmp_path), midi_folder, "--trials", "2", "--jobs", "2")
    assert result.code == 0, result.err
    trials = study_trials()
    assert states(trials) == [TrialState.COMPLETE] * 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for trial in trials:
        config = Run.open(runs_dir() / trial.user_attrs["run"]).config
        assert config.train.threads == max(1, (cores or 1) // 2)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--trials", "1", "--storage", "foo://x"], ["study storage foo://x"]),
        (["--trials", "1", "--storage", "postgresql://me:secret@localhost:1/db"], ["***"]),
        ([], ["--trials N"]),
        (["--show", "--study", "absent"], ["no study absent"]),
        (["--trials", "1", "--out", "/no/such/folder/best.toml"], ["does not exist"]),
        (["--trials", "1", "--study", "a b"], ["--study must be"]),
        (["--trials", "1", "--model", "big"], ["no model 'big'"]),
    ],
)
def test_bad_tune_commands_are_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    result = run(capsys, "tune", write_preset(tmp_path), *args)
    assert_one_error_line(result, *fragments)
    assert "secret" not in result.err


def test_a_preset_without_a_space_cannot_be_tuned(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(run(capsys, "tune", "piano", "--trials", "1"), "no search space")
