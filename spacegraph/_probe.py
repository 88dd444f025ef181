"""Measuring a route on a small labelled probe, and calibrating its bridges' qualities with the result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._arguments import checked_arguments
from ._bridge import Calibration
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._eval import retrieval_metrics

if TYPE_CHECKING:
    from ._route import Route


@dataclass
class Probe:
    """A few labelled items of a route's two modalities: class labels (items of one class are relevant to each
    other) or, with :meth:`from_pairs`, true cross-modal pairs. ``features=True`` means the inputs are embeddings
    already made by each leg's own space (cached features), not raw inputs."""

    name: str
    source_inputs: Any
    source_labels: Sequence[int] | np.ndarray
    target_inputs: Any
    target_labels: Sequence[int] | np.ndarray
    features: bool = False

    @classmethod
    @checked_arguments
    def from_pairs(cls, name: str, source_inputs: Any, target_inputs: Any, *, features: bool = False) -> Probe:
        """Row i of ``source_inputs`` and of ``target_inputs`` are one true pair."""
        n_source, n_target = (
            _length(source_inputs, name, "source inputs"),
            _length(target_inputs, name, "target inputs"),
        )
        if n_source != n_target:
            raise SpacegraphValueError(
                f"a paired probe needs as many source as target items, got {n_source} and {n_target}"
            )
        return cls(name, source_inputs, np.arange(n_source), target_inputs, np.arange(n_target), features)

    def __post_init__(self) -> None:
        for side in ("source", "target"):
            inputs = _length(getattr(self, f"{side}_inputs"), self.name, f"{side} inputs")
            labels = _length(getattr(self, f"{side}_labels"), self.name, f"{side} labels")
            if inputs == 0 or inputs != labels:
                raise SpacegraphValueError(
                    f"probe {self.name!r}: {inputs} {side} inputs and {labels} {side} labels; "
                    "each side needs at least one item and one label per item"
                )


def _length(items: Any, probe: str, what: str) -> int:
    try:
        return len(items)
    except TypeError as err:
        raise SpacegraphTypeError(
            f"probe {probe!r}: its {what} must be a sequence, tensor or array of items, got {type(items).__name__}"
        ) from err


def measure(route: Route, probe: Probe) -> dict[str, Any]:
    """Retrieval metrics of the route on the probe, both directions; ``mAP`` is their mean. A probe whose two sides
    share no label has nothing to find and is refused before anything is encoded."""
    shared = np.intersect1d(np.asarray(probe.source_labels), np.asarray(probe.target_labels))
    if len(shared) == 0:
        raise SpacegraphValueError(
            f"probe {probe.name!r}: no source label is among the target labels, so no query has a relevant item "
            "and the route cannot be measured; label both sides by the same classes"
        )
    embed = route.project if probe.features else route.encode
    source = embed("source", probe.source_inputs)
    target = embed("target", probe.target_inputs)
    scores = source @ target.T
    forward = retrieval_metrics(scores, probe.source_labels, probe.target_labels)
    backward = retrieval_metrics(scores.T, probe.target_labels, probe.source_labels)
    return {
        "source_to_target": forward,
        "target_to_source": backward,
        "mAP": (forward["mAP"] + backward["mAP"]) / 2,
        "expected": route.expected_quality,
    }


def calibrate(route: Route, probe: Probe, measured: float) -> None:
    """Write the probe's verdict on every bridge of the route: a lone bridge takes the measured value; several
    share the measured/expected ratio evenly (each is scaled by its n-th root), so their product is the
    measured value (up to the [0, 1] bound)."""
    bridges = route.bridges
    if not bridges:
        raise SpacegraphValueError(f"{route!r} stays inside one space: it has no bridge to calibrate")
    expected = route.bridge_product
    ratio = (measured / expected) ** (1 / len(bridges)) if expected > 0 else 0.0
    for bridge in bridges:
        value = measured if len(bridges) == 1 else min(1.0, bridge.card.score * ratio)
        calibration = Calibration(
            probe=probe.name,
            route=repr(route),
            n_queries=len(probe.source_labels),
            n_gallery=len(probe.target_labels),
            route_measured=measured,
            route_expected=min(1.0, expected),
            value=value if math.isfinite(value) else 0.0,
            rule="measured" if len(bridges) == 1 else "scaled",
        )
        bridge.card = bridge.card.model_copy(update={"calibration": calibration})  # cards are frozen
