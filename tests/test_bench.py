"""`sequnet bench`: output structure and JSON schema on tiny sizes, and the measurement helpers
(interleaving, medians, the CPU load of other processes, work counts, memory figures).

Nothing here checks a timing: the machine running the tests may be loaded or slow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import typer
from graphs import emulated_graphs  # noqa: F401  (a fixture)
from typer.testing import CliRunner, Result

from models import (
    CausalNetwork,
    ResidualSeqUNet,
    ResidualSeqUNetConfig,
    SeqUNet,
    SeqUNetConfig,
    TCNConfig,
    WaveNet,
)
from sequnet_cli import bench, captured_step
from sequnet_cli.app import bench as bench_command
from sequnet_cli.bench import BenchSizes, TrainingSpec, estimate, machine, measure, streams, work
from sequnet_cli.bench import plan as bench_plan
from sequnet_cli.bench.plan import receptive_field, sweep_pair, with_network
from sequnet_cli.bench.render import bar
from sequnet_cli.config import RunConfig, resolve
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.tasks import Batch, task_for
from sequnet_cli.training_step import TrainingStep

TINY = BenchSizes(
    warmup_steps=1,
    repeat=2,
    generation_seconds=0.0,
    width_scale=0.02,
    targets=8,
    sweep_levels=(2, 3),
    sweep_width=4,
    sweep_targets=8,
    isolate=False,  # the fresh-process memory measurement has its own test
)
CPU = torch.device("cpu")


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_plan, "bench_sizes", lambda task, quick: TINY)
    monkeypatch.setattr(estimate, "STEADY_STEPS", 1)  # a shorter calibration, same method
    monkeypatch.setattr(estimate, "MIN_STREAM_SECONDS", 0.0)
    monkeypatch.setattr(machine, "CPU_PRODUCT_SIZE", 64)


def _invoke(*args: str) -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)  # keeps `bench` a subcommand, as in the real app
    app.command("bench")(bench_command)
    return CliRunner().invoke(app, ["bench", *args])


@pytest.mark.usefixtures("tiny")
def test_json_document_follows_the_schema() -> None:
    result = _invoke("--preset", "piano-small", "--quick", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {
        "schema", "device", "device_name", "torch", "threads", "preset", "task", "quick", "unit",
        "sample_rate", "memory_measure", "models", "training", "generation", "paper", "sweep",
        "complete", "stages_done", "stages_total", "timing", "repeat", "matrix_product",
    }  # fmt: skip
    assert document["schema"] == 3 and document["repeat"] == TINY.repeat
    products = document["matrix_product"]
    assert products["size"] == 64 and products["float32"] > 0
    assert products["bfloat16"] is None  # the CPU trains in float32
    assert (document["complete"], document["stages_done"], document["stages_total"]) == (
        True,
        5,  # training, generation at batch 1 and 2, two sweep depths
        5,
    )
    assert (document["device"], document["preset"], document["unit"]) == (
        "cpu",
        "piano-small",
        "samples",
    )
    assert set(document["threads"]) == {"training", "generation_batch_1", "generation_batch"}
    assert document["threads"]["generation_batch_1"] == 1
    models = document["models"]
    assert (models["sequnet"]["architecture"], models["baseline"]["architecture"]) == (
        "residual-sequnet",
        "wavenet",
    )
    training = document["training"]
    assert training["batch_size"] == 2  # audio default: the paper's Table 1 batch
    for side in ("sequnet", "baseline"):
        measured = training[side]
        assert measured["targets"] == TINY.targets and measured["steps"] == TINY.repeat
        assert len(measured["step_seconds"]) == len(measured["step_cpu_seconds"]) == TINY.repeat
        assert measured["cpu_seconds_per_step"] > 0
        assert measured["seconds_min"] <= measured["seconds_per_step"] <= measured["seconds_max"]
        assert measured["inputs"] == models[side]["receptive_field"] - 1 + TINY.targets
        assert measured["peak_memory_bytes"] is None and measured["activation_bytes"] > 0
        assert measured["counted_memory_bytes"] > measured["activation_bytes"]
        assert measured["allocator_peak_bytes"] is None  # CUDA only
        assert measured["precision"] == "float32"
        assert 0 < measured["forward_multiply_adds"] < measured["training_multiply_adds"]
        assert measured["flops_per_second"] == pytest.approx(
            2 * measured["training_multiply_adds"] / measured["seconds_per_step"]
        )
        assert measured["matrix_product_flops"] == products["float32"]
        assert measured["efficiency"] == pytest.approx(
            measured["flops_per_second"] / products["float32"]
        )
    ratios = training["ratios"]
    assert set(ratios) == {
        "time", "time_rounds", "cpu_time", "multiply_adds", "memory", "activations",
        "counted_memory",
    }  # fmt: skip
    assert ratios["multiply_adds"] == pytest.approx(
        training["baseline"]["training_multiply_adds"]
        / training["sequnet"]["training_multiply_adds"]
    )
    low, high = ratios["time_rounds"]
    assert low <= high and len(ratios["time_rounds"]) == 2
    assert "cpu_load" in training
    runs = document["generation"]["runs"]
    assert [run["batch_size"] for run in runs] == [1, 2]
    assert runs[0]["sequnet"]["cycle"] == 2 ** (models["sequnet"]["network"]["levels"] - 1)
    for run in runs:
        assert run["captured"] is None  # CUDA graphs: on CUDA only
        assert not run["sequnet"]["captured"] and not run["baseline"]["captured"]
        assert run["sequnet"]["steps"] % run["sequnet"]["cycle"] == 0
        assert len(run["sequnet"]["chunk_seconds"]) == len(run["baseline"]["chunk_seconds"])
        assert len(run["sequnet"]["chunk_seconds"]) >= TINY.repeat
        assert run["multiply_adds_ratio"] == pytest.approx(
            run["baseline"]["multiply_adds_per_sample"] / run["sequnet"]["multiply_adds_per_sample"]
        )
        assert run["baseline"]["realtime"] == pytest.approx(
            run["baseline"]["samples_per_second"] / 16000
        )
    assert document["paper"] is None
    assert [point["levels"] for point in document["sweep"]] == [2, 3]
    assert document["sweep"][0]["sequnet"]["network"]["channels"] == TINY.sweep_width


@pytest.mark.usefixtures("tiny")
def test_table_shows_both_models_the_paper_and_the_sweep() -> None:
    result = _invoke(
        "--preset", "jsb", "--quick", "--device", "cpu", "--batch-size", "3", "--threads", "1"
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "training batch 3 with 8 targets" in text
    for expected in (
        "Seq-U-Net",
        "tcn",
        "training step",
        "peak memory",
        "batch 3, 1 thread",
        "frames/s",
        "multiply-adds per step",
        "FLOP/s",
        "of float32",  # the share of the matrix-product rate
        "multiply-adds per",  # generated frame
        "of the multiply-add ratio: tcn computes at",  # this run's rates, then why in general
        "A CPU is bound mostly by arithmetic, so its time ratio follows the multiply-add ratio",
    ):
        assert expected in text
    assert "0.92x" in text and "1.60x" in text  # Table 1, JSB: 0.0034 / 0.0037 s, 13.1 / 8.2 MB
    assert "torch " + torch.__version__ in text
    assert "cost against depth" in text and "L=2" in text and "L=3" in text and "█" in text


@pytest.mark.usefixtures("tiny")
def test_no_sweep_leaves_the_sweep_out() -> None:
    result = _invoke("--preset", "jsb", "--quick", "--device", "cpu", "--no-sweep", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sweep"] == []
    assert document["training"]["batch_size"] == 16  # jsb's shared [train] batch, for both models


def test_unknown_preset_or_model_is_a_config_error() -> None:
    assert isinstance(_invoke("--preset", "no-such-preset").exception, ConfigError)
    assert isinstance(_invoke("--preset", "jsb", "--vs", "wavenet").exception, ConfigError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_device_error() -> None:
    assert isinstance(_invoke("--preset", "jsb", "--device", "cuda").exception, DeviceError)


def _spec(config: RunConfig, batch: int = 2, targets: int = 20, steps: int = 2) -> TrainingSpec:
    return TrainingSpec(config, batch, targets, warmup_steps=1, steps=steps, threads=1)


def _jsb(channels: tuple[int, ...] = (8, 8), *overrides: str) -> RunConfig:
    return with_network(resolve("jsb", None, list(overrides)), SeqUNetConfig(channels))


def test_fresh_processes_report_each_networks_peak_memory() -> None:
    config = with_network(resolve("jsb", "tcn", []), TCNConfig((16, 16)))
    spec = TrainingSpec(config, batch_size=4, targets=2000, warmup_steps=1, steps=2, threads=1)
    (measured,) = bench.measure_training([spec], CPU, isolate=True).measurements
    assert measured.peak_memory_bytes is not None and measured.peak_memory_bytes > 0
    assert measured.steps == 2 and measured.seconds_per_step > 0
    assert measured.inputs == 2000  # piano rolls are trained from their first frame
    (alone,) = bench.measure_training([spec], CPU, isolate=False).measurements
    assert alone.peak_memory_bytes is None


def test_steps_of_both_networks_are_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = TrainingStep.__call__

    def spy(self: TrainingStep, batch: Batch) -> tuple[float, int]:
        calls.append(self.network.__class__.__name__)
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", spy)
    ours = _spec(_jsb(), steps=3)
    theirs = _spec(with_network(resolve("jsb", "tcn", []), TCNConfig((8, 8))), steps=3)
    found = bench.measure_training([ours, theirs], CPU, isolate=False)
    a, b = found.measurements
    # one warm-up step each, then three rounds of one step each, in turn
    assert calls == ["SeqUNet", "TCN"] + ["SeqUNet", "TCN"] * 3
    assert a.steps == b.steps == 3
    (product,) = found.matrix_products  # timed in turn with the steps, in float32
    assert product.precision == "float32" and product.flops_per_second > 0
    assert a.matrix_product_flops == b.matrix_product_flops == product.flops_per_second


def test_a_measurement_reports_the_median_step_and_its_spread() -> None:
    measured = measure.TrainingMeasurement(
        step_seconds=(0.3, 0.1, 0.9, 0.2, 0.25),
        inputs=10,
        targets=5,
        peak_memory_bytes=None,
        activation_bytes=1,
        counted_memory_bytes=2,
        training_multiply_adds=10**9,
        matrix_product_flops=4e10,
        step_cpu_seconds=(0.2, 0.1, 0.2, 0.2, 0.25),
    )
    assert measured.seconds_per_step == 0.25 and measured.steps == 5  # the 0.9 s outlier aside
    assert measured.flops_per_second == pytest.approx(8e9)
    assert measured.efficiency == pytest.approx(0.2)
    document = measured.to_json()
    assert (document["seconds_min"], document["seconds_max"]) == (0.1, 0.9)
    assert measure.TrainingMeasurement.from_json(document) == measured
    assert measured.cpu_seconds_per_step == 0.2
    comparison = bench.results.TrainingComparison(
        1, measured, dataclasses.replace(measured, step_seconds=(0.6, 0.3, 0.9, 0.2, 0.5))
    )
    assert comparison.time_ratio == pytest.approx(0.5 / 0.25)  # of the medians
    assert comparison.round_ratios == pytest.approx([2.0, 3.0, 1.0, 1.0, 2.0])


def _fake_proc_stat(monkeypatch: pytest.MonkeyPatch, other_cores: float) -> None:
    """/proc/stat as if other processes kept `other_cores` of 4 cores busy besides this one."""
    started = time.perf_counter()
    own = sum(os.times()[:4])

    def busy() -> tuple[float, int]:
        elapsed = time.perf_counter() - started
        return sum(os.times()[:4]) - own + other_cores * elapsed, 4

    monkeypatch.setattr(machine, "_busy_cpu_seconds", busy)
    monkeypatch.setattr(machine, "SHORTEST_READING", 0.0)


@pytest.mark.parametrize(("other", "busy"), [(0.0, False), (1.5, True)])
def test_load_of_other_processes_is_read_beside_the_measurement(
    monkeypatch: pytest.MonkeyPatch, other: float, busy: bool
) -> None:
    _fake_proc_stat(monkeypatch, other)
    with machine.LoadMonitor() as monitor:
        time.sleep(0.05)
    load = monitor.reading
    assert load is not None and load.cores == 4 and load.busy == busy
    assert load.other_cores == pytest.approx(other, abs=0.2)


def test_no_load_reading_without_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_busy_cpu_seconds", lambda: None)
    with machine.LoadMonitor() as monitor:
        pass
    assert monitor.reading is None


@pytest.mark.usefixtures("tiny")
def test_a_busy_cpu_is_warned_of_in_the_table_and_the_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_proc_stat(monkeypatch, 1.5)
    table = _invoke("--preset", "jsb", "--quick", "--no-sweep", "--threads", "1")
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())  # the line as printed, whatever the wrapping
    line = text[text.index("warning: ") :]
    # The reading is of the whole measurement's own CPU time, counted in clock ticks (10 ms) at
    # slightly other instants than the fake's: a tenth of a core either way on a busy machine.
    shown = re.match(r"warning: other processes kept up to ([\d.]+) of 4 CPU cores busy", line)
    assert shown is not None, line
    assert float(shown.group(1)) == pytest.approx(1.5, abs=0.3)
    assert "(training, generation at batch 1, generation at batch 16;" in line
    assert "in CPU time per step, which their turns do not count, training is" in line
    document = json.loads(_invoke("--preset", "jsb", "--quick", "--json", "--no-sweep").stdout)
    load = document["training"]["cpu_load"]
    assert load["busy"] and load["cores"] == 4 and load["other_cores"] == pytest.approx(1.5, 0.2)
    assert document["generation"]["runs"][0]["cpu_load"]["busy"]


@pytest.mark.usefixtures("tiny")
def test_repeat_sets_the_timed_rounds() -> None:
    result = _invoke("--preset", "jsb", "--quick", "--json", "--no-sweep", "--repeat", "3")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["repeat"] == 3
    assert len(document["training"]["sequnet"]["step_seconds"]) == 3
    assert len(document["training"]["baseline"]["step_seconds"]) == 3
    for run in document["generation"]["runs"]:
        assert len(run["sequnet"]["chunk_seconds"]) >= 3
    assert _invoke("--preset", "jsb", "--repeat", "0").exit_code == 2  # refused by the option


def test_training_work_counts_both_gradients_of_a_convolution_but_no_input_gradient() -> None:
    counter = work.WorkCounter()
    x = torch.zeros(2, 3, 50, device="meta")
    weight = torch.zeros(4, 3, 5, device="meta", requires_grad=True)
    forward = 2 * 4 * 42 * 3 * 5  # (B, C_out, T_out) x (C_in x kernel)
    with counter:
        torch.nn.functional.conv1d(x, weight, dilation=2).sum().backward()
    assert counter.multiply_adds == forward + forward  # forward, and the weight's gradient only
    counter = work.WorkCounter()
    with counter:
        hidden = torch.nn.functional.conv1d(x, weight, dilation=2)  # (2, 4, 42)
        following = torch.zeros(4, 4, 5, device="meta", requires_grad=True)
        torch.nn.functional.conv1d(hidden, following).sum().backward()
    second = 2 * 4 * 38 * 4 * 5  # and its backward: its weight's and its input's gradients
    assert counter.multiply_adds == forward + second + 2 * second + forward


@pytest.mark.parametrize(("preset", "variant"), [("jsb", "sequnet"), ("piano", "wavenet")])
def test_a_training_step_is_about_three_forward_passes(preset: str, variant: str) -> None:
    config = resolve(preset, variant, [])
    counted = work.count_training_work(config, 2, 100)
    assert counted.forward == work.count_work(config, 2, 100).multiply_adds
    # the first convolution computes no gradient for the network's input
    assert 2.5 * counted.forward < counted.training < 3 * counted.forward


@pytest.mark.parametrize(
    "network",
    [SeqUNet(88, 88, [4, 6, 8, 8]), ResidualSeqUNet(256, 256, 8, levels=4, depth=2)]
    + [WaveNet(256, 256, 8, 8, 16, layers=4, stacks=2, kernel_size=2)],
)
def test_generation_work_is_amortised_over_whole_clock_cycles(network: CausalNetwork) -> None:
    """Per element, a stream does its steps' work over whole cycles (a Seq-U-Net's first step
    runs every level, the next only the first), about what a valid batch pass does per extra
    output (the stream also computes a few outputs the batch pass leaves out)."""
    config = resolve("jsb" if network.in_channels == 88 else "piano", None, [])
    task = task_for(config)
    (measured,), _ = bench.measure_generation(
        [network], task, 3, CPU, min_seconds=0.0, rounds=1, threads=1
    )
    steps = 2 * max(network.clock_cycle, 64)
    stream = network.stream(1)
    with work.WorkCounter() as counter, torch.inference_mode():
        for _ in range(steps):
            stream.step(torch.zeros(1, network.in_channels))
    assert measured.multiply_adds_per_sample == counter.multiply_adds / steps
    cycle = max(network.clock_cycle, 64)
    lengths = (network.receptive_field + cycle, network.receptive_field + 3 * cycle)
    counts = []
    for length in lengths:
        with work.WorkCounter() as counter, torch.no_grad():
            network(torch.zeros(1, network.in_channels, length), outputs=length - lengths[0] + 1)
        counts.append(counter.multiply_adds)
    per_output = (counts[1] - counts[0]) / (lengths[1] - lengths[0])
    assert per_output <= measured.multiply_adds_per_sample <= 1.05 * per_output


def test_saved_activations_count_the_input_but_no_parameter() -> None:
    config = _jsb((8, 8, 8))
    task = task_for(config)
    network = task.build_network()
    step = TrainingStep(network, task, config.train)
    batch = task.random_batch(2, 40, network.receptive_field, torch.Generator().manual_seed(0))
    saved = measure.saved_activation_bytes(step, batch)
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    assert saved >= batch.x.numel() * batch.x.element_size() and saved > 0
    assert saved != parameters  # not simply the weights


def test_saved_activations_are_counted_in_the_steps_precision() -> None:
    """Under the step's bfloat16 autocast (CPU autocast here, CUDA's by default) most saved
    tensors are half the size: counted without it, they would read about twice too high."""
    sizes = {}
    for precision in ("fp32", "bf16"):
        config = with_network(
            resolve("piano", None, [f"train.precision={precision}"]),
            ResidualSeqUNetConfig(16, levels=4, depth=1),
        )
        task = task_for(config)
        torch.manual_seed(0)
        network = task.build_network()
        step = TrainingStep(network, task, config.train)
        batch = task.random_batch(2, 200, network.receptive_field, torch.Generator())
        sizes[precision] = measure.saved_activation_bytes(step, batch)
    assert 0.4 < sizes["bf16"] / sizes["fp32"] < 0.7


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@pytest.mark.parametrize("ema", [0.0, 0.999])
def test_counted_memory_is_weights_gradients_adam_activations_and_batch(ema: float) -> None:
    config = _jsb((8, 8, 8), f"train.ema={ema}")
    task = task_for(config)
    network = task.build_network()
    step = TrainingStep(network, task, config.train)
    batch = task.random_batch(3, 40, network.receptive_field, torch.Generator().manual_seed(0))
    step(batch)
    saved = measure.saved_activation_storages(step, batch)
    counted = measure.counted_training_bytes(step, batch, saved)
    weights = _bytes(list(network.parameters()))
    copies = 5 if ema else 4  # weights, gradients, Adam's two moments, the average
    data = {t.untyped_storage().data_ptr(): t for t in (batch.x, batch.target, batch.mask)}
    assert set(data) & set(saved)  # the loss keeps its targets: counted once
    unsaved = [tensor for address, tensor in data.items() if address not in saved]
    expected = copies * weights + sum(saved.values()) + _bytes(unsaved)
    # beyond them: Adam's step count per tensor, and the average's count of updates
    scalars = 4 * len(list(network.parameters())) + (8 if ema else 0)
    assert expected <= counted <= expected + scalars


def test_training_measurement_counts_its_memory_on_every_device() -> None:
    config = _jsb()
    (measured,) = bench.measure_training([_spec(config, steps=1)], CPU, isolate=False).measurements
    parameters = sum(p.numel() for p in task_for(config).build_network().parameters())
    assert measured.counted_memory_bytes >= 4 * 4 * parameters + measured.activation_bytes
    assert measured.allocator_peak_bytes is None  # CUDA only


def test_memory_pass_measures_an_eager_step_without_autotuning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The memory pass builds its own step with capture off (a replayed graph allocates
    nothing) and runs it with cuDNN benchmark mode off; CUDA's counters are faked here."""
    steps: list[tuple[bool, bool]] = []  # (capture asked for, benchmark mode) at each step
    real = TrainingStep.__call__

    def spy(self: TrainingStep, batch: Batch) -> tuple[float, int]:
        steps.append((self.config.capture, torch.backends.cudnn.benchmark))
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", spy)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 1234)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as bench runs
    config = _jsb((8, 8), "train.capture=true")
    task = task_for(config)
    network = task.build_network()
    batch = task.random_batch(2, 20, network.receptive_field, torch.Generator())
    assert measure.memory_pass(network, task, config.train, batch, CPU) == 1234
    assert steps == [(False, False)] * measure.MEMORY_PASS_STEPS
    assert torch.backends.cudnn.benchmark  # restored
    assert all(parameter.grad is None for parameter in network.parameters())
    steps.clear()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    bench.measure_training([_spec(config, steps=1)], CPU, isolate=False)
    assert steps == [(True, True)] * 2  # the timed step (warm-up, timed) autotunes
    assert not torch.backends.cudnn.benchmark


