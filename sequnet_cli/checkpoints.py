"""Runs and checkpoints: the one place that knows their on-disk format (`FORMAT_VERSION`).

A run is a folder `<preset>-<model>-<YYYYmmdd-HHMMSS>` (a search trial's:
`<study>-trial<N>-...`) under `runs_dir()` (with the data's name
after the model when it trained on the user's own files) holding `config.json` (the resolved
`RunConfig`, written at the start and rewritten when a resume changes a setting), two
checkpoints, `last.pt` (the latest state, to resume) and `best.pt` (the best validation score, to
evaluate and sample), `.lock` (`sequnet_cli.run_lock`: which process trains it) and, once
`sequnet evaluate` has scored a checkpoint on whole splits, `scores.json` (by checkpoint: the
step it was scored at, and its score and predicted elements per split). A folder without a checkpoint (a run killed before its first one) is listed
but never chosen for a preset name. A checkpoint is a `torch.save`d dict of tensors and plain
Python values only, so it loads with `torch.load(weights_only=True)` and can never run code; it
carries its own copy of the config, so a `.pt` file alone is enough to rebuild the model. Every
file is written atomically (`sequnet_cli.files.atomic_write`), so a crash leaves the previous
good file in place.

Checkpoint dict: `format_version`, `config` (`RunConfig.to_dict()`), `weights` (the state dict
that is evaluated and sampled), `training_weights` and `averaged_weights` (with a weight
average: the trained weights and their average, `weights` being the one that validated
better), `optimizer` (its state dict), `training` (`sequnet_cli.training.TrainingState`:
epoch, batch, step, lr, best score and epoch, metric, seconds, history), `rng`
(`capture_rng()`), `data_generator` (the state of the generator drawing training batches),
`data_profile` (what sampling needs of the training data, `TaskData.profile`; absent from older
checkpoints), and for a run of several processes `process_rng` (each process's `capture_rng()`,
by rank).

The module is long because it is the one place of the run folder's format: the folder, its
checkpoints, the scores kept beside them, and finding and summarising runs.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from sequnet_cli.config import RunConfig, list_presets
from sequnet_cli.errors import CheckpointError, ConfigError, WriteError, warn
from sequnet_cli.files import atomic_write
from sequnet_cli.paths import runs_dir
from sequnet_cli.run_lock import LOCK_FILE, RunLock

FORMAT_VERSION = 2
# Version 1 stored convolution kernels time-major, `(out, K, in)`; version 2 stores them as
# PyTorch's convolutions do, `(out, in, K)`. Version 1 files are converted when read.
READABLE_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
SCORES_FILE = "scores.json"
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
    checkpoints: tuple[str, ...] = ()  # the readable ones, of "best" and "last"
    test_score: float | None = None  # of the evaluated model, on the whole test split
    demo: bool = False  # a model shipped with sequnet

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON values (`sequnet runs --json`)."""
        return {
            "name": self.name,
            "preset": self.preset,
            "model": self.model,
            "task": self.task,
            "data": self.data,
            "epochs": self.epochs,
            "steps": self.steps,
            "best_valid": self.best_score,
            "test": self.test_score,
            "metric": self.metric.removeprefix("valid "),
            "created": self.created.isoformat(),
            "size_bytes": self.size_bytes,
            "path": str(self.path),
            "checkpoints": list(self.checkpoints),
            "demo": self.demo,
        }


