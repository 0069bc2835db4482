"""The training measurement of `sequnet bench`: both networks' steps, interleaved, and their
memory.

Time: the trainer's own step (`TrainingStep`: forward, loss, backward, clipping, optimizer and
weight average) on a random batch the task builds. Both networks are built in this process and,
after their warm-up steps, stepped in turn, A B A B ..., each step timed alone: load from other
programs then hits both alike, and the figure is the median step with its spread. Each round
also times a matrix product (`machine.MatrixProduct`), the rate the steps' arithmetic is set
against, and the CPU load of other processes during the timed steps is read beside them
(`machine.LoadMonitor`).

Memory, three figures, each for what it can say:

- `counted_memory_bytes`, the same on every device: the training memory the paper's Table 1
  compares, summed from the tensors themselves (distinct storages): weights, gradients,
  optimizer state (and the weight average), the tensors autograd saves for the backward pass
  under the step's own autocast (`activation_bytes`, the quantity paper §4 counts), and the
  batch.
- `peak_memory_bytes` (`memory_measure` says it in words). On CUDA: the peak allocated during
  one eager (never captured) step of a memory pass with cuDNN benchmark mode off, once the
  optimizer holds its state, less what was allocated before the network was built. Eager,
  because a captured step's replay allocates nothing (its activations live in the graph's
  private pool); benchmark mode off, because autotuning tries algorithms with workspaces of many
  gigabytes and would make the peak a figure of cuDNN, not of the model. On a CPU: the peak
  resident set size of a fresh Python process that runs `MEMORY_PASS_STEPS` steps, less its
  resident size once torch is imported and the network built: gradients, optimizer state, the
  batch, the activations, and whatever the allocator keeps. A fresh process, because a process
  that has run other networks keeps freed memory mapped and would read low; not the timing
  process, which holds both networks at once. On Linux the peak is `VmHWM`, reset at that point
  through /proc/self/clear_refs, rather than `ru_maxrss`, which a child inherits from its
  parent's RSS at the fork.
- `allocator_peak_bytes`: CUDA only, the raw peak allocated by the warm-up steps in benchmark
  mode (with capture, the eager steps before it and the capture), autotuning workspace included.

The timed steps run in cuDNN benchmark mode from their first warm-up step, so that a captured
step replays autotuned kernels.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.bench.machine import (
    CpuLoad,
    LoadMonitor,
    MatrixProduct,
    MatrixProductRate,
    precision_name,
)
from sequnet_cli.bench.work import count_training_work
from sequnet_cli.config import RunConfig, TrainConfig
from sequnet_cli.devices import cpu_threads, synchronize
from sequnet_cli.tasks import Batch, Task, task_for
from sequnet_cli.training_step import TrainingStep

MEMORY_PASS_STEPS = 2  # one step creates the optimizer state, the next runs with it


@dataclass(frozen=True)
class TrainingSpec:
    """One training measurement: the run config to build and train, on what batch, how long."""

    config: RunConfig
    batch_size: int
    targets: int  # predicted elements per example
    warmup_steps: int
    steps: int  # timed steps, one per round of the interleaved networks
    threads: int  # CPU threads

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingSpec:
        return cls(**{**values, "config": RunConfig.from_dict(values["config"])})


@dataclass(frozen=True)
class TrainingMeasurement:
    """Time, work and memory of full training steps."""

    step_seconds: tuple[float, ...]  # every timed step, in order
    inputs: int  # input length per example
    targets: int
    peak_memory_bytes: int | None  # see `memory_measure`; None: not measured
    activation_bytes: int  # tensors saved for backward by one forward and loss
    counted_memory_bytes: int  # weights, gradients, optimizer state, activations, batch
    allocator_peak_bytes: int | None = None  # CUDA: the warm-up's raw allocator peak
    precision: str = "float32"  # what the step computes in: its autocast dtype, or float32
    forward_multiply_adds: int = 0  # of one forward pass and loss (`work.count_training_work`)
    training_multiply_adds: int = 0  # of the forward and backward passes
    matrix_product_flops: float | None = None  # the machine's rate in `precision`, timed in turn
    # this process's CPU seconds in each timed step: with one thread, the step's own compute,
    # whatever other processes took
    step_cpu_seconds: tuple[float, ...] = ()

    @property
    def steps(self) -> int:
        return len(self.step_seconds)

    @property
    def seconds_per_step(self) -> float:
        """The median timed step."""
        return statistics.median(self.step_seconds)

    @property
    def cpu_seconds_per_step(self) -> float | None:
        """The median timed step's CPU seconds."""
        return statistics.median(self.step_cpu_seconds) if self.step_cpu_seconds else None

    @property
    def flops_per_second(self) -> float:
        """The step's arithmetic (2 FLOP per multiply-add) over the median step."""
        return 2 * self.training_multiply_adds / self.seconds_per_step

    @property
    def efficiency(self) -> float | None:
        """The achieved rate as a share of the machine's matrix-product rate."""
        rate = self.matrix_product_flops
        return self.flops_per_second / rate if rate else None

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "step_seconds": list(self.step_seconds),
            "step_cpu_seconds": list(self.step_cpu_seconds),
            "cpu_seconds_per_step": self.cpu_seconds_per_step,
            "steps": self.steps,
            "seconds_per_step": self.seconds_per_step,
            "seconds_min": min(self.step_seconds),
            "seconds_max": max(self.step_seconds),
            "flops_per_second": self.flops_per_second,
            "efficiency": self.efficiency,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainingMeasurement:
        fields = {field.name for field in dataclasses.fields(cls)}
        known = {key: value for key, value in values.items() if key in fields}
        lists = {name: tuple(values[name]) for name in ("step_seconds", "step_cpu_seconds")}
        return cls(**{**known, **lists})


