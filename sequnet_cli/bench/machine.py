"""What the machine can do, and what else it did while bench measured.

- The matrix-product rate: products of two square matrices in one precision, on the bench's
  device with its training threads, one in each round of a training measurement's interleaved
  steps (the load of other programs changes, and the rate with it). A training step is mostly
  convolutions, which the CPU and GPU libraries run as matrix products, so this rate is what a
  step's arithmetic could reach at best; each network's efficiency is its achieved rate as a
  share of it.
- The CPU load of other processes during a measurement (Linux): the CPU time all cores spent
  busy (/proc/stat) less this process's own (and its finished children's), over the wall time.
  A timing taken while other programs competed for the cores reads high, and a ratio of two
  timings can drift either way.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import torch

CPU_PRODUCT_SIZE = 1024  # ~25 ms per float32 product on one AVX-512 core: short, yet at full rate
CUDA_PRODUCT_SIZE = 4096  # a GPU needs large products to reach its rate
BUSY_CORES = 0.25  # other processes' average load, in cores, from which bench warns
SHORTEST_READING = 0.5  # seconds: /proc/stat counts in 10 ms ticks, too coarse below this


@dataclass(frozen=True)
class MatrixProductRate:
    """The rate of `size` x `size` matrix products in one precision, FLOP/s (2 per
    multiply-add): the median of the products timed beside a measurement."""

    precision: str  # "float32", "bfloat16"
    size: int
    threads: int
    flops_per_second: float


def precision_name(dtype: torch.dtype | None) -> str:
    """The name of a training precision: its autocast dtype, or float32 without autocast."""
    return str(dtype or torch.float32).removeprefix("torch.")


class MatrixProduct:
    """One product of two square matrices of `precision` on `device` per call, in place; timed
    in turn with the steps of a measurement, so that it sees the same load they do."""

    def __init__(self, device: torch.device, precision: str) -> None:
        self.precision = precision
        self.size = CUDA_PRODUCT_SIZE if device.type == "cuda" else CPU_PRODUCT_SIZE
        generator = torch.Generator().manual_seed(0)
        dtype = getattr(torch, precision)
        self.a, self.b = (
            torch.randn(self.size, self.size, generator=generator).to(device, dtype)
            for _ in range(2)
        )
        self.product = torch.empty_like(self.a)

    def __call__(self) -> None:
        with torch.no_grad():
            torch.mm(self.a, self.b, out=self.product)

    def rate(self, seconds: list[float], threads: int) -> MatrixProductRate:
        """The rate of the median of these timed calls."""
        flops = 2 * self.size**3 / statistics.median(seconds)
        return MatrixProductRate(self.precision, self.size, threads, flops)


@dataclass(frozen=True)
class CpuLoad:
    """How busy the CPU was during a measurement of `seconds`: cores kept busy on average by
    other processes, and by this one (all its threads, and children that ended in between)."""

    seconds: float
    other_cores: float
    own_cores: float
    cores: int

    @property
    def busy(self) -> bool:
        """Whether other processes used enough CPU to have slowed the measurement."""
        return self.other_cores >= BUSY_CORES


class LoadMonitor:
    """`with LoadMonitor() as monitor: ...` then `monitor.reading`: the `CpuLoad` of the block,
    or None where /proc/stat cannot be read or the block was too short to tell."""

    def __init__(self) -> None:
        self.reading: CpuLoad | None = None
        self._start: tuple[float, os.times_result, tuple[float, int] | None] | None = None

    def __enter__(self) -> Self:
        self._start = (time.perf_counter(), os.times(), _busy_cpu_seconds())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._start is not None  # entered first
        wall_start, times_start, busy_start = self._start
        wall = time.perf_counter() - wall_start
        times, busy = os.times(), _busy_cpu_seconds()
        if busy is None or busy_start is None or wall < SHORTEST_READING:
            return
        own = sum(times[:4]) - sum(times_start[:4])  # user, system, children's user and system
        other = max(busy[0] - busy_start[0] - own, 0.0)
        self.reading = CpuLoad(wall, other / wall, own / wall, busy[1])


def _busy_cpu_seconds() -> tuple[float, int] | None:
    """CPU seconds all cores have spent busy since boot, and the number of cores (Linux)."""
    try:
        with open("/proc/stat") as stat:
            lines = stat.read().splitlines()
        # "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (ticks);
        # guest time is already inside user
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, lines[0].split()[1:9])
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    cores = sum(line.startswith("cpu") and line[3:4].isdigit() for line in lines)
    return (user + nice + system + irq + softirq + steal) / tick, max(cores, 1)
