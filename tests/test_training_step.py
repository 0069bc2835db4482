"""The training step: float32 or bfloat16 autocast, and replaying it as a captured graph.

CUDA graphs need a GPU; here the capture is exercised through `ReplayGraph`, which runs the
recorded step again at each replay: what is tested is everything around the graph (the fixed
input tensors, the warm-up that must leave no trace, the learning rate held in a tensor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch

from models import SeqUNetConfig
from sequnet_cli.captured_step import CapturedStep
from sequnet_cli.config import RunConfig, resolve
from sequnet_cli.devices import apply_numerics_policy, autocast_dtype
from sequnet_cli.errors import ConfigError, DeviceError
from sequnet_cli.tasks import Batch, task_for
from sequnet_cli.training_step import TrainingStep, make_optimizer

CPU = torch.device("cpu")


class ReplayGraph:
    """A stand-in for a CUDA graph: capture records the step, replay runs it again."""

    def capture(self, body: Callable[[], None]) -> None:
        self.body = body

    def replay(self) -> None:
        self.body()


def tiny_config(**train: object) -> RunConfig:
    config = resolve("jsb", None, ["train.ema=0", "train.weight_decay=0.01", "train.clip=0.5"])
    network = SeqUNetConfig((6, 6), 3, 0.0)  # no dropout: replays draw no random numbers
    model = dataclasses.replace(config.model, network=network)
    return dataclasses.replace(
        config, model=model, train=dataclasses.replace(config.train, **train)
    )


def step_for(config: RunConfig) -> TrainingStep:
    torch.manual_seed(0)
    task = task_for(config)
    return TrainingStep(task.build_network(), task, config.train)


def batches(config: RunConfig, count: int) -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        yield task_for(config).random_batch(2, 12, 0, generator)


def test_precision_names_the_autocast_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype(CPU, "auto") is None  # float32 on a CPU unless asked
    assert autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") is torch.bfloat16
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(cuda, "auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(cuda, "auto") is None
    with pytest.raises(DeviceError, match="train.precision=fp32"):
        autocast_dtype(cuda, "bf16")


def test_sequnet_precision_says_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUNET_PRECISION", "bf16")
    assert autocast_dtype(CPU, "auto") is torch.bfloat16
    assert autocast_dtype(CPU, "fp32") is None  # a precision the run names wins
    monkeypatch.setenv("SEQUNET_PRECISION", "fp32")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(torch.device("cuda"), "auto") is None
    monkeypatch.setenv("SEQUNET_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="SEQUNET_PRECISION must be one of auto, fp32, bf16"):
        autocast_dtype(CPU, "auto")


def test_bf16_trains_float32_weights_on_a_float32_loss() -> None:
    config = tiny_config(precision="bf16")
    step = step_for(config)
    seen: list[torch.dtype] = []
    loss_sum = step.task.loss_sum

    def recorded(network: object, batch: Batch) -> torch.Tensor:
        total = loss_sum(network, batch)  # type: ignore[arg-type]
        seen.append(total.dtype)
        return total

    step.task.loss_sum = recorded  # type: ignore[method-assign]
    before = [p.detach().clone() for p in step.network.parameters()]
    for batch in batches(config, 3):
        loss, count = step(batch)
        assert loss > 0 and count == 24
    assert seen == [torch.float32] * 3
    for old, new in zip(before, step.network.parameters(), strict=True):
        assert new.dtype == torch.float32 and not torch.equal(old, new)


def test_bf16_loss_is_close_to_float32() -> None:
    fp32, bf16 = step_for(tiny_config(precision="fp32")), step_for(tiny_config(precision="bf16"))
    batch = next(batches(tiny_config(), 1))
    assert bf16(batch)[0] == pytest.approx(fp32(batch)[0], rel=2e-2)


def test_a_captured_step_trains_exactly_as_the_eager_step() -> None:
    config = tiny_config()
    eager, captured = step_for(config), step_for(config)
    data = list(batches(config, 6))
    graph = CapturedStep(captured._update, captured._tensors, data[0], graph=ReplayGraph())
    for index, batch in enumerate(data):
        if index == 3:  # the schedule halves the rate: a captured graph must see it
            eager.set_lr(eager.lr / 2)
            captured.set_lr(captured.lr / 2)
        expected = eager._update(batch)
        total, count = graph(batch)
        torch.testing.assert_close(total, expected[0])
        assert int(count) == int(expected[1])
    for ours, theirs in zip(captured.network.parameters(), eager.network.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_another_shape_is_not_replayed() -> None:
    config = tiny_config()
    step = step_for(config)
    first, *_ = batches(config, 1)
    graph = CapturedStep(step._update, step._tensors, first, graph=ReplayGraph())
    shorter = task_for(config).random_batch(2, 7, 0, torch.Generator().manual_seed(2))
    assert graph.fits(first) and not graph.fits(shorter)


def test_a_learning_rate_tensor_is_kept_through_a_checkpoint() -> None:
    config = tiny_config()
    task = task_for(config)
    step = TrainingStep(task.build_network(), task, config.train)
    step.capture = False
    step.optimizer = make_optimizer(step.network, 1e-3, 0.0, capturable=True)
    rate = step.optimizer.param_groups[0]["lr"]
    assert isinstance(rate, torch.Tensor)
    step(next(batches(config, 1)))
    step.set_lr(2.5e-4)
    assert step.optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(2.5e-4)
    saved = step.optimizer_state()
    assert isinstance(saved["param_groups"][0]["lr"], float)  # a plain number in a checkpoint
    step.set_lr(1.0)
    step.load_optimizer_state(saved)
    assert step.optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(2.5e-4)


def test_a_failed_capture_warns_and_trains_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    import sequnet_cli.training_step as module

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(module, "CapturedStep", refuse)
    config = tiny_config()
    step = step_for(config)
    step.capture = True  # as on a GPU
    with pytest.warns(UserWarning, match="could not capture the training step"):
        loss, _ = step(next(batches(config, 1)))
    assert loss > 0 and not step.capture


def test_numerics_policy_gives_convolutions_and_products_the_same_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        apply_numerics_policy(torch.device("cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        monkeypatch.setenv("SEQUNET_TF32", "0")
        apply_numerics_policy(torch.device("cuda"))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
