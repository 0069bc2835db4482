"""Ctrl-C anywhere: one `error: interrupted ...` line, exit code 1, and whatever was complete is
kept and named (Ctrl-C is simulated by a function that raises KeyboardInterrupt)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pretty_midi
import pytest
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch


@pytest.fixture
def chorales(tmp_path: Path) -> Path:
    return write_chorales(tmp_path / "chorales", 6)


def interrupt_on_call(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, call: int
) -> Callable[[], None]:
    """Make `owner.name` raise KeyboardInterrupt on its `call`-th call; returns an undo."""
    real, calls = getattr(owner, name), []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
    return lambda: monkeypatch.setattr(owner, name, real)


def run_folders() -> list[Path]:
    from sequnet_cli.paths import runs_dir

    return sorted(runs_dir().iterdir())


def test_train_interrupted_while_reading_the_data_writes_nothing(
    capsys: pytest.CaptureFixture[str], chorales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.tasks.piano_roll import PianoRollTask

    interrupt_on_call(monkeypatch, PianoRollTask, "open_data", 1)
    result = run(capsys, "train", "jsb", "--data", str(chorales), *TINY)
    assert_one_error_line(result, "interrupted before training started", "nothing was written")
    assert run_folders() == []


def test_train_interrupted_at_its_first_step_writes_nothing(
    capsys: pytest.CaptureFixture[str], chorales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.training import Trainer

    interrupt_on_call(monkeypatch, Trainer, "_step", 1)
    result = run(capsys, "train", "jsb", "--data", str(chorales), *TINY)
    assert_one_error_line(result, "before the first training step", "nothing was written")
    assert run_folders() == []


def test_ctrl_c_before_the_first_checkpoint_saves_a_resumable_one(
    capsys: pytest.CaptureFixture[str], chorales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.training import Trainer

    undo = interrupt_on_call(monkeypatch, Trainer, "_step", 2)  # one step done, none saved
    result = run(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "2", *TINY)
    assert_one_error_line(result, "saved after 0 epochs and 1 of 2 steps", "--resume", "last")
    (folder,) = run_folders()
    assert not (folder / "best.pt").exists()
    assert find_run("jsb").load_state("last")["training"]["step"] == 1
    # Nothing validated yet: the advice is to use the last checkpoint, which works.
    assert_one_error_line(run(capsys, "sample", "jsb"), "--checkpoint last")
    last = str(chorales.parent / "last.mid")
    succeed(capsys, "sample", "jsb", "--checkpoint", "last", "--steps", "4", "--out", last)
    undo()
    succeed(capsys, "train", "--resume", "jsb")
    assert find_run("jsb").load_state("best")["training"]["epoch"] == 2


def test_a_run_interrupted_mid_epoch_resumes_exactly(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import torch

    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.training import Trainer

    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "straight"))
    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "3", *TINY)
    straight = find_run("jsb").load_state("last")

    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "interrupted"))
    undo = interrupt_on_call(monkeypatch, Trainer, "_step", 4)  # in the middle of epoch 2
    result = run(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "3", *TINY)
    assert_one_error_line(result, "interrupted", "1 epoch and 1 of 2 steps")
    undo()
    succeed(capsys, "train", "--resume", "jsb")
    resumed = find_run("jsb").load_state("last")
    for key in ("weights", "training_weights", "averaged_weights"):
        for name, value in straight[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=0, atol=0)


def test_sample_interrupted_mid_generation_writes_the_frames_so_far(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from sequnet_cli.tasks.piano_roll import PianoRollSampler

    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *TINY)
    interrupt_on_call(monkeypatch, PianoRollSampler, "draw", 11)
    target = tmp_path / "short.mid"
    result = run(capsys, "sample", "jsb", "--steps", "64", "--out", str(target))
    assert_one_error_line(result, "interrupted after 10 of 64 frames", str(target))
    assert f"wrote {target} (10 frames" in result.out
    assert pretty_midi.PrettyMIDI(str(target)).get_end_time() <= 10 * 0.125 + 1e-6


def test_sample_interrupted_before_generating_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from sequnet_cli.tasks.piano_roll import PianoRollSampler

    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *TINY)
    interrupt_on_call(monkeypatch, PianoRollSampler, "draw", 1)
    target = tmp_path / "none.mid"
    result = run(capsys, "sample", "jsb", "--steps", "64", "--out", str(target))
    assert_one_error_line(result, "interrupted before any of 64 frames", "nothing was written")
    assert not target.exists()
