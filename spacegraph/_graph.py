"""The space graph: spaces are nodes, bridges add a joint node and one edge per head into it.

A route from modality a to modality b follows head edges from a space that embeds a and from a space that
embeds b until both land in one common node. Paths of any length compose the same way, so joint spaces bridged
again (multi-hop) need no other data model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from ._bridge import Bridge, BridgeFeatures
from ._errors import NoRouteError, UnknownNameError
from ._modality import Modality, as_modality
from ._registry import get_bridge_method
from ._space import Space, SpaceSpec


@dataclass(frozen=True)
class Leg:
    """How one modality reaches the route's common space: encode in ``space``, then apply each head in turn."""

    modality: Modality
    space: Space
    steps: tuple[tuple[Bridge, str], ...]  # (bridge, name of the space its head reads from)

    @property
    def path(self) -> list[str]:
        return [self.space.name, *(bridge.name for bridge, _ in self.steps)]

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        for bridge, reads in self.steps:
            embeddings = bridge.project(reads, embeddings)
        return embeddings


class Route:
    """Embeds two modalities into one common space; ``encode`` and ``similarity`` work on raw inputs."""

    def __init__(self, source: Leg, target: Leg) -> None:
        self.legs = {source.modality: source, target.modality: target}
        self.source, self.target = source, target

    @property
    def common_space(self) -> str:
        return self.source.path[-1]

    @property
    def bridges(self) -> list[Bridge]:
        seen = {bridge.name: bridge for leg in (self.source, self.target) for bridge, _ in leg.steps}
        return list(seen.values())

    @property
    def hops(self) -> int:
        return len(self.source.steps) + len(self.target.steps)

    @property
    def cost(self) -> float:
        """Sum of ``-log(quality)`` over the distinct bridges used."""
        return sum(bridge.card.cost for bridge in self.bridges)

    def leg(self, modality: str | Modality) -> Leg:
        modality = as_modality(modality)
        if modality not in self.legs:
            have = ", ".join(m.value for m in self.legs)
            raise ValueError(f"this route embeds {have}, not {modality.value!r}")
        return self.legs[modality]

    def encode(self, modality: str | Modality, inputs: Any, **encode_kwargs: Any) -> torch.Tensor:
        """Embed raw ``inputs`` of ``modality`` into the common space (unit-norm rows)."""
        leg = self.leg(modality)
        return leg.project(leg.space.encode(modality, inputs, **encode_kwargs))

    def project(self, modality: str | Modality, embeddings: torch.Tensor) -> torch.Tensor:
        """Map embeddings already made by the leg's own space (e.g. cached features) into the common space."""
        return self.leg(modality).project(embeddings)

    def similarity(self, source_inputs: Any, target_inputs: Any, **encode_kwargs: Any) -> torch.Tensor:
        """Cosine similarities ``[n_source, n_target]`` between raw inputs of the two modalities."""
        a = self.encode(self.source.modality, source_inputs, **encode_kwargs)
        b = self.encode(self.target.modality, target_inputs, **encode_kwargs)
        return a @ b.T

    def __repr__(self) -> str:
        def show(leg: Leg) -> str:
            return f"{leg.modality.value}: " + " -> ".join(leg.path)

        return f"Route({show(self.source)} | {show(self.target)}; cost={self.cost:.3f})"


