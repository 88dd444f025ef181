"""Two small real contrastive spaces over ModelNet10 shapes, standing in for ULIP (3D-image) and CLIP (image-text).

``shapes-3d-image`` embeds point clouds (a small PointNet) and canonical depth renders (a CNN), trained item-level
on (cloud, its own render) pairs; ``shapes-image-text`` embeds the same kind of renders and OEWN text, trained on
renders of other shapes. The two share no training pairs, only the image modality, so a C-MCR bridge through images
joins 3D to text as in the C-MCR paper's ULIP+CLIP setting. Weights come from ``examples/train_shape_spaces.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from spacegraph import Modality
from spacegraph.plugin import enumerate_batch

from .media import load_images
from .pointcloud_io import load_xyz
from .shapes_data import normalize_cloud
from .small import ImageTower, SmallSpace, TextTower, tokenize_batch


def resample_cloud(points: np.ndarray, n_points: int) -> np.ndarray:
    """``n_points`` rows picked deterministically, evenly spaced over the input order (repeating if fewer)."""
    if len(points) >= n_points:
        return points[np.linspace(0, len(points) - 1, n_points).round().astype(np.int64)]
    return points[np.arange(n_points) % len(points)]


def prepare_cloud(item: Any, n_points: int, what: str = "point cloud item") -> np.ndarray:
    """One point cloud input (path, array or tensor) as a normalised float32 ``[n_points, 3]`` array. It is moved
    and scaled into the unit box in float64 first, so that huge, tiny or far-off coordinates keep their shape in
    :func:`normalize_cloud`'s float32."""
    xyz = load_xyz(item, what)
    unit_box = (xyz - xyz.min(axis=0)) / np.ptp(xyz, axis=0).max()
    return resample_cloud(normalize_cloud(unit_box), n_points)


class PointTower(nn.Module):
    """PointNet: shared per-point MLP (linear + BN + ReLU), global max pool, MLP head."""

    def __init__(self, cfg: dict, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip([3, *cfg["widths"][:-1]], cfg["widths"]):
            layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
        self.per_point = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cfg["widths"][-1], cfg["head"]), nn.ReLU(), nn.Linear(cfg["head"], dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points``: float ``[B, N, 3]``."""
        features = self.per_point(points.reshape(-1, 3)).reshape(points.shape[0], points.shape[1], -1)
        return self.head(features.amax(dim=1))


class ShapesModel(nn.Module):
    """One tower per modality of a space's config and a learnable temperature."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dim = config["dim"]
        builders = {
            "point_cloud": lambda: PointTower(config["point_cloud"], dim),
            "image": lambda: ImageTower(config["image"], dim),
            "text": lambda: TextTower(config["text"]["buckets"], config["text"]["width"], dim),
        }
        self.towers = nn.ModuleDict({m: builders[m]() for m in config["modalities"]})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class _ShapesSpace(SmallSpace):
    MODEL = ShapesModel

    def _prepare_batch(self, modality: Modality, batch: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        """Token ids and bag offsets for text; a batch of image or point cloud inputs as the tensor its tower takes."""
        if modality is Modality.TEXT:
            text = self.config["text"]
            return tokenize_batch(batch, text["tokenizer"], text["buckets"])
        if modality is Modality.IMAGE:
            items = load_images(batch, self.config["image"]["size"])
        else:
            n_points = self.config["point_cloud"]["n_points"]
            items = [prepare_cloud(item, n_points, f"point_cloud item {i}") for i, item in enumerate_batch(batch)]
        return (torch.from_numpy(np.stack(items).astype(np.float32)),)

    def _encode_prepared(self, modality: Modality, prepared: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.model.towers[modality.value](*prepared)


class ShapesPointImageSpace(_ShapesSpace):
    """ModelNet10 point clouds and their canonical 32x32 depth renders in one 64-d space (a ULIP stand-in)."""

    NAME = "shapes-3d-image"


class ShapesImageTextSpace(_ShapesSpace):
    """Canonical 32x32 depth renders of shapes and OEWN furniture text in one 96-d space (a CLIP stand-in)."""

    NAME = "shapes-image-text"
