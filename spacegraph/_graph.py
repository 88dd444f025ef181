"""The space graph: spaces are nodes; a connect bridge adds its joint space as a node with one edge per head
into it, an extend bridge one edge from its source into its frozen target.

A route from modality a to modality b follows head edges from a space that embeds a and from a space that
embeds b until both land in one common node. Paths of any length compose the same way, so joint spaces bridged
again, and chains of extend bridges, are multi-hop routes with no other data model. Each bridge's edge costs
``-log(quality)``; the planner picks the route whose bridges have the best product of measured qualities.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from ._bridge import Bridge, BridgeFeatures
from ._errors import NoRouteError, UnknownNameError
from ._features import FeatureStore
from ._joint import JointSpace
from ._modality import Modality, as_modality
from ._registry import get_bridge_method
from ._space import Space, SpaceSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leg:
    """How one modality reaches the route's common space: encode in ``space``, then apply each head in turn."""

    modality: Modality
    space: Space
    steps: tuple[tuple[Bridge, str], ...]  # (bridge, name of the space its head reads from)

    @property
    def path(self) -> list[str]:
        return [self.space.name, *(bridge.card.target for bridge, _ in self.steps)]

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

    @property
    def expected_quality(self) -> float:
        """Product of the measured qualities of the bridges used (1.0 for a route inside one space)."""
        return math.exp(-self.cost)

    def describe(self) -> str:
        bridges = ", ".join(f"{b.name!r} ({b.card.kind}, quality {b.card.score:.3f})" for b in self.bridges)
        return (
            f"{self.source.modality.value} and {self.target.modality.value} meet in {self.common_space!r} after "
            f"{self.hops} head(s); bridges: {bridges or 'none'}; expected quality {self.expected_quality:.3f}"
        )

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


@dataclass
class Plan:
    """Candidate routes between two modalities, best first, and why the first was chosen."""

    source: Modality
    target: Modality
    routes: list[Route]

    @property
    def chosen(self) -> Route:
        return self.routes[0]

    def explain(self) -> str:
        lines = [f"chosen: {self.chosen.describe()}"]
        for other in self.routes[1:]:
            weakest = min(other.bridges, key=lambda b: b.card.score, default=None)
            why = f"; its weakest bridge is {weakest.name!r} ({weakest.card.score:.3f})" if weakest else ""
            lines.append(f"passed over: {other.describe()}{why}")
        return "\n".join(lines)


