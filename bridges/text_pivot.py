"""Text-pivot extend bridges: ``x`` mapped into the frozen ``y`` through the overlap corpus (usually text, hence the
name), with no training at all.

An input is compared with overlap items as ``x`` embeds them; the softmax of those cosines (at ``temperature``)
averages the same items as ``y`` embeds them: ``normalize(softmax(normalize(x) @ keys.T / t) @ values)``, a ``pivot``
head whose keys and values are at most ``anchors`` overlap pairs (a seeded sample of the training rows). It needs no
memories and no fitting, and works where an input sits near overlap items, however non-linearly the two spaces
relate; it cannot reach what the overlap corpus does not cover.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spacegraph.plugin import (
    BridgeFeatures,
    BridgeMethodBase,
    HeadSpec,
    Modality,
    ProjectionHead,
    SpaceSpec,
    TrainedHeads,
)

from ._overlap_split import split_overlap

__all__ = ["TextPivotConfig", "TextPivotMethod"]


class TextPivotConfig(BaseModel):
    """The settings of a text-pivot bridge. Unknown keys, NaN and infinity are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    anchors: int = Field(
        4096, gt=0, description="Most overlap pairs the head looks up (a seeded sample where training has more)."
    )
    temperature: float = Field(0.05, gt=0, description="Of the softmax over an input's cosines to the anchors.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap items held out to measure quality.")
    seed: int = Field(0, description="Seeds the held-out split (the same rows as cmcr's for one seed) and the sample.")


class TextPivotMethod(BridgeMethodBase[TextPivotConfig]):
    """The ``text-pivot`` bridge method: an extend bridge from ``x`` into the frozen ``y`` that looks inputs up among
    overlap pairs (see the module); ``val_fraction`` of them are held out to measure it."""

    name = "text-pivot"
    config_class = TextPivotConfig

    def fit(
        self, x: SpaceSpec, y: SpaceSpec, overlap: Modality, features: BridgeFeatures, config: TextPivotConfig, *,
        show_progress_bar: bool,
    ) -> TrainedHeads:  # fmt: skip
        generator = torch.Generator().manual_seed(config.seed)
        train_rows, held_out = split_overlap(len(features.overlap_x), config.val_fraction, generator)
        anchors = train_rows[torch.randperm(len(train_rows), generator=generator)[: config.anchors]]
        spec = HeadSpec(arch="pivot", in_dim=x.dim, out_dim=y.dim, anchors=len(anchors), temperature=config.temperature)
        head = ProjectionHead(spec)
        keys, values = (F.normalize(rows[anchors], dim=-1) for rows in (features.overlap_x, features.overlap_y))
        head.load_state_dict({"net.keys": keys, "net.values": values})
        return TrainedHeads(head, None, held_out)
