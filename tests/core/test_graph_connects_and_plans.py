import pytest
import torch
from spacegraph_bridges.cmcr import CMCRMethod

import spacegraph as sg
from tests.conftest import ToySpace, random_unit

QUICK = {"steps": 5, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def make_bridge(x, y, overlap="text", quality=None, name=None):
    features = sg.BridgeFeatures(
        random_unit(40, x.spec.dim, 0),
        random_unit(40, y.spec.dim, 1),
        random_unit(20, x.spec.dim, 2),
        random_unit(20, y.spec.dim, 3),
    )
    bridge = CMCRMethod().train(x.spec, y.spec, overlap, features, QUICK, name=name, show_progress_bar=False)
    return bridge if quality is None else with_score(bridge, quality)


def with_score(bridge, score):
    """``bridge`` with a quality given by hand: a new card, as cards are frozen."""
    bridge.card = bridge.card.model_copy(update={"quality": {**bridge.card.quality, "score": score}})
    return bridge


def test_connect_encodes_both_modalities_through_the_bridge(toy_spaces):
    x, y = toy_spaces
    bridge = make_bridge(x, y)
    graph = sg.SpaceGraph([x, y], [bridge])
    route = graph.connect("audio", "image")
    assert route.common_space == bridge.name and route.hops == 2
    audio, image = torch.randn(3, 8), torch.randn(4, 8)
    expected_a = bridge.project("toy-at", x.encode("audio", audio))
    expected_i = bridge.project("toy-ti", y.encode("image", image))
    torch.testing.assert_close(route.encode("audio", audio), expected_a)
    torch.testing.assert_close(route.similarity(audio, image), expected_a @ expected_i.T)
    assert route.encode("audio", audio).shape == (3, QUICK["out_dim"])


def test_a_space_with_both_modalities_needs_no_bridge(toy_spaces):
    x, _ = toy_spaces
    route = sg.SpaceGraph([x]).connect("audio", "text")
    assert route.hops == 0 and route.common_space == "toy-at"
    torch.testing.assert_close(route.encode("text", torch.ones(1, 8)), x.encode("text", torch.ones(1, 8)))


def test_no_route_names_each_component(toy_spaces):
    graph = sg.SpaceGraph(toy_spaces)
    with pytest.raises(sg.NoRouteError, match=r"\[toy-at\] with \{audio, text\}; \[toy-ti\] with \{image, text\}"):
        graph.connect("audio", "image")
    with pytest.raises(sg.NoRouteError, match="no space in the graph embeds 'depth'"):
        graph.connect("audio", "depth")
    with pytest.raises(ValueError, match="unknown modality 'imgae'"):
        graph.connect("audio", "imgae")


def test_planner_prefers_the_better_measured_bridge(toy_spaces):
    x, y = toy_spaces
    graph = sg.SpaceGraph([x, y])
    graph.add_bridge(make_bridge(x, y, quality=0.2, name="weak"))
    graph.add_bridge(make_bridge(x, y, quality=0.9, name="strong"))
    routes = graph.routes("audio", "image")
    assert [r.common_space for r in routes] == ["strong", "weak"]
    assert graph.connect("audio", "image").cost == pytest.approx(-torch.log(torch.tensor(0.9)).item())


def test_bridge_errors(toy_spaces, tmp_path):
    x, y = toy_spaces
    bridge = make_bridge(x, y)
    with pytest.raises(sg.UnknownNameError, match="reads from space 'toy-ti', which is not in the graph"):
        sg.SpaceGraph([x]).add_bridge(bridge)
    graph = sg.SpaceGraph([x, y], [bridge])
    with pytest.raises(ValueError, match="a bridge is added once"):
        graph.add_bridge(bridge)
    changed = ToySpace("toy-ti", ("text", "image"), 10, seed=99)
    with pytest.raises(sg.FingerprintMismatchError, match="space 'toy-ti' with fingerprint .* its weights differ"):
        sg.SpaceGraph([x, changed], [bridge])
    with pytest.raises(ValueError, match=r"expected shape \[n, 6\]"):
        bridge.project("toy-at", torch.randn(2, 10))
    with pytest.raises(
        ValueError, match="this route's ends are source toy-at:audio, target toy-ti:image; none is 'text'"
    ):
        graph.connect("audio", "image").encode("text", torch.randn(1, 8))
    with pytest.raises(sg.UnknownNameError, match="unknown bridge method 'cmrc'; registered: .*cmcr"):
        graph.train_bridge("toy-at", "toy-ti", overlap="text", features=None, method="cmrc")


def test_train_bridge_through_the_graph(toy_spaces):
    x, y = toy_spaces
    graph = sg.SpaceGraph([x, y])
    features = sg.BridgeFeatures(
        random_unit(40, 6, 0), random_unit(40, 10, 1), random_unit(20, 6, 2), random_unit(20, 10, 3)
    )
    bridge = graph.train_bridge(
        "toy-at", "toy-ti", overlap="text", features=features, config=QUICK, show_progress_bar=False
    )
    assert graph.bridges == [bridge] and graph.connect("image", "audio").common_space == bridge.name
