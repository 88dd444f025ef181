"""Planning: the candidate routes between two modalities, cheapest first.

Each bridge's head edge costs ``-log(quality)`` (the card's :attr:`~spacegraph.BridgeCard.cost`, checked in
[0, 1] when the card is built), so the cheapest route has the best product of measured qualities. A route's legs
follow head edges from a space that embeds each end until both land in one common node; a bridge whose joint
space both legs end in counts once. :func:`plan_routes` finds every candidate with at most four
:func:`_shortest_paths` runs (Dijkstra) over an :class:`Adjacency`, whatever the number of entry spaces.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ._errors import SpacegraphValueError
from ._modality import Modality, as_modality
from ._quality import EXPECTED_MAP
from ._route import Leg, Route

WIDE_INTERVAL = 0.2  # a chosen route whose range is wider than this is worth a probe

Costs = dict[str, dict[str, float]]  # node -> {neighbour: cost of the cheapest head edge between them}
Label = tuple[float, int, str]  # (cost, heads, name that breaks ties), least first in tuple order
Found = tuple[float, int, str, str]  # the label a node got, then the node
Via = dict[str, "str | None"]  # node -> the neighbour its shortest path came from (None at a start)
LegWalk = tuple[Via, str, bool]  # (a run's via, the node to walk from, whether the walk runs along the leg)
Triple = tuple[str, str, str]  # (common node, entry of a, entry of b)
Candidate = tuple[tuple[float, int, str, str, str], LegWalk, LegWalk]  # ((cost, heads, *triple), a's leg, b's leg)


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
                "interval": route.quality_interval,
                "route_estimate": None if route.estimate is None else route.estimate["estimate"],
                "route_expected_mAP": None if route.estimate is None else EXPECTED_MAP(route.estimate["estimate"]),
                "bridge_product": route.bridge_product,
                "source_space": route.source.space.name,
                "target_space": route.target.space.name,
                "meets_in": route.common_space,
                "hops": route.hops,
                "bridges": [(b.name, b.card.kind, b.card.score, b.card.score_source) for b in route.bridges],
            }
            for rank, route in enumerate(self.routes, start=1)
        ]

    def explain(self) -> str:
        """The candidates as a table, best first, and why the first was chosen. A route's expected quality is its
        route-level estimate where the graph measured one (memories of both ends through the whole route; see
        :meth:`SpaceGraph.estimate`), else the product of its distinct bridges' qualities; the range beside it is
        that number's 90% bootstrap interval (or the product of the bridges' intervals). A route estimate is also
        read as the mAP a labelled test would measure (``as mAP``, :data:`~spacegraph._quality.EXPECTED_MAP`).
        Each bridge's own quality, and where it comes from, is listed under its route, with the product of them for
        comparison."""
        title = f"{self.source.value} -> {self.target.value}: {len(self.routes)} candidate route(s), best first"
        encode_a, encode_b = (f"encode {modality.value} with" for modality in (self.source, self.target))
        columns = f"{'#':>2}  {'expected':>8}  {'range':13}  {'as mAP':>6}  {'product':>7}  "
        lines = [
            f"{title}; expected = the route's own estimate (route), else the product of its bridges' (product)",
            f"{columns}{encode_a:24} {encode_b:24} {'hops':>4}  meets in",
        ]
        for row in self.rows():
            low, high = row["interval"]
            source = "route" if row["route_estimate"] is not None else "product"
            as_map = "-" if row["route_expected_mAP"] is None else f"{row['route_expected_mAP']:.3f}"
            lines.append(
                f"{row['rank']:>2}  {row['expected_quality']:8.3f}  [{low:.3f}, {high:.3f}]"
                f"  {as_map:>6}  {row['bridge_product']:7.3f}"
                f"  {row['source_space']:24} {row['target_space']:24} {row['hops']:>4}  {row['meets_in']} ({source})"
            )
            lines += [f"{'':14}bridge {n!r} ({kind}): {q:.3f}, {src}" for n, kind, q, src in row["bridges"]]
        return "\n".join([*lines, self._verdict()])

    def close_calls(self) -> list[Route]:
        """The other candidates whose range overlaps the chosen route's: the label-free numbers cannot tell them
        apart from the first."""
        low = self.chosen.quality_interval[0]
        return [route for route in self.routes[1:] if route.quality_interval[1] >= low]

    def _verdict(self) -> str:
        chosen = f"chosen: #1, expected quality {self.chosen.expected_quality:.3f}"
        if len(self.routes) == 1:
            return chosen + " (the only candidate)" + self._probe_advice(wide_only=True)
        runner_up = self.routes[1]
        weakest = min(runner_up.bridges, key=lambda b: b.card.score, default=None)
        why = f"; its weakest bridge is {weakest.name!r} at {weakest.card.score:.3f}" if weakest else ""
        verdict = f"{chosen}, ahead of #2 at {runner_up.expected_quality:.3f}{why}"
        close = self.close_calls()
        if not close:
            return verdict + self._probe_advice(wide_only=True)
        ranks = ", ".join(f"#{self.routes.index(route) + 1}" for route in close)
        return (
            f"{verdict}\nnot a clear choice: the range of {ranks} overlaps #1's, so the estimates cannot tell them "
            f"apart{self._probe_advice(wide_only=False)}"
        )

    def _probe_advice(self, *, wide_only: bool) -> str:
        """Where the choice rests on label-free estimates that are unsure, how to make it dependable."""
        low, high = self.chosen.quality_interval
        if not any(route.uncertain for route in self.routes) or (wide_only and high - low <= WIDE_INTERVAL):
            return ""
        return (
            "\nto choose on labels instead: graph.evaluate(route, sg.Probe(...), calibrate=True) on each candidate "
            "with about 10 labelled items per class (enough to rank the benchmarks' bridges at Spearman >= 0.9), "
            "then plan again"
        )

    def _repr_html_(self) -> str:
        from . import _display

        return _display.plan_html(self)


def _rank(route: Route) -> tuple[float, int, str, str, str]:
    """Best first: cheapest, then fewest heads, then by name (common space, then entry spaces)."""
    return round(route.cost, 9), route.hops, route.common_space, route.source.space.name, route.target.space.name


@dataclass(frozen=True)
class End:
    """One end of a route: its modality and the spaces that may encode it (only the pinned one, if any)."""

    modality: Modality
    entries: list[str]
    pinned: str | None

    @property
    def label(self) -> str:
        return f"{self.pinned}:{self.modality.value}" if self.pinned else self.modality.value


def parse_end(end: str | Modality, pinned: str | None, role: str) -> tuple[Modality, str | None]:
    """The modality of ``end`` and the space pinned to encode it, by ``"space:modality"`` or by keyword."""
    named, _, modality = str(end).rpartition(":")
    if named and pinned is not None and named != pinned:
        raise SpacegraphValueError(
            f"{end!r} pins {named!r} but {role}={pinned!r}; name the {role} space once, either way"
        )
    return as_modality(modality), named or pinned


def _shortest_paths(
    costs: Costs, starts: dict[str, Label], *, stop: Iterable[str] = (), within: Container[str] | None = None
) -> tuple[dict[str, Found], Via]:
    """Dijkstra from all ``starts`` at once, each with its own initial label. An edge adds its cost and one head and
    keeps the name, so each node gets the least ``(cost, heads, name)`` over all starts. Any real initial cost works
    (edge costs are >= 0; a constant added to every start changes nothing). ``within`` bounds the nodes visited;
    with ``stop``, the run ends once those nodes are settled, and only their labels are final."""
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
class Adjacency:
    """What planning reads of the graph, built once per state of it: spaces and bridges are only ever added, and an
    edge's cost is set when its bridge is added (or calibrated)."""

    forward: Costs  # u -> {v: cost of the cheapest head edge u -> v}
    backward: Costs  # v -> {u: the same}
    joints: dict[str, float]  # joint node -> the cost of its bridge, which both legs into it share
    entries: dict[Modality, list[str]]  # modality -> the spaces that embed it, in the order they were added

    @classmethod
    def of(cls, graph: nx.MultiDiGraph) -> Adjacency:
        """Read ``graph``: nodes hold ``space`` and ``joint``, edges ``cost``."""
        forward: Costs = {
            u: {v: min(edge["cost"] for edge in keyed.values()) for v, keyed in nbrs.items()}
            for u, nbrs in graph.adjacency()
        }
        backward: Costs = {node: {} for node in forward}
        for u, nbrs in forward.items():
            for v, cost in nbrs.items():
                backward[v][u] = cost
        joints, entries = {}, defaultdict(list)
        for node, data in graph.nodes(data=True):
            if data["joint"]:
                joints[node] = data["space"].bridge.card.cost
            else:
                for modality in data["space"].modalities:
                    entries[modality].append(node)
        return cls(forward, backward, joints, dict(entries))


