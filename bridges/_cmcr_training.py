"""C-MCR training: the heads, the step (data parallel under ``torchrun``), divergence checks, checkpoint selection
by the label-free estimate, and :func:`fit_heads`."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from spacegraph.plugin import (
    BridgeFeatures,
    EstimateData,
    HeadSpec,
    ProjectionHead,
    RankSlice,
    SpacegraphValueError,
    StageClock,
    checked_device,
    measure_quality,
    progress_range,
    rank_device,
    tensor_problem,
    with_global_batch_norm,
)

from ._cmcr_config import CMCRConfig
from ._cmcr_losses import cmcr_loss, perturb
from ._cmcr_pairs import PseudoPairs, TrainingData, pseudo_pairs
from ._overlap_split import split_overlap


class FrozenTarget(torch.nn.Module):
    """The extend target's side: its own embeddings, unit-normalised, with nothing to train."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


@dataclass
class FitResult:
    """Trained heads (``head_y`` is a :class:`FrozenTarget` for extend), their quality, the loss curve, and the
    overlap rows held out of training."""

    head_x: ProjectionHead
    head_y: ProjectionHead | FrozenTarget
    quality: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    held_out: torch.Tensor | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # see train_heads and fit_heads


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of ``batch_size`` indices; a tail too small is dropped."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _heads(x_dim: int, y_dim: int, config: CMCRConfig) -> tuple[ProjectionHead, ProjectionHead | FrozenTarget]:
    out_dim = config.out_dim if config.kind == "connect" else y_dim

    def spec(in_dim: int) -> HeadSpec:
        return HeadSpec(arch=config.head_arch, in_dim=in_dim, hidden_dim=config.hidden_dim, out_dim=out_dim)

    return ProjectionHead(spec(x_dim)), ProjectionHead(spec(y_dim)) if config.kind == "connect" else FrozenTarget()


