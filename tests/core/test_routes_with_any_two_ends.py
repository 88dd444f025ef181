"""A route is right for any two ends: two modalities, the same modality encoded by two spaces (text of one space
against text of another), and the same space on both ends. Every end pair a small graph can connect is checked
against the legs built by hand."""

import itertools

import pytest
import torch

import spacegraph as sg
from tests.conftest import chain_of_three_spaces
from tests.core.test_graph_connects_and_plans import make_bridge


@pytest.fixture(scope="module")
def graph():
    """Two spaces that both embed text, joined through text, and a third joined to their joint space by images."""
    at, ti, il = chain_of_three_spaces()
    graph = sg.SpaceGraph([at, ti, il])
    first = graph.add_bridge(make_bridge(at, ti))
    graph.add_bridge(make_bridge(graph.space(first.name), il, overlap="image"))
    return graph


def by_hand(graph, leg, inputs):
    """The leg's embedding of ``inputs``: its space's, then each head along its path."""
    embeddings = graph.space(leg.space.name).encode(leg.modality, inputs)
    for bridge, reads in leg.steps:
        embeddings = bridge.project(reads, embeddings)
    return embeddings


def every_end(graph):
    return [f"{space.name}:{modality.value}" for space in graph.spaces for modality in space.modalities]


def test_every_pair_of_ends_encodes_each_end_with_its_own_space(graph):
    a, b = torch.randn(3, 8), torch.randn(4, 8)
    checked = 0
    for source, target in itertools.product(every_end(graph), repeat=2):
        route = graph.connect(source, target)
        assert f"{route.source.space.name}:{route.source.modality.value}" == source
        assert f"{route.target.space.name}:{route.target.modality.value}" == target
        expected = by_hand(graph, route.source, a) @ by_hand(graph, route.target, b).T
        torch.testing.assert_close(route.similarity(a, b), expected)
        torch.testing.assert_close(route.encode("source", a), by_hand(graph, route.source, a))
        torch.testing.assert_close(route.encode(target, b), by_hand(graph, route.target, b))
        checked += 1
    assert checked == 6 * 6


def test_the_same_modality_from_two_spaces_must_name_its_end(graph):
    route = graph.connect("toy-at:text", "toy-ti:text")
    texts = torch.randn(5, 8)
    source, target = route.encode("source", texts), route.encode("toy-ti:text", texts)
    assert not torch.allclose(source, target)  # two spaces, two legs: not one leg twice
    with pytest.raises(sg.SpacegraphValueError, match="both ends of this route embed 'text'.*'source' or 'target'"):
        route.encode("text", texts)
    with pytest.raises(sg.SpacegraphValueError, match="none is 'toy-il:text'"):
        route.encode("toy-il:text", texts)


def test_index_and_search_between_two_text_ends(graph, tmp_path):
    route = graph.connect("toy-at:text", "toy-ti:text")
    queries, gallery = torch.randn(3, 8).numpy(), torch.randn(6, 8).numpy()  # raw inputs (a tensor: embeddings)
    route.index(gallery, ids=[f"g{i}" for i in range(6)])  # the target end
    found = route.search(queries, k=2)  # from the other end: the source
    expected = route.similarity(queries, gallery).topk(2, dim=1)
    torch.testing.assert_close(found.scores, expected.values)
    route.search_index.save(tmp_path / "index")
    again = graph.connect("toy-at:text", "toy-ti:text")
    again.load_index(tmp_path / "index")
    torch.testing.assert_close(again.search(queries, k=2).scores, expected.values)
    reversed_route = graph.connect("toy-ti:text", "toy-at:text")  # the indexed leg is now its source
    reversed_route.load_index(tmp_path / "index")
    torch.testing.assert_close(reversed_route.search(queries, k=2, modality="target").scores, expected.values)


def test_the_same_space_on_both_ends(graph):
    route = graph.connect("toy-at:text", "toy-at:text")
    texts = torch.randn(4, 8)
    assert route.hops == 0
    torch.testing.assert_close(route.encode("text", texts), graph.space("toy-at").encode("text", texts))
    torch.testing.assert_close(route.similarity(texts, texts).diagonal(), torch.ones(4))