def memory_measure(device: torch.device, isolate: bool) -> str:
    """What the peak-memory figures are, in words."""
    if device.type == "cuda":
        return (
            "peak CUDA memory allocated during one eager training step of a separate pass with "
            "cuDNN benchmark mode off (weights, gradients, Adam state, activations, batch and "
            "the step's temporaries; not the autotuning workspace of the timed steps, whose raw "
            "allocator peak is allocator_peak_bytes in --json)"
        )
    if not isolate:
        return "not measured (no fresh process per measurement)"
    return (
        f"peak RSS growth of a fresh process running {MEMORY_PASS_STEPS} steps, over its "
        "baseline after importing torch and building the model (Linux VmHWM, reset at the "
        "baseline, else ru_maxrss: gradients, Adam state, batch, activations, allocator caches)"
    )


@dataclass
class _Side:
    """One network being measured: its batch, its timed step, and its memory figures."""

    spec: TrainingSpec
    network: CausalNetwork
    task: Task
    batch: Batch
    held: int = 0  # CUDA: bytes it holds between steps (network and batch)
    peak: int | None = None
    allocator_peak: int | None = None
    step: TrainingStep | None = None


@dataclass(frozen=True)
class InterleavedTraining:
    """What one training measurement of several networks found: each network's figures, the
    CPU load of other processes during their timed steps, and the matrix-product rates timed
    in turn with them (float32, and each precision a network trains in)."""

    measurements: list[TrainingMeasurement]
    load: CpuLoad | None
    matrix_products: list[MatrixProductRate]


