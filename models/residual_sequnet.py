"""Residual Seq-U-Net (Stoller et al., IJCAI 2020, §3.2), the variant used for raw audio.

An input convolution maps the input to F features. Every convolution of the Seq-U-Net is
replaced by a gated residual layer `y = I(x) + tanh(C1(x)) * sigmoid(C2(x))`, with C1 and C2
computed as one convolution of 2F outputs. I is the identity for stride-1 layers, decimation
(`x[2m]`) for the stride-2 down-sampling layer and repetition (`c[t // 2]`) for the stride-2
transposed up-sampling layer. A block holds `depth` + 1 residual layers: `depth` layers then
the down-sampling layer, or the up-sampling layer then `depth` layers whose identity is the
shortcut and whose convolutions see `[shortcut, up-sampled]`. The bottleneck holds `depth`
layers; ReLU and a 1x1 convolution produce the outputs.

As in `models.sequnet`, coarse time m is fine time 2m (anchored at t = 0), every signal is
computed only on the time range the requested outputs need, and a stream runs level i only
every 2**i steps.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from models.configs import ResidualSeqUNetConfig
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
    gated_residual,
    step_weights,
)
from models.sequnet import receptive_field_of

Record = dict[str, Tensor]


class ResidualSeqUNet(CausalNetwork):
    """Residual Seq-U-Net with `levels` resolutions: `blocks = levels - 1` down/up blocks.

    x: `(B, in_channels, T)` -> `(B, out_channels, T)`; output t predicts input t + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int,
        levels: int,
        depth: int = 1,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.config = ResidualSeqUNetConfig(channels, levels, depth, kernel_size)  # checks ranges
        self.in_channels, self.out_channels = in_channels, out_channels
        self.blocks = levels - 1  # down/up-sampling block pairs; the bottleneck is the last level
        c, k = channels, kernel_size

        def chain(width: int) -> Layers[CausalConv1d]:
            return Layers(CausalConv1d(width, 2 * c, k) for _ in range(depth))

        self.input_conv = CausalConv1d(in_channels, c, k)
        self.down_layers = Layers(chain(c) for _ in range(self.blocks))
        self.down_convs = Layers(CausalConv1d(c, 2 * c, k, stride=2) for _ in range(self.blocks))
        self.bottleneck = chain(c)
        self.up_convs = Layers(UpConv1d(c, 2 * c, k) for _ in range(self.blocks))
        self.merge_layers = Layers(chain(2 * c) for _ in range(self.blocks))
        self.output_conv = CausalConv1d(c, out_channels, 1)
        self._receptive_field = receptive_field_of(self._plan, self.blocks)

    @classmethod
    def from_config(
        cls, in_channels: int, out_channels: int, config: ResidualSeqUNetConfig
    ) -> ResidualSeqUNet:
        return cls(
            in_channels,
            out_channels,
            config.channels,
            config.levels,
            config.depth,
            config.kernel_size,
        )

    @property
    def receptive_field(self) -> int:
        return self._receptive_field

    @property
    def clock_cycle(self) -> int:
        """The deepest block runs once every `2**blocks` steps."""
        return 1 << self.blocks

    def _plan(self, first_output: int, clip: bool = True) -> dict[str, list[int]]:
        """First needed time of: `h` block inputs (level L: bottleneck input), `s` shortcuts,
        `u` up-sampled features, `y` block outputs (level L: bottleneck output), and `x`
        (the network input, as `h[0]` is the input convolution's output)."""
        k, depth, blocks = self.config.kernel_size, self.config.depth, self.blocks
        floor = 0 if clip else -(1 << 62)
        chain = depth * (k - 1)  # look-back of `depth` stride-1 layers
        y, u = [max(first_output, floor)], []
        for _ in range(blocks):
            u.append(max(y[-1] - chain, floor))
            y.append(max(UpConv1d.coarse_start(u[-1], k), floor))
        h, s = [0] * (blocks + 1), [0] * blocks
        h[blocks] = max(y[blocks] - chain, floor)
        for i in reversed(range(blocks)):
            s[i] = max(min(u[i], 2 * h[i + 1] - (k - 1)), floor)
            h[i] = max(s[i] - chain, floor)
        # `receptive_field_of` reads the network input's first time as `h[0]`.
        return {"h": [max(h[0] - (k - 1), floor), *h[1:]], "hidden": h, "s": s, "u": u, "y": y}

    def forward(self, x: Tensor, outputs: int | None = None) -> Tensor:
        """x: `(B, in_channels, T)` -> `(B, out_channels, outputs or T)`, the last outputs."""
        n = self._check_outputs(x, self.in_channels, outputs)
        return self._run(x, x.shape[-1] - n)

    def _run(self, x: Tensor, first_output: int, record: Record | None = None) -> Tensor:
        plan = self._plan(first_output)
        h_lo = plan["hidden"]
        lengths = [x.shape[-1]]
        for _ in range(self.blocks):
            lengths.append((lengths[-1] + 1) // 2)
        _keep(record, "input", x)
        h = self.input_conv.forward_span(Signal(x, 0), h_lo[0], lengths[0] - 1)
        shortcuts = []
        for i in range(self.blocks):
            s = self._chain(
                self.down_layers[i], h, plan["s"][i], lengths[i], None, record, f"down{i}"
            )
            shortcuts.append(s)
            _keep(record, f"decimate{i}", s.data)
            lo, hi = h_lo[i + 1], lengths[i + 1] - 1  # coarse times
            pre = self.down_convs[i].forward_span(s, lo, hi).data  # (B, 2C, hi - lo + 1)
            decimated = s.span(2 * lo, 2 * hi)[..., ::2]  # the identity: s[2m]
            h = Signal(gated_residual(pre, decimated), lo)
        y = self._chain(self.bottleneck, h, plan["y"][-1], lengths[-1], None, record, "bottleneck")
        for i in reversed(range(self.blocks)):
            lo, hi = plan["u"][i], lengths[i] - 1
            _keep(record, f"coarse{i}", y.data)
            pre = self.up_convs[i].forward_span(y, lo, hi).data
            repeated = y.span(lo // 2, hi // 2).repeat_interleave(2, dim=-1)[
                ..., lo % 2 : lo % 2 + hi - lo + 1
            ]
            u = Signal(gated_residual(pre, repeated), lo)
            y = self._chain(
                self.merge_layers[i], shortcuts[i], plan["y"][i], hi + 1, u, record, f"merge{i}"
            )
        out = F.relu(y.data[..., first_output - y.start :])
        return self.output_conv(out)

    def _chain(
        self,
        layers: Layers[CausalConv1d],
        x: Signal,
        lo: int,
        length: int,
        extra: Signal | None,
        record: Record | None,
        name: str,
    ) -> Signal:
        """Stride-1 residual layers; with `extra`, each layer's convolution sees `[x, extra]`."""
        k, depth = self.config.kernel_size, len(layers)
        for j, layer in enumerate(layers):
            out_lo = max(lo - (depth - 1 - j) * (k - 1), 0)
            inputs = x if extra is None else _concat(x, extra)
            if record is not None:
                record[f"{name}.{j}"] = inputs.data
            pre = layer.forward_span(inputs, out_lo, length - 1).data
            x = Signal(gated_residual(pre, x.span(out_lo, length - 1)), out_lo)
        return x

    def stream(
        self,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fixed_index: bool = False,
    ) -> ResidualSeqUNetStream:
        return ResidualSeqUNetStream(
            self, batch_size, **self._parameter_like(device, dtype), fixed_index=fixed_index
        )


def _keep(record: Record | None, name: str, data: Tensor) -> None:
    if record is not None:
        record[name] = data


def _concat(a: Signal, b: Signal) -> Signal:
    """Channel-wise concatenation over the times both hold."""
    lo = max(a.start, b.start)
    hi = min(a.end, b.end) - 1
    return Signal(torch.cat((a.span(lo, hi), b.span(lo, hi)), dim=1), lo)


class ResidualSeqUNetStream(Stream):
    """Time-variant streaming for `ResidualSeqUNet`: level i runs every 2**i steps.

    Each layer writes its output straight into the tap buffer of the layer that reads it next
    (`TapBuffer.slot`): a step copies nothing but the shortcut and the up-sampled features into
    the merge layers' windows. Each level's buffers share one `Clock`.
    """

    def __init__(
        self,
        network: ResidualSeqUNet,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        fixed_index: bool = False,
    ) -> None:
        super().__init__(network, batch_size, fixed_index)
        self.net = network
        c, k, blocks = network.config.channels, network.config.kernel_size, network.blocks
        taps = (k + 1) // 2  # coarse inputs of the up-sampling's even phase
        self.clocks = [
            Clock([(k, 1), (taps, 1)], fixed=fixed_index, device=device) for _ in range(blocks + 1)
        ]
        self.buffers: dict[str, TapBuffer] = {}  # by the names `ResidualSeqUNet._run` records

        def buffer(
            name: str,
            level: int,
            width: int = c,
            taps: int = k,
            parts: tuple[int, ...] | None = None,
            tail: int | None = None,
        ) -> TapBuffer:
            clock = self.clocks[level]
            self.buffers[name] = TapBuffer(
                clock, batch_size, width, taps, dtype=dtype, parts=parts, tail=tail
            )
            return self.buffers[name]

        def chain(layers: Layers[CausalConv1d], name: str, level: int) -> list[StepConv]:
            merge = name.startswith("merge")  # each sees [x, up-sampled]
            width, parts = (2 * c, (c, c)) if merge else (c, None)
            return [
                StepConv(layer, buffer(f"{name}.{j}", level, width, parts=parts))
                for j, layer in enumerate(layers)
            ]

        self.input = StepConv(network.input_conv, buffer("input", 0, network.in_channels))
        self.down_chains = [chain(network.down_layers[i], f"down{i}", i) for i in range(blocks)]
        self.down = [
            StepConv(network.down_convs[i], buffer(f"decimate{i}", i)) for i in range(blocks)
        ]
        self.bottleneck = chain(network.bottleneck, "bottleneck", blocks)
        self.up = [
            StepUpConv(network.up_convs[i], buffer(f"coarse{i}", i + 1, taps=taps, tail=k // 2))
            for i in range(blocks)
        ]
        self.merge_chains = [chain(network.merge_layers[i], f"merge{i}", i) for i in range(blocks)]
        # Each level's first buffer, which its input is written into.
        self.firsts = [chain[0].buffer for chain in [*self.down_chains, self.bottleneck]]
        self.output = step_weights(network.output_conv, device, dtype)  # 1x1: (C, out), (out,)
        self.final = torch.zeros(batch_size, 2, c, device=device, dtype=dtype)  # level 0's output
        self._final = self.final[:, 0]

    def _buffers(self) -> list[TapBuffer]:
        return list(self.buffers.values())

    def _clocks(self) -> list[Clock]:
        return self.clocks

    def _step(self, x: Tensor, time: int) -> Tensor:
        self.clocks[0].tick()
        self.input.buffer.write(x)
        first, second = self.firsts[0].rows()
        self.input(out=first)  # (B, C)
        second.copy_(first)
        self._level(0, time, self.final)
        weight, bias = self.output
        return torch.addmm(bias, F.relu(self._final, inplace=True), weight)  # (B, out)

    def _level(self, i: int, time: int, into: Tensor) -> None:
        """Run level i at its own time `time`, its input already in its first buffer; write its
        output into `into: (B, 2, C)` (the slot of the layer that reads it)."""
        if i == self.net.blocks:
            _chain(self.bottleneck, into)
            return
        merge, decimate, up = self.merge_chains[i], self.down[i], self.up[i]
        _chain(self.down_chains[i], decimate.buffer.slot())  # the shortcut enters the
        merge[0].buffer.slot(0).copy_(decimate.buffer.latest())  # down-sampling and merge windows
        if time % 2 == 0:  # kept by the decimation: the coarser levels run
            self.clocks[i + 1].tick()
            decimate.gated(self.firsts[i + 1].slot())
            self._level(i + 1, time // 2, up.buffer.slot())
            up.gated(merge[0].buffer.slot(1), even=True)
        else:  # the shortcut only enters the down-sampling window
            decimate.buffer.store()
            up.gated(merge[0].buffer.slot(1), even=False)  # c[time // 2] again, the odd taps
        for conv in merge[1:]:
            conv.buffer.slot(1).copy_(merge[0].buffer.latest(1))  # every merge layer sees u
        _chain(merge, into)

    def _prime(self, x: Tensor) -> Tensor:
        record: Record = {}
        out = self.net._run(x.to(self.final), 0, record)
        for name, buffer in self.buffers.items():
            buffer.fill(record[name])
        return out


def _chain(convs: list[StepConv], into: Tensor) -> None:
    """Stride-1 gated residual layers in a row, each writing into the next one's slot and the
    last into `into`."""
    for conv, following in itertools.pairwise(convs):
        conv.gated(following.buffer.slot())
    convs[-1].gated(into)
