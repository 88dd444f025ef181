"""The seeded split of the overlap rows into training and held-out rows that every built-in method shares, so that
methods trained with one ``val_fraction`` and seed are measured on the same held-out pairs."""

from __future__ import annotations

import torch

from spacegraph.plugin import SpacegraphValueError


def split_overlap(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled train and held-out overlap rows. Training needs at least 2 rows (BatchNorm normalises over a batch),
    and a held-out set (``val_fraction > 0``) at least 2 more (matching needs a wrong answer to pass over)."""
    n_val = round(n * val_fraction)
    if n - n_val < 2 or (val_fraction > 0 and n_val < 2):
        raise SpacegraphValueError(
            f"{n} overlap row(s) are too few to train with val_fraction={val_fraction}: training needs at least 2 "
            f"rows and, when val_fraction > 0, at least 2 more held out (round(rows * val_fraction) >= 2); add "
            "overlap data" + (" or set val_fraction=0" if val_fraction > 0 and n >= 2 else "")
        )
    order = torch.randperm(n, generator=generator)
    return order[n_val:], order[:n_val]