def measure_training(
    specs: Sequence[TrainingSpec], device: torch.device, isolate: bool = True
) -> InterleavedTraining:
    """Train the networks of `specs` (same threads and steps) in this process: after their
    warm-up, each round times one matrix product per precision, then one step of each
    network. On a CPU the peak memory of each network comes from a fresh process unless
    `isolate` is False (then it is not measured)."""
    first = specs[0]
    with cpu_threads(first.threads):
        sides = [_built(spec, device) for spec in specs]
        with cudnn_benchmark(True):
            for side in sides:
                _warm_up(side, device)
            products = _matrix_products(sides, device)
            calls: list[Callable[[], object]] = [*products, *(_bound(side) for side in sides)]
            with LoadMonitor() as monitor:
                timings = interleaved_steps(calls, device, first.steps)
        rates = [
            product.rate(times, first.threads)
            for product, times in zip(products, timings.wall[: len(products)], strict=True)
        ]
        flops = {rate.precision: rate.flops_per_second for rate in rates}
        measurements = [
            _measurement(side, wall, cpu, flops)
            for side, wall, cpu in zip(
                sides, timings.wall[len(products) :], timings.cpu[len(products) :], strict=True
            )
        ]
    if device.type == "cpu" and isolate:
        peaks = [peak_memory_in_fresh_process(spec) for spec in specs]
        measurements = [
            dataclasses.replace(measured, peak_memory_bytes=peak)
            for measured, peak in zip(measurements, peaks, strict=True)
        ]
    return InterleavedTraining(measurements, monitor.reading, rates)


def _matrix_products(sides: list[_Side], device: torch.device) -> list[MatrixProduct]:
    """A product per precision (float32 and each side's), run once untimed."""
    names = {"float32"} | {precision_name(side.step.autocast) for side in sides if side.step}
    products = [MatrixProduct(device, name) for name in sorted(names)]
    for product in products:
        product()
    synchronize(device)
    return products


def _built(spec: TrainingSpec, device: torch.device) -> _Side:
    """Build a network and its batch; on CUDA measure its memory pass before anything else of
    it runs (what it then holds is subtracted from the next network's figures)."""
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    torch.manual_seed(0)
    task = task_for(spec.config)
    network = task.build_network().to(device).train()
    generator = torch.Generator().manual_seed(0)
    batch = task.random_batch(spec.batch_size, spec.targets, network.receptive_field, generator)
    side = _Side(spec, network, task, batch.to(device))
    if device.type == "cuda":
        side.peak = memory_pass(network, task, spec.config.train, side.batch, device) - before
        side.held = torch.cuda.memory_allocated(device) - before
    return side


def _warm_up(side: _Side, device: torch.device) -> None:
    """The timed step and its untimed warm-up steps (a captured step captures on the first)."""
    cuda = device.type == "cuda"
    others = torch.cuda.memory_allocated(device) - side.held if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    side.step = TrainingStep(side.network, side.task, side.spec.config.train)
    for _ in range(side.spec.warmup_steps):
        side.step(side.batch)
    synchronize(device)
    if cuda:
        side.allocator_peak = torch.cuda.max_memory_allocated(device) - others


def _bound(side: _Side) -> Callable[[], object]:
    step, batch = side.step, side.batch
    assert step is not None  # warmed up first
    return lambda: step(batch)


@dataclass(frozen=True)
class Timings:
    """Each call of each of several functions: wall seconds, and this process's CPU seconds
    (all its threads; not the time other processes had the cores)."""

    wall: list[list[float]]
    cpu: list[list[float]]


def interleaved_steps(
    steps: Sequence[Callable[[], object]], device: torch.device, rounds: int
) -> Timings:
    """Time each of `steps`, called in turn (A B A B ...) for `rounds` rounds, each timed
    alone from the device's idle state to its end."""
    timings = Timings([[] for _ in steps], [[] for _ in steps])
    for _ in range(max(rounds, 1)):
        for index, step in enumerate(steps):
            synchronize(device)
            start, cpu = time.perf_counter(), time.process_time()
            step()
            synchronize(device)
            timings.wall[index].append(time.perf_counter() - start)
            timings.cpu[index].append(time.process_time() - cpu)
    return timings


