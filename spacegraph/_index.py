"""Nearest-neighbour search over rows of one space, by inner product (cosine for unit-norm rows).

:class:`SearchIndex` holds vectors and, optionally, one id per row, and answers top-k queries with one of the
backends of :mod:`spacegraph._index_backends` (``exact``, ``faiss-hnsw``, ``faiss-ivf``, ``usearch``). ``k``
above the number of rows is capped at it. An approximate index may find fewer than ``k`` rows for a query: those
places hold score ``-inf``, row ``-1`` and id ``-1`` (``None`` for string ids).

A saved index is a folder: the backend's file(s), ``ids`` if given, and ``index.json`` (backend, options, dim,
count, metric, the ``identity`` its builder gave, and each file's sha256). Loading checks all of it; what the
identity means is the builder's business (a route keeps which of its sides was indexed, see
:mod:`spacegraph._route`). No pickle is read or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file

from ._arguments import checked_arguments
from ._atomic import atomic_dir, file_sha256, recover_interrupted_save
from ._checks import check_count
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._index_backends import (
    APPROXIMATE,
    DEFAULTS,
    FILES,
    FORMAT,
    MISSING,
    Backend,
    Store,
    backend_options,
    build_store,
    choose_backend,
    read_store,
)
from ._space import check_embeddings

__all__ = ["APPROXIMATE", "DEFAULTS", "IndexManifest", "SearchIndex", "SearchResult", "check_rows"]

CHECK_CHUNK = 65_536  # rows looked through for NaN/inf at once
MANIFEST = "index.json"
INT_IDS, STR_IDS = "ids.safetensors", "ids.json"
FORMAT_VERSION = 2  # 2: the builder's "identity" (version 1 called it "route")

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
    """``index.json``: what a saved index holds."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["spacegraph-search-index"]
    format_version: int = Field(ge=1)
    backend: Literal["exact", "faiss-hnsw", "faiss-ivf", "usearch"]
    metric: Literal["inner_product"]
    dim: int = Field(gt=0)
    count: int = Field(gt=0)
    options: dict[str, int]
    ids: Literal["rows", "int", "str"]
    identity: dict[str, Any] | None = Field(description="What the builder says the rows are; None if it said nothing.")
    files: dict[str, str] = Field(description="File name -> sha256 hex digest.")


