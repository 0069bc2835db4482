"""Scoring: a network's metric on a split of its task's data (validation, `sequnet evaluate`)."""

from __future__ import annotations

from pathlib import Path

import torch

from models import CausalNetwork
from sequnet_cli.console import file_progress
from sequnet_cli.tasks import Task, TaskData
from sequnet_cli.trained_model import TrainedModel

SPLITS = ("train", "valid", "test")


def evaluate_split(
    network: CausalNetwork,
    task: Task,
    data: TaskData,
    split: str,
    batch_size: int,
    device: torch.device,
) -> float:
    """The task's metric (e.g. NLL in nats per frame, bits per audio sample) on a split."""
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in data.batches(split, batch_size):
            batch = batch.to(device)
            total += task.loss_sum(network, batch).item()
            count += batch.count
    return task.score(total, count)


def evaluate_model(
    trained: TrainedModel,
    splits: list[str],
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
) -> dict[str, float]:
    """The task's metric on each split the data has (of `splits`)."""
    with file_progress("reading the data") as progress:
        task_data = trained.task.open_data(
            data, data_dir, trained.network.receptive_field, progress
        )
    batch = trained.config.train.batch_size
    return {
        split: evaluate_split(trained.network, trained.task, task_data, split, batch, device)
        for split in splits
        if split in task_data.splits
    }
