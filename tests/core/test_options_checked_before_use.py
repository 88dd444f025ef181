"""Options are checked before use: a count of the wrong type, a device this machine lacks or torch does not know,
a search option that crashes faiss, a JSON file nested too deep, a non-bridge given as a bridge and a card that
contradicts its space are each a clear error naming the option or file, raised before any work or write (a head
width no machine can allocate: test_artifacts_refuse_bad_files.py)."""

import json
import re
import shutil

import numpy as np
import pytest
import spacegraph_spaces
import torch
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads
from spacegraph_spaces.digits import DigitsImageTextSpace

import spacegraph as sg
from tests.conftest import random_unit
from tests.core.test_graph_connects_and_plans import make_bridge

ASSETS = spacegraph_spaces.__path__[0] + "/assets"


@pytest.mark.parametrize("bad", [2.5, "3", True, 0, None])
def test_counts_must_be_integers(bad, tmp_path, toy_spaces):
    x, y = toy_spaces
    with pytest.raises(sg.SpacegraphValueError, match=rf"batch_size must be an integer >= 1, got {bad!r}"):
        x.encode("audio", np.ones((3, 8), np.float32), batch_size=bad)
    with pytest.raises(sg.SpacegraphValueError, match=rf"shard_rows.*integer.*got .*{re.escape(repr(bad))}"):
        sg.FeatureStore(tmp_path, shard_rows=bad)
    graph = sg.SpaceGraph([x, y], [make_bridge(x, y)])
    with pytest.raises(sg.SpacegraphValueError, match=rf"max_routes.*integer.*got .*{re.escape(repr(bad))}"):
        graph.plan("audio", "image", max_routes=bad)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "'tpu' is not a device torch knows; accepted: 'cpu', 'cuda'"),
        ("cuda:99", r"'cuda:99': this machine has \d+ CUDA device\(s\)"),
        (3, "device must be .*; got a int"),
    ],
)
def test_devices_are_checked_before_anything_moves(device, message, toy_spaces):
    space = toy_spaces[0]
    with pytest.raises(sg.SpacegraphError, match=message):
        space.to(device)
    with pytest.raises(sg.SpacegraphError, match=message):
        space.encode("audio", np.ones((2, 8), np.float32), device=device)
    assert space.device == torch.device("cpu")


def test_training_devices_are_checked_in_the_config_and_before_training():
    with pytest.raises(ValueError, match="'tpu' is not a device torch knows"):
        CMCRConfig(device="tpu")
    features = sg.BridgeFeatures(random_unit(20, 6, 0), random_unit(20, 5, 1))
    with pytest.raises(sg.SpacegraphValueError, match=r"config.device 'cuda:99': this machine has \d+ CUDA"):
        fit_heads(features, CMCRConfig(device="cuda:99", steps=1, batch_size=4), show_progress_bar=False)


def test_hnsw_with_one_link_per_node_is_refused_not_a_segfault():
    pytest.importorskip("faiss")
    with pytest.raises(sg.SpacegraphValueError, match=r"M >= 2: faiss crashes below.*'M': 1"):
        sg.SearchIndex.build(random_unit(50, 8, 0), backend="faiss-hnsw", M=1)


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_nested_too_deep_is_a_damaged_file(toy_spaces, tmp_path):
    folder = make_bridge(*toy_spaces).save(tmp_path / "bridge")
    (folder / "bridge.json").write_text(DEEP)
    with pytest.raises(sg.SpacegraphValueError, match="bridge.json: not a readable JSON bridge card"):
        sg.Bridge.load(folder)
    index = sg.SearchIndex.build(random_unit(10, 4, 0), ids=[f"i{n}" for n in range(10)]).save(tmp_path / "index")
    (index / "ids.json").write_text(DEEP)
    with pytest.raises(sg.SpacegraphValueError, match="ids.json: its sha256 differs"):  # checked before parsed
        sg.SearchIndex.load(index)
    (index / "index.json").write_text(DEEP)
    with pytest.raises(sg.SpacegraphValueError, match="not a readable JSON index manifest"):
        sg.SearchIndex.load(index)
    space = shutil.copytree(f"{ASSETS}/digits-image-text", tmp_path / "space")
    (space / "config.json").write_text(DEEP)
    with pytest.raises(sg.SpacegraphValueError, match=r"config\.json"):
        DigitsImageTextSpace(space)


def test_wrong_objects_and_cards_that_contradict_their_space_fail_when_added(toy_spaces, tmp_path):
    x, y = toy_spaces
    graph = sg.SpaceGraph([x, y])
    with pytest.raises(sg.SpacegraphTypeError, match="add_bridge: argument 'bridge': .*instance of Bridge, got str"):
        graph.add_bridge("runs/demo/bridge")
    folder = make_bridge(x, y).save(tmp_path / "bridge")
    card = json.loads((folder / "bridge.json").read_text())
    card["spaces"][0]["modalities"] = ["audio", "text", "depth"]  # the weights' fingerprint is unchanged
    (folder / "bridge.json").write_text(json.dumps(card))
    with pytest.raises(sg.SpacegraphValueError, match="card says space 'toy-at' embeds audio, text, depth in 6 dims"):
        graph.add_bridge(sg.Bridge.load(folder))
    with pytest.raises(sg.SpacegraphTypeError, match=r"space 'precomputed' cannot be built from these arguments"):
        sg.load_space("precomputed")
