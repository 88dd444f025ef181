"""A bridge method written on spacegraph.plugin.BridgeMethodBase implements only its training (``fit``): the base
resolves the config, checks the spaces and the features before training, measures the heads and builds a complete
card, for connect and extend bridges alike."""

import pytest
import torch
from pydantic import BaseModel, ConfigDict

import spacegraph as sg
from spacegraph.plugin import BridgeMethod, BridgeMethodBase, HeadSpec, ProjectionHead, TrainedHeads
from tests.conftest import random_unit


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dim: int = 4
    extend: bool = False


class UntrainedHeads(BridgeMethodBase[Settings]):
    """Heads at their seeded initial weights, the last 4 overlap rows held out: no training at all."""

    name = "untrained"
    config_class = Settings

    def __init__(self) -> None:
        self.calls = []

    def fit(self, x, y, overlap, features, config, *, show_progress_bar):
        self.calls.append((x.name, y.name, overlap, config))
        torch.manual_seed(0)
        out_dim = y.dim if config.extend else config.out_dim
        head_x = ProjectionHead(HeadSpec(in_dim=x.dim, hidden_dim=8, out_dim=out_dim))
        head_y = None if config.extend else ProjectionHead(HeadSpec(in_dim=y.dim, hidden_dim=8, out_dim=out_dim))
        held_out = torch.arange(len(features.overlap_x) - 4, len(features.overlap_x))
        return TrainedHeads(head_x, head_y, held_out, record={"note": "untrained"}, quality={"made_up": 0.5})


def features(memories: bool = True) -> sg.BridgeFeatures:
    overlap = random_unit(30, 6, 0), random_unit(30, 10, 1)
    return sg.BridgeFeatures(*overlap, *((random_unit(12, 6, 2), random_unit(12, 10, 3)) if memories else ()))


def test_the_base_builds_a_complete_card_with_measured_quality(toy_spaces):
    x, y = toy_spaces
    method = UntrainedHeads()
    assert isinstance(method, BridgeMethod)
    bridge = method.train(x.spec, y.spec, "text", features(), {"out_dim": 4}, show_progress_bar=False)
    card = bridge.card
    assert (card.name, card.method, card.kind, card.overlap) == ("toy-at+toy-ti", "untrained", "connect", "text")
    assert card.library_version == sg.__version__ and card.spaces == (
        sg.plugin.SpaceRef.of(x.spec),
        sg.plugin.SpaceRef.of(y.spec),
    )
    assert card.heads == {
        "toy-at": HeadSpec(in_dim=6, hidden_dim=8, out_dim=4),
        "toy-ti": HeadSpec(in_dim=10, hidden_dim=8, out_dim=4),
    }
    assert card.training == {"out_dim": 4, "extend": False, "note": "untrained"}
    assert card.data == {"overlap": 30, "memory_x": 12, "memory_y": 12}
    assert {"held_out_R@1", "n_val", "estimate", "estimate_clusters", "made_up", "train_seconds"} <= set(card.quality)
    assert card.quality["n_val"] == 4 and card.score == card.quality["estimate"]
    assert method.calls == [("toy-at", "toy-ti", sg.Modality.TEXT, Settings(out_dim=4))]
    torch.manual_seed(0)
    reference = ProjectionHead(HeadSpec(in_dim=6, hidden_dim=8, out_dim=4)).eval()
    rows = features().overlap_x[:5]
    torch.testing.assert_close(bridge.project("toy-at", rows), reference(rows))


def test_an_extend_fit_without_a_second_head_makes_an_extend_card(toy_spaces):
    x, y = toy_spaces
    bridge = UntrainedHeads().train(x.spec, y.spec, "text", features(memories=False), {"extend": True})
    card = bridge.card
    assert (card.kind, card.name, list(card.heads), card.target) == ("extend", "toy-at->toy-ti", ["toy-at"], "toy-ti")
    assert "estimate" not in card.quality and card.quality["n_val"] == 4  # no memories: no label-free estimate


def test_configs_resolve_or_are_refused_naming_the_accepted_fields(toy_spaces):
    x, y = toy_spaces
    method = UntrainedHeads()
    assert method.resolve_config(None) == Settings() and method.resolve_config({"out_dim": 3}) == Settings(out_dim=3)
    given = Settings(out_dim=2)
    assert method.resolve_config(given) is given
    with pytest.raises(
        sg.SpacegraphValueError,
        match=r"'untrained': invalid config \(out_dimm: Extra .*accepted fields: out_dim, extend",
    ):
        method.train(x.spec, y.spec, "text", features(), {"out_dimm": 3})
    with pytest.raises(sg.SpacegraphTypeError, match="config is None, a dict or a Settings; got list"):
        method.train(x.spec, y.spec, "text", features(), [("out_dim", 3)])
    assert method.calls == []


def test_spaces_and_features_are_checked_before_training(toy_spaces):
    x, y = toy_spaces
    method = UntrainedHeads()
    with pytest.raises(sg.SpacegraphValueError, match="space 'toy-at' has no 'image' to bridge through"):
        method.train(x.spec, y.spec, "image", features())
    with pytest.raises(sg.SpacegraphValueError, match="a bridge joins two different spaces"):
        method.train(x.spec, x.spec, "text", features())
    swapped = sg.BridgeFeatures(random_unit(30, 10, 0), random_unit(30, 6, 1))
    with pytest.raises(ValueError, match=r"expected shape \[n, 6\], got \[30, 10\]"):
        method.train(x.spec, y.spec, "text", swapped)
    assert method.calls == []


def test_a_method_on_the_base_trains_through_the_graph(toy_spaces):
    sg.register_bridge_method("test-untrained")(UntrainedHeads)
    graph = sg.SpaceGraph(list(toy_spaces))
    bridge = graph.train_bridge(
        "toy-at", "toy-ti", overlap="text", features=features(), method="test-untrained", show_progress_bar=False
    )
    assert graph.bridges == [bridge] and graph.connect("audio", "image").common_space == "toy-at+toy-ti"
