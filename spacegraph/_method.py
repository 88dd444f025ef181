"""Bridge methods: the protocol :meth:`SpaceGraph.train_bridge` calls, and :class:`BridgeMethodBase`, which does
the start and end every method shares (config, checks, card, quality), so that a method writes only its training.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ValidationError
from tqdm.auto import trange

from ._arguments import checked_arguments
from ._bridge import Bridge, BridgeCard, BridgeFeatures, ProjectionHead
from ._distributed import rank_and_world_size
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality
from ._quality import Projection, heads_quality
from ._space import SpaceSpec
from ._stages import StageClock

ConfigT = TypeVar("ConfigT", bound=BaseModel)


@runtime_checkable
class BridgeMethod(Protocol):
    """What :meth:`SpaceGraph.train_bridge` calls: the registered factory is called with no arguments, then
    ``train(x, y, overlap, features, config, name=..., show_progress_bar=...)`` on the result.

    ``x`` and ``y`` are the specs of the two nodes (spaces or joint spaces), ``overlap`` the modality both read,
    ``features`` their cached features (checked with ``features.check(x, y)``), ``config`` whatever the user
    passed (None, a dict or the method's own config object). It returns a :class:`Bridge` whose card names
    ``x`` and ``y`` (``SpaceRef.of``) and ``overlap``. :class:`BridgeMethodBase` implements it.
    """

    name: str

    def train(
        self,
        x: SpaceSpec,
        y: SpaceSpec,
        overlap: str | Modality,
        features: BridgeFeatures,
        config: Any = None,
        *,
        name: str | None = None,
        show_progress_bar: bool = True,
    ) -> Bridge: ...


@dataclass
class TrainedHeads:
    """What :meth:`BridgeMethodBase.fit` returns: the trained heads and what the card should record of them."""

    head_x: ProjectionHead
    head_y: ProjectionHead | None = None  # None: an extend bridge, into y, which stays frozen
    held_out: torch.Tensor | None = None  # overlap rows kept out of training: measured for held_out_R@1
    record: dict[str, Any] = field(default_factory=dict)  # card.training, beside the config (e.g. a loss curve)
    quality: dict[str, float] = field(default_factory=dict)  # card.quality, beside what is measured


class BridgeMethodBase(ABC, Generic[ConfigT]):
    """A bridge method that writes only its training: subclass it, set ``name`` and ``config_class`` (a pydantic
    model of the method's settings) and implement :meth:`fit`.

    :meth:`train` resolves the config (None, a dict or a ``config_class``; unknown or invalid fields are refused,
    naming the accepted ones), checks that both spaces embed ``overlap`` and that the features match them, calls
    :meth:`fit`, measures the heads on ``features`` (:func:`measure_quality`: held-out matching and the label-free
    estimate the planner ranks by) and returns a :class:`Bridge` with a complete card. :func:`progress_range` gives
    ``fit`` a progress bar that respects ``show_progress_bar``.
    """

    name: ClassVar[str]
    config_class: type[ConfigT]

    @abstractmethod
    def fit(
        self, x: SpaceSpec, y: SpaceSpec, overlap: Modality, features: BridgeFeatures, config: ConfigT, *,
        show_progress_bar: bool,
    ) -> TrainedHeads:  # fmt: skip
        """Train the heads on ``features`` (checked against ``x`` and ``y``) with the resolved ``config``."""

    def train(
        self, x: SpaceSpec, y: SpaceSpec, overlap: str | Modality, features: BridgeFeatures, config: Any = None, *,
        name: str | None = None, show_progress_bar: bool = True,
    ) -> Bridge:  # fmt: skip
        """:class:`BridgeMethod`'s ``train``: checks, :meth:`fit`, quality, card."""
        settings = self.resolve_config(config)
        overlap = as_modality(overlap)
        check_pair(x, y, overlap)
        features.check(x, y)
        start = time.perf_counter()
        trained = self.fit(x, y, overlap, features, settings, show_progress_bar=show_progress_bar)
        heads = {x.name: trained.head_x.cpu().eval()}
        if trained.head_y is not None:
            heads[y.name] = trained.head_y.cpu().eval()
        clock = StageClock(self.name, show=show_progress_bar)
        measured = measure_quality(
            trained.head_x, trained.head_y, features, trained.held_out, method=self.name, clock=clock
        )
        card = BridgeCard.between(
            x,
            y,
            heads={space: head.spec for space, head in heads.items()},
            kind="connect" if trained.head_y is not None else "extend",
            name=name,
            method=self.name,
            overlap=overlap,
            training={**settings.model_dump(), **trained.record},
            data=features.counts(),
            quality={**measured, **trained.quality, "train_seconds": round(time.perf_counter() - start, 3)},
        )
        return Bridge.from_weights(card, {space: head.state_dict() for space, head in heads.items()})

    def resolve_config(self, config: Any) -> ConfigT:
        """``config`` as a validated ``config_class``: None is the defaults, a dict is validated."""
        model = self.config_class
        if isinstance(config, model):
            return config
        if config is not None and not isinstance(config, Mapping):
            raise SpacegraphTypeError(
                f"bridge method {self.name!r}: config is None, a dict or a {model.__name__}; got {type(config).__name__}"
            )
        try:
            return model.model_validate(dict(config or {}))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
            raise SpacegraphValueError(
                f"bridge method {self.name!r}: invalid config ({problems}); accepted fields: "
                f"{', '.join(model.model_fields)}"
            ) from err


@checked_arguments
def check_pair(x: SpaceSpec, y: SpaceSpec, overlap: Modality) -> None:
    """Refuse a bridge of a space with itself, or through a modality one of the two does not embed."""
    for spec in (x, y):
        if overlap not in spec.modalities:
            have = ", ".join(m.value for m in spec.modalities)
            raise SpacegraphValueError(
                f"space {spec.name!r} has no {overlap.value!r} to bridge through; it has: {have}"
            )
    if x.name == y.name:
        raise SpacegraphValueError(f"a bridge joins two different spaces; both sides are {x.name!r}")


@checked_arguments
def measure_quality(
    head_x: Projection,
    head_y: Projection | None,
    features: BridgeFeatures,
    held_out: torch.Tensor | None,
    *,
    method: str,
    clock: StageClock | None = None,
) -> dict[str, float]:
    """What a card's quality records of trained heads (see :func:`heads_quality`; ``head_y`` None: the frozen
    extend target; ``clock`` times its stages). If measuring fails (e.g. out of memory), a warning: the heads are
    kept, unmeasured, rather than lost."""
    rows = torch.zeros(0, dtype=torch.long) if held_out is None else held_out.cpu()
    try:
        return heads_quality(head_x, head_y or _unit_rows, features, rows, clock=clock)
    except (RuntimeError, MemoryError) as error:
        warnings.warn(
            f"{method} training finished but measuring the bridge's quality failed ({error}); the bridge is kept "
            "with its quality unmeasured: measure it with a probe (graph.evaluate) or estimate_quality",
            stacklevel=3,
        )
        return {}


def _unit_rows(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=-1)


@checked_arguments
def progress_range(total: int, label: str, *, show_progress_bar: bool = True) -> Any:
    """``range(total)`` under a progress bar named ``label``, shown when asked and on the first rank only."""
    return trange(total, desc=label, disable=not show_progress_bar or rank_and_world_size()[0] > 0)


DEFAULT_METHOD = "cmcr"  # what method="auto" keeps unless another is clearly better


def choose_by_quality(cards: dict[str, BridgeCard], *, default: str = DEFAULT_METHOD) -> dict[str, Any]:
    """The method ``method="auto"`` keeps among trained candidates (see :func:`pick_method`), read from the first
    measure every card has: the label-free estimate (which needs memories on both sides) with its interval, else
    held-out overlap matching, else the card's score."""
    measure = next((key for key in MEASURES if all(key in card.quality for card in cards.values())), "score")
    values = {method: float(card.quality.get(measure, card.score)) for method, card in cards.items()}
    intervals = {method: card.score_interval for method, card in cards.items()} if measure == "estimate" else {}
    return pick_method(
        values, measure, intervals={m: i for m, i in intervals.items() if i is not None}, default=default
    )


MEASURES = {
    "estimate": "label-free estimate",
    "held_out_R@1": "held-out overlap matching (held_out_R@1; no memories for a label-free estimate)",
}


def pick_method(
    values: dict[str, float],
    measure: str = "estimate",
    *,
    intervals: dict[str, tuple[float, float]] | None = None,
    default: str = DEFAULT_METHOD,
) -> dict[str, Any]:
    """The candidate of the highest value of ``measure`` (the earlier on a tie), and why: ``{"candidates",
    "chosen", "measure", "why"}``. Where ``default`` is a candidate with an interval, it is kept unless another's
    value lies above that interval: the estimate cannot rank candidates whose values it cannot tell apart, and it
    reads a text pivot's agreement with its own pseudo labels as quality (both read meaning through the overlap
    items), so a close call stays with the trained default."""
    label = MEASURES.get(measure, "card score (no candidate was measured)")
    interval = (intervals or {}).get(default) if default in values else None
    above = values if interval is None else {m: v for m, v in values.items() if v > interval[1]}
    if not above:
        low, high = interval or (0.0, 0.0)
        why = (
            f"{default} kept ({label} {values[default]:.3f}, 90% interval [{low:.3f}, {high:.3f}]): no other "
            f"candidate reads above that interval ({_others(values, default)})"
        )
        return {"candidates": values, "chosen": default, "measure": measure, "why": why}
    chosen = max(above, key=above.__getitem__)
    why = f"highest {label}: {values[chosen]:.3f}, ahead of {_others(values, chosen)}"
    if interval is not None:
        why += f"; above {default}'s 90% interval [{interval[0]:.3f}, {interval[1]:.3f}]"
    return {"candidates": values, "chosen": chosen, "measure": measure, "why": why}


def _others(values: dict[str, float], chosen: str) -> str:
    return ", ".join(f"{method} {value:.3f}" for method, value in values.items() if method != chosen)
