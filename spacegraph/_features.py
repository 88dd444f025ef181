"""A feature cache: (space, modality, dataset) -> checksummed safetensors shards plus a JSON manifest.

Extraction is resumable (finished, verified shards are kept) and a second run reuses the cache; a cache made from
other weights or other inputs is detected by fingerprint and by an exact digest of the inputs, and extracted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ._atomic import atomic_path, write_text_atomic
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality
from ._names import check_path_name, path_component
from ._space import Space, batch_length, check_embeddings

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_OWN_MANIFEST_START = re.compile(rb'\A\s*\{\s*"format_version"\s*:')  # how every manifest written here begins
_SHARD = r"shard-\d{5,}\.safetensors"
_SHARD_FILE = re.compile(rf"^{_SHARD}$")
_OWN_FILE = re.compile(rf"^(manifest\.json|{_SHARD})$")
_OWN_TEMP = re.compile(rf"^\.(manifest\.json|{_SHARD})\..+\.tmp$")  # from _atomic.atomic_path
_FINGERPRINTABLE = (
    "str (text, or a file path whose content is hashed), os.PathLike, bytes, bool, int, float, numpy arrays and "
    "scalars, torch tensors, PIL images, and lists or tuples of these"
)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    rows: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FeatureManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: Literal[2] = 2  # the layout of this manifest; older ones are extracted again
    space: str = Field(min_length=1)
    fingerprint: str
    modality: Modality
    dataset: str
    inputs_digest: str
    n_items: int = Field(gt=0)
    dim: int = Field(gt=0)
    shard_rows: int = Field(gt=0)
    shards: list[ShardEntry] = []

    @model_validator(mode="after")
    def _shards_in_order(self) -> FeatureManifest:
        for index, entry in enumerate(self.shards):
            rows = min(self.shard_rows, self.n_items - index * self.shard_rows)
            if (entry.file, entry.rows) != (shard_name(index), rows):
                raise SpacegraphValueError(
                    f"shard {index} must be {shard_name(index)} with {rows} rows, got {entry.file} with {entry.rows}"
                )
        return self

    @property
    def rows_done(self) -> int:
        return sum(entry.rows for entry in self.shards)

    def header(self) -> dict[str, Any]:
        """Everything that says which features these are (all but the shard list)."""
        return self.model_dump(exclude={"shards"})


class _DamagedCache(SpacegraphValueError):
    """A cache file this module wrote that is missing, truncated, replaced or holds NaN/inf."""


# --- inputs digest -------------------------------------------------------------------------------------------------


def inputs_digest(inputs: Any, modality: Modality | str) -> str:
    """A sha256 of exactly what is encoded, so a cache is never reused for other inputs.

    ``modality`` says what a ``str`` is: for text the text itself; for any other modality the string plus, when it
    names a file, the file's content (a str that names no file, such as a precomputed space's row id, is hashed as
    the string; the space says whether it wanted a file). An ``os.PathLike`` must name a file. Arrays, tensors and
    images are hashed with their dtype/mode and shape; lists and tuples element by element, tagged with their
    length, so no two different inputs share a digest.
    """
    digest = hashlib.sha256()
    _update(digest, inputs, as_modality(modality), "inputs")
    return digest.hexdigest()


def _put(digest: Any, tag: str, payload: Any) -> None:
    """Add one tagged, length-prefixed field (``payload`` is any C-contiguous buffer)."""
    digest.update(f"{tag}:{memoryview(payload).nbytes}:".encode())
    digest.update(payload)


def _update(digest: Any, item: Any, modality: Modality, where: str) -> None:
    if isinstance(item, str):
        _put(digest, "str", item.encode("utf-8", "surrogatepass"))
        if modality is not Modality.TEXT and os.path.isfile(item):
            _put(digest, "file", _file_sha256(item))
    elif isinstance(item, os.PathLike):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise SpacegraphFileNotFoundError(
                f"{where}: {path!s} is not a file; the feature cache hashes the content of a path"
            )
        _put(digest, "path", os.fsencode(path))
        _put(digest, "file", _file_sha256(path))
    elif isinstance(item, (bytes, bytearray, memoryview)):
        _put(digest, "bytes", bytes(item))
    elif isinstance(item, bool):
        _put(digest, "bool", str(int(item)).encode())
    elif isinstance(item, int):
        _put(digest, "int", str(item).encode())
    elif isinstance(item, float):
        _put(digest, "float", item.hex().encode())
    elif isinstance(item, (np.ndarray, np.generic)):
        _update_array(digest, np.asarray(item), modality, where)
    elif isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        tensor = tensor.to_dense() if tensor.layout != torch.strided else tensor
        _put(digest, "tensor", f"{tensor.dtype}|{tuple(tensor.shape)}".encode())
        _put(digest, "data", tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(item, Image.Image):
        _update_image(digest, item, where)
    elif isinstance(item, (list, tuple)):
        _put(digest, "tuple" if isinstance(item, tuple) else "list", str(len(item)).encode())
        for index, element in enumerate(item):
            _update(digest, element, modality, f"{where}[{index}]")
    else:
        raise SpacegraphTypeError(
            f"{where}: the feature cache cannot fingerprint a {type(item).__name__}; it takes {_FINGERPRINTABLE}"
        )


def _update_array(digest: Any, array: np.ndarray, modality: Modality, where: str) -> None:
    if array.dtype.hasobject:
        _put(digest, "object-array", str(array.shape).encode())
        for index, element in enumerate(array.ravel()):
            _update(digest, element, modality, f"{where}.flat[{index}]")
        return
    _put(digest, "array", f"{np.lib.format.dtype_to_descr(array.dtype)}|{array.shape}".encode())
    _put(digest, "data", np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _update_image(digest: Any, image: Image.Image, where: str) -> None:
    try:
        pixels = image.tobytes()
    except (OSError, ValueError) as err:
        raise SpacegraphValueError(f"{where}: the image cannot be read ({err})") from err
    _put(digest, "image", f"{image.mode}|{image.size}".encode())
    _put(digest, "palette", bytes(image.getpalette() or []))
    _put(digest, "data", pixels)


def _file_sha256(path: str | bytes) -> bytes:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise SpacegraphValueError(f"{os.fsdecode(path)}: cannot be read to fingerprint it ({err.strerror})") from err
    return digest.digest()


# --- files of one cache folder ---------------------------------------------------------------------------------------


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise SpacegraphValueError(
            f"cannot create the feature cache folder {path}: a file is in the way ({err})"
        ) from err


def _read_manifest(folder: Path) -> FeatureManifest | None:
    """The folder's manifest, None if there is none; _DamagedCache if it is ours but unreadable; ValueError if it
    is not a spacegraph feature manifest at all."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpacegraphValueError(f"{path}: cannot read the feature cache manifest ({err.strerror})") from err
    if not _is_own_manifest(raw, folder):
        raise SpacegraphValueError(
            f"{folder} holds a {MANIFEST} that is not a spacegraph feature manifest; the feature cache leaves it "
            "untouched: move it away, or use another cache root or dataset name"
        )
    try:
        return FeatureManifest.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"])) or "manifest"
        raise _DamagedCache(
            f"feature cache manifest {path} is damaged or from another spacegraph version ({field}: {first['msg']})"
        ) from err


