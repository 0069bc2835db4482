"""The generation loop (`sequnet_cli.autoregression`): reproducible, the same elements however
the steps run (plain, fixed-index as a CUDA graph would run them, captured), in chunks, and
what Ctrl-C leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import emulated_graphs  # noqa: F401  (a fixture)

from models import ResidualSeqUNet, SeqUNet
from models.core import StreamError
from sequnet_cli import autoregression
from sequnet_cli.autoregression import CHUNK, Autoregression, autoregress
from sequnet_cli.config import resolve
from sequnet_cli.tasks import Sampler
from sequnet_cli.tasks.audio import AudioTask
from sequnet_cli.tasks.piano_roll import PianoRollTask


def audio_setup(seed: int = 0) -> tuple[AudioTask, ResidualSeqUNet]:
    task = AudioTask(resolve("piano-small", None, []))
    torch.manual_seed(seed)
    network = ResidualSeqUNet(task.in_channels, task.out_channels, 4, 3, 1, 3).eval()
    return task, network


def roll_setup() -> tuple[PianoRollTask, SeqUNet]:
    task = PianoRollTask(resolve("jsb", None, []))
    torch.manual_seed(0)
    return task, SeqUNet(88, 88, [6, 6], 3).eval()


def audio_sampler(count: int = 2, seed: int = 7) -> tuple[ResidualSeqUNet, Sampler]:
    task, network = audio_setup()
    return network, task.sampler(network, count, 0.9, seed)


def test_the_same_seed_gives_the_same_elements() -> None:
    network, sampler = audio_sampler()
    first = autoregress(network, sampler, 300, 2)
    again = autoregress(network, audio_sampler()[1], 300, 2)
    other = autoregress(network, audio_sampler(seed=8)[1], 300, 2)
    assert first.shape == (2, 300) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_shorter_request_is_a_prefix_of_a_longer_one() -> None:
    # The random numbers come in fixed blocks, whatever the length asked for.
    network, sampler = audio_sampler(count=1)
    long = autoregress(network, sampler, CHUNK + 50, 1)
    short = autoregress(network, audio_sampler(count=1)[1], 70, 1)
    assert long.shape == (1, CHUNK + 50)
    assert np.array_equal(long[:, :70], short)


@pytest.mark.parametrize("kind", ["audio", "piano-roll"])
def test_fixed_index_generation_draws_the_same_elements_exactly(kind: str) -> None:
    # What a CUDA graph replays (positions on the device, sampling inside the step), run on a
    # CPU: bit for bit the plain stream's elements, across a chunk boundary, with a primer.
    task, network = audio_setup() if kind == "audio" else roll_setup()
    primer = autoregress(network, task.sampler(network, 1, 1.0, 3), 40, 1)[0]
    results = []
    for fixed in (False, True):
        generation = Autoregression(
            network, task.sampler(network, 3, 1.0, 5), 3, primer, fixed_index=fixed
        )
        assert generation.program.stream.fixed_index is fixed
        results.append(np.concatenate(list(generation.chunks(CHUNK + 20)), axis=1))
    assert np.array_equal(results[0], results[1])
    assert results[0].shape[:2] == (3, CHUNK + 20)


def test_chunks_come_as_drawn_and_continue_where_they_stopped() -> None:
    network, sampler = audio_sampler(count=1)
    whole = autoregress(network, sampler, 2 * CHUNK + 5, 1)
    generation = Autoregression(network, audio_sampler(count=1)[1], 1)
    sizes = [chunk.shape[1] for chunk in generation.chunks(CHUNK + 5)]
    rest = np.concatenate(list(generation.chunks(CHUNK)), axis=1)
    assert sizes == [CHUNK, 5]
    assert generation.program.stream.time == 2 * CHUNK + 5
    # The continuation draws from new random blocks, so it differs from the one-go run's tail.
    assert rest.shape == (1, CHUNK)
    assert not np.array_equal(whole[:, CHUNK + 5 :], rest)


class InterruptingSampler:
    """A sampler that raises KeyboardInterrupt at its `after`-th draw (Ctrl-C)."""

    def __init__(self, sampler: Sampler, after: int) -> None:
        self.sampler, self.after, self.draws = sampler, after, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.sampler, name)

    def draw(self, output: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.draws += 1
        if self.draws > self.after:
            raise KeyboardInterrupt
        return self.sampler.draw(output, uniforms)


def test_ctrl_c_yields_the_completed_steps_then_stops() -> None:
    network, sampler = audio_sampler(count=2)
    expected = autoregress(network, sampler, 2 * CHUNK, 2)
    interrupting = InterruptingSampler(audio_sampler(count=2)[1], after=CHUNK + 37)
    chunks: list[np.ndarray] = []
    generation = Autoregression(network, interrupting, 2)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        chunks.extend(generation.chunks(2 * CHUNK))
    assert [chunk.shape[1] for chunk in chunks] == [CHUNK, 37]
    assert np.array_equal(np.concatenate(chunks, axis=1), expected[:, : CHUNK + 37])


def test_a_failed_capture_warns_once_and_generates_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network, sampler = audio_sampler()
    expected = autoregress(network, sampler, 100, 2)

    def no_graphs(self: object, state: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(autoregression.StepProgram, "_capture", no_graphs)
    with pytest.warns(UserWarning, match="could not capture .*not permitted when stream") as seen:
        generation = Autoregression(network, audio_sampler()[1], 2, capture=True)
    assert len(seen) == 1 and not generation.captured
    assert np.array_equal(np.concatenate(list(generation.chunks(100)), axis=1), expected)


def test_capture_needs_a_fixed_index_stream() -> None:
    from models import StepProgram

    network, _ = audio_sampler()
    with pytest.raises(StreamError, match="fixed-index"):
        StepProgram(network.stream(1), torch.zeros(1, network.in_channels), print, capture=True)


def test_piano_roll_draws_are_frames_of_pitches() -> None:
    task, network = roll_setup()
    rolls = autoregress(network, task.sampler(network, 2, 1.0, 0), 50, 2)
    assert rolls.shape == (2, 50, 88) and rolls.dtype == bool
    assert 0 < rolls.mean() < 1  # an untrained network: about half of the pitches


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["audio", "piano-roll"])
def test_captured_generation_matches_eager_generation_on_cuda(kind: str) -> None:
    # The graphs replay the eager kernels and read the same random numbers: the same elements,
    # unless float rounding flips a draw that sits on a boundary, which is rare.
    task, network = audio_setup() if kind == "audio" else roll_setup()
    network = network.cuda()
    results = []
    for capture in (False, True):
        sampler = task.sampler(network, 4, 1.0, 11)
        generation = Autoregression(network, sampler, 4, capture=capture)
        assert generation.captured is capture
        results.append(np.concatenate(list(generation.chunks(CHUNK + 100)), axis=1))
    # A flipped draw makes the rest of its sequence differ: compare where one is unlikely yet.
    agreement = (results[0][:, :256] == results[1][:, :256]).mean()
    assert agreement > 0.99


@pytest.mark.usefixtures("emulated_graphs")
@pytest.mark.parametrize("kind", ["audio", "piano-roll"])
def test_captured_generation_draws_the_same_elements_exactly(kind: str) -> None:
    # Captured graphs emulated on a CPU (tests/graphs.py): the sampler's draw, the position in
    # the random block and the next input are all replayed without Python, across chunks.
    task, network = audio_setup() if kind == "audio" else roll_setup()
    primer = autoregress(network, task.sampler(network, 1, 1.0, 3), 40, 1)[0]
    plain = Autoregression(network, task.sampler(network, 2, 0.9, 5), 2, primer)
    captured = Autoregression(network, task.sampler(network, 2, 0.9, 5), 2, primer, capture=True)
    assert captured.captured and not plain.captured
    steps = CHUNK + 30
    expected = np.concatenate(list(plain.chunks(steps)), axis=1)
    assert np.array_equal(np.concatenate(list(captured.chunks(steps)), axis=1), expected)


@pytest.mark.parametrize("coding", ["one-hot", "one-hot+amplitude"])
def test_an_audio_draw_feeds_back_the_coding_of_the_drawn_class(coding: str) -> None:
    task = AudioTask(resolve("piano", None, [f"data.audio_input={coding}"]))
    network = ResidualSeqUNet(task.in_channels, task.out_channels, 4, 2, 1, 3).eval()
    sampler = task.sampler(network, 5, 1.0, 0)
    output, randoms = torch.randn(5, task.out_channels), torch.rand(5, *sampler.random_shape)
    values, next_input = sampler.draw(output, randoms)
    expected = task.coding.encode(values.long().unsqueeze(1))[..., 0]  # (5, in_channels)
    assert torch.equal(next_input, expected)
    silence = task.coding.encode(torch.full((5, 1), 128))[..., 0]
    assert torch.equal(sampler.first_input(), silence)
