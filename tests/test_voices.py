"""Frames with a given number of voices (`sequnet_cli.tasks.voices`): the conditional Bernoulli
draw is exact, always has exactly k pitches, survives extreme logits, and runs inside the
generation step as a CUDA graph would run it, seeded."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from graphs import emulated_graphs  # noqa: F401  (a fixture)

from models import SeqUNet
from sequnet_cli.autoregression import CHUNK, Autoregression, autoregress
from sequnet_cli.config import resolve
from sequnet_cli.tasks.piano_roll import PianoRollTask
from sequnet_cli.tasks.voices import ConditionalBernoulli, VoiceCounts

LOGITS = [1.5, -0.5, 0.3, -2.0, 0.8]  # five pitches, far from uniform odds
DRAWS = 100_000
# 100,000 exact draws of these five pitches are 0.001 to 0.004 (total variation) from the true
# distribution; a plausible wrong draw (`successive`) is 0.05 to 0.09 from it, so it cannot pass.
TOLERANCE = 0.01


def exact(logits: list[float], k: int) -> dict[tuple[int, ...], float]:
    """The conditional Bernoulli distribution by enumeration: set -> probability."""
    weights = {
        s: math.exp(sum(logits[i] for i in s))
        for s in itertools.combinations(range(len(logits)), k)
    }
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def successive(logits: list[float], k: int) -> dict[tuple[int, ...], float]:
    """A plausible wrong draw: k pitches one after another, each with probability proportional
    to its odds among those left (Plackett-Luce, or the top k of Gumbel-perturbed logits)."""
    odds = [math.exp(value) for value in logits]
    result: dict[tuple[int, ...], float] = {}
    for order in itertools.permutations(range(len(logits)), k):
        probability, left = 1.0, sum(odds)
        for pitch in order:
            probability *= odds[pitch] / left
            left -= odds[pitch]
        key = tuple(sorted(order))
        result[key] = result.get(key, 0.0) + probability
    return result


def distance(p: dict[tuple[int, ...], float], q: dict[tuple[int, ...], float]) -> float:
    return 0.5 * sum(abs(p.get(s, 0.0) - q.get(s, 0.0)) for s in set(p) | set(q))


def empirical(draws: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Set -> share of the draws `(rows, pitches)` that drew it."""
    pitches = draws.shape[1]
    keys = (draws.long() << torch.arange(pitches)).sum(1)  # each set as a binary number
    shares = torch.bincount(keys, minlength=1 << pitches).double() / len(draws)
    members = [tuple(i for i in range(pitches) if key >> i & 1) for key in range(1 << pitches)]
    return {members[key]: float(shares[key]) for key in shares.nonzero().flatten().tolist()}


def draw(
    pitches: ConditionalBernoulli, logits: torch.Tensor, k: int, rows: int, seed: int = 0
) -> torch.Tensor:
    uniforms = torch.rand(rows, pitches.uniforms, generator=torch.Generator().manual_seed(seed))
    counts = torch.full((rows,), k)
    return pitches.draw(logits.expand(rows, -1), counts, uniforms)


def test_the_test_can_tell_the_draw_from_a_plausible_wrong_one() -> None:
    for k in (2, 3):
        assert distance(exact(LOGITS, k), successive(LOGITS, k)) > 3 * TOLERANCE


@pytest.mark.parametrize("most", [5, 3])
def test_the_draw_is_the_conditional_bernoulli_distribution(most: int) -> None:
    # Every set of k of five pitches, against enumeration; `most` below 5 truncates the tree's
    # polynomials, which must not change the draws it can still make.
    pitches = ConditionalBernoulli(len(LOGITS), most)
    for k in range(most + 1):
        draws = draw(pitches, torch.tensor(LOGITS), k, DRAWS, seed=k)
        assert (draws.sum(1) == k).all()
        assert distance(empirical(draws), exact(LOGITS, k)) < TOLERANCE, k


def test_inclusion_probabilities_of_twelve_pitches_match_enumeration() -> None:
    # Twelve pitches pad the tree to sixteen leaves; each pitch's share of the draws against
    # its exact probability of being in the set (about 0.0016 of noise each).
    logits = torch.linspace(-2.0, 2.0, 12)[
        torch.randperm(12, generator=torch.Generator().manual_seed(1))
    ]
    pitches = ConditionalBernoulli(12, 7)
    for k in (3, 7):
        truth = np.zeros(12)
        for members, probability in exact(logits.tolist(), k).items():
            truth[list(members)] += probability
        shares = draw(pitches, logits, k, DRAWS, seed=k).double().mean(0).numpy()
        assert np.abs(shares - truth).max() < TOLERANCE, k


def test_always_exactly_k_pitches_whatever_the_logits() -> None:
    generator = torch.Generator().manual_seed(2)
    pitches = ConditionalBernoulli(88, 88)
    for scale in (0.01, 1.0, 30.0, 1e4):  # temperatures from 100 down to 1e-4
        logits = torch.randn(64, 88, generator=generator) * scale - 3 * scale
        counts = torch.randint(0, 89, (64,), generator=generator)
        uniforms = torch.rand(64, pitches.uniforms, generator=generator)
        assert torch.equal(pitches.draw(logits, counts, uniforms).sum(1), counts)
    # Uniform numbers at both ends of [0, 1) cannot push a draw out of what is possible.
    logits = torch.randn(4, 88, generator=generator) * 1e3
    for edge in (0.0, 1.0 - 2.0**-24):
        uniforms = torch.full((4, pitches.uniforms), edge)
        assert (pitches.draw(logits, torch.full((4,), 5), uniforms).sum(1) == 5).all()


