"""`sequnet evaluate --generation`: whether long generations stay like the data (paper §5.2).

The paper observes that WaveNet "introduces progressively more noise" in longer generations while
the Seq-U-Net "appears stable", and calls for an objective measure. This is one: `count` clips
are generated from silence, cut into windows (a second of audio, a bar of a piano roll), and
each window's statistics (the task's: audio RMS, spectral flatness and centroid; piano-roll
notes per frame, polyphony and pitch-class distance) are compared with the same statistics
over windows of the test data. A window's distance from the data is the mean over the
statistics of `|value - data mean| / data standard deviation`, averaged over the clips; the
drift is the last window's distance minus the first's: how much further from the data a
generation is by its end than at its start (about 0 for a stable model).

Where the task counts something per element (piano roll: voices per frame), the report also
gives the share of generated elements per number against the test data's, and the total
variation distance between the two distributions (0 the same, 1 disjoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sequnet_cli.autoregression import collect, start
from sequnet_cli.console import GenerationDisplay, file_progress
from sequnet_cli.errors import ConfigError
from sequnet_cli.tasks import StabilityMeasure, sampling_temperature
from sequnet_cli.trained_model import TrainedModel

SPREAD_FLOOR = 1e-6  # a statistic the data never varies counts its deviations against this


@dataclass(frozen=True)
class StabilityRequest:
    """What `sequnet evaluate --generation` was asked for."""

    seconds: float = 10.0
    count: int = 4
    temperature: float | None = None  # None: the task's default
    seed: int = 0
    capture: bool = True  # generate with CUDA graphs (CUDA) or compiled steps (CPU)
    voices: str | None = None  # piano roll: `--voices`; None: the task's default

    def check(self) -> None:
        if self.count < 1:
            raise ConfigError(f"-n must be at least 1, got {self.count}")
        if not self.seconds > 0:
            raise ConfigError(f"--seconds must be positive, got {self.seconds}")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"--temperature must be above 0, got {self.temperature}")


@dataclass(frozen=True)
class Distribution:
    """Shares of elements per number (index: the number) in the test data and in the clips."""

    counted: str  # what is counted, e.g. "voices"
    data: list[float]
    generated: list[float]

    @property
    def distance(self) -> float:
        """Total variation distance: half the summed absolute differences of the shares."""
        return 0.5 * float(np.abs(np.subtract(self.data, self.generated)).sum())

    @classmethod
    def of(cls, counted: str, data: np.ndarray, generated: np.ndarray) -> Distribution:
        """From two histograms of counts; shares up to the highest number either has."""
        size = max(int(np.flatnonzero(h)[-1]) + 1 if h.any() else 1 for h in (data, generated))
        shares = [(h[:size] / max(h.sum(), 1)).tolist() for h in (data, generated)]
        return cls(counted, *shares)

    def to_json(self) -> dict[str, Any]:
        return {
            "counted": self.counted,
            "data": self.data,
            "generated": self.generated,
            "distance": self.distance,
        }


@dataclass(frozen=True)
class StabilityReport:
    """Per window: the statistics (mean over the clips) and the distance from the data."""

    header: dict[str, str]
    window_name: str
    names: tuple[str, ...]
    reference: dict[str, tuple[float, float]]  # statistic -> (mean, standard deviation)
    windows: list[dict[str, float]]  # statistic -> mean over clips, and "distance"
    clips: int
    steps: int
    unit: str
    temperature: float
    distribution: Distribution | None = None  # over all generated elements, if the task counts

    @property
    def drift(self) -> float:
        """The last window's distance from the data minus the first's."""
        return self.windows[-1]["distance"] - self.windows[0]["distance"]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.header,
            "clips": self.clips,
            "steps": self.steps,
            "unit": self.unit,
            "temperature": self.temperature,
            "window": self.window_name,
            "statistics": list(self.names),
            "data": {name: {"mean": m, "std": s} for name, (m, s) in self.reference.items()},
            "windows": self.windows,
            "drift": self.drift,
            **({"distribution": self.distribution.to_json()} if self.distribution else {}),
        }


def stability_report(
    trained: TrainedModel,
    request: StabilityRequest,
    device: torch.device,
    data: Path | None = None,
    data_dir: Path | None = None,
) -> StabilityReport:
    """Generate `request.count` clips and compare them, window by window, with the test data."""
    request.check()
    task = trained.task
    temperature = sampling_temperature(task, request.temperature)
    sampler = task.sampler(  # before the data is read: a wrong --voices is refused at once
        trained.network, request.count, temperature, request.seed, request.voices
    )
    with file_progress("reading the data") as progress:
        task_data = task.open_data(data, data_dir, trained.network.receptive_field, progress)
    measure = task.stability(task_data)
    steps = task.generation_steps(None, request.seconds, task.tempo(None, None))
    if steps < measure.window:
        raise ConfigError(
            f"--seconds {request.seconds:g} is shorter than one window of the report "
            f"(a {measure.window_name}); ask for more"
        )
    reference = _spread(measure.reference(), measure.names)
    recipe = trained.recipe(request.count, temperature, request.seed, request.voices, 1)
    generation = start(
        trained.network, sampler, request.count, steps, device, fast=request.capture, recipe=recipe
    )
    with GenerationDisplay(steps * request.count, task.unit, task.sample_rate) as display:
        clips = collect(generation, steps, lambda count: display.advance(count * request.count))
    windows = [
        _window(measure, reference, clips[:, first : first + measure.window])
        for first in range(0, steps - measure.window + 1, measure.window)
    ]
    counting, distribution = measure.counting, None
    if counting is not None:
        generated = np.sum([counting.histogram(clip) for clip in clips], axis=0)
        distribution = Distribution.of(counting.name, counting.reference, generated)
    return StabilityReport(
        trained.header(), measure.window_name, measure.names, reference, windows,
        request.count, steps, task.unit, temperature, distribution,
    )  # fmt: skip


def _spread(
    windows: list[dict[str, float]], names: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each statistic over the data's windows."""
    return {
        name: (
            float(np.mean([w[name] for w in windows])),
            float(np.std([w[name] for w in windows])),
        )
        for name in names
    }


def _window(
    measure: StabilityMeasure, reference: dict[str, tuple[float, float]], clips: np.ndarray
) -> dict[str, float]:
    """One window of every clip, `(count, window, ...)`: its mean statistics and distance."""
    per_clip = [measure.statistics(clip) for clip in clips]
    summary = {name: float(np.mean([stats[name] for stats in per_clip])) for name in measure.names}
    distances = [
        np.mean(
            [
                abs(stats[name] - mean) / max(spread, SPREAD_FLOOR)
                for name, (mean, spread) in reference.items()
            ]
        )
        for stats in per_clip
    ]
    return {**summary, "distance": float(np.mean(distances))}
