"""Atomic file writes: every file sequnet writes goes through `atomic_write`.

The content is written to a temp file in the target's folder, synced, given the permissions a
newly created file would have (the user's umask), and renamed over the target. A crash, a full
disk or Ctrl-C therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
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
        raise WriteError(
            f"could not write {path} ({error}); check free disk space and permissions "
            "(the previous file, if any, is unchanged)"
        ) from error
    finally:
        temp.unlink(missing_ok=True)
    return path


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
