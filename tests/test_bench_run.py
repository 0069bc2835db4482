"""`sequnet bench` as a run of stages: the plan line, the estimate's arithmetic, the live view
filling in, and Ctrl-C keeping what was measured (a table, or a partial JSON document).

A shrunken bench runs through `main`; nothing here checks how long anything took.
"""

from __future__ import annotations

import io
import json
import math
import re

import pytest
import torch
from cli import assert_one_error_line, run, succeed
from rich.console import Console

from models import SeqUNetConfig
from sequnet_cli.bench import BenchRequest, BenchRun, BenchSizes, estimate, machine, render, work
from sequnet_cli.bench import plan as bench_plan
from sequnet_cli.bench import run as bench_run
from sequnet_cli.bench.estimate import Calibration, ProxyTiming, StepCost, StreamCost
from sequnet_cli.bench.plan import GenerationStage, Stage, TrainingStage, with_network
from sequnet_cli.bench.work import Work
from sequnet_cli.config import resolve
from sequnet_cli.console import error_console

TINY = BenchSizes(
    warmup_steps=1,
    repeat=1,
    generation_seconds=0.0,
    width_scale=0.02,
    targets=8,
    sweep_levels=(2, 3),
    sweep_width=4,
    sweep_targets=8,
    isolate=False,
)
STAGES = 5  # training, generation at batch 1 and at batch 2, two sweep depths
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_plan, "bench_sizes", lambda task, quick: TINY)
    monkeypatch.setattr(estimate, "STEADY_STEPS", 1)  # a shorter calibration, same method
    monkeypatch.setattr(estimate, "MIN_STREAM_SECONDS", 0.0)
    monkeypatch.setattr(machine, "CPU_PRODUCT_SIZE", 64)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, label: str) -> None:
    """Ctrl-C when the stage called `label` starts."""
    real = bench_run.run_stage

    def stage_or_interrupt(plan: bench_plan.BenchPlan, stage: Stage) -> bench_run.Outcome:
        if stage.label == label:
            raise KeyboardInterrupt
        return real(plan, stage)

    monkeypatch.setattr(bench_run, "run_stage", stage_or_interrupt)


def test_stages_come_from_one_list() -> None:
    bench = BenchRun(BenchRequest("piano-small", device="cpu", quick=True))
    labels = [stage.label for stage in bench.stages]
    assert labels == [
        "training, batch 2, 8 targets",
        "generation, batch 1",
        "generation, batch 2",
        "sweep, 2 levels, batch 1, 8 targets",
        "sweep, 3 levels, batch 1, 8 targets",
    ]
    no_sweep = BenchRun(BenchRequest("piano-small", device="cpu", quick=True, sweep=False))
    assert [stage.label for stage in no_sweep.stages] == labels[:3]


def test_plan_line_and_stage_lines_before_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    result = succeed(capsys, "bench", "--preset", "jsb", "--device", "cpu", "--threads", "1")
    plan = result.err.splitlines()[0]
    assert plan.startswith(
        "plan: preset jsb, Seq-U-Net (sequnet) vs tcn, the paper's sizes, on cpu"
    )
    assert "training at batch 16 x 8 targets (1 warm-up + 1 timed steps each, interleaved)" in plan
    assert "a sweep over 2-3 levels" in plan and f"{STAGES} stages, about" in plan
    assert "--quick would take about" in plan  # a CPU at full sizes says what --quick takes
    for index in range(1, STAGES + 1):
        assert f"[{index}/{STAGES}] " in result.err
    assert "[1/5] training, batch 16, 8 targets: about" in result.err
    assert "[5/5] sweep, 3 levels, batch 1, 8 targets: done in" in result.err
    assert "training step" in result.out and "L=3" in result.out
    assert "stages measured in" in result.out  # the time taken, against the estimate


def test_quick_does_not_estimate_quick_again(capsys: pytest.CaptureFixture[str]) -> None:
    result = succeed(capsys, "bench", "--preset", "jsb", "--quick", "--no-sweep", "--json")
    assert "--quick would take" not in result.err and "--quick sizes" in result.err
    timing = json.loads(result.out)["timing"]
    assert [stage["label"] for stage in timing["stages"]] == [
        "training, batch 16, 8 targets",
        "generation, batch 1",
        "generation, batch 16",
    ]
    assert all(stage["measured_seconds"] is not None for stage in timing["stages"])
    assert timing["estimated_seconds"] == pytest.approx(
        sum(stage["estimated_seconds"] for stage in timing["stages"])
    )


