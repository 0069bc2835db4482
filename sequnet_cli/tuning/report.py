"""What a study shows: its trials as table rows, the live monitor, and the best trial's preset.

The best preset holds the study's base settings with the best trial's values: not the trial's
time limit or CPU share, so that `sequnet train` of it is the full training of the winner.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sequnet_cli.config import Choice, SearchRange, apply_search_values, preset_text
from sequnet_cli.console import StudyDisplay
from sequnet_cli.files import atomic_write
from sequnet_cli.tuning.plan import StudyPlan
from sequnet_cli.tuning.study import storage_errors
from sequnet_cli.tuning.trials import counts, searched_values

LIVE_ROWS = 15  # trials in the live table: the newest ones
_STATES = {
    TrialState.RUNNING: "running",
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}


@dataclass(frozen=True)
class TrialSummary:
    """One trial as the tables show it (`sequnet_cli.console.TrialRow`)."""

    number: int
    state: str  # running, complete, pruned, failed
    params: Mapping[str, str]  # column name -> value, formatted
    validations: int
    score: float | None  # its best validation score so far
    seconds: float
    note: str


class StudyMonitor:
    """Keeps the live table, the lines of finished trials and the best preset up to date."""

    def __init__(
        self, study: optuna.Study, plan: StudyPlan, display: StudyDisplay, metric: str
    ) -> None:
        self.study, self.plan, self.display, self.metric = study, plan, display, metric
        trials = study.get_trials(deepcopy=False)
        self.shown = {trial.number for trial in trials if trial.state.is_finished()}
        self.best: int | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read the study again: print newly finished trials, redraw, write a new best."""
        with storage_errors(self.plan):
            trials = self.study.get_trials(deepcopy=False)
        rows = [summarize(trial, self.plan.space) for trial in trials]
        for trial, row in zip(trials, rows, strict=True):
            if trial.state.is_finished() and trial.number not in self.shown:
                self.shown.add(trial.number)
                self.display.finished(row)
        self.display.update(rows[-LIVE_ROWS:], caption(trials, self.plan))
        best = best_trial(trials)
        if best is not None and best.number != self.best:
            write_best_preset(self.plan, trials, self.metric)
            self.best = best.number


def summarize(trial: FrozenTrial, space: Sequence[SearchRange]) -> TrialSummary:
    """One trial as the tables show it."""
    scores = [value for value in trial.intermediate_values.values() if math.isfinite(value)]
    score = trial.value if trial.state == TrialState.COMPLETE else min(scores, default=None)
    end = trial.datetime_complete or datetime.now()
    seconds = (end - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
    note = ""
    if trial.state == TrialState.FAIL:
        note = str(trial.user_attrs.get("failure", "its process stopped without a word"))
    return TrialSummary(
        number=trial.number,
        state=_STATES.get(trial.state, trial.state.name.lower()),
        params=_formatted(space, searched_values(space, trial.params)),
        validations=len(trial.intermediate_values),
        score=score,
        seconds=seconds,
        note=note,
    )


def columns(space: Sequence[SearchRange]) -> list[str]:
    """A column per searched setting: its key without the section, unless that is ambiguous."""
    names = [searched.key.partition(".")[2] for searched in space]
    return [
        name if names.count(name) == 1 else searched.key
        for name, searched in zip(names, space, strict=True)
    ]


def _formatted(space: Sequence[SearchRange], values: Mapping[str, Choice]) -> dict[str, str]:
    formatted = {}
    for column, searched in zip(columns(space), space, strict=True):
        if searched.key not in values:
            continue
        value = values[searched.key]
        if searched.optional and value == 0:
            formatted[column] = "off"
        elif isinstance(value, bool):
            formatted[column] = str(value).lower()
        elif isinstance(value, float):
            formatted[column] = f"{value:.3g}"
        else:
            formatted[column] = str(value)
    return formatted


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The finished trial with the lowest score (the earliest of equals), if any."""
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    return min(complete, key=lambda trial: (trial.value, trial.number), default=None)


def caption(trials: Sequence[FrozenTrial], plan: StudyPlan) -> str:
    """How far the study is, and its best trial."""
    finished = sum(map(counts, trials))
    running = sum(trial.state == TrialState.RUNNING for trial in trials)
    parts = [
        f"{finished} of {plan.trials} trials finished" if plan.trials else f"{finished} finished"
    ]
    if running:
        parts.append(f"{running} running")
    best = best_trial(trials)
    if best is not None:
        parts.append(f"best: trial {best.number} ({best.value:.4f})")
    return ", ".join(parts)


def rank(row: TrialSummary) -> tuple[int, float, int]:
    """Leaderboard order: finished trials by score, then pruned, running and failed ones."""
    order = {"complete": 0, "pruned": 1, "running": 2}.get(row.state, 3)
    return order, math.inf if row.score is None else row.score, row.number


def write_best_preset(plan: StudyPlan, trials: Sequence[FrozenTrial], metric: str) -> Path | None:
    """Write the best finished trial's configuration as a preset at `plan.out`; None when no
    trial has finished yet."""
    best = best_trial(trials)
    if best is None:
        return None
    config = apply_search_values(plan.base, searched_values(plan.space, best.params))
    description = f"{config.description} (best of study {plan.name}: trial {best.number})"
    config = dataclasses.replace(config, description=description)
    budget = f" in a trial of {plan.minutes_per_trial:g} minutes" if plan.minutes_per_trial else ""
    comment = (
        f"The best trial of study {plan.name}: trial {best.number}, valid {metric} "
        f"{best.value:.4f}{budget}.\n"
        f"Searched from preset {plan.preset.name} ({plan.preset.source}) with sequnet tune.\n"
        f"Train it in full: sequnet train {plan.out}"
    )
    text = preset_text(config, comment).encode()
    return atomic_write(plan.out, lambda file: file.write(text))
