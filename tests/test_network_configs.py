"""The network configs: range checks naming the field, and the architecture-free knobs."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from models import (
    CONFIGS,
    TCN,
    ConfigValueError,
    NetworkConfig,
    ResidualSeqUNet,
    ResidualSeqUNetConfig,
    SeqUNet,
    SeqUNetConfig,
    TCNConfig,
    WaveNet,
    WaveNetConfig,
    build_network,
)

NAN = float("nan")

# One small valid config per architecture.
EXAMPLES: dict[str, NetworkConfig] = {
    "sequnet": SeqUNetConfig((6, 5, 4), kernel_size=3, dropout=0.1),
    "residual-sequnet": ResidualSeqUNetConfig(6, levels=3, depth=2, kernel_size=5),
    "tcn": TCNConfig((6, 5), kernel_size=3),
    "wavenet": WaveNetConfig(6, 5, 7, layers=3, stacks=2),
}


@pytest.mark.parametrize(
    ("make", "field", "reason"),
    [
        (
            lambda: SeqUNetConfig(()),
            "channels",
            "must be a non-empty list of integers >= 1, got []",
        ),
        (lambda: SeqUNetConfig((4, 0)), "channels", "must be a non-empty list"),
        (lambda: SeqUNetConfig((4,), kernel_size=1), "kernel_size", "must be at least 2, got 1"),
        (lambda: SeqUNetConfig((4,), dropout=1.0), "dropout", "must be in [0, 1), got 1.0"),
        (lambda: SeqUNetConfig((4,), dropout=-0.1), "dropout", "must be in [0, 1)"),
        (lambda: SeqUNetConfig((4,), dropout=NAN), "dropout", "must be in [0, 1), got nan"),
        (lambda: ResidualSeqUNetConfig(0, 3), "channels", "must be at least 1, got 0"),
        (lambda: ResidualSeqUNetConfig(4, 0), "levels", "must be at least 1, got 0"),
        (lambda: ResidualSeqUNetConfig(4, 3, depth=0), "depth", "must be at least 1, got 0"),
        (lambda: ResidualSeqUNetConfig(4, 3, kernel_size=1), "kernel_size", "must be at least 2"),
        (lambda: TCNConfig(()), "channels", "must be a non-empty list"),
        (lambda: TCNConfig((3, -1)), "channels", "got [3, -1]"),
        (lambda: TCNConfig((3,), kernel_size=1), "kernel_size", "must be at least 2, got 1"),
        (lambda: TCNConfig((3,), dropout=NAN), "dropout", "must be in [0, 1)"),
        (lambda: WaveNetConfig(residual_channels=0), "residual_channels", "must be at least 1"),
        (lambda: WaveNetConfig(dilation_channels=0), "dilation_channels", "must be at least 1"),
        (lambda: WaveNetConfig(skip_channels=-2), "skip_channels", "must be at least 1, got -2"),
        (lambda: WaveNetConfig(layers=0), "layers", "must be at least 1, got 0"),
        (lambda: WaveNetConfig(stacks=0), "stacks", "must be at least 1, got 0"),
        (lambda: WaveNetConfig(kernel_size=1), "kernel_size", "must be at least 2, got 1"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    make: Callable[[], NetworkConfig], field: str, reason: str
) -> None:
    with pytest.raises(ConfigValueError) as caught:
        make()
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert reason in error.reason
    assert str(error) == f"{field} {error.reason}"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SeqUNet(2, 2, [4, 4], kernel_size=1), "kernel_size"),
        (lambda: SeqUNet(2, 2, []), "channels"),
        (lambda: ResidualSeqUNet(2, 2, 4, 3, depth=0), "depth"),
        (lambda: TCN(2, 2, [4], dropout=1.5), "dropout"),
        (lambda: WaveNet(2, 2, 4, 4, 4, layers=0), "layers"),
    ],
)
def test_constructors_check_through_their_config(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigValueError) as caught:
        make()
    assert caught.value.field == field


def test_config_value_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ConfigValueError("depth", "must be at least 1, got 0")))
    assert (error.field, error.reason, str(error)) == (
        "depth",
        "must be at least 1, got 0",
        "depth must be at least 1, got 0",
    )


def test_width_and_stages() -> None:
    widths_and_stages = {name: (config.width, config.stages) for name, config in EXAMPLES.items()}
    assert widths_and_stages == {
        "sequnet": (6, 3),
        "residual-sequnet": (6, 3),
        "tcn": (6, 2),
        "wavenet": (6, 3),
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_with_stages_sets_the_receptive_field(name: str) -> None:
    fields = []
    for count in range(1, 6):
        config = EXAMPLES[name].with_stages(count, 3)
        assert isinstance(config, CONFIGS[name])
        assert (config.width, config.stages) == (3, count)
        network = build_network(name, 2, 2, config)
        widths = {p.shape[0] for n, p in network.named_parameters() if not n.startswith("output")}
        assert widths <= {3, 6}  # one width everywhere (gated layers compute 2 * width)
        fields.append(network.receptive_field)
    assert fields == sorted(set(fields)), f"receptive fields {fields} do not grow with the stages"


@pytest.mark.parametrize("name", CONFIGS)
def test_scaled_multiplies_every_width_only(name: str) -> None:
    config = EXAMPLES[name]
    assert config.scaled(1) is config
    doubled, tiny = config.scaled(2.0), config.scaled(0.01)
    assert doubled.width == 2 * config.width and tiny.width == 2  # never below 2
    assert doubled.stages == config.stages
    assert doubled.kernel_size == config.kernel_size
    widths = sum(p.numel() for p in build_network(name, 2, 2, config).parameters())
    assert sum(p.numel() for p in build_network(name, 2, 2, doubled).parameters()) > 3 * widths


def test_scaled_quarter_wavenet_of_the_paper() -> None:
    scaled = WaveNetConfig().scaled(0.25)
    assert scaled == WaveNetConfig(32, 32, 128, layers=13, stacks=4, kernel_size=2)
    with pytest.raises(ValueError, match="positive"):
        scaled.scaled(0.0)
