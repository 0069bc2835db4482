"""Temporal convolutional network (Bai, Kolter and Koltun 2018, "An Empirical Evaluation of
Generic Convolutional and Recurrent Networks for Sequence Modeling", §3, as in locuslab/TCN).

Level i is a residual block of two dilated causal convolutions (dilation 2**i), each weight
normalised and followed by ReLU and Dropout; a 1x1 convolution matches the residual's width when
it changes, and the block returns `relu(out + residual)`. A 1x1 convolution maps the last level to
the outputs. Every convolution's input is zeros before t = 0 (zero history). The forward pass
computes each level only on the time range the requested outputs need, so the full pass, valid
mode and stream priming are one code path. A stream keeps one `TapBuffer` per convolution and runs
every layer every step (the "fast WaveNet" queue scheme); like every stream it copies the weights
(here the weight-normalised ones) once, when it is created, so create a new stream after training
further.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from models.configs import TCNConfig
from models.core import (
    CausalConv1d,
    CausalNetwork,
    Clock,
    Signal,
    StepConv,
    Stream,
    TapBuffer,
    chain_starts,
    step_weights,
)


def activation(x: Tensor, in_place: bool = False) -> Tensor:
    """ReLU, after each convolution of a block: `(B, C, T)` or `(B, C)`."""
    return F.relu(x, inplace=in_place)


def block_output(out: Tensor, residual: Tensor, into: Tensor | None = None) -> Tensor:
    """A block's output `relu(out + residual)`, `(B, C, T)` or `(B, C)`; a step writes it
    `into` the next block's tap buffer."""
    if into is None:
        return activation(out + residual)
    return activation(torch.add(out, residual, out=into), in_place=True)


class TemporalBlock(nn.Module):
    """Two weight-normalised dilated causal convolutions with a residual connection.

    x: `(B, in_channels, T)` -> `(B, out_channels, T)`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, dropout: float
    ) -> None:
        super().__init__()
        self.conv1 = weight_norm(
            CausalConv1d(in_channels, out_channels, kernel_size, dilation), dim=0
        )
        self.conv2 = weight_norm(
            CausalConv1d(out_channels, out_channels, kernel_size, dilation), dim=0
        )
        self.downsample = (
            CausalConv1d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )
        if self.downsample is not None:
            # locuslab/TCN's initialisation; its N(0, 0.01) for the weight-normalised convolutions
            # is overwritten by the weight-norm hook there, so those keep the default here.
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)
        self.dropout = nn.Dropout(dropout)

    @property
    def history(self) -> int:
        """How many earlier inputs one output looks back: two convolutions in a row."""
        return self.conv1.history + self.conv2.history

    def forward_span(
        self, x: Signal, lo: int, hi: int, record: list[Signal] | None = None
    ) -> Signal:
        """Outputs for times `lo..hi` from `x`, which must start at `max(lo - history, 0)` or earlier.

        `record`, if given, receives the inputs of both convolutions (for stream priming).
        """
        hidden = self.conv1.forward_span(x, max(lo - self.conv2.history, 0), hi)  # (B, out, T')
        hidden = Signal(self.dropout(activation(hidden.data)), hidden.start)
        out = self.dropout(activation(self.conv2.forward_span(hidden, lo, hi).data))  # (B, out, T)
        residual = x.span(lo, hi)  # (B, in, T)
        if self.downsample is not None:
            residual = self.downsample(residual)  # (B, out, T)
        if record is not None:
            record += [x, hidden]
        return Signal(block_output(out, residual), lo)


class TCN(CausalNetwork):
    """TCN with one residual block per entry of `channels` (level i has dilation 2**i).

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
        self.config = TCNConfig(tuple(channels), kernel_size, dropout)  # checks the ranges
        self.in_channels, self.out_channels = in_channels, out_channels
        widths = [in_channels, *channels]
        # Typed as the list it behaves as; nn.ModuleList registers the blocks' parameters.
        self.blocks: list[TemporalBlock] = nn.ModuleList(  # type: ignore[assignment]
            TemporalBlock(widths[i], widths[i + 1], kernel_size, 2**i, dropout)
            for i in range(len(channels))
        )
        self.output_conv = CausalConv1d(widths[-1], out_channels, 1)
        nn.init.normal_(self.output_conv.weight, 0.0, 0.01)  # locuslab/TCN's output layer

    @classmethod
    def from_config(cls, in_channels: int, out_channels: int, config: TCNConfig) -> TCN:
        return cls(in_channels, out_channels, config.channels, config.kernel_size, config.dropout)

    @property
    def receptive_field(self) -> int:
        """`1 + 2 * (K - 1) * sum(2**i)`: each block looks back two dilated kernels."""
        return 1 + sum(block.history for block in self.blocks)

    @property
    def clock_cycle(self) -> int:
        """Time-invariant: a stream does the same work every step."""
        return 1

    def _plan(self, first_output: int) -> list[int]:
        """The first time of every block's input (and, last, of the outputs) that is needed."""
        return chain_starts([block.history for block in self.blocks], first_output)

    def forward(self, x: Tensor, outputs: int | None = None) -> Tensor:
        """x: `(B, in_channels, T)` -> `(B, out_channels, outputs or T)`, the last outputs."""
        n = self._check_outputs(x, self.in_channels, outputs)
        return self._run(x, x.shape[-1] - n).data

    def _run(self, x: Tensor, first_output: int, record: list[Signal] | None = None) -> Signal:
        """Outputs from `first_output` to the end; `record` gets every convolution's input."""
        starts, last = self._plan(first_output), x.shape[-1] - 1
        h = Signal(x[..., starts[0] :], starts[0])  # (B, in, T - starts[0])
        for block, lo in zip(self.blocks, starts[1:]):
            h = block.forward_span(h, lo, last, record)  # (B, C_i, T - lo)
        return Signal(self.output_conv(h.data), first_output)  # (B, out, T - first_output)

    def stream(
        self,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fixed_index: bool = False,
    ) -> TCNStream:
        """A stream from zero history; it snapshots the weight-normalised weights (see module)."""
        return TCNStream(
            self, batch_size, **self._parameter_like(device, dtype), fixed_index=fixed_index
        )