def test_extreme_odds_give_the_most_likely_set() -> None:
    # Logits a thousand apart: any other set is e**-1000 as likely, and the draw finds the top
    # k without overflow or NaN.
    logits = torch.randperm(88, generator=torch.Generator().manual_seed(3)).float() * 1000.0
    pitches = ConditionalBernoulli(88, 88)
    for k in (0, 1, 4, 44, 87, 88):
        drawn = draw(pitches, logits, k, 3)
        top = torch.zeros(88, dtype=torch.bool)
        top[logits.topk(k).indices] = True
        assert (drawn == top).all(), k


def test_voice_counts_follow_their_shares() -> None:
    shares = np.array([0.002, 0.0, 0.01, 0.1, 0.888])  # JSB-like: silence possible, no 1
    voices = VoiceCounts(shares)
    drawn = voices.draw(torch.rand(DRAWS, generator=torch.Generator().manual_seed(4)))
    frequencies = np.bincount(drawn.numpy(), minlength=5) / DRAWS
    assert frequencies[1] == 0 and frequencies[0] > 0
    assert np.abs(frequencies - shares / shares.sum()).max() < TOLERANCE
    edges = voices.draw(torch.tensor([0.0, 1.0 - 2.0**-24]))
    assert edges.tolist() == [0, 4]
    with pytest.raises(ValueError):
        VoiceCounts(np.zeros(5))


# --- inside the generation step ----------------------------------------------------------------

PROFILE = {"voices": [2, 0, 1, 30, 300] + [0] * 84}  # frames per number of voices, 0 to 88


def setup(profile: dict[str, list[int]] | None = PROFILE) -> tuple[PianoRollTask, SeqUNet]:
    task = PianoRollTask(resolve("jsb", None, []), profile)
    torch.manual_seed(0)
    return task, SeqUNet(88, 88, [6, 6], 3).eval()


def test_a_stored_profile_makes_the_data_the_default() -> None:
    task, network = setup()
    sampler = task.sampler(network, 2, 1.0, 0)
    assert sampler.voices is not None and sampler.random_shape == (128,)
    free = task.sampler(network, 2, 1.0, 0, voices="free")
    assert free.voices is None and free.random_shape == (88,)
    assert setup(None)[0].sampler(network, 2, 1.0, 0).voices is None  # not a stored model
    rolls = autoregress(network, sampler, 300, 2)
    voices = rolls.sum(-1)
    assert set(np.unique(voices)) <= {0, 2, 3, 4}  # counts the data has
    assert 0.8 < np.mean(voices == 4) < 0.98  # 300 / 333 of the data's frames
    exactly = autoregress(network, task.sampler(network, 2, 1.0, 0, voices="3"), 50, 2)
    assert (exactly.sum(-1) == 3).all()


def test_the_same_seed_gives_the_same_frames() -> None:
    task, network = setup()
    first = autoregress(network, task.sampler(network, 2, 0.8, 5), 60, 2)
    again = autoregress(network, task.sampler(network, 2, 0.8, 5), 60, 2)
    other = autoregress(network, task.sampler(network, 2, 0.8, 6), 60, 2)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_fixed_index_generation_draws_the_same_frames_exactly() -> None:
    # What a CUDA graph replays, run eagerly on a CPU, with a primer (the chunks and their blocks
    # of random numbers are tested with the other samplers in test_generation.py).
    task, network = setup()
    primer = autoregress(network, task.sampler(network, 1, 1.0, 3), 40, 1)[0]
    results = []
    for fixed in (False, True):
        sampler = task.sampler(network, 3, 1.0, 5)
        generation = Autoregression(network, sampler, 3, primer, fixed_index=fixed)
        assert generation.program.stream.fixed_index is fixed
        results.append(np.concatenate(list(generation.chunks(40)), axis=1))
    assert np.array_equal(results[0], results[1])
    assert set(np.unique(results[0].sum(-1))) <= {0, 2, 3, 4}


@pytest.mark.usefixtures("emulated_graphs")
def test_captured_generation_draws_the_same_frames_exactly() -> None:
    # Captured graphs emulated on a CPU (tests/graphs.py): the count, the pitch tree and its
    # uniform numbers are replayed without Python, so nothing may be decided from their values.
    task, network = setup()
    plain = Autoregression(network, task.sampler(network, 2, 0.9, 5), 2)
    captured = Autoregression(network, task.sampler(network, 2, 0.9, 5), 2, capture=True)
    assert captured.captured and not plain.captured
    expected = np.concatenate(list(plain.chunks(40)), axis=1)
    assert np.array_equal(np.concatenate(list(captured.chunks(40)), axis=1), expected)


@pytest.mark.gpu
def test_captured_generation_keeps_the_voices_on_cuda() -> None:
    task, network = setup()
    network = network.cuda()
    results = []
    for capture in (False, True):
        generation = Autoregression(network, task.sampler(network, 4, 1.0, 11), 4, capture=capture)
        assert generation.captured is capture
        results.append(np.concatenate(list(generation.chunks(CHUNK + 100)), axis=1))
    assert set(np.unique(results[1].sum(-1))) <= {0, 2, 3, 4}
    # The graphs replay the eager kernels: the same frames unless rounding flips a draw.
    assert (results[0][:, :256] == results[1][:, :256]).mean() > 0.99
