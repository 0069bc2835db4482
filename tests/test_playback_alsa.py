"""`sample --play` through the real audio stack: sounddevice -> PortAudio -> ALSA -> a file.

The command runs as a user runs it, in a process of its own, with a HOME whose `.asoundrc` makes
ALSA's default device the `file` plugin over the `null` device, writing into a FIFO the test
reads. The `null` device does not pace playback: it takes audio as fast as it comes (2 s of
16 kHz audio went through it in 2 ms). The test's reader does: it reads the FIFO no faster than
the sample rate, so the FIFO fills and PortAudio's callbacks wait, as a sound card's clock
makes them wait. The FIFO holds one page (1,024 float32 frames, half a second here), which the
device takes at once, ahead of the clock: the only way it is looser than a sound card.

The model is a tiny one trained at 2,000 Hz, so that a loaded 2-core CPU still generates it
faster than real time. The claim that playback starts within a second is checked where it
holds, where generation runs at real time or faster, and timed from the line the command
prints just before it generates, not from the process's start, whose imports take seconds on
a loaded machine. The fake `OutputStream` tests (test_playback.py) check the logic, such as
Ctrl-C stopping the stream; here, that the real stack stops at Ctrl-C without a hang or a
message, and plays exactly what is written.
"""

from __future__ import annotations

import ctypes.util
import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import pytest
import soundfile as sf
from cli import Result, assert_one_error_line
from test_cli_audio import TINY, tone

import sequnet_cli
from sequnet_cli.app import main


def _missing() -> str | None:
    """Why this machine cannot run these tests, if it cannot."""
    if not sys.platform.startswith("linux"):
        return "plays into ALSA, the Linux sound system"
    if ctypes.util.find_library("portaudio") is None:  # how sounddevice finds it
        return "needs the PortAudio library (Debian: apt-get install libportaudio2)"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

RATE = 2000  # Hz: the tiny model generates faster than real time at this rate
FRAME_BYTES = 4  # PortAudio hands ALSA the product's float32 mono frames unchanged
STEP16 = 2.0**-15  # one step of the WAV's 16 bits
PIPE_BYTES = 4096  # the smallest FIFO Linux allows: one page
SLACK_BYTES = 256  # the reader takes this much beyond the clock, to read in blocks
TIMEOUT = 120.0  # seconds a command may take before the test gives up on it (a hang)
PLAYBACK_WAIT = 15.0  # seconds after generation began that Ctrl-C waits for playback, at most
ROOT = Path(sequnet_cli.__file__).resolve().parents[1]  # the code these tests import

ASOUNDRC = """\
pcm.!default {{
    type file
    slave.pcm "null"
    file "{fifo}"
    format "raw"
}}
"""


