"""Trained models for evaluation and sampling: find a checkpoint, rebuild its network.

A reference is a preset name (the newest run of that preset with the asked-for checkpoint), a run
name or folder, or a `.pt` file; the checkpoint's stored config rebuilds the network, so nothing
is repeated. The network is built only once its weights are known to fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import Which, find_run, load_checkpoint_file
from sequnet_cli.config import RunConfig
from sequnet_cli.devices import build_within_memory
from sequnet_cli.errors import CheckpointError
from sequnet_cli.tasks import Task, task_for


@dataclass
class TrainedModel:
    """A network with its weights loaded, in eval mode, its task, and where it came from."""

    config: RunConfig
    task: Task
    network: CausalNetwork
    training: dict[str, Any]  # the checkpoint's training state (epoch, step, history, ...)
    source: Path

    def header(self) -> dict[str, str]:
        """What a report says about the model: preset, model, architecture, checkpoint."""
        return {
            "preset": self.config.preset,
            "model": self.config.model.name,
            "architecture": self.config.model.architecture,
            "checkpoint": str(self.source),
        }

    def describe(self) -> str:
        """Which model this is, in one line: its checkpoint, data, training and score."""
        training = self.training
        parts = [f"data {self.config.data.dataset}"]
        if "step" in training:
            epochs, steps = int(training.get("epoch", 0)), int(training["step"])
            parts.append(f"{epochs} epoch{'s' * (epochs != 1)}, {steps:,} step{'s' * (steps != 1)}")
        history, metric = training.get("history") or [{}], training.get("metric")
        score = history[-1].get("valid")  # the score of these weights, if they were validated
        if history[-1].get("step") == training.get("step") and metric and score is not None:
            parts.append(f"{metric} {float(score):.4f}")
        return f"model {self.source} ({', '.join(parts)})"


def load_model(ref: str, model: str | None, which: Which, device: torch.device) -> TrainedModel:
    """The `which` ('best' or 'last') checkpoint of `ref`, on `device`, in eval mode."""
    path = Path(ref).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        config, state = load_checkpoint_file(path, map_location=device)
        source = path
    else:
        run = find_run(ref, model, which)
        config, state = run.config, run.load_state(which, map_location=device)
        source = run.checkpoint_path(which)
    task = task_for(config)
    network = build_within_memory(
        task.build_network,
        device,
        1,
        f"the network of {source}",
        "its stored config asks for a bigger network than this machine holds",
    )
    try:
        network.load_state_dict(state["weights"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} does not hold weights for {config.model.architecture}: {error}"
        ) from error
    network = network.to(device).eval()
    return TrainedModel(config, task, network, dict(state.get("training", {})), source)
