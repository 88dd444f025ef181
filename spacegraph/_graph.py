"""The space graph: spaces are nodes; a connect bridge adds its joint space as a node with one edge per head
into it, an extend bridge one edge from its source into its frozen target.

A route from modality a to modality b follows head edges from a space that embeds a and from a space that
embeds b until both land in one common node. Paths of any length compose the same way, so joint spaces bridged
again, and chains of extend bridges, are multi-hop routes with no other data model. Each bridge's edge costs
``-log(quality)``; the planner picks the route whose bridges have the best product of measured qualities. A
quality is checked to be a number in [0, 1] whenever a cost is taken from it, so no card can make a cost NaN or
negative.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import operator
import os
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from pydantic import ValidationError

from . import _display
from ._bridge import Bridge, BridgeCard, BridgeFeatures
from ._errors import NoRouteError, SpacegraphTypeError, SpacegraphValueError, UnknownNameError
from ._features import FeatureStore
from ._joint import JointSpace
from ._modality import Modality, as_modality
from ._probe import Probe, measure
from ._probe import calibrate as calibrate_bridges
from ._registry import get_bridge_method
from ._search import Backend, SearchIndex, SearchResult, index_route, load_route_index, search_route
from ._space import Space, SpaceSpec

logger = logging.getLogger(__name__)

Costs = dict[str, dict[str, float]]  # node -> {neighbour: cost of the cheapest head edge between them}
Label = tuple[float, int, str]  # (cost, heads, name that breaks ties), least first in tuple order
Found = tuple[float, int, str, str]  # a search's label at a node, then the node
Via = dict[str, "str | None"]  # node -> the neighbour a search reached it by (None at a start)
LegWalk = tuple[Via, str, bool]  # (a search's via, the node to walk from, whether the walk runs along the leg)
Triple = tuple[str, str, str]  # (common node, entry of a, entry of b)
Candidate = tuple[tuple[float, int, str, str, str], LegWalk, LegWalk]  # ((cost, heads, *triple), a's leg, b's leg)


def bridge_cost(bridge: Bridge) -> float:
    """A bridge's edge cost ``-log(quality)`` (>= 0), from its card validated again now: ``card.quality`` is a plain
    dict, so a card edited after it was read (a NaN, infinite, negative or above-1 quality) is refused here, with
    the bridge and the field named, instead of being ranked."""
    try:
        BridgeCard.model_validate(bridge.card.model_dump())
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in err.errors())
        raise SpacegraphValueError(f"bridge {bridge.name!r} has an invalid card: {problems}") from err
    return bridge.card.cost


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
        self.search_index: SearchIndex | None = None  # set by index / load_index, read by search

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
        return sum(bridge_cost(bridge) for bridge in self.bridges)

    @property
    def expected_quality(self) -> float:
        """Product of the qualities of the bridges used (1.0 for a route inside one space)."""
        return math.exp(-self.cost)

    def describe(self) -> str:
        bridges = ", ".join(
            f"{b.name!r} ({b.card.kind}, quality {b.card.score:.3f}, {b.card.score_source})" for b in self.bridges
        )
        a, b = (f"{leg.modality.value} (encoded by {leg.space.name!r})" for leg in (self.source, self.target))
        return (
            f"{a} and {b} meet in {self.common_space!r} after {self.hops} head(s); "
            f"bridges: {bridges or 'none'}; expected quality {self.expected_quality:.3f}"
        )

    def leg(self, modality: str | Modality) -> Leg:
        modality = as_modality(modality)
        if modality not in self.legs:
            have = ", ".join(m.value for m in self.legs)
            raise SpacegraphValueError(f"this route embeds {have}, not {modality.value!r}")
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

    def index(
        self,
        items: Any,
        *,
        modality: str | Modality | None = None,
        ids: Any = None,
        backend: Backend = "auto",
        **options: int,
    ) -> SearchIndex:
        """Index ``items`` of ``modality`` (default: the target side) in the common space, and keep the index for
        :meth:`search`. ``items``: raw inputs, or a float tensor of the leg's own space embeddings (e.g. from
        ``FeatureStore.load``). ``ids``: one int or string per item (default 0..n-1). ``backend``: ``"auto"``
        (exact up to 100k rows, else faiss/usearch if the ``search`` extra is installed), ``"exact"``,
        ``"faiss-hnsw"``, ``"faiss-ivf"`` or ``"usearch"``; ``options``: that backend's (see ``spacegraph._search``)."""
        return index_route(self, items, modality=modality, ids=ids, backend=backend, **options)

    def search(
        self, queries: Any, k: int = 10, *, modality: str | Modality | None = None, effort: int | None = None
    ) -> SearchResult:
        """The ``k`` best indexed items (``k`` capped at the index size) for each of ``queries`` of ``modality``
        (default: the side not indexed), raw or as the leg's space embeddings. Unpacks as ``scores, ids``."""
        return search_route(self, queries, k, modality=modality, effort=effort)

    def load_index(self, folder: str | os.PathLike) -> SearchIndex:
        """Load an index saved with ``SearchIndex.save`` for :meth:`search`, refusing one built for another route."""
        return load_route_index(self, folder)

    def __repr__(self) -> str:
        def show(leg: Leg) -> str:  # the entry as "space:modality", the form connect() takes to pin it
            return " -> ".join([f"{leg.space.name}:{leg.modality.value}", *leg.path[1:]])

        return f"Route({show(self.source)} | {show(self.target)}; cost={self.cost:.3f})"

    def _repr_html_(self) -> str:
        return _display.route_html(self)


