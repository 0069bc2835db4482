"""`sequnet tune`: hyper-parameter search with Optuna's TPE sampler over a preset's `[tune]` space.

The paper chose its symbolic settings (Table 3) with a tree of Parzen estimators over the
learning rate and optional gradient clipping (§5.1, hyperopt); this is the same search, kept in
a database. A study is an Optuna study in an RDB storage: SQLite in the user data dir by default,
or any URL given (PostgreSQL, MySQL), so that several machines can work on one study. Running
the same command again continues the study until it holds `--trials` finished trials.

Each trial is a real training run through the trainer, in its own run folder named after the
study and the trial, with the values the sampler suggests; after each validation it reports its
best score so far to a median pruner, which stops a trial worse than the median of the finished
trials at the same point. The best trial's configuration is written as a preset whenever it
changes.

The package: `plan` (what a command asks for), `study` (the storage, the sampler and pruner, the
study's identity), `trials` (one trial: suggest, train, report, record its failure), `workers`
(`--jobs K` processes), `report` (table rows, the live monitor, the best preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sequnet_cli.console import StudyDisplay
from sequnet_cli.devices import resolve_device
from sequnet_cli.errors import SequnetError
from sequnet_cli.tasks import task_for
from sequnet_cli.tuning.plan import SearchSettings, StudyPlan, plan_study
from sequnet_cli.tuning.report import (
    StudyMonitor,
    TrialSummary,
    best_trial,
    caption,
    columns,
    rank,
    summarize,
    write_best_preset,
)
from sequnet_cli.tuning.study import open_study, quiet_libraries, shown, stored_plan
from sequnet_cli.tuning.trials import run_trials, trial_config
from sequnet_cli.tuning.workers import run_workers

__all__ = [
    "SearchSettings",
    "StudyPlan",
    "StudyReport",
    "open_study",
    "plan_study",
    "run_study",
    "study_report",
    "trial_config",
]


@dataclass(frozen=True)
class StudyReport:
    """The leaderboard of a study and where its best preset is."""

    title: str
    columns: list[str]
    metric: str
    rows: list[TrialSummary]  # best first
    caption: str
    best: TrialSummary | None
    best_preset: Path | None  # written when a trial has finished


def run_study(plan: StudyPlan) -> None:
    """Run trials until the study holds `plan.trials` finished ones, under a live table."""
    with quiet_libraries():
        device = resolve_device(plan.device)  # a missing GPU fails here, not in every trial
        study = open_study(plan, create=True)
        metric = task_for(plan.base).metric
        title = (
            f"study {plan.name} ({shown(plan.storage)}): {plan.trials} trials of "
            f"{plan.base.preset} / {plan.base.model.name}"
            + (f", {plan.minutes_per_trial:g} minutes each" if plan.minutes_per_trial else "")
            + (f", {plan.jobs} at once" if plan.jobs > 1 else "")
        )
        with StudyDisplay(title, columns(plan.space), metric) as display:
            monitor = StudyMonitor(study, plan, display, metric)
            try:
                if plan.jobs == 1:
                    run_trials(plan, device, monitor)
                else:
                    run_workers(plan, monitor)
            except KeyboardInterrupt:
                raise SequnetError(
                    f"interrupted; study {plan.name} keeps its finished trials (the running ones "
                    "are marked failed); run the same command to continue it"
                ) from None
            finally:
                monitor.refresh()


def study_report(plan: StudyPlan) -> StudyReport:
    """The study's trials, best first, with its best preset (re)written.

    The settings, space and time per trial are the ones the study was started with, so the
    command's own overrides do not matter here.
    """
    with quiet_libraries():
        study = open_study(plan, create=False)
        plan = stored_plan(study, plan)
        trials = study.get_trials(deepcopy=False)
        metric = task_for(plan.base).metric
        best_preset = write_best_preset(plan, trials, metric)
    rows = sorted((summarize(trial, plan.space) for trial in trials), key=rank)
    best = best_trial(trials)
    return StudyReport(
        title=f"study {plan.name}: valid {metric}, best first",
        columns=columns(plan.space),
        metric=metric,
        rows=rows,
        caption=caption(trials, plan),
        best=rows[0] if best is not None else None,
        best_preset=best_preset,
    )
