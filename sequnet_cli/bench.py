"""`sequnet bench`: what the Seq-U-Net saves against its baseline, measured (paper §4, Table 1).

Training: the mean time of a full step (valid-mode forward, loss, backward, Adam step) and its
peak memory, for the preset's Seq-U-Net and a baseline (WaveNet for audio presets, TCN for piano
rolls) on the same random batch and the same number of targets. Generation: samples (or frames)
per second of each network's stream, stepped one input at a time in eval mode. A sweep over the
number of levels shows how both costs grow with the receptive field N: for I inputs the
Seq-U-Net computes fewer than 8·I activations whatever its depth, the baseline I·log N (§4.1).

What "memory" means depends on the device, and `BenchResult.memory_measure` says it in words:
on CUDA it is `torch.cuda.max_memory_allocated` over the training steps (weights included, as
in the paper's Table 1); on a CPU each training measurement runs in a fresh Python process, and
the figure is that process's peak resident set size minus its resident size once torch is
imported and the model built: gradients, Adam state, the batch, the activations, and whatever
the allocator keeps. On Linux the peak is `VmHWM`, reset at that point through
/proc/self/clear_refs, rather than `ru_maxrss`, which a child inherits from its parent's RSS at
the fork (see `_peak_rss_bytes`). `activation_bytes` (tensors saved for the backward pass by one
forward and loss, counted once per storage) is the same on every device and is the quantity §4
counts.

Measurements return dataclasses, `run_bench` gathers them into a `BenchResult`, `render_bench`
draws it with Rich and `BenchResult.to_json` gives the `--json` document (schema in its
docstring). `bench_command` is the Typer command, registered by the app.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from torch import Tensor

from models import CONFIGS, CausalNetwork, NetworkConfig, ResidualSeqUNet, SeqUNet, build_network
from models.configs import ResidualSeqUNetConfig, SeqUNetConfig, TCNConfig, WaveNetConfig
from sequnet_cli.builders import resolve_device
from sequnet_cli.config import ModelConfig, RunConfig, TrainConfig, load_preset, resolve
from sequnet_cli.console import console, error_console

PITCHES, CLASSES = 88, 256
JSON_SCHEMA_VERSION = 1
Progress = Callable[[str], None]


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSizes:
    """How much work each measurement does: `bench_sizes` gives the paper's or the quick ones."""

    warmup_steps: int = 2  # untimed training steps first (allocator, cuDNN autotuning)
    train_steps: int = 5  # timed training steps; their mean is reported
    generation_seconds: float = 3.0  # whole clock cycles are timed until at least this long
    width_scale: float = 1.0  # multiplies every feature width of both networks
    targets: int | None = None  # audio targets per example; None: the preset's excerpt_targets
    frames: int = 300  # piano roll: predicted frames per sequence ("a few hundred")
    batch_size: int | None = None  # None: 2 for audio (the paper's Table 1 batch), else preset's
    sweep_levels: tuple[int, ...] = tuple(range(2, 12))  # Seq-U-Net resolutions per point
    sweep_width: int | None = None  # None: the Seq-U-Net's width (after width_scale)
    sweep_targets: int | None = None  # None: the training targets
    sweep_batch_size: int = 1
    isolate: bool = True  # CPU: a fresh process per training measurement, to read its peak RSS


def bench_sizes(task: str, quick: bool) -> BenchSizes:
    """Full paper sizes (meant for a GPU), or `--quick` ones that run on a CPU in minutes."""
    if not quick:
        return BenchSizes(sweep_levels=tuple(range(2, 12 if task == "audio" else 11)))
    if task == "audio":
        # A quarter of the width, a fifth of the targets: the depth (and so the receptive field,
        # which decides the ratios) stays the paper's.
        return BenchSizes(
            warmup_steps=1,
            train_steps=3,
            generation_seconds=1.0,
            width_scale=0.25,
            targets=1000,
            sweep_levels=(2, 4, 6, 8),
            sweep_width=32,
            sweep_targets=500,
        )
    return BenchSizes(
        warmup_steps=2,
        train_steps=5,
        generation_seconds=1.0,
        frames=200,
        sweep_levels=(2, 4, 6, 8),
        sweep_width=64,
    )


_WIDTH_FIELDS = ("channels", "residual_channels", "dilation_channels", "skip_channels")