class TCNStream(Stream):
    """Streaming for `TCN`: one tap buffer per dilated convolution, every layer every step.

    The weight-normalised weights `g * v / |v|` are computed once, when the stream is created
    (`step_matrix` reads `conv.weight`, which the parametrisation computes on access): a stream
    made before further training keeps the old weights, so create a new one after training.
    Each block writes its hidden features and its output straight into the buffer that reads
    them next; all buffers share one `Clock`.
    """

    def __init__(
        self,
        network: TCN,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        fixed_index: bool = False,
    ) -> None:
        super().__init__(network, batch_size, fixed_index)
        self.net = network
        convs = [conv for block in network.blocks for conv in (block.conv1, block.conv2)]
        layouts = [(conv.kernel_size, conv.dilation) for conv in convs]
        self.clock = Clock(layouts, fixed=fixed_index, device=device)

        def bind(conv: CausalConv1d) -> StepConv:
            buffer = TapBuffer(
                self.clock,
                batch_size,
                conv.in_channels,
                conv.kernel_size,
                conv.dilation,
                dtype=dtype,
            )
            return StepConv(conv, buffer)

        with torch.no_grad():  # the normalised weights are data for the stream, not a graph
            self.convs = [(bind(block.conv1), bind(block.conv2)) for block in network.blocks]
        # The 1x1 convolutions need no tap buffer: `(in, out)` matrices and biases.
        self.downsample = [
            None if block.downsample is None else step_weights(block.downsample, device, dtype)
            for block in network.blocks
        ]
        self.output = step_weights(network.output_conv, device, dtype)
        self.last = torch.zeros(batch_size, network.config.channels[-1], device=device, dtype=dtype)

    def _buffers(self) -> list[TapBuffer]:
        return [conv.buffer for pair in self.convs for conv in pair]

    def _clocks(self) -> list[Clock]:
        return [self.clock]

    def _step(self, x: Tensor, time: int) -> Tensor:
        self.clock.tick()
        self.convs[0][0].buffer.write(x)
        blocks = len(self.convs)
        for index, ((conv1, conv2), downsample) in enumerate(zip(self.convs, self.downsample)):
            hidden = conv2.buffer.rows()
            activation(conv1(out=hidden[0]), in_place=True)  # (B, C_i)
            hidden[1].copy_(hidden[0])
            out = activation(conv2(), in_place=True)  # (B, C_i), a new tensor
            residual = conv1.buffer.rows()[0]  # the block's input
            if downsample is not None:
                weight, bias = downsample
                residual = torch.addmm(bias, residual, weight)  # (B, C_i)
            if index + 1 < blocks:
                following = self.convs[index + 1][0].buffer.rows()
                block_output(out, residual, into=following[0])
                following[1].copy_(following[0])
            else:
                block_output(out, residual, into=self.last)
        weight, bias = self.output
        return torch.addmm(bias, self.last, weight)  # (B, out)

    def _prime(self, x: Tensor) -> Tensor:
        record: list[Signal] = []
        out = self.net._run(x.to(self.last), 0, record)
        for buffer, inputs in zip(self._buffers(), record, strict=True):
            buffer.fill(inputs.data)  # every input starts at time 0 in a full pass
        return out.data