class PacedSink:
    """ALSA's default output device for processes run with `home` as HOME: the frames played
    into it, read at `rate` frames per second, and when the first sound came."""

    def __init__(self, home: Path, rate: int) -> None:
        self.rate = rate
        fifo = home / "played.fifo"
        os.mkfifo(fifo)
        (home / ".asoundrc").write_text(ASOUNDRC.format(fifo=fifo))
        # Open before any writer: ALSA's open for writing waits for a reader.
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        self.data = bytearray()
        self.started: float | None = None  # when the first frame came (the stream started)
        self.first_sound: float | None = None  # when the first frame that is not silence came
        self.draining = threading.Event()  # the writers are gone: read the rest unpaced
        self.reader = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Self:
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.draining.set()
        self.reader.join(timeout=30)
        os.close(self.fd)

    def frames(self) -> np.ndarray:
        """Everything played, `(T,)` float32."""
        usable = len(self.data) - len(self.data) % FRAME_BYTES
        return np.frombuffer(bytes(self.data[:usable]), dtype=np.float32)

    def _allowed(self) -> int:
        """Bytes the clock lets the reader take now."""
        if self.started is None or self.draining.is_set():
            return PIPE_BYTES
        due = (time.monotonic() - self.started) * self.rate * FRAME_BYTES + SLACK_BYTES
        return min(PIPE_BYTES, int(due) - len(self.data))

    def _read(self) -> None:
        while True:
            allowed = self._allowed()
            if allowed <= 0:
                time.sleep(0.002)
                continue
            ready, _, _ = select.select([self.fd], [], [], 0.01)
            try:
                block = os.read(self.fd, allowed) if ready else b""
            except BlockingIOError:
                block = b""
            if not block:  # nothing yet, or no writer (ALSA opens the device several times)
                if self.draining.is_set():
                    return
                time.sleep(0.002)
                continue
            now = time.monotonic()
            checked = len(self.data) - len(self.data) % FRAME_BYTES
            self.data += block
            self.started = self.started or now
            if self.first_sound is None and self.frames()[checked // FRAME_BYTES :].any():
                self.first_sound = now


class Command:
    """`sequnet ARGS` in a process of its own with HOME at `home`; its stdout lines with the
    time each came, and its stderr."""

    def __init__(self, home: Path, *arguments: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ALSA_")}
        paths = [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),  # ALSA reads a user file there too
            PYTHONPATH=os.pathsep.join(paths),
            PYTHONUNBUFFERED="1",  # each line as it is printed, to time it
            COLUMNS="200",  # no line wrapped
            OMP_NUM_THREADS="1",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sequnet_cli", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=home,
        )
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._collect, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._collect, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:  # the test failed while it ran: no process left behind
            self.process.kill()
            self.process.wait()

    def _collect(self, stream: object, timed: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if timed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
            else:
                self.errors.append(line)

    def wait(self) -> Result:
        """Its exit code and output, once it has ended."""
        code = self.process.wait(timeout=TIMEOUT)
        for reader in self.readers:
            reader.join(timeout=10)
        return Result(code, "\n".join(line for _, line in self.lines), "".join(self.errors))

    def line(self, start: str) -> tuple[float, str]:
        """The first stdout line that begins with `start`, and when it came."""
        found = [(when, line) for when, line in self.lines if line.startswith(start)]
        assert found, f"no line starting with {start!r} in {self.lines}"
        return found[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a tiny audio model trained at `RATE`, shared by the tests here."""
    folder = tmp_path_factory.mktemp("low-rate")
    takes = folder / "takes"
    takes.mkdir()
    for index, frequency in enumerate([220.0, 330.0, 440.0, 550.0]):
        sf.write(takes / f"take{index}.flac", tone(0.5, frequency), 22050)
    with pytest.MonkeyPatch.context() as patch:  # what conftest.py does for each test
        patch.setenv("SEQUNET_HOME", str(folder / "home"))
        patch.setenv("SEQUNET_DEVICE", "cpu")
        rate = ["--set", f"data.sample_rate={RATE}"]
        main(["train", "piano-small", "--data", str(takes), "--steps", "2", *TINY, *rate])
    (checkpoint,) = folder.glob("home/runs/*/best.pt")
    return checkpoint


def sound_of(played: np.ndarray) -> np.ndarray:
    """The played frames less silence: no mu-law class decodes to exactly 0, so the exact zeros
    are the device's own (before the stream's first callback, after its last) and those where
    playback caught up with generation."""
    return played[played != 0.0]


def test_play_delivers_exactly_what_it_writes(model: Path, tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "live.wav"
    home.mkdir()
    # Step by step (--no-capture): what is tested is playback, not compiled steps.
    arguments = ["sample", str(model), "--seconds", "1", "--out", str(target), "--play"]
    arguments.append("--no-capture")
    with PacedSink(home, RATE) as sink, Command(home, *arguments) as command:
        result = command.wait()
    assert result.code == 0, result.err
    assert result.err == ""  # no warning (it played), no message from PortAudio or ALSA
    written, rate = sf.read(target, dtype="float32")
    sound = sound_of(sink.frames())
    assert rate == RATE and len(written) == RATE and len(sound) == len(written)
    np.testing.assert_allclose(sound, written, rtol=0, atol=STEP16)


def test_playback_starts_within_a_second_and_ctrl_c_stops_it_and_generation(
    model: Path, tmp_path: Path
) -> None:
    """Ctrl-C while generating and playing a long clip. Generation starts after the command
    prints which model it uses; from there, playback must start within a second where
    generation runs at real time or faster (here measured from that line to Ctrl-C, setup
    included, so never too fast)."""
    home, target = tmp_path / "home", tmp_path / "stopped.wav"
    home.mkdir()
    seconds = 300  # far more than is generated before Ctrl-C, however fast generation is
    arguments = ["sample", str(model), "--seconds", str(seconds), "--out", str(target)]
    arguments.append("--no-capture")  # step by step: playback is tested, not compiled steps
    with PacedSink(home, RATE) as sink, Command(home, *arguments, "--play") as command:
        _wait_for(lambda: any(line.startswith("model ") for _, line in command.lines), command)
        began, _ = command.line("model ")
        _wait_for(lambda: sink.first_sound is not None, command, PLAYBACK_WAIT)
        time.sleep(0.2)  # playing, and generating ahead of it
        assert command.process.poll() is None, command.wait()
        command.process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        result = command.wait()
    total = seconds * RATE
    assert_one_error_line(result, f"of {total:,} samples", str(target))
    assert result.err.count("\n") == 1  # nothing else: no message from PortAudio or ALSA
    drawn = re.search(r"interrupted after ([\d,]+) of", result.err)
    assert drawn is not None, result.err
    written, rate = sf.read(target, dtype="float32")  # a valid WAV of what was generated
    assert rate == RATE and 0 < len(written) == int(drawn[1].replace(",", "")) < total
    sound = sound_of(sink.frames())  # what was played: the start of what was written
    assert len(sound) <= len(written)
    np.testing.assert_allclose(sound, written[: len(sound)], rtol=0, atol=STEP16)

    speed = len(written) / RATE / (interrupted - began)  # x real time, at least
    if speed >= 1.0:
        assert sink.first_sound is not None, f"no sound at {speed:.2f}x real time"
        assert sink.first_sound - began <= 1.0, (sink.first_sound - began, speed)
    else:
        warnings.warn(
            f"generation ran at {speed:.2f}x real time on this machine: playback starting "
            "within a second, a claim for real time or faster, was not checked",
            stacklevel=1,
        )


def _wait_for(done: Callable[[], bool], command: Command, seconds: float = TIMEOUT) -> bool:
    """Wait until `done()` or `seconds` have passed (False); the command must still run."""
    deadline = time.monotonic() + seconds
    while not done():
        assert command.process.poll() is None, command.wait()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
