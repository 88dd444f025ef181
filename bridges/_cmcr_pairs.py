"""C-MCR's data: the memory softmax (attention over a memory, in bounded memory), the native training pairs, and
the pseudo pairs built from the memories (the paper's, Ex-MCR's memory-seeded ones, the mutual-neighbour filter)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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
    and the memories, all on the training device; ``retrieve`` is the memory softmax with the config's settings
    (``retrieval_seconds`` adds up its time)."""

    overlap_x: torch.Tensor
    overlap_y: torch.Tensor
    rows: torch.Tensor
    memory_x: torch.Tensor | None
    memory_y: torch.Tensor | None
    config: CMCRConfig
    retrieval_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def native(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        picked = self.rows[index]
        return self.overlap_x[picked], self.overlap_y[picked]

    def retrieve(self, queries: torch.Tensor, memory: torch.Tensor, **options: Any) -> Any:
        """The memory softmax in float32 even inside a bf16 step: at tau_mem = 0.01, bf16 logits would be off by
        about 0.2."""
        config, start = self.config, time.perf_counter()
        with torch.autocast(queries.device.type, enabled=False):
            found = memory_retrieve(
                queries,
                memory,
                config.memory_temperature,
                chunk_size=config.memory_chunk,
                query_chunk=config.query_chunk,
                **options,
            )
        self.retrieval_seconds += time.perf_counter() - start
        return found

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
    seed_keys: int = 0  # the overlap rows memory-seeded pairs retrieved from (0: none seeded)

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


def _in_chunks(
    compute: Callable[[slice], tuple[torch.Tensor, ...]], share: slice, size: int, bar: tqdm | None
) -> tuple[torch.Tensor, ...]:
    """``compute(share)``, ``size`` items at a time, each part counted on ``bar``."""
    parts = []
    for start in range(share.start, max(share.stop, share.start + 1), size):
        part = slice(start, min(start + size, share.stop))
        parts.append(compute(part))
        if bar is not None:
            bar.update(part.stop - part.start)
    return tuple(torch.cat(results) for results in zip(*parts))


def seed_keys(data: TrainingData, config: CMCRConfig) -> torch.Tensor:
    """The training rows (positions in ``data.rows``) memory-seeded pairs retrieve from: all of them, or a seeded
    sample of ``config.seed_keys`` (default: steps x batch_size) when there are more."""
    count, n = config.seed_keys or config.steps * config.batch_size, len(data.rows)
    if n <= count:
        return torch.arange(n, device=data.rows.device)
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 2))[:count]
    return picked.sort().values.to(data.rows.device)


def _memory_seeded(
    data: TrainingData, ranks: RankSlice, keys: torch.Tensor, *, pivots: bool, show_progress_bar: bool
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """Ex-MCR's modality-centric pairs ``(x, y, anchor_x, anchor_y)``: each A item with its pseudo overlap
    embeddings (one softmax over the training rows ``keys`` in X, applied to both spaces' embeddings) and the
    pseudo C those retrieve, and the same from C's side; with each row's pivot training row (the seed's nearest
    key), if ``pivots``."""
    ma, mc, bx, by, rows = data.memory_x, data.memory_y, data.overlap_x, data.overlap_y, data.rows[keys]
    chunk = data.config.query_chunk

    def from_a(share: slice) -> tuple[torch.Tensor, ...]:
        ax, ay = data.retrieve(ma[share], bx, values=(bx, by), rows=rows)
        found = (ax, ay, data.retrieve(ay, mc))
        return (*found, keys[nearest(ma[share], bx, rows=rows)]) if pivots else found

    def from_c(share: slice) -> tuple[torch.Tensor, ...]:
        cy, cx = data.retrieve(mc[share], by, values=(by, bx), rows=rows)
        found = (cx, cy, data.retrieve(cx, ma))
        return (*found, keys[nearest(mc[share], by, rows=rows)]) if pivots else found

    what = f"memory-seeded pairs from {len(keys)} overlap rows"
    shown = show_progress_bar and ranks.rank == 0  # no tqdm otherwise: even a disabled one starts a thread
    mine = sum(share.stop - share.start for share in (ranks.split(len(ma)), ranks.split(len(mc))))
    with tqdm(total=mine, desc=what, unit="item") if shown else contextlib.nullcontext() as bar:
        from_as = _on_ranks(ranks, len(ma), lambda share: _in_chunks(from_a, share, chunk, bar))
        from_cs = _on_ranks(ranks, len(mc), lambda share: _in_chunks(from_c, share, chunk, bar))
    (ax, ay, a_to_c), (cx, cy, c_to_a) = from_as[:3], from_cs[:3]
    seeded = (torch.cat([ma, c_to_a]), torch.cat([a_to_c, mc]), torch.cat([ax, cx]), torch.cat([ay, cy]))
    return seeded, torch.cat([from_as[3], from_cs[3]]) if pivots else None


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


def pseudo_pairs(
    data: TrainingData, config: CMCRConfig, ranks: RankSlice, *, show_progress_bar: bool = False
) -> PseudoPairs | None:
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
    seeded, pivots, keys = None, torch.arange(len(data), device=data.rows.device), data.rows[:0]
    filtered = config.pseudo_filter == "mutual_neighbours"
    if config.pseudo_source == "overlap+memory":
        keys = seed_keys(data, config)
        seeded, seeded_pivots = _memory_seeded(data, ranks, keys, pivots=filtered, show_progress_bar=show_progress_bar)
        if seeded_pivots is not None:
            pivots = torch.cat([pivots, seeded_pivots])
    kept = None
    if filtered:
        kept = mutual_neighbours(data, config.neighbour_k, ranks)[pivots].nonzero()[:, 0]
        if len(kept) < 2:
            return None
    aligned = config.pseudo_source == "overlap" and config.pseudo_filter == "none"
    pseudo = PseudoPairs(data, seeded, kept, aligned, len(keys))
    if seeded is not None:
        pseudo._checked(seeded)
    return pseudo
