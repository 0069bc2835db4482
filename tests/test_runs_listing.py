"""`sequnet runs`: a JSON document, a preset (and model) filter, model and test columns, and a
run's training history as CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from cli import assert_one_error_line, run, succeed, write_chorales

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]  # 2 steps per epoch
OTHER = """
description = "another preset"
task = "piano-roll"
model = "small"
[data]
dataset = "jsb"
[train]
epochs = 1
batch_size = 2
[small]
architecture = "tcn"
channels = [6, 6]
"""


@pytest.fixture
def two_presets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A jsb run (2 epochs) and a run of another preset, on the same chorales; the jsb run."""
    from sequnet_cli.checkpoints import find_run

    chorales = write_chorales(tmp_path / "chorales", 6)
    other = tmp_path / "other.toml"
    other.write_text(OTHER)
    succeed(capsys, "train", "jsb", "--data", str(chorales), *TINY, "--epochs", "2")
    succeed(capsys, "train", str(other), "--data", str(chorales))
    return find_run("jsb").path


def test_runs_json_filters_by_preset_and_model(
    capsys: pytest.CaptureFixture[str], two_presets: Path
) -> None:
    every = json.loads(succeed(capsys, "runs", "--json").out)
    assert sorted(entry["preset"] for entry in every) == ["jsb", "other"]
    (jsb,) = json.loads(succeed(capsys, "runs", "jsb", "--json").out)
    assert jsb["name"] == two_presets.name and jsb["model"] == "sequnet"
    assert jsb["epochs"] == 2 and jsb["steps"] == 4 and jsb["metric"] == "NLL"
    assert jsb["test"] is None and jsb["checkpoints"] == ["last", "best"]
    (other,) = json.loads(succeed(capsys, "runs", "other", "--json").out)
    assert other["model"] == "small"
    assert json.loads(succeed(capsys, "runs", "jsb", "--model", "tcn", "--json").out) == []
    (named,) = json.loads(succeed(capsys, "runs", two_presets.name, "--json").out)
    assert named == jsb
    assert_one_error_line(run(capsys, "runs", "no-such-thing"), "no run named 'no-such-thing'")


def test_the_table_has_model_and_test_columns_and_the_test_score_evaluate_found(
    capsys: pytest.CaptureFixture[str], two_presets: Path
) -> None:
    table = succeed(capsys, "runs", "jsb").out
    header = next(line for line in table.splitlines() if line.lstrip().startswith("run "))
    assert header.split()[:3] == ["run", "model", "data"] and "test" in header.split()
    scored = json.loads(succeed(capsys, "evaluate", "jsb", "--split", "test", "--json").out)
    test = scored["scores"]["test"]
    (entry,) = json.loads(succeed(capsys, "runs", "jsb", "--json").out)
    assert entry["test"] == pytest.approx(test)
    listing = succeed(capsys, "runs", "jsb").out.splitlines()
    row = next(line for line in listing if two_presets.name in line)
    assert f"{test:.4f}" in row.split()
    # Trained on, the best checkpoint holds other weights: their test score is not known yet.
    succeed(capsys, "train", "--resume", "jsb", "--epochs", "3")
    (entry,) = json.loads(succeed(capsys, "runs", "jsb", "--json").out)
    best = torch.load(two_presets / "best.pt", weights_only=True)["training"]["step"]
    assert entry["test"] == (pytest.approx(test) if best == 4 else None)


def test_the_history_of_a_run_is_csv(capsys: pytest.CaptureFixture[str], two_presets: Path) -> None:
    text = succeed(capsys, "runs", "jsb", "--history").out
    rows = list(csv.DictReader(io.StringIO(text)))
    history = torch.load(two_presets / "last.pt", weights_only=True)["training"]["history"]
    assert len(rows) == len(history) == 2
    for row, entry in zip(rows, history, strict=True):
        assert set(row) == set(entry)
        assert all(float(row[key]) == pytest.approx(value) for key, value in entry.items())
    assert rows[-1]["step"] == "4" and "valid" in rows[-1]
    assert_one_error_line(run(capsys, "runs", "--history"), "--history needs a run")
