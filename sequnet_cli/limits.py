"""When a training run stops: epochs, optimizer steps or minutes, whichever comes first.

- `--epochs N` and `--steps N` count the whole run, a resumed run's earlier epochs and steps
  included, so that an interrupted and resumed run ends where an uninterrupted one would. They
  are settings of the run (`train.epochs`, `train.steps`, kept in its config): a later
  `--resume` without them trains on to them.
- `--minutes M` counts this command's training: it is a time budget, not a setting, and a later
  `--resume` without it trains on to the run's epochs and steps.

A resumed run that has reached its epochs or steps already is refused in one line, which says
how to ask for more, instead of training a step. A limit of zero or less would leave nothing to
train, and is refused alike for all three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sequnet_cli.errors import ConfigError

if TYPE_CHECKING:
    from sequnet_cli.config import TrainConfig


class Progress(Protocol):
    """How far a run has trained (`sequnet_cli.training.TrainingState` is one)."""

    @property
    def epoch(self) -> int: ...  # completed epochs
    @property
    def step(self) -> int: ...  # optimizer steps
    @property
    def seconds(self) -> float: ...  # training time


@dataclass(frozen=True)
class Trained:
    """The `Progress` a checkpoint's training state records."""

    epoch: int
    step: int
    seconds: float

    @classmethod
    def of(cls, training: Mapping[str, Any]) -> Trained:
        return cls(int(training["epoch"]), int(training["step"]), float(training["seconds"]))


@dataclass(frozen=True)
class Limits:
    """Whichever comes first ends the run (0 = no limit for steps and minutes)."""

    epochs: int
    steps: int = 0
    minutes: float = 0.0
    asked: frozenset[str] = frozenset()  # the ones given as options for this command

    @classmethod
    def of(
        cls,
        train: TrainConfig,
        epochs: int | None = None,
        steps: int | None = None,
        minutes: float | None = None,
    ) -> Limits:
        """The limits of a command: the run's settings `train` (with `--epochs` and `--steps`
        applied already), and `--minutes` for this command (else `train.minutes`)."""
        options = {"epochs": epochs, "steps": steps, "minutes": minutes}
        check_options(options)
        return cls(
            train.epochs,
            train.steps,
            minutes if minutes is not None else train.minutes,
            frozenset(name for name, value in options.items() if value is not None),
        )

    def reached(self, state: Progress, seconds_before: float = 0.0) -> str | None:
        """The limit `state` has reached, in words, or None; `seconds_before`: the run's
        training time when this command began (minutes count this command's)."""
        if state.epoch >= self.epochs:
            return self._named("epochs", self.epochs, state.epoch)
        if self.steps and state.step >= self.steps:
            return self._named("steps", self.steps, state.step)
        if self.minutes and state.seconds - seconds_before >= 60 * self.minutes:
            return f"--minutes {self.minutes:g}"
        return None

    def _named(self, name: str, value: int, done: int) -> str:
        unit = name[:-1] if value == 1 else name
        trained = f"has trained {done:,} {name[:-1] if done == 1 else name} already"
        if name in self.asked:
            return f"{trained}, reaching --{name} {value}"
        return (
            f"{trained}, reaching its limit of {value:,} {unit} (train.{name}: from its preset "
            f"or an earlier --{name})"
        )

    def check_left(self, run_name: str, training: Mapping[str, Any]) -> None:
        """Refuse to resume a run whose checkpoint's `training` state has reached its epochs or
        steps already (`--minutes` counts this command's training, none yet)."""
        state = Trained.of(training)
        reached = self.reached(state, seconds_before=state.seconds)
        if reached is None:
            return
        option = "--epochs" if state.epoch >= self.epochs else "--steps"
        raise ConfigError(
            f"run {run_name} {reached}; nothing to train: ask for more with {option} N "
            "(the run's in all, earlier commands included)"
        )


def check_options(options: dict[str, float | None]) -> None:
    """Refuse `--epochs`, `--steps` or `--minutes` of 0 or less (name -> value, None when
    not given): there would be nothing to train."""
    for name, value in options.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"--{name} {value:g}: nothing to train; ask for more than 0 {name}, or leave "
                f"--{name} out"
            )
