"""What training and sampling on a GPU rely on, checked on the CPU as far as the logic goes
(resumed state read onto the CPU, a capture that fails or warms up leaving no trace, the
optimizer's capturability decided by the step, batches crossing as codes), and, marked `gpu`,
what only a GPU can show (captured steps equal eager ones, a resumed CUDA run equals an
uninterrupted one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cli import run, succeed, write_chorales

from models import SeqUNetConfig
from sequnet_cli import training
from sequnet_cli.captured_step import CapturedStep
from sequnet_cli.checkpoints import Run, capture_rng, find_run, restore_rng
from sequnet_cli.config import RunConfig, resolve
from sequnet_cli.tasks import Batch, task_for
from sequnet_cli.training_step import TrainingStep, captures

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def tiny_config(*overrides: str, dropout: float = 0.0) -> RunConfig:
    config = resolve("jsb", None, ["train.ema=0", "train.weight_decay=0.01", *overrides])
    model = dataclasses.replace(config.model, network=SeqUNetConfig((6, 6), 3, dropout))
    return dataclasses.replace(config, model=model)


def step_for(config: RunConfig, device: torch.device = CPU, **kwargs: Any) -> TrainingStep:
    torch.manual_seed(0)
    task = task_for(config)
    return TrainingStep(task.build_network().to(device), task, config.train, **kwargs)


def batches(config: RunConfig, count: int, device: torch.device = CPU) -> list[Batch]:
    generator = torch.Generator().manual_seed(1)
    task = task_for(config)
    return [task.random_batch(2, 12, 0, generator).to(device) for _ in range(count)]


def state_of(step: TrainingStep) -> list[torch.Tensor]:
    """Weights, then every optimizer tensor, copied."""
    return [tensor.detach().clone() for tensor in step._tensors()]


class ReplayGraph:
    """A CUDA graph stand-in: capture records the body, replay runs it again."""

    def capture(self, body: Callable[[], None]) -> None:
        self.body = body

    def replay(self) -> None:
        self.body()


class FailingGraph(ReplayGraph):
    """A capture that runs part of the step, then fails (as an out-of-memory capture does)."""

    def capture(self, body: Callable[[], None]) -> None:
        body()
        raise torch.OutOfMemoryError("out of memory while capturing")


# --- capture -------------------------------------------------------------------------------


def test_a_failed_capture_leaves_weights_optimizer_and_random_state_as_they_were() -> None:
    config = tiny_config(dropout=0.3)
    step = step_for(config, capture=False)
    first, second = batches(config, 2)
    step(first)  # the optimizer has state and moments to keep
    weights, random_state = state_of(step), torch.get_rng_state()
    with pytest.raises(torch.OutOfMemoryError):
        CapturedStep(step._update, step._tensors, second, graph=FailingGraph())
    for before, after in zip(weights, step._tensors(), strict=True):
        assert torch.equal(before, after)
    assert torch.equal(torch.get_rng_state(), random_state)


def test_a_failed_capture_falls_back_to_a_plain_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    import sequnet_cli.training_step as module

    monkeypatch.setattr(
        module, "CapturedStep", lambda *args: CapturedStep(*args, graph=FailingGraph())
    )
    config = tiny_config()
    step = step_for(config, capture=True)
    eager = step_for(config, capture=False)
    data = batches(config, 3)
    with pytest.warns(UserWarning, match="could not capture"):
        step(data[0])
    group = step.optimizer.param_groups[0]
    assert not step.capture and group["capturable"] is False and isinstance(group["lr"], float)
    eager(data[0])
    for batch in data[1:]:
        step(batch)
        eager(batch)
    for ours, theirs in zip(step.network.parameters(), eager.network.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_captured_step_with_dropout_draws_what_the_eager_step_draws() -> None:
    # The warm-up before a capture runs the step three times; its dropout draws are undone,
    # so the first replayed step draws what the first eager step draws (a resumed run, which
    # captures again, then draws what an uninterrupted one does).
    config = tiny_config(dropout=0.3)
    eager, captured = step_for(config, capture=False), step_for(config, capture=True)
    data = batches(config, 4)
    torch.manual_seed(5)
    expected = [eager(batch)[0].clone() for batch in data]
    torch.manual_seed(5)
    graph = CapturedStep(captured._update, captured._tensors, data[0], graph=ReplayGraph())
    replayed = [graph(batch)[0].clone() for batch in data]
    torch.testing.assert_close(torch.stack(replayed), torch.stack(expected), rtol=0, atol=0)


def test_capturability_is_the_steps_choice_not_the_checkpoints() -> None:
    config = tiny_config()
    plain, capturable = step_for(config, capture=False), step_for(config, capture=True)
    plain(batches(config, 1)[0])
    capturable.load_optimizer_state(plain.optimizer_state())  # a CPU run resumed on a GPU
    group = capturable.optimizer.param_groups[0]
    assert group["capturable"] is True and isinstance(group["lr"], torch.Tensor)
    plain.load_optimizer_state(capturable.optimizer_state())  # and the other way round
    group = plain.optimizer.param_groups[0]
    assert group["capturable"] is False and isinstance(group["lr"], float)


def test_only_steps_of_one_batch_shape_on_cuda_are_captured() -> None:
    audio, rolls = resolve("piano-small", None, []), resolve("jsb", None, [])
    assert captures(audio.train, CUDA, task_for(audio))
    assert not captures(rolls.train, CUDA, task_for(rolls))  # pieces vary in length
    assert not captures(audio.train, CPU, task_for(audio))
    off = dataclasses.replace(audio.train, capture=False)
    assert not captures(off, CUDA, task_for(audio))


def test_a_step_returns_its_loss_unread_on_the_device() -> None:
    config = tiny_config()
    total, count = step_for(config)(batches(config, 1)[0])
    assert isinstance(total, torch.Tensor) and isinstance(count, torch.Tensor)
    assert int(count) == 24 and float(total) > 0


# --- resuming and random states ---------------------------------------------------------------


def test_a_run_resumes_from_a_checkpoint_read_onto_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The run's device is CUDA here; its checkpoint must still be read onto the CPU, where the
    # random states it restores live.
    asked: list[Any] = []

    class Resumed(Run):
        def load_state(self, which: str = "best", map_location: Any = "cpu") -> dict[str, Any]:
            asked.append(map_location)
            return {}

    class NoTrainer:
        saved_step = 0

        def __init__(self, *args: object) -> None:
            pass

        def resume(self, checkpoint: dict[str, Any]) -> None:
            pass

        def fit(self, *args: object) -> str:
            return "fitted"

    monkeypatch.setattr(training, "Trainer", NoTrainer)
    config = tiny_config()
    network = task_for(config).build_network()
    resumed = Resumed(tmp_path, config)
    data: Any = None
    result = training._train(
        resumed, training.Limits(1), CUDA, task_for(config), network, data, resumed, None, True
    )
    assert result[1] == "fitted" and asked == ["cpu"]


def test_random_states_are_restored_from_a_copy_of_their_own() -> None:
    saved = capture_rng()
    expected = torch.rand(3)
    torch.rand(5)
    restore_rng({**saved, "torch": saved["torch"].clone()})
    assert torch.equal(torch.rand(3), expected)
    if not torch.cuda.is_available():
        assert "cuda" not in saved  # no CUDA context is made for a run on the CPU


def test_sampling_reads_a_checkpoint_onto_the_cpu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli import checkpoints

    chorales = write_chorales(tmp_path / "chorales", 6)
    tiny = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]
    succeed(capsys, "train", "jsb", "--data", str(chorales), "--epochs", "1", *tiny)
    locations: list[Any] = []
    real = checkpoints._read_checkpoint

    def spy(path: Path, map_location: Any, mmap: bool = False) -> dict[str, Any]:
        locations.append(map_location)
        return real(path, map_location, mmap)

    monkeypatch.setattr(checkpoints, "_read_checkpoint", spy)
    succeed(capsys, "sample", "jsb", "--steps", "4", "--out", str(tmp_path / "a.mid"))
    assert locations and set(locations) == {"cpu"}


# --- batches as codes ----------------------------------------------------------------------


def test_a_piano_batch_crosses_to_the_device_as_8_bit_codes() -> None:
    config = resolve("piano", None, [])
    task = task_for(config)
    network_field = 32_749  # the piano Seq-U-Net's receptive field (paper Table 2: 32,748)
    generator = torch.Generator().manual_seed(0)
    batch = task.random_batch(16, 5000, network_field, generator)
    assert batch.x.dtype == torch.uint8 and batch.x.shape == (16, network_field + 4999)
    assert batch.target.dtype == torch.uint8 and batch.mask.dtype == torch.bool
    assert batch.nbytes <= 1_000_000  # against 620 MB of float32 one-hot input


def test_the_loss_of_codes_equals_the_loss_of_their_one_hot_input() -> None:
    config = resolve("piano-small", None, ["model.levels=3", "model.channels=4"])
    task = task_for(config)
    network = task.build_network()
    generator = torch.Generator().manual_seed(0)
    batch = task.random_batch(2, 20, network.receptive_field, generator)
    codes = batch.x.long()  # (B, L)
    one_hot = torch.nn.functional.one_hot(codes, 256).transpose(1, 2).float()
    amplitude = (codes.float() * (2 / 255) - 1).unsqueeze(1)
    output = network(torch.cat([one_hot, amplitude], 1), outputs=20)
    expected = torch.nn.functional.cross_entropy(output, batch.target.long(), reduction="sum")
    torch.testing.assert_close(task.loss_sum(network, batch), expected)


# --- on a GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_a_captured_cuda_step_trains_as_the_eager_step() -> None:
    config = resolve("piano-small", None, ["model.levels=3", "model.channels=8", "train.ema=0"])
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="fp32"))
    task = task_for(config)
    torch.manual_seed(0)
    eager = TrainingStep(task.build_network().cuda(), task, config.train, capture=False)
    torch.manual_seed(0)
    captured = TrainingStep(task.build_network().cuda(), task, config.train, capture=True)
    generator = torch.Generator().manual_seed(1)
    data = [task.random_batch(2, 50, eager.network.receptive_field, generator) for _ in range(6)]
    for index, batch in enumerate(data):
        if index == 3:  # the schedule halves the rate: the graph must read the new one
            eager.set_lr(eager.lr / 2)
            captured.set_lr(captured.lr / 2)
        expected = eager(batch.to(CUDA))[0]
        total = captured(batch.to(CUDA))[0]
        torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-4)
    assert captured.graph is not None and captured.capture
    for ours, theirs in zip(captured.network.parameters(), eager.network.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_a_resumed_cuda_run_equals_an_uninterrupted_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "recordings"
    folder.mkdir()
    for index, frequency in enumerate([220.0, 330.0, 440.0, 550.0]):
        t = np.arange(8000) / 16000
        sf.write(folder / f"take{index}.flac", 0.4 * np.sin(2 * np.pi * frequency * t), 16000)
    tiny = [
        "--data", str(folder), "--device", "cuda", "--set", "model.levels=3",
        "--set", "model.channels=4", "--set", "data.excerpt_targets=64",
        "--set", "train.batch_size=2", "--set", "train.eval_every=3",
        "--set", "train.eval_batches=1",
    ]  # fmt: skip
    monkeypatch.setenv("SEQUNET_DEVICE", "cuda")
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "straight"))
    succeed(capsys, "train", "piano-small", "--steps", "6", *tiny)
    straight = find_run("piano-small").load_state("last")["weights"]
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "resumed"))
    succeed(capsys, "train", "piano-small", "--steps", "4", *tiny)  # stops mid-period
    result = run(capsys, "train", "--resume", "piano-small", "--steps", "6", "--device", "cuda")
    assert result.code == 0, result.err
    resumed = find_run("piano-small").load_state("last")["weights"]
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)
