"""Files and messages: what `sample` writes where, what a full disk or an unwritable user folder
does, options that do not apply, and output that other programs read (no markup, no blank line,
no PyTorch internals)."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pretty_midi
import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales
from rich.console import Console

import sequnet_cli

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch
SHIPPED_DEMOS = Path(sequnet_cli.__file__).parent / "demo_checkpoints"


@pytest.fixture
def trained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A jsb run of 1 epoch on six chorales; its folder."""
    from sequnet_cli.checkpoints import find_run

    chorales = write_chorales(tmp_path / "chorales", 6)
    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "1")
    return find_run("jsb").path


@pytest.fixture
def shipped_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sequnet_cli.demos.DEMO_FOLDER", SHIPPED_DEMOS)


def test_an_out_with_a_trailing_slash_is_a_folder_whatever_its_dots(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "jsb-demo-T0.7"
    succeed(capsys, "sample", "jsb", "-n", "2", "--steps", "4", "--out", f"{folder}/")
    assert sorted(p.name for p in folder.iterdir()) == ["jsb-sample-1.mid", "jsb-sample-2.mid"]
    one = tmp_path / "one.take"
    succeed(capsys, "sample", "jsb", "--steps", "4", "--out", f"{one}{os.sep}")
    assert [p.name for p in one.iterdir()] == ["jsb-sample-1.mid"]


def test_a_primer_that_is_a_folder_is_said_to_be_one(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    result = run(capsys, "sample", "jsb", "--primer", str(tmp_path), "--steps", "4")
    assert_one_error_line(result, str(tmp_path), "is a folder", "give one file")


class FullDisk(io.RawIOBase):
    """A file on a full disk: every write fails as the operating system reports it."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        return self.descriptor

    def close(self) -> None:
        if not self.closed:
            os.close(self.descriptor)
        super().close()


def test_a_full_disk_is_said_as_such_and_the_last_checkpoint_is_kept(
    capsys: pytest.CaptureFixture[str], trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sequnet_cli.files

    before = {name: (trained / name).read_bytes() for name in ("last.pt", "config.json")}
    monkeypatch.setattr(sequnet_cli.files.os, "fdopen", lambda fd, mode: FullDisk(fd))
    result = run(capsys, "train", "--resume", "jsb", "--epochs", "2")
    # The first file the end of epoch 2 writes: config.json (its --epochs changed), or last.pt.
    assert_one_error_line(
        result,
        f"no space left on device writing {trained}{os.sep}",
        "keeps its last complete checkpoint",
        f"--resume {trained.name}",
    )
    assert "unexpected pos" not in result.err
    assert {name: (trained / name).read_bytes() for name in before} == before
    assert [p.name for p in trained.iterdir() if p.name.endswith(".tmp")] == []


def test_an_unwritable_user_folder_does_not_stop_the_shipped_demo(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shipped_demos: None,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SEQUNET_HOME", str(blocker / "home"))  # can never be made
    out = tmp_path / "demo.mid"
    result = succeed(capsys, "sample", "jsb", "--steps", "8", "--out", str(out))
    assert "shipped demo" in result.out
    assert pretty_midi.PrettyMIDI(str(out)).instruments


def test_options_that_do_not_apply_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shipped_demos: None
) -> None:
    out = str(tmp_path / "x.wav")
    result = run(capsys, "sample", "piano-small", "--tempo", "90", "--out", out)
    assert_one_error_line(result, "--tempo does not apply to this model", "audio")
    result = run(capsys, "sample", "piano-small", "--program", "5", "--out", out)
    assert_one_error_line(result, "--program does not apply")
    result = run(capsys, "sample", "piano-small", "--seconds", "1", "--steps", "40", "--out", out)
    assert_one_error_line(result, "--steps or with --seconds, not both")
    assert not Path(out).exists()


def test_the_trial_table_holds_no_markup_however_it_is_printed() -> None:
    from dataclasses import dataclass

    from sequnet_cli.console import _trial_table

    @dataclass
    class Trial:
        number: int
        state: str
        params: dict[str, str]
        validations: int
        score: float | None
        seconds: float
        note: str

    rows = [
        Trial(0, "running", {"lr": "0.01"}, 1, 8.5, 12.0, ""),
        Trial(1, "failed", {"lr": "0.1"}, 0, None, 3.0, "[enforce fail at alloc_cpu.cpp:127]"),
    ]
    for console in (Console(file=io.StringIO(), width=200), Console(file=io.StringIO(), width=200, markup=False)):  # fmt: skip
        console.print(_trial_table(rows, ["lr"], "NLL", "study", "2 trials"))
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert "[cyan]" not in text and "[/]" not in text and "[red]" not in text
        assert "running" in text and "[enforce fail at alloc_cpu.cpp:127]" in text


def test_a_report_names_its_checkpoint_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    # A path with brackets in it is no markup: printed whole, never refused by Rich.
    from sequnet_cli.console import print_stability
    from sequnet_cli.stability import StabilityReport

    path = "/runs/[take 2]/[/old]/best.pt"
    header = {"preset": "jsb", "model": "sequnet", "architecture": "sequnet", "checkpoint": path}
    windows = [{"notes/frame": 1.0, "distance": 0.5}]
    report = StabilityReport(
        header, "8 frames", ("notes/frame",), {"notes/frame": (1.0, 0.5)}, windows, 1, 8,
        "frames", 1.0,
    )  # fmt: skip
    print_stability(report, as_json=False)
    assert f"checkpoint: {path}" in capsys.readouterr().out


def test_evaluate_json_is_nothing_but_the_document(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    out = succeed(capsys, "evaluate", "jsb", "--json").out
    assert out.startswith("{")
    json.loads(out)


def test_runs_warns_of_a_damaged_checkpoint_in_its_own_words(
    capsys: pytest.CaptureFixture[str], trained: Path
) -> None:
    last = trained / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    listing = succeed(capsys, "runs")
    (warning,) = [line for line in listing.err.splitlines() if line.startswith("warning:")]
    assert str(last) in warning and "truncated or damaged" in warning
    for internal in ("Pytorch", "miniz", "RuntimeError", "zip archive", "central directory"):
        assert internal not in warning
    assert torch.load(trained / "best.pt", weights_only=True)["training"]["step"] == 2
