"""The files of one feature cache folder: ``manifest.json`` (the header and the finished shards with their row counts
and sha256), ``shard-NNNNN.safetensors`` files of float32 embeddings, and the progress records of distributed runs.
Every file is written atomically and verified when read."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ._atomic import atomic_path
from ._errors import SpacegraphValueError
from ._modality import Modality

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_OWN_MANIFEST_START = re.compile(rb'\A\s*\{\s*"format_version"\s*:')  # how every manifest written here begins
_SHARD = r"shard-\d{5,}\.safetensors"
_PROGRESS = r"progress-(\d{5,})-rank-(\d{5,})\.json"
_SHARD_FILE = re.compile(rf"^{_SHARD}$")
PROGRESS_FILE = re.compile(rf"^{_PROGRESS}$")
OWN_FILE = re.compile(rf"^(manifest\.json|{_SHARD}|{_PROGRESS})$")
MAX_HEADER = 1 << 20  # bytes of a shard's safetensors header read to tell whether the store wrote it
OWN_TEMP = re.compile(rf"^\.(manifest\.json|{_SHARD}|{_PROGRESS})\..+\.tmp$")  # from _atomic.atomic_path


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

    def rows_in(self, index: int) -> int:
        return min(self.shard_rows, self.n_items - index * self.shard_rows)

    def shard_entry(self, index: int, sha256: str) -> ShardEntry:
        return ShardEntry(file=shard_name(index), rows=self.rows_in(index), sha256=sha256)

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


class DamagedCache(SpacegraphValueError):
    """A cache file the store wrote that is missing, truncated, replaced or holds NaN/inf."""


def make_dir(path: Path, attempts: int = 3) -> None:
    """``path`` and its parents; tried again when a failed extraction beside it removed an empty parent meanwhile."""
    for attempt in range(attempts):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
        except (FileExistsError, NotADirectoryError) as err:
            raise SpacegraphValueError(
                f"cannot create the feature cache folder {path}: a file is in the way ({err})"
            ) from err


def read_manifest(folder: Path) -> FeatureManifest | None:
    """The folder's manifest, None if there is none; DamagedCache if it is ours but unreadable; ValueError if it
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
        raise DamagedCache(
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


def remove_own(folder: Path, pattern: re.Pattern[str]) -> None:
    """Remove the files of ``folder`` this module writes whose names match ``pattern``; nothing else (callers
    first refuse a folder holding :func:`unowned_files`)."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if pattern.match(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)


def unowned_files(folder: Path) -> list[str]:
    """The names of ``folder``'s entries that are named like a shard or a progress record but that the store cannot
    show it wrote: a link or special file; a shard neither named in a record (the manifest, a progress record) nor
    carrying the store's binding in its metadata; a progress record that does not begin as the store writes one."""
    listed = _listed_shards(folder)
    named_like_ours = (p for p in sorted(folder.iterdir()) if OWN_FILE.match(p.name) and p.name != MANIFEST)
    return [path.name for path in named_like_ours if not _is_own_file(path, listed)]


def _is_own_file(path: Path, listed: Collection[str]) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if _SHARD_FILE.match(path.name):
        return path.name in listed or _is_bound_shard(path)
    return bool(_OWN_MANIFEST_START.match(path.read_bytes()[:64]))  # a progress record


def _listed_shards(folder: Path) -> set[str]:
    """The shard file names the folder's records name, read leniently (a damaged record names what it still can)."""
    listed: set[str] = set()
    for path in [folder / MANIFEST, *(p for p in folder.iterdir() if PROGRESS_FILE.match(p.name))]:
        if path.is_symlink() or not path.is_file():  # never open a FIFO or device: it would block
            continue
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        entries = record.get("shards") or list((record.get("done") or {}).values())
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get("file") if isinstance(entry, dict) else entry  # format 1 manifests list bare names
            if isinstance(name, str):
                listed.add(name)
    return listed


def _is_bound_shard(path: Path) -> bool:
    """Whether a file's safetensors header carries the binding :func:`write_shard` writes."""
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = file.read(length) if 0 < length <= MAX_HEADER else b""
    try:
        place = _header_metadata(header).get("place")
    except (ValueError, RecursionError):
        return False
    return isinstance(place, str) and place.startswith("shard ")


def write_shard(folder: Path, header: FeatureHeader, index: int, embeddings: torch.Tensor) -> ShardEntry:
    """Shard ``index`` written atomically, bound to its place: its metadata names its position and the inputs'
    digest, so a shard moved to another position or dataset (its checksum moved with it) is refused."""
    # one metadata key: safetensors writes several in a per-process random order, and shards must be bit-identical
    data = save_safetensors({"embeddings": embeddings.contiguous()}, metadata={"place": _place(index, header)})
    with atomic_path(folder / shard_name(index)) as tmp:
        tmp.write_bytes(data)
    return ShardEntry(file=shard_name(index), rows=len(embeddings), sha256=hashlib.sha256(data).hexdigest())


def _place(index: int, header: FeatureHeader) -> str:
    """What binds a shard to its place: its position and the digest of the inputs it embeds."""
    return f"shard {index} of inputs {header.inputs_digest}"


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes: an 8-byte little-endian header length, then the header's
    JSON."""
    return _header_metadata(data[8 : 8 + int.from_bytes(data[:8], "little")])


def _header_metadata(header: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header's JSON."""
    parsed = json.loads(header)
    metadata = parsed.get("__metadata__") if isinstance(parsed, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def read_shard(
    folder: Path, header: FeatureHeader, index: int, recorded: Collection[str]
) -> tuple[ShardEntry, torch.Tensor]:
    """Shard ``index`` and its entry, verified against the sha256 values on record for it (one must match), its row
    count, the dim and finiteness; else DamagedCache."""
    path = folder / shard_name(index)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedCache(f"feature cache shard {path} cannot be read ({err.strerror})") from err
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 not in recorded:
        raise DamagedCache(f"feature cache shard {path} does not match the sha256 in {MANIFEST} (damaged or replaced)")
    try:
        embeddings = load_safetensors(data).get("embeddings")
        place = _metadata(data).get("place", _place(index, header))  # shards of older caches carry none
    except (SafetensorError, ValueError, KeyError) as err:
        raise DamagedCache(f"feature cache shard {path} is not a readable safetensors file ({err})") from err
    if place != _place(index, header):
        raise DamagedCache(
            f"feature cache shard {path} was written as {place[:40]}..., not as {_place(index, header)[:40]}... "
            "(moved or swapped with its checksum)"
        )
    entry = header.shard_entry(index, sha256)
    expected = (entry.rows, header.dim)
    if embeddings is None or embeddings.dtype != torch.float32 or tuple(embeddings.shape) != expected:
        raise DamagedCache(f"feature cache shard {path} does not hold float32 'embeddings' of shape {list(expected)}")
    if not torch.isfinite(embeddings).all():
        raise DamagedCache(f"feature cache shard {path} holds NaN or inf")
    return entry, embeddings


def read_progress(folder: Path) -> list[tuple[int, RankProgress]]:
    """The readable progress records of distributed runs in ``folder`` with their run numbers, oldest run first; a
    damaged one is skipped with a warning (its shards are extracted again)."""
    records = []
    for path in sorted(folder.iterdir()):
        match = PROGRESS_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            records.append((int(match.group(1)), RankProgress.model_validate_json(path.read_bytes())))
        except (OSError, ValidationError) as err:
            logger.warning(
                "feature cache progress record %s is unreadable (%s); its shards are extracted again", path, err
            )
    return sorted(records, key=lambda record: record[0])


def progress_entries(progress: list[tuple[int, RankProgress]]) -> list[tuple[int, ShardEntry]]:
    return [item for _, record in progress for item in record.done.items()]


def rank_share(n_shards: int, recorded: Collection[int], rank: int, world_size: int) -> list[int]:
    """The shards one rank handles: every ``world_size``-th of those on record (to verify) and of the others (to
    extract), so the work is even, and the same for every rank count on a fresh run: shard i goes to rank i mod N."""
    on_record = sorted(recorded)
    missing = [index for index in range(n_shards) if index not in recorded]
    return sorted(on_record[rank::world_size] + missing[rank::world_size])
