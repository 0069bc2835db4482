"""Hyper-parameters of the four networks, one frozen dataclass each.

The fields mirror the constructors' keywords after `in_channels` and `out_channels` (which the
task decides), so a preset table maps one-to-one onto a network: `build(name, cin, cout, config)`.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConfigValueError(ValueError):
    """A config field holds a value the network cannot be built with."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class SeqUNetConfig:
    """Seq-U-Net (paper §3.1). `channels`: one width per level, the last is the bottleneck."""

    channels: tuple[int, ...]
    kernel_size: int = 3
    dropout: float = 0.0


@dataclass(frozen=True)
class ResidualSeqUNetConfig:
    """Residual Seq-U-Net (paper §3.2): `levels` resolutions, `depth` + 1 layers per block."""

    channels: int
    levels: int
    depth: int = 1
    kernel_size: int = 5


@dataclass(frozen=True)
class TCNConfig:
    """Temporal convolutional network (Bai et al. 2018): one residual block per width."""

    channels: tuple[int, ...]
    kernel_size: int = 3
    dropout: float = 0.0


@dataclass(frozen=True)
class WaveNetConfig:
    """WaveNet baseline of the paper: `stacks` x `layers` dilated gated layers."""

    residual_channels: int = 128
    dilation_channels: int = 128
    skip_channels: int = 512
    layers: int = 13
    stacks: int = 4
    kernel_size: int = 2


NetworkConfig = SeqUNetConfig | ResidualSeqUNetConfig | TCNConfig | WaveNetConfig

# Architecture name (as written in presets) -> its config dataclass. `models.ARCHITECTURES`
# maps the same names to the network classes.
CONFIGS: dict[str, type[NetworkConfig]] = {
    "sequnet": SeqUNetConfig,
    "residual-sequnet": ResidualSeqUNetConfig,
    "tcn": TCNConfig,
    "wavenet": WaveNetConfig,
}
