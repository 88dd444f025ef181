"""The benchmark commands: damaged data files and unwritable outputs are one clear line from the CLI before any
work is done."""

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from spacegraph_spaces import digits_data, shapes_data
from spacegraph_spaces.data_files import read_npz, read_synsets

from spacegraph import cli

CLASSES = np.array(shapes_data.CLASSES)


def fake_data(root: Path) -> Path:
    """A data folder laid out like ../shared/data for ``bench digits``: FSDD names (the readers only list them), a
    small MNIST archive and an OEWN file with the ten digit synsets."""
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in range(10):
        for take in (0, 5):
            (recordings / f"{digit}_tester_{take}.wav").touch()
    (root / "mnist5k").mkdir()
    labels = np.repeat(np.arange(10), 3)
    np.savez(root / "mnist5k" / "mnist5k.npz", images=np.zeros((30, 28, 28), np.uint8), label=labels)
    (root / "oewn").mkdir()
    with gzip.open(root / "oewn" / "oewn_nouns.json.gz", "wt", encoding="utf-8") as f:
        synset_ids = (*digits_data.DIGIT_SYNSETS, *shapes_data.SHAPE_SYNSETS)
        json.dump({sid: {"members": [sid], "definition": [], "examples": []} for sid in synset_ids}, f)
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def run_cli(argv, capsys):
    start = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    return code, err, seconds


@pytest.mark.parametrize("bench", ["digits", "hard"])
@pytest.mark.parametrize("damaged", ["mnist5k/mnist5k.npz", "oewn/oewn_nouns.json.gz"])
def test_cli_names_a_truncated_data_file_in_one_line(tmp_path, capsys, bench, damaged):
    data = fake_data(tmp_path / "data")
    truncate(data / damaged)
    code, err, _ = run_cli(["bench", bench, "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"spacegraph: error: {data / damaged}:") and "truncated" in err


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.99])
def test_readers_name_a_damaged_file(tmp_path, keep):
    data = fake_data(tmp_path)
    (data / "modelnet10").mkdir()
    points = data / "modelnet10" / "modelnet10_1024.npz"
    np.savez(points, points=np.zeros((2, 4, 3)), label=np.zeros(2), split=np.array(["train", "test"]), classes=CLASSES)
    for path, read in (
        (data / "mnist5k" / "mnist5k.npz", digits_data.mnist_split),
        (data / "oewn" / "oewn_nouns.json.gz", digits_data.digit_texts_from_oewn),
        (data / "oewn" / "oewn_nouns.json.gz", shapes_data.shape_texts_from_oewn),
        (points, shapes_data.modelnet10_split),
    ):
        original = path.read_bytes()
        read(data)
        truncate(path, keep)
        with pytest.raises(ValueError, match=f"^{path}: "):
            read(data)
        path.write_bytes(original)


def test_readers_name_a_file_of_the_wrong_layout(tmp_path):
    archive = tmp_path / "a.npz"
    np.savez(archive, images=np.zeros(3))
    with pytest.raises(ValueError, match=r"a.npz: no array \['label'\] in this archive; it holds \['images'\]"):
        read_npz(archive, ("images", "label"))
    np.savez(archive, images=np.array([{"pickled": 1}], dtype=object))
    with pytest.raises(ValueError, match="a.npz: cannot read it as an .npz archive .*allow_pickle"):
        read_npz(archive, ("images",))
    synsets = tmp_path / "s.json"
    synsets.write_text(json.dumps({"1-n": {"members": ["x"], "definition": [1], "examples": []}}))
    with pytest.raises(ValueError, match=r"s.json: not the OEWN noun synsets .*\(1-n/definition/0: "):
        read_synsets(synsets)
    synsets.write_text(json.dumps({"1-n": {"members": [], "definition": [], "examples": []}}))
    with pytest.raises(ValueError, match=r"s.json: synsets \['2-n'\] are missing"):
        read_synsets(synsets, ["1-n", "2-n"])


@pytest.mark.parametrize("command", [["demo"], ["bench", "digits"]])
def test_cli_refuses_out_under_a_file_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub" / "out"):
        code, err, seconds = run_cli([*command, "--out", str(out), "--quiet"], capsys)
        assert code == 2 and err == f"spacegraph: error: --out {out}: {blocker} is a file, not a folder"
        assert seconds < 1
    assert blocker.read_text() == "mine"


def test_cli_refuses_an_unwritable_json_before_the_benchmark(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    out = tmp_path / "out"
    for target, reason in (
        (blocker / "record.json", f"{blocker} is a file, not a folder"),
        (tmp_path, "is a folder; give the path of a file to write"),
    ):
        argv = ["bench", "hard", "--data", str(tmp_path / "no-data"), "--out", str(out), "--json", str(target)]
        code, err, seconds = run_cli(argv, capsys)
        assert code == 2 and err.startswith(f"spacegraph: error: --json {target}") and err.endswith(reason)
        assert seconds < 1 and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_cli_refuses_a_read_only_json_folder(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        argv = ["bench", "hard", "--out", str(tmp_path / "out"), "--json", str(folder / "record.json")]
        code, err, _ = run_cli(argv, capsys)
    finally:
        folder.chmod(0o700)
    assert code == 2 and f"cannot write in {folder}" in err and not (tmp_path / "out").exists()
