"""C-MCR connect bridges (Wang et al., NeurIPS 2023), trained from unpaired data.

Two spaces X {A, B} and Y {B, C} share modality B. From the overlap corpus encoded by both (bx, by) and
unpaired memories of A (in X) and C (in Y), two projector heads fX, fY are trained so that the joint space
aligns A and C without ever seeing an (A, C) pair:

* semantic consistency: pseudo embeddings ``a = retrieve(bx, MA)``, ``c = retrieve(by, MC)`` (memory softmax);
* semantic completeness: every head input is perturbed ``normalize(e + N(0, sigma^2))`` each step;
* inter-MCR loss: ``InfoNCE(fX(bx), fY(by)) + InfoNCE(fX(a), fY(c))``;
* intra-MCR loss: ``mean ||fX(a) - fX(bx)||^2 + mean ||fY(c) - fY(by)||^2`` (attraction only);
* total: ``L_inter + intra_weight * L_intra``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import trange

import spacegraph
from spacegraph._bridge import Bridge, BridgeCard, BridgeFeatures, HeadArch, HeadSpec, ProjectionHead, SpaceRef
from spacegraph._eval import pair_recall_at_1
from spacegraph._modality import Modality, as_modality
from spacegraph._space import SpaceSpec


class CMCRConfig(BaseModel):
    """Every hyperparameter of C-MCR training. Unknown keys are an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")

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
    steps: int = Field(600, gt=0)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap items held out to measure quality.")
    seed: int = 0
    memory_chunk: int = Field(8192, gt=0, description="Memory rows per retrieval chunk (bounds peak memory).")
    device: str = "cpu"


