"""`sequnet evaluate` scores whole splits: every sample of an audio split predicted once, from
its whole receptive field, and says how much it scored; validation during training keeps its
fixed sample of excerpts, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import succeed
from test_cli_audio import TINY, recordings  # noqa: F401  (a fixture)

from sequnet_cli.data.audio import AudioSplit
from sequnet_cli.data.audio_decoding import SILENCE_CODE


def train(capsys: pytest.CaptureFixture[str], data: Path) -> str:
    """A tiny piano-small run of 2 steps on `data`; what it printed."""
    return succeed(capsys, "train", "piano-small", "--data", str(data), "--steps", "2", *TINY).out


def test_covering_excerpts_hold_every_sample_once_after_its_context() -> None:
    samples = np.arange(1, 9, dtype=np.uint8)  # two files: 1..5 and 6..8
    split = AudioSplit(
        "test", samples, (Path("a"), Path("b")), np.array([0, 5]), np.array([5, 3]), 16000
    )
    s = SILENCE_CODE
    excerpts = [list(e) for e in split.covering_excerpts(context=2, targets=2)]
    assert excerpts == [[s, s, 1, 2], [1, 2, 3, 4], [3, 4, 5], [s, s, 6, 7], [6, 7, 8]]


def test_evaluate_predicts_every_sample_once_from_its_whole_receptive_field(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
) -> None:
    from sequnet_cli.trained_model import load_model

    train(capsys, recordings)
    document = json.loads(succeed(capsys, "evaluate", "piano-small", "--json").out)
    assert document["whole_splits"] is True and document["unit"] == "samples"
    # The reference: each file in one pass, after a receptive field of silence.
    trained = load_model("piano-small", None, "best", torch.device("cpu"))
    task, network = trained.task, trained.network
    field = network.receptive_field
    data = task.open_data(None, None, field)
    for name in ("train", "valid", "test"):
        split = data.corpus.split(name)  # type: ignore[attr-defined]
        total = 0.0
        for start, length in zip(split.starts, split.lengths, strict=True):
            codes = np.concatenate(
                [np.full(field, SILENCE_CODE, np.uint8), split.samples[start : start + length]]
            )
            batch = task.collate(torch.from_numpy(codes[None]).long(), int(length))
            with torch.no_grad():
                total += task.loss_sum(network, batch).item()
        count = int(split.samples.shape[0])
        assert document["predicted"][name] == count
        assert document["seconds"][name] == pytest.approx(count / 16000)
        assert document["scores"][name] == pytest.approx(task.score(total, count), rel=1e-5)
    assert max(split.lengths) > 2 * field  # each file was scored in several excerpts
    table = succeed(capsys, "evaluate", "piano-small", "--split", "test").out
    assert f"{document['predicted']['test']:,} samples" in table and "whole splits" in table


def test_validation_and_evaluate_quick_score_a_fixed_sample_and_say_so(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
) -> None:
    from sequnet_cli.checkpoints import find_run

    out = train(capsys, recordings)
    # TINY validates one batch of 2 excerpts of 64 targets.
    assert "validation scores 128 samples (0.008 s) of the valid split" in out
    history = find_run("piano-small").load_state("last")["training"]["history"]
    assert [entry["valid_count"] for entry in history] == [128]
    quick = json.loads(succeed(capsys, "evaluate", "piano-small", "--quick", "--json").out)
    assert quick["whole_splits"] is False
    assert set(quick["predicted"].values()) == {128}
    assert quick["scores"]["valid"] == pytest.approx(history[-1]["valid"], rel=1e-6)
