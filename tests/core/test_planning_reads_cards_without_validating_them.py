"""Cards are validated once, when built: costing, ranking, planning and showing routes validate none again."""

import pytest

import spacegraph as sg
from spacegraph.plugin import SpaceRef
from tests.conftest import ToySpace


class CountingValidator:
    """Stands in for a pydantic model's validator, counting every validation (model_validate and __init__ alike)."""

    def __init__(self, validator):
        self.validator, self.calls = validator, 0

    def __getattr__(self, name):
        attribute = getattr(self.validator, name)
        if not name.startswith("validate"):
            return attribute

        def counted(*args, **kwargs):
            self.calls += 1
            return attribute(*args, **kwargs)

        return counted


def connect_bridge(x: sg.Space, y: sg.Space, overlap: str, score: float, name: str) -> sg.Bridge:
    heads = {space.name: sg.HeadSpec(in_dim=space.spec.dim, hidden_dim=8, out_dim=4) for space in (x, y)}
    card = sg.BridgeCard(
        library_version=sg.__version__, name=name, method="hand", kind="connect",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)), overlap=overlap, heads=heads, quality={"score": score},
    )  # fmt: skip
    return sg.Bridge(card)


@pytest.fixture
def graph():
    at, ti = ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)
    ia = ToySpace("ia", ("image", "depth"), 8, seed=3)
    bridges = [connect_bridge(at, ti, "text", 0.7, "strong"), connect_bridge(at, ti, "text", 0.5, "weak")]
    return sg.SpaceGraph([at, ti, ia], [*bridges, connect_bridge(ti, ia, "image", 0.9, "ti+ia")])


def test_route_cost_planning_and_display_validate_no_card(graph, monkeypatch):
    counting = CountingValidator(sg.BridgeCard.__pydantic_validator__)
    monkeypatch.setattr(sg.BridgeCard, "__pydantic_validator__", counting)
    if hasattr(sg.BridgeCard, "check_consistent"):
        monkeypatch.setattr(sg.BridgeCard, "check_consistent", lambda card: pytest.fail("a card was checked again"))
    plan = graph.plan("audio", "image")
    assert [route.common_space for route in plan.routes] == ["strong", "weak"]
    for route in plan.routes * 3:
        assert 0 < route.expected_quality <= 1 and route.cost >= 0
        assert repr(route) and route.describe() and route._repr_html_()
    assert plan.explain() and plan.rows() and plan._repr_html_() and graph._repr_html_()
    assert graph.connect("text", "depth").bridges and graph.routes("audio", "text")
    assert counting.calls == 0


def test_a_bridge_given_a_new_card_is_planned_by_it(graph):
    assert graph.connect("audio", "image").common_space == "strong"
    weak = next(bridge for bridge in graph.bridges if bridge.name == "weak")
    weak.card = weak.card.model_copy(update={"quality": {"score": 0.95}})
    plan = graph.plan("audio", "image")
    assert plan.chosen.common_space == "weak" and plan.chosen.expected_quality == pytest.approx(0.95)
