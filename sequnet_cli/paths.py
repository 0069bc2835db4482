"""Where sequnet keeps its files: the user data dir and the dataset search path."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from sequnet_cli.errors import WriteError

APP_NAME = "sequnet"


def user_data_dir(create: bool = True) -> Path:
    """The folder for runs, checkpoints, caches and downloads (`SEQUNET_HOME` overrides);
    made and checked writable unless `create` is False (reading needs neither)."""
    override = os.environ.get("SEQUNET_HOME")
    path = Path(override).expanduser() if override else Path(platformdirs.user_data_dir(APP_NAME))
    return _folder(path) if create else path


def runs_dir(create: bool = True) -> Path:
    """One sub-folder per training run. `create=False`: where the runs are, for finding and
    reading them, without making the folder (it may not exist) or needing to write there."""
    if not create:
        return user_data_dir(create=False) / "runs"
    return _folder(user_data_dir() / "runs")


def cache_dir() -> Path:
    """Decoded datasets and downloads."""
    return _folder(user_data_dir() / "cache")


def compiled_dir() -> Path:
    """Generation steps compiled for this CPU (`sequnet_cli.compiled_steps`)."""
    return _folder(user_data_dir() / "compiled")


def studies_dir() -> Path:
    """Hyper-parameter searches: their SQLite database and the best preset of each study."""
    return _folder(user_data_dir() / "studies")


def data_search_dirs(option: Path | None = None) -> list[Path]:
    """Folders searched for dataset files before downloading: the option, then `SEQUNET_DATA_DIR`."""
    dirs = [option] if option is not None else []
    env = os.environ.get("SEQUNET_DATA_DIR")
    if env:
        dirs.extend(Path(part).expanduser() for part in env.split(os.pathsep) if part)
    return dirs


def _folder(path: Path) -> Path:
    """`path`, created if needed; a folder that cannot be made or written is a `WriteError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(
            f"cannot create sequnet's folder {path} ({error.strerror or error}); "
            "set SEQUNET_HOME to a writable folder"
        ) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise WriteError(
            f"sequnet's folder {path} is not writable; set SEQUNET_HOME to a writable folder"
        )
    return path
