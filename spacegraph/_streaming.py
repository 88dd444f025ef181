"""Similarity computations over row sets of any size in bounded memory: queries and keys both go in chunks, so the
peak is one ``query_chunk x key_chunk`` block of scores whatever the sizes (1M x 1M included)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ._arguments import checked_arguments
from ._errors import SpacegraphTypeError, SpacegraphValueError

QUERY_CHUNK = 4096
KEY_CHUNK = 16384


@checked_arguments
def row_blocks(count: int, rows: torch.Tensor | None, chunk: int) -> Iterator[tuple[int, slice | torch.Tensor]]:
    """``(offset, selector)`` over ``count`` rows in chunks: a slice, or the chunk of ``rows`` (an index) to gather,
    so that ``keys[selector]`` and ``values[selector]`` take the same rows one chunk at a time (no full copy)."""
    for start in range(0, count, chunk):
        yield start, slice(start, start + chunk) if rows is None else rows[start : start + chunk]


@checked_arguments
def top_k(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    rows: torch.Tensor | None = None,
    query_chunk: int = QUERY_CHUNK,
    key_chunk: int = KEY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest dot products of each query over the keys (``keys[rows]`` if given; indices count over
    those rows): ``(scores [n, k], indices [n, k])``, best first. A running top-k is merged chunk by chunk."""
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise SpacegraphValueError(
            f"queries and keys must be [n, dim] and [m, dim] of one dim, got {list(queries.shape)} and "
            f"{list(keys.shape)}"
        )
    if rows is not None and (rows.ndim != 1 or rows.is_floating_point() or rows.is_complex()):
        raise SpacegraphValueError(
            f"rows must be a 1-d integer tensor of key positions, got {rows.dtype} {list(rows.shape)}"
        )
    count = keys.shape[0] if rows is None else rows.shape[0]
    if count == 0 or k < 1:
        raise SpacegraphValueError(f"nothing to rank: {count} keys and k = {k}; give at least one key and k >= 1")
    k = min(k, count)
    scores, indices = [], []
    for q in queries.split(query_chunk):
        best = q.new_full((q.shape[0], 0), -torch.inf)
        best_index = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        for start, selector in row_blocks(count, rows, key_chunk):
            block = keys[selector]
            block_scores, block_index = (q @ block.T).topk(min(k, block.shape[0]), dim=1)
            merged = torch.cat([best, block_scores], dim=1)
            merged_index = torch.cat([best_index, block_index + start], dim=1)
            best, order = merged.topk(min(k, merged.shape[1]), dim=1)
            best_index = merged_index.gather(1, order)
        scores.append(best)
        indices.append(best_index)
    return torch.cat(scores), torch.cat(indices)


@checked_arguments
def nearest(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    query_chunk: int = QUERY_CHUNK,
    key_chunk: int = KEY_CHUNK,
) -> torch.Tensor:
    """Index of each query's most similar key (of ``keys[rows]``, counted over those rows)."""
    return top_k(queries, keys, 1, rows=rows, query_chunk=query_chunk, key_chunk=key_chunk)[1][:, 0]


@checked_arguments
def project_rows(
    project: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, chunk: int = 65536
) -> torch.Tensor:
    """``project(rows)`` a chunk at a time, without autograd (a projection head in eval mode is row-wise)."""
    if rows.ndim != 2 or len(rows) == 0:
        raise SpacegraphValueError(f"project_rows: rows must be a non-empty [n, dim] tensor, got {list(rows.shape)}")
    with torch.inference_mode():
        parts = [project(part) for part in rows.split(chunk)]
    if not all(isinstance(part, torch.Tensor) for part in parts):
        raise SpacegraphTypeError(f"project_rows: project must return tensors, got {type(parts[0]).__name__}")
    return torch.cat(parts)


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` as float32 unit vectors, copied only if they are not already (features usually are): normalising a
    million-row overlap by default would double its memory."""
    rows = rows.float()
    if torch.allclose(rows.norm(dim=1), rows.new_ones(()), atol=1e-4):
        return rows
    return torch.nn.functional.normalize(rows, dim=1)
