"""Audio corpora for the Seq-U-Net audio task (paper §4.2): folders of recordings as cached
16 kHz mono 8-bit mu-law splits, and random or fixed excerpts of them.

`AudioCorpus.open(folder)` decodes the folder once (`sequnet_cli.data.audio_decoding`, in
parallel worker processes for large folders) and caches the result under
`cache_dir()/audio/<key>/` as one uint8 `.npy` per split plus a JSON manifest, the key hashing
the files' paths, sizes and modification times, so a changed folder is decoded again. Later
opens memory-map the cache: every process reading it (each rank of a distributed run) shares
the one copy the operating system keeps in its page cache.

Splits (train, valid, test; the best checkpoint is chosen on valid, test is only scored):
a MAESTRO folder, recognised by its `maestro-v*.csv` (columns `split` and `audio_filename`),
uses the published split; a folder with `train/` and `test/` sub-folders keeps them and takes
`valid/` (or `validation/`) as the validation files, else `valid_fraction` of the training
files; any other folder is split by file, deterministically (a seeded shuffle of the sorted
names, cut by `valid_fraction` and `test_fraction` as MIDI folders are).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch

from sequnet_cli.data import SPLITS
from sequnet_cli.data.audio_decoding import SILENCE_CODE, decode_all, default_workers, probe
from sequnet_cli.data.audio_files import Layout, find_layout, split_by_file
from sequnet_cli.errors import ConfigError, DataError, warn
from sequnet_cli.files import atomic_write
from sequnet_cli.paths import cache_dir

CACHE_VERSION = 2  # 2: a validation split of its own


class Progress(Protocol):
    """Called before each file is decoded, with the hours of audio decoded and in all."""

    def __call__(
        self, done: int, total: int, path: Path, hours: tuple[float, float] | None = None
    ) -> None: ...


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

    def random_excerpts(
        self, batch: int, length: int, generator: torch.Generator, rows: slice | None = None
    ) -> torch.Tensor:
        """Random excerpts as int64 mu-law classes `(batch, length)`.

        A file is drawn with probability proportional to its length (so every sample is
        about equally likely to be seen), then a start uniformly within that file. `rows`:
        read only these of the `batch` excerpts drawn (a process's part of a distributed
        batch; the generator advances as for all of them).
        """
        if not self.files:
            raise DataError(
                f"the {self.name} split has no audio; add audio files to it "
                "(or more files to the folder, so that some are set aside for it)."
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
        if rows is not None:
            file_index, offsets = file_index[rows], offsets[rows]
        return self._gather(file_index.numpy(), offsets.numpy(), length)

    def fixed_excerpts(self, count: int, length: int, seed: int) -> torch.Tensor:
        """The same `count` excerpts for the same seed, int64 `(count, length)`; for evaluation."""
        return self.random_excerpts(count, length, torch.Generator().manual_seed(seed))

    def covering_excerpts(self, context: int, targets: int) -> Iterator[np.ndarray]:
        """Excerpts that hold every sample of the split once as a target: each file's samples in
        consecutive runs of `targets` (the last run of a file shorter), each run after the
        `context` samples before it, `SILENCE_CODE` before the file's start (as a training
        excerpt of a file shorter than itself has). uint8 `(context + n,)`, file by file."""
        for start, length in zip(self.starts.tolist(), self.lengths.tolist(), strict=True):
            for first in range(0, length, targets):
                end = min(first + targets, length)  # the run's targets: file samples first..end
                excerpt = np.full(context + end - first, SILENCE_CODE, dtype=np.uint8)
                begin = max(first - context, 0)
                excerpt[excerpt.shape[0] - (end - begin) :] = self.samples[
                    start + begin : start + end
                ]
                yield excerpt

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
    """A folder of audio as cached 16 kHz mu-law `train`, `valid` and `test` splits."""

    folder: Path
    train: AudioSplit
    valid: AudioSplit
    test: AudioSplit
    sample_rate: int
    cache_path: Path

    def split(self, name: str) -> AudioSplit:
        """The split called `name` (train, valid or test)."""
        if name not in SPLITS:
            raise ValueError(f"no split '{name}'; the splits are {', '.join(SPLITS)}")
        split: AudioSplit = getattr(self, name)
        return split

    @classmethod
    def open(
        cls,
        folder: Path,
        sample_rate: int = 16000,
        *,
        valid_fraction: float = 0.1,
        test_fraction: float = 0.1,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> AudioCorpus:
        """Open `folder`, decoding and caching it first unless an up-to-date cache exists.

        Unreadable or empty files are skipped with a warning. The fractions apply to folders
        without a split of their own (see the module docstring); `workers`: decoding
        processes (None: `default_workers`).
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(f"audio folder {folder} does not exist; pass a folder of audio files.")
        if sample_rate < 1:
            raise ConfigError(f"sample_rate must be a positive number of Hz, got {sample_rate}.")
        _check_fractions(valid_fraction, test_fraction)
        layout = find_layout(folder)
        fractions = (valid_fraction, test_fraction if "all" in layout.groups else 0.0)
        key = _cache_key(layout, sample_rate, fractions if layout.split_later else None)
        target = cache_dir() / "audio" / key
        cached = _load_cache(target)
        if cached is None:
            chosen = workers or default_workers([p for g in layout.groups.values() for p in g])
            build = _CacheBuild(target, sample_rate, progress, chosen)
            build.write(folder, layout, fractions)
            cached = _load_cache(target)
            assert cached is not None, f"cache just written to {target} is unreadable"
        manifest, splits = cached
        for skipped in manifest["skipped"]:
            warn(f"skipped {skipped['path']}: {skipped['reason']}")
        _check_usable(folder, splits)
        return cls(folder, **splits, sample_rate=sample_rate, cache_path=target)


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}.")
    if valid_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"valid_fraction + test_fraction must leave files to train on, got "
            f"{valid_fraction} + {test_fraction}."
        )