def _rank(route: Route) -> tuple[float, int, str, str, str]:
    """Best first: cheapest, then fewest heads, then by name (common space, then entry spaces)."""
    return round(route.cost, 9), route.hops, route.common_space, route.source.space.name, route.target.space.name


@dataclass(frozen=True)
class _End:
    """One end of a route: its modality and the spaces that may encode it (only the pinned one, if any)."""

    modality: Modality
    entries: list[str]
    pinned: str | None

    @property
    def label(self) -> str:
        return f"{self.pinned}:{self.modality.value}" if self.pinned else self.modality.value


def _parse_end(end: str | Modality, pinned: str | None, role: str) -> tuple[Modality, str | None]:
    """The modality of ``end`` and the space pinned to encode it, by ``"space:modality"`` or by keyword."""
    named, _, modality = str(end).rpartition(":")
    if named and pinned is not None and named != pinned:
        raise SpacegraphValueError(
            f"{end!r} pins {named!r} but {role}={pinned!r}; name the {role} space once, either way"
        )
    return as_modality(modality), named or pinned


def _search(
    costs: Costs, starts: dict[str, Label], *, stop: Iterable[str] = (), within: Container[str] | None = None
) -> tuple[dict[str, Found], Via]:
    """Dijkstra from all ``starts`` at once, each with its own initial label. An edge adds its cost and one head and
    keeps the name, so each node gets the least ``(cost, heads, name)`` over all starts. Any real initial cost works
    (edge costs are >= 0; a constant added to every start changes nothing). ``within`` bounds the nodes visited;
    with ``stop``, the search ends once those nodes are settled, and only their labels are final."""
    heap = [(*label, node) for node, label in starts.items()]
    best = {found[3]: found for found in heap}
    via: Via = dict.fromkeys(starts)
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    waiting = set(stop)
    while heap:
        found = pop(heap)
        cost, heads, name, node = found
        if best[node] is not found:  # superseded by a better label, already settled
            continue
        if node in waiting:
            waiting.remove(node)
            if not waiting:
                break
        heads += 1
        for nxt, weight in costs[node].items():
            if within is not None and nxt not in within:
                continue
            label = (cost + weight, heads, name, nxt)
            if nxt not in best or label < best[nxt]:  # never true for a settled node: it is <= all popped since
                best[nxt] = label
                via[nxt] = node
                push(heap, label)
    return best, via


@dataclass(frozen=True)
class _Index:
    """What planning reads of the graph, built once per state of it: spaces and bridges are only ever added, and an
    edge's cost is set when its bridge is added."""

    forward: Costs  # u -> {v: cost of the cheapest head edge u -> v}
    backward: Costs  # v -> {u: the same}
    joints: dict[str, float]  # joint node -> the cost of its bridge, which both legs into it share (_shared_cost)
    entries: dict[Modality, list[str]]  # modality -> the spaces that embed it, in the order they were added


def _walk(leg: LegWalk) -> list[str]:
    """A leg's path: follow ``via`` from the node, back to the entry of a forward search (then reverse), or on to
    the common node of a backward one."""
    via, node, along = leg
    path = [node]
    step = via[node]
    while step is not None:
        path.append(step)
        step = via[step]
    return path if along else path[::-1]


