"""The `sample` workflow: load a trained model, generate through its stream, write files.

Piano-roll models write MIDI (pretty_midi); audio models write 16-bit WAV and can play it.
Every file is written through a temp file and a rename, so an existing file is never left
half-written; `--play` happens only after the WAV is on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sequnet_cli.console import GenerationDisplay, console, print_warning
from sequnet_cli.data.polyphonic import BENCHMARKS
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.inference import Trained, load_trained

DEFAULT_FRAMES = 128
DEFAULT_SECONDS = 2.0


@dataclass(frozen=True)
class SampleRequest:
    """What the user asked `sequnet sample` for."""

    out: Path | None = None
    count: int = 1
    steps: int | None = None
    seconds: float | None = None
    temperature: float = 1.0
    seed: int = 0
    primer: Path | None = None
    keep_primer: bool = True
    tempo: float = 120.0
    program: int = 0
    play: bool = False


def generate(
    ref: str, model: str | None, which: str, request: SampleRequest, device: torch.device
) -> list[Path]:
    """Generate `request.count` outputs from the model `ref`; returns the files written."""
    if request.count < 1:
        raise ConfigError(f"-n must be at least 1, got {request.count}")
    if (
        request.steps is not None
        and request.steps < 1
        or request.seconds is not None
        and request.seconds <= 0
    ):
        raise ConfigError("the length (--steps or --seconds) must be positive")
    trained = load_trained(ref, model, which, device)
    if trained.config.task == "piano-roll":
        return _piano_roll(trained, request)
    return _audio(trained, request)


def output_paths(out: Path | None, count: int, stem: str, suffix: str) -> list[Path]:
    """One file for one output (`out` or `./<stem><suffix>`), else numbered files in a folder."""
    if out is None:
        out = Path(f"{stem}{suffix}") if count == 1 else Path(stem)
    if count == 1 and out.suffix:
        return [out]
    if out.suffix:
        return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]
    try:
        out.mkdir(parents=True, exist_ok=True)  # several outputs go into a folder
    except OSError as error:
        raise ConfigError(f"cannot create the output folder {out} ({error})") from error
    return [out / f"{stem}-{i + 1}{suffix}" for i in range(count)]


def _frame_seconds(trained: Trained, tempo: float) -> float:
    data = trained.config.data
    if tempo <= 0:
        raise ConfigError(f"--tempo must be positive, got {tempo}")
    if data.frame_seconds > 0:
        return data.frame_seconds
    # Benchmark rolls (by key, .mat or pickle) are played at two frames per beat; the user's
    # MIDI folders were cut at `frames_per_beat`. Decided from the stored config, not the disk.
    released = data.dataset in BENCHMARKS or Path(data.dataset).suffix.lower() in (
        ".mat",
        ".pickle",
        ".pkl",
    )
    return 60.0 / tempo / (2 if released else data.frames_per_beat)


def _piano_roll(trained: Trained, request: SampleRequest) -> list[Path]:
    from sequnet_cli.data.midi import midi_to_roll, read_midi, roll_to_midi, write_midi
    from sequnet_cli.sampling import sample_piano_roll

    frame = _frame_seconds(trained, request.tempo)
    frames = request.steps or (
        round(request.seconds / frame) if request.seconds else DEFAULT_FRAMES
    )
    primer = None
    if request.primer is not None:
        primer = midi_to_roll(read_midi(request.primer), trained.config.data.frames_per_beat, frame)
    with GenerationDisplay(frames, "frames", None) as display:
        rolls = sample_piano_roll(
            trained.network,
            frames,
            request.count,
            request.temperature,
            request.seed,
            primer,
            display.advance,
        )
    paths = output_paths(request.out, request.count, f"{trained.config.preset}-sample", ".mid")
    for roll, path in zip(rolls, paths):
        full = (
            np.concatenate([primer, roll]) if primer is not None and request.keep_primer else roll
        )
        write_midi(roll_to_midi(full, frame, program=request.program, tempo=request.tempo), path)
        notes = int(
            np.count_nonzero(np.diff(np.pad(full.astype(np.int8), ((1, 0), (0, 0))), axis=0) == 1)
        )
        console.print(
            f"wrote {path} ({len(full)} frames, {len(full) * frame:.1f} s, {notes} notes)"
        )
    return paths


def _audio(trained: Trained, request: SampleRequest) -> list[Path]:
    from sequnet_cli.audio_io import audio_stats, play, write_wav
    from sequnet_cli.coding import AudioCoding
    from sequnet_cli.data.audio import load_audio, mu_law_decode, mu_law_encode
    from sequnet_cli.sampling import sample_audio

    rate = trained.config.data.sample_rate
    samples = request.steps or round((request.seconds or DEFAULT_SECONDS) * rate)
    primer = None
    if request.primer is not None:
        primer = mu_law_encode(load_audio(request.primer, rate))
    started = time.monotonic()
    with GenerationDisplay(samples, "samples", rate) as display:
        codes = sample_audio(
            trained.network,
            samples,
            request.count,
            request.temperature,
            request.seed,
            primer,
            display.advance,
            AudioCoding.of(trained.config.data),
        )
    elapsed = time.monotonic() - started
    paths = output_paths(request.out, request.count, f"{trained.config.preset}-sample", ".wav")
    audio = [mu_law_decode(c) for c in codes]
    if primer is not None and request.keep_primer:
        audio = [np.concatenate([mu_law_decode(primer), a]) for a in audio]
    for waveform, path in zip(audio, paths):
        write_wav(path, waveform, rate)
        stats = audio_stats(waveform, rate)
        console.print(
            f"wrote {path} ({len(waveform) / rate:.2f} s at {rate} Hz; rms {stats['rms']:.3f}, "
            f"peak {stats['peak']:.3f}, spectral centroid {stats['spectral_centroid_hz']:.0f} Hz)"
        )
    console.print(
        f"generated {samples * request.count:,} samples in {elapsed:.1f} s "
        f"({samples * request.count / max(elapsed, 1e-9):,.0f} samples/s)"
    )
    if request.play:
        for waveform, path in zip(audio, paths):
            try:
                play(waveform, rate)
            except DeviceError as error:
                print_warning(f"could not play: {error}; the audio is in {path}")
                break
    return paths
