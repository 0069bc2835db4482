"""`sequnet bench` on the terminal: the side-by-side table with its context, and the sweep's
table and bar chart, as Rich renderables."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from sequnet_cli.bench.measure import GenerationMeasurement, TrainingMeasurement
from sequnet_cli.bench.results import BenchResult


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value} B"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,}"


def _rate(measurement: GenerationMeasurement, unit: str, sample_rate: int | None) -> str:
    text = f"{measurement.samples_per_second:,.0f} {unit}/s"
    if sample_rate:
        text += f"\n{measurement.samples_per_second / sample_rate:.3g}x real time"
    return text


def _main_table(result: BenchResult) -> Table:
    paper, training = result.paper, result.training
    ours, theirs = training.sequnet, training.baseline
    title = (
        f"sequnet bench: preset {result.preset}{' (--quick)' if result.quick else ''}, "
        f"training batch {training.batch_size} with {ours.targets:,} targets"
    )
    table = Table(title=title)
    table.add_column("")
    table.add_column(f"Seq-U-Net\n{result.sequnet.architecture}", justify="right")
    table.add_column(f"{result.baseline.variant}\n{result.baseline.architecture}", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("paper", justify="right")
    rows = [
        ("parameters", _count(result.sequnet.parameters), _count(result.baseline.parameters)),
        (
            "receptive field",
            f"{result.sequnet.receptive_field:,}",
            f"{result.baseline.receptive_field:,}",
        ),
        ("inputs per example", f"{ours.inputs:,}", f"{theirs.inputs:,}"),
    ]
    for row in rows:
        table.add_row(*row, "", "")
    table.add_row(
        "training step",
        _seconds(ours.seconds_per_step),
        _seconds(theirs.seconds_per_step),
        _ratio(training.time_ratio),
        _ratio(paper.time_ratio if paper else None),
    )
    table.add_row(
        "peak memory",
        _bytes(ours.peak_memory_bytes),
        _bytes(theirs.peak_memory_bytes),
        _ratio(training.memory_ratio),
        _ratio(paper.memory_ratio if paper else None),
    )
    table.add_row(
        "saved activations",
        _bytes(ours.activation_bytes),
        _bytes(theirs.activation_bytes),
        _ratio(training.activation_ratio),
        "",
    )
    for run in result.generation:
        threads = f"{run.sequnet.threads} thread{'s' if run.sequnet.threads > 1 else ''}"
        figure = paper.speedup if paper and run.batch_size == 1 else None
        table.add_row(
            f"generation\nbatch {run.batch_size}, {threads}",
            _rate(run.sequnet, result.unit, result.sample_rate),
            _rate(run.baseline, result.unit, result.sample_rate),
            _ratio(run.speedup),
            _ratio(figure),
        )
        if run.captured is not None:
            table.add_row(
                f"generation, CUDA graphs\nbatch {run.batch_size}",
                _rate(run.captured.sequnet, result.unit, result.sample_rate),
                _rate(run.captured.baseline, result.unit, result.sample_rate),
                _ratio(run.captured.speedup),
                _ratio(figure),
            )
    return table


def _context(result: BenchResult) -> Text:
    threads = result.threads
    lines = [
        (
            f"device {result.device} ({result.device_name}), torch {result.torch_version}; "
            f"CPU threads: training {threads['training']}, generation at batch 1 "
            f"{threads['generation_batch_1']}, batched {threads['generation_batch']}"
        ),
        "ratios: baseline / Seq-U-Net for time and memory, Seq-U-Net / baseline for generation",
        f"peak memory: {result.memory_measure}",
        "saved activations: tensors autograd keeps for the backward pass (what paper §4 counts)",
    ]
    paper = result.paper
    if paper:
        rates = paper.samples_per_second
        lines.append(
            f"paper ({paper.source}, GTX 1080): {paper.seconds_per_step[0]} vs "
            f"{paper.seconds_per_step[1]} s per step, "
            f"{paper.megabytes[0]} vs {paper.megabytes[1]} MB"
            + (f", {rates[0]} vs {rates[1]} samples/s" if rates else "")
        )
    return Text("\n".join(lines), style="dim")


def _sweep_table(result: BenchResult) -> Table:
    first = result.sweep[0]
    width = first.sequnet.network.width
    table = Table(
        title=f"cost against depth: batch {first.training.batch_size}, "
        f"{first.training.sequnet.targets:,} targets, width {width}"
    )
    baseline = result.baseline.variant
    for column in (
        "levels",
        "receptive field\nSeq-U-Net / " + baseline,
        "s/step\nSeq-U-Net",
        f"s/step\n{baseline}",
        "time\nratio",
        "memory\nSeq-U-Net",
        f"memory\n{baseline}",
        "memory\nratio",
    ):
        table.add_column(column, justify="right")
    for point in result.sweep:
        ours, theirs = point.training.sequnet, point.training.baseline
        table.add_row(
            str(point.levels),
            f"{point.sequnet.receptive_field:,} / {point.baseline.receptive_field:,}",
            _seconds(ours.seconds_per_step),
            _seconds(theirs.seconds_per_step),
            _ratio(point.training.time_ratio),
            _bytes(ours.peak_memory_bytes),
            _bytes(theirs.peak_memory_bytes),
            _ratio(point.training.memory_ratio),
        )
    return table


_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: float, largest: float, width: int = 32) -> str:
    """A horizontal bar of `value / largest * width` cells, in eighths of a cell."""
    eighths = round(8 * width * value / largest) if largest > 0 else 0
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def sweep_chart(result: BenchResult) -> Text:
    """Bars of training time and memory per step against depth, Seq-U-Net and baseline."""
    chart = Text()
    memory_known = all(p.training.memory_ratio is not None for p in result.sweep)
    panels: list[tuple[str, Callable[[TrainingMeasurement], float], Callable[[float], str]]] = [
        ("training time per step", lambda m: m.seconds_per_step, _seconds),
    ]
    if memory_known:
        panels.append(
            ("peak memory", lambda m: float(m.peak_memory_bytes or 0), lambda v: _bytes(int(v)))
        )
    panels.append(
        ("saved activations", lambda m: float(m.activation_bytes), lambda v: _bytes(int(v)))
    )
    for title, read, show in panels:
        chart.append(f"{title}\n", style="bold")
        largest = max(
            max(read(p.training.sequnet), read(p.training.baseline)) for p in result.sweep
        )
        for point in result.sweep:
            for label, measurement, style in (
                ("Seq-U-Net", point.training.sequnet, "green"),
                (result.baseline.variant, point.training.baseline, "magenta"),
            ):
                value = read(measurement)
                prefix = f"L={point.levels:<3}" if label == "Seq-U-Net" else " " * 5
                chart.append(f"{prefix} {label:>10} ")
                chart.append(bar(value, largest), style=style)
                chart.append(f" {show(value)}\n")
    return chart


def render_bench(result: BenchResult) -> list[RenderableType]:
    """The Rich renderables of a result: the side-by-side table, its context, the sweep."""
    parts: list[RenderableType] = [_main_table(result), _context(result)]
    if result.sweep:
        parts += [Text(""), _sweep_table(result), sweep_chart(result)]
    return parts
