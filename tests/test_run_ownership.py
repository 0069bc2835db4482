"""One process trains a run at a time: a second trainer is refused with the holder named, a
killed holder leaves the run free, and readers read a held run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch


@pytest.fixture
def trained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A run of 1 epoch (2 steps) of jsb on six chorales; its folder."""
    from sequnet_cli.checkpoints import find_run

    chorales = write_chorales(tmp_path / "chorales", 6)
    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "1")
    return find_run("jsb").path


def steps(folder: Path) -> int:
    return int(torch.load(folder / "last.pt", weights_only=True)["training"]["step"])


def test_resuming_a_run_another_process_holds_is_one_error_naming_it(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    from sequnet_cli.run_lock import RunLock

    lock = RunLock(trained)
    lock.acquire()  # as another process would: the lock is on its own open file
    try:
        result = run(capsys, "train", "--resume", trained.name, "--epochs", "2")
        assert_one_error_line(result, f"in use by process {os.getpid()}", "one process trains")
        assert steps(trained) == 2
        # Reading is not training: a held run is sampled and scored from its last checkpoint.
        out = trained.parent / "held.mid"
        succeed(capsys, "sample", trained.name, "--steps", "4", "--out", str(out))
        assert out.is_file()
        succeed(capsys, "evaluate", trained.name, "--split", "valid", "--json")
    finally:
        lock.release()
    succeed(capsys, "train", "--resume", trained.name, "--epochs", "2")
    assert steps(trained) == 4


HOLDER = """
import sys, time
from pathlib import Path
from sequnet_cli.run_lock import RunLock
lock = RunLock(Path(sys.argv[1]))  # kept: closing its file would let the run go
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_never_leaves_its_run_locked(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(trained)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = run(capsys, "train", "--resume", "jsb", "--epochs", "2")
        assert_one_error_line(result, f"in use by process {holder.pid}", "kill")
    finally:
        holder.send_signal(signal.SIGKILL)  # as the out-of-memory killer would
        holder.wait()
    succeed(capsys, "train", "--resume", "jsb", "--epochs", "2")
    assert steps(trained) == 4


def test_nproc_on_a_held_run_is_refused_before_any_process_starts(
    capsys: pytest.CaptureFixture[str], trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli import launcher
    from sequnet_cli.run_lock import RunLock

    def never(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("processes were started")

    monkeypatch.setattr(launcher, "launch", never)
    lock = RunLock(trained)
    lock.acquire()
    try:
        result = run(capsys, "train", "--resume", "jsb", "--epochs", "2", "--nproc", "2")
    finally:
        lock.release()
    assert_one_error_line(result, f"in use by process {os.getpid()}")


def test_training_and_search_trials_hold_their_runs_while_they_train(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.errors import CheckpointError
    from sequnet_cli.run_lock import RunLock
    from sequnet_cli.training import Trainer

    real, refusals = Trainer._step, []

    def step(self: Trainer, batch: Any) -> tuple[float, int]:
        try:
            RunLock(self.run.path).acquire()  # another trainer of the same run
        except CheckpointError as refused:
            refusals.append(str(refused))
        return real(self, batch)

    monkeypatch.setattr(Trainer, "_step", step)
    chorales = write_chorales(tmp_path / "chorales", 6)
    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "1")
    assert len(refusals) == 2 and all("in use by process" in r for r in refusals)
    preset = tmp_path / "tiny.toml"
    preset.write_text(
        'description = "tiny"\ntask = "piano-roll"\nmodel = "small"\n[data]\ndataset = "jsb"\n'
        "[train]\nepochs = 1\nbatch_size = 2\n[tune]\n"
        "train.lr = { low = 1e-3, high = 0.1, log = true }\n"
        '[small]\narchitecture = "sequnet"\nchannels = [6, 6]\n'
    )
    succeed(capsys, "tune", str(preset), "--data", str(chorales), "--trials", "1")
    assert len(refusals) == 4
