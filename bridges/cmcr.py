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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
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
    SpacegraphValueError,
    SpaceRef,
    SpaceSpec,
    as_modality,
    heads_quality,
    pseudo_map,
    subsample,
    tensor_problem,
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
    device: str = "cpu"


# The paper's behaviour: ``CMCRConfig(**PAPER_CONFIG)`` trains C-MCR as published.
PAPER_CONFIG: dict[str, Any] = {
    "use_memory": True,
    "pseudo_source": "overlap",
    "pseudo_filter": "none",
    "dense_alignment": False,
    "select_by_estimate": False,
}


def memory_retrieve(
    queries: torch.Tensor,
    memory: torch.Tensor,
    temperature: float,
    *,
    values: torch.Tensor | None = None,
    chunk_size: int = 8192,
    method: Literal["auto", "sdpa", "stream"] = "auto",
) -> torch.Tensor:
    """``normalize(softmax(queries @ memory.T / temperature) @ values)`` without the full logits matrix.

    This is attention with keys = memory and values = ``values`` (the memory itself by default; another
    embedding of the same rows carries the weights across spaces). ``stream`` walks the memory in chunks with a running
    log-sum-exp (peak memory ~ queries x chunk_size, whatever the memory size); ``sdpa`` uses PyTorch's fused
    attention kernels (flash / memory-efficient on GPU). ``auto`` picks sdpa on GPU and stream elsewhere.
    """
    values = memory if values is None else values
    if method == "auto":
        method = "sdpa" if queries.is_cuda else "stream"
    if method == "sdpa":
        out = torch.cat(
            [
                F.scaled_dot_product_attention(q[None], memory[None], values[None], scale=1.0 / temperature)[0]
                for q in queries.split(chunk_size)
            ]
        )
        return F.normalize(out, dim=-1)
    n = queries.shape[0]
    running_max = queries.new_full((n, 1), -math.inf)
    denominator = queries.new_zeros((n, 1))
    accumulator = queries.new_zeros((n, values.shape[1]))
    for chunk, chunk_values in zip(memory.split(chunk_size), values.split(chunk_size)):
        logits = queries @ chunk.T / temperature
        new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        denominator = denominator * rescale + weights.sum(dim=1, keepdim=True)
        accumulator = accumulator * rescale + weights @ chunk_values
        running_max = new_max
    return F.normalize(accumulator / denominator, dim=-1)


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch: row i of ``x`` and ``y`` are positives, all other rows negatives."""
    logits = x @ y.T / temperature
    target = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def attraction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between matching rows (the intra-MCR loss of one space)."""
    return (x - y).pow(2).sum(dim=-1).mean()


