"""The ``linear`` and ``pivot`` head architectures: a pivot head needs its anchors and temperature and no other head
takes them; every head works in eval mode on one row; a pivot head is the lookup it promises, at any batch size; and
specs of the older heads serialise exactly as before, so cards saved earlier read back unchanged."""

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import spacegraph as sg
from spacegraph._bridge import PIVOT_SCORES, expected_shapes
from spacegraph.plugin import HeadSpec, ProjectionHead, SpaceRef
from tests.conftest import random_unit

SPECS = {
    "mlp2": HeadSpec(in_dim=6, hidden_dim=8, out_dim=4),
    "mlp1": HeadSpec(arch="mlp1", in_dim=6, out_dim=4),
    "linear": HeadSpec(arch="linear", in_dim=6, out_dim=4),
    "pivot": HeadSpec(arch="pivot", in_dim=6, out_dim=4, anchors=5, temperature=0.1),
}


@pytest.mark.parametrize("arch", SPECS)
def test_every_head_maps_one_row_in_eval_mode_to_a_unit_vector(arch):
    torch.manual_seed(0)
    head = ProjectionHead(SPECS[arch])
    if arch == "pivot":
        head.load_state_dict({"net.keys": random_unit(5, 6, 0), "net.values": random_unit(5, 4, 1)})
    out = head.eval()(random_unit(1, 6, 2))
    assert out.shape == (1, 4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1))


def test_the_state_dicts_hold_what_the_heads_document():
    assert {key: tuple(v.shape) for key, v in ProjectionHead(SPECS["linear"]).state_dict().items()} == {
        "net.weight": (4, 6),
        "net.bias": (4,),
    }
    assert {key: tuple(v.shape) for key, v in ProjectionHead(SPECS["pivot"]).state_dict().items()} == {
        "net.keys": (5, 6),
        "net.values": (5, 4),
    }


def test_a_pivot_head_is_a_softmax_lookup_and_chunking_changes_nothing():
    anchors = PIVOT_SCORES // 64 + 7  # a batch of 200 rows spans several chunks
    keys, values = random_unit(anchors, 3, 0), random_unit(anchors, 5, 1)
    head = ProjectionHead(HeadSpec(arch="pivot", in_dim=3, out_dim=5, anchors=anchors, temperature=0.05)).eval()
    head.load_state_dict({"net.keys": keys, "net.values": values})
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(2))  # not unit rows: the head normalises them
    expected = F.normalize(torch.softmax(F.normalize(x, dim=-1) @ keys.T / 0.05, dim=-1) @ values, dim=-1)
    torch.testing.assert_close(head(x), expected)


def test_a_pivot_head_needs_anchors_and_temperature_and_no_other_head_takes_them():
    with pytest.raises(
        ValidationError, match=r"a pivot head needs anchors and temperature; missing: \['temperature'\]"
    ):
        HeadSpec(arch="pivot", in_dim=6, out_dim=4, anchors=5)
    with pytest.raises(ValidationError, match=r"\['anchors', 'temperature'\] are settings of pivot heads only"):
        HeadSpec(arch="linear", in_dim=6, out_dim=4, anchors=5, temperature=0.1)
    with pytest.raises(ValidationError, match="temperature"):
        HeadSpec(arch="pivot", in_dim=6, out_dim=4, anchors=5, temperature=float("inf"))
    with pytest.raises(ValidationError, match="anchors"):
        HeadSpec(arch="pivot", in_dim=6, out_dim=4, anchors=0, temperature=0.1)


def test_older_head_specs_serialise_as_before_and_every_spec_round_trips():
    assert json.loads(SPECS["mlp2"].model_dump_json()) == {"arch": "mlp2", "in_dim": 6, "hidden_dim": 8, "out_dim": 4}
    assert "anchors" not in SPECS["linear"].model_dump()
    assert SPECS["pivot"].model_dump()["anchors"] == 5 and SPECS["pivot"].model_dump()["temperature"] == 0.1
    for spec in SPECS.values():
        assert HeadSpec.model_validate_json(spec.model_dump_json()) == spec


def card_with(head: HeadSpec) -> sg.BridgeCard:
    spaces = (
        SpaceRef(name="a", fingerprint="fa", dim=6, modalities=("audio", "text")),
        SpaceRef(name="b", fingerprint="fb", dim=4, modalities=("text", "image")),
    )
    return sg.BridgeCard(
        library_version=sg.__version__, name="a->b", method="test", kind="extend", spaces=spaces, overlap="text",
        heads={"a": head},
    )  # fmt: skip


@pytest.mark.parametrize("arch", ["linear", "pivot"])
def test_expected_shapes_describe_the_new_heads(arch):
    shapes = expected_shapes(card_with(SPECS[arch]))
    head = ProjectionHead(SPECS[arch])
    assert shapes == {f"a/{key}": tuple(value.shape) for key, value in head.state_dict().items()}
