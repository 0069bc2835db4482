"""All terminal output goes through here: one Rich console for results, one for problems.

This module knows how to show things, not what they are: it imports nothing else of sequnet,
and the rows it renders are described by the small protocols below. It is long because it is
the one place for every display of the app (training, generation, runs, scores, searches,
stability reports); each piece is short.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

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


def _transient(*columns: str | ProgressColumn) -> Progress:
    """A progress display of `columns` that disappears once done; drawn only on a terminal
    (elsewhere it would leave a blank line in the output, which may be a JSON document)."""
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def _progress() -> Progress:
    """A transient progress bar with a free-text statistics column."""
    return _transient(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
    )


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
        self.told_validation = False

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

    def advance(self, train: float, items: int, lr: float, steps: int = 1) -> None:
        """`steps` more optimizer steps, which predicted `items` elements; `train` is the
        period's training score so far (task metric)."""
        self.steps += steps
        self.items += items
        seconds = max(time.monotonic() - self.started, 1e-9)
        stats = (
            f"{self.items / seconds:,.0f} {self.unit}/s  {self.steps / seconds:.2f} steps/s  "
            f"train {self.metric} {train:.4f}  lr {lr:.3g}"
        )
        self.progress.update(self.task_id, advance=steps, stats=stats)

    def end_epoch(self, train: float, score: float, best: float, lr: float, scored: str) -> None:
        """After a validation; `scored`: what it predicted, said once ("64,000 samples ...")."""
        seconds = max(time.monotonic() - self.started, 1e-9)
        if not self.told_validation:
            self.progress.console.print(f"validation scores {scored}, the same each time")
            self.told_validation = True
        self.progress.console.print(
            f"epoch {self.epoch:>3}  train {self.metric} {train:.4f}  valid {self.metric} "
            f"{score:.4f}  best {best:.4f}  lr {lr:.3g}  {self.items / seconds:,.0f} "
            f"{self.unit}/s  {self.steps / seconds:.2f} steps/s"
        )


class QuietTrainingDisplay(TrainingDisplay):
    """A `TrainingDisplay` that shows nothing: a search's trials train under its study table."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        pass

    def advance(self, train: float, items: int, lr: float, steps: int = 1) -> None:
        pass

    def end_epoch(self, train: float, score: float, best: float, lr: float, scored: str) -> None:
        pass


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


class LiveView:
    """A region of stderr redrawn from `render()` a few times a second while work runs, and
    cleared when it ends (the final result is printed after it). Where stderr is not a terminal
    (a log file, a pipe), nothing is redrawn: each `note` is printed as one line instead.

    Use as a context manager; `note` is called at each step of the work.
    """

    def __init__(self, render: Callable[[], RenderableType]) -> None:
        self.drawing = error_console.is_interactive
        self.live = Live(
            console=error_console,
            get_renderable=render,
            refresh_per_second=2,  # the elapsed time ticks; more would take CPU from the work
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> Self:
        if self.drawing:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.drawing:
            self.live.stop()

    def note(self, line: str) -> None:
        """A step of the work: redraw now, or print `line` where nothing is redrawn."""
        if self.drawing:
            self.live.refresh()
        else:
            error_console.print(line, soft_wrap=True)


def print_note(message: str) -> None:
    """Print information about the work under way on stderr (stdout keeps the results)."""
    error_console.print(message, soft_wrap=True, markup=False)


@contextmanager
def waiting(message: str) -> Iterator[None]:
    """A spinner with `message` on stderr while something slow runs, gone once it is done."""
    with error_console.status(message):
        yield


class FileProgressCallback(Protocol):
    """`progress(done, total, path, hours)`: files done and in all, the next file, and for
    audio the hours of audio done and in all."""

    def __call__(
        self, done: int, total: int, path: Path, hours: tuple[float, float] | None = None
    ) -> None: ...


@contextmanager
def file_progress(description: str) -> Iterator[FileProgressCallback]:
    """A progress bar over files (decoding a folder): files done, hours of audio done when
    given, and the time left (estimated by hours of audio when given, else by files)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
    ]
    with _transient(*columns) as progress:
        task_id = progress.add_task(description, total=None, count="", stats="")

        def update(
            done: int, total: int, path: Path, hours: tuple[float, float] | None = None
        ) -> None:
            count = f"{done}/{total} files"
            if hours is None:
                progress.update(task_id, completed=done, total=total, count=count, stats=path.name)
                return
            done_hours, total_hours = hours
            count += f"  {done_hours:,.1f}/{total_hours:,.1f} h"
            # The bar (and so the time left) counts seconds of audio: files differ in length.
            completed, in_all = done_hours * 3600, total_hours * 3600
            progress.update(
                task_id, completed=completed, total=in_all, count=count, stats=path.name
            )

        yield update


