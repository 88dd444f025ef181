"""Bridges: projector heads keyed by the space they read from, a JSON card, and safetensors weights."""

from __future__ import annotations

import json
import math
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors.torch import save_file
from torch import nn

from ._atomic import atomic_dir, recover_interrupted_save
from ._display import bridge_html
from ._errors import (
    FingerprintMismatchError,
    SpacegraphFileNotFoundError,
    SpacegraphTypeError,
    SpacegraphValueError,
    UnknownNameError,
)
from ._hub import bridge_readme, push_folder, resolve_folder
from ._modality import Modality
from ._space import SpaceSpec, check_embeddings, fingerprint_state_dict
from ._weights import layout_problems, read_shapes, read_tensors, tensor_problem

FORMAT_VERSION = 1
CARD_FILE = "bridge.json"
WEIGHTS_FILE = "heads.safetensors"
README_FILE = "README.md"  # the model card save_pretrained writes
OWN_FILES = (CARD_FILE, WEIGHTS_FILE, README_FILE)

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

    name: str = Field(min_length=1)
    fingerprint: str = Field(min_length=1)
    dim: int = Field(gt=0)
    modalities: tuple[Modality, ...] = Field(min_length=1)

    @classmethod
    def of(cls, spec: SpaceSpec) -> SpaceRef:
        return cls(name=spec.name, fingerprint=spec.fingerprint, dim=spec.dim, modalities=spec.modalities)


QUALITY_IN_UNIT_RANGE = ("score", "estimate", "held_out_R@1")
NAME_ACCEPTED = "a non-empty name without control characters, neither absolute nor holding a '.' or '..' component"


def check_bridge_name(name: str) -> str:
    """``name``, if it can name a bridge. A connect bridge names the joint space it creates, and names end up in
    folder names, so one that could leave a folder is refused (the cache also maps every name to a safe folder
    name); names of spaces such as ``openclip:ViT-B/32`` and ``clap+openclip:ViT-B/32`` stay valid."""
    if not name.strip():
        problem = "it is empty"
    elif any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        problem = "it holds a control character or a lone surrogate"
    elif name.startswith(("/", "\\")) or {".", ".."} & set(name.replace("\\", "/").split("/")):
        problem = "as a path it is absolute or holds a '.' or '..' component"
    else:
        return name
    raise SpacegraphValueError(f"bridge name {name!r} is refused: {problem}; accepted: {NAME_ACCEPTED}")


class Calibration(BaseModel):
    """A route's quality measured on a labelled probe, and what it made of this bridge's quality."""

    model_config = ConfigDict(extra="forbid")

    probe: str = Field(description="The probe's name.")
    route: str = Field(description="The route measured (its repr).")
    n_queries: int = Field(ge=1)
    n_gallery: int = Field(ge=1)
    route_measured: float = Field(ge=0, le=1, description="The route's mAP on the probe (both directions, mean).")
    route_expected: float = Field(ge=0, le=1, description="The route's expected quality before calibration.")
    value: float = Field(ge=0, le=1, description="This bridge's quality after calibration.")
    rule: Literal["measured", "scaled"] = Field(
        description="measured: the route had this bridge alone; scaled: the route's measured/expected ratio was "
        "shared evenly (geometric) among its bridges."
    )


class BridgeCard(BaseModel):
    """Everything needed to rebuild, check and rank a bridge."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(FORMAT_VERSION, ge=1)
    library_version: str
    name: str = Field(description=f"The bridge's name (a connect bridge's joint space's too): {NAME_ACCEPTED}.")
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
    quality: dict[str, float] = Field(
        default_factory=dict,
        description="estimate: the label-free predicted retrieval mAP (spacegraph._quality); held_out_R@1: "
        "item-level matching of held-out overlap data; score: a quality given by hand (it overrides the estimate).",
    )
    calibration: Calibration | None = Field(None, description="Set by SpaceGraph.evaluate(..., calibrate=True).")

    @field_validator("quality")
    @classmethod
    def _finite_quality(cls, quality: dict[str, float]) -> dict[str, float]:
        for key, value in quality.items():
            if not math.isfinite(value):
                raise SpacegraphValueError(f"quality[{key!r}] is {value}: quality values must be finite")
            if key in QUALITY_IN_UNIT_RANGE and not 0 <= value <= 1:
                raise SpacegraphValueError(
                    f"quality[{key!r}] is {value}: it is a retrieval quality, accepted in [0, 1]"
                )
        return quality

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_bridge_name(name)

    @model_validator(mode="after")
    def _consistent(self) -> BridgeCard:
        return self.check_consistent()

    def check_consistent(self) -> BridgeCard:
        """Refuse fields that contradict each other: a bridge joins two different spaces through a modality one of
        them has; it has one head per space it reads from (both for connect, the first for extend), reading that
        space's dim; the heads land in one dim, the target space's for extend."""
        x, y = self.spaces
        if x.name == y.name:
            raise SpacegraphValueError(f"spaces: a bridge joins two different spaces; both are {x.name!r}")
        if self.overlap not in (*x.modalities, *y.modalities):  # a released ULIP head reads only point clouds
            have = {ref.name: [m.value for m in ref.modalities] for ref in self.spaces}
            raise SpacegraphValueError(f"overlap {self.overlap.value!r}: neither space has it ({have})")
        if set(self.heads) != set(self.headed_spaces):
            raise SpacegraphValueError(
                f"heads: this {self.kind} bridge has heads for {self.headed_spaces}, got {sorted(self.heads)}"
            )
        for ref in self.spaces:
            head = self.heads.get(ref.name)
            if head is not None and head.in_dim != ref.dim:
                raise SpacegraphValueError(
                    f"heads[{ref.name!r}].in_dim is {head.in_dim}, but space {ref.name!r} is {ref.dim}-d"
                )
        out_dims = sorted({head.out_dim for head in self.heads.values()})
        if len(out_dims) > 1:
            raise SpacegraphValueError(
                f"heads: out_dim differs between heads ({out_dims}); both land in one joint space"
            )
        if self.kind == "extend" and out_dims != [y.dim]:
            raise SpacegraphValueError(
                f"heads: out_dim is {out_dims[0]}, but the extend target {y.name!r} is {y.dim}-d"
            )
        return self

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
        """The planner's quality in [0, 1], from the best source there is (see :attr:`score_source`)."""
        if self.calibration is not None:
            return self.calibration.value
        for key in ("score", "estimate"):
            if key in self.quality:
                return float(self.quality[key])
        return 1.0

    @property
    def score_source(self) -> str:
        """Where :attr:`score` comes from, first found: a labelled probe, a score given by hand, the label-free
        estimate, or nothing (unmeasured bridges, such as imported checkpoints, count as 1.0)."""
        if self.calibration is not None:
            return f"probe {self.calibration.probe!r}"
        if "score" in self.quality:
            return "given"
        return "label-free estimate" if "estimate" in self.quality else "unmeasured"

    @property
    def cost(self) -> float:
        return -math.log(max(self.score, 1e-6))


