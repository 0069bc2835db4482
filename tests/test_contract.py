"""The model contract (DESIGN.md), checked for every network on many random small configurations.

`BUILDERS` maps each architecture to a builder of random small networks (levels, kernel sizes,
widths, depth); every contract test runs over `CASES`, a few seeds of each. Everything runs in
float64 and eval mode, so the comparisons are tight, and causality and the receptive field are
checked exactly, through gradients.
"""

from __future__ import annotations

import ast
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from graphs import emulated_graphs  # noqa: F401  (a fixture)
from torch import Tensor, nn

from models import (
    ARCHITECTURES,
    TCN,
    CausalNetwork,
    ResidualSeqUNet,
    SeqUNet,
    StepProgram,
    Stream,
    StreamError,
    WaveNet,
)
from models.core import CausalConv1d


def kernel_size(rng: random.Random) -> int:
    return rng.choice((2, 3, 5))


def width(rng: random.Random) -> int:
    return rng.randint(1, 5)


def random_sequnet(rng: random.Random) -> CausalNetwork:
    channels = [rng.randint(2, 5) for _ in range(rng.randint(1, 5))]
    dropout = rng.choice((0.0, 0.3))
    return SeqUNet(width(rng), width(rng), channels, kernel_size(rng), dropout)


def random_residual_sequnet(rng: random.Random) -> CausalNetwork:
    levels, depth = rng.randint(1, 5), rng.randint(1, 3)
    return ResidualSeqUNet(width(rng), width(rng), width(rng), levels, depth, kernel_size(rng))


def random_tcn(rng: random.Random) -> CausalNetwork:
    channels = [width(rng) for _ in range(rng.randint(1, 5))]
    return TCN(width(rng), width(rng), channels, kernel_size(rng), rng.choice((0.0, 0.3)))


def random_wavenet(rng: random.Random) -> CausalNetwork:
    residual, dilation, skip = width(rng), width(rng), width(rng)
    layers, stacks = rng.randint(1, 5), rng.randint(1, 3)
    return WaveNet(
        width(rng), width(rng), residual, dilation, skip, layers, stacks, kernel_size(rng)
    )


# Architecture (as in `models.ARCHITECTURES`) -> a builder of random small networks.
BUILDERS: dict[str, Callable[[random.Random], CausalNetwork]] = {
    "sequnet": random_sequnet,
    "residual-sequnet": random_residual_sequnet,
    "tcn": random_tcn,
    "wavenet": random_wavenet,
}
SEEDS = range(16)
CASES = [pytest.param(name, seed, id=f"{name}-{seed}") for name in BUILDERS for seed in SEEDS]
FEW_CASES = CASES[:: len(SEEDS) // 2]  # two seeds per architecture, for the slower checks
EXACT = {"rtol": 1e-9, "atol": 1e-10}  # float64 rounding


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The tensors are tiny: threads only add overhead on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int, positive: bool = False) -> tuple[CausalNetwork, random.Random]:
    """A random network of architecture `name`, float64, eval mode, every parameter perturbed.

    The perturbation moves biases off their small initial range and TCN's weight-norm gains
    away from `|v|`, so a stream that mishandled either would show. `positive` makes every
    parameter small and positive: then no ReLU is dead, no gate saturates and no sum cancels,
    so every path through the network carries a nonzero gradient.
    """
    rng = random.Random(f"{name}-{seed}")
    torch.manual_seed(seed)
    net = BUILDERS[name](rng).double().eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
            if positive:
                parameter.abs_().mul_(0.1)
    return net, rng


def random_input(net: CausalNetwork, rng: random.Random, shortest: int = 1) -> Tensor:
    """`(B, in_channels, T)`, T from `shortest` to a receptive field and two clock cycles past
    it: every phase of the schedule, far enough from t = 0 that zero history hides nothing."""
    longest = max(shortest, net.receptive_field + 2 * net.clock_cycle)
    length = rng.randint(shortest, longest)
    return torch.randn(rng.randint(1, 3), net.in_channels, length, dtype=torch.float64)


