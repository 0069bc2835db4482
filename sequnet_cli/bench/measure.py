"""The two measurements of `sequnet bench`: a training step, and streaming generation.

Training: the mean time of the trainer's own step (`TrainingStep`: forward, loss, backward,
clipping, optimizer and weight average) on a random batch the task builds, and its memory.
Three memory figures, each for what it can say:

- `counted_memory_bytes`, the same on every device: the training memory the paper's Table 1
  compares, summed from the tensors themselves (distinct storages): weights, gradients,
  optimizer state (and the weight average), the tensors autograd saves for the backward pass
  (`activation_bytes`, the quantity paper §4 counts), and the batch.
- `peak_memory_bytes` (`memory_measure` says it in words): on CUDA the peak allocated during one
  step of a separate memory pass run with cuDNN benchmark mode off, once the optimizer holds its
  state; the timed steps run in benchmark mode, whose autotuning tries algorithms with
  workspaces of many gigabytes and would make the peak a figure of cuDNN, not of the model (that
  raw peak is kept as `allocator_peak_bytes`). On a CPU each training measurement runs in a
  fresh Python process, and the figure is that process's peak resident set size minus its
  resident size once torch is imported and the network built: gradients, optimizer state, the
  batch, the activations, and whatever the allocator keeps. On Linux the peak is `VmHWM`, reset
  at that point through /proc/self/clear_refs, rather than `ru_maxrss`, which a child inherits
  from its parent's RSS at the fork.
- `allocator_peak_bytes`: CUDA only, `torch.cuda.max_memory_allocated` over the warm-up and
  timed steps in benchmark mode, autotuning workspace included.

Generation: samples (or frames) per second of a network's stream, stepped one input at a time
in eval mode over whole clock cycles; on CUDA also captured, its step replayed as CUDA graphs
(`models.StepProgram`) with each next input picked on the device.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models import CausalNetwork, StepProgram, Stream
from sequnet_cli.config import RunConfig
from sequnet_cli.devices import cpu_threads, synchronize
from sequnet_cli.tasks import Batch, Task, task_for
from sequnet_cli.training_step import TrainingStep


@dataclass(frozen=True)
class TrainingSpec:
    """One training measurement: the run config to build and train, on what batch, how long."""

    config: RunConfig
    batch_size: int
    targets: int  # predicted elements per example
    warmup_steps: int
    steps: int
    threads: int  # CPU threads

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingSpec:
        return cls(**{**values, "config": RunConfig.from_dict(values["config"])})


@dataclass(frozen=True)
class TrainingMeasurement:
    """Time and memory of full training steps."""

    seconds_per_step: float  # mean over the timed steps
    steps: int  # timed steps, after the warm-up
    inputs: int  # input length per example
    targets: int
    peak_memory_bytes: int | None  # see `memory_measure`; None: not measured
    activation_bytes: int  # tensors saved for backward by one forward and loss
    counted_memory_bytes: int  # weights, gradients, optimizer state, activations, batch
    allocator_peak_bytes: int | None = None  # CUDA: the timed steps' raw allocator peak

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def memory_measure(device: torch.device, isolate: bool) -> str:
    """What the peak-memory figures are, in words."""
    if device.type == "cuda":
        return (
            "peak CUDA memory allocated during one training step of a separate pass with cuDNN "
            "benchmark mode off (weights, gradients, Adam state, activations, batch and the "
            "step's temporaries; not the autotuning workspace of the timed steps, whose raw "
            "allocator peak is allocator_peak_bytes in --json)"
        )
    if not isolate:
        return "not measured (no fresh process per measurement)"
    return (
        "peak RSS growth of a fresh process over its baseline after importing torch and building "
        "the model (Linux VmHWM, reset at the baseline, else ru_maxrss: gradients, Adam state, "
        "batch, activations, allocator caches)"
    )


def measure_training(
    spec: TrainingSpec, device: torch.device, isolate: bool = True
) -> TrainingMeasurement:
    """Training time and memory; on a CPU in a fresh process unless `isolate` is False
    (then the peak memory is not measured)."""
    if device.type == "cpu" and isolate:
        return train_in_fresh_process(spec)
    with cpu_threads(spec.threads):
        return train_here(spec, device)


def train_here(
    spec: TrainingSpec, device: torch.device, measure_rss: bool = False
) -> TrainingMeasurement:
    """Run the measurement in this process. Memory: CUDA's memory pass, or with `measure_rss`
    the peak RSS growth since the network was built (meaningful only in a fresh process), else
    None."""
    torch.manual_seed(0)
    task = task_for(spec.config)
    network = task.build_network().to(device).train()
    if measure_rss:
        _reset_peak_rss()
    baseline = _peak_rss_bytes()
    step = TrainingStep(network, task, spec.config.train)
    generator = torch.Generator().manual_seed(0)
    batch = task.random_batch(spec.batch_size, spec.targets, network.receptive_field, generator)
    batch = batch.to(device)
    peak: int | None = memory_pass(step, batch, device) if device.type == "cuda" else None
    allocator_peak: int | None = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed_steps(step, batch, device, spec.warmup_steps, spec.steps)
    if device.type == "cuda":
        allocator_peak = torch.cuda.max_memory_allocated(device)
    elif measure_rss:
        peak = _peak_rss_bytes() - baseline
    saved = saved_activation_storages(network, task, batch)
    return TrainingMeasurement(
        seconds_per_step=seconds,
        steps=spec.steps,
        inputs=batch.x.shape[-1],
        targets=spec.targets,
        peak_memory_bytes=peak,
        activation_bytes=sum(saved.values()),
        counted_memory_bytes=counted_training_bytes(step, batch, saved),
        allocator_peak_bytes=allocator_peak,
    )


def timed_steps(
    step: TrainingStep, batch: Batch, device: torch.device, warmup: int, steps: int
) -> float:
    """Seconds per training step: the mean of `steps` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    synchronize(device)
    return (time.perf_counter() - start) / max(steps, 1)