def scale_widths(config: NetworkConfig, scale: float) -> NetworkConfig:
    """The config with every feature width multiplied by `scale` (at least 2)."""
    if scale == 1.0:
        return config

    def scaled(width: int) -> int:
        return max(2, round(width * scale))

    changes: dict[str, Any] = {}
    for name in _WIDTH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, tuple):
            changes[name] = tuple(scaled(width) for width in value)
        elif isinstance(value, int):
            changes[name] = scaled(value)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def with_depth(architecture: str, config: NetworkConfig, width: int, count: int) -> NetworkConfig:
    """`config` with one width everywhere and `count` resolutions (Seq-U-Nets), blocks (TCN)
    or layers per stack (WaveNet): the knob that sets the receptive field."""
    if architecture == "residual-sequnet" and isinstance(config, ResidualSeqUNetConfig):
        return dataclasses.replace(config, channels=width, levels=count)
    if architecture in ("sequnet", "tcn") and isinstance(config, SeqUNetConfig | TCNConfig):
        return dataclasses.replace(config, channels=(width,) * count)
    if architecture == "wavenet" and isinstance(config, WaveNetConfig):
        return dataclasses.replace(
            config,
            residual_channels=width,
            dilation_channels=width,
            skip_channels=width,
            layers=count,
        )
    raise ValueError(f"no depth knob for architecture {architecture!r}")


def _network_width(architecture: str, config: NetworkConfig) -> int:
    value = getattr(config, "residual_channels" if architecture == "wavenet" else "channels")
    return int(value[0] if isinstance(value, tuple) else value)


# --- the networks -----------------------------------------------------------------------------


def _in_channels(task: str) -> int:
    return CLASSES if task == "audio" else PITCHES


def build(architecture: str, config: NetworkConfig, task: str) -> CausalNetwork:
    """The network with the task's input and output widths (88 pitches or 256 classes)."""
    width = _in_channels(task)
    return build_network(architecture, width, width, config)


def receptive_field(architecture: str, config: NetworkConfig) -> int:
    """The receptive field of `config`, read from a two-feature copy (cheap to build)."""
    narrow = with_depth(architecture, config, 2, _depth(architecture, config))
    return build_network(architecture, 1, 1, narrow).receptive_field


def _depth(architecture: str, config: NetworkConfig) -> int:
    if architecture == "residual-sequnet":
        return int(config.levels)  # type: ignore[union-attr]
    if architecture == "wavenet":
        return int(config.layers)  # type: ignore[union-attr]
    return len(config.channels)  # type: ignore[union-attr, arg-type]


def clock_cycle(network: CausalNetwork) -> int:
    """Steps after which a stream's schedule repeats: 2**levels for a Seq-U-Net, else 1."""
    if isinstance(network, SeqUNet | ResidualSeqUNet):
        return 2**network.blocks
    return 1


@dataclass(frozen=True)
class ModelInfo:
    """One benchmarked network: the preset variant, its architecture and size."""

    variant: str
    architecture: str
    network: NetworkConfig
    parameters: int
    receptive_field: int

    @classmethod
    def of(cls, variant: str, architecture: str, config: NetworkConfig, task: str) -> ModelInfo:
        network = build(architecture, config, task)
        count = sum(parameter.numel() for parameter in network.parameters())
        return cls(variant, architecture, config, count, network.receptive_field)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "architecture": self.architecture,
            "network": _plain(dataclasses.asdict(self.network)),
            "parameters": self.parameters,
            "receptive_field": self.receptive_field,
        }


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSpec:
    """One training measurement: what to build, on what batch, for how many steps."""

    architecture: str
    network: NetworkConfig
    task: str
    batch_size: int
    targets: int  # outputs per example (valid mode); the inputs are receptive_field - 1 more
    warmup_steps: int
    steps: int
    lr: float
    threads: int  # CPU threads

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["network"] = _plain(dataclasses.asdict(self.network))
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingSpec:
        network_class = CONFIGS[values["architecture"]]
        fields: dict[str, Any] = {
            key: tuple(v) if isinstance(v, list) else v for key, v in values["network"].items()
        }
        return cls(**{**values, "network": network_class(**fields)})


