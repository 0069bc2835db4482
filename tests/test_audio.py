"""Raw-audio data and audio output: mu-law, decoding and resampling, the cached corpus, WAV."""

from __future__ import annotations

import builtins
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from sequnet_cli import audio_io
from sequnet_cli.audio_io import audio_stats, play, write_wav
from sequnet_cli.data import audio, audio_decoding, audio_files
from sequnet_cli.data.audio import AudioCorpus
from sequnet_cli.data.audio_decoding import SILENCE_CODE, load_audio, mu_law_decode, mu_law_encode
from sequnet_cli.data.audio_files import split_by_file
from sequnet_cli.errors import ConfigError, DataError, DeviceError, WriteError

RATE = 16000


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine `(T,)`."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Write float audio `(T,)` or `(T, C)` with soundfile, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate)
    return path


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Collects what the corpus code reports with `sequnet_cli.errors.warn`."""
    seen: list[str] = []
    monkeypatch.setattr(audio, "warn", seen.append)
    monkeypatch.setattr(audio_files, "warn", seen.append)
    return seen


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Counts calls to the module's decode function (load_audio) by the corpus."""
    calls: list[Path] = []
    real = audio_decoding.load_audio

    def counting(path: Path, sample_rate: int = RATE) -> np.ndarray:
        calls.append(Path(path))
        return real(path, sample_rate)

    monkeypatch.setattr(audio_decoding, "load_audio", counting)
    return calls


# --- mu-law ------------------------------------------------------------------------------


def test_mu_law_round_trip_error_is_small_and_relative() -> None:
    x = np.linspace(-1.0, 1.0, 20001)
    q = mu_law_encode(x)
    assert q.dtype == np.uint8
    back = mu_law_decode(q)
    assert back.dtype == np.float32
    # 8-bit mu-law: quantisation steps grow with |x|, about 2.2 % of |x| near full scale.
    assert np.all(np.abs(back - x) <= 0.025 * np.abs(x) + 2e-4)


def test_mu_law_codes_silence_ends_and_monotonicity() -> None:
    assert mu_law_encode(np.array([0.0]))[0] == SILENCE_CODE == 128
    assert mu_law_encode(np.array([-1.0, 1.0, -5.0, 5.0])).tolist() == [0, 255, 0, 255]
    q = mu_law_encode(np.linspace(-1.0, 1.0, 5001))
    assert np.all(np.diff(q.astype(int)) >= 0)
    codes = np.arange(256)
    assert np.array_equal(mu_law_encode(mu_law_decode(codes)), codes)  # every code reachable
    assert np.all(np.diff(mu_law_decode(np.arange(256))) > 0)
    assert abs(float(mu_law_decode(np.array([128]))[0])) < 1e-3


# --- decoding and resampling -------------------------------------------------------------


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def test_stereo_44k_sine_loads_as_16k_mono_of_right_length_and_pitch(tmp_path: Path) -> None:
    left = tone(440.0, 1.0, 44100)
    path = write(tmp_path / "a.wav", np.stack([left, left], axis=1), rate=44100)  # (T, 2)
    x = load_audio(path, RATE)
    assert x.dtype == np.float32 and x.shape == (RATE,)
    assert abs(dominant_frequency(x, RATE) - 440.0) < 2.0
    assert abs(float(np.sqrt(np.mean(x[1000:-1000] ** 2))) - 0.5 / np.sqrt(2)) < 0.01


