"""torch.distributed for a ``torchrun`` launch: the process group, the device of a rank, and small collective steps
that exchange JSON (never pickle) and make every rank raise when one rank fails, instead of leaving the others
waiting in a collective."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ._errors import SpacegraphError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_initialised_here: list[bool] = []  # set once ensure_process_group has initialised the default group


class DistributedRunError(SpacegraphError, RuntimeError):
    """Raised on every other rank when one rank of a distributed step failed; names that rank and its error."""


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensure_process_group() -> tuple[int, int]:
    """The default process group's ``(rank, world_size)``. Under ``torchrun`` with more than one process and no group
    yet, initialise one from torchrun's environment: NCCL when CUDA is available (each rank on GPU ``LOCAL_RANK``),
    else gloo. Outside torchrun, and for a single process, ``(0, 1)``."""
    if not dist.is_available() or dist.is_initialized():
        return rank_and_world_size()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl", device_id=torch.device("cuda", int(os.environ["LOCAL_RANK"])))
    else:
        dist.init_process_group("gloo")
    _initialised_here.append(True)
    return rank_and_world_size()


def release_process_group() -> None:
    """Destroy the default process group if :func:`ensure_process_group` made it (a caller's own is left alone)."""
    if _initialised_here and dist.is_initialized():
        dist.destroy_process_group()
    _initialised_here.clear()


def rank_device() -> torch.device:
    """The device this process should compute on: GPU ``LOCAL_RANK`` under torchrun with CUDA, GPU 0 with CUDA
    otherwise, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def all_gather_json(value: Any) -> list[Any]:
    """Every rank's JSON-serialisable ``value``, in rank order (exchanged as UTF-8 JSON bytes in tensors)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    payload = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    longest = int(max(sizes).item())
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: len(payload)] = payload
    gathered = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [json.loads(chunk[: int(size.item())].cpu().numpy().tobytes()) for chunk, size in zip(gathered, sizes)]


def on_every_rank(step: Callable[[], Any], what: str) -> list[Any]:
    """Run ``step`` (returning JSON-serialisable data) on every rank and gather its results, in rank order. If
    ``step`` fails on any rank, every rank raises: that rank its own error, the others a :class:`DistributedRunError`
    naming it."""
    failure: Exception | None = None
    try:
        report: dict[str, Any] = {"ok": step()}
    except Exception as err:  # noqa: BLE001 (any failure is reported to the other ranks, then raised here)
        failure = err
        report = {"error": f"{type(err).__name__}: {err}"}
    reports = all_gather_json(report)
    if failure is not None:
        raise failure
    failed = [(rank, report["error"]) for rank, report in enumerate(reports) if "error" in report]
    if failed:
        rank, message = failed[0]
        raise DistributedRunError(f"{what} failed on rank {rank} of {len(reports)}: {message}")
    return [report["ok"] for report in reports]


def on_first_rank(step: Callable[[], Any], what: str) -> Any:
    """Run ``step`` (returning JSON-serialisable data) on rank 0 only and give its result to every rank; a failure
    there is raised on every rank, as :func:`on_every_rank` does."""
    rank = dist.get_rank()
    return on_every_rank(lambda: step() if rank == 0 else None, what)[0]
