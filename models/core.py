"""Building blocks shared by every network: causal convolutions, tap buffers and streams.

A `CausalConv1d` stores its kernel in PyTorch's convolution layout, `(out, in, K)`, which
`F.conv1d` takes as it is (no copy per training step). Its taps are

    y[t] = b + sum_s W[:, :, s] @ x[t - (K - 1 - s) * d]        (x[t < 0] = 0, zero history)

A stream computes the same sum as one matrix product of the flattened window of the last K
inputs, `(B, K * in)`, with the weight rearranged once as a `(K * in, out)` matrix
(`step_weights`): a stream is a snapshot of the weights taken when it is created.

A `TapBuffer` keeps those windows for a stream: a fixed-size tensor per dilation phase, holding
every input twice (at slot q and q + K) so the newest K inputs are always one contiguous slice.
It is allocated once and written in place; no step allocates a cache or changes its shape.

Networks compute on `Signal`s, tensors that know the absolute time of their first column, so
that the full pass (zero history), valid mode (`outputs=n`) and stream priming are one code path.
A layer's maths (its activation, gate or residual sum) is one function for both paths: features
have their channels at dim 1 in both, `(B, C, T)` in a pass and `(B, C)` in a step, and a step
asks for the in-place form, which writes into the stream's own buffers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LayerT = TypeVar("LayerT", bound=nn.Module)


class Layers(nn.ModuleList, Generic[LayerT]):
    """An `nn.ModuleList` that keeps the type of its layers for the type checker."""

    def __init__(self, layers: Iterable[LayerT] = ()) -> None:
        super().__init__(layers)

    def __getitem__(self, index: int) -> LayerT:  # type: ignore[override]
        return cast(LayerT, super().__getitem__(index))

    def __iter__(self) -> Iterator[LayerT]:
        return cast(Iterator[LayerT], super().__iter__())


class StreamError(RuntimeError):
    """A stream was used in a way the contract forbids (training mode, wrong shapes)."""


@dataclass
class Signal:
    """A feature sequence `data: (B, C, T)` whose first column is at absolute time `start`.

    Times before 0 are zeros (zero history); times are counted at the signal's own rate.
    """

    data: Tensor
    start: int

    @property
    def end(self) -> int:
        """One past the last time held."""
        return self.start + self.data.shape[-1]

    def span(self, lo: int, hi: int) -> Tensor:
        """Columns for times `lo..hi` inclusive, `(B, C, hi - lo + 1)`, zeros before `start`.

        Zeros before `start` are exact for negative times; for `0 <= lo < start` they only feed
        outputs that the caller discards (see `UpConv1d.forward_span`).
        """
        if hi >= self.end:
            raise ValueError(f"time {hi} not computed (signal ends at {self.end})")
        first = max(lo, self.start)
        piece = self.data[..., first - self.start : hi + 1 - self.start]
        if first > lo:
            piece = F.pad(piece, (first - lo, 0))
        return piece


def chain_starts(histories: list[int], first_output: int) -> list[int]:
    """For a chain of layers with these look-backs: the first needed time of every layer's
    input, and last of the outputs, when the outputs from `first_output` on are wanted."""
    starts = [first_output]
    for history in reversed(histories):
        starts.append(max(starts[-1] - history, 0))  # zero history: nothing before 0
    return starts[::-1]


def _uniform_(tensor: Tensor, fan_in: int) -> None:
    # PyTorch's default Conv1d initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(tensor, -bound, bound)


Gates = Tensor | tuple[Tensor, Tensor]  # [filter, gate] along dim 1, whole or as its two halves


def gate_halves(pre: Gates) -> tuple[Tensor, Tensor]:
    """The filter and gate halves of `pre: (B, 2C, ...)`, each `(B, C, ...)`; a stream passes
    the halves, views of its buffer made once, as splitting costs as much as the gate itself."""
    if isinstance(pre, Tensor):
        half = pre.shape[1] // 2
        return pre[:, :half], pre[:, half:]
    return pre


def gated_residual(pre: Gates, identity: Tensor, in_place: bool = False) -> Tensor:
    """The gated residual layer (paper §3.2): `identity + tanh(filter) * sigmoid(gate)`.

    pre: `[filter, gate]` along dim 1, `(B, 2C, ...)` (or its halves); identity: `(B, C, ...)`;
    returns a new `(B, C, ...)`. `in_place` overwrites `pre` (a stream's step buffer), which
    then needs no temporaries.
    """
    filter_, gate = gate_halves(pre)
    if in_place:
        filter_, gate = filter_.tanh_(), gate.sigmoid_()
    else:
        filter_, gate = torch.tanh(filter_), torch.sigmoid(gate)
    return torch.addcmul(identity, filter_, gate)


class CausalConv1d(nn.Module):
    """Causal (dilated, optionally strided) 1-D convolution, without padding.

    weight: `(out_channels, in_channels, kernel_size)`, as `nn.Conv1d`; bias: `(out_channels,)`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or dilation < 1 or stride < 1:
            raise ValueError("kernel_size, dilation and stride must be positive")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        _uniform_(self.weight, in_channels * kernel_size)
        _uniform_(self.bias, in_channels * kernel_size)

    @property
    def history(self) -> int:
        """How many earlier inputs (at this layer's rate) one output looks back."""
        return (self.kernel_size - 1) * self.dilation

    def forward(self, x: Tensor) -> Tensor:
        """Valid convolution: `x: (B, in, T)` -> `(B, out, (T - history - 1) // stride + 1)`."""
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)

    def forward_span(self, x: Signal, lo: int, hi: int) -> Signal:
        """Outputs for times `lo..hi` (at the output rate) from the signal `x`."""
        first = lo * self.stride - self.history
        return Signal(self(x.span(first, hi * self.stride)), lo)