@pytest.mark.gpu
def test_cuda_memory_pass_measures_the_model_not_the_autotuning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = with_network(resolve("piano", None, []), ResidualSeqUNetConfig(32, levels=6))
    spec = TrainingSpec(config, batch_size=2, targets=2000, warmup_steps=1, steps=2, threads=1)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as bench runs, restored after
    (measured,) = bench.measure_training([spec], torch.device("cuda")).measurements
    assert torch.backends.cudnn.benchmark  # the memory pass turns it off only for itself
    assert measured.peak_memory_bytes is not None and measured.allocator_peak_bytes is not None
    parameters = sum(p.numel() for p in task_for(config).build_network().parameters())
    # The peak holds the activations of an eager step (a replayed graph's live in its pool),
    # with the weights and Adam's two moments; at most the step's own tensors, temporaries and
    # heuristic (not autotuned) cuDNN workspaces.
    assert measured.peak_memory_bytes >= measured.activation_bytes + 3 * 4 * parameters
    counted = measured.counted_memory_bytes
    assert measured.peak_memory_bytes <= 3 * counted + 256 * 2**20


@pytest.mark.gpu
def test_cuda_activations_are_counted_in_bfloat16_and_the_timed_step_is_autotuned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("needs a GPU with bfloat16")
    modes: list[bool] = []
    real = captured_step.CapturedStep.__init__

    def spy(self: captured_step.CapturedStep, *args: Any, **kwargs: Any) -> None:
        modes.append(torch.backends.cudnn.benchmark)
        real(self, *args, **kwargs)

    monkeypatch.setattr(captured_step.CapturedStep, "__init__", spy)
    sizes = {}
    for precision in ("fp32", "bf16"):
        config = with_network(
            resolve("piano", None, [f"train.precision={precision}"]),
            ResidualSeqUNetConfig(32, levels=6),
        )
        spec = TrainingSpec(config, batch_size=2, targets=2000, warmup_steps=1, steps=1, threads=1)
        (measured,) = bench.measure_training([spec], torch.device("cuda")).measurements
        assert measured.precision == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        sizes[precision] = measured.activation_bytes
    assert 0.4 < sizes["bf16"] / sizes["fp32"] < 0.7
    assert modes == [True, True]  # each captured with benchmark mode on


