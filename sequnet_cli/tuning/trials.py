"""Trials: each one a training run with the sampler's values, reporting to the pruner.

A trial reports its best validation score after each validation (the trainer's per-period
callback) and stops there when the median pruner says so. Its own failures (out of memory, a NaN
loss, an impossible config) are recorded on it as `failure` and the search goes on; a failure
every trial would meet ends the search; Ctrl-C records `failure = "interrupted"`, which does not
count towards `--trials`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from sequnet_cli.config import (
    Choice,
    RunConfig,
    SearchRange,
    apply_overrides,
    apply_search_values,
)
from sequnet_cli.errors import (
    CheckpointError,
    DataError,
    SequnetError,
    StoppedError,
    WriteError,
)
from sequnet_cli.limits import Limits
from sequnet_cli.training import TrainingState, train_run
from sequnet_cli.tuning.plan import StudyPlan
from sequnet_cli.tuning.study import open_study, storage_errors

if TYPE_CHECKING:
    from sequnet_cli.tuning.report import StudyMonitor

INTERRUPTED = "interrupted"
# Failures that do not depend on the trial's values: every further trial would meet them too.
STUDY_ERRORS = (DataError, WriteError, CheckpointError)


class TrialFailedError(Exception):
    """A trial's own failure (recorded on the trial); the search goes on."""


def run_trials(
    plan: StudyPlan, device: torch.device, monitor: StudyMonitor | None, quota: int | None = None
) -> None:
    """Take trials from the study until it holds enough, or this process has run `quota`."""
    study = monitor.study if monitor is not None else open_study(plan, create=False)
    with storage_errors(plan):
        for _ in itertools.repeat(None) if quota is None else range(quota):
            if missing_trials(study, plan) <= 0:
                return
            study.optimize(
                lambda trial: _objective(trial, plan, device, monitor),
                n_trials=1,
                catch=(TrialFailedError,),
            )
            if monitor is not None:
                monitor.refresh()


def missing_trials(study: optuna.Study, plan: StudyPlan) -> int:
    """Trials still to start: `plan.trials` less those finished and running (here or on other
    machines; a trial whose process died is failed once its heartbeat is overdue)."""
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    running = sum(trial.state == TrialState.RUNNING for trial in trials)
    return plan.trials - sum(map(counts, trials)) - running


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards `--trials`: finished, not interrupted or abandoned."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    failure = trial.user_attrs.get("failure", INTERRUPTED)
    return trial.state == TrialState.FAIL and failure != INTERRUPTED


def _objective(
    trial: optuna.Trial, plan: StudyPlan, device: torch.device, monitor: StudyMonitor | None
) -> float:
    """Train one run with the trial's values; returns its best validation score."""
    values = {searched.key: _suggest(trial, searched) for searched in plan.space}
    pruned = False

    def report(state: TrainingState) -> bool:
        nonlocal pruned
        trial.report(state.best_score, len(state.history))
        if monitor is not None:
            monitor.refresh()
        pruned = trial.should_prune()
        return pruned

    try:
        config = trial_config(plan, values)
        limits = Limits.of(config.train)
        label = f"{plan.name}-trial{trial.number}"
        run, state = train_run(
            config, limits, device, None, plan.data_dir, on_period=report, quiet=True, label=label
        )
    except (StoppedError, KeyboardInterrupt):
        trial.set_user_attr("failure", INTERRUPTED)
        raise KeyboardInterrupt from None
    except STUDY_ERRORS as error:
        trial.set_user_attr("failure", str(error))
        raise
    except SequnetError as error:
        raise _failed(trial, str(error)) from error
    except (torch.OutOfMemoryError, MemoryError) as error:
        raise _failed(trial, "out of memory; search smaller sizes") from error
    trial.set_user_attr("run", run.name)
    if pruned:
        raise optuna.TrialPruned(f"pruned after {len(state.history)} validations")
    if not math.isfinite(state.best_score):
        raise _failed(trial, "no finite validation score")
    return state.best_score


def _failed(trial: optuna.Trial, reason: str) -> TrialFailedError:
    trial.set_user_attr("failure", reason)
    return TrialFailedError(reason)


def _suggest(trial: optuna.Trial, searched: SearchRange) -> Choice:
    """The sampler's value for one searched setting."""
    key = searched.key
    if searched.choices:
        return typing.cast(Choice, trial.suggest_categorical(key, list(searched.choices)))
    if searched.optional and not trial.suggest_categorical(_switch(key), [True, False]):
        return 0 if searched.integer else 0.0
    if searched.integer:
        step = int(searched.step or 1)
        return trial.suggest_int(
            key, int(searched.low), int(searched.high), step=step, log=searched.log
        )
    return trial.suggest_float(
        key, searched.low, searched.high, step=searched.step, log=searched.log
    )


def _switch(key: str) -> str:
    """The parameter that turns an optional setting on (hyperopt's `choice` of off or a range)."""
    return f"{key} on"


def searched_values(space: Sequence[SearchRange], params: Mapping[str, Any]) -> dict[str, Choice]:
    """A trial's parameters as `[tune]` keys -> values (0 for an optional setting left off)."""
    values: dict[str, Choice] = {}
    for searched in space:
        if searched.optional and params.get(_switch(searched.key)) is False:
            values[searched.key] = 0 if searched.integer else 0.0
        elif searched.key in params:
            values[searched.key] = params[searched.key]
    return values


def trial_config(plan: StudyPlan, values: Mapping[str, Choice]) -> RunConfig:
    """A trial's run config: the searched values on the base, its time limit and CPU share,
    labelled with the study's name (so `sequnet sample PRESET` keeps finding the preset's runs)."""
    config = apply_search_values(plan.base, values, f"study {plan.name}")
    limits = []
    if plan.minutes_per_trial:
        limits.append(f"train.minutes={plan.minutes_per_trial}")
    if plan.jobs > 1 and config.train.threads == 0:
        # K trials each taking every core would thrash: each gets its share.
        limits.append(f"train.threads={max(1, _cores() // plan.jobs)}")
    return dataclasses.replace(apply_overrides(config, limits), preset=plan.name)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1
