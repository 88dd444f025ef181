"""Each label-free estimate carries a 90% bootstrap interval; the card stores it, routes multiply it, and
``plan().explain()`` says when the best routes are within each other's ranges and recommends a probe."""

import pytest
import torch
import torch.nn.functional as F

import spacegraph as sg
from spacegraph._quality import _combine, bootstrap_interval, estimate_quality
from tests.conftest import ToySpace
from tests.core.test_graph_connects_and_plans import make_bridge
from tests.core.test_route_pins_and_plan_listing import hand_made_bridge


def clustered(n: int, centres: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(centres), (n,), generator=generator)
    return F.normalize(centres[labels] + noise * torch.randn(n, centres.shape[1], generator=generator), dim=1)


@pytest.fixture(scope="module")
def data():
    centres = F.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    overlap = clustered(300, centres, 0.3, 1)
    return overlap, overlap.clone(), clustered(400, centres, 0.3, 2), clustered(500, centres, 0.3, 3)


def identity(rows: torch.Tensor) -> torch.Tensor:
    return rows


def test_the_interval_holds_the_estimate_and_is_repeatable(data):
    first = estimate_quality(identity, identity, *data)
    assert first["estimate_low"] <= first["estimate"] <= first["estimate_high"]
    assert 0 < first["estimate_high"] - first["estimate_low"] < 0.5
    assert estimate_quality(identity, identity, *data) == first


def test_fewer_queries_give_a_wider_interval():
    generator = torch.Generator().manual_seed(5)

    def width(n: int) -> float:
        low, high = bootstrap_interval(torch.rand(1, 2, n, generator=generator), torch.ones(1), (n, n))
        return high - low

    assert width(50) > 4 * width(2000) > 0


def test_granularities_that_disagree_widen_the_interval():
    agreeing, disagreeing = torch.full((2, 2, 100), 0.5), torch.full((2, 2, 100), 0.5)
    disagreeing[1] = 0.9
    weights = torch.tensor([0.5, 0.5])
    assert bootstrap_interval(agreeing, weights, (100, 100)) == pytest.approx((0.5, 0.5))
    low, high = bootstrap_interval(disagreeing, weights, (100, 100))
    assert low < 0.6 and high > 0.8


def test_a_rotated_head_scores_below_with_a_disjoint_interval(data):
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(4)))[0]
    good = estimate_quality(identity, identity, *data)
    rotated = estimate_quality(identity, lambda rows: rows @ rotation, *data)
    assert rotated["estimate_high"] < good["estimate_low"]


def test_queries_of_equal_precision_give_a_point_interval():
    precisions = torch.full((3, 2, 50), 0.4)
    precisions[:, 1, 30:] = float("nan")  # the second memory has 30 items
    weights = torch.tensor([0.2, 0.5, 0.3])
    assert float(_combine(precisions, weights)) == pytest.approx(0.4)
    assert bootstrap_interval(precisions, weights, (50, 30)) == pytest.approx((0.4, 0.4))


def test_a_trained_bridge_card_stores_the_interval(toy_spaces):
    bridge = make_bridge(*toy_spaces)
    quality = bridge.card.quality
    assert bridge.card.score_source == "label-free estimate"
    assert bridge.card.score_interval == (quality["estimate_low"], quality["estimate_high"])
    assert quality["estimate_low"] <= bridge.card.score <= quality["estimate_high"]


@pytest.mark.parametrize(
    "bad", [{"estimate_low": 0.6, "estimate_high": 0.4}, {"estimate_low": 0.4}, {"estimate_high": 1.2}]
)
def test_a_card_refuses_a_broken_interval(toy_spaces, bad):
    bridge = make_bridge(*toy_spaces)
    with pytest.raises(sg.SpacegraphValueError, match="estimate_"):
        bridge.card.model_copy(update={"quality": {"estimate": 0.5, **bad}})


def two_route_plan(first: dict[str, float], second: dict[str, float]) -> sg.Plan:
    """audio -> image through either of two audio-text spaces, each bridged to one image-text space."""
    hub = ToySpace("image-text", ("text", "image"), 10, seed=2)
    a, b = (ToySpace(name, ("audio", "text"), 6, seed=seed) for name, seed in (("a", 1), ("b", 3)))
    graph = sg.SpaceGraph([hub, a, b], [hand_made_bridge(a, hub, first), hand_made_bridge(b, hub, second)])
    return graph.plan("audio", "image")


def estimate(value: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": value, "estimate_low": low, "estimate_high": high}


def test_overlapping_ranges_are_not_a_clear_choice_and_a_probe_is_recommended():
    plan = two_route_plan(estimate(0.62, 0.50, 0.70), estimate(0.58, 0.45, 0.66))
    assert plan.chosen.quality_interval == pytest.approx((0.50, 0.70))
    assert plan.close_calls() == plan.routes[1:]
    explained = plan.explain()
    assert "[0.500, 0.700]" in explained and "not a clear choice" in explained
    assert "overlaps #1's" in explained and "sg.Probe" in explained


def test_separate_narrow_ranges_are_a_clear_choice():
    plan = two_route_plan(estimate(0.80, 0.76, 0.84), estimate(0.40, 0.35, 0.45))
    assert plan.close_calls() == []
    explained = plan.explain()
    assert "ahead of #2 at 0.400" in explained and "not a clear choice" not in explained
    assert "sg.Probe" not in explained


def test_a_wide_range_alone_is_worth_a_probe():
    plan = two_route_plan(estimate(0.80, 0.55, 0.95), estimate(0.30, 0.20, 0.40))
    assert plan.close_calls() == []
    assert "sg.Probe" in plan.explain()


def test_scores_given_or_measured_by_a_probe_carry_no_range():
    plan = two_route_plan({"score": 0.62}, {"score": 0.60})
    assert plan.chosen.quality_interval == (0.62, 0.62) and not plan.chosen.uncertain
    assert "not a clear choice" not in plan.explain() and "sg.Probe" not in plan.explain()
