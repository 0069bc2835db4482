"""Generation speed as `sequnet sample` runs it: a preset's networks stepping their streams and
drawing each next element with the task's sampler, step by step and, as `sample` runs them by
default, as CUDA graphs (CUDA) or compiled steps (a CPU; the first run of a shape compiles them).

    python scripts/generation_speed.py --preset piano --device cuda --batch 1 --batch 16

prints (or, with --json, writes) samples per second and times real time for every network of
the preset (its Seq-U-Net and its baseline), batch size and way of running. The networks are
untrained: speed does not depend on the weights. Each measurement runs one chunk to warm up,
then whole chunks until --seconds have passed.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import torch
import typer

from sequnet_cli import autoregression
from sequnet_cli.config import load_preset, resolve
from sequnet_cli.devices import resolve_device
from sequnet_cli.tasks import task_for


def measure(
    preset: str, model: str, batch: int, device: torch.device, fast: bool, seconds: float
) -> dict[str, Any]:
    """One network, batch and way of running: samples per second over the whole batch."""
    config = resolve(preset, model, [])
    task = task_for(config)
    torch.manual_seed(0)
    network = task.build_network().to(device).eval()
    sampler = task.sampler(network, batch, 1.0, 0)
    started = time.perf_counter()
    generation = autoregression.start(network, sampler, batch, 1 << 40, device, fast=fast)
    setup = time.perf_counter() - started
    chunks = generation.chunks(1 << 40)
    next(chunks)  # warm-up
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        steps += next(chunks).shape[1]
    elapsed = time.perf_counter() - start
    rate = steps * batch / elapsed
    return {
        "preset": preset,
        "model": model,
        "architecture": config.model.architecture,
        "batch": batch,
        "captured": generation.captured,
        "compiled": generation.compiled,
        "steps": steps,
        "seconds": elapsed,
        "setup_seconds": setup,
        "samples_per_second": rate,
        "realtime": rate / task.sample_rate if task.sample_rate else None,
    }


def _way(result: dict[str, Any]) -> str:
    if result["captured"]:
        return "CUDA graphs "
    return "compiled    " if result["compiled"] else "step by step"


def main(
    preset: Annotated[str, typer.Option(help="Preset whose networks are measured.")] = "piano",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch: Annotated[list[int] | None, typer.Option(help="Batch sizes (repeatable).")] = None,
    seconds: Annotated[float, typer.Option(help="Timed seconds per measurement.")] = 3.0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 1,
    json_output: Annotated[str | None, typer.Option("--json", help="Write JSON here.")] = None,
    compile: Annotated[
        bool, typer.Option(help="On a CPU, also measure compiled steps (compiling takes minutes).")
    ] = True,
) -> None:
    target = resolve_device(device)
    torch.set_num_threads(threads)
    results = []
    ways = (False, True) if target.type == "cuda" or compile else (False,)
    for model in load_preset(preset).variants:
        for size in batch or [1]:
            for fast in ways:
                result = measure(preset, model, size, target, fast, seconds)
                results.append(result)
                realtime = result["realtime"]
                typer.echo(
                    f"{preset} {model:>8} batch {size:>3} "
                    f"{_way(result)}: "
                    f"{result['samples_per_second']:>10,.0f} samples/s"
                    + (f" = {realtime:.2f}x real time" if realtime else "")
                    + f" (set-up {result['setup_seconds']:.1f} s)"
                )
    if json_output:
        with open(json_output, "w") as file:
            json.dump({"device": str(target), "torch": str(torch.__version__), "runs": results},
                      file, indent=2)  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
