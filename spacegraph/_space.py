"""The Space contract: a pretrained contrastive model that embeds several modalities into one vector space."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from ._display import space_html
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality


class SpaceSpec(BaseModel):
    """What a space declares about itself; bridges and caches are keyed by it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    modalities: tuple[Modality, ...] = Field(min_length=1)
    dim: int = Field(gt=0)
    normalized: bool = True
    fingerprint: str = Field(
        min_length=1,
        description="Hash of the weights and of every setting that changes an embedding; changes whenever they do.",
    )

    @field_validator("modalities")
    @classmethod
    def _unique(cls, value: tuple[Modality, ...]) -> tuple[Modality, ...]:
        if len(set(value)) != len(value):
            raise SpacegraphValueError(f"modalities must be unique, got {[m.value for m in value]}")
        return value


def fingerprint_state_dict(state: Mapping[str, torch.Tensor], preprocessing: Any = None) -> str:
    """A short, stable hash of a state dict (names, dtypes, shapes and values) and of ``preprocessing``: every
    setting outside the weights that changes an embedding (image size and mean, tokenizer, sample rate, point
    count, ...), as JSON-serialisable data. Without ``preprocessing`` the hash covers the weights alone."""
    digest = hashlib.sha256()
    if preprocessing is not None:
        digest.update(b"preprocessing|" + json.dumps(preprocessing, sort_keys=True, default=str).encode() + b"|")
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()[:16]


def json_digest(data: Any) -> str:
    """A short sha256 of JSON-serialisable ``data`` (keys sorted), e.g. a tokenizer's vocabulary in a fingerprint."""
    text = json.dumps(data, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What decides how a Hugging Face tokenizer tokenises, for a fingerprint: its class, length and side settings
    and a hash of its rules: a fast tokenizer's whole serialised pipeline (normaliser, vocabulary, merges, special
    tokens, post-processor; without the truncation and padding each call sets), else its vocabulary."""
    identity: dict[str, Any] = {"class": type(tokenizer).__qualname__}
    for setting in ("model_max_length", "padding_side", "truncation_side"):
        identity[setting] = getattr(tokenizer, setting, None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        for per_call in ("truncation", "padding"):
            pipeline.pop(per_call, None)
        identity["pipeline"] = json_digest(pipeline)
    else:
        identity["vocabulary"] = json_digest(sorted(tokenizer.get_vocab().items()))
    return identity


def model_config_identity(config: Any) -> dict[str, Any]:
    """A transformers model config's settings that differ from the defaults (activation, norm eps, sizes, ...),
    without the library version or the path it was loaded from, which change no embedding."""
    settings = config.to_diff_dict()
    for key in ("transformers_version", "_name_or_path", "_commit_hash"):
        settings.pop(key, None)
    return settings


_BATCH_START: ContextVar[int] = ContextVar("spacegraph_batch_start", default=0)


def enumerate_batch(batch: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` over a batch that :meth:`Space.encode` passed to ``_encode_batch``, the index counted over
    all of the caller's inputs, so that an error names the item the user gave."""
    return enumerate(batch, start=_BATCH_START.get())


def check_embeddings(embeddings: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    """Refuse a batch of embeddings of the wrong shape or with NaN/inf, saying which."""
    if not isinstance(embeddings, torch.Tensor):
        raise SpacegraphTypeError(
            f"{what}: expected a torch.Tensor of shape [n, {dim}], got {type(embeddings).__name__}"
        )
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise SpacegraphValueError(f"{what}: expected shape [n, {dim}], got {list(embeddings.shape)}")
    if embeddings.shape[0] == 0:
        raise SpacegraphValueError(f"{what}: empty batch; pass at least one row")
    bad = ~torch.isfinite(embeddings).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise SpacegraphValueError(f"{what}: {int(bad.sum())} rows contain NaN or inf (first rows: {rows})")
    return embeddings


def batch_length(inputs: Any) -> int:
    """Number of items in a batch given as a list/tuple, numpy array or tensor (first axis)."""
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, (Sequence, np.ndarray, torch.Tensor)):
        raise SpacegraphTypeError(
            f"inputs must be a list, tuple, numpy array or tensor of items, got {type(inputs).__name__}"
        )
    return len(inputs)


class Space(abc.ABC):
    """Base class for space plugins.

    Subclasses set ``self.spec`` and implement :meth:`_encode_batch`; :meth:`encode` does the batching,
    inference mode, validation and normalisation for them. An error about one item names it by its index over the
    whole call when the subclass numbers the batch with :func:`enumerate_batch`.
    """

    spec: SpaceSpec

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return self.spec.modalities

    def __repr__(self) -> str:
        mods = ", ".join(m.value for m in self.spec.modalities)
        return f"{type(self).__name__}(name={self.spec.name!r}, modalities=[{mods}], dim={self.spec.dim})"

    def _repr_html_(self) -> str:
        return space_html(self)

    def check_modality(self, modality: str | Modality) -> Modality:
        modality = as_modality(modality)
        if modality not in self.spec.modalities:
            have = ", ".join(m.value for m in self.spec.modalities)
            raise SpacegraphValueError(f"space {self.spec.name!r} does not embed {modality.value!r}; it embeds: {have}")
        return modality

    def to(self, device: str | torch.device) -> Space:
        """Move the space's weights to ``device``; subclasses with modules extend this."""
        self.device = torch.device(device)
        return self

    def encode(
        self,
        modality: str | Modality,
        inputs: Any,
        *,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        device: str | torch.device | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embed a batch of ``inputs`` of one modality; returns a float32 CPU tensor ``[n, dim]``."""
        modality = self.check_modality(modality)
        n = batch_length(inputs)
        if n == 0:
            raise SpacegraphValueError(f"empty batch of {modality.value} inputs; pass at least one item")
        if batch_size < 1:
            raise SpacegraphValueError(f"batch_size must be >= 1, got {batch_size}")
        if device is not None:
            self.to(device)
        chunks = []
        starts = range(0, n, batch_size)
        if show_progress_bar:  # only then: any tqdm, even a disabled one, starts a monitor thread (unsafe to fork)
            starts = tqdm(starts, desc=f"{self.spec.name}:{modality.value}")
        with torch.inference_mode():
            for start in starts:
                chunks.append(self._encode_slice(modality, inputs, start, batch_size))
        embeddings = check_embeddings(torch.cat(chunks), self.spec.dim, f"{self.spec.name} {modality.value} output")
        return torch.nn.functional.normalize(embeddings, dim=-1) if normalize else embeddings

    def _encode_slice(self, modality: Modality, inputs: Any, start: int, batch_size: int) -> torch.Tensor:
        """Embed ``inputs[start : start + batch_size]``; :func:`enumerate_batch` numbers its items from ``start``."""
        token = _BATCH_START.set(start)
        try:
            return self._encode_batch(modality, inputs[start : start + batch_size]).float().cpu()
        finally:
            _BATCH_START.reset(token)

    @abc.abstractmethod
    def _encode_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """Embed one batch (a slice of the user's inputs) of a modality this space has."""
