"""Atomic file writes: every file sequnet writes goes through `atomic_write`.

The content is written to a temp file in the target's folder, synced, given the permissions a
newly created file would have (the user's umask), and renamed over the target. A crash, a full
disk or Ctrl-C therefore leaves either the old file or the new one, never half of one. A full
disk is said as such, whatever layer reported it (torch reports a failed write of the file
object it was given in words of its own, with the `OSError` as the context).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sequnet_cli.errors import WriteError


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`; returns it.

    Raises `WriteError` (the previous file unchanged) when the folder is missing or the write
    fails; `write` may raise `OSError` or `RuntimeError` (torch and soundfile report write
    failures so).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give a file name inside it")
    if not path.parent.is_dir():
        raise WriteError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        descriptor, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        if _no_space(error, path.parent):
            raise _full(path) from error
        raise WriteError(f"cannot write {path} ({error}); choose a writable folder") from error
    temp = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, _new_file_mode())  # mkstemp makes 0600; others' files honour the umask
        os.replace(temp, path)
    except (OSError, RuntimeError) as error:
        if _no_space(error, path.parent):
            raise _full(path) from error
        raise WriteError(
            f"could not write {path} ({_reason(error)}); check free disk space and permissions "
            "(the previous file, if any, is unchanged)"
        ) from error
    finally:
        temp.unlink(missing_ok=True)
    return path


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota of it
NEARLY_FULL = 1 << 20  # bytes free on a disk that some layer found full without saying so


def _full(path: Path) -> WriteError:
    return WriteError(
        f"no space left on device writing {path}; free some space and try again "
        "(the previous file, if any, is unchanged)"
    )


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling, innermost last."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _no_space(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for lack of disk space: an `OSError` saying so in its
    chain, or (for a layer that lost the errno) a disk with next to nothing free."""
    if any(isinstance(cause, OSError) and cause.errno in NO_SPACE for cause in _causes(error)):
        return True
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


def _reason(error: BaseException) -> str:
    """Why a write failed, in the operating system's words when it gave any."""
    for cause in reversed(_causes(error)):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(error)


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
