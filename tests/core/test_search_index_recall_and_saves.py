"""route.index / route.search and SearchIndex: exact top-k, approximate recall, raw inputs through a shipped route,
save/load with checks, clear errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from spacegraph_bridges.cmcr import CMCRMethod

import spacegraph as sg
from spacegraph import _index_backends
from spacegraph._index import APPROXIMATE, SearchIndex
from tests.conftest import random_unit

QUICK = {"steps": 5, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def make_bridge(x, y, seed=0):
    features = sg.BridgeFeatures(
        random_unit(40, x.spec.dim, seed),
        random_unit(40, y.spec.dim, seed + 1),
        random_unit(20, x.spec.dim, seed + 2),
        random_unit(20, y.spec.dim, seed + 3),
    )
    return CMCRMethod().train(x.spec, y.spec, "text", features, QUICK, show_progress_bar=False)


@pytest.fixture
def route(toy_spaces):
    x, y = toy_spaces
    return sg.SpaceGraph([x, y], [make_bridge(x, y)]).connect("audio", "image")


def clustered(n, dim, clusters, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = random_unit(clusters, dim, seed + 100)
    picked = centres[torch.randint(0, clusters, (n,), generator=generator)]
    return torch.nn.functional.normalize(picked + 0.5 * torch.randn(n, dim, generator=generator) / dim**0.5, dim=-1)


def recall(found, truth):
    return sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist())) / truth.numel()


@pytest.mark.parametrize("k", [1, 5, 13, 14, 40, 97])
def test_exact_equals_brute_force_across_chunk_boundaries(monkeypatch, k):
    monkeypatch.setattr(_index_backends, "QUERY_CHUNK", 7)
    monkeypatch.setattr(_index_backends, "GALLERY_CHUNK", 13)
    gallery, queries = random_unit(97, 16, 0), random_unit(30, 16, 1)
    result = SearchIndex.build(gallery, backend="exact").search(queries, k)
    scores, rows = (queries @ gallery.T).topk(k, dim=1)
    assert torch.equal(result.rows, rows) and torch.equal(result.ids, rows)
    torch.testing.assert_close(result.scores, scores)


def test_k_above_the_row_count_is_capped():
    gallery = random_unit(5, 8, 0)
    scores, ids = SearchIndex.build(gallery).search(random_unit(3, 8, 1), k=10)
    assert scores.shape == ids.shape == (3, 5)
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("backend", APPROXIMATE)
def test_approximate_backends_reach_high_recall_on_clustered_data(backend):
    gallery, queries = clustered(3000, 32, 30, 0), clustered(200, 32, 30, 1)
    index = SearchIndex.build(gallery, backend=backend)
    result = index.search(queries, 10)
    truth = (queries @ gallery.T).topk(10, dim=1).indices
    assert index.backend == backend and len(index) == 3000 and index.dim == 32
    assert recall(result.rows, truth) >= 0.95
    torch.testing.assert_close(result.scores, (queries[:, None, :] * gallery[result.rows]).sum(-1))


def test_auto_backend_is_exact_below_the_threshold_and_approximate_above(monkeypatch):
    gallery = random_unit(50, 8, 0)
    assert SearchIndex.build(gallery).backend == "exact"
    monkeypatch.setattr(_index_backends, "EXACT_MAX_ROWS", 49)
    assert SearchIndex.build(gallery).backend == "faiss-hnsw"
    monkeypatch.setitem(sys.modules, "faiss", None)  # faiss missing: usearch
    assert SearchIndex.build(gallery).backend == "usearch"
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # the search extra missing: exact
    assert SearchIndex.build(gallery).backend == "exact"


@pytest.mark.parametrize(
    ("module", "backend"), [("faiss", "faiss-hnsw"), ("faiss", "faiss-ivf"), ("usearch.index", "usearch")]
)
def test_a_missing_extra_names_it(monkeypatch, module, backend):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(sg.MissingExtraError, match=r'pip install "spacegraph\[search\]"'):
        SearchIndex.build(random_unit(20, 8, 0), backend=backend)


def test_bad_input_is_refused_clearly():
    index = SearchIndex.build(random_unit(20, 8, 0))
    cases = [
        (lambda: index.search(random_unit(2, 7, 1)), sg.SpacegraphValueError, r"expected shape \[n, 8\]"),
        (lambda: index.search(torch.empty(0, 8)), sg.SpacegraphValueError, "empty batch"),
        (lambda: index.search(torch.full((2, 8), float("nan"))), sg.SpacegraphValueError, "NaN or inf"),
        (lambda: index.search(random_unit(2, 8, 1), k=0), sg.SpacegraphValueError, "k must be an integer >= 1"),
        (
            lambda: index.search(random_unit(2, 8, 1), k=True),
            sg.SpacegraphValueError,
            "argument 'k': .*valid integer, got bool",
        ),
        (
            lambda: index.search([[0.0] * 8]),
            sg.SpacegraphTypeError,
            "argument .queries.: .*instance of Tensor, got list",
        ),
        (lambda: SearchIndex.build(torch.empty(0, 8)), sg.SpacegraphValueError, "empty batch"),
        (lambda: SearchIndex.build(random_unit(4, 8, 0), backend="annoy"), sg.SpacegraphValueError, "accepted: auto"),
        (lambda: SearchIndex.build(random_unit(4, 8, 0), backend="exact", M=8), sg.SpacegraphValueError, "none"),
        (lambda: SearchIndex.build(random_unit(4, 8, 0), ids=[1, 2, 3]), sg.SpacegraphValueError, "one id per row"),
        (
            lambda: SearchIndex.build(random_unit(4, 8, 0), ids=torch.tensor(1.0)),
            sg.SpacegraphValueError,
            "one-dimensional",
        ),
        (lambda: SearchIndex.build(random_unit(4, 8, 0), ids=[1, 2, 2, 3]), sg.SpacegraphValueError, "distinct"),
        (lambda: SearchIndex.build(random_unit(4, 8, 0), ids=[1, "b", 2, 3]), sg.SpacegraphTypeError, "all ints"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_route_index_and_search_from_raw_inputs_and_from_features(route, toy_spaces):
    x, y = toy_spaces
    images, audio = torch.randn(30, 8).numpy(), torch.randn(4, 8).numpy()
    names = [f"img{i}" for i in range(30)]
    index = route.index(images, ids=names)
    assert route.search_index is index and index.identity["indexed"]["modality"] == "image" and index.backend == "exact"
    scores, ids = route.search(audio, k=3)
    expected_scores, expected_rows = route.similarity(audio, images).topk(3, dim=1)
    torch.testing.assert_close(scores, expected_scores)
    assert ids == [[names[r] for r in row] for row in expected_rows.tolist()]
    route.index(y.encode("image", images), ids=names)  # the image space's own embeddings: only projected
    again = route.search(x.encode("audio", audio), k=3)
    torch.testing.assert_close(again.scores, expected_scores)
    assert again.ids == ids
    same_side = route.search(images[:2], k=1, modality="image")
    assert same_side.ids == [["img0"], ["img1"]]


def test_route_errors(route, toy_spaces):
    with pytest.raises(sg.SpacegraphValueError, match="no search index yet"):
        route.search(torch.randn(2, 8).numpy())
    with pytest.raises(
        sg.SpacegraphValueError, match="ends are source toy-at:audio, target toy-ti:image; none is 'text'"
    ):
        route.index(torch.randn(3, 8).numpy(), modality="text")
    with pytest.raises(sg.SpacegraphValueError, match="a float tensor is read as that space's embeddings"):
        route.index(torch.randn(3, 8))  # raw toy inputs as a float tensor: the image space's dim is 10
    route.index(torch.randn(3, 8).numpy())
    with pytest.raises(sg.SpacegraphValueError, match="k must be an integer >= 1"):
        route.search(torch.randn(2, 8).numpy(), k=0)


@pytest.mark.parametrize("backend", ["exact", *APPROXIMATE])
def test_save_load_round_trip_gives_identical_results(route, tmp_path, backend):
    images, audio = torch.randn(300, 8).numpy(), torch.randn(20, 8).numpy()
    index = route.index(images, ids=list(range(1000, 1300)), backend=backend)
    before = route.search(audio, k=5)
    index.save(tmp_path / "index")
    loaded = route.load_index(tmp_path / "index")
    after = route.search(audio, k=5)
    assert route.search_index is loaded and loaded.backend == backend and len(loaded) == 300
    assert torch.equal(before.scores, after.scores) and torch.equal(before.ids, after.ids)
    assert torch.equal(after.ids, after.rows + 1000)
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert manifest["identity"]["indexed"]["modality"] == "image" and manifest["count"] == 300


def test_a_tampered_or_foreign_index_is_refused(route, toy_spaces, tmp_path):
    folder = tmp_path / "index"
    route.index(torch.randn(30, 8).numpy(), ids=[f"i{n}" for n in range(30)]).save(folder)
    x, y = toy_spaces
    other = sg.SpaceGraph([x, y], [make_bridge(x, y, seed=10)]).connect("audio", "image")
    with pytest.raises(sg.SpacegraphValueError, match="built for another route"):
        other.load_index(folder)
    SearchIndex.load(folder)  # without a route: no identity check
    vectors = folder / "vectors.safetensors"
    original = vectors.read_bytes()
    vectors.write_bytes(original[:-4] + bytes(4))
    with pytest.raises(sg.SpacegraphValueError, match="vectors.safetensors: its sha256 differs"):
        route.load_index(folder)
    vectors.write_bytes(original)
    (folder / "ids.json").write_text(json.dumps([f"j{n}" for n in range(30)]))
    with pytest.raises(sg.SpacegraphValueError, match="ids.json: its sha256 differs"):
        route.load_index(folder)
    (folder / "ids.json").unlink()
    (folder / "index.json").write_text((folder / "index.json").read_text().replace('"str"', '"rows"'))
    with pytest.raises(sg.SpacegraphValueError, match="lists files"):
        SearchIndex.load(folder)
    (folder / "index.json").unlink()
    with pytest.raises(sg.SpacegraphFileNotFoundError, match="index.json not found"):
        SearchIndex.load(folder)
    bare = tmp_path / "bare"
    SearchIndex.build(random_unit(5, 8, 0)).save(bare)
    with pytest.raises(sg.SpacegraphValueError, match="built without a route"):
        route.load_index(bare)


@pytest.fixture(scope="module")
def digits_route():
    from spacegraph_spaces.digits import DigitsAudioTextSpace, DigitsImageTextSpace

    audio_space, image_space = DigitsAudioTextSpace(), DigitsImageTextSpace()
    bridge = make_bridge(audio_space, image_space)
    return sg.SpaceGraph([audio_space, image_space], [bridge]).connect("audio", "image")


def test_shipped_digits_route_searches_raw_media(digits_route):
    from spacegraph_spaces import digits_data

    samples = digits_data.load_demo_samples()
    gallery, clips = samples["image_gallery"][:200], samples["audio_query_paths"][:6]
    digits_route.index(gallery, backend="faiss-hnsw")
    scores, ids = digits_route.search(clips, k=5)
    expected = digits_route.similarity(clips, gallery).topk(5, dim=1)
    assert torch.equal(ids, expected.indices)
    torch.testing.assert_close(scores, expected.values)
