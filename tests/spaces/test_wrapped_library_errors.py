"""The spaces that wrap open_clip, transformers and sentence-transformers turn their libraries' errors for a
missing or damaged model into a spacegraph error that names the space and the source, keeping the library's
error as ``__cause__``."""

import pytest
from spacegraph_spaces.hf_clap import HFClapSpace
from spacegraph_spaces.hf_clip import HFCLIPSpace
from spacegraph_spaces.sentence import SentenceTransformerSpace

import spacegraph as sg
from tests.spaces.test_clip_spaces import write_tiny_hf_clip

WRAPPERS = [(HFCLIPSpace, "transformers", "hf"), (HFClapSpace, "transformers", "hf")]
WRAPPERS += [(SentenceTransformerSpace, "sentence_transformers", "text")]


@pytest.mark.parametrize(("space", "library", "extra"), WRAPPERS, ids=lambda v: getattr(v, "__name__", v))
def test_a_missing_model_folder_is_a_spacegraph_error_with_the_cause(space, library, extra, tmp_path):
    pytest.importorskip(library)
    missing = tmp_path / "no-such-model"
    with pytest.raises(sg.SpacegraphError, match=rf"{space.__name__}: .* could not load '.*no-such-model'") as info:
        space(str(missing))
    assert info.value.__cause__ is not None and not isinstance(info.value.__cause__, sg.SpacegraphError)


def test_a_damaged_model_folder_is_a_spacegraph_error_with_the_cause(tmp_path):
    folder = write_tiny_hf_clip(tmp_path / "clip", seed=0)
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip", "text_config": ')  # cut short
    with pytest.raises(sg.SpacegraphError, match="HFCLIPSpace: transformers could not load") as info:
        HFCLIPSpace(folder)
    assert info.value.__cause__ is not None


def test_open_clip_errors_are_wrapped_too(tmp_path):
    pytest.importorskip("open_clip")
    from spacegraph_spaces.openclip import OpenCLIPSpace

    with pytest.raises(sg.SpacegraphError, match="OpenCLIPSpace: open_clip could not load 'local-dir:") as info:
        OpenCLIPSpace(f"local-dir:{tmp_path / 'none'}")
    assert info.value.__cause__ is not None
