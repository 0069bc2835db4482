"""WaveNet (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio", §2.3-2.4), the
raw-audio baseline of the Seq-U-Net paper (Stoller et al. 2020, §4).

A 1x1 convolution lifts the input to the residual width; `stacks` x `layers` gated layers follow,
layer l of each stack with dilation 2**l. One layer computes the filter and the gate with a single
dilated causal convolution, `z = tanh(filter) * sigmoid(gate)`, and one 1x1 convolution whose
output is split into the residual (added to the layer's input) and the skip contribution (summed
over all layers); the residual and skip 1x1 convolutions of the paper are fused into that one.
The output is `relu -> 1x1 -> relu -> 1x1` on the skip sum. Every layer's input is zeros before
t = 0 (zero history). The skip sum is only needed on the outputs' time range, while the residual
stream at layer l must reach back far enough for the later layers; the forward pass computes each
layer on exactly that range. A stream keeps one `TapBuffer` per layer (the "fast WaveNet" queue
scheme, Paine et al. 2016) and runs every layer every step with a handful of tensor operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.configs import WaveNetConfig
from models.core import (
    CausalConv1d,
    CausalNetwork,
    Clock,
    Gates,
    Signal,
    StepConv,
    Stream,
    TapBuffer,
    chain_starts,
    gate_halves,
    step_weights,
)


def gated_activation(pre: Gates, in_place: bool = False) -> Tensor:
    """The gated activation unit (§2.3), `tanh(filter) * sigmoid(gate)`.

    pre: `[filter, gate]` along dim 1, `(B, 2D, ...)` (or its halves) -> `(B, D, ...)`.
    `in_place` overwrites `pre` (a stream's buffer) and returns its filter half.
    """
    filter_, gate = gate_halves(pre)
    if in_place:
        return filter_.tanh_().mul_(gate.sigmoid_())
    return torch.tanh(filter_) * torch.sigmoid(gate)


class GatedLayer(nn.Module):
    """One WaveNet layer: gated activation (§2.3), residual and skip outputs (§2.4).

    x: `(B, residual, T)` -> residual `(B, residual, T)` and skip contribution `(B, skip, T)`.
    """

    def __init__(
        self,
        residual_channels: int,
        dilation_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
    ) -> None:
        super().__init__()
        self.dilation_channels = dilation_channels
        self.residual_channels, self.skip_channels = residual_channels, skip_channels
        # Filter and gate as one convolution, residual and skip as one: two matrix products a step.
        self.gated_conv = CausalConv1d(
            residual_channels, 2 * dilation_channels, kernel_size, dilation
        )
        self.mix_conv = CausalConv1d(dilation_channels, residual_channels + skip_channels, 1)

    @property
    def history(self) -> int:
        return self.gated_conv.history

    def forward_span(self, x: Signal, lo: int, hi: int) -> tuple[Signal, Tensor]:
        """Residual output and skip contribution for times `lo..hi`, each `(B, C, hi - lo + 1)`."""
        gates = self.gated_conv.forward_span(x, lo, hi).data  # (B, 2 * D, T)
        mixed = self.mix_conv(gated_activation(gates))  # (B, R + S, T)
        residual, skip = mixed.split((self.residual_channels, self.skip_channels), dim=1)
        return Signal(x.span(lo, hi) + residual, lo), skip


class WaveNet(CausalNetwork):
    """WaveNet with `stacks` x `layers` gated residual layers and a skip-connection output.

    x: `(B, in_channels, T)` -> `(B, out_channels, T)`; output t predicts input t + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        residual_channels: int = 128,
        dilation_channels: int = 128,
        skip_channels: int = 512,
        layers: int = 13,
        stacks: int = 4,
        kernel_size: int = 2,
    ) -> None:
        super().__init__()
        self.config = WaveNetConfig(  # checks the ranges
            residual_channels, dilation_channels, skip_channels, layers, stacks, kernel_size
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_conv = CausalConv1d(in_channels, residual_channels, 1)
        # Typed as the list it behaves as; nn.ModuleList registers the layers' parameters.
        self.layers: list[GatedLayer] = nn.ModuleList(  # type: ignore[assignment]
            GatedLayer(residual_channels, dilation_channels, skip_channels, kernel_size, 2**layer)
            for _ in range(stacks)
            for layer in range(layers)
        )
        self.skip_conv = CausalConv1d(skip_channels, skip_channels, 1)
        self.output_conv = CausalConv1d(skip_channels, out_channels, 1)

    @classmethod
    def from_config(cls, in_channels: int, out_channels: int, config: WaveNetConfig) -> WaveNet:
        c = config
        return cls(
            in_channels, out_channels, c.residual_channels, c.dilation_channels, c.skip_channels,
            c.layers, c.stacks, c.kernel_size,
        )  # fmt: skip

    @property
    def receptive_field(self) -> int:
        """`(K - 1) * stacks * (2**layers - 1) + 1`: the dilated kernels' histories add up."""
        return 1 + sum(layer.history for layer in self.layers)

    @property
    def clock_cycle(self) -> int:
        """Time-invariant: a stream does the same work every step."""
        return 1

    def _plan(self, first_output: int) -> list[int]:
        """The first time of every layer's input (and, last, of the outputs) that is needed."""
        return chain_starts([layer.history for layer in self.layers], first_output)

    def forward(self, x: Tensor, outputs: int | None = None) -> Tensor:
        """x: `(B, in_channels, T)` -> `(B, out_channels, outputs or T)`, the last outputs."""
        n = self._check_outputs(x, self.in_channels, outputs)
        return self._run(x, x.shape[-1] - n)

    def _run(self, x: Tensor, first_output: int, record: list[Signal] | None = None) -> Tensor:
        """Outputs from `first_output` to the end; `record` gets every layer's input."""
        starts, last = self._plan(first_output), x.shape[-1] - 1
        h = Signal(self.input_conv(x[..., starts[0] :]), starts[0])  # (B, R, T - starts[0])
        skips: Tensor | None = None
        for layer, lo in zip(self.layers, starts[1:]):
            if record is not None:
                record.append(h)
            # Layer l's outputs are needed from `lo` (later layers look back); the skip sum only
            # from `first_output`.
            h, skip = layer.forward_span(h, lo, last)  # (B, R, T - lo), (B, S, T - lo)
            skip = skip[..., first_output - lo :]  # (B, S, T - first_output)
            skips = skip if skips is None else skips + skip
        assert skips is not None  # there is at least one layer
        hidden = F.relu(self.skip_conv(F.relu(skips)))  # (B, S, T - first_output)
        return self.output_conv(hidden)  # (B, out, T - first_output)

    def stream(
        self,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fixed_index: bool = False,
    ) -> WaveNetStream:
        return WaveNetStream(
            self, batch_size, **self._parameter_like(device, dtype), fixed_index=fixed_index
        )


class WaveNetStream(Stream):
    """Streaming for `WaveNet`: one tap buffer per layer, every layer every step.

    `sums: (B, R + S)` holds the residual stream and the skip sum side by side, so one in-place
    `addmm_` per layer adds both the residual and the skip contribution; `gates: (B, 2 * D)` holds
    the current layer's filter and gate. A step allocates nothing but its output.
    """

    def __init__(
        self,
        network: WaveNet,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        fixed_index: bool = False,
    ) -> None:
        super().__init__(network, batch_size, fixed_index)
        self.net = network
        c = network.config
        convs = [layer.gated_conv for layer in network.layers]
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

        self.gated = [bind(layer.gated_conv) for layer in network.layers]
        # The 1x1 convolutions need no tap buffer: `(in, out)` matrices and biases.
        self.mix = [step_weights(layer.mix_conv, device, dtype) for layer in network.layers]
        self.sums = torch.zeros(
            batch_size, c.residual_channels + c.skip_channels, device=device, dtype=dtype
        )
        self.residual, self.skip = self.sums.split((c.residual_channels, c.skip_channels), dim=1)
        self.gates = torch.zeros(batch_size, 2 * c.dilation_channels, device=device, dtype=dtype)
        self.halves = gate_halves(self.gates)  # (B, D) views, made once
        self.input = step_weights(network.input_conv, device, dtype)
        self.skip_weights = step_weights(network.skip_conv, device, dtype)
        self.output = step_weights(network.output_conv, device, dtype)

    def _buffers(self) -> list[TapBuffer]:
        return [conv.buffer for conv in self.gated]

    def _clocks(self) -> list[Clock]:
        return [self.clock]

    def _step(self, x: Tensor, time: int) -> Tensor:
        self.clock.tick()
        weight, bias = self.input
        torch.addmm(bias, x, weight, out=self.residual)  # (B, R)
        self.skip.zero_()
        for conv, (mix_weight, mix_bias) in zip(self.gated, self.mix):
            conv.buffer.write(self.residual)
            conv(out=self.gates)  # (B, 2 * D)
            z = gated_activation(self.halves, in_place=True)  # (B, D)
            self.sums.addmm_(z, mix_weight).add_(mix_bias)  # residual += res, skip sum += skip
        weight, bias = self.skip_weights
        hidden = torch.addmm(bias, self.skip.relu_(), weight).relu_()  # (B, S)
        weight, bias = self.output
        return torch.addmm(bias, hidden, weight)  # (B, out)

    def _prime(self, x: Tensor) -> Tensor:
        record: list[Signal] = []
        out = self.net._run(x.to(self.sums), 0, record)
        for buffer, inputs in zip(self._buffers(), record, strict=True):
            buffer.fill(inputs.data)  # every input starts at time 0 in a full pass
        return out
