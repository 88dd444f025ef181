"""A label-free estimate of a bridge's cross-modal retrieval quality.

A bridge between X {A, B} and Y {B, C} is meant to make A items retrieve C items of the same meaning. Without
labels, "meaning" is read through the overlap modality B, which both spaces embed natively: the overlap items
that the memories actually sit near are clustered (on both spaces' embeddings of them at once), each A memory
item takes the cluster of its nearest centroid in X and each C memory item that of its nearest centroid in Y.
The estimate is the mean average precision of A -> C and C -> A retrieval through the bridge, with these
clusters as relevance: a predicted retrieval quality in [0, 1], measured on the bridge's own memories.

No single number of clusters decides: the mAP is averaged over granularities from coarse to fine, each weighted
by its cosine silhouette on the overlap items (how well they separate into that many classes), so the estimate
rewards fine neighbourhoods as well as coarse ones and scores bridges trained on different data the same way.

That pseudo-label mAP is multiplied by a power of the bridge's modality alignment (:func:`modality_alignment`):
where the two memories still sit apart in the joint space, retrieval runs through hubs, which the pseudo labels
of a modest space do not see.

The estimate ranks well but reads low: its pseudo classes are noisy versions of the real ones. ``EXPECTED_MAP``
reads it on the truth's scale, a monotone map fit on the bridge study's true mAPs (``expected_mAP`` beside every
estimate); rankings, and every choice made from them, are the estimate's.

Three design choices are open to measurement (``EstimateSettings``; ``spacegraph bench quality`` picks them
leave-one-dataset-out): whether every query counts the same or every pseudo class does (a bridge that ranks the
same few items first for every query gains from a pseudo class that holds most of the memory), whether each
memory item takes the class of its own nearest overlap centroid or that of its memory cluster, and the power of
the alignment factor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ._arguments import checked_arguments
from ._errors import SpacegraphValueError
from ._eval import pair_recall_at_1, ranked_average_precisions, ranking
from ._stages import StageClock
from ._streaming import nearest, project_rows, unit_rows

if TYPE_CHECKING:
    from ._bridge import BridgeFeatures

Projection = Callable[[torch.Tensor], torch.Tensor]
CLUSTER_COUNTS = (4, 6, 8, 10, 12, 16, 20, 24, 32)
SILHOUETTE_ROWS = 1500
MEMORY_CLUSTERS = 32  # of each memory, for labels="clusters": finer than any granularity's classes
# Above these sizes a fixed-seed sample is measured, so that measuring costs the same at any overlap size: the
# overlap rows whose items the estimate's labels are read from, and the held-out rows matched against each other.
ESTIMATE_OVERLAP_ROWS = 131_072
HELD_OUT_ROWS = 10_000
GAP_POWERS = (0.0, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class EstimateSettings:
    """The estimate's design choices. ``balance``: "queries" (each query counts the same) or "classes" (each
    pseudo class does); ``labels``: "items" (each memory item takes the class of its nearest overlap centroid) or
    "clusters" (of its memory cluster's centroid); ``gap_power``: the power of the modality alignment
    (:func:`modality_alignment`) the pseudo-label mAP is multiplied by (0: not at all); ``levels``: "weighted"
    (the granularities' mAPs averaged, each weighted by its silhouette) or "best" (the mAP at the best-separated
    granularity alone)."""

    balance: Literal["queries", "classes"] = "classes"
    labels: Literal["items", "clusters"] = "items"
    gap_power: float = 0.5
    levels: Literal["weighted", "best"] = "weighted"

    def __post_init__(self) -> None:
        choices = {"balance": ("queries", "classes"), "labels": ("items", "clusters"), "levels": ("weighted", "best")}
        given = {field: getattr(self, field) for field in choices}
        if any(not isinstance(value, str) or value not in choices[field] for field, value in given.items()):
            accepted = "; ".join(f"{field} is {' or '.join(map(repr, options))}" for field, options in choices.items())
            shown = ", ".join(f"{field}={value!r}" for field, value in given.items())
            raise SpacegraphValueError(f"EstimateSettings({shown}): {accepted}")
        if not self.gap_power >= 0:
            raise ValueError(f"EstimateSettings(gap_power={self.gap_power!r}): a power >= 0")

    @property
    def name(self) -> str:
        """How ``spacegraph bench quality`` reports it, e.g. ``classes/items/gap0.5`` (``/best`` added for
        ``levels="best"``)."""
        suffix = "/best" if self.levels == "best" else ""
        return f"{self.balance}/{self.labels}/gap{self.gap_power:g}{suffix}"


# Every combination `spacegraph bench quality` chooses among (leave-one-dataset-out), by name.
ESTIMATE_SETTINGS = {
    settings.name: settings
    for settings in (
        EstimateSettings(balance, labels, power)
        for balance in ("queries", "classes")
        for labels in ("items", "clusters")
        for power in GAP_POWERS
    )
}
DEFAULT_ESTIMATE = EstimateSettings()  # chosen by `bench quality`; on its latest run queries/items/gap0.5 ties (README)


@dataclass(frozen=True)
class ExpectedMap:
    """The estimate read as the mAP a labelled test would measure: ``sigmoid(intercept + slope * logit(estimate))``.
    The estimate ranks bridges and routes but reads low in absolute terms (its pseudo classes are noisy versions of
    the real ones); this monotone map, fit by ``spacegraph bench quality`` on the bridge study's true mAPs, puts it
    on the truth's scale without changing any ranking."""

    intercept: float
    slope: float

    def __call__(self, estimate: float) -> float:
        clipped = min(max(estimate, LOGIT_EPSILON), 1 - LOGIT_EPSILON)
        return 1 / (1 + math.exp(-(self.intercept + self.slope * math.log(clipped / (1 - clipped)))))


LOGIT_EPSILON = 1e-4
# Fit on the eight datasets' bridges of `spacegraph bench quality` (its "expected_mAP" record, "fit_on_all").
EXPECTED_MAP = ExpectedMap(intercept=0.696, slope=1.336)


def gap_adjusted(pseudo_map: float, alignment: float, gap_power: float) -> float:
    """The estimate: the pseudo-label mAP times the modality alignment to the power ``gap_power``."""
    return pseudo_map * alignment**gap_power


def modality_alignment(za: torch.Tensor, zc: torch.Tensor) -> float:
    """``1 - |mean(za) - mean(zc)|^2 / 4`` of unit rows, in [0, 1]: 1 where the two memories are centred alike
    in the joint space, lower the further apart they sit (a modality gap, through which retrieval runs by hubs
    rather than meaning). Bridges without working memory pseudo pairs keep the gap their spaces had."""
    gap = unit_rows(za).mean(dim=0) - unit_rows(zc).mean(dim=0)
    return float((1 - gap.square().sum() / 4).clamp(min=0))


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


@checked_arguments
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


@runtime_checkable
class LevelLabels(Protocol):
    """Pseudo classes of two memories at several granularities: ``levels[k]`` holds each memory's classes at ``k``
    clusters, ``silhouettes[k]`` how well they separate, ``k`` the best-separated granularity."""

    silhouettes: dict[int, float]
    levels: dict[int, tuple[torch.Tensor, torch.Tensor]]

    @property
    def k(self) -> int: ...


class PseudoLabels:
    """Meaning classes of two memories, read through the overlap items near them, at several granularities."""

    @checked_arguments
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
        by_cluster: bool = False,
    ) -> None:
        _check_pairs(overlap_x, overlap_y, memory_x, memory_y)
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
        read_x, read_y = (_cluster_reader(m, seed) if by_cluster else _item_reader(m) for m in (mx, my))
        self.levels = {
            k: (read_x(_centroids(bx[near], a, k)), read_y(_centroids(by[near], a, k))) for k, (_, a) in best.items()
        }