def test_tone_above_new_nyquist_is_removed_not_aliased(tmp_path: Path) -> None:
    # 12 kHz at 44.1 kHz would alias to 4 kHz if decimated naively.
    path = write(tmp_path / "high.flac", tone(12000.0, 1.0, 44100), rate=44100)
    x = load_audio(path, RATE)
    naive = tone(12000.0, 1.0, 44100)[:: 44100 // RATE]
    assert float(np.sqrt(np.mean(naive**2))) > 0.3  # the alias a bad resampler keeps
    assert float(np.sqrt(np.mean(x[1000:-1000] ** 2))) < 0.01


def test_mono_channels_are_averaged(tmp_path: Path) -> None:
    signal = tone(300.0, 0.2, RATE)
    path = write(tmp_path / "opposed.wav", np.stack([signal, -signal], axis=1))
    assert np.max(np.abs(load_audio(path, RATE))) < 1e-4


def test_unreadable_and_empty_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    with pytest.raises(DataError, match="garbage.wav"):
        load_audio(garbage)
    empty = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(DataError, match="empty.wav"):
        load_audio(empty)


# --- corpus ------------------------------------------------------------------------------


def make_folder(root: Path, count: int, seconds: float = 0.25) -> Path:
    for index in range(count):
        write(root / f"piece{index:02d}.wav", tone(200.0 + 50 * index, seconds, RATE))
    return root


def test_split_by_file_is_deterministic_disjoint_and_keeps_training_files() -> None:
    files = [Path(f"/music/{name}.wav") for name in "jihgfedcba"]
    train, valid, test = split_by_file(files, 0.1, 0.2)
    assert (train, valid, test) == split_by_file(list(reversed(files)), 0.1, 0.2)
    assert (len(train), len(valid), len(test)) == (7, 1, 2)
    assert set(train) | set(valid) | set(test) == set(files)
    assert not set(train) & set(test) and not set(train) & set(valid) and not set(valid) & set(test)
    assert train == sorted(train) and test == sorted(test)
    assert split_by_file(files, 0.0, 0.2)[2] == test  # the test files do not depend on valid
    assert split_by_file(files[:1], 0.5, 0.3) == (files[:1], [], [])
    # Small folders: a file each to validate and test once two are left to train on.
    assert [len(part) for part in split_by_file(files[:4], 0.01, 0.01)] == [2, 1, 1]
    assert [len(part) for part in split_by_file(files[:3], 0.01, 0.01)] == [2, 1, 0]
    assert split_by_file(files, 0.0, 0.0)[1:] == ([], [])
    assert split_by_file([], 0.1, 0.1) == ([], [], [])


def test_corpus_split_by_file_and_cache_layout(tmp_path: Path, warnings: list[str]) -> None:
    folder = make_folder(tmp_path / "music", 10)
    corpus = AudioCorpus.open(folder, valid_fraction=0.1, test_fraction=0.2)
    parts = (corpus.train.files, corpus.valid.files, corpus.test.files)
    assert [len(files) for files in parts] == [7, 1, 2]
    assert len(set().union(*parts)) == 10  # disjoint
    assert corpus.split("valid") is corpus.valid
    assert corpus.train.samples.dtype == np.uint8
    assert corpus.train.samples.shape == (7 * 4000,)
    assert corpus.train.seconds == pytest.approx(1.75)
    assert isinstance(corpus.train.samples, np.memmap)
    names = sorted(p.name for p in corpus.cache_path.iterdir())
    assert names == ["manifest.json", "test.npy", "train.npy", "valid.npy"]
    assert corpus.cache_path.parent.name == "audio"
    assert warnings == []
    other = AudioCorpus.open(folder, valid_fraction=0.2, test_fraction=0.2)
    assert other.cache_path != corpus.cache_path and len(other.valid.files) == 2
    assert other.test.files == corpus.test.files


def test_second_open_decodes_nothing_and_a_changed_file_is_decoded_again(
    tmp_path: Path, decode_calls: list[Path]
) -> None:
    folder = make_folder(tmp_path / "music", 3)
    reports: list[tuple[int, int, str, tuple[float, float] | None]] = []

    def progress(
        done: int, total: int, path: Path, hours: tuple[float, float] | None = None
    ) -> None:
        reports.append((done, total, path.name, hours))

    first = AudioCorpus.open(folder, progress=progress)
    assert len(decode_calls) == 3
    assert [report[:2] for report in reports] == [(0, 3), (1, 3), (2, 3)]
    assert sorted(report[2] for report in reports) == ["piece00.wav", "piece01.wav", "piece02.wav"]
    hours = [report[3] for report in reports]
    assert hours == [(pytest.approx(i * 0.25 / 3600), pytest.approx(0.75 / 3600)) for i in range(3)]
    second = AudioCorpus.open(folder, progress=progress)
    assert len(decode_calls) == 3 and len(reports) == 3
    assert second.cache_path == first.cache_path
    assert np.array_equal(second.train.samples, first.train.samples)
    write(folder / "piece01.wav", tone(1000.0, 0.5, RATE))
    third = AudioCorpus.open(folder)
    assert len(decode_calls) == 6 and third.cache_path != first.cache_path


def test_worker_processes_build_the_same_cache(tmp_path: Path, warnings: list[str]) -> None:
    folder = make_folder(tmp_path / "music", 5)
    (folder / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 60)
    here = AudioCorpus.open(folder, workers=1)
    cached = here.cache_path
    for entry in cached.iterdir():
        entry.unlink()
    cached.rmdir()
    parallel = AudioCorpus.open(folder, workers=2)
    assert parallel.cache_path == cached
    for name in ("train", "valid", "test"):
        assert np.array_equal(here.split(name).samples, parallel.split(name).samples)
        assert here.split(name).files == parallel.split(name).files
        assert np.array_equal(here.split(name).lengths, parallel.split(name).lengths)
    assert len(warnings) == 2 and all("broken.wav" in w for w in warnings)


def test_a_decoding_process_that_dies_is_a_data_error_naming_the_file() -> None:
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    future: Future[np.ndarray | str] = Future()
    future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    with pytest.raises(DataError, match="long.wav"):
        audio_decoding._result(future, Path("long.wav"))


def test_train_and_test_sub_folders_are_used_as_the_split(tmp_path: Path) -> None:
    folder = tmp_path / "music"
    make_folder(folder / "train", 3)
    make_folder(folder / "test" / "nested", 1)
    corpus = AudioCorpus.open(folder, test_fraction=0.5)
    # No valid/ sub-folder: a deterministic part of the training files validates.
    assert [p.parent.name for p in corpus.train.files + corpus.valid.files] == ["train"] * 3
    assert len(corpus.valid.files) == 1 and not set(corpus.valid.files) & set(corpus.train.files)
    assert [p.name for p in corpus.test.files] == ["piece00.wav"]
    make_folder(folder / "valid", 2)
    with_valid = AudioCorpus.open(folder)
    assert [p.parent.name for p in with_valid.valid.files] == ["valid"] * 2
    assert len(with_valid.train.files) == 3 and len(with_valid.test.files) == 1


def maestro_folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    """A MAESTRO-layout folder: `maestro-v3.0.0.csv` and a short tone for each listed file."""
    lines = ["canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration"]
    for index, (split, name) in enumerate(rows):
        lines.append(f"Anon,Piece {index},{split},2018,{name[:-4]}.midi,{name},0.25")
        write(root / name, tone(200.0 + 50 * index, 0.25, 44100), rate=44100)
    (root / "maestro-v3.0.0.csv").write_text("\n".join(lines) + "\n")
    return root


def test_maestro_folder_uses_the_published_split(tmp_path: Path, warnings: list[str]) -> None:
    rows = [("train", f"2018/train{i}.wav") for i in range(3)]
    rows += [("validation", "2017/valid.wav"), ("test", "2017/test.wav")]
    folder = maestro_folder(tmp_path / "maestro-v3.0.0", rows)
    (folder / "2018" / "train2.wav").rename(folder / "2018" / "train2.flac")  # converted
    (folder / "2017" / "test.wav").unlink()
    write(folder / "2017" / "stray.wav", tone(300.0, 0.25, RATE))  # not listed: not used
    corpus = AudioCorpus.open(folder, valid_fraction=0.5, test_fraction=0.4)
    names = {
        name: [p.name for p in corpus.split(name).files] for name in ("train", "valid", "test")
    }
    assert names == {
        "train": ["train0.wav", "train1.wav", "train2.flac"],
        "valid": ["valid.wav"],
        "test": [],
    }
    assert corpus.valid.lengths.tolist() == [4000]  # resampled to 16 kHz
    assert len(warnings) == 1 and "lacks 1 of the 5 recordings" in warnings[0]
    assert "2017/test.wav" in warnings[0]


def test_a_damaged_maestro_table_is_a_data_error(tmp_path: Path) -> None:
    folder = maestro_folder(tmp_path / "maestro", [("train", "a.wav"), ("validation", "b.wav")])
    table = folder / "maestro-v3.0.0.csv"
    table.write_text("split,midi_filename\ntrain,a.midi\n")
    with pytest.raises(DataError, match="audio_filename"):
        AudioCorpus.open(folder)
    table.write_text("split,audio_filename\ntrain,a.wav\nholdout,b.wav\n")
    with pytest.raises(DataError, match="holdout"):
        AudioCorpus.open(folder)


def test_resampled_files_are_cached_at_16k(tmp_path: Path) -> None:
    folder = tmp_path / "music"
    write(folder / "cd.flac", np.stack([tone(440.0, 0.5, 44100)] * 2, axis=1), rate=44100)
    write(folder / "dat.wav", tone(440.0, 0.25, 48000), rate=48000)
    corpus = AudioCorpus.open(folder, test_fraction=0.0)
    assert list(corpus.train.lengths) == [8000, 4000]


def constant_folder(root: Path, levels: dict[str, tuple[float, float]]) -> Path:
    """Files of constant level, so each file has one mu-law code; name -> (level, seconds)."""
    for name, (level, seconds) in levels.items():
        write(root / f"{name}.wav", np.full(int(seconds * RATE), level, dtype=np.float32))
    return root


def test_excerpts_shape_range_and_never_straddle_files(tmp_path: Path) -> None:
    folder = constant_folder(tmp_path / "c", {"a": (0.5, 0.1), "b": (-0.5, 0.1), "c": (0.1, 0.1)})
    split = AudioCorpus.open(folder, valid_fraction=0.0, test_fraction=0.0).train
    excerpts = split.random_excerpts(64, 1000, torch.Generator().manual_seed(1))
    assert excerpts.shape == (64, 1000) and excerpts.dtype == torch.int64
    assert int(excerpts.min()) >= 0 and int(excerpts.max()) <= 255
    codes = {int(mu_law_encode(np.array([level]))[0]) for level in (0.5, -0.5, 0.1)}
    rows = {tuple(torch.unique(row).tolist()) for row in excerpts}
    assert rows == {(code,) for code in codes}  # one file per row, all files drawn


def test_short_files_are_left_padded_with_silence(tmp_path: Path) -> None:
    folder = constant_folder(tmp_path / "c", {"short": (0.5, 0.01)})  # 160 samples
    excerpts = AudioCorpus.open(folder).train.random_excerpts(2, 400, torch.Generator())
    code = int(mu_law_encode(np.array([0.5]))[0])
    assert torch.all(excerpts[:, :240] == SILENCE_CODE)
    assert torch.all(excerpts[:, 240:] == code)


def test_fixed_excerpts_are_deterministic(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "music", 4, seconds=0.5)
    split = AudioCorpus.open(folder, test_fraction=0.0).train
    first = split.fixed_excerpts(8, 500, seed=3)
    assert first.shape == (8, 500) and first.dtype == torch.int64
    assert torch.equal(first, split.fixed_excerpts(8, 500, seed=3))
    assert not torch.equal(first, split.fixed_excerpts(8, 500, seed=4))


def test_empty_test_split_refuses_excerpts(tmp_path: Path) -> None:
    corpus = AudioCorpus.open(make_folder(tmp_path / "music", 1))
    assert corpus.test.files == () and corpus.test.seconds == 0.0
    with pytest.raises(DataError, match="test split"):
        corpus.test.fixed_excerpts(2, 100, seed=0)


# --- bad corpus inputs -------------------------------------------------------------------


def test_unreadable_and_empty_audio_files_are_skipped_with_warnings(
    tmp_path: Path, warnings: list[str]
) -> None:
    folder = make_folder(tmp_path / "music", 2)
    (folder / "broken.wav").write_bytes(b"RIFF nonsense" * 20)
    write(folder / "silent.flac", np.zeros(0, dtype=np.float32))
    (folder / "notes.txt").write_text("not audio, ignored")
    corpus = AudioCorpus.open(folder, test_fraction=0.0)
    assert [p.name for p in corpus.train.files] == ["piece00.wav", "piece01.wav"]
    assert len(warnings) == 2
    assert any("broken.wav" in w for w in warnings) and any("silent.flac" in w for w in warnings)
    AudioCorpus.open(folder, test_fraction=0.0)  # cached: still warned about
    assert len(warnings) == 4


def test_folder_without_audio_files_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    with pytest.raises(DataError, match="no audio files"):
        AudioCorpus.open(folder)
    (folder / "readme.txt").write_text("hello")
    (folder / "score.mid").write_bytes(b"MThd")
    with pytest.raises(DataError, match="no audio files"):
        AudioCorpus.open(folder)


def test_folder_of_only_unusable_audio_is_a_data_error(tmp_path: Path, warnings: list[str]) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"\x00" * 100)
    write(folder / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(DataError, match="no usable audio"):
        AudioCorpus.open(folder)
    assert len(warnings) == 2


def test_missing_folder_and_bad_test_fraction(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        AudioCorpus.open(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="test_fraction"):
        AudioCorpus.open(make_folder(tmp_path / "music", 1), test_fraction=1.0)


@pytest.mark.data
def test_piano_render_folder_split() -> None:
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "piano-render"
    corpus = AudioCorpus.open(folder)
    counts = [len(corpus.split(name).files) for name in ("train", "valid", "test")]
    assert counts == [12, 1, 5]
    assert corpus.train.seconds > corpus.test.seconds > 60 and corpus.valid.seconds > 10
    batch = corpus.train.random_excerpts(4, 16000, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 16000) and batch.float().std() > 1.0  # not silence


# --- output ------------------------------------------------------------------------------


def test_write_wav_round_trip_is_16_bit_atomic_and_clipped(tmp_path: Path) -> None:
    stereo = np.stack([tone(440.0, 0.1, RATE), tone(660.0, 0.1, RATE, amplitude=2.0)])
    target = write_wav(tmp_path / "out.wav", stereo, RATE)
    assert target == tmp_path / "out.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temp file left
    info = sf.info(str(target))
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", RATE, 2)
    back, _ = sf.read(target, dtype="float32")  # (T, 2)
    np.testing.assert_allclose(back[:, 0], stereo[0], atol=1 / 16384)
    np.testing.assert_allclose(back[:, 1], np.clip(stereo[1], -1, 1), atol=1 / 16384)
    mono = write_wav(target, tone(100.0, 0.05, RATE), RATE)  # overwrites in place
    assert sf.info(str(mono)).channels == 1


def test_write_wav_refuses_folders_and_missing_parents(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="is a folder"):
        write_wav(tmp_path, np.zeros(10, dtype=np.float32), RATE)
    with pytest.raises(WriteError, match="does not exist"):
        write_wav(tmp_path / "missing" / "x.wav", np.zeros(10, dtype=np.float32), RATE)


def test_play_without_sounddevice_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(DeviceError, match="sounddevice"):
        play(np.zeros(10, dtype=np.float32), RATE)


def test_play_without_portaudio_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def failing_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(DeviceError, match="PortAudio"):
        play(np.zeros(10, dtype=np.float32), RATE)


def test_play_without_output_device_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def no_device(**kwargs: Any) -> None:
        raise PortAudioError("Error querying device -1")

    fake.PortAudioError = PortAudioError  # type: ignore[attr-defined]
    fake.query_devices = no_device  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(DeviceError, match="output device"):
        play(np.zeros(10, dtype=np.float32), RATE)


def test_audio_stats_tell_tone_from_silence_and_clipped_noise() -> None:
    silence = audio_stats(np.zeros(RATE, dtype=np.float32), RATE)
    assert silence == {
        "rms": 0.0,
        "peak": 0.0,
        "clipped_fraction": 0.0,
        "spectral_centroid_hz": 0.0,
    }
    sine = audio_stats(tone(1000.0, 1.0, RATE), RATE)
    assert sine["peak"] == pytest.approx(0.5, abs=1e-3)
    assert sine["rms"] == pytest.approx(0.5 / np.sqrt(2), abs=1e-3)
    assert sine["spectral_centroid_hz"] == pytest.approx(1000.0, rel=0.1)
    noise = np.sign(np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    loud = audio_stats(noise, RATE)
    assert loud["clipped_fraction"] == 1.0
    assert loud["spectral_centroid_hz"] == pytest.approx(RATE / 4, rel=0.1)
    assert audio_io.audio_stats(np.stack([noise, noise]), RATE) == pytest.approx(loud)


def test_unreadable_audio_messages_fit_the_file(tmp_path: Path) -> None:
    """A damaged FLAC is not told to become a FLAC; a missing file is called missing; one
    sentence, no doubled periods."""
    broken = tmp_path / "take.flac"
    broken.write_bytes(b"fLaC but nothing else")
    with pytest.raises(DataError) as damaged:
        load_audio(broken)
    assert "damaged" in str(damaged.value) and "convert" not in str(damaged.value)
    assert ".." not in str(damaged.value) and ".;" not in str(damaged.value)
    other = tmp_path / "take.xyz"
    other.write_bytes(b"nothing")
    with pytest.raises(DataError, match="convert it to WAV or FLAC"):
        load_audio(other)
    with pytest.raises(DataError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
