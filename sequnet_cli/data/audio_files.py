"""Which audio files a folder holds, and how they divide into train, valid and test.

Three layouts, tried in this order:

- **MAESTRO**: the folder holds `maestro-v*.csv` (the highest version if several) with the
  columns `split` (`train`, `validation`, `test`) and `audio_filename` (relative to the
  folder); the published split is used. A listed file missing from the folder is looked for
  with the other audio extensions (a FLAC conversion), else left out with one warning.
- **Sub-folders**: `train/` and `test/` (and `valid/` or `validation/`, if there is one) are
  the splits.
- **By file**: every audio file below the folder, split later, once the unreadable files are
  known, by `split_by_file`.

Nothing here decodes audio; `sequnet_cli.data.audio` does, and caches the result.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from sequnet_cli.data import SPLITS
from sequnet_cli.data.rolls import split_counts
from sequnet_cli.errors import DataError, warn

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au"})
SPLIT_SEED = 0  # fixed so the by-file split never changes between runs or machines
MAESTRO_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
VALID_FOLDERS = ("valid", "validation")


@dataclass(frozen=True)
class Layout:
    """How a folder's files divide: `groups` maps a split (or `all`, for the by-file layout,
    or only `train` and `test`, when valid is to be taken from train) to its files, sorted."""

    name: str  # "maestro", "folders" or "by-file"
    groups: dict[str, list[Path]]

    @property
    def split_later(self) -> bool:
        """Whether some split is still to be cut from the files by `split_by_file`."""
        return "valid" not in self.groups


def find_layout(folder: Path) -> Layout:
    """The layout of `folder` (see the module docstring); no audio at all is a `DataError`."""
    table = _maestro_csv(folder)
    if table is not None:
        layout = Layout("maestro", _maestro_groups(folder, table))
    elif (folder / "train").is_dir() and (folder / "test").is_dir():
        groups = {name: audio_files(folder / name) for name in ("train", "test")}
        valid = next((folder / n for n in VALID_FOLDERS if (folder / n).is_dir()), None)
        if valid is not None:
            groups["valid"] = audio_files(valid)
        layout = Layout("folders", groups)
    else:
        layout = Layout("by-file", {"all": audio_files(folder)})
    if not any(layout.groups.values()):
        extensions = " ".join(sorted(AUDIO_EXTENSIONS))
        raise DataError(f"no audio files ({extensions}) found in {folder}; check --data.")
    return layout


def audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder`, recursively, sorted; other files are ignored."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(p for p in found if p.is_file())


def split_by_file(
    files: list[Path], valid_fraction: float, test_fraction: float
) -> tuple[list[Path], list[Path], list[Path]]:
    """Deterministic `(train, valid, test)` split of `files`, each returned in sorted order.

    The sorted names are shuffled with a fixed seed; the first `test` of them are the test
    files, the next `valid` the validation files, counted as for MIDI folders
    (`sequnet_cli.data.rolls.split_counts`).
    """
    names = sorted(files)
    if not names:
        return [], [], []
    shuffled = list(names)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    _, valid_count, test_count = split_counts(len(names), valid_fraction, test_fraction)
    test = set(shuffled[:test_count])
    valid = set(shuffled[test_count : test_count + valid_count])
    train = [p for p in names if p not in test and p not in valid]
    return train, [p for p in names if p in valid], [p for p in names if p in test]


# --- MAESTRO ------------------------------------------------------------------------------


def _maestro_csv(folder: Path) -> Path | None:
    """The folder's MAESTRO metadata file, the highest version if there are several."""
    tables = sorted(folder.glob("maestro-v*.csv"), key=lambda p: _version(p.stem))
    return tables[-1] if tables else None


def _version(stem: str) -> tuple[int, ...]:
    """`maestro-v3.0.0` -> `(3, 0, 0)`, so that v10 sorts after v9."""
    digits = stem.removeprefix("maestro-v").split(".")
    return tuple(int(part) if part.isdigit() else -1 for part in digits)


def _maestro_groups(folder: Path, table: Path) -> dict[str, list[Path]]:
    """The published split of a MAESTRO folder: its CSV's rows, by split, as existing files."""
    rows = _read_rows(table)
    groups: dict[str, list[Path]] = {name: [] for name in SPLITS}
    missing: list[str] = []
    for split, name in rows:
        path = _existing_audio(folder / name)
        if path is None:
            missing.append(name)
        else:
            groups[MAESTRO_SPLITS[split]].append(path)
    if missing:
        warn(
            f"{folder} lacks {len(missing)} of the {len(rows)} recordings listed in "
            f"{table.name} (e.g. {missing[0]}); using the others"
        )
    return {name: sorted(paths) for name, paths in groups.items()}


def _read_rows(table: Path) -> list[tuple[str, str]]:
    """`(split, audio_filename)` for every row of a MAESTRO CSV; a malformed one is a
    `DataError` saying what is wrong."""
    try:
        with table.open(newline="", encoding="utf-8") as file:
            records = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"cannot read {table} ({error}); restore the file from the download"
        ) from error
    if not records or not {"split", "audio_filename"} <= set(records[0]):
        raise DataError(
            f"{table} has no 'split' and 'audio_filename' columns, so it is not MAESTRO "
            "metadata; restore it from the download or remove it"
        )
    unknown = sorted({r["split"] for r in records} - set(MAESTRO_SPLITS))
    if unknown:
        raise DataError(
            f"{table} names the split '{unknown[0]}'; MAESTRO's splits are "
            f"{', '.join(MAESTRO_SPLITS)}"
        )
    return [(r["split"], r["audio_filename"]) for r in records]


def _existing_audio(path: Path) -> Path | None:
    """`path`, or the same recording with another audio extension, if it exists."""
    if path.is_file():
        return path
    others = (path.with_suffix(ext) for ext in sorted(AUDIO_EXTENSIONS))
    return next((p for p in others if p.is_file()), None)