def _check_pairs(
    overlap_x: torch.Tensor, overlap_y: torch.Tensor, memory_x: torch.Tensor, memory_y: torch.Tensor
) -> None:
    """Refuse embeddings that are not non-empty ``[n, dim]`` matrices, one dim per space, one overlap row per pair."""
    tensors = {"overlap_x": overlap_x, "overlap_y": overlap_y, "memory_x": memory_x, "memory_y": memory_y}
    shapes = {name: list(tensor.shape) for name, tensor in tensors.items()}
    sound = all(tensor.ndim == 2 and len(tensor) > 0 for tensor in tensors.values())
    if (
        not sound
        or len(overlap_x) != len(overlap_y)
        or (overlap_x.shape[1], overlap_y.shape[1])
        != (
            memory_x.shape[1],
            memory_y.shape[1],
        )
    ):
        raise SpacegraphValueError(
            f"pseudo labels need non-empty [n, dim] embeddings, the overlap paired row by row and each memory of its "
            f"space's dim; got shapes {shapes}"
        )


def _item_reader(memory: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each memory item's class: that of its nearest class centroid."""
    return lambda centroids: (memory @ centroids.T).argmax(dim=1)


def _cluster_reader(memory: torch.Tensor, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each memory item's class: that of its memory cluster's centroid (``MEMORY_CLUSTERS`` clusters)."""
    k = max(1, min(MEMORY_CLUSTERS, len(memory) // 4))
    assign = spherical_kmeans(memory, k, seed=seed)
    own = _centroids(memory, assign, k)
    return lambda centroids: (own @ centroids.T).argmax(dim=1)[assign]


def _query_weights(labels: torch.Tensor, balance: str) -> torch.Tensor:
    if balance == "queries":
        return torch.ones(len(labels))
    _, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].float()


def _level_precisions(
    orders: tuple[torch.Tensor, torch.Tensor], labels_x: torch.Tensor, labels_y: torch.Tensor, balance: str = "queries"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[2, n]`` twice: each memory item's average precision as a query (``orders``: the A -> C and C -> A
    rankings), A -> C in row 0 (``n`` = len(A)) and C -> A in row 1, padded with NaN, and its weight in the mean
    (``balance``: 1, or 1 / its pseudo class's size); a query whose class the other memory never shows has
    nothing to find and is NaN (left out, as in any retrieval benchmark)."""
    n = max(len(labels_x), len(labels_y))
    rows, weights = torch.full((2, n), float("nan")), torch.zeros(2, n)
    for row, (order, query_labels, gallery_labels) in enumerate(
        ((orders[0], labels_x, labels_y), (orders[1], labels_y, labels_x))
    ):
        answerable = torch.isin(query_labels, gallery_labels)
        if answerable.any():
            where = torch.nonzero(answerable).squeeze(1)
            found = ranked_average_precisions(order[answerable], query_labels[answerable], gallery_labels)
            rows[row, where] = found
            weights[row, where] = _query_weights(query_labels[answerable], balance)
    return rows, weights


def _weighted_nanmean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean over the last dimension of the non-NaN ``values``, weighted by ``weights`` (equal if None)."""
    if weights is None:
        return values.nanmean(dim=-1)
    present = ~values.isnan()
    weights = torch.where(present, weights, torch.zeros_like(weights))
    total = weights.sum(-1)
    summed = (values.nan_to_num() * weights).sum(-1)
    return torch.where(total > 0, summed / total.clamp(min=1e-12), float("nan"))


def _combine(
    precisions: torch.Tensor, weights: torch.Tensor, query_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``precisions [..., levels, 2, n]`` -> ``[...]``: per level the mean of both directions' mAPs (each query
    weighted by ``query_weights``, same shape, if given; directions with no answerable query left out), then the
    levels' mean weighted by ``weights [..., levels]`` (equal weights where all are 0); 0 where nothing is
    answerable."""
    per_direction = _weighted_nanmean(precisions, query_weights)
    per_level = per_direction.nanmean(dim=-1)
    present = ~per_level.isnan()
    weights = torch.where(present, weights.clamp(min=0), torch.zeros_like(weights))
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, present.float())
    total = weights.sum(-1)
    return torch.where(total > 0, (per_level.nan_to_num() * weights).sum(-1) / total.clamp(min=1e-12), 0.0)


def _precisions(
    za: torch.Tensor, zc: torch.Tensor, labels: LevelLabels, balance: str = "queries", levels: str = "weighted"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each granularity's per-query average precisions ``[levels, 2, n]`` (``levels="best"``: the best-separated
    one's alone), the levels' silhouette weights, and the queries' weights ``[levels, 2, n]``."""
    scores = za @ zc.T
    orders = ranking(scores), ranking(scores.T)  # sorted once, read under every granularity's labels
    counts = [labels.k] if levels == "best" else list(labels.silhouettes)
    precisions, query_weights = zip(*(_level_precisions(orders, *labels.levels[k], balance) for k in counts))
    silhouettes = torch.tensor([labels.silhouettes[k] for k in counts])
    return torch.stack(precisions), silhouettes, torch.stack(query_weights)


@checked_arguments
def pseudo_map(
    za: torch.Tensor, zc: torch.Tensor, labels: LevelLabels, balance: str = "queries", levels: str = "weighted"
) -> float:
    """The pseudo-label mAP of A -> C and C -> A retrieval, averaged over the granularities, each weighted by its
    silhouette (how well the overlap items separate into that many classes), or at the best-separated one alone
    (``levels="best"``); 0 if nothing is answerable. ``balance``: "queries" (every query counts the same) or
    "classes" (every pseudo class does)."""
    return float(_combine(*_precisions(za, zc, labels, balance, levels)))


def bootstrap_interval(
    precisions: torch.Tensor,
    weights: torch.Tensor,
    sizes: tuple[int, int],
    query_weights: torch.Tensor | None = None,
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
    if query_weights is None:
        query_weights = torch.ones_like(precisions)
    padded_weights = torch.cat([query_weights, torch.zeros(levels, 2, 1)], dim=2)
    draws = torch.stack([torch.randint(size, (replicates, n), generator=generator) for size in sizes], dim=1)
    draws[:, 1, min(sizes[1], n) :] = n
    draws[:, 0, min(sizes[0], n) :] = n
    drawn_levels = torch.randint(levels, (replicates, levels), generator=generator)
    index = draws[:, None].expand(-1, levels, -1, -1)
    resampled = padded[drawn_levels].gather(3, index)  # [replicates, levels, 2, n]
    resampled_weights = padded_weights[drawn_levels].gather(3, index)
    values = _combine(resampled, weights[drawn_levels], resampled_weights)
    tail = (1 - coverage) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail]))
    return float(low), float(high)


