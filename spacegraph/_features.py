"""A feature cache: (space, modality, dataset) -> safetensors shards plus a JSON manifest.

Extraction is resumable (finished shards are kept) and a second run reuses the cache; a cache made from other
weights or other inputs is detected by fingerprint and digest and extracted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file

from ._atomic import atomic_path, write_text_atomic
from ._modality import Modality
from ._space import Space, batch_length

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class FeatureManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    space: str
    fingerprint: str
    modality: Modality
    dataset: str
    inputs_digest: str
    n_items: int
    dim: int
    shard_rows: int
    shards: list[str] = []

    @property
    def rows_done(self) -> int:
        return min(len(self.shards) * self.shard_rows, self.n_items)


def _item_digest(item: Any) -> bytes:
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        size = path.stat().st_size if path.is_file() else -1
        return f"path:{path}:{size}".encode()
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        return f"array:{item.dtype}:{item.shape}:".encode() + np.ascontiguousarray(item).tobytes()
    if hasattr(item, "tobytes") and hasattr(item, "mode"):  # a PIL image
        return f"pil:{item.mode}:{item.size}:".encode() + item.tobytes()
    return repr(item).encode()


def inputs_digest(inputs: Any) -> str:
    """A hash of what is being encoded, so a cache is never reused for other inputs."""
    digest = hashlib.sha256()
    for item in inputs:
        digest.update(hashlib.sha256(_item_digest(item)).digest())
    return digest.hexdigest()[:16]


class FeatureStore:
    """Cached embeddings under ``root/<space>/<modality>/<dataset>/``."""

    def __init__(self, root: str | os.PathLike, *, shard_rows: int = 4096) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.root = Path(root)
        self.shard_rows = shard_rows

    def folder(self, space_name: str, modality: Modality | str, dataset: str) -> Path:
        if not _SAFE_NAME.match(dataset):
            raise ValueError(f"dataset name {dataset!r} must be letters, digits, '.', '_', '+' or '-'")
        return self.root / space_name / Modality(modality).value / dataset

    def _manifest(self, folder: Path) -> FeatureManifest | None:
        path = folder / MANIFEST
        if not path.is_file():
            return None
        return FeatureManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def encode(
        self,
        space: Space,
        modality: Modality | str,
        dataset: str,
        inputs: Any,
        *,
        batch_size: int = 64,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Embeddings of ``inputs`` by ``space``, extracted once and read from the cache afterwards."""
        modality = space.check_modality(modality)
        folder = self.folder(space.name, modality, dataset)
        fresh = FeatureManifest(
            space=space.name,
            fingerprint=space.spec.fingerprint,
            modality=modality,
            dataset=dataset,
            inputs_digest=inputs_digest(inputs),
            n_items=batch_length(inputs),
            dim=space.spec.dim,
            shard_rows=self.shard_rows,
        )
        manifest = self._manifest(folder)
        if manifest is None or manifest.model_dump(exclude={"shards"}) != fresh.model_dump(exclude={"shards"}):
            if manifest is not None:
                logger.info("feature cache %s was made from other weights or inputs; extracting again", folder)
                shutil.rmtree(folder)
            manifest = fresh
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(manifest.rows_done, manifest.n_items, manifest.shard_rows):
            rows = inputs[start : start + manifest.shard_rows]
            embeddings = space.encode(modality, rows, batch_size=batch_size, show_progress_bar=show_progress_bar)
            shard = f"shard-{len(manifest.shards):05d}.safetensors"
            with atomic_path(folder / shard) as tmp:
                save_file({"embeddings": embeddings.contiguous()}, str(tmp))
            manifest.shards.append(shard)
            write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
        return self.load(space.name, modality, dataset)

    def load(self, space_name: str, modality: Modality | str, dataset: str) -> torch.Tensor:
        """Read a finished cache; refuses an incomplete or missing one."""
        folder = self.folder(space_name, modality, dataset)
        manifest = self._manifest(folder)
        if manifest is None:
            raise FileNotFoundError(f"no cached features at {folder}; extract them with FeatureStore.encode first")
        if manifest.rows_done < manifest.n_items:
            raise ValueError(
                f"cache {folder} is incomplete ({manifest.rows_done}/{manifest.n_items} rows); run encode again"
            )
        embeddings = torch.cat([load_file(str(folder / shard))["embeddings"] for shard in manifest.shards])
        if embeddings.shape != (manifest.n_items, manifest.dim):
            raise ValueError(
                f"cache {folder} holds {list(embeddings.shape)}, manifest says [{manifest.n_items}, {manifest.dim}]"
            )
        return embeddings
