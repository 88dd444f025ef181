"""Joint spaces: the new space a connect bridge creates is itself a Space, so it can be bridged again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ._arguments import checked_arguments
from ._bridge import Bridge
from ._errors import SpacegraphValueError
from ._modality import Modality
from ._space import Space, SpaceSpec, check_embeddings


class JointSpace(Space):
    """The modalities of both spaces of a connect bridge, each embedded by its own space and then its head.

    A modality both spaces have (the overlap) is embedded by the bridge's first space. Its fingerprint is the
    bridge's, so a bridge trained on this joint space refuses one whose parent bridge changed.
    """

    @checked_arguments
    def __init__(self, bridge: Bridge, spaces: Sequence[Space]) -> None:
        super().__init__()
        if bridge.card.kind != "connect":
            raise SpacegraphValueError(f"bridge {bridge.name!r} is an extend bridge: it adds no joint space")
        by_name = {space.name: space for space in spaces}
        missing = [name for name in bridge.space_names if name not in by_name]
        if missing:
            raise SpacegraphValueError(f"joint space {bridge.name!r} needs its spaces {missing}; pass them too")
        for name in bridge.space_names:
            bridge.check_space(by_name[name].spec)
        self.bridge = bridge
        self.members = [by_name[name] for name in bridge.space_names]
        self.spec = SpaceSpec(
            name=bridge.name,
            modalities=bridge.card.modalities,
            dim=bridge.card.out_dim,
            normalized=True,
            fingerprint=bridge.fingerprint,
        )

    @checked_arguments
    def member(self, modality: Modality) -> Space:
        """The space that embeds ``modality`` before its head maps it here."""
        return next(space for space in self.members if modality in space.modalities)

    def to(self, device: str | torch.device) -> JointSpace:
        super().to(device)
        for space in self.members:
            space.to(device)
        return self

    # A joint space runs its member's own batch path (preparing, workers, device, autocast) inside the one
    # Space.encode call, then maps each batch through the member's head in float32.

    def _check_implemented(self) -> None:
        for space in self.members:
            space._check_implemented()

    def _prepares_apart(self, modality: Modality) -> bool:
        return self.member(modality)._prepares_apart(modality)

    def _prepare_batch(self, modality: Modality, batch: Any) -> Any:
        return self.member(modality)._prepare_batch(modality, batch)

    def _encode_in_process(
        self, modality: Modality, batch: Any, positions: Sequence[int], precision: str
    ) -> torch.Tensor:
        space = self.member(modality)
        return self._project(space, modality, space._encode_in_process(modality, batch, positions, precision))

    def _encode_on_device(
        self, modality: Modality, prepared: Any, positions: Sequence[int], precision: str
    ) -> torch.Tensor:
        space = self.member(modality)
        return self._project(space, modality, space._encode_on_device(modality, prepared, positions, precision))

    def _project(self, space: Space, modality: Modality, embeddings: torch.Tensor) -> torch.Tensor:
        """A batch the member embedded, checked and normalised as its ``encode`` returns it, through its head."""
        embeddings = check_embeddings(embeddings, space.spec.dim, f"{space.name} {modality.value} output")
        return self.bridge.project(space.name, torch.nn.functional.normalize(embeddings, dim=-1))

    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """A joint space is its bridge: the folder is the bridge's (saved as :meth:`Bridge.save` does, never over
        files it did not write unless ``overwrite``), and :meth:`load` needs the same spaces."""
        return self.bridge.save(folder, overwrite=overwrite)

    @classmethod
    @checked_arguments
    def load(cls, folder: str | os.PathLike, spaces: Sequence[Space]) -> JointSpace:
        return cls(Bridge.load(folder), spaces)
