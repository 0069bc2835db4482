"""The `sample` workflow: load a trained model, generate through its stream, write files.

Generation never runs a full pass per step: a primer is fed with `Stream.prime` in one
parallel pass, then each new element is drawn by the task's sampler from the last output and
fed back with `Stream.step`. The same seed gives the same output. The task writes the files
(MIDI for piano rolls, WAV for audio), each atomically.

Everything that can be refused (the options, the output path, the memory the output needs) is
checked before generation starts. Ctrl-C during generation writes what was generated so far:
a shorter file is still a valid one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import Which
from sequnet_cli.console import GenerationDisplay, console, print_warning
from sequnet_cli.devices import check_memory
from sequnet_cli.errors import ConfigError, DeviceError, SequnetError, WriteError
from sequnet_cli.tasks import Progress, Sampler, Task
from sequnet_cli.trained_model import TrainedModel, load_model

PROGRESS_EVERY = 256  # steps between progress reports (reporting each step costs time)
# MIDI stores a beat's length in microseconds in 24 bits: no slower tempo can be written.
TEMPO_RANGE = (4.0, 1000.0)
MIDI_PROGRAMS = 128
SEEDS = 2**64  # what a torch.Generator accepts


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

    def check(self) -> None:
        """Refuse impossible requests before any model is loaded."""
        if self.count < 1:
            raise ConfigError(f"-n must be at least 1, got {self.count}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"--seconds must be a positive number, got {self.seconds}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"--temperature must be a number above 0, got {self.temperature}")
        low, high = TEMPO_RANGE
        if not low <= self.tempo <= high:  # NaN fails too
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


def generate(
    ref: str, model: str | None, which: Which, request: SampleRequest, device: torch.device
) -> list[Path]:
    """Generate `request.count` outputs from the model `ref`; returns the files written."""
    request.check()
    try:
        trained = load_model(ref, model, which, device)
        plan = Plan.make(trained, request)
        console.print(trained.describe(), soft_wrap=True)
        task, network = trained.task, trained.network
        sampler = task.sampler(network, request.count, request.temperature, request.seed)
    except KeyboardInterrupt:
        raise SequnetError("interrupted before generation began; nothing was written") from None
    draft = Draft()
    started = time.monotonic()
    try:
        with GenerationDisplay(plan.steps, task.unit, task.sample_rate) as display:
            count, primer = request.count, plan.primer
            outputs = autoregress(
                network, sampler, plan.steps, count, primer, display.advance, draft
            )
    except KeyboardInterrupt:
        raise SequnetError(_keep_interrupted(task, draft, plan, request)) from None
    elapsed = time.monotonic() - started
    write_outputs(task, outputs, plan, request)
    total = plan.steps * request.count
    console.print(
        f"generated {total:,} {task.unit} in {elapsed:.1f} s "
        f"({total / max(elapsed, 1e-9):,.0f} {task.unit}/s)"
    )
    if request.play:
        _play(task, outputs, plan)
    return plan.paths


@dataclass(frozen=True)
class Plan:
    """What a request will generate and where it goes, everything refusable checked."""

    steps: int  # new elements per output
    primer: np.ndarray | None  # continued by the generation
    kept: np.ndarray | None  # written before each output: the primer, unless left out
    paths: list[Path]

    @classmethod
    def make(cls, trained: TrainedModel, request: SampleRequest) -> Plan:
        """The plan of `request` for `trained`; a `ConfigError` (or `DataError` for the primer,
        `DeviceError` for memory) before anything is generated."""
        task = trained.task
        steps = task.generation_steps(request.steps, request.seconds, request.tempo)
        if steps < 1:
            raise ConfigError(
                f"--seconds {request.seconds:g} is shorter than one of the model's {task.unit}; "
                "ask for a longer sample"
            )
        primer = task.read_primer(request.primer) if request.primer is not None else None
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
        paths = output_paths(request.out, request.count, stem, task.output_suffixes)
        return cls(steps, primer, kept, paths)


def _keep_interrupted(task: Task, draft: Draft, plan: Plan, request: SampleRequest) -> str:
    """After Ctrl-C during generation: write what was generated; says what was kept."""
    if draft.done == 0:
        return (
            f"interrupted before any of {plan.steps:,} {task.unit} was drawn; nothing was written"
        )
    write_outputs(task, draft.result(), plan, request)
    written = ", ".join(str(path) for path in plan.paths)
    return (
        f"interrupted after {draft.done:,} of {plan.steps:,} {task.unit}; what was generated is "
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


def _play(task: Task, outputs: np.ndarray, plan: Plan) -> None:
    for output, path in zip(outputs, plan.paths, strict=True):
        try:
            task.play(output, plan.kept)
        except DeviceError as error:
            print_warning(f"could not play: {error}; the audio is in {path}")
            return
        except KeyboardInterrupt:
            raise SequnetError(f"playback interrupted; {path} is written") from None


@dataclass
class Draft:
    """What generation has drawn so far: `values` `(count, steps, ...)`, the first `done`
    steps of it complete."""

    values: torch.Tensor | None = None
    done: int = 0

    def result(self) -> np.ndarray:
        """The complete steps: `(count, done, ...)`."""
        assert self.values is not None  # done >= 1
        return self.values[:, : self.done].cpu().numpy()


def autoregress(
    network: CausalNetwork,
    sampler: Sampler,
    steps: int,
    count: int,
    primer: np.ndarray | None = None,
    progress: Progress | None = None,
    draft: Draft | None = None,
) -> np.ndarray:
    """`count` sequences of `steps` new elements each, drawn by `sampler`: `(count, steps, ...)`.

    With a primer, generation continues it (the primer itself is not returned). `draft`, when
    given, holds what was drawn so far should generation be interrupted.
    """
    draft = draft if draft is not None else Draft()
    stream = network.stream(count)
    if primer is not None and len(primer) > 0:
        context = sampler.encode(primer)  # (1, C, P)
        output = stream.prime(context.expand(count, -1, -1).contiguous())[..., -1]
    else:
        output = stream.step(sampler.first_input())
    for t in range(steps):
        values, next_input = sampler.draw(output)
        if draft.values is None:
            draft.values = values.new_empty((count, steps, *values.shape[1:]))
        draft.values[:, t] = values
        draft.done = t + 1
        if t + 1 < steps:
            output = stream.step(next_input)
        if progress is not None and ((t + 1) % PROGRESS_EVERY == 0 or t + 1 == steps):
            progress(t % PROGRESS_EVERY + 1)
    return draft.result()


def output_paths(out: Path | None, count: int, stem: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Where the outputs go, checked before anything is generated: one file (`out`, or
    `./<stem><suffix>`), numbered files beside `out` for several, or numbered files in the
    folder `out` (made when they are written; its parent must exist, as a file's folder must).
    """
    if out is None:
        out = Path(f"{stem}{suffixes[0]}") if count == 1 else Path(stem)
    out = out.expanduser()
    if out.is_dir() or not out.suffix:
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
