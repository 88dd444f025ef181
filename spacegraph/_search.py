"""Nearest-neighbour search over one side of a route, in the route's common space.

:class:`SearchIndex` holds rows of a common space and answers top-k inner-product queries (cosine for the
unit-norm rows a route gives). Backends:

* ``exact``: torch, chunked over queries and rows with a running top-k, so memory stays at about
  ``QUERY_CHUNK x GALLERY_CHUNK`` scores whatever the sizes; stored as safetensors.
* ``faiss-hnsw`` (``faiss.IndexHNSWFlat``), ``faiss-ivf`` (``faiss.IndexIVFFlat``) and ``usearch`` (its HNSW):
  approximate, from the ``search`` extra; stored with ``faiss.write_index`` / ``usearch``'s ``save``.

``backend="auto"`` is exact up to :data:`EXACT_MAX_ROWS` rows and ``faiss-hnsw`` above (``usearch`` if faiss is
missing, exact if both are). Each approximate backend has one search-time ``effort`` knob (HNSW ``efSearch``,
IVF ``nprobe``, usearch ``expansion_search``). Measured on the 1M x 512 clustered gallery of
``benchmarks/search.py`` (one thread), recall@10 at the defaults: faiss-hnsw 0.987 (1.2 ms a query, built in
20 min), faiss-ivf 0.976 (48 ms; 71 s), usearch 0.927 (4 ms; 27 min; below the 0.95 target: raise
``connectivity`` / ``expansion_add``). ``k`` above the number of rows is capped at it. An approximate index may
find fewer than ``k`` rows for a query: those places hold score ``-inf``, row ``-1`` and id ``-1`` (``None`` for
string ids).

A saved index is a folder: the backend's file(s), ``ids`` if given, and ``index.json`` (backend, options, dim,
count, metric, the identity of the route side it indexes, and each file's sha256). Loading checks all of it
and, given a route, refuses an index whose side was embedded differently. No pickle is read or written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file

from ._atomic import atomic_dir, recover_interrupted_save
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality
from ._optional import require
from ._space import check_embeddings
from ._streaming import top_k

if TYPE_CHECKING:
    from ._graph import Leg, Route

EXACT_MAX_ROWS = 100_000  # backend="auto": exact search up to this many rows, approximate above
QUERY_CHUNK = 1_024  # exact search scores this many queries ...
GALLERY_CHUNK = 32_768  # ... against this many rows at once (128 MB of float32 scores)
PROJECT_CHUNK = 65_536  # rows projected through a route's heads at once
APPROXIMATE = ("faiss-hnsw", "faiss-ivf", "usearch")
BACKENDS = ("exact", *APPROXIMATE)
DEFAULTS: dict[str, dict[str, int]] = {  # build options and the search effort, chosen by benchmarks/search.py
    "exact": {},
    "faiss-hnsw": {"M": 32, "ef_construction": 64, "effort": 128},
    "faiss-ivf": {"nlist": 0, "effort": 256},  # nlist 0: about sqrt(rows), at most rows // 39
    "usearch": {"connectivity": 16, "expansion_add": 64, "effort": 256},
}
MANIFEST = "index.json"
FILES = {
    "exact": "vectors.safetensors",
    "faiss-hnsw": "index.faiss",
    "faiss-ivf": "index.faiss",
    "usearch": "index.usearch",
}
INT_IDS, STR_IDS = "ids.safetensors", "ids.json"
OWN_FILES = (MANIFEST, *dict.fromkeys(FILES.values()), INT_IDS, STR_IDS)
FORMAT, FORMAT_VERSION = "spacegraph-search-index", 1
MISSING = -1  # row and int id of a place an approximate index left empty

Backend = Literal["auto", "exact", "faiss-hnsw", "faiss-ivf", "usearch"]
Ids = torch.Tensor | list[str] | None  # None: ids are the rows 0..n-1


@dataclass(frozen=True)
class SearchResult:
    """The ``k`` best rows for each query, best first; unpacks as ``scores, ids = result``."""

    scores: torch.Tensor  # [n_queries, k] float32 inner products (cosine for unit rows)
    rows: torch.Tensor  # [n_queries, k] int64 positions in the index (-1 where none was found)
    ids: torch.Tensor | list[list[str | None]]  # the ids given at build time (the rows if none), same layout

    def __iter__(self) -> Iterator[Any]:
        return iter((self.scores, self.ids))


class IndexManifest(BaseModel):
    """``index.json``: what a saved index holds and which route side it was built for."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["spacegraph-search-index"]
    format_version: int = Field(ge=1)
    backend: Literal["exact", "faiss-hnsw", "faiss-ivf", "usearch"]
    metric: Literal["inner_product"]
    dim: int = Field(gt=0)
    count: int = Field(gt=0)
    options: dict[str, int]
    ids: Literal["rows", "int", "str"]
    route: dict[str, Any] | None = Field(description="The identity of the route side indexed; None if built bare.")
    files: dict[str, str] = Field(description="File name -> sha256 hex digest.")


