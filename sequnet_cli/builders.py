"""Config to objects: the device, the task with its data, and the network of a run."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models import CausalNetwork, build_network
from sequnet_cli.coding import AudioCoding
from sequnet_cli.config import RunConfig
from sequnet_cli.data.audio import AudioCorpus
from sequnet_cli.data.polyphonic import load_piano_rolls
from sequnet_cli.errors import ConfigError, DataError, DeviceError
from sequnet_cli.tasks import AudioTask, PianoRollTask, Task

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None) -> torch.device:
    """`auto` (the default, or `SEQUNET_DEVICE`) picks CUDA when there is a GPU, else the CPU."""
    name = (name or os.environ.get("SEQUNET_DEVICE") or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}'; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(name)


def network_for(config: RunConfig, task_kind: str | None = None) -> CausalNetwork:
    """The run's network with the task's input and output widths."""
    if (task_kind or config.task) == "piano-roll":
        return build_network(config.model.architecture, 88, 88, config.model.network)
    coding = AudioCoding.of(config.data)
    return build_network(
        config.model.architecture, coding.in_channels, coding.out_channels, config.model.network
    )


def build_task(
    config: RunConfig,
    network: CausalNetwork,
    data: Path | None = None,
    data_dir: Path | None = None,
) -> Task:
    """Load the run's data. `data` replaces the preset's dataset (a folder or file of the user's)."""
    dataset = str(data) if data is not None else config.data.dataset
    if config.task == "piano-roll":
        splits = load_piano_rolls(dataset, data_dir, config.data)
        return PianoRollTask(
            {"train": splits.train, "valid": splits.valid, "test": splits.test},
            splits.frame_seconds,
        )
    if config.task == "audio":
        folder = Path(dataset).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"audio dataset '{dataset}' is not a folder; point --data at a folder of recordings "
                "(WAV, FLAC, OGG, ...), e.g. an unpacked MAESTRO download"
            )
        corpus = AudioCorpus.open(folder, config.data.sample_rate, config.data.test_fraction)
        steps = config.train.eval_every or 500
        return AudioTask(
            corpus,
            config.data.excerpt_targets,
            network.receptive_field,
            config.train.eval_batches,
            steps,
            AudioCoding.of(config.data),
        )
    raise ConfigError(f"unknown task '{config.task}'; use piano-roll or audio")
