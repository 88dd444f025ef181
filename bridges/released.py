"""Import the projector checkpoints released with C-MCR (github.com/MCR-PEFT/C-MCR) as spacegraph bridges.

Layouts, from the released inference code (MCR-PEFT/C-MCR at commit b77123f, ``cmcr/cmcr_projector.py`` for
the modules and ``cmcr/cmcr_model.py`` for which head reads which space; ``change_pt_key.ipynb`` shows the
key renaming that produced the released files):

* ``ulip_clip.pt`` (``ULIPCLIP_Head``): ``Head_A`` reads CLIP, ``Head_B`` reads ULIP-2 (``project_clip`` uses
  Head_A, ``project_ulip`` Head_B); each is ``MLP_Half``: ``net.0`` Linear(512, 512), ``net.1`` BatchNorm1d,
  ReLU (spacegraph ``mlp1``). The spaces were connected through images.
* ``clap_clip.pt`` (``CLAPCLIP_Head``): the meaning of A/B is flipped: ``Head_A`` reads CLAP, ``Head_B`` reads
  CLIP (``project_clap`` uses Head_A, ``project_clip`` Head_B); each is ``MLP(res_expansion=2.0)``:
  ``net1.0`` Linear(512, 1024), ``net1.1`` BatchNorm1d, ReLU, ``net2.0`` Linear(1024, 512), ``net2.1``
  BatchNorm1d (spacegraph ``mlp2``). The spaces were connected through text.

Every head's output is L2-normalised, and its input is an L2-normalised embedding (``cmcr/trunks.py``).
The released trunks were CLIP ViT-B/32 (openai), LAION-CLAP 630k-fusion and ULIP-2 PointBERT: the imported
bridge binds to the fingerprints of the spaces given here, so give it the spaces those trunks define.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from spacegraph.plugin import (
    Bridge,
    BridgeCard,
    HeadArch,
    HeadSpec,
    Modality,
    ProjectionHead,
    SpacegraphValueError,
    SpaceSpec,
    as_modality,
    layout_problems,
    load_weights_only,
    tensor_problem,
)

METHOD = "cmcr-released"
Kind = Literal["ulip_clip", "clap_clip"]


@dataclass(frozen=True)
class ReleasedLayout:
    """How one released checkpoint stores its two heads."""

    head: HeadSpec
    clip_prefix: str  # the released head that reads CLIP
    other_prefix: str  # the released head that reads the other space (ULIP-2 or CLAP)
    rename: dict[str, str]  # released module path -> spacegraph ``ProjectionHead`` module path
    overlap: Modality
    trunks: dict[str, str]


def _head(arch: HeadArch) -> HeadSpec:
    return HeadSpec(arch=arch, in_dim=512, hidden_dim=1024, out_dim=512)


LAYOUTS: dict[str, ReleasedLayout] = {
    "ulip_clip": ReleasedLayout(
        head=_head("mlp1"),
        clip_prefix="Head_A",
        other_prefix="Head_B",
        rename={"net.0": "net.0", "net.1": "net.1"},
        overlap=Modality.IMAGE,
        trunks={"clip": "openai/clip-vit-base-patch32", "other": "ULIP-2 PointBERT (pointbert_ULIP-2.pt)"},
    ),
    "clap_clip": ReleasedLayout(
        head=_head("mlp2"),
        clip_prefix="Head_B",
        other_prefix="Head_A",
        rename={"net1.0": "net.0", "net1.1": "net.1", "net2.0": "net.3", "net2.1": "net.4"},
        overlap=Modality.TEXT,
        trunks={
            "clip": "openai/clip-vit-base-patch32",
            "other": "LAION-CLAP fusion (630k-fusion-best.pt per the release README)",
        },
    ),
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict of tensors (read with ``weights_only=True``: no code from the file runs)."""
    state = load_weights_only(path, "released checkpoint")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpacegraphValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def expected_state(layout: ReleasedLayout, prefix: str) -> dict[str, tuple[str, torch.Size]]:
    """``{released key: (spacegraph key, shape)}`` for one head."""
    back = {ours: theirs for theirs, ours in layout.rename.items()}
    expected = {}
    for key, value in ProjectionHead(layout.head).state_dict().items():
        module, _, leaf = key.rpartition(".")
        expected[f"{prefix}.{back[module]}.{leaf}"] = (key, value.shape)
    return expected


