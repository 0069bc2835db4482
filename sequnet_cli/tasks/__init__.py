"""Tasks: one kind of data each, behind one protocol, found by name (DESIGN.md, "Tasks").

A task wraps a network for one kind of data; the network never knows the data type. The task
owns everything that depends on the kind: the network's channel widths, the training data and
its batches, the loss and the metric, the random batches `sequnet bench` times, the sampler
that draws the next element during generation, what sampling needs to know of the training
data (its profile, stored with every checkpoint), and the writer of the generated files.
Nothing outside the task modules asks which kind of data a run has.

Adding a kind of data is one module here (a class with the `Task` interface, registered in
`TASK_CLASSES`), one module in `sequnet_cli.data`, and presets. Tasks are imported when first
used, so that reading presets and `sequnet --help` do not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from models import CausalNetwork
    from sequnet_cli.config import RunConfig
    from sequnet_cli.generation import SampleRequest

# Task name (as written in presets) -> "module:class".
TASK_CLASSES: dict[str, str] = {
    "piano-roll": "sequnet_cli.tasks.piano_roll:PianoRollTask",
    "audio": "sequnet_cli.tasks.audio:AudioTask",
}
TASK_NAMES = tuple(TASK_CLASSES)
DEFAULT_TEMPO = 120.0  # beats per minute, where neither the user nor the data says (MIDI's own)

Progress = Callable[[int], None]  # called with the number of new elements


class FileProgress(Protocol):
    """Told about each file read: files done, in all, the next file, and (for audio) the hours
    of audio done and in all."""

    def __call__(
        self, done: int, total: int, path: Path, hours: tuple[float, float] | None = None
    ) -> None: ...


@dataclass
class Batch:
    """A batch in the task's most compact form (the task's `loss_sum` makes the network's
    input from it): inputs `x` (`(B, C, T)` frames, or `(B, T)` audio codes), targets, and a
    mask of the predicted positions."""

    x: Tensor
    target: Tensor
    mask: Tensor  # (B, T_out) float or bool, nonzero where a prediction counts

    @property
    def count(self) -> int:
        return int(self.mask.sum().item())

    @property
    def nbytes(self) -> int:
        """What the batch takes in memory, and to send to a device."""
        return sum(t.numel() * t.element_size() for t in (self.x, self.target, self.mask))

    def pinned(self) -> Batch:
        """The batch in page-locked host memory, which a GPU copies from while it computes."""
        return Batch(self.x.pin_memory(), self.target.pin_memory(), self.mask.pin_memory())

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`; from pinned memory the copies do not wait for the device."""
        blocking = not (device.type == "cuda" and self.x.is_pinned())
        return Batch(
            *(t.to(device, non_blocking=not blocking) for t in (self.x, self.target, self.mask))
        )


@dataclass(frozen=True)
class Shard:
    """The part of the data one process of a distributed run reads: `rank` of `world`.

    Training: each step's batch is `world` times the process's batch, drawn alike by every
    process from the run's seed; process `rank` keeps its rows `rank::world`. Evaluation:
    process `rank` takes the batches `rank, rank + world, ...` of the split.
    """

    rank: int = 0
    world: int = 1

    @property
    def rows(self) -> slice:
        """This process's rows of a batch drawn for all processes."""
        return slice(self.rank, None, self.world)

    def takes(self, index: int) -> bool:
        """Whether evaluation batch `index` is this process's."""
        return index % self.world == self.rank


WHOLE = Shard()  # one process reads everything


@dataclass(frozen=True)
class BenchShape:
    """How `sequnet bench` sizes a task's training measurements."""

    targets: int  # predicted elements per example
    batch_size: int | None = None  # None: the preset's shared [train] batch size
    width_scale: float = 1.0  # multiplies every feature width of both networks
    sweep_levels: tuple[int, ...] = tuple(range(2, 11))  # Seq-U-Net resolutions per sweep point
    sweep_width: int | None = None  # None: the Seq-U-Net's width (after width_scale)
    sweep_targets: int | None = None  # None: `targets`


