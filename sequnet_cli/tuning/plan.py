"""What a `sequnet tune` command asks for: the preset's variant, its search space, the study."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from sequnet_cli.config import PresetFile, RunConfig, SearchRange, load_preset, resolve
from sequnet_cli.errors import ConfigError
from sequnet_cli.paths import studies_dir


@dataclass(frozen=True)
class SearchSettings:
    """How the sampler and the pruner behave; the defaults suit searches of about 20 trials."""

    random_trials: int = 10  # trials drawn at random before TPE models the results (Optuna's)
    prune_after: int = 5  # finished trials before any is pruned: a median of fewer is noise
    warmup_validations: int = 2  # never pruned at its first validation: it says too little yet
    heartbeat_seconds: int = 60  # a running trial tells the storage it is alive this often...
    stale_seconds: int = 180  # ...and is failed when a process finds it silent for this long


@dataclass(frozen=True)
class StudyPlan:
    """What one `sequnet tune` command asks for; see `plan_study`."""

    preset: PresetFile
    base: RunConfig  # the preset's variant with the command's overrides, before searched values
    space: tuple[SearchRange, ...]
    name: str  # the study's
    storage: str  # an Optuna RDB URL
    trials: int  # finished trials the study should hold
    minutes_per_trial: float  # 0: the preset's own limits
    jobs: int  # trials at once on this machine
    device: str | None
    data_dir: Path | None
    out: Path  # where the best trial's preset is written
    settings: SearchSettings = SearchSettings()


def plan_study(
    preset: str,
    model: str | None,
    overrides: list[str],
    *,
    trials: int = 0,
    minutes_per_trial: float = 0.0,
    storage: str | None = None,
    jobs: int = 1,
    study: str | None = None,
    device: str | None = None,
    data_dir: Path | None = None,
    out: Path | None = None,
    settings: SearchSettings = SearchSettings(),
) -> StudyPlan:
    """Check a `sequnet tune` command's preset, space and options. By default the study is
    named `<preset>-<model>` and kept in the user data dir's SQLite file, its best preset
    beside it."""
    file = load_preset(preset)
    variant = model or file.default_model
    base = resolve(file, variant, overrides)
    space = file.spaces.get(variant, ())
    if not space:
        raise ConfigError(
            f"preset {file.name} has no search space for model {variant}; add a [tune] table "
            "of ranges, e.g. train.lr = { low = 1e-5, high = 1e-2, log = true } (see the README)"
        )
    if minutes_per_trial < 0 or not math.isfinite(minutes_per_trial):
        raise ConfigError(f"--minutes-per-trial must be a positive number, got {minutes_per_trial}")
    name = study or f"{file.name}-{variant}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"--study must be letters, digits, '.', '_' or '-', got '{name}'")
    out = (out or studies_dir() / f"{name}-best.toml").expanduser()
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    return StudyPlan(
        preset=file,
        base=base,
        space=space,
        name=name,
        storage=storage or f"sqlite:///{studies_dir() / 'studies.db'}",
        trials=trials,
        minutes_per_trial=minutes_per_trial,
        jobs=jobs,
        device=device,
        data_dir=data_dir,
        out=out,
        settings=settings,
    )
