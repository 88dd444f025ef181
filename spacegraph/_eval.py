"""Retrieval and classification metrics with class-level ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def _pair_inputs(scores: torch.Tensor | Sequence[float], matched: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores and matched flags as 1-d arrays of one length, both kinds of pair present."""
    values = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    flags = np.asarray(matched.cpu() if isinstance(matched, torch.Tensor) else matched)
    if values.ndim != 1 or flags.shape != values.shape:
        raise SpacegraphValueError(
            f"pair scores and matched flags must be 1-d of one length, got {list(values.shape)} and {list(flags.shape)}"
        )
    if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
        raise SpacegraphTypeError("matched must hold booleans (or 0/1): True where the pair is a true match")
    flags = flags.astype(bool)
    if not np.isfinite(values).all():
        raise SpacegraphValueError("pair scores hold NaN or inf; check the embeddings")
    if flags.all() or not flags.any():
        raise SpacegraphValueError("pair metrics need both matched and mismatched pairs")
    return values, flags


def _operating_points(values: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score, highest first: the score, and the true and false positives of calling every pair
    scoring at least that much matched (ties decided together, as scikit-learn's curves do)."""
    order = np.argsort(-values, kind="stable")
    ranked, hits = values[order], flags[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_pos = np.cumsum(hits)[last_of_tie]
    return ranked[last_of_tie], true_pos, last_of_tie + 1 - true_pos


@checked_arguments
def pair_metrics(
    scores: torch.Tensor | Sequence[float], matched: Any, *, threshold: float | None = None
) -> dict[str, float]:
    """Counterfactual recognition (Mo and Morgado, 2022): how well pair scores tell matched pairs from mismatched
    ones. ``{"ap": average precision, "max_f1": the best F1 over thresholds, "max_f1_threshold": where it is}``,
    plus ``"accuracy"`` of calling pairs scoring at least ``threshold`` matched, when one is given."""
    values, flags = _pair_inputs(scores, matched)
    at, true_pos, false_pos = _operating_points(values, flags)
    precision, recall = true_pos / (true_pos + false_pos), true_pos / flags.sum()
    f1 = np.where(true_pos > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    metrics = {
        "ap": float(np.sum(np.diff(recall, prepend=0.0) * precision)),
        "max_f1": float(f1.max()),
        "max_f1_threshold": float(at[f1.argmax()]),
    }
    if threshold is not None:
        metrics["accuracy"] = float(np.mean((values >= threshold) == flags))
    return metrics


@checked_arguments
def pair_threshold(scores: torch.Tensor | Sequence[float], matched: Any) -> float:
    """The decision threshold of best balanced accuracy (Youden's J: true minus false positive rate) on labelled
    pairs, halfway to the next lower score, so that it does not depend on how many pairs of each kind there are."""
    values, flags = _pair_inputs(scores, matched)
    at, true_pos, false_pos = _operating_points(values, flags)
    best = int(np.argmax(true_pos / flags.sum() - false_pos / (~flags).sum()))
    return float(at[best] if best + 1 == len(at) else (at[best] + at[best + 1]) / 2)
