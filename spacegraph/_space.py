"""The Space contract: a pretrained contrastive model that embeds several modalities into one vector space."""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from ._arguments import checked_arguments
from ._batching import (
    PRECISIONS,
    FailedBatch,
    PreparedBatches,
    as_is,
    batch_length,
    batch_plan,
    length_order,
    numbered,
    take,
    to_device,
)
from ._checks import check_count, checked_device
from ._errors import SpacegraphError, SpacegraphTypeError, SpacegraphValueError
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


@checked_arguments
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


@checked_arguments
def json_digest(data: Any) -> str:
    """A short sha256 of JSON-serialisable ``data`` (keys sorted), e.g. a tokenizer's vocabulary in a fingerprint."""
    text = json.dumps(data, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@checked_arguments
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
        if not callable(getattr(tokenizer, "get_vocab", None)):
            raise SpacegraphTypeError(
                f"tokenizer_identity takes a Hugging Face tokenizer, got {type(tokenizer).__name__}"
            )
        identity["vocabulary"] = json_digest(sorted(tokenizer.get_vocab().items()))
    return identity


@checked_arguments
def model_config_identity(config: Any) -> dict[str, Any]:
    """A transformers model config's settings that differ from the defaults (activation, norm eps, sizes, ...),
    without the library version or the path it was loaded from, which change no embedding."""
    if not callable(getattr(config, "to_diff_dict", None)):
        raise SpacegraphTypeError(
            f"model_config_identity takes a transformers PretrainedConfig, got {type(config).__name__}"
        )
    settings = config.to_diff_dict()
    for key in ("transformers_version", "_name_or_path", "_commit_hash"):
        settings.pop(key, None)
    return settings


@checked_arguments
def check_embeddings(embeddings: Any, dim: int, what: str) -> torch.Tensor:
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


def _advancing(batches: list[Sequence[int]], bar: tqdm) -> Iterator[Sequence[int]]:
    """The batches, each counted on ``bar`` once it is done (the last one when the loop asks for more)."""
    for positions in batches:
        yield positions
        bar.update(len(positions))


class Space(abc.ABC):
    """Base class for space plugins.

    Subclasses set ``self.spec`` and implement either :meth:`_encode_batch` (one batch of the user's inputs to
    embeddings) or, to let ``encode(num_workers=N)`` read and preprocess media in worker processes, the two halves
    :meth:`_prepare_batch` (CPU only, no model; returns tensors, arrays or plain containers of them, which must
    pickle) and :meth:`_encode_prepared` (the model forward on ``self.device``). :meth:`encode` does the batching,
    inference mode, device copies, autocast, validation and normalisation for them. An error about one item names it
    by its index over the whole call when the subclass numbers the batch with :func:`enumerate_batch`.
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
        from ._display import space_html  # the notebook renderer, loaded only when a notebook asks

        return space_html(self)

    def check_modality(self, modality: str | Modality) -> Modality:
        modality = as_modality(modality)
        if modality not in self.spec.modalities:
            have = ", ".join(m.value for m in self.spec.modalities)
            raise SpacegraphValueError(f"space {self.spec.name!r} does not embed {modality.value!r}; it embeds: {have}")
        return modality

    def to(self, device: str | torch.device) -> Space:
        """Move the space's weights to ``device`` (checked: one this machine has); subclasses with modules extend
        this."""
        self.device = checked_device(device)
        return self

    def encode(
        self,
        modality: str | Modality,
        inputs: Any,
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        precision: str = "fp32",
        show_progress_bar: bool = False,
        progress_bar: tqdm | None = None,
        device: str | torch.device | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embed ``inputs`` of one modality; returns a float32 CPU tensor ``[n, dim]`` in the order of ``inputs``.

        Texts are batched longest first, as sentence-transformers does, so that each batch pads little.
        ``num_workers > 0``: a space that prepares its batches apart (:meth:`_prepare_batch`) reads and preprocesses
        media in that many ``torch.utils.data.DataLoader`` worker processes (pinned memory when the space is on
        CUDA) while the model runs here; texts stay in this process. The embeddings do not depend on
        ``num_workers``. ``precision``: "fp32" (default), or "bf16" / "fp16" to run the model under
        ``torch.autocast`` on the space's device (meant for CUDA; CPUs with bf16 units also gain from "bf16").
        ``progress_bar``: an open tqdm bar to advance by each batch's items instead of showing a bar of its own (a
        feature store counts a whole dataset on one bar).
        """
        modality = self.check_modality(modality)
        n = batch_length(inputs)
        if n == 0:
            raise SpacegraphValueError(f"empty batch of {modality.value} inputs; pass at least one item")
        check_count("batch_size", batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise SpacegraphValueError(f"num_workers must be an int >= 0 (0: no worker processes), got {num_workers!r}")
        if precision not in PRECISIONS:
            raise SpacegraphValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self._check_implemented()
        if device is not None:
            self.to(device)
        order = length_order(modality, inputs)
        batches = batch_plan(n, batch_size, order)
        apart = self._prepares_apart(modality) and modality != Modality.TEXT
        in_workers = num_workers > 0 and len(batches) > 1 and apart
        progress = functools.partial(self._progress, modality=modality, show=show_progress_bar, bar=progress_bar)
        with torch.inference_mode():
            if in_workers:
                chunks = self._encode_in_workers(
                    modality, inputs, batches, min(num_workers, len(batches)), precision, progress
                )
            else:
                chunks = [
                    self._encode_in_process(modality, take(inputs, positions), positions, precision)
                    for positions in progress(batches)
                ]
        embeddings = torch.cat(chunks)
        if order is not None:
            embeddings = embeddings[torch.from_numpy(np.argsort(order))]
        embeddings = check_embeddings(embeddings, self.spec.dim, f"{self.spec.name} {modality.value} output")
        return torch.nn.functional.normalize(embeddings, dim=-1) if normalize else embeddings

    def encode_dense(
        self,
        modality: str | Modality,
        inputs: Any,
        *,
        grid: int | None = None,
        window: float = 0.5,
        batch_size: int = 64,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Embed each image as a grid of local embeddings in this space: a float32 CPU tensor ``[n, h, w, dim]``,
        unit-norm along ``dim``. Cell ``(i, j)`` stands for the uniform ``h x w`` cell of the whole image as given.

        A space that makes them natively (:meth:`has_native_dense`, e.g. CLIP's patch tokens) does so when ``grid``
        is None; otherwise (or with a ``grid``) a ``grid x grid`` (default 7) sliding window of crops, each
        ``window`` of the image side wide and centred on a cell, is encoded crop by crop with :meth:`encode`:
        slower, but it works for every image space."""
        from ._dense import encode_dense

        modality = self.check_modality(modality)
        if modality is not Modality.IMAGE:
            raise SpacegraphValueError(f"dense embeddings are of images; {modality.value!r} has no locations")
        if batch_length(inputs) == 0:
            raise SpacegraphValueError("empty batch of image inputs; pass at least one item")
        return encode_dense(
            self, modality, inputs, grid=grid, window=window, batch_size=batch_size, show_progress_bar=show_progress_bar
        )

    def has_native_dense(self, modality: str | Modality) -> bool:
        """Whether this space makes dense embeddings of ``modality`` itself (it implements
        :meth:`_encode_dense_batch`) rather than on :meth:`encode_dense`'s sliding window."""
        return type(self)._encode_dense_batch is not Space._encode_dense_batch

    def _encode_dense_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """Optional: one batch of images (a slice of the user's inputs) as local embeddings ``[b, h, w, dim]``, cell
        ``(i, j)`` the uniform cell of the whole image (resize it whole, do not crop); :meth:`encode_dense`
        normalises them."""
        raise NotImplementedError(f"{type(self).__name__} makes no dense embeddings of its own")

    def _progress(
        self, batches: list[Sequence[int]], *, modality: Modality, show: bool, bar: tqdm | None
    ) -> Iterable[Sequence[int]]:
        """The batches, counted on ``bar``, else on a bar of their own when ``show``."""
        if bar is not None:
            return _advancing(batches, bar)
        # only when asked: any tqdm, even a disabled one, starts a monitor thread (unsafe to fork after)
        return tqdm(batches, desc=f"{self.spec.name}:{modality.value}") if show else batches

    def _encode_in_process(
        self, modality: Modality, batch: Any, positions: Sequence[int], precision: str
    ) -> torch.Tensor:
        """Embed one batch here: prepared and encoded apart when the space splits the work, else whole."""
        if self._prepares_apart(modality):
            with numbered(positions), self._plugin_errors(modality, positions):
                prepared = self._prepare_batch(modality, batch)
            return self._encode_on_device(modality, prepared, positions, precision)
        with numbered(positions), self._plugin_errors(modality, positions), self._autocast(precision):
            return self._encode_batch(modality, batch).float().cpu()

    def _encode_in_workers(
        self,
        modality: Modality,
        inputs: Any,
        batches: list[Sequence[int]],
        num_workers: int,
        precision: str,
        progress: Callable[[list[Sequence[int]]], Iterable[Sequence[int]]],
    ) -> list[torch.Tensor]:
        """Embed the batches, each prepared in a DataLoader worker process and encoded here, in order."""
        loader = torch.utils.data.DataLoader(
            PreparedBatches(self._prepare_batch, modality, inputs, batches),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=as_is,
            pin_memory=self.device.type == "cuda",
        )
        prepared = iter(loader)  # starts the workers before a progress bar starts its thread
        try:
            chunks = []
            for batch, positions in zip(prepared, progress(batches)):
                if isinstance(batch, FailedBatch):
                    batch.raise_here()
                chunks.append(self._encode_on_device(modality, batch, positions, precision))
            return chunks
        finally:
            del prepared  # stops the workers now, also when a batch failed

    def _encode_on_device(self, modality: Modality, prepared: Any, positions: Sequence[int], precision: str) -> Any:
        """The model half: copy a prepared batch to the space's device and embed it (float32, on the CPU)."""
        prepared = to_device(prepared, self.device)
        with numbered(positions), self._plugin_errors(modality, positions), self._autocast(precision):
            return self._encode_prepared(modality, prepared).float().cpu()

    @contextlib.contextmanager
    def _plugin_errors(self, modality: Modality, positions: Sequence[int]) -> Iterator[None]:
        """Turn an error the space's own code raised (not spacegraph's, not running out of memory) into a spacegraph
        error of its kind (a type error stays one) naming the space, the modality and the items, the original kept as
        ``__cause__``."""
        try:
            yield
        except (SpacegraphError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as err:
            items = f"{positions[0]}..{positions[-1]}" if len(positions) else "(none)"
            kind = SpacegraphTypeError if isinstance(err, TypeError) else SpacegraphValueError  # the same kind of error
            raise kind(
                f"space {self.spec.name!r} could not encode {modality.value} items {items}: {type(err).__name__}: "
                f"{str(err)[:300]}"
            ) from err

    def _autocast(self, precision: str) -> torch.autocast:
        dtype = PRECISIONS[precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _prepares_apart(self, modality: Modality) -> bool:
        """Whether this space splits its work on ``modality`` into :meth:`_prepare_batch` and
        :meth:`_encode_prepared`."""
        return type(self)._prepare_batch is not Space._prepare_batch

    def _check_implemented(self) -> None:
        """Refuse a space class that implements neither half of the contract, or only the preparing half."""
        cls = type(self)
        encodes_prepared = cls._encode_prepared is not Space._encode_prepared
        if cls._prepare_batch is not Space._prepare_batch and not encodes_prepared:
            raise SpacegraphTypeError(
                f"{cls.__name__} implements _prepare_batch but not _encode_prepared, which takes what it makes"
            )
        if cls._encode_batch is Space._encode_batch and not encodes_prepared:
            raise SpacegraphTypeError(
                f"{cls.__name__} implements neither _encode_batch nor _encode_prepared; a space implements "
                "_encode_batch, or _prepare_batch and _encode_prepared"
            )

    def _encode_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """Embed one batch (a slice of the user's inputs) of a modality this space has. The default prepares the
        batch and encodes it (:meth:`_prepare_batch`, then :meth:`_encode_prepared` on the space's device)."""
        return self._encode_prepared(modality, to_device(self._prepare_batch(modality, batch), self.device))

    def _prepare_batch(self, modality: Modality, batch: Any) -> Any:
        """The CPU half of embedding one batch: read, decode and preprocess its items into what
        :meth:`_encode_prepared` takes (tensors, arrays, or dicts / lists / tuples of them, which must pickle: it may
        run in a DataLoader worker process). No model, no GPU. The default passes the batch on as it is."""
        return batch

    def _encode_prepared(self, modality: Modality, prepared: Any) -> torch.Tensor:
        """The model half: embed what :meth:`_prepare_batch` made, its tensors already on ``self.device``."""
        return self._encode_batch(modality, prepared)
