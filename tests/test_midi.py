"""MIDI <-> piano roll: round trips, beat-based frames, tempos, folders, broken and non-MIDI
files."""

from __future__ import annotations

import itertools
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest

from sequnet_cli.config import DataConfig, resolve
from sequnet_cli.data.midi import (
    load_midi_folder,
    midi_tempo,
    midi_to_roll,
    read_midi,
    roll_to_midi,
    write_midi,
)
from sequnet_cli.data.rolls import split_counts, voice_counts
from sequnet_cli.errors import DataError, SequnetWarning, WriteError
from sequnet_cli.tasks.piano_roll import PianoRollTask, load_piano_rolls


def tiny_midi(tempo: float = 120.0) -> pretty_midi.PrettyMIDI:
    """C4 for one beat, E4 from beat 0.5 to 2, a drum hit and a pitch below the piano."""
    beat = 60.0 / tempo
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=beat))
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=64, start=0.5 * beat, end=2 * beat))
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=12, start=0.0, end=2 * beat))
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=90, pitch=70, start=0.0, end=2 * beat))
    midi.instruments.extend([piano, drums])
    return midi


def random_roll(rng: np.random.Generator, frames: int) -> np.ndarray:
    return rng.random((frames, 88)) < 0.15


@pytest.mark.parametrize("tempo", [60.0, 120.0, 150.0])
def test_frames_follow_the_beat(tmp_path: Path, tempo: float) -> None:
    path = tmp_path / "tiny.mid"
    write_midi(tiny_midi(tempo), path)
    roll = midi_to_roll(path, frames_per_beat=4)
    assert roll.shape == (8, 88) and roll.dtype == np.bool_
    assert roll[:, 60 - 21].tolist() == [True] * 4 + [False] * 4
    assert roll[:, 64 - 21].tolist() == [False] * 2 + [True] * 6
    assert roll.sum() == 10  # the drum and the pitch below A0 are dropped


@pytest.mark.parametrize("tempo", [72.0, 90.0, 97.3])
def test_a_tempo_midi_cannot_store_exactly_adds_no_frame(tmp_path: Path, tempo: float) -> None:
    # MIDI keeps whole microseconds per beat, so the last note's end and the beat grid come back
    # a rounding apart; that is no extra (silent) frame.
    path = tmp_path / "tiny.mid"
    write_midi(tiny_midi(tempo), path)
    assert midi_to_roll(path, frames_per_beat=4).shape == (8, 88)
    assert midi_tempo(read_midi(path)) == tempo  # to a thousandth, as it was meant


def tempo_changes(path: Path, tempi: list[tuple[float, int]]) -> Path:
    """A file of one note held through tempo changes: (beats per minute, beats at it)."""
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=90, time=0)])
    previous = 0  # beats since the last event
    for bpm, beats in tempi:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=previous))
        previous = beats * 480
    track.append(mido.Message("note_off", note=60, velocity=0, time=previous))
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(str(path))
    return path


def test_a_file_tempo_is_the_one_it_plays_at_most_of_the_time(tmp_path: Path) -> None:
    # 100 BPM for 8 beats (4.8 s), then 60 BPM for 2 beats (2 s): mostly 100.
    mostly_fast = read_midi(tempo_changes(tmp_path / "a.mid", [(100.0, 8), (60.0, 2)]))
    assert midi_tempo(mostly_fast) == 100.0
    # 100 BPM for 2 beats (1.2 s), then 60 BPM for 8 beats (8 s): mostly 60.
    mostly_slow = read_midi(tempo_changes(tmp_path / "b.mid", [(100.0, 2), (60.0, 8)]))
    assert midi_tempo(mostly_slow) == 60.0
    assert midi_tempo(pretty_midi.PrettyMIDI()) == 120.0  # no tempo at all: MIDI's default


def test_a_folder_keeps_its_training_files_typical_tempo(tmp_path: Path) -> None:
    for index, tempo in enumerate([60.0, 72.0, 90.0, 90.0, 96.0, 150.0]):
        write_midi(tiny_midi(tempo), tmp_path / f"p{index}.mid")
    config = DataConfig(dataset=str(tmp_path), valid_fraction=0.0, test_fraction=0.0)
    assert load_midi_folder(tmp_path, config).tempo == 90.0  # the median of all six
    split = DataConfig(dataset=str(tmp_path), valid_fraction=0.2, test_fraction=0.2)
    splits = load_midi_folder(tmp_path, split)
    tempos = [midi_tempo(read_midi(tmp_path / f"p{i}.mid")) for i in range(6)]
    medians = {float(np.median(four)) for four in itertools.combinations(tempos, 4)}
    assert len(splits.train) == 4 and splits.tempo in medians  # of the four training files


def test_the_tempo_of_a_sample_is_the_option_the_primer_the_data_or_120(tmp_path: Path) -> None:
    primer = tmp_path / "primer.mid"
    write_midi(tiny_midi(72.0), primer)
    config = resolve("jsb", None, [])
    folder_run = PianoRollTask(config, {"voices": [0, 1], "tempo": 90.0})
    assert folder_run.tempo(150.0, primer) == 150.0
    assert folder_run.tempo(None, primer) == 72.0
    assert folder_run.tempo(None, None) == 90.0
    assert PianoRollTask(config, {"voices": [0, 1]}).tempo(None, None) == 120.0  # benchmarks
    assert PianoRollTask(config).tempo(None, None) == 120.0