def some_times(rng: random.Random, lo: int, hi: int, count: int = 4) -> list[int]:
    """Up to `count` times in `lo..hi`, always including both ends."""
    inner = rng.sample(range(lo, hi + 1), min(count, hi - lo + 1))
    return sorted({lo, hi, *inner})


def run_steps(stream: Stream, x: Tensor) -> Tensor:
    """Step `stream` through every column of `x: (B, C, T)`; the outputs, `(B, out, T)`."""
    return torch.stack([stream.step(x[..., t]) for t in range(x.shape[-1])], dim=-1)


def run_program(stream: Stream, x: Tensor, capture: bool = False, compile_kinds: int = 0) -> Tensor:
    """Step `stream` through every column of `x: (B, C, T)` as a `StepProgram` whose `after`
    stores the output and feeds the next column, all through device-held positions, as a
    captured or compiled program must; the outputs, `(B, out, T)`."""
    inputs = x.permute(2, 0, 1).contiguous()  # (T, B, C)
    length, last = inputs.shape[0], inputs.shape[0] - 1
    outputs = x.new_zeros(length, x.shape[0], stream.network.out_channels)
    current = inputs[0].clone()
    position = torch.zeros(1, dtype=torch.long, device=x.device)

    def after(output: Tensor) -> None:
        outputs.index_copy_(0, position, output.unsqueeze(0))
        position.add_(1)
        torch.index_select(inputs, 0, position.clamp(max=last), out=current.unsqueeze(0))

    program = StepProgram(
        stream, current, after, capture=capture, compile_kinds=compile_kinds, state=[position]
    )
    for _ in range(length):
        program.run()
    return outputs.permute(1, 2, 0)


def dependencies(net: CausalNetwork, x: Tensor, times: list[int]) -> Tensor:
    """`(len(times), T)` booleans: [i, s] is whether output `times[i]` depends on input s, i.e.
    whether `x.grad[..., s]` is nonzero (for some batch item) after a backward pass from
    `net(x)[..., times[i]]`, its channels summed with random positive weights.

    All the backward passes are one batched call.
    """
    x = x.clone().requires_grad_(True)
    weights = torch.rand(net.out_channels, dtype=x.dtype) + 0.5
    out = torch.einsum("bct,c->bt", net(x), weights)  # (B, T)
    selectors = torch.zeros(len(times), *out.shape, dtype=x.dtype)  # (N, B, T)
    selectors[torch.arange(len(times)), :, times] = 1.0
    (grads,) = torch.autograd.grad(out, x, selectors, is_grads_batched=True)  # (N, B, C, T)
    return grads.ne(0).flatten(1, 2).any(1)  # (N, T)