@contextmanager
def count_progress(description: str, unit: str) -> Iterator[Callable[[int], None]]:
    """A transient count of elements done, with their rate and the time elapsed; the callable
    it yields is told how many more are done."""
    columns = [
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,.0f} " + unit),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
    ]
    with _transient(*columns) as progress:
        task_id = progress.add_task(description, total=None, stats="")
        started = time.monotonic()

        def advance(count: int) -> None:
            done = progress.tasks[0].completed + count
            rate = done / max(time.monotonic() - started, 1e-9)
            progress.update(task_id, advance=count, stats=f"{rate:,.0f} {unit}/s")

        yield advance


class RunRow(Protocol):
    """What `print_runs` shows of a run."""

    @property
    def name(self) -> str: ...
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
    def test_score(self) -> float | None: ...
    @property
    def metric(self) -> str: ...
    @property
    def created(self) -> datetime: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def checkpoints(self) -> tuple[str, ...]: ...


def print_runs(
    runs: Sequence[RunRow],
    folder: Path,
    demos: Sequence[RunRow] = (),
    chosen: str = "",
    start: str = "sequnet train jsb",
) -> None:
    """The `sequnet runs` table: the user's runs, then the demo models shipped with sequnet. A
    run's name says its preset, model, data (when it is the user's own) and creation time; it is
    never cut short. `chosen`: which runs these are ("of preset jsb "), if not all; `start`: the
    command that makes one. The test score is the one `sequnet evaluate` found for the run's
    best checkpoint, when it has scored it."""
    if not runs:
        console.print(f"no runs {chosen}yet in {folder}; start one with `{start}`", markup=False)
        if not demos:
            return
    title = f"runs {chosen}in {folder}" if runs else "demo models shipped with sequnet"
    rows = [*runs, *demos]
    table = _runs_table(rows, title, ("model", "data"))
    if not console.is_terminal:  # a file or a pipe: lines as long as the table, never folded
        width = max(_natural_width(table), console.width)
        Console(file=console.file, width=width, highlight=False).print(table)
        return
    # On a narrow terminal, the run's name says its model, and its data when it is the user's.
    for names in (("model",), ()):
        if _natural_width(table) <= console.width:
            break
        table = _runs_table(rows, title, names)
    console.print(table)


def _natural_width(table: Table) -> int:
    """The width `table` takes when nothing of it is folded or cut."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def _runs_table(rows: Sequence[RunRow], title: str, names: tuple[str, ...]) -> Table:
    """The runs as a table, with the columns `names` (of model and data) after the name."""
    metrics = {run.metric.removeprefix("valid ") for run in rows if run.metric}
    unit = metrics.pop() if len(metrics) == 1 else ""  # said once, in the headers
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("run", no_wrap=True)
    for name in names:
        table.add_column(name, no_wrap=True)
    for column in ("epochs", "steps", f"best valid {unit}", f"test {unit}", "size"):
        table.add_column(column.strip(), justify="right", no_wrap=True)
    for run in rows:
        own = "" if unit else f" {run.metric.removeprefix('valid ')}".rstrip()
        named = {"model": run.model, "data": Path(run.data).name or run.data}
        table.add_row(
            run.name,
            *(named[name] for name in names),
            str(run.epochs),
            f"{run.steps:,}",
            _best_cell(run, own),
            "-" if run.test_score is None else f"{run.test_score:.4f}{own}",
            _size(run.size_bytes),
        )
    return table


def _size(count: int) -> str:
    mebibytes = count / 2**20
    return f"{mebibytes:.0f} MiB" if mebibytes >= 10 else f"{mebibytes:.1f} MiB"


def print_json(document: object) -> None:
    """One JSON document on stdout, as it is (no markup, no wrapping)."""
    console.print(json.dumps(document, indent=2), markup=False, highlight=False, soft_wrap=True)


def print_csv(rows: Sequence[Mapping[str, object]]) -> None:
    """Rows as CSV on stdout, a header first; the columns are every key, in the order they
    first appear."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    console.out(text.getvalue().rstrip("\n"), highlight=False)


