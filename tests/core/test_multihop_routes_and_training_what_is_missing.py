"""Extend bridges, joint spaces as spaces, multi-hop routes, the planner and training what is missing."""

import pytest
import torch
from spacegraph_bridges.cmcr import CMCRMethod

import spacegraph as sg
from tests.conftest import ToySpace, random_unit
from tests.core.test_graph_connects_and_plans import QUICK, make_bridge, with_score


def features_for(x, y, seed=0):
    dims = x.spec.dim, y.spec.dim
    return sg.BridgeFeatures(
        random_unit(40, dims[0], seed),
        random_unit(40, dims[1], seed + 1),
        random_unit(20, dims[0], seed + 2),
        random_unit(20, dims[1], seed + 3),
    )


def make_extend(source, target, overlap="text", name=None):
    config = {**QUICK, "kind": "extend"}
    bridge = CMCRMethod().train(
        source.spec, target.spec, overlap, features_for(source, target), config, name=name, show_progress_bar=False
    )
    return bridge


@pytest.fixture
def three():
    return (
        ToySpace("at", ("audio", "text"), 6, seed=1),
        ToySpace("ti", ("text", "image"), 10, seed=2),
        ToySpace("il", ("image", "lowres_image"), 5, seed=3),
    )


def test_extend_trains_only_the_source_head_and_keeps_the_target_frozen(three, tmp_path):
    at, ti, _ = three
    bridge = make_extend(at, ti)
    assert bridge.card.kind == "extend" and bridge.card.headed_spaces == ["at"] and bridge.card.target == "ti"
    assert bridge.head("at").spec.out_dim == ti.spec.dim
    graph = sg.SpaceGraph([at, ti], [bridge])
    route = graph.connect("audio", "image")
    assert route.common_space == "ti" and route.hops == 1
    images = torch.randn(4, 8)
    # Inside the target nothing changes: its own embeddings are the route's.
    torch.testing.assert_close(route.encode("image", images), ti.encode("image", images))
    loaded = sg.Bridge.load(bridge.save(tmp_path / "extend"))
    probe = torch.randn(3, 6)
    torch.testing.assert_close(loaded.project("at", probe), bridge.project("at", probe), atol=0, rtol=0)
    with pytest.raises(sg.UnknownNameError, match="has no head for space 'ti'"):
        bridge.head("ti")


def test_joint_space_is_a_space_and_round_trips(three, tmp_path):
    at, ti, _ = three
    bridge = make_bridge(at, ti)
    joint = sg.JointSpace(bridge, [at, ti])
    assert joint.spec.name == bridge.name and set(joint.modalities) == {
        sg.Modality(m) for m in ("audio", "text", "image")
    }
    audio = torch.randn(3, 8)
    torch.testing.assert_close(joint.encode("audio", audio), bridge.project("at", at.encode("audio", audio)))
    joint.save(tmp_path / "joint")
    again = sg.JointSpace.load(tmp_path / "joint", [at, ti])
    assert again.spec == joint.spec
    torch.testing.assert_close(
        again.encode("image", torch.randn(2, 8, generator=torch.Generator().manual_seed(0))),
        joint.encode("image", torch.randn(2, 8, generator=torch.Generator().manual_seed(0))),
    )
    with pytest.raises(ValueError, match="needs its spaces \\['ti'\\]"):
        sg.JointSpace(bridge, [at])


def test_two_hop_route_equals_applying_the_heads_by_hand(three):
    at, ti, il = three
    first = make_bridge(at, ti, name="at+ti")
    graph = sg.SpaceGraph([at, ti, il], [first])
    joint = graph.space("at+ti")
    second = CMCRMethod().train(
        joint.spec, il.spec, "image", features_for(joint, il, seed=5), QUICK, name="j+il", show_progress_bar=False
    )
    graph.add_bridge(second)
    route = graph.connect("audio", "lowres_image")
    assert route.common_space == "j+il" and route.hops == 3
    audio, lowres = torch.randn(3, 8), torch.randn(2, 8)
    by_hand_audio = second.project("at+ti", first.project("at", at.encode("audio", audio)))
    by_hand_lowres = second.project("il", il.encode("lowres_image", lowres))
    torch.testing.assert_close(route.encode("audio", audio), by_hand_audio)
    torch.testing.assert_close(route.similarity(audio, lowres), by_hand_audio @ by_hand_lowres.T)
    assert [b.name for b in route.bridges] == ["at+ti", "j+il"]