# --- 1. causal, with zero history --------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_causal_by_gradient(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    times = some_times(rng, 0, x.shape[-1] - 1, count=32)
    for t, depends in zip(times, dependencies(net, x, times), strict=True):
        assert not depends[t + 1 :].any(), f"output {t} depends on a later input"


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_prefix_consistent(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    full = net(x)
    for n in some_times(rng, 1, x.shape[-1]):
        torch.testing.assert_close(net(x[..., :n]), full[..., :n], **EXACT)


# --- 2. the receptive field ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_receptive_field_exact_and_tight(name: str, seed: int) -> None:
    # Positive parameters and inputs: every input in reach changes the output (see `make`).
    net, rng = make(name, seed, positive=True)
    field, cycle = net.receptive_field, net.clock_cycle
    x = torch.rand(1, net.in_channels, field + 2 * cycle, dtype=torch.float64)
    # Outputs far enough from t = 0 that zero history hides nothing, two cycles of them (every
    # phase of a time-variant network), and some earlier ones.
    steady = list(range(field - 1, field + 2 * cycle))
    times = torch.tensor(some_times(rng, 0, field - 2, count=8) + steady)  # (N,)
    depends = dependencies(net, x, times.tolist())  # (N, T)
    first = depends.int().argmax(dim=1)  # (N,): the earliest input each output depends on
    inputs = torch.arange(x.shape[-1])
    # Each output depends on exactly the inputs from `first` to itself, ...
    assert torch.equal(depends, (inputs >= first[:, None]) & (inputs <= times[:, None]))
    reach = times - first + 1  # (N,)
    assert reach.max() <= field  # ... never further back than the field, ...
    steady_reach = reach[-len(steady) :]
    assert steady_reach.max() == field  # ... and the whole field for some phase.
    # The network is periodic in time with the period of its stream's schedule.
    assert torch.equal(steady_reach[cycle:], steady_reach[:-cycle])


# --- 3. valid mode -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_valid_mode_equals_cropped_full_pass(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    full = net(x)
    for n in some_times(rng, 1, x.shape[-1]):
        torch.testing.assert_close(net(x, outputs=n), full[..., -n:], **EXACT)


# --- 4. streams ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_stepping_equals_full_pass(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    stream = net.stream(x.shape[0])
    run_steps(stream, x[..., : rng.randint(1, x.shape[-1])])
    stream.reset()  # back to zero history, whatever came before
    torch.testing.assert_close(run_steps(stream, x), net(x), **EXACT)


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_prime_then_step_equals_full_pass(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    length, full = x.shape[-1], net(x)
    stream = net.stream(x.shape[0])
    # One stream for every split: prime must restart from zero history whatever came before.
    for split in some_times(rng, 1, length, count=2):
        torch.testing.assert_close(stream.prime(x[..., :split]), full[..., :split], **EXACT)
        # What prime left in the caches is read only within one field and cycle of steps.
        stop = min(length, split + net.receptive_field + net.clock_cycle)
        if stop > split:
            steps = run_steps(stream, x[..., split:stop])
            torch.testing.assert_close(steps, full[..., split:stop], **EXACT)


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_interleaved_streams_do_not_interfere(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    other = torch.randn(x.shape[0] % 3 + 1, *x.shape[1:], dtype=torch.float64)  # another batch
    first, second = net.stream(x.shape[0]), net.stream(other.shape[0])
    split = rng.randint(1, x.shape[-1])
    outputs: tuple[list[Tensor], list[Tensor]] = ([], [second.prime(other[..., :split])])
    for t in range(x.shape[-1]):
        outputs[0].append(first.step(x[..., t]).unsqueeze(-1))
        if t >= split:
            outputs[1].append(second.step(other[..., t]).unsqueeze(-1))
    torch.testing.assert_close(torch.cat(outputs[0], dim=-1), net(x), **EXACT)
    torch.testing.assert_close(torch.cat(outputs[1], dim=-1), net(other), **EXACT)


@pytest.mark.parametrize("name", BUILDERS)
def test_streams_refuse_training_mode_and_wrong_shapes(name: str) -> None:
    net, _ = make(name, 0)
    c = net.in_channels
    stream = net.stream(2)
    net.train()
    with pytest.raises(StreamError, match="eval"):
        stream.step(torch.zeros(2, c, dtype=torch.float64))
    with pytest.raises(StreamError, match="eval"):
        stream.prime(torch.zeros(2, c, 4, dtype=torch.float64))
    net.eval()
    for bad in [(1, c), (2, c + 1), (2, c, 1)]:
        with pytest.raises(StreamError, match="shape"):
            stream.step(torch.zeros(bad, dtype=torch.float64))
    for bad in [(3, c, 4), (2, c + 1, 4), (2, c)]:
        with pytest.raises(StreamError, match="shape"):
            stream.prime(torch.zeros(bad, dtype=torch.float64))


def cache_tensors(stream: Stream) -> dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """Every tensor the stream holds, by attribute path: its address, shape and strides."""
    found: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {}

    def walk(value: object, path: str) -> None:
        if isinstance(value, Tensor):
            found[path] = (value.data_ptr(), tuple(value.shape), value.stride())
        elif isinstance(value, nn.Module):
            return  # the network: weights, not caches
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}[{key!r}]")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif hasattr(value, "__dict__"):
            for key, item in vars(value).items():
                walk(item, f"{path}.{key}")

    walk(stream, "stream")
    return found


@pytest.mark.parametrize("fixed_index", [False, True])
@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_stream_caches_keep_their_memory_and_shapes(
    name: str, seed: int, fixed_index: bool
) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng, shortest=2 * net.clock_cycle + 1)
    stream = net.stream(x.shape[0], fixed_index=fixed_index)
    before = cache_tensors(stream)
    assert before  # the walk found the caches
    run_steps(stream, x)  # at least two whole clock cycles
    assert cache_tensors(stream) == before
    stream.prime(x[..., : x.shape[-1] // 2])
    assert cache_tensors(stream) == before
    stream.reset()
    assert cache_tensors(stream) == before


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_streams_are_snapshots_of_the_weights(name: str, seed: int) -> None:
    net, rng = make(name, seed)
    x = random_input(net, rng)
    before = net(x)
    stream = net.stream(x.shape[0])
    with torch.no_grad():
        for parameter in net.parameters():  # TCN: the weight-norm gains and directions
            parameter.mul_(1.5)
    assert not torch.allclose(net(x), before)
    torch.testing.assert_close(run_steps(stream, x), before, **EXACT)
    torch.testing.assert_close(run_steps(net.stream(x.shape[0]), x), net(x), **EXACT)


@pytest.mark.parametrize("name", BUILDERS)
def test_stream_in_another_dtype(name: str) -> None:
    net, rng = make(name, 1)
    x = random_input(net, rng)
    net.float()
    stream = net.stream(x.shape[0], dtype=torch.float64)  # float32 weights, float64 caches
    full = net.double()(x)
    torch.testing.assert_close(run_steps(stream, x), full, rtol=1e-5, atol=1e-6)
    assert stream.prime(x).dtype == torch.float64


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_clock_cycle(name: str, seed: int) -> None:
    # The schedule's period shows in the receptive field test; here, its value.
    net, _ = make(name, seed)
    expected = 2**net.blocks if isinstance(net, SeqUNet | ResidualSeqUNet) else 1
    assert net.clock_cycle == expected == net.stream(1).clock_cycle


# --- fixed-index streams and step programs (CUDA graphs) ------------------------------------


def assert_same(actual: Tensor, expected: Tensor) -> None:
    """The same numbers up to float64 rounding. A fixed-index step multiplies a gathered copy of
    the window where a plain one multiplies a view of the buffer: bit for bit the same on most
    CPUs, but a BLAS may pick another kernel for another address alignment (MKL does on AMD)."""
    torch.testing.assert_close(actual, expected, **EXACT)


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_fixed_index_streams_equal_plain_streams(name: str, seed: int) -> None:
    # Positions held on the device instead of in Python: the same numbers.
    net, rng = make(name, seed)
    x = random_input(net, rng)
    plain, fixed = net.stream(x.shape[0]), net.stream(x.shape[0], fixed_index=True)
    assert_same(run_steps(fixed, x), run_steps(plain, x))
    split = rng.randint(1, x.shape[-1])
    assert_same(fixed.prime(x[..., :split]), plain.prime(x[..., :split]))
    if split < x.shape[-1]:
        assert_same(run_steps(fixed, x[..., split:]), run_steps(plain, x[..., split:]))
    fixed.reset()
    plain.reset()
    assert_same(run_steps(fixed, x), run_steps(plain, x))


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_step_programs_equal_plain_streams(name: str, seed: int) -> None:
    # What a CUDA graph replays, run eagerly: steps by kind, positions and feedback on the device.
    net, rng = make(name, seed)
    x = random_input(net, rng)
    expected = run_steps(net.stream(x.shape[0]), x)
    assert_same(run_program(net.stream(x.shape[0], fixed_index=True), x), expected)
    split = rng.randint(1, x.shape[-1])
    if split < x.shape[-1]:
        plain, fixed = net.stream(x.shape[0]), net.stream(x.shape[0], fixed_index=True)
        plain.prime(x[..., :split])
        fixed.prime(x[..., :split])
        assert_same(run_program(fixed, x[..., split:]), run_steps(plain, x[..., split:]))


@pytest.mark.parametrize(("name", "seed"), CASES)
@pytest.mark.usefixtures("emulated_graphs")
def test_step_programs_replay_as_graphs(name: str, seed: int) -> None:
    # Captured (emulated on a CPU, tests/graphs.py): one recorded run per kind of step, replayed
    # without the Python that made it. Every position a step needs must be on the device.
    net, rng = make(name, seed)
    x = random_input(net, rng)
    stream = net.stream(x.shape[0], fixed_index=True)
    split = rng.randint(0, x.shape[-1] - 1)
    plain = net.stream(x.shape[0])
    if split:
        stream.prime(x[..., :split])
        plain.prime(x[..., :split])
    replayed = run_program(stream, x[..., split:], capture=True)
    assert_same(replayed, run_steps(plain, x[..., split:]))


@pytest.mark.usefixtures("emulated_graphs")
def test_the_graph_emulation_catches_positions_kept_in_python() -> None:
    # The check above can fail: a plain stream keeps its positions in Python, and its replayed
    # steps all write and read the places they were recorded with.
    net, rng = make("wavenet", 3)
    x = random_input(net, rng, shortest=net.receptive_field + 2)
    stream = net.stream(x.shape[0])
    stream.fixed_index = True  # pretend, to get past the program's check
    expected = run_steps(net.stream(x.shape[0]), x)
    assert not torch.allclose(run_program(stream, x, capture=True), expected, **EXACT)


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_stream_state_is_everything_a_step_reads(name: str, seed: int) -> None:
    # What a capture's warm-up saves and restores: restoring it replays the same steps.
    net, rng = make(name, seed)
    x = random_input(net, rng, shortest=2 * net.clock_cycle + 2)
    stream = net.stream(x.shape[0], fixed_index=True)
    half = x.shape[-1] // 2
    run_steps(stream, x[..., :half])
    saved, time = [tensor.clone() for tensor in stream.state()], stream.time
    assert saved and all(isinstance(tensor, Tensor) for tensor in saved)
    first = run_steps(stream, x[..., half:])
    for tensor, copy in zip(stream.state(), saved, strict=True):
        tensor.copy_(copy)
    stream.time = time
    assert torch.equal(run_steps(stream, x[..., half:]), first)


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_step_kinds_cover_the_schedule(name: str, seed: int) -> None:
    net, _ = make(name, seed)
    stream = net.stream(1)
    blocks = net.blocks if isinstance(net, SeqUNet | ResidualSeqUNet) else 0
    assert stream.step_kinds == blocks + 1
    for kind in range(stream.step_kinds):
        assert stream.step_kind(stream.kind_time(kind)) == kind
    for time in range(3 * net.clock_cycle):
        kind = stream.step_kind(time)
        assert stream.step_kind(time + net.clock_cycle) == kind
        # Level i runs at times divisible by 2**i: the levels that run are 0..kind.
        assert all(time % 2**level == 0 for level in range(kind + 1))
        assert kind == blocks or time % 2 ** (kind + 1) != 0


@pytest.mark.parametrize("name", BUILDERS)
def test_step_programs_refuse_what_they_cannot_run(name: str) -> None:
    net, _ = make(name, 0)
    x = torch.zeros(2, net.in_channels, dtype=torch.float64)
    with pytest.raises(StreamError, match="fixed-index"):
        StepProgram(net.stream(2), x, lambda output: None, capture=True)
    with pytest.raises(StreamError, match="batch, in_channels"):
        StepProgram(net.stream(3), x, lambda output: None)
    net.train()
    with pytest.raises(StreamError, match="eval"):
        StepProgram(net.stream(2), x, lambda output: None)


# --- the library ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed"), FEW_CASES)
def test_every_3d_parameter_is_a_convolution_weight_out_in_k(name: str, seed: int) -> None:
    # Checkpoints from the old time-major layout are converted by transposing dims 1 and 2 of
    # every 3-D tensor, which is right only while this holds.
    net, _ = make(name, seed)
    convs = {n: m for n, m in net.named_modules() if isinstance(m, CausalConv1d)}
    assert convs
    for path, parameter in net.named_parameters():
        if parameter.dim() != 3:
            continue
        owner, _, leaf = path.partition(".parametrizations.weight.")  # TCN's weight norm
        conv = convs[owner if leaf else path.removesuffix(".weight")]
        shape = (conv.out_channels, conv.in_channels, conv.kernel_size)
        assert tuple(parameter.shape) == (
            (conv.out_channels, 1, 1) if leaf == "original0" else shape
        )


def test_architectures_are_the_builders() -> None:
    assert set(BUILDERS) == set(ARCHITECTURES)


def test_models_import_only_torch_numpy_and_stdlib() -> None:
    allowed = {"torch", "numpy", "models", "__future__"} | set(sys.stdlib_module_names)
    for path in Path(__file__).resolve().parents[1].joinpath("models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for imported in names:
                assert imported.split(".")[0] in allowed, f"{path.name} imports {imported}"


@pytest.fixture
def tf32(request: pytest.FixtureRequest) -> Iterator[bool]:
    """TF32 for both convolutions and matrix products (sequnet's CUDA policy), or neither."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [False, True], indirect=True, ids=["fp32", "tf32"])
@pytest.mark.parametrize("name", BUILDERS)
def test_cuda_streams_equal_the_full_pass(name: str, tf32: bool) -> None:
    """Exact (float32 tolerance) with TF32 off; with TF32 on for both convolutions and matrix
    products, within TF32's rounding (10-bit mantissa, so about 1e-3 relative per product)."""
    net, _ = make(name, 3)
    net = net.float().cuda()
    x = torch.randn(2, net.in_channels, 2 * net.receptive_field + net.clock_cycle, device="cuda")
    full = net(x)
    stream = net.stream(2)
    split = x.shape[-1] // 3
    primed = stream.prime(x[..., :split])
    rest = run_steps(stream, x[..., split:])
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if tf32 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(torch.cat([primed, rest], dim=-1), full, **tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [False], indirect=True, ids=["fp32"])
@pytest.mark.parametrize("name", BUILDERS)
def test_cuda_graphs_equal_the_eager_stream(name: str, tf32: bool) -> None:
    # Stated tolerance: the graphs replay the eager kernels, so float32 rounding at most. The
    # captured stream is primed through convolutions and the eager one stepped through matrix
    # products: TF32 off, or they would differ by TF32's rounding of the convolutions.
    net, _ = make(name, 5)
    net = net.float().cuda()
    x = torch.randn(2, net.in_channels, net.receptive_field + 3 * net.clock_cycle, device="cuda")
    eager = run_steps(net.stream(2), x)
    split = x.shape[-1] // 3
    stream = net.stream(2, fixed_index=True)
    primed = stream.prime(x[..., :split])
    captured = run_program(stream, x[..., split:], capture=True)
    torch.testing.assert_close(torch.cat([primed, captured], dim=-1), eager, rtol=1e-4, atol=1e-5)
