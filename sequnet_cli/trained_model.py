"""Trained models for evaluation and sampling: find a checkpoint, rebuild its network.

A reference is a preset name (the newest run of that preset with the asked-for checkpoint), a run
name or folder, or a `.pt` file; the checkpoint's stored config rebuilds the network, so nothing
is repeated. The network is built only once its weights are known to fit in memory. A preset
the user has no run of falls back to the demo model shipped for it, or standing in for it
(`sequnet_cli.demos`), if there is one; otherwise the error says how to train one and which
demo plays instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import CausalNetwork
from sequnet_cli.checkpoints import NoRunError, Run, Which, find_run, load_checkpoint_file
from sequnet_cli.compiled_steps import Recipe
from sequnet_cli.config import RunConfig, list_presets, resolve
from sequnet_cli.demos import Demo, demo_in_file, find_demo, list_demos
from sequnet_cli.devices import build_within_memory
from sequnet_cli.errors import CheckpointError
from sequnet_cli.tasks import Task, task_for


@dataclass
class TrainedModel:
    """A network with its weights loaded, in eval mode, its task, and where it came from."""

    config: RunConfig
    task: Task
    network: CausalNetwork
    training: dict[str, Any]  # the checkpoint's training state (epoch, step, history, ...)
    source: Path
    demo: Demo | None = None  # the shipped demo this model is, if it is one
    run: Run | None = None  # the run it comes from, if it does
    which: Which = "best"  # which of the run's checkpoints
    profile: dict[str, Any] = field(default_factory=dict)  # the checkpoint's data profile

    def recipe(
        self, count: int, temperature: float, seed: int, voices: str | None, threads: int
    ) -> Recipe:
        """What rebuilds this model's generation program elsewhere (to compile its steps)."""
        return Recipe.of(self.config, self.profile, count, temperature, seed, voices, threads)

    def header(self) -> dict[str, str]:
        """What a report says about the model: preset, model, architecture, checkpoint."""
        return {
            "preset": self.config.preset,
            "model": self.config.model.name,
            "architecture": self.config.model.architecture,
            "checkpoint": str(self.source) + (f" ({self.demo.notice()})" if self.demo else ""),
        }

    def describe(self) -> str:
        """Which model this is, in one line: its checkpoint, data, training and score."""
        training = self.training
        parts = [f"data {self.config.data.dataset}"]
        if "step" in training:
            epochs, steps = int(training.get("epoch", 0)), int(training["step"])
            parts.append(f"{epochs} epoch{'s' * (epochs != 1)}, {steps:,} step{'s' * (steps != 1)}")
        history, metric = training.get("history") or [{}], training.get("metric")
        score = history[-1].get("valid")  # the score of these weights, if they were validated
        if history[-1].get("step") == training.get("step") and metric and score is not None:
            parts.append(f"{metric} {float(score):.4f}")
        return f"model {self.source} ({', '.join(parts)})"


def load_model(ref: str, model: str | None, which: Which, device: torch.device) -> TrainedModel:
    """The `which` ('best' or 'last') checkpoint of `ref`, on `device`, in eval mode; the
    shipped demo of a preset the user has no run of. The checkpoint is read onto the CPU and
    only the weights that are sampled go to `device` (not the optimizer's state, nor the
    other of the trained and averaged weights)."""
    config, state, source, demo, run = _checkpoint(ref, model, which)
    task = task_for(config, state.get("data_profile", {}))  # older checkpoints have none
    network = build_within_memory(
        task.build_network,
        device,
        1,
        f"the network of {source}",
        "its stored config asks for a bigger network than this machine holds",
    )
    try:
        network.load_state_dict(state["weights"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} does not hold weights for {config.model.architecture}: {error}"
        ) from error
    network = network.to(device).eval()
    training, profile = dict(state.get("training", {})), dict(state.get("data_profile", {}))
    return TrainedModel(config, task, network, training, source, demo, run, which, profile)


Found = tuple[RunConfig, dict[str, Any], Path, Demo | None, Run | None]


def _checkpoint(ref: str, model: str | None, which: Which) -> Found:
    """What `ref` names: its config, its checkpoint (read onto the CPU), the file, and the
    shipped demo or the run it is, if it is one of those."""
    path = Path(ref).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        named = demo_in_file(path)  # a shipped demo's file, named by its path
        if named is not None:
            return named.config, _demo_state(named), path, None, None
        config, state = load_checkpoint_file(path)
        return config, state, path, None, None
    try:
        run = find_run(ref, model, which)
        return run.config, run.load_state(which), run.checkpoint_path(which), None, run
    except NoRunError as error:
        demo = find_demo(ref)  # standing in for a preset the user has no run of
        if demo is None or model not in (None, demo.config.model.name):
            raise NoRunError(missing_model(ref, model, str(error))) from None
        return demo.config, _demo_state(demo), demo.path, demo, None


def _demo_state(demo: Demo) -> dict[str, Any]:
    """A demo's weights (float32), training summary and data profile, as a checkpoint holds."""
    return {"weights": demo.weights(), "training": demo.training, "data_profile": demo.profile}


def missing_model(ref: str, model: str | None, reason: str) -> str:
    """Why there is no model for `ref`, how to train one, and which demos play instead."""
    if ref not in list_presets():
        return reason
    config = resolve(ref, model, [])
    demos_by_task: dict[str, list[str]] = {}
    for demo in list_demos():
        demos_by_task.setdefault(demo.config.task, []).append(demo.preset)
    others = demos_by_task.get(config.task, [])  # demos of the same kind of data
    which = f"preset '{ref}'" + (f" with model '{model}'" if model else "")
    command = task_for(config).train_command(ref) + (f" --model {model}" if model else "")
    hint = f"no run of {which} yet; train one with `{command}`"
    if others:
        names = " or ".join(f"`sequnet sample {name}`" for name in others)
        hint += f", or play the model shipped as a demo: {names}"
    return hint
