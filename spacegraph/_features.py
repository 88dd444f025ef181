"""A feature cache: (space, modality, dataset) -> checksummed safetensors shards plus a JSON manifest.

Extraction is resumable (finished, verified shards are kept), can be shared out over the ranks of a ``torchrun``
launch, and a second run reuses the cache; a cache made from other weights or other inputs is detected by fingerprint
and by an exact digest of the inputs, and extracted again.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Collection
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
from ._distributed import ensure_process_group, on_every_rank, on_first_rank
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality
from ._names import check_path_name, path_component
from ._space import Space, batch_length, check_embeddings

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_OWN_MANIFEST_START = re.compile(rb'\A\s*\{\s*"format_version"\s*:')  # how every manifest written here begins
_SHARD = r"shard-\d{5,}\.safetensors"
_PROGRESS = r"progress-(\d{5,})-rank-(\d{5,})\.json"
_SHARD_FILE = re.compile(rf"^{_SHARD}$")
_PROGRESS_FILE = re.compile(rf"^{_PROGRESS}$")
_OWN_FILE = re.compile(rf"^(manifest\.json|{_SHARD}|{_PROGRESS})$")
_OWN_TEMP = re.compile(rf"^\.(manifest\.json|{_SHARD}|{_PROGRESS})\..+\.tmp$")  # from _atomic.atomic_path
_FINGERPRINTABLE = (
    "str (text, or a file path whose content is hashed), os.PathLike, bytes, bool, int, float, numpy arrays and "
    "scalars, torch tensors, PIL images, and lists or tuples of these"
)


_ShardEncoder = Callable[[int], torch.Tensor]  # shard index -> its checked float32 embeddings


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def progress_name(attempt: int, rank: int) -> str:
    return f"progress-{attempt:05d}-rank-{rank:05d}.json"


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    rows: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FeatureHeader(BaseModel):
    """Everything that says which features a cache holds, and how they are cut into shards."""

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

    def header(self) -> dict[str, Any]:
        """Everything that says which features these are (all but the shard records)."""
        return self.model_dump(mode="json", include=set(FeatureHeader.model_fields))

    @property
    def n_shards(self) -> int:
        return -(-self.n_items // self.shard_rows)

    def shard_entry(self, index: int, sha256: str) -> ShardEntry:
        return ShardEntry(
            file=shard_name(index), rows=min(self.shard_rows, self.n_items - index * self.shard_rows), sha256=sha256
        )

    def _check_entry(self, index: int, entry: ShardEntry) -> None:
        expected = self.shard_entry(index, entry.sha256)
        if not 0 <= index < self.n_shards or entry != expected:
            raise SpacegraphValueError(
                f"shard {index} must be {expected.file} with {expected.rows} rows (of {self.n_shards} shards), got "
                f"{entry.file} with {entry.rows}"
            )


class FeatureManifest(FeatureHeader):
    """``manifest.json``: the header and the finished shards, in order from the first."""

    shards: list[ShardEntry] = []

    @model_validator(mode="after")
    def _shards_in_order(self) -> FeatureManifest:
        for index, entry in enumerate(self.shards):
            self._check_entry(index, entry)
        return self

    @property
    def rows_done(self) -> int:
        return sum(entry.rows for entry in self.shards)


class RankProgress(FeatureHeader):
    """``progress-AAAAA-rank-RRRRR.json``: the shards one rank wrote in distributed run number AAAAA on this dataset,
    in any order; merged into the manifest once every rank is done, then removed."""

    done: dict[int, ShardEntry] = {}

    @model_validator(mode="after")
    def _shards_in_range(self) -> RankProgress:
        for index, entry in self.done.items():
            self._check_entry(index, entry)
        return self


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


def _read_shard(
    folder: Path, header: FeatureHeader, index: int, recorded: Collection[str]
) -> tuple[ShardEntry, torch.Tensor]:
    """Shard ``index`` and its entry, verified against the sha256 values on record for it (one must match), its row
    count, the dim and finiteness; else _DamagedCache."""
    path = folder / shard_name(index)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _DamagedCache(f"feature cache shard {path} cannot be read ({err.strerror})") from err
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 not in recorded:
        raise _DamagedCache(f"feature cache shard {path} does not match the sha256 in {MANIFEST} (damaged or replaced)")
    try:
        embeddings = load_safetensors(data).get("embeddings")
    except (SafetensorError, ValueError, KeyError) as err:
        raise _DamagedCache(f"feature cache shard {path} is not a readable safetensors file ({err})") from err
    entry = header.shard_entry(index, sha256)
    expected = (entry.rows, header.dim)
    if embeddings is None or embeddings.dtype != torch.float32 or tuple(embeddings.shape) != expected:
        raise _DamagedCache(f"feature cache shard {path} does not hold float32 'embeddings' of shape {list(expected)}")
    if not torch.isfinite(embeddings).all():
        raise _DamagedCache(f"feature cache shard {path} holds NaN or inf")
    return entry, embeddings


def _read_progress(folder: Path) -> list[tuple[int, RankProgress]]:
    """The readable progress records of distributed runs in ``folder`` with their run numbers, oldest run first; a
    damaged one is skipped with a warning (its shards are extracted again)."""
    records = []
    for path in sorted(folder.iterdir()):
        match = _PROGRESS_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            records.append((int(match.group(1)), RankProgress.model_validate_json(path.read_bytes())))
        except (OSError, ValidationError) as err:
            logger.warning(
                "feature cache progress record %s is unreadable (%s); its shards are extracted again", path, err
            )
    return sorted(records, key=lambda record: record[0])


def _progress_entries(progress: list[tuple[int, RankProgress]]) -> list[tuple[int, ShardEntry]]:
    return [item for _, record in progress for item in record.done.items()]


def _rank_share(n_shards: int, recorded: Collection[int], rank: int, world_size: int) -> list[int]:
    """The shards one rank handles: every ``world_size``-th of those on record (to verify) and of the others (to
    extract), so the work is even, and the same for every rank count on a fresh run: shard i goes to rank i mod N."""
    on_record = sorted(recorded)
    missing = [index for index in range(n_shards) if index not in recorded]
    return sorted(on_record[rank::world_size] + missing[rank::world_size])


def _encode_options(
    space: Space, batch_size: int, show_progress_bar: bool, num_workers: int | None, precision: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``space.encode``; ``num_workers`` and ``precision`` only when given."""
    options: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
    accepted = inspect.signature(space.encode).parameters
    for name, value in (("num_workers", num_workers), ("precision", precision)):
        if value is not None and name not in accepted:
            raise SpacegraphTypeError(f"space {space.name!r} takes no {name} in encode; leave {name} unset")
        if value is not None:
            options[name] = value
    return options