class SpaceGraph:
    """Spaces joined by bridges. ``connect(a, b)`` returns the best :class:`Route` between two modalities."""

    def __init__(self, spaces: Iterable[Space] = (), bridges: Iterable[Bridge] = ()) -> None:
        self._graph = nx.DiGraph()
        for space in spaces:
            self.add_space(space)
        for bridge in bridges:
            self.add_bridge(bridge)

    # -- building -------------------------------------------------------------------------------------------
    def add_space(self, space: Space) -> Space:
        if not isinstance(space, Space):
            raise TypeError(f"add_space takes a spacegraph.Space, got {type(space).__name__}")
        if space.name in self._graph:
            raise ValueError(f"the graph already has a node named {space.name!r}")
        self._graph.add_node(space.name, space=space, modalities=space.modalities)
        return space

    def add_bridge(self, bridge: Bridge) -> Bridge:
        """Add a trained bridge; its spaces must be in the graph with the same weights it was trained on."""
        if bridge.name in self._graph:
            raise ValueError(f"the graph already has a node named {bridge.name!r}; a bridge is added once")
        for name in bridge.space_names:
            if name not in self._graph:
                raise UnknownNameError(
                    f"bridge {bridge.name!r} reads from space {name!r}, which is not in the graph; add that space first"
                )
            bridge.check_space(self.node_spec(name))
        self._graph.add_node(bridge.name, bridge=bridge, modalities=bridge.card.modalities)
        for name in bridge.space_names:
            self._graph.add_edge(name, bridge.name, bridge=bridge, reads=name, cost=bridge.card.cost)
        return bridge

    def train_bridge(
        self,
        x: str,
        y: str,
        *,
        via: str | Modality,
        features: BridgeFeatures,
        method: str = "cmcr",
        config: Any = None,
        name: str | None = None,
        show_progress_bar: bool = True,
    ) -> Bridge:
        """Train a bridge between spaces ``x`` and ``y`` through modality ``via`` from cached features, and add it."""
        trainer = get_bridge_method(method)()
        bridge = trainer.train(
            self.node_spec(x), self.node_spec(y), via, features, config, name=name, show_progress_bar=show_progress_bar
        )
        return self.add_bridge(bridge)

    # -- looking ----------------------------------------------------------------------------------------------
    def space(self, name: str) -> Space:
        node = self._node(name)
        if "space" not in node:
            raise ValueError(f"{name!r} is the joint space of a bridge, not an encoder")
        return node["space"]

    def node_spec(self, name: str) -> SpaceSpec:
        return self.space(name).spec

    @property
    def spaces(self) -> list[Space]:
        return [data["space"] for _, data in self._graph.nodes(data=True) if "space" in data]

    @property
    def bridges(self) -> list[Bridge]:
        return [data["bridge"] for _, data in self._graph.nodes(data=True) if "bridge" in data]

    @property
    def modalities(self) -> list[Modality]:
        return sorted({m for space in self.spaces for m in space.modalities}, key=lambda m: m.value)

    def _node(self, name: str) -> dict[str, Any]:
        if name not in self._graph:
            raise UnknownNameError(
                f"no space or bridge named {name!r}; the graph has: {', '.join(self._graph) or '(none)'}"
            )
        return self._graph.nodes[name]

    # -- routing ----------------------------------------------------------------------------------------------
    def _entries(self, modality: Modality) -> list[Space]:
        entries = [space for space in self.spaces if modality in space.modalities]
        if not entries:
            have = ", ".join(m.value for m in self.modalities) or "(none)"
            raise NoRouteError(f"no space in the graph embeds {modality.value!r}; the graph's modalities: {have}")
        return entries

    def _leg(self, modality: Modality, space: Space, path: list[str]) -> Leg:
        steps = tuple((self._graph.edges[u, v]["bridge"], u) for u, v in zip(path, path[1:]))
        return Leg(modality, space, steps)

    def _legs(self, modality: Modality) -> dict[str, list[Leg]]:
        """For every node reachable from a space embedding ``modality``: the cheapest leg landing there."""
        legs: dict[str, list[Leg]] = {}
        for space in self._entries(modality):
            _, paths = nx.single_source_dijkstra(self._graph, space.name, weight="cost")
            for node, path in paths.items():
                legs.setdefault(node, []).append(self._leg(modality, space, path))
        return legs

    def routes(self, a: str | Modality, b: str | Modality) -> list[Route]:
        """Every candidate route between ``a`` and ``b`` (one per common space and entry pair), best first."""
        a, b = as_modality(a), as_modality(b)
        legs_a, legs_b = self._legs(a), self._legs(b)
        candidates = [
            Route(leg_a, leg_b)
            for node in legs_a.keys() & legs_b.keys()
            for leg_a in legs_a[node]
            for leg_b in legs_b[node]
        ]
        return sorted(candidates, key=lambda r: (round(r.cost, 9), r.hops, r.common_space))

    def connect(self, a: str | Modality, b: str | Modality) -> Route:
        """The best route embedding modalities ``a`` and ``b`` into one space."""
        routes = self.routes(a, b)
        if not routes:
            raise NoRouteError(
                f"no chain of bridges joins {as_modality(a).value!r} and {as_modality(b).value!r}. "
                f"Connected parts of the graph: {self._components()}. Train or add a bridge between them."
            )
        return routes[0]

    def _components(self) -> str:
        parts = []
        for nodes in nx.weakly_connected_components(self._graph):
            mods = sorted({m.value for n in nodes for m in self._graph.nodes[n]["modalities"]})
            parts.append(f"[{', '.join(sorted(nodes))}] with {{{', '.join(mods)}}}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"SpaceGraph(spaces={[s.name for s in self.spaces]}, bridges={[b.name for b in self.bridges]})"
