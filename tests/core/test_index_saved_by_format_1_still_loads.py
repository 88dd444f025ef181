"""An index folder saved before the index knew nothing of routes (format 1, its identity under "route") loads, and
a route still refuses it when it embeds the indexed side differently."""

import json

import pytest
import torch

import spacegraph as sg
from tests.conftest import ToySpace
from tests.core.test_planning_reads_cards_without_validating_them import connect_bridge


def as_format_1(folder):
    """Rewrite a saved manifest as format 1 wrote it: the same fields, the identity named "route"."""
    manifest = json.loads((folder / "index.json").read_text())
    manifest["format_version"], manifest["route"] = 1, manifest.pop("identity")
    (folder / "index.json").write_text(json.dumps(manifest, indent=2))


def test_a_format_1_index_loads_for_its_route_and_is_refused_by_another(tmp_path):
    at, ti = ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)
    route = sg.SpaceGraph([at, ti], [connect_bridge(at, ti, "text", 0.8, "at+ti")]).connect("audio", "image")
    images, audio = torch.randn(30, 8).numpy(), torch.randn(3, 8).numpy()
    route.index(images, ids=[f"i{n}" for n in range(30)]).save(tmp_path / "index")
    before = route.search(audio, k=4)
    as_format_1(tmp_path / "index")
    loaded = route.load_index(tmp_path / "index")
    assert loaded.identity["indexed"]["modality"] == "image" and route.search(audio, k=4).ids == before.ids
    assert len(sg.SearchIndex.load(tmp_path / "index")) == 30
    other = sg.SpaceGraph([at, ti], [connect_bridge(at, ti, "text", 0.8, "other")]).connect("audio", "image")
    with pytest.raises(sg.SpacegraphValueError, match="built for another route"):
        other.load_index(tmp_path / "index")
