"""All terminal output goes through here: one Rich console for results, one for problems.

This module knows how to show things, not what they are: it imports nothing else of sequnet,
and the rows it renders are described by the small protocols below.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print a user-facing error as a single `error: ...` line on stderr."""
    text = " ".join(str(message).split())  # one line, whatever the message holds
    error_console.print(f"[bold red]error:[/] {text}", soft_wrap=True, markup=True)


def print_warning(message: str) -> None:
    """Print a non-fatal problem (a skipped file, a fallback) on stderr."""
    text = " ".join(str(message).split())
    error_console.print(f"[yellow]warning:[/] {text}", soft_wrap=True)


def _progress(*, remaining: bool = False) -> Progress:
    """A transient progress bar with a free-text statistics column."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, TextColumn("{task.fields[stats]}"), console=console, transient=True)


class TrainingDisplay:
    """Live Rich progress of a training run: epoch bar, throughput, losses, learning rate.

    Use as a context manager; `start_epoch`, `advance` and `end_epoch` are called by the
    trainer. After each epoch one summary line is printed, so the log stays readable when the
    output is not a terminal.
    """

    def __init__(self, unit: str, metric: str, title: str) -> None:
        self.unit, self.metric, self.title = unit, metric, title
        self.progress = _progress()
        self.task_id: Any = None
        self.steps, self.items, self.started = 0, 0, 0.0
        self.epoch = 0

    def __enter__(self) -> Self:
        console.print(f"[bold]{self.title}[/]")
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.epoch, self.steps, self.items = epoch, 0, 0
        self.started = time.monotonic()
        if self.task_id is not None:
            self.progress.remove_task(self.task_id)
        self.task_id = self.progress.add_task(
            f"epoch {epoch}/{epochs}", total=batches, completed=done, stats=""
        )

    def advance(self, train: float, items: int, lr: float) -> None:
        """One optimizer step; `train` is the period's training score so far (task metric)."""
        self.steps += 1
        self.items += items
        seconds = max(time.monotonic() - self.started, 1e-9)
        stats = (
            f"{self.items / seconds:,.0f} {self.unit}/s  {self.steps / seconds:.2f} steps/s  "
            f"train {self.metric} {train:.4f}  lr {lr:.3g}"
        )
        self.progress.update(self.task_id, advance=1, stats=stats)

    def end_epoch(self, train: float, score: float, best: float, lr: float) -> None:
        seconds = max(time.monotonic() - self.started, 1e-9)
        self.progress.console.print(
            f"epoch {self.epoch:>3}  train {self.metric} {train:.4f}  valid {self.metric} "
            f"{score:.4f}  best {best:.4f}  lr {lr:.3g}  {self.items / seconds:,.0f} "
            f"{self.unit}/s  {self.steps / seconds:.2f} steps/s"
        )


class GenerationDisplay:
    """Live progress of generation: elements per second and, for audio, times real time."""

    def __init__(self, total: int, unit: str, sample_rate: int | None) -> None:
        self.unit, self.sample_rate, self.done = unit, sample_rate, 0
        self.status = ""
        self.progress = _progress()
        self.task_id = self.progress.add_task("generating", total=total, stats="")
        self.started = 0.0

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def advance(self, count: int) -> None:
        self.done += count
        self.progress.update(self.task_id, advance=count, stats=self._stats())

    def note(self, text: str) -> None:
        """Show `text` (e.g. "playing") after the speed; "" clears it."""
        self.status = text
        self.progress.update(self.task_id, stats=self._stats())

    def _stats(self) -> str:
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        stats = f"{rate:,.0f} {self.unit}/s"
        if self.sample_rate:
            stats += f"  {rate / self.sample_rate:.3f}x real time"
        return f"{stats}  {self.status}" if self.status else stats


@contextmanager
def file_progress(description: str) -> Iterator[Callable[[int, int, Path], None]]:
    """A progress bar over files (decoding a folder); yields `progress(done, total, path)`."""
    with _progress(remaining=True) as progress:
        task_id = progress.add_task(description, total=None, stats="")

        def update(done: int, total: int, path: Path) -> None:
            progress.update(task_id, completed=done, total=total, stats=path.name)

        yield update


