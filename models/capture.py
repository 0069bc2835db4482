"""Streams as CUDA graphs: one step, and what the caller does with its output, captured once per
kind of step and replayed (DESIGN.md, "Devices and scale"); on a CPU, compiled once per kind.

On a GPU a stream step is dozens of small kernels, and launching them one by one from Python
leaves the GPU idle between them. A fixed-index stream (`network.stream(..., fixed_index=True)`)
keeps every position that changes with time on the device (`models.core.Clock`), so all its
steps of one kind (`Stream.step_kind`: which levels of a Seq-U-Net run; time-invariant networks
have one kind) execute the same operations on the same memory. `StepProgram` runs such a step
followed by the caller's `after(output)`, which draws the next element and writes the next
input into the program's fixed input tensor, so sampling is inside the graph too. Captured, it
replays one CUDA graph per kind; compiled (`models.compiled`), the most frequent kinds run as
one compiled function each; otherwise it runs exactly the same code eagerly, which is how a CPU
checks a capture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from models.compiled import CompiledKinds, Store
from models.core import Stream, StreamError

After = Callable[[Tensor], None]  # output (B, out_channels) -> None; writes the next input


class StepProgram:
    """A stream step on the fixed input `x: (B, in_channels)`, then `after(output)`.

    `capture`: record one CUDA graph per kind of step (a fixed-index stream on a CUDA device).
    `compile_kinds`: compile kinds 0 to `compile_kinds - 1` (the most frequent: kind k is one
    step in 2**(k + 1)) for the CPU; a `CompileError` says why that failed. Other kinds, and
    every kind without either, execute the same operations eagerly. `state`: tensors that
    `after` reads before it writes them (e.g. a position counter), restored with the stream's
    own after the runs that precede a capture or a compilation, so that these leave no trace.
    `store`: where compiled steps are kept for later programs (`models.compiled.Store`);
    `stored_only`: compile nothing, run what `store` holds compiled (`compiled.missing` lists
    the kinds it did not hold, which run eagerly).
    """

    def __init__(
        self,
        stream: Stream,
        x: Tensor,
        after: After,
        *,
        capture: bool = False,
        compile_kinds: int = 0,
        state: Sequence[Tensor] = (),
        store: Store | None = None,
        stored_only: bool = False,
    ) -> None:
        if stream.network.training:
            raise StreamError("streams run in eval mode only: call network.eval() first")
        if x.shape != (stream.batch_size, stream.network.in_channels):
            raise StreamError(f"the input must be (batch, in_channels), got {tuple(x.shape)}")
        if (capture or compile_kinds) and not stream.fixed_index:
            raise StreamError(
                "only a fixed-index stream can be captured or compiled (fixed_index=True)"
            )
        self.stream, self.x, self.after = stream, x, after
        self.graphs = self._capture(list(state)) if capture else None
        self.compiled = None
        if compile_kinds and not capture:
            tensors = [*stream.state(), *state, x]
            kinds = list(range(stream.step_kinds))
            self.compiled = CompiledKinds(
                self._body, kinds, compile_kinds, tensors, store, stored_only
            )

    @property
    def captured(self) -> bool:
        """Whether `run` replays CUDA graphs."""
        return self.graphs is not None

    def run(self) -> None:
        """One step at the stream's current time, then `after`; the time advances by one."""
        kind = self.stream.step_kind(self.stream.time)
        if self.graphs is not None:
            self.graphs[kind].replay()
        elif self.compiled is not None and kind in self.compiled:
            self.compiled.run(kind)
        else:
            self._body(kind)
        self.stream.time += 1

    def _body(self, kind: int) -> None:
        self.after(self.stream.step_of_kind(self.x, kind))

    def _capture(self, state: list[Tensor]) -> list[torch.cuda.CUDAGraph]:
        """One graph per kind, each after a warm-up step of its kind (libraries initialise
        lazily, which a capture forbids); every warm-up step is undone.

        The graphs share one memory pool: what a step allocates (its intermediate results) is
        dead once its replay ends, as everything that outlives a step is written into tensors
        allocated before the capture; so the kinds, replayed one at a time in any order, can
        reuse the same memory instead of holding one pool each."""
        tensors = [*self.stream.state(), *state, self.x]
        saved = [tensor.clone() for tensor in tensors]
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        for kind in range(self.stream.step_kinds):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(side), torch.inference_mode():
                    self._body(kind)
            finally:
                torch.cuda.current_stream().wait_stream(side)
                _restore(tensors, saved)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
                self._body(kind)
            graphs.append(graph)
        return graphs


def _restore(tensors: list[Tensor], saved: list[Tensor]) -> None:
    """Copy `saved` back into `tensors`."""
    with torch.inference_mode():
        for tensor, copy in zip(tensors, saved, strict=True):
            tensor.copy_(copy)
