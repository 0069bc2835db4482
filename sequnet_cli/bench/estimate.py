"""How long `sequnet bench` will take, estimated from a short calibration before it measures.

The method (the estimate is printed before the first stage, and `--json` keeps each stage's
estimate beside its measured time, so both can be compared):

1. Work. The network of every training measurement runs its forward pass and loss once on the
   meta device (shapes only, no arithmetic) at the measurement's batch and targets, counting
   the tensor operations dispatched and the multiply-adds of its convolutions and matrix
   products. A training step does about three times that forward; the factor needs no value,
   as proxies and stages are counted the same way.
2. Calibration, on the bench's device, with each measurement's CPU threads:
   - per kind of network (architecture and widths): a proxy with the same widths cut to
     `PROXY_STAGES` stages, trained at batch 1 with `SHORT_TARGETS` targets, where a step is
     mostly a fixed cost per operation, then long enough for a steady step of about
     `LONG_PROXY_SECONDS` (sized from a middle length of `PROXY_MULTIPLY_ADDS`), where it is
     mostly arithmetic on tensors of a stage's order of size. The short and long steady steps
     give the kind's seconds per operation and per multiply-add. A first step on new shapes
     costs more: the short proxy's excess gives seconds per operation (oneDNN primitives or
     cuDNN algorithms made for new shapes), the rest of the long proxy's excess a share of the
     step (memory touched the first time).
   - per generation network and batch: seconds per stream step, over whole chunks of 16 steps
     (so that the Seq-U-Net's slower levels run their share), and the seconds taken to build
     it, which give the seconds per parameter of building any network.
   - on a CPU, where each network's peak memory is measured in a fresh process: the round trip
     of one tiny memory measurement (starting Python, importing torch and sequnet).
3. A training side takes: build + (warm-up steps + timed steps + 1/3 of a step for the
   saved-activation count + `MEMORY_PASS_STEPS`) x step seconds + the first step's extra twice
   (the memory pass's first step, then the timed one's), where step seconds = operations x
   seconds per operation + multiply-adds x seconds per multiply-add; on a CPU, where the memory
   pass runs in a fresh process, also that process's start and a second build. A training
   stage takes the sum of its two sides. A generation stage takes: both builds + one warm-up
   chunk each + rounds of one chunk each until each network had at least `rounds` chunks and
   both together twice `min_seconds` (the loop of `streams.measure_generation`), at the
   calibrated seconds per step; as CUDA graphs, all of it a second time. The run takes the sum
   of its stages.

What it does not see: a stage's tensors are longer than the proxies', so memory-bound work can
cost more per multiply-add there (the estimate then reads low), and other programs sharing the
CPU during calibration or measuring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from models import CausalNetwork
from sequnet_cli.bench.measure import (
    MEMORY_PASS_STEPS,
    TrainingSpec,
    peak_memory_in_fresh_process,
)
from sequnet_cli.bench.plan import GenerationStage, Stage, TrainingStage, with_network
from sequnet_cli.bench.streams import SHORTEST_CHUNK
from sequnet_cli.bench.work import Work, count_work
from sequnet_cli.config import RunConfig
from sequnet_cli.devices import cpu_threads, synchronize
from sequnet_cli.tasks import task_for
from sequnet_cli.training_step import TrainingStep

PROXY_STAGES = 2  # a proxy keeps a network's widths, with this many levels, layers or blocks
SHORT_TARGETS = 8  # the short proxy: its step is mostly a fixed cost per operation
PROXY_MULTIPLY_ADDS = 2.5e8  # forward multiply-adds of the middle proxy: ~0.05 s per CPU step
LONG_PROXY_SECONDS = 0.3  # the long proxy's steady step: long enough for a stage's regime
STEADY_STEPS = 2  # timed proxy steps, after the untimed first one at each length
STREAM_CHUNK = 16  # stream steps timed at once: a power of two, like the Seq-U-Net's cycle
MIN_STREAM_SECONDS = 0.1  # stream steps are timed at least this long per network and batch
FORWARD_SHARE = 1 / 3  # the saved-activation count: a forward and loss, a third of a step

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProxyTiming:
    """A proxy trained at one length: its first step's seconds (new shapes), its steady step's
    seconds after that, and its work."""

    first: float
    steady: float
    work: Work


@dataclass(frozen=True)
class StepCost:
    """What a training step of one kind of network costs on this device, per unit of work."""

    seconds_per_operation: float
    seconds_per_multiply_add: float
    first_step_seconds_per_operation: float  # extra on a first step: kernels for new shapes
    first_step_factor: float  # and in proportion to the step: memory touched the first time

    def step_seconds(self, work: Work) -> float:
        return (
            work.operations * self.seconds_per_operation
            + work.multiply_adds * self.seconds_per_multiply_add
        )

    def first_step_extra(self, work: Work) -> float:
        """What a network's first step costs beyond a steady one."""
        per_operation = work.operations * self.first_step_seconds_per_operation
        return per_operation + self.first_step_factor * self.step_seconds(work)

    @classmethod
    def fit(cls, short: ProxyTiming, long: ProxyTiming) -> StepCost:
        """The steady steps of a short and a long proxy (same operations, more multiply-adds)
        give the cost per multiply-add; the short step, once its arithmetic is paid, the cost
        per operation. The short first step's excess gives the first step's cost per operation,
        and the long one's excess beyond that, its share of the step."""
        extra = long.work.multiply_adds - short.work.multiply_adds
        per_multiply_add = max(long.steady - short.steady, 0.0) / extra if extra > 0 else 0.0
        operations = max(short.work.operations, 1)
        fixed = max(short.steady - per_multiply_add * short.work.multiply_adds, 0.0)
        per_operation_first = max(short.first - short.steady, 0.0) / operations
        long_excess = long.first - long.steady - per_operation_first * long.work.operations
        factor = max(long_excess, 0.0) / long.steady if long.steady > 0 else 0.0
        return cls(fixed / operations, per_multiply_add, per_operation_first, factor)