class TaskData(Protocol):
    """A task's dataset: its splits as batches."""

    splits: Container[str]  # the splits it holds (of train, valid, test)

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        skip: int = 0,
        shard: Shard = WHOLE,
    ) -> Iterator[Batch]:
        """Training batches (with `generator`), else the split's evaluation batches.

        `skip`: training batches of this epoch already done (a resumed run); not built.
        `shard`: this process's part of them (see `Shard`); every process gets as many
        training batches as the others, some perhaps with nothing to predict.
        """
        ...

    def scored_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Batches that predict every element of the split once, each from its whole receptive
        field (what `sequnet evaluate` scores); the evaluation batches of `batches`, which
        validation scores, may be a fixed sample of them."""
        ...

    def epoch_batches(self, batch_size: int) -> int:
        """Optimizer steps in one training epoch at `batch_size` examples per step (all
        processes together)."""
        ...

    def epoch_generator(self, seed: int, epoch: int, running: torch.Generator) -> torch.Generator:
        """The generator that draws epoch `epoch`'s training batches: a fresh one seeded by
        `(seed, epoch)`, or `running`, whose state the trainer checkpoints."""
        ...

    def profile(self) -> dict[str, Any]:
        """What sampling needs to know of the training data, in plain values: stored with every
        checkpoint and given back to `task_for` when the model is loaded."""
        ...


class Sampler(Protocol):
    """Draws generated elements from a network's outputs, one time step at a time.

    `draw` uses fixed buffers and random numbers it is given, so that a CUDA graph can replay
    it (`sequnet_cli.autoregression`); the sampler's seeded generator fills those numbers in
    blocks (`fill_random`).
    """

    device: torch.device
    value_shape: tuple[int, ...]  # one drawn element of one sequence: () or (pitches,)
    value_dtype: torch.dtype  # of the drawn elements as stored
    random_shape: tuple[int, ...]  # random numbers one draw takes per sequence

    def first_input(self) -> Tensor:
        """The input at t = 0 without a primer: `(B, in_channels)`."""
        ...

    def encode(self, primer: np.ndarray) -> Tensor:
        """A primer in the task's storage form as network input `(1, in_channels, P)`."""
        ...

    def fill_random(self, block: Tensor) -> None:
        """Fill `block: (steps, B, *random_shape)` with the random numbers of the next steps."""
        ...

    def draw(self, output: Tensor, randoms: Tensor) -> tuple[Tensor, Tensor]:
        """From one output `(B, out_channels)` and this step's random numbers
        `(B, *random_shape)`: the drawn elements `(B, *value_shape)` and the next input
        `(B, in_channels)`."""
        ...


class Counting(Protocol):
    """A number per element (piano roll: voices per frame) whose distribution over generated
    elements `sequnet evaluate --generation` compares with the test data's."""

    name: str  # what is counted, e.g. "voices"
    reference: np.ndarray  # (bins,) ints: elements of the test data per number

    def histogram(self, values: np.ndarray) -> np.ndarray:
        """Elements of one generated sequence `(n, ...)` per number: `(bins,)` ints."""
        ...


class StabilityMeasure(Protocol):
    """How a task compares generated output with its data over time (`sequnet evaluate
    --generation`): statistics of windows of generated elements and of the test data."""

    window: int  # elements per window
    window_name: str  # what one window is, e.g. "second", "8 frames"
    names: tuple[str, ...]  # the statistics, with their units where they have one
    counting: Counting | None  # a distribution over all elements as well, if the task has one

    def statistics(self, values: np.ndarray) -> dict[str, float]:
        """The statistics of one window of one generated sequence, `(window, ...)`."""
        ...

    def reference(self) -> list[dict[str, float]]:
        """The statistics of windows of the test data."""
        ...


