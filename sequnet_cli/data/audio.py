"""Raw-audio data for the Seq-U-Net audio task (paper §4.2): 16 kHz mono, 8-bit mu-law.

Any file soundfile reads (WAV, FLAC, OGG, MP3, AIFF, AU) at any rate and channel count is
mixed to mono, resampled with a band-limited polyphase filter and mu-law encoded as in
WaveNet (256 classes, silence is class 128). `AudioCorpus.open(folder)` does that once per
folder and caches the result under `cache_dir()/audio/<key>/` as one uint8 `.npy` per split
(memory-mapped on later opens) plus a JSON manifest, the key hashing the files' paths,
sizes and modification times, so a changed folder is decoded again. A folder with `train/`
and `test/` sub-folders keeps that split; otherwise files are split deterministically.
MAESTRO: point `--data` at the unpacked MAESTRO folder; it is searched recursively, its
44.1/48 kHz stereo WAV or FLAC is resampled and cached once (about 0.6 GB per 10 hours).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from sequnet_cli.errors import ConfigError, DataError, warn
from sequnet_cli.files import atomic_write
from sequnet_cli.paths import cache_dir

MU = 255
SILENCE_CODE = 128  # mu_law_encode(0.0): what short excerpts are left-padded with
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au"})
CACHE_VERSION = 1
SPLIT_SEED = 0  # fixed so the by-file split never changes between runs or machines

Progress = Callable[[int, int, Path], None]
"""Called as `progress(done, total, path)` before each file is decoded."""


# --- mu-law -----------------------------------------------------------------------------


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """Float audio `(...)` in [-1, 1] (clipped) -> uint8 classes `(...)` in 0..255."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / math.log1p(MU)
    return np.floor((companded + 1.0) / 2.0 * MU + 0.5).astype(np.uint8)


def mu_law_decode(q: np.ndarray) -> np.ndarray:
    """Integer classes `(...)` in 0..255 -> float32 audio `(...)` in [-1, 1]."""
    companded = 2.0 * np.asarray(q, dtype=np.float64) / MU - 1.0
    x = np.sign(companded) * np.expm1(np.abs(companded) * math.log1p(MU)) / MU
    return x.astype(np.float32)


# --- decoding ---------------------------------------------------------------------------


def load_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode any soundfile-readable file to float32 mono `(T,)` at `sample_rate`.

    Channels are averaged; the rate is changed with `resample_poly` (a Kaiser-windowed
    polyphase low-pass at the lower Nyquist), so content above it is removed, not aliased.
    """
    path = Path(path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise DataError(
            f"cannot read audio file {path}: {exc}. Remove it or convert it to WAV or FLAC."
        ) from exc
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} is empty (zero samples); remove it from the folder.")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        common = math.gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // common, int(rate) // common)
    return np.asarray(mono, dtype=np.float32)


def _probe(path: Path) -> str | None:
    """Why `path` cannot be used (unreadable header, no samples), or None; decodes nothing."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        return f"not readable as audio ({' '.join(str(exc).split())})"
    if info.frames == 0:
        return "empty (zero samples)"
    return None


