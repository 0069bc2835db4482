"""`sequnet bench` on the terminal: the plan line, the live view while it measures, the
side-by-side table with its context, and the sweep's table and bar chart, as Rich renderables
and plain lines (printing them is the console's job). A partial result renders the same way,
with what it holds."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sequnet_cli.bench.machine import CpuLoad
from sequnet_cli.bench.measure import TrainingMeasurement
from sequnet_cli.bench.plan import GenerationStage, TrainingStage
from sequnet_cli.bench.results import BenchResult, GenerationComparison, TrainingComparison
from sequnet_cli.bench.run import BenchRun
from sequnet_cli.bench.streams import GenerationMeasurement


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


def _ratio_spread(value: float, rounds: list[float]) -> str:
    """A ratio of medians, and the range of the ratios of each round beneath it."""
    if len(rounds) < 2:
        return _ratio(value)
    return f"{_ratio(value)}\n{min(rounds):.2f}-{max(rounds):.2f}x"


def _si(value: float, unit: str = "") -> str:
    """`245 G`, `4.52 M`, `812 k`: three significant figures with a decimal prefix."""
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _step_time(measurement: TrainingMeasurement) -> str:
    """The median step, and the fastest and slowest beneath it."""
    text = _seconds(measurement.seconds_per_step)
    if measurement.steps > 1:
        low, high = min(measurement.step_seconds), max(measurement.step_seconds)
        text += f"\n{_seconds(low)}-{_seconds(high)}"
    return text


def _arithmetic(measurement: TrainingMeasurement) -> str:
    """Achieved FLOP/s, and its share of the machine's matrix-product rate."""
    text = _si(measurement.flops_per_second, "FLOP/s")
    if measurement.efficiency is not None:
        text += f"\n{measurement.efficiency:.0%} of {measurement.precision}"
    return text


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,}"


def _rate(measurement: GenerationMeasurement, unit: str, sample_rate: int | None) -> str:
    """The median chunk's rate, the slowest and fastest chunk's, and the real-time factor."""
    text = f"{measurement.samples_per_second:,.0f} {unit}/s"
    if len(measurement.chunk_seconds) > 1:
        slowest, fastest = measurement.rate_spread
        text += f"\n{slowest:,.0f}-{fastest:,.0f}"
    if sample_rate:
        text += f"\n{measurement.samples_per_second / sample_rate:.3g}x real time"
    return text


