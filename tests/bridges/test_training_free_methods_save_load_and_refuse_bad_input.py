"""``procrustes`` and ``text-pivot``: registered through the ``spacegraph.bridges`` entry points, saved and loaded bit
for bit (the same card, weights, fingerprint and projections), saved weights of the wrong shape refused on load, and
bad configs refused naming the accepted fields."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from spacegraph_bridges.procrustes import ProcrustesMethod
from spacegraph_bridges.text_pivot import TextPivotMethod

import spacegraph as sg
from tests.conftest import ToySpace, random_unit

X, Y = ToySpace("x", ("audio", "text"), 6, seed=1), ToySpace("y", ("text", "image"), 10, seed=2)
METHODS = {"procrustes": ProcrustesMethod, "text-pivot": TextPivotMethod}


def train(name: str) -> sg.Bridge:
    features = sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1), random_unit(12, 6, 2))
    graph = sg.SpaceGraph([X, Y])
    return graph.train_bridge("x", "y", overlap="text", features=features, method=name, show_progress_bar=False)


def test_both_are_registered_bridge_methods():
    assert {"cmcr", "procrustes", "text-pivot"} <= set(sg.list_bridge_methods())
    for name, method in METHODS.items():
        assert isinstance(method(), sg.plugin.BridgeMethod) and method.name == name


@pytest.mark.parametrize("name", METHODS)
def test_a_saved_bridge_loads_bit_for_bit(name, tmp_path):
    bridge = train(name)
    loaded = sg.Bridge.load(bridge.save(tmp_path / name))
    assert loaded.card == bridge.card and loaded.fingerprint == bridge.fingerprint
    for key, value in bridge.head("x").state_dict().items():
        assert torch.equal(loaded.head("x").state_dict()[key], value)
    rows = random_unit(7, 6, 3)
    assert torch.equal(loaded.project("x", rows), bridge.project("x", rows))
    assert torch.equal(loaded.project("x", rows[:1]), bridge.project("x", rows[:1]))  # one row, eval mode


@pytest.mark.parametrize(("name", "key"), [("procrustes", "x/net.weight"), ("text-pivot", "x/net.keys")])
def test_saved_weights_of_the_wrong_shape_are_refused(name, key, tmp_path):
    folder = train(name).save(tmp_path / name)
    state = load_file(str(folder / "heads.safetensors"))
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, str(folder / "heads.safetensors"))
    with pytest.raises(sg.SpacegraphValueError, match=rf"does not match its card .*{key} has shape"):
        sg.Bridge.load(folder)


ACCEPTED = {
    "procrustes": "whiten, shrinkage, val_fraction, seed",
    "text-pivot": "anchors, temperature, val_fraction, seed",
}


@pytest.mark.parametrize(
    ("name", "config", "problem"),
    [
        ("procrustes", {"whiten": True, "shrink": 0.1}, "shrink: Extra inputs are not permitted"),
        ("procrustes", {"shrinkage": 0}, "shrinkage: Input should be greater than 0"),
        ("procrustes", {"kind": "connect"}, "kind: Extra inputs are not permitted"),  # always an extend bridge
        ("text-pivot", {"anchors": 0}, "anchors: Input should be greater than 0"),
        ("text-pivot", {"temperature": float("nan")}, "temperature: Input should be a finite number"),
        ("text-pivot", {"val_fraction": 1}, "val_fraction: Input should be less than 1"),
    ],
)
def test_bad_configs_are_refused_naming_the_accepted_fields(name, config, problem):
    features = sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1))
    expected = rf"'{name}': invalid config \({problem}\); accepted fields: {ACCEPTED[name]}$"
    with pytest.raises(sg.SpacegraphValueError, match=expected):
        METHODS[name]().train(X.spec, Y.spec, "text", features, config)
