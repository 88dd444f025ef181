"""Procrustes extend bridges: ``x`` mapped into the frozen ``y`` by the scaled rotation that best carries the
overlap pairs, fitted in closed form (no training loop, no memories).

On the training overlap pairs ``(bx, by)``: both are centred; ``bx`` is optionally whitened (a ridge keeps its
covariance invertible); ``W = U V^T`` from the SVD ``Xw^T Yc = U S V^T`` is the orthogonal map (semi-orthogonal
where the dims differ) that best carries ``Xw`` onto ``Yc``, and ``s = sum(S) / |Xw|^2`` its least-squares scale. The
head is one ``linear`` layer holding ``x -> (x - mean_x) @ whitening @ (s W) + mean_y``, then L2 normalisation.

It is exact where the two spaces' overlap embeddings differ by a rotation (with ``whiten``: by any invertible linear
map of a space whose overlap embeddings are isotropic), and a cheap baseline otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from spacegraph.plugin import (
    BridgeFeatures,
    BridgeMethodBase,
    HeadSpec,
    Modality,
    ProjectionHead,
    SpacegraphValueError,
    SpaceSpec,
    TrainedHeads,
)

from ._overlap_split import split_overlap

__all__ = ["ProcrustesConfig", "ProcrustesFit", "ProcrustesMethod", "fit_procrustes"]


class ProcrustesConfig(BaseModel):
    """The settings of a Procrustes bridge. Unknown keys, NaN and infinity are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    whiten: bool = Field(False, description="Whiten x's overlap embeddings before the rotation is fitted.")
    shrinkage: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Ridge of the whitening: the covariance is mixed with this share of its mean variance times "
        "the identity, so that it is invertible.",
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap items held out to measure quality.")
    seed: int = Field(0, description="Seeds the held-out split (the same rows as cmcr's for one seed).")


@dataclass(frozen=True)
class ProcrustesFit:
    """The affine map ``x -> x @ weight + bias`` (``weight [x_dim, y_dim]``) and how well it carries the pairs:
    ``scale`` is the rotation's least-squares scale, ``fit`` = ``sum(S) / (|Xw| |Yc|)`` in [0, 1], 1 where the
    pairs differ by a scaled rotation."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: float
    fit: float


def fit_procrustes(bx: torch.Tensor, by: torch.Tensor, *, whiten: bool, shrinkage: float) -> ProcrustesFit:
    """The scaled orthogonal Procrustes map of paired rows ``bx`` onto ``by``, centring (and, if ``whiten``,
    whitening ``bx``) folded in. Rows are read once, into ``dim x dim`` products; the rest runs in float64."""
    mean_x, mean_y = bx.mean(dim=0), by.mean(dim=0)
    centred_x, centred_y = bx - mean_x, by - mean_y
    if not (_varies(centred_x, bx) and _varies(centred_y, by)):
        raise SpacegraphValueError(
            "procrustes: the training overlap rows of one space are all the same, so no rotation can be fitted; "
            "give overlap data of distinct items"
        )
    gram_x, cross = (centred_x.T @ centred_x).double(), (centred_x.T @ centred_y).double()
    whitening = _whitening(gram_x / len(bx), shrinkage) if whiten else torch.eye(len(gram_x), dtype=torch.float64)
    u, singular, vh = torch.linalg.svd(whitening @ cross, full_matrices=False)  # of Xw^T Yc (whitening is symmetric)
    spread_x = (whitening @ gram_x @ whitening).trace()  # |Xw|^2
    scale = singular.sum() / spread_x
    weight = whitening @ (u @ vh) * scale
    return ProcrustesFit(
        weight=weight.float(),
        bias=(mean_y.double() - mean_x.double() @ weight).float(),
        scale=float(scale),
        fit=float(singular.sum() / (spread_x * centred_y.double().square().sum()).sqrt()),
    )


def _varies(centred: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether ``rows`` spread beyond float32 rounding of their mean (``centred`` is them minus it)."""
    return bool(centred.square().sum() > 1e-10 * rows.square().sum())


def _whitening(covariance: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """The symmetric inverse square root of ``covariance`` mixed with ``shrinkage`` of its mean variance (> 0: the
    rows vary), so every eigenvalue is positive."""
    ridge = covariance.diagonal().mean() * torch.eye(len(covariance), dtype=covariance.dtype)
    values, vectors = torch.linalg.eigh((1 - shrinkage) * covariance + shrinkage * ridge)
    return vectors @ torch.diag(values.rsqrt()) @ vectors.T


class ProcrustesMethod(BridgeMethodBase[ProcrustesConfig]):
    """The ``procrustes`` bridge method: an extend bridge from ``x`` into the frozen ``y``, fitted in closed form on
    the overlap pairs (see the module); ``val_fraction`` of them are held out to measure it."""

    name = "procrustes"
    config_class = ProcrustesConfig

    def fit(
        self, x: SpaceSpec, y: SpaceSpec, overlap: Modality, features: BridgeFeatures, config: ProcrustesConfig, *,
        show_progress_bar: bool,
    ) -> TrainedHeads:  # fmt: skip
        generator = torch.Generator().manual_seed(config.seed)
        train_rows, held_out = split_overlap(len(features.overlap_x), config.val_fraction, generator)
        bx, by = features.overlap_x[train_rows], features.overlap_y[train_rows]
        fitted = fit_procrustes(bx, by, whiten=config.whiten, shrinkage=config.shrinkage)
        head = ProjectionHead(HeadSpec(arch="linear", in_dim=x.dim, out_dim=y.dim))
        head.load_state_dict({"net.weight": fitted.weight.T.contiguous(), "net.bias": fitted.bias})
        record = {"fit_rows": len(train_rows), "scale": fitted.scale, "procrustes_fit": fitted.fit}
        return TrainedHeads(head, None, held_out, record=record)