@dataclass(frozen=True)
class StreamCost:
    """A network's stream at one batch size: seconds per step, the clock cycle, its size."""

    seconds_per_step: float
    cycle: int
    parameters: int


@dataclass
class Calibration:
    """What calibrating found; `estimate_stages` turns it into seconds per stage."""

    device: torch.device
    isolate: bool  # CPU training measurements in fresh processes
    process_start_seconds: float = 0.0
    build_seconds_per_parameter: float = 0.0
    steps: dict[Hashable, StepCost] = field(default_factory=dict)
    streams: dict[Hashable, StreamCost] = field(default_factory=dict)
    seconds: float = 0.0  # spent calibrating
    builds: list[tuple[float, int]] = field(default_factory=list)  # (seconds, parameters)


def proxy_config(config: RunConfig) -> RunConfig:
    """The calibration proxy of a network: its widths, `PROXY_STAGES` stages."""
    network = config.model.network
    return with_network(config, network.with_stages(PROXY_STAGES, network.width))


def step_key(spec: TrainingSpec) -> Hashable:
    proxy = proxy_config(spec.config).model
    return proxy.architecture, proxy.network, spec.threads


def stream_key(config: RunConfig, batch_size: int, threads: int) -> Hashable:
    return config.model.architecture, config.model.network, batch_size, threads


def calibrate(
    stages: list[Stage],
    device: torch.device,
    isolate: bool,
    progress: Progress | None = None,
    known: Calibration | None = None,
) -> Calibration:
    """Time what the estimate of `stages` needs and `known` (an earlier calibration on the
    same device, extended in place and returned) does not hold yet."""
    report = progress or (lambda _: None)
    started = time.perf_counter()
    calibration = known or Calibration(device, isolate)
    specs = [spec for stage in stages if isinstance(stage, TrainingStage) for spec in _sides(stage)]
    for spec in specs:
        key = step_key(spec)
        if key not in calibration.steps:
            report(f"calibrating: a small training step of {spec.config.model.architecture}")
            cap = max(s.batch_size * s.targets for s in specs if step_key(s) == key)
            calibration.steps[key] = _time_proxy(spec, device, cap)
    for stage in stages:
        if isinstance(stage, GenerationStage):
            for config in (stage.sequnet, stage.baseline):
                key = stream_key(config, stage.batch_size, stage.threads)
                if key not in calibration.streams:
                    report(f"calibrating: stream steps of {config.model.architecture}")
                    calibration.streams[key] = _time_stream(calibration, config, stage)
    if isolate and device.type == "cpu" and specs and not calibration.process_start_seconds:
        report("calibrating: starting a fresh process")
        calibration.process_start_seconds = _time_process_start(specs[0])
    if calibration.builds:
        seconds = sum(seconds for seconds, _ in calibration.builds)
        parameters = sum(parameters for _, parameters in calibration.builds)
        calibration.build_seconds_per_parameter = seconds / max(parameters, 1)
    calibration.seconds += time.perf_counter() - started
    return calibration


def _sides(stage: TrainingStage) -> tuple[TrainingSpec, TrainingSpec]:
    return stage.sequnet, stage.baseline


def _time_proxy(spec: TrainingSpec, device: torch.device, cap: int) -> StepCost:
    """Train the proxy of `spec`'s network at a short length, at a middle one that sizes the
    long one, and at a long one whose steady step takes about `LONG_PROXY_SECONDS`; `cap`
    bounds batch x targets (the most any measurement of this kind predicts)."""
    config = proxy_config(spec.config)
    task = task_for(config)
    short_targets = min(SHORT_TARGETS, cap)
    middle_targets = _targets_for(config, PROXY_MULTIPLY_ADDS, short_targets, cap)
    torch.manual_seed(0)
    with cpu_threads(spec.threads):
        network = task.build_network().to(device).train()
        step = TrainingStep(network, task, config.train)
        short = _proxy_timing(step, network, device, config, short_targets)
        middle = _proxy_timing(step, network, device, config, middle_targets, steady_steps=1)
        scale = LONG_PROXY_SECONDS / max(middle.steady, 1e-9)
        wanted = int(min(max(middle_targets * scale, middle_targets), middle_targets * 64, cap))
        long = middle
        if wanted > middle_targets:
            long = _proxy_timing(step, network, device, config, wanted)
    return StepCost.fit(short, long)


