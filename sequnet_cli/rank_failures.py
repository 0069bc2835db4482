"""Why the ranks of a distributed run stopped: one `error:` line, whichever rank stopped first
and however (its own error, Ctrl-C, torchrun's SIGTERM, a rank killed without a word).

Each rank runs inside `FailureReport.failures()`. A rank's own `SequnetError` goes into
torchrun's store and error file, so that rank 0, finding the others gone, can say what happened;
a rank told to stop looks in the store for that error, or for a process of its machine that has
ended, before it blames the signal. Rank 0 tells `--nproc`'s launcher (`REPORTED`) that it has
spoken, so that the launcher does not say it again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

import torch.distributed as dist

from sequnet_cli.checkpoints import Run
from sequnet_cli.errors import SequnetError

ERROR_KEY = "sequnet/error"  # in torchrun's store: why a rank stopped, for rank 0 to say
REPORTED = "SEQUNET_LAUNCHER_REPORT"  # a file rank 0 writes once it has said why a run stopped


class Terminated(BaseException):
    """SIGTERM, which torchrun's agent sends the other ranks when one fails. A BaseException,
    as KeyboardInterrupt is, so that no `except Exception` swallows it."""


@contextmanager
def signals_raised() -> Iterator[None]:
    """SIGTERM raises `Terminated`, so that a stopped rank can say why; restored after."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class FailureReport:
    """Turns whatever stops a rank into one message: its own error, or why the others stopped.

    A rank's own `SequnetError` is put in torchrun's store (and in torchrun's error file), so
    that rank 0, finding the others gone, can say what happened instead of "connection closed";
    rank 0 tells `--nproc`'s launcher that it has spoken (`REPORTED`), so that the launcher
    does not say it again.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.store: dist.Store | None = None  # torchrun's, once this rank has joined the run
        self.world = 0
        self.run: Run | None = None

    def joined(self, store: dist.Store, world: int) -> None:
        """This rank has joined a run of `world` processes that share `store`."""
        self.store, self.world = store, world

    @contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except SequnetError as error:
            self._publish(str(error))
            self._tell_launcher()
            raise
        except (KeyboardInterrupt, Terminated, RuntimeError) as error:
            if isinstance(error, RuntimeError) and not _lost_peer(error):
                raise
            # Once stopping, a second Ctrl-C or SIGTERM must not cut this message short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._tell_launcher()
            raise SequnetError(f"{self._why(error)}; {self._kept()}") from None

    def _publish(self, message: str) -> None:
        _write_error_file(message)
        if self.store is None:
            return
        text = f"process {self.rank} of {self.world}: {message}"
        with suppress(RuntimeError, ValueError):  # the store may be gone with the launcher
            self.store.compare_set(ERROR_KEY, "", text)  # the first error is the cause

    def _tell_launcher(self) -> None:
        path = os.environ.get(REPORTED)
        if self.rank == 0 and path:
            with suppress(OSError):
                Path(path).write_text("rank 0 has reported why the run stopped")

    def _why(self, error: BaseException) -> str:
        if isinstance(error, KeyboardInterrupt):
            return "interrupted"
        with suppress(RuntimeError, ValueError):
            if self.store is not None and self.store.check([ERROR_KEY]):
                return self.store.get(ERROR_KEY).decode()
        if isinstance(error, Terminated):
            # torchrun's agent stops the other ranks as soon as one dies, often before any
            # collective operation has told them: a peer on this machine may have ended.
            dead = self._ended_peer()
            if dead is not None:
                return f"{dead} stopped without saying why (killed, e.g. for lack of memory)"
            return "stopped by a termination signal (from torchrun, a job scheduler or kill)"
        return (
            "another process of the run stopped without saying why (killed, e.g. for lack of "
            "memory)"
        )

    def _ended_peer(self) -> str | None:
        """The first other rank on this machine whose process has ended ("process 1 of 2")."""
        if self.store is None:
            return None
        machine = _machine()
        for rank in range(self.world):
            with suppress(RuntimeError, ValueError):  # the store may be gone with the launcher
                key = f"process/{rank}"
                if rank == self.rank or not self.store.check([key]):
                    continue
                where, pid = self.store.get(key).decode().rsplit(" ", 1)
                if where == machine and _ended(int(pid)):
                    return f"process {rank} of {self.world}"
        return None

    def _kept(self) -> str:
        if self.run is None:
            return "no run was started"
        if not self.run.checkpoint_path("last").is_file():
            return f"run {self.run.name} has no checkpoint yet"
        return (
            f"run {self.run.name} keeps its last checkpoint "
            f"(continue with `sequnet train --resume {self.run.name}`)"
        )


def _write_error_file(message: str) -> None:
    """Leave `message` where torchrun's agent looks for why a rank failed (its error file, in
    the format of torch.distributed.elastic), for torchrun's report and `--nproc`'s."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    details = {"py_callstack": "", "timestamp": str(int(time.time()))}
    with suppress(OSError):
        Path(path).write_text(json.dumps({"message": {"message": message, "extraInfo": details}}))


def _lost_peer(error: RuntimeError) -> bool:
    """Whether `error` is a collective operation failing because another rank is gone: NCCL
    raises a DistError, Gloo a RuntimeError naming its transport."""
    return isinstance(error, dist.DistError) or "gloo" in str(error).lower()


def announce_process(store: dist.Store, rank: int, pid: int | None = None) -> None:
    """Put this rank's machine and process id in the store, so that another rank told to stop
    can find out whether this one died first."""
    store.set(f"process/{rank}", f"{_machine()} {pid or os.getpid()}")


def _machine() -> str:
    """This machine: its name and, on Linux, this boot (two containers may share a name)."""
    boot = ""
    with suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot}"


def _ended(pid: int) -> bool:
    """Whether process `pid` of this machine has ended (a zombie not yet reaped has too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    with suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    return False
