"""C-MCR training measured for the data-parallel test: one step's losses and gradients, and the heads after a short
fit. Run under ``torchrun`` (gloo, started by the training itself) it writes rank 0's figures to ``OUT/<case>.safetensors``; the test computes the
same in one process with :func:`measure` and compares."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from spacegraph_bridges.cmcr import PAPER_CONFIG, CMCRConfig, TrainingRun, fit_heads

import spacegraph as sg

BASE = {"hidden_dim": 16, "out_dim": 8, "steps": 4, "batch_size": 16, "val_fraction": 0.25, "seed": 3}
CASES = {
    "paper": PAPER_CONFIG,
    "memory_seeded": {},
    "filtered_dense": {"pseudo_filter": "mutual_neighbours", "neighbour_k": 3, "dense_alignment": True},
    "extend": {"kind": "extend", "pseudo_source": "overlap"},
}


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    rows = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def features(case: str) -> sg.BridgeFeatures:
    y_dim = 8 if case == "extend" else 5  # an extend target's dim is the head's out_dim
    return sg.BridgeFeatures(unit_rows(64, 6, 0), unit_rows(64, y_dim, 1), unit_rows(20, 6, 2), unit_rows(20, y_dim, 3))


def measure(case: str) -> dict[str, torch.Tensor]:
    """The first step's losses and head gradients, then the heads and loss history of a fresh 4-step fit."""
    config = CMCRConfig(**{**BASE, **CASES[case]})
    run = TrainingRun.start(features(case), config)
    losses = run.losses()
    losses["total"].backward()
    figures = {f"loss.{name}": value.detach().reshape(1) for name, value in losses.items()}
    for side, head in (("x", run.head_x), ("y", run.head_y)):
        figures.update({f"grad.{side}.{name}": p.grad.clone() for name, p in head.named_parameters()})
    fit = fit_heads(features(case), config, show_progress_bar=False)
    for side, head in (("x", fit.head_x), ("y", fit.head_y)):
        figures.update({f"fit.{side}.{name}": value.clone() for name, value in head.state_dict().items()})
    figures["fit.history"] = torch.tensor([entry["total"] for entry in fit.history if "total" in entry])
    return figures


def main(out: Path) -> None:
    torch.set_num_threads(1)  # no init_process_group: training starts the group itself under torchrun
    for case in CASES:
        figures = measure(case)
        if dist.get_rank() == 0:
            save_file(figures, str(out / f"{case}.safetensors"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
