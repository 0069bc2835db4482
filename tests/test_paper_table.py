"""The paper-table script at --quick sizes: it trains the six runs, scores them, measures both
networks of each data set and writes the table beside the paper's figures; called again, it
finds the finished runs and has nothing left to train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_table.py"


@pytest.mark.data
def test_the_quick_table_is_made_then_reused(tmp_path: Path) -> None:
    out = tmp_path / "table"
    environment = {**os.environ, "SEQUNET_HOME": str(tmp_path / "home")}

    def table(*arguments: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--quick", "--out", str(out), *arguments],
            capture_output=True, text=True, env=environment, check=False, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    first = table()
    assert "0 of 6 runs finished, 6 to train" in first.stdout
    document = json.loads((out / "table.json").read_text())
    cells = {(cell["preset"], cell["model"]): cell for cell in document["cells"]}
    assert set(cells) == {
        (preset, model)
        for preset in ("jsb", "nottingham", "musedata")
        for model in ("sequnet", "tcn")
    }
    for cell in cells.values():
        assert cell["run"] and cell["training"]["step"] == 30
        assert 0 < cell["scores"]["test"] < 100 and cell["paper"]["test"] > 0
    for preset, speed in document["speed"].items():
        assert speed["time_ratio"] > 0 and speed["counted_memory_ratio"] > 0, preset
        batch = speed["batch"]  # the paper's batch, shrunk with the networks
        assert batch["pieces"] == 2 and batch["time_ratio"] > 0, preset
        assert batch["counted_memory_bytes"]["tcn"] > speed["counted_memory_bytes"]["tcn"], preset
        assert speed["paper_memory_ratio"] == pytest.approx(
            cells[(preset, "tcn")]["paper"]["megabytes"]
            / cells[(preset, "sequnet")]["paper"]["megabytes"]
        )
    markdown = (out / "table.md").read_text()
    assert markdown.count("\n| ") == 7 and "(8.173)" in markdown  # header rule and six rows
    again = table("--plan")
    assert "6 of 6 runs finished, 0 to train" in again.stdout


@pytest.mark.data
def test_no_train_tables_the_runs_as_they_are(tmp_path: Path) -> None:
    out = tmp_path / "table"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-train", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=900,
        env={**os.environ, "SEQUNET_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 of 6 runs finished, 0 to train" in done.stdout
    document = json.loads((out / "table.json").read_text())
    assert all(cell["run"] is None and not cell["finished"] for cell in document["cells"])
    assert (out / "table.md").read_text().count("not trained") == 6
    assert not (tmp_path / "home" / "runs").exists() or not any(
        (tmp_path / "home" / "runs").iterdir()
    )
