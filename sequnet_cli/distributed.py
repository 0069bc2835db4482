"""Distributed data-parallel training: one `sequnet train` in several processes (DESIGN.md,
"Devices and scale").

`torchrun --nproc-per-node N -m sequnet_cli train ...` starts N processes ("ranks") on each
machine; `sequnet train --nproc N` starts them on this machine (`sequnet_cli.launcher`). Every
rank trains a replica of the network in DistributedDataParallel (NCCL on CUDA, one GPU per
rank; Gloo on the CPU), which averages the gradients over the ranks in every step.

- Data: every rank draws each step's batch for all ranks from the run's seed, alike, and keeps
  its own rows (`sequnet_cli.tasks.Shard`), so no two ranks read the same excerpt or piece and
  N ranks at batch B/N take the same steps as one process at batch B (the loss is normalised
  by what all ranks predict). Dropout draws from a per-rank seed derived from the run's.
- Validation: each rank scores its share of the validation batches; the losses are summed in
  the single-process order, so the figure is the one a single process (and `sequnet evaluate`)
  gives.
- Output: rank 0 alone makes the run folder and writes `config.json`, the checkpoints, the live
  display and the summary; the other ranks print nothing. An audio cache is built by the first
  rank of each machine while the others wait, then memory-mapped by all of them.
- Stopping: the ranks agree after every step whether to go on: `--steps` and `--epochs` stop
  every rank at the same step, `--minutes` all of them at the first rank's limit, and Ctrl-C or
  SIGTERM (from the user, a job scheduler, or torchrun's agent passing either on) at the first
  rank to receive it: they save a resumable checkpoint together and end with one `error:` line
  from rank 0. A failing rank or a rank that dies ends every rank (torchrun's agent stops the
  others) with one `error:` line from rank 0, saying why; the last checkpoint is left intact
  (files are written atomically).
- Ownership: rank 0 holds the run's lock (`sequnet_cli.run_lock`) for all ranks; a run another
  process holds is refused on every rank with the same message.
- Resume: a checkpoint holds every rank's random state; `--resume` with the same number of
  processes continues exactly, with another number it continues from the same step, weights,
  optimizer and data stream.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from models import CausalNetwork
from sequnet_cli import interrupts
from sequnet_cli.checkpoints import Run, capture_rng, restore_rng
from sequnet_cli.config import RunConfig, TrainConfig
from sequnet_cli.console import TrainingDisplay, console, error_console, file_progress
from sequnet_cli.devices import cpu_threads, describe
from sequnet_cli.errors import DeviceError, SequnetError, StoppedError
from sequnet_cli.evaluation import batch_losses, score_losses
from sequnet_cli.limits import Limits
from sequnet_cli.rank_failures import FailureReport, announce_process, signals_raised
from sequnet_cli.tasks import WHOLE, Batch, Shard, Task, TaskData, task_for
from sequnet_cli.training import (
    PeriodCallback,
    Trainer,
    TrainingState,
    check_validation_data,
)
from sequnet_cli.training_step import TrainingStep

# How long ranks wait for each other outside the training steps (the first rank of a machine
# decoding a large audio folder into its cache, rank 0 writing a checkpoint).
WAITING = timedelta(hours=6)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process is a rank started by torchrun (which sets these variables)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def quiet_unless_first() -> None:
    """Silence every rank but rank 0 (its results, warnings and errors reach the user once)."""
    if launched() and os.environ["RANK"] != "0":
        console.quiet = error_console.quiet = True


# --- the processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """This rank's place among the processes of a run, and the means to agree with them."""

    rank: int
    world: int
    local_rank: int  # among the ranks of this machine
    device: torch.device
    group: dist.ProcessGroup  # Gloo, for values on the CPU whatever the device
    store: dist.Store  # torchrun's key-value store, reachable while any rank fails

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world)

    @property
    def first(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), by rank."""
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value, group=self.group)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (picklable), on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on some rank."""
        return bool(self.most(int(flag)))

    def most(self, value: int) -> int:
        """The largest of every rank's `value`."""
        tensor = torch.tensor([value])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return int(tensor.item())

    def wait(self) -> None:
        """Wait until every rank is here."""
        dist.barrier(group=self.group)


