"""Pinning the space that encodes each end of a route, and plans that list every entry space's candidates."""

import itertools
import math
import random

import networkx as nx
import pytest
import torch

import spacegraph as sg
from spacegraph._bridge import SpaceRef
from spacegraph._planner import _rank
from tests.conftest import ToySpace
from tests.core.test_graph_connects_and_plans import QUICK


def hand_made_bridge(x: sg.Space, y: sg.Space, quality: float | dict[str, float]) -> sg.Bridge:
    """A connect bridge through text with untrained heads and a quality written by hand (a score, or the card's
    whole ``quality``)."""
    heads = {s.name: sg.HeadSpec(in_dim=s.spec.dim, hidden_dim=8, out_dim=4) for s in (x, y)}
    card = sg.BridgeCard(
        library_version=sg.__version__,
        name=f"{x.name}+{y.name}",
        method="hand-made",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        overlap="text",
        heads=heads,
        quality=quality if isinstance(quality, dict) else {"score": quality},
    )
    return sg.Bridge(card)


@pytest.fixture
def clip():
    return ToySpace("clip", ("text", "image"), 10, seed=2)


@pytest.fixture
def minilm():
    return ToySpace("minilm", ("text",), 6, seed=1)


@pytest.fixture
def graph(clip, minilm):
    torch.manual_seed(0)
    return sg.SpaceGraph([clip, minilm], [hand_made_bridge(minilm, clip, quality=0.8)])


def entries(routes):
    return [(r.source.space.name, r.target.space.name, r.common_space) for r in routes]


def test_an_unpinned_plan_lists_every_text_space_with_the_zero_hop_route_first(graph):
    plan = graph.plan("text", "image")
    assert entries(plan.routes) == [
        ("clip", "clip", "clip"),
        ("clip", "clip", "minilm+clip"),
        ("minilm", "clip", "minilm+clip"),
    ]
    assert plan.chosen.hops == 0 and plan.chosen.cost == 0
    cost = -torch.log(torch.tensor(0.8)).item()
    assert [r.cost for r in plan.routes[1:]] == pytest.approx([cost, cost])  # the shared bridge counts once
    assert graph.connect("text", "image").common_space == "clip"


def test_pin_by_keyword_or_by_space_colon_modality(graph):
    by_keyword = graph.connect("text", "image", source="minilm")
    by_colon = graph.connect("minilm:text", "image")
    expected = "Route(minilm:text -> minilm+clip | clip:image -> minilm+clip; cost=0.223)"
    assert repr(by_keyword) == repr(by_colon) == expected
    assert by_keyword.source.path == ["minilm", "minilm+clip"] and by_keyword.target.path == ["clip", "minilm+clip"]
    assert repr(graph.connect(sg.Modality.TEXT, "image", source="minilm")) == repr(by_keyword)
    assert repr(graph.connect("minilm:text", "image", source="minilm")) == repr(by_keyword)  # both forms agree
    assert "text (encoded by 'minilm') and image (encoded by 'clip') meet in 'minilm+clip'" in by_keyword.describe()


def test_pins_keep_only_candidates_from_the_pinned_spaces(graph):
    assert entries(graph.plan("text", "image", source="clip").routes) == [
        ("clip", "clip", "clip"),
        ("clip", "clip", "minilm+clip"),
    ]
    assert entries(graph.routes("text", "image", source="minilm")) == [("minilm", "clip", "minilm+clip")]
    assert entries(graph.routes("clip:image", "text", target="minilm")) == [("clip", "minilm", "minilm+clip")]
    assert entries(graph.routes("clip:text", "clip:image")) == entries(graph.routes("text", "image", source="clip"))


