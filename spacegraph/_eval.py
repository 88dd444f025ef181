"""Retrieval and classification metrics with class-level ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._arguments import checked_arguments
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._streaming import nearest


def _labels(labels: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Class labels as a 1-d int64 tensor; anything that is not integers is refused."""
    try:
        found = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    except (TypeError, ValueError, RuntimeError) as err:
        raise SpacegraphTypeError(f"labels must be integers, one per item; got {type(labels).__name__}") from err
    if found.ndim != 1 or found.is_floating_point() or found.is_complex() or found.dtype == torch.bool:
        raise SpacegraphTypeError(f"labels must be a 1-d sequence of integers, got {found.dtype} {list(found.shape)}")
    return found.long()


def _finite(scores: torch.Tensor, what: str) -> torch.Tensor:
    """Refuse NaN/inf similarities: ranking them (argmax picks a NaN first) would score garbage as a result."""
    if not torch.isfinite(scores).all():
        raise SpacegraphValueError(
            f"{what}: the similarities hold NaN or inf, so nothing can be ranked; check the embeddings"
        )
    return scores


def _ranked_relevance(
    scores: torch.Tensor,
    query_labels: Sequence[int] | np.ndarray | torch.Tensor,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """``[n_queries, n_gallery]``: 1 where the gallery item at that rank shares the query's class."""
    q, g = _labels(query_labels), _labels(gallery_labels)
    if scores.shape != (len(q), len(g)):
        raise SpacegraphValueError(
            f"scores has shape {list(scores.shape)}, expected [{len(q)}, {len(g)}] (queries x gallery)"
        )
    return (g[ranking(scores)] == q[:, None]).float()


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Each query's gallery indices, best first (ties in gallery order)."""
    return _finite(scores, "retrieval_metrics").argsort(dim=1, descending=True, stable=True)


def ranked_average_precisions(
    order: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor
) -> torch.Tensor:
    """:func:`average_precisions` of rankings already made (``order``: :func:`ranking` of the scores), so that many
    labellings of one ranking sort it once."""
    return _average_precisions((gallery_labels[order] == query_labels[:, None]).float())


def _average_precisions(relevant: torch.Tensor) -> torch.Tensor:
    hits = relevant.cumsum(dim=1)
    ranks = torch.arange(1, relevant.shape[1] + 1, dtype=torch.float32)
    return ((hits / ranks) * relevant).sum(dim=1).div(relevant.sum(dim=1).clamp(min=1))


def average_precisions(
    scores: torch.Tensor,
    query_labels: Sequence[int] | np.ndarray | torch.Tensor,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Each query's average precision over the full ranking (relevant = same class); their mean is the mAP."""
    return _average_precisions(_ranked_relevance(scores, query_labels, gallery_labels))


@checked_arguments
def retrieval_metrics(
    scores: torch.Tensor,
    query_labels: Sequence[int] | np.ndarray | torch.Tensor,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """R@k (a relevant item in the top k) and mAP over the full ranking; relevant = same class.

    ``scores`` is ``[n_queries, n_gallery]``, higher is closer. A query whose class the gallery never shows has
    nothing to find: it is left out, as in any retrieval benchmark; with none left, nothing can be measured and
    this is an error.
    """
    relevant = _ranked_relevance(scores, query_labels, gallery_labels)
    answerable = relevant.amax(dim=1) > 0
    if not bool(answerable.any()):
        queries, gallery = (sorted(set(_labels(labels).tolist())) for labels in (query_labels, gallery_labels))
        raise SpacegraphValueError(
            f"retrieval_metrics: no query has a relevant gallery item (query labels {_few(queries)}, gallery labels "
            f"{_few(gallery)}), so nothing can be measured; give queries and gallery classes in common"
        )
    relevant = relevant[answerable]
    metrics = {f"R@{k}": float(relevant[:, :k].amax(dim=1).mean()) for k in ks}
    metrics["mAP"] = float(_average_precisions(relevant).mean())
    return metrics


def _few(labels: list[int], shown: int = 5) -> str:
    return "[" + ", ".join(map(str, labels[:shown])) + (", ...]" if len(labels) > shown else "]")


@checked_arguments
def chance_metrics(
    query_labels: Sequence[int] | np.ndarray | torch.Tensor,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    trials: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """The metrics of random rankings, averaged over ``trials`` seeded draws."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(_labels(query_labels)), len(_labels(gallery_labels)))
    runs = [
        retrieval_metrics(torch.rand(shape, generator=generator), query_labels, gallery_labels) for _ in range(trials)
    ]
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


@checked_arguments
def pair_recall_at_1(queries: torch.Tensor, keys: torch.Tensor) -> float:
    """Fraction of rows i whose nearest key is key i (item-level matching of paired rows), streamed in chunks:
    100k held-out pairs need no 100k x 100k matrix."""
    for rows in (queries, keys):
        if not torch.isfinite(rows).all():
            raise SpacegraphValueError(
                "pair_recall_at_1: the embeddings hold NaN or inf, so nothing can be ranked; check the embeddings"
            )
    return float((nearest(queries, keys) == torch.arange(len(queries))).float().mean())


@checked_arguments
def zero_shot_accuracy(
    embeddings: torch.Tensor, labels: Sequence[int] | np.ndarray | torch.Tensor, class_embeddings: torch.Tensor
) -> float:
    """Accuracy of assigning each embedding to its most similar class embedding (row c = class c)."""
    if embeddings.ndim != 2 or class_embeddings.ndim != 2 or embeddings.shape[1] != class_embeddings.shape[1]:
        raise SpacegraphValueError(
            f"zero_shot_accuracy: embeddings and class embeddings must be [n, dim] and [classes, dim] of one dim, got "
            f"{list(embeddings.shape)} and {list(class_embeddings.shape)}"
        )
    labels = _labels(labels)
    if len(labels) != len(embeddings) or len(labels) == 0:
        raise SpacegraphValueError(f"zero_shot_accuracy: {len(embeddings)} embeddings and {len(labels)} labels")
    if bool(((labels < 0) | (labels >= len(class_embeddings))).any()):
        raise SpacegraphValueError(
            f"zero_shot_accuracy: labels must index the {len(class_embeddings)} class embeddings (0 to "
            f"{len(class_embeddings) - 1}); got labels from {int(labels.min())} to {int(labels.max())}"
        )
    scores = _finite(embeddings @ class_embeddings.T, "zero_shot_accuracy")
    return float((scores.argmax(dim=1) == labels).float().mean())


@checked_arguments
def linear_probe_accuracy(
    train: torch.Tensor,
    train_labels: Sequence[int] | np.ndarray | torch.Tensor,
    test: torch.Tensor,
    test_labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    epochs: int = 300,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Test accuracy of a supervised multinomial logistic regression on frozen features (full-batch L-BFGS)."""
    y_train, y_test = _labels(train_labels), _labels(test_labels)
    torch.manual_seed(seed)
    mean, std = train.mean(dim=0), train.std(dim=0).clamp(min=1e-6)
    classifier = torch.nn.Linear(train.shape[1], int(max(y_train.max(), y_test.max())) + 1)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=epochs, line_search_fn="strong_wolfe")
    x_train = (train - mean) / std

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(x_train), y_train)
        loss = loss + weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((classifier((test - mean) / std).argmax(dim=1) == y_test).float().mean())
