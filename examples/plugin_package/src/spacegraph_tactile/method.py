"""The ``overlap-infonce`` bridge method: two projection heads trained with plain symmetric InfoNCE on the overlap
pairs only. Unlike C-MCR it builds no pseudo pairs from the memories; they only score the result (the label-free
estimate the planner ranks routes by).

It is written on :class:`spacegraph.plugin.BridgeMethodBase`: the method implements ``fit`` (its training) and the
base does the rest (config, checks, quality, card)."""

from __future__ import annotations

import spacegraph as sg
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from spacegraph.plugin import BridgeMethodBase, HeadArch, ProjectionHead, TrainedHeads, progress_range


class OverlapInfoNCEConfig(BaseModel):
    """Hyperparameters; unknown keys, NaN and infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    head_arch: HeadArch = "mlp2"
    hidden_dim: int = Field(256, gt=0)
    out_dim: int = Field(64, gt=0)
    temperature: float = Field(0.05, gt=0, description="tau of the InfoNCE loss.")
    steps: int = Field(300, gt=0, description="Optimiser steps.")
    batch_size: int = Field(128, ge=2, description="Overlap pairs per step.")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap pairs held out to measure held_out_R@1.")
    seed: int = 0


def info_nce(zx: torch.Tensor, zy: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = zx @ zy.T / temperature
    target = torch.arange(len(zx))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class OverlapInfoNCE(BridgeMethodBase[OverlapInfoNCEConfig]):
    """A connect bridge from overlap pairs alone."""

    name = "overlap-infonce"
    config_class = OverlapInfoNCEConfig

    def fit(
        self, x: sg.SpaceSpec, y: sg.SpaceSpec, overlap: sg.Modality, features: sg.BridgeFeatures,
        config: OverlapInfoNCEConfig, *, show_progress_bar: bool,
    ) -> TrainedHeads:  # fmt: skip
        """Train both heads on the training overlap pairs; the held-out ones are left for measuring."""
        generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        order = torch.randperm(len(features.overlap_x), generator=generator)
        n_val = int(len(order) * config.val_fraction)
        if len(order) - n_val < 2:  # BatchNorm trains on at least 2 rows; then nothing is held out
            n_val = 0
        val, train = order[:n_val], order[n_val:]
        head_x, head_y = (
            ProjectionHead(
                sg.HeadSpec(arch=config.head_arch, in_dim=dim, hidden_dim=config.hidden_dim, out_dim=config.out_dim)
            )
            for dim in (x.dim, y.dim)
        )
        optimizer = torch.optim.AdamW(
            [*head_x.parameters(), *head_y.parameters()], lr=config.lr, weight_decay=config.weight_decay
        )
        for step in progress_range(config.steps, self.name, show_progress_bar=show_progress_bar):
            batch = train[torch.randperm(len(train), generator=generator)[: config.batch_size]]
            loss = info_nce(head_x(features.overlap_x[batch]), head_y(features.overlap_y[batch]), config.temperature)
            if not torch.isfinite(loss):
                raise sg.SpacegraphValueError(f"overlap-infonce diverged at step {step}: loss {loss.item()}; lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return TrainedHeads(head_x, head_y, held_out=val)
