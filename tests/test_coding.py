"""Audio codings: one-hot (+ amplitude) inputs, softmax or discretised logistic-mixture outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sequnet_cli.config import DataConfig
from sequnet_cli.errors import ConfigError
from sequnet_cli.tasks.audio_coding import CLASSES, AudioCoding

MIXTURE = AudioCoding("one-hot+amplitude", "logistic-mixture", mixtures=4)


def test_channel_counts() -> None:
    assert (AudioCoding().in_channels, AudioCoding().out_channels) == (256, 256)
    assert (MIXTURE.in_channels, MIXTURE.out_channels) == (257, 12)


def test_of_reads_the_data_config() -> None:
    data = DataConfig("x", audio_input="one-hot+amplitude", audio_output="logistic-mixture")
    assert AudioCoding.of(data) == AudioCoding("one-hot+amplitude", "logistic-mixture", 10)
    assert AudioCoding.of(DataConfig("x")) == AudioCoding()


@pytest.mark.parametrize(
    "arguments", [("raw", "softmax", 1), ("one-hot", "mdn", 1), ("one-hot", "softmax", 0)]
)
def test_bad_codings_are_refused(arguments: tuple[str, str, int]) -> None:
    with pytest.raises(ConfigError):
        AudioCoding(*arguments)


def test_the_amplitude_channel_follows_the_one_hot_code() -> None:
    codes = torch.tensor([[0, 128, 255, 7]], dtype=torch.uint8)  # as batches hold them
    x = MIXTURE.encode(codes)  # (1, 257, 4)
    assert x.shape == (1, 257, 4) and x.dtype == torch.float32
    assert torch.equal(x[0, :256], F.one_hot(codes[0].long(), 256).T.float())
    assert x[0, 256].tolist() == pytest.approx([-1.0, 1 / 255, 1.0, 14 / 255 - 1], abs=1e-6)
    assert torch.equal(AudioCoding().encode(codes), x[:, :256])


def test_softmax_output_is_the_cross_entropy() -> None:
    output, target = torch.randn(2, 256, 5), torch.randint(0, 256, (2, 5))
    coding = AudioCoding()
    assert coding.nll(output, target).item() == pytest.approx(
        F.cross_entropy(output, target, reduction="sum").item(), rel=1e-6
    )
    assert torch.allclose(coding.log_probs(output[..., 0]), F.log_softmax(output[..., 0], -1))


@pytest.mark.parametrize("scale", [-6.0, -3.0, 0.0, 2.0])
def test_mixture_is_a_distribution_over_the_256_classes(scale: float) -> None:
    torch.manual_seed(0)
    output = torch.randn(6, 12, dtype=torch.float64)
    output[:, 4:8] = torch.linspace(-1.3, 1.3, 24, dtype=torch.float64).view(6, 4)  # means
    output[:, 8:] = scale
    log_probs = MIXTURE.log_probs(output.float())
    assert log_probs.shape == (6, CLASSES)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(6), atol=1e-4)


def test_mixture_nll_is_the_log_probability_of_each_target() -> None:
    torch.manual_seed(1)
    output, target = torch.randn(2, 12, 7), torch.randint(0, 256, (2, 7))
    target[0, :3] = torch.tensor([0, 255, 128])  # both edge classes and silence
    expected = -sum(
        MIXTURE.log_probs(output[..., t])[b, target[b, t]].item()
        for b in range(2)
        for t in range(7)
    )
    assert MIXTURE.nll(output, target).item() == pytest.approx(expected, rel=1e-5)


def test_a_narrow_component_puts_its_mass_on_its_class_and_the_edges_take_the_tails() -> None:
    coding = AudioCoding("one-hot", "logistic-mixture", mixtures=1)
    centre = 100 * 2 / 255 - 1
    peaked = coding.log_probs(torch.tensor([[0.0, centre, -7.0]])).exp()[0]
    assert peaked[100].item() > 0.97  # scale e^-7: the bin spans +-4.3 scales
    beyond = coding.log_probs(torch.tensor([[0.0, 5.0, -2.0]])).exp()[0]  # mean far above +1
    assert beyond[255].item() > 0.99
    # A tiny probability far from the mean is still finite and ordered (the density branch).
    far = coding.log_probs(torch.tensor([[0.0, centre, -5.0]]))[0]
    assert torch.isfinite(far).all() and far[30] < far[60] < far[90]


def test_mixture_gradients_are_finite() -> None:
    output = torch.randn(3, 12, 50, requires_grad=True)
    target = torch.randint(0, 256, (3, 50))
    (MIXTURE.nll(output, target) / target.numel()).backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()
    assert math.isfinite(MIXTURE.nll(output, target).item())
