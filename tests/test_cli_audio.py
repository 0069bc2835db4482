"""Raw audio end to end on tiny recordings: train -> evaluate -> sample -> WAV, and bad inputs."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli import assert_one_error_line, run, succeed

TINY = [
    "--set",
    "model.levels=3",
    "--set",
    "model.channels=4",
    "--set",
    "model.depth=1",
    "--set",
    "data.excerpt_targets=64",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.eval_batches=1",
]


def tone(seconds: float, frequency: float, rate: int = 22050, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * frequency * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return np.stack([mono] * channels, axis=1)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    for index, frequency in enumerate([220.0, 330.0, 440.0, 550.0]):
        sf.write(folder / f"take{index}.flac", tone(0.5, frequency), 22050)
    return folder


def train_tiny(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    result = run(capsys, "train", "piano-small", "--data", str(data), "--steps", "2", *TINY)
    assert result.code == 0, result.err
    assert "best valid bpa" in result.out
    assert "train bpa" in result.out and "steps/s" in result.out  # the period's summary line


def test_train_evaluate_sample_wav(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, recordings)
    scores = run(capsys, "evaluate", "piano-small", "--json")
    assert scores.code == 0, scores.err
    values = json.loads(scores.out)["scores"]
    assert set(values) == {"train", "valid", "test"} and all(0 < v < 9 for v in values.values())
    from sequnet_cli.checkpoints import find_run

    history = find_run("piano-small", None).load_state("last")["training"]["history"]
    assert all(0 < entry["train"] < 9 and 0 < entry["valid"] < 9 for entry in history)

    target = tmp_path / "out.wav"
    sampled = run(
        capsys,
        "sample",
        "piano-small",
        "--seconds",
        "0.05",
        "--out",
        str(target),
        "--temperature",
        "0.95",
    )
    assert sampled.code == 0, sampled.err
    audio, rate = sf.read(target)
    assert rate == 16000 and audio.shape == (800,)


def test_audio_samples_at_the_papers_temperature_unless_told(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, recordings)
    written = {}
    for name, asked in (
        ("default", []),
        ("paper", ["--temperature", "0.95"]),
        ("one", ["--temperature", "1"]),
    ):
        target = tmp_path / f"{name}.wav"
        result = succeed(
            capsys, "sample", "piano-small", "--steps", "400", "--out", str(target), *asked
        )
        assert f"at temperature {0.95 if name != 'one' else 1}" in result.out
        written[name] = sf.read(target)[0]
    np.testing.assert_array_equal(written["default"], written["paper"])
    assert not np.array_equal(written["default"], written["one"])


def test_logistic_mixture_output_trains_evaluates_and_samples(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    coding = ["--set", "data.audio_output=logistic-mixture", "--set", "data.mixtures=2"]
    succeed(
        capsys, "train", "piano-small", "--data", str(recordings), "--steps", "2", *TINY, *coding
    )
    scores = json.loads(succeed(capsys, "evaluate", "piano-small", "--json").out)["scores"]
    assert all(0 < v < 12 for v in scores.values())
    target = tmp_path / "mixture.wav"
    succeed(capsys, "sample", "piano-small", "--steps", "300", "--out", str(target), "--seed", "1")
    audio, rate = sf.read(target)
    assert rate == 16000 and audio.shape == (300,) and np.abs(audio).max() <= 1.0


def test_batch_generation_and_seed(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, recordings)
    folder = tmp_path / "many"
    succeed(
        capsys,
        "sample",
        "piano-small",
        "--steps",
        "100",
        "-n",
        "2",
        "--out",
        str(folder),
        "--seed",
        "3",
    )
    first, second = sorted(folder.iterdir())
    again = tmp_path / "again"
    succeed(
        capsys,
        "sample",
        "piano-small",
        "--steps",
        "100",
        "-n",
        "2",
        "--out",
        str(again),
        "--seed",
        "3",
    )
    assert sf.read(first)[0].shape == (100,)
    assert [p.read_bytes() for p in sorted(again.iterdir())] == [
        first.read_bytes(),
        second.read_bytes(),
    ]  # same seed
    assert not np.array_equal(
        sf.read(first)[0], sf.read(second)[0]
    )  # a batch is not one output copied


def test_primer_is_continued(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, recordings)
    primer = recordings / "take0.flac"
    target = tmp_path / "continued.wav"
    succeed(
        capsys,
        "sample",
        "piano-small",
        "--primer",
        str(primer),
        "--steps",
        "160",
        "--out",
        str(target),
    )
    audio, _ = sf.read(target)
    assert audio.shape == (8000 + 160,)  # 0.5 s primer at 16 kHz, then the continuation
    # The primer comes back as written, resampled to 16 kHz and mu-law coded: a 220 Hz tone.
    spectrum = np.abs(np.fft.rfft(audio[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 220.0) <= 4.0
    only = tmp_path / "only.wav"
    succeed(
        capsys,
        "sample",
        "piano-small",
        "--primer",
        str(primer),
        "--steps",
        "160",
        "--no-primer-in-output",
        "--out",
        str(only),
    )
    assert sf.read(only)[0].shape == (160,)


def test_play_without_a_device_still_writes_the_file(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train_tiny(capsys, recordings)
    real_import = builtins.__import__

    def no_portaudio(name: str, *args: object, **kwargs: object) -> object:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    target = tmp_path / "played.wav"
    result = run(capsys, "sample", "piano-small", "--steps", "50", "--out", str(target), "--play")
    assert result.code == 0
    assert target.is_file()
    assert "could not play" in result.err and str(target) in result.err


def test_folder_without_audio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no audio here")
    (folder / "fake.wav").write_bytes(b"RIFF....not a wav")
    assert_one_error_line(run(capsys, "train", "piano-small", "--data", str(folder), *TINY))


def test_empty_folder_and_zero_length_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(run(capsys, "train", "piano-small", "--data", str(empty), *TINY))
    silent = tmp_path / "silent"
    silent.mkdir()
    sf.write(silent / "nothing.wav", np.zeros((0, 1)), 16000)
    assert_one_error_line(run(capsys, "train", "piano-small", "--data", str(silent), *TINY))


def test_not_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_error_line(
        run(capsys, "train", "piano-small", "--data", str(tmp_path / "missing"), *TINY)
    )


def test_unreadable_primer(
    capsys: pytest.CaptureFixture[str], recordings: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, recordings)
    bad = tmp_path / "primer.wav"
    bad.write_bytes(b"definitely not audio")
    assert_one_error_line(run(capsys, "sample", "piano-small", "--primer", str(bad)), "primer.wav")


def test_ctrl_c_before_the_first_checkpoint_keeps_a_resumable_one(
    capsys: pytest.CaptureFixture[str], recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """piano-small validates every 100 steps, minutes on a CPU: Ctrl-C before then keeps the
    steps done."""
    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.training import Trainer

    real_step, calls = Trainer._step, []

    def interrupted(self: Trainer, batch: object) -> tuple[float, int]:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", interrupted)
    first_check = ["--set", "train.eval_every=100"]
    result = run(capsys, "train", "piano-small", "--data", str(recordings), *TINY, *first_check)
    assert_one_error_line(result, "saved after 0 epochs and 3 of 100 steps", "--resume")
    assert find_run("piano-small").load_state("last")["training"]["step"] == 3
    monkeypatch.setattr(Trainer, "_step", real_step)
    succeed(capsys, "train", "--resume", "piano-small", "--steps", "5")
    assert find_run("piano-small").load_state("last")["training"]["step"] == 5


def test_sample_interrupted_mid_generation_writes_a_shorter_wav(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sequnet_cli.tasks.audio import AudioSampler

    train_tiny(capsys, recordings)
    real_draw, calls = AudioSampler.draw, []

    def interrupted(self: AudioSampler, output: object, *random: object) -> object:
        calls.append(1)
        if len(calls) == 301:
            raise KeyboardInterrupt
        return real_draw(self, output, *random)  # type: ignore[arg-type]

    monkeypatch.setattr(AudioSampler, "draw", interrupted)
    target = tmp_path / "short.wav"
    result = run(capsys, "sample", "piano-small", "--steps", "1000", "--out", str(target))
    assert_one_error_line(result, "interrupted after 300 of 1,000 samples", str(target))
    audio, rate = sf.read(target)
    assert rate == 16000 and audio.shape == (300,)


def test_missing_audio_primer(capsys: pytest.CaptureFixture[str], recordings: Path) -> None:
    train_tiny(capsys, recordings)
    result = run(capsys, "sample", "piano-small", "--primer", "/nonexistent/take.flac")
    assert_one_error_line(result, "primer /nonexistent/take.flac does not exist")
    assert "convert" not in result.err and ".." not in result.err


def best_score() -> float:
    from sequnet_cli.checkpoints import find_run

    return float(find_run("piano-small", None).load_state("best")["training"]["best_score"])


def test_the_best_checkpoint_is_chosen_on_valid_and_test_is_only_scored(
    capsys: pytest.CaptureFixture[str], recordings: Path
) -> None:
    train_tiny(capsys, recordings)  # 4 files: 2 to train on, 1 to validate, 1 to test
    # --quick: the excerpts validation scored, so the very figure the best checkpoint had.
    quick = ["--split", "valid", "--quick", "--json"]
    valid = json.loads(succeed(capsys, "evaluate", "piano-small", *quick).out)
    assert set(valid["scores"]) == {"valid"}
    assert valid["scores"]["valid"] == pytest.approx(best_score(), abs=1e-9)
    test = json.loads(succeed(capsys, "evaluate", "piano-small", "--split", "test", "--json").out)
    assert test["scores"]["test"] != pytest.approx(valid["scores"]["valid"], abs=1e-3)


def test_a_maestro_folder_trains_on_its_published_split(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "maestro-v3.0.0"
    rows = ["split,audio_filename,duration"]
    for index, split in enumerate(["train", "train", "validation", "test", "train"]):
        name = f"2018/{split}-{index}.wav"
        (folder / "2018").mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, tone(0.5, 220.0 + 110 * index, rate=48000), 48000)
        rows.append(f"{split},{name},0.5")
    (folder / "maestro-v3.0.0.csv").write_text("\n".join(rows) + "\n")
    succeed(capsys, "train", "piano-small", "--data", str(folder), "--steps", "2", *TINY)
    from sequnet_cli.data.audio import AudioCorpus

    corpus = AudioCorpus.open(folder)
    assert [p.name for p in corpus.valid.files] == ["validation-2.wav"]
    assert [p.name for p in corpus.test.files] == ["test-3.wav"] and len(corpus.train.files) == 3
    quick = ["--split", "valid", "--quick", "--json"]  # the excerpts validation scored
    valid = json.loads(succeed(capsys, "evaluate", "piano-small", *quick).out)
    assert valid["scores"]["valid"] == pytest.approx(best_score(), abs=1e-9)


def test_a_folder_too_small_to_validate_on_is_refused_before_a_run_is_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for index in range(2):
        sf.write(folder / f"take{index}.wav", tone(0.5, 220.0 * (index + 1)), 22050)
    result = run(capsys, "train", "piano-small", "--data", str(folder), *TINY)
    assert_one_error_line(result, "validation")
    from sequnet_cli.paths import runs_dir

    assert list(runs_dir().iterdir()) == []
