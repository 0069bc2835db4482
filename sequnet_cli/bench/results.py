"""What `sequnet bench` found: measurements side by side, their ratios, the paper's figures,
how long each stage took against its estimate, and the `--json` document (`BenchResult.to_json`,
schema in its docstring). A result can be partial: a run stopped by Ctrl-C keeps the stages it
finished."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from models import NetworkConfig
from sequnet_cli.bench.machine import CpuLoad, MatrixProductRate
from sequnet_cli.bench.measure import TrainingMeasurement
from sequnet_cli.bench.streams import GenerationMeasurement
from sequnet_cli.config import RunConfig, plain_values
from sequnet_cli.tasks import task_for

# 3: "seconds_per_step" and "samples_per_second" are medians of interleaved steps and chunks,
# each listed ("step_seconds", "chunk_seconds"); added the multiply-adds, FLOP/s and efficiency
# of every measurement, "matrix_product", "repeat", the work ratios and "cpu_load"; on CUDA
# "peak_memory_bytes" is measured on an eager step. 2: on CUDA, "peak_memory_bytes" is the peak
# of a memory pass with cuDNN benchmark mode off (schema 1: the raw allocator peak of the timed
# steps, now "allocator_peak_bytes"); added "counted_memory_bytes", "complete", "stages_done",
# "stages_total" and "timing".
JSON_SCHEMA_VERSION = 3


def load_json(load: CpuLoad | None) -> dict[str, Any] | None:
    """A `CpuLoad` in the `--json` document (null: not measured, or too short to tell)."""
    if load is None:
        return None
    return {**dataclasses.asdict(load), "busy": load.busy}


def _spread(values: list[float]) -> list[float]:
    return [min(values), max(values)]


@dataclass(frozen=True)
class ModelInfo:
    """One benchmarked network: the preset variant, its architecture and size."""

    variant: str
    architecture: str
    network: NetworkConfig
    parameters: int
    receptive_field: int

    @classmethod
    def of(cls, config: RunConfig) -> ModelInfo:
        """The network of a run config, as its task builds it (on the meta device: shapes
        only, no memory, no initialisation)."""
        with torch.device("meta"):
            network = task_for(config).build_network()
        count = sum(parameter.numel() for parameter in network.parameters())
        model = config.model
        return cls(model.name, model.architecture, model.network, count, network.receptive_field)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "architecture": self.architecture,
            "network": plain_values(dataclasses.asdict(self.network)),
            "parameters": self.parameters,
            "receptive_field": self.receptive_field,
        }


@dataclass(frozen=True)
class TrainingComparison:
    """The Seq-U-Net and the baseline on the same batch size and number of targets."""

    batch_size: int
    sequnet: TrainingMeasurement
    baseline: TrainingMeasurement
    load: CpuLoad | None = None  # other processes' CPU load during the timed steps
    matrix_products: list[MatrixProductRate] = dataclasses.field(default_factory=list)

    @property
    def time_ratio(self) -> float:
        """Baseline time / Seq-U-Net time: how many times faster the Seq-U-Net trains (the
        ratio of the median steps)."""
        return self.baseline.seconds_per_step / self.sequnet.seconds_per_step

    @property
    def cpu_time_ratio(self) -> float | None:
        """The time ratio in this process's CPU seconds per step: with one thread, what the
        ratio would be with no other process competing for the cores."""
        ours, theirs = self.sequnet.cpu_seconds_per_step, self.baseline.cpu_seconds_per_step
        return theirs / ours if ours and theirs else None

    @property
    def round_ratios(self) -> list[float]:
        """The time ratio of each round of interleaved steps: its spread."""
        pairs = zip(self.baseline.step_seconds, self.sequnet.step_seconds, strict=True)
        return [theirs / ours for theirs, ours in pairs]

    @property
    def work_ratio(self) -> float:
        """Baseline multiply-adds / Seq-U-Net multiply-adds per training step."""
        ours = self.sequnet.training_multiply_adds
        return self.baseline.training_multiply_adds / ours if ours else 0.0

    @property
    def memory_ratio(self) -> float | None:
        """Baseline peak memory / Seq-U-Net peak memory."""
        ours, theirs = self.sequnet.peak_memory_bytes, self.baseline.peak_memory_bytes
        return theirs / ours if ours and theirs else None

    @property
    def activation_ratio(self) -> float:
        return self.baseline.activation_bytes / max(self.sequnet.activation_bytes, 1)

    @property
    def counted_memory_ratio(self) -> float:
        return self.baseline.counted_memory_bytes / max(self.sequnet.counted_memory_bytes, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "sequnet": self.sequnet.to_json(),
            "baseline": self.baseline.to_json(),
            "ratios": {
                "time": self.time_ratio,
                "time_rounds": _spread(self.round_ratios),
                "cpu_time": self.cpu_time_ratio,
                "multiply_adds": self.work_ratio,
                "memory": self.memory_ratio,
                "activations": self.activation_ratio,
                "counted_memory": self.counted_memory_ratio,
            },
            "cpu_load": load_json(self.load),
            "matrix_product": matrix_product_json(self.matrix_products),
        }


def matrix_product_json(rates: list[MatrixProductRate]) -> dict[str, Any]:
    """The matrix-product rates timed beside a measurement, in the `--json` document."""
    by_name = {rate.precision: rate.flops_per_second for rate in rates}
    first = rates[0] if rates else None
    return {
        "size": first.size if first else None,
        "threads": first.threads if first else None,
        "float32": by_name.get("float32"),
        "bfloat16": by_name.get("bfloat16"),
    }


@dataclass(frozen=True)
class GenerationComparison:
    batch_size: int
    sequnet: GenerationMeasurement
    baseline: GenerationMeasurement
    captured: GenerationComparison | None = None  # CUDA: the same, as CUDA graphs
    load: CpuLoad | None = None  # other processes' CPU load during the timed chunks

    @property
    def speedup(self) -> float:
        """Seq-U-Net samples per second / baseline samples per second (the median chunks)."""
        return self.sequnet.samples_per_second / self.baseline.samples_per_second

    @property
    def round_speedups(self) -> list[float]:
        """The speedup of each round of interleaved chunks: its spread."""
        pairs = zip(self.sequnet.chunk_seconds, self.baseline.chunk_seconds, strict=True)
        return [theirs / ours for ours, theirs in pairs]

    @property
    def work_ratio(self) -> float | None:
        """Baseline multiply-adds / Seq-U-Net multiply-adds per generated element."""
        ours, theirs = self.sequnet.multiply_adds_per_sample, self.baseline.multiply_adds_per_sample
        return theirs / ours if ours and theirs else None

    def to_json(self, sample_rate: int | None) -> dict[str, Any]:
        def side(measurement: GenerationMeasurement) -> dict[str, Any]:
            realtime = measurement.samples_per_second / sample_rate if sample_rate else None
            return {**measurement.to_json(), "realtime": realtime}

        return {
            "batch_size": self.batch_size,
            "threads": self.sequnet.threads,
            "sequnet": side(self.sequnet),
            "baseline": side(self.baseline),
            "speedup": self.speedup,
            "speedup_rounds": _spread(self.round_speedups),
            "multiply_adds_ratio": self.work_ratio,
            "captured": self.captured.to_json(sample_rate) if self.captured else None,
            "cpu_load": load_json(self.load),
        }


@dataclass(frozen=True)
class SweepPoint:
    """One depth of the sweep: a Seq-U-Net with `levels` resolutions, a baseline matched on
    receptive field, both with the same feature width, trained at the sweep's batch size."""

    levels: int
    sequnet: ModelInfo
    baseline: ModelInfo
    training: TrainingComparison

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "sequnet": self.sequnet.to_json(),
            "baseline": self.baseline.to_json(),
            "training": self.training.to_json(),
        }


