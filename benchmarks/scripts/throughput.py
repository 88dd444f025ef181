"""Shared by the encode-throughput benchmarks: time a space's encode() and save JSON rows.

Each plugin has a ``benchmarks/scripts/throughput_<plugin>.py`` that builds its spaces and calls :func:`measure`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from spacegraph import Space
from spacegraph.plugin import write_text_atomic


def measure(space: Space, modality: str, inputs: Any, *, label: str, batch_size: int = 32, repeats: int = 3) -> dict:
    """Items per second of ``space.encode(modality, inputs)``, best of ``repeats`` after one warm-up."""
    space.encode(modality, inputs[:batch_size], batch_size=batch_size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        space.encode(modality, inputs, batch_size=batch_size)
        seconds.append(time.perf_counter() - start)
    row = {
        "space": label,
        "modality": modality,
        "items": len(inputs),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "best_seconds": round(min(seconds), 4),
        "items_per_second": round(len(inputs) / min(seconds), 2),
    }
    print(json.dumps(row))
    return row


def save(rows: list[dict[str, Any]], path: str) -> None:
    write_text_atomic(path, json.dumps(rows, indent=2))
    print(f"wrote {path}")
