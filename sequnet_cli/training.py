"""Training (paper §5): Adam, optional gradient-norm clipping, the learning rate halved when
validation stops improving, the best-on-validation checkpoint kept.

The learning-rate rule is the authors': once more than `lr_decay_after` epochs have passed, an
epoch whose validation score is worse than every one of the last `patience` epochs halves it.

With a weight average (`train.ema`), every validation scores both the trained weights and
their average and keeps whichever is better, so the saved model never validates worse than the
trained weights at the same step, however short the run.

A run ends cleanly at whichever limit comes first (`sequnet_cli.limits`: epochs and optimizer
steps of the whole run, minutes of this command) with a checkpoint, or when the caller's
per-period callback asks (`sequnet tune` prunes so). Checkpoints are written atomically after
every epoch. Ctrl-C or SIGTERM lets the step in progress finish, then saves the steps done
since the last checkpoint, so an interrupted run always leaves a resumable `last.pt` (or,
before its first step, no run at all).
Resuming is exact: the order of an epoch's batches comes from a generator seeded by (seed,
epoch), batches already done are skipped, and every random state is restored. The process that
trains a run holds its lock (`sequnet_cli.run_lock`) until it ends.

Batches are drawn ahead of the step in a background thread (`sequnet_cli.batch_feed`), and the
losses stay on the device, read back at the pace of the display: on a GPU the host never waits
for a step to finish before preparing and sending the next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli import interrupts
from sequnet_cli.batch_feed import BatchFeed
from sequnet_cli.checkpoints import Run, capture_rng, find_run, restore_rng
from sequnet_cli.config import RunConfig, apply_overrides
from sequnet_cli.console import QuietTrainingDisplay, TrainingDisplay, file_progress
from sequnet_cli.devices import build_within_memory, cpu_threads, describe, training_threads
from sequnet_cli.errors import CheckpointError, ConfigError, DataError, SequnetError, StoppedError
from sequnet_cli.evaluation import amount, batch_losses, score_losses
from sequnet_cli.limits import Limits
from sequnet_cli.paths import runs_dir
from sequnet_cli.tasks import Batch, Task, TaskData, task_for
from sequnet_cli.training_step import TrainingStep

READ_EVERY_SECONDS = 0.5  # how often the display reads the training losses back from the device


@dataclass
class TrainingState:
    """Where a run stands; stored in every checkpoint as `training`."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps in total
    lr: float = 0.0
    best_score: float = math.inf
    best_epoch: int = 0  # the epoch (counted from 1) whose validation was best
    metric: str = ""
    seconds: float = 0.0  # training time so far
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    epoch_batches: int = 0  # optimizer steps in one epoch
    kept_average: bool = False  # `weights` holds the average: it validated better last time

    def progress(self) -> str:
        """How far the run got, in the progress display's terms."""
        steps = f"{self.step:,} step{'s' * (self.step != 1)}"
        epochs = f"{self.epoch} epoch{'s' * (self.epoch != 1)}"
        if self.batch == 0:
            return f"{epochs} ({steps})"
        partial = f"{self.batch} of {self.epoch_batches} steps of epoch {self.epoch + 1}"
        return f"{epochs} and {partial} ({steps})"

    def best(self) -> str:
        """The best validation so far, or that there was none."""
        if not math.isfinite(self.best_score):
            return f"no {self.metric} yet"
        return (
            f"best {self.metric} {self.best_score:.4f} in epoch {self.best_epoch} "
            f"(step {self.best_step:,})"
        )


# Called after each validation (and checkpoint) with the run's state; True stops the run there.
PeriodCallback = Callable[["TrainingState"], bool]


