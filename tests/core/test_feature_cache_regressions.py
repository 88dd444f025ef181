"""The feature cache: regressions, each from its reproduction."""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

import spacegraph as sg
from spacegraph._inputs_digest import inputs_digest
from tests.conftest import ToySpace

REPO = Path(__file__).resolve().parents[2]  # holds the tests package


class ContentSpace(sg.Space):
    """Embeds exactly the bytes it is given: text as UTF-8, an audio path by the file's content, an
    ``(array, sample_rate)`` tuple by the array's bytes and the rate; records every batch it encodes."""

    def __init__(self, name: str = "content") -> None:
        super().__init__()
        self.spec = sg.SpaceSpec(name=name, modalities=("text", "audio"), dim=8, fingerprint="sha256:content")
        self.calls: list[int] = []

    @staticmethod
    def _bytes(modality, item) -> bytes:
        if isinstance(item, tuple):
            return np.ascontiguousarray(item[0]).tobytes() + str(item[1]).encode()
        return Path(item).read_bytes() if modality is sg.Modality.AUDIO else item.encode()

    def _encode_batch(self, modality, batch):
        self.calls.append(len(batch))
        seeds = [hashlib.sha256(self._bytes(modality, item)).digest() for item in batch]
        return torch.from_numpy(np.stack([np.frombuffer(s, np.uint32) / 2**32 - 0.5 for s in seeds]).astype("float32"))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_text_with_a_long_segment_encodes(tmp_path):
    space = ContentSpace()
    texts = ["x" * 300, "a caption " + "y" * 300 + " end", "/" + "z" * 256]
    got = sg.FeatureStore(tmp_path).encode(space, "text", "long", texts)
    torch.testing.assert_close(got, space.encode("text", texts), atol=0, rtol=0)
    inputs_digest(["w" * 300], "audio")  # a media str that names no file is hashed as the string, no OSError


def test_texts_a_double_slash_b_and_a_slash_b_are_not_confused(tmp_path):
    space, store = ContentSpace(), sg.FeatureStore(tmp_path)
    store.encode(space, "text", "t", ["a//b"])
    torch.testing.assert_close(store.encode(space, "text", "t", ["a/b"]), space.encode("text", ["a/b"]))
    assert inputs_digest(["a//b"], "text") != inputs_digest(["a/b"], "text")


def test_array_sample_rate_tuples_whose_repr_matches_do_not_collide(tmp_path):
    first, second = np.zeros(16000, np.float32), np.zeros(16000, np.float32)
    second[8000] = 1.0
    assert repr((first, 16000)) == repr((second, 16000))  # the old digest hashed this repr
    space, store = ContentSpace(), sg.FeatureStore(tmp_path)
    store.encode(space, "audio", "clips", [(first, 16000)])
    got = store.encode(space, "audio", "clips", [(second, 16000)])
    torch.testing.assert_close(got, space.encode("audio", [(second, 16000)]), atol=0, rtol=0)


def test_file_rewritten_in_place_at_the_same_size_is_extracted_again(tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"A" * 64)
    space, store = ContentSpace(), sg.FeatureStore(tmp_path / "cache")
    old = store.encode(space, "audio", "clips", [str(clip)])
    stat = clip.stat()
    clip.write_bytes(b"B" * 64)
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    new = store.encode(space, "audio", "clips", [str(clip)])
    assert not torch.equal(new, old)
    torch.testing.assert_close(new, space.encode("audio", [str(clip)]), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="missing.wav is not a file"):
        store.encode(space, "audio", "clips", [tmp_path / "missing.wav"])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["a//b"], ["a/b"]),
        (["ab", "c"], ["a", "bc"]),
        ([(1, 2)], [[1, 2]]),
        ([np.zeros(3, np.float32)], [np.zeros(3, np.float64)]),
        ([np.zeros((2, 3))], [np.zeros((3, 2))]),
        ([torch.zeros(4, dtype=torch.bfloat16)], [torch.zeros(4, dtype=torch.float16)]),
        ([torch.tensor([1.0, 2.0], dtype=torch.bfloat16)], [torch.tensor([1.0, 2.5], dtype=torch.bfloat16)]),
        ([1], [1.0]),
        ([True], [1]),
        ([b"x"], ["x"]),
        (["\ud800"], ["\ud801"]),  # lone surrogates are hashed exactly, not refused by the digest
    ],
)
def test_digest_tells_apart_inputs_that_differ(first, second):
    assert inputs_digest(first, "audio") != inputs_digest(second, "audio")
    assert inputs_digest(first, "audio") == inputs_digest(first, "audio")


def test_digest_refuses_what_it_cannot_fingerprint():
    with pytest.raises(TypeError, match=r"inputs\[1\]: the feature cache cannot fingerprint a dict; it takes str"):
        inputs_digest(["ok", {"a": 1}], "text")


