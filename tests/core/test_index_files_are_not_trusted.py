"""A saved index is checked for what its files hold, not only for their checksums: an ids file without its ids
would answer with row numbers, and rows with NaN would rank garbage. Each is refused even when the manifest's
sha256 was edited to match the damaged file."""

import hashlib
import json

import numpy as np
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


def record_sha256(folder, name):
    manifest = json.loads((folder / "index.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "index.json").write_text(json.dumps(manifest))


def nan_row_in_hnsw(faiss, path):
    index = faiss.read_index(str(path))
    faiss.rev_swig_ptr(faiss.downcast_index(index.storage).get_xb(), index.ntotal * index.d)[5] = np.nan
    faiss.write_index(index, str(path))


def bad_link_in_hnsw(faiss, path):
    index = faiss.read_index(str(path))
    faiss.rev_swig_ptr(index.hnsw.neighbors.data(), index.hnsw.neighbors.size())[3] = 10**6
    faiss.write_index(index, str(path))


def bad_id_in_ivf(faiss, path):
    index = faiss.read_index(str(path))
    lists = faiss.extract_index_ivf(index).invlists
    first = next(i for i in range(lists.nlist) if lists.list_size(i))
    faiss.rev_swig_ptr(lists.get_ids(first), lists.list_size(first))[0] = 10**6
    faiss.write_index(index, str(path))


def nan_row_in_usearch(_, path):
    from usearch.index import Index

    index = Index.restore(str(path))
    index.remove(5)
    index.add(5, np.full(index.ndim, np.nan, np.float32))
    index.save(str(path))


APPROXIMATE_DAMAGES = {
    "faiss-hnsw nan row": ("faiss-hnsw", nan_row_in_hnsw, "rows hold NaN or inf"),
    "faiss-hnsw bad link": ("faiss-hnsw", bad_link_in_hnsw, "not a readable faiss index .*out of range"),
    "faiss-ivf bad id": ("faiss-ivf", bad_id_in_ivf, "stored ids do not name each of its 300 rows once"),
    "usearch nan row": ("usearch", nan_row_in_usearch, "rows hold NaN or inf"),
}


@pytest.mark.parametrize("damage", sorted(APPROXIMATE_DAMAGES))
def test_approximate_index_files_are_checked_for_what_they_hold(tmp_path, damage):
    faiss = pytest.importorskip("faiss")
    pytest.importorskip("usearch.index")
    backend, damage_file, message = APPROXIMATE_DAMAGES[damage]
    folder = sg.SearchIndex.build(random_unit(300, 8, 0), backend=backend).save(tmp_path / "index")
    name = "index.usearch" if backend == "usearch" else "index.faiss"
    damage_file(faiss, folder / name)
    record_sha256(folder, name)
    with pytest.raises(sg.SpacegraphValueError, match=message):
        sg.SearchIndex.load(folder)
