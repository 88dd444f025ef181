"""The settings of C-MCR training (:class:`CMCRConfig`) and the paper's choices among them (``PAPER_CONFIG``)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator


class CMCRConfig(BaseModel):
    """Every hyperparameter of C-MCR training. Unknown keys, NaN and infinity are errors, not silent defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["connect", "extend"] = Field(
        "connect",
        description="connect: train both heads into a new joint space; extend: train only the first space's head "
        "into the second space, which stays frozen (Ex-MCR).",
    )
    head_arch: Literal["mlp2", "mlp1"] = Field(
        "mlp2", description="mlp2: released audio-visual head; mlp1: released 3D head"
    )
    hidden_dim: int = Field(1024, gt=0, description="Hidden width of mlp2 heads.")
    out_dim: int = Field(512, gt=0, description="Dimension of the joint space (extend: the target's dim).")
    memory_temperature: float = Field(0.01, gt=0, description="tau_mem of the memory softmax.")
    noise_std: float = Field(0.05, ge=0, description="sigma of the Gaussian noise added to head inputs.")
    temperature: float = Field(0.05, gt=0, description="tau of the InfoNCE losses.")
    intra_weight: float = Field(0.1, ge=0, description="lambda weighting the intra-MCR loss.")
    use_memory: bool | None = Field(
        None,
        description="Build pseudo pairs from the memories. None (the default): when both memories are given; True: "
        "always (missing memories are an error); False: never, native overlap pairs only.",
    )
    pseudo_source: Literal["overlap", "overlap+memory"] = Field(
        "overlap+memory",
        description="overlap (paper): one pseudo pair per overlap item; overlap+memory (Ex-MCR, the default): every "
        "memory item seeds one more. Chosen by the best mean label-free estimate over the digits, hard and "
        "modelnet10 data (see the README's method comparison).",
    )
    seed_keys: int | None = Field(
        None,
        gt=0,
        description="Overlap rows the memory-seeded pairs retrieve from (a seeded sample of the training rows when "
        "there are more). None: steps x batch_size, the rows training draws, so that the seeds cost what the "
        "paper pairs' retrievals cost.",
    )
    pseudo_filter: Literal["none", "mutual_neighbours"] = Field(
        "none",
        description="none (paper): keep every pseudo pair; mutual_neighbours: keep those whose pivot overlap item is "
        "among the neighbour_k nearest overlap items of some memory item, in both spaces.",
    )
    neighbour_k: int = Field(10, gt=0, description="Overlap neighbours per memory item for mutual_neighbours.")
    dense_alignment: bool = Field(
        False, description="Also InfoNCE between pseudo embeddings and the other side's native anchors (paper: off)."
    )
    select_by_estimate: bool = Field(
        False, description="Keep the checkpoint with the best label-free estimate (paper: off, the last one)."
    )
    estimate_every: int = Field(100, gt=0, description="Steps between checkpoints when select_by_estimate.")
    steps: int = Field(600, gt=0)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Overlap items held out to measure quality.")
    seed: int = 0
    memory_chunk: int = Field(8192, gt=0, description="Memory rows per retrieval chunk (bounds peak memory).")
    query_chunk: int = Field(4096, gt=0, description="Query rows per retrieval chunk (bounds peak memory).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The heads' matmuls in the training step: auto is bf16 autocast on CUDA and fp32 elsewhere; bf16 "
        "on a CPU with AMX (Sapphire Rapids and later) is also several times faster than fp32.",
    )
    compile: bool = Field(False, description="torch.compile the heads for training (pays off on long runs).")
    device: str = Field("cpu", description="cpu, cuda (each rank's GPU under torchrun), cuda:N or mps.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        try:
            torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"{device!r} is not a device torch knows; accepted: cpu, cuda, cuda:N, mps") from err
        return device


# The paper's behaviour: ``CMCRConfig(**PAPER_CONFIG)`` trains C-MCR as published.
PAPER_CONFIG: dict[str, Any] = {
    "use_memory": True,
    "pseudo_source": "overlap",
    "pseudo_filter": "none",
    "dense_alignment": False,
    "select_by_estimate": False,
}
