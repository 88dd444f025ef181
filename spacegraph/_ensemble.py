"""Several routes between the same two ends, used as one route.

Each end's embedding is the concatenation of its members' unit embeddings, member i's scaled by ``sqrt(w_i)``
(weights summing to 1): rows stay unit-norm, and the cosine similarity of two of them is the weighted mean of the
members' similarities. So everything a route does (encode, project, similarity, index, search) works unchanged
on the combined vectors, and an index of one ensemble refuses another, or one weighted differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._arguments import checked_arguments
from ._errors import SpacegraphValueError
from ._index import check_rows
from ._modality import Modality
from ._route import PROJECT_CHUNK, ROLES, Route
from ._space import Space


def quality_weights(routes: Sequence[Route]) -> list[float]:
    """Each route's weight: its expected quality over the sum of theirs (equal where all are 0)."""
    qualities = [max(route.expected_quality, 0.0) for route in routes]
    total = sum(qualities)
    return [q / total for q in qualities] if total > 0 else [1 / len(routes)] * len(routes)


class RouteEnsemble(Route):
    """``routes`` (two or more, between the same two modalities) combined with ``weights`` (default: by their
    expected qualities, :func:`quality_weights`). An end is named as on its first route."""

    @checked_arguments
    def __init__(self, routes: Sequence[Route], weights: Sequence[float] | None = None) -> None:
        routes = list(routes)
        _check_members(routes)
        weights = quality_weights(routes) if weights is None else [float(w) for w in weights]
        if len(weights) != len(routes) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise SpacegraphValueError(
                f"an ensemble takes one finite weight >= 0 per route, not all 0; got {weights} for {len(routes)} routes"
            )
        super().__init__(routes[0].source, routes[0].target)
        self.routes = routes
        self.weights = [w / sum(weights) for w in weights]

    @property
    def common_space(self) -> str:
        return "ensemble[" + " | ".join(route.common_space for route in self.routes) + "]"

    @property
    def bridges(self) -> list[Any]:
        seen = {bridge.name: bridge for route in self.routes for bridge in route.bridges}
        return list(seen.values())

    @property
    def hops(self) -> int:
        return max(route.hops for route in self.routes)

    @property
    def expected_quality(self) -> float:
        """The ensemble's own estimate where the graph measured it, else its members' weighted mean."""
        if self.estimate is not None:
            return self.estimate["estimate"]
        return sum(w * route.expected_quality for w, route in zip(self.weights, self.routes, strict=True))

    @property
    def quality_interval(self) -> tuple[float, float]:
        if self.estimate is not None:
            return self.estimate["estimate_low"], self.estimate["estimate_high"]
        intervals = [route.quality_interval for route in self.routes]
        low, high = (sum(w * i[side] for w, i in zip(self.weights, intervals, strict=True)) for side in (0, 1))
        return low, high

    @checked_arguments
    def end_identity(self, end: str | Modality) -> dict[str, Any]:
        role = self.role(end)
        return {
            "ensemble": [route.end_identity(role) for route in self.routes],
            "weights": self.weights,
            "modality": self._leg_of(role).modality.value,
            "space": self._leg_of(role).space.name,
        }

    @checked_arguments
    def entry_spaces(self, end: str | Modality) -> list[Space]:
        """The distinct spaces that encode ``end`` (named as in :meth:`leg`), over the members."""
        role = self.role(end)
        found = {route._leg_of(role).space.name: route._leg_of(role).space for route in self.routes}
        return list(found.values())

    @checked_arguments
    def encode(self, end: str | Modality, inputs: Any, **encode_kwargs: Any) -> torch.Tensor:
        """Raw ``inputs`` of one end, encoded once by each of its entry spaces, through every member route."""
        role = self.role(end)
        modality = self._leg_of(role).modality
        native = {space.name: space.encode(modality, inputs, **encode_kwargs) for space in self.entry_spaces(role)}
        return self._combined(role, native)

    @checked_arguments
    def project(self, end: str | Modality, embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings made by the end's entry space, through every member; all members must share that space."""
        role = self.role(end)
        spaces = self.entry_spaces(role)
        if len(spaces) > 1:
            names = ", ".join(space.name for space in spaces)
            raise SpacegraphValueError(
                f"the members of this ensemble encode its {role} end with different spaces ({names}): one tensor of "
                "embeddings cannot feed them all; pass raw inputs to encode instead"
            )
        return self._combined(role, {spaces[0].name: embeddings})

    def _combined(self, role: str, native: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [
            math.sqrt(weight) * route._leg_of(role).project(native[route._leg_of(role).space.name])
            for weight, route in zip(self.weights, self.routes, strict=True)
        ]
        return torch.cat(parts, dim=1)

    def _texts_through(self, role: str, texts: list[str]) -> torch.Tensor:
        parts = [
            math.sqrt(weight) * route._texts_through(role, texts)
            for weight, route in zip(self.weights, self.routes, strict=True)
        ]
        return torch.cat(parts, dim=1)

    def _embed(self, role: str, items: Any) -> torch.Tensor:
        if isinstance(items, torch.Tensor) and items.is_floating_point():
            space = self.entry_spaces(role)[0]
            what = f"{self._leg_of(role).modality.value} embeddings of space {space.name!r}"
            rows = check_rows(items, space.spec.dim, what)
            return torch.cat([self.project(role, chunk) for chunk in rows.split(PROJECT_CHUNK)])
        return self.encode(role, items)

    def __repr__(self) -> str:
        members = "; ".join(f"{w:.3f} x {route!r}" for w, route in zip(self.weights, self.routes, strict=True))
        return f"RouteEnsemble({members})"

    def describe(self) -> str:
        members = "\n".join(
            f"  weight {w:.3f}: {route.describe()}" for w, route in zip(self.weights, self.routes, strict=True)
        )
        return f"an ensemble of {len(self.routes)} routes, expected quality {self.expected_quality:.3f}:\n{members}"


def _check_members(routes: list[Route]) -> None:
    if len(routes) < 2 or not all(isinstance(route, Route) for route in routes):
        raise SpacegraphValueError(f"an ensemble combines two or more routes; got {len(routes)}")
    ends = {tuple(route._leg_of(role).modality for role in ROLES) for route in routes}
    if len(ends) > 1:
        raise SpacegraphValueError(f"an ensemble's routes join the same two modalities; these join {sorted(ends)}")
    if any(isinstance(route, RouteEnsemble) for route in routes):
        raise SpacegraphValueError("an ensemble's members are routes, not ensembles: combine their routes instead")