def test_bench_times_the_trainers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = TrainingStep.__call__

    def counted(self: TrainingStep, batch: Batch) -> tuple[float, int]:
        calls.append(self.config.batch_size)
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", counted)
    bench.measure_training([_spec(_jsb(), batch=3)], CPU, isolate=False)
    assert len(calls) == 3  # the warm-up step and the two timed ones


@pytest.mark.usefixtures("tiny")
def test_piano_small_is_measured_with_its_own_coding() -> None:
    """piano-small feeds the amplitude as a 257th input channel: bench builds that network."""
    result = _invoke("--preset", "piano-small", "--quick", "--json", "--no-sweep")
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    for side in ("sequnet", "baseline"):
        config = resolve("piano-small", models[side]["variant"], [])
        network_config = config.model.network.scaled(TINY.width_scale)
        network = task_for(with_network(config, network_config)).build_network()
        assert network.in_channels == 257
        assert models[side]["parameters"] == sum(p.numel() for p in network.parameters())


@pytest.mark.parametrize(
    ("network", "cycle"),
    [
        (SeqUNet(88, 88, [4, 4, 4, 4]), 8),
        (SeqUNet(88, 88, [4] * 8), 128),
        (WaveNet(88, 88, 4, 4, 4, layers=3, stacks=1), 1),
    ],
)
def test_generation_times_whole_clock_cycles(network: torch.nn.Module, cycle: int) -> None:
    task = task_for(resolve("jsb", None, []))
    (measured,), _ = bench.measure_generation(
        [network], task, 3, CPU, min_seconds=0.0, rounds=2, threads=1
    )
    assert measured.cycle == cycle
    assert measured.chunk_steps == max(cycle, 64)  # a whole number of cycles
    assert measured.steps == 2 * measured.chunk_steps  # two rounds of one chunk
    median = statistics.median(measured.chunk_seconds)
    assert measured.samples_per_second == pytest.approx(3 * measured.chunk_steps / median)
    assert not network.training


