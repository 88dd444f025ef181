import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from spacegraph_bridges.cmcr import (
    CMCRConfig,
    CMCRMethod,
    attraction,
    cmcr_loss,
    fit_heads,
    info_nce,
    memory_retrieve,
    perturb,
)

import spacegraph as sg
from tests.conftest import random_unit


def test_info_nce_matches_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    tau = 0.5
    # logits = x @ y.T / tau = [[1.2, 0], [1.6, 2]]
    row = (-math.log(math.exp(1.2) / (math.exp(1.2) + 1)) - math.log(math.exp(2) / (math.exp(1.6) + math.exp(2)))) / 2
    col = (-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6))) - math.log(math.exp(2) / (1 + math.exp(2)))) / 2
    assert info_nce(x, y, tau).item() == pytest.approx((row + col) / 2, rel=1e-6)


def test_attraction_is_mean_squared_distance():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert attraction(x, y).item() == pytest.approx((2.0 + 0.0) / 2)


def test_cmcr_loss_weighs_inter_and_intra():
    zx, zy, za, zc = (random_unit(4, 3, seed) for seed in range(4))
    config = CMCRConfig(temperature=0.1, intra_weight=0.3)
    parts = cmcr_loss(zx, zy, za, zc, config)
    inter = info_nce(zx, zy, 0.1) + info_nce(za, zc, 0.1)
    intra = attraction(za, zx) + attraction(zc, zy)
    assert parts["inter"].item() == pytest.approx(inter.item())
    assert parts["intra"].item() == pytest.approx(intra.item())
    assert parts["total"].item() == pytest.approx((inter + 0.3 * intra).item())
    native_only = cmcr_loss(zx, zy, None, None, config)
    assert native_only["total"].item() == pytest.approx(info_nce(zx, zy, 0.1).item())


@pytest.mark.parametrize("method", ["stream", "sdpa"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_chunked_memory_retrieval_equals_unchunked(method, chunk):
    queries, memory = random_unit(50, 16, 0), random_unit(300, 16, 1)
    reference = F.normalize(torch.softmax(queries @ memory.T / 0.01, dim=1) @ memory, dim=-1)
    got = memory_retrieve(queries, memory, 0.01, chunk_size=chunk, method=method)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_memory_retrieval_is_stable_at_tiny_temperature():
    queries, memory = random_unit(10, 8, 0), random_unit(100, 8, 1)
    got = memory_retrieve(queries, memory, 1e-4, chunk_size=13)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, memory[(queries @ memory.T).argmax(dim=1)], atol=1e-4, rtol=0)


def test_perturb_renormalises_and_is_fresh_each_call():
    e = random_unit(5, 8, 0)
    generator = torch.Generator().manual_seed(0)
    a, b = perturb(e, 0.05, generator), perturb(e, 0.05, generator)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(5))
    assert not torch.allclose(a, b)
    assert perturb(e, 0.0, generator) is e


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(ValidationError, match="noise_sdt"):
        CMCRConfig.model_validate({"noise_sdt": 0.1})
    with pytest.raises(ValidationError, match="temperature"):
        CMCRConfig(temperature=0)


def _aligned_features(n=400, seed=0):
    """Two spaces whose 'text' embeddings are rotations of one latent: a connection exists to be found."""
    latent = random_unit(n, 6, seed)
    rot_x, rot_y = (torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(s)))[0] for s in (10, 11))
    return sg.BridgeFeatures(latent @ rot_x, latent @ rot_y, random_unit(200, 6, 2), random_unit(200, 6, 3))


SMALL = {"steps": 150, "hidden_dim": 64, "out_dim": 32, "batch_size": 64}


def test_training_is_repeatable_and_learns_the_connection():
    features = _aligned_features()
    first = fit_heads(features, CMCRConfig(**SMALL), show_progress_bar=False)
    second = fit_heads(features, CMCRConfig(**SMALL), show_progress_bar=False)
    for a, b in zip(first.head_x.state_dict().values(), second.head_x.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert first.quality == second.quality
    assert first.quality["held_out_R@1"] > 0.5  # chance on 40 held-out items is 0.025
    assert first.history[-1]["total"] < first.history[0]["total"]


def test_method_builds_a_card_with_spaces_config_and_quality(toy_spaces):
    x, y = toy_spaces
    features = sg.BridgeFeatures(
        random_unit(60, 6, 0), random_unit(60, 10, 1), random_unit(30, 6, 2), random_unit(30, 10, 3)
    )
    bridge = CMCRMethod().train(x.spec, y.spec, "text", features, {**SMALL, "steps": 5}, show_progress_bar=False)
    card = bridge.card
    assert [ref.name for ref in card.spaces] == ["toy-at", "toy-ti"]
    assert card.spaces[0].fingerprint == x.spec.fingerprint
    assert card.overlap == sg.Modality.TEXT
    assert card.training["steps"] == 5 and card.data == {"overlap": 60, "memory_x": 30, "memory_y": 30}
    assert 0 <= card.quality["held_out_R@1"] <= 1 and card.quality["n_val"] == 6
    assert set(card.modalities) == {sg.Modality.AUDIO, sg.Modality.TEXT, sg.Modality.IMAGE}


def test_method_refuses_bad_features(toy_spaces):
    x, y = toy_spaces
    method = CMCRMethod()
    good = random_unit(20, 6, 0), random_unit(20, 10, 1), random_unit(5, 6, 2), random_unit(5, 10, 3)
    with pytest.raises(ValueError, match=r"expected shape \[n, 6\], got \[20, 10\]"):
        method.train(x.spec, y.spec, "text", sg.BridgeFeatures(good[1], good[1], good[2], good[3]))
    nan = good[0].clone()
    nan[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        method.train(x.spec, y.spec, "text", sg.BridgeFeatures(nan, *good[1:]))
    with pytest.raises(ValueError, match="empty batch"):
        method.train(x.spec, y.spec, "text", sg.BridgeFeatures(good[0][:0], good[1][:0]))
    with pytest.raises(ValueError, match="20 rows but overlap_y has 19"):
        sg.BridgeFeatures(good[0], good[1][:19])
    with pytest.raises(ValueError, match="has no 'audio' to bridge through"):
        method.train(x.spec, y.spec, "audio", sg.BridgeFeatures(*good))
    with pytest.raises(ValueError, match="needs memory_x and memory_y"):
        no_memories = sg.BridgeFeatures(good[0], good[1])
        method.train(x.spec, y.spec, "text", no_memories, {"use_memory": True}, show_progress_bar=False)
    with pytest.raises(ValueError, match="unknown modality 'txt'"):
        method.train(x.spec, y.spec, "txt", sg.BridgeFeatures(*good))


def test_the_progress_bar_carries_the_given_name(capsys):
    fit_heads(_aligned_features(), CMCRConfig(**{**SMALL, "steps": 3}), progress_label="paired upper bound")
    assert "paired upper bound" in capsys.readouterr().err
