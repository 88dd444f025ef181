"""Bridges: projector heads keyed by the space they read from, a JSON card, and safetensors weights."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from ._atomic import atomic_dir
from ._errors import FingerprintMismatchError, UnknownNameError
from ._modality import Modality
from ._space import SpaceSpec, check_embeddings, fingerprint_state_dict

FORMAT_VERSION = 1
CARD_FILE = "bridge.json"
WEIGHTS_FILE = "heads.safetensors"

HeadArch = Literal["mlp2", "mlp1"]


class HeadSpec(BaseModel):
    """A projector head. ``mlp2`` is the released audio-visual C-MCR head (Linear-BN-ReLU-Linear-BN),
    ``mlp1`` the released 3D head (Linear-BN-ReLU); both end in L2 normalisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: HeadArch = "mlp2"
    in_dim: int = Field(gt=0)
    hidden_dim: int = Field(default=1024, gt=0)
    out_dim: int = Field(gt=0)


class ProjectionHead(nn.Module):
    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.arch == "mlp2":
            layers = [
                nn.Linear(spec.in_dim, spec.hidden_dim),
                nn.BatchNorm1d(spec.hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(spec.hidden_dim, spec.out_dim),
                nn.BatchNorm1d(spec.out_dim),
            ]
        else:
            layers = [nn.Linear(spec.in_dim, spec.out_dim), nn.BatchNorm1d(spec.out_dim), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


class SpaceRef(BaseModel):
    """The identity of a space a bridge was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    fingerprint: str
    dim: int
    modalities: tuple[Modality, ...]

    @classmethod
    def of(cls, spec: SpaceSpec) -> SpaceRef:
        return cls(name=spec.name, fingerprint=spec.fingerprint, dim=spec.dim, modalities=spec.modalities)


class BridgeCard(BaseModel):
    """Everything needed to rebuild, check and rank a bridge."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    library_version: str
    name: str
    method: str
    kind: Literal["connect", "extend"] = Field(
        "connect",
        description="connect: both spaces get a head into a new joint space; extend: only the first space gets a "
        "head, into the second (the target), which stays frozen.",
    )
    spaces: tuple[SpaceRef, SpaceRef]
    overlap: Modality
    heads: dict[str, HeadSpec]
    training: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, int] = Field(default_factory=dict, description="Row counts of the features it was trained on.")
    quality: dict[str, float] = Field(default_factory=dict, description="Measured on held-out overlap data.")

    @property
    def out_dim(self) -> int:
        return next(iter(self.heads.values())).out_dim

    @property
    def headed_spaces(self) -> list[str]:
        """Names of the spaces that get a head: both for connect, the source for extend."""
        names = [ref.name for ref in self.spaces]
        return names if self.kind == "connect" else names[:1]

    @property
    def target(self) -> str:
        """The node both sides land in: the joint space (named as the bridge) or the extend target."""
        return self.name if self.kind == "connect" else self.spaces[1].name

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """The modalities of the joint space this bridge creates."""
        seen = dict.fromkeys(m for ref in self.spaces for m in ref.modalities)
        return tuple(seen)

    @property
    def score(self) -> float:
        """The planner's quality in (0, 1]: the held-out retrieval score, or 1 where none was measured."""
        return float(self.quality.get("score", 1.0))

    @property
    def cost(self) -> float:
        return -math.log(max(self.score, 1e-6))


class Bridge(nn.Module):
    """A trained edge of the graph: one projector head per space it reads from (an extend target needs none)."""

    def __init__(self, card: BridgeCard) -> None:
        super().__init__()
        names = [ref.name for ref in card.spaces]
        if len(set(names)) != 2 or set(card.heads) != set(card.headed_spaces):
            raise ValueError(
                f"{card.kind} bridge {card.name!r}: heads {sorted(card.heads)} must be {card.headed_spaces} "
                f"(its spaces are {names})"
            )
        self.card = card
        self._order = names
        self.heads = nn.ModuleList(ProjectionHead(card.heads[n]) for n in card.headed_spaces)
        self.eval()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def space_names(self) -> tuple[str, str]:
        return tuple(self._order)  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """A hash of the heads' weights: the identity of the joint space a connect bridge creates."""
        return fingerprint_state_dict(self._flat_state())

    def head(self, space_name: str) -> ProjectionHead:
        if space_name not in self.card.heads:
            raise UnknownNameError(
                f"bridge {self.name!r} has no head for space {space_name!r}; it has {self.card.headed_spaces}"
            )
        return self.heads[self.card.headed_spaces.index(space_name)]

    def project(self, space_name: str, embeddings: torch.Tensor) -> torch.Tensor:
        """Map embeddings of ``space_name`` into the bridge's target space (eval mode, no grad)."""
        if self.card.kind == "extend" and space_name == self.card.target:
            check_embeddings(embeddings, self.card.spaces[1].dim, f"bridge {self.name!r} target {space_name!r}")
            return nn.functional.normalize(embeddings.float(), dim=-1)  # the target space is frozen
        head = self.head(space_name)
        check_embeddings(embeddings, head.spec.in_dim, f"bridge {self.name!r} input from {space_name!r}")
        with torch.inference_mode():
            return head.eval()(embeddings.float())

    def check_space(self, spec: SpaceSpec) -> None:
        """Refuse a space whose weights differ from the ones this bridge was trained on."""
        ref = next((r for r in self.card.spaces if r.name == spec.name), None)
        if ref is None:
            raise UnknownNameError(f"bridge {self.name!r} does not read from space {spec.name!r}")
        if ref.fingerprint != spec.fingerprint:
            raise FingerprintMismatchError(
                f"bridge {self.name!r} was trained on space {spec.name!r} with fingerprint {ref.fingerprint}, "
                f"but the space given has fingerprint {spec.fingerprint}: its weights differ; retrain the bridge"
            )

    def _flat_state(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}/{key}": value.detach().cpu().contiguous()
            for name, head in zip(self.card.headed_spaces, self.heads)
            for key, value in head.state_dict().items()
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``bridge.json`` and ``heads.safetensors`` into ``folder``, atomically (all or nothing)."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_file(self._flat_state(), str(tmp / WEIGHTS_FILE), metadata={"format": "spacegraph-bridge"})
            (tmp / CARD_FILE).write_text(self.card.model_dump_json(indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Bridge:
        folder = Path(folder)
        card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
        for path in (card_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: a bridge folder holds {CARD_FILE} and {WEIGHTS_FILE}")
        card = BridgeCard.model_validate(json.loads(card_path.read_text(encoding="utf-8")))
        if card.format_version > FORMAT_VERSION:
            raise ValueError(
                f"{card_path}: bridge format {card.format_version} is newer than this spacegraph reads "
                f"({FORMAT_VERSION}); upgrade spacegraph"
            )
        bridge = cls(card)
        state = load_file(str(weights_path))
        for name, head in zip(card.headed_spaces, bridge.heads):
            prefix = f"{name}/"
            head.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        return bridge.eval()

    def __repr__(self) -> str:
        a, b = self._order
        arrow = f"<-{self.card.overlap.value}->" if self.card.kind == "connect" else f"-{self.card.overlap.value}->"
        return f"Bridge({self.name!r}: {a} {arrow} {b}, {self.card.kind}, score={self.card.score:.3f})"


class BridgeFeatures:
    """Cached features a bridge is trained on: the overlap corpus encoded by both spaces (row i of
    ``overlap_x`` and ``overlap_y`` is the same item) and unpaired memories of each space's other modalities."""

    def __init__(
        self,
        overlap_x: torch.Tensor,
        overlap_y: torch.Tensor,
        memory_x: torch.Tensor | None = None,
        memory_y: torch.Tensor | None = None,
    ) -> None:
        if overlap_x.shape[0] != overlap_y.shape[0]:
            raise ValueError(
                f"overlap_x has {overlap_x.shape[0]} rows but overlap_y has {overlap_y.shape[0]}: row i of both "
                "must be the same overlap item encoded by each space"
            )
        self.overlap_x, self.overlap_y = overlap_x.float(), overlap_y.float()
        self.memory_x = None if memory_x is None else memory_x.float()
        self.memory_y = None if memory_y is None else memory_y.float()

    def check(self, x: SpaceSpec, y: SpaceSpec) -> None:
        """Refuse features whose dims do not match the spaces, empty batches and NaN/inf."""
        check_embeddings(self.overlap_x, x.dim, f"overlap features of {x.name!r}")
        check_embeddings(self.overlap_y, y.dim, f"overlap features of {y.name!r}")
        if self.memory_x is not None:
            check_embeddings(self.memory_x, x.dim, f"memory features of {x.name!r}")
        if self.memory_y is not None:
            check_embeddings(self.memory_y, y.dim, f"memory features of {y.name!r}")

    def counts(self) -> dict[str, int]:
        rows = {"overlap": self.overlap_x.shape[0]}
        if self.memory_x is not None:
            rows["memory_x"] = self.memory_x.shape[0]
        if self.memory_y is not None:
            rows["memory_y"] = self.memory_y.shape[0]
        return rows