MEMORY_PASS_STEPS = 2  # CUDA: one step creates the optimizer state, the next is measured


def memory_pass(step: TrainingStep, batch: Batch, device: torch.device) -> int:
    """Peak CUDA memory allocated by one training step with cuDNN benchmark mode off, once the
    optimizer holds its state. Run before any benchmark-mode step of these shapes, so that no
    autotuned algorithm (and its workspace) is reused."""
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        step(batch)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(batch)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def counted_training_bytes(step: TrainingStep, batch: Batch, saved: dict[int, int]) -> int:
    """Bytes of the distinct storages a training step keeps: weights, gradients, optimizer
    state, the weight average, the batch, and `saved` (from `saved_activation_storages`).
    Call after a step, while the gradients and the optimizer state exist."""
    network = step.network
    tensors: list[torch.Tensor] = [*network.parameters(), batch.x, batch.target, batch.mask]
    tensors += [p.grad for p in network.parameters() if p.grad is not None]
    for state in step.optimizer.state.values():
        tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
    if step.averaged is not None:
        tensors += [*step.averaged.module.parameters(), *step.averaged.module.buffers()]
    storages = dict(saved)
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def saved_activation_bytes(network: CausalNetwork, task: Task, batch: Batch) -> int:
    """Bytes of the non-parameter tensors autograd saves for backward in one forward and loss."""
    return sum(saved_activation_storages(network, task, batch).values())


