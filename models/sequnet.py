"""Seq-U-Net: a causal one-dimensional U-Net (Stoller et al., IJCAI 2020, §3.1).

Level i (0-based) runs at 1 / 2**i of the input rate. A down-sampling block computes a
shortcut `s_i = conv(h_i)` and the coarser input `h_{i+1} = conv_stride2(s_i)`; a bottleneck
convolution sits at the coarsest level; an up-sampling block computes `u_i = upconv(y_{i+1})`
(stride-2 transposed convolution) and `y_i = conv([u_i, s_i])`. Every convolution but the
1x1 output one is followed by LeakyReLU and Dropout.

Causality and time anchoring: coarse time m at level i+1 is fine time 2m at level i, so the
down-sampling phase is anchored at t = 0 and appending inputs never changes earlier outputs.
Each signal's time before 0 is zeros. Rather than padding convolutions, the forward pass
computes each signal only on the time range the requested outputs need (`_plan`): the full
pass, valid mode and stream priming are the same code.

Fast inference (§3.1): a stream runs level i only every 2**i steps, so about two levels per
step on average, whatever the depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.configs import SeqUNetConfig
from models.core import (
    CausalConv1d,
    CausalNetwork,
    Clock,
    Layers,
    Signal,
    StepConv,
    StepUpConv,
    Stream,
    TapBuffer,
    UpConv1d,
    step_weights,
)


def activation(x: Tensor, in_place: bool = False) -> Tensor:
    """LeakyReLU, after every convolution but the output one: `(B, C, T)` or `(B, C)`."""
    return F.leaky_relu(x, inplace=in_place)


def _coarse(length: int) -> int:
    """Samples at the next coarser level for `length` samples (time 0 anchored)."""
    return (length + 1) // 2


class SeqUNet(CausalNetwork):
    """Seq-U-Net with `blocks = len(channels) - 1` down/up-sampling blocks and a bottleneck.

    x: `(B, in_channels, T)` -> `(B, out_channels, T)`; output t predicts input t + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = SeqUNetConfig(tuple(channels), kernel_size, dropout)  # checks the ranges
        self.in_channels, self.out_channels = in_channels, out_channels
        self.blocks = len(channels) - 1  # down/up-sampling block pairs; one level each
        widths = [in_channels, *channels]
        k = kernel_size
        self.shortcut_convs = Layers(
            CausalConv1d(widths[i], widths[i + 1], k) for i in range(self.blocks)
        )
        self.down_convs = Layers(CausalConv1d(c, c, k, stride=2) for c in channels[:-1])
        self.bottleneck = CausalConv1d(widths[-2], widths[-1], k)
        self.up_convs = Layers(
            UpConv1d(channels[i + 1], channels[i + 1], k) for i in range(self.blocks)
        )
        self.merge_convs = Layers(
            CausalConv1d(channels[i + 1] + channels[i], channels[i], k) for i in range(self.blocks)
        )
        self.output_conv = CausalConv1d(channels[0], out_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self._receptive_field = receptive_field_of(self._plan, self.blocks)

    @classmethod
    def from_config(cls, in_channels: int, out_channels: int, config: SeqUNetConfig) -> SeqUNet:
        return cls(in_channels, out_channels, config.channels, config.kernel_size, config.dropout)

    @property
    def receptive_field(self) -> int:
        return self._receptive_field

    @property
    def clock_cycle(self) -> int:
        """The deepest block runs once every `2**blocks` steps."""
        return 1 << self.blocks

    def _activate(self, x: Tensor) -> Tensor:
        return self.dropout(activation(x))  # (B, C, T)

    def _plan(self, first_output: int, clip: bool = True) -> dict[str, list[int]]:
        """The first time of every signal that outputs from `first_output` on need.

        Keys: `h` (block inputs, level 0 is the network input, level L the bottleneck input),
        `s` (shortcuts), `merge` (first output of each merge input), `y` (block outputs,
        level L is the bottleneck output). With `clip`, times before 0 are not computed.
        """
        k, blocks = self.config.kernel_size, self.blocks
        floor = 0 if clip else -(1 << 62)
        y = [max(first_output, floor)]
        merge: list[int] = []
        for _ in range(blocks):
            merge.append(max(y[-1] - (k - 1), floor))
            y.append(max(UpConv1d.coarse_start(merge[-1], k), floor))
        h = [0] * (blocks + 1)
        s = [0] * blocks
        h[blocks] = max(y[blocks] - (k - 1), floor)
        for i in reversed(range(blocks)):
            s[i] = max(min(merge[i], 2 * h[i + 1] - (k - 1)), floor)
            h[i] = max(s[i] - (k - 1), floor)
        return {"h": h, "s": s, "merge": merge, "y": y}

    def forward(self, x: Tensor, outputs: int | None = None) -> Tensor:
        """x: `(B, in_channels, T)` -> `(B, out_channels, outputs or T)`, the last outputs."""
        n = self._check_outputs(x, self.in_channels, outputs)
        return self._run(x, x.shape[-1] - n).data

    def _run(
        self, x: Tensor, first_output: int, record: dict[str, list[Signal]] | None = None
    ) -> Signal:
        plan = self._plan(first_output)
        lengths = [x.shape[-1]]
        for _ in range(self.blocks):
            lengths.append(_coarse(lengths[-1]))
        h = Signal(x[..., plan["h"][0] :], plan["h"][0])
        shortcuts = []
        for i in range(self.blocks):
            s = self._conv(self.shortcut_convs[i], h, plan["s"][i], lengths[i])
            shortcuts.append(s)
            h = self._conv(self.down_convs[i], s, plan["h"][i + 1], lengths[i + 1])
            _note(record, "h", h)
        y = self._conv(self.bottleneck, h, plan["y"][self.blocks], lengths[self.blocks])
        for i in reversed(range(self.blocks)):
            lo, hi = plan["merge"][i], lengths[i] - 1
            u = Signal(self._activate(self.up_convs[i].forward_span(y, lo, hi).data), lo)
            _note(record, "coarse", y)
            merged = Signal(torch.cat((u.data, shortcuts[i].span(lo, hi)), dim=1), lo)
            _note(record, "merged", merged)
            y = self._conv(self.merge_convs[i], merged, plan["y"][i], hi + 1)
        if record is not None:
            record["s"] = shortcuts
        return Signal(self.output_conv(y.data[..., first_output - y.start :]), first_output)

    def _conv(self, conv: CausalConv1d, x: Signal, lo: int, length: int) -> Signal:
        return Signal(self._activate(conv.forward_span(x, lo, length - 1).data), lo)

    def stream(
        self,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fixed_index: bool = False,
    ) -> SeqUNetStream:
        return SeqUNetStream(
            self, batch_size, **self._parameter_like(device, dtype), fixed_index=fixed_index
        )


def _note(record: dict[str, list[Signal]] | None, key: str, signal: Signal) -> None:
    if record is not None:
        record.setdefault(key, []).append(signal)


def receptive_field_of(plan: Callable[..., dict[str, list[int]]], blocks: int) -> int:
    """Inputs that can influence one output, maximised over the down-sampling phases.

    `first(t) = plan(t, clip=False)["h"][0]` is the earliest input output `t` needs. It never
    decreases as `t` grows, and with `blocks` down-sampling blocks the network is periodic in
    time: `first(t + 2**blocks) == first(t) + 2**blocks`. So the farthest reach,
    `max(t - first(t)) + 1`, is at the last output of one of the runs of outputs that share a
    `first`: the runs of one period are walked, each end found by bisection, in
    O(runs * blocks**2) plan steps instead of the 2**blocks outputs of a period (a deep
    network's period is astronomically long).
    """
    period = 1 << blocks

    def first(t: int) -> int:
        return plan(t, clip=False)["h"][0]

    reach, start = 0, 0
    while start < period:
        needed = first(start)
        low, high = start, start + period  # first(high) > needed: the run ends in [low, high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if first(middle) <= needed else (low, middle)
        reach = max(reach, low - needed + 1)
        start = low + 1
    return reach


class SeqUNetStream(Stream):
    """Time-variant streaming for `SeqUNet`: level i runs every 2**i steps (paper §3.1).

    Each convolution writes its activated output straight into the tap buffer that reads it
    next (`TapBuffer.rows`); each level's buffers share one `Clock`.
    """

    def __init__(
        self,
        network: SeqUNet,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        fixed_index: bool = False,
    ) -> None:
        super().__init__(network, batch_size, fixed_index)
        self.net = network
        k, blocks = network.config.kernel_size, network.blocks
        taps = (k + 1) // 2  # coarse inputs of the up-sampling's even phase
        widths = [network.in_channels, *network.config.channels]
        self.clocks = [
            Clock([(k, 1), (taps, 1)], fixed=fixed_index, device=device) for _ in range(blocks + 1)
        ]

        def buffer(
            level: int,
            width: int,
            taps: int = k,
            parts: tuple[int, ...] | None = None,
            tail: int | None = None,
        ) -> TapBuffer:
            clock = self.clocks[level]
            return TapBuffer(clock, batch_size, width, taps, dtype=dtype, parts=parts, tail=tail)

        self.shortcut = [
            StepConv(network.shortcut_convs[i], buffer(i, widths[i])) for i in range(blocks)
        ]
        self.down = [
            StepConv(network.down_convs[i], buffer(i, widths[i + 1])) for i in range(blocks)
        ]
        self.bottleneck = StepConv(network.bottleneck, buffer(blocks, widths[-2]))
        self.up = [
            StepUpConv(network.up_convs[i], buffer(i + 1, widths[i + 2], taps, tail=k // 2))
            for i in range(blocks)
        ]
        self.merge = [
            StepConv(
                network.merge_convs[i],
                buffer(i, widths[i + 2] + widths[i + 1], parts=(widths[i + 2], widths[i + 1])),
            )
            for i in range(blocks)
        ]
        # Each level's first buffer, which its input is written into.
        self.firsts = [conv.buffer for conv in [*self.shortcut, self.bottleneck]]
        self.output = step_weights(network.output_conv, device, dtype)  # 1x1: (C, out), (out,)
        final = torch.zeros(batch_size, 2, widths[1], device=device, dtype=dtype)
        self.final = (final[:, 0], final[:, 1])  # level 0's output

    def _buffers(self) -> list[TapBuffer]:
        convs: list[StepConv | StepUpConv] = [
            *self.shortcut,
            *self.down,
            self.bottleneck,
            *self.up,
            *self.merge,
        ]
        return [conv.buffer for conv in convs]

    def _clocks(self) -> list[Clock]:
        return self.clocks

    def _step(self, x: Tensor, time: int) -> Tensor:
        self.clocks[0].tick()
        self.firsts[0].write(x)
        self._level(0, time, self.final)
        weight, bias = self.output
        return torch.addmm(bias, self.final[0], weight)  # (B, out)

    def _level(self, i: int, time: int, into: tuple[Tensor, Tensor]) -> None:
        """Run level i at its own time `time`, its input already in its first buffer; write its
        output into `into`, the two copies `(B, C_i)` of the slot of the layer that reads it."""
        if i == self.net.blocks:
            _activated(self.bottleneck(out=into[0]), into)
            return
        down, up, merge = self.down[i], self.up[i], self.merge[i]
        shortcut = down.buffer.rows()
        _activated(self.shortcut[i](out=shortcut[0]), shortcut)  # s
        merge.buffer.slot(1).copy_(down.buffer.latest())  # s enters the merge window too
        if time % 2 == 0:  # kept by the stride-2 convolution: the coarser levels run
            self.clocks[i + 1].tick()
            following = self.firsts[i + 1].rows()
            _activated(down(out=following[0]), following)
            self._level(i + 1, time // 2, up.buffer.rows())
            even = True
        else:  # s only enters the down-sampling window
            down.buffer.store()
            even = False
        upsampled = merge.buffer.rows(0)
        _activated(up(even, out=upsampled[0]), upsampled)
        _activated(merge(out=into[0]), into)

    def _prime(self, x: Tensor) -> Tensor:
        record: dict[str, list[Signal]] = {}
        out = self.net._run(x.to(self.final[0]), 0, record)
        inputs = [Signal(x, 0), *record.get("h", [])]
        blocks = self.net.blocks
        for i in range(blocks):
            self.shortcut[i].buffer.fill(inputs[i].data)
            self.down[i].buffer.fill(record["s"][i].data)
        self.bottleneck.buffer.fill(inputs[blocks].data)
        # The up path ran from the coarsest level to the finest.
        for i, coarse, merged in zip(
            reversed(range(blocks)), record.get("coarse", []), record.get("merged", [])
        ):
            self.up[i].buffer.fill(coarse.data)
            self.merge[i].buffer.fill(merged.data)
        return out.data


def _activated(output: Tensor, copies: tuple[Tensor, Tensor]) -> None:
    """Activate a convolution's `output`, just written into the first of `copies`, in place,
    and copy it into the second."""
    activation(output, in_place=True)
    copies[1].copy_(copies[0])