def _walk(leg: LegWalk) -> list[str]:
    """A leg's path: follow ``via`` from the node, back to the entry of a forward run (then reverse), or on to
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


def _meetings(
    adjacency: Adjacency, entries_a: list[str], entries_b: list[str]
) -> tuple[dict[Triple, Candidate], list[Triple]]:
    """The candidates of :func:`plan_routes` by ``(common node, entry of a, entry of b)``, and the triples of each
    entry space's best. At most four shortest-path runs, whatever the number of entries: forwards from all of a's
    entries at once and from all of b's (each node's cheapest leg from either side, and the entry it starts from);
    then, for each side with more than one entry, backwards over the nodes that side reaches, from every common
    node at once, each starting at the other side's leg cost there less the shared bridge: that gives every entry
    its cheapest whole route (and the node where it meets the other side). Keys are ``(cost, heads, *triple)``,
    the cost with a joint node's bridge counted once, least first; ties go to fewer heads, then to names."""
    reach_a = _shortest_paths(adjacency.forward, {entry: (0.0, 0, entry) for entry in entries_a})
    reach_b = _shortest_paths(adjacency.forward, {entry: (0.0, 0, entry) for entry in entries_b})
    (found_a, via_a), (found_b, via_b) = reach_a, reach_b
    candidates: dict[Triple, Candidate] = {}
    starts_a: dict[str, Label] = {}  # the backward run for a's entries starts at each common node, so does b's
    starts_b: dict[str, Label] = {}
    for node in found_a.keys() & found_b.keys():  # each common node's cheapest meeting
        cost_a, heads_a, entry_a, _ = found_a[node]
        cost_b, heads_b, entry_b, _ = found_b[node]
        shared = adjacency.joints.get(node, 0.0)  # both legs end with a head of its bridge
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
        best, back = _shortest_paths(adjacency.backward, starts, stop=entries, within=found)
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


def leg_along(graph: nx.MultiDiGraph, modality: Modality, path: list[str]) -> Leg:
    """The leg that embeds ``modality`` in ``path[0]`` and follows the cheapest head edge along each step of
    ``path``, in ``graph`` (nodes hold ``space``, edges ``bridge`` and ``cost``)."""
    steps = []
    for u, v in itertools.pairwise(path):
        edge = min(graph.get_edge_data(u, v).values(), key=lambda e: e["cost"])
        steps.append((edge["bridge"], u))
    return Leg(modality, graph.nodes[path[0]]["space"], tuple(steps))


def plan_routes(graph: nx.MultiDiGraph, adjacency: Adjacency, a: End, b: End, max_routes: int) -> Plan:
    """The plan :meth:`SpaceGraph.plan` returns, from ``graph`` as ``adjacency`` reads it."""
    kept = _keep(*_meetings(adjacency, a.entries, b.entries), max_routes)
    routes = [
        Route(leg_along(graph, a.modality, _walk(leg_a)), leg_along(graph, b.modality, _walk(leg_b)))
        for _, leg_a, leg_b in kept
    ]
    return Plan(a.modality, b.modality, sorted(routes, key=_rank))
