"""Everything the GPU path promises, run once on a GPU machine: one JSON and one table.

    python scripts/gpu_acceptance.py --data PIANO_AUDIO_FOLDER --out acceptance.json

runs, each step with a time limit so the whole stays within about 8 minutes on an H200: the
`gpu`-marked tests; `sequnet bench --vs wavenet --json` (training eager and captured, memory,
generation step by step and as CUDA graphs); `train piano` and `train piano-small` for two
minutes each, then `evaluate`; `train --resume` of the piano-small run; `sample piano-small
--seconds 5`; `scripts/generation_speed.py` at batch 1 and 16; and one `torchrun` process
training on the GPU. It prints the figures beside their targets and writes every step's
command, time, exit status and figures to `--out`.

    python scripts/gpu_acceptance.py --device cpu --tiny --data FOLDER --out a.json

runs the same steps on a CPU at toy sizes (networks of a few channels, seconds instead of
minutes): what the test suite runs, so that the script works when a GPU is at hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parents[1]

# Toy networks for --tiny, the same for piano and piano-small: a few channels and levels,
# short excerpts, small batches and validations.
TINY_SETTINGS = [
    "model.levels=3", "model.channels=4", "data.excerpt_targets=64",
    "train.batch_size=2", "train.eval_every=2", "train.eval_batches=1",
]  # fmt: skip
TINY_PRESET = """\
description = "piano at toy sizes, for the acceptance script's CPU run"
task = "audio"
model = "sequnet"

[data]
dataset = "piano"
excerpt_targets = 64

[train]
batch_size = 2

[sequnet]
architecture = "residual-sequnet"
channels = 4
levels = 3
depth = 1
kernel_size = 3

[wavenet]
architecture = "wavenet"
residual_channels = 4
dilation_channels = 4
skip_channels = 8
layers = 4
stacks = 1
kernel_size = 2
"""

# The targets the figures are read against (GPU rows; a CPU run shows its figures only).
TARGETS = {
    "gpu_tests": "all pass",
    "train_piano_targets_per_second": ">= 1,000,000",
    "bench_training_ratio": ">= 4.0 (paper), goal 5",
    "bench_memory_ratio": ">= 3.5",
    "generation_batch_1_samples_per_second": ">= 16,000 (real time)",
    "generation_ratio_captured": ">= 4.5",
    "generation_batch_16_realtime": ">= 16x real time",
}


@dataclass
class Step:
    """One command of the acceptance run and what came of it."""

    name: str
    command: list[str]
    limit_seconds: float
    seconds: float = 0.0
    status: int | None = None  # exit status; None: stopped at its time limit
    output_tail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    output: str = field(default="", repr=False)  # all of stdout, for the figures; not written

    @property
    def passed(self) -> bool:
        return self.status == 0


@dataclass
class Acceptance:
    """The run's settings and its steps, in order."""

    device: str
    tiny: bool
    data: Path
    home: Path
    steps: list[Step] = field(default_factory=list)

    def sequnet(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "sequnet_cli", *arguments]

    def run(self, name: str, command: list[str], limit: float) -> Step:
        """Run one command (its output kept, its time limited) and record it."""
        step = Step(name, command, limit)
        environment = {**os.environ, "SEQUNET_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=limit,
                check=False,
            )
            step.status, output, errors = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as stopped:
            output, errors = _text(stopped.stdout), _text(stopped.stderr)
        step.seconds = time.monotonic() - started
        step.output, step.output_tail = output, (output + errors)[-4000:]
        self.steps.append(step)
        print(f"{name}: {'ok' if step.passed else 'FAILED'} in {step.seconds:.0f} s", flush=True)
        return step

    def train_settings(self) -> list[str]:
        """`--set` options of a training command: the toy sizes with --tiny, else none."""
        settings = TINY_SETTINGS if self.tiny else []
        return [part for setting in settings for part in ("--set", setting)]


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def run_tests(acceptance: Acceptance) -> None:
    step = acceptance.run(
        "gpu tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], 150
    )
    counts = {
        word: int(number)
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|error)", step.output)
    }
    step.figures = counts
    # Nothing selected (no GPU: every test skipped) is pytest's exit status 5, not a failure.
    if step.status == 5 or (step.status == 0 and not counts.get("failed")):
        step.status = 0


