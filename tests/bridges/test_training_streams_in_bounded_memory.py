"""Training and validation at scale: everything that grows with the data streams in bounded memory, the fast
step (bf16 autocast, torch.compile) trains as well as the plain one, and a failure after training keeps the heads."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from spacegraph_bridges import cmcr
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads, memory_retrieve

import spacegraph as sg
from spacegraph.plugin import nearest, top_k
from tests.bridges.test_cmcr_losses_and_training import SMALL, _aligned_features
from tests.conftest import random_unit


@pytest.mark.parametrize("method", ["stream", "sdpa"])
def test_retrieval_chunks_queries_and_keys_and_gathers_rows(method):
    queries, memory, values = random_unit(37, 8, 0), random_unit(90, 8, 1), random_unit(90, 5, 2)
    rows = torch.randperm(90, generator=torch.Generator().manual_seed(0))[:61]
    weights = torch.softmax(queries @ memory[rows].T / 0.05, dim=1)
    got_memory, got_values = memory_retrieve(
        queries, memory, 0.05, values=(memory, values), rows=rows, chunk_size=7, query_chunk=5, method=method
    )
    torch.testing.assert_close(got_memory, F.normalize(weights @ memory[rows], dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_values, F.normalize(weights @ values[rows], dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 4, 70])
def test_streamed_top_k_equals_dense_top_k(k):
    queries, keys = random_unit(23, 6, 0), random_unit(61, 6, 1)
    rows = torch.arange(60, -1, -2)  # every other key, reversed
    scores, index = top_k(queries, keys, k, rows=rows, query_chunk=4, key_chunk=9)
    expected_scores, expected_index = (queries @ keys[rows].T).topk(min(k, len(rows)), dim=1)
    torch.testing.assert_close(scores, expected_scores)
    assert torch.equal(index, expected_index)
    assert torch.equal(nearest(queries, keys, key_chunk=5), (queries @ keys.T).argmax(dim=1))


PAIR_RECALL_PEAK = r"""
import json, resource, torch
from spacegraph.plugin import pair_recall_at_1
torch.set_num_threads(1)
rows = torch.nn.functional.normalize(torch.randn(30_000, 64, generator=torch.Generator().manual_seed(0)), dim=1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
recall = pair_recall_at_1(rows, rows)
print(json.dumps({"recall": recall, "peak_MiB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def test_held_out_matching_streams_instead_of_building_the_full_matrix():
    """30k held-out pairs: the full similarity matrix would take 3.4 GiB."""
    done = subprocess.run(
        [sys.executable, "-c", PAIR_RECALL_PEAK], check=True, capture_output=True, text=True, timeout=300
    )
    result = json.loads(done.stdout)
    assert result["recall"] == 1.0
    assert result["peak_MiB"] < 800


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"precision": "bf16", "compile": True}])
def test_fast_step_learns_like_the_float32_step(options):
    features = _aligned_features()
    reference = fit_heads(features, CMCRConfig(**SMALL), show_progress_bar=False)
    fast = fit_heads(features, CMCRConfig(**SMALL, **options), show_progress_bar=False)
    assert fast.quality["held_out_R@1"] > 0.5  # chance on 40 held-out items is 0.025
    assert abs(fast.quality["held_out_R@1"] - reference.quality["held_out_R@1"]) < 0.15
    assert all(torch.isfinite(value).all() for value in fast.head_x.state_dict().values())


def test_a_failure_after_training_keeps_the_trained_heads(monkeypatch, toy_spaces):
    def out_of_memory(*_args, **_options):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr("spacegraph._method.heads_quality", out_of_memory)  # the base measures every method
    features = sg.BridgeFeatures(
        random_unit(60, 6, 0), random_unit(60, 10, 1), random_unit(9, 6, 2), random_unit(9, 10, 3)
    )
    x, y = (space.spec for space in toy_spaces)
    with pytest.warns(UserWarning, match="the bridge is kept with its quality unmeasured"):
        bridge = cmcr.CMCRMethod().train(x, y, "text", features, {**SMALL, "steps": 5}, show_progress_bar=False)
    assert bridge.card.score_source == "unmeasured"
    assert set(bridge.card.quality) == {"n_pseudo_pairs", "seed_keys", "train_seconds"}
    assert torch.isfinite(bridge.head(x.name)(features.overlap_x[:4])).all()