@dataclass(frozen=True)
class PaperFigures:
    """The paper's measurements for a preset (Seq-U-Net, baseline), on a GTX 1080."""

    source: str
    seconds_per_step: tuple[float, float]
    megabytes: tuple[float, float]
    samples_per_second: tuple[float, float] | None = None

    @property
    def time_ratio(self) -> float:
        return self.seconds_per_step[1] / self.seconds_per_step[0]

    @property
    def memory_ratio(self) -> float:
        return self.megabytes[1] / self.megabytes[0]

    @property
    def speedup(self) -> float | None:
        rates = self.samples_per_second
        return rates[0] / rates[1] if rates else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seconds_per_step": {
                "sequnet": self.seconds_per_step[0],
                "baseline": self.seconds_per_step[1],
            },
            "megabytes": {"sequnet": self.megabytes[0], "baseline": self.megabytes[1]},
            "ratios": {
                "time": self.time_ratio,
                "memory": self.memory_ratio,
                "generation": self.speedup,
            },
        }


# (preset, baseline variant) -> Table 1 (and §5.2 for the generation speed at batch 1).
PAPER: dict[tuple[str, str], PaperFigures] = {
    ("piano", "wavenet"): PaperFigures(
        "Table 1 (batch 2) and §5.2 (batch 1)", (0.3621, 1.4616), (1514, 5294), (309, 69)
    ),
    ("jsb", "tcn"): PaperFigures("Table 1, M-JSB", (0.0037, 0.0034), (8.2, 13.1)),
    ("nottingham", "tcn"): PaperFigures("Table 1, M-Nott", (0.0067, 0.0071), (52.5, 73.1)),
    ("musedata", "tcn"): PaperFigures("Table 1, M-Muse", (0.0065, 0.0059), (75.3, 108.5)),
}