class RunRow(Protocol):
    """What `print_runs` shows of a run."""

    @property
    def name(self) -> str: ...
    @property
    def preset(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def epochs(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def best_score(self) -> float | None: ...
    @property
    def metric(self) -> str: ...
    @property
    def created(self) -> datetime: ...
    @property
    def size_bytes(self) -> int: ...


def print_runs(runs: Sequence[RunRow], folder: Path, demos: Sequence[RunRow] = ()) -> None:
    """The `sequnet runs` table: the user's runs, then the demo models shipped with sequnet."""
    if not runs:
        console.print(f"no runs yet in {folder}; start one with `sequnet train jsb`")
        if not demos:
            return
    table = Table(title=f"runs in {folder}" if runs else "demo models shipped with sequnet")
    numeric = ("epochs", "steps", "best", "size")
    for column in ("run", "preset", "model", "data", *numeric[:3], "created", "size"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for run in [*runs, *demos]:
        best = f"{run.best_score:.4f} {run.metric}" if run.best_score is not None else "-"
        table.add_row(
            run.name,
            run.preset,
            run.model,
            run.data,
            str(run.epochs),
            str(run.steps),
            best,
            run.created.strftime("%Y-%m-%d %H:%M"),
            f"{run.size_bytes / 2**20:.1f} MiB",
        )
    console.print(table)


class PresetRow(Protocol):
    """What `print_presets` shows of a preset."""

    @property
    def name(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def variants(self) -> Mapping[str, object]: ...
    @property
    def description(self) -> str: ...


def print_presets(presets: Sequence[PresetRow]) -> None:
    """The `sequnet presets` table."""
    table = Table(title="presets")
    for column in ("preset", "task", "models", "description"):
        table.add_column(column)
    for preset in presets:
        table.add_row(preset.name, preset.task, ", ".join(preset.variants), preset.description)
    console.print(table)


def print_scores(
    header: Mapping[str, str], metric: str, scores: Mapping[str, float], as_json: bool
) -> None:
    """The `sequnet evaluate` result: a table, or JSON.

    `header`: `preset`, `model`, `architecture` and `checkpoint` (shown as the caption).
    """
    if as_json:
        document = {**header, "metric": metric, "scores": dict(scores)}
        console.print_json(json.dumps(document))
        return
    table = Table(title=f"{header['preset']} / {header['model']}: {metric}")
    table.add_column("split")
    table.add_column(metric, justify="right")
    for split, score in scores.items():
        table.add_row(split, f"{score:.4f}")
    console.print(table)
    console.print(f"checkpoint: {header['checkpoint']}", soft_wrap=True)


class StabilityRows(Protocol):
    """What `print_stability` shows (`sequnet_cli.stability.StabilityReport`)."""

    @property
    def header(self) -> Mapping[str, str]: ...
    @property
    def window_name(self) -> str: ...
    @property
    def names(self) -> Sequence[str]: ...
    @property
    def reference(self) -> Mapping[str, tuple[float, float]]: ...
    @property
    def windows(self) -> Sequence[Mapping[str, float]]: ...
    @property
    def clips(self) -> int: ...
    @property
    def drift(self) -> float: ...

    def to_json(self) -> dict[str, Any]: ...


def print_stability(report: StabilityRows, as_json: bool) -> None:
    """The `sequnet evaluate --generation` result: a table per window, or JSON."""
    if as_json:
        console.print_json(json.dumps(report.to_json()))
        return
    header = report.header
    table = Table(
        title=f"{header['preset']} / {header['model']}: {report.clips} generated clips against "
        "the test data, per " + report.window_name
    )
    table.add_column(report.window_name, justify="right")
    for name in report.names:
        table.add_column(name, justify="right")
    table.add_column("distance", justify="right")
    for index, window in enumerate(report.windows, start=1):
        values = [_figure(window[name]) for name in report.names]
        table.add_row(str(index), *values, f"{window['distance']:.2f}")
    table.add_section()
    table.add_row(
        "data",
        *(f"{_figure(m)} ± {_figure(s)}" for m, s in (report.reference[n] for n in report.names)),
        "",
    )
    console.print(table)
    console.print(
        f"drift {report.drift:+.2f}: distance from the data (mean |value - data mean| / data std "
        "over the statistics) of the last window minus the first; about 0 is stable",
        soft_wrap=True,
    )
    console.print(f"checkpoint: {header['checkpoint']}", soft_wrap=True)


def _figure(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
