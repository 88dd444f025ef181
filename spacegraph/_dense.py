"""Dense image embeddings: a grid of local embeddings per image, made natively by a space that can (a plugin's
``_encode_dense_batch``, e.g. CLIP's patch tokens), else on a sliding window of crops that any image space encodes.

Cell ``(i, j)`` of an ``h x w`` grid stands for the uniform cell of rows ``i*H/h .. (i+1)*H/h`` and columns
``j*W/w .. (j+1)*W/w`` of the whole image as given, so a heatmap over the grid upsamples onto the image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ._batching import batch_length, numbered, take
from ._checks import check_count
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality

if TYPE_CHECKING:
    from ._space import Space

DENSE_GRID = 7  # cells per side of the sliding-window fallback
ImageItem = Any  # a path, a PIL image, an array [H, W] / [H, W, C] or a tensor [H, W] / [H, W, C] / [C, H, W]
ACCEPTED = "a file path, a PIL image, a numpy array [H, W] or [H, W, C], or a tensor [H, W], [H, W, C] or [C, H, W]"


def _channels_first(item: np.ndarray | torch.Tensor) -> bool:
    return item.ndim == 3 and item.shape[0] in (1, 3) and item.shape[2] not in (1, 3, 4)


def _opened(item: ImageItem, what: str) -> Image.Image | np.ndarray | torch.Tensor:
    """The image behind ``item``: a path opened lazily with Pillow (only its header is read), else ``item``."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise SpacegraphFileNotFoundError(f"{what}: no image file at {path}")
        try:
            return Image.open(path)
        except (OSError, ValueError) as err:
            raise SpacegraphValueError(f"{what}: {path} is not an image Pillow can read ({err})") from err
    if isinstance(item, (Image.Image, np.ndarray, torch.Tensor)):
        if not isinstance(item, Image.Image) and item.ndim not in (2, 3):
            raise SpacegraphValueError(f"{what}: an image array has 2 or 3 dimensions, got shape {list(item.shape)}")
        return item
    raise SpacegraphTypeError(f"{what} is a {type(item).__name__}; an image is {ACCEPTED}")


def image_size(item: ImageItem, what: str = "image") -> tuple[int, int]:
    """``(height, width)`` of one image input."""
    image = _opened(item, what)
    if isinstance(image, Image.Image):
        return image.height, image.width
    return (image.shape[1], image.shape[2]) if _channels_first(image) else (image.shape[0], image.shape[1])


def window_boxes(height: int, width: int, grid: int, window: float) -> list[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` of each crop, row by row: ``window`` of each side wide, centred on the grid's
    cell centres and shifted inside the image."""
    size_y, size_x = max(1, round(window * height)), max(1, round(window * width))

    def starts(side: int, size: int) -> list[int]:
        centres = [(i + 0.5) * side / grid for i in range(grid)]
        return [min(max(0, round(c - size / 2)), side - size) for c in centres]

    return [(y, x, y + size_y, x + size_x) for y in starts(height, size_y) for x in starts(width, size_x)]


def _crops(image: Image.Image | np.ndarray | torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> list[Any]:
    """The crops of ``image`` in the form it came in (PIL images stay PIL, arrays and tensors are sliced)."""
    if isinstance(image, Image.Image):
        return [image.crop((left, top, right, bottom)) for top, left, bottom, right in boxes]
    if _channels_first(image):
        return [image[:, top:bottom, left:right] for top, left, bottom, right in boxes]
    return [image[top:bottom, left:right] for top, left, bottom, right in boxes]


def check_dense_options(grid: int | None, window: float) -> None:
    if grid is not None:
        check_count("grid", grid)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 1:
        raise SpacegraphValueError(f"window must be a fraction of the image side in (0, 1], got {window!r}")


def encode_dense(
    space: Space,
    modality: Modality,
    inputs: Any,
    *,
    grid: int | None,
    window: float,
    batch_size: int,
    show_progress_bar: bool,
) -> torch.Tensor:
    """``[n, h, w, dim]`` unit-norm local embeddings of ``inputs`` (see :meth:`Space.encode_dense`)."""
    check_dense_options(grid, window)
    check_count("batch_size", batch_size)
    n = batch_length(inputs)
    batches = [range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if show_progress_bar:
        batches = tqdm(batches, desc=f"{space.name}:{modality.value} dense", unit="batch")
    native = grid is None and space.has_native_dense(modality)
    grids = []
    for positions in batches:
        batch = take(inputs, positions)
        if native:
            grids.append(_native_batch(space, modality, batch, positions))
        else:
            grids.append(_window_batch(space, modality, batch, positions, grid or DENSE_GRID, window))
    return torch.nn.functional.normalize(torch.cat(grids), dim=-1)


def _native_batch(space: Space, modality: Modality, batch: Any, positions: range) -> torch.Tensor:
    with torch.inference_mode(), numbered(positions), space._plugin_errors(modality, positions):
        dense = space._encode_dense_batch(modality, batch)
    what = f"{space.name} dense {modality.value} output"
    if not isinstance(dense, torch.Tensor) or dense.ndim != 4 or dense.shape[0] != len(positions):
        shape = list(dense.shape) if isinstance(dense, torch.Tensor) else type(dense).__name__
        raise SpacegraphValueError(f"{what}: expected a tensor [{len(positions)}, h, w, dim], got {shape}")
    if dense.shape[-1] != space.spec.dim or not torch.isfinite(dense).all():
        raise SpacegraphValueError(
            f"{what}: expected finite embeddings of dim {space.spec.dim}, got shape {list(dense.shape)}"
        )
    return dense.float().cpu()


def _window_batch(
    space: Space, modality: Modality, batch: Any, positions: range, grid: int, window: float
) -> torch.Tensor:
    """The sliding-window grids of one batch: every crop of every image encoded by the space itself."""
    crops = []
    for index, item in zip(positions, batch):
        what = f"{modality.value} item {index}"
        image = _opened(item, what)
        height, width = image_size(image, what)
        crops += _crops(image, window_boxes(height, width, grid, window))
    embeddings = space.encode(modality, crops, batch_size=max(64, grid * grid))
    return embeddings.reshape(len(positions), grid, grid, -1)
