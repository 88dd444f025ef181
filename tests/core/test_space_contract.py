import pytest
import torch
from pydantic import ValidationError

import spacegraph as sg
from tests.conftest import ToySpace


def test_modality_is_a_str_enum_with_helpful_errors():
    assert sg.Modality("audio") is sg.Modality.AUDIO and sg.Modality.AUDIO == "audio"
    with pytest.raises(
        ValueError, match="unknown modality .audoi.; known modalities: text, image, lowres_image, audio"
    ):
        sg.Modality("audoi")


def test_spec_forbids_unknown_fields_and_checks_values():
    with pytest.raises(ValidationError, match="dimm"):
        sg.SpaceSpec(name="s", modalities=("text",), dim=4, fingerprint="f", dimm=3)
    with pytest.raises(ValidationError, match="unknown modality 'txt'; known modalities: text, image.*closest: 'text'"):
        sg.SpaceSpec(name="s", modalities=("txt",), dim=4, fingerprint="f")
    with pytest.raises(ValidationError, match="must be unique"):
        sg.SpaceSpec(name="s", modalities=("text", "text"), dim=4, fingerprint="f")


def test_encode_batches_normalises_and_matches_one_big_batch():
    space = ToySpace("toy", ("audio", "text"), 5)
    inputs = torch.randn(11, 8)
    small = space.encode("audio", inputs, batch_size=3)
    torch.testing.assert_close(small, space.encode("audio", inputs, batch_size=100))
    torch.testing.assert_close(small.norm(dim=1), torch.ones(11))
    raw = space.encode("audio", inputs, normalize=False)
    torch.testing.assert_close(raw, inputs @ space.maps[sg.Modality.AUDIO])


def test_encode_errors():
    space = ToySpace("toy", ("audio", "text"), 5)
    with pytest.raises(ValueError, match="space 'toy' does not embed 'image'; it embeds: audio, text"):
        space.encode("image", torch.randn(2, 8))
    with pytest.raises(ValueError, match="empty batch of audio inputs"):
        space.encode("audio", [])
    with pytest.raises(TypeError, match="inputs must be a list, tuple, numpy array or tensor"):
        space.encode("audio", "hello")
    nan = torch.randn(3, 8)
    nan[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"1 rows contain NaN or inf \(first rows: \[1\]\)"):
        space.encode("audio", nan)


def test_fingerprint_changes_with_weights():
    a = {"w": torch.zeros(3)}
    assert sg.fingerprint_state_dict(a) == sg.fingerprint_state_dict({"w": torch.zeros(3)})
    assert sg.fingerprint_state_dict(a) != sg.fingerprint_state_dict({"w": torch.tensor([0.0, 0.0, 1e-7])})


def test_fingerprint_handles_scalars():
    assert sg.fingerprint_state_dict({"n": torch.tensor(3)}) != sg.fingerprint_state_dict({"n": torch.tensor(4)})
