"""How 8-bit mu-law samples enter an audio network and how its outputs become probabilities.

The paper's coding (the `piano` preset) is WaveNet's: a one-hot vector of the 256 classes in
and 256 logits out (a softmax). Two options change only the ends of the network, never the
task (256 mu-law classes, cross-entropy in bits per audio sample):

- input `one-hot+amplitude`: the one-hot vector plus the sample's companded amplitude in
  [-1, 1] as a 257th channel. Neighbouring classes then start out close, instead of each
  class's weights having to be learned from its own occurrences.
- output `logistic-mixture`: a mixture of `mixtures` logistic distributions on the companded
  amplitude, discretised to the 256 classes (PixelCNN++, Salimans et al. 2017, as in
  Parallel WaveNet): the probability of class c is the mixture's mass on its bin, the edge
  classes taking the tails. The network puts out 3 x `mixtures` channels: mixture logits,
  means and log scales. Peaked, unimodal-ish sample distributions are then a few numbers
  instead of 256 logits to be shaped.

`log_probs` gives the 256 class log-probabilities of either output, so sampling (and the
temperature, which divides them) works the same for both.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sequnet_cli.config import AudioInput, AudioOutput, DataConfig
from sequnet_cli.errors import ConfigError

CLASSES = 256
_HALF_BIN = 1.0 / (CLASSES - 1)  # half the width of a class on the companded [-1, 1] scale
_MIN_LOG_SCALE = -7.0
_LOG_BIN = math.log(2 * _HALF_BIN)


@dataclass(frozen=True)
class AudioCoding:
    """The input and output coding of an audio network (see the module docstring)."""

    input: AudioInput = "one-hot"
    output: AudioOutput = "softmax"
    mixtures: int = 10

    def __post_init__(self) -> None:
        for key, value, hint in (
            ("data.audio_input", self.input, AudioInput),
            ("data.audio_output", self.output, AudioOutput),
        ):
            if value not in typing.get_args(hint):
                choices = ", ".join(typing.get_args(hint))
                raise ConfigError(f"{key} must be one of {choices}, got '{value}'")
        if self.mixtures < 1:
            raise ConfigError(f"data.mixtures must be 1 or more, got {self.mixtures}")

    @classmethod
    def of(cls, data: DataConfig) -> AudioCoding:
        """The coding a run's data config names."""
        return cls(data.audio_input, data.audio_output, data.mixtures)

    @property
    def in_channels(self) -> int:
        return CLASSES + (self.input == "one-hot+amplitude")

    @property
    def out_channels(self) -> int:
        return CLASSES if self.output == "softmax" else 3 * self.mixtures

    def encode(self, codes: Tensor) -> Tensor:
        """Classes `(B, T)` (any integer dtype) -> network input `(B, in_channels, T)` float32,
        made where the codes are (batches cross to a GPU as 8-bit codes, a 32nd of the one-hot
        input's bytes, and become the network's input there)."""
        batch, length = codes.shape
        x = torch.zeros(batch, self.in_channels, length, device=codes.device)
        x[:, :CLASSES].scatter_(1, codes.long().unsqueeze(1), 1.0)
        if self.input != "one-hot":
            x[:, CLASSES] = _amplitude(codes)
        return x

    def nll(self, output: Tensor, target: Tensor) -> Tensor:
        """Summed negative log-likelihood in nats of `target: (B, T)` under `output: (B, C, T)`."""
        if self.output == "softmax":
            return F.cross_entropy(output, target, reduction="sum")
        return -self._mixture_log_prob(output, target.unsqueeze(1)).sum()

    def log_probs(self, output: Tensor) -> Tensor:
        """Log-probabilities of all 256 classes: `output: (B, C)` -> `(B, 256)`."""
        if self.output == "softmax":
            return F.log_softmax(output, dim=-1)
        classes = torch.arange(CLASSES, device=output.device).view(1, 1, CLASSES)
        logp = self._mixture_log_prob(output.unsqueeze(-1), classes.expand(output.shape[0], 1, -1))
        return logp  # (B, 256); sums to 1 up to rounding

    def _mixture_log_prob(self, output: Tensor, target: Tensor) -> Tensor:
        """`output: (B, 3K, T)`, `target: (B, 1, T)` classes -> log P(target) `(B, T)`."""
        k = self.mixtures
        weights = F.log_softmax(output[:, :k], dim=1)
        mean = output[:, k : 2 * k]
        log_scale = output[:, 2 * k : 3 * k].clamp(min=_MIN_LOG_SCALE)
        inv_scale = torch.exp(-log_scale)
        centred = _amplitude(target) - mean  # (B, K, T)
        upper = inv_scale * (centred + _HALF_BIN)
        lower = inv_scale * (centred - _HALF_BIN)
        log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper)
        log_survival_lower = -F.softplus(lower)  # log (1 - sigmoid(lower))
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        # Inside: the bin's mass, or its density times the width where the difference of two
        # sigmoids would lose all precision.
        mid = inv_scale * centred
        log_density = mid - log_scale - 2.0 * F.softplus(mid) + _LOG_BIN
        inside = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density)
        logp = torch.where(
            target == 0,
            log_cdf_upper,
            torch.where(target == CLASSES - 1, log_survival_lower, inside),
        )
        return torch.logsumexp(logp + weights, dim=1)


def _amplitude(codes: Tensor) -> Tensor:
    """Classes -> the companded amplitude of each class, in [-1, 1]."""
    return codes.float() * (2.0 / (CLASSES - 1)) - 1.0
