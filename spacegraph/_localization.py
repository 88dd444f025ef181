"""Sound source localization: heatmaps of a query over an image's locations, and the cIoU / AUC protocol of
Senocak et al. (2018) as the VGGSS evaluation (Chen et al., 2021) applies it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._arguments import checked_arguments
from ._errors import SpacegraphTypeError, SpacegraphValueError

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # the success-rate curve's x axis, 0 to 1 by 0.05


def upsampled(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``[h, w]`` grid of scores, bilinearly upsampled to ``size`` (cell centres stay at cell centres)."""
    return F.interpolate(scores[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def _box_mask(box: Sequence[Any], shape: tuple[int, int], what: str) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` in pixels as a mask of ``shape`` (covering every pixel it touches)."""
    values = np.asarray(box, dtype=np.float64) if len(box) == 4 else None
    if values is None or not np.isfinite(values).all() or values[2] <= values[0] or values[3] <= values[1]:
        raise SpacegraphValueError(f"{what}: a box is [x0, y0, x1, y1] in pixels with x0 < x1 and y0 < y1, got {box}")
    height, width = shape
    x0, y0 = max(0, math.floor(values[0])), max(0, math.floor(values[1]))
    x1, y1 = min(width, math.ceil(values[2])), min(height, math.ceil(values[3]))
    if x1 <= x0 or y1 <= y0:
        raise SpacegraphValueError(f"{what}: box {box} lies outside the {width}x{height} heatmap")
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def truth_mask(truth: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    """The ground truth of one item as a bool mask: a box, a list of boxes, or a mask of the heatmap's shape."""
    if isinstance(truth, (np.ndarray, torch.Tensor)) and truth.ndim == 2:
        mask = np.asarray(truth.cpu() if isinstance(truth, torch.Tensor) else truth).astype(bool)
        if mask.shape != shape:
            raise SpacegraphValueError(f"{what}: a mask must have the heatmap's shape {list(shape)}, got {mask.shape}")
        return mask
    if not isinstance(truth, (list, tuple, np.ndarray, torch.Tensor)) or len(truth) == 0:
        raise SpacegraphTypeError(f"{what}: the truth is a box [x0, y0, x1, y1], a list of boxes or a 2-d mask")
    boxes = [truth] if np.ndim(truth[0]) == 0 else list(truth)
    return np.logical_or.reduce([_box_mask(list(box), shape, what) for box in boxes])


def ciou(heatmap: np.ndarray, truth: np.ndarray, threshold: str | float = "median") -> float:
    """cIoU of one heatmap: min-max normalised, locations above its median (``"median"``, the protocol: half the
    image) or at least ``threshold`` count as predicted; ``|pred & gt| / (|gt| + |pred & ~gt|)``."""
    span = float(heatmap.max() - heatmap.min())
    normalised = (heatmap - heatmap.min()) / span if span > 0 else np.zeros_like(heatmap)
    if threshold == "median":
        predicted = normalised > np.sort(normalised, axis=None)[normalised.size // 2]
    else:
        predicted = normalised >= float(threshold)
    return float((predicted & truth).sum() / (truth.sum() + (predicted & ~truth).sum()))


def _check_threshold(threshold: Any) -> None:
    ok = threshold == "median" or (
        isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold <= 1
    )
    if not ok:
        raise SpacegraphValueError(f"threshold must be 'median' or a float in [0, 1], got {threshold!r}")


@checked_arguments
def localization_metrics(
    heatmaps: Sequence[Any] | torch.Tensor, truths: Sequence[Any], *, threshold: str | float = "median"
) -> dict[str, Any]:
    """Score heatmaps (2-d tensors or arrays, e.g. :meth:`Route.localize`'s) against where the source truly is:
    ``{"ciou_0.5": share of items with cIoU >= 0.5, "auc": area under the success rate over cIoU thresholds
    0, 0.05, ..., 1, "ious": each item's cIoU}``. ``truths[i]``: a box ``[x0, y0, x1, y1]`` in pixels of
    ``heatmaps[i]``, a list of boxes (their union), or a bool mask of its shape. ``threshold``: see :func:`ciou`."""
    _check_threshold(threshold)
    if len(heatmaps) != len(truths) or len(heatmaps) == 0:
        raise SpacegraphValueError(f"localization_metrics: {len(heatmaps)} heatmaps and {len(truths)} truths")
    ious = []
    for i, (heatmap, truth) in enumerate(zip(heatmaps, truths)):
        values = np.asarray(heatmap.detach().cpu() if isinstance(heatmap, torch.Tensor) else heatmap, np.float64)
        if values.ndim != 2 or not np.isfinite(values).all():
            raise SpacegraphValueError(f"heatmap {i}: expected a finite 2-d map, got shape {list(values.shape)}")
        ious.append(ciou(values, truth_mask(truth, values.shape, f"truth {i}"), threshold))
    success = np.asarray([np.mean(np.asarray(ious) >= t) for t in IOU_THRESHOLDS])
    return {
        "ciou_0.5": float(np.mean(np.asarray(ious) >= 0.5)),
        "auc": float(np.sum((success[1:] + success[:-1]) / 2 * np.diff(IOU_THRESHOLDS))),  # trapezoids
        "ious": ious,
    }