def memory_retrieve(
    queries: torch.Tensor,
    memory: torch.Tensor,
    temperature: float,
    *,
    chunk_size: int = 8192,
    method: Literal["auto", "sdpa", "stream"] = "auto",
) -> torch.Tensor:
    """``normalize(softmax(queries @ memory.T / temperature) @ memory)`` without the full logits matrix.

    This is attention with keys = values = memory. ``stream`` walks the memory in chunks with a running
    log-sum-exp (peak memory ~ queries x chunk_size, whatever the memory size); ``sdpa`` uses PyTorch's fused
    attention kernels (flash / memory-efficient on GPU). ``auto`` picks sdpa on GPU and stream elsewhere.
    """
    if method == "auto":
        method = "sdpa" if queries.is_cuda else "stream"
    if method == "sdpa":
        out = torch.cat(
            [
                F.scaled_dot_product_attention(q[None], memory[None], memory[None], scale=1.0 / temperature)[0]
                for q in queries.split(chunk_size)
            ]
        )
        return F.normalize(out, dim=-1)
    n, dim = queries.shape
    running_max = queries.new_full((n, 1), -math.inf)
    denominator = queries.new_zeros((n, 1))
    accumulator = queries.new_zeros((n, dim))
    for chunk in memory.split(chunk_size):
        logits = queries @ chunk.T / temperature
        new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        denominator = denominator * rescale + weights.sum(dim=1, keepdim=True)
        accumulator = accumulator * rescale + weights @ chunk
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
) -> dict[str, torch.Tensor]:
    """The C-MCR objective on projected (normalised) embeddings; returns ``total`` and its parts. For an extend
    bridge the y side is the frozen target, so only the x side is pulled together."""
    inter = info_nce(zx_native, zy_native, config.temperature)
    intra = zx_native.new_zeros(())
    if zx_pseudo is not None and zy_pseudo is not None:
        inter = inter + info_nce(zx_pseudo, zy_pseudo, config.temperature)
        intra = attraction(zx_pseudo, zx_native)
        if config.kind == "connect":
            intra = intra + attraction(zy_pseudo, zy_native)
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
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and (n_val < 2 or n - n_val < 2):
        raise ValueError(
            f"{n} overlap items cannot be split with val_fraction={val_fraction}: need at least 2 items on each "
            "side; add overlap data or set val_fraction=0"
        )
    return order[n_val:], order[:n_val]


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of indices; a tail too small for BatchNorm is dropped."""
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _pseudo_pairs(features: BridgeFeatures, config: CMCRConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not config.use_memory:
        return None
    if features.memory_x is None or features.memory_y is None:
        raise ValueError("C-MCR with use_memory=True needs memory_x and memory_y; pass them or set use_memory=False")
    device = torch.device(config.device)
    retrieve = dict(temperature=config.memory_temperature, chunk_size=config.memory_chunk)
    a = memory_retrieve(features.overlap_x.to(device), features.memory_x.to(device), **retrieve)
    c = memory_retrieve(features.overlap_y.to(device), features.memory_y.to(device), **retrieve)
    return a, c


def _heads(x_dim: int, y_dim: int, config: CMCRConfig) -> tuple[ProjectionHead, ProjectionHead | FrozenTarget]:
    out_dim = config.out_dim if config.kind == "connect" else y_dim

    def spec(in_dim: int) -> HeadSpec:
        return HeadSpec(arch=config.head_arch, in_dim=in_dim, hidden_dim=config.hidden_dim, out_dim=out_dim)

    return ProjectionHead(spec(x_dim)), ProjectionHead(spec(y_dim)) if config.kind == "connect" else FrozenTarget()


def validation_quality(
    head_x: ProjectionHead, head_y: ProjectionHead | FrozenTarget, bx: torch.Tensor, by: torch.Tensor
) -> dict[str, float]:
    """Held-out overlap pairs: how often each item finds its own counterpart first, both directions."""
    with torch.inference_mode():
        zx, zy = head_x.eval()(bx), head_y.eval()(by)
    x_to_y, y_to_x = pair_recall_at_1(zx, zy), pair_recall_at_1(zy, zx)
    return {"val_x_to_y_R@1": x_to_y, "val_y_to_x_R@1": y_to_x, "score": (x_to_y + y_to_x) / 2, "n_val": len(bx)}


def fit_heads(features: BridgeFeatures, config: CMCRConfig, *, show_progress_bar: bool = True) -> FitResult:
    """Train the two heads on cached features; seeded and repeatable on CPU."""
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    train_idx, val_idx = _split(features.overlap_x.shape[0], config.val_fraction, generator)
    bx, by = features.overlap_x.to(device), features.overlap_y.to(device)
    pseudo = _pseudo_pairs(features, config)
    head_x, head_y = (h.to(device) for h in _heads(bx.shape[1], by.shape[1], config))
    params = [*head_x.parameters(), *head_y.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    noise = torch.Generator(device=device).manual_seed(config.seed + 1)
    batches = _batches(len(train_idx), config.batch_size, generator)
    history: list[dict[str, float]] = []
    head_x.train(), head_y.train()
    progress = trange(config.steps, desc="C-MCR", disable=not show_progress_bar)
    for step in progress:
        idx = train_idx[next(batches)].to(device)
        x_in, y_in = [bx[idx]], [by[idx]]
        if pseudo is not None:
            x_in.append(pseudo[0][idx])
            y_in.append(pseudo[1][idx])
        # Native and pseudo rows go through each head together, so BatchNorm sees both.
        zx = head_x(perturb(torch.cat(x_in), config.noise_std, noise)).split(len(idx))
        y_rows = torch.cat(y_in) if config.kind == "extend" else perturb(torch.cat(y_in), config.noise_std, noise)
        zy = head_y(y_rows).split(len(idx))
        zx_pseudo, zy_pseudo = (zx[1], zy[1]) if pseudo is not None else (None, None)
        losses = cmcr_loss(zx[0], zy[0], zx_pseudo, zy_pseudo, config)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps - 1:
            history.append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
            progress.set_postfix(loss=f"{history[-1]['total']:.3f}")
    head_x.eval(), head_y.eval()
    quality = validation_quality(head_x, head_y, bx[val_idx], by[val_idx]) if len(val_idx) else {}
    return FitResult(head_x.cpu(), head_y.cpu(), quality, history)


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
                raise ValueError(f"space {spec.name!r} has no {overlap.value!r} to bridge through; it has: {have}")
        if x.name == y.name:
            raise ValueError(f"a bridge joins two different spaces; both sides are {x.name!r}")
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
            training=config.model_dump(),
            data=features.counts(),
            quality=quality,
        )
        bridge = Bridge(card)
        for space, head in heads.items():
            bridge.head(space).load_state_dict(head.state_dict())
        return bridge.eval()
