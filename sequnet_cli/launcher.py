"""`sequnet train --nproc N`: the run in N processes on this machine, started through torchrun's
own launcher (`torch.distributed.launcher`), as `torchrun --standalone --nproc-per-node N -m
sequnet_cli train ...` would start them (see `sequnet_cli.distributed`).

Unlike a bare torchrun, the launcher keeps quiet: no log lines of torchrun's agent, no
traceback when a process fails. Rank 0 says what happened; when it cannot (it was killed),
the launcher says it, in one `error:` line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sequnet_cli.distributed import launched
from sequnet_cli.errors import ConfigError, DeviceError, SequnetError
from sequnet_cli.rank_failures import REPORTED


def launch(processes: int, arguments: list[str], device: torch.device) -> int:
    """Run `sequnet train ARGUMENTS` in `processes` ranks on this machine through torchrun's
    launcher; returns the exit status (1: rank 0 has said what went wrong).

    A failure rank 0 could not report (it was killed) is raised as one `SequnetError`.
    """
    if device.type == "cuda" and processes > torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DeviceError(
            f"--nproc {processes} needs one GPU per process; this machine has {count}: "
            f"use --nproc {count}, or --device cpu"
        )
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    command = ("-u", "-m", "sequnet_cli", "train", *arguments)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    with (
        _torchrun_logs_silenced(),
        _signal_handlers_kept(),
        tempfile.TemporaryDirectory(prefix="sequnet-") as folder,
    ):
        reported = Path(folder) / "reported"  # rank 0 writes here once it has said why
        reported.write_text("")
        variables = {REPORTED: str(reported)}
        if "OMP_NUM_THREADS" not in os.environ:  # a share of the cores for each rank
            variables["OMP_NUM_THREADS"] = str(max(1, cores // processes))
        with _environment(variables):
            try:
                elastic_launch(config, sys.executable)(*command)
            except ChildFailedError as failed:
                if reported.read_text():
                    return 1
                raise _launch_failure(failed.failures, processes) from None
            except SignalException:
                return 1  # Ctrl-C (or SIGTERM): the ranks were told, and rank 0 has said so
    return 0


def _launch_failure(failures: dict[int, Any], processes: int) -> SequnetError:
    """The first failure of a run whose rank 0 could not say what happened (it was killed)."""
    rank = min(failures, key=lambda r: failures[r].timestamp)
    failure = failures[rank]  # a ProcessFailure
    reason = f"exit code {failure.exitcode}"
    if failure.exitcode < 0 or failure.error_file_data.get("message") not in (None, "<NONE>"):
        reason = failure.message  # a signal, or what the rank wrote in its error file
    return SequnetError(f"process {rank} of {processes} stopped: {reason}")


@contextmanager
def _torchrun_logs_silenced() -> Iterator[None]:
    """No log lines from torchrun's agent: rank 0 speaks for the run. (torch gives
    "torch.distributed" a handler of its own, so the agent's sub-trees are cut off.)"""
    loggers = [logging.getLogger(f"torch.distributed.{name}") for name in ("elastic", "launcher")]
    propagates, handler = [logger.propagate for logger in loggers], logging.NullHandler()
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, propagates, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """The signal handlers as they were, after torchrun's agent has installed its own."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    handlers = {number: signal.getsignal(number) for number in signals}
    try:
        yield
    finally:
        for number, previous in handlers.items():
            signal.signal(number, previous)


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in the environment (which the ranks inherit), restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def check_processes(processes: int | None) -> None:
    """Refuse `--nproc` in a process that torchrun already started."""
    if processes is not None and launched():
        raise ConfigError(
            "--nproc starts its own processes; under torchrun, leave it out "
            "(torchrun's --nproc-per-node sets the number)"
        )


def rank_arguments(
    preset: str | None,
    model: str | None,
    overrides: list[str],
    device: str | None,
    data_dir: Path | None,
    resume: str | None,
    minutes: float | None = None,
) -> list[str]:
    """The `sequnet train` arguments each rank of `--nproc` gets: the same run, as resolved
    (its epochs and steps are in `overrides`), and the command's `--minutes`."""
    arguments = [preset] if preset is not None and resume is None else []
    for option, value in (("--model", model), ("--device", device), ("--resume", resume)):
        if value is not None:
            arguments += [option, value]
    if minutes is not None:
        arguments += ["--minutes", repr(minutes)]
    if data_dir is not None:
        arguments += ["--data-dir", str(data_dir.expanduser().resolve())]
    for override in overrides:
        arguments += ["--set", override]
    return arguments