class UpConv1d(nn.Module):
    """Causal stride-2 transposed convolution, kept in polyphase form.

    Output `u[2m] = b + sum_q W[2q] c[m - q]` and `u[2m + 1] = b + sum_q W[2q + 1] c[m - q]`:
    exactly `ConvTranspose1d(stride=2)` with its output cropped to be causal, written as two
    coarse-rate convolutions (even and odd taps) so that a streaming step runs only one of them.
    Parameters: `C_in * C_out * kernel_size + C_out`, as for the transposed convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 2:
            raise ValueError("an up-sampling convolution needs kernel_size >= 2")
        self.kernel_size = kernel_size
        self.even = CausalConv1d(in_channels, out_channels, (kernel_size + 1) // 2)
        self.odd = CausalConv1d(in_channels, out_channels, kernel_size // 2)
        self.odd.bias = self.even.bias  # one bias, shared by both phases
        fan_in = out_channels * kernel_size  # as torch initialises ConvTranspose1d
        _uniform_(self.even.weight, fan_in)
        _uniform_(self.odd.weight, fan_in)
        _uniform_(self.even.bias, fan_in)

    @staticmethod
    def coarse_start(fine_lo: int, kernel_size: int) -> int:
        """Earliest coarse time that the fine outputs from `fine_lo` on depend on."""
        taps = (kernel_size + 1) // 2 if fine_lo % 2 == 0 else kernel_size // 2
        return fine_lo // 2 - (taps - 1)

    def forward_span(self, c: Signal, lo: int, hi: int) -> Signal:
        """Fine outputs for times `lo..hi` from the coarse signal `c`: `(B, out, hi - lo + 1)`."""
        first, last = lo // 2, hi // 2
        even = self.even.forward_span(c, first, last).data  # (B, out, M), times 2m
        odd = self.odd.forward_span(c, first, last).data  # (B, out, M), times 2m + 1
        fine = torch.stack((even, odd), dim=-1).flatten(-2)  # (B, out, 2M), from time 2 * first
        return Signal(fine[..., lo - 2 * first : hi + 1 - 2 * first], lo)


class TapBuffer:
    """The inputs a (dilated) causal convolution needs for its next output, kept in place.

    data: `(dilation, B, 2 * K, C)`. Input number n goes to phase `n % dilation`, slots
    `q = (n // dilation) % K` and `q + K`; the window for input n is the contiguous slice
    `[q + 1, q + 1 + K)` of its phase, oldest first, ending with input n itself.
    """

    def __init__(
        self,
        batch_size: int,
        channels: int,
        kernel_size: int,
        dilation: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        parts: tuple[int, ...] | None = None,
    ) -> None:
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.data = torch.zeros(
            dilation, batch_size, 2 * kernel_size, channels, device=device, dtype=dtype
        )
        self.count = 0
        self.parts = tuple(parts) if parts else (channels,)
        if sum(self.parts) != channels:
            raise ValueError(f"parts {self.parts} do not add up to {channels} channels")
        # Views of every slot, made once: a step then only copies and multiplies.
        self._views = (
            [self._make_views(n) for n in range(dilation * kernel_size)]
            if dilation * kernel_size <= 1024
            else None
        )

    def _make_views(self, n: int) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        row, q = self.data[n % self.dilation], (n // self.dilation) % self.kernel_size
        writes, start = [], 0
        for width in self.parts:
            writes.append(
                (
                    row[:, q, start : start + width],
                    row[:, q + self.kernel_size, start : start + width],
                )
            )
            start += width
        return writes, row[:, q + 1 : q + 1 + self.kernel_size].flatten(1)

    def _slot_views(self, n: int) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        if self._views is not None:
            return self._views[n % len(self._views)]
        return self._make_views(n)

    def reset(self) -> None:
        """Back to zero history."""
        self.data.zero_()
        self.count = 0

    def push(self, *parts: Tensor) -> Tensor:
        """Append one input, `(B, C)`, or its channel-wise pieces as declared in `parts`
        (without concatenating them); return the window ending with it, `(B, K * C)`, a view."""
        writes, window = self._slot_views(self.count)
        for part, (first, second) in zip(parts, writes, strict=True):
            first.copy_(part)
            second.copy_(part)
        self.count += 1
        return window

    def window(self) -> Tensor:
        """The window ending with the latest input, `(B, K * C)`, without appending."""
        return self._slot_views(self.count - 1)[1]

    def fill(self, history: Tensor) -> None:
        """Restart as if every column of `history: (B, C, T)` had been pushed in order."""
        self.reset()
        total = history.shape[-1]
        keep = min(total, self.kernel_size * self.dilation)
        times = torch.arange(total - keep, total)
        phases = times % self.dilation
        slots = (times // self.dilation) % self.kernel_size
        values = history[..., total - keep :].permute(2, 0, 1).to(self.data)  # (keep, B, C)
        for offset in (0, self.kernel_size):
            self.data[phases, :, slots + offset] = values
        self.count = total


def step_weights(
    conv: CausalConv1d, device: torch.device | str, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The `(K * in, out)` matrix and `(out,)` bias that one step applies to the flattened
    window of a convolution's last K inputs, `(B, K * in)`: `y = bias + window @ matrix`.

    Row `s * in + c` of the matrix is tap s (oldest first, the `TapBuffer` window order) and
    input channel c. Both are contiguous copies taken now, on `device` in `dtype`: a stream is a
    snapshot of the weights when it was created (create a new one after training further).
    """
    matrix = conv.weight.detach().permute(2, 1, 0).reshape(-1, conv.out_channels)  # (K * in, out)
    bias = conv.bias.detach()
    return (
        matrix.to(device=device, dtype=dtype).clone(memory_format=torch.contiguous_format),
        bias.to(device=device, dtype=dtype).clone(),
    )


