"""The storage behind :class:`~spacegraph._index.SearchIndex`: one class per backend, each building, searching,
writing and reading its rows, and the choice of backend and its options.

* ``exact``: torch, chunked over queries and rows with a running top-k, so memory stays at about
  ``QUERY_CHUNK x GALLERY_CHUNK`` scores whatever the sizes; stored as safetensors.
* ``faiss-hnsw`` (``faiss.IndexHNSWFlat``), ``faiss-ivf`` (``faiss.IndexIVFFlat``) and ``usearch`` (its HNSW):
  approximate, from the ``search`` extra; stored with ``faiss.write_index`` / ``usearch``'s ``save``.

``backend="auto"`` is exact up to :data:`EXACT_MAX_ROWS` rows and ``faiss-hnsw`` above (``usearch`` if faiss is
missing, exact if both are). Each approximate backend has one search-time ``effort`` knob (HNSW ``efSearch``,
IVF ``nprobe``, usearch ``expansion_search``). Measured on the 1M x 512 clustered gallery of
``benchmarks/search.py`` (one thread), recall@10 at the defaults: faiss-hnsw 0.987 (1.2 ms a query, built in
20 min), faiss-ivf 0.976 (48 ms; 71 s), usearch 0.927 (4 ms; 27 min; below the 0.95 target: raise
``connectivity`` / ``expansion_add``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ._checks import is_count
from ._errors import SpacegraphValueError
from ._optional import require
from ._streaming import top_k

EXACT_MAX_ROWS = 100_000  # backend="auto": exact search up to this many rows, approximate above
QUERY_CHUNK = 1_024  # exact search scores this many queries ...
GALLERY_CHUNK = 32_768  # ... against this many rows at once (128 MB of float32 scores)
APPROXIMATE = ("faiss-hnsw", "faiss-ivf", "usearch")
BACKENDS = ("exact", *APPROXIMATE)
DEFAULTS: dict[str, dict[str, int]] = {  # build options and the search effort, chosen by benchmarks/search.py
    "exact": {},
    "faiss-hnsw": {"M": 32, "ef_construction": 64, "effort": 128},
    "faiss-ivf": {"nlist": 0, "effort": 256},  # nlist 0: about sqrt(rows), at most rows // 39
    "usearch": {"connectivity": 16, "expansion_add": 64, "effort": 256},
}
LEAST = {"M": 2, "nlist": 0}  # the smallest value of an option, where it is not 1

FILES = {
    "exact": "vectors.safetensors",
    "faiss-hnsw": "index.faiss",
    "faiss-ivf": "index.faiss",
    "usearch": "index.usearch",
}
FORMAT = "spacegraph-search-index"
MISSING = -1  # row and int id of a place an approximate index left empty
CHECK_ROWS = 65_536  # rows of a loaded approximate index checked for finiteness at once

Backend = Literal["auto", "exact", "faiss-hnsw", "faiss-ivf", "usearch"]


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
        """The rows saved at ``path``: one 2-d float32 ``vectors`` tensor, every value finite."""
        vectors = load_file(str(path)).get("vectors")
        if vectors is None or vectors.ndim != 2 or vectors.dtype != torch.float32:
            found = (
                "no 'vectors' tensor" if vectors is None else f"a {vectors.dtype} tensor of shape {list(vectors.shape)}"
            )
            raise SpacegraphValueError(
                f"{path}: an exact index holds one 2-d float32 'vectors' tensor; it holds {found}"
            )
        if not torch.isfinite(vectors).all():
            raise SpacegraphValueError(f"{path}: the index rows hold NaN or inf; rebuild the index with route.index")
        return cls(vectors)

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
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:  # faiss's checks of what it reads
            raise SpacegraphValueError(f"{path}: not a readable faiss index ({str(err).splitlines()[0]})") from err
        expected = faiss.IndexHNSWFlat if kind == "faiss-hnsw" else faiss.IndexIVFFlat
        if not isinstance(index, expected) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise SpacegraphValueError(f"{path}: not an inner-product {expected.__name__}, as {kind} writes")
        _check_content(path, index.reconstruct_n, _ivf_ids(faiss, index) if kind == "faiss-ivf" else None, index.ntotal)
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

        def rows_at(start: int, count: int) -> np.ndarray:
            return np.asarray(index.get(np.arange(start, start + count), dtype=np.float32))

        _check_content(path, rows_at, np.asarray(index.keys, dtype=np.int64), len(index))
        return cls(index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), self.index.ndim


Store = _Exact | _Faiss | _USearch


def _ivf_ids(faiss: Any, index: Any) -> np.ndarray:
    """The row ids stored in an IVF index's lists, all lists together."""
    lists = faiss.extract_index_ivf(index).invlists
    return np.concatenate(
        [np.zeros(0, dtype=np.int64)]
        + [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(lists.nlist)]
    )


def _check_content(path: Path, rows_at: Callable[[int, int], np.ndarray], ids: np.ndarray | None, rows: int) -> None:
    """What an approximate index's file holds, checked whatever its recorded hash says: ``ids`` (IVF lists, usearch
    keys; faiss itself checks HNSW links on read) name each row once, and the rows, read ``CHECK_ROWS`` at a time
    by ``rows_at(start, count)``, are finite."""
    if ids is not None and not np.array_equal(np.sort(ids), np.arange(rows)):
        raise SpacegraphValueError(
            f"{path}: the index's stored ids do not name each of its {rows} rows once (damaged); rebuild it with "
            "route.index"
        )
    for start in range(0, rows, CHECK_ROWS):
        if not np.isfinite(rows_at(start, min(CHECK_ROWS, rows - start))).all():
            raise SpacegraphValueError(f"{path}: the index rows hold NaN or inf; rebuild the index with route.index")


def ivf_lists(rows: int) -> int:
    """IVF lists for ``rows`` rows: about ``sqrt(rows)``, with at least 39 training rows per list (faiss's floor)."""
    return max(1, min(round(math.sqrt(rows)), rows // 39))


def _with_missing(scores: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.float().masked_fill(rows < 0, -math.inf), rows.long()


def build_store(backend: str, vectors: torch.Tensor, options: dict[str, int]) -> Store:
    if backend == "exact":
        return _Exact.build(vectors, options)
    if backend == "usearch":
        return _USearch.build(vectors, options)
    return _Faiss.build(vectors, options, backend)


def read_store(backend: str, path: Path) -> Store:
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


def backend_options(backend: str, given: dict[str, int]) -> dict[str, int]:
    """The backend's defaults updated with the ``given`` options, each checked."""
    defaults = DEFAULTS[backend]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) or "none"
        raise SpacegraphValueError(f"unknown option(s) {unknown} for search backend {backend!r}; accepted: {accepted}")
    options = {**defaults, **given}
    bad = {name: value for name, value in options.items() if not is_count(value, least=LEAST.get(name, 1))}
    if bad:
        raise SpacegraphValueError(
            f"search backend {backend!r}: options must be integers >= 1 (M >= 2: faiss crashes below; nlist >= 0, "
            f"0: automatic), got {bad}"
        )
    return options
