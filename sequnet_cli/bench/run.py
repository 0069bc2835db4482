"""One `sequnet bench` run: its plan as a list of stages, estimated from a short calibration,
then measured one stage at a time.

The run keeps what each stage measured and how long it took, so that the live view can show
the stage, the time elapsed and the time left while it measures, and a run stopped by Ctrl-C
still has a (partial) result. The time left is the estimate of the stages not yet done, scaled
by how the finished stages compared with their own estimates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sequnet_cli.bench.estimate import Calibration, Progress, calibrate, estimate_stages
from sequnet_cli.bench.measure import measure_training, memory_measure
from sequnet_cli.bench.plan import (
    BenchPlan,
    BenchSizes,
    GenerationStage,
    Stage,
    TrainingStage,
    make_plan,
    plan_stages,
)
from sequnet_cli.bench.results import (
    PAPER,
    BenchResult,
    GenerationComparison,
    ModelInfo,
    StageTiming,
    SweepPoint,
    TrainingComparison,
)
from sequnet_cli.bench.streams import GenerationMeasurement, measure_generation
from sequnet_cli.errors import warn
from sequnet_cli.tasks import task_for

Outcome = TrainingComparison | GenerationComparison | SweepPoint
StageEvent = Callable[[int, bool], None]  # (stage index, finished): called as it starts and ends


@dataclass(frozen=True)
class BenchRequest:
    """What the user asked for; `sizes` replaces the full or quick sizes (tests shrink them)."""

    preset: str = "piano"
    vs: str | None = None
    device: str | None = None
    batch_size: int | None = None
    threads: int | None = None
    quick: bool = False
    sweep: bool = True
    sizes: BenchSizes | None = None
    capture: bool = True  # on CUDA, also measure generation as CUDA graphs
    repeat: int | None = None  # timed rounds; None: the sizes'

    def plan(self) -> BenchPlan:
        """Raises `ConfigError` for an unknown preset or variant and `DeviceError` for a
        missing GPU."""
        return make_plan(
            self.preset,
            self.vs,
            self.device,
            self.batch_size,
            self.threads,
            self.quick,
            self.sizes,
            self.repeat,
        )


class BenchRun:
    """The stages of one request, their estimates, and what has been measured so far."""

    def __init__(self, request: BenchRequest) -> None:
        self.request = request
        self.plan = request.plan()
        self.stages: list[Stage] = plan_stages(self.plan, request.sweep, request.capture)
        self.sequnet = ModelInfo.of(self.plan.sequnet)
        self.baseline = ModelInfo.of(self.plan.baseline)
        self.estimates = [0.0] * len(self.stages)
        self.calibration_seconds = 0.0
        self.quick_estimate: float | None = None  # a CPU run at full sizes: what --quick takes
        self.outcomes: list[Outcome] = []
        self.measured: list[float] = []  # seconds of each finished stage
        self.started: float | None = None
        self.stage_started: float | None = None

    @property
    def isolate(self) -> bool:
        return self.plan.device.type == "cpu" and self.plan.sizes.isolate

    def estimate(self, progress: Progress | None = None) -> None:
        """Calibrate and estimate every stage; on a CPU at full sizes, also what `--quick`
        would take (its calibration reuses this one)."""
        self._use_benchmark_mode()  # calibration's first steps then autotune, as the stages do
        calibration = calibrate(self.stages, self.plan.device, self.isolate, progress)
        self.estimates = estimate_stages(self.stages, calibration)
        if self.plan.device.type == "cpu" and not self.request.quick:
            self.quick_estimate = self._quick_estimate(calibration, progress)
        self.calibration_seconds = calibration.seconds

    def _quick_estimate(self, calibration: Calibration, progress: Progress | None) -> float:
        quick = dataclasses.replace(self.request, quick=True).plan()
        stages = plan_stages(quick, self.request.sweep, self.request.capture)
        calibrate(stages, quick.device, self.isolate, progress, known=calibration)
        return sum(estimate_stages(stages, calibration))

    def measure(self, on_stage: StageEvent | None = None) -> BenchResult:
        """Measure the stages not measured yet, in order; a KeyboardInterrupt leaves the
        finished ones in `result()`."""
        notify = on_stage or (lambda index, finished: None)
        self._use_benchmark_mode()
        self.started = time.perf_counter()
        for index in range(len(self.outcomes), len(self.stages)):
            self.stage_started = time.perf_counter()
            notify(index, False)
            self.outcomes.append(run_stage(self.plan, self.stages[index]))
            self.measured.append(time.perf_counter() - self.stage_started)
            notify(index, True)
        return self.result()

    def _use_benchmark_mode(self) -> None:
        if self.plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the paper's benchmark mode (§5, footnote 5)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started if self.started is not None else 0.0

    def seconds_left(self) -> float:
        """The estimate of what is left, scaled by measured / estimated of the finished stages."""
        done = len(self.measured)
        estimated = sum(self.estimates[:done])
        scale = sum(self.measured) / estimated if done and estimated > 0 else 1.0
        if done == len(self.stages):
            return 0.0
        running = time.perf_counter() - self.stage_started if self.stage_started else 0.0
        current = max(self.estimates[done] * scale - running, 0.0)
        return current + scale * sum(self.estimates[done + 1 :])

    def result(self) -> BenchResult:
        """What has been measured: the whole result, or a partial one."""
        training: TrainingComparison | None = None
        generation: list[GenerationComparison] = []
        sweep: list[SweepPoint] = []
        for outcome in self.outcomes[: len(self.measured)]:  # a Ctrl-C may fall in between
            if isinstance(outcome, SweepPoint):
                sweep.append(outcome)
            elif isinstance(outcome, GenerationComparison):
                generation.append(outcome)
            else:
                training = outcome
        timings = [
            StageTiming(stage.label, estimate, seconds)
            for stage, estimate, seconds in zip(
                self.stages,
                self.estimates,
                self.measured + [None] * (len(self.stages) - len(self.measured)),
                strict=True,
            )
        ]
        return self._result(training, generation, sweep, timings)

    def _result(
        self,
        training: TrainingComparison | None,
        generation: list[GenerationComparison],
        sweep: list[SweepPoint],
        timings: list[StageTiming],
    ) -> BenchResult:
        plan = self.plan
        cuda = plan.device.type == "cuda"
        return BenchResult(
            preset=plan.sequnet.preset,
            task=plan.task.name,
            unit=plan.task.unit,
            quick=self.request.quick,
            device=str(plan.device),
            device_name=torch.cuda.get_device_name(plan.device) if cuda else "CPU",
            torch_version=torch.__version__,
            threads=plan.threads,
            memory_measure=memory_measure(plan.device, plan.sizes.isolate),
            sample_rate=plan.task.sample_rate,
            sequnet=self.sequnet,
            baseline=self.baseline,
            training=training,
            generation=generation,
            sweep=sweep,
            paper=PAPER.get((plan.sequnet.preset, plan.baseline.model.name)),
            stages=timings,
            calibration_seconds=self.calibration_seconds,
            repeat=plan.sizes.repeat,
        )


def run_stage(plan: BenchPlan, stage: Stage) -> Outcome:
    """Measure one stage: both sides, in turn."""
    if isinstance(stage, GenerationStage):
        return compare_generation(plan, stage)
    training = compare_training(plan, stage)
    if stage.levels is None:
        return training
    return SweepPoint(
        stage.levels,
        ModelInfo.of(stage.sequnet.config),
        ModelInfo.of(stage.baseline.config),
        training,
    )


def compare_training(plan: BenchPlan, stage: TrainingStage) -> TrainingComparison:
    """Both sides trained at the same batch and targets, their steps interleaved."""
    sides = (stage.sequnet, stage.baseline)
    found = measure_training(sides, plan.device, plan.sizes.isolate)
    ours, theirs = found.measurements
    return TrainingComparison(stage.batch_size, ours, theirs, found.load, found.matrix_products)


def compare_generation(plan: BenchPlan, stage: GenerationStage) -> GenerationComparison:
    """Generation speed of both sides at the stage's batch size, stepped one by one and, when
    the stage asks, as CUDA graphs (left out, with one warning, if a capture fails)."""
    eager = generation_speeds(plan, stage)
    captured = None
    if stage.capture:
        try:
            captured = generation_speeds(plan, stage, captured=True, work=eager)
        except RuntimeError as error:  # CUDA reports a failed capture so
            warn(f"could not capture the generation steps as CUDA graphs ({error}); left out")
    return dataclasses.replace(eager, captured=captured)


def generation_speeds(
    plan: BenchPlan,
    stage: GenerationStage,
    captured: bool = False,
    work: GenerationComparison | None = None,
) -> GenerationComparison:
    """The generation speed of both sides, their chunks interleaved (`captured`: as CUDA
    graphs, whose multiply-adds per sample are those of the eager comparison `work`)."""
    networks = []
    for config in (stage.sequnet, stage.baseline):
        torch.manual_seed(0)
        networks.append(task_for(config).build_network().to(plan.device))
    (ours, theirs), load = measure_generation(
        networks,
        plan.task,
        stage.batch_size,
        plan.device,
        min_seconds=stage.min_seconds,
        rounds=stage.rounds,
        threads=stage.threads,
        captured=captured,
    )
    if work is not None:
        ours = _with_work(ours, work.sequnet)
        theirs = _with_work(theirs, work.baseline)
    return GenerationComparison(stage.batch_size, ours, theirs, load=load)


def _with_work(
    measurement: GenerationMeasurement, counted: GenerationMeasurement
) -> GenerationMeasurement:
    return dataclasses.replace(
        measurement, multiply_adds_per_sample=counted.multiply_adds_per_sample
    )