def test_generation_chunks_of_both_networks_are_interleaved_and_equally_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(streams, "_interleaved_chunks", _spy_chunks(calls))
    networks = [SeqUNet(88, 88, [4] * 8), WaveNet(88, 88, 4, 4, 4, layers=3, stacks=1)]
    task = task_for(resolve("jsb", None, []))
    (ours, theirs), _ = bench.measure_generation(
        networks, task, 1, CPU, min_seconds=0.0, rounds=3, threads=1
    )
    assert calls == [0, 1] * 3  # one chunk each, in turn
    assert ours.chunk_steps == theirs.chunk_steps == 128  # whole cycles of both
    assert len(ours.chunk_seconds) == len(theirs.chunk_seconds) == 3
    assert ours.multiply_adds_per_sample and theirs.multiply_adds_per_sample


def _spy_chunks(calls: list[int]) -> Callable[..., list[list[float]]]:
    """`streams._interleaved_chunks` that records which stepper ran each chunk."""
    real = streams._interleaved_chunks

    def spy(steps: list[Callable[[], None]], *args: Any) -> list[list[float]]:
        wrapped = [_chunk_marker(calls, index, step) for index, step in enumerate(steps)]
        return real(wrapped, *args)

    return spy


def _chunk_marker(calls: list[int], index: int, step: Callable[[], None]) -> Callable[[], None]:
    """`step`, noting `index` in `calls` when a run of its calls starts."""

    def call() -> None:
        if not calls or calls[-1] != index:
            calls.append(index)
        step()

    return call