def test_a_pinned_route_encodes_through_the_pinned_space_and_its_head(graph, clip, minilm):
    bridge = graph.bridges[0]
    texts, images = torch.randn(3, 8), torch.randn(2, 8)
    pinned = graph.connect("text", "image", source="minilm")
    by_hand = bridge.project("minilm", minilm.encode("text", texts))
    torch.testing.assert_close(pinned.encode("text", texts), by_hand)
    assert pinned.encode("text", texts).shape == (3, 4)
    through_clip = graph.plan("text", "image", source="clip").routes[1]  # the same joint space, entered by clip
    assert through_clip.common_space == pinned.common_space
    assert not torch.allclose(pinned.encode("text", texts), through_clip.encode("text", texts))
    unpinned = graph.connect("text", "image")
    torch.testing.assert_close(unpinned.encode("text", texts), clip.encode("text", texts))
    torch.testing.assert_close(
        pinned.similarity(texts, images), by_hand @ bridge.project("clip", clip.encode("image", images)).T
    )


def test_pin_errors_say_what_is_accepted(graph):
    with pytest.raises(sg.UnknownNameError, match="no space named 'minlm' .*spaces that embed 'text': clip, minilm"):
        graph.connect("text", "image", source="minlm")
    with pytest.raises(sg.UnknownNameError, match="no space named 'clp' .*spaces that embed 'image': clip"):
        graph.connect("text", "clp:image")
    with pytest.raises(ValueError, match="space 'minilm' does not embed 'image'; it embeds: text; .*: clip"):
        graph.connect("image", "text", source="minilm")
    with pytest.raises(ValueError, match="'minilm\\+clip' is a joint space"):
        graph.connect("text", "image", source="minilm+clip")
    with pytest.raises(ValueError, match="'minilm:text' pins 'minilm' but source='clip'; name the source space once"):
        graph.connect("minilm:text", "image", source="clip")
    with pytest.raises(ValueError, match="unknown modality 'txt'"):
        graph.connect("minilm:txt", "image")
    with pytest.raises(ValueError, match="max_routes must be an integer >= 1, got 0"):
        graph.plan("text", "image", max_routes=0)


def test_a_pinned_space_without_a_bridge_has_no_route(clip, minilm):
    with pytest.raises(sg.NoRouteError, match="no chain of bridges joins 'minilm:text' and 'image'"):
        sg.SpaceGraph([clip, minilm]).connect("minilm:text", "image")


def test_max_routes_bounds_the_plan_to_its_best_candidates(graph, clip):
    e5 = graph.add_space(ToySpace("e5", ("text",), 5, seed=3))
    graph.add_bridge(hand_made_bridge(e5, clip, quality=0.5))
    full = graph.plan("text", "image")
    assert entries(full.routes) == [
        ("clip", "clip", "clip"),
        ("clip", "clip", "minilm+clip"),
        ("minilm", "clip", "minilm+clip"),
        ("clip", "clip", "e5+clip"),
        ("e5", "clip", "e5+clip"),
    ]
    assert entries(graph.plan("text", "image", max_routes=2).routes) == entries(full.routes[:2])
    assert entries(graph.plan("text", "image", source="e5", max_routes=1).routes) == [("e5", "clip", "e5+clip")]


def test_train_missing_trains_the_bridge_the_pinned_space_lacks(clip, minilm, tmp_path):
    graph = sg.SpaceGraph([clip, minilm], store=tmp_path / "cache")
    graph.add_data("text", "texts", torch.randn(40, 8, generator=torch.Generator().manual_seed(0)))
    route = graph.connect("minilm:text", "image", train_missing=True, config=QUICK, show_progress_bar=False)
    (bridge,) = graph.bridges
    assert set(bridge.space_names) == {"minilm", "clip"} and route.common_space == bridge.name
    assert route.source.space.name == "minilm"


# -- the planner against trying every entry pair ---------------------------------------------------------------------
HEAD = sg.HeadSpec(arch="mlp1", in_dim=4, hidden_dim=4, out_dim=4)
POOL = (sg.Modality.TEXT, sg.Modality.IMAGE, sg.Modality.AUDIO, sg.Modality.DEPTH)


