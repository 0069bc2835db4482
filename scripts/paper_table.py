"""The paper's Table 1, music rows, reproduced: Seq-U-Net and TCN on JSB Chorales, Nottingham and
MuseData, each trained with its preset's own settings (the paper's Table 3), scored on the train
and test splits, and measured for the time and memory of a training step, beside the paper's
figures.

    python scripts/paper_table.py                 # the whole table, two runs at a time
    python scripts/paper_table.py --minutes 90    # no run longer than 90 minutes
    python scripts/paper_table.py --plan          # what it would train, and how long
    python scripts/paper_table.py --no-train      # the table of the runs as they are now
    python scripts/paper_table.py --quick         # tiny networks, a few dozen steps: a check

Each of the six runs is an ordinary `sequnet train PRESET --model MODEL` run in the user's runs
folder: a finished run of exactly those settings is reused, an unfinished one resumed, and the
rest trained, `--jobs` at a time with one CPU thread each. Before it starts, the script times a
few steps of each network and says how long the table will take. The scores are the whole
splits' frame-wise NLL (`sequnet evaluate`); the speed and memory come from the machinery of
`sequnet bench` (both networks' steps interleaved on a piece of the data set's mean length, one
piece per step as they train), as ratios TCN / Seq-U-Net beside the paper's. It writes
`table.md` and `table.json` into `--out`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from sequnet_cli.bench.plan import BenchPlan, BenchSizes, make_plan, training_stage
from sequnet_cli.bench.run import compare_training
from sequnet_cli.checkpoints import Run, list_runs
from sequnet_cli.config import RunConfig, apply_overrides, resolve
from sequnet_cli.devices import cpu_threads
from sequnet_cli.evaluation import evaluate_model
from sequnet_cli.tasks import task_for
from sequnet_cli.tasks.piano_roll import PianoRollData
from sequnet_cli.trained_model import load_model
from sequnet_cli.training_step import TrainingStep

PRESETS = ("jsb", "nottingham", "musedata")
MODELS = ("sequnet", "tcn")
PAPER_BATCH = 16  # the batch size the paper's text gives (§5.1); the authors' code trains one
# Table 1 of the paper (frame-wise NLL; seconds per step and MB on a GTX 1080).
PAPER: dict[tuple[str, str], dict[str, float]] = {
    ("musedata", "tcn"): {"train": 5.789, "test": 6.931, "seconds": 0.0059, "megabytes": 108.5},
    ("musedata", "sequnet"): {"train": 5.794, "test": 6.969, "seconds": 0.0065, "megabytes": 75.3},
    ("nottingham", "tcn"): {"train": 1.409, "test": 2.783, "seconds": 0.0071, "megabytes": 73.1},
    ("nottingham", "sequnet"): {"train": 1.850, "test": 2.97, "seconds": 0.0067, "megabytes": 52.5},
    ("jsb", "tcn"): {"train": 6.178, "test": 8.154, "seconds": 0.0034, "megabytes": 13.1},
    ("jsb", "sequnet"): {"train": 6.151, "test": 8.173, "seconds": 0.0037, "megabytes": 8.2},
}
# --quick: every network two levels of eight channels, a few dozen steps of one epoch.
QUICK_SETTINGS = ["model.channels=[8,8]", "train.epochs=1", "train.steps=30"]
QUICK_SIZES = BenchSizes(targets=40, warmup_steps=1, repeat=2, isolate=False)
CALIBRATION_STEPS = 3
# Settings that change how long a run takes or where it runs, not what it learns.
NOT_COMPARED = {"threads", "minutes", "steps", "capture"}


@dataclass
class Cell:
    """One preset and model: its settings, its run, and what was measured of it."""

    preset: str
    model: str
    config: RunConfig
    run: Run | None = None
    state: dict[str, Any] = field(default_factory=dict)  # the run's training state
    estimate_seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.preset} / {self.model}"

    def find_run(self) -> None:
        """The newest run of the cell's settings, and its training state (epochs, steps,
        seconds) from its last checkpoint."""
        self.run = newest_run(self.config)
        self.state = {}
        if self.run is not None:
            training = self.run.load_state("last", mmap=True).get("training", {})
            self.state = dict(training)

    @property
    def finished(self) -> bool:
        return int(self.state.get("epoch", 0)) >= self.config.train.epochs or self.quick_done

    @property
    def quick_done(self) -> bool:
        limit = self.config.train.steps
        return bool(limit) and int(self.state.get("step", 0)) >= limit


def settings(config: RunConfig) -> dict[str, Any]:
    """What decides a run's result, for finding a run made with the same."""
    values = config.to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k not in NOT_COMPARED}
    values.pop("description")
    return values


