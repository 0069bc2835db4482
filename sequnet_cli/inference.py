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
from sequnet_cli.builders import build_task, network_for
from sequnet_cli.checkpoints import find_run, load_checkpoint_file
from sequnet_cli.config import RunConfig
from sequnet_cli.errors import CheckpointError
from sequnet_cli.training import evaluate_split


@dataclass
class Trained:
    """A network with its weights loaded, in eval mode, and where it came from."""

    config: RunConfig
    network: CausalNetwork
    training: dict[str, Any]
    source: Path


def load_trained(ref: str, model: str | None, which: str, device: torch.device) -> Trained:
    """The `which` ('best' or 'last') checkpoint of `ref`, on `device`."""
    path = Path(ref).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        config, state = load_checkpoint_file(path, map_location=device)
        source = path
    else:
        run = find_run(ref, model)
        config, state = run.config, run.load_state(which, map_location=device)  # type: ignore[arg-type]
        source = run.checkpoint_path(which)  # type: ignore[arg-type]
    network = network_for(config)
    try:
        network.load_state_dict(state["weights"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} does not hold weights for {config.model.architecture}: {error}"
        ) from error
    return Trained(config, network.to(device).eval(), dict(state.get("training", {})), source)


def evaluate_trained(
    trained: Trained,
    splits: list[str],
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
) -> dict[str, float]:
    """The task's metric on each split (piano roll: NLL per frame; audio: bits per sample)."""
    task = build_task(trained.config, trained.network, data, data_dir)
    batch = trained.config.train.batch_size
    if trained.config.task == "audio":
        splits = [s for s in splits if s != "valid"]  # audio corpora hold train and test only
    return {split: evaluate_split(trained.network, task, split, batch, device) for split in splits}
