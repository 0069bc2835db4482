"""End to end on tiny data: `sequnet train -> evaluate -> sample`, and every bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from cli import assert_one_error_line, run, succeed

TINY = ["--set", "model.channels=[6,6]", "--set", "train.batch_size=2"]


def write_song(path: Path, pitches: list[int], beats: int = 12) -> None:
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    for beat in range(beats):
        for offset, pitch in enumerate(pitches):
            piano.notes.append(
                pretty_midi.Note(
                    velocity=90,
                    pitch=pitch + (beat + offset) % 3,
                    start=beat * 0.5,
                    end=beat * 0.5 + 0.45,
                )
            )
    midi.instruments.append(piano)
    midi.write(str(path))


@pytest.fixture
def midi_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "songs"
    folder.mkdir()
    for index in range(6):
        write_song(folder / f"song{index}.mid", [60 + index, 64 + index, 67])
    return folder


def train_tiny(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> str:
    result = run(capsys, "train", "jsb", "--data", str(data), "--epochs", "2", *TINY, *extra)
    assert result.code == 0, result.err
    return result.out


def test_threads_option_applies_to_training_only(
    capsys: pytest.CaptureFixture[str], midi_folder: Path
) -> None:
    before = torch.get_num_threads()
    out = train_tiny(capsys, midi_folder, "--threads", "1", "--set", "train.weight_decay=0.01")
    assert "on cpu (1 thread)" in out.replace("\n", "")
    assert torch.get_num_threads() == before
    (folder,) = _run_folders()
    config = json.loads((folder / "config.json").read_text())
    assert (config["train"]["threads"], config["train"]["weight_decay"]) == (1, 0.01)


def test_training_leaves_a_core_free_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On 2 cores, PyTorch's default (both) ran 27 times slower while another program kept a
    # core busy; OMP_NUM_THREADS, when a user sets it, still decides.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert "on cpu (1 thread)" in train_tiny(capsys, midi_folder).replace("\n", "")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert "on cpu (2 threads)" in train_tiny(capsys, midi_folder).replace("\n", "")
    finally:
        torch.set_num_threads(before)


def _run_folders() -> list[Path]:
    from sequnet_cli.paths import runs_dir

    return sorted(runs_dir().iterdir())


def test_train_evaluate_sample_round_trip(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    out = train_tiny(capsys, midi_folder)
    assert "best valid NLL" in out
    listing = run(capsys, "runs")
    assert listing.code == 0 and "jsb-sequnet" in listing.out

    scores = run(capsys, "evaluate", "jsb", "--json", "--data", str(midi_folder))
    assert scores.code == 0, scores.err
    document = json.loads(scores.out)
    assert set(document["scores"]) == {"train", "valid", "test"}
    assert all(np.isfinite(v) and v > 0 for v in document["scores"].values())

    target = tmp_path / "out.mid"
    sampled = run(
        capsys,
        "sample",
        "jsb",
        "--steps",
        "24",
        "--out",
        str(target),
        "--seed",
        "5",
        "--temperature",
        "1.5",
    )
    assert sampled.code == 0, sampled.err
    assert f"wrote {target}" in sampled.out.replace("\n", "")
    midi = pretty_midi.PrettyMIDI(str(target))
    assert midi.instruments and midi.instruments[0].notes
    assert midi.get_end_time() <= 24 * 0.125 + 1e-6  # 24 frames at 4 frames per beat, 120 bpm


def test_same_seed_same_file_and_batch_of_outputs(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, midi_folder)
    first, second = tmp_path / "a.mid", tmp_path / "b.mid"
    for path in (first, second):
        assert (
            run(capsys, "sample", "jsb", "--steps", "16", "--out", str(path), "--seed", "7").code
            == 0
        )
    assert first.read_bytes() == second.read_bytes()
    batch = run(
        capsys, "sample", "jsb", "--steps", "16", "-n", "3", "--out", str(tmp_path / "many")
    )
    assert batch.code == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "jsb-sample-1.mid",
        "jsb-sample-2.mid",
        "jsb-sample-3.mid",
    ]


def test_primed_sample_begins_with_the_primer(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, midi_folder)
    primer = midi_folder / "song0.mid"
    target = tmp_path / "primed.mid"
    assert (
        run(
            capsys, "sample", "jsb", "--primer", str(primer), "--steps", "8", "--out", str(target)
        ).code
        == 0
    )
    original = sorted(
        (n.pitch, round(n.start, 3))
        for n in pretty_midi.PrettyMIDI(str(primer)).instruments[0].notes
    )
    written = sorted(
        (n.pitch, round(n.start, 3))
        for n in pretty_midi.PrettyMIDI(str(target)).instruments[0].notes
    )
    first_notes = [note for note in original if note[1] < 2.0]
    assert set(first_notes) <= set(written)


def test_resume_continues_exactly(
    capsys: pytest.CaptureFixture[str],
    midi_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from sequnet_cli.checkpoints import find_run

    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "straight"))
    train_tiny(capsys, midi_folder, "--epochs", "3")
    straight = find_run("jsb").load_state("last")["weights"]

    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "resumed"))
    train_tiny(capsys, midi_folder, "--epochs", "1")
    resumed = run(capsys, "train", "--resume", "jsb", "--epochs", "3")
    assert resumed.code == 0, resumed.err
    weights = find_run("jsb").load_state("last")["weights"]
    for name, value in straight.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0)


def test_steps_limit_ends_cleanly_with_a_checkpoint(
    capsys: pytest.CaptureFixture[str], midi_folder: Path
) -> None:
    out = train_tiny(capsys, midi_folder, "--steps", "1")
    assert "0 epochs and 1 of 2 steps of epoch 1 (1 step)" in out
    succeed(capsys, "evaluate", "jsb", "--split", "test", "--data", str(midi_folder))


@pytest.mark.data
def test_benchmark_from_the_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "train", "jsb", "--steps", "2", *TINY)
    assert result.code == 0, result.err


# Every bad input ends in one `error:` line and exit code 1.


def test_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(run(capsys, "train", "no-such-preset"), "no-such-preset")


def test_unknown_key(capsys: pytest.CaptureFixture[str], midi_folder: Path) -> None:
    assert_one_error_line(
        run(capsys, "train", "jsb", "--data", str(midi_folder), "--set", "train.learning_rate=1"),
        "learning_rate",
    )


def test_wrong_type(capsys: pytest.CaptureFixture[str], midi_folder: Path) -> None:
    assert_one_error_line(
        run(capsys, "train", "jsb", "--data", str(midi_folder), "--set", "train.lr=fast"),
        "train.lr",
    )


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_error_line(run(capsys, "train", "jsb", "--data", str(tmp_path / "empty"), *TINY))


def test_corrupt_midi_is_skipped_but_all_corrupt_is_an_error(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    (midi_folder / "broken.mid").write_bytes(b"MThd this is not midi")
    result = run(capsys, "train", "jsb", "--data", str(midi_folder), "--steps", "1", *TINY)
    assert result.code == 0 and "broken.mid" in result.err
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.mid").write_bytes(b"garbage")
    assert_one_error_line(run(capsys, "train", "jsb", "--data", str(only_broken), *TINY))


def test_checksum_mismatch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "JSB_Chorales.mat").write_bytes(b"not the real file")
    assert_one_error_line(run(capsys, "train", "jsb", "--data-dir", str(bad), *TINY), "sha-256")


def test_malicious_pickle_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": [Exploit()], "valid": [], "test": []}))
    assert_one_error_line(run(capsys, "train", "jsb", "--data", str(path), *TINY))
    assert not marker.exists()


def test_no_run_yet(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(run(capsys, "evaluate", "jsb"), "sequnet train jsb")
    assert_one_error_line(run(capsys, "sample", "jsb"), "sequnet train jsb")


def test_missing_and_truncated_checkpoint(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    from sequnet_cli.checkpoints import find_run

    assert_one_error_line(run(capsys, "sample", str(tmp_path / "nothing.pt")), "nothing.pt")
    train_tiny(capsys, midi_folder)
    best = find_run("jsb").checkpoint_path("best")
    best.write_bytes(best.read_bytes()[:100])
    assert_one_error_line(run(capsys, "sample", "jsb"), "best.pt")
    assert_one_error_line(run(capsys, "evaluate", str(best)), "best.pt")


def test_primer_that_is_not_midi(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, tmp_path: Path
) -> None:
    train_tiny(capsys, midi_folder)
    text = tmp_path / "notes.txt"
    text.write_text("not midi")
    assert_one_error_line(run(capsys, "sample", "jsb", "--primer", str(text)), "notes.txt")
    assert_one_error_line(
        run(capsys, "sample", "jsb", "--primer", str(tmp_path / "missing.mid")), "missing.mid"
    )


def test_cuda_without_gpu(capsys: pytest.CaptureFixture[str], midi_folder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_error_line(
        run(capsys, "train", "jsb", "--data", str(midi_folder), "--device", "cuda"), "cuda"
    )


def test_ctrl_c_keeps_the_last_checkpoint(
    capsys: pytest.CaptureFixture[str], midi_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.training import Trainer

    real_step, calls = Trainer._step, []

    def interrupted(self: Trainer, batch: object) -> tuple[float, int]:
        calls.append(1)
        if len(calls) == 3:  # the first epoch (two batches) is done and checkpointed
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", interrupted)
    result = run(capsys, "train", "jsb", "--data", str(midi_folder), "--epochs", "5", *TINY)
    assert_one_error_line(result, "interrupted", "--resume")
    state = find_run("jsb").load_state("last")
    assert state["training"]["epoch"] == 1 and state["training"]["step"] == 2
    monkeypatch.setattr(Trainer, "_step", real_step)
    resumed = run(capsys, "train", "--resume", "jsb")
    assert resumed.code == 0, resumed.err
    assert find_run("jsb").load_state("last")["training"]["epoch"] == 5
