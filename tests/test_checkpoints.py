"""Runs and checkpoints: round trips, atomic writes, damaged files, finding the newest run."""

from __future__ import annotations

import json
import random
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sequnet_cli import checkpoints
from sequnet_cli.checkpoints import (
    FORMAT_VERSION,
    Run,
    capture_rng,
    find_run,
    list_runs,
    load_checkpoint_file,
    restore_rng,
)
from sequnet_cli.config import RunConfig, resolve
from sequnet_cli.errors import CheckpointError, SequnetWarning, WriteError
from sequnet_cli.paths import runs_dir
from sequnet_cli.tasks import task_for


def tiny_config(preset: str = "jsb", model: str = "sequnet") -> RunConfig:
    return resolve(preset, model, ["model.channels=[4, 4]"])


def tiny_state(epoch: int, score: float) -> dict[str, Any]:
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {
        "weights": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "training": {
            "epoch": epoch,
            "step": epoch * 10,
            "best_score": score,
            "metric": "valid NLL",
            "lr": 1e-3,
            "bad_epochs": 0,
            "history": [{"epoch": e, "valid": np.float64(score + e)} for e in range(epoch)],
        },
        "rng": capture_rng(),
        "metrics": {"valid": np.float32(score)},
    }


def test_save_and_load_round_trip() -> None:
    run = Run.create(tiny_config())
    state = tiny_state(epoch=3, score=8.5)
    run.save(state, best=True)
    loaded = run.load_state("best")
    assert loaded["format_version"] == FORMAT_VERSION
    for key, tensor in state["weights"].items():
        torch.testing.assert_close(loaded["weights"][key], tensor)
    assert loaded["training"]["history"][2] == {"epoch": 2, "valid": 10.5}
    assert loaded["metrics"]["valid"] == pytest.approx(8.5)
    assert RunConfig.from_dict(loaded["config"]) == run.config
    assert Run.open(run.path).config == run.config
    assert json.loads((run.path / "config.json").read_text()) == run.config.to_dict()


def test_a_pt_file_alone_describes_its_run(tmp_path: Path) -> None:
    run = Run.create(tiny_config("nottingham", "tcn"))
    run.save(tiny_state(1, 3.0), best=True)
    moved = tmp_path / "copy.pt"
    moved.write_bytes((run.path / "best.pt").read_bytes())
    config, state = load_checkpoint_file(moved)
    assert config == run.config
    assert state["training"]["epoch"] == 1


def test_best_is_only_written_when_asked() -> None:
    run = Run.create(tiny_config())
    run.save(tiny_state(1, 5.0), best=True)
    run.save(tiny_state(2, 6.0), best=False)
    assert run.load_state("last")["training"]["epoch"] == 2
    assert run.load_state("best")["training"]["epoch"] == 1


def test_missing_checkpoints_are_named_with_the_one_to_use() -> None:
    run = Run.create(tiny_config())
    with pytest.raises(CheckpointError, match="has no checkpoint: it was stopped before"):
        run.load_state("best")
    run.save(tiny_state(1, 5.0), best=False)
    with pytest.raises(CheckpointError, match="has no best.pt .*use --checkpoint last"):
        run.load_state("best")


def test_rng_state_round_trips_through_a_checkpoint() -> None:
    run = Run.create(tiny_config())
    state = tiny_state(1, 1.0)
    run.save(state, best=False)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(run.load_state("last")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_failed_save_keeps_the_last_good_file(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run.create(tiny_config())
    run.save(tiny_state(1, 5.0), best=True)
    good = (run.path / "last.pt").read_bytes()

    def failing_save(obj: object, file: Any) -> None:
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(WriteError, match="no space left on device writing .*last.pt"):
        run.save(tiny_state(2, 4.0), best=True)
    assert (run.path / "last.pt").read_bytes() == good
    assert sorted(p.name for p in run.path.iterdir()) == ["best.pt", "config.json", "last.pt"]
    monkeypatch.undo()
    assert run.load_state("last")["training"]["epoch"] == 1


def test_a_truncated_checkpoint_is_refused() -> None:
    run = Run.create(tiny_config())
    run.save(tiny_state(1, 5.0), best=True)
    path = run.path / "best.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="best.pt is not a readable sequnet checkpoint"):
        run.load_state("best")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint_file(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"format_version": 3, "config": {}, "weights": {}},
            "format version 3, this sequnet reads version 2",
        ),
        ({"weights": {}}, "not a sequnet checkpoint"),
        ([1, 2, 3], "not a sequnet checkpoint"),
        ({"format_version": 1, "config": {}}, "no 'weights'"),
        (
            {"format_version": 1, "config": {"preset": 1}, "weights": {}},
            "invalid stored run config",
        ),
    ],
)
def test_foreign_checkpoints_are_refused(tmp_path: Path, payload: object, message: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint_file(path)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "weights": {}, "config": {}, "thing": Path("x")}, path)
    with pytest.raises(CheckpointError, match="could run code") as refused:
        load_checkpoint_file(path)
    assert "weights_only" not in str(refused.value)  # torch's advice to load it anyway


def test_missing_file() -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(Path("/nonexistent/best.pt"))


def make_run(name: str, config: RunConfig) -> Run:
    """A run folder with a chosen name, as `Run.create` would lay it out."""
    path = runs_dir() / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    return Run(path, config)


