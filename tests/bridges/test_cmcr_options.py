import pytest
import torch
import torch.nn.functional as F
from spacegraph_bridges.cmcr import (
    PAPER_CONFIG,
    CMCRConfig,
    TrainingData,
    cmcr_loss,
    fit_heads,
    info_nce,
    memory_retrieve,
    mutual_neighbours,
    pseudo_pairs,
)

import spacegraph as sg
from spacegraph.plugin import RankSlice
from tests.conftest import random_unit

SMALL = {"hidden_dim": 16, "out_dim": 8, "steps": 30, "batch_size": 16, "val_fraction": 0.0, "use_memory": True}


def toy_features(n: int = 60, memory: int = 20) -> sg.BridgeFeatures:
    return sg.BridgeFeatures(
        random_unit(n, 6, 0), random_unit(n, 5, 1), random_unit(memory, 6, 2), random_unit(memory, 5, 3)
    )


def training_data(features: sg.BridgeFeatures, **options) -> TrainingData:
    """Every overlap row as a training row."""
    config = CMCRConfig(**{**SMALL, **options})
    rows = torch.arange(len(features.overlap_x))
    return TrainingData(features.overlap_x, features.overlap_y, rows, features.memory_x, features.memory_y, config)


def pairs(features: sg.BridgeFeatures, **options):
    data = training_data(features, **options)
    return pseudo_pairs(data, data.config, RankSlice())


def every_row(pseudo):
    """``(x, y, anchor_x, anchor_y)`` of all the pseudo pairs, in order."""
    return pseudo.take(torch.arange(len(pseudo)))


@pytest.mark.parametrize("method", ["stream", "sdpa"])
def test_memory_retrieval_carries_weights_to_other_values(method):
    queries, keys, values = random_unit(9, 6, 0), random_unit(40, 6, 1), random_unit(40, 5, 2)
    reference = F.normalize(torch.softmax(queries @ keys.T / 0.05, dim=1) @ values, dim=-1)
    got = memory_retrieve(queries, keys, 0.05, values=values, chunk_size=7, method=method)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_paper_pairs_are_one_per_overlap_item_and_aligned():
    features = toy_features()
    pseudo = pairs(features, **PAPER_CONFIG)
    assert pseudo.aligned and len(pseudo) == 60
    x, _, anchor_x, _ = every_row(pseudo)
    torch.testing.assert_close(anchor_x, features.overlap_x)
    torch.testing.assert_close(x, memory_retrieve(features.overlap_x, features.memory_x, 0.01))


def test_memory_seeded_pairs_add_one_row_per_memory_item():
    features = toy_features()
    pseudo = pairs(features, **{**PAPER_CONFIG, "pseudo_source": "overlap+memory"})
    assert not pseudo.aligned and len(pseudo) == 60 + 20 + 20
    x, y, _, anchor_y = every_row(pseudo)
    torch.testing.assert_close(x[60:80], features.memory_x)  # A items pair with their pseudo C
    torch.testing.assert_close(y[80:], features.memory_y)  # C items pair with their pseudo A
    # An A item's two overlap anchors are one softmax over the overlap, read in each space.
    weights = torch.softmax(features.memory_x @ features.overlap_x.T / 0.01, dim=1)
    torch.testing.assert_close(anchor_y[60:80], F.normalize(weights @ features.overlap_y, dim=-1))


def test_mutual_neighbour_filter_keeps_only_overlap_items_near_both_memories():
    on_topic_x, on_topic_y = random_unit(5, 6, 4), random_unit(5, 5, 5)
    features = sg.BridgeFeatures(
        torch.cat([on_topic_x, random_unit(40, 6, 6)]),
        torch.cat([on_topic_y, random_unit(40, 5, 7)]),
        on_topic_x,  # each memory item's nearest overlap item is its own on-topic copy
        on_topic_y,
    )
    mask = mutual_neighbours(training_data(features), 1, RankSlice())
    assert mask.nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    pseudo = pairs(features, pseudo_source="overlap", pseudo_filter="mutual_neighbours", neighbour_k=1)
    assert not pseudo.aligned and len(pseudo) == 5
    torch.testing.assert_close(every_row(pseudo)[2], on_topic_x)
    seeded = pairs(features, pseudo_source="overlap+memory", pseudo_filter="mutual_neighbours", neighbour_k=1)
    assert len(seeded) == 5 + 10  # every memory item's nearest overlap item is on topic


def test_filter_that_keeps_too_few_pairs_trains_on_native_pairs_only():
    features = sg.BridgeFeatures(
        random_unit(30, 6, 0), random_unit(30, 5, 1), random_unit(1, 6, 2), random_unit(1, 5, 3)
    )
    options = {"pseudo_source": "overlap", "pseudo_filter": "mutual_neighbours", "neighbour_k": 1}
    assert pairs(features, **options) is None
    fit = fit_heads(features, CMCRConfig(**SMALL, **options), show_progress_bar=False)
    assert fit.quality["n_pseudo_pairs"] == 0


def test_dense_alignment_adds_cross_terms_against_the_anchors():
    zx, zy, za, zc, ax, ay = (random_unit(4, 3, seed) for seed in range(6))
    plain = cmcr_loss(zx, zy, za, zc, CMCRConfig(temperature=0.1), anchors=(ax, ay))
    dense = cmcr_loss(zx, zy, za, zc, CMCRConfig(temperature=0.1, dense_alignment=True), anchors=(ax, ay))
    cross = info_nce(za, ay, 0.1) + info_nce(ax, zc, 0.1)
    assert (dense["inter"] - plain["inter"]).item() == pytest.approx(cross.item(), rel=1e-5)
    assert dense["intra"].item() == pytest.approx(plain["intra"].item())


def test_select_by_estimate_returns_the_best_checkpoint():
    config = CMCRConfig(**SMALL, select_by_estimate=True, estimate_every=10)
    fit = fit_heads(toy_features(), config, show_progress_bar=False)
    checks = [row["estimate"] for row in fit.history if "estimate" in row]
    assert len(checks) == 3
    assert fit.quality["estimate"] == pytest.approx(max(checks), abs=1e-6)


@pytest.mark.parametrize("kind", ["connect", "extend"])
def test_training_with_every_option_is_repeatable(kind):
    options = {"pseudo_source": "overlap+memory", "pseudo_filter": "mutual_neighbours", "dense_alignment": True}
    config = CMCRConfig(**SMALL, **options, kind=kind, select_by_estimate=True, estimate_every=10)
    first, second = (fit_heads(toy_features(), config, show_progress_bar=False) for _ in range(2))
    for a, b in zip(first.head_x.state_dict().values(), second.head_x.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert first.quality == second.quality