@dataclass(frozen=True)
class TrainingMeasurement:
    """Time and memory of full training steps (forward, loss, backward, Adam step)."""

    seconds_per_step: float  # mean over the timed steps
    steps: int  # timed steps, after the warm-up
    inputs: int  # input length per example: receptive_field - 1 + targets
    targets: int
    peak_memory_bytes: int | None  # see BenchResult.memory_measure; None: not measured
    activation_bytes: int  # tensors saved for backward by one forward and loss

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _random_batch(
    task: str, batch: int, inputs: int, targets: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Random inputs `(B, C, inputs)` and the targets of the last `targets` outputs."""
    if task == "audio":
        classes = torch.randint(0, CLASSES, (batch, inputs + 1), device=device)
        x = F.one_hot(classes[:, :-1], CLASSES).transpose(1, 2).float().contiguous()  # (B, 256, T)
        return x, classes[:, -targets:]  # (B, n): the next sample of each output
    rolls = (torch.rand(batch, PITCHES, inputs + 1, device=device) < 0.1).float()  # (B, 88, T + 1)
    return rolls[..., :-1].contiguous(), rolls[..., -targets:].contiguous()


def _loss(task: str, logits: Tensor, target: Tensor) -> Tensor:
    """The tasks' losses: cross-entropy over 256 classes, or BCE summed over pitches."""
    if task == "audio":
        return F.cross_entropy(logits, target)
    frames = target.shape[0] * target.shape[-1]
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / frames


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_rss() -> None:
    """Lower this process's RSS high-water mark to its current RSS (Linux): without it, a
    transient peak while importing would hide any smaller growth that follows."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass  # elsewhere the earlier peak stays; the growth then reads low, never high


def _peak_rss_bytes() -> int:
    """The peak resident set size. On Linux `VmHWM`, which `_reset_peak_rss` resets: `ru_maxrss`
    also counts the parent's RSS at the fork that started this process, so a large parent would
    hide a small child's peak. Elsewhere `ru_maxrss` (KiB, or bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    import resource  # POSIX only; imported here so the app still starts elsewhere

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def saved_activation_bytes(network: CausalNetwork, x: Tensor, target: Tensor, task: str) -> int:
    """Bytes of the non-parameter tensors autograd saves for backward in one forward and loss."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in network.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _loss(task, network(x, outputs=target.shape[-1]), target)
    return sum(saved.values())


def train_here(
    spec: TrainingSpec, device: torch.device, measure_rss: bool = False
) -> TrainingMeasurement:
    """Run the measurement in this process. Memory: CUDA's peak, or with `measure_rss` the peak
    RSS growth since the model was built (meaningful only in a fresh process), else None."""
    torch.manual_seed(0)
    network = build(spec.architecture, spec.network, spec.task).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=spec.lr)
    if measure_rss:
        _reset_peak_rss()
    baseline = _peak_rss_bytes()
    inputs = network.receptive_field - 1 + spec.targets
    x, target = _random_batch(spec.task, spec.batch_size, inputs, spec.targets, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _loss(spec.task, network(x, outputs=spec.targets), target).backward()
        optimizer.step()

    for _ in range(spec.warmup_steps):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(spec.steps):
        step()
    _synchronize(device)
    seconds = (time.perf_counter() - start) / max(spec.steps, 1)
    peak: int | None = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    elif measure_rss:
        peak = _peak_rss_bytes() - baseline
    activations = saved_activation_bytes(network, x, target, spec.task)
    return TrainingMeasurement(seconds, spec.steps, inputs, spec.targets, peak, activations)


_CHILD = "from sequnet_cli.bench import training_child; training_child()"


def train_in_fresh_process(spec: TrainingSpec) -> TrainingMeasurement:
    """Run a CPU measurement in a new Python process, so that its peak RSS is its own."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(spec.to_dict()),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        if done.returncode < 0:
            reason = [f"killed by signal {-done.returncode} (out of memory?)"]
        raise RuntimeError(f"the {spec.architecture} training measurement failed: {reason[0]}")
    return TrainingMeasurement(**json.loads(done.stdout))


def training_child() -> None:
    """Entry point of the fresh process: a `TrainingSpec` as JSON on stdin, the result on stdout."""
    spec = TrainingSpec.from_dict(json.loads(sys.stdin.read()))
    torch.set_num_threads(spec.threads)
    measurement = train_here(spec, torch.device("cpu"), measure_rss=True)
    sys.stdout.write(json.dumps(measurement.to_json()))  # a pipe to the parent, not the terminal


def measure_training(
    spec: TrainingSpec, device: torch.device, isolate: bool = True
) -> TrainingMeasurement:
    """Training time and memory; on a CPU in a fresh process unless `isolate` is False
    (then the peak memory is not measured)."""
    if device.type == "cpu" and isolate:
        return train_in_fresh_process(spec)
    with _cpu_threads(spec.threads):
        return train_here(spec, device)


@contextmanager
def _cpu_threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op CPU threads (on CUDA they only drive the launches)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- generation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationMeasurement:
    """Streaming speed: `steps` calls of `stream.step` (each one element for B streams)."""

    batch_size: int
    threads: int
    steps: int  # timed steps: a whole number of clock cycles, after a warm-up cycle
    seconds: float
    cycle: int  # steps per clock cycle (2**levels for a Seq-U-Net, 1 otherwise)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def samples_per_second(self) -> float:
        """Elements generated per second over the whole batch."""
        return self.steps * self.batch_size / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "samples_per_second": self.samples_per_second}


