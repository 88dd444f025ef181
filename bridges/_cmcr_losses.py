"""The C-MCR objective: symmetric InfoNCE, intra-space attraction, and the noise of semantic completeness."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._cmcr_config import CMCRConfig


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
