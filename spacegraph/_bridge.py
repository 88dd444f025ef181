"""Bridges: projector heads keyed by the space they read from, a frozen card (:mod:`spacegraph._card`), and
safetensors weights."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast, get_args

import torch
from safetensors.torch import save_file
from torch import nn
from typing_extensions import Self

from ._arguments import checked_arguments
from ._atomic import atomic_dir, recover_interrupted_save
from ._card import (
    FORMAT_VERSION,
    NAME_ACCEPTED,
    BridgeCard,
    Calibration,
    HeadArch,
    HeadSpec,
    SpaceRef,
    check_bridge_name,
    read_card,
)
from ._errors import (
    FingerprintMismatchError,
    SpacegraphTypeError,
    SpacegraphValueError,
    UnknownNameError,
)
from ._hub import HubMixin, bridge_readme, check_folder
from ._space import SpaceSpec, check_embeddings, fingerprint_state_dict
from ._weights import layout_problems, read_shapes, read_tensors, tensor_problem

__all__ = [  # the card's names stay importable from here
    "FORMAT_VERSION",
    "NAME_ACCEPTED",
    "Bridge",
    "BridgeCard",
    "BridgeFeatures",
    "Calibration",
    "HeadArch",
    "HeadSpec",
    "ProjectionHead",
    "SpaceRef",
    "check_bridge_name",
    "expected_shapes",
    "read_card",
]

CARD_FILE = "bridge.json"
WEIGHTS_FILE = "heads.safetensors"
README_FILE = "README.md"  # the model card save_pretrained writes
IDENTITY_FIELDS = ("name", "kind", "spaces", "overlap", "heads")  # what a bridge's modules and graph place hang on


PIVOT_SCORES = 1 << 22  # query x anchor scores a pivot head holds at once (16 MiB)


class PivotLookup(nn.Module):
    """The body of a ``pivot`` head: each input's softmax over its cosines to ``keys`` (unit rows, buffers
    ``[anchors, in_dim]``) at ``temperature`` weighs ``values`` (their counterparts, ``[anchors, out_dim]``). Inputs
    go through in chunks, so memory stays bounded at any batch size."""

    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, anchors: int, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("keys", torch.zeros(anchors, in_dim))
        self.register_buffer("values", torch.zeros(anchors, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.split(max(1, PIVOT_SCORES // len(self.keys)))
        return torch.cat([self._lookup(chunk) for chunk in chunks])

    def _lookup(self, x: torch.Tensor) -> torch.Tensor:
        cosines = nn.functional.normalize(x, dim=-1) @ self.keys.T
        return torch.softmax(cosines / self.temperature, dim=-1) @ self.values


class ProjectionHead(nn.Module):
    """The head ``spec`` describes, ending in L2 normalisation. Its state dict: ``net.*`` of an ``nn.Sequential``
    for ``mlp2``/``mlp1``, ``net.weight`` and ``net.bias`` (``[out_dim, in_dim]``, ``[out_dim]``) for ``linear``,
    the buffers ``net.keys`` and ``net.values`` for ``pivot``."""

    @checked_arguments
    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = _head_body(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


def _head_body(spec: HeadSpec) -> nn.Module:
    """What a head computes before its L2 normalisation."""
    if spec.arch == "mlp2":
        return nn.Sequential(
            nn.Linear(spec.in_dim, spec.hidden_dim),
            nn.BatchNorm1d(spec.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(spec.hidden_dim, spec.out_dim),
            nn.BatchNorm1d(spec.out_dim),
        )
    if spec.arch == "mlp1":
        return nn.Sequential(nn.Linear(spec.in_dim, spec.out_dim), nn.BatchNorm1d(spec.out_dim), nn.ReLU(inplace=True))
    if spec.arch == "linear":
        return nn.Linear(spec.in_dim, spec.out_dim)
    if spec.arch == "pivot" and spec.anchors is not None and spec.temperature is not None:
        return PivotLookup(spec.anchors, spec.in_dim, spec.out_dim, spec.temperature)
    raise SpacegraphValueError(
        f"{spec!r} describes no head (edited without validation?); build specs with HeadSpec(...), arch one of "
        f"{', '.join(get_args(HeadArch))}"
    )


class Bridge(nn.Module, HubMixin):
    """A trained edge of the graph: one projector head per space it reads from (an extend target needs none)."""

    HUB_FILES = (CARD_FILE, WEIGHTS_FILE)
    HUB_FOLDER = "bridge"

    @checked_arguments
    def __init__(self, card: BridgeCard) -> None:
        super().__init__()
        self._card = card  # validated when it was built or read, and frozen
        self._order = [ref.name for ref in card.spaces]
        self.heads = nn.ModuleList(ProjectionHead(card.heads[n]) for n in card.headed_spaces)
        self.eval()

    @classmethod
    @checked_arguments
    def from_weights(cls, card: BridgeCard, weights: Mapping[str, Mapping[str, torch.Tensor]]) -> Self:
        """A bridge of ``card`` whose heads take ``weights``: each headed space's state dict, loaded strictly."""
        bridge = cls(card)
        for name in card.headed_spaces:
            bridge.head(name).load_state_dict(weights[name], strict=True)
        return bridge.eval()

    @property
    def card(self) -> BridgeCard:
        return self._card

    @card.setter
    def card(self, card: BridgeCard) -> None:
        """Replace the card with one that differs in quality, calibration, training record or data only: the
        heads and the bridge's place in a graph hang on the rest."""
        if not isinstance(card, BridgeCard):
            raise SpacegraphTypeError(f"bridge {self.name!r}: a card is a BridgeCard, got {type(card).__name__}")
        changed = [field for field in IDENTITY_FIELDS if getattr(card, field) != getattr(self._card, field)]
        if changed:
            raise SpacegraphValueError(
                f"bridge {self.name!r}: the new card changes {changed}, which its heads and place in a graph hang "
                "on; build a new Bridge for it"
            )
        self._card = card

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

    @checked_arguments
    def head(self, space_name: str) -> ProjectionHead:
        if space_name not in self.card.heads:
            raise UnknownNameError(
                f"bridge {self.name!r} has no head for space {space_name!r}; it has {self.card.headed_spaces}"
            )
        return cast(ProjectionHead, self.heads[self.card.headed_spaces.index(space_name)])

    @checked_arguments
    def project(self, space_name: str, embeddings: torch.Tensor) -> torch.Tensor:
        """Map embeddings of ``space_name`` into the bridge's target space (eval mode, no grad)."""
        if self.card.kind == "extend" and space_name == self.card.target:
            check_embeddings(embeddings, self.card.spaces[1].dim, f"bridge {self.name!r} target {space_name!r}")
            return nn.functional.normalize(embeddings.float(), dim=-1)  # the target space is frozen
        head = self.head(space_name)
        check_embeddings(embeddings, head.spec.in_dim, f"bridge {self.name!r} input from {space_name!r}")
        with torch.inference_mode():
            projected = head.eval()(embeddings.float())
        if not torch.isfinite(projected).all():
            raise SpacegraphValueError(
                f"bridge {self.name!r}: its head for {space_name!r} gave NaN or inf from finite inputs (its weights "
                "overflow); retrain it, e.g. with a lower lr or weight_decay"
            )
        return projected

    @checked_arguments
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
        if ref.dim != spec.dim or not set(ref.modalities) <= set(spec.modalities):
            have, card = (", ".join(m.value for m in mods) for mods in (spec.modalities, ref.modalities))
            raise SpacegraphValueError(
                f"bridge {self.name!r}: its card says space {spec.name!r} embeds {card} in {ref.dim} dims, but the "
                f"space embeds {have} in {spec.dim}; the card was edited, or is for another space"
            )

    def check_finite(self, source: str | os.PathLike | None = None) -> None:
        """Refuse NaN or inf in any weight or BatchNorm statistic, and a negative running variance, naming the
        tensors and ``source`` (the file the weights came from; else the bridge)."""
        problems = [problem for key, value in self._flat_state().items() if (problem := tensor_problem(key, value))]
        if problems:
            where = source if source is not None else f"bridge {self.name!r}"
            raise SpacegraphValueError(
                f"{where}: {'; '.join(problems[:5])}: a bridge needs finite weights and statistics (training "
                "diverged, or the file is damaged); retrain it, e.g. with a lower lr or weight_decay"
            )

    def _flat_state(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}/{key}": value.detach().cpu().contiguous()
            for name, head in zip(self.card.headed_spaces, self.heads)
            for key, value in head.state_dict().items()
        }

    @checked_arguments
    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``bridge.json`` and ``heads.safetensors`` into ``folder``, atomically (all or nothing). An existing
        ``folder`` is replaced only if it holds nothing but what a spacegraph save wrote there, unchanged, or if
        ``overwrite``: see :func:`spacegraph.plugin.atomic_dir`."""
        self.check_finite()
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self._write_files(tmp)
        return Path(folder)

    def _write_files(self, folder: Path) -> None:
        save_file(self._flat_state(), str(folder / WEIGHTS_FILE), metadata={"format": "spacegraph-bridge"})
        (folder / CARD_FILE).write_text(self.card.model_dump_json(indent=2), encoding="utf-8")

    def _pretrained_writer(self, source: str) -> Callable[[Path], None]:
        """:meth:`save`'s files plus a generated ``README.md`` model card (spaces and fingerprints, overlap, training
        config, data rows and licences, measured quality as ``model-index`` metrics, how to load it from
        ``source``): the Hugging Face layout :meth:`push_to_hub` uploads."""
        self.check_finite()
        readme = bridge_readme(self.card, source)

        def write(folder: Path) -> None:
            self._write_files(folder)
            (folder / README_FILE).write_text(readme, encoding="utf-8")

        return write

    @classmethod
    def _hub_label(cls) -> str:
        return "bridge"

    @classmethod
    def _from_folder(cls, folder: Path, **kwargs: Any) -> Self:
        return cls.load(folder, **kwargs)

    @classmethod
    @checked_arguments
    def load(cls, folder: str | os.PathLike) -> Self:
        """Read a folder written by :meth:`save`: the card first, then the weights' names and shapes against it
        from the file's header (before anything is allocated), then every weight and BatchNorm statistic."""
        folder = Path(folder)
        recover_interrupted_save(folder)
        check_folder(folder, cls.HUB_FILES, cls._hub_label())
        card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
        card = read_card(card_path)
        problems = layout_problems(read_shapes(weights_path), expected_shapes(card))
        if problems:
            raise SpacegraphValueError(f"{weights_path} does not match its card {CARD_FILE}: " + "; ".join(problems))
        bridge = cls(card)
        state = read_tensors(weights_path)
        for name, head in zip(card.headed_spaces, bridge.heads):
            head.load_state_dict({key: state[f"{name}/{key}"] for key in head.state_dict()}, strict=True)
        bridge.check_finite(source=weights_path)
        return bridge.eval()

    def __repr__(self) -> str:
        a, b = self._order
        arrow = f"<-{self.card.overlap.value}->" if self.card.kind == "connect" else f"-{self.card.overlap.value}->"
        return f"Bridge({self.name!r}: {a} {arrow} {b}, {self.card.kind}, score={self.card.score:.3f})"

    def _repr_html_(self) -> str:
        from ._display import bridge_html  # the notebook renderer, imported when a notebook asks

        return bridge_html(self)