def _random_steps(task: str, batch: int, count: int, device: torch.device) -> Tensor:
    """`count` random step inputs `(count, B, C)`: one-hot samples or binary frames."""
    if task == "audio":
        return F.one_hot(torch.randint(0, CLASSES, (count, batch), device=device), CLASSES).float()
    return (torch.rand(count, batch, PITCHES, device=device) < 0.1).float()


def measure_generation(
    network: CausalNetwork,
    task: str,
    batch_size: int,
    device: torch.device,
    *,
    min_seconds: float,
    threads: int,
) -> GenerationMeasurement:
    """Time `network.stream(batch_size).step` in eval mode: one warm-up chunk, then whole chunks
    (a multiple of the clock cycle, at least 64 steps) until `min_seconds` have passed."""
    network.eval()
    stream = network.stream(batch_size, device=device)
    cycle = clock_cycle(network)
    chunk = max(cycle, 64)  # a multiple of the cycle, which is a power of two
    inputs = _random_steps(task, batch_size, 64, device)
    with _cpu_threads(threads):
        for t in range(chunk):
            stream.step(inputs[t % 64])
        _synchronize(device)
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < min_seconds:
            for t in range(chunk):
                stream.step(inputs[t % 64])
            steps += chunk
            _synchronize(device)
        seconds = time.perf_counter() - start
    return GenerationMeasurement(batch_size, threads, steps, seconds, cycle)


# --- the comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingComparison:
    """The Seq-U-Net and the baseline on the same batch size and number of targets."""

    batch_size: int
    sequnet: TrainingMeasurement
    baseline: TrainingMeasurement

    @property
    def time_ratio(self) -> float:
        """Baseline time / Seq-U-Net time: how many times faster the Seq-U-Net trains."""
        return self.baseline.seconds_per_step / self.sequnet.seconds_per_step

    @property
    def memory_ratio(self) -> float | None:
        """Baseline peak memory / Seq-U-Net peak memory."""
        ours, theirs = self.sequnet.peak_memory_bytes, self.baseline.peak_memory_bytes
        return theirs / ours if ours and theirs else None

    @property
    def activation_ratio(self) -> float:
        return self.baseline.activation_bytes / max(self.sequnet.activation_bytes, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "sequnet": self.sequnet.to_json(),
            "baseline": self.baseline.to_json(),
            "ratios": {
                "time": self.time_ratio,
                "memory": self.memory_ratio,
                "activations": self.activation_ratio,
            },
        }


@dataclass(frozen=True)
class GenerationComparison:
    batch_size: int
    sequnet: GenerationMeasurement
    baseline: GenerationMeasurement

    @property
    def speedup(self) -> float:
        """Seq-U-Net samples per second / baseline samples per second."""
        return self.sequnet.samples_per_second / self.baseline.samples_per_second

    def to_json(self, sample_rate: int | None) -> dict[str, Any]:
        def side(measurement: GenerationMeasurement) -> dict[str, Any]:
            realtime = measurement.samples_per_second / sample_rate if sample_rate else None
            return {**measurement.to_json(), "realtime": realtime}

        return {
            "batch_size": self.batch_size,
            "threads": self.sequnet.threads,
            "sequnet": side(self.sequnet),
            "baseline": side(self.baseline),
            "speedup": self.speedup,
        }


@dataclass(frozen=True)
class SweepPoint:
    """One depth of the sweep: a Seq-U-Net with `levels` resolutions, a baseline matched on
    receptive field, both with the same feature width, trained at the sweep's batch size."""

    levels: int
    sequnet: ModelInfo
    baseline: ModelInfo
    training: TrainingComparison

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "sequnet": self.sequnet.to_json(),
            "baseline": self.baseline.to_json(),
            "training": self.training.to_json(),
        }


@dataclass(frozen=True)
class PaperFigures:
    """The paper's measurements for a preset (Seq-U-Net, baseline), on a GTX 1080."""

    source: str
    seconds_per_step: tuple[float, float]
    megabytes: tuple[float, float]
    samples_per_second: tuple[float, float] | None = None

    @property
    def time_ratio(self) -> float:
        return self.seconds_per_step[1] / self.seconds_per_step[0]

    @property
    def memory_ratio(self) -> float:
        return self.megabytes[1] / self.megabytes[0]

    @property
    def speedup(self) -> float | None:
        rates = self.samples_per_second
        return rates[0] / rates[1] if rates else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seconds_per_step": {
                "sequnet": self.seconds_per_step[0],
                "baseline": self.seconds_per_step[1],
            },
            "megabytes": {"sequnet": self.megabytes[0], "baseline": self.megabytes[1]},
            "ratios": {
                "time": self.time_ratio,
                "memory": self.memory_ratio,
                "generation": self.speedup,
            },
        }


