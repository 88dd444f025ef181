"""The probe budget: probes of k labelled items per class, drawn at random, rank bridges as their true mAP does."""

import torch
import torch.nn.functional as F
from spacegraph_bench.probe_budget import LabelledSet, k_per_class, probe_budget


def test_k_per_class_draws_k_items_of_each_class_or_all_of_a_smaller_one():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 9)
    rows = k_per_class(labels, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[rows]).tolist() == [3, 2, 3] and len(set(rows.tolist())) == len(rows)


def noisy(noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda rows: F.normalize(rows + noise * torch.randn(rows.shape, generator=generator), dim=1)


def test_probes_rank_bridges_of_clearly_different_quality_in_their_true_order():
    generator = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    x_labels, y_labels = torch.arange(200) % 4, torch.arange(120) % 4
    labelled = LabelledSet(centres[x_labels], x_labels, centres[y_labels], y_labels)
    heads = [(noisy(noise, 2 * i), noisy(noise, 2 * i + 1)) for i, noise in enumerate((0.1, 0.6, 1.2, 2.5, 5.0))]
    budget = probe_budget(heads, labelled, ks=(1, 10), draws=20)
    assert budget["10"]["mean_spearman"] > 0.9 and budget["10"]["share_at_least_0.9"] > 0.5
    assert budget["1"]["mean_spearman"] <= budget["10"]["mean_spearman"]