def check_keys(state: dict[str, torch.Tensor], expected: dict[str, tuple[str, torch.Size]], source: str) -> None:
    """Refuse missing, unexpected or wrongly shaped entries, naming them all, then NaN/inf weights and negative
    BatchNorm running variances."""
    problems = layout_problems({k: tuple(v.shape) for k, v in state.items()}, {k: s for k, (_, s) in expected.items()})
    if problems:
        raise SpacegraphValueError(f"{source} does not have the released layout: " + "; ".join(problems))
    if unusable := [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]:
        raise SpacegraphValueError(f"{source}: {'; '.join(unusable)}: the checkpoint is damaged; download it again")


def check_spaces(layout: ReleasedLayout, kind: str, clip: SpaceSpec, other: SpaceSpec, overlap: Modality) -> None:
    """Both spaces must have the heads' input dim; the CLIP space must embed the overlap modality (the other may
    be the 3D or audio tower alone, as the overlap was encoded by a tower it need not expose)."""
    if clip.name == other.name:
        raise SpacegraphValueError(f"a bridge joins two different spaces; both sides are {clip.name!r}")
    for role, spec in (("clip", clip), ("other", other)):
        if spec.dim != layout.head.in_dim:
            raise SpacegraphValueError(
                f"{kind} heads read {layout.head.in_dim}-d embeddings, but space {spec.name!r} ({role}) is "
                f"{spec.dim}-d; the released trunk was {layout.trunks[role]}"
            )
    if overlap not in clip.modalities:
        have = ", ".join(m.value for m in clip.modalities)
        raise SpacegraphValueError(f"space {clip.name!r} has no {overlap.value!r} to bridge through; it has: {have}")


def import_released_cmcr(
    path: str | os.PathLike,
    kind: Kind,
    clip: SpaceSpec,
    other: SpaceSpec,
    *,
    name: str | None = None,
    overlap: str | Modality | None = None,
) -> Bridge:
    """A :class:`Bridge` holding the released C-MCR heads of ``kind``, keyed by ``clip.name`` and ``other.name``.

    ``other`` is the ULIP-2 space for ``ulip_clip`` (its point tower alone will do) and the CLAP space for
    ``clap_clip``. ``overlap`` defaults to the modality the authors connected through (images for ULIP-2, text
    for CLAP). The card records method ``cmcr-released``, the file's name and sha256, and empty ``quality``:
    nothing was measured here, and the planner treats a bridge without quality as score 1.0. Save it with
    ``bridge.save(folder)``.
    """
    if kind not in LAYOUTS:
        raise SpacegraphValueError(f"unknown released checkpoint kind {kind!r}; known: {sorted(LAYOUTS)}")
    layout, path = LAYOUTS[kind], Path(path)
    overlap = as_modality(overlap) if overlap is not None else layout.overlap
    check_spaces(layout, kind, clip, other, overlap)
    state = read_checkpoint(path)
    heads = {
        clip.name: expected_state(layout, layout.clip_prefix),
        other.name: expected_state(layout, layout.other_prefix),
    }
    check_keys(state, {k: v for expected in heads.values() for k, v in expected.items()}, str(path))
    card = BridgeCard.between(
        clip,
        other,
        heads={clip.name: layout.head, other.name: layout.head},
        name=name or f"{other.name}+{clip.name}:{kind}",
        method=METHOD,
        overlap=overlap,
        training={
            "source": "https://github.com/MCR-PEFT/C-MCR",
            "kind": kind,
            "file": path.name,
            "sha256": file_sha256(path),
            "released_heads": {clip.name: layout.clip_prefix, other.name: layout.other_prefix},
            "trunks": {clip.name: layout.trunks["clip"], other.name: layout.trunks["other"]},
        },
    )
    weights = {space: {ours: state[key] for key, (ours, _) in expected.items()} for space, expected in heads.items()}
    return Bridge.from_weights(card, weights)
