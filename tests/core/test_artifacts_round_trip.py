import json

import numpy as np
import pytest
import torch

import spacegraph as sg
from spacegraph._atomic import OWNERSHIP
from tests.conftest import ToySpace, random_unit
from tests.core.test_graph_connects_and_plans import make_bridge


def test_bridge_save_load_is_exact(toy_spaces, tmp_path):
    bridge = make_bridge(*toy_spaces)
    folder = bridge.save(tmp_path / "bridge")
    assert sorted(p.name for p in folder.iterdir()) == [OWNERSHIP, "bridge.json", "heads.safetensors"]
    loaded = sg.Bridge.load(folder)
    assert loaded.card == bridge.card
    for name in bridge.space_names:
        for (k, a), b in zip(bridge.head(name).state_dict().items(), loaded.head(name).state_dict().values()):
            torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)
    inputs = random_unit(7, 6, 5)
    torch.testing.assert_close(loaded.project("toy-at", inputs), bridge.project("toy-at", inputs), atol=0, rtol=0)
    running_mean = loaded.head("toy-at").net[1].running_mean
    assert running_mean.abs().sum() > 0  # BatchNorm statistics travel with the weights


def test_card_is_json_with_versions_and_fingerprints(toy_spaces, tmp_path):
    x, y = toy_spaces
    card = json.loads((make_bridge(x, y).save(tmp_path / "b") / "bridge.json").read_text())
    assert card["format_version"] == 1 and card["library_version"] == sg.__version__
    assert [s["fingerprint"] for s in card["spaces"]] == [x.spec.fingerprint, y.spec.fingerprint]
    assert card["overlap"] == "text" and "estimate" in card["quality"] and card["training"]["steps"] == 5


def test_a_failed_save_leaves_nothing_and_keeps_the_old_bridge(toy_spaces, tmp_path, monkeypatch):
    bridge = make_bridge(*toy_spaces)
    folder = bridge.save(tmp_path / "bridge")
    before = (folder / "heads.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("spacegraph._bridge.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        bridge.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridge"]
    assert (folder / "heads.safetensors").read_bytes() == before


def test_load_refuses_missing_files_and_bad_cards(toy_spaces, tmp_path):
    with pytest.raises(FileNotFoundError, match="no bridge.json, heads.safetensors there; a bridge folder holds"):
        sg.Bridge.load(tmp_path)
    folder = make_bridge(*toy_spaces).save(tmp_path / "b")
    card = json.loads((folder / "bridge.json").read_text())
    (folder / "bridge.json").write_text(json.dumps({**card, "colour": "blue"}))
    with pytest.raises(sg.SpacegraphValueError, match="colour: Extra inputs are not permitted"):
        sg.Bridge.load(folder)
    (folder / "bridge.json").write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(ValueError, match="newer than this spacegraph reads"):
        sg.Bridge.load(folder)


class CountingSpace(ToySpace):
    """A toy space that records the size of every batch it encodes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def _encode_batch(self, modality, batch):
        self.calls.append(len(batch))
        return super()._encode_batch(modality, batch)


def test_feature_store_caches_and_resumes(tmp_path):
    space = CountingSpace("toy", ("audio", "text"), 4)
    calls = space.calls
    store = sg.FeatureStore(tmp_path, shard_rows=10)
    inputs = np.random.default_rng(0).normal(size=(25, 8)).astype("float32")
    expected = ToySpace("toy", ("audio", "text"), 4)._encode_batch(sg.Modality.AUDIO, inputs)
    first = store.encode(space, "audio", "clips", inputs)
    assert calls == [10, 10, 5]
    torch.testing.assert_close(first, torch.nn.functional.normalize(expected, dim=-1))
    second = store.encode(space, "audio", "clips", inputs)
    assert calls == [10, 10, 5] and torch.equal(first, second)  # read back, not re-encoded
    manifest = json.loads((tmp_path / "toy/audio/clips/manifest.json").read_text())
    assert manifest["n_items"] == 25 and len(manifest["shards"]) == 3
    # An interrupted extraction resumes after its last finished shard.
    manifest["shards"] = manifest["shards"][:1]
    (tmp_path / "toy/audio/clips/manifest.json").write_text(json.dumps(manifest))
    calls.clear()
    torch.testing.assert_close(store.encode(space, "audio", "clips", inputs), first)
    assert calls == [10, 5]
    # Other inputs under the same name are extracted again, never served stale.
    calls.clear()
    store.encode(space, "audio", "clips", inputs[:12])
    assert calls == [10, 2]


def test_feature_store_errors(tmp_path):
    store = sg.FeatureStore(tmp_path)
    space = ToySpace("toy", ("audio", "text"), 4)
    with pytest.raises(ValueError, match="dataset name '../x' cannot name a file or folder"):
        store.encode(space, "audio", "../x", np.zeros((2, 8)))
    with pytest.raises(FileNotFoundError, match="no cached features"):
        store.load("toy", "audio", "never")
    with pytest.raises(ValueError, match="does not embed 'image'; it embeds: audio, text"):
        store.encode(space, "image", "x", np.zeros((2, 8)))
