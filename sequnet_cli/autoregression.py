"""The generation loop: a network's stream and its task's sampler, one step and one draw at a time.

Each step feeds the latest element (the primer's last, or the task's first input) to the stream,
and the sampler draws the next element from the output; its encoding is the next step's input.
The loop is a `models.StepProgram`: with `capture` (on CUDA) its step and draw are replayed as
CUDA graphs, otherwise they run eagerly through the same code; a capture that fails falls back
to eager steps with one warning. The sampler's random numbers are drawn in blocks of `CHUNK`
steps, before each chunk, so the same seed gives the same elements however the steps run, and
a captured step finds its numbers at a position held on the device. The caller gets the drawn
elements chunk by chunk, as they come (for the display, live playback, and the files).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from models import CausalNetwork, StepProgram, Stream
from sequnet_cli.devices import cpu_threads
from sequnet_cli.errors import warn
from sequnet_cli.tasks import Progress, Sampler

CHUNK = 1024  # steps per chunk handed to the caller, and per block of random numbers


class Autoregression:
    """`count` sequences generated together by `network` and `sampler`, continuing `primer`
    (in the task's storage form; the primer itself is not returned). `capture`: replay the
    steps as CUDA graphs; `fixed_index`: run what would be captured without capturing it (the
    same elements, as tests check on a CPU). `threads`: CPU threads for the steps (one is the
    fastest for the small operations of a step; 0 leaves PyTorch's setting)."""

    def __init__(
        self,
        network: CausalNetwork,
        sampler: Sampler,
        count: int,
        primer: np.ndarray | None = None,
        capture: bool = False,
        fixed_index: bool = False,
        threads: int = 1,
    ) -> None:
        self.network, self.sampler, self.count = network, sampler, count
        self.fixed_index, self.threads = fixed_index, threads
        device = sampler.device
        self.uniforms = torch.zeros(CHUNK, count, *sampler.random_shape, device=device)
        self._uniform = torch.zeros(1, count, *sampler.random_shape, device=device)
        self._uniform_row = self._uniform[0]  # (B, ...): this step's random numbers
        self.drawn = torch.zeros(  # (CHUNK, B, ...)
            CHUNK, count, *sampler.value_shape, dtype=sampler.value_dtype, device=device
        )
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # the step in the chunk
        self.program = self._start(primer, capture)

    @property
    def captured(self) -> bool:
        """Whether the steps replay CUDA graphs."""
        return self.program.captured

    def _start(self, primer: np.ndarray | None, capture: bool) -> StepProgram:
        if capture:
            try:
                return self._program(primer, capture=True)
            except RuntimeError as error:  # CUDA reports a failed capture so
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "no reason"
                warn(
                    f"could not capture the generation step as CUDA graphs ({reason}); "
                    "generating step by step instead"
                )
        return self._program(primer, capture=False)

    def _program(self, primer: np.ndarray | None, capture: bool) -> StepProgram:
        stream = self.network.stream(self.count, fixed_index=capture or self.fixed_index)
        self.x = self._first_input(stream, primer)  # (B, in_channels): each step's input
        return StepProgram(stream, self.x, self._after, capture=capture, state=[self.position])

    def _first_input(self, stream: Stream, primer: np.ndarray | None) -> Tensor:
        """The first step's input `(B, in_channels)`, after priming the stream with all of the
        primer but its last element (which is that input)."""
        if primer is None or len(primer) == 0:
            return self.sampler.first_input().clone()
        context = self.sampler.encode(primer).expand(self.count, -1, -1)  # (B, C, P)
        if context.shape[-1] > 1:
            stream.prime(context[..., :-1].contiguous())
        return context[..., -1].clone()

    def _after(self, output: Tensor) -> None:
        """Draw from one step's output `(B, out_channels)`, keep the element, feed it back."""
        torch.index_select(self.uniforms, 0, self.position, out=self._uniform)
        values, next_input = self.sampler.draw(output, self._uniform_row)
        self.drawn.index_copy_(0, self.position, values.unsqueeze(0))
        self.x.copy_(next_input)
        self.position.add_(1)

    def chunks(self, steps: int) -> Iterator[np.ndarray]:
        """The elements of the next `steps` steps, `(count, n, ...)` per chunk of at most `CHUNK`
        steps, as they are drawn. On Ctrl-C the steps completed so far come as one last, shorter
        chunk before the `KeyboardInterrupt` goes on."""
        done = 0
        while done < steps:
            size = min(CHUNK, steps - done)
            completed = 0
            try:
                with cpu_threads(self.threads), torch.inference_mode():
                    self.sampler.fill_random(self.uniforms)
                    self.position.zero_()
                    for _ in range(size):
                        self.program.run()
                        completed += 1
            except KeyboardInterrupt:
                if completed:
                    yield self._take(completed)
                raise
            yield self._take(size)
            done += size

    def _take(self, steps: int) -> np.ndarray:
        """The first `steps` elements of the chunk, `(count, steps, ...)`, copied to the host."""
        return self.drawn[:steps].transpose(0, 1).to("cpu", copy=True).numpy()


def autoregress(
    network: CausalNetwork,
    sampler: Sampler,
    steps: int,
    count: int,
    primer: np.ndarray | None = None,
    capture: bool = False,
    progress: Progress | None = None,
    threads: int = 1,
) -> np.ndarray:
    """`count` sequences of `steps` new elements each, drawn by `sampler`: `(count, steps, ...)`."""
    generation = Autoregression(network, sampler, count, primer, capture, threads=threads)
    chunks = []
    for chunk in generation.chunks(steps):
        chunks.append(chunk)
        if progress is not None:
            progress(chunk.shape[1])
    return np.concatenate(chunks, axis=1)
