"""MIDI files <-> piano rolls, for user datasets, primers and generated pieces.

A piano roll is a `(T, 88)` bool array, column 0 = MIDI pitch 21 (A0), as in the benchmarks of
Boulanger-Lewandowski et al. (2012). Reading quantises each note's onset and offset to the
nearest frame boundary; frames either follow the file's beats (`frames_per_beat` per quarter
note, so tempo changes are respected) or a fixed `frame_seconds` grid. Drum tracks and pitches
outside the piano's range are dropped. A file's tempo is the one it plays at for most of its
length, a folder's the median of its training files'; beat-framed rolls are written back at such
a tempo, so they keep their speed. Writing makes one note per run of active frames and
replaces the target file atomically, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pretty_midi

from sequnet_cli.data.rolls import LOWEST_PITCH, PITCHES, PianoRollSplits, split_counts
from sequnet_cli.errors import DataError, warn
from sequnet_cli.files import atomic_write

if TYPE_CHECKING:
    from sequnet_cli.config import DataConfig

MIDI_SUFFIXES = (".mid", ".midi")
_SPLIT_SEED = 0  # the same folder always gives the same split
ROUNDING = 1e-6  # seconds: far below a tick, far above float rounding of note and beat times


def read_midi(path: Path) -> pretty_midi.PrettyMIDI:
    """Parse a MIDI file; a missing or non-MIDI file raises `DataError`."""
    if not path.is_file():
        raise DataError(f"MIDI file {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():  # pretty_midi warns about harmless meta-event placement
            warnings.simplefilter("ignore", RuntimeWarning)
            return pretty_midi.PrettyMIDI(str(path))
    except Exception as error:  # mido and pretty_midi raise many types for bad files
        raise DataError(
            f"{path} is not a readable MIDI file ({type(error).__name__}: {error}); "
            "pass a standard .mid file"
        ) from error


def midi_to_roll(
    source: Path | pretty_midi.PrettyMIDI, frames_per_beat: int = 4, frame_seconds: float = 0.0
) -> np.ndarray:
    """A MIDI file (or parsed MIDI) as a `(T, 88)` bool piano roll.

    Frames are `frame_seconds` long if that is positive, else `1 / frames_per_beat` of the
    file's beat. A note covers the frames between its onset and offset, each rounded to the
    nearest frame boundary, and at least one frame.
    """
    midi = source if isinstance(source, pretty_midi.PrettyMIDI) else read_midi(source)
    end = midi.get_end_time()
    boundaries = _frame_boundaries(midi, end, frames_per_beat, frame_seconds)
    roll = np.zeros((len(boundaries) - 1, PITCHES), dtype=bool)
    for instrument in midi.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            column = note.pitch - LOWEST_PITCH
            if not 0 <= column < PITCHES:
                continue
            onset, offset = _nearest(boundaries, np.array([note.start, note.end]))
            onset = min(onset, len(roll) - 1)  # a note starting in the last half frame
            roll[onset : max(offset, onset + 1), column] = True
    return roll


def _frame_boundaries(
    midi: pretty_midi.PrettyMIDI, end: float, frames_per_beat: int, frame_seconds: float
) -> np.ndarray:
    """Frame start times plus one boundary at or after `end` (within `ROUNDING`): `(T + 1,)`
    seconds, increasing; at least one frame."""
    if end <= 0:
        return np.zeros(1)
    if frame_seconds > 0:
        frames = max(1, int(np.ceil((end - ROUNDING) / frame_seconds)))
        return np.arange(frames + 1) * frame_seconds
    beats = midi.get_beats()
    if len(beats) > 1:
        last_length = beats[-1] - beats[-2]
    else:
        last_length = 60.0 / midi.get_tempo_changes()[1][-1]
    while beats[-1] < end:  # extend the beat grid past the last note with the last beat length
        beats = np.append(beats, beats[-1] + last_length)
    steps = np.arange(frames_per_beat) / frames_per_beat
    starts = (beats[:-1, None] + np.diff(beats)[:, None] * steps[None, :]).ravel()
    grid = np.append(starts, beats[-1])  # its last point is at or after `end`
    # A frame starts before the end, not merely within rounding of it (a beat grid and note
    # times are computed along different paths: 4.999998 and 4.999998000000001).
    frames = max(1, int(np.count_nonzero(grid < end - ROUNDING)))
    return grid[: frames + 1]


def _nearest(boundaries: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the boundary nearest each time: `(N,)` ints in `0..len(boundaries) - 1`."""
    right = np.clip(np.searchsorted(boundaries, times), 1, len(boundaries) - 1)
    left = right - 1
    closer_left = times - boundaries[left] <= boundaries[right] - times
    return np.where(closer_left, left, right)


