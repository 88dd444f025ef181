"""The estimate's two open design choices (``EstimateSettings``): class-balanced queries and labels read through
each memory's own clusters; bad settings are refused."""

import math

import pytest
import torch
import torch.nn.functional as F

from spacegraph._quality import (
    ESTIMATE_SETTINGS,
    EXPECTED_MAP,
    EstimateData,
    EstimateSettings,
    ExpectedMap,
    PseudoLabels,
    modality_alignment,
    pseudo_map,
)
from tests.core.test_estimates_carry_intervals import clustered, identity


@pytest.fixture(scope="module")
def world():
    centres = F.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    overlap = clustered(400, centres, 0.25, 1)
    return centres, overlap


def test_bad_settings_are_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match="balance is 'queries' or 'classes'"):
        EstimateSettings(balance="items")
    with pytest.raises(ValueError, match="a power >= 0"):
        EstimateSettings(gap_power=-1)
    with pytest.raises(ValueError, match="levels is 'weighted' or 'best'"):
        EstimateSettings(levels="finest")
    assert EstimateSettings(levels="best").name == "classes/items/gap0.5/best"
    assert len(ESTIMATE_SETTINGS) == 16 and "classes/items/gap0.5" in ESTIMATE_SETTINGS


def test_class_balance_takes_away_what_a_hub_ranking_gains_from_one_large_class(world):
    centres, overlap = world
    generator = torch.Generator().manual_seed(2)
    # memory x: 80% of class 0; memory y: balanced
    labels_x = torch.where(
        torch.rand(500, generator=generator) < 0.8, 0, torch.randint(1, 4, (500,), generator=generator)
    )
    mx = F.normalize(centres[labels_x] + 0.25 * torch.randn(500, 16, generator=generator), dim=1)
    my = clustered(400, centres, 0.25, 3)
    labels = PseudoLabels(overlap, overlap, mx, my, cluster_counts=(4,))
    # a hub bridge: every A item lands on class 0's centre, so every A query ranks the C items of class 0 first
    hub = centres[0].expand_as(mx)
    by_queries, by_classes = (pseudo_map(hub, my, labels, balance) for balance in ("queries", "classes"))
    assert by_classes < by_queries - 0.15
    assert pseudo_map(mx, my, labels, "classes") > by_classes + 0.4  # an honest bridge stays well above


def test_cluster_labels_give_every_item_its_memory_clusters_class(world):
    centres, overlap = world
    mx, my = clustered(600, centres, 0.25, 4), clustered(600, centres, 0.25, 5)
    by_item = PseudoLabels(overlap, overlap, mx, my, cluster_counts=(4,))
    by_cluster = PseudoLabels(overlap, overlap, mx, my, cluster_counts=(4,), by_cluster=True)
    item_x, cluster_x = by_item.levels[4][0], by_cluster.levels[4][0]
    assert (item_x == cluster_x).float().mean() > 0.9  # clean data: the same classes
    members = torch.nonzero(cluster_x == cluster_x[0]).squeeze(1)
    assert len(members) > 50  # and a cluster's items share one class


def test_rescored_data_shares_the_items_and_labels(world):
    centres, overlap = world
    mx, my = clustered(300, centres, 0.25, 6), clustered(300, centres, 0.25, 7)
    data = EstimateData(overlap, overlap, mx, my, settings=EstimateSettings("queries", "clusters"))
    other = data.rescored(EstimateSettings("classes", "clusters"))
    assert other.labels is data.labels and other.settings == EstimateSettings("classes", "clusters")
    assert data.settings.balance == "queries"
    with pytest.raises(ValueError, match="these labels are 'clusters'"):
        data.rescored(EstimateSettings(labels="items"))
    turn = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(8)))[0]
    scrambled = other.score(identity, lambda rows: rows @ turn)["estimate"]
    assert other.score(identity, identity)["estimate"] > scrambled + 0.2


def test_a_bridge_that_keeps_a_modality_gap_scores_below_one_that_closes_it(world):
    centres, overlap = world
    mx, my = clustered(400, centres, 0.25, 8), clustered(400, centres, 0.25, 9)
    offset = F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(10)), dim=0)

    def cone(sign):  # each memory in a cone of its own
        return lambda rows: F.normalize(rows + sign * 1.5 * offset, dim=1)

    assert modality_alignment(mx, my) > 0.95 and modality_alignment(cone(1)(mx), cone(-1)(my)) < 0.6
    scored = {}
    for power in (0.0, 0.5):
        data = EstimateData(overlap, overlap, mx, my, settings=EstimateSettings(gap_power=power))
        closed, kept = data.score(identity, identity), data.score(cone(1), cone(-1))
        scored[power] = kept["estimate"] / closed["estimate"]
        assert kept["estimate_low"] <= kept["estimate"] <= kept["estimate_high"]
        assert kept["estimate"] == pytest.approx(kept["estimate_pseudo_map"] * kept["estimate_alignment"] ** power)
    assert scored[0.5] < scored[0.0] - 0.1  # the pseudo-label mAP alone hardly sees the gap; the factor does


def test_the_best_level_reads_the_best_separated_granularity_alone(world):
    centres, overlap = world
    mx, my = clustered(400, centres, 0.25, 11), clustered(400, centres, 0.25, 12)
    data = EstimateData(overlap, overlap, mx, my, settings=EstimateSettings(gap_power=0.0))
    best = data.rescored(EstimateSettings(gap_power=0.0, levels="best"))
    k = data.labels.k
    assert k == 4  # the overlap's four real classes separate best
    one_level = type("OneLevel", (), {"silhouettes": {k: 1.0}, "levels": {k: data.labels.levels[k]}, "k": k})()
    weighted, alone = data.score(identity, identity), best.score(identity, identity)
    assert alone["estimate"] == pytest.approx(pseudo_map(mx, my, one_level, "classes"))
    assert alone["estimate_low"] <= alone["estimate"] <= alone["estimate_high"]
    # finer granularities split the real classes, so the weighted levels read a true bridge lower
    assert alone["estimate"] > weighted["estimate"] + 0.05


def test_the_map_reading_is_monotone_keeps_the_unit_range_and_inverts_the_logit():
    calibration = ExpectedMap(intercept=0.7, slope=1.3)
    readings = [calibration(e) for e in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)]
    assert readings == sorted(readings) and len(set(readings)) == len(readings)  # ranks stay as the estimate's
    assert all(0 < value < 1 for value in readings)  # the ends are clipped, never mapped to exactly 0 or 1
    estimate = 0.4
    assert calibration(estimate) == pytest.approx(1 / (1 + math.exp(-(0.7 + 1.3 * math.log(0.4 / 0.6)))))
    assert ExpectedMap(0.0, 1.0)(estimate) == pytest.approx(estimate)  # the identity map reads the estimate


def test_a_score_reads_its_estimate_and_interval_as_a_map(world):
    centres, overlap = world
    memory = clustered(200, centres, 0.25, 2)
    scored = EstimateData(overlap, overlap, memory, memory).score(identity, identity)
    for suffix in ("", "_low", "_high"):
        assert scored[f"expected_mAP{suffix}"] == pytest.approx(EXPECTED_MAP(scored[f"estimate{suffix}"]))
    assert scored["expected_mAP_low"] <= scored["expected_mAP"] <= scored["expected_mAP_high"]
