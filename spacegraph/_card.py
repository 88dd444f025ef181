"""Bridge cards: the JSON that names a bridge's spaces, heads and quality, validated once and then frozen.

A card is checked when it is built or read, and never changes after: its fields refuse assignment, its mappings
refuse item edits, and its derived properties (``score``, ``cost``, ``modalities``...) are computed once. To change
a card, build a new one with :meth:`BridgeCard.model_copy` (``update=`` is validated like a new card) and give it
to the bridge (``bridge.card = new_card``).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from typing_extensions import Self

from ._arguments import checked_arguments
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality

if TYPE_CHECKING:
    from ._space import SpaceSpec

FORMAT_VERSION = 1
HeadArch = Literal["mlp2", "mlp1", "linear", "pivot"]
BridgeKind = Literal["connect", "extend"]
QUALITY_IN_UNIT_RANGE = (
    "score", "estimate", "estimate_low", "estimate_high", "expected_mAP", "expected_mAP_low", "expected_mAP_high",
    "held_out_R@1",
)  # fmt: skip
NAME_ACCEPTED = "a non-empty name without control characters, neither absolute nor holding a '.' or '..' component"

V = TypeVar("V")


class FrozenDict(dict[str, V]):
    """A dict that refuses edits: the mappings of a frozen card. It reads, compares and serialises as a dict."""

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise SpacegraphTypeError(
            "a bridge card is frozen: build a new one with card.model_copy(update={...}) and set bridge.card"
        )

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict[str, V]]]:  # copy and deepcopy rebuild it whole
        return type(self), (dict(self),)


def _frozen(mapping: dict[str, V]) -> FrozenDict[V]:
    return FrozenDict(mapping)


Frozen = Annotated[dict[str, V], AfterValidator(_frozen)]


MAX_DIM = 1 << 20  # a head's widths: far above any embedding, far below a size that cannot be allocated


PIVOT_FIELDS = ("anchors", "temperature")  # what a pivot head needs and every other head refuses


class HeadSpec(BaseModel):
    """A projector head; every one ends in L2 normalisation. ``mlp2`` is the released audio-visual C-MCR head
    (Linear-BN-ReLU-Linear-BN), ``mlp1`` the released 3D head (Linear-BN-ReLU), ``linear`` one affine map, and
    ``pivot`` a training-free lookup: the softmax (at ``temperature``) of an input's cosines to ``anchors`` key rows
    weighs their value rows. ``hidden_dim`` is read by ``mlp2`` only; ``anchors`` and ``temperature`` are given for
    ``pivot`` only, and left out of the JSON otherwise, so cards of the other heads read as they always did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: HeadArch = "mlp2"
    in_dim: int = Field(gt=0, le=MAX_DIM)
    hidden_dim: int = Field(default=1024, gt=0, le=MAX_DIM)
    out_dim: int = Field(gt=0, le=MAX_DIM)
    anchors: int | None = Field(None, gt=0, le=MAX_DIM, description="pivot: the key/value rows it looks up.")
    temperature: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="pivot: the temperature of the softmax over the anchors."
    )

    @model_validator(mode="after")
    def _pivot_fields_for_pivot_only(self) -> Self:
        given = [name for name in PIVOT_FIELDS if getattr(self, name) is not None]
        if self.arch == "pivot" and len(given) < len(PIVOT_FIELDS):
            missing = [name for name in PIVOT_FIELDS if name not in given]
            raise SpacegraphValueError(f"a pivot head needs {' and '.join(PIVOT_FIELDS)}; missing: {missing}")
        if self.arch != "pivot" and given:
            raise SpacegraphValueError(f"{given} are settings of pivot heads only; this head is {self.arch!r}")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_pivot_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key not in PIVOT_FIELDS or value is not None}