def perturb(embeddings: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Semantic completeness: ``normalize(e + eps)``, eps ~ N(0, std^2 I), fresh on every call."""
    if std == 0:
        return embeddings
    noise = torch.randn(embeddings.shape, generator=generator, device=embeddings.device) * std
    return F.normalize(embeddings + noise, dim=-1)


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
    """Endless shuffled batches of indices; a tail too small for BatchNorm is dropped."""
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


@dataclass
class PseudoPairs:
    """Pseudo pairs ``(x, y)`` and the native pair ``(anchor_x, anchor_y)`` each was derived from. ``aligned``:
    row i belongs to native training row i (the paper's pairs), so both are drawn in the same batch."""

    x: torch.Tensor
    y: torch.Tensor
    anchor_x: torch.Tensor
    anchor_y: torch.Tensor
    aligned: bool

    def __len__(self) -> int:
        return self.x.shape[0]


def nearest_overlap(queries: torch.Tensor, overlap: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """Indices ``[len(queries), k]`` of each query's k most similar overlap rows, chunked over the queries."""
    k = min(k, overlap.shape[0])
    return torch.cat([(q @ overlap.T).topk(k, dim=1).indices for q in queries.split(chunk_size)])


def mutual_neighbours(bx: torch.Tensor, by: torch.Tensor, ma: torch.Tensor, mc: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the overlap items among the k nearest of some A memory item in X and of some C memory item in Y."""
    near_x = torch.zeros(bx.shape[0], dtype=torch.bool, device=bx.device)
    near_y = torch.zeros_like(near_x)
    near_x[nearest_overlap(ma, bx, k).flatten()] = True
    near_y[nearest_overlap(mc, by, k).flatten()] = True
    return near_x & near_y


def _memory_seeded(
    bx: torch.Tensor, by: torch.Tensor, ma: torch.Tensor, mc: torch.Tensor, config: CMCRConfig
) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Ex-MCR's modality-centric pairs ``(x, y, anchor_x, anchor_y)``: each A item with its pseudo overlap
    embeddings (one softmax over ``bx``, applied to ``bx`` and ``by``) and the pseudo C those retrieve, and the
    same from C's side; with each row's pivot overlap item (the seed's nearest)."""
    retrieve = {"temperature": config.memory_temperature, "chunk_size": config.memory_chunk}
    ax, ay = memory_retrieve(ma, bx, **retrieve), memory_retrieve(ma, bx, values=by, **retrieve)
    cy, cx = memory_retrieve(mc, by, **retrieve), memory_retrieve(mc, by, values=bx, **retrieve)
    rows = [
        (ma, memory_retrieve(ay, mc, **retrieve), ax, ay),
        (memory_retrieve(cx, ma, **retrieve), mc, cx, cy),
    ]
    pivots = torch.cat([nearest_overlap(ma, bx, 1)[:, 0], nearest_overlap(mc, by, 1)[:, 0]])
    return rows, pivots


def _pseudo_pairs(
    bx: torch.Tensor, by: torch.Tensor, features: BridgeFeatures, config: CMCRConfig
) -> PseudoPairs | None:
    """The pseudo pairs of the native training pairs ``(bx, by)``, as ``config`` asks; None when memory is off or
    the filter keeps fewer than two."""
    if not config.use_memory:
        return None
    if features.memory_x is None or features.memory_y is None:
        raise SpacegraphValueError(
            "C-MCR with use_memory=True needs memory_x and memory_y; pass them or set use_memory=False"
        )
    ma, mc = features.memory_x.to(bx.device), features.memory_y.to(bx.device)
    retrieve = {"temperature": config.memory_temperature, "chunk_size": config.memory_chunk}
    rows = [(memory_retrieve(bx, ma, **retrieve), memory_retrieve(by, mc, **retrieve), bx, by)]
    pivots = torch.arange(bx.shape[0], device=bx.device)
    if config.pseudo_source == "overlap+memory":
        seeded, seeded_pivots = _memory_seeded(bx, by, ma, mc, config)
        rows, pivots = rows + seeded, torch.cat([pivots, seeded_pivots])
    x, y, anchor_x, anchor_y = (torch.cat(parts) for parts in zip(*rows))
    if config.pseudo_filter == "mutual_neighbours":
        keep = mutual_neighbours(bx, by, ma, mc, config.neighbour_k)[pivots]
        if int(keep.sum()) < 2:
            return None
        x, y, anchor_x, anchor_y = x[keep], y[keep], anchor_x[keep], anchor_y[keep]
    if not all(torch.isfinite(part).all() for part in (x, y)):
        raise SpacegraphValueError(
            f"memory retrieval gave NaN or inf pseudo embeddings at memory_temperature={config.memory_temperature:g}; "
            "raise it"
        )
    aligned = config.pseudo_source == "overlap" and config.pseudo_filter == "none"
    return PseudoPairs(x, y, anchor_x, anchor_y, aligned)


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


def _project_batch(
    head_x: torch.nn.Module,
    head_y: torch.nn.Module,
    x_parts: list[torch.Tensor],
    y_parts: list[torch.Tensor],
    config: CMCRConfig,
    noise: torch.Generator,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Every part through its head in one perturbed batch (so BatchNorm sees them all), split back into parts."""
    sizes = [len(part) for part in x_parts]
    zx = head_x(perturb(torch.cat(x_parts), config.noise_std, noise)).split(sizes)
    y_rows = torch.cat(y_parts) if config.kind == "extend" else perturb(torch.cat(y_parts), config.noise_std, noise)
    return zx, head_y(y_rows).split(sizes)


def _step_losses(
    head_x: torch.nn.Module,
    head_y: torch.nn.Module,
    bx: torch.Tensor,
    by: torch.Tensor,
    native_idx: torch.Tensor,
    pseudo: PseudoPairs | None,
    pseudo_batches: Iterator[torch.Tensor] | None,
    config: CMCRConfig,
    noise: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The C-MCR losses of one batch: native rows, then (unless aligned with them) the pseudo rows' anchors,
    then the pseudo rows."""
    x_parts, y_parts = [bx[native_idx]], [by[native_idx]]
    if pseudo is None:
        zx, zy = _project_batch(head_x, head_y, x_parts, y_parts, config, noise)
        return cmcr_loss(zx[0], zy[0], None, None, config)
    pseudo_idx = native_idx if pseudo.aligned else next(pseudo_batches).to(bx.device)
    if not pseudo.aligned:
        x_parts.append(pseudo.anchor_x[pseudo_idx])
        y_parts.append(pseudo.anchor_y[pseudo_idx])
    x_parts.append(pseudo.x[pseudo_idx])
    y_parts.append(pseudo.y[pseudo_idx])
    zx, zy = _project_batch(head_x, head_y, x_parts, y_parts, config, noise)
    return cmcr_loss(zx[0], zy[0], zx[-1], zy[-1], config, anchors=(zx[-2], zy[-2]))


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


def fit_heads(features: BridgeFeatures, config: CMCRConfig, *, show_progress_bar: bool = True) -> FitResult:
    """Train the two heads on cached features; seeded and repeatable on CPU. A diverging run (a non-finite loss or
    head) stops with a ValueError that names the step: it never returns heads that give NaN."""
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    train_idx, val_idx = _split(features.overlap_x.shape[0], config.val_fraction, generator)
    bx, by = features.overlap_x[train_idx].to(device), features.overlap_y[train_idx].to(device)
    pseudo = _pseudo_pairs(bx, by, features, config)
    head_x, head_y = (h.to(device) for h in _heads(bx.shape[1], by.shape[1], config))
    params = [*head_x.parameters(), *head_y.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    noise = torch.Generator(device=device).manual_seed(config.seed + 1)
    native_batches = _batches(len(bx), config.batch_size, generator)
    pseudo_batches = None if pseudo is None or pseudo.aligned else _batches(len(pseudo), config.batch_size, generator)
    tracker = EstimateTracker(features) if config.select_by_estimate else None
    history: list[dict[str, float]] = []
    head_x.train(), head_y.train()
    progress = trange(config.steps, desc="C-MCR", disable=not show_progress_bar)
    for step in progress:
        native_idx = next(native_batches).to(device)
        losses = _step_losses(head_x, head_y, bx, by, native_idx, pseudo, pseudo_batches, config, noise)
        check_loss(losses, step, config)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        schedule.step()
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
    head_x, head_y = head_x.cpu(), head_y.cpu()
    quality = heads_quality(head_x.eval(), head_y.eval(), features, val_idx)
    quality["n_pseudo_pairs"] = len(pseudo) if pseudo is not None else 0
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
