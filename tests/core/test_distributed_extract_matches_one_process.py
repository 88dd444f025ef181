"""Feature extraction under ``torchrun`` (2 gloo processes on CPU) writes bit-identical features and
the same files as one process, survives a failing and a killed rank, and resumes with only the missing shards."""

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacegraph_spaces
import torch
from PIL import Image

import spacegraph as sg
from spacegraph import cli
from tests.conftest import ToySpace

SPACE, N_ITEMS, SHARD_ROWS = "digits-image-text", 300, 32  # 10 shards: 5 per rank
ASSETS = Path(spacegraph_spaces.__file__).parent / "assets"

# Run under torchrun by test_failing_or_killed_rank_keeps_its_finished_shards_and_a_rerun_extracts_only_the_rest.
# Dataset "texts": rank 1 raises at its 2nd shard (both ranks must raise, none hangs), then both ranks encode again
# and count the rows they extract. Dataset "images": rank 1 SIGKILLs itself at its 2nd shard; torchrun stops rank 0.
WORKER = """
import functools, hashlib, json, os, signal, sys
from pathlib import Path
import torch
import spacegraph as sg

torch.set_num_threads(1)
out, texts, images = Path(sys.argv[1]), sys.argv[2].split("\\n"), sys.argv[3].split("\\n")
rank = int(os.environ["RANK"])
space = sg.load_space(sys.argv[4])
store = sg.FeatureStore(out / "store", shard_rows=int(sys.argv[5]))
encode, calls, fault = space.encode, [], {"at": None}


@functools.wraps(encode)
def counting(modality, rows, **options):
    if rank == 1 and len(calls) + 1 == fault["at"]:
        if fault["kill"]:
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError("injected failure")
    calls.append(len(rows))
    return encode(modality, rows, **options)


space.encode = counting
report = {}
fault.update(at=2, kill=False)
try:
    store.encode(space, "text", "texts", texts)
except Exception as err:
    report["error"] = f"{type(err).__name__}: {err}"
report["failed_run_rows"], calls[:] = sum(calls), []
fault["at"] = None
report["resumed"] = hashlib.sha256(store.encode(space, "text", "texts", texts).numpy().tobytes()).hexdigest()
report["resumed_rows"], calls[:] = sum(calls), []
(out / f"report-{rank}.json").write_text(json.dumps(report))
fault.update(at=2, kill=True)
store.encode(space, "image", "images", images)
"""


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 MNIST images as PNG files in a folder, and 300 texts, also in a list file."""
    folder = tmp_path_factory.mktemp("inputs")
    with np.load(ASSETS / "samples" / "images.npz") as arrays:
        digits = arrays["gallery"][:N_ITEMS]
    (folder / "images").mkdir()
    for index, pixels in enumerate(digits):
        Image.fromarray(pixels).save(folder / "images" / f"{index:04d}.png")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    texts = [f"the digit {names[index % 10]}, item {index}" for index in range(N_ITEMS)]
    (folder / "texts.txt").write_text("\n".join(texts) + "\n")
    return folder, [str(path) for path in sorted((folder / "images").iterdir())], texts


@pytest.fixture
def one_thread():
    """Compute in one thread, as the torchrun workers do, so that results can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def test_cli_under_torchrun_writes_bit_identical_features_and_the_files_of_one_process(data, tmp_path, one_thread):
    folder, images, _ = data
    options = ["extract", "--space", SPACE, "--modality", "image", "--inputs", str(folder / "images")]
    options += ["--dataset", "digits", "--shard-rows", str(SHARD_ROWS)]
    result = torchrun("-m", "spacegraph.cli", *options, "--store", str(tmp_path / "two"), "--json", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert cli.main([*options, "--store", str(tmp_path / "one")]) == 0

    two, one = sg.FeatureStore(tmp_path / "two"), sg.FeatureStore(tmp_path / "one")
    assert torch.equal(two.load(SPACE, "image", "digits"), one.load(SPACE, "image", "digits"))
    written = files(two.folder(SPACE, "image", "digits"))
    assert written == files(one.folder(SPACE, "image", "digits"))
    assert sorted(written) == ["manifest.json"] + [f"shard-{index:05d}.safetensors" for index in range(10)]
    record = json.loads((tmp_path / "r").read_text())
    assert (record["world_size"], record["n_items"], record["dim"]) == (2, N_ITEMS, 96)
    expected = sg.load_space(SPACE).encode("image", images)
    assert torch.allclose(one.load(SPACE, "image", "digits"), expected, atol=1e-6)


def count_encoded_rows(space, monkeypatch) -> list[int]:
    """The row count of every ``space.encode`` call from now on (the calls still encode)."""
    rows: list[int] = []
    encode = space.encode

    @functools.wraps(encode)
    def counting(modality, batch, **options):
        rows.append(len(batch))
        return encode(modality, batch, **options)

    monkeypatch.setattr(space, "encode", counting)
    return rows


def test_failing_or_killed_rank_keeps_its_finished_shards_and_a_rerun_extracts_only_the_rest(
    data, tmp_path, one_thread, monkeypatch
):
    _, images, texts = data
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = torchrun(str(script), str(tmp_path), "\n".join(texts), "\n".join(images), SPACE, str(SHARD_ROWS))
    assert result.returncode != 0, "rank 1 killed itself; torchrun must report the failure"
    reports = [json.loads((tmp_path / f"report-{rank}.json").read_text()) for rank in (0, 1)]

    # a failing rank: every rank raises, rank 0 naming rank 1's error; the rerun extracts only the missing shards
    assert reports[1]["error"] == "ValueError: injected failure"
    assert (
        reports[0]["error"].startswith("DistributedRunError")
        and "on rank 1 of 2: ValueError: injected" in reports[0]["error"]
    )
    failed_run_rows = sum(report["failed_run_rows"] for report in reports)
    assert failed_run_rows == 6 * SHARD_ROWS  # rank 0's 5 shards and rank 1's first
    assert sum(report["resumed_rows"] for report in reports) == N_ITEMS - failed_run_rows
    space = sg.load_space(SPACE)
    reference = sg.FeatureStore(tmp_path / "reference", shard_rows=SHARD_ROWS)
    store = sg.FeatureStore(tmp_path / "store", shard_rows=SHARD_ROWS)
    expected = reference.encode(space, "text", "texts", texts)
    assert reports[0]["resumed"] == reports[1]["resumed"] == sha256(expected)  # every rank returns all the features
    assert files(store.folder(SPACE, "text", "texts")) == files(reference.folder(SPACE, "text", "texts"))

    # a killed rank: its finished shard stays on record; one process resumes with only the missing rows
    killed = store.folder(SPACE, "image", "images")
    records = [json.loads(path.read_text()) for path in killed.glob("progress-*-rank-*.json")]
    kept = {int(index): entry["rows"] for record in records for index, entry in record["done"].items()}
    assert 1 in kept and not (killed / "manifest.json").exists()
    rows = count_encoded_rows(space, monkeypatch)
    got = store.encode(space, "image", "images", images)
    assert sum(rows) == N_ITEMS - sum(kept.values())
    assert torch.equal(got, reference.encode(space, "image", "images", images))
    assert files(killed) == files(reference.folder(SPACE, "image", "images"))  # progress records merged and removed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--inputs": "missing.txt"}, "--inputs missing.txt is neither a file nor a folder"),
        ({"--inputs": "blank.txt"}, "--inputs blank.txt: line 2 is blank; give one text per line"),
        ({"--inputs": "images"}, "--inputs images is a folder; for text give a file with one text per line"),
        ({"--space": "no-such-space"}, "--space 'no-such-space' is not registered; registered: digits-audio-text"),
        ({"--store": "texts.txt"}, "--store texts.txt: texts.txt is a file, not a folder"),
        ({"--modality": "audio"}, "space 'digits-image-text' does not embed 'audio'"),
        ({"--dataset": "../up"}, "--dataset '../up' cannot name a file or folder"),
    ],
)
def test_cli_extract_refuses_bad_arguments_in_one_line_before_writing(
    data, tmp_path, monkeypatch, capsys, change, message
):
    folder, _, _ = data
    monkeypatch.chdir(folder)
    (folder / "blank.txt").write_text("one\n\nthree\n")
    options = {"--space": SPACE, "--modality": "text", "--inputs": "texts.txt", "--dataset": "d"}
    options |= {"--store": str(tmp_path / "store"), **change}
    assert cli.main(["extract", *[part for pair in options.items() for part in pair]]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "store" / SPACE).exists()


