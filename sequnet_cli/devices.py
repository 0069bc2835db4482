"""Where computation runs: the device a command uses and the CPU threads it may take."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of a training precision (`fp32`, `bf16` or `auto`), None for fp32.

    `auto` is bf16 on CUDA GPUs that support it (Ampere and newer) and fp32 elsewhere: on a
    CPU, autocast costs more conversions than it saves unless the CPU has bfloat16 units.
    """
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
