"""Compiled generation steps kept on disk, and compiled in the background the first time.

Compiling a network's generation steps for this CPU (`models.compiled`) takes a minute or more
the first time a network of that shape generates here; afterwards they load in seconds from
the user data folder. A `sample` that finds them missing does not wait for them: it generates
step by step at once, and a detached process compiles them for the runs that follow (one at a
time per folder: a second such process finds the lock held and leaves). That process rebuilds
the same step program from a `Recipe`: the run's config and data profile (a compiled step
depends on the network's shapes and the sampler's settings, never on the weights), the batch
and the sampler's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.compiled import Compiled
from sequnet_cli.paths import compiled_dir

if TYPE_CHECKING:
    from sequnet_cli.config import RunConfig

LOG_FILE = "background.log"  # what the last background compilation said, in the folder
FAILED_FILE = "failed"  # a background compilation failed (no compiler, ...): see LOG_FILE
RETRY_SECONDS = 24 * 3600  # after a failure, no new background compilation for this long
_CHILD = "from sequnet_cli.autoregression import compile_child; compile_child()"


def compiled_folder() -> Path:
    """Where compiled steps are kept: the user data folder's `compiled/` (inductor's own cache
    inside it, for this process and the processes it starts); a `WriteError` where it cannot
    be made or written."""
    folder = compiled_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    return folder


class CompiledSteps:
    """Compiled generation steps kept as files in `folder`, one per key (`models.compiled.Store`);
    a file that does not load (another PyTorch wrote it, or it is damaged) is compiled again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, key: str) -> Compiled | None:
        from torch._inductor import CompiledArtifact

        path = self.folder / f"{key}.bin"
        if not path.is_file():
            return None
        try:
            return CompiledArtifact.load(path=str(path), format="binary")
        except Exception:  # noqa: BLE001  (a stale or damaged file raises anything: compile again)
            return None

    def save(self, key: str, compiled: Compiled) -> None:
        save = getattr(compiled, "save", None)
        if save is None:
            return
        try:  # written atomically by PyTorch (a temporary file, then renamed)
            save(path=str(self.folder / f"{key}.bin"), format="binary")
        except (OSError, RuntimeError):
            pass  # not kept: compiled again next time


@dataclass(frozen=True)
class Recipe:
    """What rebuilds a generation's step program in another process: the run's config and data
    profile, the sequences generated together, the sampler's settings and the CPU threads."""

    config: dict[str, Any]  # `RunConfig.to_dict()`
    profile: dict[str, Any] | None  # the checkpoint's data profile, as plain values
    count: int
    temperature: float
    seed: int
    voices: str | None
    threads: int

    @classmethod
    def of(
        cls,
        config: RunConfig,
        profile: Mapping[str, Any] | None,
        count: int,
        temperature: float,
        seed: int,
        voices: str | None,
        threads: int,
    ) -> Recipe:
        plain = None if profile is None else {key: _plain(value) for key, value in profile.items()}
        return cls(config.to_dict(), plain, count, temperature, seed, voices, threads)


def may_compile_in_background(folder: Path) -> bool:
    """Whether to start a background compilation: not within a day of one that failed (a
    machine without a C++ compiler would otherwise start one at every run)."""
    failed = folder / FAILED_FILE
    return not failed.is_file() or time.time() - failed.stat().st_mtime > RETRY_SECONDS


def compile_in_background(recipe: Recipe, folder: Path) -> None:
    """Start a detached process that compiles `recipe`'s generation steps into `folder`; it
    outlives this one (and its Ctrl-C) and writes what it says to `folder / LOG_FILE`."""
    with (folder / LOG_FILE).open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
    assert child.stdin is not None
    child.stdin.write(json.dumps({"recipe": asdict(recipe), "folder": str(folder)}))
    child.stdin.close()


def _plain(value: Any) -> Any:
    """A profile value as JSON holds it (tensors and arrays as lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
