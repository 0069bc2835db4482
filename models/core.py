"""Building blocks shared by every network: causal convolutions, tap buffers, clocks, streams.

A `CausalConv1d` stores its kernel in PyTorch's convolution layout, `(out, in, K)`, which
`F.conv1d` takes as it is (no copy per training step). Its taps are

    y[t] = b + sum_s W[:, :, s] @ x[t - (K - 1 - s) * d]        (x[t < 0] = 0, zero history)

A stream computes the same sum as one matrix product of the flattened window of the last K
inputs, each with a constant 1 appended, `(B, K * (in + 1))`, with the weight and bias
rearranged once as a `(K * (in + 1), out)` matrix (`step_matrix`): a stream is a snapshot of the
weights taken when it is created.

A `TapBuffer` keeps those windows for a stream: one tensor holding every input twice (K rows
apart) so the newest K inputs of a dilation phase are always contiguous rows. Each layer of a
step writes its output straight into the buffer of the layer that reads it. A `Clock` says
where the newest input of a group of buffers goes: counted in Python (views, the least work on
a CPU), or held on the device (fixed-index streams, whose steps a CUDA graph can replay, see
`models.capture`). Buffers are allocated once and written in place; no step allocates a cache
or changes its shape.

Networks compute on `Signal`s, tensors that know the absolute time of their first column, so
that the full pass (zero history), valid mode (`outputs=n`) and stream priming are one code path.
A layer's maths (its activation, gate or residual sum) is one function for both paths: features
have their channels at dim 1 in both, `(B, C, T)` in a pass and `(B, C)` in a step, and a step
asks for the form that writes into the stream's own buffers. (The module is long because the
streaming machinery the four networks share lives here, beside the layers it shares maths with.)
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


def gated_residual(pre: Gates, identity: Tensor, out: Tensor | None = None) -> Tensor:
    """The gated residual layer (paper §3.2): `identity + tanh(filter) * sigmoid(gate)`.

    pre: `[filter, gate]` along dim 1, `(B, 2C, ...)`, or its two halves; identity:
    `(B, C, ...)`; returns a new `(B, C, ...)`. A stream's step passes `out`: then `pre` (the
    step's own buffer) is activated in place and the sum is written into `out`, to which the
    operands broadcast (both copies of the next layer's tap buffer slot, `TapBuffer.slot`).
    """
    filter_, gate = gate_halves(pre)
    if out is None:
        return torch.addcmul(identity, torch.tanh(filter_), torch.sigmoid(gate))
    return torch.addcmul(identity, filter_.tanh_(), gate.sigmoid_(), out=out)


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


MAX_VIEWS = 1024  # a buffer with more positions than this makes its views per step instead


def slot_row(number: int, kernel_size: int, dilation: int) -> int:
    """The first of the two `TapBuffer` rows that hold input `number`."""
    phase, slot = number % dilation, (number // dilation) % kernel_size
    return phase * 2 * kernel_size + slot


class Clock:
    """Where the newest input sits in a group of tap buffers that each take one input per tick.

    A TCN's or WaveNet's buffers form one group; each level of a Seq-U-Net forms one. Input
    number n of a buffer with K taps and dilation d is stored at `slot_row(n, K, d)`. A plain
    clock counts in Python and its buffers hand out views of their current slot: the least work
    per step, which is what a CPU wants. A fixed-index clock keeps the positions on the device
    instead: `row` holds, for every (K, d) of the group, the two rows the newest input is stored
    in and the K rows of its window, and `tick` refreshes it from a table with one
    `index_select`. Every step then runs the same operations on the same memory, and a CUDA
    graph can replay it.
    """

    def __init__(
        self,
        layouts: Iterable[tuple[int, int]],
        *,
        fixed: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.fixed = fixed
        self.device = torch.device(device if device is not None else "cpu")
        self.layouts = sorted(set(layouts))  # (kernel_size, dilation) of the group's buffers
        self.period = math.lcm(*(k * d for k, d in self.layouts)) if self.layouts else 1
        self.count = 0  # inputs taken so far; only a plain clock reads it
        self._columns: dict[tuple[int, int], slice] = {}
        if fixed:
            self.table = self._table()  # (period, columns + 1)
            self.row = self.table[-1:].clone()  # (1, columns + 1): positions of the newest input
            self.phase = torch.zeros(
                1, dtype=torch.long, device=self.device
            )  # the next input, mod period
            self._next = self.row[:, -1]

    def _table(self) -> Tensor:
        """Per input number mod `period`: for each layout its two storage rows and K window
        rows, then the next number mod `period`."""
        start = 0
        for k, d in self.layouts:
            self._columns[(k, d)] = slice(start, start + 2 + k)
            start += 2 + k
        rows = []
        for number in range(self.period):
            row = []
            for k, d in self.layouts:
                first = slot_row(number, k, d)
                row += [first, first + k, *range(first + 1, first + 1 + k)]
            rows.append([*row, (number + 1) % self.period])
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def tick(self) -> None:
        """One more input for every buffer of the group (before any of them is written)."""
        self.count += 1
        if self.fixed:
            torch.index_select(self.table, 0, self.phase, out=self.row)
            self.phase.copy_(self._next)

    def restart(self, count: int) -> None:
        """As if `count` inputs had been taken (0: zero history)."""
        self.count = count
        if self.fixed:
            self.row.copy_(self.table[(count - 1) % self.period])
            self.phase.fill_(count % self.period)

    def positions(self, kernel_size: int, dilation: int) -> tuple[Tensor, Tensor]:
        """Fixed-index: views of `row` with the two rows the newest input of a (K, d) buffer is
        stored in, `(2,)`, and the rows of its window, oldest first, `(K,)`."""
        row = self.row[0, self._columns[(kernel_size, dilation)]]
        return row[:2], row[2:]

    def state(self) -> list[Tensor]:
        """The tensors a tick reads before it writes them."""
        return [self.row, self.phase] if self.fixed else []


@dataclass(frozen=True)
class _Position:
    """Views of one input's place in a `TapBuffer`, one per part for the first three."""

    slots: tuple[Tensor, ...]  # (B, 2, w): both copies, for a producer to write into
    rows: tuple[tuple[Tensor, Tensor], ...]  # the two copies, (B, w) each
    latest: tuple[Tensor, ...]  # (B, 2, w): the first copy twice (stride 0), to read
    window: Tensor  # (B, K * (C + 1)): the K inputs ending with this one, oldest first
    tail: Tensor  # (B, tail * (C + 1)): the newest `tail` of them


class TapBuffer:
    """The inputs a (dilated) causal convolution needs for its next output, kept in place.

    data: `(B, dilation * 2K, C + 1)`. Input number n is stored twice, in rows
    `slot_row(n, K, d)` and K rows later, so that the window of the newest K inputs of its
    dilation phase, oldest first, is always K contiguous rows. The last channel is a constant 1,
    which meets the bias row of the step matrix (`step_matrix`).

    The current input (the newest, once the buffer's clock has ticked) is written by whoever
    computes it straight into `slot()` (both copies, the layer writing its output into the next
    layer's buffer); `window()` then returns the window ending with it. With a fixed-index
    clock the slot is a fixed staging tensor, and `window()` stores it and gathers the window
    into a fixed tensor at the positions the clock keeps on the device. `parts`: the input's
    channels as pieces (e.g. `[shortcut, up-sampled]`), each with its own slot.
    """

    def __init__(
        self,
        clock: Clock,
        batch_size: int,
        channels: int,
        kernel_size: int,
        dilation: int = 1,
        *,
        dtype: torch.dtype | None = None,
        parts: tuple[int, ...] | None = None,
        tail: int | None = None,
    ) -> None:
        self.clock, self.channels = clock, channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.tail = tail or kernel_size  # taps of the short window, `window(tail=True)`
        self.parts = tuple(parts) if parts else (channels,)
        if sum(self.parts) != channels:
            raise ValueError(f"parts {self.parts} do not add up to {channels} channels")
        self.period = kernel_size * dilation  # inputs after which the positions repeat
        shape = (batch_size, dilation * 2 * kernel_size, channels + 1)
        self.data = _with_ones(torch.zeros(shape, device=clock.device, dtype=dtype))
        self.fixed = clock.fixed and self.period > 1
        self._positions: list[_Position] | None = None
        self._static: _Position | None = None
        if self.fixed:
            self.staging = _with_ones(self.data.new_zeros(batch_size, 2, channels + 1))
            self.gathered = _with_ones(self.data.new_zeros(batch_size, kernel_size, channels + 1))
            self._store_rows, self._window_rows = clock.positions(kernel_size, dilation)
            self._static = self._views(self.staging, self.gathered)
        elif self.period == 1:
            self._static = self._position(0)
        elif self.period <= MAX_VIEWS:  # made once: a step then only writes and multiplies
            self._positions = [self._position(n) for n in range(self.period)]

    def _views(self, copies: Tensor, window: Tensor) -> _Position:
        """`copies: (B, 2, C + 1)`, `window: (B, K, C + 1)`."""
        slots, rows, latest, start = [], [], [], 0
        for width in self.parts:
            part = copies[..., start : start + width]  # (B, 2, w)
            slots.append(part)
            rows.append((part[:, 0], part[:, 1]))
            latest.append(part[:, :1].expand(-1, 2, -1))
            start += width
        tail = window[:, self.kernel_size - self.tail :]
        return _Position(
            tuple(slots), tuple(rows), tuple(latest), window.flatten(1), tail.flatten(1)
        )

    def _position(self, number: int) -> _Position:
        first, k = slot_row(number, self.kernel_size, self.dilation), self.kernel_size
        return self._views(
            self.data[:, first : first + k + 1 : k], self.data[:, first + 1 : first + 1 + k]
        )

    def current(self) -> _Position:
        """Views of the current input's place."""
        if self._static is not None:
            return self._static
        number = self.clock.count - 1
        if self._positions is not None:
            return self._positions[number % self.period]
        return self._position(number)

    def slot(self, part: int = 0) -> Tensor:
        """Where the current input (or its part) goes: `(B, 2, w)`, both copies."""
        return self.current().slots[part]

    def rows(self, part: int = 0) -> tuple[Tensor, Tensor]:
        """The two copies of the current input's part, `(B, w)` each."""
        return self.current().rows[part]

    def latest(self, part: int = 0) -> Tensor:
        """The current input's part as written, given twice: `(B, 2, w)` (stride 0)."""
        return self.current().latest[part]

    def write(self, *parts: Tensor) -> None:
        """Copy the current input, `(B, C)`, or its pieces as declared in `parts`, into the slot."""
        for part, (first, second) in zip(parts, self.current().rows, strict=True):
            first.copy_(part)
            second.copy_(part)

    def store(self) -> None:
        """Keep the current input without computing anything from it (a fixed-index buffer
        copies its staging slot in; a plain one holds it already)."""
        if self.fixed:
            self.data.index_copy_(1, self._store_rows, self.staging)

    def window(self, fresh: bool = True, tail: bool = False) -> Tensor:
        """The window ending with the current input, `(B, K * (C + 1))`, or its newest `tail`
        inputs. `fresh`: the current input was just written; False: it was read before."""
        position = self.current()
        if self.fixed and fresh:
            self.data.index_copy_(1, self._store_rows, self.staging)
            torch.index_select(self.data, 1, self._window_rows, out=self.gathered)
        return position.tail if tail else position.window

    def reset(self) -> None:
        """Back to zero history."""
        for tensor in self.state():
            tensor[..., : self.channels].zero_()
        self.clock.restart(0)

    def fill(self, history: Tensor) -> None:
        """Restart as if every column of `history: (B, C, T)` had been written in order."""
        self.reset()
        total = history.shape[-1]
        keep = min(total, self.period)
        if keep > 0:
            times = torch.arange(total - keep, total)
            first = (times % self.dilation) * 2 * self.kernel_size + (
                times // self.dilation
            ) % self.kernel_size
            values = history[..., total - keep :].transpose(1, 2).to(self.data)  # (B, keep, C)
            for offset in (0, self.kernel_size):
                self.data[:, first + offset, : self.channels] = values
        self.clock.restart(total)
        if self.fixed and keep > 0:
            self.staging[..., : self.channels] = values[:, -1:]
            row = slot_row(total - 1, self.kernel_size, self.dilation)
            self.gathered.copy_(self.data[:, row + 1 : row + 1 + self.kernel_size])

    def state(self) -> list[Tensor]:
        """The tensors a step reads before it writes them."""
        return [self.data, self.staging, self.gathered] if self.fixed else [self.data]


def _with_ones(tensor: Tensor) -> Tensor:
    """`tensor` with its last channel set to 1 (the bias channel of a `TapBuffer`)."""
    tensor[..., -1] = 1.0
    return tensor


def step_weights(
    conv: CausalConv1d, device: torch.device | str, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """A 1x1 convolution as a step applies it to `x: (B, in)`: `y = bias + x @ matrix`, the
    `(in, out)` matrix and `(out,)` bias as contiguous copies on `device` in `dtype`, taken now
    (a stream is a snapshot of the weights when it was created)."""
    matrix = conv.weight.detach()[..., -1].t()  # (in, out), the newest tap
    return (
        matrix.to(device=device, dtype=dtype).clone(memory_format=torch.contiguous_format),
        conv.bias.detach().to(device=device, dtype=dtype).clone(),
    )


def step_matrix(conv: CausalConv1d, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """The `(K * (in + 1), out)` matrix one step multiplies the window of a convolution's last
    K inputs with, as a `TapBuffer` keeps it: `y = window @ matrix`.

    Rows `s * (in + 1) + c` are tap s (oldest first) and input channel c; row
    `s * (in + 1) + in` meets the buffer's constant-1 channel: the bias for the newest tap,
    zeros for the others. A contiguous copy on `device` in `dtype` taken now: a stream is a
    snapshot of the weights when it was created (create a new one after training further).
    """
    weight = conv.weight.detach().permute(2, 1, 0)  # (K, in, out)
    bias = weight.new_zeros(conv.kernel_size, 1, conv.out_channels)
    bias[-1, 0] = conv.bias.detach()
    matrix = torch.cat((weight, bias), dim=1).reshape(-1, conv.out_channels)
    return matrix.to(device=device, dtype=dtype).clone(memory_format=torch.contiguous_format)


class StepConv:
    """A convolution bound to a stream's tap buffer: the output for the buffer's current window.

    It keeps its own copy of the weights (`step_matrix`), taken when the stream is created.
    """

    def __init__(self, conv: CausalConv1d, buffer: TapBuffer) -> None:
        self.buffer = buffer
        data = buffer.data
        self.matrix = step_matrix(conv, data.device, data.dtype)  # (K * (in + 1), out)
        self._pre, self._gates = _gate_buffer(data, conv.out_channels)

    def __call__(self, out: Tensor | None = None) -> Tensor:
        """The output `(B, out)` for the current input, written into `out` if given."""
        return torch.mm(self.buffer.window(), self.matrix, out=out)

    def gated(self, into: Tensor) -> None:
        """`gated_residual` of the output, with the current input as the identity, written into
        `into: (B, 2, out / 2)` (the next layer's slot)."""
        torch.mm(self.buffer.window(), self.matrix, out=self._pre)
        gated_residual(self._gates, self.buffer.latest(), out=into)


class StepUpConv:
    """An `UpConv1d` bound to a stream's buffer of coarse inputs (`ceil(K/2)` taps, made with
    `tail=K // 2` for the odd phase). At fine time 2m the coarse input `c[m]` has just been
    written into the buffer's slot and the even taps run; at 2m + 1 the odd taps, on the
    newest `K // 2` of the same inputs."""

    def __init__(self, conv: UpConv1d, buffer: TapBuffer) -> None:
        self.buffer = buffer
        data = buffer.data
        self.even = step_matrix(conv.even, data.device, data.dtype)
        self.odd = step_matrix(conv.odd, data.device, data.dtype)  # the bias is shared
        self._pre, self._gates = _gate_buffer(data, conv.even.out_channels)

    def __call__(self, even: bool, out: Tensor | None = None) -> Tensor:
        """The output `(B, out)` at an even fine time (a new coarse input) or an odd one."""
        if even:
            return torch.mm(self.buffer.window(), self.even, out=out)
        return torch.mm(self.buffer.window(fresh=False, tail=True), self.odd, out=out)

    def gated(self, into: Tensor, even: bool) -> None:
        """`gated_residual` of the output, with the newest coarse input as the identity (the
        repetition), written into `into: (B, 2, out / 2)`."""
        self(even, out=self._pre)
        gated_residual(self._gates, self.buffer.latest(), out=into)


def _gate_buffer(data: Tensor, channels: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A pre-activation buffer `(B, channels)` and its filter and gate halves as `(B, 1, C / 2)`
    views, made once (splitting per step would cost as much as the gate itself)."""
    pre = data.new_zeros(data.shape[0], channels)
    half = channels // 2
    rows = pre.unsqueeze(1)
    return pre, (rows[..., :half], rows[..., half:])


class Stream:
    """Sample-by-sample inference for one network, owning all of its caches.

    `step(x_t)` returns what the full forward pass returns at the current time; `prime(x)`
    feeds a whole context in one parallel pass. Subclasses implement `_step`, `_prime`,
    `_buffers` and `_clocks`. A stream copies the weights it needs when it is created (a
    snapshot) and owns its caches, so several streams of one network can coexist.

    A fixed-index stream (`fixed_index=True`) keeps every time-dependent position on the device
    (`Clock`): all steps of one kind (`step_kind`) then run the same operations on the same
    memory, so that one CUDA graph per kind can replay them (`models.capture`). Its results
    equal those of a plain stream exactly; a plain stream does less work per step on a CPU.
    """

    def __init__(self, network: CausalNetwork, batch_size: int, fixed_index: bool = False) -> None:
        self.network = network
        self.batch_size = batch_size
        self.fixed_index = fixed_index
        self.time = 0
        self._input_shape = torch.Size((batch_size, network.in_channels))

    def _buffers(self) -> list[TapBuffer]:
        raise NotImplementedError

    def _clocks(self) -> list[Clock]:
        raise NotImplementedError

    def _step(self, x: Tensor, time: int) -> Tensor:
        """One step at `time` (only its kind matters to the operations a step runs)."""
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

    @property
    def step_kinds(self) -> int:
        """How many different programs the steps run: a Seq-U-Net step at time t runs its
        levels 0..j, j the number of times 2 divides t (every level at multiples of the clock
        cycle), so it has `blocks + 1` kinds; time-invariant streams have one."""
        return self.clock_cycle.bit_length()

    def step_kind(self, time: int) -> int:
        """The kind of the step at `time`, from 0 to `step_kinds - 1` (see `step_kinds`)."""
        phase = time % self.clock_cycle
        return (phase & -phase).bit_length() - 1 if phase else self.step_kinds - 1

    def kind_time(self, kind: int) -> int:
        """A time whose step is of `kind`."""
        return 1 << kind if kind < self.step_kinds - 1 else 0

    def state(self) -> list[Tensor]:
        """Every tensor a step reads before writing it: what a caller saves and restores
        around steps that must leave no trace (the warm-up before a CUDA graph capture)."""
        tensors = [tensor for buffer in self._buffers() for tensor in buffer.state()]
        return tensors + [tensor for clock in self._clocks() for tensor in clock.state()]

    def reset(self) -> None:
        """Back to time 0 with zero history."""
        for buffer in self._buffers():
            buffer.reset()
        self.time = 0

    def step(self, x: Tensor) -> Tensor:
        """Feed `x: (B, in_channels)` at the current time; return `(B, out_channels)`."""
        if x.shape != self._input_shape or self.network.training:
            self._check(x, 2)
        out = self._inference(x, self.time)
        self.time += 1
        return out

    def step_of_kind(self, x: Tensor, kind: int) -> Tensor:
        """One step of `kind` that neither reads nor advances `time` (the caller keeps it): what
        a captured program runs. `x: (B, in_channels)`; returns `(B, out_channels)`."""
        return self._inference(x, self.kind_time(kind))

    def _inference(self, x: Tensor, time: int) -> Tensor:
        if torch.is_inference_mode_enabled():  # a caller's loop may enter it once for all steps
            return self._step(x, time)
        with torch.inference_mode():
            return self._step(x, time)

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
        fixed_index: bool = False,
    ) -> Stream:
        """A stream from zero history (see `Stream`; `fixed_index` for CUDA graphs)."""
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