def newest_run(config: RunConfig) -> Run | None:
    """The newest run of exactly `config`'s settings that has a checkpoint, if any."""
    wanted = settings(config)
    for summary in list_runs():  # newest first
        run = Run.open(summary.path)
        if settings(run.config) == wanted and run.checkpoint_path("last").is_file():
            return run
    return None


def mean_piece_frames(preset: str, quick: bool) -> int:
    """The mean length of the data set's training pieces, in frames."""
    data = task_for(resolve(preset, None, [])).open_data(None, None, 1)
    assert isinstance(data, PianoRollData)
    lengths = [len(piece) for piece in data.splits["train"]]
    return min(round(statistics.mean(lengths)), QUICK_SIZES.targets if quick else 10**9)


def estimate(cell: Cell, frames: int) -> float:
    """Seconds the cell's training still needs: a few timed steps on a piece of the mean
    length, for every step left, and validation (a forward pass over the valid split, about a
    third of a training step per frame)."""
    config, state = cell.config, cell.state
    task = task_for(config)
    data = task.open_data(None, None, 1)
    assert isinstance(data, PianoRollData)
    torch.manual_seed(0)
    with cpu_threads(1):
        step = TrainingStep(task.build_network().train(), task, config.train)
        batch = task.random_batch(config.train.batch_size, frames, 0, torch.Generator())
        step(batch)
        started = time.perf_counter()
        for _ in range(CALIBRATION_STEPS):
            step(batch)
        seconds = (time.perf_counter() - started) / CALIBRATION_STEPS
    per_epoch = data.epoch_batches(config.train.batch_size)
    steps_left = config.train.epochs * per_epoch - int(state.get("step", 0))
    if config.train.steps:
        steps_left = min(steps_left, config.train.steps - int(state.get("step", 0)))
    valid = sum(len(p) for p in data.splits["valid"]) / sum(len(p) for p in data.splits["train"])
    return max(steps_left, 0) * seconds * (1 + valid / 3)


def schedule(cells: list[Cell], jobs: int, minutes: float) -> float:
    """The wall time of training `cells`, `jobs` at a time, longest first."""
    lanes = [0.0] * jobs
    for cell in sorted(cells, key=lambda c: -c.estimate_seconds):
        lane = lanes.index(min(lanes))
        lanes[lane] += (
            min(cell.estimate_seconds, 60 * minutes) if minutes else cell.estimate_seconds
        )
    return max(lanes) if lanes else 0.0


