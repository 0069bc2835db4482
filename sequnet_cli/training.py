"""Training (paper §5): Adam, optional gradient-norm clipping, the learning rate halved when
validation stops improving, the best-on-validation checkpoint kept.

The learning-rate rule is the authors': once more than `lr_decay_after` epochs have passed, an
epoch whose validation score is worse than every one of the last `patience` epochs halves it.

A run ends cleanly at whichever limit comes first (epochs, optimizer steps, minutes) with a
checkpoint. Checkpoints are written atomically after every epoch; Ctrl-C leaves the last one
intact. Resuming is exact: the order of an epoch's batches comes from a generator seeded by
(seed, epoch), batches already done are skipped, and every random state is restored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import Run, capture_rng, restore_rng
from sequnet_cli.config import RunConfig
from sequnet_cli.console import TrainingDisplay, file_progress
from sequnet_cli.devices import cpu_threads, describe
from sequnet_cli.errors import DataError, SequnetError
from sequnet_cli.evaluation import evaluate_split
from sequnet_cli.tasks import Batch, Task, TaskData, task_for
from sequnet_cli.training_step import TrainingStep


@dataclass
class TrainingState:
    """Where a run stands; stored in every checkpoint as `training`."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps in total
    lr: float = 0.0
    best_score: float = math.inf
    best_epoch: int = 0
    metric: str = ""
    seconds: float = 0.0  # training time so far
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Whichever comes first ends the run (0 = no limit for steps and minutes)."""

    epochs: int
    steps: int = 0
    minutes: float = 0.0


class Trainer:
    """Trains one run's network on its task's data, checkpointing into the run folder."""

    def __init__(
        self, run: Run, network: CausalNetwork, task: Task, data: TaskData, device: torch.device
    ) -> None:
        self.run, self.task, self.data, self.device = run, task, data, device
        self.config = run.config.train
        self.network = network.to(device)
        self.training_step = self._make_step()
        self.optimizer = self.training_step.optimizer
        self.averaged = self.training_step.averaged
        self.state = TrainingState(lr=self.config.lr, metric=f"valid {task.metric}")
        self.data_generator = torch.Generator().manual_seed(self.config.seed)

    def _make_step(self) -> TrainingStep:
        return TrainingStep(self.network, self.task, self.config)

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a `last.pt` checkpoint of this run."""
        self.network.load_state_dict(checkpoint.get("training_weights", checkpoint["weights"]))
        if self.averaged is not None:
            self.averaged.module.load_state_dict(checkpoint["weights"])
            self.averaged.n_averaged.fill_(max(int(checkpoint["training"]["step"]), 1))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state = TrainingState(**checkpoint["training"])
        restore_rng(checkpoint["rng"])
        if "data_generator" in checkpoint:
            self.data_generator.set_state(checkpoint["data_generator"])

    def fit(self, limits: Limits, display: TrainingDisplay) -> TrainingState:
        """Train until a limit is reached; returns the final state (the checkpoint is written)."""
        started, base = time.monotonic(), self.state.seconds
        stop = False
        while self.state.epoch < limits.epochs and not stop:
            batches = self.data.epoch_batches(self.config.batch_size)
            display.start_epoch(self.state.epoch + 1, limits.epochs, batches, self.state.batch)
            nats, count = 0.0, 0  # the training loss of this period, in the task's metric below
            for batch_loss, items in self._epoch_steps():
                self.state.seconds = base + time.monotonic() - started
                nats, count = nats + batch_loss * items, count + items
                display.advance(self.task.score(nats, count), items, self.state.lr)
                stop = self._limit_reached(limits)
                if stop:
                    break
            epoch_done = self.state.batch >= batches
            if epoch_done:
                self.state.epoch, self.state.batch = self.state.epoch + 1, 0
            train = self.task.score(nats, count) if count else math.nan
            self._end_of_period(display, epoch_done, train)
        return self.state

    def _limit_reached(self, limits: Limits) -> bool:
        if limits.steps and self.state.step >= limits.steps:
            return True
        return bool(limits.minutes) and self.state.seconds >= 60 * limits.minutes

    def _epoch_steps(self) -> Iterator[tuple[float, int]]:
        """Optimizer steps over the rest of the current epoch: (mean loss, predicted items)."""
        generator = self.data.epoch_generator(
            self.config.seed, self.state.epoch, self.data_generator
        )
        self.network.train()
        done = self.state.batch  # batches of this epoch finished before a resume
        for batch in self.data.batches("train", self.config.batch_size, generator, skip=done):
            loss, count = self._step(batch.to(self.device))
            self.state.batch, self.state.step = self.state.batch + 1, self.state.step + 1
            yield loss, count

    def _step(self, batch: Batch) -> tuple[float, int]:
        value, count = self.training_step(batch)
        if not math.isfinite(value):
            raise SequnetError(
                f"the training loss became {value} at step {self.state.step + 1}; "
                "lower the learning rate (--set train.lr=...) or enable clipping (--set train.clip=0.5)"
            )
        return value, count

    def _end_of_period(self, display: TrainingDisplay, epoch_done: bool, train: float) -> None:
        """Validate, record (training score in the metric's units, with dropout), checkpoint."""
        score = self._validate(self.evaluated)
        improved = score < self.state.best_score
        if improved:
            self.state.best_score, self.state.best_epoch = score, self.state.epoch
        self.state.history.append(
            {
                "epoch": self.state.epoch,
                "step": self.state.step,
                "train": train,
                "valid": score,
                "lr": self.state.lr,
            }
        )
        if epoch_done:
            self._schedule(score)
        display.end_epoch(train, score, self.state.best_score, self.state.lr)
        self.save(best=improved)

    def _validate(self, network: CausalNetwork) -> float:
        """The task's metric of `network` on the validation split."""
        return evaluate_split(
            network, self.task, self.data, "valid", self.config.batch_size, self.device
        )

    def _schedule(self, score: float) -> None:
        previous = [entry["valid"] for entry in self.state.history[:-1]][-self.config.patience :]
        late = self.state.epoch > self.config.lr_decay_after
        if (
            self.config.patience > 0
            and late
            and len(previous) == self.config.patience
            and score > max(previous)
        ):
            self.state.lr /= 2
            for group in self.optimizer.param_groups:
                group["lr"] = self.state.lr

    @property
    def evaluated(self) -> CausalNetwork:
        """The network that is validated, checkpointed and sampled: the average if there is one."""
        return self.training_step.evaluated

    def save(self, best: bool) -> None:
        """Write `last.pt` (and `best.pt`), atomically."""
        self.run.save(self.checkpoint(), best=best)

    def checkpoint(self) -> dict[str, Any]:
        """The state a checkpoint holds (see `sequnet_cli.checkpoints`)."""
        extra = {"training_weights": self.network.state_dict()} if self.averaged is not None else {}
        return {
            **extra,
            "weights": self.evaluated.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "training": asdict(self.state),
            "rng": capture_rng(),
            "data_generator": self.data_generator.get_state(),
        }