def run_bench(acceptance: Acceptance, preset: str) -> None:
    sizes = ["--quick", "--batch-size", "1"] if acceptance.tiny else []
    command = acceptance.sequnet(
        "bench", "--vs", "wavenet", "--preset", preset, "--device", acceptance.device,
        "--json", "--no-sweep", *sizes,
    )  # fmt: skip
    step = acceptance.run("bench", command, 150)
    try:
        document = json.loads(step.output[step.output.index("{") :])
    except ValueError:
        return
    training = document.get("training") or {}
    ratios = training.get("ratios", {})
    step.figures = {"training_time_ratio": ratios.get("time"), "memory_ratio": ratios.get("memory")}
    for run in (document.get("generation") or {}).get("runs", []):
        if run.get("batch_size") == 1:
            captured = run.get("captured") or {}
            step.figures["generation_ratio_eager"] = run.get("speedup")
            step.figures["generation_ratio_captured"] = captured.get("speedup")


def run_training(acceptance: Acceptance, preset: str, minutes: float) -> None:
    limit = ["--steps", "3"] if acceptance.tiny else ["--minutes", str(minutes)]
    command = acceptance.sequnet(
        "train", preset, "--data", str(acceptance.data), "--device", acceptance.device, *limit,
        *acceptance.train_settings(),
    )  # fmt: skip
    step = acceptance.run(f"train {preset}", command, 60 * minutes + 90)
    step.figures = _training_figures(acceptance.home, preset)
    evaluate = acceptance.sequnet(
        "evaluate", preset, "--data", str(acceptance.data), "--device", acceptance.device,
        "--split", "test", "--json",
    )  # fmt: skip
    scored = acceptance.run(f"evaluate {preset}", evaluate, 120)
    match = re.search(r'"test":\s*([0-9.]+)', scored.output)
    scored.figures = {"test": float(match.group(1))} if match else {}


def _training_figures(home: Path, preset: str) -> dict[str, Any]:
    """Steps, seconds and predicted elements per second of the newest run of `preset`."""
    environment = os.environ.get("SEQUNET_HOME")
    os.environ["SEQUNET_HOME"] = str(home)
    try:
        from sequnet_cli.checkpoints import find_run
        from sequnet_cli.errors import SequnetError

        try:
            run = find_run(preset, which="last")
            state = run.load_state("last")
        except SequnetError:
            return {}
    finally:
        if environment is None:
            os.environ.pop("SEQUNET_HOME", None)
        else:
            os.environ["SEQUNET_HOME"] = environment
    training, config = state["training"], run.config
    targets = training["step"] * config.train.batch_size * config.data.excerpt_targets
    seconds = max(float(training["seconds"]), 1e-9)
    return {
        "steps": training["step"],
        "seconds": seconds,
        "targets_per_second": targets / seconds,
        "best_valid": training.get("best_score"),
    }


def run_resume(acceptance: Acceptance) -> None:
    limit = ["--steps", "5"] if acceptance.tiny else ["--minutes", "2.5"]
    command = acceptance.sequnet(
        "train", "--resume", "piano-small", "--device", acceptance.device, *limit
    )
    step = acceptance.run("train --resume piano-small", command, 90)
    step.figures = _training_figures(acceptance.home, "piano-small")


def run_sample(acceptance: Acceptance, out: Path) -> None:
    seconds = "0.1" if acceptance.tiny else "5"
    command = acceptance.sequnet(
        "sample", "piano-small", "--seconds", seconds, "--device", acceptance.device,
        "--out", str(out / "acceptance-sample.wav"),
    )  # fmt: skip
    step = acceptance.run("sample piano-small", command, 90)
    match = re.search(r"([0-9,]+) samples/s", step.output)
    step.figures = {"samples_per_second": float(match.group(1).replace(",", ""))} if match else {}


def run_generation_speed(acceptance: Acceptance, preset: str, out: Path) -> None:
    result = out / "generation-speed.json"
    seconds = "0.2" if acceptance.tiny else "3"
    command = [
        sys.executable, str(ROOT / "scripts" / "generation_speed.py"), "--preset", preset,
        "--device", acceptance.device, "--batch", "1", "--batch", "16", "--seconds", seconds,
        "--json", str(result), *(["--no-compile"] if acceptance.tiny else []),
    ]  # fmt: skip
    step = acceptance.run("generation speed", command, 150)
    if not result.is_file():
        return
    runs = json.loads(result.read_text())["runs"]
    best: dict[tuple[str, int], float] = {}
    for run in runs:
        key = (run["architecture"], run["batch"])
        best[key] = max(best.get(key, 0.0), run["samples_per_second"])
        if run["architecture"] == "residual-sequnet" and run["batch"] == 16 and run["realtime"]:
            step.figures["sequnet_batch_16_realtime"] = run["realtime"]
    step.figures["sequnet_batch_1_samples_per_second"] = best.get(("residual-sequnet", 1))
    step.figures["wavenet_batch_1_samples_per_second"] = best.get(("wavenet", 1))


