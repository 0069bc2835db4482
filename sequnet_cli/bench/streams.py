"""The generation measurement of `sequnet bench`: elements per second of each network's stream,
the networks stepped in turn.

Each network's stream is stepped one input at a time in eval mode, in chunks of the same number
of steps for every network: a whole number of each one's clock cycle (a Seq-U-Net's level i
runs every 2**i steps, so a shorter chunk would miss its deep levels' share), at least 64. After
one untimed chunk each, the networks take turns, one chunk each (A B A B ...), until each has
had at least `rounds` chunks and all together `min_seconds` each on average (the faster network
then has fewer seconds, as many steps): load from other programs then hits all alike, and the
figure is the median chunk's rate with its spread. The untimed chunk of an eager stream is
counted (`work.WorkCounter`): the multiply-adds per generated element, amortised over whole
clock cycles. On CUDA a stream can also be measured captured, its step replayed as CUDA graphs
(`models.StepProgram`) with each next input picked on the device.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from models import CausalNetwork, StepProgram, Stream
from sequnet_cli.bench.machine import CpuLoad, LoadMonitor
from sequnet_cli.bench.work import WorkCounter
from sequnet_cli.devices import cpu_threads, synchronize
from sequnet_cli.tasks import Task

SHORTEST_CHUNK = 64  # steps; a power of two, like every clock cycle
INPUTS = 64  # random inputs fed in turn


@dataclass(frozen=True)
class GenerationMeasurement:
    """Streaming speed: timed chunks of `chunk_steps` calls of `stream.step` (each one element
    for B streams)."""

    batch_size: int
    threads: int
    chunk_steps: int  # a whole number of clock cycles
    chunk_seconds: tuple[float, ...]  # each timed chunk, in order
    cycle: int  # steps per clock cycle (2**blocks for a Seq-U-Net, 1 otherwise)
    captured: bool = False  # the steps replayed CUDA graphs
    multiply_adds_per_sample: float | None = None  # amortised over whole cycles

    @property
    def steps(self) -> int:
        return self.chunk_steps * len(self.chunk_seconds)

    @property
    def seconds(self) -> float:
        return sum(self.chunk_seconds)

    @property
    def samples_per_second(self) -> float:
        """Elements generated per second over the whole batch, in the median chunk."""
        return self.chunk_steps * self.batch_size / statistics.median(self.chunk_seconds)

    @property
    def rate_spread(self) -> tuple[float, float]:
        """The slowest and the fastest chunk's elements per second."""
        elements = self.chunk_steps * self.batch_size
        return elements / max(self.chunk_seconds), elements / min(self.chunk_seconds)

    def to_json(self) -> dict[str, Any]:
        slowest, fastest = self.rate_spread
        return {
            **dataclasses.asdict(self),
            "chunk_seconds": list(self.chunk_seconds),
            "steps": self.steps,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "samples_per_second_min": slowest,
            "samples_per_second_max": fastest,
        }


def measure_generation(
    networks: Sequence[CausalNetwork],
    task: Task,
    batch_size: int,
    device: torch.device,
    *,
    min_seconds: float,
    rounds: int,
    threads: int,
    captured: bool = False,
) -> tuple[list[GenerationMeasurement], CpuLoad | None]:
    """Time `network.stream(batch_size).step` of each of `networks` in eval mode (see the
    module), with the CPU load of other processes during the timed chunks. `captured`: the
    steps as CUDA graphs (a failed capture raises `RuntimeError`)."""
    chunk = max(SHORTEST_CHUNK, *(network.clock_cycle for network in networks))
    generator = torch.Generator().manual_seed(0)
    inputs = task.random_inputs(INPUTS, batch_size, generator).to(device)
    steps = [_stepper(network, batch_size, inputs, captured) for network in networks]
    with cpu_threads(threads), torch.inference_mode():  # entered once, as generation does
        work = [_warm_up_chunk(step, chunk, device, count=not captured) for step in steps]
        with LoadMonitor() as monitor:
            seconds = _interleaved_chunks(steps, chunk, device, rounds, min_seconds)
    measurements = [
        GenerationMeasurement(
            batch_size,
            threads,
            chunk,
            tuple(times),
            network.clock_cycle,
            captured,
            None if multiply_adds is None else multiply_adds / (chunk * batch_size),
        )
        for network, times, multiply_adds in zip(networks, seconds, work, strict=True)
    ]
    return measurements, monitor.reading


def _stepper(
    network: CausalNetwork, batch_size: int, inputs: torch.Tensor, captured: bool
) -> Callable[[], None]:
    network.eval()
    stream = network.stream(batch_size, device=inputs.device, fixed_index=captured)
    return _feeding_program(stream, inputs).run if captured else _feeding_steps(stream, inputs)


def _warm_up_chunk(
    step: Callable[[], None], chunk: int, device: torch.device, count: bool
) -> int | None:
    """Run one untimed chunk; with `count`, its multiply-adds (a replayed graph dispatches no
    operation to count)."""
    counter = WorkCounter() if count else nullcontext()
    with counter:
        for _ in range(chunk):
            step()
    synchronize(device)
    return counter.multiply_adds if isinstance(counter, WorkCounter) else None


def _interleaved_chunks(
    steps: Sequence[Callable[[], None]],
    chunk: int,
    device: torch.device,
    rounds: int,
    min_seconds: float,
) -> list[list[float]]:
    """Seconds of each chunk of each stepper, in turn, until each has had at least `rounds`
    chunks and all together `min_seconds` each on average."""
    seconds: list[list[float]] = [[] for _ in steps]
    total = min_seconds * len(steps)
    while len(seconds[0]) < max(rounds, 1) or sum(map(sum, seconds)) < total:
        for step, times in zip(steps, seconds, strict=True):
            start = time.perf_counter()
            for _ in range(chunk):
                step()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return seconds


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
