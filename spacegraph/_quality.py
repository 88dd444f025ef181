"""A label-free estimate of a bridge's cross-modal retrieval quality.

A bridge between X {A, B} and Y {B, C} is meant to make A items retrieve C items of the same meaning. Without
labels, "meaning" is read through the overlap modality B, which both spaces embed natively: the overlap items
that the memories actually sit near are clustered (on both spaces' embeddings of them at once), each A memory
item takes the cluster of its nearest centroid in X and each C memory item that of its nearest centroid in Y.
The estimate is the mean average precision of A -> C and C -> A retrieval through the bridge, with these
clusters as relevance: a predicted retrieval quality in [0, 1], measured on the bridge's own memories.

No single number of clusters decides: the mAP is averaged over granularities from coarse to fine, each weighted
by its cosine silhouette on the overlap items (how well they separate into that many classes), so the estimate
needs no setting, rewards fine neighbourhoods as well as coarse ones, and scores bridges trained on different
data the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ._eval import average_precisions, pair_recall_at_1
from ._streaming import nearest, project_rows, unit_rows

if TYPE_CHECKING:
    from ._bridge import BridgeFeatures

Projection = Callable[[torch.Tensor], torch.Tensor]
CLUSTER_COUNTS = (4, 6, 8, 10, 12, 16, 20, 24, 32)
SILHOUETTE_ROWS = 1500


def spherical_kmeans(x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 25) -> torch.Tensor:
    """Cluster unit rows by cosine (k-means++ seeding); returns each row's cluster index."""
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        distance = (1 - (x @ centroids.T).amax(dim=1)).clamp(min=0)
        pick = torch.multinomial(distance + 1e-12, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
    for _ in range(iters):
        assign = (x @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(sums.norm(dim=1, keepdim=True) > 0, F.normalize(sums, dim=1), centroids)
    return (x @ centroids.T).argmax(dim=1)


def cosine_silhouette(x: torch.Tensor, assign: torch.Tensor, distance: torch.Tensor | None = None) -> float:
    """Mean silhouette of a clustering of unit rows under cosine distance (``distance``: ``1 - x @ x.T``, if
    already at hand)."""
    k = int(assign.max()) + 1
    distance = 1 - x @ x.T if distance is None else distance
    one_hot = F.one_hot(assign, k).float()
    sizes = one_hot.sum(dim=0)
    mean_to = distance @ one_hot  # [n, k] summed distance to each cluster
    own = sizes[assign]
    a = mean_to.gather(1, assign[:, None]).squeeze(1) / (own - 1).clamp(min=1)
    mean_to = mean_to / sizes.clamp(min=1)
    mean_to[torch.arange(len(x)), assign] = float("inf")
    mean_to[:, sizes == 0] = float("inf")
    b = mean_to.amin(dim=1)
    s = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
    return float(torch.where(own > 1, s, torch.zeros_like(s)).mean())


def subsample(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return x if len(x) <= n else x[torch.randperm(len(x), generator=generator)[:n]]


def _centroids(x: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    return F.normalize(torch.zeros(k, x.shape[1]).index_add_(0, assign, x), dim=1)


def _best_clustering(
    x: torch.Tensor, k: int, restarts: int, seed: int, sample: torch.Tensor, distance: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """The k-means run (of ``restarts``) with the best silhouette, and that silhouette (measured on the rows
    ``sample``, whose distances are ``distance``)."""
    runs = [spherical_kmeans(x, k, seed=seed + r) for r in range(restarts)]
    scored = [(cosine_silhouette(x[sample], assign[sample], distance) if k > 1 else 0.0, assign) for assign in runs]
    return max(scored, key=lambda pair: pair[0])


class PseudoLabels:
    """Meaning classes of two memories, read through the overlap items near them, at several granularities."""

    def __init__(
        self,
        overlap_x: torch.Tensor,
        overlap_y: torch.Tensor,
        memory_x: torch.Tensor,
        memory_y: torch.Tensor,
        *,
        cluster_counts: Sequence[int] = CLUSTER_COUNTS,
        restarts: int = 4,
        seed: int = 0,
    ) -> None:
        bx, by, mx, my = (unit_rows(rows) for rows in (overlap_x, overlap_y, memory_x, memory_y))
        # Only the overlap items some memory item is nearest to: off-topic overlap data does not shape the classes.
        near = torch.unique(torch.cat([nearest(mx, bx), nearest(my, by)]))
        joint = F.normalize(torch.cat([bx[near], by[near]], dim=1), dim=1)
        candidates = [k for k in cluster_counts if k < len(near)] or [max(1, len(near) // 2)]
        sample = subsample(torch.arange(len(joint)), SILHOUETTE_ROWS, torch.Generator().manual_seed(seed))
        distance = 1 - joint[sample] @ joint[sample].T
        best = {k: _best_clustering(joint, k, restarts, seed, sample, distance) for k in candidates}
        self.silhouettes = {k: score for k, (score, _) in best.items()}
        self.k = max(self.silhouettes, key=lambda k: self.silhouettes[k])  # the best-separated granularity, for reports
        self.levels = {
            k: ((mx @ _centroids(bx[near], a, k).T).argmax(dim=1), (my @ _centroids(by[near], a, k).T).argmax(dim=1))
            for k, (_, a) in best.items()
        }


def _level_precisions(scores: torch.Tensor, labels_x: torch.Tensor, labels_y: torch.Tensor) -> torch.Tensor:
    """``[2, n]``: each memory item's average precision as a query, A -> C in row 0 (``n`` = len(A)) and C -> A in
    row 1, padded with NaN; a query whose class the other memory never shows has nothing to find and is NaN (left
    out, as in any retrieval benchmark)."""
    rows = torch.full((2, max(len(labels_x), len(labels_y))), float("nan"))
    for row, (direction, query_labels, gallery_labels) in enumerate(
        ((scores, labels_x, labels_y), (scores.T, labels_y, labels_x))
    ):
        answerable = torch.isin(query_labels, gallery_labels)
        if answerable.any():
            found = average_precisions(direction[answerable], query_labels[answerable], gallery_labels)
            rows[row, torch.nonzero(answerable).squeeze(1)] = found
    return rows


def _combine(precisions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``precisions [..., levels, 2, n]`` -> ``[...]``: per level the mean of both directions' mAPs (directions
    with no answerable query left out), then the levels' mean weighted by ``weights [..., levels]`` (equal weights
    where all are 0); 0 where nothing is answerable."""
    per_direction = precisions.nanmean(dim=-1)
    per_level = per_direction.nanmean(dim=-1)
    present = ~per_level.isnan()
    weights = torch.where(present, weights.clamp(min=0), torch.zeros_like(weights))
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, present.float())
    total = weights.sum(-1)
    return torch.where(total > 0, (per_level.nan_to_num() * weights).sum(-1) / total.clamp(min=1e-12), 0.0)


def _precisions(za: torch.Tensor, zc: torch.Tensor, labels: PseudoLabels) -> tuple[torch.Tensor, torch.Tensor]:
    """Every granularity's per-query average precisions ``[levels, 2, n]`` and the levels' silhouette weights."""
    scores = za @ zc.T
    levels = list(labels.silhouettes)
    precisions = torch.stack([_level_precisions(scores, *labels.levels[k]) for k in levels])
    return precisions, torch.tensor([labels.silhouettes[k] for k in levels])


def pseudo_map(za: torch.Tensor, zc: torch.Tensor, labels: PseudoLabels) -> float:
    """The pseudo-label mAP of A -> C and C -> A retrieval, averaged over the granularities, each weighted by its
    silhouette (how well the overlap items separate into that many classes); 0 if nothing is answerable."""
    return float(_combine(*_precisions(za, zc, labels)))


def bootstrap_interval(
    precisions: torch.Tensor,
    weights: torch.Tensor,
    sizes: tuple[int, int],
    *,
    replicates: int = 200,
    coverage: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval of :func:`_combine` over ``precisions [levels, 2, n]`` (row r holding
    ``sizes[r]`` queries): each replicate draws each memory's queries (the same items at every granularity) and the
    granularities, with replacement."""
    generator = torch.Generator().manual_seed(seed)
    levels, _, n = precisions.shape
    padded = torch.cat([precisions, torch.full((levels, 2, 1), float("nan"))], dim=2)  # column n: no query
    draws = torch.stack([torch.randint(size, (replicates, n), generator=generator) for size in sizes], dim=1)
    draws[:, 1, min(sizes[1], n) :] = n
    draws[:, 0, min(sizes[0], n) :] = n
    drawn_levels = torch.randint(levels, (replicates, levels), generator=generator)
    picked = padded[drawn_levels]  # [replicates, levels, 2, n + 1]
    resampled = picked.gather(3, draws[:, None].expand(-1, levels, -1, -1))
    values = _combine(resampled, weights[drawn_levels])
    tail = (1 - coverage) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail]))
    return float(low), float(high)


def estimate_quality(
    project_x: Projection,
    project_y: Projection,
    overlap_x: torch.Tensor,
    overlap_y: torch.Tensor,
    memory_x: torch.Tensor,
    memory_y: torch.Tensor,
    *,
    max_items: int = 2000,
) -> dict[str, float]:
    """The label-free quality of a bridge whose heads are ``project_x`` / ``project_y``, from its own training
    data: ``{"estimate": predicted quality, "estimate_low"/"estimate_high": its 90% bootstrap interval (over the
    memory items and the granularities), "estimate_clusters": the best-separated k, "estimate_items": n}``.

    At most ``max_items`` rows of each memory are used, picked with a fixed seed, so every bridge trained on the
    same data is scored on the same items and pseudo labels.
    """
    generator = torch.Generator().manual_seed(0)
    mx, my = subsample(memory_x, max_items, generator), subsample(memory_y, max_items, generator)
    labels = PseudoLabels(overlap_x, overlap_y, mx, my)
    with torch.inference_mode():
        precisions, weights = _precisions(project_x(mx), project_y(my), labels)
    estimate = float(_combine(precisions, weights))
    low, high = bootstrap_interval(precisions, weights, (len(mx), len(my)))
    return {
        "estimate": estimate,
        "estimate_low": min(low, estimate),
        "estimate_high": max(high, estimate),
        "estimate_clusters": float(labels.k),
        "estimate_items": float(len(mx) + len(my)),
    }


def held_out_quality(
    project_x: Projection, project_y: Projection, bx: torch.Tensor, by: torch.Tensor
) -> dict[str, float]:
    """Held-out overlap pairs: how often each item finds its own counterpart first, both directions."""
    zx, zy = project_rows(project_x, bx), project_rows(project_y, by)
    x_to_y, y_to_x = pair_recall_at_1(zx, zy), pair_recall_at_1(zy, zx)
    return {"val_x_to_y_R@1": x_to_y, "val_y_to_x_R@1": y_to_x, "held_out_R@1": (x_to_y + y_to_x) / 2, "n_val": len(bx)}


def heads_quality(
    project_x: Projection, project_y: Projection, features: BridgeFeatures, val_idx: torch.Tensor
) -> dict[str, float]:
    """What a bridge method writes into ``card.quality``: held-out overlap matching of the ``val_idx`` rows, and
    the label-free cross-modal estimate where memories were given. The heads are used as given (in eval mode)."""
    bx, by = features.overlap_x[val_idx], features.overlap_y[val_idx]
    quality = held_out_quality(project_x, project_y, bx, by) if len(val_idx) else {}
    if features.memory_x is not None and features.memory_y is not None:
        quality.update(
            estimate_quality(
                project_x, project_y, features.overlap_x, features.overlap_y, features.memory_x, features.memory_y
            )
        )
    return quality
