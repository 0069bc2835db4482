"""Piano-roll benchmarks: checksums, the download path, `.mat` files and safe pickles."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import scipy.io

from sequnet_cli.config import DataConfig
from sequnet_cli.data import polyphonic
from sequnet_cli.data.polyphonic import (
    BENCHMARKS,
    load_benchmark,
    load_pickle,
    sha256_of,
)
from sequnet_cli.errors import DataError
from sequnet_cli.paths import cache_dir
from sequnet_cli.tasks.piano_roll import load_piano_rolls

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "polyphonic"


def small_mat(path: Path) -> Path:
    """A valid `.mat` file with 3/1/1 tiny pieces."""
    rng = np.random.default_rng(0)

    def cells(count: int) -> np.ndarray:
        pieces = np.empty((1, count), dtype=object)
        for index in range(count):
            pieces[0, index] = (rng.random((5 + index, 88)) < 0.1).astype(np.uint8)
        return pieces

    scipy.io.savemat(path, {"traindata": cells(3), "validdata": cells(1), "testdata": cells(1)})
    return path


@pytest.mark.data
def test_jsb_benchmark_from_the_data_dir() -> None:
    splits = load_benchmark("jsb")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (229, 76, 77)
    for piece in splits.train + splits.valid + splits.test:
        assert piece.dtype == np.bool_
        assert piece.ndim == 2 and piece.shape[1] == 88
    assert any(piece.any() for piece in splits.train)


@pytest.mark.data
def test_embedded_checksums_match_the_shared_sums() -> None:
    lines = (SHARED / "SHA256SUMS").read_text().splitlines()
    published = {name: digest for digest, name in (line.split() for line in lines)}
    for benchmark in BENCHMARKS.values():
        assert published[benchmark.file_name] == benchmark.sha256


def test_a_corrupt_local_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "JSB_Chorales.mat").write_bytes(b"not the chorales")
    monkeypatch.delenv("SEQUNET_DATA_DIR")
    with pytest.raises(DataError, match="checksum mismatch.*expected SHA-256 ac0e6085"):
        load_benchmark("jsb", tmp_path)


@pytest.mark.data
def test_a_truncated_copy_in_the_data_dir_is_refused(tmp_path: Path) -> None:
    data = (SHARED / "JSB_Chorales.mat").read_bytes()
    (tmp_path / "JSB_Chorales.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="checksum mismatch"):
        load_benchmark("jsb", tmp_path)  # the option folder is searched first


def test_download_verifies_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mat = small_mat(tmp_path / "small.mat")
    monkeypatch.delenv("SEQUNET_DATA_DIR")
    monkeypatch.setitem(BENCHMARKS, "jsb", polyphonic.Benchmark("JSB_Chorales.mat", sha256_of(mat)))
    fetched: list[str] = []

    def fake_fetch(url: str, destination: BinaryIO) -> str:
        fetched.append(url)
        destination.write(mat.read_bytes())
        return sha256_of(mat)

    monkeypatch.setattr(polyphonic, "_fetch", fake_fetch)
    splits = load_benchmark("jsb")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 1, 1)
    assert fetched == [polyphonic.DOWNLOAD_URL.format(file_name="JSB_Chorales.mat")]
    assert (cache_dir() / "datasets" / "JSB_Chorales.mat").is_file()
    load_benchmark("jsb")  # now from the cache
    assert len(fetched) == 1


def test_a_bad_download_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQUNET_DATA_DIR")

    def evil_fetch(url: str, destination: BinaryIO) -> str:
        destination.write(b"evil")
        return hashlib.sha256(b"evil").hexdigest()

    monkeypatch.setattr(polyphonic, "_fetch", evil_fetch)
    with pytest.raises(DataError, match="checksum mismatch.*expected SHA-256 ac0e6085"):
        load_benchmark("jsb")
    assert os.listdir(cache_dir() / "datasets") == []


def test_no_network_says_how_to_provide_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQUNET_DATA_DIR")
    monkeypatch.setattr(polyphonic, "DOWNLOAD_URL", "http://127.0.0.1:9/{file_name}")
    with pytest.raises(DataError, match="could not download.*SEQUNET_DATA_DIR"):
        load_benchmark("jsb")
    assert os.listdir(cache_dir() / "datasets") == []


def test_unknown_benchmark() -> None:
    with pytest.raises(DataError, match="unknown benchmark 'bach'"):
        load_benchmark("bach")


def test_mat_path_and_corrupt_mat(tmp_path: Path) -> None:
    config = DataConfig(dataset="x")
    splits = load_piano_rolls(str(small_mat(tmp_path / "mine.mat")), None, config)
    assert splits.train[2].shape == (7, 88)
    (tmp_path / "bad.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(DataError, match="not a readable piano-roll .mat"):
        load_piano_rolls(str(tmp_path / "bad.mat"), None, config)


def test_unknown_dataset_names_the_benchmarks(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a benchmark.*jsb"):
        load_piano_rolls(str(tmp_path / "absent"), None, DataConfig(dataset="x"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a piano-roll dataset"):
        load_piano_rolls(str(tmp_path / "notes.txt"), None, DataConfig(dataset="x"))


def test_an_original_format_pickle_loads(tmp_path: Path) -> None:
    data = {
        "train": [[(60, 64, 67), (), (21, 108)], [[60]]],
        "valid": [[(62,)]],
        "test": [[(48, 52), (48,)]],
    }
    path = tmp_path / "tiny.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    splits = load_piano_rolls(str(path), None, DataConfig(dataset=str(path)))
    first = splits.train[0]
    assert first.shape == (3, 88) and first.dtype == np.bool_
    assert np.flatnonzero(first[0]).tolist() == [39, 43, 46]
    assert not first[1].any()
    assert np.flatnonzero(first[2]).tolist() == [0, 87]
    assert [len(piece) for piece in splits.test] == [2]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": [_Exploit(marker)], "valid": [], "test": []}))
    with pytest.raises(DataError, match="only plain lists"):
        load_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": [], "valid": []}, "'train', 'valid' and 'test'"),
        ({"train": [[(20,)]], "valid": [], "test": []}, "pitch 20, outside the piano range"),
        ({"train": [[(109,)]], "valid": [], "test": []}, "pitch 109"),
        ({"train": [[("C4",)]], "valid": [], "test": []}, "not a MIDI pitch"),
        ({"train": [[60]], "valid": [], "test": []}, "must be a list of MIDI pitches"),
        ({"train": 5, "valid": [], "test": []}, "must be a list of pieces"),
    ],
)
def test_malformed_pickles_are_refused(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(DataError, match=message):
        load_pickle(path)


def test_a_truncated_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.pickle"
    path.write_bytes(pickle.dumps({"train": [[(60,)]] * 50, "valid": [], "test": []})[:40])
    with pytest.raises(DataError, match="not a readable pickle"):
        load_pickle(path)


@pytest.mark.data
def test_a_copy_with_the_right_bytes_loads_from_the_option_folder(tmp_path: Path) -> None:
    shutil.copy(SHARED / "JSB_Chorales.mat", tmp_path / "JSB_Chorales.mat")
    assert len(load_benchmark("jsb", tmp_path).test) == 77