def test_cli_extract_reads_a_list_file_as_the_python_api_does(data, tmp_path, one_thread):
    folder, _, texts = data
    options = ["--modality", "text", "--inputs", str(folder / "texts.txt"), "--dataset", "t"]
    assert cli.main(["extract", "--space", SPACE, *options, "--store", str(tmp_path), "--batch-size", "7"]) == 0
    expected = sg.FeatureStore(tmp_path / "api").encode(sg.load_space(SPACE), "text", "t", texts, batch_size=7)
    assert torch.equal(sg.FeatureStore(tmp_path).load(SPACE, "text", "t"), expected)


def test_cli_extract_counts_every_item_on_one_bar_when_asked(data, tmp_path, capsys, one_thread):
    folder, _, _ = data
    options = ["extract", "--space", SPACE, "--modality", "text", "--inputs", str(folder / "texts.txt")]
    options += ["--dataset", "t", "--store", str(tmp_path), "--shard-rows", "64"]
    for resumed in (False, True):  # the second run reads the five shards back and counts them too
        assert cli.main([*options, "--progress"]) == 0
        err = capsys.readouterr().err
        assert f"{SPACE}:text t" in err and f"{N_ITEMS}/{N_ITEMS}" in err, (resumed, err)
    assert cli.main([*options, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_extract_that_fails_leaves_no_dataset_folder_behind(data, tmp_path, capsys):
    _, images, _ = data
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for image in images[:3]:
        (inputs / Path(image).name).write_bytes(Path(image).read_bytes())
    (inputs / "0002.png").write_bytes(b"not a PNG")
    store = tmp_path / "store"
    options = ["extract", "--space", SPACE, "--modality", "image", "--inputs", str(inputs), "--dataset", "d"]
    assert cli.main([*options, "--store", str(store)]) == 2
    assert "0002.png" in capsys.readouterr().err
    assert [path.name for path in store.iterdir()] == [".locks"]  # nothing of dataset d, and no lock beside it


def test_one_process_resumes_from_progress_records_and_replaces_a_damaged_or_foreign_record(tmp_path, monkeypatch):
    """Progress records of a killed distributed run are used by any later run: intact shards are kept, a damaged one
    is extracted again, and a record of other inputs starts the dataset over (the cache's own files only)."""
    space, inputs = ToySpace("toy", ("audio",), 6), np.random.default_rng(0).normal(size=(10, 8)).astype("float32")
    store = sg.FeatureStore(tmp_path, shard_rows=2)
    expected = store.encode(space, "audio", "clips", inputs)
    folder = store.folder("toy", "audio", "clips")
    manifest = json.loads((folder / "manifest.json").read_text())
    done = {str(index): manifest["shards"][index] for index in (1, 3, 4)}
    header = {key: value for key, value in manifest.items() if key != "shards"}
    (folder / "manifest.json").unlink()
    (folder / "progress-00003-rank-00001.json").write_text(json.dumps({**header, "done": done}))
    (folder / "shard-00004.safetensors").write_bytes(b"damaged")
    (folder / "notes.txt").write_text("mine")
    rows = count_encoded_rows(space, monkeypatch)
    assert torch.equal(store.encode(space, "audio", "clips", inputs), expected)
    assert rows == [2, 2, 2]  # shards 0, 2 and the damaged 4
    assert sorted(path.name for path in folder.iterdir()) == ["manifest.json", "notes.txt"] + [
        f"shard-{index:05d}.safetensors" for index in range(5)
    ]

    (folder / "progress-00004-rank-00000.json").write_text(json.dumps({**header, "inputs_digest": "other", "done": {}}))
    rows.clear()
    assert torch.equal(store.encode(space, "audio", "clips", inputs), expected)
    assert rows == [2] * 5 and (folder / "notes.txt").read_text() == "mine"
    assert not list(folder.glob("progress-*"))