def saved_activation_storages(network: CausalNetwork, task: Task, batch: Batch) -> dict[int, int]:
    """The storages (address: bytes) of the non-parameter tensors autograd saves for backward in
    one forward and loss, each counted once."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in network.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        task.loss_sum(network, batch)
    return saved


_CHILD = "from sequnet_cli.bench.measure import training_child; training_child()"


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
        architecture = spec.config.model.architecture
        raise RuntimeError(f"the {architecture} training measurement failed: {reason[0]}")
    return TrainingMeasurement(**json.loads(done.stdout))


def training_child() -> None:
    """Entry point of the fresh process: a `TrainingSpec` as JSON on stdin, the result on stdout."""
    spec = TrainingSpec.from_dict(json.loads(sys.stdin.read()))
    torch.set_num_threads(spec.threads)
    measurement = train_here(spec, torch.device("cpu"), measure_rss=True)
    sys.stdout.write(json.dumps(measurement.to_json()))  # a pipe to the parent, not the terminal


def _reset_peak_rss() -> None:
    """Lower this process's RSS high-water mark to its current RSS (Linux): without it, a
    transient peak while importing would hide any smaller growth that follows."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass  # elsewhere the earlier peak stays; the growth then reads low, never high


def _peak_rss_bytes() -> int:
    """The peak resident set size: `VmHWM` on Linux (which `_reset_peak_rss` resets), else
    `ru_maxrss` (KiB, or bytes on macOS)."""
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


@dataclass(frozen=True)
class GenerationMeasurement:
    """Streaming speed: `steps` calls of `stream.step` (each one element for B streams)."""

    batch_size: int
    threads: int
    steps: int  # timed steps: a whole number of clock cycles, after a warm-up cycle
    seconds: float
    cycle: int  # steps per clock cycle (2**blocks for a Seq-U-Net, 1 otherwise)
    captured: bool = False  # the steps replayed CUDA graphs

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def samples_per_second(self) -> float:
        """Elements generated per second over the whole batch."""
        return self.steps * self.batch_size / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "samples_per_second": self.samples_per_second}


def measure_generation(
    network: CausalNetwork,
    task: Task,
    batch_size: int,
    device: torch.device,
    *,
    min_seconds: float,
    threads: int,
    captured: bool = False,
) -> GenerationMeasurement:
    """Time `network.stream(batch_size).step` in eval mode: one warm-up chunk, then whole chunks
    (a multiple of the clock cycle, at least 64 steps) until `min_seconds` have passed.
    `captured`: the steps as CUDA graphs, each next input picked on the device (a failed
    capture raises `RuntimeError`)."""
    network.eval()
    stream = network.stream(batch_size, device=device, fixed_index=captured)
    cycle = network.clock_cycle
    chunk = max(cycle, 64)  # a multiple of the cycle, which is a power of two
    inputs = task.random_inputs(64, batch_size, torch.Generator().manual_seed(0)).to(device)
    if captured:
        step = _feeding_program(stream, inputs).run
    else:
        step = _feeding_steps(stream, inputs)
    with cpu_threads(threads), torch.inference_mode():  # entered once, as generation does
        for _ in range(chunk):
            step()
        synchronize(device)
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < min_seconds:
            for _ in range(chunk):
                step()
            steps += chunk
            synchronize(device)
        seconds = time.perf_counter() - start
    return GenerationMeasurement(batch_size, threads, steps, seconds, cycle, captured)


def _feeding_steps(stream: Stream, inputs: torch.Tensor) -> Callable[[], None]:
    """A call that steps `stream` on the next of `inputs: (N, B, C)`, in turn."""
    count = inputs.shape[0]

    def step() -> None:
        stream.step(inputs[stream.time % count])

    return step


def _feeding_program(stream: Stream, inputs: torch.Tensor) -> StepProgram:
    """A captured program that steps `stream` on the next of `inputs: (N, B, C)`, in turn."""
    position = torch.zeros(1, dtype=torch.long, device=inputs.device)
    current = inputs[0].clone()
    rows = current.unsqueeze(0)  # (1, B, C), the memory of `current`

    def feed(output: torch.Tensor) -> None:
        position.add_(1).remainder_(inputs.shape[0])
        torch.index_select(inputs, 0, position, out=rows)

    return StepProgram(stream, current, feed, capture=True, state=[position])
