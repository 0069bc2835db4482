"""Batches drawn ahead of the step: in order, each with the data generator's state after it, and
a run stopped while batches were drawn ahead resumes as if nothing had been drawn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli import succeed
from test_cli_audio import TINY, recordings  # noqa: F401  (a fixture)

from sequnet_cli.batch_feed import BatchFeed
from sequnet_cli.tasks import Batch

CPU = torch.device("cpu")


def drawn_batches(generator: torch.Generator, count: int) -> Iterator[Batch]:
    for _ in range(count):
        x = torch.rand(1, 3, generator=generator)
        yield Batch(x, x, torch.ones(1, 3))


def test_batches_come_in_order_with_the_state_after_each() -> None:
    generator = torch.Generator().manual_seed(0)
    replay = torch.Generator().manual_seed(0)
    with BatchFeed(drawn_batches(generator, 5), generator, CPU) as feed:
        for batch, state in feed:
            assert torch.equal(batch.x, torch.rand(1, 3, generator=replay))
            assert torch.equal(state, replay.get_state())
        assert next(feed, None) is None  # the end stays the end


def test_an_error_while_drawing_is_raised_where_the_batches_are_taken() -> None:
    def failing() -> Iterator[Batch]:
        yield from drawn_batches(torch.Generator(), 1)
        raise OSError("the data went away")

    with BatchFeed(failing(), torch.Generator(), CPU) as feed:
        next(feed)
        with pytest.raises(OSError, match="went away"):
            next(feed)


def test_leaving_early_stops_the_drawing() -> None:
    generator = torch.Generator().manual_seed(0)
    with BatchFeed(drawn_batches(generator, 1000), generator, CPU) as feed:
        next(feed)
        thread = feed.thread
    assert not thread.is_alive()
    assert threading.active_count() >= 1


def test_an_audio_run_stopped_mid_period_resumes_as_an_uninterrupted_one(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Audio excerpts come from one generator across the run, drawn ahead of the step: the
    # checkpoint must hold its state after the last batch trained on, not after the last drawn.
    from sequnet_cli.checkpoints import find_run

    every_four = ["--set", "train.eval_every=4"]
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "straight"))
    succeed(capsys, "train", "piano-small", "--data", str(recordings), "--steps", "7", *TINY,
            *every_four)  # fmt: skip
    straight = find_run("piano-small").load_state("last")
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "resumed"))
    succeed(capsys, "train", "piano-small", "--data", str(recordings), "--steps", "5", *TINY,
            *every_four)  # fmt: skip
    succeed(capsys, "train", "--resume", "piano-small", "--steps", "7")
    resumed = find_run("piano-small").load_state("last")
    assert resumed["training"]["step"] == straight["training"]["step"] == 7
    for name, value in straight["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], value, rtol=0, atol=0)
