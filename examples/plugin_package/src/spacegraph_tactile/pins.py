"""Pin maps: what a 7x7 refreshable pin display (a tactile sensor read the other way round) shows of an image.

A 28x28 grayscale image is mean-pooled over 4x4 blocks; a pin is raised (1.0) where its block's mean intensity
is at least ``THRESHOLD`` of full scale, and down (0.0) elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spacegraph.plugin import SpacegraphTypeError, SpacegraphValueError

GRID = 7
BLOCK = 4
THRESHOLD = 0.25
IMAGE_SIDE = GRID * BLOCK


def pin_map(images: Any) -> np.ndarray:
    """Pin maps ``[n, 7, 7]`` (float32, 0 or 1) of 28x28 grayscale images ``[n, 28, 28]`` (uint8 0-255 or float
    in [0, 1])."""
    array = np.asarray(images)
    if array.dtype.kind not in "uif":
        raise SpacegraphTypeError(f"pin_map takes numeric images, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise SpacegraphValueError(
            f"pin_map takes images shaped [n, {IMAGE_SIDE}, {IMAGE_SIDE}], got {list(array.shape)}"
        )
    scaled = array.astype(np.float32) / (255.0 if array.dtype.kind in "ui" else 1.0)
    blocks = scaled.reshape(len(array), GRID, BLOCK, GRID, BLOCK).mean(axis=(2, 4))
    return (blocks >= THRESHOLD).astype(np.float32)
