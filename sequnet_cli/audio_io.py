"""Generated audio out of the program: 16-bit WAV files, playback, and a few sanity numbers.

`write_wav` writes atomically (`sequnet_cli.files.atomic_write`), so an interrupted
`sequnet sample` never leaves a half-written file. `play` (a whole clip) and `LivePlayer` (audio
played while it is being generated, from a queue) import sounddevice only when used, so
machines without PortAudio (CI, servers) run everything else; a missing library or output
device becomes a one-line `DeviceError`. `audio_stats` gives the RMS, peak, clipped fraction and
mean spectral centroid that tell music from silence or clipped noise; `spectral_flatness` tells
tones (near 0) from noise (about 0.56).
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import stft

from sequnet_cli.errors import DeviceError
from sequnet_cli.files import atomic_write

CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped in `audio_stats`


def _as_frames(audio: np.ndarray) -> np.ndarray:
    """Float audio `(T,)` or `(channels, T)` -> finite float32 `(T, channels)` in [-1, 1]."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (T,) or (channels, T), got shape {audio.shape}")
    return np.clip(np.nan_to_num(audio.T, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float audio `(T,)` or `(channels, T)` as 16-bit PCM WAV at `path`; returns it.

    Samples are clipped to [-1, 1] (NaN becomes 0) so nothing wraps around in PCM.
    """
    frames = _as_frames(audio)  # (T, channels)
    return atomic_write(
        path, lambda file: sf.write(file, frames, sample_rate, subtype="PCM_16", format="WAV")
    )


def _sounddevice() -> ModuleType:
    """The sounddevice module, or `DeviceError` when it or the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice is installed but cannot load PortAudio
        raise DeviceError(f"cannot play audio: the PortAudio library is missing ({exc})") from exc
    except ImportError as exc:
        raise DeviceError("cannot play audio: the sounddevice package is not installed") from exc
    return sounddevice


def play(audio: np.ndarray, sample_rate: int) -> None:
    """Play float audio `(T,)` or `(channels, T)` on the default output device; blocks.

    Raises DeviceError when sounddevice, the PortAudio library or an output device is
    missing. Ctrl-C stops playback and propagates.
    """
    sounddevice = _sounddevice()
    frames = _as_frames(audio)
    try:
        sounddevice.query_devices(kind="output")
        sounddevice.play(frames, samplerate=sample_rate)
        sounddevice.wait()
    except (sounddevice.PortAudioError, ValueError) as exc:
        raise DeviceError(f"cannot play audio: no usable output device ({exc})") from exc
    except KeyboardInterrupt:
        sounddevice.stop()
        raise


class LivePlayer:
    """Plays mono float audio as it is added, through a sounddevice `OutputStream` fed from a
    queue: the device's callback takes what is queued, and plays silence if the queue runs
    dry (`starved_frames` counts it) until more comes.

    `open` raises `DeviceError` when sounddevice, PortAudio or an output device is missing;
    `start` begins playback; `finish` plays everything added and returns when it has been
    played; `stop` ends at once (Ctrl-C). Thread-safe between `add` and the device's callback.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.queued_frames = self.played_frames = self.starved_frames = 0
        self._queue: deque[np.ndarray] = deque()
        self._offset = 0  # frames of the queue's first array already played
        self._ending = False  # nothing more will be added
        self._lock = threading.Lock()
        self._drained = threading.Event()
        self._stream: Any = None
        self._done_signal: type[Exception] = StopIteration

    @property
    def started(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    def open(self) -> None:
        """Open the default output device (not yet playing)."""
        sounddevice = _sounddevice()
        try:
            sounddevice.query_devices(kind="output")
            self._stream = sounddevice.OutputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                callback=self._fill,
                finished_callback=self._drained.set,
            )
        except (sounddevice.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot play audio: no usable output device ({exc})") from exc
        self._done_signal = sounddevice.CallbackStop

    def add(self, audio: np.ndarray) -> None:
        """Queue float audio `(T,)` to play after what is queued."""
        frames = _as_frames(audio)[:, 0].copy()  # (T,) float32, clipped
        with self._lock:
            self._queue.append(frames)
            self.queued_frames += len(frames)

    @property
    def queued_seconds(self) -> float:
        return self.queued_frames / self.sample_rate

    def start(self) -> None:
        if not self.started:
            self._stream.start()

    def finish(self) -> None:
        """Play everything added and wait until it has been played (Ctrl-C propagates)."""
        with self._lock:
            self._ending = True
        self.start()
        while not self._drained.wait(0.1):  # a timeout keeps Ctrl-C responsive
            pass
        self._stream.close()

    def stop(self) -> None:
        """Stop playing at once."""
        if self._stream is not None:
            self._stream.abort()
            self._stream.close()

    def _fill(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """The device's callback: `outdata: (frames, 1)` float32 to fill."""
        written = 0
        with self._lock:
            while written < frames and self._queue:
                first = self._queue[0]
                take = min(frames - written, len(first) - self._offset)
                outdata[written : written + take, 0] = first[self._offset : self._offset + take]
                written += take
                self._offset += take
                if self._offset == len(first):
                    self._queue.popleft()
                    self._offset = 0
            ending = self._ending and not self._queue
        outdata[written:] = 0.0
        self.played_frames += written
        if not ending:
            self.starved_frames += frames - written
        if ending:
            raise self._done_signal  # plays this last block, then stops


def audio_stats(audio: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    """RMS, peak, clipped fraction and mean spectral centroid (Hz) of audio `(T,)` or `(C, T)`.

    Channels are averaged first. The centroid is the magnitude-weighted mean frequency of
    each 64 ms STFT frame, averaged over frames that are not silent; 0.0 for silence.
    """
    mono = np.asarray(audio, dtype=np.float64)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono.reshape(-1)
    if mono.size == 0:
        return {"rms": 0.0, "peak": 0.0, "clipped_fraction": 0.0, "spectral_centroid_hz": 0.0}
    return {
        "rms": float(np.sqrt(np.mean(mono**2))),
        "peak": float(np.max(np.abs(mono))),
        "clipped_fraction": float(np.mean(np.abs(mono) >= CLIP_LEVEL)),
        "spectral_centroid_hz": _spectral_centroid(mono, sample_rate),
    }


def _spectral_centroid(mono: np.ndarray, sample_rate: int) -> float:
    """Mean over non-silent STFT frames of the magnitude-weighted mean frequency, in Hz."""
    segment = min(1024 * sample_rate // 16000, mono.size)
    frequencies, _, spectrum = stft(mono, fs=sample_rate, nperseg=max(segment, 1))
    magnitude = np.abs(spectrum)  # (frequencies, frames)
    energy = magnitude.sum(axis=0)  # (frames,)
    voiced = energy > 1e-8 * max(float(energy.max()), 1e-30)
    if not voiced.any() or energy.max() <= 0:
        return 0.0
    centroids = (frequencies[:, None] * magnitude[:, voiced]).sum(axis=0) / energy[voiced]
    return float(centroids.mean())


def spectral_flatness(mono: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean over non-silent 64 ms STFT frames of the power spectrum's geometric over arithmetic
    mean: near 0 for tones, about 0.56 for white noise (e^-γ for its exponentially distributed
    power); 0.0 for silence."""
    segment = min(1024 * sample_rate // 16000, mono.size)
    if segment < 2:
        return 0.0
    _, _, spectrum = stft(np.asarray(mono, dtype=np.float64), fs=sample_rate, nperseg=segment)
    power = np.abs(spectrum) ** 2 + 1e-20  # (frequencies, frames)
    energy = power.mean(axis=0)
    voiced = energy > 1e-8 * max(float(energy.max()), 1e-30) + 1e-19
    if not voiced.any():
        return 0.0
    geometric = np.exp(np.log(power[:, voiced]).mean(axis=0))
    return float((geometric / energy[voiced]).mean())