class Bridge(nn.Module):
    """A trained edge of the graph: one projector head per space it reads from (an extend target needs none)."""

    def __init__(self, card: BridgeCard) -> None:
        super().__init__()
        card.check_consistent()  # again: a card can be changed after it was read
        self.card = card
        self._order = [ref.name for ref in card.spaces]
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
        return cast(ProjectionHead, self.heads[self.card.headed_spaces.index(space_name)])

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

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``bridge.json`` and ``heads.safetensors`` into ``folder``, atomically (all or nothing). An existing
        ``folder`` is replaced only if it holds nothing else: see :func:`spacegraph._atomic.atomic_dir`."""
        self.check_finite()
        folder = Path(folder)
        with atomic_dir(folder, own=OWN_FILES) as tmp:
            self._write_files(tmp)
        return folder

    def _write_files(self, folder: Path) -> None:
        save_file(self._flat_state(), str(folder / WEIGHTS_FILE), metadata={"format": "spacegraph-bridge"})
        (folder / CARD_FILE).write_text(self.card.model_dump_json(indent=2), encoding="utf-8")

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """:meth:`save` plus a generated ``README.md`` model card (spaces and fingerprints, overlap, training config,
        data rows and licence, measured quality): the Hugging Face layout :meth:`push_to_hub` uploads."""
        self.check_finite()
        readme = bridge_readme(self.card)
        folder = Path(folder)
        with atomic_dir(folder, own=OWN_FILES) as tmp:
            self._write_files(tmp)
            (tmp / README_FILE).write_text(readme, encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Bridge:
        """:meth:`load` a bridge folder, given as a local folder or a Hub repo id (``org/name``) found through the
        huggingface_hub cache, or downloaded unless ``HF_HUB_OFFLINE`` is set."""
        files = (CARD_FILE, WEIGHTS_FILE)
        return cls.load(resolve_folder(folder_or_repo_id, files, what="bridge", revision=revision, cache_dir=cache_dir))

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None) -> Any:
        """Upload :meth:`save_pretrained`'s folder to the Hub model repo ``repo_id`` (created if missing) with
        ``huggingface_hub.HfApi.upload_folder``; returns its commit info."""
        with tempfile.TemporaryDirectory() as tmp:
            return push_folder(self.save_pretrained(Path(tmp) / "bridge"), repo_id, token=token, private=private)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Bridge:
        """Read a folder written by :meth:`save`: the card first, then the weights' names and shapes against it
        from the file's header (before anything is allocated), then every weight and BatchNorm statistic."""
        folder = Path(folder)
        recover_interrupted_save(folder)
        card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
        for path in (card_path, weights_path):
            if not path.is_file():
                raise SpacegraphFileNotFoundError(
                    f"{path} not found: a bridge folder holds {CARD_FILE} and {WEIGHTS_FILE}"
                )
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
        return bridge_html(self)


def read_card(path: Path) -> BridgeCard:
    """The bridge card at ``path``; every error names the file (and the field)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SpacegraphValueError(f"{path}: not a readable JSON bridge card ({err})") from err
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise SpacegraphValueError(
            f"{path}: bridge format {version} is newer than this spacegraph reads ({FORMAT_VERSION}); upgrade spacegraph"
        )
    try:
        return BridgeCard.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in err.errors())
        raise SpacegraphValueError(
            f"{err.error_count()} validation error(s) for bridge card {path}\n{problems}"
        ) from err


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