def _keep(candidates: dict[Triple, Candidate], firsts: Iterable[Triple], max_routes: int) -> list[Candidate]:
    """What a plan keeps (see :meth:`SpaceGraph.plan`): the best; each entry space's best, if all of them fit;
    the best of the rest in the room left."""
    if not candidates:
        return []
    by_key = operator.itemgetter(0)
    best = min(candidates.values(), key=by_key)
    kept = {best[0][2:]: best, **{triple: candidates[triple] for triple in firsts}}
    if len(kept) > max_routes:
        return heapq.nsmallest(max_routes, candidates.values(), key=by_key)
    rest = (candidate for triple, candidate in candidates.items() if triple not in kept)
    return [*kept.values(), *heapq.nsmallest(max_routes - len(kept), rest, key=by_key)]


@dataclass
class Plan:
    """Candidate routes between two modalities, best first, and why the first was chosen."""

    source: Modality
    target: Modality
    routes: list[Route]

    @property
    def chosen(self) -> Route:
        return self.routes[0]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per candidate, best first: its entry spaces, meeting node, expected quality and bridges."""
        return [
            {
                "rank": rank,
                "expected_quality": route.expected_quality,
                "source_space": route.source.space.name,
                "target_space": route.target.space.name,
                "meets_in": route.common_space,
                "hops": route.hops,
                "bridges": [(b.name, b.card.kind, b.card.score, b.card.score_source) for b in route.bridges],
            }
            for rank, route in enumerate(self.routes, start=1)
        ]

    def explain(self) -> str:
        """The candidates as a table, each bridge with its quality and where that number comes from, and why the
        first was chosen. A route's expected quality is the product of its distinct bridges' qualities."""
        title = f"{self.source.value} -> {self.target.value}: {len(self.routes)} candidate route(s), best first"
        encode_a, encode_b = (f"encode {modality.value} with" for modality in (self.source, self.target))
        lines = [
            f"{title}; expected = product of the qualities of the bridges used",
            f"{'#':>2}  {'expected':>8}  {encode_a:24} {encode_b:24} {'hops':>4}  meets in",
        ]
        for row in self.rows():
            lines.append(
                f"{row['rank']:>2}  {row['expected_quality']:8.3f}  {row['source_space']:24} {row['target_space']:24} "
                f"{row['hops']:>4}  {row['meets_in']}"
            )
            lines += [f"{'':14}bridge {n!r} ({kind}): {q:.3f}, {src}" for n, kind, q, src in row["bridges"]]
        return "\n".join([*lines, self._verdict()])

    def _verdict(self) -> str:
        chosen = f"chosen: #1, expected quality {self.chosen.expected_quality:.3f}"
        if len(self.routes) == 1:
            return chosen + " (the only candidate)"
        runner_up = self.routes[1]
        weakest = min(runner_up.bridges, key=lambda b: b.card.score, default=None)
        why = f"; its weakest bridge is {weakest.name!r} at {weakest.card.score:.3f}" if weakest else ""
        return f"{chosen}, ahead of #2 at {runner_up.expected_quality:.3f}{why}"

    def _repr_html_(self) -> str:
        return _display.plan_html(self)


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
        self._index_cache: tuple[tuple[int, int], _Index] | None = None
        for space in spaces:
            self.add_space(space)
        for bridge in bridges:
            self.add_bridge(bridge)

    # -- building -------------------------------------------------------------------------------------------
    def add_space(self, space: Space) -> Space:
        if not isinstance(space, Space):
            raise SpacegraphTypeError(f"add_space takes a spacegraph.Space, got {type(space).__name__}")
        self._add_node(space, joint=False)
        return space

    def _add_node(self, space: Space, *, joint: bool) -> None:
        if space.name in self._graph:
            raise SpacegraphValueError(f"the graph already has a node named {space.name!r}")
        self._graph.add_node(space.name, space=space, joint=joint, modalities=space.modalities)

    def add_bridge(self, bridge: Bridge) -> Bridge:
        """Add a trained bridge; its spaces must be in the graph with the same weights it was trained on, and its
        card valid (a quality in [0, 1])."""
        if bridge.name in self._bridges:
            raise SpacegraphValueError(f"the graph already has a bridge named {bridge.name!r}; a bridge is added once")
        cost = bridge_cost(bridge)
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

    def evaluate(self, route: Route, probe: Probe, *, calibrate: bool = False) -> dict[str, Any]:
        """Measure ``route`` on a small labelled :class:`Probe` (retrieval mAP both ways, and the route's expected
        quality beside it). With ``calibrate=True`` the measured value replaces or scales the quality of the
        route's bridges (recorded on their cards with the probe's name) and the planner uses it from then on."""
        result = measure(route, probe)
        if calibrate:
            calibrate_bridges(route, probe, result["mAP"])
            for _, _, edge in self._graph.edges(data=True):
                edge["cost"] = bridge_cost(edge["bridge"])
            self._index_cache = None  # planning reads the new costs
        return result

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
        entries = list(self._index().entries.get(modality, ()))
        if not entries:
            have = ", ".join(m.value for m in self.modalities) or "(none)"
            raise NoRouteError(f"no space in the graph embeds {modality.value!r}; the graph's modalities: {have}")
        return entries

    def _end(self, end: str | Modality, pinned: str | None, role: str) -> _End:
        """Check a pin (``source=``/``target=``, or ``"space:modality"``) against the spaces that embed its modality."""
        modality, pinned = _parse_end(end, pinned, role)
        entries = self._entries(modality)
        if pinned is None or pinned in entries:
            return _End(modality, entries if pinned is None else [pinned], pinned)
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
        return nx.multi_source_dijkstra(self._graph, entries, weight="cost")

    def _index(self) -> _Index:
        """The graph as planning reads it, rebuilt when a space or bridge was added since the last plan."""
        state = (len(self._graph), len(self._bridges))
        cached = self._index_cache
        if cached is None or cached[0] != state:
            forward: Costs = {
                u: {v: min(edge["cost"] for edge in keyed.values()) for v, keyed in nbrs.items()}
                for u, nbrs in self._graph.adjacency()
            }
            backward: Costs = {node: {} for node in forward}
            for u, nbrs in forward.items():
                for v, cost in nbrs.items():
                    backward[v][u] = cost
            joints, entries = {}, defaultdict(list)
            for node, data in self._graph.nodes(data=True):
                if data["joint"]:
                    joints[node] = bridge_cost(data["space"].bridge)
                else:
                    for modality in data["space"].modalities:
                        entries[modality].append(node)
            cached = self._index_cache = (state, _Index(forward, backward, joints, dict(entries)))
        return cached[1]

    def _shared_cost(self, node: str) -> float:
        """Both legs into a joint node end with one head each of the same bridge: that bridge counts once."""
        data = self._graph.nodes[node]
        return bridge_cost(data["space"].bridge) if data["joint"] else 0.0

    def _meetings(self, entries_a: list[str], entries_b: list[str]) -> tuple[dict[Triple, Candidate], list[Triple]]:
        """The candidates of :meth:`plan` by ``(common node, entry of a, entry of b)``, and the triples of each entry
        space's best. At most four searches, whatever the number of entries: forwards from all of a's entries at once
        and from all of b's (each node's cheapest leg from either side, and the entry it starts from); then, for each
        side with more than one entry, backwards over the nodes that side reaches, from every common node at once,
        each starting at the other side's leg cost there less the shared bridge: that gives every entry its cheapest
        whole route (and the node where it meets the other side). Keys are ``(cost, heads, *triple)``, the cost by
        the shared-joint rule of :meth:`_shared_cost`, least first; ties go to fewer heads, then to names."""
        index = self._index()
        reach_a = _search(index.forward, {entry: (0.0, 0, entry) for entry in entries_a})
        reach_b = _search(index.forward, {entry: (0.0, 0, entry) for entry in entries_b})
        (found_a, via_a), (found_b, via_b) = reach_a, reach_b
        candidates: dict[Triple, Candidate] = {}
        starts_a: dict[str, Label] = {}  # the backward search for a's entries starts at each common node, so does b's
        starts_b: dict[str, Label] = {}
        for node in found_a.keys() & found_b.keys():  # each common node's cheapest meeting
            cost_a, heads_a, entry_a, _ = found_a[node]
            cost_b, heads_b, entry_b, _ = found_b[node]
            shared = index.joints.get(node, 0.0)  # as _shared_cost
            key = (round(cost_a + cost_b - shared, 9), heads_a + heads_b, node, entry_a, entry_b)
            candidates[node, entry_a, entry_b] = key, (via_a, node, False), (via_b, node, False)
            starts_a[node] = (cost_b - shared, heads_b, node)  # may be < 0 (an extend edge into a joint node): fine
            starts_b[node] = (cost_a - shared, heads_a, node)
        firsts: list[Triple] = []
        for side, entries, starts, (found, _), (other_found, other_via) in (
            (0, entries_a, starts_a, reach_a, reach_b),
            (1, entries_b, starts_b, reach_b, reach_a),
        ):
            if len(entries) == 1:  # one entry (a pin): its best is the best of all, which is always kept
                continue
            best, back = _search(index.backward, starts, stop=entries, within=found)
            for entry in entries:
                if entry not in best:  # it reaches nothing the other side reaches
                    continue
                cost, heads, node, _ = best[entry]
                other = other_found[node][2]
                own, theirs = (back, entry, True), (other_via, node, False)
                if side == 0:
                    triple, legs = (node, entry, other), (own, theirs)
                else:
                    triple, legs = (node, other, entry), (theirs, own)
                key = (round(cost, 9), heads, *triple)
                if triple not in candidates or key < candidates[triple][0]:
                    candidates[triple] = (key, *legs)
                firsts.append(triple)
        return candidates, firsts

    def leg(self, modality: str | Modality, path: list[str]) -> Leg:
        """The leg that embeds ``modality`` in ``path[0]`` and follows head edges along ``path``."""
        missing = [(u, v) for u, v in itertools.pairwise(path) if not self._graph.has_edge(u, v)]
        if path[0] not in self._graph or missing:
            raise NoRouteError(f"no head edges along {path}: missing {missing or path[:1]}")
        return self._leg(as_modality(modality), path)

    def _leg(self, modality: Modality, path: list[str]) -> Leg:
        steps = []
        for u, v in itertools.pairwise(path):
            edge = min(self._graph.get_edge_data(u, v).values(), key=lambda e: e["cost"])
            steps.append((edge["bridge"], u))
        return Leg(modality, self.space(path[0]), tuple(steps))

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
        if max_routes < 1:
            raise SpacegraphValueError(f"max_routes must be >= 1, got {max_routes}")
        a_end, b_end = self._end(a, source, "source"), self._end(b, target, "target")
        a, b = a_end.modality, b_end.modality
        kept = _keep(*self._meetings(a_end.entries, b_end.entries), max_routes)
        routes = [Route(self._leg(a, _walk(leg_a)), self._leg(b, _walk(leg_b))) for _, leg_a, leg_b in kept]
        return Plan(a, b, sorted(routes, key=_rank))

    def routes(
        self, a: str | Modality, b: str | Modality, *, source: str | None = None, target: str | None = None
    ) -> list[Route]:
        return self.plan(a, b, source=source, target=target).routes

    def connect(
        self,
        a: str | Modality,
        b: str | Modality,
        *,
        source: str | None = None,
        target: str | None = None,
        train_missing: bool = False,
        **train: Any,
    ) -> Route:
        """The best route embedding modalities ``a`` and ``b`` into one space. ``source`` / ``target`` (or
        ``"space:modality"``, e.g. ``connect("minilm:text", "image")``) pin the space that encodes ``a`` / ``b``.
        With ``train_missing=True``, a missing bridge is trained first from data registered with :meth:`add_data`
        (see :meth:`train_missing`)."""
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
        return plan.chosen

    def train_missing(
        self,
        a: str | Modality,
        b: str | Modality,
        *,
        source: str | None = None,
        target: str | None = None,
        config: Any = None,
        show_progress_bar: bool = True,
    ) -> Bridge:
        """Train the one connect bridge that joins what ``a`` reaches with what ``b`` reaches (from the pinned
        spaces only, where pinned as in :meth:`connect`), through a modality both sides have and whose data was
        registered; memories of the other modalities are used where registered (otherwise the bridge trains on
        native pairs only)."""
        if self.store is None:
            raise SpacegraphValueError(
                "train_missing needs a feature cache: SpaceGraph(..., store=FeatureStore(folder))"
            )
        x, y, via = self._missing_link(self._end(a, source, "source"), self._end(b, target, "target"))
        features = self._link_features(x, y, via)
        overrides = {"kind": "connect", "use_memory": features.memory_x is not None and features.memory_y is not None}
        config = {**(config or {}), **overrides}
        logger.info("training the missing bridge %s <-%s-> %s", x, via.value, y)
        return self.train_bridge(x, y, via=via, features=features, config=config, show_progress_bar=show_progress_bar)

    def _missing_link(self, a: _End, b: _End) -> tuple[str, str, Modality]:
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
        _, x, y, via = min(candidates, key=lambda c: (c[0], c[1], c[2], c[3].value))
        return x, y, via

    def _link_features(self, x: str, y: str, via: Modality) -> BridgeFeatures:
        store = self.store
        assert store is not None, "train_missing checks the store first"

        def encode(node: str, modality: Modality) -> torch.Tensor:
            name, inputs = self._data[modality]
            return store.encode(self.space(node), modality, name, inputs)

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

    def _repr_html_(self) -> str:
        return _display.graph_html(self)

    def draw(self, ax: Any = None) -> Any:
        """A matplotlib figure of the graph (networkx drawing), into ``ax`` if given; needs the ``notebook`` extra."""
        return _display.draw_graph(self, ax)
