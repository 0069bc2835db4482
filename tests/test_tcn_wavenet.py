"""TCN and WaveNet specifics: parameter counts, receptive fields and TCN's weight-norm snapshot.
The model contract is tested for every network in `test_contract.py`."""

from __future__ import annotations

import torch

from models import TCN, WaveNet


def test_tcn_stream_snapshots_normalised_weights() -> None:
    torch.manual_seed(0)
    net = TCN(3, 2, [4, 5], kernel_size=3).double().eval()
    x = torch.randn(2, 3, 20, dtype=torch.float64)
    before = net(x)
    stream = net.stream(2)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.endswith("parametrizations.weight.original0"):  # a weight-norm gain g
                parameter.mul_(2.0)
    assert not torch.allclose(net(x), before)
    steps = torch.stack([stream.step(x[..., t]) for t in range(20)], dim=-1)
    torch.testing.assert_close(steps, before, rtol=1e-9, atol=1e-11)


def test_parameter_counts_and_receptive_fields() -> None:
    def count(net: torch.nn.Module) -> int:
        return sum(parameter.numel() for parameter in net.parameters())

    tcn = TCN(88, 88, [220] * 2, kernel_size=3)
    wavenet = WaveNet(256, 256)
    assert count(tcn) == 534_468
    assert count(wavenet) == 8_141_184
    assert tcn.receptive_field == 1 + 2 * 2 * (1 + 2)
    assert wavenet.receptive_field == 1 * 4 * (2**13 - 1) + 1
    assert count(TCN.from_config(88, 88, tcn.config)) == count(tcn)
    assert count(WaveNet.from_config(256, 256, wavenet.config)) == count(wavenet)
