"""Requests that cannot work end in one `error:` line, checked before any work is done (no run
folder made, no model loaded, nothing generated), and the messages say what is true."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]


@pytest.fixture
def chorales(tmp_path: Path) -> Path:
    return write_chorales(tmp_path / "chorales", 6)


@pytest.fixture
def trained(capsys: pytest.CaptureFixture[str], chorales: Path) -> Path:
    """A trained jsb run on the chorales; returns its folder."""
    from sequnet_cli.checkpoints import find_run

    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *TINY)
    return find_run("jsb").path


def run_folders() -> list[Path]:
    from sequnet_cli.paths import runs_dir

    return sorted(runs_dir().iterdir())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--program", "999"], "--program must be a general midi program from 0 to 127"),
        (["--program", "-1"], "--program"),
        (["--tempo", "nan"], "--tempo must be from 4 to 1000"),
        (["--tempo", "inf"], "--tempo"),
        (["--tempo", "0"], "--tempo"),
        (["--seconds", "nan"], "--seconds must be a positive number"),
        (["--seconds", "inf"], "--seconds"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--temperature", "inf"], "--temperature must be a number above 0"),
        (["--temperature", "0"], "--temperature"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_sample_options_are_checked_before_a_model_is_looked_for(
    capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert_one_error_line(run(capsys, "sample", "jsb", *options), message)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--steps", "99999999999999999999"], "memory"),
        (["--steps", "1000000000000"], "tib of memory"),
        (["--seconds", "1e12"], "tib of memory"),
        (["--steps", "1000000", "-n", "100000000"], "100000000 x 1,000,000 frames"),
        (["--seconds", "0.01"], "--seconds 0.01 is shorter than one of the model's frames"),
        (["--out", "/nonexistent/folder/x.mid"], "the folder /nonexistent/folder does not exist"),
        (["--out", "/nonexistent/folder"], "the folder /nonexistent does not exist"),
        (["--out", "song.wav"], "this model writes .mid files"),
    ],
)
def test_sample_requests_that_cannot_be_written_are_refused_before_generating(
    capsys: pytest.CaptureFixture[str],
    trained: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    message: str,
) -> None:
    from sequnet_cli import generation

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("generation started")

    monkeypatch.setattr(generation, "Autoregression", never)
    result = run(capsys, "sample", "jsb", *options)
    assert_one_error_line(result, message)
    assert not Path("/nonexistent").exists()


def test_a_folder_for_several_outputs_is_made_only_in_an_existing_folder(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    many = tmp_path / "many"
    succeed(capsys, "sample", "jsb", "-n", "2", "--steps", "4", "--out", str(many))
    assert sorted(p.name for p in many.iterdir()) == ["jsb-sample-1.mid", "jsb-sample-2.mid"]
    deeper = tmp_path / "missing" / "many"
    assert_one_error_line(
        run(capsys, "sample", "jsb", "-n", "2", "--out", str(deeper)), "does not exist"
    )


def test_a_network_too_big_for_memory_is_refused_before_the_run_is_made(
    capsys: pytest.CaptureFixture[str], chorales: Path
) -> None:
    huge = ["--set", "model.channels=[100000000,100000000]"]
    result = run(capsys, "train", "jsb", "--data", str(chorales), *huge)
    assert_one_error_line(result, "weights) needs at least", "of memory", "--set model")
    assert run_folders() == []


def test_a_checkpoint_whose_config_asks_for_a_huge_network_is_refused(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    state = torch.load(trained / "best.pt", weights_only=True)
    state["config"]["model"]["network"]["channels"] = [100000000, 100000000]
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    assert_one_error_line(run(capsys, "sample", str(edited)), "edited.pt", "of memory")
    assert_one_error_line(run(capsys, "evaluate", str(edited)), "edited.pt", "of memory")


def test_resume_cannot_change_the_network_and_keeps_config_json_true(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    config = (trained / "config.json").read_text()
    result = run(capsys, "train", "--resume", "jsb", "--set", "model.channels=[100,100]")
    assert_one_error_line(result, "keeps its network", "model.channels=[100,100]")
    assert (trained / "config.json").read_text() == config

    succeed(capsys, "train", "--resume", "jsb", "--epochs", "2", "--set", "train.lr=0.002")
    stored = json.loads((trained / "config.json").read_text())["train"]
    checkpoint = torch.load(trained / "last.pt", weights_only=True)["config"]["train"]
    assert stored["lr"] == checkpoint["lr"] == 0.002 and stored["epochs"] == 2


def test_an_unwritable_home_is_one_line_for_runs_and_train(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sequnet_cli.tasks.piano_roll import PianoRollTask

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SEQUNET_HOME", str(blocker / "home"))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read")

    monkeypatch.setattr(PianoRollTask, "open_data", never)
    assert_one_error_line(run(capsys, "runs"), "SEQUNET_HOME")
    assert_one_error_line(run(capsys, "train", "jsb", "--data", str(chorales)), "SEQUNET_HOME")


def test_settings_that_cannot_train_are_refused_before_a_run_is_made(
    capsys: pytest.CaptureFixture[str], chorales: Path
) -> None:
    result = run(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "0")
    assert_one_error_line(result, "nothing to train")
    result = run(capsys, "train", "jsb", "--data", str(chorales), "--set", "train.ema=1")
    assert_one_error_line(result, "train.ema must be in [0, 1)")
    result = run(capsys, "train", "jsb", "--data", str(chorales), "--seed", "99999999999999999999")
    assert_one_error_line(result, "train.seed must be below 2**32")
    assert run_folders() == []


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_out_of_memory_from_torch_is_one_line(
    capsys: pytest.CaptureFixture[str],
    trained: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: RuntimeError,
) -> None:
    from sequnet_cli.tasks.piano_roll import PianoRollTask

    def exhausted(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(PianoRollTask, "loss_sum", exhausted)
    assert_one_error_line(run(capsys, "evaluate", "jsb"), "out of memory")


def test_files_are_written_with_the_users_umask(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *TINY)
        target = tmp_path / "sample.mid"
        succeed(capsys, "sample", "jsb", "--steps", "4", "--out", str(target))
    finally:
        os.umask(previous)
    (folder,) = run_folders()
    for path in (folder / "config.json", folder / "last.pt", folder / "best.pt", target):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_play_on_a_midi_model_says_why_it_does_not_play(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    target = tmp_path / "played.mid"
    result = succeed(capsys, "sample", "jsb", "--steps", "4", "--out", str(target), "--play")
    assert "warning: --play plays audio models only" in result.err and target.is_file()


def test_a_primer_without_notes_is_refused(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    import pretty_midi

    silent = tmp_path / "silent.mid"
    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(pretty_midi.Instrument(program=0))
    midi.write(str(silent))
    assert_one_error_line(run(capsys, "sample", "jsb", "--primer", str(silent)), "no notes")


def test_a_checkpoint_that_would_run_code_gets_no_advice_to_load_it_anyway(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("loaded",))

    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 2, "config": {}, "weights": Exploit()}, evil)
    result = run(capsys, "sample", str(evil))
    assert_one_error_line(result, "evil.pt", "could run code")
    assert "weights_only" not in result.err and "loaded" not in result.out


def test_advice_keeps_the_model_and_knows_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(
        run(capsys, "sample", "jsb", "--model", "tcn"), "`sequnet train jsb --model tcn`"
    )
    result = run(capsys, "evaluate", "jbs")
    assert_one_error_line(result, "no preset 'jbs'", "sequnet presets")
    assert "sequnet train jbs" not in result.err
