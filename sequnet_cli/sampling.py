"""Autoregressive generation through a network's stream (never a full pass per step).

A primer is fed with `Stream.prime` in one parallel pass; each new element is then drawn from
the last output and fed back with `Stream.step`. Piano rolls draw every pitch independently
from the sigmoid of its logit; audio draws one of 256 mu-law classes from the softmax. Logits
are divided by the temperature first. The same seed gives the same output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models import CausalNetwork, Stream
from sequnet_cli.coding import AudioCoding
from sequnet_cli.data.audio import SILENCE_CODE
from sequnet_cli.errors import ConfigError

Progress = Callable[[int], None]  # called with the number of new elements


def _start(
    network: CausalNetwork, count: int, temperature: float, seed: int
) -> tuple[torch.device, torch.Generator, Stream]:
    """The device, a seeded generator and a fresh stream of `count` sequences."""
    if not temperature > 0:
        raise ConfigError(f"--temperature must be above 0, got {temperature}")
    device = next(network.parameters()).device
    return device, torch.Generator(device=device).manual_seed(seed), network.stream(count)


def sample_piano_roll(
    network: CausalNetwork,
    frames: int,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    primer: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """`count` piano rolls of `frames` new frames each: `(count, frames, 88)` bool.

    With a `primer: (P, 88)`, generation continues it (the primer itself is not returned).
    """
    device, generator, stream = _start(network, count, temperature, seed)
    if primer is not None and len(primer) > 0:
        context = torch.from_numpy(np.asarray(primer, dtype=np.float32).T).to(device)  # (88, P)
        logits = stream.prime(context.expand(count, -1, -1).contiguous())[..., -1]  # (count, 88)
    else:
        logits = stream.step(
            torch.zeros(count, network.in_channels, device=device)
        )  # silence at t = 0
    out = torch.zeros(count, frames, network.in_channels, dtype=torch.bool, device=device)
    for t in range(frames):
        probabilities = torch.sigmoid(logits / temperature)
        frame = torch.bernoulli(probabilities, generator=generator)  # (count, 88)
        out[:, t] = frame.bool()
        if t + 1 < frames:
            logits = stream.step(frame)
        if progress is not None:
            progress(1)
    return out.cpu().numpy()


def sample_audio(
    network: CausalNetwork,
    samples: int,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    primer: np.ndarray | None = None,
    progress: Progress | None = None,
    coding: AudioCoding | None = None,
) -> np.ndarray:
    """`count` mu-law sequences of `samples` new samples each: `(count, samples)` uint8.

    With a `primer` (mu-law codes), its last receptive-field samples prime the stream.
    """
    coding = coding or AudioCoding()
    device, generator, stream = _start(network, count, temperature, seed)
    if primer is not None and len(primer) > 0:
        context = torch.from_numpy(
            np.asarray(primer[-network.receptive_field :], dtype=np.int64)
        ).to(device)
        coded = coding.encode(context.unsqueeze(0))  # (1, C, P)
        output = stream.prime(coded.expand(count, -1, -1).contiguous())[..., -1]  # (count, C)
    else:
        silence = torch.full((count, 1), SILENCE_CODE, device=device)
        output = stream.step(
            coding.encode_step(silence, torch.zeros(count, coding.in_channels, device=device))
        )
    out = torch.zeros(count, samples, dtype=torch.uint8, device=device)
    step_input = torch.zeros(count, coding.in_channels, device=device)  # reused every step
    uniform = torch.empty(count, 1, device=device)
    chunk = 256
    for t in range(samples):
        # Inverse-CDF draw: one uniform number per sequence (much cheaper than multinomial).
        log_probs = coding.log_probs(output)
        cumulative = torch.softmax(log_probs / temperature, dim=-1).cumsum_(dim=-1)  # (count, 256)
        codes = torch.searchsorted(
            cumulative, uniform.uniform_(generator=generator) * cumulative[:, -1:]
        )
        codes = codes.clamp_(max=log_probs.shape[-1] - 1)  # (count, 1)
        out[:, t] = codes[:, 0]
        if t + 1 < samples:
            output = stream.step(coding.encode_step(codes, step_input))
        if progress is not None and ((t + 1) % chunk == 0 or t + 1 == samples):
            progress((t % chunk) + 1)
    return out.cpu().numpy()
