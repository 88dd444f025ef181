"""A measurement that cannot be made is refused, never made anyway: retrieval metrics over queries that have
nothing to find, and labels that name no class, would report a number (a probe whose two sides share no label:
test_quality_estimate_probes_and_calibration.py)."""

import pytest
import torch

import spacegraph as sg
from tests.conftest import random_unit


def test_queries_with_nothing_to_find_are_left_out_and_none_at_all_is_an_error():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    # query 1 (class 7) has no relevant gallery item: left out, not counted as a miss
    assert sg.retrieval_metrics(scores, [0, 7], [0, 1]) == sg.retrieval_metrics(scores[:1], [0], [0, 1])
    assert sg.retrieval_metrics(scores, [0, 7], [0, 1])["R@1"] == 1.0
    with pytest.raises(sg.SpacegraphValueError, match=r"no query has a relevant gallery item \(query labels \[5, 7\]"):
        sg.retrieval_metrics(scores, [5, 7], [0, 1])


def test_zero_shot_labels_must_name_a_class():
    embeddings, classes = random_unit(4, 3, 0), random_unit(2, 3, 1)
    with pytest.raises(sg.SpacegraphValueError, match="labels must index the 2 class embeddings .* from 0 to 5"):
        sg.zero_shot_accuracy(embeddings, [0, 1, 5, 1], classes)
    with pytest.raises(sg.SpacegraphValueError, match="4 embeddings and 3 labels"):
        sg.zero_shot_accuracy(embeddings, [0, 1, 1], classes)
    assert 0 <= sg.zero_shot_accuracy(embeddings, [0, 1, 1, 0], classes) <= 1
