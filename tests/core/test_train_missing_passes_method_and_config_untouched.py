"""train_missing(method=, config=) hands the method the user's config exactly as given: no key added or changed."""

import copy
from typing import ClassVar

import pytest
import torch

import spacegraph as sg
from spacegraph.plugin import SpaceRef, register_bridge_method
from tests.conftest import ToySpace


class Recording:
    """A bridge method that records each call and returns an untrained connect bridge."""

    calls: ClassVar[list] = []

    def train(self, x, y, overlap, features, config=None, *, name=None, show_progress_bar=True):
        self.calls.append({"method": self.name, "overlap": overlap, "features": features, "config": config})
        heads = {ref.name: sg.HeadSpec(in_dim=ref.dim, hidden_dim=8, out_dim=4) for ref in (x, y)}
        card = sg.BridgeCard(
            library_version=sg.__version__, name=name or f"{x.name}+{y.name}", method=self.name, kind="connect",
            spaces=(SpaceRef.of(x), SpaceRef.of(y)), overlap=overlap, heads=heads,
        )  # fmt: skip
        return sg.Bridge(card)


@register_bridge_method("test-recording-a")
class RecordingA(Recording):
    name = "test-recording-a"


@register_bridge_method("test-recording-b")
class RecordingB(Recording):
    name = "test-recording-b"


@pytest.fixture
def graph(tmp_path):
    Recording.calls.clear()
    spaces = ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)
    graph = sg.SpaceGraph(spaces, store=tmp_path / "cache")
    graph.add_data("text", "texts", torch.randn(30, 8, generator=torch.Generator().manual_seed(0)))
    return graph


@pytest.mark.parametrize("method", ["test-recording-a", "test-recording-b"])
def test_the_chosen_method_gets_the_users_config_object_unchanged(graph, method):
    config = {"steps": 3, "use_memory": "left to the method", "nested": {"lr": 0.1}}
    given = copy.deepcopy(config)
    bridge = graph.train_missing("audio", "image", method=method, config=config, show_progress_bar=False)
    [call] = Recording.calls
    assert call["method"] == method and bridge.card.method == method
    assert call["config"] is config and config == given  # the very object, not a copy with keys added
    assert call["overlap"] == sg.Modality.TEXT
    assert call["features"].memory_x is None and call["features"].memory_y is None  # no memory registered
    assert graph.connect("audio", "image").common_space == bridge.name


def test_no_config_reaches_the_method_as_none_and_memories_as_registered(graph):
    graph.add_data("audio", "clips", torch.randn(12, 8, generator=torch.Generator().manual_seed(1)))
    graph.connect("audio", "image", train_missing=True, method="test-recording-a", show_progress_bar=False)
    [call] = Recording.calls
    assert call["config"] is None
    assert call["features"].memory_x is not None and call["features"].memory_y is None