def _gate_buffer(buffer: TapBuffer, channels: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A pre-activation buffer `(B, channels)` and its filter and gate halves (views)."""
    data = buffer.data
    pre = torch.empty(data.shape[1], channels, dtype=data.dtype, device=data.device)
    return pre, gate_halves(pre)


class StepConv:
    """A convolution bound to a stream's tap buffer: `conv(x)` appends x, returns the output.

    It keeps its own copy of the weights (`step_weights`), taken when the stream is created.
    """

    def __init__(self, conv: CausalConv1d, buffer: TapBuffer) -> None:
        self.buffer = buffer
        data = buffer.data
        self.weight, self.bias = step_weights(conv, data.device, data.dtype)  # (K * in, out)
        # For gated layers: the pre-activation lives in one buffer, gated in place.
        self._pre, self._gates = _gate_buffer(buffer, conv.out_channels)

    def __call__(self, *parts: Tensor) -> Tensor:
        """Append `parts` (one input, `(B, in)`, possibly in pieces); return `(B, out)`."""
        return torch.addmm(self.bias, self.buffer.push(*parts), self.weight)

    def gated(self, identity: Tensor, *parts: Tensor) -> Tensor:
        """`gated_residual` of this output: append `parts`; return `(B, out / 2)`."""
        torch.addmm(self.bias, self.buffer.push(*parts), self.weight, out=self._pre)
        return gated_residual(self._gates, identity, in_place=True)


class StepUpConv:
    """An `UpConv1d` bound to a stream's buffer of coarse inputs (`ceil(K/2)` taps).

    The odd phase has one tap fewer when K is odd: its window is the newest `K // 2` inputs.
    """

    def __init__(self, conv: UpConv1d, buffer: TapBuffer) -> None:
        self.buffer = buffer
        data = buffer.data
        self.even, self.bias = step_weights(conv.even, data.device, data.dtype)
        self.odd, _ = step_weights(conv.odd, data.device, data.dtype)  # the bias is shared
        self.skip = (conv.even.kernel_size - conv.odd.kernel_size) * conv.even.in_channels
        self._pre, self._gates = _gate_buffer(buffer, conv.even.out_channels)

    def even_step(self, coarse: Tensor) -> Tensor:
        """Fine time 2m: append the new coarse input `c[m]: (B, in)`; return `(B, out)`."""
        return torch.addmm(self.bias, self.buffer.push(coarse), self.even)

    def odd_step(self) -> Tensor:
        """Fine time 2m + 1: the same coarse inputs, the odd taps; return `(B, out)`."""
        return torch.addmm(self.bias, self.buffer.window()[:, self.skip :], self.odd)

    def gated(self, identity: Tensor, coarse: Tensor | None) -> Tensor:
        """`gated_residual` of the up-sampled output, `(B, out / 2)`.

        `coarse`: the new coarse input at an even fine time, None at an odd one.
        """
        if coarse is not None:
            torch.addmm(self.bias, self.buffer.push(coarse), self.even, out=self._pre)
        else:
            torch.addmm(self.bias, self.buffer.window()[:, self.skip :], self.odd, out=self._pre)
        return gated_residual(self._gates, identity, in_place=True)


class Stream:
    """Sample-by-sample inference for one network, owning all of its caches.

    `step(x_t)` returns what the full forward pass returns at the current time; `prime(x)`
    feeds a whole context in one parallel pass. Subclasses implement `_step`, `_prime` and
    `_buffers`. A stream copies the weights it needs when it is created (a snapshot) and owns
    its caches, so several streams of one network can coexist.
    """

    def __init__(self, network: CausalNetwork, batch_size: int) -> None:
        self.network = network
        self.batch_size = batch_size
        self.time = 0

    def _buffers(self) -> list[TapBuffer]:
        raise NotImplementedError

    def _step(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _prime(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _check(self, x: Tensor, dims: int) -> None:
        if self.network.training:
            raise StreamError("streams run in eval mode only: call network.eval() first")
        expected = (self.batch_size, self.network.in_channels)
        if x.dim() != dims or tuple(x.shape[:2]) != expected:
            raise StreamError(
                f"expected input of shape {expected}{' + (T,)' if dims == 3 else ''}, got {tuple(x.shape)}"
            )

    @property
    def clock_cycle(self) -> int:
        """Steps after which the stream's schedule of work repeats (see the network's)."""
        return self.network.clock_cycle

    def reset(self) -> None:
        """Back to time 0 with zero history."""
        for buffer in self._buffers():
            buffer.reset()
        self.time = 0

    def step(self, x: Tensor) -> Tensor:
        """Feed `x: (B, in_channels)` at the current time; return `(B, out_channels)`."""
        self._check(x, 2)
        with torch.inference_mode():
            out = self._step(x)
        self.time += 1
        return out

    def prime(self, x: Tensor) -> Tensor:
        """Restart from zero history, feed `x: (B, in_channels, T)` at once; return `(B, out, T)`.

        Later `step` calls continue at time T.
        """
        self._check(x, 3)
        with torch.inference_mode():
            out = self._prime(x)
        self.time = x.shape[-1]
        return out


class CausalNetwork(nn.Module):
    """The contract every network honours (see DESIGN.md).

    `forward(x, outputs=None)`: `x: (B, in_channels, T)` -> `(B, out_channels, T)` (or the last
    `outputs` columns, computing only what they need). Output t predicts element t + 1.
    """

    in_channels: int
    out_channels: int

    @property
    def receptive_field(self) -> int:
        """Inputs, counting the current one, that can influence one output (DESIGN.md)."""
        raise NotImplementedError

    @property
    def clock_cycle(self) -> int:
        """Steps after which a stream's schedule repeats: its work (and the time-variant
        network itself) is periodic with this period, e.g. `2**blocks` for a Seq-U-Net."""
        raise NotImplementedError

    def stream(
        self,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Stream:
        raise NotImplementedError

    def _parameter_like(self, device: torch.device | str | None, dtype: torch.dtype | None) -> dict:
        reference = next(self.parameters())
        return {"device": device or reference.device, "dtype": dtype or reference.dtype}

    @staticmethod
    def _check_outputs(x: Tensor, in_channels: int, outputs: int | None) -> int:
        if x.dim() != 3 or x.shape[1] != in_channels:
            raise ValueError(f"expected input (batch, {in_channels}, time), got {tuple(x.shape)}")
        total = x.shape[-1]
        if outputs is None:
            return total
        if not 1 <= outputs <= total:
            raise ValueError(
                f"outputs must be between 1 and the input length {total}, got {outputs}"
            )
        return outputs