def _toy_cache(tmp_path):
    space = ToySpace("toy", ("audio", "text"), 4)
    calls = []
    original = space._encode_batch
    space._encode_batch = lambda m, b: calls.append(len(b)) or original(m, b)
    store = sg.FeatureStore(tmp_path, shard_rows=10)
    inputs = np.random.default_rng(0).normal(size=(25, 8)).astype("float32")
    first = store.encode(space, "audio", "clips", inputs)
    calls.clear()
    return space, store, inputs, first, calls, tmp_path / "toy/audio/clips"


def _nan_shard_with_matching_checksum(folder: Path) -> None:
    data = save_safetensors({"embeddings": torch.full((10, 4), float("nan"))})
    (folder / "shard-00001.safetensors").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


DAMAGES = {
    "swapped": lambda f: [
        (f / "shard-00001.safetensors").rename(f / "tmp"),
        (f / "shard-00000.safetensors").rename(f / "shard-00001.safetensors"),
        (f / "tmp").rename(f / "shard-00000.safetensors"),
    ],
    "zeroed": lambda f: (f / "shard-00001.safetensors").write_bytes(
        bytes(len((f / "shard-00001.safetensors").read_bytes()))
    ),
    "nan": _nan_shard_with_matching_checksum,
    "truncated": lambda f: (f / "shard-00001.safetensors").write_bytes(
        (f / "shard-00001.safetensors").read_bytes()[:50]
    ),
    "missing": lambda f: (f / "shard-00001.safetensors").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_shard_is_refused_by_load_and_extracted_again_by_encode(tmp_path, caplog, damage):
    space, store, inputs, first, calls, folder = _toy_cache(tmp_path)
    DAMAGES[damage](folder)
    with pytest.raises(ValueError, match=r"shard-0000[01]\.safetensors .*run FeatureStore.encode"):
        store.load("toy", "audio", "clips")
    with caplog.at_level(logging.WARNING, logger="spacegraph._features"):
        again = store.encode(space, "audio", "clips", inputs)
    assert torch.equal(again, first)
    assert calls == ([10, 10] if damage == "swapped" else [10])  # only the damaged rows are recomputed
    assert "extracting its rows again" in caplog.text
    assert torch.equal(store.load("toy", "audio", "clips"), first)


@pytest.mark.parametrize("damage", [lambda raw: raw[:100], lambda raw: b"null", lambda raw: b"\0garbage"])
def test_truncated_or_invalid_manifest_is_not_a_dead_end(tmp_path, caplog, damage):
    space, store, inputs, first, calls, folder = _toy_cache(tmp_path)
    manifest = folder / "manifest.json"
    manifest.write_bytes(damage(manifest.read_bytes()))
    with pytest.raises(ValueError, match=r"manifest.json is damaged .*run FeatureStore.encode"):
        store.load("toy", "audio", "clips")
    with caplog.at_level(logging.WARNING, logger="spacegraph._features"):
        assert torch.equal(store.encode(space, "audio", "clips", inputs), first)
    assert "is damaged" in caplog.text and calls == [10, 10, 5]
    assert torch.equal(store.load("toy", "audio", "clips"), first)


def test_manifest_of_format_1_is_extracted_again(tmp_path):
    space, store, inputs, first, calls, folder = _toy_cache(tmp_path)
    old = json.loads((folder / "manifest.json").read_text())
    old.update(format_version=1, shards=[s["file"] for s in old["shards"]])
    (folder / "manifest.json").write_text(json.dumps(old, indent=2))
    assert torch.equal(store.encode(space, "audio", "clips", inputs), first) and calls == [10, 10, 5]


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "openclip:ViT-B/32", "..", "a/../../b"])
def test_space_names_never_leave_the_cache_root(tmp_path, name):
    if name == "/abs/path":
        name = str(tmp_path / "victim")
        (tmp_path / "victim/audio/clips").mkdir(parents=True)
        (tmp_path / "victim/audio/clips/manifest.json").write_text('{"format_version": 9}')  # not matching
    root = tmp_path / "deep/cache"
    root.mkdir(parents=True)
    outside = tree(tmp_path)
    space = ToySpace(name, ("audio", "text"), 4)
    inputs = np.ones((3, 8), np.float32)
    got = sg.FeatureStore(root).encode(space, "audio", "clips", inputs)
    assert torch.equal(sg.FeatureStore(root).load(name, "audio", "clips"), got)
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("deep/cache/")} == outside
    assert len({path.name for path in root.iterdir()} - {".locks"}) == 1  # one folder for the space, in the root


def test_foreign_folder_with_a_non_matching_manifest_is_not_deleted(tmp_path):
    folder = tmp_path / "toy/audio/clips"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"title": "my photos", "count": 3}')
    (folder / "photo.jpg").write_bytes(b"precious")
    before = tree(folder)
    store = sg.FeatureStore(tmp_path)
    with pytest.raises(ValueError, match=r"clips holds a manifest.json that is not a spacegraph feature manifest"):
        store.encode(ToySpace("toy", ("audio", "text"), 4), "audio", "clips", np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match="not a spacegraph feature manifest"):
        store.load("toy", "audio", "clips")
    assert tree(folder) == before


