"""A route: two legs that embed two modalities into one common space, and search over one side of it.

A :class:`Leg` encodes one modality in an entry space and applies the bridge heads along its path; a
:class:`Route` pairs two legs that end in the same node. ``route.index`` / ``route.search`` /
``route.load_index`` wrap a :class:`~spacegraph._index.SearchIndex` (which knows only vectors and ids): the route
embeds the items, and gives the index an identity (the common space, and the entry space and bridge weights of
each leg) by which a saved index is refused when loaded for a route that embeds its side differently.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._arguments import checked_arguments
from ._batching import batch_length
from ._bridge import Bridge
from ._checks import check_count
from ._classify import Classification, check_class_names, class_embeddings
from ._dense import image_size
from ._errors import SpacegraphValueError
from ._index import SearchIndex, SearchResult, check_rows
from ._index_backends import Backend
from ._localization import upsampled
from ._modality import Modality, as_modality
from ._space import Space

PROJECT_CHUNK = 65_536  # rows projected through a route's heads at once


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


ROLES = ("source", "target")


def other_end(role: str) -> str:
    return ROLES[1 - ROLES.index(role)]


class Route:
    """Embeds two modalities into one common space; ``encode`` and ``similarity`` work on raw inputs.

    An end is named by its modality, or, where both ends embed the same modality (text of one space against text
    of another), by ``"source"`` / ``"target"`` or ``"space:modality"`` (as :meth:`SpaceGraph.connect` pins it)."""

    def __init__(self, source: Leg, target: Leg) -> None:
        self.source, self.target = source, target
        self.search_index: SearchIndex | None = None  # set by index / load_index, read by search
        # The route-level label-free estimate (keys as EstimateData.score), set by SpaceGraph.plan where measured.
        self.estimate: dict[str, float] | None = None

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
        """Sum of ``-log(quality)`` over the distinct bridges used (their cards are checked when built)."""
        return sum(bridge.card.cost for bridge in self.bridges)

    @property
    def bridge_product(self) -> float:
        """Product of the qualities of the bridges used (1.0 for a route inside one space)."""
        return math.exp(-self.cost)

    @property
    def expected_quality(self) -> float:
        """The route's label-free estimate where the graph measured it (:attr:`estimate`), else the product of its
        bridges' qualities (:attr:`bridge_product`)."""
        return self.bridge_product if self.estimate is None else self.estimate["estimate"]

    @property
    def quality_interval(self) -> tuple[float, float]:
        """The range :attr:`expected_quality` may lie in: the route estimate's 90% bootstrap interval, else the
        product of each bridge's interval (its :attr:`BridgeCard.score_interval`, or its score alone where the
        score carries none)."""
        if self.estimate is not None:
            return self.estimate["estimate_low"], self.estimate["estimate_high"]
        low = high = 1.0
        for bridge in self.bridges:
            bridge_low, bridge_high = bridge.card.score_interval or (bridge.card.score, bridge.card.score)
            low, high = low * bridge_low, high * bridge_high
        return low, high

    @property
    def uncertain(self) -> bool:
        """Whether the route's quality rests on label-free estimates alone (no labelled probe)."""
        return self.estimate is not None or any(bridge.card.score_interval is not None for bridge in self.bridges)

    def describe(self) -> str:
        bridges = ", ".join(
            f"{b.name!r} ({b.card.kind}, quality {b.card.score:.3f}, {b.card.score_source})" for b in self.bridges
        )
        a, b = (f"{leg.modality.value} (encoded by {leg.space.name!r})" for leg in (self.source, self.target))
        return (
            f"{a} and {b} meet in {self.common_space!r} after {self.hops} head(s); "
            f"bridges: {bridges or 'none'}; expected quality {self.expected_quality:.3f} "
            f"({'route estimate' if self.estimate is not None else 'product of its bridges'})"
        )

    @checked_arguments
    def leg(self, end: str | Modality) -> Leg:
        """The leg of ``end``: ``"source"`` or ``"target"``, ``"space:modality"``, or a modality only one end
        embeds (both ends may, when they are the same leg)."""
        return self._leg_of(self.role(end))

    @checked_arguments
    def role(self, end: str | Modality) -> str:
        """``"source"`` or ``"target"``: the end that ``end`` names (see :meth:`leg`)."""
        if end in ROLES:
            return str(end)
        named, _, modality = str(end.value if isinstance(end, Modality) else end).rpartition(":")
        wanted = as_modality(modality)
        roles = [r for r in ROLES if self._leg_of(r).modality == wanted and named in ("", self._leg_of(r).space.name)]
        ends = ", ".join(f"{r} {self._leg_of(r).space.name}:{self._leg_of(r).modality.value}" for r in ROLES)
        if not roles:
            raise SpacegraphValueError(f"this route's ends are {ends}; none is {end!r}")
        if len(roles) == 2 and self.end_identity("source") != self.end_identity("target"):
            raise SpacegraphValueError(
                f"both ends of this route embed {wanted.value!r} ({ends}): name one as 'source' or 'target'"
                + ("" if named else " or as 'space:modality'")
            )
        return roles[0]

    def _leg_of(self, role: str) -> Leg:
        return self.source if role == "source" else self.target

    @checked_arguments
    def end_identity(self, end: str | Modality) -> dict[str, Any]:
        """What fixes the embeddings of ``end`` (named as in :meth:`leg`; see :func:`leg_identity`)."""
        return leg_identity(self.leg(end))

    @checked_arguments
    def encode(self, end: str | Modality, inputs: Any, **encode_kwargs: Any) -> torch.Tensor:
        """Embed raw ``inputs`` of one end (see :meth:`leg`) into the common space (unit-norm rows)."""
        leg = self.leg(end)
        return leg.project(leg.space.encode(leg.modality, inputs, **encode_kwargs))

    @checked_arguments
    def project(self, end: str | Modality, embeddings: torch.Tensor) -> torch.Tensor:
        """Map embeddings already made by the leg's own space (e.g. cached features) into the common space."""
        return self.leg(end).project(embeddings)

    @checked_arguments
    def similarity(self, source_inputs: Any, target_inputs: Any, **encode_kwargs: Any) -> torch.Tensor:
        """Cosine similarities ``[n_source, n_target]`` between raw inputs of the two ends."""
        a = self.encode("source", source_inputs, **encode_kwargs)
        return a @ self.encode("target", target_inputs, **encode_kwargs).T

    @checked_arguments
    def encode_dense(self, end: str | Modality, images: Any, **dense_options: Any) -> torch.Tensor:
        """``[n, h, w, dim]``: each image of an image end (see :meth:`leg`) as local embeddings in the common space,
        taken location by location through the leg's heads (see :meth:`Space.encode_dense` for the options)."""
        role = self.role(end)
        leg = self._leg_of(role)
        dense = leg.space.encode_dense(leg.modality, images, **dense_options)
        rows = dense.reshape(-1, dense.shape[-1])
        projected = torch.cat([self.project(role, chunk) for chunk in rows.split(PROJECT_CHUNK)])
        return projected.reshape(*dense.shape[:3], -1)

    @checked_arguments
    def localize(
        self, queries: Any, images: Any, *, grid: int | None = None, window: float = 0.5
    ) -> list[torch.Tensor]:
        """Where in each image is what its query shows: one heatmap ``[H, W]`` per pair (query i, image i), at the
        image's own resolution: the cosine of the query's embedding with each location of the image's dense
        embeddings (:meth:`encode_dense`; ``grid``, ``window`` as there), bilinearly upsampled. The image end is the
        route's image end (the target where both are); queries are the other end's items, of any modality, raw or
        as its space's embeddings. Score heatmaps against boxes with :func:`~spacegraph.localization_metrics`."""
        image_role = self._image_role()
        n_queries, n_images = batch_length(queries), batch_length(images)
        if n_queries != n_images or n_queries == 0:
            raise SpacegraphValueError(
                f"localize takes one query per image; got {n_queries} queries, {n_images} images"
            )
        sizes = [image_size(item, f"image item {i}") for i, item in enumerate(images)]
        query_rows = self._embed(other_end(image_role), queries)
        dense = self.encode_dense(image_role, images, grid=grid, window=window)
        grids = torch.einsum("nhwd,nd->nhw", dense, query_rows)
        return [upsampled(scores, size) for scores, size in zip(grids, sizes)]

    def _image_role(self) -> str:
        for role in ("target", "source"):
            if self._leg_of(role).modality is Modality.IMAGE:
                return role
        ends = ", ".join(self._leg_of(role).modality.value for role in ROLES)
        raise SpacegraphValueError(f"localize needs a route with an image end; this route's ends are {ends}")

    @checked_arguments
    def pair_scores(self, source_items: Any, target_items: Any) -> torch.Tensor:
        """``[n]``: the cosine of source item i with target item i (each raw, or its leg's space embeddings), for
        telling matched pairs from mismatched ones (:func:`~spacegraph.pair_metrics`,
        :meth:`SpaceGraph.pair_threshold`)."""
        n_source, n_target = batch_length(source_items), batch_length(target_items)
        if n_source != n_target:
            raise SpacegraphValueError(f"pair_scores takes pairs: got {n_source} source and {n_target} target items")
        return (self._embed("source", source_items) * self._embed("target", target_items)).sum(dim=1)

    @checked_arguments
    def classify(
        self,
        items: Any,
        class_names: Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        end: str | Modality | None = None,
        temperature: float = 0.01,
    ) -> Classification:
        """Zero-shot classification of ``items`` of one end (default: the end that is not text, the source where
        neither is): each class name is put into every template (``"a photo of a {}"``; default ``["{}"]``),
        encoded by the text tower of the space the other end enters and taken through that leg's heads, and
        averaged over templates. Probabilities are the softmax of cosines over ``temperature``."""
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise SpacegraphValueError(f"temperature must be a number > 0, got {temperature!r}")
        names = check_class_names(class_names)
        role = self._classified_role(end)
        classes = class_embeddings(lambda texts: self._texts_through(other_end(role), texts), names, templates)
        logits = self._embed(role, items) @ classes.T / temperature
        return Classification(logits.softmax(dim=1), names)

    def _classified_role(self, end: str | Modality | None) -> str:
        if end is not None:
            return self.role(end)
        return (
            "target"
            if self.source.modality is Modality.TEXT and self.target.modality is not Modality.TEXT
            else "source"
        )

    def _texts_through(self, role: str, texts: list[str]) -> torch.Tensor:
        """``texts`` encoded by the text tower of the space ``role``'s leg enters, through that leg's heads."""
        leg = self._leg_of(role)
        if Modality.TEXT not in leg.space.modalities:
            raise SpacegraphValueError(
                f"the {role} end enters space {leg.space.name!r}, which has no text tower to encode class names "
                f"(it embeds {', '.join(m.value for m in leg.space.modalities)}); classify the other end instead"
            )
        return Leg(Modality.TEXT, leg.space, leg.steps).project(leg.space.encode(Modality.TEXT, texts))

    @checked_arguments
    def index(
        self,
        items: Any,
        *,
        modality: str | Modality | None = None,
        ids: Any = None,
        backend: Backend = "auto",
        **options: int,
    ) -> SearchIndex:
        """Index ``items`` of one end (``modality``, named as in :meth:`leg`; default: the target) in the common
        space, and keep the index for
        :meth:`search`. ``items``: raw inputs, or a float tensor of the leg's own space embeddings (e.g. from
        ``FeatureStore.load``). ``ids``: one int or string per item (default 0..n-1). ``backend``: ``"auto"``
        (exact up to 100k rows, else faiss/usearch if the ``search`` extra is installed), ``"exact"``,
        ``"faiss-hnsw"``, ``"faiss-ivf"`` or ``"usearch"``; ``options``: that backend's (see
        ``spacegraph._index_backends``)."""
        role = "target" if modality is None else self.role(modality)  # an unknown end fails before any encoding
        vectors = self._embed(role, items)
        identity = route_identity(self, role)
        self.search_index = SearchIndex.build(vectors, ids=ids, backend=backend, identity=identity, **options)
        return self.search_index

    @checked_arguments
    def search(
        self, queries: Any, k: int = 10, *, modality: str | Modality | None = None, effort: int | None = None
    ) -> SearchResult:
        """The ``k`` best indexed items (``k`` capped at the index size) for each of ``queries`` of one end
        (``modality``, named as in :meth:`leg`; default: the end not indexed), raw or as the leg's space
        embeddings. Unpacks as ``scores, ids``."""
        check_count("k", k)  # before any encoding
        index = self.search_index
        if index is None:
            raise SpacegraphValueError("this route has no search index yet: build one with route.index(items)")
        role = other_end(self._indexed_role(index)) if modality is None else self.role(modality)
        return index.search(self._embed(role, queries), k, effort=effort)

    def load_index(self, folder: str | os.PathLike) -> SearchIndex:
        """Load an index saved with ``SearchIndex.save`` for :meth:`search`, refusing one built for another route:
        it must embed the indexed side exactly as when the index was built (the same common space, entry space
        and bridges, by name and weight fingerprints, along that leg)."""
        index = SearchIndex.load(folder)
        self._check_index(index)
        self.search_index = index
        return index

    def _indexed_role(self, index: SearchIndex) -> str:
        """The end whose leg embeds the rows ``index`` holds, as :meth:`index` recorded that leg (the end it was,
        where both ends match); else the end of its space and modality, which :meth:`_check_index` then refuses."""
        if index.identity is None or "indexed" not in index.identity:
            raise SpacegraphValueError("this index was built without a route (SearchIndex.build); search it directly")
        recorded = index.identity["indexed"]
        indexed = _without_end(index.identity)["indexed"]
        matching = [role for role in ROLES if self.end_identity(role) == indexed]
        if matching:
            return recorded["end"] if recorded.get("end") in matching else matching[0]
        try:
            return self.role(f"{indexed['space']}:{indexed['modality']}")
        except SpacegraphValueError as err:
            raise SpacegraphValueError(
                f"this index holds {indexed['modality']!r} rows of {indexed['space']!r}: {err}"
            ) from err

    def _check_index(self, index: SearchIndex) -> None:
        role = self._indexed_role(index)
        built, now = _without_end(index.identity or {}), _without_end(route_identity(self, role))
        for key in ("common_space", "indexed"):
            if now[key] != built[key]:
                raise SpacegraphValueError(
                    f"this index was built for another route: its {key.replace('_', ' ')} is "
                    f"{json.dumps(built[key])}, this route's is {json.dumps(now[key])}; rebuild it with route.index"
                )

    def _embed(self, role: str, items: Any) -> torch.Tensor:
        """``items`` of the ``role`` end in the common space. A float ``torch.Tensor`` is read as embeddings made by
        the leg's own space (e.g. ``FeatureStore.load``) and only projected; anything else is encoded first."""
        leg = self._leg_of(role)
        modality = leg.modality
        if isinstance(items, torch.Tensor) and items.is_floating_point():
            what = (
                f"{modality.value} embeddings of space {leg.space.name!r} (a float tensor is read as that space's "
                "embeddings; pass raw inputs as a list or array)"
            )
            features = check_rows(items, leg.space.spec.dim, what)
        else:
            features = leg.space.encode(modality, items)
        return torch.cat([leg.project(chunk) for chunk in features.split(PROJECT_CHUNK)])

    def __repr__(self) -> str:
        def show(leg: Leg) -> str:  # the entry as "space:modality", the form connect() takes to pin it
            return " -> ".join([f"{leg.space.name}:{leg.modality.value}", *leg.path[1:]])

        return f"Route({show(self.source)} | {show(self.target)}; cost={self.cost:.3f})"

    def _repr_html_(self) -> str:
        from . import _display

        return _display.route_html(self)


def _without_end(identity: dict[str, Any]) -> dict[str, Any]:
    """An index identity as compared: which end the indexed leg is decides nothing (older indexes lack it)."""
    indexed = {key: value for key, value in identity.get("indexed", {}).items() if key != "end"}
    return {**identity, "indexed": indexed}


def leg_identity(leg: Leg) -> dict[str, Any]:
    """What fixes a leg's embeddings: its modality, entry space and each bridge head along it."""
    return {
        "modality": leg.modality.value,
        "space": leg.space.name,
        "space_fingerprint": leg.space.spec.fingerprint,
        "bridges": [
            {"name": bridge.name, "reads": reads, "fingerprint": bridge.fingerprint} for bridge, reads in leg.steps
        ],
    }


def route_identity(route: Route, role: str) -> dict[str, Any]:
    """The identity kept with an index of ``route``'s ``role`` end: the common space, that leg (and which end it
    is), the other."""
    return {
        "common_space": route.common_space,
        "indexed": {**route.end_identity(role), "end": role},
        "others": [route.end_identity(other_end(role))],
    }