# -- backends -----------------------------------------------------------------------------------------------------
class _Exact:
    """All rows in one float32 tensor; queries and rows both chunked, a running top-k merged per query chunk."""

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors

    @classmethod
    def build(cls, vectors: torch.Tensor, options: dict[str, int]) -> _Exact:
        return cls(vectors.float().contiguous())

    def search(self, queries: torch.Tensor, k: int, effort: int) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(queries, self.vectors, k, query_chunk=QUERY_CHUNK, key_chunk=GALLERY_CHUNK)

    def write(self, path: Path) -> None:
        save_file({"vectors": self.vectors}, str(path), metadata={"format": FORMAT})

    @classmethod
    def read(cls, path: Path) -> _Exact:
        return cls(load_file(str(path))["vectors"])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.vectors), self.vectors.shape[1]


class _Faiss:
    """A faiss index over inner products: HNSW (``IndexHNSWFlat``) or IVF (``IndexIVFFlat`` on a flat quantizer)."""

    def __init__(self, index: Any, kind: str) -> None:
        self.index, self.kind = index, kind

    @classmethod
    def build(cls, vectors: torch.Tensor, options: dict[str, int], kind: str) -> _Faiss:
        faiss = require("faiss", "search")
        data = vectors.float().numpy()
        dim = data.shape[1]
        if kind == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(dim, options["M"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = options["ef_construction"]
        else:
            nlist = options["nlist"] or ivf_lists(len(data))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = 64  # train k-means on a sample of 64 rows per list
            index.train(data)
        index.add(data)
        return cls(index, kind)

    def search(self, queries: torch.Tensor, k: int, effort: int) -> tuple[torch.Tensor, torch.Tensor]:
        faiss = require("faiss", "search")
        if self.kind == "faiss-hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(effort, k))
        else:
            params = faiss.SearchParametersIVF(nprobe=min(effort, self.index.nlist))
        scores, rows = self.index.search(queries.float().numpy(), k, params=params)
        return _with_missing(torch.from_numpy(scores), torch.from_numpy(rows))

    def write(self, path: Path) -> None:
        require("faiss", "search").write_index(self.index, str(path))

    @classmethod
    def read(cls, path: Path, kind: str) -> _Faiss:
        faiss = require("faiss", "search")
        index = faiss.read_index(str(path))
        expected = faiss.IndexHNSWFlat if kind == "faiss-hnsw" else faiss.IndexIVFFlat
        if not isinstance(index, expected) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise SpacegraphValueError(f"{path}: not an inner-product {expected.__name__}, as {kind} writes")
        return cls(index, kind)

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.ntotal, self.index.d


class _USearch:
    """A usearch HNSW index over inner products, float32 rows keyed by their position."""

    def __init__(self, index: Any) -> None:
        self.index = index

    @classmethod
    def build(cls, vectors: torch.Tensor, options: dict[str, int]) -> _USearch:
        usearch = require("usearch.index", "search")
        index = usearch.Index(
            ndim=vectors.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=options["connectivity"],
            expansion_add=options["expansion_add"],
        )
        index.add(np.arange(len(vectors)), vectors.float().numpy(), threads=torch.get_num_threads())
        return cls(index)

    def search(self, queries: torch.Tensor, k: int, effort: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.index.expansion_search = max(effort, k)
        found = self.index.search(queries.float().numpy(), k, threads=torch.get_num_threads())
        keys = np.full((len(queries), k), MISSING, dtype=np.int64)
        distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        if hasattr(found, "counts"):  # a batch: k places per query, the first counts[i] filled
            keys[:], distances[:] = found.keys, found.distances
            keys[np.arange(k)[None, :] >= np.asarray(found.counts)[:, None]] = MISSING
        else:  # one query: only the places found
            keys[0, : len(found.keys)], distances[0, : len(found.keys)] = found.keys, found.distances
        rows = torch.from_numpy(keys)
        return _with_missing(torch.from_numpy(1.0 - distances), rows)  # usearch's "ip" distance is 1 - dot

    def write(self, path: Path) -> None:
        self.index.save(str(path))

    @classmethod
    def read(cls, path: Path) -> _USearch:
        usearch = require("usearch.index", "search")
        index = usearch.Index.restore(str(path))
        if index is None or index.metric != usearch.MetricKind.IP:
            raise SpacegraphValueError(f"{path}: not an inner-product usearch index, as the usearch backend writes")
        return cls(index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), self.index.ndim


_Store = _Exact | _Faiss | _USearch


def check_rows(rows: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    """:func:`check_embeddings` in bounded memory: NaN/inf looked for :data:`PROJECT_CHUNK` rows at a time."""
    if not isinstance(rows, torch.Tensor) or not rows.is_floating_point():
        raise SpacegraphTypeError(
            f"{what}: expected a float torch.Tensor of shape [n, {dim}], got {type(rows).__name__}"
        )
    rows = rows.detach().cpu()
    check_embeddings(rows[:1], dim, what)  # shape and emptiness
    for start in range(0, len(rows), PROJECT_CHUNK):
        try:
            check_embeddings(rows[start : start + PROJECT_CHUNK], dim, what)
        except SpacegraphValueError as err:
            raise SpacegraphValueError(f"{err} (in rows {start} to {start + PROJECT_CHUNK - 1})") from None
    return rows


def ivf_lists(rows: int) -> int:
    """IVF lists for ``rows`` rows: about ``sqrt(rows)``, with at least 39 training rows per list (faiss's floor)."""
    return max(1, min(round(math.sqrt(rows)), rows // 39))


def _with_missing(scores: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.float().masked_fill(rows < 0, -math.inf), rows.long()


def _build_store(backend: str, vectors: torch.Tensor, options: dict[str, int]) -> _Store:
    if backend == "exact":
        return _Exact.build(vectors, options)
    if backend == "usearch":
        return _USearch.build(vectors, options)
    return _Faiss.build(vectors, options, backend)


def _read_store(backend: str, path: Path) -> _Store:
    if backend == "exact":
        return _Exact.read(path)
    if backend == "usearch":
        return _USearch.read(path)
    return _Faiss.read(path, backend)


def choose_backend(backend: str, rows: int) -> str:
    """The backend ``backend`` names; for ``"auto"``: exact up to :data:`EXACT_MAX_ROWS` rows, else the first
    approximate one installed (faiss HNSW, then usearch), else exact."""
    if backend not in ("auto", *BACKENDS):
        raise SpacegraphValueError(f"unknown search backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")
    if backend != "auto":
        if backend != "exact":
            require("faiss" if backend.startswith("faiss") else "usearch.index", "search")
        return backend
    if rows <= EXACT_MAX_ROWS:
        return "exact"
    for name, module in (("faiss-hnsw", "faiss"), ("usearch", "usearch.index")):
        try:
            require(module, "search")
        except ImportError:
            continue
        return name
    return "exact"


def _options(backend: str, given: dict[str, int]) -> dict[str, int]:
    defaults = DEFAULTS[backend]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) or "none"
        raise SpacegraphValueError(f"unknown option(s) {unknown} for search backend {backend!r}; accepted: {accepted}")
    options = {**defaults, **given}
    bad = {name: value for name, value in options.items() if not _is_count(value, least=0 if name == "nlist" else 1)}
    if bad:
        raise SpacegraphValueError(
            f"search backend {backend!r}: options must be integers >= 1 (nlist >= 0, 0: automatic), got {bad}"
        )
    return options


def _is_count(value: Any, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_count(name: str, value: Any) -> int:
    if not _is_count(value):
        raise SpacegraphValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


# -- ids ----------------------------------------------------------------------------------------------------------
def _check_ids(ids: Any, count: int) -> Ids:
    """``ids`` as stored: None, an int64 tensor or a list of strings, one per row, all distinct."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray, torch.Tensor)):
        raise SpacegraphTypeError(f"ids must be a sequence of ints or of strings, got {type(ids).__name__}")
    values = ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else list(ids)
    if len(values) != count:
        raise SpacegraphValueError(f"ids: got {len(values)} for {count} rows; give one id per row")
    if all(isinstance(v, str) for v in values):
        stored: Ids = values
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        stored = torch.tensor(values, dtype=torch.long)
    else:
        raise SpacegraphTypeError("ids must be all ints or all strings")
    if len(set(values)) != count:
        raise SpacegraphValueError(f"ids must be distinct; {count - len(set(values))} repeat an earlier id")
    return stored


def _ids_of(ids: Ids, rows: torch.Tensor) -> torch.Tensor | list[list[str | None]]:
    if ids is None:
        return rows.clone()
    if isinstance(ids, torch.Tensor):
        return ids[rows.clamp(min=0)].masked_fill(rows < 0, MISSING)
    return [[ids[r] if r >= 0 else None for r in row] for row in rows.tolist()]


# -- the index ----------------------------------------------------------------------------------------------------
class SearchIndex:
    """Rows of one space, searched by inner product. Build it with :meth:`build` (or ``route.index``), query it with
    :meth:`search` (or ``route.search``), keep it with :meth:`save` and :meth:`load`."""

    def __init__(
        self, store: _Store, backend: str, options: dict[str, int], ids: Ids, route: dict[str, Any] | None
    ) -> None:
        self._store, self.backend, self.options, self._ids, self.route_identity = store, backend, options, ids, route

    @classmethod
    def build(
        cls,
        vectors: torch.Tensor,
        *,
        ids: Any = None,
        backend: Backend = "auto",
        route_identity: dict[str, Any] | None = None,
        **options: int,
    ) -> SearchIndex:
        """Index ``vectors`` ``[n, dim]``. ``ids``: one int or string per row (default: the rows 0..n-1).
        ``options``: build options and the default ``effort`` of the backend (see :data:`DEFAULTS`)."""
        width = vectors.shape[-1] if isinstance(vectors, torch.Tensor) and vectors.ndim else 0
        vectors = check_rows(vectors, width, "index rows")
        stored_ids = _check_ids(ids, len(vectors))
        chosen = choose_backend(backend, len(vectors))
        options = _options(chosen, options)
        return cls(_build_store(chosen, vectors, options), chosen, options, stored_ids, route_identity)

    def __len__(self) -> int:
        return self._store.shape[0]

    @property
    def dim(self) -> int:
        return self._store.shape[1]

    @property
    def modality(self) -> Modality | None:
        """The modality of the route side indexed (None for an index built without a route)."""
        return as_modality(self.route_identity["indexed"]["modality"]) if self.route_identity else None

    def search(self, queries: torch.Tensor, k: int = 10, *, effort: int | None = None) -> SearchResult:
        """The ``k`` best rows for each query row of ``queries`` ``[n, dim]`` (``k`` capped at ``len(self)``).
        ``effort`` overrides the approximate backend's search effort (higher: better recall, slower)."""
        k = _check_count("k", k)
        effort = _check_count("effort", self.options.get("effort", 1) if effort is None else effort)
        queries = check_rows(queries, self.dim, "search queries")
        scores, rows = self._store.search(queries.float().contiguous(), min(k, len(self)), effort)
        return SearchResult(scores, rows, _ids_of(self._ids, rows))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index into ``folder`` atomically: the backend's file, the ids if given, and ``index.json``."""
        folder = Path(folder)
        with atomic_dir(folder, own=OWN_FILES) as tmp:
            self._store.write(tmp / FILES[self.backend])
            ids_kind = self._write_ids(tmp)
            files = {path.name: _sha256(path) for path in sorted(tmp.iterdir())}
            manifest = IndexManifest(
                format="spacegraph-search-index",
                format_version=FORMAT_VERSION,
                backend=self.backend,  # type: ignore[arg-type]
                metric="inner_product",
                dim=self.dim,
                count=len(self),
                options=self.options,
                ids=ids_kind,  # type: ignore[arg-type]
                route=self.route_identity,
                files=files,
            )
            (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        return folder

    def _write_ids(self, folder: Path) -> str:
        if self._ids is None:
            return "rows"
        if isinstance(self._ids, torch.Tensor):
            save_file({"ids": self._ids}, str(folder / INT_IDS), metadata={"format": FORMAT})
            return "int"
        (folder / STR_IDS).write_text(json.dumps(self._ids), encoding="utf-8")
        return "str"

    @classmethod
    def load(cls, folder: str | os.PathLike, *, route: Route | None = None) -> SearchIndex:
        """Read a folder written by :meth:`save`, checking its manifest and every file's sha256 first; given a
        ``route``, refuse an index built for another one (see :meth:`check_route`)."""
        folder = recover_interrupted_save(folder)
        manifest = _read_manifest(folder)
        expected = {FILES[manifest.backend], *({"int": [INT_IDS], "str": [STR_IDS]}.get(manifest.ids, []))}
        if set(manifest.files) != expected:
            raise SpacegraphValueError(
                f"{folder / MANIFEST} lists files {sorted(manifest.files)}; a {manifest.backend} index with "
                f"{manifest.ids} ids holds {sorted(expected)}"
            )
        for name, digest in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise SpacegraphFileNotFoundError(f"{path} not found; {folder} is not a complete saved index")
            if _sha256(path) != digest:
                raise SpacegraphValueError(f"{path}: its sha256 differs from {MANIFEST}'s: changed or damaged")
        store = _read_store(manifest.backend, folder / FILES[manifest.backend])
        if store.shape != (manifest.count, manifest.dim):
            raise SpacegraphValueError(
                f"{folder}: the index holds {store.shape[0]} x {store.shape[1]}, its manifest says "
                f"{manifest.count} x {manifest.dim}"
            )
        index = cls(store, manifest.backend, manifest.options, _read_ids(folder, manifest), manifest.route)
        if route is not None:
            index.check_route(route)
        return index

    def check_route(self, route: Route) -> None:
        """Refuse ``route`` unless it embeds the indexed side exactly as when the index was built: the same common
        space, entry space (name and fingerprint) and bridges (names and weight fingerprints) along that leg."""
        if self.route_identity is None:
            raise SpacegraphValueError("this index was built without a route (SearchIndex.build); search it directly")
        indexed = self.route_identity["indexed"]
        modality = as_modality(indexed["modality"])
        if modality not in route.legs:
            have = ", ".join(m.value for m in route.legs)
            raise SpacegraphValueError(f"this index holds {modality.value!r} rows; the route embeds {have}")
        now = route_identity(route, modality)
        for key in ("common_space", "indexed"):
            if now[key] != self.route_identity[key]:
                raise SpacegraphValueError(
                    f"this index was built for another route: its {key.replace('_', ' ')} is "
                    f"{json.dumps(self.route_identity[key])}, this route's is {json.dumps(now[key])}; rebuild it "
                    "with route.index"
                )

    def __repr__(self) -> str:
        identity = self.route_identity
        side = f", {identity['indexed']['modality']} of {identity['common_space']!r}" if identity else ""
        return f"SearchIndex({self.backend}, {len(self)} x {self.dim}{side})"


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_manifest(folder: Path) -> IndexManifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise SpacegraphFileNotFoundError(f"{path} not found: a saved search index holds {MANIFEST}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SpacegraphValueError(f"{path}: not a readable JSON index manifest ({err})") from err
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise SpacegraphValueError(f"{path}: index format {version} is newer than this spacegraph reads; upgrade it")
    try:
        return IndexManifest.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in err.errors())
        raise SpacegraphValueError(f"{path}: not a valid index manifest: {problems}") from err


def _read_ids(folder: Path, manifest: IndexManifest) -> Ids:
    if manifest.ids == "rows":
        return None
    if manifest.ids == "int":
        ids: Any = load_file(str(folder / INT_IDS)).get("ids")
    else:
        ids = json.loads((folder / STR_IDS).read_text(encoding="utf-8"))
    try:
        return _check_ids(ids, manifest.count)
    except (TypeError, ValueError) as err:
        raise SpacegraphValueError(f"{folder}: its ids are damaged ({err})") from err


# -- routes -------------------------------------------------------------------------------------------------------
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


def route_identity(route: Route, modality: Modality) -> dict[str, Any]:
    """The identity kept with an index of ``modality``'s side of ``route``: the common space, that leg, the others."""
    return {
        "common_space": route.common_space,
        "indexed": leg_identity(route.legs[modality]),
        "others": [leg_identity(leg) for m, leg in route.legs.items() if m != modality],
    }


def embed(route: Route, modality: Modality, items: Any) -> torch.Tensor:
    """``items`` of ``modality`` in the route's common space. A float ``torch.Tensor`` is read as embeddings made by
    the leg's own space (e.g. ``FeatureStore.load``) and only projected; anything else is encoded first."""
    leg = route.leg(modality)
    if isinstance(items, torch.Tensor) and items.is_floating_point():
        what = (
            f"{modality.value} embeddings of space {leg.space.name!r} (a float tensor is read as that space's "
            "embeddings; pass raw inputs as a list or array)"
        )
        features = check_rows(items, leg.space.spec.dim, what)
    else:
        features = leg.space.encode(modality, items)
    return torch.cat([leg.project(chunk) for chunk in features.split(PROJECT_CHUNK)])


def index_route(
    route: Route, items: Any, *, modality: str | Modality | None, ids: Any, backend: Backend, **options: int
) -> SearchIndex:
    modality = route.target.modality if modality is None else as_modality(modality)
    route.leg(modality)  # an unknown modality fails before any encoding
    vectors = embed(route, modality, items)
    identity = route_identity(route, modality)
    index = SearchIndex.build(vectors, ids=ids, backend=backend, route_identity=identity, **options)
    route.search_index = index
    return index


def search_route(
    route: Route, queries: Any, k: int, *, modality: str | Modality | None, effort: int | None
) -> SearchResult:
    _check_count("k", k)
    index = route.search_index
    if index is None:
        raise SpacegraphValueError("this route has no search index yet: build one with route.index(items)")
    indexed = index.modality
    assert indexed is not None, "route.index and route.load_index keep only indexes of a route side"
    if modality is None:
        modality = next((m for m in route.legs if m != indexed), indexed)
    return index.search(embed(route, as_modality(modality), queries), k, effort=effort)


def load_route_index(route: Route, folder: str | os.PathLike) -> SearchIndex:
    index = SearchIndex.load(folder, route=route)
    route.search_index = index
    return index
