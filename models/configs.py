"""Hyper-parameters of the four networks, one frozen dataclass each.

The fields mirror the constructors' keywords after `in_channels` and `out_channels` (which the
task decides), so a preset table maps one-to-one onto a network: `build(name, cin, cout, config)`.
Each config checks its ranges when it is made (the caller has already coerced the types), and
offers the same knobs whatever the architecture, so that no caller needs to switch on it:

- `width`: the main feature width;
- `stages`: the knob that sets the receptive field (resolutions, blocks or layers per stack);
- `with_stages(count, width)`: a copy with `count` stages and one width everywhere;
- `scaled(factor)`: a copy with every feature width multiplied by `factor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace


class ConfigValueError(ValueError):
    """A config field is out of range: `str(error)` is f"{field} {reason}".

    field: the field's name, e.g. "depth"; reason: e.g. "must be at least 1, got 0".
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[ConfigValueError], tuple[str, str]]:
        return type(self), (self.field, self.reason)  # picklable, e.g. across processes


def _at_least(field: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigValueError(field, f"must be at least {minimum}, got {value}")


# Levels (Seq-U-Net), blocks (TCN) and layers (WaveNet) each double the receptive field: 24 of
# them already reach millions of steps (minutes of 16 kHz audio), more than a training excerpt
# can hold in memory, so a longer list is a mistake, refused before anything is built.
MAX_DOUBLINGS = 24


def _at_most_doublings(field: str, count: int, what: str, listed: bool = True) -> None:
    """Refuse more than `MAX_DOUBLINGS` levels, blocks or layers (`what`), given as the length
    of a list (`listed`) or as a number."""
    if count > MAX_DOUBLINGS:
        listing = f"list at most {MAX_DOUBLINGS} {what}"
        limit = f"must {listing if listed else f'be at most {MAX_DOUBLINGS}'}"
        raise ConfigValueError(
            field,
            f"{limit}, got {count} (each doubles the receptive field: {count} would span about "
            f"2**{count - 1} steps)",
        )


def _widths(field: str, values: Sequence[int]) -> None:
    if not values or min(values) < 1:
        raise ConfigValueError(
            field, f"must be a non-empty list of integers >= 1, got {list(values)}"
        )


def _dropout(value: float) -> None:
    if not 0 <= value < 1:  # NaN fails this too
        raise ConfigValueError("dropout", f"must be in [0, 1), got {value}")


def _scale(width: int, factor: float) -> int:
    """A width multiplied by `factor`, rounded; at least 2, so gates and halves still exist."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"a width scale must be positive, got {factor}")
    return max(2, round(width * factor))


@dataclass(frozen=True)
class SeqUNetConfig:
    """Seq-U-Net (paper §3.1). `channels`: one width per level, the last is the bottleneck."""

    channels: tuple[int, ...]
    kernel_size: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _widths("channels", self.channels)
        _at_most_doublings("channels", len(self.channels), "levels")
        _at_least("kernel_size", self.kernel_size, 2)  # the up-sampling needs two taps
        _dropout(self.dropout)

    @property
    def width(self) -> int:
        return self.channels[0]

    @property
    def stages(self) -> int:
        """Resolutions (levels), bottleneck included."""
        return len(self.channels)

    def with_stages(self, count: int, width: int) -> SeqUNetConfig:
        return replace(self, channels=(width,) * count)

    def scaled(self, factor: float) -> SeqUNetConfig:
        if factor == 1:
            return self
        return replace(self, channels=tuple(_scale(c, factor) for c in self.channels))


@dataclass(frozen=True)
class ResidualSeqUNetConfig:
    """Residual Seq-U-Net (paper §3.2): `levels` resolutions, `depth` + 1 layers per block."""

    channels: int
    levels: int
    depth: int = 1
    kernel_size: int = 5

    def __post_init__(self) -> None:
        _at_least("channels", self.channels)
        _at_least("levels", self.levels)
        _at_most_doublings("levels", self.levels, "levels", listed=False)
        _at_least("depth", self.depth)  # the bottleneck is `depth` layers
        _at_least("kernel_size", self.kernel_size, 2)

    @property
    def width(self) -> int:
        return self.channels

    @property
    def stages(self) -> int:
        """Resolutions (levels), bottleneck included."""
        return self.levels

    def with_stages(self, count: int, width: int) -> ResidualSeqUNetConfig:
        return replace(self, channels=width, levels=count)

    def scaled(self, factor: float) -> ResidualSeqUNetConfig:
        if factor == 1:
            return self
        return replace(self, channels=_scale(self.channels, factor))


@dataclass(frozen=True)
class TCNConfig:
    """Temporal convolutional network (Bai et al. 2018): one residual block per width."""

    channels: tuple[int, ...]
    kernel_size: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _widths("channels", self.channels)
        _at_most_doublings("channels", len(self.channels), "blocks")
        _at_least("kernel_size", self.kernel_size, 2)  # one tap would see no history at all
        _dropout(self.dropout)

    @property
    def width(self) -> int:
        return self.channels[0]

    @property
    def stages(self) -> int:
        """Residual blocks (block i has dilation 2**i)."""
        return len(self.channels)

    def with_stages(self, count: int, width: int) -> TCNConfig:
        return replace(self, channels=(width,) * count)

    def scaled(self, factor: float) -> TCNConfig:
        if factor == 1:
            return self
        return replace(self, channels=tuple(_scale(c, factor) for c in self.channels))


@dataclass(frozen=True)
class WaveNetConfig:
    """WaveNet baseline of the paper: `stacks` x `layers` dilated gated layers."""

    residual_channels: int = 128
    dilation_channels: int = 128
    skip_channels: int = 512
    layers: int = 13
    stacks: int = 4
    kernel_size: int = 2

    def __post_init__(self) -> None:
        _at_least("residual_channels", self.residual_channels)
        _at_least("dilation_channels", self.dilation_channels)
        _at_least("skip_channels", self.skip_channels)
        _at_least("layers", self.layers)
        _at_most_doublings("layers", self.layers, "layers", listed=False)
        _at_least("stacks", self.stacks)
        _at_least("kernel_size", self.kernel_size, 2)

    @property
    def width(self) -> int:
        return self.residual_channels

    @property
    def stages(self) -> int:
        """Layers per stack (layer l has dilation 2**l)."""
        return self.layers

    def with_stages(self, count: int, width: int) -> WaveNetConfig:
        return replace(
            self,
            residual_channels=width,
            dilation_channels=width,
            skip_channels=width,
            layers=count,
        )

    def scaled(self, factor: float) -> WaveNetConfig:
        if factor == 1:
            return self
        return replace(
            self,
            residual_channels=_scale(self.residual_channels, factor),
            dilation_channels=_scale(self.dilation_channels, factor),
            skip_channels=_scale(self.skip_channels, factor),
        )


NetworkConfig = SeqUNetConfig | ResidualSeqUNetConfig | TCNConfig | WaveNetConfig

# Architecture name (as written in presets) -> its config dataclass. `models.ARCHITECTURES`
# maps the same names to the network classes.
CONFIGS: dict[str, type[NetworkConfig]] = {
    "sequnet": SeqUNetConfig,
    "residual-sequnet": ResidualSeqUNetConfig,
    "tcn": TCNConfig,
    "wavenet": WaveNetConfig,
}
