"""A small real space pairing MNIST digits with 8x8 thumbnails in the ``sklearn.datasets.load_digits`` convention.

``digits-image-lowres`` embeds 28x28 handwritten digits (``image``, read like MNIST) and 8x8 digit thumbnails
(``lowres_image``) in one 64-d space. It was trained item by item (no labels) on MNIST images paired with their own
:func:`downsample_8x8` copies, so a bridge through ``image`` can carry MNIST-space embeddings to sklearn's digits.
Weights come from ``examples/train_lowres_space.py``.

Low-resolution inputs follow sklearn's digits: ``[8, 8]`` (or flat ``[64]``) numpy arrays / tensors / nested lists
whose values are counts of "on" pixels in 4x4 blocks of a 32x32 bitmap, i.e. numbers in 0..16 (ints or floats).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spacegraph import Modality
from spacegraph.plugin import MissingExtraError, SpacegraphTypeError, SpacegraphValueError, enumerate_batch

from .media import load_image
from .small import ImageTower, SmallSpace

LOWRES_SIDE = 8
LOWRES_MAX = 16
BITMAP_SIDE = 32  # sklearn's digits are 32x32 bitmaps counted in 4x4 blocks
INK_THRESHOLD = 0.3  # ink level (of 1) that counts towards a digit's bounding box
WIDTH_STRETCH = 1.5  # sklearn digits fill all 8 rows but mostly columns 1..6
BITMAP_THRESHOLD = 0.3  # resampled ink level that sets a bitmap pixel
LOWRES_ACCEPTED = (
    "accepted lowres_image inputs: numpy arrays / tensors / nested lists shaped [8, 8] or flat [64] with values in "
    "0..16 (the sklearn.datasets.load_digits convention: on-pixel counts of 4x4 blocks of a 32x32 bitmap)"
)


# ---------------------------------------------------------------- downsampling


def _as_unit_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images ``[..., H, W]`` (uint8 0..255 or float 0..1) as a float32 tensor ``[N, H, W]`` in [0, 1]."""
    tensor = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if tensor.ndim < 2:
        raise SpacegraphValueError(f"expected images shaped [..., H, W], got shape {list(tensor.shape)}")
    unit = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    if not torch.isfinite(unit).all() or unit.min() < 0 or unit.max() > 1:
        raise SpacegraphValueError("images must be uint8 (0..255) or floats in [0, 1] without NaN")
    return unit.reshape(-1, *unit.shape[-2:])


