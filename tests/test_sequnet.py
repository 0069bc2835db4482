"""The model contract (DESIGN.md) for SeqUNet and ResidualSeqUNet, over random small configs."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import torch

from models import ResidualSeqUNet, SeqUNet, StreamError
from models.core import CausalNetwork

SEEDS = range(12)


def random_sequnet(rng: random.Random) -> SeqUNet:
    levels = rng.randint(1, 5)
    widths = [rng.randint(2, 5) for _ in range(levels)]
    return SeqUNet(rng.randint(1, 4), rng.randint(1, 3), widths, rng.choice([2, 3, 5]), dropout=0.1)


def random_residual(rng: random.Random) -> ResidualSeqUNet:
    return ResidualSeqUNet(
        rng.randint(1, 4),
        rng.randint(1, 3),
        rng.randint(3, 5),
        rng.randint(1, 5),
        rng.randint(1, 3),
        rng.choice([2, 3, 5]),
    )


BUILDERS = {"sequnet": random_sequnet, "residual": random_residual}


@pytest.fixture(
    params=[(name, seed) for name in BUILDERS for seed in SEEDS], ids=lambda p: f"{p[0]}-{p[1]}"
)
def case(request: pytest.FixtureRequest) -> tuple[CausalNetwork, random.Random]:
    name, seed = request.param
    rng = random.Random(seed)
    torch.manual_seed(seed)
    net = BUILDERS[name](rng).double().eval()
    return net, rng


def full_and_input(
    net: CausalNetwork, rng: random.Random, longest: float = 2.5
) -> tuple[torch.Tensor, torch.Tensor]:
    length = rng.randint(1, int(longest * net.receptive_field))
    x = torch.randn(rng.randint(1, 3), net.in_channels, length, dtype=torch.float64)
    return x, net(x)


def test_causal_by_gradient(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x = torch.randn(
        1,
        net.in_channels,
        rng.randint(2, 3 * net.receptive_field),
        dtype=torch.float64,
        requires_grad=True,
    )
    out = net(x)
    for t in rng.sample(range(x.shape[-1]), min(6, x.shape[-1])):
        (grad,) = torch.autograd.grad(out[0, :, t].sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[..., t + 1 :]) == 0


def test_prefix_consistent(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x, full = full_and_input(net, rng)
    n = rng.randint(1, x.shape[-1])
    torch.testing.assert_close(net(x[..., :n]), full[..., :n], rtol=1e-9, atol=1e-10)


def test_receptive_field_exact_and_tight(case: tuple[CausalNetwork, random.Random]) -> None:
    net, _ = case
    field, period = net.receptive_field, 1 << net.blocks
    length = field + 3 * period
    # Several inputs: a dead ReLU on one draw must not hide a dependency.
    inputs = [
        torch.randn(1, net.in_channels, length, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    ]
    outputs = [net(x) for x in inputs]
    widest = 0
    for t in range(length - period, length):
        grads = [
            torch.autograd.grad(o[0, :, t].sum(), x, retain_graph=True)[0]
            for o, x in zip(outputs, inputs)
        ]
        depends = torch.stack(grads).abs().sum(dim=(0, 1, 2)) > 0  # (T,)
        used = depends.nonzero().flatten()
        assert used.max().item() <= t
        assert used.min().item() >= t - field + 1  # nothing further back matters
        widest = max(widest, t - used.min().item() + 1)
    assert widest == field  # and something exactly that far back does, for some phase


def test_valid_mode_equals_cropped_full_pass(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x, full = full_and_input(net, rng)
    for n in {1, x.shape[-1], rng.randint(1, x.shape[-1])}:
        torch.testing.assert_close(net(x, outputs=n), full[..., -n:], rtol=1e-9, atol=1e-10)


def test_stepping_equals_full_pass(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x, full = full_and_input(net, rng)
    stream = net.stream(x.shape[0])
    steps = torch.stack([stream.step(x[..., t]) for t in range(x.shape[-1])], dim=-1)
    torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-10)


def test_prime_then_step_equals_full_pass(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x, full = full_and_input(net, rng)
    stream = net.stream(x.shape[0])
    for split in {1, x.shape[-1], rng.randint(1, x.shape[-1])}:
        primed = stream.prime(x[..., :split])
        rest = [stream.step(x[..., t]) for t in range(split, x.shape[-1])]
        torch.testing.assert_close(
            torch.cat([primed, *(r[..., None] for r in rest)], dim=-1), full, rtol=1e-9, atol=1e-10
        )


def test_two_streams_do_not_interfere(case: tuple[CausalNetwork, random.Random]) -> None:
    net, rng = case
    x, full = full_and_input(net, rng)
    other = torch.randn_like(x)
    first, second = net.stream(x.shape[0]), net.stream(x.shape[0])
    outputs = []
    for t in range(x.shape[-1]):
        outputs.append(first.step(x[..., t]))
        second.step(other[..., t])
    torch.testing.assert_close(torch.stack(outputs, dim=-1), full, rtol=1e-9, atol=1e-10)


def test_stream_refuses_training_mode_and_wrong_shapes() -> None:
    net = SeqUNet(3, 2, [4, 4])
    with pytest.raises(StreamError, match="eval"):
        net.stream(1).step(torch.zeros(1, 3))
    net.eval()
    with pytest.raises(StreamError, match="shape"):
        net.stream(2).step(torch.zeros(1, 3))


def test_stream_caches_have_fixed_shapes() -> None:
    net = ResidualSeqUNet(2, 2, 4, 3, depth=2, kernel_size=3).eval()
    stream = net.stream(1)
    before = {name: (b.data.data_ptr(), b.data.shape) for name, b in stream.buffers.items()}
    for _ in range(9):
        stream.step(torch.randn(1, 2))
    assert before == {name: (b.data.data_ptr(), b.data.shape) for name, b in stream.buffers.items()}


@pytest.mark.parametrize(
    ("build", "count", "tolerance"),
    [
        (lambda: SeqUNet(88, 88, [175] * 2, kernel_size=3), 521_938, 0.0),
        (lambda: SeqUNet(88, 88, [150] * 4, kernel_size=5), 1_768_738, 0.0),
        (lambda: ResidualSeqUNet(256, 256, 180, 11, depth=2, kernel_size=5), 26_867_236, 0.05),
    ],
)
def test_parameter_counts_match_the_paper(build, count: int, tolerance: float) -> None:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        net = build()
    assert abs(sum(p.numel() for p in net.parameters()) - count) <= tolerance * count


def test_models_import_only_torch_numpy_and_stdlib() -> None:
    import sys

    allowed = {"torch", "numpy", "models", "__future__"} | set(sys.stdlib_module_names)
    for path in Path(__file__).resolve().parents[1].joinpath("models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_stream_in_another_dtype() -> None:
    net = SeqUNet(2, 2, [3, 3, 3], kernel_size=3).eval()
    x = torch.randn(1, 2, 20, dtype=torch.float64)
    full = net.double()(x)
    net.float()
    stream = net.stream(1, dtype=torch.float64)
    steps = torch.stack([stream.step(x[..., t]) for t in range(20)], dim=-1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("build", [random_sequnet, random_residual])
def test_cuda_streams_equal_the_full_pass(build) -> None:  # type: ignore[no-untyped-def]
    net = build(random.Random(3)).cuda().eval()
    x = torch.randn(2, net.in_channels, 3 * net.receptive_field, device="cuda")
    full = net(x)
    stream = net.stream(2)
    primed = stream.prime(x[..., :10])
    rest = torch.stack([stream.step(x[..., t]) for t in range(10, x.shape[-1])], dim=-1)
    torch.testing.assert_close(torch.cat([primed, rest], dim=-1), full, rtol=1e-4, atol=1e-5)