def test_find_run_by_preset_picks_the_newest_with_a_checkpoint() -> None:
    jsb = tiny_config()
    make_run("jsb-sequnet-20240102-090000", jsb).save(tiny_state(1, 5.0), best=True)
    newest = make_run("jsb-sequnet-20240301-120000", jsb)
    newest.save(tiny_state(1, 5.0), best=True)
    make_run("jsb-tcn-20240401-120000", tiny_config("jsb", "tcn")).save(tiny_state(1, 5.0), True)
    make_run("jsb-tcn-20240501-120000", tiny_config("jsb", "tcn"))  # killed before a checkpoint
    make_run("nottingham-sequnet-20250101-000000", tiny_config("nottingham"))
    unvalidated = make_run("jsb-sequnet-20240601-120000", jsb)
    unvalidated.save(tiny_state(0, float("inf")), best=False)  # stopped before a validation
    assert find_run("jsb", which="best").name == "jsb-tcn-20240401-120000"
    assert find_run("jsb", model="sequnet", which="best").path == newest.path
    assert find_run("jsb", model="sequnet", which="last").path == unvalidated.path
    with pytest.raises(CheckpointError, match="no run of preset 'nottingham' has a checkpoint"):
        find_run("nottingham")
    assert find_run("jsb-sequnet-20240102-090000").name == "jsb-sequnet-20240102-090000"
    assert find_run(str(newest.path)).path == newest.path
    with pytest.raises(CheckpointError, match="no run of preset 'musedata'.*sequnet train"):
        find_run("musedata")
    with pytest.raises(
        CheckpointError, match="with model 'tcn'.*`sequnet train musedata --model tcn`"
    ):
        find_run("musedata", model="tcn")
    with pytest.raises(CheckpointError, match="no preset 'jbs'; see `sequnet runs`"):
        find_run("jbs")


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _FrozenClock:
        return cls(2024, 5, 6, 7, 8, 9)


def test_same_second_runs_get_unique_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "datetime", _FrozenClock)
    first = Run.create(tiny_config())
    second = Run.create(tiny_config())
    assert first.name == "jsb-sequnet-20240506-070809"
    assert second.name == "jsb-sequnet-20240506-070809-2"
    for run in (first, second):
        run.save(tiny_state(1, 5.0), best=True)
    assert find_run("jsb").path == second.path


def test_list_runs() -> None:
    old = make_run("jsb-sequnet-20240102-090000", tiny_config())
    old.save(tiny_state(4, 8.25), best=True)
    make_run("piano-small-wavenet-20240103-090000", resolve("piano-small", "wavenet", []))
    broken = runs_dir() / "broken-run"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    with pytest.warns(SequnetWarning, match="broken-run"):
        summaries = list_runs()
    assert [s.name for s in summaries] == [
        "piano-small-wavenet-20240103-090000",
        "jsb-sequnet-20240102-090000",
    ]
    audio, jsb = summaries
    assert (jsb.preset, jsb.model, jsb.epochs, jsb.steps) == ("jsb", "sequnet", 4, 40)
    assert (jsb.best_score, jsb.metric) == (8.25, "valid NLL")
    assert jsb.size_bytes > (old.path / "best.pt").stat().st_size
    assert jsb.created.year == 2024 and jsb.created.day == 2
    assert (audio.epochs, audio.best_score) == (0, None)


def test_unstorable_values_are_refused_before_writing() -> None:
    run = Run.create(tiny_config())
    with pytest.raises(TypeError, match="cannot store"):
        run.save({"weights": {}, "metrics": {"when": object()}}, best=False)
    assert not (run.path / "last.pt").exists()


def test_format_version_is_checked_by_the_module_constant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Run.create(tiny_config())
    run.save(tiny_state(1, 1.0), best=False)
    monkeypatch.setattr(checkpoints, "FORMAT_VERSION", 7)
    monkeypatch.setattr(checkpoints, "READABLE_VERSIONS", (7,))
    with pytest.raises(CheckpointError, match="format version 2, this sequnet reads version 7"):
        run.load_state("last")


def test_version_1_checkpoints_are_read_in_the_current_layout(tmp_path: Path) -> None:
    """Version 1 stored kernels time-major, (out, K, in): they are transposed when read."""
    config = tiny_config()
    network = task_for(config).build_network()
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.rand(1, 88, 20)).sum().backward()
    optimizer.step()

    def time_major(tensors: dict[str, Any]) -> dict[str, Any]:
        return {k: v.transpose(1, 2) if v.dim() == 3 else v for k, v in tensors.items()}

    saved = optimizer.state_dict()
    old = {index: time_major(moments) for index, moments in saved["state"].items()}
    path = tmp_path / "old.pt"
    payload = {
        "format_version": 1,
        "config": config.to_dict(),
        "weights": time_major(network.state_dict()),
        "optimizer": {**saved, "state": old},
    }
    torch.save(payload, path)
    _, state = load_checkpoint_file(path)
    assert state["format_version"] == checkpoints.FORMAT_VERSION
    for name, value in network.state_dict().items():
        torch.testing.assert_close(state["weights"][name], value, rtol=0, atol=0)
    for index, moments in saved["state"].items():
        for key, value in moments.items():
            torch.testing.assert_close(state["optimizer"]["state"][index][key], value)
