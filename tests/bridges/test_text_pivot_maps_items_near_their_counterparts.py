"""The training-free ``text-pivot`` method maps items of ``x`` near their counterparts in ``y`` through the overlap
pairs, even where the spaces relate non-linearly (where a Procrustes rotation fails); its keys are training rows
only (a seeded sample of at most ``anchors``), held out on the same rows as cmcr's."""

import torch
import torch.nn.functional as F
from spacegraph_bridges.procrustes import ProcrustesMethod
from spacegraph_bridges.text_pivot import TextPivotMethod

import spacegraph as sg
from tests.conftest import ToySpace, random_unit

X, Y = ToySpace("x", ("audio", "text"), 4, seed=1), ToySpace("y", ("text", "image"), 6, seed=2)
WARP = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))


def warped(rows: torch.Tensor) -> torch.Tensor:
    """A smooth, far from linear, map of x's embeddings to y's."""
    return F.normalize(torch.sin(2 * rows @ WARP), dim=-1)


def overlap_features(n: int = 400) -> sg.BridgeFeatures:
    overlap = random_unit(n, 4, 0)
    return sg.BridgeFeatures(overlap, warped(overlap))


def test_new_items_land_near_their_counterparts_where_a_rotation_cannot_follow():
    features = overlap_features()
    bridge = TextPivotMethod().train(X.spec, Y.spec, "text", features, show_progress_bar=False)
    rotation = ProcrustesMethod().train(X.spec, Y.spec, "text", features, show_progress_bar=False)
    items = random_unit(50, 4, 7)  # never seen
    cosine = (bridge.project("x", items) * warped(items)).sum(dim=-1)
    assert cosine.mean() > 0.9
    assert (rotation.project("x", items) * warped(items)).sum(dim=-1).mean() < cosine.mean() - 0.15
    assert bridge.card.quality["held_out_R@1"] > 0.9 and rotation.card.quality["held_out_R@1"] < 0.5


def test_the_card_is_an_extend_bridge_with_a_pivot_head_of_training_rows():
    features = overlap_features(60)
    bridge = TextPivotMethod().train(X.spec, Y.spec, "text", features, {"anchors": 20}, show_progress_bar=False)
    card = bridge.card
    assert (card.method, card.kind, card.name) == ("text-pivot", "extend", "x->y")
    assert card.heads["x"] == sg.HeadSpec(arch="pivot", in_dim=4, out_dim=6, anchors=20, temperature=0.05)
    assert card.training == {"anchors": 20, "temperature": 0.05, "val_fraction": 0.1, "seed": 0}
    held_out = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:6]  # cmcr's split for seed 0
    state = bridge.head("x").state_dict()
    best, rows = (state["net.keys"] @ features.overlap_x.T).max(dim=1)  # the overlap row each key is
    assert (best > 1 - 1e-5).all() and len(rows.unique()) == 20 and not torch.isin(rows, held_out).any()
    torch.testing.assert_close(state["net.values"], features.overlap_y[rows])  # each key's counterpart in y
    assert card.quality["n_val"] == 6


def test_fewer_overlap_rows_than_anchors_keeps_them_all():
    bridge = TextPivotMethod().train(
        X.spec, Y.spec, "text", overlap_features(30), {"val_fraction": 0}, show_progress_bar=False
    )
    assert bridge.card.heads["x"].anchors == 30 and "held_out_R@1" not in bridge.card.quality
