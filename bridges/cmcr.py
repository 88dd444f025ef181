"""C-MCR connect bridges (Wang et al., NeurIPS 2023), trained from unpaired data.

Two spaces X {A, B} and Y {B, C} share modality B. From the overlap corpus encoded by both (bx, by) and
unpaired memories of A (in X) and C (in Y), two projector heads fX, fY are trained so that the joint space
aligns A and C without ever seeing an (A, C) pair:

* semantic consistency: pseudo embeddings ``a = retrieve(bx, MA)``, ``c = retrieve(by, MC)`` (memory softmax);
* semantic completeness: every head input is perturbed ``normalize(e + N(0, sigma^2))`` each step;
* inter-MCR loss: ``InfoNCE(fX(bx), fY(by)) + InfoNCE(fX(a), fY(c))``;
* intra-MCR loss: ``mean ||fX(a) - fX(bx)||^2 + mean ||fY(c) - fY(by)||^2`` (attraction only);
* total: ``L_inter + intra_weight * L_intra``.

Options beyond the paper (``PAPER_CONFIG`` restores the paper's behaviour):

* ``pseudo_source="overlap+memory"`` (Ex-MCR's modality-centric data): every memory item also seeds a pseudo
  pair. An A item retrieves its pseudo overlap embedding in X from ``bx``; the same softmax weights over ``by``
  give its overlap embedding in Y, and that retrieves its pseudo C from the C memory (and the same from C's side);
* ``pseudo_filter="mutual_neighbours"``: a pseudo pair is kept only if its pivot overlap item (the item itself,
  or the nearest overlap item of the seeding memory item) is among the ``neighbour_k`` nearest overlap items of
  some A memory item in X *and* of some C memory item in Y, so off-topic overlap data makes no noise pairs;
* ``dense_alignment``: InfoNCE also between each pseudo embedding and the other space's native anchor;
* ``select_by_estimate``: keep the heads of the checkpoint with the best label-free quality estimate.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import trange

import spacegraph
from spacegraph.plugin import (
    Bridge,
    BridgeCard,
    BridgeFeatures,
    HeadArch,
    HeadSpec,
    Modality,
    ProjectionHead,
    PseudoLabels,
    Shard,
    SpacegraphValueError,
    SpaceRef,
    SpaceSpec,
    as_modality,
    heads_quality,
    nearest,
    pseudo_map,
    rank_device,
    row_blocks,
    subsample,
    tensor_problem,
    top_k,
    with_global_batch_norm,
)


class CMCRConfig(BaseModel):
    """Every hyperparameter of C-MCR training. Unknown keys, NaN and infinity are errors, not silent defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["connect", "extend"] = Field(
        "connect",
        description="connect: train both heads into a new joint space; extend: train only the first space's head "
        "into the second space, which stays frozen (Ex-MCR).",
    )
    head_arch: HeadArch = Field("mlp2", description="mlp2: released audio-visual head; mlp1: released 3D head")
    hidden_dim: int = Field(1024, gt=0, description="Hidden width of mlp2 heads.")
    out_dim: int = Field(512, gt=0, description="Dimension of the joint space (extend: the target's dim).")
    memory_temperature: float = Field(0.01, gt=0, description="tau_mem of the memory softmax.")
    noise_std: float = Field(0.05, ge=0, description="sigma of the Gaussian noise added to head inputs.")
    temperature: float = Field(0.05, gt=0, description="tau of the InfoNCE losses.")
    intra_weight: float = Field(0.1, ge=0, description="lambda weighting the intra-MCR loss.")
    use_memory: bool = Field(True, description="Build pseudo pairs from the memories (off: native pairs only).")
    pseudo_source: Literal["overlap", "overlap+memory"] = Field(
        "overlap+memory",
        description="overlap (paper): one pseudo pair per overlap item; overlap+memory (Ex-MCR, the default): every "
        "memory item seeds one more. Chosen by the best mean label-free estimate over the digits, hard and "
        "modelnet10 data (see the README's method comparison).",
    )
    pseudo_filter: Literal["none", "mutual_neighbours"] = Field(
        "none",
        description="none (paper): keep every pseudo pair; mutual_neighbours: keep those whose pivot overlap item is "
        "among the neighbour_k nearest overlap items of some memory item, in both spaces.",
    )
    neighbour_k: int = Field(10, gt=0, description="Overlap neighbours per memory item for mutual_neighbours.")
    dense_alignment: bool = Field(
        False, description="Also InfoNCE between pseudo embeddings and the other side's native anchors (paper: off)."
    )
    select_by_estimate: bool = Field(
        False, description="Keep the checkpoint with the best label-free estimate (paper: off, the last one)."
    )
    estimate_every: int = Field(100, gt=0, description="Steps between checkpoints when select_by_estimate.")
    steps: int = Field(600, gt=0)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap items held out to measure quality.")
    seed: int = 0
    memory_chunk: int = Field(8192, gt=0, description="Memory rows per retrieval chunk (bounds peak memory).")
    query_chunk: int = Field(4096, gt=0, description="Query rows per retrieval chunk (bounds peak memory).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The heads' matmuls in the training step: auto is bf16 autocast on CUDA and fp32 elsewhere; bf16 "
        "on a CPU with AMX (Sapphire Rapids and later) is also several times faster than fp32.",
    )
    compile: bool = Field(False, description="torch.compile the heads for training (pays off on long runs).")
    device: str = "cpu"


