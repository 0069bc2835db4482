"""sequnet's network library: four causal sequence models with exact streaming inference.

`SeqUNet` (paper §3.1), `ResidualSeqUNet` (§3.2), and the baselines `TCN` and `WaveNet` all
honour one contract: `net(x)` maps `(B, in_channels, T)` to `(B, out_channels, T)` causally
with zero history, `net(x, outputs=n)` computes only the last n outputs, `net.receptive_field`
is exact, and `net.stream(batch_size)` steps (or primes) sample by sample, equal to the full
pass; `StepProgram` runs a stream's step, and the caller's sampling, as CUDA graphs or, on a
CPU, compiled by inductor. The library is pure PyTorch: no files, no terminal.
"""

from __future__ import annotations

from models.capture import StepProgram
from models.compiled import CompileError
from models.configs import (
    CONFIGS,
    ConfigValueError,
    NetworkConfig,
    ResidualSeqUNetConfig,
    SeqUNetConfig,
    TCNConfig,
    WaveNetConfig,
)
from models.core import CausalNetwork, Stream, StreamError
from models.residual_sequnet import ResidualSeqUNet
from models.sequnet import SeqUNet
from models.tcn import TCN
from models.wavenet import WaveNet

# Architecture name (as written in presets) -> network class; `CONFIGS` holds the configs.
ARCHITECTURES: dict[str, type[CausalNetwork]] = {
    "sequnet": SeqUNet,
    "residual-sequnet": ResidualSeqUNet,
    "tcn": TCN,
    "wavenet": WaveNet,
}


def build_network(
    architecture: str, in_channels: int, out_channels: int, config: NetworkConfig
) -> CausalNetwork:
    """The network named `architecture` (a key of `ARCHITECTURES`) built from its config."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    if not isinstance(config, CONFIGS[architecture]):
        raise TypeError(
            f"{architecture} needs a {CONFIGS[architecture].__name__}, got {type(config).__name__}"
        )
    return ARCHITECTURES[architecture].from_config(in_channels, out_channels, config)  # type: ignore[attr-defined]


__all__ = [
    "ARCHITECTURES",
    "CONFIGS",
    "TCN",
    "CausalNetwork",
    "CompileError",
    "ConfigValueError",
    "NetworkConfig",
    "ResidualSeqUNet",
    "ResidualSeqUNetConfig",
    "SeqUNet",
    "SeqUNetConfig",
    "StepProgram",
    "Stream",
    "StreamError",
    "TCNConfig",
    "WaveNet",
    "WaveNetConfig",
    "build_network",
]
