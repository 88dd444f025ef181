"""The planner cannot be fooled by a card: edited qualities and calibrations are refused naming the bridge and
the field, and an edge cost is never negative or NaN."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import spacegraph as sg
from spacegraph._bridge import Calibration

HEAD = sg.HeadSpec(arch="mlp1", in_dim=4, hidden_dim=4, out_dim=4)


class SpecOnlySpace(sg.Space):
    def __init__(self, name, modalities):
        super().__init__()
        self.spec = sg.SpaceSpec(name=name, modalities=modalities, dim=4, fingerprint=f"fp-{name}")

    def _encode_batch(self, modality, batch):
        raise RuntimeError("planning only")


def hand_made(x, y, score, *, kind="connect", name=None):
    """A bridge with untrained heads and a valid score."""
    heads = {x.name: HEAD, **({y.name: HEAD} if kind == "connect" else {})}
    overlap = next(m for m in x.modalities if m in y.modalities)
    card = sg.BridgeCard.between(
        x.spec, y.spec, heads=heads, kind=kind, name=name, method="hand-made", overlap=overlap, quality={"score": score}
    )
    return sg.Bridge(card)


@pytest.fixture
def pair():
    return SpecOnlySpace("a", ("audio", "text")), SpecOnlySpace("b", ("text", "image"))


@pytest.mark.parametrize("bad", [math.nan, 5.0, math.inf, -0.1])
def test_an_edited_quality_is_refused_naming_bridge_and_field(pair, bad):
    fooling = hand_made(*pair, 0.9, name="fooling")
    with pytest.raises(sg.SpacegraphTypeError, match="a bridge card is frozen"):
        fooling.card.quality["score"] = bad
    with pytest.raises(ValueError, match=r"for bridge card 'fooling'\n  quality: .*quality\['score'\]"):
        fooling.card.model_copy(update={"quality": {"score": bad}})
    assert fooling.card.quality == {"score": 0.9} and fooling.card.score == 0.9


def test_a_ring_of_scores_above_one_is_refused(pair):
    c = SpecOnlySpace("c", ("image", "audio"))
    a, b = pair
    ring = [hand_made(u, v, 0.9, kind="extend", name=f"{u.name}->{v.name}") for u, v in ((a, b), (b, c), (c, a))]
    graph = sg.SpaceGraph([a, b, c])
    for bridge in ring:  # cost -log(3) < 0 made networkx raise "negative weights?"
        with pytest.raises(ValueError, match=f"(?s)bridge card '{bridge.name}'.*accepted in \\[0, 1\\]"):
            bridge.card = bridge.card.model_copy(update={"quality": {"score": 3.0}})
        graph.add_bridge(bridge)
    assert 0 <= graph.connect("audio", "image").expected_quality <= 1


def test_an_edited_calibration_is_refused(pair):
    bridge = hand_made(*pair, 0.9)
    graph = sg.SpaceGraph(pair, [bridge])
    route = graph.connect("audio", "image")
    measured = {"route_measured": 0.5, "route_expected": 0.9, "value": 0.5, "rule": "measured"}
    calibration = Calibration(probe="p", route=repr(route), n_queries=1, n_gallery=1, **measured)
    bridge.card = bridge.card.model_copy(update={"calibration": calibration})
    assert graph.connect("audio", "image").expected_quality == pytest.approx(0.5)
    with pytest.raises(ValidationError, match="frozen"):
        bridge.card.calibration.value = 5.0
    with pytest.raises(ValueError, match="bridge card 'a\\+b'\n  calibration.value"):
        bridge.card.model_copy(update={"calibration": {**calibration.model_dump(), "value": 5.0}})


@settings(max_examples=300, deadline=None)
@given(score=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 1e-300, 1 + 1e-12]))
def test_an_edge_cost_is_never_negative_or_nan(score):
    pair = SpecOnlySpace("a", ("audio", "text")), SpecOnlySpace("b", ("text", "image"))
    bridge = hand_made(*pair, 0.5)
    try:
        bridge.card = bridge.card.model_copy(update={"quality": {"score": score}})
    except ValueError as err:
        assert "quality['score']" in str(err) and not 0 <= score <= 1
        return
    graph = sg.SpaceGraph(pair, [bridge])
    costs = [cost for _, _, cost in graph._graph.edges(data="cost")]
    assert 0 <= score <= 1 and all(math.isfinite(cost) and cost >= 0 for cost in costs)
    assert 0 <= graph.connect("audio", "image").expected_quality <= 1
