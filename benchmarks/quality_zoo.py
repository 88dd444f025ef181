"""The bridges ``spacegraph bench quality`` ranks: every variant of every dataset case, trained once and cached.

A case is one dataset's bridge features, base config and true-quality function. The cases differ in structure:
clean spaces (digits, hard, modelnet10), memories mostly of classes the other side never shows, tiny memories, a
large off-topic overlap corpus, and spaces with the geometry of real encoders (``_cone``: each modality in its own
narrow cone, the memory modality distorted against the text, so zero-shot quality is modest). A variant is one
change to training; five of them look structured but are cross-modally wrong (``MISLEADING``).

Each trained bridge is cached under ``<zoo>/<case>/<variant>/`` as ``heads.safetensors`` (both heads' state dicts,
plus a rotation for ``head_rotated``) and ``meta.json`` (head specs, true mAP, the card's estimate).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from spacegraph_bridges import _cmcr_pairs
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads

from spacegraph import BridgeFeatures
from spacegraph._quality import heads_quality
from spacegraph.plugin import HeadSpec, ProjectionHead, atomic_path, write_text_atomic

from . import digits
from . import quality as q

CASES = (
    "digits", "hard", "modelnet10", "digits_class_gap", "digits_small_memory",
    "digits_class_gap_cone", "hard_cone", "modelnet10_cone",
)  # fmt: skip
MISLEADING = ("no_memory", "memory_temperature_1", "memories_shuffled", "overlap_misaligned", "head_rotated")
VARIANTS = [*q.VARIANTS, "memories_shuffled", "overlap_misaligned", "head_rotated"]
SEED = 17  # of every fixed permutation and rotation


def _permutation(n: int, seed: int = SEED) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def misaligned(features: BridgeFeatures) -> BridgeFeatures:
    """The overlap's Y rows shuffled against its X rows (a fixed permutation)."""
    rows = _permutation(len(features.overlap_y))
    return BridgeFeatures(features.overlap_x, features.overlap_y[rows], features.memory_x, features.memory_y)


def rotation(dim: int) -> torch.Tensor:
    """A fixed random orthogonal matrix."""
    orthogonal, upper = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(SEED)))
    return orthogonal * torch.sign(torch.diagonal(upper))[None]


class Rotated(torch.nn.Module):
    """A head followed by a fixed orthogonal map: its own structure intact, cross-modally scrambled."""

    def __init__(self, head: torch.nn.Module, turn: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("turn", turn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x) @ self.turn, dim=-1)


class Identity(torch.nn.Module):
    """The frozen side of an extend bridge."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


@contextmanager
def shuffled_memories() -> Iterator[None]:
    """While active, every memory retrieval of C-MCR training returns the items of a fixed permutation of the
    memory (the keys stay the true items): each pseudo embedding is a real memory item, mostly of a wrong class."""
    original = _cmcr_pairs.TrainingData.retrieve

    def retrieve(data, queries, memory, **options):
        is_memory = memory is data.memory_x or memory is data.memory_y
        if is_memory and "values" not in options and "rows" not in options:
            options["values"] = memory[_permutation(len(memory), SEED + len(memory))]
        return original(data, queries, memory, **options)

    _cmcr_pairs.TrainingData.retrieve = retrieve
    try:
        yield
    finally:
        _cmcr_pairs.TrainingData.retrieve = original


class Geometry(torch.nn.Module):
    """The geometry of real encoders on a small space's embeddings of one modality: a fixed linear distortion
    (``distortion``; lowers its agreement with the other modality of the space) and a shared offset
    (``offset``: every item sits in a narrow cone, away from the other modality's cone, CLIP's modality gap)."""

    def __init__(self, dim: int, *, offset: float, distortion: float, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("direction", F.normalize(torch.randn(dim, generator=generator), dim=0))
        self.register_buffer("mix", torch.randn(dim, dim, generator=generator) / dim**0.5)
        self.offset, self.distortion = offset, distortion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        x = F.normalize(x + self.distortion * x @ self.mix, dim=-1)
        return F.normalize(x + self.offset * self.direction, dim=-1)


CONE_OFFSET, CONE_DISTORTION = 0.6, 2.2


def cone_geometry(dim: int, side: int, *, memory: bool) -> Geometry:
    """The ``_cone`` cases' geometry of one modality: side 0 (X) or 1 (Y), its overlap or its memory modality."""
    distortion = CONE_DISTORTION if memory else 0.0
    return Geometry(dim, offset=CONE_OFFSET, distortion=distortion, seed=2 * memory + side)


def with_geometry(case: q.BridgeCase, name: str) -> q.BridgeCase:
    """The case with real-encoder geometry: each side's overlap and memory modalities in cones of their own, the
    memory modalities distorted (digit zero-shot about 0.94 audio, 0.88 images); the truth reads the same
    transformed items."""
    f = case.features
    ox, oy = (cone_geometry(rows.shape[1], side, memory=False) for side, rows in enumerate((f.overlap_x, f.overlap_y)))
    mx, my = (cone_geometry(rows.shape[1], side, memory=True) for side, rows in enumerate((f.memory_x, f.memory_y)))
    with torch.inference_mode():
        features = BridgeFeatures(ox(f.overlap_x), oy(f.overlap_y), mx(f.memory_x), my(f.memory_y))

    def truth(head_x: torch.nn.Module, head_y: torch.nn.Module) -> float:
        return case.true_quality(torch.nn.Sequential(mx, head_x), torch.nn.Sequential(my, head_y))

    return q.BridgeCase(name, features, case.config, truth)