@pytest.mark.usefixtures("emulated_graphs")
def test_captured_generation_is_measured_over_whole_cycles_too() -> None:
    # CUDA graphs emulated on a CPU (tests/graphs.py): the captured step program bench times.
    network = SeqUNet(88, 88, [4, 4, 4, 4])
    task = task_for(resolve("jsb", None, []))
    (measured,), _ = bench.measure_generation(
        [network], task, 2, CPU, min_seconds=0.0, rounds=1, threads=1, captured=True
    )
    assert measured.captured and measured.steps == 64 and measured.cycle == 8
    assert measured.to_json()["captured"] is True
    assert measured.multiply_adds_per_sample is None  # a replayed graph dispatches nothing


@pytest.mark.gpu
def test_captured_generation_is_measured_on_cuda() -> None:
    network = ResidualSeqUNet(256, 256, 8, levels=5, depth=2).cuda()
    task = task_for(resolve("piano", None, []))
    cuda = torch.device("cuda")
    (eager,), _ = bench.measure_generation(
        [network], task, 1, cuda, min_seconds=0.2, rounds=2, threads=1
    )
    (graphs,), _ = bench.measure_generation(
        [network], task, 1, cuda, min_seconds=0.2, rounds=2, threads=1, captured=True
    )
    assert graphs.captured and not eager.captured
    assert graphs.samples_per_second > 0 and graphs.steps % graphs.cycle == 0


