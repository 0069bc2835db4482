"""Where computation runs: the device a command uses, the CPU threads it may take, and whether
what it is asked to hold fits in that device's memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from sequnet_cli.errors import ConfigError, DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None) -> torch.device:
    """`auto` (the default, or `SEQUNET_DEVICE`) picks CUDA when there is a GPU, else the CPU."""
    name = (name or os.environ.get("SEQUNET_DEVICE") or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}'; use one of {', '.join(DEVICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    apply_numerics_policy(device)
    return device


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of a training precision (`fp32`, `bf16` or `auto`), None for fp32.

    `auto` is what `SEQUNET_PRECISION` says, if set, else bf16 on CUDA GPUs that support it
    (Ampere and newer) and fp32 elsewhere. On CPUs, fp32 even with bfloat16 units: audio steps
    gain from them, but a batch-1 piano-roll step is too small to (`train jsb` in bf16 autocast
    took 1.09x the time of fp32 on an AVX512-BF16 CPU, `piano-small` 0.72x), so bf16 is a
    choice there, not the default (README, `train.precision`).
    """
    if precision == "auto":
        precision = os.environ.get("SEQUNET_PRECISION", "auto").lower()
        if precision not in PRECISIONS:
            raise ConfigError(
                f"SEQUNET_PRECISION must be one of {', '.join(PRECISIONS)}, got '{precision}'"
            )
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "fp32" or (precision == "auto" and not cuda_bf16):
        return None
    if device.type == "cuda" and not cuda_bf16:
        raise DeviceError(
            "this GPU does not support bfloat16; train in float32 with --set train.precision=fp32"
        )
    return torch.bfloat16


def apply_numerics_policy(device: torch.device) -> None:
    """sequnet's float32 numerics on CUDA: TF32 for convolutions and matrix products alike.

    PyTorch's defaults give cuDNN convolutions TF32 but matrix products full float32, so a
    stream's steps (matrix products) and its priming or training pass (convolutions) would
    round differently (about 1e-3 relative). Both use TF32 here: as fast as the GPU allows, and
    consistent. `SEQUNET_TF32=0` turns TF32 off for both (exact float32, slower).
    """
    if device.type != "cuda":
        return
    tf32 = os.environ.get("SEQUNET_TF32", "1") != "0"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def describe(device: torch.device) -> str:
    """The device in words, with the CPU thread count: "cpu (2 threads)", "cuda:0"."""
    if device.type != "cpu":
        return str(device)
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' * (threads != 1)})"


def training_threads(requested: int) -> int:
    """CPU threads for training: `requested`, else every core but one (at least one); 0 leaves
    PyTorch's setting when `OMP_NUM_THREADS` chooses it.

    PyTorch's default, every core, collapses when another process keeps a core busy: its
    threads wait for each other at every operation (on a 2-core machine, `train jsb` with two
    threads ran 27 times slower than with one). Leaving a core free avoids that cliff; for the
    small piano-roll models, one thread is nearly as fast as two anyway.
    """
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return 0
    cores = torch.get_num_threads()  # PyTorch's default: the physical cores
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores - 1)


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op CPU threads (0: leave PyTorch's setting); restored after."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's end, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Module = TypeVar("Module", bound=torch.nn.Module)


def build_within_memory(
    build: Callable[[], Module], device: torch.device, copies: int, what: str, advice: str
) -> Module:
    """`build()`, after checking on a weightless ("meta") copy that `copies` copies of its
    weights fit in `device`'s free memory (training keeps weights, gradients, optimizer
    moments and an average: about 5); a `DeviceError` naming the sizes otherwise."""
    with torch.device("meta"):
        probe = build()
    tensors = [*probe.parameters(), *probe.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    count = sum(t.numel() for t in tensors)
    check_memory(copies * weights, device, f"{what} ({count:,} weights)", advice)
    if device.type != "cpu":
        check_memory(weights, torch.device("cpu"), what, advice)  # built on the CPU first
    return build()


def check_memory(needed: int, device: torch.device, what: str, advice: str) -> None:
    """Refuse (`DeviceError`) to allocate `needed` bytes on `device` when they are not free."""
    available = free_memory(device)
    if available is not None and needed > available:
        raise DeviceError(
            f"{what} needs at least {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} free on {device.type}; {advice}"
        )


def free_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`; None when the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:  # Linux: includes reclaimable caches
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(count: int) -> str:
    """`count` bytes in words: "512 B", "3.2 GiB", "2.4e+06 TiB"."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return f"{count} B"
    return f"{size:.1f} {unit}" if size < 1e6 else f"{size:.1e} {unit}"