def test_extend_chain_meets_at_the_hub(three):
    at, ti, il = three
    graph = sg.SpaceGraph([at, ti, il], [make_extend(at, ti), make_extend(il, ti, overlap="image")])
    route = graph.connect("audio", "lowres_image")
    assert route.common_space == "ti" and route.hops == 2


def test_planner_avoids_a_weakened_bridge_and_says_why(three):
    at, ti, il = three
    weak = with_score(make_extend(at, ti, name="weak"), 0.05)
    strong = make_bridge(at, ti, quality=0.9, name="a")
    graph = sg.SpaceGraph([at, ti, il], [weak, strong])
    plan = graph.plan("audio", "image")
    assert [r.common_space for r in plan.routes] == ["a", "ti"]
    assert plan.chosen.expected_quality == pytest.approx(0.9)
    assert [row["bridges"][0][:2] for row in plan.rows()] == [("a", "connect"), ("weak", "extend")]
    explained = plan.explain()
    assert "bridge 'weak' (extend): 0.050, given" in explained
    assert "ahead of #2 at 0.050; its weakest bridge is 'weak' at 0.050" in explained


def test_cycles_do_not_trap_the_planner(three):
    at, ti, _ = three
    there, back = make_extend(at, ti, name="there"), make_extend(ti, at, name="back")
    graph = sg.SpaceGraph([at, ti], [there, back])
    assert graph.connect("audio", "image").hops == 1


def test_a_changed_parent_bridge_is_refused(three, tmp_path):
    at, ti, il = three
    first = make_bridge(at, ti, name="at+ti")
    joint = sg.JointSpace(first, [at, ti])
    second = CMCRMethod().train(
        joint.spec, il.spec, "image", features_for(joint, il), QUICK, name="j+il", show_progress_bar=False
    )
    retrained = make_bridge(at, ti, name="at+ti")
    with torch.no_grad():
        retrained.head("at").net[0].weight.add_(0.1)
    graph = sg.SpaceGraph([at, ti, il], [retrained])
    with pytest.raises(sg.FingerprintMismatchError, match="space 'at\\+ti' with fingerprint"):
        graph.add_bridge(second)


def test_train_missing_trains_the_link_from_registered_data(three, tmp_path):
    at, ti, _ = three
    graph = sg.SpaceGraph([at, ti], store=tmp_path / "cache")
    with pytest.raises(sg.NoRouteError, match="registered: none"):
        graph.connect("audio", "image", train_missing=True, config=QUICK, show_progress_bar=False)
    generator = torch.Generator().manual_seed(0)
    graph.add_data("text", "texts", torch.randn(40, 8, generator=generator))
    graph.add_data("audio", "clips", torch.randn(20, 8, generator=generator))
    graph.add_data("image", "pictures", torch.randn(20, 8, generator=generator))
    route = graph.connect("audio", "image", train_missing=True, config=QUICK, show_progress_bar=False)
    (bridge,) = graph.bridges
    assert route.common_space == bridge.name and bridge.card.overlap == sg.Modality.TEXT
    assert bridge.card.data == {"overlap": 40, "memory_x": 20, "memory_y": 20}
    assert (tmp_path / "cache" / "at" / "text" / "texts" / "manifest.json").is_file()
    assert graph.connect("audio", "image", train_missing=True).common_space == bridge.name  # nothing re-trained
    assert len(graph.bridges) == 1