def check_rows(rows: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    """:func:`check_embeddings` in bounded memory: NaN/inf looked for :data:`CHECK_CHUNK` rows at a time."""
    if not isinstance(rows, torch.Tensor) or not rows.is_floating_point() or rows.ndim != 2:
        found = f"a {rows.ndim}-d tensor" if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise SpacegraphTypeError(f"{what}: expected a 2-d float torch.Tensor of shape [n, {dim}], got {found}")
    rows = rows.detach().cpu()
    check_embeddings(rows[:1], dim, what)  # shape and emptiness
    for start in range(0, len(rows), CHECK_CHUNK):
        try:
            check_embeddings(rows[start : start + CHECK_CHUNK], dim, what)
        except SpacegraphValueError as err:
            raise SpacegraphValueError(f"{err} (in rows {start} to {start + CHECK_CHUNK - 1})") from None
    return rows


def _check_ids(ids: Any, count: int) -> Ids:
    """``ids`` as stored: None, an int64 tensor or a list of strings, one per row, all distinct."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray, torch.Tensor)):
        raise SpacegraphTypeError(f"ids must be a sequence of ints or of strings, got {type(ids).__name__}")
    if isinstance(ids, (np.ndarray, torch.Tensor)) and ids.ndim != 1:
        raise SpacegraphValueError(f"ids must be one-dimensional, one id per row; got shape {tuple(ids.shape)}")
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


class SearchIndex:
    """Rows of one space, searched by inner product. Build it with :meth:`build` (or ``route.index``), query it with
    :meth:`search` (or ``route.search``), keep it with :meth:`save` and :meth:`load` (or ``route.load_index``).
    ``identity``: whatever its builder says the rows are (a JSON-able dict), saved and loaded with it, unread here."""

    def __init__(
        self, store: Store, backend: str, options: dict[str, int], ids: Ids, identity: dict[str, Any] | None
    ) -> None:
        self._store, self.backend, self.options, self._ids, self.identity = store, backend, options, ids, identity

    @classmethod
    def build(
        cls,
        vectors: torch.Tensor,
        *,
        ids: Any = None,
        backend: Backend = "auto",
        identity: dict[str, Any] | None = None,
        **options: int,
    ) -> SearchIndex:
        """Index ``vectors`` ``[n, dim]``. ``ids``: one int or string per row (default: the rows 0..n-1).
        ``options``: build options and the default ``effort`` of the backend (see :data:`DEFAULTS`)."""
        width = vectors.shape[-1] if isinstance(vectors, torch.Tensor) and vectors.ndim else 0
        vectors = check_rows(vectors, width, "index rows")
        stored_ids = _check_ids(ids, len(vectors))
        chosen = choose_backend(backend, len(vectors))
        options = backend_options(chosen, options)
        return cls(build_store(chosen, vectors, options), chosen, options, stored_ids, identity)

    def __len__(self) -> int:
        return self._store.shape[0]

    @property
    def dim(self) -> int:
        return self._store.shape[1]

    @checked_arguments
    def search(self, queries: torch.Tensor, k: int = 10, *, effort: int | None = None) -> SearchResult:
        """The ``k`` best rows for each query row of ``queries`` ``[n, dim]`` (``k`` capped at ``len(self)``).
        ``effort`` overrides the approximate backend's search effort (higher: better recall, slower)."""
        k = check_count("k", k)
        effort = check_count("effort", self.options.get("effort", 1) if effort is None else effort)
        queries = check_rows(queries, self.dim, "search queries")
        scores, rows = self._store.search(queries.float().contiguous(), min(k, len(self)), effort)
        return SearchResult(scores, rows, _ids_of(self._ids, rows))

    @checked_arguments
    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the index into ``folder`` atomically: the backend's file, the ids if given, and ``index.json``. An
        existing ``folder`` is replaced as :meth:`Bridge.save` replaces one (``overwrite`` likewise)."""
        folder = Path(folder)
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self._store.write(tmp / FILES[self.backend])
            ids_kind = self._write_ids(tmp)
            files = {path.name: file_sha256(path) for path in sorted(tmp.iterdir())}
            manifest = IndexManifest(
                format="spacegraph-search-index",
                format_version=FORMAT_VERSION,
                backend=self.backend,  # type: ignore[arg-type]
                metric="inner_product",
                dim=self.dim,
                count=len(self),
                options=self.options,
                ids=ids_kind,  # type: ignore[arg-type]
                identity=self.identity,
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
    @checked_arguments
    def load(cls, folder: str | os.PathLike) -> SearchIndex:
        """Read a folder written by :meth:`save`, checking its manifest and every file's sha256 first."""
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
            if file_sha256(path) != digest:
                raise SpacegraphValueError(f"{path}: its sha256 differs from {MANIFEST}'s: changed or damaged")
        store = read_store(manifest.backend, folder / FILES[manifest.backend])
        if store.shape != (manifest.count, manifest.dim):
            raise SpacegraphValueError(
                f"{folder}: the index holds {store.shape[0]} x {store.shape[1]}, its manifest says "
                f"{manifest.count} x {manifest.dim}"
            )
        return cls(store, manifest.backend, manifest.options, _read_ids(folder, manifest), manifest.identity)

    def __repr__(self) -> str:
        return f"SearchIndex({self.backend}, {len(self)} x {self.dim})"


def _read_manifest(folder: Path) -> IndexManifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise SpacegraphFileNotFoundError(f"{path} not found: a saved search index holds {MANIFEST}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise SpacegraphValueError(f"{path}: not a readable JSON index manifest ({err})") from err
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise SpacegraphValueError(f"{path}: index format {version} is newer than this spacegraph reads; upgrade it")
    if version == 1 and "route" in data:  # version 1 named the identity "route"
        data = {**{key: value for key, value in data.items() if key != "route"}, "identity": data["route"]}
    try:
        return IndexManifest.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in err.errors())
        raise SpacegraphValueError(f"{path}: not a valid index manifest: {problems}") from err


def _read_ids(folder: Path, manifest: IndexManifest) -> Ids:
    if manifest.ids == "rows":
        return None
    try:
        if manifest.ids == "int":
            ids: Any = load_file(str(folder / INT_IDS)).get("ids")
            if ids is None:  # None would mean "row numbers": refuse, never answer with them
                raise ValueError(f"{INT_IDS} holds no 'ids' tensor")
        else:
            ids = json.loads((folder / STR_IDS).read_text(encoding="utf-8"))
        return _check_ids(ids, manifest.count)
    except (OSError, TypeError, ValueError, RecursionError) as err:
        raise SpacegraphValueError(f"{folder}: its ids are damaged ({err})") from err
