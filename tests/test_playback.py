"""Live playback (`sample --play`) with a fake sounddevice: the queue, when playback starts,
what is played, and Ctrl-C during generation and during playback."""

from __future__ import annotations

import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli import assert_one_error_line, run, succeed
from test_cli_audio import recordings, train_tiny  # noqa: F401  (a fixture)

from sequnet_cli.audio_io import LivePlayer
from sequnet_cli.data.audio_decoding import mu_law_decode
from sequnet_cli.generation import PREBUFFER_FLOOR, LivePlayback, prebuffer_seconds

RATE = 16000


class FakeDevice:
    """A sounddevice module whose output stream pulls `block` frames per callback, either by
    itself in a thread at about real time (`paced`), or when a test calls `pull`."""

    def __init__(self, paced: bool = True, block: int = 256) -> None:
        self.paced, self.block = paced, block
        self.played: list[np.ndarray] = []
        self.streams: list[Any] = []
        self.module = self._module()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.played)[:, 0] if self.played else np.zeros(0, np.float32)

    def _module(self) -> types.ModuleType:
        device = self
        module = types.ModuleType("sounddevice")

        class PortAudioError(Exception):
            pass

        class CallbackStop(Exception):
            pass

        class OutputStream:
            def __init__(self, **settings: Any) -> None:
                self.callback = settings["callback"]
                self.finished = settings["finished_callback"]
                self.active, self.stopped, self.closed = False, False, False
                device.streams.append(self)

            def start(self) -> None:
                self.active = True
                if device.paced:
                    threading.Thread(target=self._play, daemon=True).start()

            def pull(self) -> bool:
                """One callback; False once the stream has stopped."""
                out = np.full((device.block, 1), np.nan, dtype=np.float32)
                try:
                    self.callback(out, device.block, None, None)
                except CallbackStop:
                    self.active = False
                device.played.append(out.copy())
                if not self.active:
                    self.finished()
                return self.active

            def _play(self) -> None:
                while not self.stopped and self.pull():
                    time.sleep(device.block / RATE)

            def abort(self) -> None:
                self.stopped, self.active = True, False

            def close(self) -> None:
                self.closed = True

        module.PortAudioError = PortAudioError  # type: ignore[attr-defined]
        module.CallbackStop = CallbackStop  # type: ignore[attr-defined]
        module.OutputStream = OutputStream  # type: ignore[attr-defined]
        module.query_devices = lambda **kwargs: {"name": "fake output"}  # type: ignore[attr-defined]
        return module


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> FakeDevice:
    fake = FakeDevice()
    monkeypatch.setitem(__import__("sys").modules, "sounddevice", fake.module)
    return fake


def test_the_player_plays_what_is_queued_in_order_and_silence_when_it_runs_dry(
    device: FakeDevice,
) -> None:
    device.paced = False
    player = LivePlayer(RATE)
    player.open()
    first, second = np.linspace(-0.5, 0.5, 300), np.linspace(0.5, 0.0, 100)
    player.add(first)
    player.start()
    (stream,) = device.streams
    assert stream.pull() and stream.pull()  # 512 frames asked for, 300 there
    assert player.starved_frames == 212
    player.add(second)
    finishing = threading.Thread(target=player.finish)
    finishing.start()
    while stream.pull():
        pass
    finishing.join(timeout=5)
    assert not finishing.is_alive() and stream.closed
    played = device.audio()
    np.testing.assert_allclose(played[:300], first, atol=1e-6)
    assert np.all(played[300:512] == 0.0)  # the queue ran dry: silence
    np.testing.assert_allclose(played[512:612], second, atol=1e-6)
    assert np.all(played[612:] == 0.0) and player.played_frames == 400


def test_prebuffer_is_a_floor_when_fast_and_nearly_everything_when_slow() -> None:
    assert prebuffer_seconds(10.0, 3.0) == PREBUFFER_FLOOR
    assert prebuffer_seconds(10.0, 0.5) == pytest.approx(6.0)  # ahead enough at 80 % speed
    assert prebuffer_seconds(10.0, 0.01) == pytest.approx(9.92)
    assert prebuffer_seconds(0.1, 3.0) == 0.1  # never more than there is


