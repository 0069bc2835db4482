"""`sequnet sample` on piano rolls, end to end on tiny data: the voices per frame (`--voices`),
the tempo samples are written at, and models stored before either was kept with the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales
from test_cli_piano_roll import TINY

from sequnet_cli import demos
from sequnet_cli.checkpoints import find_run
from sequnet_cli.data.midi import midi_to_roll


def train(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    succeed(capsys, "train", "jsb", "--data", str(folder), "--epochs", "2", *TINY)


def voices(path: Path, frames: int) -> np.ndarray:
    """Voices per frame of a written file of `frames` frames, read back at the training files'
    four per beat."""
    counts = midi_to_roll(path, frames_per_beat=4).sum(axis=1)
    assert len(counts) == frames
    return counts


def tempo(path: Path) -> float:
    """The tempo of a written file to a thousandth of a beat per minute (MIDI stores whole
    microseconds per beat: 90 reads back as 90.00009)."""
    return round(float(pretty_midi.PrettyMIDI(str(path)).get_tempo_changes()[1][0]), 3)


@pytest.fixture
def chorales(tmp_path: Path) -> Path:
    """Six four-voice chorales at 90 beats per minute: every frame has four voices."""
    return write_chorales(tmp_path / "chorales", 6, tempo=90.0)


def test_a_run_keeps_its_data_voices_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    train(capsys, chorales)
    profile = find_run("jsb").load_state("best")["data_profile"]
    assert len(profile["voices"]) == 89 and profile["voices"][4] == sum(profile["voices"]) > 0
    kept, free, two = (tmp_path / f"{name}.mid" for name in ("kept", "free", "two"))
    options = ("--steps", "40", "--temperature", "1.5")
    assert "warning" not in succeed(capsys, "sample", "jsb", *options, "--out", str(kept)).err
    assert (voices(kept, 40) == 4).all()
    succeed(capsys, "sample", "jsb", *options, "--voices", "free", "--out", str(free))
    assert len(set(voices(free, 40))) > 1  # independent pitches: some frames have other counts
    succeed(capsys, "sample", "jsb", *options, "--voices", "2", "--out", str(two))
    assert (voices(two, 40) == 2).all()
    for wrong in ("many", "89", "-1"):
        assert_one_error_line(run(capsys, "sample", "jsb", "--voices", wrong), "--voices")


def test_a_model_stored_without_its_data_voices_draws_pitches_independently(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    # A checkpoint written before the training data's voices were stored with the run.
    train(capsys, chorales)
    best = find_run("jsb").checkpoint_path("best")
    state = torch.load(best, weights_only=True)
    del state["data_profile"]
    torch.save(state, best)
    old, free = tmp_path / "old.mid", tmp_path / "free.mid"
    sampled = succeed(capsys, "sample", "jsb", "--steps", "20", "--out", str(old))
    assert sampled.err.count("warning: ") == 1 and "--voices N" in sampled.err
    succeed(capsys, "sample", "jsb", "--steps", "20", "--voices", "free", "--out", str(free))
    assert old.read_bytes() == free.read_bytes()
    assert_one_error_line(run(capsys, "sample", "jsb", "--voices", "data"), "--voices data")
    # It knows no tempo of its files either: today's default.
    assert tempo(old) == 120.0


def test_samples_are_written_at_the_tempo_of_the_data_the_primer_or_the_option(
    capsys: pytest.CaptureFixture[str], chorales: Path, tmp_path: Path
) -> None:
    train(capsys, chorales)
    assert find_run("jsb").load_state("best")["data_profile"]["tempo"] == 90.0
    plain = tmp_path / "plain.mid"
    out = succeed(capsys, "sample", "jsb", "--steps", "16", "--out", str(plain)).out
    assert "at 90 BPM" in out and tempo(plain) == 90.0
    # 16 frames at four per beat: four beats of 90 per minute.
    assert pretty_midi.PrettyMIDI(str(plain)).get_end_time() == pytest.approx(4 * 60 / 90)

    fast = tmp_path / "fast.mid"
    succeed(capsys, "sample", "jsb", "--steps", "16", "--tempo", "150", "--out", str(fast))
    assert tempo(fast) == 150.0

    primer = write_chorales(tmp_path / "primer", 1, beats=6, tempo=72.0) / "chorale00.mid"
    primed = tmp_path / "primed.mid"
    options = ("--primer", str(primer), "--steps", "8", "--out", str(primed))
    assert "at 72 BPM" in succeed(capsys, "sample", "jsb", *options).out
    assert tempo(primed) == 72.0
    # The primer comes back at its own speed: its 24 frames, then 8 more, at 72 per minute.
    frames = midi_to_roll(primer, frames_per_beat=4)
    assert len(frames) == 24
    assert np.array_equal(midi_to_roll(primed, frames_per_beat=4)[:24], frames)
    assert pretty_midi.PrettyMIDI(str(primed)).get_end_time() == pytest.approx(32 * 60 / 72 / 4)
    alone = tmp_path / "alone.mid"
    options = ("--primer", str(primer), "--steps", "8", "--no-primer-in-output")
    succeed(capsys, "sample", "jsb", *options, "--out", str(alone))
    assert tempo(alone) == 72.0


def test_an_exported_demo_keeps_its_data_voices_and_tempo(
    capsys: pytest.CaptureFixture[str],
    chorales: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train(capsys, chorales)
    stored = find_run("jsb").load_state("best")["data_profile"]
    monkeypatch.setattr(demos, "DEMO_FOLDER", tmp_path / "demos")
    succeed(capsys, "export-demo", "jsb", "--command", "train", "--data-name", "chorales")
    (demo,) = demos.list_demos()
    assert demo.profile == stored
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "fresh-home"))  # no run: the demo plays
    target = tmp_path / "demo.mid"
    sampled = succeed(capsys, "sample", "jsb", "--steps", "12", "--out", str(target))
    assert "shipped demo" in sampled.out and "warning" not in sampled.err
    assert (voices(target, 12) == 4).all() and tempo(target) == 90.0


def test_voices_without_generation_is_refused_not_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Scoring splits draws nothing, so `--voices` there would silently do nothing."""
    result = run(capsys, "evaluate", "jsb", "--voices", "4")
    assert_one_error_line(result, "--voices", "--generation")
