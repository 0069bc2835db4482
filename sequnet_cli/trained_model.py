"""Trained models for evaluation and sampling: find a checkpoint, rebuild its network.

A reference is a preset name (the newest run of that preset), a run name or folder, or a
`.pt` file; the checkpoint's stored config rebuilds the network, so nothing is repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import Which, find_run, load_checkpoint_file
from sequnet_cli.config import RunConfig
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


def load_model(ref: str, model: str | None, which: Which, device: torch.device) -> TrainedModel:
    """The `which` ('best' or 'last') checkpoint of `ref`, on `device`, in eval mode."""
    path = Path(ref).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        config, state = load_checkpoint_file(path, map_location=device)
        source = path
    else:
        run = find_run(ref, model)
        config, state = run.config, run.load_state(which, map_location=device)
        source = run.checkpoint_path(which)
    task = task_for(config)
    network = task.build_network()
    try:
        network.load_state_dict(state["weights"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} does not hold weights for {config.model.architecture}: {error}"
        ) from error
    network = network.to(device).eval()
    return TrainedModel(config, task, network, dict(state.get("training", {})), source)