# (preset, baseline variant) -> Table 1 (and §5.2 for the generation speed at batch 1).
PAPER: dict[tuple[str, str], PaperFigures] = {
    ("piano", "wavenet"): PaperFigures(
        "Table 1 (batch 2) and §5.2 (batch 1)", (0.3621, 1.4616), (1514, 5294), (309, 69)
    ),
    ("jsb", "tcn"): PaperFigures("Table 1, M-JSB", (0.0037, 0.0034), (8.2, 13.1)),
    ("nottingham", "tcn"): PaperFigures("Table 1, M-Nott", (0.0067, 0.0071), (52.5, 73.1)),
    ("musedata", "tcn"): PaperFigures("Table 1, M-Muse", (0.0065, 0.0059), (75.3, 108.5)),
}


@dataclass(frozen=True)
class BenchResult:
    """Everything `sequnet bench` measured, with the context needed to read it."""

    preset: str
    task: str
    quick: bool
    device: str
    device_name: str
    torch_version: str
    threads: dict[str, int]  # "training", "generation_batch_1", "generation_batch"
    memory_measure: str
    sample_rate: int | None  # audio presets: for the x real-time figures
    sequnet: ModelInfo
    baseline: ModelInfo
    training: TrainingComparison
    generation: list[GenerationComparison]
    sweep: list[SweepPoint]
    paper: PaperFigures | None

    @property
    def unit(self) -> str:
        return "samples" if self.task == "audio" else "frames"

    def to_json(self) -> dict[str, Any]:
        """The `--json` document (schema 1):

        {"schema": 1, "device", "device_name", "torch", "threads": {"training",
         "generation_batch_1", "generation_batch"}, "preset", "task", "quick", "unit",
         "sample_rate", "memory_measure",
         "models": {"sequnet"|"baseline": {"variant", "architecture", "network", "parameters",
                                           "receptive_field"}},
         "training": {"batch_size", "sequnet"|"baseline": {"seconds_per_step", "steps", "inputs",
                      "targets", "peak_memory_bytes" (null: not measured), "activation_bytes"},
                      "ratios": {"time", "memory", "activations"}  (baseline / Seq-U-Net)},
         "generation": {"runs": [{"batch_size", "threads", "sequnet"|"baseline": {"batch_size",
                        "threads", "steps", "seconds", "cycle", "samples_per_second",
                        "realtime" (seconds of audio per second over the batch; null for piano
                        rolls)}, "speedup" (Seq-U-Net / baseline)}]},
         "paper": null | {"source", "seconds_per_step", "megabytes", "ratios"},
         "sweep": [{"levels", "sequnet", "baseline" (as in "models"), "training" (as above)}]}
        """
        return {
            "schema": JSON_SCHEMA_VERSION,
            "device": self.device,
            "device_name": self.device_name,
            "torch": self.torch_version,
            "threads": dict(self.threads),
            "preset": self.preset,
            "task": self.task,
            "quick": self.quick,
            "unit": self.unit,
            "sample_rate": self.sample_rate,
            "memory_measure": self.memory_measure,
            "models": {"sequnet": self.sequnet.to_json(), "baseline": self.baseline.to_json()},
            "training": self.training.to_json(),
            "generation": {"runs": [run.to_json(self.sample_rate) for run in self.generation]},
            "paper": self.paper.to_json() if self.paper else None,
            "sweep": [point.to_json() for point in self.sweep],
        }


def memory_measure(device: torch.device, isolate: bool) -> str:
    """What the peak-memory figures are, in words."""
    if device.type == "cuda":
        return (
            "peak CUDA memory allocated by tensors during the training steps "
            "(torch.cuda.max_memory_allocated: weights, gradients, Adam state, activations)"
        )
    if not isolate:
        return "not measured (no fresh process per measurement)"
    return (
        "peak RSS growth of a fresh process over its baseline after importing torch and building "
        "the model (Linux VmHWM, reset at the baseline, else ru_maxrss: gradients, Adam state, "
        "batch, activations, allocator caches)"
    )


@dataclass(frozen=True)
class _Plan:
    """The resolved inputs of one bench run."""

    sequnet: ModelConfig
    baseline: ModelConfig
    lrs: tuple[float, float]
    task: str
    sizes: BenchSizes
    device: torch.device
    batch_size: int
    targets: int
    threads: dict[str, int]


