"""Runs and checkpoints: the one place that knows their on-disk format (`FORMAT_VERSION`).

A run is a folder `<preset>-<model>-<YYYYmmdd-HHMMSS>` under `runs_dir()` holding `config.json`
(the resolved `RunConfig`, written once at the start) and two checkpoints, `last.pt` (the latest
state, to resume) and `best.pt` (the best validation score, to evaluate and sample). A checkpoint
is a `torch.save`d dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)` and can never run code; it carries its own copy of the config,
so a `.pt` file alone is enough to rebuild the model. Every file is written atomically
(`sequnet_cli.files.atomic_write`), so a crash leaves the previous good file in place.

Checkpoint dict: `format_version`, `config` (`RunConfig.to_dict()`), `weights` (the state dict
that is evaluated and sampled), `training_weights` (the trained weights, when `weights` holds
their average), `optimizer` (its state dict), `training` (`sequnet_cli.training.TrainingState`:
epoch, batch, step, lr, best score and epoch, metric, seconds, history), `rng`
(`capture_rng()`), `data_generator` (the state of the generator drawing training batches).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from sequnet_cli.config import RunConfig
from sequnet_cli.errors import CheckpointError, ConfigError, warn
from sequnet_cli.files import atomic_write
from sequnet_cli.paths import runs_dir

FORMAT_VERSION = 2
# Version 1 stored convolution kernels time-major, `(out, K, in)`; version 2 stores them as
# PyTorch's convolutions do, `(out, in, K)`. Version 1 files are converted when read.
READABLE_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
Which = Literal["best", "last"]
_TIME_FORMAT = "%Y%m%d-%H%M%S"
_NAME_PATTERN = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


@dataclass(frozen=True)
class RunSummary:
    """One line of `list_runs`: what a run is and how far it got."""

    name: str
    preset: str
    model: str
    task: str
    data: str  # the dataset: a benchmark key or the folder or file trained on
    epochs: int
    steps: int
    best_score: float | None
    metric: str
    created: datetime
    size_bytes: int
    path: Path


class Run:
    """A run folder: its resolved config and its `best.pt` / `last.pt` checkpoints."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = path
        self.config = config

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, config: RunConfig) -> Run:
        """A new, uniquely named run folder with `config.json` written."""
        stamp = datetime.now().strftime(_TIME_FORMAT)
        base = f"{_safe_name(config.preset)}-{_safe_name(config.model.name)}-{stamp}"
        parent = runs_dir()
        encoded = json.dumps(config.to_dict(), indent=2).encode()
        for attempt in range(1, 1000):
            path = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            atomic_write(path / CONFIG_FILE, lambda file: file.write(encoded))
            return cls(path, config)
        raise CheckpointError(f"could not find a free run name like {base} in {parent}")

    @classmethod
    def open(cls, path: Path) -> Run:
        """An existing run folder; a missing or damaged `config.json` raises `CheckpointError`."""
        config_path = path / CONFIG_FILE
        try:
            values = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{config_path} is missing or not valid JSON ({error}); "
                "the folder is not a sequnet run, or it is damaged: delete it"
            ) from error
        return cls(path, RunConfig.from_dict(values))

    def checkpoint_path(self, which: Which = "best") -> Path:
        if which not in ("best", "last"):
            raise CheckpointError(f"checkpoint must be 'best' or 'last', got '{which}'")
        return self.path / f"{which}.pt"

    def save(self, state: Mapping[str, Any], best: bool) -> None:
        """Write `state` (see the module docstring) as `last.pt`, and as `best.pt` if `best`."""
        payload = _to_plain(
            {**state, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        )
        targets: list[Which] = ["last", "best"] if best else ["last"]
        for which in targets:
            atomic_write(self.checkpoint_path(which), lambda file: torch.save(payload, file))

    def load_state(
        self, which: Which = "best", map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """The checkpoint dict of `best.pt` or `last.pt`; problems raise `CheckpointError`."""
        path = self.checkpoint_path(which)
        if not path.is_file():
            other = "last" if which == "best" else "best"
            raise CheckpointError(
                f"run {self.name} has no {which}.pt yet (training stopped before it was written); "
                f"use its {other} checkpoint or train it longer"
            )
        return _read_checkpoint(path, map_location)

    def summary(self) -> RunSummary:
        """Progress of the run, read from its newest checkpoint without loading the weights."""
        latest = next(
            (p for p in (self.path / "last.pt", self.path / "best.pt") if p.is_file()), None
        )
        training: Mapping[str, Any] = {}
        if latest is not None:
            training = _read_checkpoint(latest, "cpu", mmap=True).get("training", {})
        best = training.get("best_score")
        return RunSummary(
            name=self.name,
            preset=self.config.preset,
            model=self.config.model.name,
            task=self.config.task,
            data=self.config.data.dataset,
            epochs=int(training.get("epoch", 0)),
            steps=int(training.get("step", 0)),
            best_score=float(best) if isinstance(best, int | float) and np.isfinite(best) else None,
            metric=str(training.get("metric", "")),  # empty until the first checkpoint
            created=_created(self.path),
            size_bytes=sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()),
            path=self.path,
        )


class NoRunError(CheckpointError):
    """No run matches a reference (a run name, folder or preset)."""


def find_run(ref: str, model: str | None = None) -> Run:
    """A run by folder path, by run name, or the newest run of a preset (optionally one model)."""
    path = Path(ref).expanduser()
    if (path / CONFIG_FILE).is_file():
        return Run.open(path)
    if (runs_dir() / ref / CONFIG_FILE).is_file():
        return Run.open(runs_dir() / ref)
    preset = path.stem if ref.endswith(".toml") else ref
    matches = [
        run
        for run in _all_runs()
        if run.config.preset == preset and (model is None or run.config.model.name == model)
    ]
    if not matches:
        which = f"preset '{preset}'" + (f" with model '{model}'" if model else "")
        raise NoRunError(
            f"no run named '{ref}' and no run of {which} in {runs_dir()}; "
            f"train one first with `sequnet train {preset}`"
        )
    return max(matches, key=lambda run: _sort_key(run.path))


def list_runs() -> list[RunSummary]:
    """Every readable run, newest first; damaged runs are skipped with a warning."""
    summaries = []
    for run in _all_runs():
        try:
            summaries.append(run.summary())
        except CheckpointError as error:
            warn(f"run {run.name}: {error}")
    return sorted(summaries, key=lambda summary: _sort_key(summary.path), reverse=True)


def load_checkpoint_file(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[RunConfig, dict[str, Any]]:
    """A bare `.pt` checkpoint: its stored config and the whole checkpoint dict."""
    state = _read_checkpoint(path, map_location)
    return RunConfig.from_dict(state["config"]), state


def capture_rng() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) random states, as tensors and plain values."""
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, position, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo `capture_rng`: the random streams continue where the checkpoint left them."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- reading and writing ---------------------------------------------------------------------


def _read_checkpoint(
    path: Path, map_location: str | torch.device, mmap: bool = False
) -> dict[str, Any]:
    """Load and check a checkpoint; every failure is a `CheckpointError` naming the file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # truncated zips, pickles with code, garbage: many types
        raise CheckpointError(
            f"{path} is not a readable sequnet checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); it may be truncated or "
            "damaged: use the run's other checkpoint (best/last) or retrain"
        ) from error
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a sequnet checkpoint (no format_version)")
    version = state["format_version"]
    if version not in READABLE_VERSIONS or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, this sequnet reads version "
            f"{FORMAT_VERSION}; use the sequnet version that wrote it, or retrain"
        )
    for key in ("config", "weights"):
        if key not in state:
            raise CheckpointError(f"{path} has no '{key}' entry; it is damaged: retrain")
    return _upgrade(state) if version == 1 else state


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint in the version-2 layout: every 3-D tensor of the networks is a
    convolution kernel (or a weight norm's `(out, 1, 1)` gain), stored `(out, K, in)` then,
    `(out, in, K)` now; the optimizer's moments have the shapes of the weights."""

    def kernels(tensors: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: value.transpose(1, 2).contiguous()
            if isinstance(value, torch.Tensor) and value.dim() == 3
            else value
            for name, value in tensors.items()
        }

    upgraded = {**state, "weights": kernels(state["weights"]), "format_version": FORMAT_VERSION}
    if "training_weights" in state:
        upgraded["training_weights"] = kernels(state["training_weights"])
    if "optimizer" in state:
        optimizer = state["optimizer"]
        moments = {index: kernels(values) for index, values in optimizer["state"].items()}
        upgraded["optimizer"] = {**optimizer, "state": moments}
    return upgraded


def _to_plain(value: Any) -> Any:
    """Tensors and plain Python values only (what `weights_only=True` loads); NumPy converted."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, torch.Tensor | str | bytes | bool | int | float | type(None)):
        return value
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_to_plain(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, torch.device | torch.dtype):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint (plain values only)")


# --- finding runs ----------------------------------------------------------------------------


def _all_runs() -> list[Run]:
    """Every run folder with a readable config; others are skipped with a warning."""
    runs = []
    for path in sorted(runs_dir().iterdir()):
        if not (path / CONFIG_FILE).is_file():
            continue
        try:
            runs.append(Run.open(path))
        except (CheckpointError, ConfigError) as error:
            warn(f"skipped run {path.name}: {error}")
    return runs


def _sort_key(path: Path) -> tuple[float, int, float]:
    """Newest last: the creation time in the name, its `-N` suffix, then the config's mtime."""
    match = _NAME_PATTERN.search(path.name)
    suffix = int(match.group(2) or 1) if match else 0
    return _created(path).timestamp(), suffix, (path / CONFIG_FILE).stat().st_mtime


def _created(path: Path) -> datetime:
    match = _NAME_PATTERN.search(path.name)
    if match:
        return datetime.strptime(match.group(1), _TIME_FORMAT)
    return datetime.fromtimestamp((path / CONFIG_FILE).stat().st_mtime)


def _safe_name(text: str) -> str:
    """A file-name-safe version of a preset or model name."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or "run"
