"""The `sample` workflow: load a trained model, generate through its stream, write files.

Generation never runs a full pass per step: a primer is fed with `Stream.prime` in one
parallel pass, then each new element is drawn by the task's sampler from the last output and
fed back with `Stream.step`. The same seed gives the same output. The task writes the files
(MIDI for piano rolls, WAV for audio), each atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import Which
from sequnet_cli.console import GenerationDisplay, console, print_warning
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.tasks import Progress, Sampler
from sequnet_cli.trained_model import load_model

PROGRESS_EVERY = 256  # steps between progress reports (reporting each step costs time)


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
        if (self.steps is not None and self.steps < 1) or (
            self.seconds is not None and not self.seconds > 0
        ):
            raise ConfigError("the length (--steps or --seconds) must be positive")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be above 0, got {self.temperature}")
        if not self.tempo > 0:
            raise ConfigError(f"--tempo must be positive, got {self.tempo}")


def generate(
    ref: str, model: str | None, which: Which, request: SampleRequest, device: torch.device
) -> list[Path]:
    """Generate `request.count` outputs from the model `ref`; returns the files written."""
    request.check()
    trained = load_model(ref, model, which, device)
    task = trained.task
    steps = task.generation_steps(request.steps, request.seconds, request.tempo)
    primer = task.read_primer(request.primer) if request.primer is not None else None
    sampler = task.sampler(trained.network, request.count, request.temperature, request.seed)
    started = time.monotonic()
    with GenerationDisplay(steps, task.unit, task.sample_rate) as display:
        outputs = autoregress(
            trained.network, sampler, steps, request.count, primer, display.advance
        )
    elapsed = time.monotonic() - started
    stem = f"{trained.config.preset}-sample"
    paths = output_paths(request.out, request.count, stem, task.output_suffix)
    kept = primer if request.keep_primer else None
    for output, path in zip(outputs, paths, strict=True):
        console.print(f"wrote {path} ({task.write(output, kept, path, request)})")
    total = steps * request.count
    console.print(
        f"generated {total:,} {task.unit} in {elapsed:.1f} s "
        f"({total / max(elapsed, 1e-9):,.0f} {task.unit}/s)"
    )
    if request.play:
        for output, path in zip(outputs, paths, strict=True):
            try:
                task.play(output, kept)
            except DeviceError as error:
                print_warning(f"could not play: {error}; the audio is in {path}")
                break
    return paths


def autoregress(
    network: CausalNetwork,
    sampler: Sampler,
    steps: int,
    count: int,
    primer: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """`count` sequences of `steps` new elements each, drawn by `sampler`: `(count, steps, ...)`.

    With a primer, generation continues it (the primer itself is not returned).
    """
    stream = network.stream(count)
    if primer is not None and len(primer) > 0:
        context = sampler.encode(primer)  # (1, C, P)
        output = stream.prime(context.expand(count, -1, -1).contiguous())[..., -1]
    else:
        output = stream.step(sampler.first_input())
    drawn: torch.Tensor | None = None
    for t in range(steps):
        values, next_input = sampler.draw(output)
        if drawn is None:
            drawn = values.new_empty((count, steps, *values.shape[1:]))
        drawn[:, t] = values
        if t + 1 < steps:
            output = stream.step(next_input)
        if progress is not None and ((t + 1) % PROGRESS_EVERY == 0 or t + 1 == steps):
            progress(t % PROGRESS_EVERY + 1)
    assert drawn is not None  # steps >= 1
    return drawn.cpu().numpy()


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