# The paper's behaviour: ``CMCRConfig(**PAPER_CONFIG)`` trains C-MCR as published.
PAPER_CONFIG: dict[str, Any] = {
    "use_memory": True,
    "pseudo_source": "overlap",
    "pseudo_filter": "none",
    "dense_alignment": False,
    "select_by_estimate": False,
}


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


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch: row i of ``x`` and ``y`` are positives, all other rows negatives.

    The cross-entropy with targets on the diagonal, both ways, written as log-sum-exps over rows and columns of one
    float32 logits matrix: no log-softmax matrix is stored, and the transposed pass reads the same matrix."""
    logits = (x @ y.T).float() / temperature
    positives = logits.diagonal().mean()
    return (logits.logsumexp(dim=1).mean() + logits.logsumexp(dim=0).mean()) / 2 - positives


def attraction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between matching rows (the intra-MCR loss of one space)."""
    return (x - y).pow(2).sum(dim=-1).mean()


def perturb(
    embeddings: torch.Tensor,
    std: float,
    generator: torch.Generator,
    *,
    rows: torch.Tensor | None = None,
    total: int | None = None,
) -> torch.Tensor:
    """Semantic completeness: ``normalize(e + eps)``, eps ~ N(0, std^2 I), fresh on every call. Under data
    parallelism the noise of the whole global batch (``total`` rows) is drawn on every rank and each takes its
    ``rows``, so the result is the same as in one process."""
    if std == 0:
        return embeddings
    shape = (total or embeddings.shape[0], embeddings.shape[1])
    noise = torch.randn(shape, generator=generator, device=embeddings.device) * std
    return F.normalize(embeddings + (noise if rows is None else noise[rows]), dim=-1)


