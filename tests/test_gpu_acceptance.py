"""The GPU acceptance script runs end to end on a CPU at toy sizes, so that it works the first
time a GPU is at hand: every step passes and its figures reach the JSON and the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_cli_audio import recordings  # noqa: F401  (a fixture)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_acceptance.py"


def test_the_acceptance_script_runs_on_a_cpu(recordings: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "acceptance.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--data", str(recordings),
         "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    steps = {step["name"]: step for step in document["steps"]}
    assert list(steps) == [
        "gpu tests", "bench", "train piano", "evaluate piano", "train piano-small",
        "evaluate piano-small", "train --resume piano-small", "sample piano-small",
        "generation speed", "torchrun, one process",
    ]  # fmt: skip
    assert document["passed"] and all(step["passed"] for step in steps.values())
    assert steps["train piano"]["figures"]["targets_per_second"] > 0
    assert steps["train --resume piano-small"]["figures"]["steps"] == 5
    assert steps["bench"]["figures"]["training_time_ratio"] > 0
    assert steps["generation speed"]["figures"]["sequnet_batch_1_samples_per_second"] > 0
    assert steps["evaluate piano"]["figures"]["test"] > 0
    table = {row["measure"]: row["figure"] for row in document["table"]}
    assert table["train piano, targets/s"] != "-" and "gpu-marked tests" in table
    assert "train piano, targets/s" in done.stdout