# --- splits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSplit:
    """One split: its files' mu-law samples concatenated, with each file's boundaries.

    `samples` is a read-only uint8 memory map `(N,)`; file `i` occupies
    `samples[starts[i] : starts[i] + lengths[i]]`. Excerpts never straddle two files: a
    file shorter than the excerpt is used whole, left-padded with `SILENCE_CODE` (the
    causal model then sees silence before the file, as it sees zeros before `t = 0`).
    """

    name: str
    samples: np.ndarray
    files: tuple[Path, ...]
    starts: np.ndarray
    lengths: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        """Total duration of the split in seconds."""
        return float(self.samples.shape[0]) / self.sample_rate

    def random_excerpts(self, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """Random excerpts as int64 mu-law classes `(batch, length)`.

        A file is drawn with probability proportional to its length (so every sample is
        about equally likely to be seen), then a start uniformly within that file.
        """
        if not self.files:
            raise DataError(
                f"the {self.name} split has no audio; add audio files to it "
                "(or more files to the folder, so that some are set aside for testing)."
            )
        if batch < 1 or length < 1:
            raise ValueError(f"batch and length must be positive, got {batch} and {length}")
        lengths = torch.from_numpy(self.lengths)
        file_index = torch.multinomial(
            lengths.double(), batch, replacement=True, generator=generator
        )
        last_start = (lengths[file_index] - length).clamp(min=0)  # (batch,)
        uniform = torch.rand(batch, generator=generator, dtype=torch.float64)
        offsets = torch.minimum((uniform * (last_start + 1)).long(), last_start)
        return self._gather(file_index.numpy(), offsets.numpy(), length)

    def fixed_excerpts(self, count: int, length: int, seed: int) -> torch.Tensor:
        """The same `count` excerpts for the same seed, int64 `(count, length)`; for evaluation."""
        return self.random_excerpts(count, length, torch.Generator().manual_seed(seed))

    def _gather(self, file_index: np.ndarray, offsets: np.ndarray, length: int) -> torch.Tensor:
        """Copy excerpts out of the memory map, right-aligned, into int64 `(B, length)`."""
        out = np.full((len(file_index), length), SILENCE_CODE, dtype=np.uint8)
        for row, (index, offset) in enumerate(zip(file_index, offsets, strict=True)):
            begin = int(self.starts[index] + offset)
            take = min(length, int(self.lengths[index]))
            out[row, length - take :] = self.samples[begin : begin + take]
        return torch.from_numpy(out).long()


@dataclass(frozen=True)
class AudioCorpus:
    """A folder of audio as cached 16 kHz mu-law `train` and `test` splits."""

    folder: Path
    train: AudioSplit
    test: AudioSplit
    sample_rate: int
    cache_path: Path

    @classmethod
    def open(
        cls,
        folder: Path,
        sample_rate: int = 16000,
        test_fraction: float = 0.1,
        progress: Progress | None = None,
    ) -> AudioCorpus:
        """Open `folder`, decoding and caching it first unless an up-to-date cache exists.

        Unreadable or empty files are skipped with a warning. With no `train/` and `test/`
        sub-folders, `test_fraction` of the files (at least one training file is kept)
        form the test split, chosen by a seeded shuffle of the sorted names.
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(f"audio folder {folder} does not exist; pass a folder of audio files.")
        if sample_rate < 1:
            raise ConfigError(f"sample_rate must be a positive number of Hz, got {sample_rate}.")
        if not 0.0 <= test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}.")
        layout, groups = _find_groups(folder)
        key = _cache_key(groups, sample_rate, test_fraction if layout == "by-file" else None)
        target = cache_dir() / "audio" / key
        cached = _load_cache(target)
        if cached is None:
            _build_cache(target, folder, layout, groups, sample_rate, test_fraction, progress)
            cached = _load_cache(target)
            assert cached is not None, f"cache just written to {target} is unreadable"
        manifest, train, test = cached
        for skipped in manifest["skipped"]:
            warn(f"skipped {skipped['path']}: {skipped['reason']}")
        _check_usable(folder, train, test)
        return cls(folder, train, test, sample_rate, target)


def _check_usable(folder: Path, train: AudioSplit, test: AudioSplit) -> None:
    """Refuse a corpus with nothing to train on."""
    if not train.files and not test.files:
        raise DataError(
            f"no usable audio in {folder}: every audio file was unreadable or empty "
            "(see the warnings above); add readable WAV or FLAC files."
        )
    if not train.files:
        raise DataError(
            f"no usable training audio in {folder / 'train'}; add readable audio files there."
        )


# --- finding files and the cache key ----------------------------------------------------


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder`, recursively, sorted; other files are ignored."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(p for p in found if p.is_file())


def _find_groups(folder: Path) -> tuple[str, dict[str, list[Path]]]:
    """`("folders", {"train": [...], "test": [...]})` or `("by-file", {"all": [...]})`."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        layout, groups = "folders", {n: _audio_files(folder / n) for n in ("train", "test")}
    else:
        layout, groups = "by-file", {"all": _audio_files(folder)}
    if not any(groups.values()):
        extensions = " ".join(sorted(AUDIO_EXTENSIONS))
        raise DataError(f"no audio files ({extensions}) found in {folder}; check --data.")
    return layout, groups


def _cache_key(groups: dict[str, list[Path]], sample_rate: int, test_fraction: float | None) -> str:
    """Hash of everything the cached splits depend on; stat only, no decoding."""
    entries = {
        group: [(str(p), *_size_and_mtime(p)) for p in paths] for group, paths in groups.items()
    }
    blob = json.dumps([CACHE_VERSION, sample_rate, test_fraction, entries], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _size_and_mtime(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def split_by_file(files: list[Path], test_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic `(train, test)` split of `files`, each returned in sorted order."""
    names = sorted(files)
    shuffled = list(names)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    n_test = min(round(len(names) * test_fraction), len(names) - 1)
    if test_fraction > 0 and len(names) >= 2:
        n_test = max(n_test, 1)
    test = set(shuffled[:n_test])
    return [p for p in names if p not in test], [p for p in names if p in test]


# --- building and reading the cache -----------------------------------------------------


def _build_cache(
    target: Path,
    folder: Path,
    layout: str,
    groups: dict[str, list[Path]],
    sample_rate: int,
    test_fraction: float,
    progress: Progress | None,
) -> None:
    """Decode every usable file into `target/{train,test}.npy` and write the manifest last."""
    skipped: list[dict[str, str]] = []
    usable = {group: _probe_all(paths, skipped) for group, paths in groups.items()}
    if layout == "by-file":
        train, test = split_by_file(usable["all"], test_fraction)
        usable = {"train": train, "test": test}
    target.mkdir(parents=True, exist_ok=True)
    total = len(usable["train"]) + len(usable["test"])
    splits: dict[str, Any] = {}
    for name, first in (("train", 0), ("test", len(usable["train"]))):
        kept: list[dict[str, Any]] = []
        chunks = _encode_files(usable[name], sample_rate, kept, skipped, (first, total, progress))
        count = _write_npy_stream(target / f"{name}.npy", chunks)
        splits[name] = {"file": f"{name}.npy", "samples": count, "files": kept}
    manifest = {
        "version": CACHE_VERSION,
        "folder": str(folder),
        "layout": layout,
        "sample_rate": sample_rate,
        "test_fraction": test_fraction,
        "splits": splits,
        "skipped": skipped,
    }
    encoded = json.dumps(manifest, indent=1).encode()
    atomic_write(target / "manifest.json", lambda stream: stream.write(encoded))


def _probe_all(paths: list[Path], skipped: list[dict[str, str]]) -> list[Path]:
    """The readable, non-empty files of `paths`; the others are recorded in `skipped`."""
    usable = []
    for path in paths:
        reason = _probe(path)
        if reason is None:
            usable.append(path)
        else:
            skipped.append({"path": str(path), "reason": reason})
    return usable


def _encode_files(
    paths: list[Path],
    sample_rate: int,
    kept: list[dict[str, Any]],
    skipped: list[dict[str, str]],
    report: tuple[int, int, Progress | None],
) -> Iterator[np.ndarray]:
    """Yield each file's uint8 mu-law samples `(T,)`, recording it in `kept` or `skipped`.

    `report` is `(index of the first file overall, total files, progress callback)`.
    """
    first, total, progress = report
    start = 0
    for index, path in enumerate(paths, start=first):
        if progress is not None:
            progress(index, total, path)
        try:
            codes = mu_law_encode(load_audio(path, sample_rate))
        except DataError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        kept.append({"path": str(path), "start": start, "length": int(codes.shape[0])})
        start += int(codes.shape[0])
        yield codes


def _write_npy_stream(target: Path, chunks: Iterable[np.ndarray]) -> int:
    """Write uint8 chunks as one 1-D `.npy`, atomically, without holding them all in memory.

    The header is written for shape `(0,)` and rewritten at the end; numpy pads headers so
    the length axis can grow to 21 digits without changing the header size.
    """
    descriptor: dict[str, Any] = {"descr": "|u1", "fortran_order": False, "shape": (0,)}
    count = 0

    def write(stream: BinaryIO) -> None:
        nonlocal count
        np.lib.format.write_array_header_1_0(stream, descriptor)
        data_start = stream.tell()
        for chunk in chunks:
            stream.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
            count += int(chunk.shape[0])
        stream.seek(0)
        np.lib.format.write_array_header_1_0(stream, {**descriptor, "shape": (count,)})
        assert stream.tell() == data_start, "npy header changed size"

    atomic_write(target, write)
    return count


def _load_cache(target: Path) -> tuple[dict[str, Any], AudioSplit, AudioSplit] | None:
    """The cached manifest and memory-mapped splits, or None when absent, partial or stale."""
    try:
        manifest = json.loads((target / "manifest.json").read_text())
        if manifest.get("version") != CACHE_VERSION:
            return None
        train, test = (_open_split(target, manifest, name) for name in ("train", "test"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest, train, test


def _open_split(target: Path, manifest: dict[str, Any], name: str) -> AudioSplit:
    """Memory-map one cached split; ValueError if it does not match the manifest."""
    entry = manifest["splits"][name]
    samples = np.load(target / entry["file"], mmap_mode="r")
    if samples.dtype != np.uint8 or samples.shape != (entry["samples"],):
        raise ValueError(f"{target / entry['file']} does not match its manifest")
    files = entry["files"]
    return AudioSplit(
        name=name,
        samples=samples,
        files=tuple(Path(f["path"]) for f in files),
        starts=np.array([f["start"] for f in files], dtype=np.int64),
        lengths=np.array([f["length"] for f in files], dtype=np.int64),
        sample_rate=int(manifest["sample_rate"]),
    )
