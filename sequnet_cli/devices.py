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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(name)


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
