"""The Seq-U-Nets' receptive field is computed in a few plan steps whatever the depth, and equals
the reach of the outputs of one whole period of the network; too many levels are refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cli import assert_one_error_line, run

from models import ResidualSeqUNet, SeqUNet
from models.configs import (
    ConfigValueError,
    ResidualSeqUNetConfig,
    SeqUNetConfig,
    TCNConfig,
    WaveNetConfig,
)

PLAN_STEPS = 10_000  # far more than a deep network needs, far fewer than its period holds


def every_output(plan: Callable[..., dict[str, list[int]]], blocks: int) -> int:
    """The definition: the farthest reach of the outputs of one period, far from t = 0."""
    period = 1 << blocks
    base = period * 1024
    return max(t - plan(t, clip=False)["h"][0] + 1 for t in range(base, base + period))


@pytest.mark.parametrize("levels", range(1, 8))
@pytest.mark.parametrize("kernel_size", range(2, 8))
def test_the_receptive_field_is_the_reach_of_every_output_of_a_period(
    levels: int, kernel_size: int
) -> None:
    net = SeqUNet(2, 2, [2] * levels, kernel_size=kernel_size)
    assert net.receptive_field == every_output(net._plan, net.blocks)
    for depth in (1, 2, 3):
        residual = ResidualSeqUNet(2, 2, 2, levels, depth, kernel_size)
        assert residual.receptive_field == every_output(residual._plan, residual.blocks)


def counted(monkeypatch: pytest.MonkeyPatch, network: type[Any]) -> list[int]:
    """Count the plan steps of `network`; more than `PLAN_STEPS` fail at once."""
    real, calls = network._plan, []

    def plan(self: Any, *args: Any, **kwargs: Any) -> dict[str, list[int]]:
        calls.append(1)
        if len(calls) > PLAN_STEPS:
            raise AssertionError(f"more than {PLAN_STEPS} plan steps for one receptive field")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(network, "_plan", plan)
    return calls


def test_the_deepest_networks_are_built_in_a_few_plan_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counted(monkeypatch, SeqUNet)
    assert SeqUNet(2, 2, [2] * 24, kernel_size=5).receptive_field > 2**23
    counted(monkeypatch, ResidualSeqUNet)
    assert ResidualSeqUNet(2, 2, 2, levels=24, depth=2).receptive_field > 2**23
    assert 0 < len(calls) < 2_000


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SeqUNetConfig((2,) * 25), "channels"),
        (lambda: ResidualSeqUNetConfig(2, levels=25), "levels"),
        (lambda: TCNConfig((2,) * 25), "channels"),
        (lambda: WaveNetConfig(layers=25), "layers"),
    ],
)
def test_more_than_24_doublings_are_refused(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigValueError, match="at most 24") as refused:
        make()
    assert refused.value.field == field


def test_a_too_deep_network_is_one_error_line_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    counted(monkeypatch, SeqUNet)
    channels = "model.channels=[8" + ",8" * 29 + "]"
    result = run(capsys, "train", "jsb", "--set", channels, "--steps", "1")
    assert_one_error_line(result, "model.channels", "at most 24 levels", "got 30")