def _plan(
    preset: str,
    vs: str | None,
    device: str | None,
    batch_size: int | None,
    threads: int | None,
    quick: bool,
    sizes: BenchSizes | None,
) -> tuple[_Plan, RunConfig]:
    file = load_preset(preset)
    ours = resolve(file, "sequnet", [])
    theirs = resolve(file, vs or ("wavenet" if ours.task == "audio" else "tcn"), [])
    target = resolve_device(device)
    sizes = sizes or bench_sizes(ours.task, quick)
    scaled = [
        dataclasses.replace(model, network=scale_widths(model.network, sizes.width_scale))
        for model in (ours.model, theirs.model)
    ]
    # The preset's shared batch size, not a variant's override: both models get the same batch.
    shared = int(file.train.get("batch_size", TrainConfig.batch_size))
    batch = batch_size or sizes.batch_size or (2 if ours.task == "audio" else shared)
    targets = (sizes.targets or ours.data.excerpt_targets) if ours.task == "audio" else sizes.frames
    default = torch.get_num_threads()
    counts = {
        "training": threads or default,
        "generation_batch_1": threads or 1,  # one thread was faster for small step matrices
        "generation_batch": threads or default,
    }
    plan = _Plan(
        scaled[0],
        scaled[1],
        (ours.train.lr, theirs.train.lr),
        ours.task,
        sizes,
        target,
        batch,
        targets,
        counts,
    )
    return plan, ours


def _compare_training(
    plan: _Plan, configs: Sequence[NetworkConfig], batch: int, targets: int, progress: Progress
) -> TrainingComparison:
    measurements = []
    for model, config, lr in zip((plan.sequnet, plan.baseline), configs, plan.lrs, strict=True):
        progress(f"training {model.name} ({model.architecture}), batch {batch}, {targets} targets")
        spec = TrainingSpec(
            model.architecture,
            config,
            plan.task,
            batch,
            targets,
            plan.sizes.warmup_steps,
            plan.sizes.train_steps,
            lr,
            plan.threads["training"],
        )
        measurements.append(measure_training(spec, plan.device, plan.sizes.isolate))
    return TrainingComparison(batch, measurements[0], measurements[1])


def _compare_generation(plan: _Plan, progress: Progress) -> list[GenerationComparison]:
    runs = []
    for batch in sorted({1, plan.batch_size}):
        threads = plan.threads["generation_batch_1" if batch == 1 else "generation_batch"]
        measured = []
        for model in (plan.sequnet, plan.baseline):
            progress(f"generating with {model.name}, batch {batch}")
            torch.manual_seed(0)
            network = build(model.architecture, model.network, plan.task).to(plan.device)
            measured.append(
                measure_generation(
                    network,
                    plan.task,
                    batch,
                    plan.device,
                    min_seconds=plan.sizes.generation_seconds,
                    threads=threads,
                )
            )
        runs.append(GenerationComparison(batch, measured[0], measured[1]))
    return runs


def sweep_pair(
    sequnet: ModelConfig, baseline: ModelConfig, levels: int, width: int
) -> tuple[NetworkConfig, NetworkConfig]:
    """A Seq-U-Net with `levels` resolutions and the baseline of the same width whose depth
    brings its receptive field closest (in ratio) to the Seq-U-Net's."""
    ours = with_depth(sequnet.architecture, sequnet.network, width, levels)
    goal = math.log(receptive_field(sequnet.architecture, ours))

    def distance(count: int) -> float:
        candidate = with_depth(baseline.architecture, baseline.network, width, count)
        return abs(math.log(receptive_field(baseline.architecture, candidate)) - goal)

    count = min(range(1, 21), key=distance)
    return ours, with_depth(baseline.architecture, baseline.network, width, count)


def _sweep(plan: _Plan, progress: Progress) -> list[SweepPoint]:
    sizes = plan.sizes
    width = sizes.sweep_width or _network_width(plan.sequnet.architecture, plan.sequnet.network)
    targets = sizes.sweep_targets or plan.targets
    points = []
    for levels in sizes.sweep_levels:
        configs = sweep_pair(plan.sequnet, plan.baseline, levels, width)
        progress(f"sweep: {levels} levels")
        training = _compare_training(plan, configs, sizes.sweep_batch_size, targets, lambda _: None)
        infos = [
            ModelInfo.of(model.name, model.architecture, config, plan.task)
            for model, config in zip((plan.sequnet, plan.baseline), configs, strict=True)
        ]
        points.append(SweepPoint(levels, infos[0], infos[1], training))
    return points