def test_voice_counts_count_frames_per_number_of_sounding_pitches() -> None:
    roll = np.zeros((5, 88), dtype=bool)
    roll[1, :2] = roll[2, :4] = roll[3, :4] = roll[4, 87] = True
    counts = voice_counts([roll, roll[:2]])
    assert counts.shape == (89,) and counts.tolist()[:5] == [2, 1, 2, 0, 2]
    assert counts.sum() == 7


def test_fixed_frame_seconds(tmp_path: Path) -> None:
    path = tmp_path / "tiny.mid"
    write_midi(tiny_midi(120.0), path)  # one second long
    roll = midi_to_roll(path, frames_per_beat=4, frame_seconds=0.1)
    assert roll.shape == (10, 88)
    assert np.flatnonzero(roll[:, 60 - 21]).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(5))
def test_roll_round_trip(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    roll = random_roll(rng, int(rng.integers(4, 40)))
    roll[-1, 0] = True  # the roll's length is the end of its last note
    path = tmp_path / "round.mid"
    write_midi(roll_to_midi(roll, frame_seconds=0.25, program=int(rng.integers(0, 8))), path)
    np.testing.assert_array_equal(midi_to_roll(path, frame_seconds=0.25), roll)
    np.testing.assert_array_equal(midi_to_roll(path, frames_per_beat=2), roll)  # 120 bpm


def test_roll_to_midi_makes_one_note_per_run() -> None:
    roll = np.zeros((6, 88), dtype=bool)
    roll[0:2, 39] = True
    roll[3:6, 39] = True
    notes = roll_to_midi(roll, frame_seconds=0.5, velocity=70).instruments[0].notes
    assert [(note.start, note.end, note.pitch, note.velocity) for note in notes] == [
        (0.0, 1.0, 60, 70),
        (1.5, 3.0, 60, 70),
    ]


def test_roll_to_midi_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="88"):
        roll_to_midi(np.zeros((4, 12), dtype=bool), 0.25)


def test_folder_split_is_deterministic_and_skips_broken_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    for index in range(10):
        folder = tmp_path / "sub" if index % 2 else tmp_path
        write_midi(roll_to_midi(random_roll(rng, 8 + index), 0.25), folder / f"p{index}.MID")
    (tmp_path / "broken.mid").write_bytes(b"MThd garbage")
    (tmp_path / "notes.txt").write_text("ignored: not a .mid")
    config = DataConfig(dataset=str(tmp_path), valid_fraction=0.2, test_fraction=0.1)
    with pytest.warns(SequnetWarning, match="broken.mid"):
        splits = load_midi_folder(tmp_path, config)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (7, 2, 1)
    with pytest.warns(SequnetWarning, match="broken.mid"):
        again = load_piano_rolls(str(tmp_path), None, config)
    for first, second in zip(splits.train + splits.valid, again.train + again.valid, strict=True):
        np.testing.assert_array_equal(first, second)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no readable MIDI files"):
        load_midi_folder(tmp_path, DataConfig(dataset=str(tmp_path)))


def test_folder_of_only_broken_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.mid").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="no readable MIDI files"), pytest.warns(SequnetWarning):
        load_midi_folder(tmp_path, DataConfig(dataset=str(tmp_path)))


def test_non_midi_and_missing_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "primer.mid"
    text.write_text("this is not MIDI")
    with pytest.raises(DataError, match="not a readable MIDI file"):
        read_midi(text)
    with pytest.raises(DataError, match="does not exist"):
        midi_to_roll(tmp_path / "absent.mid")


@pytest.mark.parametrize(
    ("count", "valid", "test", "expected"),
    [
        (10, 0.1, 0.1, (8, 1, 1)),
        (1, 0.1, 0.1, (1, 0, 0)),
        (2, 0.5, 0.5, (1, 1, 0)),
        (4, 0.1, 0.1, (2, 1, 1)),
        (100, 0.0, 0.0, (100, 0, 0)),
    ],
)
def test_split_counts(
    count: int, valid: float, test: float, expected: tuple[int, int, int]
) -> None:
    assert split_counts(count, valid, test) == expected


@pytest.mark.parametrize("count", range(1, 30))
def test_split_counts_always_keep_a_training_piece(count: int) -> None:
    for valid, test in [(0.1, 0.1), (0.45, 0.45), (0.0, 0.9), (0.3, 0.0)]:
        train, valid_count, test_count = split_counts(count, valid, test)
        assert train >= 1 and min(valid_count, test_count) >= 0
        assert train + valid_count + test_count == count


def test_write_midi_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out" / "song.mid"
    with pytest.raises(WriteError, match="does not exist"):
        write_midi(tiny_midi(), path)  # a mistyped folder is not created silently
    path.parent.mkdir()
    write_midi(tiny_midi(), path)
    write_midi(roll_to_midi(np.ones((2, 88), dtype=bool), 0.25), path)
    assert len(read_midi(path).instruments[0].notes) == 88
    assert [p.name for p in path.parent.iterdir()] == ["song.mid"]