class Run:
    """A run folder: its resolved config and its `best.pt` / `last.pt` checkpoints."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = path
        self.config = config  # a resume may change its training settings
        self._stored = config  # what `config.json` holds
        self.lock = RunLock(path)  # held by the process that trains the run

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, config: RunConfig, label: str | None = None) -> Run:
        """A new, uniquely named run folder with `config.json` written; `label` (e.g. a
        search trial's) replaces the `<preset>-<model>` start of the name."""
        stamp = datetime.now().strftime(_TIME_FORMAT)
        parts = [config.preset, config.model.name, *_own_data_name(config.data.dataset)]
        start = label or "-".join(_safe_name(part) for part in parts)
        base = f"{start}-{stamp}"
        parent = runs_dir()
        for attempt in range(1, 1000):
            path = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path, config)
            run.write_config(config)
            return run
        raise CheckpointError(f"could not find a free run name like {base} in {parent}")

    def write_config(self, config: RunConfig) -> None:
        """Store `config` as the run's `config.json`."""
        encoded = json.dumps(config.to_dict(), indent=2).encode()
        atomic_write(self.path / CONFIG_FILE, lambda file: file.write(encoded))
        self.config = self._stored = config

    def discard(self) -> None:
        """Remove a run that never wrote a checkpoint (its folder and `config.json`)."""
        if any(self.checkpoint_path(which).exists() for which in ("best", "last")):
            return
        (self.path / CONFIG_FILE).unlink(missing_ok=True)
        (self.path / LOCK_FILE).unlink(missing_ok=True)  # the discarding process holds it
        try:
            self.path.rmdir()
        except OSError:
            pass  # something else was put there: leave it

    @contextmanager
    def held(self) -> Iterator[Run]:
        """The run, held by this process for the block (`sequnet_cli.run_lock`): a
        `RunInUseError` naming the holder when another process has it."""
        self.lock.acquire()
        try:
            yield self
        finally:
            self.lock.release()

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
        """Write `state` (see the module docstring) as `last.pt`, and as `best.pt` if `best`;
        `config.json` too when a resume changed the config, so that both say the same."""
        payload = _to_plain(
            {**state, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        )
        targets: list[Which] = ["last", "best"] if best else ["last"]
        try:
            if self.config != self._stored:
                self.write_config(self.config)
            for which in targets:
                atomic_write(self.checkpoint_path(which), lambda file: torch.save(payload, file))
        except WriteError as error:  # a full disk, most likely: say what the run still has
            kept = f"run {self.name} has no checkpoint yet"
            if self.checkpoint_path("last").is_file():
                kept = (
                    f"run {self.name} keeps its last complete checkpoint: continue it with "
                    f"`sequnet train --resume {self.name}`"
                )
            raise WriteError(f"{error}; {kept}") from error

    def load_state(
        self, which: Which = "best", map_location: str | torch.device = "cpu", mmap: bool = False
    ) -> dict[str, Any]:
        """The checkpoint dict of `best.pt` or `last.pt`; problems raise `CheckpointError`.
        `mmap`: map the file rather than read it, for a look at its plain values (its tensors
        are read only where they are used)."""
        path = self.checkpoint_path(which)
        if not path.is_file():
            raise CheckpointError(self._missing(which))
        return _read_checkpoint(path, map_location, mmap=mmap)

    def _missing(self, which: Which) -> str:
        """Why the run has no `which` checkpoint, and what to do instead."""
        other: Which = "last" if which == "best" else "best"
        if self.checkpoint_path(other).is_file():
            return (
                f"run {self.name} has no {which}.pt (it stopped before writing one); "
                f"use --checkpoint {other}"
            )
        return (
            f"run {self.name} has no checkpoint: it was stopped before its first one; "
            f"delete {self.path} or train again"
        )

    def summary(self) -> RunSummary:
        """Progress of the run, read from its newest readable checkpoint without loading the
        weights; a damaged checkpoint is reported (warning) and the other one used."""
        training: Mapping[str, Any] = {}
        readable: list[str] = []
        for which in ("last", "best"):
            path = self.checkpoint_path(which)
            if not path.is_file():
                continue
            try:
                state = _read_checkpoint(path, "cpu", mmap=True)
            except CheckpointError as error:
                warn(f"run {self.name}: {error}")
                continue
            readable.append(which)
            training = training or state.get("training", {})
        best = training.get("best_score")
        tested = self.recorded_scores("best", int(training.get("best_step", -1)))
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
            checkpoints=tuple(readable),
            test_score=tested.get("test"),
        )

    def record_scores(
        self, which: Which, step: int, scores: Mapping[str, float], counts: Mapping[str, int]
    ) -> None:
        """Keep what `sequnet evaluate` found for checkpoint `which` of step `step` (scores and
        predicted elements per split, whole splits); a run that cannot be written is left as
        it is (the scores were shown; keeping them is a convenience)."""
        recorded = self._scores()
        entry: dict[str, Any] = {"step": step, "scores": dict(scores), "predicted": dict(counts)}
        previous = recorded.get(which, {})
        if previous.get("step") == step:  # other splits of the same weights stay
            entry["scores"] = {**previous.get("scores", {}), **entry["scores"]}
            entry["predicted"] = {**previous.get("predicted", {}), **entry["predicted"]}
        encoded = json.dumps({**recorded, which: entry}, indent=2).encode()
        with suppress(WriteError):
            atomic_write(self.path / SCORES_FILE, lambda file: file.write(encoded))

    def recorded_scores(self, which: Which, step: int) -> dict[str, float]:
        """The scores `record_scores` kept for checkpoint `which` at step `step`, by split."""
        entry = self._scores().get(which, {})
        if not isinstance(entry, dict) or entry.get("step") != step:
            return {}  # none, or of weights the checkpoint no longer holds
        scores = entry.get("scores", {})
        return {split: float(value) for split, value in scores.items()}

    def _scores(self) -> dict[str, Any]:
        try:
            recorded = json.loads((self.path / SCORES_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def history(self) -> list[dict[str, float]]:
        """The validations of the run, oldest first, from its newest readable checkpoint."""
        for which in ("last", "best"):
            path = self.checkpoint_path(which)
            if path.is_file():
                with suppress(CheckpointError):
                    history = _read_checkpoint(path, "cpu", mmap=True).get("training", {})
                    return list(history.get("history", []))
        raise CheckpointError(self._missing("last"))


class NoRunError(CheckpointError):
    """No run matches a reference (a run name, folder or preset)."""


def find_run(ref: str, model: str | None = None, which: Which | None = None) -> Run:
    """A run by folder path, by run name, or the newest run of a preset (optionally one model)
    that has the `which` checkpoint (None: either); runs without it are passed over."""
    path = Path(ref).expanduser()
    if (path / CONFIG_FILE).is_file():
        return Run.open(path)
    if (runs_dir(create=False) / ref / CONFIG_FILE).is_file():
        return Run.open(runs_dir(create=False) / ref)
    preset = _preset_named(ref)
    runs = [
        run
        for run in _all_runs()
        if run.config.preset == preset and (model is None or run.config.model.name == model)
    ]
    wanted: tuple[Which, ...] = (which,) if which else ("best", "last")
    ready = [run for run in runs if any(run.checkpoint_path(w).is_file() for w in wanted)]
    if not ready:
        # No run of the preset at all (a shipped demo may stand in), or none with that checkpoint.
        missing = NoRunError if not runs else CheckpointError
        raise missing(_no_run_message(ref, preset, model, which, runs))
    return max(ready, key=lambda run: _sort_key(run.path))


def _no_run_message(
    ref: str, preset: str, model: str | None, which: Which | None, runs: list[Run]
) -> str:
    """Why no run of `preset` qualifies, and the command that makes one."""
    if not runs and not ref.endswith(".toml") and preset not in list_presets():
        return _unknown(ref, preset)
    of = f"preset '{preset}'" + (f" with model '{model}'" if model else "")
    command = f"sequnet train {ref}" + (f" --model {model}" if model else "")
    if which == "best" and any(run.checkpoint_path("last").is_file() for run in runs):
        return f"no run of {of} has a best.pt yet; use --checkpoint last, or `{command}`"
    folder = runs_dir(create=False)
    return f"no run of {of} has a checkpoint in {folder}; train one first with `{command}`"


def list_runs() -> list[RunSummary]:
    """Every readable run, newest first; damaged runs are skipped with a warning."""
    summaries = []
    for run in _all_runs():
        try:
            summaries.append(run.summary())
        except CheckpointError as error:
            warn(f"run {run.name}: {error}")
    return sorted(summaries, key=lambda summary: _sort_key(summary.path), reverse=True)


def matching_runs(
    summaries: Sequence[RunSummary], ref: str | None, model: str | None = None
) -> list[RunSummary]:
    """The summaries `ref` names: one run (by name or folder), else the runs of a preset (by
    name, or a preset file's); all of them for None. `model`: only that model variant."""
    chosen = [s for s in summaries if model is None or s.model == model]
    if ref is None:
        return chosen
    folder = Path(ref).expanduser().resolve()
    named = [s for s in chosen if s.name == ref or s.path.resolve() == folder]
    if named:
        return named
    preset = _preset_named(ref)
    return [s for s in chosen if s.preset == preset]


def check_preset_or_run(ref: str) -> None:
    """Refuse (`NoRunError`) a name that is neither a run nor a preset, nor the preset of
    some run (a search study labels its trials' runs with its name)."""
    preset = _preset_named(ref)
    if (
        preset in list_presets()
        or ref.endswith(".toml")
        or any(run.config.preset == preset for run in _all_runs())
    ):
        return
    raise NoRunError(_unknown(ref, preset))


def _preset_named(ref: str) -> str:
    """The preset a reference names when it names no run: a preset file's stem, else itself."""
    return Path(ref).stem if ref.endswith(".toml") else ref


def _unknown(ref: str, preset: str) -> str:
    return (
        f"no run named '{ref}' and no preset '{preset}'; see `sequnet runs` for your runs "
        "and `sequnet presets` for the presets"
    )


def load_checkpoint_file(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[RunConfig, dict[str, Any]]:
    """A bare `.pt` checkpoint: its stored config and the whole checkpoint dict."""
    state = _read_checkpoint(path, map_location)
    return RunConfig.from_dict(state["config"]), state


def capture_rng() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) random states, as tensors and plain values.

    The CUDA states only where this process uses CUDA: asking for them would otherwise start a
    CUDA context (memory on every GPU) for a run on the CPU.
    """
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, position, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo `capture_rng`: the random streams continue where the checkpoint left them. The
    states are read wherever they were loaded; the CUDA ones only where this process uses
    CUDA, for the GPUs both machines have."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_initialized():
        for index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)


# --- reading and writing ---------------------------------------------------------------------


def _read_checkpoint(
    path: Path, map_location: str | torch.device, mmap: bool = False
) -> dict[str, Any]:
    """Load and check a checkpoint; every failure is a `CheckpointError` naming the file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:  # torch's advice to load it anyway is not repeated
        if "GLOBAL" in str(error):
            raise CheckpointError(
                f"{path} is refused: it holds objects other than tensors and plain values, "
                "which could run code when loaded; use a checkpoint written by sequnet"
            ) from error
        raise CheckpointError(
            f"{path} is not a readable sequnet checkpoint; it may be truncated or damaged: "
            "use the run's other checkpoint (--checkpoint best or last) or retrain"
        ) from error
    except Exception as error:  # truncated zips, garbage: many types, worded for developers
        raise CheckpointError(
            f"{path} is not a readable sequnet checkpoint: it is truncated or damaged; "
            "use the run's other checkpoint (--checkpoint best or last) or retrain"
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
    for key in ("training_weights", "averaged_weights"):
        if key in state:
            upgraded[key] = kernels(state[key])
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
    folder = runs_dir(create=False)
    if not folder.is_dir():
        return []
    runs = []
    for path in sorted(folder.iterdir()):
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


def _own_data_name(dataset: str) -> list[str]:
    """The name of the user's own data (a path given with --data) for a run's name; benchmark
    keys, which the preset names already, give none."""
    path = Path(dataset)
    return [path.stem or path.name] if len(path.parts) > 1 or path.is_absolute() else []


def _safe_name(text: str) -> str:
    """A file-name-safe version of a preset or model name."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or "run"
