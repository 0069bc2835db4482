"""`sequnet bench`: what the Seq-U-Net saves against its baseline, measured (paper §4, Table 1).

Training: the median time of the trainer's step, its arithmetic and its memory, for the
preset's Seq-U-Net and a baseline (by default the preset's other model: WaveNet for audio, TCN
for piano rolls) on the same random batch with the same number of targets, their steps
interleaved. Generation: elements per second of each network's stream, and its multiply-adds
per element. A sweep over the number of levels shows how both costs grow with the receptive
field N: for I inputs the Seq-U-Net computes fewer than 8·I activations whatever its depth, the
baseline I·log N (§4.1). Each time is set beside the multiply-adds behind it and the machine's
matrix-product rate, and beside the CPU load of other processes while it was taken.

The package: `plan` (what to measure, at which sizes, as a list of stages), `estimate` (how
long each stage will take, from a short calibration), `work` (multiply-adds, counted),
`machine` (the matrix-product rate, the CPU load of other processes), `measure` (the training
measurement), `streams` (the generation measurement), `run` (the stages measured in order,
with what they found so far), `results` (what was found, as JSON), `render` (Rich tables,
charts and the live view).
"""

from __future__ import annotations

from sequnet_cli.bench.estimate import Progress
from sequnet_cli.bench.measure import TrainingMeasurement, TrainingSpec, measure_training
from sequnet_cli.bench.plan import BenchSizes
from sequnet_cli.bench.render import render_bench
from sequnet_cli.bench.results import BenchResult
from sequnet_cli.bench.run import BenchRequest, BenchRun
from sequnet_cli.bench.streams import GenerationMeasurement, measure_generation

__all__ = [
    "BenchRequest",
    "BenchResult",
    "BenchRun",
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
    repeat: int | None = None,
) -> BenchResult:
    """Estimate, then measure, the preset's Seq-U-Net against `vs`, without a live view;
    `progress` is told each stage as it starts. Raises `ConfigError` for an unknown preset or
    variant and `DeviceError` for a missing GPU. `capture`: on CUDA, also measure generation as
    CUDA graphs. `repeat`: timed rounds (default: 5, or 3 with `quick`)."""
    run = BenchRun(
        BenchRequest(preset, vs, device, batch_size, threads, quick, sweep, sizes, capture, repeat)
    )
    report = progress or (lambda _: None)
    run.estimate(report)
    return run.measure(
        lambda index, finished: None if finished else report(run.stages[index].label)
    )
