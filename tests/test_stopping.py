"""How commands stop: SIGTERM does what Ctrl-C does (a resumable checkpoint, a shorter valid
file, one line, exit code 1), limits count the whole run and say when one is reached already,
and a limit of zero is refused alike for epochs, steps and minutes.

SIGTERM is sent for real, from inside the work, once the command has said it handles it: a
process that does not would be killed, and the test with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pretty_midi
import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch


@pytest.fixture
def chorales(tmp_path: Path) -> Path:
    return write_chorales(tmp_path / "chorales", 6)


def terminate_this_process() -> None:
    """SIGTERM to this process, as a job scheduler sends it; refused (a test failure) unless
    the running command handles it."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise AssertionError("SIGTERM is not handled: it would kill the process without a word")
    os.kill(os.getpid(), signal.SIGTERM)


def last_step(folder: Path) -> int:
    return int(torch.load(folder / "last.pt", weights_only=True)["training"]["step"])


def the_run() -> Path:
    from sequnet_cli.checkpoints import find_run

    return find_run("jsb").path


# --- SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_during_training_saves_a_resumable_checkpoint(
    capsys: pytest.CaptureFixture[str], chorales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.training import Trainer

    real, calls = Trainer._step, []

    def step(self: Trainer, batch: Any) -> tuple[float, int]:
        calls.append(1)
        if len(calls) == 3:  # mid-epoch 2: the checkpoint of step 2 is older
            terminate_this_process()
        return real(self, batch)

    monkeypatch.setattr(Trainer, "_step", step)
    result = run(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "5")
    assert_one_error_line(result, "interrupted", "saved after 1 epoch and 1 of 2 steps", "--resume")
    assert last_step(the_run()) == 3  # the step in progress finished, then the run was saved
    monkeypatch.setattr(Trainer, "_step", real)
    succeed(capsys, "train", "--resume", "jsb", "--epochs", "3")
    assert last_step(the_run()) == 6


def test_sigterm_during_sampling_writes_a_shorter_valid_file(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sequnet_cli.console import GenerationDisplay

    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "1")
    real, chunks = GenerationDisplay.advance, []

    def advance(self: GenerationDisplay, count: int) -> None:
        chunks.append(count)
        real(self, count)
        if len(chunks) == 1:
            terminate_this_process()

    monkeypatch.setattr(GenerationDisplay, "advance", advance)
    out = tmp_path / "cut.mid"
    result = run(capsys, "sample", "jsb", "--steps", "100000", "--out", str(out))
    assert_one_error_line(result, "interrupted after", "shorter than asked", str(out))
    assert pretty_midi.PrettyMIDI(str(out)).get_end_time() > 0


def test_sigterm_stops_every_rank_with_a_saved_checkpoint(tmp_path: Path) -> None:
    from test_distributed import AUDIO, environment, tone_folder

    home = tmp_path / "home"
    recordings = tone_folder(tmp_path / "recordings")
    command = [
        sys.executable, "-m", "sequnet_cli", "train", *AUDIO, "--data", str(recordings),
        "--set", "train.batch_size=1", "--set", "train.eval_every=1000", "--steps", "100000",
        "--nproc", "2",
    ]  # fmt: skip
    env = {**os.environ, **environment(home), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    title = ""
    while "processes" not in title:  # rank 0's title: the ranks are about to train
        line = launcher.stdout.readline()
        assert line, launcher.communicate()
        title += line
    time.sleep(1.0)  # some steps, far fewer than the 1,000 of the first checkpoint
    launcher.send_signal(signal.SIGTERM)  # as a job scheduler stops the job
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; run "), err
    assert "is saved after" in lines[0] and "--resume" in lines[0]
    (checkpoint,) = home.glob("runs/*/last.pt")
    state = torch.load(checkpoint, weights_only=True)
    saved = state["training"]["step"]
    assert 1 <= saved < 1000 and f"({saved:,} step" in lines[0]
    assert len(state["process_rng"]) == 2  # every rank's random state: an exact resume


# --- limits ----------------------------------------------------------------------------------


def test_a_limit_reached_already_is_said_and_nothing_is_trained(
    capsys: pytest.CaptureFixture[str], chorales: Path
) -> None:
    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--steps", "3")
    folder = the_run()
    written = (folder / "last.pt").stat().st_mtime_ns
    result = run(capsys, "train", "--resume", "jsb")  # its --steps 3 is the run's
    assert_one_error_line(result, "has trained 3 steps already", "limit of 3 steps", "--steps N")
    result = run(capsys, "train", "--resume", "jsb", "--steps", "2")
    assert_one_error_line(result, "has trained 3 steps already, reaching --steps 2")
    result = run(capsys, "train", "--resume", "jsb", "--epochs", "1", "--steps", "9")
    assert_one_error_line(result, "has trained 1 epoch already, reaching --epochs 1", "--epochs N")
    assert (folder / "last.pt").stat().st_mtime_ns == written
    succeed(capsys, "train", "--resume", "jsb", "--steps", "5")  # the run's steps in all
    assert last_step(folder) == 5


def test_minutes_are_the_commands_and_a_resume_without_them_trains_on(
    capsys: pytest.CaptureFixture[str], chorales: Path
) -> None:
    settings = [*TINY, "--set", "train.epochs=2"]
    succeed(capsys, "train", "jsb", "--data", str(chorales), *settings, "--minutes", "1e-9")
    assert last_step(the_run()) == 1  # a step takes longer than that
    stored = json.loads((the_run() / "config.json").read_text())["train"]
    assert stored["minutes"] == 0 and stored["epochs"] == 2
    succeed(capsys, "train", "--resume", "jsb")  # on to the run's 2 epochs
    assert last_step(the_run()) == 4
    # A run that has trained longer than a resume's --minutes in all still resumes: the
    # minutes are this command's, which has trained nothing yet.
    succeed(capsys, "train", "--resume", "jsb", "--epochs", "3", "--minutes", "1e-9")
    assert last_step(the_run()) == 5


def test_the_help_says_what_each_limit_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # each option's help on one line
    text = " ".join(succeed(capsys, "train", "--help").out.split())
    assert text.count("a resumed run's earlier ones included; kept by the run") == 2
    assert "minutes of training by this command; not kept" in text


@pytest.mark.parametrize("limit", ["--steps", "--minutes", "--epochs"])
def test_a_limit_of_zero_is_refused_alike(
    capsys: pytest.CaptureFixture[str], chorales: Path, limit: str
) -> None:
    from sequnet_cli.paths import runs_dir

    result = run(capsys, "train", "jsb", "--data", str(chorales), *TINY, limit, "0")
    assert_one_error_line(result, f"{limit} 0", "nothing to train", f"leave {limit} out")
    assert list(runs_dir().iterdir()) == []