class SpaceGraph:
    """Spaces joined by bridges. ``connect(a, b)`` returns the best :class:`Route` between two modalities.

    ``store`` (a :class:`FeatureStore` or a folder) caches the features of data registered with :meth:`add_data`,
    from which :meth:`train_missing` trains a bridge a route lacks.
    """

    def __init__(
        self,
        spaces: Iterable[Space] = (),
        bridges: Iterable[Bridge] = (),
        *,
        store: FeatureStore | str | os.PathLike | None = None,
    ) -> None:
        self._graph = nx.MultiDiGraph()
        self._bridges: dict[str, Bridge] = {}
        self._data: dict[Modality, tuple[str, Any]] = {}
        self.store = store if isinstance(store, FeatureStore) or store is None else FeatureStore(store)
        for space in spaces:
            self.add_space(space)
        for bridge in bridges:
            self.add_bridge(bridge)

    # -- building -------------------------------------------------------------------------------------------
    def add_space(self, space: Space) -> Space:
        if not isinstance(space, Space):
            raise TypeError(f"add_space takes a spacegraph.Space, got {type(space).__name__}")
        self._add_node(space, joint=False)
        return space

    def _add_node(self, space: Space, *, joint: bool) -> None:
        if space.name in self._graph:
            raise ValueError(f"the graph already has a node named {space.name!r}")
        self._graph.add_node(space.name, space=space, joint=joint, modalities=space.modalities)

    def add_bridge(self, bridge: Bridge) -> Bridge:
        """Add a trained bridge; its spaces must be in the graph with the same weights it was trained on."""
        if bridge.name in self._bridges:
            raise ValueError(f"the graph already has a bridge named {bridge.name!r}; a bridge is added once")
        for name in bridge.space_names:
            if name not in self._graph:
                raise UnknownNameError(
                    f"bridge {bridge.name!r} reads from space {name!r}, which is not in the graph; add that space first"
                )
            bridge.check_space(self.node_spec(name))
        if bridge.card.kind == "connect":
            self._add_node(JointSpace(bridge, [self.space(n) for n in bridge.space_names]), joint=True)
        for name in bridge.card.headed_spaces:
            self._graph.add_edge(name, bridge.card.target, bridge=bridge, cost=bridge.card.cost)
        self._bridges[bridge.name] = bridge
        return bridge

    def add_data(self, modality: str | Modality, name: str, inputs: Any) -> None:
        """Register unpaired data of one modality (an overlap corpus or a memory) for :meth:`train_missing`."""
        self._data[as_modality(modality)] = (name, inputs)

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
        """Train a bridge between nodes ``x`` and ``y`` (spaces or joint spaces) through modality ``via`` from
        cached features, and add it. With ``config={"kind": "extend"}``, ``y`` is the frozen target."""
        trainer = get_bridge_method(method)()
        bridge = trainer.train(
            self.node_spec(x), self.node_spec(y), via, features, config, name=name, show_progress_bar=show_progress_bar
        )
        return self.add_bridge(bridge)

    # -- looking ----------------------------------------------------------------------------------------------
    def space(self, name: str) -> Space:
        """A space or a joint space (a :class:`JointSpace`) by name."""
        return self._node(name)["space"]

    def node_spec(self, name: str) -> SpaceSpec:
        return self.space(name).spec

    @property
    def spaces(self) -> list[Space]:
        """The spaces added with :meth:`add_space` (joint spaces not included)."""
        return [data["space"] for _, data in self._graph.nodes(data=True) if not data["joint"]]

    @property
    def joint_spaces(self) -> list[JointSpace]:
        return [data["space"] for _, data in self._graph.nodes(data=True) if data["joint"]]

    @property
    def bridges(self) -> list[Bridge]:
        return list(self._bridges.values())

    @property
    def modalities(self) -> list[Modality]:
        return sorted({m for space in self.spaces for m in space.modalities}, key=lambda m: m.value)

    def _node(self, name: str) -> dict[str, Any]:
        if name not in self._graph:
            raise UnknownNameError(
                f"no space or joint space named {name!r}; the graph has: {', '.join(self._graph) or '(none)'}"
            )
        return self._graph.nodes[name]

    # -- routing ----------------------------------------------------------------------------------------------
    def _entries(self, modality: Modality) -> list[str]:
        entries = [space.name for space in self.spaces if modality in space.modalities]
        if not entries:
            have = ", ".join(m.value for m in self.modalities) or "(none)"
            raise NoRouteError(f"no space in the graph embeds {modality.value!r}; the graph's modalities: {have}")
        return entries

    def _reach(self, modality: Modality) -> tuple[dict[str, float], dict[str, list[str]]]:
        """Cost and cheapest path to every node reachable from any space that embeds ``modality``."""
        return nx.multi_source_dijkstra(self._graph, self._entries(modality), weight="cost")

    def leg(self, modality: str | Modality, path: list[str]) -> Leg:
        """The leg that embeds ``modality`` in ``path[0]`` and follows head edges along ``path``."""
        missing = [(u, v) for u, v in zip(path, path[1:]) if not self._graph.has_edge(u, v)]
        if path[0] not in self._graph or missing:
            raise NoRouteError(f"no head edges along {path}: missing {missing or path[:1]}")
        return self._leg(as_modality(modality), path)

    def _leg(self, modality: Modality, path: list[str]) -> Leg:
        steps = []
        for u, v in zip(path, path[1:]):
            edge = min(self._graph.get_edge_data(u, v).values(), key=lambda e: e["cost"])
            steps.append((edge["bridge"], u))
        return Leg(modality, self.space(path[0]), tuple(steps))

    def plan(self, a: str | Modality, b: str | Modality, *, max_routes: int = 5) -> Plan:
        """The candidate routes between ``a`` and ``b`` (one per common node, cheapest legs), best first."""
        a, b = as_modality(a), as_modality(b)
        (cost_a, paths_a), (cost_b, paths_b) = self._reach(a), self._reach(b)

        def total(node: str) -> float:
            # Both legs into a joint node end with one head each of the same bridge: count that bridge once.
            shared = self._graph.nodes[node]["space"].bridge.card.cost if self._graph.nodes[node]["joint"] else 0.0
            return cost_a[node] + cost_b[node] - shared

        common = sorted(cost_a.keys() & cost_b.keys(), key=lambda n: (round(total(n), 9), n))
        routes = [Route(self._leg(a, paths_a[n]), self._leg(b, paths_b[n])) for n in common[:max_routes]]
        return Plan(a, b, sorted(routes, key=lambda r: (round(r.cost, 9), r.hops, r.common_space)))

    def routes(self, a: str | Modality, b: str | Modality) -> list[Route]:
        return self.plan(a, b).routes

    def connect(self, a: str | Modality, b: str | Modality, *, train_missing: bool = False, **train: Any) -> Route:
        """The best route embedding modalities ``a`` and ``b`` into one space. With ``train_missing=True``, a
        missing bridge is trained first from data registered with :meth:`add_data` (see :meth:`train_missing`)."""
        plan = self.plan(a, b)
        if not plan.routes and train_missing:
            self.train_missing(a, b, **train)
            plan = self.plan(a, b)
        if not plan.routes:
            raise NoRouteError(
                f"no chain of bridges joins {as_modality(a).value!r} and {as_modality(b).value!r}. "
                f"Connected parts of the graph: {self._components()}. Train or add a bridge between them "
                "(or register data with add_data and pass train_missing=True)."
            )
        return plan.chosen

    def train_missing(
        self, a: str | Modality, b: str | Modality, *, config: Any = None, show_progress_bar: bool = True
    ) -> Bridge:
        """Train the one connect bridge that joins what ``a`` reaches with what ``b`` reaches, through a modality
        both sides have and whose data was registered; memories of the other modalities are used where
        registered (otherwise the bridge trains on native pairs only)."""
        if self.store is None:
            raise ValueError("train_missing needs a feature cache: SpaceGraph(..., store=FeatureStore(folder))")
        x, y, via = self._missing_link(as_modality(a), as_modality(b))
        features = self._link_features(x, y, via)
        overrides = {"kind": "connect", "use_memory": features.memory_x is not None and features.memory_y is not None}
        config = {**(config or {}), **overrides}
        logger.info("training the missing bridge %s <-%s-> %s", x, via.value, y)
        return self.train_bridge(x, y, via=via, features=features, config=config, show_progress_bar=show_progress_bar)

    def _missing_link(self, a: Modality, b: Modality) -> tuple[str, str, Modality]:
        (_, paths_a), (_, paths_b) = self._reach(a), self._reach(b)
        candidates = [
            (len(paths_a[x]) + len(paths_b[y]), x, y, m)
            for x in paths_a
            for y in paths_b
            if x != y
            for m in self._graph.nodes[x]["modalities"]
            if m in self._graph.nodes[y]["modalities"] and m in self._data
        ]
        if not candidates:
            registered = ", ".join(m.value for m in self._data) or "none"
            raise NoRouteError(
                f"no bridge can be trained to join {a.value!r} and {b.value!r}: register (add_data) data of a "
                f"modality shared by a space {a.value!r} reaches and one {b.value!r} reaches; registered: {registered}"
            )
        _, x, y, via = min(candidates, key=lambda c: (c[0], c[1], c[2], c[3].value))
        return x, y, via

    def _link_features(self, x: str, y: str, via: Modality) -> BridgeFeatures:
        def encode(node: str, modality: Modality) -> torch.Tensor:
            name, inputs = self._data[modality]
            return self.store.encode(self.space(node), modality, name, inputs)

        def memory(node: str) -> torch.Tensor | None:
            others = [m for m in self._graph.nodes[node]["modalities"] if m != via and m in self._data]
            return encode(node, others[0]) if others else None

        return BridgeFeatures(encode(x, via), encode(y, via), memory(x), memory(y))

    def _components(self) -> str:
        parts = []
        for nodes in nx.weakly_connected_components(self._graph):
            mods = sorted({m.value for n in nodes for m in self._graph.nodes[n]["modalities"]})
            parts.append(f"[{', '.join(sorted(nodes))}] with {{{', '.join(mods)}}}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"SpaceGraph(spaces={[s.name for s in self.spaces]}, bridges={[b.name for b in self.bridges]})"