def cmcr_loss(
    zx_native: torch.Tensor,
    zy_native: torch.Tensor,
    zx_pseudo: torch.Tensor | None,
    zy_pseudo: torch.Tensor | None,
    config: CMCRConfig,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The C-MCR objective on projected (normalised) embeddings; returns ``total`` and its parts. ``anchors`` are
    the native pair each pseudo pair was derived from (default: the native rows themselves). For an extend bridge
    the y side is the frozen target, so only the x side is pulled together."""
    inter = info_nce(zx_native, zy_native, config.temperature)
    intra = zx_native.new_zeros(())
    if zx_pseudo is not None and zy_pseudo is not None:
        anchor_x, anchor_y = anchors or (zx_native, zy_native)
        inter = inter + info_nce(zx_pseudo, zy_pseudo, config.temperature)
        if config.dense_alignment:
            inter = (
                inter
                + info_nce(zx_pseudo, anchor_y, config.temperature)
                + info_nce(anchor_x, zy_pseudo, config.temperature)
            )
        intra = attraction(zx_pseudo, anchor_x)
        if config.kind == "connect":
            intra = intra + attraction(zy_pseudo, anchor_y)
    return {"total": inter + config.intra_weight * intra, "inter": inter, "intra": intra}


class FrozenTarget(torch.nn.Module):
    """The extend target's side: its own embeddings, unit-normalised, with nothing to train."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


@dataclass
class FitResult:
    head_x: ProjectionHead
    head_y: ProjectionHead | FrozenTarget
    quality: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _split(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled train and held-out overlap rows. Training needs at least 2 rows (BatchNorm normalises over a batch),
    and a held-out set (``val_fraction > 0``) at least 2 more (matching needs a wrong answer to pass over)."""
    n_val = round(n * val_fraction)
    if n - n_val < 2 or (val_fraction > 0 and n_val < 2):
        raise SpacegraphValueError(
            f"{n} overlap row(s) are too few to train with val_fraction={val_fraction}: training needs at least 2 "
            f"rows and, when val_fraction > 0, at least 2 more held out (round(rows * val_fraction) >= 2); add "
            "overlap data" + (" or set val_fraction=0" if val_fraction > 0 and n >= 2 else "")
        )
    order = torch.randperm(n, generator=generator)
    return order[n_val:], order[:n_val]


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of ``batch_size`` indices; a tail too small is dropped."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


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


def _on_ranks(shard: Shard, rows: int, compute: Any) -> tuple[torch.Tensor, ...]:
    """``compute(part)`` on this rank's share of ``rows`` work items, gathered from every rank in order: the
    memory-sized retrievals are sharded over the ranks."""
    return tuple(shard.gather_uneven(result) for result in compute(shard.split(rows)))


def _memory_seeded(data: TrainingData, shard: Shard) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
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

    ax, ay, a_to_c, pivots_a = _on_ranks(shard, len(ma), from_a)
    cx, cy, c_to_a, pivots_c = _on_ranks(shard, len(mc), from_c)
    seeded = (torch.cat([ma, c_to_a]), torch.cat([a_to_c, mc]), torch.cat([ax, cx]), torch.cat([ay, cy]))
    return seeded, torch.cat([pivots_a, pivots_c])


def mutual_neighbours(data: TrainingData, k: int, shard: Shard) -> torch.Tensor:
    """Mask of the training overlap items among the k nearest of some A memory item in X and of some C memory item
    in Y."""

    def near(memory: torch.Tensor, overlap: torch.Tensor) -> torch.Tensor:
        (neighbours,) = _on_ranks(
            shard, len(memory), lambda share: (top_k(memory[share], overlap, k, rows=data.rows)[1],)
        )
        mask = torch.zeros(len(data), dtype=torch.bool, device=data.rows.device)
        mask[neighbours.flatten()] = True
        return mask

    return near(data.memory_x, data.overlap_x) & near(data.memory_y, data.overlap_y)


def _pseudo_pairs(data: TrainingData, config: CMCRConfig, shard: Shard) -> PseudoPairs | None:
    """The pseudo pairs of the native training pairs, as ``config`` asks; None when memory is off or the filter
    keeps fewer than two."""
    if not config.use_memory:
        return None
    if data.memory_x is None or data.memory_y is None:
        raise SpacegraphValueError(
            "C-MCR with use_memory=True needs memory_x and memory_y; pass them or set use_memory=False"
        )
    seeded, pivots = None, torch.arange(len(data), device=data.rows.device)
    if config.pseudo_source == "overlap+memory":
        seeded, seeded_pivots = _memory_seeded(data, shard)
        pivots = torch.cat([pivots, seeded_pivots])
    kept = None
    if config.pseudo_filter == "mutual_neighbours":
        kept = mutual_neighbours(data, config.neighbour_k, shard)[pivots].nonzero()[:, 0]
        if len(kept) < 2:
            return None
    aligned = config.pseudo_source == "overlap" and config.pseudo_filter == "none"
    pseudo = PseudoPairs(data, seeded, kept, aligned)
    if seeded is not None:
        pseudo._checked(seeded)
    return pseudo


def _heads(x_dim: int, y_dim: int, config: CMCRConfig) -> tuple[ProjectionHead, ProjectionHead | FrozenTarget]:
    out_dim = config.out_dim if config.kind == "connect" else y_dim

    def spec(in_dim: int) -> HeadSpec:
        return HeadSpec(arch=config.head_arch, in_dim=in_dim, hidden_dim=config.hidden_dim, out_dim=out_dim)

    return ProjectionHead(spec(x_dim)), ProjectionHead(spec(y_dim)) if config.kind == "connect" else FrozenTarget()


class EstimateTracker:
    """The label-free estimate of ``estimate_quality`` at checkpoints (pseudo labels built once), keeping the
    state of the best-scoring heads."""

    def __init__(self, features: BridgeFeatures, max_items: int = 2000) -> None:
        generator = torch.Generator().manual_seed(0)  # the same items estimate_quality scores
        self.mx = subsample(features.memory_x, max_items, generator)
        self.my = subsample(features.memory_y, max_items, generator)
        self.labels = PseudoLabels(features.overlap_x, features.overlap_y, self.mx, self.my)
        self.best_score, self.best_state = -math.inf, None

    def check(self, head_x: torch.nn.Module, head_y: torch.nn.Module) -> float:
        head_x.eval(), head_y.eval()
        device = next(head_x.parameters()).device
        with torch.inference_mode():
            score = pseudo_map(head_x(self.mx.to(device)).cpu(), head_y(self.my.to(device)).cpu(), self.labels)
        head_x.train(), head_y.train()
        if score > self.best_score:
            self.best_score, self.best_state = score, copy.deepcopy((head_x.state_dict(), head_y.state_dict()))
        return score

    def restore(self, head_x: torch.nn.Module, head_y: torch.nn.Module) -> None:
        head_x.load_state_dict(self.best_state[0])
        head_y.load_state_dict(self.best_state[1])


class HeadPair(torch.nn.Module):
    """Both heads as one module, the unit DistributedDataParallel wraps."""

    def __init__(self, head_x: torch.nn.Module, head_y: torch.nn.Module) -> None:
        super().__init__()
        self.head_x, self.head_y = head_x, head_y

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head_x(x), self.head_y(y)


@dataclass
class StepContext:
    """What every training step shares: the heads (wrapped for data parallelism), the noise, the rank's place."""

    model: torch.nn.Module
    config: CMCRConfig
    noise: torch.Generator
    shard: Shard

    def project(
        self, x_parts: list[torch.Tensor], y_parts: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every part through its head in one perturbed batch (so BatchNorm sees them all), split back into parts
        and gathered over the ranks: each part comes back as its global batch."""
        config, shard = self.config, self.shard
        sizes = [len(part) for part in x_parts]
        noise_rows = {"total": sum(sizes) * shard.world}
        if shard.world > 1:
            noise_rows["rows"] = shard.positions([size * shard.world for size in sizes]).to(x_parts[0].device)
        x_rows = perturb(torch.cat(x_parts), config.noise_std, self.noise, **noise_rows)
        y_rows = torch.cat(y_parts)
        if config.kind == "connect":
            y_rows = perturb(y_rows, config.noise_std, self.noise, **noise_rows)
        zx, zy = self.model(x_rows, y_rows)
        return [shard.gather(z) for z in zx.split(sizes)], [shard.gather(z) for z in zy.split(sizes)]

    def losses(
        self, data: TrainingData, batch: torch.Tensor, pseudo_batch: torch.Tensor | None, pseudo: PseudoPairs | None
    ) -> dict[str, torch.Tensor]:
        """The C-MCR losses of one global batch of native rows (and of pseudo rows, unless aligned with them): each
        rank projects its part, the loss sees the global batch."""
        with _autocast(self.config, batch.device):
            return self._losses(data, batch, pseudo_batch, pseudo)

    def _losses(
        self, data: TrainingData, batch: torch.Tensor, pseudo_batch: torch.Tensor | None, pseudo: PseudoPairs | None
    ) -> dict[str, torch.Tensor]:
        local = self.shard.part(batch)
        bx, by = data.native(local)
        x_parts, y_parts = [bx], [by]
        if pseudo is None:
            zx, zy = self.project(x_parts, y_parts)
            return cmcr_loss(zx[0], zy[0], None, None, self.config)
        if pseudo.aligned:
            px, py, _, _ = pseudo.take(local)
        else:
            px, py, anchor_x, anchor_y = pseudo.take(self.shard.part(pseudo_batch))
            x_parts.append(anchor_x)
            y_parts.append(anchor_y)
        zx, zy = self.project([*x_parts, px], [*y_parts, py])
        return cmcr_loss(zx[0], zy[0], zx[-1], zy[-1], self.config, anchors=(zx[-2], zy[-2]))


def _autocast(config: CMCRConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast of the step where ``config.precision`` asks (auto: on CUDA): matmuls in bf16, softmax and
    reductions in float32, as mixed-precision CLIP training does."""
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _remedy(config: CMCRConfig) -> str:
    return (
        f"lower lr (now {config.lr:g}) or weight_decay (now {config.weight_decay:g}), or raise temperature "
        f"(now {config.temperature:g}); noise_std is {config.noise_std:g}"
    )


def check_loss(losses: dict[str, torch.Tensor], step: int, config: CMCRConfig) -> None:
    """Stop at the first non-finite loss: its gradients would turn the heads into NaN."""
    if torch.isfinite(losses["total"]):
        return
    parts = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in losses.items())
    raise SpacegraphValueError(
        f"C-MCR training diverged at step {step} of {config.steps}: the loss is not finite ({parts}); "
        f"no bridge was made; {_remedy(config)}"
    )


def check_heads(head_x: torch.nn.Module, head_y: torch.nn.Module, step: int, config: CMCRConfig) -> None:
    """Refuse heads with a NaN/inf weight or BatchNorm statistic (after ``step``), before anything reads them."""
    heads = {"head_x": head_x, "head_y": head_y}
    problems = [
        problem
        for side, head in heads.items()
        for key, value in head.state_dict().items()
        if (problem := tensor_problem(f"{side}.{key}", value))
    ]
    if problems:
        raise SpacegraphValueError(
            f"C-MCR training diverged: after step {step} of {config.steps}, {'; '.join(problems[:5])}; no bridge was "
            f"made; {_remedy(config)}"
        )


def _training_model(head_x: torch.nn.Module, head_y: torch.nn.Module, config: CMCRConfig, shard: Shard):
    """The heads as trained: under torch.distributed with BatchNorm over the global batch, wrapped in
    DistributedDataParallel (one gradient all-reduce per step); compiled if ``config.compile``."""
    model: torch.nn.Module = HeadPair(head_x, head_y)
    if shard.world > 1:
        with_global_batch_norm(model)
        device = next(model.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    return torch.compile(model) if config.compile else model


def _quality_or_warning(head_x, head_y, features: BridgeFeatures, val_idx: torch.Tensor) -> dict[str, float]:
    """The card's quality; if measuring it fails (e.g. out of memory), a warning, and the trained heads are kept
    with their quality unmeasured rather than lost."""
    try:
        return heads_quality(head_x, head_y, features, val_idx)
    except (RuntimeError, MemoryError) as error:
        warnings.warn(
            f"C-MCR training finished but measuring the bridge's quality failed ({error}); the bridge is kept with "
            "its quality unmeasured: measure it with a probe (graph.evaluate) or estimate_quality",
            stacklevel=3,
        )
        return {}


@dataclass
class TrainingRun:
    """Everything one training run holds: data, pseudo pairs, heads, optimiser and the seeded batch order.

    Under ``torchrun`` (an initialised default process group) each rank trains on its part of every global batch
    with the same result as one process: the global batch is ``batch_size`` rows, split over the ranks."""

    data: TrainingData
    pseudo: PseudoPairs | None
    head_x: ProjectionHead
    head_y: ProjectionHead | FrozenTarget
    step: StepContext
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]]
    val_idx: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def start(cls, features: BridgeFeatures, config: CMCRConfig) -> TrainingRun:
        shard = Shard.current()
        device = rank_device() if config.device == "cuda" else torch.device(config.device)
        generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        train_idx, val_idx = _split(features.overlap_x.shape[0], config.val_fraction, generator)
        overlap = (features.overlap_x.to(device), features.overlap_y.to(device), train_idx.to(device))
        memories = (None if m is None else m.to(device) for m in (features.memory_x, features.memory_y))
        data = TrainingData(*overlap, *memories, config)
        pseudo = _pseudo_pairs(data, config, shard)
        head_x, head_y = (h.to(device) for h in _heads(data.overlap_x.shape[1], data.overlap_y.shape[1], config))
        noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        step = StepContext(_training_model(head_x, head_y, config, shard), config, noise, shard)
        batches = _batch_pairs(len(data), pseudo, config, shard, generator, device)
        optimizer = torch.optim.AdamW(step.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
        return cls(data, pseudo, head_x, head_y, step, batches, val_idx, optimizer, schedule)

    def losses(self) -> dict[str, torch.Tensor]:
        """The losses of the next global batch (on this rank: of its part, against the global batch)."""
        return self.step.losses(self.data, *next(self.batches), self.pseudo)

    def train_step(self, index: int) -> dict[str, torch.Tensor]:
        """One optimisation step on the next global batch; stops on a non-finite loss."""
        losses = self.losses()
        check_loss(losses, index, self.step.config)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        self.schedule.step()
        return losses


def _batch_pairs(
    n_native: int,
    pseudo: PseudoPairs | None,
    config: CMCRConfig,
    shard: Shard,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Endless ``(native batch, pseudo batch)``, the same on every rank; the pseudo batch is None where pseudo
    rows ride with the native ones (aligned) or there are none."""
    native = _batches(n_native, shard.global_batch(config.batch_size, n_native), generator)
    independent = pseudo is not None and not pseudo.aligned
    pseudo_rows = (
        _batches(len(pseudo), shard.global_batch(config.batch_size, len(pseudo)), generator) if independent else None
    )
    while True:
        batch = next(native).to(device)
        yield batch, None if pseudo_rows is None else next(pseudo_rows).to(device)


def fit_heads(features: BridgeFeatures, config: CMCRConfig, *, show_progress_bar: bool = True) -> FitResult:
    """Train the two heads on cached features; seeded and repeatable on CPU, and the same under ``torchrun`` (see
    :class:`TrainingRun`). A diverging run (a non-finite loss or head) stops with a ValueError that names the step:
    it never returns heads that give NaN."""
    run = TrainingRun.start(features, config)
    head_x, head_y = run.head_x, run.head_y
    tracker = EstimateTracker(features) if config.select_by_estimate else None
    history: list[dict[str, float]] = []
    run.step.model.train()
    progress = trange(config.steps, desc="C-MCR", disable=not show_progress_bar or run.step.shard.rank > 0)
    for step in progress:
        losses = run.train_step(step)
        last = step == config.steps - 1
        if step % 50 == 0 or last:
            history.append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
            progress.set_postfix(loss=f"{history[-1]['total']:.3f}")
        if tracker is not None and ((step + 1) % config.estimate_every == 0 or last):
            check_heads(head_x, head_y, step, config)
            history.append({"step": step, "estimate": tracker.check(head_x, head_y)})
    check_heads(head_x, head_y, config.steps - 1, config)
    if tracker is not None:
        tracker.restore(head_x, head_y)
    head_x, head_y = head_x.cpu().eval(), head_y.cpu().eval()
    quality = _quality_or_warning(head_x, head_y, features, run.val_idx)
    quality["n_pseudo_pairs"] = len(run.pseudo) if run.pseudo is not None else 0
    return FitResult(head_x, head_y, quality, history)


class CMCRMethod:
    """The ``cmcr`` bridge method: trains a connect (or, with ``kind="extend"``, an extend) bridge between two
    spaces that share a modality. For extend, ``x`` is the source and ``y`` the frozen target."""

    name = "cmcr"
    config_class = CMCRConfig

    def train(
        self,
        x: SpaceSpec,
        y: SpaceSpec,
        overlap: str | Modality,
        features: BridgeFeatures,
        config: CMCRConfig | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        show_progress_bar: bool = True,
    ) -> Bridge:
        config = config if isinstance(config, CMCRConfig) else CMCRConfig.model_validate(config or {})
        overlap = as_modality(overlap)
        for spec in (x, y):
            if overlap not in spec.modalities:
                have = ", ".join(m.value for m in spec.modalities)
                raise SpacegraphValueError(
                    f"space {spec.name!r} has no {overlap.value!r} to bridge through; it has: {have}"
                )
        if x.name == y.name:
            raise SpacegraphValueError(f"a bridge joins two different spaces; both sides are {x.name!r}")
        features.check(x, y)
        start = time.perf_counter()
        fit = fit_heads(features, config, show_progress_bar=show_progress_bar)
        quality = {**fit.quality, "train_seconds": round(time.perf_counter() - start, 3)}
        heads = {x.name: fit.head_x}
        if isinstance(fit.head_y, ProjectionHead):
            heads[y.name] = fit.head_y
        card = BridgeCard(
            library_version=spacegraph.__version__,
            name=name or (f"{x.name}+{y.name}" if config.kind == "connect" else f"{x.name}->{y.name}"),
            method=self.name,
            kind=config.kind,
            spaces=(SpaceRef.of(x), SpaceRef.of(y)),
            overlap=overlap,
            heads={space: head.spec for space, head in heads.items()},
            training={**config.model_dump(), "history": fit.history},  # the loss curve, every 50 steps
            data=features.counts(),
            quality=quality,
        )
        bridge = Bridge(card)
        for space, head in heads.items():
            bridge.head(space).load_state_dict(head.state_dict())
        return bridge.eval()
