"""Demo models shipped with the package, so that the first sound needs no training
(DESIGN.md, "Checkpoints").

`sequnet_cli/demo_checkpoints/<preset>.pt` is a small model of a preset trained with `sequnet
train` itself (`scripts/make_demos.sh` remakes them all) and stored by `export_demo`: the
resolved config, the weights in half precision (half the size; they are turned back into
float32 when loaded, and the network computes as trained), a summary of the training, what
sampling needs of its training data (the run's `data_profile`), and the provenance: the command,
seed and data it was trained with and its scores. `sample` and `evaluate` use the demo of a
preset when the user has no run of that preset, and say so; `sequnet runs` lists the demos.
One demo may also stand in for other presets of its kind of data (`STANDS_IN_FOR`), so that one
file serves them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from sequnet_cli import __version__
from sequnet_cli.checkpoints import RunSummary, load_checkpoint_file
from sequnet_cli.config import RunConfig
from sequnet_cli.errors import CheckpointError
from sequnet_cli.files import atomic_write

DEMO_FOLDER = Path(__file__).with_name("demo_checkpoints")  # package data
FORMAT = "sequnet-demo"
FORMAT_VERSION = 1
DEMO_LABEL = "shipped demo"  # how `sequnet runs` names a demo
# Presets a demo also stands in for when the user has no run of them (same kind of data; the
# demo keeps its own config). `sequnet sample piano` is the first command a user tries, and the
# paper-sized `piano` model needs a GPU to train: the CPU-sized `piano-small` demo plays for it.
STANDS_IN_FOR: Mapping[str, tuple[str, ...]] = {"piano-small": ("piano",)}


@dataclass(frozen=True)
class Demo:
    """One shipped demo model: its file, config, training summary and provenance."""

    path: Path
    config: RunConfig
    training: Mapping[str, Any]  # epoch, step, best_score, metric
    provenance: Mapping[str, Any]  # command, seed, data, scores, metric, made, sequnet, torch
    profile: Mapping[str, Any]  # the run's `data_profile` (`TaskData.profile`); empty if none
    requested: str | None = None  # the preset it was found for: its own, or one it stands in for

    @property
    def preset(self) -> str:
        return self.config.preset

    @property
    def stands_in_for(self) -> tuple[str, ...]:
        """The other presets this demo plays for (`STANDS_IN_FOR`)."""
        return tuple(STANDS_IN_FOR.get(self.preset, ()))

    def describe(self) -> str:
        """Where the demo comes from, in a few words."""
        origin = self.provenance
        scores = ", ".join(f"{split} {value:.3f}" for split, value in origin["scores"].items())
        return f"trained with `{origin['command']}` on {origin['data']}" + (
            f"; {origin['metric']}: {scores}" if scores else ""
        )

    def notice(self) -> str:
        """The line `sample` prints when it uses the demo."""
        return (
            f"no run of {self.requested or self.preset} yet: using the {DEMO_LABEL} model of "
            f"{self.preset} ({self.describe()})"
        )

    def summary(self) -> RunSummary:
        """The demo as a row of `sequnet runs`."""
        best = self.training.get("best_score")
        also = f", also for {', '.join(self.stands_in_for)}" if self.stands_in_for else ""
        return RunSummary(
            name=f"{self.preset} ({DEMO_LABEL}{also})",
            preset=self.preset,
            model=self.config.model.name,
            task=self.config.task,
            data=self.config.data.dataset,
            epochs=int(self.training.get("epoch", 0)),
            steps=int(self.training.get("step", 0)),
            best_score=float(best) if isinstance(best, int | float) else None,
            metric=str(self.training.get("metric", "")),
            created=datetime.fromisoformat(str(self.provenance["made"])),
            size_bytes=self.path.stat().st_size,
            path=self.path,
            test_score=self.provenance.get("scores", {}).get("test"),
            demo=True,
        )

    def weights(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The network's state dict in float32."""
        return full_precision(_read(self.path, device)["weights"])


def find_demo(preset: str, folder: Path | None = None) -> Demo | None:
    """The demo that plays for `preset`, shipped in `folder` (default: the package's): its own,
    else one that stands in for it; None if there is neither."""
    folder = folder or DEMO_FOLDER
    standing_in = [demo for demo, presets in STANDS_IN_FOR.items() if preset in presets]
    for name in (preset, *standing_in):
        path = folder / f"{name}.pt"
        if path.is_file():
            return replace(_open(path), requested=preset)
    return None


def demo_in_file(path: Path) -> Demo | None:
    """The demo stored in `path` if it is a demo's file (a user may name a demo's `.pt`
    directly), else None."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (not a demo's file: the checkpoint reader says what it is)
        return None
    return _open(path) if isinstance(state, dict) and state.get("format") == FORMAT else None


def list_demos(folder: Path | None = None) -> list[Demo]:
    """Every shipped demo, by preset name."""
    folder = folder or DEMO_FOLDER
    return [_open(path) for path in sorted(folder.glob("*.pt"))] if folder.is_dir() else []


def half_precision(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every floating-point tensor stored as float16."""
    return {
        name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        for name, tensor in weights.items()
    }


def full_precision(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`half_precision` undone: float16 tensors as float32."""
    return {
        name: tensor.float() if tensor.dtype == torch.float16 else tensor
        for name, tensor in weights.items()
    }


def export_demo(
    checkpoint: Path,
    command: str,
    data: str,
    scores: Mapping[str, float],
    metric: str,
    folder: Path | None = None,
) -> Path:
    """Store a run's checkpoint as the demo of its preset in `folder` (default: the package's),
    with its provenance: the training `command`, a short name of its `data`, and its `scores`
    per split in `metric`. Returns the demo's path."""
    config, state = load_checkpoint_file(checkpoint)
    training = state.get("training", {})
    stored = config.to_dict()
    # The folder it was trained from exists only on the machine that made it: keep its name
    # (`evaluate` then asks for --data), never a path of that machine.
    stored["data"]["dataset"] = Path(config.data.dataset).name or config.data.dataset
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": stored,
        "weights": half_precision(state["weights"]),
        "training": {key: training.get(key) for key in ("epoch", "step", "best_score", "metric")},
        "data_profile": state.get("data_profile", {}),
        "provenance": {
            "command": command,
            "seed": config.train.seed,
            "data": data,
            "scores": {split: float(value) for split, value in scores.items()},
            "metric": metric,
            "made": datetime.now().replace(microsecond=0).isoformat(),
            "sequnet": __version__,
            "torch": str(torch.__version__),
        },
    }
    folder = folder or DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.preset}.pt"
    return atomic_write(path, lambda file: torch.save(payload, file))


def _open(path: Path) -> Demo:
    state = _read(path, "cpu")
    config = RunConfig.from_dict(state["config"])
    profile = state.get("data_profile", {})
    return Demo(path, config, state["training"], state["provenance"], profile)


def _read(path: Path, device: torch.device | str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except Exception as error:  # truncated zips, garbage: many types
        raise CheckpointError(
            f"the demo model {path} is not readable ({type(error).__name__}); reinstall sequnet"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sequnet demo model; reinstall sequnet")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"the demo model {path} has format version {state.get('format_version')!r}, this "
            f"sequnet reads version {FORMAT_VERSION}; reinstall sequnet"
        )
    return state
