"""Decoding audio files to 16 kHz mono 8-bit mu-law codes (paper §4.2), in worker processes.

Any file soundfile reads (WAV, FLAC, OGG, MP3, AIFF, AU) at any rate and channel count is mixed
to mono, resampled with a band-limited polyphase filter and mu-law encoded as in WaveNet (256
classes, silence is class 128). `decode_all` decodes a list of files in order, here or in
worker processes; this module imports no torch, so that those workers start fast and small.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path

import numpy as np
import soundfile as sf

from sequnet_cli.errors import DataError

MU = 255
SILENCE_CODE = 128  # mu_law_encode(0.0): what short excerpts are left-padded with
# Decoding in worker processes pays for their start-up (each imports the audio libraries) only
# on folders of some size; smaller ones are decoded in the calling process.
PARALLEL_BYTES = 64 * 2**20
MAX_WORKERS = 8  # a worker holds a decoded file: about 0.5 GB for 20 minutes at 48 kHz stereo


# --- mu-law -----------------------------------------------------------------------------


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """Float audio `(...)` in [-1, 1] (clipped) -> uint8 classes `(...)` in 0..255."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / math.log1p(MU)
    return np.floor((companded + 1.0) / 2.0 * MU + 0.5).astype(np.uint8)


def mu_law_decode(q: np.ndarray) -> np.ndarray:
    """Integer classes `(...)` in 0..255 -> float32 audio `(...)` in [-1, 1]."""
    companded = 2.0 * np.asarray(q, dtype=np.float64) / MU - 1.0
    x = np.sign(companded) * np.expm1(np.abs(companded) * math.log1p(MU)) / MU
    return x.astype(np.float32)


# --- decoding ---------------------------------------------------------------------------


def load_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode any soundfile-readable file to float32 mono `(T,)` at `sample_rate`.

    Channels are averaged; the rate is changed with `resample_poly` (a Kaiser-windowed
    polyphase low-pass at the lower Nyquist), so content above it is removed, not aliased.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} does not exist; check the path")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        fix = (
            "it is damaged: replace it"
            if path.suffix.lower() in (".wav", ".flac")
            else ("convert it to WAV or FLAC")
        )
        raise DataError(f"cannot read audio file {path} ({reason}); {fix}") from exc
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} is empty (zero samples); remove it")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        # Imported here: scipy.signal takes a second or two to import, which a worker process
        # decoding files already at the model's rate never needs.
        from scipy.signal import resample_poly

        common = math.gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // common, int(rate) // common)
    return np.asarray(mono, dtype=np.float32)


def probe(path: Path) -> tuple[str | None, float]:
    """Why `path` cannot be used (unreadable header, no samples) or None, and its duration in
    seconds; decodes nothing."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        return f"not readable as audio ({' '.join(str(exc).split())})", 0.0
    if info.frames == 0:
        return "empty (zero samples)", 0.0
    return None, info.frames / info.samplerate


def encode_file(path: Path, sample_rate: int) -> np.ndarray | str:
    """One file as uint8 mu-law codes `(T,)`, or why it could not be decoded (a worker's job)."""
    try:
        return mu_law_encode(load_audio(path, sample_rate))
    except DataError as exc:
        return str(exc)


def decode_all(paths: list[Path], sample_rate: int, workers: int) -> Iterator[np.ndarray | str]:
    """`encode_file` of every path, in order: here, or in `workers` worker processes."""
    if workers <= 1:
        for path in paths:
            yield encode_file(path, sample_rate)
        return
    # Spawned, not forked: the caller may hold CUDA or a process group, which a fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupts) as pool:
        waiting = iter(paths)
        # A bounded window of files in flight keeps memory bounded when an early file is slow.
        running: deque[tuple[Path, Future[np.ndarray | str]]] = deque(
            (path, pool.submit(encode_file, path, sample_rate))
            for path in islice(waiting, 2 * workers)
        )
        try:
            while running:
                path, future = running.popleft()
                result = _result(future, path)
                following = next(waiting, None)
                if following is not None:
                    running.append((following, pool.submit(encode_file, following, sample_rate)))
                yield result
        finally:
            for _, future in running:
                future.cancel()


def _result(future: Future[np.ndarray | str], path: Path) -> np.ndarray | str:
    """What a worker made of `path`; a worker that died (killed for lack of memory, most
    likely) is a `DataError`."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise DataError(
            f"a process decoding {path} died ({error}); free some memory and try again"
        ) from error


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the process that started them, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers(paths: list[Path]) -> int:
    """Worker processes for decoding `paths`: one per core (at most `MAX_WORKERS`) for large
    folders, none (decode here) for small ones."""
    if sum(p.stat().st_size for p in paths) < PARALLEL_BYTES:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS, len(paths)))
