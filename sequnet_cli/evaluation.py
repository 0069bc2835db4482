"""Scoring: a network's metric on a split of its task's data (validation, `sequnet evaluate`)."""

from __future__ import annotations

from pathlib import Path

import torch

from models import CausalNetwork
from sequnet_cli.console import file_progress
from sequnet_cli.tasks import WHOLE, Shard, Task, TaskData
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
    return score_losses(task, batch_losses(network, task, data, split, batch_size, device))


def batch_losses(
    network: CausalNetwork,
    task: Task,
    data: TaskData,
    split: str,
    batch_size: int,
    device: torch.device,
    shard: Shard = WHOLE,
) -> list[tuple[float, int]]:
    """Summed NLL (nats) and predicted elements of each evaluation batch of a split (of
    `shard`'s batches: a distributed run scores its part in each process)."""
    network.eval()
    losses = []
    with torch.no_grad():
        for batch in data.batches(split, batch_size, shard=shard):
            batch = batch.to(device)
            losses.append((task.loss_sum(network, batch).item(), batch.count))
    return losses


def score_losses(task: Task, losses: list[tuple[float, int]]) -> float:
    """The metric of a split from its batches' losses, summed in order (so the same batches
    give the same figure to the last bit, however they were scored)."""
    total, count = 0.0, 0
    for nats, items in losses:
        total += nats
        count += items
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
