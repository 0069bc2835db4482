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
from sequnet_cli.bench.measure import GenerationMeasurement, TrainingMeasurement
from sequnet_cli.config import RunConfig, plain_values
from sequnet_cli.tasks import task_for

# 2: on CUDA, "peak_memory_bytes" is the peak of a memory pass with cuDNN benchmark mode off
# (schema 1: the raw allocator peak of the timed steps, now "allocator_peak_bytes"); added
# "counted_memory_bytes", "complete", "stages_done", "stages_total" and "timing".
JSON_SCHEMA_VERSION = 2


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

    @property
    def time_ratio(self) -> float:
        """Baseline time / Seq-U-Net time: how many times faster the Seq-U-Net trains."""
        return self.baseline.seconds_per_step / self.sequnet.seconds_per_step

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
                "memory": self.memory_ratio,
                "activations": self.activation_ratio,
                "counted_memory": self.counted_memory_ratio,
            },
        }


@dataclass(frozen=True)
class GenerationComparison:
    batch_size: int
    sequnet: GenerationMeasurement
    baseline: GenerationMeasurement
    captured: GenerationComparison | None = None  # CUDA: the same, as CUDA graphs

    @property
    def speedup(self) -> float:
        """Seq-U-Net samples per second / baseline samples per second."""
        return self.sequnet.samples_per_second / self.baseline.samples_per_second

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
            "captured": self.captured.to_json(sample_rate) if self.captured else None,
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
        """The `--json` document (schema 2):

        {"schema": 2, "complete" (false: stopped by Ctrl-C; what finished is below),
         "stages_done", "stages_total", "device", "device_name", "torch", "threads": {"training",
         "generation_batch_1", "generation_batch"}, "preset", "task", "quick", "unit",
         "sample_rate", "memory_measure",
         "models": {"sequnet"|"baseline": {"variant", "architecture", "network", "parameters",
                                           "receptive_field"}},
         "training": null (not measured: a partial document only) | {"batch_size",
                      "sequnet"|"baseline": {"seconds_per_step", "steps", "inputs", "targets",
                      "peak_memory_bytes" (what "memory_measure" says; null: not measured),
                      "activation_bytes" (saved for backward by one forward and loss),
                      "counted_memory_bytes" (weights + gradients + optimizer state + weight
                      average + saved activations + batch, distinct storages),
                      "allocator_peak_bytes" (CUDA: raw allocator peak of the timed steps,
                      cuDNN autotuning workspace included; null elsewhere)},
                      "ratios": {"time", "memory", "activations", "counted_memory"}
                      (baseline / Seq-U-Net)},
         "generation": {"runs": [{"batch_size", "threads", "sequnet"|"baseline": {"batch_size",
                        "threads", "steps", "seconds", "cycle", "captured", "samples_per_second",
                        "realtime" (seconds of audio per second over the batch; null for piano
                        rolls)}, "speedup" (Seq-U-Net / baseline), "captured": null | the same
                        run with the steps as CUDA graphs (CUDA, unless --no-capture)}]},
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
            "models": {"sequnet": self.sequnet.to_json(), "baseline": self.baseline.to_json()},
            "training": self.training.to_json() if self.training else None,
            "generation": {"runs": [run.to_json(self.sample_rate) for run in self.generation]},
            "paper": self.paper.to_json() if self.paper else None,
            "sweep": [point.to_json() for point in self.sweep],
            "timing": self.timing_json(),
        }