def _moments(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the ink's centre row (in pixels) and its horizontal shear, cov(x, y) / var(y)."""
    _, height, width = unit.shape
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    mass = unit.sum(dim=(1, 2)).clamp(min=1e-6)
    centre_y = (unit * ys).sum(dim=(1, 2)) / mass
    centre_x = (unit * xs).sum(dim=(1, 2)) / mass
    dy, dx = ys - centre_y[:, None, None], xs - centre_x[:, None, None]
    var_y = (unit * dy**2).sum(dim=(1, 2)) / mass
    return centre_y, (unit * dy * dx).sum(dim=(1, 2)) / mass / var_y.clamp(min=1e-6)


def _deskewed(unit: torch.Tensor) -> torch.Tensor:
    """Images sheared horizontally so their ink's principal axis is upright (sklearn's digits are rarely slanted)."""
    n, height, width = unit.shape
    centre_y, shear = _moments(unit)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(n, 1, 1)
    theta[:, 0, 1] = shear * height / width
    theta[:, 0, 2] = -shear * height / width * (2 * centre_y / height - 1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    return F.grid_sample(unit[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def _extent(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First index and one past the last index of the True entries along the last axis ``[N, L]``."""
    first = mask.float().argmax(dim=1)
    return first, mask.shape[1] - mask.flip(1).float().argmax(dim=1)


def _frames(unit: torch.Tensor) -> torch.Tensor:
    """Per image, the source window (centre_y, centre_x, height, width in pixels, ``[N, 4]``) that fills the bitmap.

    The window spans the ink's full height; its width keeps the aspect ratio unless that would fill more than
    2/3 of the bitmap's width, then the digit is squeezed (sklearn's digits fill all rows but about 6 columns).
    An image without ink gets the whole frame.
    """
    _, height, width = unit.shape
    ink = unit > INK_THRESHOLD
    has_ink = ink.flatten(1).any(dim=1)
    (top, bottom), (left, right) = _extent(ink.any(dim=2)), _extent(ink.any(dim=1))
    box_h = (bottom - top).float()
    box_w = torch.maximum(box_h, (right - left) * WIDTH_STRETCH)
    frames = torch.stack([(top + bottom) / 2, (left + right) / 2, box_h, box_w], dim=1)
    whole = torch.tensor([height / 2, width / 2, float(height), float(width)])
    return torch.where(has_ink[:, None], frames, whole)


def _bitmaps(unit: torch.Tensor) -> torch.Tensor:
    """Each image's ink window resampled to a 32x32 frame and thresholded to 0/1, ``[N, 1, 32, 32]``."""
    _, height, width = unit.shape
    frames = _frames(unit)
    theta = torch.zeros(len(unit), 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = frames[:, 3] / width, frames[:, 2] / height
    theta[:, 0, 2], theta[:, 1, 2] = 2 * frames[:, 1] / width - 1, 2 * frames[:, 0] / height - 1
    grid = F.affine_grid(theta, [len(unit), 1, BITMAP_SIDE, BITMAP_SIDE], align_corners=False)
    scaled = F.grid_sample(unit[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (scaled > BITMAP_THRESHOLD).float()


def downsample_8x8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Digit images ``[..., H, W]`` (MNIST-like: uint8 0..255 or float 0..1) as sklearn-style 8x8 thumbnails.

    Mimics ``load_digits``: the digit is deskewed, its ink's bounding box is scaled to fill a 32x32 bitmap (see
    :func:`_frames`), thresholded, and the on-pixels of each 4x4 block are counted.
    Returns float32 ``[..., 8, 8]`` holding integers 0..16.
    """
    unit = _as_unit_float(images)
    block = BITMAP_SIDE // LOWRES_SIDE
    counts = F.avg_pool2d(_bitmaps(_deskewed(unit)), block)[:, 0] * block * block
    lead = tuple(np.shape(images)[:-2])
    return counts.round().reshape(*lead, LOWRES_SIDE, LOWRES_SIDE).numpy().astype(np.float32)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits: images float32 ``[1797, 8, 8]`` in 0..16 and int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise MissingExtraError("load_sklearn_digits needs scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def check_lowres(item: Any, what: str = "lowres_image item") -> np.ndarray:
    """One lowres input as float32 ``[8, 8]`` in 0..16; clear errors for other shapes, ranges, NaN or dtypes."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().float().numpy()
    if isinstance(item, (str, bytes, Path)):
        raise SpacegraphTypeError(f"{what}: got a {type(item).__name__}; {LOWRES_ACCEPTED}")
    try:
        arr = np.asarray(item)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise SpacegraphValueError(f"{what}: not a rectangular array of numbers ({err}); {LOWRES_ACCEPTED}") from err
    if arr.dtype.kind not in "fiu":
        raise SpacegraphTypeError(f"{what}: values must be numbers, got dtype {arr.dtype}; {LOWRES_ACCEPTED}")
    if arr.shape not in ((LOWRES_SIDE, LOWRES_SIDE), (LOWRES_SIDE * LOWRES_SIDE,)):
        raise SpacegraphValueError(f"{what}: shape {list(arr.shape)} is neither [8, 8] nor [64]; {LOWRES_ACCEPTED}")
    arr = arr.astype(np.float32).reshape(LOWRES_SIDE, LOWRES_SIDE)
    if not np.isfinite(arr).all():
        raise SpacegraphValueError(f"{what}: contains NaN or inf")
    if arr.min() < 0 or arr.max() > LOWRES_MAX:
        raise SpacegraphValueError(
            f"{what}: values must lie in [0, 16], got [{arr.min():g}, {arr.max():g}]; {LOWRES_ACCEPTED}"
        )
    return arr


# ---------------------------------------------------------------- model + space


class LowresModel(nn.Module):
    """An image tower on 28x28 digits, one on 8x8 thumbnails (scaled to [0, 1]) and a learnable temperature."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dim = config["dim"]
        self.towers = nn.ModuleDict({name: ImageTower(config[name], dim) for name in config["modalities"]})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class DigitsLowresSpace(SmallSpace):
    """MNIST-like 28x28 digits (``image``) and sklearn-style 8x8 digits in 0..16 (``lowres_image``), 64-d."""

    NAME = "digits-image-lowres"
    MODEL = LowresModel

    def _prepare(self, modality: Modality, item: Any, what: str) -> np.ndarray:
        if modality is Modality.IMAGE:
            return load_image(item, self.config["image"]["size"], what)
        return check_lowres(item, what) / LOWRES_MAX

    def _prepare_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        arrays = [self._prepare(modality, item, f"{modality.value} item {i}") for i, item in enumerate_batch(batch)]
        return torch.from_numpy(np.stack(arrays))

    def _encode_prepared(self, modality: Modality, prepared: torch.Tensor) -> torch.Tensor:
        return self.model.towers[modality.value](prepared)