class SpecOnlySpace(sg.Space):
    """A node with a spec and no encoder: enough to plan over (as in benchmarks/plan_1000.py)."""

    def __init__(self, name, modalities):
        super().__init__()
        self.spec = sg.SpaceSpec(name=name, modalities=modalities, dim=4, fingerprint=f"fp-{name}")

    def _encode_batch(self, modality, batch):
        raise RuntimeError("planning only: nothing is encoded")


def random_graph(seed, n_spaces=10, n_bridges=16, unmeasured=0.0):
    """Spaces with one or two modalities; connect bridges between any two nodes (joint spaces too) that share a
    modality, extend bridges from any node into a space (not into a joint space: a leg entering one by an extend
    edge still gets its bridge's cost taken off, so there the planner's cost and Route.cost differ); random
    qualities, a share of them 1 (cost 0: ties everywhere). Cycles happen."""
    rng = random.Random(seed)
    spaces = [SpecOnlySpace(f"s{i}", tuple(rng.sample(POOL, rng.choice((1, 2))))) for i in range(n_spaces)]
    graph = sg.SpaceGraph(spaces)
    for i in range(n_bridges):
        kind = rng.choice(("connect", "extend"))
        nodes = [*graph.spaces, *graph.joint_spaces]
        x = rng.choice(nodes)
        targets = nodes if kind == "connect" else graph.spaces
        ys = [y for y in targets if y is not x and set(x.modalities) & set(y.modalities)]
        if not ys:
            continue
        y = rng.choice(ys)
        card = sg.BridgeCard(
            library_version=sg.__version__,
            name=f"b{i}",
            method="random",
            kind=kind,
            spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
            overlap=next(m for m in x.modalities if m in y.modalities),
            heads={x.name: HEAD, **({y.name: HEAD} if kind == "connect" else {})},
            quality={"score": 1.0 if rng.random() < unmeasured else rng.uniform(0.2, 0.95)},
        )
        graph.add_bridge(sg.Bridge(card))
    return graph


def shared_cost(graph, node):
    space = graph.space(node)
    return space.bridge.card.cost if isinstance(space, sg.JointSpace) else 0.0


def planned_cost(graph, route):
    """The planner's cost: both legs' bridges, less the bridge of a joint common space (both legs end in it)."""
    legs = sum(bridge.card.cost for leg in (route.source, route.target) for bridge, _ in leg.steps)
    return legs - shared_cost(graph, route.common_space)


def every_entry_pair(graph, a, b, source=None, target=None):
    """(common node, entry of a, entry of b) -> (planner's cost, route) for every entry pair and every node both
    reach, each leg the cheapest path from its own entry (one Dijkstra per entry space)."""
    edges = nx.MultiDiGraph()
    edges.add_nodes_from(node.name for node in [*graph.spaces, *graph.joint_spaces])
    for bridge in graph.bridges:
        for name in bridge.card.headed_spaces:
            edges.add_edge(name, bridge.card.target, key=bridge.name, cost=bridge.card.cost)

    def reach(modality, pinned):
        entries = [pinned] if pinned else [space.name for space in graph.spaces if modality in space.modalities]
        return {entry: nx.single_source_dijkstra(edges, entry, weight="cost") for entry in entries}

    candidates = {}
    for entry_a, (costs_a, paths_a) in reach(a, source).items():
        for entry_b, (costs_b, paths_b) in reach(b, target).items():
            for node in costs_a.keys() & costs_b.keys():
                route = sg.Route(graph.leg(a, paths_a[node]), graph.leg(b, paths_b[node]))
                candidates[node, entry_a, entry_b] = costs_a[node] + costs_b[node] - shared_cost(graph, node), route
    return candidates


def queries(graph, seed):
    """Every ordered pair of modalities some space embeds, unpinned and with a random pin on either side."""
    rng = random.Random(seed)
    for a, b in itertools.permutations(graph.modalities, 2):
        yield a, b, None, None
        yield a, b, rng.choice([s.name for s in graph.spaces if a in s.modalities]), None
        yield a, b, None, rng.choice([s.name for s in graph.spaces if b in s.modalities])


def triple(route):
    return route.common_space, route.source.space.name, route.target.space.name


