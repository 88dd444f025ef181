import pytest
import torch
import torch.nn.functional as F
from spacegraph_bridges._cmcr_pairs import _memory_seeded
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
    seed_keys,
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


def test_memory_seeds_retrieve_from_as_many_overlap_rows_as_training_draws():
    """Default seed_keys is steps x batch_size (SMALL: 30 x 16 = 480 rows); fewer training rows: all of them."""
    features = toy_features(n=600)
    pseudo = pairs(features, pseudo_source="overlap+memory")
    assert pseudo.seed_keys == 480
    keys = seed_keys(training_data(features), CMCRConfig(**SMALL))  # positions in the training rows (all rows here)
    assert len(keys) == 480 and keys.unique().tolist() == keys.tolist()  # distinct rows, in order
    assert torch.equal(keys, seed_keys(training_data(features), CMCRConfig(**SMALL)))  # seeded
    _, _, _, anchor_y = every_row(pseudo)
    weights = torch.softmax(features.memory_x @ features.overlap_x[keys].T / 0.01, dim=1)
    torch.testing.assert_close(anchor_y[600:620], F.normalize(weights @ features.overlap_y[keys], dim=-1))
    assert pairs(features, pseudo_source="overlap+memory", seed_keys=50).seed_keys == 50
    assert pairs(toy_features(n=60), pseudo_source="overlap+memory").seed_keys == 60


def test_sampled_seed_keys_give_the_filter_training_rows_as_pivots():
    """Training rows 10..59 of the overlap, 5 of them sampled as keys: each seed's pivot is the position (in the
    training rows, as the filter's mask counts) of its nearest key."""
    features = toy_features()
    config = CMCRConfig(**SMALL, pseudo_source="overlap+memory", seed_keys=5)
    rows = torch.arange(10, 60)
    data = TrainingData(features.overlap_x, features.overlap_y, rows, features.memory_x, features.memory_y, config)
    keys = seed_keys(data, config)
    _, pivots = _memory_seeded(data, RankSlice(), keys, pivots=True, show_progress_bar=False)
    nearest_a = (features.memory_x @ features.overlap_x[rows[keys]].T).argmax(dim=1)
    nearest_c = (features.memory_y @ features.overlap_y[rows[keys]].T).argmax(dim=1)
    assert len(keys) == 5 and torch.equal(pivots, keys[torch.cat([nearest_a, nearest_c])])


def test_fit_reports_its_stages_and_announces_them(capsys):
    config = CMCRConfig(**{**SMALL, "val_fraction": 0.2}, pseudo_source="overlap+memory")
    fit = fit_heads(toy_features(), config, show_progress_bar=True)
    stages = {"pseudo pairs", "steps", "step retrieval", "held-out matching", "estimate"}
    assert set(fit.stage_seconds) == stages and all(value >= 0 for value in fit.stage_seconds.values())
    assert fit.stage_seconds["step retrieval"] <= fit.stage_seconds["steps"]
    err = capsys.readouterr().err
    for stage in ("held-out matching", "estimate"):  # the others run under progress bars
        assert f"C-MCR: {stage} took" in err, stage
    assert "held-out matching (12 of 12 rows)" in err and "memory-seeded pairs from 48 overlap rows" in err


def test_measuring_samples_held_out_rows_and_estimate_overlap_above_their_caps(monkeypatch):
    features = toy_features(n=300)
    head = sg.plugin.ProjectionHead(sg.HeadSpec(in_dim=6, hidden_dim=8, out_dim=4)).eval()
    other = sg.plugin.ProjectionHead(sg.HeadSpec(in_dim=5, hidden_dim=8, out_dim=4)).eval()
    full = sg.plugin.heads_quality(head, other, features, torch.arange(100))
    assert (full["n_val"], full["n_held_out"], full["estimate_overlap_rows"]) == (100, 100, 300)
    monkeypatch.setattr("spacegraph._quality.HELD_OUT_ROWS", 40)
    sampled = sg.plugin.heads_quality(head, other, features, torch.arange(100))
    assert (sampled["n_val"], sampled["n_held_out"]) == (40, 100)
    capped = sg.plugin.EstimateData(
        features.overlap_x, features.overlap_y, features.memory_x, features.memory_y, max_overlap=120
    )
    assert capped.overlap_rows == 120 and capped.score(head, other)["estimate_overlap_rows"] == 120
