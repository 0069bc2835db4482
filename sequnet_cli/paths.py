"""Where sequnet keeps its files: the user data dir and the dataset search path."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "sequnet"


def user_data_dir() -> Path:
    """The folder for runs, checkpoints, caches and downloads (`SEQUNET_HOME` overrides)."""
    override = os.environ.get("SEQUNET_HOME")
    path = Path(override).expanduser() if override else Path(platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """One sub-folder per training run."""
    path = user_data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Decoded datasets and downloads."""
    path = user_data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_search_dirs(option: Path | None = None) -> list[Path]:
    """Folders searched for dataset files before downloading: the option, then `SEQUNET_DATA_DIR`."""
    dirs = [option] if option is not None else []
    env = os.environ.get("SEQUNET_DATA_DIR")
    if env:
        dirs.extend(Path(part).expanduser() for part in env.split(os.pathsep) if part)
    return dirs
