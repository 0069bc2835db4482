"""The weight average: warmed up, and kept only while it validates at least as well as the
trained weights, so a run of any length saves a model as good as its training got."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import succeed, write_chorales

from sequnet_cli.training_step import WeightAverage

SMALL = ["--set", "model.channels=[8,8]", "--set", "train.lr=0.01"]  # jsb: ema 0.9998, batch 1


def test_the_average_follows_the_weights_early_and_settles_to_its_decay() -> None:
    network = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(network.weight)
    average = WeightAverage(network, decay=0.9998)  # type: ignore[arg-type]
    with torch.no_grad():
        network.weight.fill_(1.0)
    average.update(network)  # type: ignore[arg-type]
    assert average.module.weight.item() == pytest.approx(0.9)  # decay (1 + 0) / (10 + 0)
    for _ in range(99):
        average.update(network)  # type: ignore[arg-type]
    assert average.module.weight.item() > 0.999  # a plain 0.9998 average would be at 0.02
    average.load(average.module.state_dict(), updates=10**6)
    with torch.no_grad():
        network.weight.fill_(2.0)
    before = average.module.weight.item()
    average.update(network)  # type: ignore[arg-type]
    assert average.module.weight.item() - before == pytest.approx((2.0 - before) * 2e-4, rel=1e-3)


def test_a_short_run_saves_a_model_no_worse_than_its_trained_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sequnet_cli.checkpoints import find_run

    folder = write_chorales(tmp_path / "chorales", 8)
    succeed(capsys, "train", "jsb", "--data", str(folder), "--steps", "6", *SMALL)
    state = find_run("jsb").load_state("best")
    history = state["training"]["history"][-1]
    assert history["valid"] == min(history["valid_trained"], history["valid_averaged"])

    trained = tmp_path / "trained.pt"  # the trained weights alone, scored the same way
    torch.save({**state, "weights": state["training_weights"]}, trained)
    scores = {}
    for name, ref in (("saved", "jsb"), ("trained", str(trained))):
        out = succeed(capsys, "evaluate", ref, "--split", "valid", "--json").out
        scores[name] = json.loads(out)["scores"]["valid"]
    assert scores["saved"] <= scores["trained"] + 1e-6
    assert scores["saved"] < 58  # random guessing scores 61 nats per frame


def test_a_small_midi_folder_gives_a_model_that_samples_four_voices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sequnet_cli.data.midi import midi_to_roll

    folder = write_chorales(tmp_path / "chorales", 8)
    succeed(capsys, "train", "jsb", "--data", str(folder), "--epochs", "10", *SMALL)
    target = tmp_path / "sample.mid"
    succeed(capsys, "sample", "jsb", "--steps", "64", "--seed", "1", "--out", str(target))
    voices = midi_to_roll(target, frames_per_beat=4).sum(axis=1)  # notes sounding per frame
    assert 1 <= voices.mean() <= 6 and np.median(voices) <= 6  # the data: 4; noise: about 44
