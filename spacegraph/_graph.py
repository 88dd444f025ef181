"""The space graph: spaces are nodes; a connect bridge adds its joint space as a node with one edge per head
into it, an extend bridge one edge from its source into its frozen target.

A route from modality a to modality b follows head edges from a space that embeds a and from a space that
embeds b until both land in one common node (see :mod:`spacegraph._planner`). Paths of any length compose the
same way, so joint spaces bridged again, and chains of extend bridges, are multi-hop routes with no other data
model. Each bridge's edge costs ``-log(quality)``; the planner picks the route whose bridges have the best product
of measured qualities.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np
import torch

from . import _graph_artifact
from ._arguments import checked_arguments
from ._bridge import Bridge, BridgeCard, BridgeFeatures
from ._checks import check_count
from ._ensemble import RouteEnsemble
from ._errors import NoRouteError, SpacegraphError, SpacegraphTypeError, SpacegraphValueError, UnknownNameError
from ._eval import pair_threshold
from ._features import FeatureStore
from ._hub import HubDownload
from ._joint import JointSpace
from ._method import choose_by_quality, pick_method
from ._modality import Modality, as_modality
from ._planner import Adjacency, End, Plan, leg_along, parse_end, plan_routes
from ._probe import Probe, measure
from ._probe import calibrate as calibrate_bridges
from ._quality import EstimateData
from ._registry import get_bridge_method
from ._route import ROLES, Leg, Route
from ._route_quality import chain_estimate_data, route_chain, route_key, score_route, shortest_chain
from ._space import Space, SpaceSpec

logger = logging.getLogger(__name__)
AUTO_ENSEMBLE_SIZES = (2, 3)  # the ensembles connect(ensemble="auto") weighs against the best route


class SpaceGraph:
    """Spaces joined by bridges. ``connect(a, b)`` returns the best :class:`Route` between two modalities.

    ``store`` (a :class:`FeatureStore` or a folder) caches the features of data registered with :meth:`add_data`,
    from which :meth:`train_missing` trains a bridge a route lacks.
    """

    @checked_arguments
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
        self._adjacency_cache: tuple[int, list[BridgeCard], Adjacency] | None = None
        # route key (see spacegraph._route_quality.route_key) -> its route-level estimate; JSON-serialisable
        self._route_estimates: dict[str, dict[str, float]] = {}
        self._chain_data: dict[str, EstimateData] = {}  # a chain's memories and labels, shared by its routes
        for space in spaces:
            self.add_space(space)
        for bridge in bridges:
            self.add_bridge(bridge)

    # -- building -------------------------------------------------------------------------------------------
    def add_space(self, space: Space) -> Space:
        if not isinstance(space, Space):
            raise SpacegraphTypeError(f"add_space takes a spacegraph.Space, got {type(space).__name__}")
        self._add_node(space, joint=False)
        self._forget_estimates()  # a new space may shorten the chains routes are scored along
        return space

    def _add_node(self, space: Space, *, joint: bool) -> None:
        if space.name in self._graph:
            raise SpacegraphValueError(f"the graph already has a node named {space.name!r}")
        self._graph.add_node(space.name, space=space, joint=joint, modalities=space.modalities)

    @checked_arguments
    def add_bridge(self, bridge: Bridge) -> Bridge:
        """Add a trained bridge; its spaces must be in the graph with the same weights it was trained on."""
        if bridge.name in self._bridges:
            raise SpacegraphValueError(f"the graph already has a bridge named {bridge.name!r}; a bridge is added once")
        cost = bridge.card.cost
        for name in bridge.space_names:
            if name not in self._graph:
                raise UnknownNameError(
                    f"bridge {bridge.name!r} reads from space {name!r}, which is not in the graph; add that space first"
                )
            bridge.check_space(self.node_spec(name))
        if bridge.card.kind == "connect":
            self._add_node(JointSpace(bridge, [self.space(n) for n in bridge.space_names]), joint=True)
        for name in bridge.card.headed_spaces:
            self._graph.add_edge(name, bridge.card.target, bridge=bridge, cost=cost)
        self._bridges[bridge.name] = bridge
        return bridge

    def add_data(self, modality: str | Modality, name: str, inputs: Any) -> None:
        """Register unpaired data of one modality (an overlap corpus or a memory) for :meth:`train_missing` and
        for the route estimates (:meth:`estimate`), which are measured again on the new data."""
        self._data[as_modality(modality)] = (name, inputs)
        self._forget_estimates()

    def _forget_estimates(self) -> None:
        self._route_estimates.clear()
        self._chain_data.clear()

    def train_bridge(
        self,
        x: str,
        y: str,
        *,
        overlap: str | Modality | None = None,
        features: BridgeFeatures,
        method: str = "cmcr",
        config: Any = None,
        name: str | None = None,
        show_progress_bar: bool = True,
        via: str | Modality | None = None,
    ) -> Bridge:
        """Train a bridge between nodes ``x`` and ``y`` (spaces or joint spaces) through the ``overlap`` modality
        from cached features with bridge method ``method``, and add it. ``config`` goes to the method as given
        (for ``cmcr``, ``{"kind": "extend"}`` makes ``y`` the frozen target). ``via`` is the deprecated name of
        ``overlap``."""
        if via is not None:
            warnings.warn("train_bridge(via=) is now train_bridge(overlap=)", DeprecationWarning, stacklevel=2)
            if overlap is not None and as_modality(overlap) != as_modality(via):
                raise SpacegraphValueError(f"overlap={overlap!r} and via={via!r} disagree; pass overlap only")
            overlap = via
        if overlap is None:
            raise SpacegraphTypeError("train_bridge needs overlap=, the modality both nodes read")
        trainer = get_bridge_method(method)()
        x_spec, y_spec = self.node_spec(x), self.node_spec(y)
        bridge = trainer.train(
            x_spec, y_spec, overlap, features, config, name=name, show_progress_bar=show_progress_bar
        )
        return self.add_bridge(bridge)

    @checked_arguments
    def evaluate(self, route: Route, probe: Probe, *, calibrate: bool = False) -> dict[str, Any]:
        """Measure ``route`` on a small labelled :class:`Probe` (retrieval mAP both ways, and the route's expected
        quality beside it). With ``calibrate=True`` the measured value replaces or scales the quality of the
        route's bridges (recorded on their cards with the probe's name) and the planner uses it from then on."""
        result = measure(route, probe)
        if calibrate:
            calibrate_bridges(route, probe, result["mAP"])  # new cards, which planning reads from now on
        return result

    @checked_arguments
    def pair_threshold(self, route: Route, probe: Probe | None = None) -> float:
        """A threshold on :meth:`Route.pair_scores` for calling a pair matched (Youden's J, see
        :func:`~spacegraph.pair_threshold`). With a labelled ``probe``: over all its source x target pairs, matched
        where the labels agree. Without one, label-free: over the memories of both ends taken through the route (the
        data of :meth:`estimate`), matched where their pseudo labels (from the overlap items they sit near) agree."""
        if probe is not None:
            embed = route.project if probe.features else route.encode
            scores = embed("source", probe.source_inputs) @ embed("target", probe.target_inputs).T
            same = np.asarray(probe.source_labels)[:, None] == np.asarray(probe.target_labels)[None, :]
            return pair_threshold(scores.flatten(), same.flatten())
        problem = self._unmeasurable(route)
        if problem is not None:
            raise SpacegraphValueError(f"no label-free threshold for {route!r}: {problem}; or pass a probe")
        data = self._chain_estimate_data(route)
        source_labels, target_labels = data.labels.levels[data.labels.k]
        scores = route.project("source", data.mx) @ route.project("target", data.my).T
        return pair_threshold(scores.flatten(), (source_labels[:, None] == target_labels[None, :]).flatten())

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
        entries = list(self._adjacency().entries.get(modality, ()))
        if not entries:
            have = ", ".join(m.value for m in self.modalities) or "(none)"
            raise NoRouteError(f"no space in the graph embeds {modality.value!r}; the graph's modalities: {have}")
        return entries

    def _end(self, end: str | Modality, pinned: str | None, role: str) -> End:
        """Check a pin (``source=``/``target=``, or ``"space:modality"``) against the spaces that embed its modality."""
        modality, pinned = parse_end(end, pinned, role)
        entries = self._entries(modality)
        if pinned is None or pinned in entries:
            return End(modality, entries if pinned is None else [pinned], pinned)
        accepted = f"spaces that embed {modality.value!r}: {', '.join(entries)}"
        if pinned not in self._graph:
            raise UnknownNameError(f"no space named {pinned!r} (the {role} space); {accepted}")
        if self._graph.nodes[pinned]["joint"]:
            raise SpacegraphValueError(
                f"{pinned!r} is a joint space; the {role} space must be added with add_space; {accepted}"
            )
        have = ", ".join(m.value for m in self.space(pinned).modalities)
        raise SpacegraphValueError(f"space {pinned!r} does not embed {modality.value!r}; it embeds: {have}; {accepted}")

    def _reach(self, entries: list[str]) -> tuple[dict[str, float], dict[str, list[str]]]:
        """Cost and cheapest path to every node reachable from any of ``entries``."""
        self._adjacency()  # the edge costs of the current cards
        return nx.multi_source_dijkstra(self._graph, entries, weight="cost")

    def _adjacency(self) -> Adjacency:
        """The graph as planning reads it, rebuilt (edge costs first) when a space or bridge was added, or a bridge
        given a new card (``bridge.card = ...``, as calibration does), since the last plan. Cards are frozen: the
        same card objects mean the same costs."""
        cards = [bridge.card for bridge in self._bridges.values()]
        cached = self._adjacency_cache
        if cached is None or cached[0] != len(self._graph) or not _same_objects(cached[1], cards):
            for _, _, edge in self._graph.edges(data=True):
                edge["cost"] = edge["bridge"].card.cost
            cached = self._adjacency_cache = (len(self._graph), cards, Adjacency.of(self._graph))
        return cached[2]

    @checked_arguments
    def leg(self, modality: str | Modality, path: list[str]) -> Leg:
        """The leg that embeds ``modality`` in ``path[0]`` and follows head edges along ``path``."""
        if not path:
            raise NoRouteError("a leg's path names at least its space: got an empty path")
        missing = [(u, v) for u, v in itertools.pairwise(path) if not self._graph.has_edge(u, v)]
        if path[0] not in self._graph or missing:
            raise NoRouteError(f"no head edges along {path}: missing {missing or path[:1]}")
        return leg_along(self._graph, as_modality(modality), path)

    @checked_arguments
    def plan(
        self,
        a: str | Modality,
        b: str | Modality,
        *,
        source: str | None = None,
        target: str | None = None,
        max_routes: int = 10,
    ) -> Plan:
        """The candidate routes between ``a`` and ``b``, best first (cheapest, then fewest heads, then names).

        Each candidate takes the cheapest legs from its entry spaces into its common node. The candidates: for
        every node reached from both sides, the cheapest route meeting there; for every entry space of ``a`` (a
        space that encodes ``a``), its cheapest route to any entry space of ``b``; for every entry space of ``b``,
        its cheapest from any of ``a``. A bridge whose joint space both legs end in counts once. ``source`` /
        ``target`` (or ``a`` / ``b`` written ``"space:modality"``) pin the space that encodes that end: it is then
        the only entry space on its side.

        ``max_routes`` bounds the list. The best route (least cost, then fewest heads, then names) is always kept. If
        every entry space's cheapest route fits as well, all of them are kept, and the best of the others fill the
        room left; if not, the ``max_routes`` best are kept."""
        check_count("max_routes", max_routes)
        a_end, b_end = self._end(a, source, "source"), self._end(b, target, "target")
        plan = plan_routes(self._graph, self._adjacency(), a_end, b_end, max_routes)
        for route in plan.routes:
            route.estimate = self._route_estimate(route, required=False)
        if any(route.estimate is not None for route in plan.routes):
            plan.routes.sort(key=lambda route: -route.expected_quality)  # stable: ties keep the planner's order
        return plan

    @checked_arguments
    def estimate(self, route: Route) -> dict[str, float]:
        """The label-free estimate of ``route`` as a whole (see :mod:`spacegraph._route_quality`): memories of both
        ends (the data registered with :meth:`add_data` for their modalities) taken through the whole route, scored
        against pseudo labels read from the registered data of each overlap it crosses. Cached per route (its legs'
        spaces and bridge weights); :meth:`plan` ranks by it and ``plan().explain()`` shows it. Keys as
        :meth:`EstimateData.score`, plus ``hops``."""
        found = self._route_estimate(route, required=True)
        assert found is not None, "required=True raises instead"
        return found

    def _route_estimate(self, route: Route, *, required: bool) -> dict[str, float] | None:
        """The cached or measured estimate of ``route``; None (or, if ``required``, an error saying why) where it
        cannot be measured, or where a probe calibrated one of its bridges (labels outrank the estimate)."""
        calibrated = any(bridge.card.calibration is not None for bridge in route.bridges)
        key = route_key(route)
        if not calibrated and key in self._route_estimates:
            return self._route_estimates[key]
        problem = "a probe calibrated one of its bridges; its quality is the probe's" if calibrated else None
        problem = problem or self._unmeasurable(route)
        if problem is not None:
            if required:
                raise SpacegraphValueError(f"cannot estimate {route!r}: {problem}")
            return None
        try:
            self._route_estimates[key] = score_route(route, self._chain_estimate_data(route))
        except SpacegraphError as err:  # e.g. registered data a space on the chain cannot encode
            if required:
                raise
            warnings.warn(f"the route estimate of {route!r} was not measured: {err}", stacklevel=3)
            return None
        return self._route_estimates[key]

    def _chain_estimate_data(self, route: Route) -> EstimateData:
        """The memories and chain labels ``route`` is scored on: those of the shortest chain between its ends'
        spaces, shared by every route between them."""
        own = route_chain(route, self.space)
        assert own is not None, "_unmeasurable refuses a route inside one space"
        chain = shortest_chain(own, self.spaces, self._data)
        key = chain.key([self._data[modality][0] for modality in chain.modalities])
        if key not in self._chain_data:
            self._chain_data[key] = chain_estimate_data(chain, self._registered_encoder())
        return self._chain_data[key]

    def _unmeasurable(self, route: Route) -> str | None:
        if isinstance(route, RouteEnsemble) and any(len(route.entry_spaces(role)) > 1 for role in ROLES):
            return "its members encode an end with different spaces, whose memories differ"
        chain = route_chain(route, self.space)
        if chain is None:
            return "it stays inside one space"
        missing = sorted({m.value for m in chain.modalities if m not in self._data})
        if missing:
            return f"register data of {', '.join(map(repr, missing))} with graph.add_data (its ends and overlaps)"
        if self.store is None:
            return "the graph needs a feature cache: SpaceGraph(..., store=FeatureStore(folder))"
        return None

    def _registered_encoder(self) -> Callable[[Space, Modality], torch.Tensor]:
        """Embeddings of the registered data of a modality by a space, through the store, each read once."""
        store = self.store
        assert store is not None, "_unmeasurable checks the store first"

        @functools.cache
        def encode(space: Space, modality: Modality) -> torch.Tensor:
            name, inputs = self._data[modality]
            return store.encode(space, modality, name, inputs)

        return encode

    def routes(
        self, a: str | Modality, b: str | Modality, *, source: str | None = None, target: str | None = None
    ) -> list[Route]:
        return self.plan(a, b, source=source, target=target).routes

    @checked_arguments
    def connect(
        self,
        a: str | Modality,
        b: str | Modality,
        *,
        source: str | None = None,
        target: str | None = None,
        train_missing: bool = False,
        ensemble: int | Literal["auto"] = 1,
        **train: Any,
    ) -> Route:
        """The best route embedding modalities ``a`` and ``b`` into one space. ``source`` / ``target`` (or
        ``"space:modality"``, e.g. ``connect("minilm:text", "image")``) pin the space that encodes ``a`` / ``b``.
        With ``train_missing=True``, a missing bridge is trained first from data registered with :meth:`add_data`
        (see :meth:`train_missing`). ``ensemble=k`` combines the ``k`` best routes into one
        :class:`RouteEnsemble` (weighted by their expected qualities; fewer where fewer exist); ``"auto"`` combines
        the best two or three only where the ensemble's own route estimate reads above the best route's 90% interval."""
        if ensemble != "auto":
            check_count("ensemble", ensemble)
        plan = self.plan(a, b, source=source, target=target)
        if not plan.routes and train_missing:
            self.train_missing(a, b, source=source, target=target, **train)
            plan = self.plan(a, b, source=source, target=target)
        if not plan.routes:
            a_end, b_end = self._end(a, source, "source"), self._end(b, target, "target")
            raise NoRouteError(
                f"no chain of bridges joins {a_end.label!r} and {b_end.label!r}. "
                f"Connected parts of the graph: {self._components()}. Train or add a bridge between them "
                "(or register data with add_data and pass train_missing=True)."
            )
        if ensemble == "auto":
            return self._auto_ensemble(plan.routes)
        return plan.chosen if ensemble == 1 or len(plan.routes) == 1 else self.ensemble(plan.routes[:ensemble])

    @checked_arguments
    def ensemble(self, routes: Sequence[Route], weights: Sequence[float] | None = None) -> RouteEnsemble:
        """``routes`` combined into one :class:`RouteEnsemble` (``weights``: by their expected qualities if None),
        with its own route estimate where one can be measured (see :meth:`estimate`)."""
        combined = RouteEnsemble(routes, weights)
        combined.estimate = self._route_estimate(combined, required=False)
        return combined

    def _auto_ensemble(self, ranked: list[Route]) -> Route:
        """The best route, or the ensemble of the best two or three whose route estimate reads above the best
        route's 90% interval (:func:`pick_method`, as ``method="auto"`` weighs methods): only measured estimates
        decide, and without them the best route is kept."""
        best = ranked[0]
        if best.estimate is None:
            return best
        tried = {size: self.ensemble(ranked[:size]) for size in AUTO_ENSEMBLE_SIZES if size <= len(ranked)}
        candidates: dict[str, Route] = {"best route": best}
        candidates.update((f"ensemble of {size}", e) for size, e in tried.items() if e.estimate is not None)
        values = {name: route.expected_quality for name, route in candidates.items()}
        choice = pick_method(values, intervals={"best route": best.quality_interval}, default="best route")
        return candidates[choice["chosen"]]

    def train_missing(
        self,
        a: str | Modality,
        b: str | Modality,
        *,
        source: str | None = None,
        target: str | None = None,
        method: str = "cmcr",
        config: Any = None,
        show_progress_bar: bool = True,
    ) -> Bridge:
        """Train the one bridge that joins what ``a`` reaches with what ``b`` reaches (from the pinned spaces only,
        where pinned as in :meth:`connect`), through a modality both sides have and whose data was registered, with
        bridge method ``method`` and its ``config`` as given (``cmcr`` trains a connect bridge by default). The
        features of a registered modality other than the overlap are passed as memories where a side has one.

        ``method="auto"`` trains every method of :attr:`AUTO_METHODS` on those features and adds one
        (:func:`choose_by_quality`: cmcr, unless another's label-free estimate lies above cmcr's interval); its
        ``card.training["auto"]`` records each candidate's value, the choice and why. Its ``config`` is None or a
        dict of configs keyed by candidate, e.g. ``{"cmcr": {"steps": 300}}``."""
        if self.store is None:
            raise SpacegraphValueError(
                "train_missing needs a feature cache: SpaceGraph(..., store=FeatureStore(folder))"
            )
        auto_configs = self._auto_configs(config) if method == "auto" else None  # checked before anything is encoded
        x, y, overlap = self._missing_link(self._end(a, source, "source"), self._end(b, target, "target"))
        features = self._link_features(x, y, overlap)
        logger.info("training the missing bridge %s <-%s-> %s with %s", x, overlap.value, y, method)
        if auto_configs is not None:
            return self._train_best(x, y, overlap, features, auto_configs, show_progress_bar)
        return self.train_bridge(
            x, y, overlap=overlap, features=features, method=method, config=config, show_progress_bar=show_progress_bar
        )

    # The candidates of train_missing(method="auto"), cheapest first: a config error in one stops it early.
    AUTO_METHODS = ("procrustes", "text-pivot", "cmcr")

    @classmethod
    def _auto_configs(cls, config: Any) -> dict[str, Any]:
        """``config`` of ``method="auto"``: None, or a dict whose keys are candidate methods."""
        accepted = f"None or a dict keyed by candidate method ({', '.join(cls.AUTO_METHODS)}), e.g. {{'cmcr': {{}}}}"
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise SpacegraphTypeError(f"method='auto' takes config={accepted}; got {type(config).__name__}")
        unknown = [key for key in config if key not in cls.AUTO_METHODS]
        if unknown:
            raise SpacegraphValueError(f"method='auto': config keys {unknown} are not candidates; config is {accepted}")
        return config

    def _train_best(
        self,
        x: str,
        y: str,
        overlap: Modality,
        features: BridgeFeatures,
        configs: dict[str, Any],
        show_progress_bar: bool,
    ) -> Bridge:
        """Train every candidate on ``features`` (none added to the graph) and add the best (see
        :func:`choose_by_quality`), its card's training recording the choice under ``"auto"``."""
        x_spec, y_spec = self.node_spec(x), self.node_spec(y)
        bridges = {
            method: get_bridge_method(method)().train(
                x_spec, y_spec, overlap, features, configs.get(method), show_progress_bar=show_progress_bar
            )
            for method in self.AUTO_METHODS
        }
        choice = choose_by_quality({method: bridge.card for method, bridge in bridges.items()})
        bridge = bridges[choice["chosen"]]
        bridge.card = bridge.card.model_copy(update={"training": {**bridge.card.training, "auto": choice}})
        return self.add_bridge(bridge)

    def _missing_link(self, a: End, b: End) -> tuple[str, str, Modality]:
        (_, paths_a), (_, paths_b) = self._reach(a.entries), self._reach(b.entries)
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
                f"no bridge can be trained to join {a.label!r} and {b.label!r}: register (add_data) data of a "
                f"modality shared by a space {a.label!r} reaches and one {b.label!r} reaches; registered: {registered}"
            )
        _, x, y, overlap = min(candidates, key=lambda c: (c[0], c[1], c[2], c[3].value))
        return x, y, overlap

    def _link_features(self, x: str, y: str, overlap: Modality) -> BridgeFeatures:
        store = self.store
        assert store is not None, "train_missing checks the store first"

        def encode(node: str, modality: Modality) -> torch.Tensor:
            name, inputs = self._data[modality]
            return store.encode(self.space(node), modality, name, inputs)

        def memory(node: str) -> torch.Tensor | None:
            others = [m for m in self._graph.nodes[node]["modalities"] if m != overlap and m in self._data]
            return encode(node, others[0]) if others else None

        return BridgeFeatures(encode(x, overlap), encode(y, overlap), memory(x), memory(y))

    def _components(self) -> str:
        parts = []
        for nodes in nx.weakly_connected_components(self._graph):
            mods = sorted({m.value for n in nodes for m in self._graph.nodes[n]["modalities"]})
            parts.append(f"[{', '.join(sorted(nodes))}] with {{{', '.join(mods)}}}")
        return "; ".join(parts)

    # -- saving ---------------------------------------------------------------------------------------------
    @checked_arguments
    def save_pretrained(
        self,
        folder: str | os.PathLike,
        *,
        overwrite: bool = False,
        spaces: _graph_artifact.SpaceOverrides | None = None,
    ) -> Path:
        """Write the graph into ``folder`` atomically: ``graph.json`` (each space by reference: the plugin and
        arguments :func:`~spacegraph.load_space` built it from, see :func:`~spacegraph.space_reference`, and its
        fingerprint; the bridges' folders; the route estimates), each bridge's own save under ``bridges/``, a
        ``README.md`` model card and ``graph.png`` (with matplotlib). ``spaces`` names, by space, the
        ``(plugin, kwargs)`` that rebuild one ``load_space`` did not build. An existing ``folder`` is replaced only
        if it holds nothing but what a spacegraph save wrote there, unchanged, or if ``overwrite``."""
        return _graph_artifact.save_graph(self, folder, overwrite=overwrite, spaces=spaces)

    @classmethod
    @checked_arguments
    def from_pretrained(
        cls,
        folder_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
    ) -> SpaceGraph:
        """Load a graph saved by :meth:`save_pretrained` from a local folder or a Hub repo (``org/name``, options as
        in ``hf_hub_download``): each space rebuilt with :func:`~spacegraph.load_space` and refused
        (:class:`FingerprintMismatchError`) if its fingerprint differs, each bridge loaded and checked."""
        download = HubDownload(revision, cache_dir, token, force_download, local_files_only)
        return _graph_artifact.load_graph(cls, folder_or_repo_id, download)

    @checked_arguments
    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        spaces: _graph_artifact.SpaceOverrides | None = None,
    ) -> Any:
        """Upload :meth:`save_pretrained`'s folder to the Hub model repo ``repo_id`` (created if missing; options as
        in ``HfApi.upload_folder``); returns its commit info."""
        return _graph_artifact.push_graph(
            self,
            repo_id,
            spaces=spaces,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )

    def __repr__(self) -> str:
        return f"SpaceGraph(spaces={[s.name for s in self.spaces]}, bridges={[b.name for b in self.bridges]})"

    def _repr_html_(self) -> str:
        from . import _display

        return _display.graph_html(self)

    @checked_arguments
    def draw(self, ax: Any = None, *, route: Route | None = None) -> Any:
        """A matplotlib figure of the graph: its spaces, joint spaces and bridge heads, and dashed candidate edges
        between spaces that share a modality; ``route`` (from :meth:`connect`) drawn in red. Into ``ax`` if given;
        needs the ``notebook`` extra."""
        from . import _display

        if ax is not None and not callable(getattr(ax, "annotate", None)):
            raise SpacegraphTypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
        return _display.draw_graph(self, ax, route)


def _same_objects(old: list[Any], new: list[Any]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))