def _main_table(result: BenchResult) -> Table:
    training = result.training
    title = f"sequnet bench: preset {result.preset}{' (--quick)' if result.quick else ''}"
    if training:
        title += f", training batch {training.batch_size} with {training.sequnet.targets:,} targets"
    table = Table(title=title)
    table.add_column("")
    table.add_column(f"Seq-U-Net\n{result.sequnet.architecture}", justify="right")
    table.add_column(f"{result.baseline.variant}\n{result.baseline.architecture}", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("paper", justify="right")
    table.add_row(
        "parameters", _count(result.sequnet.parameters), _count(result.baseline.parameters)
    )
    table.add_row(
        "receptive field",
        f"{result.sequnet.receptive_field:,}",
        f"{result.baseline.receptive_field:,}",
    )
    if training:
        _training_rows(table, result, training)
    _generation_rows(table, result)
    return table


def _training_rows(table: Table, result: BenchResult, training: TrainingComparison) -> None:
    paper, ours, theirs = result.paper, training.sequnet, training.baseline
    table.add_row("inputs per example", f"{ours.inputs:,}", f"{theirs.inputs:,}")
    table.add_row(
        "training step\nmedian, min-max",
        _step_time(ours),
        _step_time(theirs),
        _ratio_spread(training.time_ratio, training.round_ratios),
        _ratio(paper.time_ratio if paper else None),
    )
    table.add_row(
        "multiply-adds per step\ntraining (forward)",
        f"{_si(ours.training_multiply_adds)}\n({_si(ours.forward_multiply_adds)})",
        f"{_si(theirs.training_multiply_adds)}\n({_si(theirs.forward_multiply_adds)})",
        _ratio(training.work_ratio),
        "",
    )
    table.add_row("arithmetic rate", _arithmetic(ours), _arithmetic(theirs), "", "")
    table.add_row(
        "peak memory",
        _bytes(ours.peak_memory_bytes),
        _bytes(theirs.peak_memory_bytes),
        _ratio(training.memory_ratio),
        _ratio(paper.memory_ratio if paper else None),
    )
    table.add_row(
        "counted memory",
        _bytes(ours.counted_memory_bytes),
        _bytes(theirs.counted_memory_bytes),
        _ratio(training.counted_memory_ratio),
        "",
    )
    table.add_row(
        "saved activations",
        _bytes(ours.activation_bytes),
        _bytes(theirs.activation_bytes),
        _ratio(training.activation_ratio),
        "",
    )


def _generation_rows(table: Table, result: BenchResult) -> None:
    paper = result.paper
    for run in result.generation:
        threads = f"{run.sequnet.threads} thread{'s' if run.sequnet.threads > 1 else ''}"
        figure = paper.speedup if paper and run.batch_size == 1 else None
        table.add_row(
            f"generation\nbatch {run.batch_size}, {threads}",
            _rate(run.sequnet, result.unit, result.sample_rate),
            _rate(run.baseline, result.unit, result.sample_rate),
            _ratio_spread(run.speedup, run.round_speedups),
            _ratio(figure),
        )
        if run.captured is not None:
            table.add_row(
                f"generation, CUDA graphs\nbatch {run.batch_size}",
                _rate(run.captured.sequnet, result.unit, result.sample_rate),
                _rate(run.captured.baseline, result.unit, result.sample_rate),
                _ratio_spread(run.captured.speedup, run.captured.round_speedups),
                _ratio(figure),
            )
    _generation_work_row(table, result)


def _generation_work_row(table: Table, result: BenchResult) -> None:
    """Multiply-adds per generated element: the same at every batch size, shown once."""
    counted = [run for run in result.generation if run.work_ratio is not None]
    if not counted:
        return
    run: GenerationComparison = counted[0]
    ours, theirs = run.sequnet.multiply_adds_per_sample, run.baseline.multiply_adds_per_sample
    assert ours is not None and theirs is not None  # as `work_ratio` is
    table.add_row(
        f"multiply-adds per\ngenerated {result.unit.removesuffix('s')}",
        _si(ours),
        _si(theirs),
        _ratio(run.work_ratio),
        "",
    )


def _context(result: BenchResult) -> Text:
    threads = result.threads
    lines = [
        (
            f"device {result.device} ({result.device_name}), torch {result.torch_version}; "
            f"CPU threads: training {threads['training']}, generation at batch 1 "
            f"{threads['generation_batch_1']}, batched {threads['generation_batch']}"
        ),
        (
            f"times: the median of {result.repeat} timed rounds, the two networks' steps (or "
            "chunks of generation steps) in turn, with the fastest and slowest; the ratio's "
            "range is that of each round's ratio"
        ),
        (
            "ratios: baseline / Seq-U-Net for time, multiply-adds and memory, Seq-U-Net / "
            "baseline for generation speed"
        ),
        (
            "multiply-adds: of the convolutions and matrix products dispatched, counted on "
            "shapes; training counts the forward and the backward pass, where each "
            "convolution's weight and input gradients cost one forward each (the optimizer's "
            "few per weight are left out); a generated element's are amortised over whole "
            "clock cycles"
        ),
        _arithmetic_line(result),
        f"peak memory: {result.memory_measure}",
        (
            "counted memory: weights, gradients, optimizer state, saved activations and the "
            "batch, summed from the tensors (the same on every device)"
        ),
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
    if result.training:
        lines.append(_why_line(result, result.training))
    timing = result.timing_json()
    if result.stages_done:
        lines.append(
            f"time: {result.stages_done} of {len(result.stages)} stages measured in "
            f"{duration(timing['measured_seconds'])} (estimated "
            f"{duration(sum(s.estimated_seconds for s in result.stages[: result.stages_done]))}"
            f", after {duration(result.calibration_seconds)} of calibration)"
        )
    return Text("\n".join(lines), style="dim")


def _arithmetic_line(result: BenchResult) -> str:
    rates = ", ".join(
        f"{_si(rate.flops_per_second, 'FLOP/s')} in {rate.precision}"
        for rate in result.matrix_products
    )
    if not rates:
        return "arithmetic rate: 2 FLOP per multiply-add over the median step"
    first = result.matrix_products[0]
    threads = f"{first.threads} thread{'s' * (first.threads != 1)}"
    return (
        f"arithmetic rate: 2 FLOP per multiply-add over the median step, as a share of this "
        f"machine's rate for {first.size} x {first.size} matrix products in the same precision, "
        f"one timed in each round with the steps ({rates}, the median; {threads})"
    )


def _why_line(result: BenchResult, training: TrainingComparison) -> str:
    """Why a CPU's time ratio follows the arithmetic and the paper's GPU ratio is higher (on a
    GPU: why its ratio can exceed the arithmetic's), after how far the measured ratio is from
    the arithmetic's (the two networks' rates differ)."""
    baseline = result.baseline.variant
    measured = ""
    if training.work_ratio:
        share = training.time_ratio / training.work_ratio  # = Seq-U-Net's rate / baseline's
        measured = (
            f"Here the time ratio is {share:.2f} of the multiply-add ratio: {baseline} computes "
            f"at {1 / share:.2f} of the Seq-U-Net's rate. "
        )
    if result.device != "cpu":
        return (
            f"{measured}A GPU at these sizes is bound by kernel launches and memory traffic more "
            f"than by arithmetic, most of it on {baseline}'s full-resolution layers, which the "
            "Seq-U-Net runs at ever lower resolutions: its time ratio can exceed the "
            "multiply-add ratio (the paper's did)."
        )
    return (
        f"{measured}A CPU is bound mostly by arithmetic, so its time ratio follows the "
        "multiply-add ratio; the paper's GPU ratio is higher because at these sizes a GPU is "
        f"bound by kernel launches and memory traffic, most of it on {baseline}'s "
        "full-resolution layers, which the Seq-U-Net runs at ever lower resolutions."
    )


def load_warning(result: BenchResult) -> str | None:
    """One line when other processes used the CPU during a measurement, else None."""
    busy = [(name, load) for name, load in result.loads if load.busy]
    if not busy:
        return None
    worst: CpuLoad = max((load for _, load in busy), key=lambda load: load.other_cores)
    names = ", ".join(name for name, _ in busy)
    line = (
        f"warning: other processes kept up to {worst.other_cores:.1f} of {worst.cores} CPU cores "
        f"busy while this bench measured ({names}; it used {worst.own_cores:.1f} then): its "
        "times may read high and its ratios drift"
    )
    training = result.training
    ratio = training.cpu_time_ratio if training else None
    if ratio and result.threads["training"] == 1:
        line += f"; in CPU time per step, which their turns do not count, training is {ratio:.2f}x"
    return line


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
        "multiply-add\nratio",
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
            _ratio(point.training.work_ratio),
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
    warning = load_warning(result)
    if warning:
        parts.append(Text(warning, style="bold yellow"))
    if not result.complete:
        parts.append(
            Text(
                f"interrupted: {result.stages_done} of {len(result.stages)} stages measured",
                style="bold yellow",
            )
        )
    if result.sweep:
        parts += [Text(""), _sweep_table(result), sweep_chart(result)]
    return parts


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plan_line(run: BenchRun) -> str:
    """What will be measured, where, and how long it should take: one line, before measuring."""
    plan = run.plan
    threads = plan.threads["training"]
    device = f"cpu ({threads} thread{'s' * (threads != 1)})"
    if plan.device.type == "cuda":
        device = str(plan.device)
    sizes = "--quick sizes" if run.request.quick else "the paper's sizes"
    baseline = run.baseline.variant
    if run.baseline.architecture != baseline:
        baseline += f" ({run.baseline.architecture})"
    line = (
        f"plan: preset {plan.sequnet.preset}, Seq-U-Net ({run.sequnet.architecture}) vs "
        f"{baseline}, {sizes}, on {device}: {'; '.join(_measurements(run))}. "
        f"{len(run.stages)} stages, about {duration(sum(run.estimates))} "
        f"(calibrated in {duration(run.calibration_seconds)})"
    )
    if run.quick_estimate is not None:
        line += f"; --quick would take about {duration(run.quick_estimate)} here"
    return line + "."


def _measurements(run: BenchRun) -> list[str]:
    """The stages in words: the training comparison, the generation batches, the sweep."""
    stages = run.stages
    first = stages[0]
    assert isinstance(first, TrainingStage)  # `plan_stages` puts the training comparison first
    batches = sorted(stage.batch_size for stage in stages if isinstance(stage, GenerationStage))
    sweep = [stage for stage in stages if isinstance(stage, TrainingStage) and stage.levels]
    parts = [
        (
            f"training at batch {first.batch_size} x {first.sequnet.targets:,} targets "
            f"({first.sequnet.warmup_steps} warm-up + {first.sequnet.steps} timed steps each, "
            "interleaved)"
        ),
        (
            f"generation at batch {' and '.join(map(str, batches))} "
            f"(at least {run.plan.sizes.repeat} chunks and about "
            f"{run.plan.sizes.generation_seconds:g} s each, interleaved)"
        ),
    ]
    if sweep:
        sides = sweep[0].sequnet
        parts.append(
            f"a sweep over {sweep[0].levels}-{sweep[-1].levels} levels "
            f"(batch {sides.batch_size} x {sides.targets:,} targets, "
            f"width {sides.config.model.network.width})"
        )
    return parts


def stage_line(run: BenchRun, index: int, finished: bool) -> str:
    """One line for a log when a stage starts or ends."""
    count = f"[{index + 1}/{len(run.stages)}] {run.stages[index].label}"
    if not finished:
        return f"{count}: about {duration(run.estimates[index])}"
    return (
        f"{count}: done in {duration(run.measured[index])}, {duration(run.elapsed)} elapsed, "
        f"about {duration(run.seconds_left())} left"
    )


def live_view(run: BenchRun) -> RenderableType:
    """The screen while measuring: the stage, elapsed and remaining time, and the results so
    far (the table, and the sweep's chart once it has points)."""
    done = len(run.measured)
    total = len(run.stages)
    elapsed, left = run.elapsed, run.seconds_left()
    stage = f"[{done + 1}/{total}] {run.stages[done].label}" if done < total else "done"
    status = f"{stage} · {duration(elapsed)} elapsed, about {duration(left)} left"
    line = Table.grid(padding=(0, 1))
    bar = ProgressBar(total=max(elapsed + left, 1e-9), completed=elapsed, width=20)
    line.add_row(bar, Text(status, style="bold"))
    result = run.result()
    parts: list[RenderableType] = [line, _main_table(result)]
    warning = load_warning(result)
    if warning:
        parts.append(Text(warning, style="bold yellow"))
    if result.sweep:
        parts += [_sweep_table(result), sweep_chart(result)]
    return Group(*parts)
