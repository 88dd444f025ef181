"""The batch pipeline of :meth:`Space.encode`: the plan of batches (texts longest first), the numbering of a batch's
items over the whole call, device copies, and preparing batches in DataLoader worker processes, whose errors are
carried back to be raised in the caller's process."""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn

import numpy as np
import torch

from ._arguments import checked_arguments
from ._errors import SpacegraphError, SpacegraphTypeError
from ._modality import Modality

_BATCH_INDICES: ContextVar[Sequence[int] | None] = ContextVar("spacegraph_batch_indices", default=None)


@checked_arguments
def enumerate_batch(batch: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` over a batch that :meth:`Space.encode` passed to ``_encode_batch`` or ``_prepare_batch``,
    the index counted over all of the caller's inputs (in a DataLoader worker too, and when texts were reordered by
    length), so that an error names the item the user gave."""
    indices = _BATCH_INDICES.get()
    return enumerate(batch) if indices is None else zip(indices, batch)


@contextlib.contextmanager
def numbered(indices: Sequence[int]) -> Iterator[None]:
    """Make :func:`enumerate_batch` number a batch by ``indices``, its items' positions in the caller's inputs."""
    token = _BATCH_INDICES.set(indices)
    try:
        yield
    finally:
        _BATCH_INDICES.reset(token)


def batch_length(inputs: Any) -> int:
    """Number of items in a batch given as a list/tuple, numpy array or tensor (first axis)."""
    if (
        isinstance(inputs, (str, bytes))
        or not isinstance(inputs, (Sequence, np.ndarray, torch.Tensor))
        or getattr(inputs, "ndim", 1) == 0
    ):
        raise SpacegraphTypeError(
            f"inputs must be a list, tuple, numpy array or tensor of items, got {type(inputs).__name__}"
        )
    return len(inputs)


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def length_order(modality: Modality, inputs: Any) -> np.ndarray | None:
    """Positions of text ``inputs`` longest first (a stable sort), the order sentence-transformers encodes in so
    that each batch pads to similar lengths; None for other modalities or when not every item is a str."""
    if modality != Modality.TEXT or not all(isinstance(item, str) for item in inputs):
        return None
    return np.argsort([-len(item) for item in inputs], kind="stable")


def batch_plan(n: int, batch_size: int, order: np.ndarray | None) -> list[Sequence[int]]:
    """The positions in the caller's inputs of each batch: consecutive ranges, or runs of ``order``."""
    if order is None:
        return [range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    return [order[start : start + batch_size].tolist() for start in range(0, n, batch_size)]


def take(inputs: Any, positions: Sequence[int]) -> Any:
    """The items of ``inputs`` at ``positions``: a slice of the same type for a range, else a list."""
    if isinstance(positions, range):
        return inputs[positions.start : positions.stop]
    return [inputs[i] for i in positions]


def to_device(prepared: Any, device: torch.device) -> Any:
    """``prepared`` with every tensor in it (also in dicts, lists and tuples) on ``device``; the copies do not
    block, so a batch in pinned memory overlaps with the work already queued on a GPU."""
    if isinstance(prepared, torch.Tensor):
        return prepared.to(device, non_blocking=True)
    if isinstance(prepared, Mapping):
        return {key: to_device(value, device) for key, value in prepared.items()}
    if isinstance(prepared, tuple):
        return tuple(to_device(value, device) for value in prepared)
    if isinstance(prepared, list):
        return [to_device(value, device) for value in prepared]
    return prepared


class PreparedBatches(torch.utils.data.Dataset):
    """Batch ``b`` of one :meth:`Space.encode` call as ``prepare`` (the space's ``_prepare_batch``) makes it: the work
    that runs in DataLoader worker processes. Errors number items over the whole call (the positions travel with the
    batch)."""

    def __init__(
        self, prepare: Callable[[Modality, Any], Any], modality: Modality, inputs: Any, batches: list[Sequence[int]]
    ) -> None:
        self.prepare, self.modality, self.inputs, self.batches = prepare, modality, inputs, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> Any:
        positions = self.batches[b]
        try:
            with numbered(positions):
                return self.prepare(self.modality, take(self.inputs, positions))
        except Exception as error:  # noqa: BLE001 - carried back and raised in the main process
            return FailedBatch(_portable(error), traceback.format_exc())


@dataclasses.dataclass
class FailedBatch:
    """An error a worker process raised while preparing a batch, carried back to be raised in the main process as
    it was raised there (DataLoader's own re-raise rewrites the message and keeps the loader alive in a cycle)."""

    error: Exception
    worker_traceback: str

    def raise_here(self) -> NoReturn:
        cause = SpacegraphError(f"raised while a DataLoader worker process prepared a batch:\n{self.worker_traceback}")
        raise self.error from cause


def _portable(error: Exception) -> Exception:
    """``error`` if it can cross to the main process (unpickling rebuilds it as ``type(error)(*error.args)``), else
    a SpacegraphError naming its type and message."""
    try:
        type(error)(*error.args)
    except Exception:  # noqa: BLE001 - any failure to rebuild it means it cannot cross
        return SpacegraphError(f"{type(error).__name__}: {error}")
    return error


def as_is(prepared: Any) -> Any:
    """The DataLoader's collate function: a prepared batch stays as the space made it (numpy stays numpy)."""
    return prepared
