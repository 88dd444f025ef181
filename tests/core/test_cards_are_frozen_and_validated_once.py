"""A bridge card is validated once, when built or read, and then frozen: no field or mapping of it can be edited in
place, a changed card is a new card (validated like one read from disk), and reading it validates nothing again."""

import copy
import math

import pytest
from pydantic import ValidationError

import spacegraph as sg
from spacegraph import _card
from spacegraph.plugin import Calibration, SpaceRef
from tests.conftest import ToySpace


def card_of(x: sg.Space, y: sg.Space, score: float = 0.6) -> sg.BridgeCard:
    heads = {space.name: sg.HeadSpec(in_dim=space.spec.dim, hidden_dim=8, out_dim=4) for space in (x, y)}
    return sg.BridgeCard(
        library_version=sg.__version__, name=f"{x.name}+{y.name}", method="hand",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)), overlap="text", heads=heads,
        training={"steps": 3, "history": [{"step": 0}]}, data={"overlap": 10}, quality={"score": score},
    )  # fmt: skip


@pytest.fixture
def spaces():
    return ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)


def test_no_field_or_mapping_of_a_card_can_be_edited_in_place(spaces):
    card = card_of(*spaces)
    with pytest.raises(ValidationError, match="frozen"):
        card.name = "renamed"
    with pytest.raises(ValidationError, match="frozen"):
        card.quality = {"score": 0.1}
    edits = [
        lambda: card.quality.__setitem__("score", 0.1),
        lambda: card.quality.update(score=0.1),
        lambda: card.quality.pop("score"),
        lambda: card.quality.clear(),
        lambda: card.heads.__delitem__("at"),
        lambda: card.training.setdefault("lr", 1.0),
        lambda: card.data.popitem(),
    ]
    for edit in edits:
        with pytest.raises(
            sg.SpacegraphTypeError, match="a bridge card is frozen: build a new one with card.model_copy"
        ):
            edit()
    with pytest.raises(sg.SpacegraphTypeError):
        card.quality |= {"score": 0.1}
    with pytest.raises(ValidationError, match="frozen"):
        card.heads["at"].out_dim = 5
    assert card.quality == {"score": 0.6} and card.score == 0.6 and card == card_of(*spaces)


def test_a_frozen_card_copies_serialises_and_compares_as_before(spaces):
    card = card_of(*spaces)
    assert copy.deepcopy(card) == card and copy.copy(card) == card
    assert sg.BridgeCard.model_validate_json(card.model_dump_json()) == card
    assert card.model_dump()["quality"] == {"score": 0.6} and type(card.model_dump()["quality"]) is dict
    bridge = sg.Bridge(card)
    assert copy.deepcopy(bridge).card == card


def test_a_changed_card_is_a_new_validated_card_with_fresh_properties(spaces):
    card = card_of(*spaces)
    assert card.score == 0.6  # computed, and kept
    better = card.model_copy(update={"quality": {"score": 0.9}})
    assert better.score == 0.9 and better.score_source == "given" and card.score == 0.6
    assert better.cost == pytest.approx(-math.log(0.9))
    with pytest.raises(sg.SpacegraphValueError, match=r"for bridge card 'at\+ti'\n  quality: .*accepted in \[0, 1\]"):
        card.model_copy(update={"quality": {"score": 3.0}})
    with pytest.raises(sg.SpacegraphValueError, match="heads: this connect bridge has heads for"):
        card.model_copy(update={"heads": {"at": card.heads["at"]}})
    calibration = Calibration(
        probe="p", route="r", n_queries=1, n_gallery=1, route_measured=0.5, route_expected=0.6, value=0.5,
        rule="measured",
    )  # fmt: skip
    calibrated = card.model_copy(update={"calibration": calibration})
    assert calibrated.score == 0.5 and calibrated.score_source == "probe 'p'"


def test_a_bridge_takes_a_new_card_only_for_the_same_heads_and_spaces(spaces):
    bridge = sg.Bridge(card_of(*spaces))
    bridge.card = bridge.card.model_copy(update={"quality": {"score": 0.8}})
    assert bridge.card.score == 0.8 and "score=0.800" in repr(bridge)
    for change in (
        {"name": "other"},
        {"heads": {n: h.model_copy(update={"hidden_dim": 9}) for n, h in bridge.card.heads.items()}},
    ):
        with pytest.raises(sg.SpacegraphValueError, match="build a new Bridge for it"):
            bridge.card = bridge.card.model_copy(update=change)
    with pytest.raises(sg.SpacegraphTypeError, match="a card is a BridgeCard"):
        bridge.card = bridge.card.model_dump()
    assert bridge.card.name == "at+ti" and bridge.card.score == 0.8


def test_a_card_read_from_disk_is_validated_once(spaces, tmp_path, monkeypatch):
    folder = sg.Bridge(card_of(*spaces)).save(tmp_path / "bridge")
    validated = []  # the name validator runs once per validation of a card
    check_name = _card.check_bridge_name
    monkeypatch.setattr(_card, "check_bridge_name", lambda name: validated.append(name) or check_name(name))
    bridge = sg.Bridge.load(folder)
    assert validated == ["at+ti"]
    graph = sg.SpaceGraph(list(spaces), [bridge])
    for _ in range(3):
        card = bridge.card
        assert card.score == 0.6 and card.cost > 0 and card.modalities and card.headed_spaces == ["at", "ti"]
        route = graph.connect("audio", "image")
        assert route.expected_quality == pytest.approx(0.6) and repr(bridge)
    assert validated == ["at+ti"]
