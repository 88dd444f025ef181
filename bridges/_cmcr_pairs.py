"""C-MCR's data: the memory softmax (attention over a memory, in bounded memory), the native training pairs, and
the pseudo pairs built from the memories (the paper's, Ex-MCR's memory-seeded ones, the mutual-neighbour filter)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from spacegraph.plugin import RankSlice, SpacegraphValueError, nearest, row_blocks, top_k

from ._cmcr_config import CMCRConfig

Values = torch.Tensor | tuple[torch.Tensor, ...]


def memory_retrieve(
    queries: torch.Tensor,
    memory: torch.Tensor,
    temperature: float,
    *,
    values: Values | None = None,
    rows: torch.Tensor | None = None,
    chunk_size: int = 8192,
    query_chunk: int = 4096,
    method: Literal["auto", "sdpa", "stream"] = "auto",
) -> Values:
    """``normalize(softmax(queries @ keys.T / temperature) @ values)`` in bounded memory, keys = ``memory[rows]``
    (all of it by default).

    This is attention with keys = memory and values = ``values`` (the memory itself by default; another embedding
    of the same rows carries the weights across spaces; a tuple of them gives one result each from one softmax).
    Queries go ``query_chunk`` at a time. ``stream`` walks the keys ``chunk_size`` rows at a time with a running
    log-sum-exp (peak ~ query_chunk x chunk_size, whatever the sizes); ``sdpa`` uses PyTorch's fused attention
    (flash kernels on CPU and GPU, memory-efficient ones on GPU), which gathers ``memory[rows]`` once. ``auto``
    picks sdpa unless ``rows`` is given (measured on CPU: 1.4x faster than stream, a tenth of its memory).
    """
    many = isinstance(values, tuple)
    value_sets = values if isinstance(values, tuple) else (memory if values is None else values,)
    if method == "auto":
        method = "sdpa" if rows is None else "stream"
    if method == "sdpa":
        keys = memory if rows is None else memory[rows]
        joined = torch.cat([v if rows is None else v[rows] for v in value_sets], dim=1)
        outputs = [_attend_fused(q, keys, joined, temperature) for q in queries.split(query_chunk)]
        split = [v.shape[1] for v in value_sets]
        results = tuple(F.normalize(part, dim=-1) for part in torch.cat(outputs).split(split, dim=1))
    else:
        outputs = [
            _attend_streaming(q, memory, value_sets, rows, temperature, chunk_size) for q in queries.split(query_chunk)
        ]
        results = tuple(F.normalize(torch.cat(parts), dim=-1) for parts in zip(*outputs))
    return results if many else results[0]


def _attend_fused(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(queries[None], keys[None], values[None], scale=1.0 / temperature)[0]


def _attend_streaming(
    queries: torch.Tensor,
    memory: torch.Tensor,
    value_sets: tuple[torch.Tensor, ...],
    rows: torch.Tensor | None,
    temperature: float,
    chunk_size: int,
) -> tuple[torch.Tensor, ...]:
    """Unnormalised ``softmax(queries @ keys.T / temperature) @ values`` for each value set, one key chunk at a time."""
    n = queries.shape[0]
    running_max = queries.new_full((n, 1), -math.inf)
    denominator = queries.new_zeros((n, 1))
    accumulators = [queries.new_zeros((n, v.shape[1])) for v in value_sets]
    count = memory.shape[0] if rows is None else rows.shape[0]
    for _, selector in row_blocks(count, rows, chunk_size):
        logits = queries @ memory[selector].T / temperature
        new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        denominator = denominator * rescale + weights.sum(dim=1, keepdim=True)
        accumulators = [acc * rescale + weights @ v[selector] for acc, v in zip(accumulators, value_sets)]
        running_max = new_max
    return tuple(acc / denominator for acc in accumulators)


@dataclass
class TrainingData:
    """The native training pairs, by index into the overlap features (nothing of the overlap's size is copied),
    and the memories, all on the training device; ``retrieve`` is the memory softmax with the config's settings."""

    overlap_x: torch.Tensor
    overlap_y: torch.Tensor
    rows: torch.Tensor
    memory_x: torch.Tensor | None
    memory_y: torch.Tensor | None
    config: CMCRConfig

    def __len__(self) -> int:
        return len(self.rows)

    def native(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        picked = self.rows[index]
        return self.overlap_x[picked], self.overlap_y[picked]

    def retrieve(self, queries: torch.Tensor, memory: torch.Tensor, **options: Any) -> Any:
        """The memory softmax in float32 even inside a bf16 step: at tau_mem = 0.01, bf16 logits would be off by
        about 0.2."""
        config = self.config
        with torch.autocast(queries.device.type, enabled=False):
            return memory_retrieve(
                queries,
                memory,
                config.memory_temperature,
                chunk_size=config.memory_chunk,
                query_chunk=config.query_chunk,
                **options,
            )

    def pseudo_of_native(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The paper's pseudo pairs of native rows ``index``: each side's memory retrieval, and the rows themselves."""
        bx, by = self.native(index)
        return self.retrieve(bx, self.memory_x), self.retrieve(by, self.memory_y), bx, by


@dataclass
class PseudoPairs:
    """Pseudo pairs ``(x, y)`` with the native pair ``(anchor_x, anchor_y)`` each was derived from, drawn by index.

    Rows below ``len(data)`` are the paper's pairs of native training row i, retrieved when drawn (so nothing of
    the overlap's size is stored); the rest were seeded by memory items (Ex-MCR) and precomputed. ``kept``: the
    rows a filter kept, if one ran. ``aligned``: row i belongs to native training row i, so both are drawn in the
    same batch."""

    data: TrainingData
    seeded: tuple[torch.Tensor, ...] | None
    kept: torch.Tensor | None
    aligned: bool

    def __len__(self) -> int:
        if self.kept is not None:
            return len(self.kept)
        return len(self.data) + (0 if self.seeded is None else len(self.seeded[0]))

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(x, y, anchor_x, anchor_y)`` of the pseudo rows ``index``."""
        union = index if self.kept is None else self.kept[index]
        from_native = union < len(self.data)
        if bool(from_native.all()):
            return self._checked(self.data.pseudo_of_native(union))
        if not bool(from_native.any()):
            return tuple(part[union - len(self.data)] for part in self.seeded)  # checked when made
        parts = [part.new_empty((len(union), part.shape[1])) for part in self.seeded]
        if bool(from_native.any()):
            for part, values in zip(parts, self.data.pseudo_of_native(union[from_native])):
                part[from_native] = values
        for part, values in zip(parts, self.seeded):
            part[~from_native] = values[union[~from_native] - len(self.data)]
        return self._checked(tuple(parts))

    def _checked(self, parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not all(torch.isfinite(part).all() for part in parts[:2]):
            raise SpacegraphValueError(
                "memory retrieval gave NaN or inf pseudo embeddings at "
                f"memory_temperature={self.data.config.memory_temperature:g}; raise it"
            )
        return parts


def _on_ranks(ranks: RankSlice, rows: int, compute: Any) -> tuple[torch.Tensor, ...]:
    """``compute(part)`` on this rank's share of ``rows`` work items, gathered from every rank in order: the
    memory-sized retrievals are sharded over the ranks."""
    return tuple(ranks.gather_uneven(result) for result in compute(ranks.split(rows)))


def _memory_seeded(data: TrainingData, ranks: RankSlice) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Ex-MCR's modality-centric pairs ``(x, y, anchor_x, anchor_y)``: each A item with its pseudo overlap
    embeddings (one softmax over the training overlap in X, applied to both spaces' embeddings) and the pseudo C
    those retrieve, and the same from C's side; with each row's pivot overlap item (the seed's nearest)."""
    ma, mc, bx, by, rows = data.memory_x, data.memory_y, data.overlap_x, data.overlap_y, data.rows

    def from_a(share: slice) -> tuple[torch.Tensor, ...]:
        ax, ay = data.retrieve(ma[share], bx, values=(bx, by), rows=rows)
        return ax, ay, data.retrieve(ay, mc), nearest(ma[share], bx, rows=rows)

    def from_c(share: slice) -> tuple[torch.Tensor, ...]:
        cy, cx = data.retrieve(mc[share], by, values=(by, bx), rows=rows)
        return cx, cy, data.retrieve(cx, ma), nearest(mc[share], by, rows=rows)

    ax, ay, a_to_c, pivots_a = _on_ranks(ranks, len(ma), from_a)
    cx, cy, c_to_a, pivots_c = _on_ranks(ranks, len(mc), from_c)
    seeded = (torch.cat([ma, c_to_a]), torch.cat([a_to_c, mc]), torch.cat([ax, cx]), torch.cat([ay, cy]))
    return seeded, torch.cat([pivots_a, pivots_c])


def mutual_neighbours(data: TrainingData, k: int, ranks: RankSlice) -> torch.Tensor:
    """Mask of the training overlap items among the k nearest of some A memory item in X and of some C memory item
    in Y."""

    def near(memory: torch.Tensor, overlap: torch.Tensor) -> torch.Tensor:
        (neighbours,) = _on_ranks(
            ranks, len(memory), lambda share: (top_k(memory[share], overlap, k, rows=data.rows)[1],)
        )
        mask = torch.zeros(len(data), dtype=torch.bool, device=data.rows.device)
        mask[neighbours.flatten()] = True
        return mask

    return near(data.memory_x, data.overlap_x) & near(data.memory_y, data.overlap_y)


def pseudo_pairs(data: TrainingData, config: CMCRConfig, ranks: RankSlice) -> PseudoPairs | None:
    """The pseudo pairs of the native training pairs, as ``config`` asks; None when memory is off (``use_memory``
    False, or None without both memories) or the filter keeps fewer than two."""
    have_memories = data.memory_x is not None and data.memory_y is not None
    if config.use_memory is False or (config.use_memory is None and not have_memories):
        return None
    if not have_memories:
        raise SpacegraphValueError(
            "C-MCR with use_memory=True needs memory_x and memory_y; pass them, or set use_memory=False (native "
            "pairs only) or leave it unset (memories when both are given)"
        )
    seeded, pivots = None, torch.arange(len(data), device=data.rows.device)
    if config.pseudo_source == "overlap+memory":
        seeded, seeded_pivots = _memory_seeded(data, ranks)
        pivots = torch.cat([pivots, seeded_pivots])
    kept = None
    if config.pseudo_filter == "mutual_neighbours":
        kept = mutual_neighbours(data, config.neighbour_k, ranks)[pivots].nonzero()[:, 0]
        if len(kept) < 2:
            return None
    aligned = config.pseudo_source == "overlap" and config.pseudo_filter == "none"
    pseudo = PseudoPairs(data, seeded, kept, aligned)
    if seeded is not None:
        pseudo._checked(seeded)
    return pseudo
