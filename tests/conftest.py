"""Hermetic tests: the user data dir is a temp folder; datasets come from ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "sequnet-home"))
    monkeypatch.setenv("SEQUNET_DATA_DIR", str(SHARED_DATA / "polyphonic"))
    monkeypatch.setenv("SEQUNET_DEVICE", "cpu")
    monkeypatch.delenv("SEQUNET_PRECISION", raising=False)
    # Generation runs step by step unless a test compiles on purpose (compiling takes seconds).
    monkeypatch.setattr("sequnet_cli.autoregression.COMPILE_MIN_STEPS", 2**62)
    # No shipped demo model stands in for a missing run unless a test asks for one.
    monkeypatch.setattr("sequnet_cli.demos.DEMO_FOLDER", tmp_path / "no-demos")
    from sequnet_cli.console import console, error_console

    # Wide consoles so tables and messages are not wrapped mid-word in captured output.
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setattr(error_console, "width", 200)
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_data = pytest.mark.skip(reason=f"needs {SHARED_DATA}")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "data" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip_data)
