"""Distributed training on the CPU (Gloo, 2 processes, tiny data): the same steps as one process,
exact resume, one voice, and a clean end when a process dies or the user presses Ctrl-C.

The ranks are started by torchrun's own launcher (`elastic_launch`): with a function of this
module in spawned processes, or with the `sequnet` command itself through `train --nproc`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from cli import assert_one_error_line, run, succeed
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from sequnet_cli.app import main
from sequnet_cli.checkpoints import find_run

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Tiny networks; no dropout (its masks differ between one process and two), weight averaging
# and weight decay as the presets have them.
JSB = ["jsb", "--set", "model.channels=[8,8]", "--set", "model.dropout=0"]
AUDIO = ["piano-small", "--set", "model.levels=3", "--set", "model.channels=4",
         "--set", "model.depth=1", "--set", "data.excerpt_targets=64",
         "--set", "train.eval_every=2", "--set", "train.eval_batches=2"]  # fmt: skip


def batch(size: int) -> list[str]:
    return ["--set", f"train.batch_size={size}"]


# --- running ranks ---------------------------------------------------------------------------


def launch(function: Callable[..., Any], *arguments: Any) -> dict[int, Any]:
    """`function(*arguments)` in 2 ranks started as torchrun starts them; returns by rank."""
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=2,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
    )
    return elastic_launch(config, function)(*arguments)


def train_in_ranks(environment: dict[str, str], commands: list[list[str]]) -> list[str]:
    """Each rank: `sequnet train ...` for every command in turn (each in its own home folder,
    the command's first item); returns the run folders made."""
    os.environ.update(environment)
    torch.set_num_threads(1)  # two ranks share the CI machine's two cores
    made = []
    for home, *arguments in commands:
        os.environ["SEQUNET_HOME"] = home
        try:
            main(["train", *arguments])
        except SystemExit as done:
            if done.code:
                raise RuntimeError(f"sequnet train {' '.join(arguments)} exited {done.code}")
        made.append(
            str(find_run(arguments[0] if arguments[0] != "--resume" else arguments[1]).path)
        )
    return made


def environment(home: Path) -> dict[str, str]:
    return {
        "SEQUNET_DATA_DIR": str(SHARED_DATA / "polyphonic"),
        "SEQUNET_DEVICE": "cpu",
        "SEQUNET_HOME": str(home),
    }


def tone_folder(folder: Path, count: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        t = np.arange(8000) / 16000
        sf.write(
            folder / f"take{index}.wav", 0.4 * np.sin(2 * np.pi * (200 + 70 * index) * t), 16000
        )
    return folder


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone_folder(tmp_path_factory.mktemp("audio") / "recordings")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, recordings: Path) -> dict[str, Path]:
    """Runs made by 2 ranks, by scenario: each scenario's run folder (its last.pt)."""
    root = tmp_path_factory.mktemp("ranks")
    audio = [*AUDIO, "--data", str(recordings)]
    dropout = [*JSB[:-1], "model.dropout=0.5"]
    scenarios = {  # name -> the commands, in one home folder
        "jsb": [[*JSB, *batch(1), "--steps", "5"]],
        "audio": [[*audio, *batch(1), "--steps", "4"]],
        "dropout": [[*dropout, "--steps", "5"]],
        "dropout-resumed": [[*dropout, "--steps", "2"], ["--resume", "jsb", "--steps", "5"]],
        "audio-resumed": [[*audio, *batch(1), "--steps", "2"], ["--resume", "piano-small", "--steps", "4"]],
        "jsb-half": [[*JSB, *batch(1), "--steps", "2"]],
        "audio-minutes": [[*audio, *batch(1), "--minutes", "0.002"]],
    }  # fmt: skip
    if not SHARED_DATA.is_dir():  # the piano-roll scenarios need JSB Chorales
        scenarios = {name: steps for name, steps in scenarios.items() if "audio" in name}
    commands = [
        [str(root / name), *command] for name, steps in scenarios.items() for command in steps
    ]
    made = launch(train_in_ranks, environment(root), commands)[0]
    folders = dict(
        zip([name for name, steps in scenarios.items() for _ in steps], made, strict=True)
    )
    return {name: Path(folder) for name, folder in folders.items()}


def last(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "last.pt", weights_only=True)


def assert_same_weights(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first["training"]["step"] == second["training"]["step"]
    for key in ("weights", "training_weights"):
        assert (key in first) == (key in second)
        if key in first:
            torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=2e-6)


def train_here(capsys: pytest.CaptureFixture[str], *arguments: str) -> Path:
    succeed(capsys, "train", *arguments)
    return find_run(arguments[0] if arguments[0] != "--resume" else arguments[1]).path


# --- shares of the data ----------------------------------------------------------------------


def piece_lengths(batches: Any) -> list[list[int]]:
    """Each batch's pieces, by length (predicted frames + 1); [] for nothing to predict."""
    return [sorted(int(row.sum()) + 1 for row in batch.mask if row.sum()) for batch in batches]


def test_each_rank_reads_its_own_share_of_every_step_and_evaluation_pass() -> None:
    from sequnet_cli.tasks import Shard
    from sequnet_cli.tasks.piano_roll import PianoRollData

    # Five pieces told apart by their length; 2 ranks at batch 2: 2 steps, the second with one
    # piece, so that rank 1 takes part with nothing to predict.
    pieces = [np.ones((length, 88), dtype=bool) for length in (3, 4, 5, 6, 7)]
    data = PianoRollData({"train": pieces, "valid": pieces * 8, "test": []})

    def epoch(batch_size: int, shard: Shard) -> list[list[int]]:
        generator = torch.Generator().manual_seed(5)
        return piece_lengths(data.batches("train", batch_size, generator, shard=shard))

    alone, first, second = epoch(4, Shard(0, 1)), epoch(2, Shard(0, 2)), epoch(2, Shard(1, 2))
    assert len(alone) == len(first) == len(second) == data.epoch_batches(4) == 2
    assert [sorted(a + b) for a, b in zip(first, second, strict=True)] == alone
    assert second[1] == []
    evaluation = [list(data.batches("valid", 16, shard=Shard(rank, 2))) for rank in (0, 1)]
    assert [len(batches) for batches in evaluation] == [2, 1]  # batches 0 and 2, and 1


def test_each_rank_reads_its_own_rows_of_the_excerpts_drawn_for_all() -> None:
    from sequnet_cli.data.audio import AudioSplit

    samples = np.arange(1000, dtype=np.uint8)
    split = AudioSplit("train", samples, (Path("a"), Path("b")), np.array([0, 600]),
                       np.array([600, 400]), 16000)  # fmt: skip
    drawn = [split.random_excerpts(6, 50, torch.Generator().manual_seed(3), rows=slice(r, None, 2))
             for r in (0, 1)]  # fmt: skip
    alone = split.random_excerpts(6, 50, torch.Generator().manual_seed(3))
    assert torch.equal(torch.stack(drawn, dim=1).reshape(6, 50), alone)


# --- equivalence -----------------------------------------------------------------------------


@pytest.mark.data
def test_two_ranks_at_half_the_batch_step_as_one_process_piano_roll(
    capsys: pytest.CaptureFixture[str], two_ranks: dict[str, Path]
) -> None:
    alone = train_here(capsys, *JSB, *batch(2), "--steps", "5")
    assert_same_weights(last(two_ranks["jsb"]), last(alone))


def test_two_ranks_at_half_the_batch_step_as_one_process_audio(
    capsys: pytest.CaptureFixture[str], two_ranks: dict[str, Path], recordings: Path
) -> None:
    alone = train_here(capsys, *AUDIO, "--data", str(recordings), *batch(2), "--steps", "4")
    assert_same_weights(last(two_ranks["audio"]), last(alone))


@pytest.mark.data
def test_a_resumed_two_rank_run_matches_an_uninterrupted_one(two_ranks: dict[str, Path]) -> None:
    # With dropout, which draws from each rank's own random state.
    assert_same_weights(last(two_ranks["dropout-resumed"]), last(two_ranks["dropout"]))
    assert_same_weights(last(two_ranks["audio-resumed"]), last(two_ranks["audio"]))
    history = last(two_ranks["audio-resumed"])["training"]["history"]
    assert history == last(two_ranks["audio"])["training"]["history"]


@pytest.mark.data
def test_resuming_in_another_number_of_processes_continues_the_run(
    capsys: pytest.CaptureFixture[str], two_ranks: dict[str, Path], tmp_path: Path
) -> None:
    # 2 ranks at batch 1 for 2 steps, then 1 process at batch 2: the same effective batch, so
    # the same steps as 1 process at batch 2 throughout.
    half = shutil.copytree(two_ranks["jsb-half"], tmp_path / "half")
    resumed = train_here(capsys, "--resume", str(half), *batch(2), "--steps", "5")
    alone = train_here(capsys, *JSB, *batch(2), "--steps", "5")
    assert_same_weights(last(resumed), last(alone))


def test_minutes_stop_every_rank_at_the_same_step(two_ranks: dict[str, Path]) -> None:
    # Each rank's clock says when 0.12 s have passed; they agree on the first one to say so
    # (else one rank would wait for the other's next step forever).
    state = last(two_ranks["audio-minutes"])
    assert state["training"]["step"] >= 1 and len(state["process_rng"]) == 2


def test_validation_gives_the_figure_of_one_process(
    capsys: pytest.CaptureFixture[str], two_ranks: dict[str, Path]
) -> None:
    folder = two_ranks["audio"]
    recorded = last(folder)["training"]["history"][-1]["valid"]
    scores = succeed(  # --quick: the excerpts validation scores
        capsys, "evaluate", str(folder), "--checkpoint", "last", "--split", "valid", "--quick",
        "--json",
    )  # fmt: skip
    assert json.loads(scores.out)["scores"]["valid"] == pytest.approx(recorded, rel=1e-6)


# --- one voice, clean ends -------------------------------------------------------------------


def test_nproc_trains_in_two_ranks_with_one_summary_and_one_run(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    recordings = tone_folder(tmp_path / "recordings")
    arguments = [*AUDIO, "--data", str(recordings), *batch(1), "--steps", "4", "--nproc", "2"]
    try:
        main(["train", *arguments])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out.count("run piano-small-sequnet-") == 1 and "on 2 processes" in out
    assert "error" not in err.lower() and "warning" not in err.lower(), err
    (folder,) = (tmp_path / "sequnet-home" / "runs").iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".lock", "best.pt", "config.json", "last.pt"]  # process 0 held the run
    assert len(last(folder)["process_rng"]) == 2


def fail_rank_one_at_step_four(home: str, arguments: list[str], how: str) -> None:
    """A rank's work: train; rank 1 is killed (as by the out-of-memory killer) or fails with an
    error of its own at step 4, when rank 0 has written the checkpoint of step 2."""
    from sequnet_cli.errors import DeviceError
    from sequnet_cli.training_step import TrainingStep

    if os.environ["RANK"] == "1":
        real, steps = TrainingStep.__call__, []

        def failing(self: TrainingStep, batch: Any) -> tuple[float, int]:
            steps.append(1)
            if len(steps) == 4 and how == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            if len(steps) == 4:
                raise DeviceError("out of memory on this GPU")
            return real(self, batch)

        TrainingStep.__call__ = failing  # type: ignore[method-assign]
    train_in_ranks(environment(Path(home)), [[home, *arguments]])


@pytest.mark.parametrize(
    ("how", "said"),
    [("killed", "stopped without saying why"), ("error", "process 1 of 2: out of memory")],
)
def test_a_rank_that_dies_ends_the_run_with_one_error_and_its_checkpoint_kept(
    capfd: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path, how: str, said: str
) -> None:
    arguments = [*AUDIO, "--data", str(recordings), *batch(1), "--steps", "50"]
    with pytest.raises(ChildFailedError):
        launch(fail_rank_one_at_step_four, str(tmp_path / "home"), arguments, how)
    err = capfd.readouterr().err
    # The launcher's own log lines start with W, E or I and a date; the rest is the ranks'.
    ours = [line for line in err.splitlines() if line.strip() and line[:1] not in "WEI"]
    assert len(ours) == 1 and ours[0].startswith("error: "), err
    assert said in ours[0] and "keeps its last checkpoint" in ours[0], ours[0]
    (folder,) = (tmp_path / "home" / "runs").iterdir()
    assert last(folder)["training"]["step"] == 2  # the checkpoint of step 2, intact


def test_a_rank_stopped_by_torchrun_names_a_peer_that_ended_first() -> None:
    # torchrun's agent sends SIGTERM as soon as a rank dies, often before a collective
    # operation could tell the survivors: they look for the ended process themselves.
    import torch.distributed as dist

    from sequnet_cli.rank_failures import FailureReport, Terminated, announce_process

    store = dist.HashStore()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    report = FailureReport(0)
    report.joined(store, 2)
    announce_process(store, 0)
    announce_process(store, 1, os.getppid())  # a live process: the signal came from elsewhere
    assert report._why(Terminated()).startswith("stopped by a termination signal")
    announce_process(store, 1, ended.pid)
    assert report._why(Terminated()).startswith("process 1 of 2 stopped without saying why")


def test_ctrl_c_ends_every_rank_with_one_error_line(tmp_path: Path, recordings: Path) -> None:
    home = tmp_path / "home"
    command = [sys.executable, "-m", "sequnet_cli", "train", *AUDIO, "--data", str(recordings),
               *batch(1), "--steps", "100000", "--nproc", "2"]  # fmt: skip
    env = {**os.environ, **environment(home)}
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(home.glob("runs/*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    launcher.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the launcher
    _, err = (stream.decode() for stream in launcher.communicate(timeout=60))
    assert launcher.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err
    (checkpoint,) = home.glob("runs/*/last.pt")
    assert torch.load(checkpoint, weights_only=True)["training"]["step"] >= 2


def test_nproc_under_torchrun_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                        ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "1")):  # fmt: skip
        monkeypatch.setenv(name, value)
    assert_one_error_line(run(capsys, "train", "jsb", "--nproc", "2"), "--nproc")
