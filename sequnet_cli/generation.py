"""The `sample` workflow: load a trained model, generate through its stream, write files, play.

Generation never runs a full pass per step: a primer is fed with `Stream.prime` in one
parallel pass, then each new element is drawn by the task's sampler from the last output and
fed back (`sequnet_cli.autoregression`; on CUDA as captured CUDA graphs, on a CPU compiled, unless
`--no-capture`).
The same seed gives the same output. Each chunk of drawn elements goes to its consumers as it
comes: the display, the live player, and the outputs the task writes at the end (MIDI for piano
rolls, WAV for audio), each atomically.

Everything that can be refused (the options, the output path, the memory the output needs) is
checked before generation starts. Ctrl-C stops generation and playback and writes what was
generated: a shorter file is still a valid one.

Live playback (`--play`, one audio output): the audio is queued as it is generated and starts
playing once enough of it is ahead for generation, at the speed measured so far, to stay ahead
until the end (`prebuffer_seconds`): within a fraction of a second when generation runs faster
than real time, after (almost) all of it otherwise.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sequnet_cli.audio_io import LivePlayer
from sequnet_cli.autoregression import Autoregression, start
from sequnet_cli.checkpoints import Which
from sequnet_cli.console import GenerationDisplay, console, print_warning
from sequnet_cli.devices import check_memory
from sequnet_cli.errors import ConfigError, DataError, DeviceError, SequnetError, WriteError
from sequnet_cli.tasks import Task, sampling_temperature
from sequnet_cli.trained_model import TrainedModel, load_model

# MIDI stores a beat's length in microseconds in 24 bits: no slower tempo can be written.
TEMPO_RANGE = (4.0, 1000.0)
MIDI_PROGRAMS = 128
SEEDS = 2**64  # what a torch.Generator accepts
PREBUFFER_FLOOR = 0.25  # seconds of audio queued before live playback starts, at least
SPEED_MARGIN = 0.8  # assume generation may slow to this fraction of its measured speed


@dataclass(frozen=True)
class SampleRequest:
    """What the user asked `sequnet sample` for."""

    out: Path | None = None
    out_folder: bool = False  # `out` was written as a folder (a trailing slash)
    count: int = 1
    steps: int | None = None
    seconds: float | None = None
    temperature: float | None = None  # None: the task's default
    seed: int = 0
    primer: Path | None = None
    keep_primer: bool = True
    tempo: float | None = None  # None: the primer's, else the model's (`Task.tempo`)
    program: int = 0
    voices: str | None = None  # piano roll: `--voices`; None: the task's default
    asked: frozenset[str] = frozenset()  # options of some kinds of model given: "tempo", ...
    play: bool = False
    capture: bool = True  # the step and the draw as CUDA graphs (CUDA) or compiled (CPU)
    threads: int = 1  # CPU threads for the steps

    def check(self) -> None:
        """Refuse impossible requests before any model is loaded."""
        if self.count < 1:
            raise ConfigError(f"-n must be at least 1, got {self.count}")
        if self.steps is not None and self.seconds is not None:
            raise ConfigError(
                "give the length with --steps or with --seconds, not both "
                f"(--steps {self.steps}, --seconds {self.seconds:g})"
            )
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"--seconds must be a positive number, got {self.seconds}")
        if self.temperature is not None and not (
            math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ConfigError(f"--temperature must be a number above 0, got {self.temperature}")
        low, high = TEMPO_RANGE
        if self.tempo is not None and not low <= self.tempo <= high:  # NaN fails too
            raise ConfigError(
                f"--tempo must be from {low:g} to {high:g} beats per minute, got {self.tempo}"
            )
        if not 0 <= self.program < MIDI_PROGRAMS:
            raise ConfigError(
                f"--program must be a General MIDI program from 0 to {MIDI_PROGRAMS - 1}, "
                f"got {self.program}"
            )
        if not 0 <= self.seed < SEEDS:
            raise ConfigError(f"--seed must be from 0 to 2**64 - 1, got {self.seed}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")


def generate(
    ref: str, model: str | None, which: Which, request: SampleRequest, device: torch.device
) -> list[Path]:
    """Generate `request.count` outputs from the model `ref`; returns the files written."""
    request.check()
    try:
        trained = load_model(ref, model, which, device)
        plan = Plan.make(trained, request)
        request = replace(request, tempo=plan.tempo)  # what the files are written at
        if trained.demo is not None:
            console.print(trained.demo.notice(), soft_wrap=True)
        console.print(trained.describe(), soft_wrap=True, markup=False)  # a path, as it is
        task = trained.task
        temperature = sampling_temperature(task, request.temperature)
        sampler = task.sampler(
            trained.network, request.count, temperature, request.seed, request.voices
        )
        generation = start(
            trained.network,
            sampler,
            request.count,
            plan.steps,
            device,
            primer=plan.primer,
            fast=request.capture,
            threads=request.threads,
            recipe=trained.recipe(
                request.count, temperature, request.seed, request.voices, request.threads
            ),
        )
        player = _live_player(task, request, plan.steps, plan.kept, plan.paths[0])
    except KeyboardInterrupt:
        raise SequnetError("interrupted before generation began; nothing was written") from None
    started = time.monotonic()
    try:
        outputs = _consume(generation.chunks(plan.steps), plan.steps, task, player)
    except _Interrupted as interrupted:
        if player is not None:
            player.stop()
        raise SequnetError(_keep_interrupted(task, interrupted.chunks, plan, request)) from None
    elapsed = time.monotonic() - started
    write_outputs(task, outputs, plan, request)
    total = plan.steps * request.count
    console.print(
        f"generated {total:,} {task.unit} at temperature {temperature:g} in {elapsed:.1f} s "
        f"({_speed(total, elapsed, task)}{_way(generation)})"
    )
    if request.play and (player is not None or not plays_live(task, request)):
        _play(task, outputs, plan, player)
    return plan.paths


@dataclass(frozen=True)
class Plan:
    """What a request will generate and where it goes, everything refusable checked."""

    steps: int  # new elements per output
    primer: np.ndarray | None  # continued by the generation
    kept: np.ndarray | None  # written before each output: the primer, unless left out
    paths: list[Path]
    tempo: float  # beats per minute the outputs are written at (`Task.tempo`)

    @classmethod
    def make(cls, trained: TrainedModel, request: SampleRequest) -> Plan:
        """The plan of `request` for `trained`; a `ConfigError` (or `DataError` for the primer,
        `DeviceError` for memory) before anything is generated."""
        task = trained.task
        unused = sorted(request.asked - task.sample_options)
        if unused:
            raise ConfigError(
                f"--{unused[0]} does not apply to this model ({task.name}, written as "
                f"{task.output_suffixes[0]} files); leave it out"
            )
        primer = None
        if request.primer is not None:
            if request.primer.is_dir():
                raise DataError(
                    f"the primer {request.primer} is a folder; give one file to continue "
                    f"(e.g. a {task.output_suffixes[0]} file)"
                )
            primer = task.read_primer(request.primer)
        tempo = task.tempo(request.tempo, request.primer)
        steps = task.generation_steps(request.steps, request.seconds, tempo)
        if steps < 1:
            raise ConfigError(
                f"--seconds {request.seconds:g} is shorter than one of the model's {task.unit}; "
                "ask for a longer sample"
            )
        kept = primer if request.keep_primer else None
        elements = request.count * (steps + (len(kept) if kept is not None else 0))
        what = f"{steps:,} {task.unit}"
        check_memory(
            elements * task.generated_bytes,
            torch.device("cpu"),
            f"{request.count} x {what}" if request.count > 1 else what,
            "ask for fewer --steps or --seconds, or a smaller -n",
        )
        stem = f"{trained.config.preset}-sample"
        paths = output_paths(
            request.out, request.count, stem, task.output_suffixes, request.out_folder
        )
        return cls(steps, primer, kept, paths, tempo)


class _Interrupted(Exception):
    """Ctrl-C during generation, with the chunks drawn until then."""

    def __init__(self, chunks: list[np.ndarray]) -> None:
        super().__init__("interrupted")
        self.chunks = chunks


def _consume(
    chunks: Iterator[np.ndarray], steps: int, task: Task, player: LivePlayback | None
) -> np.ndarray:
    """Hand each chunk `(count, n, ...)` to the display and the live player as it comes;
    return them all, `(count, steps, ...)`."""
    collected: list[np.ndarray] = []
    started = time.monotonic()
    try:
        with GenerationDisplay(steps, task.unit, task.sample_rate) as display:
            for chunk in chunks:
                collected.append(chunk)
                display.advance(chunk.shape[1])
                if player is not None:
                    player.add(chunk[0], time.monotonic() - started)
                    display.note("playing" if player.started else "")
    except KeyboardInterrupt:
        raise _Interrupted(collected) from None
    return np.concatenate(collected, axis=1)


def _way(generation: Autoregression) -> str:
    """How the steps ran, when not eagerly."""
    if generation.captured:
        return ", CUDA graphs"
    return ", compiled steps" if generation.compiled else ""


def _speed(elements: int, seconds: float, task: Task) -> str:
    rate = elements / max(seconds, 1e-9)
    text = f"{rate:,.0f} {task.unit}/s"
    return text + (f", {rate / task.sample_rate:.2f}x real time" if task.sample_rate else "")


def _keep_interrupted(
    task: Task, collected: list[np.ndarray], plan: Plan, request: SampleRequest
) -> str:
    """After Ctrl-C during generation: write what was generated; says what was kept."""
    done = sum(chunk.shape[1] for chunk in collected)
    if done == 0:
        return (
            f"interrupted before any of {plan.steps:,} {task.unit} was drawn; nothing was written"
        )
    write_outputs(task, np.concatenate(collected, axis=1), plan, request)
    written = ", ".join(str(path) for path in plan.paths)
    return (
        f"interrupted after {done:,} of {plan.steps:,} {task.unit}; what was generated is "
        f"written (shorter than asked) to {written}"
    )


def write_outputs(task: Task, outputs: np.ndarray, plan: Plan, request: SampleRequest) -> None:
    """Write each output (after the kept primer) to its path, saying what was written."""
    for done, (output, path) in enumerate(zip(outputs, plan.paths, strict=True)):
        try:
            path.parent.mkdir(exist_ok=True)  # the folder asked for several outputs
        except OSError as error:
            raise WriteError(f"cannot create the output folder {path.parent} ({error})") from error
        try:
            summary = task.write(output, plan.kept, path, request)
        except KeyboardInterrupt:
            written = f"{done} of {len(plan.paths)} files were" if done else "nothing was"
            raise SequnetError(f"interrupted while writing {path}; {written} written") from None
        console.print(f"wrote {path} ({summary})")


class LivePlayback:
    """`--play` while generating: each chunk's audio is queued on a `LivePlayer`, which starts
    once `prebuffer_seconds` of audio are queued for the speed measured so far."""

    def __init__(self, player: LivePlayer, task: Task, total_seconds: float) -> None:
        self.player, self.task, self.total_seconds = player, task, total_seconds
        self.generated_seconds = 0.0

    @property
    def started(self) -> bool:
        return self.player.started

    def add(self, values: np.ndarray, elapsed: float) -> None:
        """Queue one chunk of generated elements, `elapsed` seconds after generation began."""
        audio = self.task.audio(values)
        assert audio is not None and self.task.sample_rate  # `_live_player` made sure
        self.player.add(audio)
        self.generated_seconds += len(audio) / self.task.sample_rate
        speed = self.generated_seconds / max(elapsed, 1e-9)  # x real time
        if self.player.queued_seconds >= prebuffer_seconds(self.total_seconds, speed):
            self.player.start()

    def finish(self) -> None:
        self.player.finish()

    def stop(self) -> None:
        self.player.stop()


def prebuffer_seconds(total_seconds: float, speed: float) -> float:
    """Audio to queue before live playback starts, for `total_seconds` generated at `speed` x
    real time: playback started then stays behind generation to the end even if generation
    slows to `SPEED_MARGIN` of its speed (it must run `total * (1 - margin * speed)` seconds
    ahead), and never less than `PREBUFFER_FLOOR`."""
    ahead = total_seconds * (1.0 - SPEED_MARGIN * speed)
    return min(total_seconds, max(PREBUFFER_FLOOR, ahead))


def plays_live(task: Task, request: SampleRequest) -> bool:
    """Whether `--play` plays while generating: one output whose elements are sound."""
    return request.play and request.count == 1 and task.audio(np.zeros(0, np.uint8)) is not None


def _live_player(
    task: Task, request: SampleRequest, steps: int, primer: np.ndarray | None, path: Path
) -> LivePlayback | None:
    """A live player for `--play`; None when it does not play live or, with one warning, when
    no audio device can be opened."""
    if not plays_live(task, request) or not task.sample_rate:
        return None
    player = LivePlayer(task.sample_rate)
    try:
        player.open()
    except DeviceError as error:
        print_warning(f"could not play: {error}; the audio will be in {path}")
        return None
    primer_steps = 0
    if primer is not None:
        player.add(task.audio(primer))  # type: ignore[arg-type]  # sound, as `plays_live` said
        primer_steps = len(primer)
    return LivePlayback(player, task, (steps + primer_steps) / task.sample_rate)


def _play(task: Task, outputs: np.ndarray, plan: Plan, live: LivePlayback | None) -> None:
    """After the files are written: let the live player finish, or play each output in turn."""
    try:
        if live is not None:
            live.finish()
            return
        for output, path in zip(outputs, plan.paths, strict=True):
            try:
                task.play(output, plan.kept)
            except DeviceError as error:
                print_warning(f"could not play: {error}; the audio is in {path}")
                return
    except KeyboardInterrupt:
        if live is not None:
            live.stop()
        written = ", ".join(str(path) for path in plan.paths)
        raise SequnetError(f"playback stopped; {written} written") from None


def output_paths(
    out: Path | None,
    count: int,
    stem: str,
    suffixes: tuple[str, ...],
    folder_asked: bool = False,
) -> list[Path]:
    """Where the outputs go, checked before anything is generated: one file (`out`, or
    `./<stem><suffix>`), numbered files beside `out` for several, or numbered files in the
    folder `out` (made when they are written; its parent must exist, as a file's folder must).
    `out` is a folder when it is one, has no suffix, or was given with a trailing slash
    (`folder_asked`), whatever dots its name has.
    """
    if out is None:
        out = Path(f"{stem}{suffixes[0]}") if count == 1 else Path(stem)
    out = out.expanduser()
    if out.is_dir() or not out.suffix or folder_asked:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder for several outputs")
        paths = [out / f"{stem}-{i + 1}{suffixes[0]}" for i in range(count)]
        folder = out if out.is_dir() else out.parent
    else:
        if out.suffix.lower() not in suffixes:
            raise ConfigError(
                f"--out {out}: this model writes {suffixes[0]} files; "
                f"give a name ending in {' or '.join(suffixes)}"
            )
        numbered = [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]
        paths = [out] if count == 1 else numbered
        folder = out.parent
    if not folder.is_dir():
        raise ConfigError(
            f"cannot write {paths[0]}: the folder {folder} does not exist; "
            "create it or choose another --out"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write into {folder} (permission denied); choose another --out")
    return paths
