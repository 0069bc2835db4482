"""Finding runs: a preset name means its newest run with a checkpoint, `runs` shows every run
as it is, and what a command says about a run agrees with what the run holds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch


@pytest.fixture
def chorales(tmp_path: Path) -> Path:
    return write_chorales(tmp_path / "chorales", 6)


def train(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> str:
    return succeed(capsys, "train", "jsb", "--data", str(data), *TINY, *extra).out


def test_a_run_killed_before_its_first_checkpoint_hides_no_other_run(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    from sequnet_cli.checkpoints import find_run

    train(capsys, chorales, "--epochs", "1")
    real = find_run("jsb")
    killed = real.path.with_name("jsb-sequnet-chorales-29991231-235959")  # newer by name
    killed.mkdir()
    shutil.copy(real.path / "config.json", killed / "config.json")

    sampled = succeed(capsys, "sample", "jsb", "--steps", "4", "--out", str(tmp_path / "a.mid"))
    assert f"model {real.path / 'best.pt'}" in sampled.out
    scored = succeed(capsys, "evaluate", "jsb", "--json", "--checkpoint", "last")
    assert json.loads(scored.out)["checkpoint"] == str(real.path / "last.pt")
    succeed(capsys, "train", "--resume", "jsb", "--epochs", "2")
    assert find_run("jsb").load_state("last")["training"]["epoch"] == 2
    listing = succeed(capsys, "runs").out
    assert re.search(r"jsb-sequnet-chorales-29991231-235959 .* empty", listing)

    explicit = run(capsys, "sample", killed.name)
    assert_one_error_line(explicit, "has no checkpoint", "stopped before its first one")
    assert "use its last" not in explicit.err


def test_runs_shows_a_run_whose_last_checkpoint_is_damaged(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    from sequnet_cli.checkpoints import find_run

    train(capsys, chorales, "--epochs", "1")
    folder = find_run("jsb").path
    last = folder / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    listing = succeed(capsys, "runs")
    assert folder.name in listing.out and "last.pt" in listing.err
    succeed(capsys, "sample", folder.name, "--steps", "4", "--out", str(tmp_path / "a.mid"))


def test_the_summary_counts_epochs_as_the_progress_lines_do(
    capsys: pytest.CaptureFixture[str], chorales: Path
) -> None:
    out = " ".join(train(capsys, chorales, "--steps", "3").split())
    assert "epoch 1 train" in out and "epoch 2 train" in out  # one line per period
    assert "1 epoch and 1 of 2 steps of epoch 2 (3 steps)" in out
    assert re.search(r"best valid NLL [\d.]+ in epoch [12] \(step [23]\)", out)


def test_the_evaluate_caption_keeps_the_checkpoint_path_whole(
    capsys: pytest.CaptureFixture[str], chorales: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.console import console

    train(capsys, chorales, "--epochs", "1")
    monkeypatch.setattr(console, "width", 40)
    out = succeed(capsys, "evaluate", "jsb").out
    assert f"checkpoint: {find_run('jsb').path / 'best.pt'}" in out.splitlines()


def test_runs_on_other_data_are_named_after_it_and_sampling_says_which(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    train(capsys, chorales, "--epochs", "1")
    listing = succeed(capsys, "runs").out
    assert re.search(r"jsb-sequnet-chorales-\d{8}-\d{6} +sequnet +chorales ", listing)
    sampled = succeed(capsys, "sample", "jsb", "--steps", "4", "--out", str(tmp_path / "a.mid"))
    assert f"data {chorales}" in sampled.out


def test_a_primer_is_framed_in_its_own_beats_whatever_the_tempo(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    """A 60 bpm primer of 39 beats is 156 frames at 4 frames per beat, as a training file of
    the same tempo would be, whatever tempo the sample is written at."""
    train(capsys, chorales, "--epochs", "1")
    primer = write_chorales(tmp_path / "primer", 1, beats=39, tempo=60.0) / "chorale00.mid"
    for tempo in ("60", "120", "200"):
        target = tmp_path / f"primed-{tempo}.mid"
        options = ("--primer", str(primer), "--steps", "4", "--tempo", tempo)
        out = succeed(capsys, "sample", "jsb", *options, "--out", str(target)).out
        assert f"wrote {target} (160 frames" in " ".join(out.split())