class SpaceRef(BaseModel):
    """The identity of a space a bridge was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    fingerprint: str = Field(min_length=1)
    dim: int = Field(gt=0)
    modalities: tuple[Modality, ...] = Field(min_length=1)

    @classmethod
    @checked_arguments
    def of(cls, spec: SpaceSpec) -> SpaceRef:
        return cls(name=spec.name, fingerprint=spec.fingerprint, dim=spec.dim, modalities=spec.modalities)


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

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    """Everything needed to rebuild, check and rank a bridge; validated when built or read, then frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = Field(FORMAT_VERSION, ge=1)
    library_version: str
    name: str = Field(description=f"The bridge's name (a connect bridge's joint space's too): {NAME_ACCEPTED}.")
    method: str
    kind: BridgeKind = Field(
        "connect",
        description="connect: both spaces get a head into a new joint space; extend: only the first space gets a "
        "head, into the second (the target), which stays frozen.",
    )
    spaces: tuple[SpaceRef, SpaceRef]
    overlap: Modality
    heads: Frozen[HeadSpec]
    training: Frozen[Any] = Field(default_factory=dict)
    data: Frozen[int] = Field(default_factory=dict, description="Row counts of the features it was trained on.")
    quality: Frozen[float] = Field(
        default_factory=dict,
        description="estimate: the label-free predicted retrieval quality (spacegraph._quality), which ranks bridges; "
        "expected_mAP: the same read as the mAP a labelled test would measure; held_out_R@1: "
        "item-level matching of held-out overlap data; score: a quality given by hand (it overrides the estimate).",
    )
    calibration: Calibration | None = Field(None, description="Set by SpaceGraph.evaluate(..., calibrate=True).")
    license: str | None = Field(
        None, description="The bridge's own licence (a Hugging Face licence id such as apache-2.0), for its card."
    )
    data_license: str | None = Field(None, description="The licence(s) of the data it was trained on, for its card.")

    @classmethod
    @checked_arguments
    def between(
        cls, x: SpaceSpec, y: SpaceSpec, *, heads: Mapping[str, HeadSpec], kind: BridgeKind = "connect", **fields: Any
    ) -> BridgeCard:
        """A card for a bridge from ``x`` to ``y`` made by this spacegraph; ``name`` defaults to ``x+y`` for
        connect and ``x->y`` for extend. ``fields`` are the other fields (``method`` and ``overlap`` at least)."""
        from . import __version__

        name = fields.pop("name", None) or (f"{x.name}+{y.name}" if kind == "connect" else f"{x.name}->{y.name}")
        refs = (SpaceRef.of(x), SpaceRef.of(y))
        return cls(library_version=__version__, name=name, kind=kind, spaces=refs, heads=dict(heads), **fields)

    @checked_arguments
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with ``update``, a new card validated like one read from disk (a plain pydantic copy would
        skip validation and keep the derived properties of the old one)."""
        if not update:
            return super().model_copy(deep=deep)
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return validated_card(type(self), {**fields, **update}, f"bridge card {self.name!r}")

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
        low, high = quality.get("estimate_low"), quality.get("estimate_high")
        if (low is None) != (high is None) or (low is not None and high is not None and low > high):
            raise SpacegraphValueError(
                f"quality: estimate_low {low} and estimate_high {high} must both be given, low <= high"
            )
        return quality

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_bridge_name(name)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
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

    @cached_property
    def headed_spaces(self) -> list[str]:
        """Names of the spaces that get a head: both for connect, the source for extend."""
        names = [ref.name for ref in self.spaces]
        return names if self.kind == "connect" else names[:1]

    @property
    def target(self) -> str:
        """The node both sides land in: the joint space (named as the bridge) or the extend target."""
        return self.name if self.kind == "connect" else self.spaces[1].name

    @cached_property
    def modalities(self) -> tuple[Modality, ...]:
        """The modalities of the joint space this bridge creates."""
        seen = dict.fromkeys(m for ref in self.spaces for m in ref.modalities)
        return tuple(seen)

    @cached_property
    def score(self) -> float:
        """The planner's quality in [0, 1], from the best source there is (see :attr:`score_source`)."""
        if self.calibration is not None:
            return self.calibration.value
        for key in ("score", "estimate"):
            if key in self.quality:
                return float(self.quality[key])
        return 1.0

    @cached_property
    def score_source(self) -> str:
        """Where :attr:`score` comes from, first found: a labelled probe, a score given by hand, the label-free
        estimate, or nothing (unmeasured bridges, such as imported checkpoints, count as 1.0)."""
        if self.calibration is not None:
            return f"probe {self.calibration.probe!r}"
        if "score" in self.quality:
            return "given"
        return "label-free estimate" if "estimate" in self.quality else "unmeasured"

    @cached_property
    def score_interval(self) -> tuple[float, float] | None:
        """How sure :attr:`score` is: the label-free estimate's 90% bootstrap interval (``estimate_low``,
        ``estimate_high``) where the score is that estimate; None for a probe's, a given or an unmeasured score."""
        if self.score_source != "label-free estimate" or "estimate_low" not in self.quality:
            return None
        return float(self.quality["estimate_low"]), float(self.quality["estimate_high"])

    @cached_property
    def cost(self) -> float:
        """The planner's edge cost ``-log(score)``, >= 0."""
        return -math.log(max(self.score, 1e-6))


Card = TypeVar("Card", bound=BridgeCard)


def validated_card(cls: type[Card], data: Any, where: object) -> Card:
    """``data`` validated as a ``cls``; a ValueError naming ``where`` and every field in error."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in err.errors())
        raise SpacegraphValueError(f"{err.error_count()} validation error(s) for {where}\n{problems}") from err


def read_card(path: Path) -> BridgeCard:
    """The bridge card at ``path``; every error names the file (and the field)."""
    data = read_versioned_json(path, "bridge", "bridge card", FORMAT_VERSION)
    return validated_card(BridgeCard, data, f"bridge card {path}")


def read_versioned_json(path: Path, kind: str, what: str, newest: int) -> Any:
    """The JSON at ``path`` (``what``: a ``kind`` "bridge card", say), refused naming the file where it cannot be
    read or its ``format_version`` is newer than ``newest``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; nested too deep
        raise SpacegraphValueError(f"{path}: not a readable JSON {what} ({err})") from err
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > newest:
        raise SpacegraphValueError(
            f"{path}: {kind} format {version} is newer than this spacegraph reads ({newest}); upgrade spacegraph"
        )
    return data
