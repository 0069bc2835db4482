"""Task-level protocol: the piano-roll NLL is per predicted frame, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import SeqUNet
from sequnet_cli.config import resolve
from sequnet_cli.evaluation import evaluate_split
from sequnet_cli.tasks.piano_roll import PianoRollData, PianoRollTask


def pieces(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random((int(rng.integers(2, 40)), 88)) < 0.1 for _ in range(count)]


def test_piano_roll_nll_is_the_total_over_pieces_per_predicted_frame() -> None:
    rng = np.random.default_rng(0)
    splits = {"train": pieces(3, rng), "valid": pieces(21, rng)}
    task, data = PianoRollTask(resolve("jsb", None, [])), PianoRollData(splits)
    torch.manual_seed(0)
    network = SeqUNet(88, 88, [8, 8], 3).double().eval()
    total, frames = 0.0, 0
    for piece in splits["valid"]:  # one piece at a time, no padding: the protocol's definition
        roll = torch.from_numpy(piece.T.astype(np.float64)).unsqueeze(0)
        logits = network(roll[..., :-1])
        total += F.binary_cross_entropy_with_logits(logits, roll[..., 1:], reduction="sum").item()
        frames += len(piece) - 1
    network.float()
    for batch_size in (1, 5, 64):
        score = evaluate_split(network, task, data, "valid", batch_size, torch.device("cpu"))
        assert score == pytest.approx(total / frames, rel=1e-5)


def test_sampling_temperature_is_the_tasks_unless_asked() -> None:
    """Audio samples at the paper's 0.95 (§5.2), piano rolls at the model's own 1.0; an asked
    temperature wins."""
    from sequnet_cli.tasks import sampling_temperature, task_for

    audio, roll = task_for(resolve("piano", None, [])), task_for(resolve("jsb", None, []))
    assert sampling_temperature(audio, None) == 0.95
    assert sampling_temperature(roll, None) == 1.0
    assert sampling_temperature(audio, 1.0) == 1.0 and sampling_temperature(roll, 0.5) == 0.5