class EstimateTracker:
    """The label-free estimate of ``estimate_quality`` at checkpoints (pseudo labels built once), keeping the
    state of the best-scoring heads."""

    def __init__(self, features: BridgeFeatures, max_items: int = 2000) -> None:
        if features.memory_x is None or features.memory_y is None:
            raise SpacegraphValueError(
                "select_by_estimate needs memory_x and memory_y (the estimate is measured on them); pass them or "
                "set select_by_estimate=False"
            )
        self.data = EstimateData(  # the same items and labels estimate_quality scores
            features.overlap_x, features.overlap_y, features.memory_x, features.memory_y, max_items=max_items
        )
        self.best_score, self.best_state = -math.inf, None

    def check(self, head_x: torch.nn.Module, head_y: torch.nn.Module) -> float:
        head_x.eval(), head_y.eval()
        device = next(head_x.parameters()).device
        with torch.inference_mode():
            data = self.data
            za, zc = head_x(data.mx.to(device)).cpu(), head_y(data.my.to(device)).cpu()
            score = data.point_estimate(za, zc)
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
    ranks: RankSlice

    def project(
        self, x_parts: list[torch.Tensor], y_parts: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every part through its head in one perturbed batch (so BatchNorm sees them all), split back into parts
        and gathered over the ranks: each part comes back as its global batch."""
        config, ranks = self.config, self.ranks
        sizes = [len(part) for part in x_parts]
        noise_rows = {"total": sum(sizes) * ranks.world}
        if ranks.world > 1:
            noise_rows["rows"] = ranks.positions([size * ranks.world for size in sizes]).to(x_parts[0].device)
        x_rows = perturb(torch.cat(x_parts), config.noise_std, self.noise, **noise_rows)
        y_rows = torch.cat(y_parts)
        if config.kind == "connect":
            y_rows = perturb(y_rows, config.noise_std, self.noise, **noise_rows)
        zx, zy = self.model(x_rows, y_rows)
        return [ranks.gather(z) for z in zx.split(sizes)], [ranks.gather(z) for z in zy.split(sizes)]

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
        local = self.ranks.part(batch)
        bx, by = data.native(local)
        x_parts, y_parts = [bx], [by]
        if pseudo is None:
            zx, zy = self.project(x_parts, y_parts)
            return cmcr_loss(zx[0], zy[0], None, None, self.config)
        if pseudo.aligned:
            px, py, _, _ = pseudo.take(local)
        else:
            px, py, anchor_x, anchor_y = pseudo.take(self.ranks.part(pseudo_batch))
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


def _training_model(head_x: torch.nn.Module, head_y: torch.nn.Module, config: CMCRConfig, ranks: RankSlice):
    """The heads as trained: under torch.distributed with BatchNorm over the global batch, wrapped in
    DistributedDataParallel (one gradient all-reduce per step); compiled if ``config.compile``."""
    model: torch.nn.Module = HeadPair(head_x, head_y)
    if ranks.world > 1:
        with_global_batch_norm(model)
        device = next(model.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    return torch.compile(model) if config.compile else model


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
    def start(cls, features: BridgeFeatures, config: CMCRConfig, clock: StageClock | None = None) -> TrainingRun:
        clock = clock or StageClock("C-MCR")
        ranks = RankSlice.current()
        device = rank_device() if config.device == "cuda" else checked_device(config.device, "config.device")
        generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        train_idx, val_idx = split_overlap(features.overlap_x.shape[0], config.val_fraction, generator)
        overlap = (features.overlap_x.to(device), features.overlap_y.to(device), train_idx.to(device))
        memories = (None if m is None else m.to(device) for m in (features.memory_x, features.memory_y))
        data = TrainingData(*overlap, *memories, config)
        with clock.stage("pseudo pairs", announce=False):  # memory-seeded pairs show a bar of their own
            pseudo = pseudo_pairs(data, config, ranks, show_progress_bar=clock.show)
        data.retrieval_seconds = 0.0  # from here on: the retrievals of the training steps
        head_x, head_y = (h.to(device) for h in _heads(data.overlap_x.shape[1], data.overlap_y.shape[1], config))
        noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        step = StepContext(_training_model(head_x, head_y, config, ranks), config, noise, ranks)
        batches = _batch_pairs(len(data), pseudo, config, ranks, generator, device)
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
    ranks: RankSlice,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Endless ``(native batch, pseudo batch)``, the same on every rank; the pseudo batch is None where pseudo
    rows ride with the native ones (aligned) or there are none."""
    native = _batches(n_native, ranks.global_batch(config.batch_size, n_native), generator)
    independent = pseudo is not None and not pseudo.aligned
    pseudo_rows = (
        _batches(len(pseudo), ranks.global_batch(config.batch_size, len(pseudo)), generator) if independent else None
    )
    while True:
        batch = next(native).to(device)
        yield batch, None if pseudo_rows is None else next(pseudo_rows).to(device)


def train_heads(
    features: BridgeFeatures, config: CMCRConfig, *, show_progress_bar: bool = True, progress_label: str = "C-MCR"
) -> FitResult:
    """Train the two heads on cached features, unmeasured (``quality`` holds the pseudo-pair count and, for
    memory-seeded pairs, ``seed_keys``: the overlap rows they retrieved from); seeded and repeatable on CPU, and the
    same under ``torchrun`` (see :class:`TrainingRun`). A diverging run (a non-finite loss or head) stops with a
    ValueError that names the step: it never returns heads that give NaN. ``progress_label`` names the progress
    bar; ``stage_seconds`` holds "pseudo pairs", "steps" and, within them, "step retrieval" (the paper pairs'
    memory retrievals, timed on the host)."""
    clock = StageClock(progress_label, show=show_progress_bar)
    run = TrainingRun.start(features, config, clock)
    head_x, head_y = run.head_x, run.head_y
    tracker = EstimateTracker(features) if config.select_by_estimate else None
    history: list[dict[str, float]] = []
    run.step.model.train()
    progress = progress_range(config.steps, progress_label, show_progress_bar=show_progress_bar)
    with clock.stage("steps", announce=False):  # under the steps' progress bar
        for step in progress:
            losses = run.train_step(step)
            last = step == config.steps - 1
            if step % 50 == 0 or last:
                history.append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
                progress.set_postfix(loss=f"{history[-1]['total']:.3f}")
            if tracker is not None and ((step + 1) % config.estimate_every == 0 or last):
                check_heads(head_x, head_y, step, config)
                history.append({"step": step, "estimate": tracker.check(head_x, head_y)})
    clock.seconds["step retrieval"] = run.data.retrieval_seconds
    check_heads(head_x, head_y, config.steps - 1, config)
    if tracker is not None:
        tracker.restore(head_x, head_y)
    quality: dict[str, float] = {"n_pseudo_pairs": len(run.pseudo) if run.pseudo is not None else 0}
    if run.pseudo is not None and run.pseudo.seed_keys:
        quality["seed_keys"] = run.pseudo.seed_keys
    return FitResult(head_x.cpu().eval(), head_y.cpu().eval(), quality, history, run.val_idx, clock.seconds)


def fit_heads(
    features: BridgeFeatures, config: CMCRConfig, *, show_progress_bar: bool = True, progress_label: str = "C-MCR"
) -> FitResult:
    """:func:`train_heads`, then the heads measured as a card records them (:func:`measure_quality`); its
    ``stage_seconds`` add "held-out matching" and "estimate"."""
    fit = train_heads(features, config, show_progress_bar=show_progress_bar, progress_label=progress_label)
    clock = StageClock(progress_label, show=show_progress_bar)
    measured = measure_quality(fit.head_x, fit.head_y, features, fit.held_out, method="C-MCR", clock=clock)
    fit.quality = {**measured, **fit.quality}
    fit.stage_seconds.update(clock.seconds)
    return fit