def run_torchrun(acceptance: Acceptance) -> None:
    limit = ["--steps", "2"] if acceptance.tiny else ["--steps", "50"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
        "-m", "sequnet_cli", "train", "piano-small", "--data", str(acceptance.data),
        "--device", acceptance.device, *limit, *acceptance.train_settings(),
    ]  # fmt: skip
    acceptance.run("torchrun, one process", command, 120)


def table(acceptance: Acceptance) -> list[tuple[str, str, str]]:
    """(measure, figure, target) rows: the figures the GPU path is accepted on."""
    by_name = {step.name: step for step in acceptance.steps}

    def figure(step: str, key: str, form: str = "{:,.0f}") -> str:
        value = by_name[step].figures.get(key) if step in by_name else None
        return form.format(value) if isinstance(value, int | float) else "-"

    tests = by_name.get("gpu tests")
    test_figure = (
        ", ".join(f"{count} {word}" for word, count in tests.figures.items()) if tests else "-"
    )
    return [
        ("gpu-marked tests", test_figure, TARGETS["gpu_tests"]),
        ("train piano, targets/s", figure("train piano", "targets_per_second"),
         TARGETS["train_piano_targets_per_second"]),
        ("bench training ratio", figure("bench", "training_time_ratio", "{:.2f}x"),
         TARGETS["bench_training_ratio"]),
        ("bench memory ratio", figure("bench", "memory_ratio", "{:.2f}x"),
         TARGETS["bench_memory_ratio"]),
        ("Seq-U-Net generation, batch 1, samples/s",
         figure("generation speed", "sequnet_batch_1_samples_per_second"),
         TARGETS["generation_batch_1_samples_per_second"]),
        ("WaveNet/Seq-U-Net generation, captured",
         figure("bench", "generation_ratio_captured", "{:.2f}x"),
         TARGETS["generation_ratio_captured"]),
        ("Seq-U-Net batch 16, times real time",
         figure("generation speed", "sequnet_batch_16_realtime", "{:.1f}x"),
         TARGETS["generation_batch_16_realtime"]),
    ]  # fmt: skip


def main(
    data: Annotated[Path, typer.Option(help="A folder of piano recordings to train on.")],
    out: Annotated[Path, typer.Option(help="Where to write the JSON of the run.")],
    device: Annotated[str, typer.Option(help="cuda, or cpu for a check of the script.")] = "cuda",
    tiny: Annotated[bool, typer.Option(help="Toy sizes and seconds (for a CPU check).")] = False,
    minutes: Annotated[float, typer.Option(help="Minutes of each training run.")] = 2.0,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="sequnet-acceptance-"))
    acceptance = Acceptance(device, tiny, data.resolve(), home)
    preset = "piano"
    if tiny:
        preset = str(home / "piano-tiny.toml")
        Path(preset).write_text(TINY_PRESET)
    started = time.monotonic()
    try:
        run_tests(acceptance)
        run_bench(acceptance, preset)
        run_training(acceptance, "piano", minutes)
        run_training(acceptance, "piano-small", minutes)
        run_resume(acceptance)
        run_sample(acceptance, home)
        run_generation_speed(acceptance, preset, home)
        run_torchrun(acceptance)
    finally:
        rows = table(acceptance)
        document = {
            "device": device,
            "tiny": tiny,
            "seconds": time.monotonic() - started,
            "passed": all(step.passed for step in acceptance.steps),
            "steps": [
                {**asdict(step), "output": None, "passed": step.passed} for step in acceptance.steps
            ],
            "table": [dict(zip(("measure", "figure", "target"), row, strict=True)) for row in rows],
        }
        out.write_text(json.dumps(document, indent=2, default=str))
        width = max(len(row[0]) for row in rows)
        for measure, figure, target in rows:
            print(f"{measure:<{width}}  {figure:>18}  target {target}")
        shutil.rmtree(home, ignore_errors=True)
    if not document["passed"]:
        failed = [step.name for step in acceptance.steps if not step.passed]
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
