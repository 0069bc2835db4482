"""Stopping a command: Ctrl-C (SIGINT) and SIGTERM take one path.

Job schedulers (SLURM, Kubernetes) and `kill` stop a process with SIGTERM, a user at a terminal
with Ctrl-C. While a command runs, SIGTERM raises `Terminated`, a KeyboardInterrupt, so every
command's Ctrl-C handling serves both: training saves a resumable checkpoint, sampling writes a
shorter but valid file, bench prints what it measured, and the command ends with one `error:`
line and exit code 1. `deferred` holds both signals over a unit of work that must not be cut.

A signal the process was started with ignored (a shell's background job ignores SIGINT) stays
ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handles_signals() -> bool:
    """Only the main thread of a process can set signal handlers (and receives signals)."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (unless the process ignores it)."""
    if not _handles_signals() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred(raise_after: bool = True) -> Iterator[list[int]]:
    """SIGINT and SIGTERM inside the block are recorded in the list it yields, not acted on.

    With `raise_after`, the first one recorded takes effect when the block is done
    (KeyboardInterrupt, or `Terminated` for SIGTERM); without, the caller reads the list.
    """
    received: list[int] = []
    if not _handles_signals():
        yield received  # signals reach the main thread only
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
    if raise_after and received:
        raise _interruption(received[0])