def run_bench(
    preset: str = "piano",
    vs: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    quick: bool = False,
    sweep: bool = True,
    sizes: BenchSizes | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Measure the preset's Seq-U-Net against `vs` (default: wavenet for audio, tcn for piano
    rolls). `sizes` replaces the full or quick sizes (tests shrink them). Raises `ConfigError`
    for an unknown preset or variant and `DeviceError` for a missing GPU."""
    plan, config = _plan(preset, vs, device, batch_size, threads, quick, sizes)
    report = progress or (lambda _: None)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the paper's benchmark mode (§5, footnote 5)
    configs = (plan.sequnet.network, plan.baseline.network)
    training = _compare_training(plan, configs, plan.batch_size, plan.targets, report)
    generation = _compare_generation(plan, report)
    points = _sweep(plan, report) if sweep else []
    name = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else "CPU"
    return BenchResult(
        preset=config.preset,
        task=plan.task,
        quick=quick,
        device=str(plan.device),
        device_name=name,
        torch_version=torch.__version__,
        threads=plan.threads,
        memory_measure=memory_measure(plan.device, plan.sizes.isolate),
        sample_rate=config.data.sample_rate if plan.task == "audio" else None,
        sequnet=ModelInfo.of(plan.sequnet.name, plan.sequnet.architecture, configs[0], plan.task),
        baseline=ModelInfo.of(
            plan.baseline.name, plan.baseline.architecture, configs[1], plan.task
        ),
        training=training,
        generation=generation,
        sweep=points,
        paper=PAPER.get((config.preset, plan.baseline.name)),
    )


# --- rendering --------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value} B"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,}"


def _rate(measurement: GenerationMeasurement, unit: str, sample_rate: int | None) -> str:
    text = f"{measurement.samples_per_second:,.0f} {unit}/s"
    if sample_rate:
        text += f"\n{measurement.samples_per_second / sample_rate:.3g}x real time"
    return text


def _main_table(result: BenchResult) -> Table:
    paper, training = result.paper, result.training
    ours, theirs = training.sequnet, training.baseline
    title = (
        f"sequnet bench: preset {result.preset}{' (--quick)' if result.quick else ''}, "
        f"training batch {training.batch_size} with {ours.targets:,} targets"
    )
    table = Table(title=title)
    table.add_column("")
    table.add_column(f"Seq-U-Net\n{result.sequnet.architecture}", justify="right")
    table.add_column(f"{result.baseline.variant}\n{result.baseline.architecture}", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("paper", justify="right")
    rows = [
        ("parameters", _count(result.sequnet.parameters), _count(result.baseline.parameters)),
        (
            "receptive field",
            f"{result.sequnet.receptive_field:,}",
            f"{result.baseline.receptive_field:,}",
        ),
        ("inputs per example", f"{ours.inputs:,}", f"{theirs.inputs:,}"),
    ]
    for row in rows:
        table.add_row(*row, "", "")
    table.add_row(
        "training step",
        _seconds(ours.seconds_per_step),
        _seconds(theirs.seconds_per_step),
        _ratio(training.time_ratio),
        _ratio(paper.time_ratio if paper else None),
    )
    table.add_row(
        "peak memory",
        _bytes(ours.peak_memory_bytes),
        _bytes(theirs.peak_memory_bytes),
        _ratio(training.memory_ratio),
        _ratio(paper.memory_ratio if paper else None),
    )
    table.add_row(
        "saved activations",
        _bytes(ours.activation_bytes),
        _bytes(theirs.activation_bytes),
        _ratio(training.activation_ratio),
        "",
    )
    for run in result.generation:
        threads = f"{run.sequnet.threads} thread{'s' if run.sequnet.threads > 1 else ''}"
        figure = paper.speedup if paper and run.batch_size == 1 else None
        table.add_row(
            f"generation\nbatch {run.batch_size}, {threads}",
            _rate(run.sequnet, result.unit, result.sample_rate),
            _rate(run.baseline, result.unit, result.sample_rate),
            _ratio(run.speedup),
            _ratio(figure),
        )
    return table


def _context(result: BenchResult) -> Text:
    threads = result.threads
    lines = [
        (
            f"device {result.device} ({result.device_name}), torch {result.torch_version}; "
            f"CPU threads: training {threads['training']}, generation at batch 1 "
            f"{threads['generation_batch_1']}, batched {threads['generation_batch']}"
        ),
        "ratios: baseline / Seq-U-Net for time and memory, Seq-U-Net / baseline for generation",
        f"peak memory: {result.memory_measure}",
        "saved activations: tensors autograd keeps for the backward pass (what paper §4 counts)",
    ]
    paper = result.paper
    if paper:
        rates = paper.samples_per_second
        lines.append(
            f"paper ({paper.source}, GTX 1080): {paper.seconds_per_step[0]} vs "
            f"{paper.seconds_per_step[1]} s per step, "
            f"{paper.megabytes[0]} vs {paper.megabytes[1]} MB"
            + (f", {rates[0]} vs {rates[1]} samples/s" if rates else "")
        )
    return Text("\n".join(lines), style="dim")


def _sweep_table(result: BenchResult) -> Table:
    first = result.sweep[0]
    width = _network_width(result.sequnet.architecture, first.sequnet.network)
    table = Table(
        title=f"cost against depth: batch {first.training.batch_size}, "
        f"{first.training.sequnet.targets:,} targets, width {width}"
    )
    baseline = result.baseline.variant
    for column in (
        "levels",
        "receptive field\nSeq-U-Net / " + baseline,
        "s/step\nSeq-U-Net",
        f"s/step\n{baseline}",
        "time\nratio",
        "memory\nSeq-U-Net",
        f"memory\n{baseline}",
        "memory\nratio",
    ):
        table.add_column(column, justify="right")
    for point in result.sweep:
        ours, theirs = point.training.sequnet, point.training.baseline
        table.add_row(
            str(point.levels),
            f"{point.sequnet.receptive_field:,} / {point.baseline.receptive_field:,}",
            _seconds(ours.seconds_per_step),
            _seconds(theirs.seconds_per_step),
            _ratio(point.training.time_ratio),
            _bytes(ours.peak_memory_bytes),
            _bytes(theirs.peak_memory_bytes),
            _ratio(point.training.memory_ratio),
        )
    return table


_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: float, largest: float, width: int = 32) -> str:
    """A horizontal bar of `value / largest * width` cells, in eighths of a cell."""
    eighths = round(8 * width * value / largest) if largest > 0 else 0
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def sweep_chart(result: BenchResult) -> Text:
    """Bars of training time and memory per step against depth, Seq-U-Net and baseline."""
    chart = Text()
    memory_known = all(p.training.memory_ratio is not None for p in result.sweep)
    panels: list[tuple[str, Callable[[TrainingMeasurement], float], Callable[[float], str]]] = [
        ("training time per step", lambda m: m.seconds_per_step, _seconds),
    ]
    if memory_known:
        panels.append(
            ("peak memory", lambda m: float(m.peak_memory_bytes or 0), lambda v: _bytes(int(v)))
        )
    panels.append(
        ("saved activations", lambda m: float(m.activation_bytes), lambda v: _bytes(int(v)))
    )
    for title, read, show in panels:
        chart.append(f"{title}\n", style="bold")
        largest = max(
            max(read(p.training.sequnet), read(p.training.baseline)) for p in result.sweep
        )
        for point in result.sweep:
            for label, measurement, style in (
                ("Seq-U-Net", point.training.sequnet, "green"),
                (result.baseline.variant, point.training.baseline, "magenta"),
            ):
                value = read(measurement)
                prefix = f"L={point.levels:<3}" if label == "Seq-U-Net" else " " * 5
                chart.append(f"{prefix} {label:>10} ")
                chart.append(bar(value, largest), style=style)
                chart.append(f" {show(value)}\n")
    return chart


def render_bench(result: BenchResult) -> list[RenderableType]:
    """The Rich renderables of a result: the side-by-side table, its context, the sweep."""
    parts: list[RenderableType] = [_main_table(result), _context(result)]
    if result.sweep:
        parts += [Text(""), _sweep_table(result), sweep_chart(result)]
    return parts


# --- the command ------------------------------------------------------------------------------


def bench_command(
    preset: Annotated[
        str, typer.Option(help="Preset to benchmark (e.g. piano, jsb) or a TOML file.")
    ] = "piano",
    vs: Annotated[
        str | None,
        typer.Option(
            help="Baseline variant of the preset (default: wavenet for audio, tcn for piano rolls)."
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (default: $SEQUNET_DEVICE or auto).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Batch for training and batched generation "
            "(default: 2 for audio, as in Table 1; else the preset's).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for every measurement "
            "(default: all for training, 1 for batch-1 generation).",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Reduced sizes that run on a CPU in minutes.")
    ] = False,
    sweep: Annotated[
        bool, typer.Option("--sweep/--no-sweep", help="Also measure cost against depth.")
    ] = True,
) -> None:
    """Benchmark a preset's Seq-U-Net against its baseline: training cost and generation speed."""
    with error_console.status("benchmarking") as status:
        result = run_bench(
            preset,
            vs,
            device,
            batch_size,
            threads,
            quick,
            sweep,
            progress=lambda message: status.update(message),
        )
    if json_output:
        console.print(
            json.dumps(result.to_json(), indent=2), markup=False, emoji=False, soft_wrap=True
        )
    else:
        console.print(Group(*render_bench(result)))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Tuples -> lists, so the dict survives JSON unchanged."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in values.items()
    }
