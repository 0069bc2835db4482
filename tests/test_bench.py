"""`sequnet bench`: output structure and JSON schema on tiny sizes, and the measurement helpers.

Nothing here checks a timing: the machine running the tests may be loaded or slow.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
from graphs import emulated_graphs  # noqa: F401  (a fixture)
from typer.testing import CliRunner, Result

from models import (
    ResidualSeqUNet,
    ResidualSeqUNetConfig,
    SeqUNet,
    SeqUNetConfig,
    TCNConfig,
    WaveNet,
)
from sequnet_cli import bench
from sequnet_cli.app import bench as bench_command
from sequnet_cli.bench import BenchSizes, TrainingSpec, estimate, measure
from sequnet_cli.bench import plan as bench_plan
from sequnet_cli.bench.plan import receptive_field, sweep_pair, with_network
from sequnet_cli.bench.render import bar
from sequnet_cli.config import resolve
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.tasks import task_for
from sequnet_cli.training_step import TrainingStep

TINY = BenchSizes(
    warmup_steps=1,
    train_steps=1,
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
        "complete", "stages_done", "stages_total", "timing",
    }  # fmt: skip
    assert document["schema"] == 2
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
        assert measured["targets"] == TINY.targets and measured["steps"] == TINY.train_steps
        assert measured["inputs"] == models[side]["receptive_field"] - 1 + TINY.targets
        assert measured["peak_memory_bytes"] is None and measured["activation_bytes"] > 0
        assert measured["counted_memory_bytes"] > measured["activation_bytes"]
        assert measured["allocator_peak_bytes"] is None  # CUDA only
    assert set(training["ratios"]) == {"time", "memory", "activations", "counted_memory"}
    runs = document["generation"]["runs"]
    assert [run["batch_size"] for run in runs] == [1, 2]
    assert runs[0]["sequnet"]["cycle"] == 2 ** (models["sequnet"]["network"]["levels"] - 1)
    for run in runs:
        assert run["captured"] is None  # CUDA graphs: on CUDA only
        assert not run["sequnet"]["captured"] and not run["baseline"]["captured"]
        assert run["sequnet"]["steps"] % run["sequnet"]["cycle"] == 0
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


def test_fresh_process_reports_positive_peak_memory() -> None:
    config = with_network(resolve("jsb", "tcn", []), TCNConfig((16, 16)))
    spec = TrainingSpec(config, batch_size=4, targets=2000, warmup_steps=1, steps=2, threads=1)
    measured = bench.measure_training(spec, CPU, isolate=True)
    assert measured.peak_memory_bytes is not None and measured.peak_memory_bytes > 0
    assert measured.steps == 2 and measured.seconds_per_step > 0
    assert measured.inputs == 2000  # piano rolls are trained from their first frame
    assert bench.measure_training(spec, CPU, isolate=False).peak_memory_bytes is None


def test_saved_activations_count_the_input_but_no_parameter() -> None:
    config = with_network(resolve("jsb", None, []), SeqUNetConfig((8, 8, 8)))
    task = task_for(config)
    network = task.build_network()
    batch = task.random_batch(2, 40, network.receptive_field, torch.Generator().manual_seed(0))
    saved = measure.saved_activation_bytes(network, task, batch)
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    assert saved >= batch.x.numel() * batch.x.element_size() and saved > 0
    assert saved != parameters  # not simply the weights


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@pytest.mark.parametrize("ema", [0.0, 0.999])
def test_counted_memory_is_weights_gradients_adam_activations_and_batch(ema: float) -> None:
    config = with_network(resolve("jsb", None, [f"train.ema={ema}"]), SeqUNetConfig((8, 8, 8)))
    task = task_for(config)
    network = task.build_network()
    step = TrainingStep(network, task, config.train)
    batch = task.random_batch(3, 40, network.receptive_field, torch.Generator().manual_seed(0))
    step(batch)
    saved = measure.saved_activation_storages(network, task, batch)
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
    config = with_network(resolve("jsb", None, []), SeqUNetConfig((8, 8)))
    spec = TrainingSpec(config, batch_size=2, targets=20, warmup_steps=0, steps=1, threads=1)
    measured = bench.measure_training(spec, CPU, isolate=False)
    parameters = sum(p.numel() for p in task_for(config).build_network().parameters())
    assert measured.counted_memory_bytes >= 4 * 4 * parameters + measured.activation_bytes
    assert measured.allocator_peak_bytes is None  # CUDA only


@pytest.mark.gpu
def test_cuda_memory_pass_measures_the_model_not_the_autotuning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = with_network(resolve("piano", None, []), ResidualSeqUNetConfig(32, levels=6))
    spec = TrainingSpec(config, batch_size=2, targets=2000, warmup_steps=1, steps=2, threads=1)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as bench runs, restored after
    measured = bench.measure_training(spec, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark  # the memory pass turns it off only for itself
    assert measured.peak_memory_bytes is not None and measured.allocator_peak_bytes is not None
    # at least the weights and Adam's two moments; at most the step's own tensors, temporaries
    # and heuristic (not autotuned) cuDNN workspaces
    parameters = sum(p.numel() for p in task_for(config).build_network().parameters())
    counted = measured.counted_memory_bytes
    assert 3 * 4 * parameters <= measured.peak_memory_bytes <= 3 * counted + 256 * 2**20


def test_bench_times_the_trainers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = TrainingStep.__call__

    def counted(self: TrainingStep, batch: object) -> tuple[float, int]:
        calls.append(self.config.batch_size)
        return real(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(TrainingStep, "__call__", counted)
    config = with_network(resolve("jsb", None, []), SeqUNetConfig((8, 8)))
    spec = TrainingSpec(config, batch_size=3, targets=20, warmup_steps=1, steps=2, threads=1)
    bench.measure_training(spec, CPU, isolate=False)
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
        (ResidualSeqUNet(256, 256, 4, levels=9, depth=1), 256),
        (WaveNet(256, 256, 4, 4, 4, layers=3, stacks=1), 1),
    ],
)
def test_generation_times_whole_clock_cycles(network: torch.nn.Module, cycle: int) -> None:
    task = task_for(resolve("jsb" if network.in_channels == 88 else "piano", None, []))
    measured = bench.measure_generation(network, task, 3, CPU, min_seconds=0.0, threads=1)
    assert measured.cycle == cycle
    assert measured.steps == max(cycle, 64)  # one chunk: a whole number of cycles
    assert measured.samples_per_second == pytest.approx(3 * measured.steps / measured.seconds)
    assert not network.training


@pytest.mark.usefixtures("emulated_graphs")
def test_captured_generation_is_measured_over_whole_cycles_too() -> None:
    # CUDA graphs emulated on a CPU (tests/graphs.py): the captured step program bench times.
    network = SeqUNet(88, 88, [4, 4, 4, 4])
    task = task_for(resolve("jsb", None, []))
    measured = bench.measure_generation(
        network, task, 2, CPU, min_seconds=0.0, threads=1, captured=True
    )
    assert measured.captured and measured.steps == 64 and measured.cycle == 8
    assert measured.to_json()["captured"] is True


@pytest.mark.gpu
def test_captured_generation_is_measured_on_cuda() -> None:
    network = ResidualSeqUNet(256, 256, 8, levels=5, depth=2).cuda()
    task = task_for(resolve("piano", None, []))
    cuda = torch.device("cuda")
    eager = bench.measure_generation(network, task, 1, cuda, min_seconds=0.2, threads=1)
    graphs = bench.measure_generation(
        network, task, 1, cuda, min_seconds=0.2, threads=1, captured=True
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