def _check_usable(folder: Path, splits: dict[str, AudioSplit]) -> None:
    """Refuse a corpus with nothing to train on."""
    if not any(split.files for split in splits.values()):
        raise DataError(
            f"no usable audio in {folder}: every audio file was unreadable or empty "
            "(see the warnings above); add readable WAV or FLAC files."
        )
    if not splits["train"].files:
        raise DataError(
            f"no usable training audio in {folder}; add readable audio files to its training "
            "split (the train/ sub-folder, or the folder itself)."
        )


# --- the cache key ----------------------------------------------------------------------


def _cache_key(layout: Layout, sample_rate: int, fractions: tuple[float, float] | None) -> str:
    """Hash of everything the cached splits depend on; stat only, no decoding."""
    entries = {
        group: [(str(p), *_size_and_mtime(p)) for p in paths]
        for group, paths in layout.groups.items()
    }
    blob = json.dumps([CACHE_VERSION, sample_rate, fractions, entries], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _size_and_mtime(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


# --- building and reading the cache -----------------------------------------------------


class _CacheBuild:
    """Decodes a folder's usable files into `target/{train,valid,test}.npy` and writes the
    manifest last, so a cache is complete or absent."""

    def __init__(
        self, target: Path, sample_rate: int, progress: Progress | None, workers: int
    ) -> None:
        self.target, self.sample_rate, self.progress = target, sample_rate, progress
        self.workers = workers
        self.skipped: list[dict[str, str]] = []
        self.seconds: dict[Path, float] = {}  # each usable file's duration, from its header
        self.done, self.total, self.hours_done, self.hours_total = 0, 0, 0.0, 0.0

    def write(self, folder: Path, layout: Layout, fractions: tuple[float, float]) -> None:
        files = self._assign({g: self._probe_all(p) for g, p in layout.groups.items()}, fractions)
        ordered = [path for name in SPLITS for path in files[name]]
        self.total = len(ordered)
        self.hours_total = sum(self.seconds[p] for p in ordered) / 3600
        self.target.mkdir(parents=True, exist_ok=True)
        decoded = decode_all(ordered, self.sample_rate, self.workers)
        splits: dict[str, Any] = {}
        for name in SPLITS:
            kept: list[dict[str, Any]] = []
            chunks = self._kept(files[name], decoded, kept)
            count = _write_npy_stream(self.target / f"{name}.npy", chunks)
            splits[name] = {"file": f"{name}.npy", "samples": count, "files": kept}
        manifest = {
            "version": CACHE_VERSION,
            "folder": str(folder),
            "layout": layout.name,
            "sample_rate": self.sample_rate,
            "fractions": list(fractions),
            "splits": splits,
            "skipped": self.skipped,
        }
        encoded = json.dumps(manifest, indent=1).encode()
        atomic_write(self.target / "manifest.json", lambda stream: stream.write(encoded))

    def _probe_all(self, paths: list[Path]) -> list[Path]:
        """The readable, non-empty files of `paths`; the others are recorded as skipped."""
        usable = []
        for path in paths:
            reason, seconds = probe(path)
            if reason is None:
                usable.append(path)
                self.seconds[path] = seconds
            else:
                self.skipped.append({"path": str(path), "reason": reason})
        return usable

    @staticmethod
    def _assign(
        usable: dict[str, list[Path]], fractions: tuple[float, float]
    ) -> dict[str, list[Path]]:
        """Every split's files: the layout's own, or cut by file where it has none."""
        if "all" in usable:
            train, valid, test = split_by_file(usable["all"], *fractions)
            return {"train": train, "valid": valid, "test": test}
        if "valid" not in usable:
            train, valid, _ = split_by_file(usable["train"], fractions[0], 0.0)
            return {"train": train, "valid": valid, "test": usable["test"]}
        return usable

    def _kept(
        self, paths: list[Path], decoded: Iterator[np.ndarray | str], kept: list[dict[str, Any]]
    ) -> Iterator[np.ndarray]:
        """Yield the codes of `paths` (the next results of `decoded`), recording each file in
        `kept`, or as skipped when it could not be decoded."""
        start = 0
        for path in paths:
            if self.progress is not None:
                self.progress(self.done, self.total, path, (self.hours_done, self.hours_total))
            codes = next(decoded)
            self.done, self.hours_done = self.done + 1, self.hours_done + self.seconds[path] / 3600
            if isinstance(codes, str):
                self.skipped.append({"path": str(path), "reason": codes})
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


def _load_cache(target: Path) -> tuple[dict[str, Any], dict[str, AudioSplit]] | None:
    """The cached manifest and memory-mapped splits, or None when absent, partial or stale."""
    try:
        manifest = json.loads((target / "manifest.json").read_text())
        if manifest.get("version") != CACHE_VERSION:
            return None
        splits = {name: _open_split(target, manifest, name) for name in SPLITS}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest, splits


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