def _best_cell(run: RunRow, unit: str) -> str:
    """The best validation score (and `unit`), or why there is none: the run is empty (stopped
    before its first checkpoint, so never picked for its preset), or its checkpoint is not
    validated."""
    if run.best_score is not None:
        return f"{run.best_score:.4f}{unit}"
    return "unvalidated" if run.checkpoints else "empty"


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


class ScoreRow(Protocol):
    """What `print_scores` shows of one split."""

    @property
    def split(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def amount(self) -> str: ...  # what was scored, in words


def print_scores(
    header: Mapping[str, str],
    metric: str,
    scores: Sequence[ScoreRow],
    what: str,
    document: Mapping[str, Any] | None = None,
) -> None:
    """The `sequnet evaluate` result: a table, or (given) its JSON `document`.

    `header`: `preset`, `model`, `architecture` and `checkpoint` (shown as the caption);
    `what`: what each split's figure covers ("whole splits").
    """
    if document is not None:
        print_json(document)
        return
    table = Table(title=f"{header['preset']} / {header['model']}: {metric}")
    table.add_column("split")
    table.add_column(metric, justify="right")
    table.add_column(f"scored ({what})", justify="right")
    for score in scores:
        table.add_row(score.split, f"{score.value:.4f}", score.amount)
    console.print(table)
    _print_checkpoint(header)


def _print_checkpoint(header: Mapping[str, str]) -> None:
    """The line under a report that says which checkpoint it is of: a path, printed as it is
    (brackets in it are not markup)."""
    console.print(f"checkpoint: {header['checkpoint']}", soft_wrap=True, markup=False)


class TrialRow(Protocol):
    """What the tables of a hyper-parameter search show of one trial."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> str: ...  # running, complete, pruned, failed
    @property
    def params(self) -> Mapping[str, str]: ...  # searched key -> value, formatted
    @property
    def validations(self) -> int: ...
    @property
    def score(self) -> float | None: ...  # its best validation score so far
    @property
    def seconds(self) -> float: ...
    @property
    def note(self) -> str: ...


_STATE_STYLES = {"running": "cyan", "complete": "green", "pruned": "yellow", "failed": "red"}


def _trial_table(
    rows: Sequence[TrialRow], keys: Sequence[str], metric: str, title: str, caption: str
) -> Table:
    """Values are never cut (long headers take a line per word) and columns are separated by one
    space, so that seven searched settings fit 80 columns; only a failure's note is cut."""
    headers = ["#", "state", *(key.replace("_", "\n") for key in keys), f"valid\n{metric}"]
    headers += ["evals", "time"]
    cells = [
        [
            str(row.number),
            row.state,
            *(row.params.get(key, "") for key in keys),
            "-" if row.score is None else f"{row.score:.4f}",
            str(row.validations),
            _duration(row.seconds),
        ]
        for row in rows
    ]
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for index, header in enumerate(headers):
        width = max(
            [len(word) for word in header.splitlines()] + [len(line[index]) for line in cells]
        )
        justify: Literal["left", "right"] = "left" if header == "state" else "right"
        table.add_column(header, justify=justify, min_width=width)
    notes = any(row.note for row in rows)
    if notes:
        table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=40)
    for row, line in zip(rows, cells, strict=True):
        # Styled text, not markup: nothing here is ever parsed, or shown as brackets.
        state = Text(row.state, style=_STATE_STYLES.get(row.state, ""))
        note = [Text(row.note)] if notes else []
        table.add_row(Text(line[0]), state, *(Text(cell) for cell in line[2:]), *note)
    return table


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}"
        if minutes >= 60
        else f"{minutes}:{rest:02d}"
    )


