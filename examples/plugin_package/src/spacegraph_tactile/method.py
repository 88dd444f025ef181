"""The ``overlap-infonce`` bridge method: two projection heads trained with plain symmetric InfoNCE on the overlap
pairs only. Unlike C-MCR it builds no pseudo pairs from the memories; they only score the result (the label-free
estimate the planner ranks routes by)."""

from __future__ import annotations

import time
from typing import Any

import spacegraph
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from spacegraph.plugin import (
    Bridge,
    BridgeCard,
    BridgeFeatures,
    HeadArch,
    HeadSpec,
    Modality,
    ProjectionHead,
    SpacegraphValueError,
    SpaceRef,
    SpaceSpec,
    as_modality,
    heads_quality,
)
from tqdm.auto import trange


class OverlapInfoNCEConfig(BaseModel):
    """Hyperparameters; unknown keys, NaN and infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    head_arch: HeadArch = "mlp2"
    hidden_dim: int = Field(256, gt=0)
    out_dim: int = Field(64, gt=0)
    temperature: float = Field(0.05, gt=0)
    steps: int = Field(300, gt=0)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap pairs held out to measure held_out_R@1.")
    seed: int = 0


def info_nce(zx: torch.Tensor, zy: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = zx @ zy.T / temperature
    target = torch.arange(len(zx))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def fit(
    features: BridgeFeatures, config: OverlapInfoNCEConfig, show_progress_bar: bool
) -> tuple[ProjectionHead, ProjectionHead, dict[str, float]]:
    """Train both heads on the training overlap pairs; measure them on the held-out ones (and the memories)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    order = torch.randperm(len(features.overlap_x), generator=generator)
    n_val = int(len(order) * config.val_fraction)
    if len(order) - n_val < 2:  # BatchNorm trains on at least 2 rows; then nothing is held out
        n_val = 0
    val, train = order[:n_val], order[n_val:]
    heads = [
        ProjectionHead(
            HeadSpec(arch=config.head_arch, in_dim=f.shape[1], hidden_dim=config.hidden_dim, out_dim=config.out_dim)
        )
        for f in (features.overlap_x, features.overlap_y)
    ]
    optimizer = torch.optim.AdamW(
        [p for h in heads for p in h.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    for step in trange(config.steps, desc="overlap-infonce", disable=not show_progress_bar):
        batch = train[torch.randperm(len(train), generator=generator)[: config.batch_size]]
        loss = info_nce(heads[0](features.overlap_x[batch]), heads[1](features.overlap_y[batch]), config.temperature)
        if not torch.isfinite(loss):
            raise SpacegraphValueError(f"overlap-infonce diverged at step {step}: loss {loss.item()}; lower lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head_x, head_y = (h.eval() for h in heads)
    return head_x, head_y, heads_quality(head_x, head_y, features, val)


class OverlapInfoNCE:
    """A connect bridge from overlap pairs alone; matches :class:`spacegraph.plugin.BridgeMethod`."""

    name = "overlap-infonce"
    config_class = OverlapInfoNCEConfig

    def train(
        self,
        x: SpaceSpec,
        y: SpaceSpec,
        overlap: str | Modality,
        features: BridgeFeatures,
        config: OverlapInfoNCEConfig | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        show_progress_bar: bool = True,
    ) -> Bridge:
        config = (
            config if isinstance(config, OverlapInfoNCEConfig) else OverlapInfoNCEConfig.model_validate(config or {})
        )
        overlap = as_modality(overlap)
        for spec in (x, y):
            if overlap not in spec.modalities:
                have = ", ".join(m.value for m in spec.modalities)
                raise SpacegraphValueError(
                    f"space {spec.name!r} has no {overlap.value!r} to bridge through; it has: {have}"
                )
        features.check(x, y)
        start = time.perf_counter()
        head_x, head_y, quality = fit(features, config, show_progress_bar)
        card = BridgeCard(
            library_version=spacegraph.__version__,
            name=name or f"{x.name}+{y.name}",
            method=self.name,
            spaces=(SpaceRef.of(x), SpaceRef.of(y)),
            overlap=overlap,
            heads={x.name: head_x.spec, y.name: head_y.spec},
            training=config.model_dump(),
            data=features.counts(),
            quality={**quality, "train_seconds": round(time.perf_counter() - start, 3)},
        )
        bridge = Bridge(card)
        bridge.head(x.name).load_state_dict(head_x.state_dict())
        bridge.head(y.name).load_state_dict(head_y.state_dict())
        return bridge.eval()
