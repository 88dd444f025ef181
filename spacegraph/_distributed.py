"""torch.distributed for a ``torchrun`` launch: the process group, the device of a rank, small collective steps
that exchange JSON (never pickle) and make every rank raise when one rank fails, instead of leaving the others
waiting in a collective; and the data-parallel pieces of bridge training: each rank holds a contiguous slice of
every global batch (:class:`RankSlice`), embeddings are gathered with their gradients so a loss sees the global
batch (open_clip's ``gather_with_grad``), and BatchNorm normalises over the global batch, so the result equals one
process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ._arguments import checked_arguments
from ._card import MAX_DIM
from ._errors import SpacegraphError, SpacegraphValueError

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


@checked_arguments
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


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' equal-sized row blocks in rank order; the backward returns each rank the summed gradient of its
    own block (an all-reduce, then its slice: gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        ctx.block = slice(dist.get_rank() * len(rows), (dist.get_rank() + 1) * len(rows))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.block]


class _SumWithGrad(torch.autograd.Function):
    """The sum over ranks; its gradient is the sum over ranks of the gradients (the all-reduce is its own adjoint)."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        dist.all_reduce(value)
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@dataclass(frozen=True)
class RankSlice:
    """This process's slice of data-parallel work: rank ``rank`` of ``world`` ranks (0 of 1 without
    torch.distributed), holding a contiguous part of each global batch."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> RankSlice:
        """This process's place; under ``torchrun`` the process group is started if no one has yet."""
        return cls(*ensure_process_group())

    def global_batch(self, batch_size: int, rows: int) -> int:
        """The global batch actually drawn: at most ``rows``, a multiple of the world size, at least 2 per rank
        (BatchNorm needs a batch)."""
        size = min(batch_size, rows) // self.world * self.world
        if size < 2 * self.world:
            raise SpacegraphValueError(
                f"a global batch of {min(batch_size, rows)} rows cannot be split over {self.world} ranks with at "
                f"least 2 rows each; raise batch_size (now {batch_size}) or add data ({rows} rows)"
            )
        return size

    def part(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (a multiple of the world size long)."""
        size = len(batch) // self.world
        return batch[self.rank * size : (self.rank + 1) * size]

    def positions(self, global_sizes: list[int]) -> torch.Tensor:
        """Where this rank's rows sit in the concatenation of global parts of ``global_sizes`` rows each."""
        offsets = torch.tensor([0, *global_sizes[:-1]]).cumsum(0)
        return torch.cat(
            [
                offset + self.rank * (size // self.world) + torch.arange(size // self.world)
                for offset, size in zip(offsets.tolist(), global_sizes)
            ]
        )

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order, carrying gradients back to their owners."""
        return rows if self.world == 1 else _GatherWithGrad.apply(rows)

    def gather_uneven(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order, ranks holding different counts (no gradients: precomputed data)."""
        if self.world == 1:
            return rows
        counts = [torch.zeros((), dtype=torch.long, device=rows.device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor(len(rows), device=rows.device))
        longest = int(max(counts))
        padded = torch.cat([rows, rows.new_zeros((longest - len(rows), *rows.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[: int(count)] for part, count in zip(parts, counts)])

    def split(self, rows: int) -> slice:
        """This rank's contiguous share of ``rows`` items of work (shares differ by at most one)."""
        bounds = torch.linspace(0, rows, self.world + 1).round().long().tolist()
        return slice(bounds[self.rank], bounds[self.rank + 1])


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch over all ranks (gradients flow through the
    all-reduce); identical to ``nn.BatchNorm1d`` in eval mode or in one process. PyTorch's SyncBatchNorm runs on
    GPUs only; this one runs on any backend, gloo on CPU included."""

    @checked_arguments
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, **options: Any) -> None:
        if not 0 < num_features <= MAX_DIM:
            raise SpacegraphValueError(f"GlobalBatchNorm1d: num_features must be in 1..{MAX_DIM}, got {num_features}")
        super().__init__(num_features, eps, momentum, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if not self.training or world == 1:
            return super().forward(x)
        x = x.float()  # statistics in float32, also under bf16 autocast
        count = torch.tensor([float(x.shape[0])], device=x.device)
        totals = _SumWithGrad.apply(torch.cat([x.sum(dim=0), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        var = _SumWithGrad.apply((x - mean).pow(2).sum(dim=0)) / n
        self._track(mean.detach(), var.detach() * n / (n - 1))
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """Update the running statistics as BatchNorm1d does (a cumulative average when momentum is None)."""
        if self.running_mean is None or self.running_var is None or self.num_batches_tracked is None:
            return
        self.num_batches_tracked += 1
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased_var, factor)


@checked_arguments
def with_global_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d replaced by a :class:`GlobalBatchNorm1d` holding the same state (the
    state-dict keys stay the same); build the optimizer after this."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            replacement = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum).to(child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            with_global_batch_norm(child)
    return module