@pytest.mark.parametrize("preset", ["piano", "jsb"])
def test_sweep_baseline_matches_the_receptive_field(preset: str) -> None:
    ours, theirs = (
        resolve(preset, name, []).model
        for name in ("sequnet", "wavenet" if preset == "piano" else "tcn")
    )
    for levels in range(2, 12):
        sequnet, baseline = sweep_pair(ours, theirs, levels, 6)
        fields = (
            receptive_field(m.architecture, c) for m, c in ((ours, sequnet), (theirs, baseline))
        )
        assert abs(math.log(next(fields) / next(fields))) <= math.log(1.5)
        assert baseline.width == 6


def test_quick_scales_every_width() -> None:
    config = resolve("piano", "wavenet", [])
    wavenet = config.model.network
    scaled = wavenet.scaled(bench_plan.bench_sizes(task_for(config), quick=True).width_scale)
    assert (scaled.residual_channels, scaled.dilation_channels, scaled.skip_channels) == (
        32,
        32,
        128,
    )
    assert scaled.layers == wavenet.layers and scaled.stacks == wavenet.stacks


def test_bar_is_proportional() -> None:
    assert bar(1.0, 1.0, width=10) == "█" * 10
    assert bar(0.5, 1.0, width=10) == "█" * 5
    assert bar(0.0, 1.0, width=10) == ""