class Trainer:
    """Trains one run's network on its task's data, checkpointing into the run folder."""

    def __init__(
        self, run: Run, network: CausalNetwork, task: Task, data: TaskData, device: torch.device
    ) -> None:
        self.run, self.task, self.data, self.device = run, task, data, device
        self.config = run.config.train
        self.network = network.to(device)
        self.training_step = self._make_step()
        self.averaged = self.training_step.averaged
        self.state = TrainingState(lr=self.config.lr, metric=f"valid {task.metric}")
        self.data_generator = torch.Generator().manual_seed(self.config.seed)
        # Its state after the last batch trained on (the feed may have drawn more since).
        self.data_state = self.data_generator.get_state()
        self.data_profile = data.profile()  # what sampling needs of the training data
        self.saved_step: int | None = None  # the step of the newest checkpoint, if any
        self.seconds_before = 0.0  # the run's training time when `fit` began

    def _make_step(self) -> TrainingStep:
        return TrainingStep(self.network, self.task, self.config)

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a `last.pt` checkpoint of this run, loaded onto the CPU whatever the
        run's device (its random states must stay there; weights and optimizer state are
        copied to the network's device as they are loaded)."""
        self.network.load_state_dict(checkpoint.get("training_weights", checkpoint["weights"]))
        self.state = TrainingState(**checkpoint["training"])
        if self.averaged is not None:
            averaged = checkpoint.get("averaged_weights", checkpoint["weights"])
            self.averaged.load(averaged, updates=self.state.step)
        self.training_step.load_optimizer_state(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"])
        if "data_generator" in checkpoint:
            self.data_generator.set_state(checkpoint["data_generator"])
            self.data_state = self.data_generator.get_state()
        self.saved_step = self.state.step

    def fit(
        self, limits: Limits, display: TrainingDisplay, on_period: PeriodCallback | None = None
    ) -> TrainingState:
        """Train until a limit is reached (or `on_period` says stop); returns the final state
        (the checkpoint is written)."""
        started, base = time.monotonic(), self.state.seconds
        self.seconds_before = base  # `--minutes` counts this command's training
        stop = self._limit_reached(limits)  # nothing to do for a run that has reached one
        while self.state.epoch < limits.epochs and not stop:
            batches = self.data.epoch_batches(self.config.batch_size)
            self.state.epoch_batches = batches
            display.start_epoch(self.state.epoch + 1, limits.epochs, batches, self.state.batch)
            losses = LossTally(self.device)  # the training loss of this period
            with closing(self._epoch_steps()) as steps:  # closed early: the feed stops at once
                for total, count in steps:
                    self.state.seconds = base + time.monotonic() - started
                    losses.add(total, count)
                    if losses.due():
                        self._show(losses, display)
                    stop = self._limit_reached(limits)
                    if stop:
                        break
            self._show(losses, display)
            epoch_done = self.state.batch >= batches
            if epoch_done:
                self.state.epoch, self.state.batch = self.state.epoch + 1, 0
            train = self.task.score(losses.nats, losses.count) if losses.count else math.nan
            self._end_of_period(display, epoch_done, train)
            if on_period is not None and on_period(self.state):
                stop = True
        return self.state

    def _limit_reached(self, limits: Limits) -> bool:
        return limits.reached(self.state, self.seconds_before) is not None

    def _uninterrupted(self) -> AbstractContextManager[object]:
        """A unit of work that Ctrl-C or SIGTERM waits for (then KeyboardInterrupt)."""
        return interrupts.deferred()

    def _epoch_steps(self) -> Generator[tuple[torch.Tensor, torch.Tensor]]:
        """Optimizer steps over the rest of the current epoch: each one's summed loss and
        predicted elements, as tensors on the device."""
        generator = self.data.epoch_generator(
            self.config.seed, self.state.epoch, self.data_generator
        )
        self.network.train()
        done = self.state.batch  # batches of this epoch finished before a resume
        batches = self.data.batches("train", self.config.batch_size, generator, skip=done)
        with BatchFeed(batches, self.data_generator, self.device) as feed:
            while True:
                # Taking a batch and stepping on it is one unit: Ctrl-C or SIGTERM lands before
                # or after it, so the weights, the random states and the counters a checkpoint
                # saves agree.
                with self._uninterrupted():
                    drawn = next(feed, None)
                    if drawn is None:
                        return
                    batch, self.data_state = drawn
                    loss = self._step(batch.to(self.device))
                    self.state.batch, self.state.step = self.state.batch + 1, self.state.step + 1
                yield loss

    def _step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step: the batch's summed loss and predicted elements, on the device."""
        return self.training_step(batch)

    def _show(self, losses: LossTally, display: TrainingDisplay) -> None:
        """Read the period's new losses back from the device and show them; a loss that is
        no longer a number ends the run."""
        steps, nats, count = losses.read()
        if not steps:
            return
        if not math.isfinite(nats):
            first = self.state.step - steps + 1
            where = f"at step {first}" if steps == 1 else f"in steps {first}-{self.state.step}"
            raise SequnetError(
                f"the training loss became {nats} {where}; lower the learning rate "
                "(--set train.lr=...) or enable clipping (--set train.clip=0.5)"
            )
        score = self.task.score(losses.nats, losses.count)
        display.advance(score, count, self.state.lr, steps=steps)

    def _end_of_period(self, display: TrainingDisplay, epoch_done: bool, train: float) -> None:
        """Validate, record (training score in the metric's units, with dropout), checkpoint."""
        score, scores, count = self._validate()
        improved = score < self.state.best_score
        if improved:
            self.state.best_score, self.state.best_step = score, self.state.step
            self.state.best_epoch = self.state.epoch if epoch_done else self.state.epoch + 1
        self.state.history.append(
            {
                "epoch": self.state.epoch,
                "step": self.state.step,
                "train": train,
                "valid": score,
                **scores,
                "valid_count": count,  # the elements validation predicts (audio: a sample)
                "lr": self.state.lr,
            }
        )
        if epoch_done:
            self._schedule(score)
        scored = f"{amount(self.task, count)} of the valid split"
        display.end_epoch(train, score, self.state.best_score, self.state.lr, scored)
        self.save(best=improved)

    def _validate(self) -> tuple[float, dict[str, float], int]:
        """The kept model's validation score, both scores when there is a weight average, and
        the elements validation predicts.

        The average is kept only while it validates at least as well as the trained weights:
        early in a run, or after a jump in the learning rate, it lags behind them.
        """
        trained, count = self._score(self.network)
        if self.averaged is None:
            return trained, {}, count
        averaged, _ = self._score(self.averaged.module)
        self.state.kept_average = averaged <= trained
        scores = {"valid_trained": trained, "valid_averaged": averaged}
        return min(trained, averaged), scores, count

    def _score(self, network: CausalNetwork) -> tuple[float, int]:
        """The validation score of `network` and the elements it predicted."""
        batch = self.config.batch_size
        losses = batch_losses(network, self.task, self.data, "valid", batch, self.device)
        return score_losses(self.task, losses), sum(items for _, items in losses)

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
            self.training_step.set_lr(self.state.lr)

    @property
    def evaluated(self) -> CausalNetwork:
        """The network that is checkpointed as `weights`, evaluated and sampled: the average
        when it validated better at the last validation, else the trained weights."""
        if self.averaged is not None and self.state.kept_average:
            return self.averaged.module
        return self.network

    def save(self, best: bool) -> None:
        """Write `last.pt` (and `best.pt`), atomically."""
        self.run.save(self.checkpoint(), best=best)
        self.saved_step = self.state.step

    def checkpoint(self) -> dict[str, Any]:
        """The state a checkpoint holds (see `sequnet_cli.checkpoints`)."""
        extra = {}
        if self.averaged is not None:
            extra = {
                "training_weights": self.network.state_dict(),
                "averaged_weights": self.averaged.module.state_dict(),
            }
        return {
            **extra,
            "weights": self.evaluated.state_dict(),
            "optimizer": self.training_step.optimizer_state(),
            "training": asdict(self.state),
            "rng": capture_rng(),
            "data_generator": self.data_state,
            "data_profile": self.data_profile,
        }

    def keep_interrupted(self) -> str:
        """After Ctrl-C: save the steps done since the last checkpoint; says what is kept."""
        if self.saved_step is None and self.state.step == 0:
            self.run.discard()
            return "interrupted before the first training step; nothing was written"
        if self.saved_step != self.state.step:
            self.save(best=False)
        name = self.run.name
        kept = (
            f"interrupted; run {name} is saved after {self.state.progress()} in its last.pt: "
            f"continue with `sequnet train --resume {name}`"
        )
        if not self.run.checkpoint_path("best").is_file():
            kept += "; it has no best.pt yet: sample it with --checkpoint last"
        return kept


class LossTally:
    """A period's training losses, summed on the device as the steps come and read back when
    asked (reading waits for the device: the display asks every `READ_EVERY_SECONDS`)."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # nats, elements
        self.pending = 0  # steps added since the last read
        self.nats, self.count = 0.0, 0  # what was read so far
        self.read_at = time.monotonic()

    def add(self, total: torch.Tensor, count: torch.Tensor) -> None:
        """One step's summed loss and predicted elements (tensors the step may reuse: they
        are added now, in the device's order)."""
        self.sums[0] += total
        self.sums[1] += count
        self.pending += 1

    def due(self) -> bool:
        return time.monotonic() - self.read_at >= READ_EVERY_SECONDS

    def read(self) -> tuple[int, float, int]:
        """The steps, summed nats and elements since the last read (added to the totals)."""
        self.read_at = time.monotonic()
        if not self.pending:
            return 0, 0.0, 0
        nats, count = self.sums.tolist()
        self.sums.zero_()
        steps, self.pending = self.pending, 0
        self.nats, self.count = self.nats + nats, self.count + int(count)
        return steps, nats, int(count)


def check_validation_data(data: TaskData) -> None:
    """Refuse data without a validation split (before a run is made): the best checkpoint
    is chosen on it."""
    if "valid" not in data.splits:
        raise DataError(
            "the data has no validation files to choose the best checkpoint on: too few "
            "usable files to set some aside; add files (or a valid/ sub-folder)"
        )


def resumed_run(ref: str, model: str | None, overrides: list[str]) -> Run:
    """The run `ref` names (its newest with a `last.pt`, for a preset) with `--set`-style
    `overrides` of its training settings applied (its next checkpoint stores them, and
    `config.json` with it).

    Its network, data settings and seed cannot change: its weights and its batches depend on
    them.
    """
    run = find_run(ref, model, "last")
    fixed = [o for o in overrides if o.startswith(("model.", "data.", "train.seed="))]
    fixed = [o for o in fixed if not o.startswith("data.dataset=")]  # a moved folder is fine
    if fixed:
        raise ConfigError(
            f"a resumed run keeps its network, data settings and seed, so {fixed[0]} is refused "
            f"with --resume {ref}; start a new run to change them"
        )
    try:
        run.load_state("last")  # readable, before any work is done
    except CheckpointError as error:
        raise CheckpointError(
            f"run {run.name} cannot be resumed: {str(error).partition(';')[0]}; "
            f"start a new run with `sequnet train {run.config.preset}`"
        ) from error
    run.config = apply_overrides(run.config, overrides)  # stored with the next checkpoint
    return run


def train_run(
    config: RunConfig,
    limits: Limits,
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
    resume: Run | None = None,
    *,
    on_period: PeriodCallback | None = None,
    quiet: bool = False,
    label: str | None = None,
) -> tuple[Run, TrainingState]:
    """Train a new run of `config` (or continue `resume`); returns the run and its final state.

    Everything that can be refused is checked before the run folder is made. `on_period` is
    called after each validation and may stop the run; `quiet` shows no progress; `label`
    starts a new run's folder name (see `Run.create`).
    """
    if resume is not None:
        config = resume.config
    if limits.epochs < 1:
        raise ConfigError(
            f"train.epochs is {limits.epochs}: nothing to train; ask for at least one (--epochs N)"
        )
    runs_dir()  # an unwritable SEQUNET_HOME is refused before the data is read
    threads = training_threads(config.train.threads) if device.type == "cpu" else 0
    # A resumed run is held before its data is read (another process may train it), a new one
    # as soon as it is made.
    with cpu_threads(threads), resume.held() if resume is not None else nullcontext():
        try:
            task, network, task_data = _prepare(config, device, data, data_dir, quiet)
        except KeyboardInterrupt:
            kept = f"run {resume.name} is unchanged" if resume else "nothing was written"
            raise StoppedError(f"interrupted before training started; {kept}") from None
        run = resume or Run.create(config, label)
        with run.held() if resume is None else nullcontext():
            return _train(run, limits, device, task, network, task_data, resume, on_period, quiet)


def _prepare(
    config: RunConfig,
    device: torch.device,
    data: Path | None,
    data_dir: Path | None,
    quiet: bool = False,
) -> tuple[Task, CausalNetwork, TaskData]:
    """The run's task, its freshly initialised network and its data."""
    torch.manual_seed(config.train.seed)
    task = task_for(config)
    copies = 5 if config.train.ema > 0 else 4  # weights, gradients, two moments, average
    network = build_within_memory(
        task.build_network,
        device,
        copies,
        f"training {config.preset} / {config.model.name}",
        "use a smaller network (--set model.<setting>=...)",
    )
    with nullcontext(None) if quiet else file_progress("reading the data") as progress:
        task_data = task.open_data(data, data_dir, network.receptive_field, progress)
    check_validation_data(task_data)
    return task, network, task_data


def _train(
    run: Run,
    limits: Limits,
    device: torch.device,
    task: Task,
    network: CausalNetwork,
    task_data: TaskData,
    resume: Run | None,
    on_period: PeriodCallback | None,
    quiet: bool,
) -> tuple[Run, TrainingState]:
    config = run.config
    trainer: Trainer | None = None
    try:
        trainer = Trainer(run, network, task, task_data, device)
        if resume is not None:
            trainer.resume(resume.load_state("last"))  # on the CPU: see `Trainer.resume`
        parameters = sum(p.numel() for p in network.parameters())
        title = (
            f"{config.preset} / {config.model.name} ({config.model.architecture}, "
            f"{parameters:,} parameters, receptive field {network.receptive_field}) on "
            f"{describe(device)} -> {run.path}"
        )
        display_class = QuietTrainingDisplay if quiet else TrainingDisplay
        with display_class(task.unit, task.metric, title) as display:
            state = trainer.fit(limits, display, on_period)
    except KeyboardInterrupt:
        restored = resume is None or (trainer is not None and trainer.saved_step is not None)
        if trainer is not None and restored:
            raise StoppedError(trainer.keep_interrupted()) from None
        if resume is not None:
            raise StoppedError(f"interrupted; run {run.name} is unchanged") from None
        run.discard()
        raise StoppedError("interrupted before training started; nothing was written") from None
    except BaseException:
        if resume is None and (trainer is None or trainer.saved_step is None):
            run.discard()  # a run that never saved a checkpoint would only hide the others
        raise
    return run, state