def print_study(
    rows: Sequence[TrialRow], keys: Sequence[str], metric: str, title: str, caption: str
) -> None:
    """The `sequnet tune --show` leaderboard (rows in the order given)."""
    console.print(_trial_table(rows, keys, metric, title, caption))


class StudyDisplay:
    """Live table of a search's trials, redrawn by `update`; `finished` prints one line per
    trial above it, so that a log that is not a terminal stays readable.

    `keys`: the searched settings (one column each); `metric`: e.g. "NLL".
    """

    def __init__(self, title: str, keys: Sequence[str], metric: str) -> None:
        self.title, self.keys, self.metric = title, list(keys), metric
        # Redrawn only on a terminal; elsewhere (a log, a pipe) the lines of `finished` tell.
        self.drawing = console.is_terminal
        self.live = Live(console=console, transient=True, refresh_per_second=2)

    def __enter__(self) -> Self:
        console.print(Text(self.title, style="bold"), soft_wrap=True)
        if self.drawing:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.drawing:
            self.live.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, rows: Sequence[TrialRow], caption: str) -> None:
        if self.drawing:
            table = _trial_table(rows, self.keys, self.metric, "", caption)
            self.live.update(table, refresh=True)

    def finished(self, row: TrialRow) -> None:
        settings = "  ".join(f"{key} {row.params.get(key, '-')}" for key in self.keys)
        score = "-" if row.score is None else f"{row.score:.4f}"
        note = f"  ({row.note})" if row.note else ""
        self.live.console.print(
            f"trial {row.number:>3} {row.state:<8} valid {self.metric} {score}  {settings}  "
            f"{_duration(row.seconds)}{note}",
            soft_wrap=True,
            markup=False,
        )


class DistributionRows(Protocol):
    """A distribution `print_stability` shows (`sequnet_cli.stability.Distribution`)."""

    @property
    def counted(self) -> str: ...
    @property
    def data(self) -> Sequence[float]: ...
    @property
    def generated(self) -> Sequence[float]: ...
    @property
    def distance(self) -> float: ...


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
    def temperature(self) -> float: ...
    @property
    def drift(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def distribution(self) -> DistributionRows | None: ...

    def to_json(self) -> dict[str, Any]: ...


def print_stability(report: StabilityRows, as_json: bool) -> None:
    """The `sequnet evaluate --generation` result: a table per window, or JSON."""
    if as_json:
        console.print_json(json.dumps(report.to_json()))
        return
    header = report.header
    table = Table(
        title=f"{header['preset']} / {header['model']}: {report.clips} clips generated at "
        f"temperature {report.temperature:g} against the test data, per {report.window_name}"
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
    if report.distribution is not None:
        _print_distribution(report.distribution, report.unit)
    _print_checkpoint(header)


def _print_distribution(distribution: DistributionRows, unit: str) -> None:
    """Shares of all generated elements per number, against the test data's, and the distance."""
    counted = distribution.counted
    table = Table(title=f"{unit} per number of {counted}")
    for column in (counted, "data", "generated"):
        table.add_column(column, justify="right")
    for number, (data, generated) in enumerate(
        zip(distribution.data, distribution.generated, strict=True)
    ):
        table.add_row(str(number), f"{data:.1%}", f"{generated:.1%}")
    console.print(table)
    console.print(
        f"{counted} distance {distribution.distance:.3f}: total variation between the generated "
        f"and the data's shares of {unit} per number of {counted} (0 the same, 1 disjoint)",
        soft_wrap=True,
    )


def _figure(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