def _targets_for(config: RunConfig, multiply_adds: float, least: int, most: int) -> int:
    """Targets at which one forward pass of `config` at batch 1 does about `multiply_adds`."""
    base = count_work(config, 1, least).multiply_adds
    per_target = (count_work(config, 1, least + 64).multiply_adds - base) / 64
    return int(min(max(least + (multiply_adds - base) / max(per_target, 1.0), least), most))


def _proxy_timing(
    step: TrainingStep,
    network: CausalNetwork,
    device: torch.device,
    config: RunConfig,
    targets: int,
    steady_steps: int | None = None,
) -> ProxyTiming:
    """The first step on a new batch shape (batch 1, `targets`), then the mean steady step."""
    count = steady_steps or STEADY_STEPS
    generator = torch.Generator().manual_seed(0)
    batch = step.task.random_batch(1, targets, network.receptive_field, generator).to(device)
    synchronize(device)
    start = time.perf_counter()
    step(batch)
    synchronize(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(count):
        step(batch)
    synchronize(device)
    steady = (time.perf_counter() - start) / count
    return ProxyTiming(first, steady, count_work(config, 1, targets))


def _time_stream(calibration: Calibration, config: RunConfig, stage: GenerationStage) -> StreamCost:
    """Build `config`'s network (timed) and time its stream at the stage's batch and threads."""
    device, batch = calibration.device, stage.batch_size
    task = task_for(config)
    torch.manual_seed(0)
    with cpu_threads(stage.threads):
        start = time.perf_counter()
        network = task.build_network().to(device).eval()
        synchronize(device)
        parameters = sum(parameter.numel() for parameter in network.parameters())
        calibration.builds.append((time.perf_counter() - start, parameters))
        stream = network.stream(batch, device=device)
        generator = torch.Generator().manual_seed(0)
        inputs = task.random_inputs(STREAM_CHUNK, batch, generator).to(device)
        stream.step(inputs[0])  # t = 0, where every level runs
        synchronize(device)
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < MIN_STREAM_SECONDS:
            for t in range(STREAM_CHUNK):
                stream.step(inputs[t])
            steps += STREAM_CHUNK
            synchronize(device)
        seconds = (time.perf_counter() - start) / steps
    return StreamCost(seconds, network.clock_cycle, parameters)


def _time_process_start(spec: TrainingSpec) -> float:
    """The round trip of a fresh-process memory measurement of a tiny network (its steps take
    a few milliseconds)."""
    network = spec.config.model.network
    tiny = with_network(spec.config, network.with_stages(PROXY_STAGES, 2))
    tiny_spec = TrainingSpec(tiny, 1, SHORT_TARGETS, 0, 1, spec.threads)
    start = time.perf_counter()
    peak_memory_in_fresh_process(tiny_spec)
    return time.perf_counter() - start


def estimate_stages(stages: list[Stage], calibration: Calibration) -> list[float]:
    """Estimated seconds of each stage (see the module docstring)."""
    return [
        sum(_training_seconds(spec, calibration) for spec in _sides(stage))
        if isinstance(stage, TrainingStage)
        else _generation_seconds(stage, calibration)
        for stage in stages
    ]


def _training_seconds(spec: TrainingSpec, calibration: Calibration) -> float:
    work = count_work(spec.config, spec.batch_size, spec.targets)
    cost = calibration.steps[step_key(spec)]
    steps = spec.warmup_steps + spec.steps + FORWARD_SHARE + MEMORY_PASS_STEPS
    build = work.parameters * calibration.build_seconds_per_parameter
    # on a CPU the memory pass runs in a fresh process: its start and a second build
    fresh = calibration.isolate and calibration.device.type == "cpu"
    extra = calibration.process_start_seconds + build if fresh else 0.0
    return extra + build + steps * cost.step_seconds(work) + 2 * cost.first_step_extra(work)


def _generation_seconds(stage: GenerationStage, calibration: Calibration) -> float:
    """Both networks' builds, a warm-up chunk each, and rounds of a chunk each (see 3.)."""
    costs = [
        calibration.streams[stream_key(config, stage.batch_size, stage.threads)]
        for config in (stage.sequnet, stage.baseline)
    ]
    steps = max(SHORTEST_CHUNK, *(cost.cycle for cost in costs))  # as `measure_generation`
    chunks = [steps * cost.seconds_per_step for cost in costs]
    both = sum(chunks)
    rounds = max(stage.rounds, 1, math.ceil(2 * stage.min_seconds / both) if both > 0 else 1)
    measured = (1 + rounds) * sum(chunks)
    builds = sum(cost.parameters for cost in costs) * calibration.build_seconds_per_parameter
    # As CUDA graphs the stage is timed a second time; the graphs' own speed is not calibrated.
    return builds + (2 if stage.capture else 1) * measured
