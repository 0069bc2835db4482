"""One process trains a run at a time: an OS file lock in the run folder (DESIGN.md,
"Checkpoints").

The process that writes a run's checkpoints (training, a search trial, rank 0 of a distributed
run) holds an exclusive `flock` on the run's `.lock` file, with its process id, machine and
command written in it. The operating system releases the lock when the process ends, however
it ends, so a killed run is never left locked. A second trainer of the run is refused with one
error naming the holder. Readers (`sample`, `evaluate`, `runs`) take no lock: every checkpoint
is replaced atomically, so they read the last complete one.

The lock file is never replaced or removed while a run may be held: a lock lives on the file,
and a new file would be a second, free lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import IO, Any

from sequnet_cli.errors import CheckpointError

LOCK_FILE = ".lock"


class RunInUseError(CheckpointError):
    """Another process holds the run."""


class RunLock:
    """The exclusive lock of the run folder `folder`; `acquire` it, `release` it (or let the
    process end)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the run, or raise `RunInUseError` naming the process that holds it."""
        if self._file is not None:
            return
        try:
            # Kept open while the run is held (the lock lives as long as the file is open); "a+"
            # creates it, and never empties it before the lock is ours.
            file = open(self.path, "a+")  # noqa: SIM115
        except OSError as error:
            raise CheckpointError(
                f"cannot open {self.path} to hold the run ({error.strerror or error})"
            ) from error
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            file.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CheckpointError(f"cannot lock {self.path} ({error.strerror})") from error
            raise RunInUseError(in_use_message(self.folder)) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps(_this_process()))
        file.flush()
        self._file = file

    def release(self) -> None:
        """Let the run go (closing the file releases the lock)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def check_free(self) -> None:
        """Raise `RunInUseError` if another process holds the run (holding it for no longer
        than the check)."""
        if self._file is None:
            self.acquire()
            self.release()


def in_use_message(folder: Path) -> str:
    """Why a run cannot be trained now: the process that holds it, as it described itself."""
    holder = describe_holder(folder)
    return (
        f"run {folder.name} is in use by {holder}; one process trains a run at a time: wait "
        "for it to end or stop it (Ctrl-C, or kill its process), then try again"
    )


def describe_holder(folder: Path) -> str:
    """The holder of `folder`'s lock in words: "process 123 (`sequnet train ...`)", with its
    machine when it is another."""
    try:
        holder: dict[str, Any] = json.loads((folder / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return "another process"  # it has the lock, and has not written itself in it yet
    if not isinstance(holder, dict):
        return "another process"
    text = f"process {holder.get('pid', '?')}"
    if holder.get("host") not in (None, socket.gethostname()):
        text += f" on {holder['host']}"
    if holder.get("command"):
        text += f" (`{holder['command']}`)"
    return text


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": _command()}


def _command() -> str:
    """This process's command line, as the user would type it."""
    arguments = list(sys.argv)
    if not arguments:
        return ""
    program = Path(arguments[0]).name
    if program in ("__main__.py", "sequnet"):  # `python -m sequnet_cli`, torchrun, the script
        program = "sequnet"
    return shlex.join([program, *arguments[1:]])
