"""How few labelled items does a :class:`spacegraph.Probe` need to rank bridges as their true quality does?

For each k (labelled items per class), many probes are drawn at random from a dataset's labelled test items;
each ranks the dataset's bridges by the probe's mAP (both directions, mean, as ``graph.evaluate`` measures
it), and the ranking is compared with the one by true mAP on all the test items (Spearman).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from spacegraph import FeatureStore, load_space, retrieval_metrics

from . import digits, hard, modelnet10

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LabelledSet:
    """A dataset's labelled test items: features of each side in its own space, with class labels."""

    x: torch.Tensor
    x_labels: torch.Tensor
    y: torch.Tensor
    y_labels: torch.Tensor


def _both_ways_map(zx: torch.Tensor, x_labels: torch.Tensor, zy: torch.Tensor, y_labels: torch.Tensor) -> float:
    scores = zx @ zy.T
    forward = retrieval_metrics(scores, x_labels, y_labels)["mAP"]
    return (forward + retrieval_metrics(scores.T, y_labels, x_labels)["mAP"]) / 2


def k_per_class(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Row indices of ``k`` random items of each class (all of a class that has fewer)."""
    picks = []
    for label in labels.unique():
        rows = torch.nonzero(labels == label).squeeze(1)
        picks.append(rows[torch.randperm(len(rows), generator=generator)[:k]])
    return torch.cat(picks)


def probe_budget(
    heads: Sequence[tuple[Projection, Projection]],
    labelled: LabelledSet,
    *,
    ks: Sequence[int] = (1, 2, 5, 10),
    draws: int = 50,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per k: the mean and the lowest Spearman over ``draws`` random probes, and the share of probes at >= 0.9."""
    with torch.inference_mode():
        embedded = [(project_x(labelled.x), project_y(labelled.y)) for project_x, project_y in heads]
    truth = [_both_ways_map(zx, labelled.x_labels, zy, labelled.y_labels) for zx, zy in embedded]
    generator = torch.Generator().manual_seed(seed)
    budget = {}
    for k in ks:
        correlations = []
        for _ in range(draws):
            rows_x = k_per_class(labelled.x_labels, k, generator)
            rows_y = k_per_class(labelled.y_labels, k, generator)
            measured = [
                _both_ways_map(zx[rows_x], labelled.x_labels[rows_x], zy[rows_y], labelled.y_labels[rows_y])
                for zx, zy in embedded
            ]
            correlations.append(float(spearmanr(measured, truth).statistic))
        values = torch.tensor(correlations).nan_to_num(0.0)
        budget[str(k)] = {
            "mean_spearman": float(values.mean()),
            "lowest_spearman": float(values.min()),
            "share_at_least_0.9": float((values >= 0.9).float().mean()),
        }
    return budget


def labelled_set(case: str, data_dir: Path, feature_dir: Path) -> LabelledSet:
    """The labelled test items of a ``bench quality`` dataset (the digits variants share the digits test set),
    from the features cached under ``feature_dir``; a ``_cone`` case's items through its geometry."""
    if case.endswith("_cone"):
        from .quality_zoo import cone_geometry

        base = labelled_set(case.removesuffix("_cone"), data_dir, feature_dir)
        to_x, to_y = (cone_geometry(rows.shape[1], side, memory=True) for side, rows in enumerate((base.x, base.y)))
        with torch.inference_mode():
            return LabelledSet(to_x(base.x), base.x_labels, to_y(base.y), base.y_labels)
    if case.startswith("digits"):
        data = digits.full_data(data_dir)
        spaces = load_space(digits.AUDIO_SPACE), load_space(digits.IMAGE_SPACE)
        f = digits.extract(data, *spaces, FeatureStore(feature_dir / "digits-features"), False)
        return LabelledSet(f.audio_queries, _labels(data.audio_query_labels), f.image_gallery,
                           _labels(data.image_gallery_labels))  # fmt: skip
    if case == "hard":
        h = hard.load(data_dir, feature_dir / "hard", False)
        return LabelledSet(h.audio_queries, _labels(h.audio_query_labels), h.image_gallery,
                           _labels(h.image_gallery_labels))  # fmt: skip
    if case == "modelnet10":
        spaces = {name: load_space(name) for name in (modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE)}
        m = modelnet10._extract(spaces, data_dir, FeatureStore(feature_dir / "modelnet10-features"), False)
        return LabelledSet(m["test_clouds"], _labels(m["test_labels"]), m["prompts"], torch.arange(len(m["prompts"])))
    raise ValueError(f"no labelled set for dataset {case!r}; known: digits*, hard, modelnet10 and their _cone cases")


def _labels(labels: Any) -> torch.Tensor:
    return torch.as_tensor(labels).long()
