"""A route-level estimate: the label-free quality of a composed route, measured on the route itself.

Multiplying the bridges' estimates is wrong both ways: on a connect chain the second bridge was trained (and
measured) on the first one's joint space, so the first counts twice; where two extend legs meet in a frozen
space, each was measured against the target's native items, never against the other projected modality. This
module measures the route as :mod:`spacegraph._quality` measures one bridge, with the data training had: memories
of both ends, each encoded by its entry space and taken through its whole leg, and pseudo labels read from the
overlap items they sit near.

With several bridges no single overlap joins the two ends. The route's meaning is carried along its **chain**:
end A in its entry space, the overlap modality of each bridge the route crosses (embedded natively by the real
spaces on both sides of it), end B in its entry space. The first overlap's items near the memories are
clustered (on both sides' embeddings at once) at several granularities, exactly as for one bridge; each class
is then handed on item by item. An A item takes the class of its nearest first-overlap centroid in its own
space; the classes of one overlap's items reach the next overlap's items through a space that embeds both (their
nearest class centroid there), and the same items carry their classes across the next bridge; a B item takes the
class of its nearest last-overlap centroid in its own space. A route of one bridge gets exactly the labels of
:class:`~spacegraph._quality.PseudoLabels`. Every handover loses some of the classes, so a route is scored on the
labels of the shortest chain between its ends' spaces (:func:`shortest_chain`), the same for every route between
them, whichever bridges it takes: a route through more spaces is not marked down for its longer chain. The
estimate is the pseudo-label mAP of the route's A -> B and B -> A retrieval, times the modality alignment, as
:class:`~spacegraph._quality.EstimateData` scores a bridge.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import torch
import torch.nn.functional as F

from ._joint import JointSpace
from ._modality import Modality
from ._quality import (
    CLUSTER_COUNTS,
    DEFAULT_ESTIMATE,
    SILHOUETTE_ROWS,
    EstimateData,
    EstimateSettings,
    _best_clustering,
    _centroids,
    _item_reader,
    subsample,
)
from ._space import Space
from ._streaming import nearest, unit_rows

if TYPE_CHECKING:
    from ._bridge import Bridge
    from ._route import Route

Encoder = Callable[[Space, Modality], torch.Tensor]  # a space's embeddings of the data registered for a modality


@dataclass(frozen=True)
class Crossing:
    """One step of the route's meaning from space to space, through ``overlap``, embedded natively by ``near``
    (the space on the source's side) and ``far``."""

    overlap: Modality
    near: Space
    far: Space


@dataclass(frozen=True)
class Chain:
    """What a route's meaning passes through from its source end to its target end: the bridges it crosses, and
    between each two crossings a space (``handovers[i]``) that embeds both of their overlaps."""

    source: tuple[Modality, Space]
    target: tuple[Modality, Space]
    crossings: tuple[Crossing, ...]
    handovers: tuple[Space, ...]

    @property
    def modalities(self) -> list[Modality]:
        """Every modality whose data the estimate reads: both ends and each overlap."""
        return [self.source[0], *(crossing.overlap for crossing in self.crossings), self.target[0]]

    def key(self, data_names: Sequence[str]) -> str:
        """Identifies the labels of this chain on the named data: the spaces (and weights) and modalities read."""
        spaces = [self.source[1], *(s for c in self.crossings for s in (c.near, c.far)), *self.handovers]
        return json.dumps(
            {
                "spaces": [(space.name, space.spec.fingerprint) for space in (*spaces, self.target[1])],
                "modalities": [modality.value for modality in self.modalities],
                "data": list(data_names),
            }
        )


def native_space(space: Space, modality: Modality) -> Space:
    """The space that embeds ``modality`` natively: ``space`` itself, or the member of a joint space (recursively)."""
    while isinstance(space, JointSpace):
        space = space.member(modality)
    return space


def _other_side(bridge: Bridge, reads: str) -> str:
    first, second = bridge.space_names
    return second if reads == first else first


def _crossed(route: Route) -> list[tuple[Bridge, str, str]]:
    """Each bridge the route crosses, from source to target, with the node on each side ``(bridge, near, far)``:
    the source leg's heads in order, then the target leg's in reverse; a connect bridge whose joint space both legs
    end in is crossed once, between the two spaces its heads read."""
    ahead = [(bridge, reads, _other_side(bridge, reads)) for bridge, reads in route.source.steps]
    back = [(bridge, _other_side(bridge, reads), reads) for bridge, reads in reversed(route.target.steps)]
    source_steps, target_steps = route.source.steps, route.target.steps
    if source_steps and target_steps and source_steps[-1][0] is target_steps[-1][0]:
        bridge = source_steps[-1][0]
        return [*ahead[:-1], (bridge, source_steps[-1][1], target_steps[-1][1]), *back[1:]]
    return ahead + back


def _handover(crossing: Crossing, nxt: Crossing, node: Space) -> Space:
    """A space that embeds both overlaps: the far side of one crossing, or the near side of the next, natively,
    else ``node`` (the joint space both sit in)."""
    wanted = {crossing.overlap, nxt.overlap}
    for space in (crossing.far, nxt.near):
        if wanted <= set(space.modalities):
            return space
    return node


def route_chain(route: Route, space_of: Callable[[str], Space]) -> Chain | None:
    """The chain of ``route`` (``space_of``: a node's space by name), or None for a route inside one space."""
    crossed = _crossed(route)
    if not crossed:
        return None
    crossings = [
        Crossing(bridge.card.overlap, native_space(space_of(near), bridge.card.overlap),
                 native_space(space_of(far), bridge.card.overlap))
        for bridge, near, far in crossed
    ]  # fmt: skip
    handovers = tuple(
        _handover(crossing, nxt, space_of(near_node))
        for crossing, nxt, (_, near_node, _) in zip(crossings, crossings[1:], crossed[1:])
    )
    ends = [(leg.modality, native_space(leg.space, leg.modality)) for leg in (route.source, route.target)]
    return Chain(ends[0], ends[1], tuple(crossings), handovers)


def _overlap_graph(spaces: Iterable[Space], readable: Collection[Modality]) -> nx.Graph:
    """The real spaces, joined where two of them natively embed a modality with data (``readable``); each edge
    holds those modalities, sorted, as ``overlaps``."""
    graph = nx.Graph()
    spaces = list(spaces)
    graph.add_nodes_from((space.name, {"space": space}) for space in spaces)
    for first, second in itertools.combinations(spaces, 2):
        shared = set(first.modalities) & set(second.modalities) & set(readable)
        if shared:
            graph.add_edge(first.name, second.name, overlaps=sorted(shared, key=lambda m: m.value))
    return graph


def shortest_chain(chain: Chain, spaces: Iterable[Space], readable: Collection[Modality]) -> Chain:
    """The chain a route's labels are read along: the fewest crossings between its two ends' spaces, each through
    a modality both spaces embed natively and that has data (``readable``), whatever bridges the graph holds. Each
    handover passes classes on with some loss, so every route between the same ends is scored on the labels of
    the shortest chain, one scale for all of them. ``chain`` itself where none is shorter (so a route of one
    bridge keeps its bridge's labels); else the first shortest by space names, then by overlap names."""
    graph = _overlap_graph(spaces, readable)
    ends = (chain.source[1].name, chain.target[1].name)
    try:
        paths = list(nx.all_shortest_paths(graph, *ends))
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        return chain
    path = min(paths)
    if len(path) == 1 or len(chain.crossings) <= len(path) - 1:
        return chain
    space = [graph.nodes[name]["space"] for name in path]
    crossings = tuple(
        Crossing(graph.edges[near.name, far.name]["overlaps"][0], near, far) for near, far in itertools.pairwise(space)
    )
    return Chain(chain.source, chain.target, crossings, tuple(space[1:-1]))


@dataclass
class ChainLabels:
    """The pseudo classes of both ends' memories at each granularity, as :class:`PseudoLabels` holds them."""

    silhouettes: dict[int, float]
    levels: dict[int, tuple[torch.Tensor, torch.Tensor]]

    @property
    def k(self) -> int:
        return max(self.silhouettes, key=lambda k: self.silhouettes[k])


def _handed_on(
    chain: Chain, encode: Encoder, labelled: torch.Tensor, assign: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes ``assign`` of the first overlap's items ``labelled`` carried to the last overlap's items through
    each handover: ``(the items now labelled, their classes)``."""
    for crossing, nxt, space in zip(chain.crossings, chain.crossings[1:], chain.handovers):
        if nxt.overlap == crossing.overlap:  # the same items: their classes carry over as they are
            continue
        held = unit_rows(encode(space, crossing.overlap))[labelled]
        reader = _item_reader(unit_rows(encode(space, nxt.overlap)))
        assign = reader(_centroids(held, assign, k))
        labelled = torch.arange(len(assign))
    return labelled, assign


def chain_labels(
    chain: Chain,
    encode: Encoder,
    memory_a: torch.Tensor,
    memory_b: torch.Tensor,
    *,
    cluster_counts: Sequence[int] = CLUSTER_COUNTS,
    restarts: int = 4,
    seed: int = 0,
) -> ChainLabels:
    """The classes of ``memory_a`` (source end) and ``memory_b`` (target end) read along ``chain``."""
    first, last = chain.crossings[0], chain.crossings[-1]
    near_rows, far_rows = unit_rows(encode(first.near, first.overlap)), unit_rows(encode(first.far, first.overlap))
    mx, my = unit_rows(memory_a), unit_rows(memory_b)
    next_readers = my if len(chain.crossings) == 1 else None  # one bridge: both memories pick the items, as for it
    picked = [nearest(mx, near_rows)] + ([nearest(next_readers, far_rows)] if next_readers is not None else [])
    near = torch.unique(torch.cat(picked))
    joint = F.normalize(torch.cat([near_rows[near], far_rows[near]], dim=1), dim=1)
    candidates = [k for k in cluster_counts if k < len(near)] or [max(1, len(near) // 2)]
    sample = subsample(torch.arange(len(joint)), SILHOUETTE_ROWS, torch.Generator().manual_seed(seed))
    distance = 1 - joint[sample] @ joint[sample].T
    best = {k: _best_clustering(joint, k, restarts, seed, sample, distance) for k in candidates}
    last_rows = unit_rows(encode(last.far, last.overlap))
    levels = {}
    for k, (_, assign) in best.items():
        labels_a = _item_reader(mx)(_centroids(near_rows[near], assign, k))
        labelled, carried = _handed_on(chain, encode, near, assign, k)
        labels_b = _item_reader(my)(_centroids(last_rows[labelled], carried, k))
        levels[k] = (labels_a, labels_b)
    return ChainLabels({k: score for k, (score, _) in best.items()}, levels)


def chain_estimate_data(
    chain: Chain, encode: Encoder, *, max_items: int = 2000, settings: EstimateSettings = DEFAULT_ESTIMATE
) -> EstimateData:
    """What the route estimate reads: at most ``max_items`` of each end's memory (a fixed-seed sample, as for a
    bridge) and their chain labels. Every route with this chain is scored on the same items and labels."""
    (modality_a, space_a), (modality_b, space_b) = chain.source, chain.target
    generator = torch.Generator().manual_seed(0)
    mx = subsample(encode(space_a, modality_a), max_items, generator)
    my = subsample(encode(space_b, modality_b), max_items, generator)
    labels = chain_labels(chain, encode, mx, my)
    overlap_rows = len(encode(chain.crossings[0].near, chain.crossings[0].overlap))
    return EstimateData.of_labels(mx, my, labels, overlap_rows=overlap_rows, settings=settings)


def route_key(route: Route) -> str:
    """What fixes a route's estimate on given data: both ends' embeddings (entry spaces, the bridge weights along
    each leg, and for an ensemble its members and weights)."""
    return json.dumps([route.end_identity(role) for role in ("source", "target")])


def score_route(route: Route, data: EstimateData) -> dict[str, float]:
    """The route-level estimate (keys as :meth:`EstimateData.score`), from the memories taken through each leg."""
    return {
        **data.score(lambda rows: route.project("source", rows), lambda rows: route.project("target", rows)),
        "hops": float(route.hops),
    }


def describe_chain(chain: Chain) -> list[str]:
    """The chain as ``[space:modality, overlap, ..., space:modality]``, for reports."""
    (modality_a, space_a), (modality_b, space_b) = chain.source, chain.target
    middle = [f"{c.near.name}|{c.overlap.value}|{c.far.name}" for c in chain.crossings]
    return [f"{space_a.name}:{modality_a.value}", *middle, f"{space_b.name}:{modality_b.value}"]