def test_ctrl_c_prints_the_table_so_far(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `main`, on a terminal: the live view fills in stage by stage, then Ctrl-C during
    the last sweep depth prints what was measured and one error line."""
    monkeypatch.setattr(error_console, "_force_terminal", True)
    monkeypatch.setattr(error_console, "is_interactive", True)
    interrupt_at(monkeypatch, "sweep, 3 levels, batch 1, 8 targets")
    result = run(capsys, "bench", "--preset", "piano-small", "--quick", "--device", "cpu")
    live = result.err  # the live view's frames, on stderr, drawn with cursor movements
    result.err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.err)
    assert_one_error_line(result, "interrupted after 4 of 5 stages", "table above")
    for stage in range(1, STAGES + 1):
        assert f"[{stage}/{STAGES}] " in live
    assert "elapsed" in live and "left" in live
    assert "training step" in live and "L=2" in live  # rows and chart as they came
    table = result.out
    assert "training step" in table and "batch 1, 1 thread" in table
    assert "batch 2, 2 threads" in table or "batch 2, 1 thread" in table
    assert "L=2" in table and "L=3" not in table  # the sweep point that finished, only
    assert "interrupted: 4 of 5 stages measured" in table


def test_ctrl_c_with_json_writes_a_partial_document(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at(monkeypatch, "generation, batch 2")
    result = run(capsys, "bench", "--preset", "piano-small", "--quick", "--json")
    assert_one_error_line(result, "interrupted after 2 of 5 stages", "document above")
    document = json.loads(result.out)
    assert (document["complete"], document["stages_done"], document["stages_total"]) == (
        False,
        2,
        STAGES,
    )
    assert document["training"]["sequnet"]["steps"] == TINY.repeat
    assert [run["batch_size"] for run in document["generation"]["runs"]] == [1]
    assert document["sweep"] == []
    measured = [stage["measured_seconds"] for stage in document["timing"]["stages"]]
    assert [value is not None for value in measured] == [True, True, False, False, False]


def test_ctrl_c_in_the_first_stage_still_shows_the_models(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at(monkeypatch, "training, batch 16, 8 targets")
    result = run(capsys, "bench", "--preset", "jsb", "--quick", "--no-sweep")
    assert_one_error_line(result, "interrupted after 0 of 3 stages")
    assert "parameters" in result.out and "training step" not in result.out


def test_live_view_fills_in_as_stages_finish() -> None:
    bench = BenchRun(BenchRequest("jsb", device="cpu", quick=True, threads=1))
    bench.estimate()
    screens: list[str] = []

    def capture(index: int, finished: bool) -> None:
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(render.live_view(bench))
        screens.append(console.export_text())

    bench.measure(capture)
    assert len(screens) == 2 * STAGES  # each stage as it starts and as it ends
    started_first, finished_first = screens[0], screens[1]
    assert "[1/5] training" in started_first and "training step" not in started_first
    assert "training step" in finished_first and "frames/s" not in finished_first
    assert "frames/s" in screens[3] and "L=2" not in screens[3]
    assert "L=2" in screens[7] and "L=3" not in screens[7]
    assert "done · " in screens[-1] and "L=3" in screens[-1]


def _calibration(isolate: bool = True) -> Calibration:
    calibration = Calibration(CPU, isolate, process_start_seconds=2.0)
    calibration.build_seconds_per_parameter = 1e-6
    return calibration


def test_training_estimate_adds_start_build_steps_and_the_first_steps_extra() -> None:
    config = with_network(resolve("jsb", None, []), SeqUNetConfig((8, 8, 8)))
    spec = bench_plan.TrainingSpec(config, 4, 40, warmup_steps=2, steps=5, threads=1)
    stage = TrainingStage(spec, spec)
    calibration = _calibration()
    cost = StepCost(
        seconds_per_operation=1e-4,
        seconds_per_multiply_add=1e-9,
        first_step_seconds_per_operation=1e-3,
        first_step_factor=0.5,
    )
    calibration.steps[estimate.step_key(spec)] = cost
    counted = work.count_work(config, 4, 40)
    step = counted.operations * 1e-4 + counted.multiply_adds * 1e-9
    first = counted.operations * 1e-3 + 0.5 * step
    build = counted.parameters * 1e-6
    # warm-up, timed, the activation count, the memory pass; two first steps (timing, memory)
    side = build + (2 + 5 + 1 / 3 + 2) * step + 2 * first
    fresh = 2.0 + build  # on a CPU the memory pass starts a process and builds again
    assert estimate.estimate_stages([stage], calibration) == [pytest.approx(2 * (side + fresh))]
    calibration.isolate = False  # in this process: no process to start
    assert estimate.estimate_stages([stage], calibration) == [pytest.approx(2 * side)]


@pytest.mark.parametrize(
    ("min_seconds", "rounds", "chunks"),
    [(0.0, 1, 1), (0.0, 3, 3), (0.9, 1, 6), (1.0, 1, 7), (1.3, 1, 8), (1.3, 9, 9)],
)
def test_generation_estimate_runs_interleaved_whole_chunks(
    min_seconds: float, rounds: int, chunks: int
) -> None:
    ours, theirs = resolve("jsb", None, []), resolve("jsb", "tcn", [])
    stage = GenerationStage(ours, theirs, 1, 1, min_seconds, rounds)
    calibration = _calibration()
    # chunks of the longer cycle, 128 steps: 0.32 s for the Seq-U-Net, 0.0128 s for the TCN,
    # 0.3328 s a round, until both together had twice `min_seconds`
    calibration.streams[estimate.stream_key(ours, 1, 1)] = StreamCost(0.0025, 128, 1000)
    calibration.streams[estimate.stream_key(theirs, 1, 1)] = StreamCost(0.0001, 1, 3000)
    seconds = 4000 * 1e-6 + (1 + chunks) * 128 * (0.0025 + 0.0001)  # a warm-up chunk each
    assert estimate.estimate_stages([stage], calibration) == [pytest.approx(seconds)]


def test_step_cost_fit_recovers_a_known_cost() -> None:
    truth = StepCost(2e-5, 3e-10, 4e-4, 0.5)
    short, long = Work(500, 10**6, 0), Work(500, 10**9, 0)

    def timing(work: Work) -> ProxyTiming:
        steady = truth.step_seconds(work)
        return ProxyTiming(steady + truth.first_step_extra(work), steady, work)

    fitted = StepCost.fit(timing(short), timing(long))
    for name in ("seconds_per_operation", "seconds_per_multiply_add"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name))
    # the short proxy's whole excess is taken per operation, so the share is a little lower
    assert fitted.first_step_seconds_per_operation == pytest.approx(
        4e-4 + 0.5 * truth.step_seconds(short) / 500
    )
    assert 0.45 < fitted.first_step_factor <= 0.5


def test_work_counts_convolution_and_matrix_multiply_adds() -> None:
    counter = work.WorkCounter()
    x = torch.zeros(2, 3, 50, device="meta")
    with counter:
        torch.nn.functional.conv1d(x, torch.zeros(4, 3, 5, device="meta"), dilation=2)  # T 42
        torch.nn.functional.conv_transpose1d(x, torch.zeros(3, 6, 2, device="meta"), stride=2)
        torch.zeros(7, 8, device="meta") @ torch.zeros(8, 9, device="meta")
        out = torch.zeros(7, 9, device="meta")  # the forms a stream's steps use
        torch.mm(torch.zeros(7, 8, device="meta"), torch.zeros(8, 9, device="meta"), out=out)
        out.addmm_(torch.zeros(7, 2, device="meta"), torch.zeros(2, 9, device="meta"))
    products = 7 * 8 * 9 * 2 + 7 * 2 * 9
    assert counter.multiply_adds == 2 * 4 * 42 * 3 * 5 + 2 * 3 * 50 * 6 * 2 + products
    assert counter.operations >= 3


def test_calibration_covers_every_kind_and_stage() -> None:
    bench = BenchRun(BenchRequest("jsb", device="cpu", quick=True, threads=1))
    calibration = estimate.calibrate(bench.stages, CPU, isolate=False)
    for stage in bench.stages:
        if isinstance(stage, TrainingStage):
            assert estimate.step_key(stage.sequnet) in calibration.steps
        else:
            assert estimate.stream_key(stage.baseline, stage.batch_size, 1) in calibration.streams
    costs = [value for cost in calibration.steps.values() for value in vars(cost).values()]
    assert all(value >= 0 and math.isfinite(value) for value in costs)
    assert calibration.process_start_seconds == 0.0  # nothing runs in a fresh process
    assert all(seconds > 0 for seconds in estimate.estimate_stages(bench.stages, calibration))


def test_time_left_is_scaled_by_the_finished_stages() -> None:
    bench = BenchRun(BenchRequest("jsb", device="cpu", quick=True, sweep=False))
    bench.estimates = [10.0, 20.0, 30.0]
    assert bench.seconds_left() == pytest.approx(60.0)
    bench.measured = [20.0, 40.0]  # twice as slow as estimated
    bench.stage_started = None
    assert bench.seconds_left() == pytest.approx(60.0)
    bench.measured.append(30.0)
    assert bench.seconds_left() == 0.0
