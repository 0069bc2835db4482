"""Demo models shipped with the package: exported from a run in half precision with their
provenance, used (and said to be) when the user has no run of the preset, listed by `runs`."""

from __future__ import annotations

import json
from pathlib import Path

import pretty_midi
import pytest
import soundfile as sf
import torch
from cli import assert_one_error_line, run, succeed
from test_cli_audio import recordings, train_tiny  # noqa: F401  (a fixture)

from sequnet_cli import demos
from sequnet_cli.checkpoints import find_run
from sequnet_cli.data.midi import midi_to_roll


@pytest.fixture
def shipped(
    capsys: pytest.CaptureFixture[str],
    recordings: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A tiny piano-small demo exported into a demo folder, and a fresh user folder."""
    train_tiny(capsys, recordings)
    folder = tmp_path / "demos"
    monkeypatch.setattr(demos, "DEMO_FOLDER", folder)
    command = "sequnet train piano-small --data recordings --steps 2"
    succeed(capsys, "export-demo", "piano-small", "--command", command, "--data-name", "four tones")
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "fresh-home"))
    return folder


def test_export_stores_half_precision_weights_and_provenance(
    capsys: pytest.CaptureFixture[str],
    shipped: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (demo,) = demos.list_demos()
    assert demo.path == shipped / "piano-small.pt" and demo.preset == "piano-small"
    stored = torch.load(demo.path, weights_only=True)
    assert {tensor.dtype for tensor in stored["weights"].values()} == {torch.float16}
    origin = demo.provenance
    assert origin["command"] == "sequnet train piano-small --data recordings --steps 2"
    assert origin["data"] == "four tones" and origin["seed"] == 0
    assert set(origin["scores"]) == {"valid", "test"}
    assert origin["metric"] == "bits per audio sample"
    monkeypatch.setenv("SEQUNET_HOME", str(tmp_path / "sequnet-home"))  # the trained run
    trained = find_run("piano-small").load_state("best")["weights"]
    for name, value in demo.weights().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, trained[name].half().float())


def test_sample_without_a_run_uses_the_demo_and_says_so(
    capsys: pytest.CaptureFixture[str],
    shipped: Path,
    tmp_path: Path,
    recordings: Path,  # noqa: F811
) -> None:
    target = tmp_path / "demo.wav"
    result = succeed(capsys, "sample", "piano-small", "--steps", "300", "--out", str(target))
    assert "shipped demo model of piano-small" in result.out
    assert "four tones" in result.out
    assert sf.read(target)[0].shape == (300,)
    # A demo names its data folder, not the path it had where it was made: --data says where.
    evaluated = succeed(capsys, "evaluate", "piano-small", "--json", "--data", str(recordings))
    scores = json.loads(evaluated.out)
    assert "shipped demo" in scores["checkpoint"]


def test_a_demo_named_by_its_file_samples_as_the_demo(
    capsys: pytest.CaptureFixture[str], shipped: Path, tmp_path: Path
) -> None:
    target = tmp_path / "named.wav"
    demo = str(shipped / "piano-small.pt")
    result = succeed(capsys, "sample", demo, "--steps", "50", "--out", str(target))
    assert f"model {demo}" in result.out and "shipped demo" not in result.out  # asked for
    assert sf.read(target)[0].shape == (50,)


def test_a_demo_stands_in_for_the_presets_it_is_made_for(
    capsys: pytest.CaptureFixture[str],
    shipped: Path,
    tmp_path: Path,
    recordings: Path,  # noqa: F811
) -> None:
    """`sample piano` with no run of `piano` plays the piano-small demo, from the same file, and
    says so in one line; so does `evaluate piano`."""
    assert demos.STANDS_IN_FOR["piano-small"] == ("piano",)
    target = tmp_path / "first.wav"
    result = succeed(capsys, "sample", "piano", "--steps", "300", "--out", str(target))
    (notice,) = [line for line in result.out.splitlines() if "shipped demo" in line]
    assert notice.startswith("no run of piano yet: using the shipped demo model of piano-small")
    assert sf.read(target)[0].shape == (300,)
    assert sorted(path.name for path in shipped.iterdir()) == ["piano-small.pt"]  # no copy
    evaluated = succeed(capsys, "evaluate", "piano", "--json", "--data", str(recordings))
    assert "no run of piano yet" in json.loads(evaluated.out)["checkpoint"]


def test_runs_lists_the_demos(capsys: pytest.CaptureFixture[str], shipped: Path) -> None:
    out = succeed(capsys, "runs").out
    assert "no runs yet" in out and "recordings" in out  # its folder's name, never its path
    (row,) = [line for line in out.splitlines() if "shipped demo" in line]  # listed once
    assert "piano-small (shipped demo, also for piano)" in row


def test_a_preset_without_run_or_demo_names_the_demo_and_how_to_train(
    capsys: pytest.CaptureFixture[str], shipped: Path
) -> None:
    result = run(capsys, "sample", "piano", "--model", "wavenet")  # the demo is a sequnet
    assert_one_error_line(
        result,
        "no run of preset 'piano' with model 'wavenet'",
        "`sequnet train piano --data FOLDER_OF_RECORDINGS --model wavenet`",
        "`sequnet sample piano-small`",
    )
    other = run(capsys, "sample", "jsb")  # a piano-roll preset: no audio demo is named
    assert_one_error_line(other, "`sequnet train jsb`")
    assert "piano-small" not in other.err


def test_a_demo_of_another_model_variant_is_not_used(
    capsys: pytest.CaptureFixture[str], shipped: Path
) -> None:
    assert_one_error_line(run(capsys, "sample", "piano-small", "--model", "wavenet"), "wavenet")


def test_a_damaged_demo_is_one_error_line(
    capsys: pytest.CaptureFixture[str], shipped: Path
) -> None:
    (shipped / "piano-small.pt").write_bytes(b"not a checkpoint")
    assert_one_error_line(run(capsys, "sample", "piano-small"), "demo", "reinstall")


def test_without_demos_the_old_hint_stays(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(run(capsys, "sample", "piano"), "sequnet train piano --data")
    assert "no runs yet" in succeed(capsys, "runs").out


@pytest.fixture
def shipped_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo models that ship in the package (not the hermetic empty folder)."""
    monkeypatch.setattr(demos, "DEMO_FOLDER", Path(demos.__file__).parent / "demo_checkpoints")


@pytest.mark.usefixtures("shipped_demos")
def test_the_first_command_plays_the_shipped_piano_demo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`sequnet sample piano` on a fresh install: the shipped demo that stands in for `piano`
    plays, and each preset it stands in for has its kind of data."""
    from sequnet_cli.config import load_preset

    for demo in demos.list_demos():
        for preset in demo.stands_in_for:
            assert load_preset(preset).task == demo.config.task, preset
    wav = tmp_path / "first.wav"
    result = succeed(capsys, "sample", "piano", "--steps", "400", "--out", str(wav))
    assert "no run of piano yet: using the shipped demo model of piano-small" in result.out
    assert sf.read(wav)[0].shape == (400,)


@pytest.mark.data
@pytest.mark.usefixtures("shipped_demos")
def test_the_shipped_demos_play_out_of_the_box(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A fresh install samples both demos, and the jsb demo scores like a trained chorale
    model (random guessing is 61 nats per frame)."""
    assert {demo.preset for demo in demos.list_demos()} == {"jsb", "piano-small"}
    wav, mid = tmp_path / "piano.wav", tmp_path / "chorale.mid"
    piano = succeed(capsys, "sample", "piano-small", "--steps", "400", "--out", str(wav))
    assert "shipped demo" in piano.out and sf.read(wav)[0].shape == (400,)
    chorale = succeed(capsys, "sample", "jsb", "--steps", "32", "--out", str(mid))
    assert "shipped demo" in chorale.out and "warning" not in chorale.err
    # The demo keeps its data's voices (four in nine frames of ten, never more), and the
    # benchmark's rolls, which have no tempo, are written at 120 beats per minute.
    assert demos.find_demo("jsb").profile["voices"][4] == 12478  # of JSB's training frames
    voices = midi_to_roll(mid, frames_per_beat=2).sum(axis=1)
    assert voices.max() <= 4 and (voices == 4).mean() > 0.8
    assert pretty_midi.PrettyMIDI(str(mid)).get_tempo_changes()[1].tolist() == [120.0]
    scores = json.loads(succeed(capsys, "evaluate", "jsb", "--split", "test", "--json").out)
    assert scores["scores"]["test"] < 8.5
    size = sum(demo.path.stat().st_size for demo in demos.list_demos())
    assert size <= 5_000_000