@dataclass(frozen=True)
class StageTiming:
    """One stage of the run: its estimated seconds and, once it ran, its measured seconds."""

    label: str
    estimated_seconds: float
    measured_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BenchResult:
    """Everything `sequnet bench` measured, with the context needed to read it. A partial result
    (Ctrl-C) has fewer measured `stages`; its `training` is None if that stage did not finish."""

    preset: str
    task: str
    unit: str  # what one generated element is called: "samples", "frames"
    quick: bool
    device: str
    device_name: str
    torch_version: str
    threads: dict[str, int]  # "training", "generation_batch_1", "generation_batch"
    memory_measure: str
    sample_rate: int | None  # audio presets: for the x real-time figures
    sequnet: ModelInfo
    baseline: ModelInfo
    training: TrainingComparison | None
    generation: list[GenerationComparison]
    sweep: list[SweepPoint]
    paper: PaperFigures | None
    stages: list[StageTiming] = dataclasses.field(default_factory=list)
    calibration_seconds: float = 0.0  # spent before the first stage, estimating the others
    repeat: int = 1  # timed rounds: interleaved training steps, at least as many chunks

    @property
    def matrix_products(self) -> list[MatrixProductRate]:
        """The matrix-product rates timed in turn with the main training comparison."""
        return self.training.matrix_products if self.training else []

    @property
    def loads(self) -> list[tuple[str, CpuLoad]]:
        """The CPU load of other processes during each measured comparison that read one."""
        comparisons: list[tuple[str, TrainingComparison | GenerationComparison]] = []
        if self.training:
            comparisons.append(("training", self.training))
        comparisons += [(f"generation at batch {run.batch_size}", run) for run in self.generation]
        comparisons += [(f"sweep at {point.levels} levels", point.training) for point in self.sweep]
        return [(name, c.load) for name, c in comparisons if c.load is not None]

    @property
    def stages_done(self) -> int:
        return sum(stage.measured_seconds is not None for stage in self.stages)

    @property
    def complete(self) -> bool:
        return self.stages_done == len(self.stages)

    def timing_json(self) -> dict[str, Any]:
        measured = [s.measured_seconds for s in self.stages if s.measured_seconds is not None]
        return {
            "calibration_seconds": self.calibration_seconds,
            "estimated_seconds": sum(stage.estimated_seconds for stage in self.stages),
            "measured_seconds": sum(measured),
            "stages": [stage.to_json() for stage in self.stages],
        }

    def to_json(self) -> dict[str, Any]:
        """The `--json` document (schema 3):

        {"schema": 3, "complete" (false: stopped by Ctrl-C; what finished is below),
         "stages_done", "stages_total", "device", "device_name", "torch", "threads": {"training",
         "generation_batch_1", "generation_batch"}, "preset", "task", "quick", "unit",
         "sample_rate", "memory_measure", "repeat" (timed rounds),
         "matrix_product": {"size", "threads", "float32", "bfloat16" (FLOP/s of size x size
                            products, the median of one per round of the training comparison;
                            null: not measured)},
         "models": {"sequnet"|"baseline": {"variant", "architecture", "network", "parameters",
                                           "receptive_field"}},
         "training": null (not measured: a partial document only) | {"batch_size",
                      "sequnet"|"baseline": {"seconds_per_step" (median), "step_seconds" (each
                      timed step, interleaved with the other network's), "seconds_min",
                      "seconds_max", "step_cpu_seconds", "cpu_seconds_per_step" (this process's
                      CPU time, all threads: with one, the time it computed while other
                      processes took turns), "steps", "inputs", "targets",
                      "precision" ("float32", or the autocast dtype: "bfloat16"),
                      "forward_multiply_adds" (one forward pass and loss),
                      "training_multiply_adds" (forward and backward passes),
                      "flops_per_second" (2 x training_multiply_adds / seconds_per_step),
                      "matrix_product_flops" (the machine's rate in "precision"),
                      "efficiency" (flops_per_second / matrix_product_flops),
                      "peak_memory_bytes" (what "memory_measure" says; null: not measured),
                      "activation_bytes" (saved for backward by one forward and loss, in the
                      step's precision),
                      "counted_memory_bytes" (weights + gradients + optimizer state + weight
                      average + saved activations + batch, distinct storages),
                      "allocator_peak_bytes" (CUDA: raw allocator peak of the warm-up steps,
                      cuDNN autotuning workspace included; null elsewhere)},
                      "ratios": {"time" (of the medians), "time_rounds" ([min, max] of each
                      round's ratio), "cpu_time" (of the median CPU seconds), "multiply_adds",
                      "memory", "activations",
                      "counted_memory"} (baseline / Seq-U-Net),
                      "cpu_load": null (not Linux, or under half a second) | {"seconds",
                      "other_cores" (cores kept busy by other processes, on average),
                      "own_cores" (by this one), "cores", "busy" (other_cores >= 0.25)},
                      "matrix_product": (as above, timed with these steps)},
         "generation": {"runs": [{"batch_size", "threads", "sequnet"|"baseline": {"batch_size",
                        "threads", "chunk_steps", "chunk_seconds" (each timed chunk, interleaved
                        with the other network's), "steps", "seconds", "cycle", "captured",
                        "samples_per_second" (the median chunk's), "samples_per_second_min",
                        "samples_per_second_max", "multiply_adds_per_sample" (amortised over
                        whole clock cycles), "realtime" (seconds of audio per second over the
                        batch; null for piano rolls)}, "speedup" (Seq-U-Net / baseline),
                        "speedup_rounds" ([min, max]), "multiply_adds_ratio" (baseline /
                        Seq-U-Net), "cpu_load" (as above), "captured": null | the same run with
                        the steps as CUDA graphs (CUDA, unless --no-capture)}]},
         "paper": null | {"source", "seconds_per_step", "megabytes", "ratios"},
         "sweep": [{"levels", "sequnet", "baseline" (as in "models"), "training" (as above)}],
         "timing": {"calibration_seconds", "estimated_seconds" (all stages, as printed before
                    measuring), "measured_seconds" (the stages that ran), "stages": [{"label",
                    "estimated_seconds", "measured_seconds" (null: did not run)}]}}
        """
        return {
            "schema": JSON_SCHEMA_VERSION,
            "complete": self.complete,
            "stages_done": self.stages_done,
            "stages_total": len(self.stages),
            "device": self.device,
            "device_name": self.device_name,
            "torch": self.torch_version,
            "threads": dict(self.threads),
            "preset": self.preset,
            "task": self.task,
            "quick": self.quick,
            "unit": self.unit,
            "sample_rate": self.sample_rate,
            "memory_measure": self.memory_measure,
            "repeat": self.repeat,
            "matrix_product": matrix_product_json(self.matrix_products),
            "models": {"sequnet": self.sequnet.to_json(), "baseline": self.baseline.to_json()},
            "training": self.training.to_json() if self.training else None,
            "generation": {"runs": [run.to_json(self.sample_rate) for run in self.generation]},
            "paper": self.paper.to_json() if self.paper else None,
            "sweep": [point.to_json() for point in self.sweep],
            "timing": self.timing_json(),
        }
