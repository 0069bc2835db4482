"""Scoring: a network's metric on a split of its task's data (validation, `sequnet evaluate`).

`sequnet evaluate` scores whole splits: every element predicted once, each from its whole
receptive field (`TaskData.scored_batches`), and says how many elements (for audio, how many
seconds) that was. Validation during training scores the split's evaluation batches
(`TaskData.batches`): for piano rolls the whole split too, for audio a fixed, seeded sample of
excerpts, the same at every validation, so that validating stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.console import count_progress, file_progress
from sequnet_cli.tasks import WHOLE, Batch, Shard, Task, TaskData
from sequnet_cli.trained_model import TrainedModel


@dataclass(frozen=True)
class SplitScore:
    """The metric of one split and how many elements it was computed over."""

    split: str
    value: float
    count: int  # predicted elements
    amount: str  # the count in words: "4,846,720 samples (302.9 s)"


def evaluate_split(
    network: CausalNetwork,
    task: Task,
    data: TaskData,
    split: str,
    batch_size: int,
    device: torch.device,
) -> float:
    """The task's metric (e.g. NLL in nats per frame, bits per audio sample) on a split's
    evaluation batches (validation's)."""
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
    return _losses(network, task, data.batches(split, batch_size, shard=shard), device)


def _losses(
    network: CausalNetwork,
    task: Task,
    batches: Iterator[Batch],
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Each batch's summed NLL (nats) and predicted elements, in eval mode without gradients;
    `progress` is told each batch's predicted elements."""
    network.eval()
    losses = []
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            count = batch.count  # a sum of the mask, read back from the device: once
            losses.append((task.loss_sum(network, batch).item(), count))
            if progress is not None:
                progress(count)
    return losses


def score_losses(task: Task, losses: list[tuple[float, int]]) -> float:
    """The metric of a split from its batches' losses, summed in order (so the same batches
    give the same figure to the last bit, however they were scored)."""
    total, count = 0.0, 0
    for nats, items in losses:
        total += nats
        count += items
    return task.score(total, count)


def amount(task: Task, count: int) -> str:
    """`count` predicted elements in words, with their duration when the task has a rate."""
    text = f"{count:,} {task.unit}"
    if not task.sample_rate:
        return text
    seconds = count / task.sample_rate
    return text + (f" ({seconds:,.1f} s)" if seconds >= 1 else f" ({seconds:.3f} s)")


def evaluate_model(
    trained: TrainedModel,
    splits: list[str],
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
    whole: bool = True,
) -> list[SplitScore]:
    """The task's metric on each split the data has (of `splits`): on the whole split, or
    (`whole=False`) on the sample validation scores. Whole-split scores of a run's checkpoint
    are kept in the run (`Run.record_scores`), for `sequnet runs`."""
    task, network = trained.task, trained.network
    with file_progress("reading the data") as progress:
        task_data = task.open_data(data, data_dir, network.receptive_field, progress)
    batch = trained.config.train.batch_size
    results = []
    for split in splits:
        if split not in task_data.splits:
            continue
        with count_progress(f"scoring {split}", task.unit) as advance:
            if whole:
                batches = task_data.scored_batches(split, batch)
            else:
                batches = task_data.batches(split, batch)
            losses = _losses(network, task, batches, device, advance)
        count = sum(items for _, items in losses)
        results.append(SplitScore(split, score_losses(task, losses), count, amount(task, count)))
    if whole and trained.run is not None and results:
        step = int(trained.training.get("step", -1))
        trained.run.record_scores(
            trained.which,
            step,
            {score.split: score.value for score in results},
            {score.split: score.count for score in results},
        )
    return results


def scores_document(trained: TrainedModel, scores: list[SplitScore], whole: bool) -> dict[str, Any]:
    """`sequnet evaluate --json`: the model, the metric, and per split its score and the
    elements predicted (and seconds, for audio)."""
    task = trained.task
    document: dict[str, Any] = {
        **trained.header(),
        "metric": task.metric_title,
        "scores": {score.split: score.value for score in scores},
        "predicted": {score.split: score.count for score in scores},
        "unit": task.unit,
        "whole_splits": whole,
    }
    if task.sample_rate:
        document["seconds"] = {s.split: s.count / task.sample_rate for s in scores}
    return document
