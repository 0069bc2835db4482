"""Generated audio out of the program: 16-bit WAV files, playback, and a few sanity numbers.

`write_wav` writes atomically (`sequnet_cli.files.atomic_write`), so an interrupted
`sequnet sample` never leaves a half-written file. `play` imports sounddevice
only when called, so machines without PortAudio (CI, servers) run everything else; a
missing library or output device becomes a one-line `DeviceError`. `audio_stats` gives the
RMS, peak, clipped fraction and mean spectral centroid that tell music from silence or
clipped noise.
"""

from __future__ import annotations

from pathlib import Path

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


def play(audio: np.ndarray, sample_rate: int) -> None:
    """Play float audio `(T,)` or `(channels, T)` on the default output device; blocks.

    Raises DeviceError when sounddevice, the PortAudio library or an output device is
    missing. Ctrl-C stops playback and propagates.
    """
    try:
        import sounddevice
    except OSError as exc:  # sounddevice is installed but cannot load PortAudio
        raise DeviceError(f"cannot play audio: the PortAudio library is missing ({exc})") from exc
    except ImportError as exc:
        raise DeviceError("cannot play audio: the sounddevice package is not installed") from exc
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
