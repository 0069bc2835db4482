"""The model contract (DESIGN.md) for `TCN` and `WaveNet`, on many random small configurations.

Everything runs in float64 in eval mode, so the comparisons can be tight; causality and the
receptive field are checked exactly, through gradients.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from models import TCN, CausalNetwork, Stream, StreamError, WaveNet

KINDS = ("tcn", "wavenet")
SEEDS = range(16)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The tensors are tiny: threads only add overhead on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(actual: Tensor, expected: Tensor) -> None:
    """Equal up to float64 rounding."""
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11)


def random_network(kind: str, rng: random.Random, positive: bool = False) -> CausalNetwork:
    """A small network of `kind`, float64, eval mode, with every parameter perturbed.

    The perturbation moves the weight-norm gains away from `|v|`, so a stream that forgot the
    normalisation would show. `positive` makes every parameter positive: then no ReLU is dead
    and no sum cancels, so every path through the network carries a nonzero gradient.
    """

    def width() -> int:
        return rng.randint(1, 6)

    kernel_size = rng.choice((2, 3, 5))
    if kind == "tcn":
        channels = [width() for _ in range(rng.randint(1, 5))]
        net: CausalNetwork = TCN(
            width(), width(), channels, kernel_size, dropout=rng.choice((0.0, 0.3))
        )
    else:
        layers, stacks = rng.randint(1, 5), rng.randint(1, 3)
        net = WaveNet(width(), width(), width(), width(), width(), layers, stacks, kernel_size)
    net = net.to(torch.float64).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
            if positive:  # and small, so that no tanh or sigmoid saturates to a zero slope
                parameter.abs_().mul_(0.1)
    return net


def random_case(
    kind: str, seed: int, *, full_field: bool = False, positive: bool = False
) -> tuple[CausalNetwork, Tensor, random.Random]:
    """A network and an input `(B, C, T)`, T from 1 (or one receptive field) to three fields."""
    rng = random.Random(f"{kind}-{seed}")
    torch.manual_seed(seed)
    net = random_network(kind, rng, positive)
    receptive_field = net.receptive_field
    length = rng.randint(receptive_field if full_field else 1, 3 * receptive_field)
    x = torch.randn(rng.randint(1, 3), net.in_channels, length, dtype=torch.float64)
    return net, (x.abs() if positive else x), rng


def some_times(rng: random.Random, lo: int, hi: int, count: int = 6) -> list[int]:
    """Up to `count` times in `lo..hi`, always including both ends."""
    inner = rng.sample(range(lo, hi + 1), min(count, hi - lo + 1))
    return sorted({lo, hi, *inner})


def dependencies(net: CausalNetwork, x: Tensor, rng: random.Random, chunk: int = 128) -> Tensor:
    """`(T, T)` booleans: [t, s] is whether d (c . out[b, :, t]) / d x[b, :, s] != 0 for some b.

    `c` is a random positive weighting of the output channels; the gradients of a chunk of
    output times are taken in one batched backward pass.
    """
    x = x.clone().requires_grad_(True)
    weights = torch.tensor([rng.uniform(0.5, 1.5) for _ in range(net.out_channels)], dtype=x.dtype)
    out = torch.einsum("bct,c->bt", net(x), weights)  # (B, T)
    batch, length = out.shape
    rows = []
    for lo in range(0, length, chunk):
        times = torch.arange(lo, min(lo + chunk, length))
        selectors = torch.zeros(len(times), batch, length, dtype=x.dtype)  # (T', B, T)
        selectors[torch.arange(len(times)), :, times] = 1.0
        (gradients,) = torch.autograd.grad(
            out, x, selectors, retain_graph=True, is_grads_batched=True
        )
        rows.append(gradients.ne(0).flatten(1, 2).any(1))  # (T', T)
    return torch.cat(rows)


def run_steps(stream: Stream, x: Tensor) -> Tensor:
    """Step `stream` through every column of `x: (B, C, T)`; the outputs, `(B, out, T)`."""
    return torch.stack([stream.step(x[..., t]) for t in range(x.shape[-1])], dim=-1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_causal_by_gradient_and_prefix_consistent(kind: str, seed: int) -> None:
    net, x, rng = random_case(kind, seed)
    depends = dependencies(net, x, rng)
    assert not depends.triu(diagonal=1).any(), "an output depends on a later input"
    full = net(x)
    for n in some_times(rng, 1, x.shape[-1]):
        assert_close(net(x[..., :n]), full[..., :n])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_receptive_field_is_exact(kind: str, seed: int) -> None:
    # Positive parameters and inputs: every input in the field reaches the output (no dead
    # ReLU, no cancellation), so the dependencies must be exactly the band of the field.
    net, x, rng = random_case(kind, seed, full_field=True, positive=True)
    times = torch.arange(x.shape[-1])
    lag = times[:, None] - times[None, :]  # (T, T): output time - input time
    band = (lag >= 0) & (lag < net.receptive_field)
    assert torch.equal(dependencies(net, x, rng), band)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_valid_mode_equals_cropped_full_pass(kind: str, seed: int) -> None:
    net, x, rng = random_case(kind, seed)
    full = net(x)
    for n in some_times(rng, 1, x.shape[-1]):
        assert_close(net(x, outputs=n), full[..., -n:])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_stepping_equals_full_pass(kind: str, seed: int) -> None:
    net, x, _ = random_case(kind, seed)
    stream = net.stream(x.shape[0])
    run_steps(stream, x[..., : x.shape[-1] // 2])
    stream.reset()
    assert_close(run_steps(stream, x), net(x))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_prime_then_step_equals_full_pass(kind: str, seed: int) -> None:
    net, x, rng = random_case(kind, seed)
    length, full = x.shape[-1], net(x)
    stream = net.stream(x.shape[0])
    # One stream for every split: prime must restart from zero history whatever came before.
    for split in some_times(rng, 1, length):
        assert_close(stream.prime(x[..., :split]), full[..., :split])
        # The first receptive field of steps is all that reads what prime left in the buffers.
        stop = min(length, split + net.receptive_field + 1)
        if stop > split:
            assert_close(run_steps(stream, x[..., split:stop]), full[..., split:stop])


@pytest.mark.parametrize("seed", SEEDS[:8])
@pytest.mark.parametrize("kind", KINDS)
def test_interleaved_streams_do_not_interfere(kind: str, seed: int) -> None:
    net, x, rng = random_case(kind, seed)
    other = torch.randn(rng.randint(1, 3), net.in_channels, x.shape[-1], dtype=torch.float64)
    first, second = net.stream(x.shape[0]), net.stream(other.shape[0])
    split = rng.randint(1, x.shape[-1])
    outputs: tuple[list[Tensor], list[Tensor]] = ([], [second.prime(other[..., :split])])
    for t in range(x.shape[-1]):
        outputs[0].append(first.step(x[..., t]).unsqueeze(-1))
        if t >= split:
            outputs[1].append(second.step(other[..., t]).unsqueeze(-1))
    assert_close(torch.cat(outputs[0], dim=-1), net(x))
    assert_close(torch.cat(outputs[1], dim=-1), net(other))


@pytest.mark.parametrize("kind", KINDS)
def test_stream_refuses_training_mode(kind: str) -> None:
    net, x, _ = random_case(kind, 0)
    stream = net.stream(x.shape[0])
    net.train()
    with pytest.raises(StreamError, match="eval"):
        stream.step(x[..., 0])
    with pytest.raises(StreamError, match="eval"):
        stream.prime(x)


def test_tcn_stream_snapshots_normalised_weights() -> None:
    net, x, _ = random_case("tcn", 0)
    before = net(x)
    stream = net.stream(x.shape[0])
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.endswith("parametrizations.weight.original0"):  # a weight-norm gain g
                parameter.mul_(2.0)
    assert not torch.allclose(net(x), before)
    assert_close(run_steps(stream, x), before)
    assert_close(run_steps(net.stream(x.shape[0]), x), net(x))


def test_parameter_counts_and_receptive_fields() -> None:
    def count(net: torch.nn.Module) -> int:
        return sum(parameter.numel() for parameter in net.parameters())

    tcn = TCN(88, 88, [220] * 2, kernel_size=3)
    wavenet = WaveNet(256, 256)
    assert count(tcn) == 534_468
    assert count(wavenet) == 8_141_184
    assert tcn.receptive_field == 1 + 2 * 2 * (1 + 2)
    assert wavenet.receptive_field == 1 * 4 * (2**13 - 1) + 1
    assert count(TCN.from_config(88, 88, tcn.config)) == count(tcn)
    assert count(WaveNet.from_config(256, 256, wavenet.config)) == count(wavenet)
