"""What `sequnet bench` measures: the two networks of a preset, resolved as `train` resolves
them, the sizes of every measurement, the sweep's pairs of networks, and the run as an explicit
list of stages.

Both sides are full run configs: the benchmarked networks are built by their task, trained by
the trainer's `TrainingStep` on the task's random batches, exactly as `sequnet train` would.
A stage is one comparison of the two sides (the training comparison, one generation comparison
per batch size, one sweep point); the plan line, the time estimate, the live view and a partial
result after Ctrl-C are all read from the same list (`plan_stages`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from models import NetworkConfig, build_network
from sequnet_cli.bench.measure import TrainingSpec
from sequnet_cli.config import ModelConfig, RunConfig, TrainConfig, load_preset, resolve
from sequnet_cli.devices import resolve_device
from sequnet_cli.errors import ConfigError
from sequnet_cli.tasks import Task, task_for

SEQUNET_VARIANT = "sequnet"  # the preset table that holds its Seq-U-Net


@dataclass(frozen=True)
class BenchSizes:
    """How much work each measurement does: `bench_sizes` gives the paper's or the quick ones."""

    warmup_steps: int = 2  # untimed training steps first (allocator, cuDNN autotuning)
    repeat: int = 5  # timed rounds: training steps of each network in turn, median reported
    generation_seconds: float = 3.0  # chunks of whole clock cycles: `repeat`, about this long each
    width_scale: float = 1.0  # multiplies every feature width of both networks
    targets: int = 300  # predicted elements per training example
    batch_size: int | None = None  # None: the preset's shared [train] batch size
    sweep_levels: tuple[int, ...] = tuple(range(2, 12))  # Seq-U-Net resolutions per point
    sweep_width: int | None = None  # None: the Seq-U-Net's width (after width_scale)
    sweep_targets: int | None = None  # None: the training targets
    sweep_batch_size: int = 1
    isolate: bool = True  # CPU: a fresh process per network for its peak RSS


def bench_sizes(task: Task, quick: bool) -> BenchSizes:
    """Full paper sizes (meant for a GPU), or `--quick` ones that run on a CPU in minutes; the
    task decides the shape of its batches."""
    shape = task.bench_shape(quick)
    return BenchSizes(
        warmup_steps=1 if quick else 2,
        repeat=3 if quick else 5,
        generation_seconds=1.0 if quick else 3.0,
        width_scale=shape.width_scale,
        targets=shape.targets,
        batch_size=shape.batch_size,
        sweep_levels=shape.sweep_levels,
        sweep_width=shape.sweep_width,
        sweep_targets=shape.sweep_targets,
    )


@dataclass(frozen=True)
class BenchPlan:
    """The resolved inputs of one bench run."""

    sequnet: RunConfig
    baseline: RunConfig
    task: Task
    sizes: BenchSizes
    device: torch.device
    batch_size: int
    threads: dict[str, int]  # "training", "generation_batch_1", "generation_batch"

    @property
    def targets(self) -> int:
        return self.sizes.targets


def make_plan(
    preset: str,
    vs: str | None,
    device: str | None,
    batch_size: int | None,
    threads: int | None,
    quick: bool,
    sizes: BenchSizes | None,
    repeat: int | None = None,
) -> BenchPlan:
    """Resolve the preset's Seq-U-Net and its baseline (`vs`, default: the preset's other
    model), the device, the sizes (`repeat`: timed rounds, else the sizes') and the thread
    counts."""
    file = load_preset(preset)
    if SEQUNET_VARIANT not in file.variants:
        raise ConfigError(f"preset {file.name} has no [{SEQUNET_VARIANT}] model to benchmark")
    others = [name for name in file.variants if name != SEQUNET_VARIANT]
    if vs is None and not others:
        raise ConfigError(f"preset {file.name} has no baseline model to compare with")
    ours = resolve(file, SEQUNET_VARIANT, [])
    theirs = resolve(file, vs or others[0], [])
    task = task_for(ours)
    target = resolve_device(device)
    sizes = sizes or bench_sizes(task, quick)
    if repeat is not None:
        sizes = dataclasses.replace(sizes, repeat=repeat)
    # The preset's shared batch size, not a variant's override: both models get the same batch.
    shared = int(file.train.get("batch_size", TrainConfig.batch_size))
    default = torch.get_num_threads()
    counts = {
        "training": threads or default,
        "generation_batch_1": threads or 1,  # one thread was faster for small step matrices
        "generation_batch": threads or default,
    }
    return BenchPlan(
        sequnet=with_network(ours, ours.model.network.scaled(sizes.width_scale)),
        baseline=with_network(theirs, theirs.model.network.scaled(sizes.width_scale)),
        task=task,
        sizes=sizes,
        device=target,
        batch_size=batch_size or sizes.batch_size or task.bench_shape(quick).batch_size or shared,
        threads=counts,
    )


