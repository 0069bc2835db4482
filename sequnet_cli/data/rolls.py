"""Piano rolls: the `(T, 88)` bool array every piano-roll source produces, and its splits.

Column 0 is MIDI pitch 21 (A0), column 87 pitch 108 (C8), as in the benchmarks of
Boulanger-Lewandowski et al. (2012).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCHES = 88
LOWEST_PITCH = 21  # MIDI A0, column 0 of a piano roll
HIGHEST_PITCH = LOWEST_PITCH + PITCHES - 1  # MIDI C8


@dataclass(frozen=True)
class PianoRollSplits:
    """Pieces per split, each a `(T, 88)` bool array, and the training pieces' typical tempo in
    beats per minute when their files say (MIDI folders; the released rolls have none)."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    tempo: float | None = None


def voice_counts(pieces: list[np.ndarray]) -> np.ndarray:
    """How many frames of `pieces` (each `(T, 88)`) sound 0, 1, ..., 88 pitches: `(89,)` ints."""
    voices = [np.count_nonzero(piece, axis=1) for piece in pieces]
    frames = np.concatenate(voices) if voices else np.zeros(0, dtype=np.int64)
    return np.bincount(frames, minlength=PITCHES + 1)


def split_counts(count: int, valid_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Pieces (or files) for (train, valid, test): rounded fractions, at least one to train on.

    A non-zero fraction gets at least one piece when at least two are left to train on.
    """
    valid = round(count * valid_fraction)
    test = round(count * test_fraction)
    if valid_fraction > 0 and valid == 0 and count - test >= 3:
        valid = 1
    if test_fraction > 0 and test == 0 and count - valid >= 3:
        test = 1
    while valid + test >= count:  # keep a training piece
        if test >= valid:
            test -= 1
        else:
            valid -= 1
    return count - valid - test, valid, test
