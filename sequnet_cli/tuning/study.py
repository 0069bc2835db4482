"""The study: an Optuna study in an RDB storage, its sampler and pruner, and its identity.

A study remembers (as a user attribute) the run config, search space and time per trial it was
started with: trials are only comparable under the same settings, so continuing it under other
ones is refused, and `--show` rebuilds the best preset from what is stored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import sqlalchemy.exc

from sequnet_cli.config import RunConfig, SearchRange
from sequnet_cli.errors import CheckpointError, ConfigError, SequnetWarning
from sequnet_cli.tuning.plan import StudyPlan


def open_study(plan: StudyPlan, create: bool) -> optuna.Study:
    """The plan's study, created if `create` and it is new; with `create`, a study started
    with other settings is refused."""
    storage = _storage(plan)
    sampler = optuna.samplers.TPESampler(n_startup_trials=plan.settings.random_trials)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=plan.settings.prune_after,
        n_warmup_steps=plan.settings.warmup_validations,
    )
    with storage_errors(plan):
        if not create:
            try:
                return optuna.load_study(
                    study_name=plan.name, storage=storage, sampler=sampler, pruner=pruner
                )
            except KeyError:
                raise ConfigError(
                    f"no study {plan.name} in {shown(plan.storage)}; start it with "
                    f"`sequnet tune {plan.preset.name} --model {plan.base.model.name} --trials N`"
                ) from None
        study = optuna.create_study(
            storage=storage,
            study_name=plan.name,
            direction="minimize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        _check_identity(study, plan)
    return study


def _storage(plan: StudyPlan) -> optuna.storages.RDBStorage:
    # SQLite allows one writer at a time: wait for the lock rather than fail at once.
    engine = {"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite") else {}
    with storage_errors(plan), warnings.catch_warnings():
        # Heartbeats are marked experimental; they are what fails the trials of a dead process.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            plan.storage,
            engine_kwargs=engine,
            heartbeat_interval=plan.settings.heartbeat_seconds,
            grace_period=plan.settings.stale_seconds,
        )


@contextmanager
def storage_errors(plan: StudyPlan) -> Iterator[None]:
    """Turn the database's failures (a bad URL, a missing driver, a lost server) into one line."""
    try:
        yield
    except ImportError as error:
        raise ConfigError(
            f"cannot open the study storage {shown(plan.storage)}: its database driver is not "
            f"installed ({error}); for PostgreSQL: pip install psycopg2-binary"
        ) from error
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot use the study storage {shown(plan.storage)} ({reason}); check --storage "
            "(e.g. postgresql://user:password@host/database) and that the database is reachable"
        ) from error


def shown(url: str) -> str:
    """A storage URL without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def _identity(plan: StudyPlan) -> dict[str, Any]:
    """What a study's trials must share to be compared: settings, space and time per trial."""
    identity = {
        "config": plan.base.to_dict(),
        "space": [dataclasses.asdict(searched) for searched in plan.space],
        "minutes_per_trial": plan.minutes_per_trial,
    }
    return json.loads(json.dumps(identity))  # as the storage gives it back: tuples are lists


def _check_identity(study: optuna.Study, plan: StudyPlan) -> None:
    wanted = _identity(plan)
    stored = study.user_attrs.get("sequnet")
    if stored is None:
        study.set_user_attr("sequnet", wanted)
    elif stored != wanted:
        raise ConfigError(
            f"study {plan.name} in {shown(plan.storage)} was started with other settings "
            f"({_difference(stored, wanted)}); continue it with the same preset and options, "
            "or start another with --study NAME"
        )


def _difference(then: object, now: object, path: str = "") -> str:
    """The first setting that differs between two identities, in words."""
    if isinstance(then, dict) and isinstance(now, dict):
        for key in sorted(set(then) | set(now), key=str):
            if then.get(key) != now.get(key):
                inner = f"{path}.{key}" if path else str(key)
                return _difference(then.get(key), now.get(key), inner)
    return f"{path.removeprefix('config.')}: {then!r} then, {now!r} now"


def stored_plan(study: optuna.Study, plan: StudyPlan) -> StudyPlan:
    """`plan` with the settings, space and time per trial its study was started with."""
    stored: Any = study.user_attrs.get("sequnet", {})
    try:
        space = tuple(
            SearchRange(**{**values, "choices": tuple(values["choices"])})
            for values in stored["space"]
        )
        base = RunConfig.from_dict(stored["config"])
        minutes = float(stored["minutes_per_trial"])
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"study {plan.name} in {shown(plan.storage)} was not started by this version of "
            f"sequnet ({type(error).__name__}: {error}); start another with --study NAME"
        ) from error
    return dataclasses.replace(plan, base=base, space=space, minutes_per_trial=minutes)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Optuna's log lines and warnings are ours to show; each of sequnet's warnings is shown
    once, not once per trial."""
    optuna.logging.set_verbosity(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.filterwarnings("once", category=SequnetWarning)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", module="optuna")
        yield