def expected_shapes(card: BridgeCard) -> dict[str, tuple[int, ...]]:
    """The names and shapes ``heads.safetensors`` holds for ``card``, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return {
            f"{name}/{key}": tuple(value.shape)
            for name in card.headed_spaces
            for key, value in ProjectionHead(card.heads[name]).state_dict().items()
        }


class BridgeFeatures:
    """Cached features a bridge is trained on: the overlap corpus encoded by both spaces (row i of
    ``overlap_x`` and ``overlap_y`` is the same item) and unpaired memories of each space's other modalities.

    Each is a 2-D torch tensor ``[rows, dim]`` of real numbers (a numpy array is refused: pass
    ``torch.from_numpy(array)``). Features are constants of training, so they are kept detached, as float32: a
    tensor that requires grad is taken as its values. Training needs at least ``MIN_OVERLAP_ROWS`` overlap rows
    (BatchNorm normalises over a batch of at least 2), and 2 more held out when it validates."""

    MIN_OVERLAP_ROWS = 2

    def __init__(
        self,
        overlap_x: torch.Tensor,
        overlap_y: torch.Tensor,
        memory_x: torch.Tensor | None = None,
        memory_y: torch.Tensor | None = None,
    ) -> None:
        self.overlap_x, self.overlap_y = self._features(overlap_x, "overlap_x"), self._features(overlap_y, "overlap_y")
        if overlap_x.shape[0] != overlap_y.shape[0]:
            raise SpacegraphValueError(
                f"overlap_x has {overlap_x.shape[0]} rows but overlap_y has {overlap_y.shape[0]}: row i of both "
                "must be the same overlap item encoded by each space"
            )
        self.memory_x = None if memory_x is None else self._features(memory_x, "memory_x")
        self.memory_y = None if memory_y is None else self._features(memory_y, "memory_y")

    @staticmethod
    def _features(features: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise SpacegraphTypeError(
                f"BridgeFeatures {name}: expected a torch.Tensor [rows, dim], got {type(features).__name__}; "
                "convert a numpy array with torch.from_numpy(array)"
            )
        if features.ndim != 2:
            raise SpacegraphValueError(
                f"BridgeFeatures {name}: expected a 2-D tensor [rows, dim], got shape {list(features.shape)}"
            )
        if features.is_complex() or features.dtype == torch.bool:
            raise SpacegraphTypeError(
                f"BridgeFeatures {name}: expected real-valued features, got dtype {features.dtype}"
            )
        return features.detach().float()

    @checked_arguments
    def check(self, x: SpaceSpec, y: SpaceSpec) -> None:
        """Refuse features whose dims do not match the spaces, empty batches, NaN/inf and too small an overlap."""
        check_embeddings(self.overlap_x, x.dim, f"overlap features of {x.name!r}")
        check_embeddings(self.overlap_y, y.dim, f"overlap features of {y.name!r}")
        if self.memory_x is not None:
            check_embeddings(self.memory_x, x.dim, f"memory features of {x.name!r}")
        if self.memory_y is not None:
            check_embeddings(self.memory_y, y.dim, f"memory features of {y.name!r}")
        if self.overlap_x.shape[0] < self.MIN_OVERLAP_ROWS:
            raise SpacegraphValueError(
                f"{self.overlap_x.shape[0]} overlap row(s): a bridge trains on at least {self.MIN_OVERLAP_ROWS} "
                "(BatchNorm normalises over a batch), and holds 2 more out when it validates; add overlap data"
            )

    def counts(self) -> dict[str, int]:
        rows = {"overlap": self.overlap_x.shape[0]}
        if self.memory_x is not None:
            rows["memory_x"] = self.memory_x.shape[0]
        if self.memory_y is not None:
            rows["memory_y"] = self.memory_y.shape[0]
        return rows
