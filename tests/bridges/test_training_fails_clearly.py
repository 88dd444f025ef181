"""Training fails clearly: no NaN bridge gets a quality, bad configs and features are refused naming the field."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from spacegraph_bridges.cmcr import CMCRConfig, CMCRMethod, check_heads, fit_heads

import spacegraph as sg
from spacegraph._eval import pair_recall_at_1, retrieval_metrics
from tests.conftest import random_unit

QUICK = {"steps": 20, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def toy_features(n=40, memory=20):
    return sg.BridgeFeatures(
        random_unit(n, 6, 0), random_unit(n, 10, 1), random_unit(memory, 6, 2), random_unit(memory, 10, 3)
    )


def train(toy_spaces, features, **config):
    x, y = toy_spaces
    return CMCRMethod().train(x.spec, y.spec, "text", features, {**QUICK, **config}, show_progress_bar=False)


@pytest.mark.parametrize("setting", [{"lr": 1e6}, {"weight_decay": 1e9}])
def test_a_diverging_run_stops_with_the_step_and_loss_parts(toy_spaces, setting):
    name, value = next(iter(setting.items()))
    with pytest.raises(ValueError, match=r"diverged at step \d+ of 20: the loss is not finite") as err:
        train(toy_spaces, toy_features(), **setting)
    message = str(err.value)
    assert "total=nan" in message and "inter=" in message and "intra=" in message
    assert f"{name} (now {value:g})" in message and "no bridge was made" in message


@pytest.mark.parametrize("field", ["noise_std", "lr", "weight_decay", "temperature", "memory_temperature"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_config_refuses_nan_and_infinity_naming_the_field(field, value):
    with pytest.raises(ValidationError, match=rf"{field}\n  Input should be a finite number"):
        CMCRConfig(**{field: value})


def test_a_memory_temperature_that_overflows_is_refused_before_training():
    with pytest.raises(ValueError, match="NaN or inf pseudo embeddings at memory_temperature=1e-45; raise it"):
        fit_heads(toy_features(), CMCRConfig(**QUICK, memory_temperature=1e-45), show_progress_bar=False)


def test_heads_with_a_non_finite_statistic_are_refused_by_name():
    config = CMCRConfig(**QUICK, use_memory=False)
    fit = fit_heads(sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1)), config, show_progress_bar=False)
    check_heads(fit.head_x, fit.head_y, 19, config)
    fit.head_y.net[1].running_var[0] = math.inf
    fit.head_x.net[4].running_var[1] = -1.0
    with pytest.raises(
        ValueError,
        match=r"after step 19 of 20, head_x.net.4.running_var has negative values.*; "
        r"head_y.net.1.running_var contains NaN or inf; no bridge was made; lower lr",
    ):
        check_heads(fit.head_x, fit.head_y, 19, config)


def test_nan_embeddings_get_an_error_not_a_positive_quality():
    nan_rows = torch.full((4, 3), math.nan)
    with pytest.raises(ValueError, match="pair_recall_at_1: the embeddings hold NaN or inf"):
        pair_recall_at_1(nan_rows, random_unit(4, 3, 0))  # argmax over NaN rows picked row 0: recall 0.25
    with pytest.raises(ValueError, match="retrieval_metrics: the similarities hold NaN or inf"):
        retrieval_metrics(torch.full((2, 3), math.nan), [0, 1], [0, 1, 1])


def test_a_trained_bridge_is_finite_and_scored_in_the_unit_range(toy_spaces):
    bridge = train(toy_spaces, toy_features(), lr=10.0)  # large, but it trains
    assert all(torch.isfinite(t).all() for t in bridge.state_dict().values() if t.is_floating_point())
    assert torch.isfinite(bridge.project("toy-at", random_unit(3, 6, 5))).all()
    assert 0 <= bridge.card.quality["held_out_R@1"] <= 1 and 0 <= bridge.card.quality["estimate"] <= 1


def test_numpy_features_are_refused_with_the_fix():
    array = np.zeros((4, 6), dtype=np.float32)
    with pytest.raises(TypeError, match=r"overlap_x: expected a torch.Tensor .*got ndarray.*torch.from_numpy"):
        sg.BridgeFeatures(array, random_unit(4, 10, 1))
    with pytest.raises(TypeError, match="memory_y: expected a torch.Tensor"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1), random_unit(2, 6, 2), [[0.0] * 10])


def test_features_that_require_grad_train_as_constants(toy_spaces):
    overlap_x = random_unit(40, 6, 0).requires_grad_()
    features = sg.BridgeFeatures(overlap_x, random_unit(40, 10, 1), random_unit(20, 6, 2), random_unit(20, 10, 3))
    assert not features.overlap_x.requires_grad
    torch.testing.assert_close(features.overlap_x, overlap_x.detach())
    bridge = train(toy_spaces, features)
    assert overlap_x.grad is None and torch.isfinite(bridge.project("toy-at", random_unit(2, 6, 4))).all()


def test_features_must_be_2d_real_tensors():
    with pytest.raises(ValueError, match=r"overlap_y: expected a 2-D tensor \[rows, dim\], got shape \[4, 10, 1\]"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1)[..., None])
    with pytest.raises(TypeError, match="memory_x: expected real-valued features, got dtype torch.complex64"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1), torch.zeros(2, 6, dtype=torch.complex64))


def test_a_one_row_overlap_is_refused_with_the_minimum(toy_spaces):
    one_row = toy_features(n=1)
    with pytest.raises(ValueError, match="1 overlap row.*a bridge trains on at least 2"):
        train(toy_spaces, one_row)
    with pytest.raises(ValueError, match=r"1 overlap row\(s\) are too few to train with val_fraction=0.0"):
        fit_heads(one_row, CMCRConfig(**QUICK, val_fraction=0), show_progress_bar=False)
    with pytest.raises(ValueError, match=r"3 overlap row\(s\) .* at least 2 more held out .* or set val_fraction=0"):
        fit_heads(toy_features(n=3), CMCRConfig(**QUICK), show_progress_bar=False)
    two_rows = fit_heads(toy_features(n=2), CMCRConfig(**QUICK, val_fraction=0), show_progress_bar=False)
    assert math.isfinite(two_rows.quality["estimate"])