def load_midi_folder(
    folder: Path,
    data_config: DataConfig,
    progress: Callable[[int, int, Path], None] | None = None,
) -> PianoRollSplits:
    """Every `*.mid`/`*.midi` under `folder` (recursively), split deterministically.

    Unreadable files and files without piano notes are skipped with a warning. The sorted
    names are shuffled with a fixed seed and cut by `valid_fraction` / `test_fraction`.
    """
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()
    )
    pieces: list[tuple[np.ndarray, float]] = []  # each file's roll and tempo
    for index, path in enumerate(paths):
        if progress is not None:
            progress(index, len(paths), path)
        try:
            midi = read_midi(path)
        except DataError as error:
            warn(f"skipped: {error}")
            continue
        roll = midi_to_roll(midi, data_config.frames_per_beat, data_config.frame_seconds)
        if roll.any():
            pieces.append((roll, midi_tempo(midi)))
        else:
            warn(f"{path} has no notes in the piano range; skipped")
    if not pieces:
        raise DataError(
            f"no readable MIDI files (*.mid, *.midi) with piano notes under {folder}; "
            "point --data at a folder of MIDI files"
        )
    random.Random(_SPLIT_SEED).shuffle(pieces)  # the same order as shuffling the rolls alone
    train, valid, _ = split_counts(
        len(pieces), data_config.valid_fraction, data_config.test_fraction
    )
    rolls = [roll for roll, _ in pieces]
    return PianoRollSplits(
        train=rolls[:train],
        valid=rolls[train : train + valid],
        test=rolls[train + valid :],
        tempo=float(np.median([tempo for _, tempo in pieces[:train]])),
    )


def midi_tempo(midi: pretty_midi.PrettyMIDI) -> float:
    """The tempo `midi` plays at for most of its length, in (quarter-note) beats per minute: the
    median of its tempo over time, which is its tempo when it has only one."""
    times, tempi = midi.get_tempo_changes()
    end = max(midi.get_end_time(), float(times[-1]))
    lengths = np.diff(np.append(times, end))  # how long each tempo lasts
    if lengths.sum() <= 0:
        return round(float(tempi[-1]), 3)
    order = np.argsort(tempi, kind="stable")
    elapsed = np.cumsum(lengths[order])
    # A file stores whole microseconds per beat (90 BPM reads back as 90.00009): what was meant.
    return round(float(tempi[order][np.searchsorted(elapsed, elapsed[-1] / 2)]), 3)


def roll_to_midi(
    roll: np.ndarray,
    frame_seconds: float,
    program: int = 0,
    velocity: int = 80,
    tempo: float = 120.0,
) -> pretty_midi.PrettyMIDI:
    """A `(T, 88)` bool piano roll as MIDI: one note per contiguous run of active frames."""
    if roll.ndim != 2 or roll.shape[1] != PITCHES:
        raise ValueError(f"a piano roll is (frames, {PITCHES}), got {roll.shape}")
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    instrument = pretty_midi.Instrument(program=program)
    padded = np.pad(roll.astype(np.int8), ((1, 1), (0, 0)))
    changes = np.diff(padded, axis=0)  # (T + 1, 88): +1 at onsets, -1 at offsets
    for column in range(PITCHES):
        onsets = np.flatnonzero(changes[:, column] == 1)
        offsets = np.flatnonzero(changes[:, column] == -1)
        for onset, offset in zip(onsets, offsets, strict=True):
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=velocity,
                    pitch=column + LOWEST_PITCH,
                    start=onset * frame_seconds,
                    end=offset * frame_seconds,
                )
            )
    instrument.notes.sort(key=lambda note: (note.start, note.pitch))
    midi.instruments.append(instrument)
    return midi


def write_midi(midi: pretty_midi.PrettyMIDI, path: Path) -> None:
    """Write `midi` to `path` atomically (`sequnet_cli.files.atomic_write`)."""
    atomic_write(path, lambda file: midi.write(file))
