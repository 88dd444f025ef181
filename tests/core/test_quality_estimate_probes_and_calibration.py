"""The label-free quality estimate, probes and calibration."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import spacegraph as sg
from spacegraph._quality import PseudoLabels, cosine_silhouette, estimate_quality, spherical_kmeans
from tests.conftest import random_unit

LATENT, N_CLASSES = 16, 6


def planted(n: int, centers: torch.Tensor, rotation: torch.Tensor, spread: float, seed: int):
    """Unit rows of ``n`` items around class centers, seen through a space's own rotation; and their classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(centers), (n,), generator=generator)
    latent = centers[labels] + spread * torch.randn(n, centers.shape[1], generator=generator)
    return F.normalize(latent @ rotation, dim=1), labels


@pytest.fixture(scope="module")
def world():
    generator = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(N_CLASSES, LATENT, generator=generator), dim=1)
    rot_x, _ = torch.linalg.qr(torch.randn(LATENT, LATENT, generator=generator))
    rot_y, _ = torch.linalg.qr(torch.randn(LATENT, LATENT, generator=generator))
    latent_texts, _ = planted(300, centers, torch.eye(LATENT), 0.15, 1)
    return {
        "rot_x": rot_x,
        "rot_y": rot_y,
        "overlap_x": latent_texts @ rot_x,  # the same texts, seen by each space
        "overlap_y": latent_texts @ rot_y,
        "memory_x": planted(200, centers, rot_x, 0.2, 2)[0],
        "memory_y": planted(200, centers, rot_y, 0.2, 3)[0],
    }


def test_kmeans_and_silhouette_find_planted_clusters():
    centers = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1) * 3
    x, labels = planted(400, centers, torch.eye(8), 0.1, 4)
    assign = spherical_kmeans(x, 5)
    # every found cluster is one planted class
    for cluster in assign.unique():
        assert labels[assign == cluster].unique().numel() == 1
    assert cosine_silhouette(x, assign) > 0.6
    assert cosine_silhouette(x, assign) > cosine_silhouette(x, torch.randint(5, (400,)))


def test_pseudo_labels_choose_the_planted_number_of_classes(world):
    labels = PseudoLabels(world["overlap_x"], world["overlap_y"], world["memory_x"], world["memory_y"])
    assert labels.k == N_CLASSES
    assert max(labels.silhouettes, key=labels.silhouettes.get) == N_CLASSES


def test_estimate_separates_a_true_bridge_from_a_broken_one(world):
    true_x, true_y = (lambda e: e @ world["rot_x"].T), (lambda e: e @ world["rot_y"].T)  # back to the shared latent
    scramble = torch.randn(LATENT, LATENT, generator=torch.Generator().manual_seed(9))
    data = [world[k] for k in ("overlap_x", "overlap_y", "memory_x", "memory_y")]
    good = estimate_quality(true_x, true_y, *data)
    broken = estimate_quality(true_x, lambda e: F.normalize(e @ scramble, dim=1), *data)
    # finer granularities split the planted classes, so even the true bridge stays below 1
    assert good["estimate"] > 0.7 and broken["estimate"] < 0.35
    assert good == estimate_quality(true_x, true_y, *data)  # deterministic
    assert good["estimate_clusters"] == N_CLASSES and good["estimate_items"] == 400


def test_card_refuses_quality_that_is_not_a_retrieval_quality(toy_spaces):
    card = _card(toy_spaces).model_dump()
    for bad in (float("nan"), float("inf"), 5.0, -0.1):
        with pytest.raises(ValidationError, match="quality"):
            sg.BridgeCard.model_validate({**card, "quality": {"estimate": bad}})


def _card(toy_spaces, quality=None) -> sg.BridgeCard:
    from spacegraph._bridge import SpaceRef

    x, y = toy_spaces
    heads = {s.name: sg.HeadSpec(arch="mlp1", in_dim=s.spec.dim, out_dim=4) for s in (x, y)}
    return sg.BridgeCard(
        library_version="test",
        name="toy",
        method="cmcr",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        overlap="text",
        heads=heads,
        quality=quality or {},
    )


def test_score_sources_in_order(toy_spaces):
    assert _card(toy_spaces).score_source == "unmeasured" and _card(toy_spaces).score == 1.0
    estimated = _card(toy_spaces, {"estimate": 0.4})
    assert (estimated.score, estimated.score_source) == (0.4, "label-free estimate")
    given = _card(toy_spaces, {"estimate": 0.4, "score": 0.7})
    assert (given.score, given.score_source) == (0.7, "given")
    assert math.isclose(given.cost, -math.log(0.7))


@pytest.fixture
def bridged(toy_spaces):
    """A trained toy bridge in a graph, and a labelled probe of cached features from each leg's space."""
    x, y = toy_spaces
    features = sg.BridgeFeatures(
        random_unit(80, 6, 0), random_unit(80, 10, 1), random_unit(40, 6, 2), random_unit(40, 10, 3)
    )
    graph = sg.SpaceGraph([x, y])
    config = {"steps": 5, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}
    bridge = graph.train_bridge(
        x.name, y.name, overlap="text", features=features, config=config, show_progress_bar=False
    )
    labels = np.arange(12) % 3
    probe = sg.Probe("toy-probe", random_unit(12, 6, 4), labels, random_unit(12, 10, 5), labels, features=True)
    return graph, bridge, probe


def test_evaluate_measures_the_route_on_the_probe(bridged):
    graph, bridge, probe = bridged
    route = graph.connect("audio", "image")
    result = graph.evaluate(route, probe)
    scores = route.project("audio", probe.source_inputs) @ route.project("image", probe.target_inputs).T
    expected = sg.retrieval_metrics(scores, probe.source_labels, probe.target_labels)["mAP"]
    assert result["source_to_target"]["mAP"] == pytest.approx(expected)
    assert 0 <= result["mAP"] <= 1 and bridge.card.calibration is None  # measuring alone changes nothing


def test_a_probe_whose_sides_share_no_label_is_refused_and_calibrates_nothing(bridged):
    graph, bridge, probe = bridged
    card = bridge.card
    disjoint = sg.Probe("no-overlap", probe.source_inputs, np.zeros(12), probe.target_inputs, np.ones(12), True)
    with pytest.raises(sg.SpacegraphValueError, match="probe 'no-overlap': no source label is among the target"):
        graph.evaluate(graph.connect("audio", "image"), disjoint, calibrate=True)
    assert bridge.card is card and graph.connect("audio", "image").expected_quality == pytest.approx(card.score)


def test_calibration_replaces_the_estimate_and_survives_saving(bridged, tmp_path):
    graph, bridge, probe = bridged
    route = graph.connect("audio", "image")
    measured = graph.evaluate(route, probe, calibrate=True)["mAP"]
    assert bridge.card.score == pytest.approx(measured)
    assert bridge.card.score_source == "probe 'toy-probe'" and bridge.card.calibration.rule == "measured"
    assert graph.connect("audio", "image").expected_quality == pytest.approx(measured)  # the planner sees it
    loaded = sg.Bridge.load(bridge.save(tmp_path / "b"))
    assert loaded.card.calibration == bridge.card.calibration and "estimate" in loaded.card.quality


def test_probe_refuses_mismatched_labels():
    with pytest.raises(ValueError, match="3 source inputs and 2 source labels"):
        sg.Probe("p", [[0.0]] * 3, [0, 1], [[0.0]], [0])
    with pytest.raises(ValueError, match="as many source as target"):
        sg.Probe.from_pairs("p", [[0.0]] * 3, [[0.0]] * 2)