@pytest.mark.parametrize("unmeasured", [0.0, 0.3])
def test_the_plan_chooses_what_trying_every_entry_pair_chooses(unmeasured):
    checked = 0
    for seed in range(25):
        graph = random_graph(seed, unmeasured=unmeasured)
        for a, b, source, target in queries(graph, seed):
            everything = every_entry_pair(graph, a, b, source, target)
            for max_routes in (1, 3, 10):
                plan = graph.plan(a, b, source=source, target=target, max_routes=max_routes)
                if not everything:
                    assert plan.routes == []
                    continue
                best = min((route for _, route in everything.values()), key=_rank)
                assert repr(plan.chosen) == repr(best), (seed, a, b, source, target, max_routes)
                assert (plan.chosen.source.path, plan.chosen.target.path) == (best.source.path, best.target.path)
                checked += 1
    assert checked > 1000


def test_every_entry_space_and_common_node_keeps_its_cheapest_route_when_max_routes_allows():
    for seed in range(25):
        graph = random_graph(seed)
        for a, b, source, target in queries(graph, seed):
            everything = every_entry_pair(graph, a, b, source, target)
            plan = graph.plan(a, b, source=source, target=target, max_routes=10_000)
            routes = {triple(route): route for route in plan.routes}
            assert len(routes) == len(plan.routes) and plan.routes == sorted(plan.routes, key=_rank)
            for key, route in routes.items():  # each candidate is one of the pairs, with the cheapest legs there
                assert planned_cost(graph, route) == pytest.approx(everything[key][0], abs=1e-9)
            for position in range(3):  # each common node, entry of a, entry of b: its cheapest is a candidate
                cheapest = {}
                for key, (cost, _) in everything.items():
                    cheapest[key[position]] = min(cost, cheapest.get(key[position], math.inf))
                listed = {}
                for key, route in routes.items():
                    listed[key[position]] = min(planned_cost(graph, route), listed.get(key[position], math.inf))
                assert listed.keys() == cheapest.keys()
                assert listed == pytest.approx(cheapest, abs=1e-9), (seed, a, b, source, target, position)
            reaching = {("a", e) for _, e, _ in everything} | {("b", e) for _, _, e in everything}
            fitted = graph.plan(a, b, source=source, target=target, max_routes=max(len(reaching), 1))
            assert {("a", r.source.space.name) for r in fitted.routes} | {
                ("b", r.target.space.name) for r in fitted.routes
            } == reaching
            if plan.routes:
                assert repr(fitted.chosen) == repr(plan.chosen)


def test_max_routes_keeps_one_route_per_entry_space_when_they_all_fit(graph, clip):
    e5 = graph.add_space(ToySpace("e5", ("text",), 5, seed=3))
    graph.add_bridge(hand_made_bridge(e5, clip, quality=0.5))
    each = [("clip", "clip", "clip"), ("minilm", "clip", "minilm+clip"), ("e5", "clip", "e5+clip")]
    assert entries(graph.plan("text", "image", max_routes=3).routes) == each  # text: clip, minilm, e5; image: clip
    with_the_next_best = [each[0], ("clip", "clip", "minilm+clip"), *each[1:]]
    assert entries(graph.plan("text", "image", max_routes=4).routes) == with_the_next_best
    assert entries(graph.plan("text", "image", max_routes=2).routes) == [  # not all fit: the two best
        ("clip", "clip", "clip"),
        ("clip", "clip", "minilm+clip"),
    ]


def test_a_plan_follows_bridges_added_after_the_last_plan(graph, clip):
    assert graph.connect("text", "image", source="minilm").common_space == "minilm+clip"
    e5 = graph.add_space(ToySpace("e5", ("text", "image"), 5, seed=3))
    assert graph.connect("text", "image", source="e5").common_space == "e5"
    graph.add_bridge(hand_made_bridge(graph.space("minilm"), e5, quality=0.95))
    assert graph.connect("text", "image", source="minilm").common_space == "minilm+e5"
