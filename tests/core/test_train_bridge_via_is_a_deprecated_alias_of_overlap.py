"""train_bridge(overlap=) is the keyword; via= still works, with a DeprecationWarning."""

import pytest

import spacegraph as sg
from tests.conftest import ToySpace
from tests.core.test_train_missing_passes_method_and_config_untouched import Recording


@pytest.fixture
def graph():
    Recording.calls.clear()
    return sg.SpaceGraph([ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)])


def test_via_warns_and_trains_as_overlap(graph):
    with pytest.warns(DeprecationWarning, match="overlap="):
        graph.train_bridge("at", "ti", via="text", features=None, method="test-recording-a")
    [call] = Recording.calls
    assert call["overlap"] == "text" and graph.connect("audio", "image").hops == 2


def test_overlap_is_needed_and_must_agree_with_via(graph):
    with pytest.raises(TypeError, match="needs overlap="):
        graph.train_bridge("at", "ti", features=None, method="test-recording-a")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="disagree"):
        graph.train_bridge("at", "ti", overlap="text", via="image", features=None, method="test-recording-a")
    assert Recording.calls == []
