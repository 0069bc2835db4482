"""Run the real `sequnet` entry point in-process and capture what a user would see."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sequnet_cli.app import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`sequnet ARGS...`: exit code, stdout and stderr."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def succeed(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`sequnet ARGS...` that must exit 0 (stderr shown on failure)."""
    result = run(capsys, *args)
    assert result.code == 0, result.err
    return result


def assert_one_error_line(result: Result, *fragments: str) -> None:
    """Exit code 1, exactly one `error: ...` line, no traceback."""
    assert result.code == 1, (result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err + result.out
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


def write_chorales(folder: Path, count: int, beats: int = 16, tempo: float = 120.0) -> Path:
    """`count` four-voice MIDI chorales (a chord per beat, four notes sounding in every frame)
    in a new `folder`; returns it."""
    import pretty_midi

    folder.mkdir(parents=True)
    chords = ([0, 4, 7, 12], [5, 9, 12, 17], [7, 11, 14, 19], [-3, 0, 4, 9])
    for index in range(count):
        midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
        voices = pretty_midi.Instrument(program=0)
        beat_seconds = 60.0 / tempo
        for beat in range(beats):
            chord = chords[(beat * (index + 1) + index) % len(chords)]
            for offset in chord:
                start = beat * beat_seconds
                voices.notes.append(
                    pretty_midi.Note(90, 55 + index % 5 + offset, start, start + beat_seconds)
                )
        midi.instruments.append(voices)
        midi.write(str(folder / f"chorale{index:02}.mid"))
    return folder
