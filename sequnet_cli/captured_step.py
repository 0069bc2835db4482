"""A training step replayed as a CUDA graph: one launch instead of thousands.

A Seq-U-Net's deep levels are short sequences: at small batches a training step is thousands of
small kernels, and launching them one by one from Python leaves a GPU idle. Audio batches have
a fixed shape, so the whole step (forward, loss, backward, clipping, optimizer) is captured once
and replayed for every batch of that shape, with the batch copied into fixed input tensors.

Capturing needs a few eager warm-up steps first (cuBLAS/cuDNN workspaces, the optimizer's
state). Those steps would change the weights and draw random numbers (dropout), so every
parameter and optimizer tensor and the random states are kept before them and put back, in
place, after the capture, whether it succeeded or not: the run trains exactly as if the warm-up
had not happened (a resumed run too, which captures again), and a capture that fails (out of
memory, an operation a graph cannot hold) leaves the weights as they were for the eager steps
that follow. The optimizer must be `capturable` with its learning rate held in a tensor (a
replayed graph reads the tensor; a Python float would be baked in), see `make_optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

from sequnet_cli.tasks import Batch

WARMUP_STEPS = 3  # eager steps before capture, as PyTorch's CUDA-graph recipe does


class Graph(Protocol):
    """What capture needs of a graph: record a function once, run it again on `replay`."""

    def capture(self, body: Callable[[], None]) -> None: ...

    def replay(self) -> None: ...


class CudaGraph:
    """A `torch.cuda.CUDAGraph` behind the `Graph` protocol."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, body: Callable[[], None]) -> None:
        # A capture that fails inside `torch.cuda.graph` can leave its side stream current.
        current = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(self.graph):
                body()
        finally:
            torch.cuda.set_stream(current)

    def replay(self) -> None:
        self.graph.replay()


class CapturedStep:
    """`update(batch) -> (total loss, count)`, replayed as a graph for batches of one shape.

    `update` is the eager step (it must only use tensor operations: no `.item()`, no branch on
    a tensor's value). `tensors()` lists every parameter and optimizer-state tensor, which are
    restored after the warm-up.
    """

    def __init__(
        self,
        update: Callable[[Batch], tuple[Tensor, Tensor]],
        tensors: Callable[[], list[Tensor]],
        example: Batch,
        graph: Graph | None = None,
        warmup_steps: int = WARMUP_STEPS,
    ) -> None:
        self.shape = _shape(example)
        self.static = Batch(example.x.clone(), example.target.clone(), example.mask.clone())
        device = example.x.device
        self.total = torch.zeros((), device=device)
        self.count = torch.zeros((), device=device)

        def body() -> None:
            total, count = update(self.static)
            self.total.copy_(total)
            self.count.copy_(count)

        self.graph = graph or CudaGraph()
        with _restored(tensors), _random_states_kept(device):
            with _side_stream(device):
                for _ in range(warmup_steps):
                    update(self.static)
            self.graph.capture(body)

    def fits(self, batch: Batch) -> bool:
        """Whether `batch` has the captured shapes and dtypes."""
        return _shape(batch) == self.shape

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Copy `batch` into the graph's inputs and replay; the returned tensors are reused."""
        self.static.x.copy_(batch.x)
        self.static.target.copy_(batch.target)
        self.static.mask.copy_(batch.mask)
        self.graph.replay()
        return self.total, self.count


def _shape(batch: Batch) -> tuple[object, ...]:
    return tuple((t.shape, t.dtype, t.device) for t in (batch.x, batch.target, batch.mask))


@contextmanager
def _restored(tensors: Callable[[], list[Tensor]]) -> Iterator[None]:
    """Undo, in place, what the body does to the tensors `tensors()` lists before and after it,
    also when the body fails (tensors that appear during the body, such as fresh optimizer
    state, are zeroed: Adam's state at zero is its state before a first step)."""
    before = {id(t): t.detach().clone() for t in tensors()}
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor in tensors():
                saved = before.get(id(tensor))
                if saved is None:
                    tensor.zero_()
                else:
                    tensor.copy_(saved)


@contextmanager
def _random_states_kept(device: torch.device) -> Iterator[None]:
    """The CPU's random state, and `device`'s on CUDA, as they were before the body, also when
    it fails: the warm-up's dropout draws leave no trace, so a resumed run (which captures
    again) draws what an uninterrupted one draws."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Warm up on a side stream, as capture requires on CUDA; a no-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        torch.cuda.current_stream(device).wait_stream(stream)