def test_other_inputs_replace_only_the_cache_files(tmp_path):
    space, store, inputs, first, _, folder = _toy_cache(tmp_path)
    (folder / "notes.txt").write_text("mine")
    (folder / "shard-old").write_text("mine too")
    second = store.encode(space, "audio", "clips", inputs[:12])
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "notes.txt",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-old",
    ]
    assert torch.equal(second, first[:12]) and (folder / "notes.txt").read_text() == "mine"


WRITER = """
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from tests.conftest import ToySpace
import spacegraph as sg

class SlowSpace(ToySpace):
    def _encode_batch(self, modality, batch):
        time.sleep(0.01)
        return super()._encode_batch(modality, batch)

seed, rounds, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
space = SlowSpace("toy", ("audio", "text"), 6)
inputs = np.random.default_rng(seed).normal(size=(30 + 7 * seed, 8)).astype("float32")
expected = space.encode("audio", inputs)
store = sg.FeatureStore(go.parent / "cache", shard_rows=4)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
correct = sum(torch.equal(store.encode(space, "audio", "shared", inputs), expected) for _ in range(rounds))
print(json.dumps({{"correct": correct}}))
"""


def test_two_processes_writing_one_dataset_each_get_their_own_rows(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    go, rounds = tmp_path / "go", 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(seed), str(rounds), str(go)], stdout=subprocess.PIPE, text=True, env=env
        )
        for seed in (1, 2)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert results == [{"correct": rounds}, {"correct": rounds}]
    assert sg.FeatureStore(tmp_path / "cache").load("toy", "audio", "shared").shape[0] in (37, 44)


@pytest.mark.parametrize("linked", ["space", "modality", "dataset"])
def test_a_symlinked_folder_below_the_root_is_refused_before_any_write(tmp_path, linked):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    store = sg.FeatureStore(root)
    space = ToySpace("toy", ("audio", "text"), 4)
    folder = store.folder("toy", "audio", "clips")
    target = {"space": folder.parent.parent, "modality": folder.parent, "dataset": folder}[linked]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside, target_is_directory=True)
    with pytest.raises(sg.SpacegraphValueError, match="is a symbolic link: the feature store reads and writes only"):
        store.encode(space, "audio", "clips", np.ones((3, 8), np.float32))
    assert list(outside.iterdir()) == []


def test_shards_swapped_with_their_checksums_are_refused_and_extracted_again(tmp_path, caplog):
    store = sg.FeatureStore(tmp_path, shard_rows=2)
    space, inputs = ToySpace("toy", ("audio",), 4), np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    expected = store.encode(space, "audio", "clips", inputs)
    folder = store.folder("toy", "audio", "clips")
    first, second = folder / "shard-00000.safetensors", folder / "shard-00001.safetensors"
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes), second.write_bytes(first_bytes)
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = manifest["shards"]
    shards[0]["sha256"], shards[1]["sha256"] = shards[1]["sha256"], shards[0]["sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sg.SpacegraphValueError, match="was written as shard 1 of inputs .* not as shard 0 of inputs"):
        store.load("toy", "audio", "clips")
    assert torch.equal(store.encode(space, "audio", "clips", inputs), expected)  # both extracted again
    assert torch.equal(store.load("toy", "audio", "clips"), expected)


USER_FILES = {
    "text": ("shard-00005.safetensors", lambda path: path.write_text("my notes")),
    "safetensors": ("shard-00003.safetensors", lambda path: path.write_bytes(save_safetensors({"x": torch.ones(2)}))),
    "progress": ("progress-00001-rank-00000.json", lambda path: path.write_text('{"mine": true}')),
    "link": ("shard-00004.safetensors", lambda path: path.symlink_to(path.parent.parent / "elsewhere")),
    "fifo": ("progress-00002-rank-00001.json", lambda path: os.mkfifo(path)),
}


@pytest.mark.parametrize("kind", sorted(USER_FILES))
@pytest.mark.parametrize("beside_a_cache", [False, True])
def test_a_users_file_named_like_a_cache_file_is_never_removed_or_replaced(tmp_path, kind, beside_a_cache):
    store = sg.FeatureStore(tmp_path / "root", shard_rows=4)
    space, inputs = ToySpace("toy", ("audio",), 4), np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    folder = store.folder("toy", "audio", "clips")
    folder.mkdir(parents=True)
    (tmp_path / "root" / "toy" / "audio" / "elsewhere").write_text("mine")
    if beside_a_cache:
        store.encode(space, "audio", "clips", inputs)
    name, write = USER_FILES[kind]
    write(folder / name)
    before = tree(folder.parent)
    with pytest.raises(sg.SpacegraphValueError, match=rf"holds {re.escape(name)}: named like the feature cache's"):
        store.encode(space, "audio", "clips", inputs[:5])  # other inputs: the cache's own files would be replaced
    assert tree(folder.parent) == before and os.path.lexists(folder / name)
