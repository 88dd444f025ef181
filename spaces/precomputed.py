"""A space over features that were already extracted (e.g. CLIP embeddings kept on disk).

``encode(modality, inputs)`` looks rows up: ``inputs`` are row indices, or string ids where ``ids`` names the
rows of that modality.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from spacegraph import Modality, Space, SpaceSpec, UnknownNameError, fingerprint_state_dict
from spacegraph.plugin import (
    SpacegraphFileNotFoundError,
    SpacegraphIndexError,
    SpacegraphTypeError,
    SpacegraphValueError,
    as_modality,
)

FeatureSource = torch.Tensor | np.ndarray | str | os.PathLike


def _read_safetensors(path: Path, key: str | None) -> torch.Tensor:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None or key not in keys:
                wanted = "pass key= to choose one" if key is None else f"it has no tensor {key!r}"
                raise SpacegraphValueError(f"{path} holds tensors {keys}; {wanted}")
            return f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise SpacegraphValueError(f"{path}: not a readable safetensors file ({err})") from err


def _read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file; unlike ``np.load``, refuses ``.npz`` archives and pickles."""
    try:
        with path.open("rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SpacegraphValueError(f"{path}: not a readable .npy array file ({err})") from err


def _numeric(array: np.ndarray, what: str) -> torch.Tensor:
    """A tensor copy of a numpy array of numbers (bool, int, float or complex; the caller checks which)."""
    if array.dtype.kind not in "biufc":
        raise SpacegraphValueError(
            f"{what}: features of numpy dtype {array.dtype} are not numbers; pass a float matrix"
        )
    return torch.tensor(array)


def read_features(source: FeatureSource, key: str | None = None) -> torch.Tensor:
    """A tensor, an array, or a ``.safetensors`` / ``.npy`` file, as a tensor of its own (not yet checked).

    In-memory sources are copied, so changing them later cannot change the space behind its fingerprint."""
    if isinstance(source, torch.Tensor):
        return source.detach().to("cpu", copy=True)
    if isinstance(source, np.ndarray):
        return _numeric(source, "features array")
    if not isinstance(source, (str, os.PathLike)):
        raise SpacegraphTypeError(
            f"features must be a tensor, a numpy array or a file path, got {type(source).__name__}"
        )
    path = Path(source)
    if path.suffix not in (".safetensors", ".npy"):
        raise SpacegraphValueError(
            f"{path}: feature files must be .safetensors or .npy, got {path.suffix or 'no suffix'!r}"
        )
    if not path.is_file():
        raise SpacegraphFileNotFoundError(f"feature file {path} not found")
    if path.suffix == ".npy":
        return _numeric(_read_npy(path), str(path))
    return _read_safetensors(path, key)


def check_features(features: torch.Tensor, what: str) -> torch.Tensor:
    """A float32 ``[n, dim]`` tensor with n >= 1 and no NaN/inf row (the rows are named if any)."""
    if features.ndim != 2 or 0 in features.shape:
        raise SpacegraphValueError(f"{what}: expected a non-empty [rows, dim] matrix, got shape {list(features.shape)}")
    if not features.is_floating_point():
        raise SpacegraphValueError(f"{what}: expected floating-point features, got {features.dtype}")
    features = features.float().contiguous()
    bad = (~torch.isfinite(features).all(dim=1)).nonzero().flatten()
    if len(bad):
        raise SpacegraphValueError(f"{what}: {len(bad)} rows contain NaN or inf (rows {bad[:10].tolist()})")
    return features


def check_unit_norm(features: torch.Tensor, what: str, tolerance: float = 1e-2) -> None:
    norms = features.norm(dim=1)
    bad = ((norms - 1).abs() > tolerance).nonzero().flatten()
    if len(bad):
        raise SpacegraphValueError(
            f"{what}: {len(bad)} rows are not unit-norm (row {int(bad[0])} has norm {float(norms[bad[0]]):.4f}); "
            "pass normalized=False for raw features"
        )


def index_ids(ids: Sequence[str], rows: int, what: str) -> dict[str, int]:
    """``{id: row}``; the ids must be unique strings, one per row."""
    if len(ids) != rows:
        raise SpacegraphValueError(f"{what}: {len(ids)} ids for {rows} rows; give one id per row")
    index: dict[str, int] = {}
    for row, item in enumerate(ids):
        if not isinstance(item, str):
            raise SpacegraphTypeError(f"{what}: id {row} is a {type(item).__name__}, not a str")
        if item in index:
            raise SpacegraphValueError(
                f"{what}: id {item!r} is used by rows {index[item]} and {row}; ids must be unique"
            )
        index[item] = row
    return index


class PrecomputedSpace(Space):
    """Stored features of one or more modalities, looked up by row index or id.

    ``features`` maps each modality to a tensor, a numpy array or a ``.safetensors`` / ``.npy`` path (a
    ``.safetensors`` file holding several tensors needs ``key``). All modalities share one dim. ``ids`` optionally
    names the rows of a modality. ``normalized=True`` asserts the stored rows are unit-norm (checked).
    ``fingerprint`` defaults to a hash of the features (the space's weights) and of the ids, which decide the row an
    id input gets; nothing else changes an embedding.
    """

    def __init__(
        self,
        name: str,
        features: Mapping[str | Modality, FeatureSource],
        *,
        ids: Mapping[str | Modality, Sequence[str]] | None = None,
        normalized: bool = True,
        fingerprint: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__()
        if not features:
            raise SpacegraphValueError(f"space {name!r}: give features for at least one modality")
        self._features = {
            as_modality(m): self._load(name, m, source, key, normalized) for m, source in features.items()
        }
        dims = {m.value: f.shape[1] for m, f in self._features.items()}
        if len(set(dims.values())) > 1:
            raise SpacegraphValueError(f"space {name!r}: all modalities must share one dim, got {dims}")
        self._ids = {as_modality(m): self._index(name, m, rows) for m, rows in (ids or {}).items()}
        self.spec = SpaceSpec(
            name=name,
            modalities=tuple(self._features),
            dim=next(iter(dims.values())),
            normalized=normalized,
            fingerprint=fingerprint or self._fingerprint(),
        )

    def _fingerprint(self) -> str:
        ids = {m.value: list(index) for m, index in self._ids.items()} or None  # row order; none: features alone
        return fingerprint_state_dict({m.value: f for m, f in self._features.items()}, preprocessing=ids)

    @staticmethod
    def _load(name: str, modality: str, source: FeatureSource, key: str | None, normalized: bool) -> torch.Tensor:
        what = f"space {name!r} {as_modality(modality).value} features"
        features = check_features(read_features(source, key), what)
        if normalized:
            check_unit_norm(features, what)
        return features

    def _index(self, name: str, modality: str | Modality, ids: Sequence[str]) -> dict[str, int]:
        modality = as_modality(modality)
        if modality not in self._features:
            raise SpacegraphValueError(f"space {name!r}: ids given for {modality.value!r}, which has no features")
        return index_ids(ids, len(self._features[modality]), f"space {name!r} {modality.value} ids")

    def rows(self, modality: str | Modality) -> int:
        """How many rows are stored for ``modality``."""
        return len(self._features[self.check_modality(modality)])

    def _row(self, modality: Modality, item: Any) -> int:
        if isinstance(item, str):
            index = self._ids.get(modality)
            if index is None:
                raise SpacegraphTypeError(f"{modality.value} rows of space {self.name!r} have no ids; pass row indices")
            if item not in index:
                raise UnknownNameError(f"unknown {modality.value} id {item!r} in space {self.name!r}")
            return index[item]
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            return int(item)
        raise SpacegraphTypeError(f"expected a row index (int) or a str id, got {type(item).__name__}")

    def _encode_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            batch = batch.cpu().numpy()
        if isinstance(batch, np.ndarray) and batch.dtype.kind in "iu":
            rows = torch.from_numpy(batch.astype(np.int64, copy=False))
        else:
            rows = torch.tensor([self._row(modality, item) for item in batch], dtype=torch.long)
        features = self._features[modality]
        bad = ((rows < 0) | (rows >= len(features))).nonzero().flatten()
        if len(bad):
            raise SpacegraphIndexError(
                f"{modality.value} row {int(rows[bad[0]])} is out of range: space {self.name!r} has "
                f"{len(features)} rows (0..{len(features) - 1})"
            )
        return features[rows]