def _measurement(
    side: _Side, seconds: list[float], cpu_seconds: list[float], flops: dict[str, float]
) -> TrainingMeasurement:
    """`side`'s figures from its timed steps (wall and CPU seconds); `flops`: the
    matrix-product rate per precision."""
    step, spec = side.step, side.spec
    assert step is not None  # warmed up first
    precision = precision_name(step.autocast)
    saved = saved_activation_storages(step, side.batch)
    work = count_training_work(spec.config, spec.batch_size, spec.targets)
    return TrainingMeasurement(
        step_seconds=tuple(seconds),
        step_cpu_seconds=tuple(cpu_seconds),
        inputs=side.batch.x.shape[-1],
        targets=spec.targets,
        peak_memory_bytes=side.peak,
        activation_bytes=sum(saved.values()),
        counted_memory_bytes=counted_training_bytes(step, side.batch, saved),
        allocator_peak_bytes=side.allocator_peak,
        precision=precision,
        forward_multiply_adds=work.forward,
        training_multiply_adds=work.training,
        matrix_product_flops=flops.get(precision),
    )


@contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN benchmark mode (autotuning, CUDA only) on or off for the block; restored after."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def memory_pass(
    network: CausalNetwork, task: Task, config: TrainConfig, batch: Batch, device: torch.device
) -> int:
    """Peak CUDA memory allocated by one eager training step (its own step, never captured)
    with cuDNN benchmark mode off, once the optimizer holds its state. Its optimizer and the
    gradients are dropped after."""
    step = TrainingStep(network, task, dataclasses.replace(config, capture=False))
    try:
        with cudnn_benchmark(False):
            for _ in range(MEMORY_PASS_STEPS - 1):
                step(batch)
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step(batch)
            synchronize(device)
            return torch.cuda.max_memory_allocated(device)
    finally:
        network.zero_grad(set_to_none=True)


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


def saved_activation_bytes(step: TrainingStep, batch: Batch) -> int:
    """Bytes of the non-parameter tensors autograd saves for backward in one forward and loss
    of `step`'s network, in its precision."""
    return sum(saved_activation_storages(step, batch).values())


def saved_activation_storages(step: TrainingStep, batch: Batch) -> dict[int, int]:
    """The storages (address: bytes) of the non-parameter tensors autograd saves for backward in
    one forward and loss of `step`'s network, each counted once. The forward runs under the
    step's own autocast: in bfloat16 most saved tensors are half the size."""
    network = step.network
    parameters = {parameter.untyped_storage().data_ptr() for parameter in network.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    # as `TrainingStep._update` runs its forward
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), step.autocast_context():
        step.task.loss_sum(network, batch)
    return saved


_CHILD = "from sequnet_cli.bench.measure import memory_child; memory_child()"


def peak_memory_in_fresh_process(spec: TrainingSpec) -> int:
    """The peak RSS growth of `MEMORY_PASS_STEPS` CPU training steps of `spec`, in a new Python
    process so that the peak is its own (`RuntimeError` if the process fails)."""
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
        raise RuntimeError(f"the {architecture} memory measurement failed: {reason[0]}")
    return int(json.loads(done.stdout)["peak_memory_bytes"])


def memory_child() -> None:
    """Entry point of the fresh process: a `TrainingSpec` as JSON on stdin, its peak RSS
    growth as JSON on stdout."""
    spec = TrainingSpec.from_dict(json.loads(sys.stdin.read()))
    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    task = task_for(spec.config)
    network = task.build_network().train()
    _reset_peak_rss()
    baseline = _peak_rss_bytes()
    step = TrainingStep(network, task, spec.config.train)
    generator = torch.Generator().manual_seed(0)
    batch = task.random_batch(spec.batch_size, spec.targets, network.receptive_field, generator)
    for _ in range(MEMORY_PASS_STEPS):
        step(batch)
    peak = {"peak_memory_bytes": _peak_rss_bytes() - baseline}
    sys.stdout.write(json.dumps(peak))  # a pipe to the parent, not the terminal


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