@contextmanager
def joined(device: torch.device) -> Iterator[Cluster]:
    """Join the run's processes (torchrun's environment) on `device` (CUDA: this rank's GPU)."""
    rank, world, local_rank = (int(os.environ[name]) for name in TORCHRUN_VARIABLES[:3])
    device = rank_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Keys of their own for every run in this process, so that a second run (a test, a
    # notebook) never reads what the first left in the store.
    store = dist.PrefixStore(f"sequnet/{next(_JOINS)}/", _torchrun_store(rank, world))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    announce_process(store, rank)
    try:
        group = dist.new_group(backend="gloo", timeout=WAITING)
        yield Cluster(rank, world, local_rank, device, group, store)
    finally:
        with suppress(RuntimeError):  # a rank may already be gone
            dist.destroy_process_group()


_JOINS = itertools.count()


def _torchrun_store(rank: int, world: int) -> dist.Store:
    """The key-value store of the run: torchrun's agent's, or (started without an agent) one
    that rank 0 serves, at MASTER_ADDR:MASTER_PORT as torch's `env://` finds it."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return dist.TCPStore(
        address, port, world, is_master=rank == 0 and not agent, timeout=timedelta(minutes=30)
    )


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of a rank: its own GPU (by its rank on this machine), or the CPU."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(
            f"this machine has {count} GPU{'s' * (count != 1)} for {local_rank + 1} or more "
            f"processes; start one process per GPU (--nproc-per-node {count}) or use --device cpu"
        )
    return torch.device("cuda", local_rank)


def process_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank `rank`'s own random draws (dropout), derived from the run's seed."""
    digest = hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --- the step, the data and the trainer ------------------------------------------------------


class DistributedTrainingStep(TrainingStep):
    """The training step of one rank: DistributedDataParallel averages the gradients over the
    ranks, and the loss is normalised by what all ranks predict, so the step is the one a
    single process takes on all ranks' batches together."""

    def __init__(
        self, network: CausalNetwork, task: Task, config: TrainConfig, cluster: Cluster
    ) -> None:
        # A step that talks to other processes cannot be replayed alone: never captured.
        super().__init__(network, task, config, capture=False)
        self.world = cluster.world
        devices = [cluster.device] if cluster.device.type == "cuda" else None
        wrapped = DistributedDataParallel(network, device_ids=devices)
        self.forward_network = cast(CausalNetwork, wrapped)

    def objective(self, total: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled by the ranks over all ranks' predicted elements: DistributedDataParallel
        divides the summed gradients by the number of ranks."""
        summed = torch.stack([total.detach().double(), count.double()])
        dist.all_reduce(summed)  # (all ranks' summed NLL, their predicted elements)
        every_count = summed[1].clamp(min=1)
        scale = self.world if self.config.loss == "sum" else (self.world / every_count).float()
        return total * scale, summed[0], every_count


class ShardedData:
    """A task's data as one rank reads it: its share of every batch (`Shard`), epochs counted
    in steps of all ranks' batches together."""

    def __init__(self, data: TaskData, shard: Shard) -> None:
        self.data, self.shard = data, shard
        self.splits = data.splits

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        skip: int = 0,
        shard: Shard = WHOLE,
    ) -> Iterator[Batch]:
        return self.data.batches(split, batch_size, generator, skip, self.shard)

    def scored_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return self.data.scored_batches(split, batch_size)

    def epoch_batches(self, batch_size: int) -> int:
        return self.data.epoch_batches(batch_size * self.shard.world)

    def epoch_generator(self, seed: int, epoch: int, running: torch.Generator) -> torch.Generator:
        return self.data.epoch_generator(seed, epoch, running)

    def profile(self) -> dict[str, Any]:
        return self.data.profile()  # every rank holds all of the data


class StopAgreed(Exception):
    """Every rank has learnt that one was told to stop (Ctrl-C, SIGTERM) after the same step."""


GO_ON, LIMIT, STOP = 0, 1, 2  # what a rank says after a step; the ranks take the largest


class DistributedTrainer(Trainer):
    """The trainer of one rank; see the module docstring for what the ranks share."""

    def __init__(
        self, run: Run, network: CausalNetwork, task: Task, data: TaskData, cluster: Cluster
    ) -> None:
        self.cluster = cluster
        self.stop_signals: list[int] = []  # Ctrl-C or SIGTERM received during `fit`
        super().__init__(run, network, task, ShardedData(data, cluster.shard), cluster.device)

    def _make_step(self) -> TrainingStep:
        return DistributedTrainingStep(self.network, self.task, self.config, self.cluster)

    def fit(
        self, limits: Limits, display: TrainingDisplay, on_period: PeriodCallback | None = None
    ) -> TrainingState:
        """`Trainer.fit`, with Ctrl-C and SIGTERM recorded rather than raised, so that the
        ranks stop together after a step (`StopAgreed`) instead of each where it was."""
        with interrupts.deferred(raise_after=False) as self.stop_signals:
            return super().fit(limits, display, on_period)

    def _uninterrupted(self) -> AbstractContextManager[object]:
        return nullcontext()  # the whole of `fit` is

    def _limit_reached(self, limits: Limits) -> bool:
        # Steps and epochs are counted alike by every rank; their clocks and the signals they
        # receive differ, so they agree after every step.
        said = STOP if self.stop_signals else LIMIT if super()._limit_reached(limits) else GO_ON
        agreed = self.cluster.most(said)
        if agreed == STOP:
            raise StopAgreed()
        return agreed == LIMIT

    def keep_interrupted(self) -> str:
        """Every rank saves the steps done since the last checkpoint together (rank 0 writes);
        before the first step, rank 0 removes the run it made."""
        if self.saved_step is None and self.state.step == 0 and not self.cluster.first:
            return "interrupted before the first training step; nothing was written"
        return super().keep_interrupted()

    def _score(self, network: CausalNetwork) -> tuple[float, int]:
        """The validation figure of all ranks' batches, summed in the single-process order,
        and the elements they predicted."""
        batch_size = self.config.batch_size
        mine = batch_losses(network, self.task, self.data, "valid", batch_size, self.device)
        parts = self.cluster.gather(mine)  # rank r scored batches r, r + world, ...
        world, count = self.cluster.world, sum(len(part) for part in parts)
        losses = [parts[i % world][i // world] for i in range(count)]
        return score_losses(self.task, losses), sum(items for _, items in losses)

    def resume(self, checkpoint: dict[str, Any]) -> None:
        super().resume(checkpoint)
        states = checkpoint.get("process_rng", [])
        if len(states) == self.cluster.world:
            restore_rng(states[self.cluster.rank])
        elif not self.cluster.first:  # another number of ranks: fresh draws for the others
            torch.manual_seed(process_seed(self.config.seed, self.cluster.rank, self.state.step))

    def save(self, best: bool) -> None:
        states = self.cluster.gather(capture_rng())
        if self.cluster.first:
            self.run.save({**self.checkpoint(), "process_rng": states}, best=best)
        # No rank goes on (or returns from its last save) before the checkpoint is on disk:
        # whatever follows a finished run on any rank finds it there.
        self.cluster.wait()
        self.saved_step = self.state.step


# --- training --------------------------------------------------------------------------------


def train_run(
    config: RunConfig,
    limits: Limits,
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
    resume: Run | None = None,
) -> tuple[Run, TrainingState]:
    """`sequnet_cli.training.train_run` as one rank of a torchrun-launched run."""
    if resume is not None:
        config = resume.config
    report = FailureReport(int(os.environ["RANK"]))
    with signals_raised(), report.failures(), joined(device) as cluster:
        report.joined(cluster.store, cluster.world)
        threads = config.train.threads if cluster.device.type == "cpu" else 0
        with cpu_threads(threads):
            return _train(cluster, report, config, limits, data, data_dir, resume)


def _train(
    cluster: Cluster,
    report: FailureReport,
    config: RunConfig,
    limits: Limits,
    data: Path | None,
    data_dir: Path | None,
    resume: Run | None,
) -> tuple[Run, TrainingState]:
    torch.manual_seed(config.train.seed)
    task = task_for(config)
    network = task.build_network()  # the same initial weights on every rank
    if not cluster.first:
        torch.manual_seed(process_seed(config.train.seed, cluster.rank))
    task_data = _open_data(cluster, task, network.receptive_field, data, data_dir)
    check_validation_data(task_data)
    run = report.run = _run_folder(cluster, config, resume)
    try:
        return run, _fit(cluster, run, network, task, task_data, limits, resume)
    finally:
        run.lock.release()  # held by rank 0


def _fit(
    cluster: Cluster,
    run: Run,
    network: CausalNetwork,
    task: Task,
    task_data: TaskData,
    limits: Limits,
    resume: Run | None,
) -> TrainingState:
    trainer = DistributedTrainer(run, network, task, task_data, cluster)
    if resume is not None:
        trainer.resume(resume.load_state("last"))  # on the CPU: see `Trainer.resume`
    parameters = sum(p.numel() for p in network.parameters())
    each = "one GPU" if cluster.device.type == "cuda" else describe(cluster.device)
    title = (
        f"{run.config.preset} / {run.config.model.name} ({run.config.model.architecture}, "
        f"{parameters:,} parameters, receptive field {network.receptive_field}) on "
        f"{cluster.world} processes ({each} each, batch {cluster.world} x "
        f"{run.config.train.batch_size}) -> {run.path}"
    )
    try:
        with TrainingDisplay(task.unit, task.metric, title) as display:
            return trainer.fit(limits, display)
    except StopAgreed:
        raise StoppedError(trainer.keep_interrupted()) from None


def _open_data(
    cluster: Cluster, task: Task, receptive_field: int, data: Path | None, data_dir: Path | None
) -> TaskData:
    """The task's data; the first rank of each machine opens it first (decoding an audio
    folder into the cache once), the others then read what it made."""
    builds = cluster.local_rank == 0
    if not builds:
        cluster.wait()
    with file_progress("reading the data") as progress:
        opened = task.open_data(data, data_dir, receptive_field, progress)
    if builds:
        cluster.wait()
    return opened


def _run_folder(cluster: Cluster, config: RunConfig, resume: Run | None) -> Run:
    """The run: rank 0 makes its folder (or finds the resumed one) and holds it, the other
    ranks only learn where it is, or why rank 0 could not have it."""
    path, refusal = None, None
    if cluster.first:
        try:
            run = resume or Run.create(config)
            run.lock.acquire()
            path = str(run.path)
        except SequnetError as error:
            refusal = str(error)
    path, refusal = cluster.broadcast((path, refusal))
    if refusal is not None:
        raise SequnetError(refusal)
    if cluster.first:
        return run
    return resume or Run(Path(path), config)
