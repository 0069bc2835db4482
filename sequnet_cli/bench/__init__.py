"""`sequnet bench`: what the Seq-U-Net saves against its baseline, measured (paper §4, Table 1).

Training: the mean time of the trainer's step and its peak memory, for the preset's Seq-U-Net
and a baseline (by default the preset's other model: WaveNet for audio, TCN for piano rolls)
on the same random batch with the same number of targets. Generation: elements per second of
each network's stream. A sweep over the number of levels shows how both costs grow with the
receptive field N: for I inputs the Seq-U-Net computes fewer than 8·I activations whatever its
depth, the baseline I·log N (§4.1).

The package: `plan` (what to measure, at which sizes), `measure` (one training or generation
measurement), `results` (what was found, as JSON), `render` (Rich tables and charts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sequnet_cli.bench.measure import (
    GenerationMeasurement,
    TrainingMeasurement,
    TrainingSpec,
    measure_generation,
    measure_training,
    memory_measure,
)
from sequnet_cli.bench.plan import BenchPlan, BenchSizes, make_plan, sweep_pair, with_network
from sequnet_cli.bench.render import render_bench
from sequnet_cli.bench.results import (
    PAPER,
    BenchResult,
    GenerationComparison,
    ModelInfo,
    SweepPoint,
    TrainingComparison,
)
from sequnet_cli.config import RunConfig
from sequnet_cli.errors import warn
from sequnet_cli.tasks import task_for

Progress = Callable[[str], None]

__all__ = [
    "BenchResult",
    "BenchSizes",
    "GenerationMeasurement",
    "TrainingMeasurement",
    "TrainingSpec",
    "measure_generation",
    "measure_training",
    "render_bench",
    "run_bench",
]


def run_bench(
    preset: str = "piano",
    vs: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    quick: bool = False,
    sweep: bool = True,
    sizes: BenchSizes | None = None,
    progress: Progress | None = None,
    capture: bool = True,
) -> BenchResult:
    """Measure the preset's Seq-U-Net against `vs`. `sizes` replaces the full or quick sizes
    (tests shrink them). `capture`: on CUDA, also measure generation as CUDA graphs. Raises
    `ConfigError` for an unknown preset or variant and `DeviceError` for a missing GPU."""
    plan = make_plan(preset, vs, device, batch_size, threads, quick, sizes)
    report = progress or (lambda _: None)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the paper's benchmark mode (§5, footnote 5)
    training = compare_training(
        plan, plan.sequnet, plan.baseline, plan.batch_size, plan.targets, report
    )
    generation = compare_generation(plan, report, capture and plan.device.type == "cuda")
    points = sweep_points(plan, report) if sweep else []
    name = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else "CPU"
    return BenchResult(
        preset=plan.sequnet.preset,
        task=plan.task.name,
        unit=plan.task.unit,
        quick=quick,
        device=str(plan.device),
        device_name=name,
        torch_version=torch.__version__,
        threads=plan.threads,
        memory_measure=memory_measure(plan.device, plan.sizes.isolate),
        sample_rate=plan.task.sample_rate,
        sequnet=ModelInfo.of(plan.sequnet),
        baseline=ModelInfo.of(plan.baseline),
        training=training,
        generation=generation,
        sweep=points,
        paper=PAPER.get((plan.sequnet.preset, plan.baseline.model.name)),
    )


def compare_training(
    plan: BenchPlan,
    sequnet: RunConfig,
    baseline: RunConfig,
    batch: int,
    targets: int,
    progress: Progress,
) -> TrainingComparison:
    """One training measurement of each side at the same batch and targets."""
    measurements = []
    for config in (sequnet, baseline):
        model = config.model
        progress(f"training {model.name} ({model.architecture}), batch {batch}, {targets} targets")
        spec = TrainingSpec(
            config,
            batch,
            targets,
            plan.sizes.warmup_steps,
            plan.sizes.train_steps,
            plan.threads["training"],
        )
        measurements.append(measure_training(spec, plan.device, plan.sizes.isolate))
    return TrainingComparison(batch, measurements[0], measurements[1])


def compare_generation(
    plan: BenchPlan, progress: Progress, capture: bool = False
) -> list[GenerationComparison]:
    """Generation speed of each side at batch 1 and at the training batch; with `capture`,
    also as CUDA graphs (left out, with one warning, if a capture fails)."""
    runs = []
    for batch in sorted({1, plan.batch_size}):
        threads = plan.threads["generation_batch_1" if batch == 1 else "generation_batch"]
        sides = (plan.sequnet, plan.baseline)
        eager = [generation_speed(plan, side, batch, threads, progress) for side in sides]
        captured = None
        if capture:
            graphs = [captured_speed(plan, side, batch, threads, progress) for side in sides]
            if graphs[0] is not None and graphs[1] is not None:
                captured = GenerationComparison(batch, graphs[0], graphs[1])
        runs.append(GenerationComparison(batch, eager[0], eager[1], captured))
    return runs


def generation_speed(
    plan: BenchPlan,
    config: RunConfig,
    batch: int,
    threads: int,
    progress: Progress,
    captured: bool = False,
) -> GenerationMeasurement:
    """The generation speed of one side (`captured`: as CUDA graphs)."""
    graphs = " as CUDA graphs" if captured else ""
    progress(f"generating with {config.model.name}, batch {batch}{graphs}")
    torch.manual_seed(0)
    network = task_for(config).build_network().to(plan.device)
    return measure_generation(
        network,
        plan.task,
        batch,
        plan.device,
        min_seconds=plan.sizes.generation_seconds,
        threads=threads,
        captured=captured,
    )


def captured_speed(
    plan: BenchPlan, config: RunConfig, batch: int, threads: int, progress: Progress
) -> GenerationMeasurement | None:
    """`generation_speed` as CUDA graphs; None, with one warning, if the capture fails."""
    try:
        return generation_speed(plan, config, batch, threads, progress, captured=True)
    except RuntimeError as error:  # CUDA reports a failed capture so
        warn(f"could not capture {config.model.name}'s step as CUDA graphs ({error}); left out")
        return None


def sweep_points(plan: BenchPlan, progress: Progress) -> list[SweepPoint]:
    """Training cost of both sides over the sweep's depths, at one width."""
    sizes = plan.sizes
    width = sizes.sweep_width or plan.sequnet.model.network.width
    targets = sizes.sweep_targets or plan.targets
    points = []
    for levels in sizes.sweep_levels:
        ours, theirs = sweep_pair(plan.sequnet.model, plan.baseline.model, levels, width)
        configs = with_network(plan.sequnet, ours), with_network(plan.baseline, theirs)
        progress(f"sweep: {levels} levels")
        training = compare_training(plan, *configs, sizes.sweep_batch_size, targets, lambda _: None)
        points.append(
            SweepPoint(levels, ModelInfo.of(configs[0]), ModelInfo.of(configs[1]), training)
        )
    return points