class Task(Protocol):
    """One kind of data; see the module docstring."""

    name: str
    metric: str  # short name of the metric, e.g. "NLL"
    metric_title: str  # with its unit, e.g. "NLL (nats/frame)"
    unit: str  # what one predicted element is called: "frames", "samples"
    output_suffixes: tuple[str, ...]  # of generated files, the usual one first: ".mid", ".wav"
    generated_bytes: int  # memory one generated element takes until it is written, about
    default_temperature: float  # what sampling divides the logits by unless told otherwise
    in_channels: int
    out_channels: int
    sample_rate: int | None  # elements per second of real time, when fixed (audio)
    sample_options: frozenset[str]  # options of `sample` its outputs use beyond all tasks'
    # Whether every training batch has the same shape (a CUDA graph of the step then replays
    # for all of them); False where lengths vary with the data.
    fixed_batch_shape: bool

    def build_network(self) -> CausalNetwork:
        """The run's network with the task's input and output widths."""
        ...

    def train_command(self, preset: str) -> str:
        """The command that trains a model of `preset` (naming the data it still needs)."""
        ...

    def open_data(
        self,
        data: Path | None,
        data_dir: Path | None,
        receptive_field: int,
        progress: FileProgress | None = None,
    ) -> TaskData:
        """Load the run's data (`data` replaces the preset's dataset); `progress` is told
        about each file decoded."""
        ...

    def loss_sum(self, network: CausalNetwork, batch: Batch) -> Tensor:
        """Summed negative log-likelihood (nats) of the batch's predicted elements."""
        ...

    def score(self, nats: float, count: int) -> float:
        """The metric from a total NLL in nats over `count` predicted elements."""
        ...

    def random_batch(
        self, batch_size: int, targets: int, receptive_field: int, generator: torch.Generator
    ) -> Batch:
        """A batch of random data shaped as training batches are, with `targets` predicted
        elements per example (what `sequnet bench` times)."""
        ...

    def random_inputs(self, steps: int, batch_size: int, generator: torch.Generator) -> Tensor:
        """`steps` random stream inputs `(steps, B, in_channels)`, as generation feeds them."""
        ...

    def bench_shape(self, quick: bool) -> BenchShape:
        """The sizes `sequnet bench` measures at: the paper's, or `--quick` ones for a CPU."""
        ...

    def tempo(self, given: float | None, primer: Path | None) -> float:
        """The tempo in beats per minute outputs are written at (`--tempo` or not given, and the
        primer); `DEFAULT_TEMPO` where it means nothing."""
        ...

    def generation_steps(self, steps: int | None, seconds: float | None, tempo: float) -> int:
        """How many elements `sequnet sample` generates for its `--steps` or `--seconds`."""
        ...

    def read_primer(self, path: Path) -> np.ndarray:
        """A primer file in the task's storage form (as the training data was read)."""
        ...

    def sampler(
        self,
        network: CausalNetwork,
        count: int,
        temperature: float,
        seed: int,
        voices: str | None = None,
    ) -> Sampler:
        """A seeded sampler for `count` sequences at once; `voices`: the `--voices` option
        (piano roll; None is the task's default)."""
        ...

    def write(
        self, output: np.ndarray, primer: np.ndarray | None, path: Path, request: SampleRequest
    ) -> str:
        """Write one generated sequence (after `primer`, if given) to `path`; returns a
        one-line summary of what was written."""
        ...

    def play(self, output: np.ndarray, primer: np.ndarray | None) -> None:
        """Play one generated sequence, or say why not (`DeviceError`, or a warning)."""
        ...

    def stability(self, data: TaskData) -> StabilityMeasure:
        """The statistics that tell whether generation stays like `data` over time."""
        ...

    def audio(self, values: np.ndarray) -> np.ndarray | None:
        """Generated elements (or a primer) as float audio `(T,)` at `sample_rate`, for live
        playback; None when the task's outputs are not sound."""
        ...


def sampling_temperature(task: Task, asked: float | None) -> float:
    """The temperature to sample at: the one asked for (`--temperature`), else the task's."""
    return task.default_temperature if asked is None else asked


def task_for(config: RunConfig, profile: Mapping[str, Any] | None = None) -> Task:
    """The task of a run config (its `task` key names it); `profile`: what a stored model's
    checkpoint holds of its training data (`TaskData.profile`; empty if it holds none), None for a
    task that is not a stored model's."""
    if config.task not in TASK_CLASSES:
        from sequnet_cli.errors import ConfigError

        raise ConfigError(f"unknown task '{config.task}'; known: {', '.join(TASK_NAMES)}")
    module, _, name = TASK_CLASSES[config.task].partition(":")
    task_class: Callable[..., Task] = getattr(importlib.import_module(module), name)
    return task_class(config, profile)
