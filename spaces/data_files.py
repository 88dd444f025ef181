"""Readers of the raw data files shared by the data helpers and benchmarks, and where the shipped assets are.

A damaged file (truncated, not the format its name says, wrong layout) is a ValueError that names it, never a raw
zip, gzip or JSON error. Nothing pickled is ever loaded.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from spacegraph.plugin import SpacegraphFileNotFoundError, SpacegraphValueError

ASSETS = Path(__file__).resolve().parent / "assets"  # written by the training scripts in examples/

# What numpy, zipfile, gzip and json raise on a damaged file (a missing one is reported before reading).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


class Synset(TypedDict):
    """The fields of an OEWN noun synset that the data helpers read."""

    members: list[str]
    definition: list[str]
    examples: list[str]


_SYNSETS = TypeAdapter(dict[str, Synset])


def require_data(path: Path, holding: str) -> Path:
    """``path``, raw data under the data folder, which holds the folders ``holding``; else a hint on where it is."""
    if not path.exists():
        raise SpacegraphFileNotFoundError(
            f"expected {path}; point the SPACEGRAPH_DATA env var (or --data) at the folder holding "
            f"{holding} (the project's ../shared/data)"
        )
    return path


def require_asset(path: Path, script: str) -> Path:
    """``path``, a file shipped under spaces/assets that the training script ``script`` writes."""
    if not path.exists():
        raise SpacegraphFileNotFoundError(f"missing {path}; run examples/{script} to create it")
    return path


def _damaged(path: Path, what: str, err: Exception) -> SpacegraphValueError:
    return SpacegraphValueError(
        f"{path}: cannot read it as {what} ({type(err).__name__}: {err}); is it truncated? copy it again"
    )


def read_npz(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` archive at ``path``, read in full."""
    keys = list(keys)
    if not zipfile.is_zipfile(_regular(path)):
        raise SpacegraphValueError(f"{path}: not an .npz (zip) archive of {keys}; is it truncated? copy it again")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in keys if key in archive.files}
            held = archive.files
    except _READ_ERRORS as err:
        raise _damaged(path, "an .npz archive", err) from err
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise SpacegraphValueError(f"{path}: no array {missing} in this archive; it holds {held}, expected {keys}")
    return arrays


def _regular(path: Path) -> Path:
    """``path``, if it is a regular file (checked with ``stat``: reading a FIFO or device would block)."""
    if path.exists() and not path.is_file():
        raise SpacegraphValueError(f"{path} is not a regular file (a folder, FIFO, socket or device); give a file")
    return path


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, decompressed when the name ends in ``.gz``."""
    _regular(path)
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except _READ_ERRORS as err:
        raise _damaged(path, "a gzip file" if path.suffix == ".gz" else "a file", err) from err


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, gzip-compressed when the name ends in ``.gz``."""
    data = read_bytes(path)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; nested too deep
        raise _damaged(path, "JSON", err) from err


def read_synsets(path: Path, required: Iterable[str] = ()) -> dict[str, Synset]:
    """OEWN noun synsets by id (``oewn_nouns.json.gz``); every id in ``required`` must be there."""
    try:
        synsets = _SYNSETS.validate_json(read_bytes(path))
    except ValidationError as err:
        first = err.errors()[0]
        where = "/".join(str(part) for part in first["loc"]) or "the document"
        raise SpacegraphValueError(
            f"{path}: not the OEWN noun synsets by id, each with lists of strings {list(Synset.__annotations__)} "
            f"({where}: {first['msg']}); is it truncated? copy it again"
        ) from err
    missing = [synset_id for synset_id in required if synset_id not in synsets]
    if missing:
        raise SpacegraphValueError(f"{path}: synsets {missing} are missing; is it the OEWN noun file?")
    return synsets


def synset_text_rows(
    classes: Iterable[tuple[Synset, Sequence[str]]], templates: Sequence[str], label_key: str
) -> list[dict]:
    """Text rows ``{"text", label_key, "source"}`` of each class (a synset and the member names it goes by, label =
    its position): the members, definitions, examples and each template filled with each member; white space
    folded, each text once."""
    rows, seen = [], set()

    def add(text: str, label: int, source: str) -> None:
        text = " ".join(text.split())
        if text and text not in seen:
            seen.add(text)
            rows.append({"text": text, label_key: label, "source": source})

    for label, (synset, members) in enumerate(classes):
        for source, texts in (
            ("member", members),
            ("definition", synset["definition"]),
            ("example", synset["examples"]),
        ):
            for text in texts:
                add(text, label, source)
        for template in templates:
            for member in members:
                add(template.format(m=member), label, "template")
    return rows