class Recorder:
    """A stand-in `LivePlayer` that records what it is given and when it starts."""

    def __init__(self) -> None:
        self.queued_seconds, self.started = 0.0, False

    def add(self, audio: np.ndarray) -> None:
        self.queued_seconds += len(audio) / RATE

    def start(self) -> None:
        self.started = True


class AudioLike:
    sample_rate = RATE

    def audio(self, values: np.ndarray) -> np.ndarray:
        return mu_law_decode(values)


def test_live_playback_starts_once_the_prebuffer_for_the_measured_speed_is_queued() -> None:
    chunk = np.full(1600, 128, dtype=np.uint8)  # 0.1 s
    fast, slow = Recorder(), Recorder()
    fast_playback = LivePlayback(fast, AudioLike(), 10.0)  # type: ignore[arg-type]
    slow_playback = LivePlayback(slow, AudioLike(), 10.0)  # type: ignore[arg-type]
    for index in range(1, 60):
        fast_playback.add(chunk, elapsed=0.05 * index)  # 2x real time
        slow_playback.add(chunk, elapsed=0.2 * index)  # half real time
        assert fast.started == (index >= 3)  # the floor, 0.25 s: the third chunk
    assert not slow.started  # at half real time, 6 s of the 10 first; 5.9 s are there
    slow_playback.add(chunk, elapsed=11.0)  # 6 s at 0.55x: 5.6 s needed
    assert slow.started


def test_sample_plays_live_what_it_writes(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
    tmp_path: Path,
    device: FakeDevice,
) -> None:
    train_tiny(capsys, recordings)
    target = tmp_path / "live.wav"
    arguments = ["--seconds", "0.4", "--out", str(target), "--play"]
    result = succeed(capsys, "sample", "piano-small", *arguments)
    assert "x real time" in result.out and "could not play" not in result.err
    written, rate = sf.read(target, dtype="float32")
    assert rate == RATE and len(written) == 6400
    played = device.audio()
    assert not np.isnan(played).any()  # every frame asked for was filled
    # No mu-law class decodes to exactly 0: the exact zeros are where playback caught up with
    # generation, and after the end. The rest is the file, in order (16-bit rounding apart).
    np.testing.assert_allclose(played[played != 0.0], written, atol=1e-4)
    assert device.streams[0].closed


def test_ctrl_c_while_playing_stops_and_keeps_the_file(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
    tmp_path: Path,
    device: FakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train_tiny(capsys, recordings)

    def ctrl_c_while_waiting(self: LivePlayer) -> None:
        self.start()
        raise KeyboardInterrupt

    monkeypatch.setattr(LivePlayer, "finish", ctrl_c_while_waiting)
    target = tmp_path / "stopped.wav"
    result = run(
        capsys, "sample", "piano-small", "--seconds", "0.1", "--out", str(target), "--play"
    )
    assert_one_error_line(result, "playback stopped", str(target))
    assert sf.read(target)[0].shape == (1600,)
    assert device.streams[0].stopped and device.streams[0].closed


def test_ctrl_c_while_generating_keeps_a_shorter_valid_file(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    device: FakeDevice,
) -> None:
    train_tiny(capsys, recordings)
    from sequnet_cli.tasks.audio import AudioSampler

    draw = AudioSampler.draw
    calls = {"count": 0}

    def interrupted(self: AudioSampler, output: Any, uniforms: Any) -> Any:
        calls["count"] += 1
        if calls["count"] > 1500:
            raise KeyboardInterrupt
        return draw(self, output, uniforms)

    monkeypatch.setattr(AudioSampler, "draw", interrupted)
    target = tmp_path / "short.wav"
    result = run(capsys, "sample", "piano-small", "--seconds", "1", "--out", str(target), "--play")
    assert_one_error_line(result, "interrupted after 1,500 of 16,000 samples", str(target))
    assert sf.read(target)[0].shape == (1500,)
    assert all(stream.stopped or not stream.active for stream in device.streams)