def check_validation_data(data: TaskData) -> None:
    """Refuse data without a validation split (before a run is made): the best checkpoint
    is chosen on it."""
    if "valid" not in data.splits:
        raise DataError(
            "the data has no validation files to choose the best checkpoint on: too few "
            "usable files to set some aside; add files (or a valid/ sub-folder)"
        )


def train_run(
    config: RunConfig,
    limits: Limits,
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
    resume: Run | None = None,
) -> tuple[Run, TrainingState]:
    """Train a new run of `config` (or continue `resume`); returns the run and its final state."""
    if resume is not None:
        config = resume.config
    threads = config.train.threads if device.type == "cpu" else 0
    with cpu_threads(threads):
        return _train(config, limits, device, data, data_dir, resume)


def _train(
    config: RunConfig,
    limits: Limits,
    device: torch.device,
    data: Path | None,
    data_dir: Path | None,
    resume: Run | None,
) -> tuple[Run, TrainingState]:
    torch.manual_seed(config.train.seed)
    task = task_for(config)
    network = task.build_network()
    with file_progress("reading the data") as progress:
        task_data = task.open_data(data, data_dir, network.receptive_field, progress)
    check_validation_data(task_data)
    run = resume or Run.create(config)
    trainer = Trainer(run, network, task, task_data, device)
    if resume is not None:
        trainer.resume(resume.load_state("last", map_location=device))
    parameters = sum(p.numel() for p in network.parameters())
    title = (
        f"{config.preset} / {config.model.name} ({config.model.architecture}, {parameters:,} "
        f"parameters, receptive field {network.receptive_field}) on {describe(device)} -> {run.path}"
    )
    with TrainingDisplay(task.unit, task.metric, title) as display:
        try:
            state = trainer.fit(limits, display)
        except KeyboardInterrupt:
            raise SequnetError(
                f"interrupted; run {run.name} keeps its last checkpoint "
                f"(continue with `sequnet train --resume {run.name}`)"
            ) from None
    return run, state
