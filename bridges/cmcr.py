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

Memories are optional: with ``use_memory`` unset (the default) pseudo pairs are built when both memories are
given, and training runs on the native overlap pairs alone otherwise; ``use_memory=True`` requires them.

This module is the public face; the work lives in one module per idea: ``_cmcr_config`` (the settings),
``_cmcr_losses`` (the objective), ``_cmcr_pairs`` (memory retrieval and pseudo pairs), ``_cmcr_training`` (the
heads, the step and :func:`fit_heads`).
"""

from __future__ import annotations

from spacegraph.plugin import BridgeFeatures, BridgeMethodBase, Modality, ProjectionHead, SpaceSpec, TrainedHeads

from ._cmcr_config import PAPER_CONFIG, CMCRConfig
from ._cmcr_losses import attraction, cmcr_loss, info_nce, perturb
from ._cmcr_pairs import PseudoPairs, TrainingData, memory_retrieve, mutual_neighbours, pseudo_pairs, seed_keys
from ._cmcr_training import FitResult, FrozenTarget, TrainingRun, check_heads, check_loss, fit_heads, train_heads

__all__ = [
    "PAPER_CONFIG",
    "CMCRConfig",
    "CMCRMethod",
    "FitResult",
    "FrozenTarget",
    "PseudoPairs",
    "TrainingData",
    "TrainingRun",
    "attraction",
    "check_heads",
    "check_loss",
    "cmcr_loss",
    "fit_heads",
    "info_nce",
    "memory_retrieve",
    "mutual_neighbours",
    "perturb",
    "pseudo_pairs",
    "seed_keys",
    "train_heads",
]


class CMCRMethod(BridgeMethodBase[CMCRConfig]):
    """The ``cmcr`` bridge method: trains a connect (or, with ``kind="extend"``, an extend) bridge between two
    spaces that share a modality. For extend, ``x`` is the source and ``y`` the frozen target."""

    name = "cmcr"
    config_class = CMCRConfig

    def fit(
        self, x: SpaceSpec, y: SpaceSpec, overlap: Modality, features: BridgeFeatures, config: CMCRConfig, *,
        show_progress_bar: bool,
    ) -> TrainedHeads:  # fmt: skip
        fit = train_heads(features, config, show_progress_bar=show_progress_bar)
        head_y = fit.head_y if isinstance(fit.head_y, ProjectionHead) else None  # extend: the target stays frozen
        # card.training["history"]: the loss curve, every 50 steps
        return TrainedHeads(fit.head_x, head_y, fit.held_out, record={"history": fit.history}, quality=fit.quality)
