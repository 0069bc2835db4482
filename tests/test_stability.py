"""`sequnet evaluate --generation`: the tasks' window statistics, the distance and the drift,
the piano roll's frames per number of voices, and the command end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli import assert_one_error_line, run, succeed, write_chorales
from test_cli_audio import TINY as AUDIO_TINY
from test_cli_audio import tone
from test_cli_piano_roll import TINY as TINY_ROLLS
from test_cli_piano_roll import midi_folder, train_tiny  # noqa: F401  (a fixture)

from sequnet_cli.data.audio import AudioSplit
from sequnet_cli.data.audio_decoding import mu_law_encode
from sequnet_cli.stability import Distribution, _spread, _window
from sequnet_cli.tasks.audio import AudioStability
from sequnet_cli.tasks.piano_roll import PianoRollStability

RATE = 16000


def test_piano_roll_statistics_count_onsets_polyphony_and_pitch_classes() -> None:
    roll = np.zeros((8, 88), dtype=bool)
    roll[:, 60 - 21] = True  # a C held for the whole window: one onset
    roll[::2, 64 - 21] = True  # an E struck on every other frame: four onsets
    measure = PianoRollStability([roll.copy(), roll.copy()])
    stats = measure.statistics(roll)
    assert stats["notes/frame"] == pytest.approx(5 / 8)
    assert stats["polyphony"] == pytest.approx(12 / 8)
    assert stats["pitch-class distance"] == pytest.approx(0.0)  # the data's own profile
    other = np.zeros((8, 88), dtype=bool)
    other[:, 61 - 21] = True  # C sharp only: no class in common
    assert measure.statistics(other)["pitch-class distance"] == pytest.approx(1.0)
    assert measure.statistics(np.zeros((8, 88), bool))["pitch-class distance"] == 1.0
    assert len(measure.reference()) == 2


def split_of(audio: np.ndarray) -> AudioSplit:
    codes = mu_law_encode(audio)
    return AudioSplit("test", codes, (Path("x.wav"),), np.array([0]), np.array([len(codes)]), RATE)


def test_audio_statistics_tell_a_tone_from_noise() -> None:
    t = np.arange(3 * RATE) / RATE
    measure = AudioStability(RATE, split_of(0.5 * np.sin(2 * np.pi * 440 * t)))
    tone_stats = measure.reference()
    assert len(tone_stats) == 3
    noise = mu_law_encode(np.random.default_rng(0).uniform(-0.5, 0.5, RATE))
    noise_stats = measure.statistics(noise)
    assert tone_stats[0]["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert tone_stats[0]["flatness"] < 0.01
    assert noise_stats["flatness"] > 0.3
    # The centroid of the magnitude spectrum: mu-law's quantisation noise lifts the tone's.
    assert 400 < tone_stats[0]["centroid Hz"] < 1000
    assert noise_stats["centroid Hz"] > 3000


class Measure:
    names = ("a", "b")

    def statistics(self, values: np.ndarray) -> dict[str, float]:
        return {"a": float(values.mean()), "b": 1.0}


def test_distance_is_the_mean_standardised_deviation_over_statistics_and_clips() -> None:
    reference = _spread([{"a": 0.0, "b": 1.0}, {"a": 2.0, "b": 1.0}], ("a", "b"))
    assert reference == {"a": (1.0, 1.0), "b": (1.0, 0.0)}
    clips = np.array([[3.0, 3.0], [1.0, 1.0]])  # clip means 3 and 1: 2 and 0 spreads off
    window = _window(Measure(), reference, clips)  # type: ignore[arg-type]
    assert window == {"a": 2.0, "b": 1.0, "distance": pytest.approx((2 / 2 + 0 / 2) / 2)}


def test_a_distribution_is_shares_up_to_the_highest_number_and_their_total_variation() -> None:
    data = np.array([2, 0, 0, 18, 180, 0, 0])  # frames with 0..6 voices
    generated = np.array([0, 0, 10, 10, 70, 10, 0])
    distribution = Distribution.of("voices", data, generated)
    assert distribution.data == pytest.approx([0.01, 0, 0, 0.09, 0.9, 0])
    assert distribution.generated == pytest.approx([0, 0, 0.1, 0.1, 0.7, 0.1])
    # |0.01| + |-0.1| + |-0.01| + |0.2| + |-0.1|, halved
    assert distribution.distance == pytest.approx(0.21)
    assert Distribution.of("voices", data, data).distance == 0.0
    silent = Distribution.of("voices", np.array([5, 0]), np.array([0, 0]))
    assert silent.data == [1.0] and silent.generated == [0.0] and silent.distance == 0.5


def test_evaluate_generation_reports_frames_per_number_of_voices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chorales = write_chorales(tmp_path / "chorales", 6)  # four voices in every frame
    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *TINY_ROLLS)
    arguments = ["--generation", "--seconds", "4", "-n", "2", "--data", str(chorales)]
    report = json.loads(succeed(capsys, "evaluate", "jsb", *arguments, "--json").out)
    distribution = report["distribution"]
    assert distribution["counted"] == "voices"
    assert distribution["data"] == [0, 0, 0, 0, 1.0] == distribution["generated"]
    assert distribution["distance"] == 0.0
    two = json.loads(succeed(capsys, "evaluate", "jsb", *arguments, "--voices", "2", "--json").out)
    assert two["distribution"]["generated"] == [0, 0, 1.0, 0, 0]
    assert two["distribution"]["distance"] == 1.0
    table = " ".join(succeed(capsys, "evaluate", "jsb", *arguments, "--voices", "2").out.split())
    assert "frames per number of voices" in table and "voices distance 1.000" in table
    assert "│ 2 │ 0.0% │ 100.0% │" in table and "│ 4 │ 100.0% │ 0.0% │" in table
    assert_one_error_line(run(capsys, "evaluate", "jsb", *arguments, "--voices", "x"), "--voices")


def test_evaluate_generation_on_a_piano_roll_model(
    capsys: pytest.CaptureFixture[str],
    midi_folder: Path,  # noqa: F811
) -> None:
    train_tiny(capsys, midi_folder)
    data = ["--data", str(midi_folder)]
    arguments = ["--generation", "--seconds", "20", "-n", "2", "--json", *data]
    report = json.loads(succeed(capsys, "evaluate", "jsb", *arguments).out)
    assert report["statistics"] == ["notes/frame", "polyphony", "pitch-class distance"]
    # The MIDI folder is framed at four frames per beat: 20 s at 120 beats per minute.
    assert report["window"] == "8 frames" and report["clips"] == 2 and report["steps"] == 160
    assert report["temperature"] == 1.0  # the piano-roll task's default
    assert len(report["windows"]) == 20
    assert all(window["distance"] >= 0 for window in report["windows"])
    assert report["drift"] == pytest.approx(
        report["windows"][-1]["distance"] - report["windows"][0]["distance"]
    )
    table = succeed(
        capsys, "evaluate", "jsb", "--generation", "--seconds", "4", "--temperature", "0.8", *data
    ).out
    assert "pitch-class distance" in table and "drift" in table and "data" in table
    assert "temperature 0.8" in table
    assert_one_error_line(
        run(capsys, "evaluate", "jsb", "--generation", "--seconds", "0.5", *data), "window"
    )
    assert_one_error_line(run(capsys, "evaluate", "jsb", "--generation", "-n", "0"), "-n")


def test_evaluate_generation_on_an_audio_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "takes"
    folder.mkdir()
    for index, frequency in enumerate([220.0, 330.0, 440.0, 550.0]):
        sf.write(folder / f"take{index}.flac", tone(2.5, frequency), 22050)
    trained = run(
        capsys, "train", "piano-small", "--data", str(folder), "--steps", "2", *AUDIO_TINY
    )
    assert trained.code == 0, trained.err
    arguments = ["--generation", "--seconds", "2", "-n", "2", "--json"]
    report = json.loads(succeed(capsys, "evaluate", "piano-small", *arguments).out)
    assert report["statistics"] == ["rms", "flatness", "centroid Hz"]
    assert report["window"] == "second" and len(report["windows"]) == 2
    assert report["temperature"] == 0.95  # the audio task's default, the paper's
    assert set(report["data"]) == {"rms", "flatness", "centroid Hz"}
    assert 0.1 < report["data"]["rms"]["mean"] < 0.4  # the tones
    assert "distribution" not in report  # nothing counted per audio sample
    voices = run(capsys, "evaluate", "piano-small", *arguments, "--voices", "4")
    assert_one_error_line(voices, "--voices is for piano-roll models")