def with_network(config: RunConfig, network: NetworkConfig) -> RunConfig:
    """`config` with another network of the same architecture."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, network=network))


def sweep_pair(
    sequnet: ModelConfig, baseline: ModelConfig, levels: int, width: int
) -> tuple[NetworkConfig, NetworkConfig]:
    """A Seq-U-Net with `levels` resolutions and the baseline of the same width whose depth
    brings its receptive field closest (in ratio) to the Seq-U-Net's."""
    ours = sequnet.network.with_stages(levels, width)
    goal = math.log(receptive_field(sequnet.architecture, ours))

    def distance(count: int) -> float:
        candidate = baseline.network.with_stages(count, width)
        return abs(math.log(receptive_field(baseline.architecture, candidate)) - goal)

    count = min(range(1, 21), key=distance)
    return ours, baseline.network.with_stages(count, width)


def receptive_field(architecture: str, network: NetworkConfig) -> int:
    """The receptive field of a network config, read from a two-feature copy (cheap): the
    field depends on the depth and kernels, not on the widths."""
    narrow = network.with_stages(network.stages, 2)
    return build_network(architecture, 1, 1, narrow).receptive_field


@dataclass(frozen=True)
class TrainingStage:
    """Both sides trained on the same batch and targets: the main comparison (`levels` None) or
    one point of the sweep (a Seq-U-Net with `levels` resolutions and its matched baseline)."""

    sequnet: TrainingSpec
    baseline: TrainingSpec
    levels: int | None = None

    @property
    def batch_size(self) -> int:
        return self.sequnet.batch_size

    @property
    def label(self) -> str:
        shape = f"batch {self.batch_size}, {self.sequnet.targets:,} targets"
        if self.levels is None:
            return f"training, {shape}"
        return f"sweep, {self.levels} levels, {shape}"


@dataclass(frozen=True)
class GenerationStage:
    """Streaming speed of both sides at one batch size."""

    sequnet: RunConfig
    baseline: RunConfig
    batch_size: int
    threads: int  # CPU threads
    min_seconds: float  # chunks are timed until the networks had this long each on average
    rounds: int = 1  # and at least this many chunks each
    capture: bool = False  # also as CUDA graphs

    @property
    def label(self) -> str:
        return f"generation, batch {self.batch_size}"


Stage = TrainingStage | GenerationStage


def plan_stages(plan: BenchPlan, sweep: bool, capture: bool = False) -> list[Stage]:
    """Every measurement of a bench run, in the order it runs: the training comparison, the
    generation comparisons at batch 1 and at the training batch, then the sweep's depths."""
    stages: list[Stage] = [training_stage(plan, plan.sequnet, plan.baseline, plan.batch_size)]
    for batch in sorted({1, plan.batch_size}):
        threads = plan.threads["generation_batch_1" if batch == 1 else "generation_batch"]
        stages.append(
            GenerationStage(
                plan.sequnet,
                plan.baseline,
                batch,
                threads,
                plan.sizes.generation_seconds,
                plan.sizes.repeat,
                capture and plan.device.type == "cuda",
            )
        )
    if sweep:
        stages += sweep_stages(plan)
    return stages


def training_stage(
    plan: BenchPlan,
    sequnet: RunConfig,
    baseline: RunConfig,
    batch: int,
    targets: int | None = None,
    levels: int | None = None,
) -> TrainingStage:
    """The training comparison of two run configs at the plan's steps and threads."""

    def spec(config: RunConfig) -> TrainingSpec:
        sizes = plan.sizes
        return TrainingSpec(
            config,
            batch,
            targets or plan.targets,
            sizes.warmup_steps,
            sizes.repeat,
            plan.threads["training"],
        )

    return TrainingStage(spec(sequnet), spec(baseline), levels)


def sweep_stages(plan: BenchPlan) -> list[Stage]:
    """One training comparison per sweep depth, at the sweep's width, batch and targets."""
    sizes = plan.sizes
    width = sizes.sweep_width or plan.sequnet.model.network.width
    stages: list[Stage] = []
    for levels in sizes.sweep_levels:
        ours, theirs = sweep_pair(plan.sequnet.model, plan.baseline.model, levels, width)
        configs = with_network(plan.sequnet, ours), with_network(plan.baseline, theirs)
        stages.append(
            training_stage(plan, *configs, sizes.sweep_batch_size, sizes.sweep_targets, levels)
        )
    return stages