# --- the store -----------------------------------------------------------------------------------------------------


class FeatureStore:
    """Cached embeddings under ``root/<space>/<modality>/<dataset>/``: ``manifest.json`` plus
    ``shard-NNNNN.safetensors`` files, each recorded in the manifest with its row count and sha256.

    - Names: the space name becomes one safe folder name (``path_component``), the dataset name must be one
      (``check_path_name``), so nothing is ever written or removed outside ``root``.
    - Integrity: every shard is verified when read. :meth:`encode` extracts a damaged shard (or manifest) again with
      a warning; :meth:`load`, which has no inputs, refuses it with a ValueError.
    - Concurrency: a process holds a file lock (``.<dataset>.lock`` beside the dataset folder) while it encodes or
      loads a dataset, so concurrent writers are serialised and each gets the rows of its own inputs. In a
      distributed :meth:`encode` rank 0 holds it for the whole group.
    - Distributed (``torchrun``): shard i of a fresh run goes to rank i mod N; each rank writes its shards and
      records them in its own ``progress-AAAAA-rank-RRRRR.json``; after every rank is done rank 0 writes the
      manifest and removes the progress files. Several machines need ``root`` on a shared file system.
    - Crashes: shards, manifest and progress files are written atomically; after a kill, :meth:`encode` (with any
      number of processes) keeps every shard on record whose checksum still matches, extracts only the others and
      removes the killed run's temp files.
    - Deletion: the store removes only the files it writes itself (its manifest, shards, progress files and their
      temp files).
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
        num_workers: int | None = None,
        precision: str | None = None,
        distributed: bool = True,
    ) -> torch.Tensor:
        """Embeddings of ``inputs`` by ``space``, extracted once and read from the cache afterwards.

        ``num_workers`` and ``precision`` go to :meth:`Space.encode` when given; a precision other than "fp32" is part
        of the cache's fingerprint. Under ``torchrun`` with several processes (or in an initialised default process
        group of several ranks) every rank must call this with the same arguments: the ranks share out the shards,
        write exactly the files one process would write, and each returns all the features. ``distributed=False``
        makes this process extract alone, e.g. when only one rank of a training job calls it.
        """
        modality = space.check_modality(modality)
        folder = self.folder(space.name, modality, dataset)
        n_items = batch_length(inputs)
        if n_items == 0:
            raise SpacegraphValueError(f"no {modality.value} inputs for dataset {dataset!r}; pass at least one item")
        options = _encode_options(space, batch_size, show_progress_bar, num_workers, precision)
        fresh = FeatureManifest(
            space=space.name,
            fingerprint=space.spec.fingerprint + ("" if precision in (None, "fp32") else f"+{precision}"),
            modality=modality,
            dataset=dataset,
            inputs_digest=inputs_digest(inputs, modality),
            n_items=n_items,
            dim=space.spec.dim,
            shard_rows=self.shard_rows,
        )

        def encode_shard(index: int) -> torch.Tensor:
            rows = inputs[index * self.shard_rows : (index + 1) * self.shard_rows]
            return self._checked(space.encode(modality, rows, **options), len(rows), space, modality)

        rank, world_size = ensure_process_group() if distributed else (0, 1)
        if world_size > 1:
            return self._encode_distributed(folder, fresh, encode_shard, rank, world_size)
        with self._lock(folder):
            manifest, recorded, _ = self._resume_or_restart(folder, fresh)
            chunks = []
            for index in range(fresh.n_shards):
                entry, embeddings = self._verified_or_encoded(folder, fresh, index, recorded, encode_shard)
                chunks.append(embeddings)
                if manifest.shards[index : index + 1] != [entry]:
                    manifest.shards[index : index + 1] = [entry]
                    write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
            _remove_own(folder, _PROGRESS_FILE)
        return torch.cat(chunks)

    def _encode_distributed(
        self, folder: Path, fresh: FeatureManifest, encode_shard: _ShardEncoder, rank: int, world_size: int
    ) -> torch.Tensor:
        """One rank's part of a distributed :meth:`encode`. Rank 0 takes the dataset's lock for the whole group and
        reads what is on record; each rank verifies or extracts every ``world_size``-th shard, recording each shard it
        writes in its own progress file; rank 0 then writes the manifest and removes the progress files, and every
        rank reads the others' shards. A failure on any rank is raised on all of them."""
        what = f"feature extraction into {folder}"
        headers = on_every_rank(fresh.header, what)
        differing = next((other for other in headers if other != headers[0]), None)
        if differing is not None:
            fields = sorted(key for key in headers[0] if headers[0][key] != differing[key])
            raise SpacegraphValueError(
                f"{what}: every rank must pass the same space, inputs and shard_rows; the ranks differ in {fields} "
                "(to extract in one process alone, pass distributed=False)"
            )
        with contextlib.ExitStack() as held:

            def plan() -> dict[str, Any]:
                held.enter_context(self._lock(folder))
                _, recorded, attempt = self._resume_or_restart(folder, fresh)
                return {"recorded": {str(index): sorted(shas) for index, shas in recorded.items()}, "attempt": attempt}

            planned = on_first_rank(plan, what)
            recorded = {int(index): set(shas) for index, shas in planned["recorded"].items()}
            progress_file = folder / progress_name(planned["attempt"], rank)
            local: dict[int, torch.Tensor] = {}

            def extract() -> dict[str, str]:
                progress, shas = RankProgress.model_validate(fresh.header()), {}
                for index in _rank_share(fresh.n_shards, recorded, rank, world_size):
                    entry, local[index] = self._verified_or_encoded(folder, fresh, index, recorded, encode_shard)
                    shas[str(index)] = entry.sha256
                    if entry.sha256 not in recorded.get(index, ()):
                        progress.done[index] = entry
                        write_text_atomic(progress_file, progress.model_dump_json(indent=2))
                return shas

            shas = {int(index): sha for part in on_every_rank(extract, what) for index, sha in part.items()}
            manifest = fresh.model_copy(
                update={"shards": [fresh.shard_entry(i, shas[i]) for i in range(fresh.n_shards)]}
            )

            def merge() -> None:
                write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
                _remove_own(folder, _PROGRESS_FILE)

            on_first_rank(merge, what)
            features: list[torch.Tensor] = []

            def assemble() -> None:
                chunks = [
                    local[index] if index in local else _read_shard(folder, manifest, index, {entry.sha256})[1]
                    for index, entry in enumerate(manifest.shards)
                ]
                features.append(torch.cat(chunks))

            on_every_rank(assemble, what)
        return features[0]

    @staticmethod
    def _verified_or_encoded(
        folder: Path, header: FeatureHeader, index: int, recorded: dict[int, set[str]], encode_shard: _ShardEncoder
    ) -> tuple[ShardEntry, torch.Tensor]:
        """Shard ``index`` read back when it is on record and intact, else extracted and written."""
        if index in recorded:
            try:
                return _read_shard(folder, header, index, recorded[index])
            except _DamagedCache as err:
                logger.warning("%s; extracting its rows again", err)
        embeddings = encode_shard(index)
        return _write_shard(folder, index, embeddings), embeddings

    @staticmethod
    def _checked(embeddings: torch.Tensor, n_rows: int, space: Space, modality: Modality) -> torch.Tensor:
        what = f"space {space.name!r} {modality.value} embeddings for the feature cache"
        embeddings = check_embeddings(embeddings, space.spec.dim, what).to(torch.float32)
        if len(embeddings) != n_rows:
            raise SpacegraphValueError(f"{what}: {len(embeddings)} rows for {n_rows} inputs")
        return embeddings

    @staticmethod
    def _resume_or_restart(folder: Path, fresh: FeatureManifest) -> tuple[FeatureManifest, dict[int, set[str]], int]:
        """When every record in the folder (manifest, progress files of distributed runs) is for the same features as
        ``fresh``: the manifest (else ``fresh``), the sha256 values on record for each shard, and the number of the
        next distributed run. Otherwise ``fresh``, no record and run 1, after removing the cache files there. Called
        under the lock, so temp files in the folder are a killed run's."""
        _make_dir(folder)
        try:
            manifest = _read_manifest(folder)
        except _DamagedCache as err:
            logger.warning("%s; extracting again", err)
            manifest = None
        _remove_own(folder, _OWN_TEMP)
        progress = _read_progress(folder)
        records = ([manifest] if manifest is not None else []) + [record for _, record in progress]
        if records and all(record.header() == fresh.header() for record in records):
            recorded: dict[int, set[str]] = {}
            for index, entry in [*enumerate(manifest.shards if manifest else []), *_progress_entries(progress)]:
                recorded.setdefault(index, set()).add(entry.sha256)
            return manifest or fresh, recorded, 1 + max((attempt for attempt, _ in progress), default=0)
        if manifest is not None or progress:
            logger.info("feature cache %s was made from other weights or inputs; extracting again", folder)
        _remove_own(folder, _OWN_FILE)
        return fresh, {}, 1

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
                shards = [
                    _read_shard(folder, manifest, index, {entry.sha256}) for index, entry in enumerate(manifest.shards)
                ]
                return torch.cat([embeddings for _, embeddings in shards])
            except _DamagedCache as err:
                raise SpacegraphValueError(
                    f"{err}; run FeatureStore.encode with the same inputs to extract it again"
                ) from err
