"""A saved index is checked for what its files hold, not only for their checksums: an ids file without its ids
would answer with row numbers, and rows with NaN would rank garbage. Each is refused even when the manifest's
sha256 was edited to match the damaged file."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import spacegraph as sg
from tests.conftest import random_unit


def saved_index(tmp_path):
    index = sg.SearchIndex.build(random_unit(20, 4, 0), ids=list(range(100, 120)), backend="exact")
    return index.save(tmp_path / "index")


def rewrite(folder, name, tensors):
    """Replace ``name`` and record its new sha256 in the manifest, as a careless edit or a tool would."""
    save_file(tensors, str(folder / name))
    manifest = json.loads((folder / "index.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "index.json").write_text(json.dumps(manifest))


def test_an_ids_file_without_its_ids_is_refused(tmp_path):
    folder = saved_index(tmp_path)
    ids_file = next(name for name in json.loads((folder / "index.json").read_text())["files"] if "ids" in name)
    rewrite(folder, ids_file, {"other": torch.arange(20)})
    with pytest.raises(sg.SpacegraphValueError, match="its ids are damaged .*holds no 'ids' tensor"):
        sg.SearchIndex.load(folder)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (random_unit(20, 4, 0).index_fill(0, torch.tensor([3]), float("nan")), "rows hold NaN or inf"),
        (random_unit(20, 4, 0).double(), "it holds a torch.float64 tensor of shape"),
        (random_unit(20, 4, 0)[None], "one 2-d float32 'vectors' tensor"),
    ],
)
def test_index_rows_must_be_finite_float32_matrices(tmp_path, vectors, message):
    folder = saved_index(tmp_path)
    rewrite(folder, "vectors.safetensors", {"vectors": vectors})
    with pytest.raises(sg.SpacegraphValueError, match=message):
        sg.SearchIndex.load(folder)
    assert load_file(str(folder / "vectors.safetensors"))["vectors"].shape == vectors.shape  # left as found