def _is_own_manifest(raw: bytes, folder: Path) -> bool:
    """Whether a manifest.json is one this module wrote (perhaps damaged since): empty, beside the cache's shards,
    a JSON object with its fields, or (truncated) one that begins like it."""
    if not raw.strip(b"\0 \t\r\n") or _OWN_MANIFEST_START.match(raw):
        return True
    if any(_SHARD_FILE.match(entry.name) for entry in folder.iterdir()):
        return True
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"format_version", "inputs_digest"} <= data.keys()


def _remove_own(folder: Path, pattern: re.Pattern[str]) -> None:
    """Remove the files of ``folder`` this module writes whose names match ``pattern``; nothing else."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if pattern.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def _write_shard(folder: Path, index: int, embeddings: torch.Tensor) -> ShardEntry:
    data = save_safetensors({"embeddings": embeddings.contiguous()})
    with atomic_path(folder / shard_name(index)) as tmp:
        tmp.write_bytes(data)
    return ShardEntry(file=shard_name(index), rows=len(embeddings), sha256=hashlib.sha256(data).hexdigest())


def _read_shard(folder: Path, manifest: FeatureManifest, index: int) -> torch.Tensor:
    """Shard ``index``, verified against its checksum, row count, the dim and finiteness; else _DamagedCache."""
    entry = manifest.shards[index]
    path = folder / entry.file
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _DamagedCache(f"feature cache shard {path} cannot be read ({err.strerror})") from err
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _DamagedCache(f"feature cache shard {path} does not match the sha256 in {MANIFEST} (damaged or replaced)")
    try:
        embeddings = load_safetensors(data).get("embeddings")
    except (SafetensorError, ValueError, KeyError) as err:
        raise _DamagedCache(f"feature cache shard {path} is not a readable safetensors file ({err})") from err
    expected = (entry.rows, manifest.dim)
    if embeddings is None or embeddings.dtype != torch.float32 or tuple(embeddings.shape) != expected:
        raise _DamagedCache(f"feature cache shard {path} does not hold float32 'embeddings' of shape {list(expected)}")
    if not torch.isfinite(embeddings).all():
        raise _DamagedCache(f"feature cache shard {path} holds NaN or inf")
    return embeddings


# --- the store -----------------------------------------------------------------------------------------------------


class FeatureStore:
    """Cached embeddings under ``root/<space>/<modality>/<dataset>/``: ``manifest.json`` plus
    ``shard-NNNNN.safetensors`` files, each recorded in the manifest with its row count and sha256.

    - Names: the space name becomes one safe folder name (``path_component``), the dataset name must be one
      (``check_path_name``), so nothing is ever written or removed outside ``root``.
    - Integrity: every shard is verified when read. :meth:`encode` extracts a damaged shard (or manifest) again with
      a warning; :meth:`load`, which has no inputs, refuses it with a ValueError.
    - Concurrency: a process holds a file lock (``.<dataset>.lock`` beside the dataset folder) while it encodes or
      loads a dataset, so concurrent writers are serialised and each gets the rows of its own inputs.
    - Crashes: shards and manifest are written atomically; after a kill, :meth:`encode` resumes from the last
      verified shard and removes the killed run's temp files.
    - Deletion: the store removes only the files it writes itself (its manifest, shards and their temp files).
      When a dataset folder holds features of other weights or inputs, those are replaced and any other file in
      it is left in place. A damaged manifest is the cache's own when it still begins like one, is empty, or sits
      beside the cache's shards; any other ``manifest.json`` is foreign: the folder is refused with a ValueError and
      left untouched.
    """

    def __init__(self, root: str | os.PathLike, *, shard_rows: int = 4096) -> None:
        if shard_rows < 1:
            raise SpacegraphValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.root = Path(root)
        self.shard_rows = shard_rows

    def folder(self, space_name: str, modality: Modality | str, dataset: str) -> Path:
        dataset = check_path_name(dataset, "dataset name")
        return self.root / path_component(space_name) / as_modality(modality).value / dataset

    @staticmethod
    def _lock(folder: Path) -> FileLock:
        _make_dir(folder.parent)
        return FileLock(folder.parent / f".{folder.name}.lock")

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
        n_items = batch_length(inputs)
        if n_items == 0:
            raise SpacegraphValueError(f"no {modality.value} inputs for dataset {dataset!r}; pass at least one item")
        fresh = FeatureManifest(
            space=space.name,
            fingerprint=space.spec.fingerprint,
            modality=modality,
            dataset=dataset,
            inputs_digest=inputs_digest(inputs, modality),
            n_items=n_items,
            dim=space.spec.dim,
            shard_rows=self.shard_rows,
        )
        with self._lock(folder):
            manifest = self._resume_or_restart(folder, fresh)
            chunks = []
            for index, start in enumerate(range(0, n_items, self.shard_rows)):
                if index < len(manifest.shards):
                    try:
                        chunks.append(_read_shard(folder, manifest, index))
                        continue
                    except _DamagedCache as err:
                        logger.warning("%s; extracting its rows again", err)
                rows = inputs[start : start + self.shard_rows]
                embeddings = space.encode(modality, rows, batch_size=batch_size, show_progress_bar=show_progress_bar)
                chunks.append(self._checked(embeddings, len(rows), space, modality))
                manifest.shards[index : index + 1] = [_write_shard(folder, index, chunks[-1])]
                write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
        return torch.cat(chunks)

    @staticmethod
    def _checked(embeddings: torch.Tensor, n_rows: int, space: Space, modality: Modality) -> torch.Tensor:
        what = f"space {space.name!r} {modality.value} embeddings for the feature cache"
        embeddings = check_embeddings(embeddings, space.spec.dim, what).to(torch.float32)
        if len(embeddings) != n_rows:
            raise SpacegraphValueError(f"{what}: {len(embeddings)} rows for {n_rows} inputs")
        return embeddings

    @staticmethod
    def _resume_or_restart(folder: Path, fresh: FeatureManifest) -> FeatureManifest:
        """The folder's manifest when it is for the same features as ``fresh``; else ``fresh``, after removing the
        cache files there. Called under the lock, so temp files in the folder are a killed run's."""
        _make_dir(folder)
        try:
            manifest = _read_manifest(folder)
        except _DamagedCache as err:
            logger.warning("%s; extracting again", err)
            manifest = None
        _remove_own(folder, _OWN_TEMP)
        if manifest is not None and manifest.header() == fresh.header():
            return manifest
        if manifest is not None:
            logger.info("feature cache %s was made from other weights or inputs; extracting again", folder)
        _remove_own(folder, _OWN_FILE)
        return fresh

    def load(self, space_name: str, modality: Modality | str, dataset: str) -> torch.Tensor:
        """Read a finished cache, verifying every shard; refuses a missing, incomplete or damaged one."""
        folder = self.folder(space_name, modality, dataset)
        if not (folder / MANIFEST).is_file():
            raise SpacegraphFileNotFoundError(
                f"no cached features at {folder}; extract them with FeatureStore.encode first"
            )
        with self._lock(folder):
            try:
                manifest = _read_manifest(folder)
                if manifest is None:
                    raise _DamagedCache(f"feature cache manifest {folder / MANIFEST} was removed")
                found = (manifest.space, manifest.modality.value, manifest.dataset)
                if found != (space_name, as_modality(modality).value, dataset):
                    raise SpacegraphValueError(f"{folder / MANIFEST} is for (space, modality, dataset) {found}")
                if manifest.rows_done < manifest.n_items:
                    raise SpacegraphValueError(
                        f"cache {folder} is incomplete ({manifest.rows_done}/{manifest.n_items} rows); run encode again"
                    )
                return torch.cat([_read_shard(folder, manifest, index) for index in range(len(manifest.shards))])
            except _DamagedCache as err:
                raise SpacegraphValueError(
                    f"{err}; run FeatureStore.encode with the same inputs to extract it again"
                ) from err
