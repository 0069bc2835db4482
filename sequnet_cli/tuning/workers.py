"""`--jobs K`: K worker processes take trials from the study, as other machines would.

Each worker is a fresh interpreter (spawned, not forked, so no thread of the parent is copied)
with its share of the trials missing at the start and, through `trial_config`, of the CPU
threads. The command's own process redraws the table from the storage meanwhile. Ctrl-C reaches
that process (the workers ignore it), which asks each worker to stop with SIGTERM; a worker
marks its running trial interrupted and ends.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import queue
import signal
import time
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from sequnet_cli.console import print_warning
from sequnet_cli.devices import resolve_device
from sequnet_cli.errors import SequnetError, SequnetWarning
from sequnet_cli.tuning.plan import StudyPlan
from sequnet_cli.tuning.study import quiet_libraries
from sequnet_cli.tuning.trials import missing_trials, run_trials

if TYPE_CHECKING:
    from sequnet_cli.tuning.report import StudyMonitor

POLL_SECONDS = 1.0  # how often the table is redrawn from the storage while workers train


def run_workers(plan: StudyPlan, monitor: StudyMonitor) -> None:
    """Start the workers and redraw the table until they are done; a worker's error is raised."""
    # Each worker gets its share of the trials missing now, so that two which check the study
    # at the same moment cannot both start the last one.
    missing = max(missing_trials(monitor.study, plan), 0)
    quotas = [count for count in _shares(missing, plan.jobs) if count]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_work, args=(plan, quota, results)) for quota in quotas]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            time.sleep(POLL_SECONDS)
            monitor.refresh()
    except KeyboardInterrupt:
        _stop(workers)
        raise
    errors = []
    for worker in workers:
        worker.join()
        try:
            message = results.get(timeout=5)
        except queue.Empty:
            message = f"a worker process ended without a word (exit code {worker.exitcode})"
        if message:
            errors.append(message)
    if errors:
        raise SequnetError(errors[0])


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts that differ by at most one."""
    return [total // parts + (index < total % parts) for index in range(parts)]


def _stop(workers: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker's handler interrupts its trial
    for worker in workers:
        worker.join(timeout=60)
        if worker.is_alive():
            worker.kill()


def _work(plan: StudyPlan, quota: int, results: multiprocessing.queues.Queue[str | None]) -> None:
    """A worker: up to `quota` trials while the study needs them; puts None or its error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    warnings.showwarning = _show_warning
    message: str | None = "a worker process failed (its traceback is above)"
    try:
        with quiet_libraries():
            run_trials(plan, resolve_device(plan.device), None, quota)
        message = None
    except KeyboardInterrupt:
        message = None
    except SequnetError as error:
        message = str(error)
    finally:
        results.put(message)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the trial be marked first
    raise KeyboardInterrupt


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """A worker's warnings as the app shows them: one `warning: ...` line each."""
    if issubclass(category, SequnetWarning):
        print_warning(str(message))
