"""All terminal output goes through here: one Rich console for results, one for errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from sequnet_cli.inference import Trained

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print a user-facing error as a single `error: ...` line on stderr."""
    text = " ".join(str(message).split())  # one line, whatever the message holds
    error_console.print(f"[bold red]error:[/] {text}", soft_wrap=True)


def print_warning(message: str) -> None:
    """Print a non-fatal problem (a skipped file, a fallback) on stderr."""
    error_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def _progress() -> Progress:
    """A transient progress bar with a free-text statistics column."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
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
        self.task_id: object = None
        self.steps, self.items, self.started = 0, 0, 0.0
        self.epoch = 0

    def __enter__(self) -> Self:
        console.print(f"[bold]{self.title}[/]")
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        import time

        self.epoch, self.steps, self.items = epoch, 0, 0
        self.started = time.monotonic()
        if self.task_id is not None:
            self.progress.remove_task(self.task_id)  # type: ignore[arg-type]
        self.task_id = self.progress.add_task(
            f"epoch {epoch}/{epochs}", total=batches, completed=done, stats=""
        )

    def advance(self, train: float, items: int, lr: float) -> None:
        """One optimizer step; `train` is the period's training score so far (task metric)."""
        import time

        self.steps += 1
        self.items += items
        seconds = max(time.monotonic() - self.started, 1e-9)
        stats = (
            f"{self.items / seconds:,.0f} {self.unit}/s  {self.steps / seconds:.2f} steps/s  "
            f"train {self.metric} {train:.4f}  lr {lr:.3g}"
        )
        self.progress.update(self.task_id, advance=1, stats=stats)  # type: ignore[arg-type]

    def end_epoch(self, train: float, score: float, best: float, lr: float) -> None:
        import time

        seconds = max(time.monotonic() - self.started, 1e-9)
        self.progress.console.print(
            f"epoch {self.epoch:>3}  train {self.metric} {train:.4f}  valid {self.metric} "
            f"{score:.4f}  best {best:.4f}  lr {lr:.3g}  {self.items / seconds:,.0f} "
            f"{self.unit}/s  {self.steps / seconds:.2f} steps/s"
        )


def print_runs(runs: list, folder: object) -> None:
    """The `sequnet runs` table."""
    from rich.table import Table

    table = Table(title=f"runs in {folder}")
    for column in ("run", "preset", "model", "epochs", "steps", "best", "created", "size"):
        table.add_column(
            column, justify="right" if column in ("epochs", "steps", "best", "size") else "left"
        )
    for run in runs:
        best = f"{run.best_score:.4f} {run.metric}" if run.best_score is not None else "-"
        table.add_row(
            run.name,
            run.preset,
            run.model,
            str(run.epochs),
            str(run.steps),
            best,
            run.created.strftime("%Y-%m-%d %H:%M"),
            f"{run.size_bytes / 2**20:.1f} MiB",
        )
    if not runs:
        console.print(f"no runs yet in {folder}; start one with `sequnet train jsb`")
        return
    console.print(table)


def print_presets(presets: list) -> None:
    """The `sequnet presets` table."""
    from rich.table import Table

    table = Table(title="presets")
    for column in ("preset", "task", "models", "description"):
        table.add_column(column)
    for preset in presets:
        table.add_row(preset.name, preset.task, ", ".join(preset.variants), preset.description)
    console.print(table)


class GenerationDisplay:
    """Live progress of generation: elements per second and, for audio, times real time."""

    def __init__(self, total: int, unit: str, sample_rate: int | None) -> None:

        self.unit, self.sample_rate, self.done = unit, sample_rate, 0
        self.progress = _progress()
        self.task_id = self.progress.add_task("generating", total=total, stats="")
        self.started = 0.0

    def __enter__(self) -> Self:
        import time

        self.started = time.monotonic()
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def advance(self, count: int) -> None:
        import time

        self.done += count
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        stats = f"{rate:,.0f} {self.unit}/s"
        if self.sample_rate:
            stats += f"  {rate / self.sample_rate:.3f}x real time"
        self.progress.update(self.task_id, advance=count, stats=stats)


def print_scores(trained: Trained, scores: dict[str, float], as_json: bool) -> None:
    """The `sequnet evaluate` result: a table, or JSON."""
    import json

    from rich.table import Table

    config = trained.config
    metric = "NLL (nats/frame)" if config.task == "piano-roll" else "bits per audio sample"
    if as_json:
        document = {
            "preset": config.preset,
            "model": config.model.name,
            "architecture": config.model.architecture,
            "checkpoint": str(trained.source),
            "metric": metric,
            "scores": scores,
        }
        console.print_json(json.dumps(document))
        return
    table = Table(
        title=f"{config.preset} / {config.model.name}: {metric}", caption=str(trained.source)
    )
    table.add_column("split")
    table.add_column(metric, justify="right")
    for split, score in scores.items():
        table.add_row(split, f"{score:.4f}")
    console.print(table)