def _memories_of(features: BridgeFeatures, keep_x: np.ndarray, keep_y: np.ndarray) -> BridgeFeatures:
    keep_x, keep_y = torch.from_numpy(keep_x), torch.from_numpy(keep_y)
    return BridgeFeatures(features.overlap_x, features.overlap_y, features.memory_x[keep_x], features.memory_y[keep_y])


def build_case(name: str, data_dir: Path, feature_dir: Path, progress: bool = False) -> q.BridgeCase:
    """One of ``CASES``."""
    if name not in CASES:
        raise ValueError(f"unknown quality case {name!r}; the cases are {', '.join(CASES)}")
    if name.endswith("_cone"):
        return with_geometry(build_case(name.removesuffix("_cone"), data_dir, feature_dir, progress), name)
    if name in ("hard", "modelnet10"):
        make = q._hard_case if name == "hard" else q._modelnet10_case
        return make(data_dir, feature_dir, progress)
    base = q._digits_case(data_dir, feature_dir, progress)
    if name == "digits_small_memory":
        return q.BridgeCase(name, q._starve(base.features), base.config, base.true_quality)
    if name == "digits_class_gap":  # audio memories of digits 0-5, image memories of 2-9: 4 shared
        data = digits.full_data(data_dir)
        keep_x = np.flatnonzero(np.isin(data.audio_memory_labels, range(6)))
        keep_y = np.flatnonzero(np.isin(data.image_memory_labels, range(2, 10)))
        return q.BridgeCase(name, _memories_of(base.features, keep_x, keep_y), base.config, base.true_quality)
    return base


def case_variants(name: str) -> list[str]:
    """Every variant, but starved memories where the case's memories are starved already."""
    return [v for v in VARIANTS if not (v == "memory_50_rows" and name == "digits_small_memory")]


def variant_features(case: q.BridgeCase, variant: str) -> BridgeFeatures:
    """The features a variant trains on, and that its estimate reads."""
    if variant == "memory_50_rows":
        return q._starve(case.features)
    if variant == "overlap_misaligned":
        return misaligned(case.features)
    return case.features


def _train(case: q.BridgeCase, variant: str, folder: Path, progress: bool):
    """``(head_x, head_y, held-out rows, extra tensors to save)`` of a variant."""
    if variant == "head_rotated":
        head_x, head_y, meta = ensure_bridge(case, "default", folder.parent / "default", progress)
        turn = rotation(head_y.spec.out_dim)
        return head_x, Rotated(head_y, turn), torch.tensor(meta["val_idx"], dtype=torch.long), {"rotation": turn}
    config = CMCRConfig(**{**case.config, **q.VARIANTS.get(variant, {})})
    features = variant_features(case, variant)
    if variant == "memories_shuffled":
        with shuffled_memories():
            fit = fit_heads(features, config, show_progress_bar=progress)
    else:
        fit = fit_heads(features, config, show_progress_bar=progress)
    held_out = fit.held_out if fit.held_out is not None else torch.arange(0)
    return fit.head_x, fit.head_y, held_out, {}


def _spec(head: torch.nn.Module) -> dict[str, Any] | None:
    head = head.head if isinstance(head, Rotated) else head
    return head.spec.model_dump() if isinstance(head, ProjectionHead) else None


def _save(folder: Path, head_x, head_y, extra: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tensors = {name: tensor.contiguous() for name, tensor in extra.items()}
    for side, head in (("x", head_x), ("y", head_y)):
        head = head.head if isinstance(head, Rotated) else head
        tensors.update({f"head_{side}.{k}": v.contiguous() for k, v in head.state_dict().items()})
    with atomic_path(folder / "heads.safetensors") as path:
        save_file(tensors, path)
    write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1))  # last: its presence marks a cached bridge


def load_heads(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """A cached bridge's heads (in eval mode) and its meta."""
    meta = json.loads((folder / "meta.json").read_text())
    tensors = load_file(folder / "heads.safetensors")
    heads: list[torch.nn.Module] = []
    for side in ("x", "y"):
        spec = meta[f"spec_{side}"]
        if spec is None:
            heads.append(Identity())
            continue
        head = ProjectionHead(HeadSpec(**spec))
        prefix = f"head_{side}."
        head.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
        heads.append(head.eval())
    if meta["rotated"]:
        heads[1] = Rotated(heads[1], tensors["rotation"])
    return heads[0], heads[1], meta


def ensure_bridge(
    case: q.BridgeCase, variant: str, folder: Path, progress: bool = False
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """The variant's heads and meta, trained and cached in ``folder`` unless already there."""
    if (folder / "meta.json").exists():
        return load_heads(folder)
    start = time.perf_counter()
    head_x, head_y, held_out, extra = _train(case, variant, folder, progress)
    head_x, head_y = head_x.eval(), head_y.eval()
    card = heads_quality(head_x, head_y, variant_features(case, variant), held_out)
    meta = {
        "case": case.name,
        "variant": variant,
        "true_mAP": case.true_quality(head_x, head_y),
        "card_estimate": card.get("estimate"),
        "held_out_R@1": card.get("held_out_R@1"),
        "spec_x": _spec(head_x),
        "spec_y": _spec(head_y),
        "rotated": variant == "head_rotated",
        "val_idx": held_out.tolist(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    _save(folder, head_x, head_y, extra, meta)
    return head_x, head_y, meta
