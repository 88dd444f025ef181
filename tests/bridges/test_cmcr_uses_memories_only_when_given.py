"""The cmcr method decides about memories itself: with ``use_memory`` unset (a None config included) it builds
pseudo pairs when both memories are given and trains on the native overlap pairs alone otherwise, exactly as
``use_memory=False`` does; ``use_memory=True`` without memories is a clear error."""

import pytest
import torch
from spacegraph_bridges.cmcr import CMCRConfig, CMCRMethod

import spacegraph as sg
from tests.conftest import random_unit

QUICK = {"steps": 5, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def overlap_only() -> sg.BridgeFeatures:
    return sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1))


def with_memories() -> sg.BridgeFeatures:
    return sg.BridgeFeatures(
        random_unit(40, 6, 0), random_unit(40, 10, 1), random_unit(20, 6, 2), random_unit(20, 10, 3)
    )


def test_the_default_is_auto():
    assert CMCRConfig().use_memory is None


class QuickDefaults(CMCRConfig):
    """CMCRConfig with defaults small enough for a test; ``use_memory`` keeps its default."""

    steps: int = 5
    hidden_dim: int = 16
    out_dim: int = 8
    batch_size: int = 16


def test_a_none_config_without_memories_trains_on_native_pairs(toy_spaces, monkeypatch):
    monkeypatch.setattr(CMCRMethod, "config_class", QuickDefaults)
    x, y = (space.spec for space in toy_spaces)
    bridge = CMCRMethod().train(x, y, "text", overlap_only(), None, show_progress_bar=False)
    assert bridge.card.quality["n_pseudo_pairs"] == 0 and bridge.card.training["use_memory"] is None
    assert bridge.card.data == {"overlap": 40} and "estimate" not in bridge.card.quality
    assert bridge.card.training["steps"] == 5  # the defaults of a None config


def test_auto_without_memories_is_native_pairs_only(toy_spaces):
    x, y = (space.spec for space in toy_spaces)
    auto, native = (
        CMCRMethod().train(x, y, "text", overlap_only(), {**QUICK, **memory}, show_progress_bar=False)
        for memory in ({}, {"use_memory": False})
    )
    for a, b in zip(auto.state_dict().values(), native.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_auto_with_both_memories_builds_pseudo_pairs(toy_spaces):
    x, y = (space.spec for space in toy_spaces)
    bridge = CMCRMethod().train(x, y, "text", with_memories(), QUICK, show_progress_bar=False)
    assert bridge.card.quality["n_pseudo_pairs"] > 0 and "estimate" in bridge.card.quality
    off = CMCRMethod().train(x, y, "text", with_memories(), {**QUICK, "use_memory": False}, show_progress_bar=False)
    assert off.card.quality["n_pseudo_pairs"] == 0


def test_use_memory_true_without_memories_is_a_clear_error(toy_spaces):
    x, y = (space.spec for space in toy_spaces)
    one_memory = sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1), random_unit(20, 6, 2))
    for features in (overlap_only(), one_memory):
        with pytest.raises(sg.SpacegraphValueError, match="use_memory=True needs memory_x and memory_y; pass them"):
            CMCRMethod().train(x, y, "text", features, {**QUICK, "use_memory": True}, show_progress_bar=False)