def train(cell: Cell, overrides: list[str], minutes: float, log: Path) -> None:
    """Train or resume the cell's run in its own process, with one thread."""
    limit = ["--minutes", str(minutes)] if minutes else []
    if cell.run is not None:
        command = ["train", "--resume", cell.run.name, *limit]
    else:
        sets = [part for setting in overrides for part in ("--set", setting)]
        command = ["train", cell.preset, "--model", cell.model, "--threads", "1", *limit, *sets]
    with log.open("w") as file:
        subprocess.run(
            [sys.executable, "-m", "sequnet_cli", *command],
            stdout=file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
    cell.find_run()


def score(cell: Cell) -> None:
    """Train and test NLL of the run's best checkpoint, over the whole splits."""
    assert cell.run is not None
    with cpu_threads(1):
        trained = load_model(str(cell.run.path), None, "best", torch.device("cpu"))
        results = evaluate_model(trained, ["train", "test"], torch.device("cpu"))
    cell.scores = {result.split: result.value for result in results}


def speed(preset: str, frames: int, quick: bool) -> dict[str, Any]:
    """Both networks' training steps, interleaved, pieces of `frames` frames: one per step, as
    the presets train, and (under "batch") the paper's batch of 16 (2 with `quick`)."""
    measured = compare(preset, frames, 1, quick)
    batch = 2 if quick else PAPER_BATCH
    measured["batch"] = {"pieces": batch, **compare(preset, frames, batch, quick)}
    return measured


def compare(preset: str, frames: int, batch: int, quick: bool) -> dict[str, Any]:
    """Both networks' training steps, interleaved, `batch` pieces of `frames` frames a step."""
    sizes = QUICK_SIZES if quick else None
    plan = make_plan(preset, "tcn", "cpu", 1, batch, False, sizes)
    if quick:
        plan = _tiny(plan)
    comparison = compare_training(
        plan, training_stage(plan, plan.sequnet, plan.baseline, batch, frames)
    )
    paper_time = PAPER[(preset, "tcn")]["seconds"] / PAPER[(preset, "sequnet")]["seconds"]
    paper_memory = PAPER[(preset, "tcn")]["megabytes"] / PAPER[(preset, "sequnet")]["megabytes"]
    return {
        "frames": frames,
        "seconds_per_step": {
            "sequnet": comparison.sequnet.seconds_per_step,
            "tcn": comparison.baseline.seconds_per_step,
        },
        "counted_memory_bytes": {
            "sequnet": comparison.sequnet.counted_memory_bytes,
            "tcn": comparison.baseline.counted_memory_bytes,
        },
        "time_ratio": comparison.time_ratio,
        "counted_memory_ratio": comparison.counted_memory_ratio,
        "peak_memory_ratio": comparison.memory_ratio,
        "paper_time_ratio": paper_time,
        "paper_memory_ratio": paper_memory,
    }


def _tiny(plan: BenchPlan) -> BenchPlan:
    """The plan with both networks shrunk as --quick trains them."""
    shrink = [s for s in QUICK_SETTINGS if s.startswith("model.")]
    return dataclasses.replace(
        plan,
        sequnet=apply_overrides(plan.sequnet, shrink),
        baseline=apply_overrides(plan.baseline, shrink),
    )


def duration(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute:02d} min" if hours else f"{minute} min {second:02d} s"


def ratio_cell(measured: dict[str, Any], key: str, paper: str) -> str:
    """A ratio at one piece a step and at the paper's batch, beside the paper's."""
    batch = measured["batch"]
    return f"{measured[key]:.2f}x; {batch[key]:.2f}x at {batch['pieces']} ({measured[paper]:.2f}x)"


def markdown(cells: list[Cell], speeds: dict[str, dict[str, Any]], note: str) -> str:
    header = (
        "| data | model | train NLL (paper) | test NLL (paper) | training | time ratio TCN / "
        "Seq-U-Net, 1 piece a step; a batch (paper) | memory ratio TCN / Seq-U-Net, 1 piece a "
        "step; a batch (paper) |"
    )
    rows = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for cell in cells:
        paper, state, measured = PAPER[(cell.preset, cell.model)], cell.state, speeds[cell.preset]
        training = (
            f"{int(state.get('epoch', 0))} epochs, {int(state.get('step', 0)):,} steps, "
            f"{duration(float(state.get('seconds', 0.0)))}"
        )
        if cell.run is None:
            training = "not trained"
        elif not cell.finished:
            training += f" (unfinished: the preset trains {cell.config.train.epochs} epochs)"
        ratios = ("", "")
        if cell.model == "sequnet":
            ratios = (
                ratio_cell(measured, "time_ratio", "paper_time_ratio"),
                ratio_cell(measured, "counted_memory_ratio", "paper_memory_ratio"),
            )
        rows.append(
            f"| {cell.preset} | {cell.model} | {cell.scores.get('train', float('nan')):.3f} "
            f"({paper['train']}) | {cell.scores.get('test', float('nan')):.3f} ({paper['test']}) "
            f"| {training} | {ratios[0]} | {ratios[1]} |"
        )
    return "\n".join([*rows, "", note, ""])


def main(
    out: Annotated[Path, typer.Option(help="Folder for table.md and table.json.")] = Path(
        "paper-table"
    ),
    jobs: Annotated[int, typer.Option(help="Runs trained at a time (one thread each).")] = 2,
    minutes: Annotated[float, typer.Option(help="Most minutes of any one run (0: none).")] = 0.0,
    quick: Annotated[bool, typer.Option(help="Tiny networks and a few steps: a check.")] = False,
    plan_only: Annotated[
        bool, typer.Option("--plan", help="Say what would be trained and how long, then stop.")
    ] = False,
    train_runs: Annotated[
        bool,
        typer.Option(
            "--train/--no-train",
            help="--no-train: train nothing; score the runs as they are, unfinished ones marked.",
        ),
    ] = True,
) -> None:
    overrides = QUICK_SETTINGS if quick else []
    cells = [
        Cell(preset, model, resolve(preset, model, overrides))
        for preset in PRESETS
        for model in MODELS
    ]
    frames = {preset: mean_piece_frames(preset, quick) for preset in PRESETS}
    for cell in cells:
        cell.find_run()
        cell.estimate_seconds = 0.0 if cell.finished else estimate(cell, frames[cell.preset])
    todo = [cell for cell in cells if not cell.finished] if train_runs else []
    print(
        f"paper table: {sum(cell.finished for cell in cells)} of {len(cells)} runs finished, "
        f"{len(todo)} to train, about {duration(schedule(todo, jobs, minutes))} at {jobs} at "
        "a time "
        "(then scoring and speed, minutes)",
        flush=True,
    )
    for cell in todo:
        action = "resume" if cell.run is not None else "train"
        print(f"  {action} {cell.name}: about {duration(cell.estimate_seconds)}", flush=True)
    if plan_only:
        return
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for cell in todo:
            log = out / f"{cell.preset}-{cell.model}.log"
            pool.submit(train, cell, overrides, minutes, log)
    trained_seconds = time.monotonic() - started
    for cell in cells:
        if cell.run is None:
            if not train_runs:
                continue  # a row that says so
            raise SystemExit(f"error: {cell.name} made no run; see {out}")
        score(cell)
        print(f"{cell.name}: train {cell.scores['train']:.3f}, test {cell.scores['test']:.3f}")
    speeds = {preset: speed(preset, frames[preset], quick) for preset in PRESETS}
    threads = torch.get_num_threads()
    trained = f"training {duration(trained_seconds)} in this call" if todo else "no training"
    note = (
        f"Measured on {os.cpu_count()} CPU cores (torch threads: {threads}), torch "
        f"{torch.__version__}; {trained}. Speed and memory: pieces of the data set's mean "
        "length, one per step as the presets train, then as many as the paper's batch, both "
        "networks' steps interleaved on one thread; memory counted (weights, gradients, Adam "
        "state, saved activations, batch)."
    )
    document = {
        "quick": quick,
        "cells": [
            {
                "preset": cell.preset,
                "model": cell.model,
                "run": cell.run.name if cell.run else None,
                "finished": cell.run is not None and cell.finished,
                "scores": cell.scores,
                "paper": PAPER[(cell.preset, cell.model)],
                "training": {
                    key: cell.state.get(key) for key in ("epoch", "step", "seconds", "best_score")
                },
            }
            for cell in cells
        ],
        "speed": speeds,
        "note": note,
    }
    (out / "table.json").write_text(json.dumps(document, indent=2))
    table = markdown(cells, speeds, note)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    typer.run(main)
