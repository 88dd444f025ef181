"""The demo shows one spoken query of every digit and some of those whose top image is another digit."""

from types import SimpleNamespace

import numpy as np
import torch
from spacegraph_bench.cli import _show_queries


def test_one_query_per_digit_and_the_mistakes_are_shown(capsys):
    query_labels, gallery_labels = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 2, 0, 1, 2])
    data = SimpleNamespace(
        audio_queries=[f"{d}_q{i}.flac" for i, d in enumerate(query_labels)],
        audio_query_labels=query_labels,
        image_gallery=torch.zeros(6, 2),
        image_gallery_labels=gallery_labels,
    )
    right = torch.tensor([[1.0 if g == q else 0.0 for g in gallery_labels] for q in query_labels])
    right[3] = torch.tensor([0.1, 0.5, 1.0, 0.2, 0.4, 0.3])  # query 3 (a "1") finds a "2" first
    route = SimpleNamespace(similarity=lambda queries, gallery: right[: len(queries)])
    _show_queries(route, data)
    lines = capsys.readouterr().out.splitlines()
    assert "1 of 5 spoken queries find another digit first" in lines[0]
    shown = [line.split()[0] for line in lines[1:]]
    assert shown == ["0_q0.flac", "1_q2.flac", "2_q4.flac", "1_q3.flac"]
    assert "(spoken 1): [2, 1, 1, 2, 0], 2 of 5 right" in lines[-1]
