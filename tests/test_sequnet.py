"""Seq-U-Net specifics: the paper's parameter counts and the block count. The model contract
(causality, receptive field, valid mode, streams) is tested for every network in
`test_contract.py`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from models import ResidualSeqUNet, SeqUNet


@pytest.mark.parametrize(
    ("build", "count", "tolerance"),
    [
        (lambda: SeqUNet(88, 88, [175] * 2, kernel_size=3), 521_938, 0.0),
        (lambda: SeqUNet(88, 88, [150] * 4, kernel_size=5), 1_768_738, 0.0),
        (lambda: ResidualSeqUNet(256, 256, 180, 11, depth=2, kernel_size=5), 26_867_236, 0.05),
    ],
)
def test_parameter_counts_match_the_paper(
    build: Callable[[], nn.Module], count: int, tolerance: float
) -> None:
    with torch.device("meta"):
        net = build()
    assert abs(sum(p.numel() for p in net.parameters()) - count) <= tolerance * count


def test_blocks_are_the_down_and_up_sampling_pairs() -> None:
    with torch.device("meta"):
        plain = SeqUNet(88, 88, [8] * 4)
        residual = ResidualSeqUNet(256, 256, 8, levels=11)
    assert (plain.blocks, len(plain.down_convs), len(plain.up_convs)) == (3, 3, 3)
    assert (residual.blocks, len(residual.down_convs), len(residual.up_convs)) == (10, 10, 10)
    assert (plain.clock_cycle, residual.clock_cycle) == (8, 1024)