class EstimateData:
    """What an estimate reads from a bridge's training data, measured as ``settings`` say: at most ``max_items``
    rows of each memory (picked with a fixed seed, so every bridge trained on the same data is scored on the same
    items) and their pseudo labels. Build it once to score many bridges trained on the same data."""

    @checked_arguments
    def __init__(
        self,
        overlap_x: torch.Tensor,
        overlap_y: torch.Tensor,
        memory_x: torch.Tensor,
        memory_y: torch.Tensor,
        *,
        max_items: int = 2000,
        max_overlap: int = ESTIMATE_OVERLAP_ROWS,
        settings: EstimateSettings = DEFAULT_ESTIMATE,
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        self.mx, self.my = subsample(memory_x, max_items, generator), subsample(memory_y, max_items, generator)
        if len(overlap_x) > max_overlap:
            rows = subsample(torch.arange(len(overlap_x)), max_overlap, torch.Generator().manual_seed(1))
            overlap_x, overlap_y = overlap_x[rows], overlap_y[rows]
        self.overlap_rows = len(overlap_x)
        self.labels: LevelLabels = PseudoLabels(
            overlap_x, overlap_y, self.mx, self.my, by_cluster=settings.labels == "clusters"
        )
        self.settings = settings

    @classmethod
    def of_labels(
        cls,
        memory_x: torch.Tensor,
        memory_y: torch.Tensor,
        labels: LevelLabels,
        *,
        overlap_rows: int,
        settings: EstimateSettings = DEFAULT_ESTIMATE,
    ) -> EstimateData:
        """The memories as given, with labels read elsewhere (e.g. along a route's chain)."""
        data = cls.__new__(cls)
        data.mx, data.my, data.labels, data.overlap_rows, data.settings = (
            memory_x,
            memory_y,
            labels,
            overlap_rows,
            settings,
        )
        return data

    def rescored(self, settings: EstimateSettings) -> EstimateData:
        """The same items and labels, scored with other ``settings`` of the same ``labels``."""
        if settings.labels != self.settings.labels:
            raise ValueError(f"rescored: these labels are {self.settings.labels!r}, not {settings.labels!r}")
        other = copy.copy(self)
        other.settings = settings
        return other

    def point_estimate(self, za: torch.Tensor, zc: torch.Tensor) -> float:
        """The estimate of memories already projected (``za`` = project_x(self.mx), ``zc`` likewise), no interval."""
        pseudo = pseudo_map(za, zc, self.labels, self.settings.balance, self.settings.levels)
        return gap_adjusted(pseudo, modality_alignment(za, zc), self.settings.gap_power)

    def score(self, project_x: Projection, project_y: Projection) -> dict[str, float]:
        """``{"estimate": predicted quality, "estimate_low"/"estimate_high": its 90% bootstrap interval (over the
        memory items and the granularities), "expected_mAP" (and its "_low"/"_high"): the same read as a mAP
        (:data:`EXPECTED_MAP`), "estimate_pseudo_map": the pseudo-label mAP before the alignment
        factor, "estimate_alignment": :func:`modality_alignment`, "estimate_clusters": the best-separated k,
        "estimate_items": n}``."""
        with torch.inference_mode():
            za, zc = project_x(self.mx), project_y(self.my)
        precisions, weights, query_weights = _precisions(
            za, zc, self.labels, self.settings.balance, self.settings.levels
        )
        pseudo = float(_combine(precisions, weights, query_weights))
        low, high = bootstrap_interval(precisions, weights, (len(self.mx), len(self.my)), query_weights)
        alignment = modality_alignment(za, zc)
        factor = gap_adjusted(1.0, alignment, self.settings.gap_power)
        estimate, low, high = pseudo * factor, min(low, pseudo) * factor, max(high, pseudo) * factor
        return {
            "estimate": estimate,
            "estimate_low": low,
            "estimate_high": high,
            "expected_mAP": EXPECTED_MAP(estimate),
            "expected_mAP_low": EXPECTED_MAP(low),
            "expected_mAP_high": EXPECTED_MAP(high),
            "estimate_pseudo_map": pseudo,
            "estimate_alignment": alignment,
            "estimate_clusters": float(self.labels.k),
            "estimate_items": float(len(self.mx) + len(self.my)),
            "estimate_overlap_rows": float(self.overlap_rows),
        }


@checked_arguments
def estimate_quality(
    project_x: Projection,
    project_y: Projection,
    overlap_x: torch.Tensor,
    overlap_y: torch.Tensor,
    memory_x: torch.Tensor,
    memory_y: torch.Tensor,
    *,
    max_items: int = 2000,
    settings: EstimateSettings = DEFAULT_ESTIMATE,
) -> dict[str, float]:
    """The label-free quality of a bridge whose heads are ``project_x`` / ``project_y``, from its own training
    data: :meth:`EstimateData.score`."""
    data = EstimateData(overlap_x, overlap_y, memory_x, memory_y, max_items=max_items, settings=settings)
    return data.score(project_x, project_y)


@checked_arguments
def held_out_quality(
    project_x: Projection, project_y: Projection, bx: torch.Tensor, by: torch.Tensor
) -> dict[str, float]:
    """Held-out overlap pairs: how often each item finds its own counterpart first, both directions."""
    zx, zy = project_rows(project_x, bx), project_rows(project_y, by)
    x_to_y, y_to_x = pair_recall_at_1(zx, zy), pair_recall_at_1(zy, zx)
    return {"val_x_to_y_R@1": x_to_y, "val_y_to_x_R@1": y_to_x, "held_out_R@1": (x_to_y + y_to_x) / 2, "n_val": len(bx)}


@checked_arguments
def heads_quality(
    project_x: Projection,
    project_y: Projection,
    features: BridgeFeatures,
    val_idx: torch.Tensor,
    *,
    clock: StageClock | None = None,
) -> dict[str, float]:
    """What a bridge method writes into ``card.quality``: held-out overlap matching of the ``val_idx`` rows (at most
    ``HELD_OUT_ROWS`` of them, a fixed-seed sample; ``n_val`` of ``n_held_out``), and the label-free cross-modal
    estimate where memories were given. The heads are used as given (in eval mode); ``clock`` times both."""
    clock = clock or StageClock("measuring")
    quality: dict[str, float] = {}
    if len(val_idx):
        measured = subsample(val_idx, HELD_OUT_ROWS, torch.Generator().manual_seed(0))
        with clock.stage("held-out matching", f"{len(measured)} of {len(val_idx)} rows"):
            bx, by = features.overlap_x[measured], features.overlap_y[measured]
            quality = {**held_out_quality(project_x, project_y, bx, by), "n_held_out": float(len(val_idx))}
    if features.memory_x is not None and features.memory_y is not None:
        with clock.stage("estimate"):
            quality.update(
                estimate_quality(
                    project_x, project_y, features.overlap_x, features.overlap_y, features.memory_x, features.memory_y
                )
            )
    return quality
