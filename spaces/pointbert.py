"""A 3D point-cloud space: the Point-BERT encoder of ULIP / ULIP-2 and its projection into the shared space.

ULIP-2 trains a Point-BERT ``PointTransformer`` (farthest-point-sampled groups -> mini-PointNet tokens ->
transformer) so that ``[cls token, max-pooled tokens] @ pc_projection`` lands in a frozen image-text space. This
plugin is that point tower only (modality ``point_cloud``): ULIP's image and text towers are CLIP-style models (SLIP
ViT-B/16 for ``pointbert_ULIP-2.pt``) and are not part of it. Its parameter names follow ULIP's ``point_encoder.*`` and
``pc_projection``, so a released checkpoint loads with :meth:`PointBertSpace.from_ulip_checkpoint`; the defaults are
those of ``pointbert_ULIP-2.pt`` (xyz input, 8192 points, 512-d output), the ULIP-2 model that C-MCR bridges to CLIP.

Every cloud is centred and scaled into the unit sphere, resampled to ``npoints`` (farthest-point sampling when it
has more, whole copies of itself plus farthest-point-sampled extra copies when it has fewer) and centred and scaled
again (ULIP's ``pc_normalize``, after sampling). Sampling starts at the point farthest from the centroid, not at a
random point as in ULIP, so an embedding depends neither on point order nor on what else is in the batch.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import (
    ModelSpace,
    SpacegraphFileNotFoundError,
    SpacegraphTypeError,
    SpacegraphValueError,
    load_weights_only,
    read_shapes,
    read_tensors,
    recover_interrupted_save,
    tensor_problem,
)

from .pointcloud_io import load_xyz

FORMAT = "spacegraph-pointbert/1"
CONFIG_FILE, WEIGHTS_FILE = ModelSpace.CONFIG_FILE, ModelSpace.WEIGHTS_FILE
logger = logging.getLogger(__name__)


class PointBertConfig(BaseModel):
    """Architecture and input size; the defaults are ULIP-2's ``pointbert_ULIP-2.pt`` (PointTransformer_8192point)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trans_dim: int = Field(384, gt=0, description="Transformer width.")
    depth: int = Field(12, gt=0, description="Transformer blocks.")
    num_heads: int = Field(6, gt=0)
    group_size: int = Field(32, gt=0, description="Points per group (k of the kNN).")
    num_group: int = Field(512, gt=0, description="Groups (tokens), centred on farthest-point samples.")
    encoder_dims: int = Field(256, gt=0, description="Width of the mini-PointNet group embedding.")
    npoints: int = Field(8192, ge=2, description="Every cloud is resampled to this many points.")
    embed_dim: int = Field(512, gt=0, description="Output dimension (columns of pc_projection).")

    @model_validator(mode="after")
    def _consistent(self) -> PointBertConfig:
        if self.trans_dim % self.num_heads:
            raise SpacegraphValueError(
                f"trans_dim ({self.trans_dim}) must be a multiple of num_heads ({self.num_heads})"
            )
        if max(self.num_group, self.group_size) > self.npoints:
            raise SpacegraphValueError(f"num_group and group_size must be <= npoints ({self.npoints})")
        return self


# ---------------------------------------------------------------- sampling and grouping


def farthest_point_sample(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k]`` of farthest-point samples of ``xyz [B, N, 3]``, starting at the point farthest from the
    centroid (ties: the lowest index), so the chosen points do not depend on point order."""
    x, y, z = xyz.permute(2, 0, 1).contiguous()  # three [B, N] planes: much faster than reducing a last axis of 3

    def sq_dist(p: torch.Tensor) -> torch.Tensor:
        return (x - p[:, 0:1]).square() + (y - p[:, 1:2]).square() + (z - p[:, 2:3]).square()

    batch = torch.arange(xyz.shape[0], device=xyz.device)
    current = sq_dist(xyz.mean(dim=1)).argmax(dim=1)
    nearest = torch.full(xyz.shape[:2], float("inf"), dtype=xyz.dtype, device=xyz.device)
    chosen = torch.empty(xyz.shape[0], k, dtype=torch.long, device=xyz.device)
    for i in range(k):
        chosen[:, i] = current
        nearest = torch.minimum(nearest, sq_dist(xyz[batch, current]))
        current = nearest.argmax(dim=1)
    return chosen


def group_points(xyz: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_group`` farthest-point centres ``[B, G, 3]`` and their ``group_size`` nearest neighbours, relative to
    the centre, ``[B, G, M, 3]``."""
    batch = torch.arange(xyz.shape[0], device=xyz.device)[:, None]
    centres = xyz[batch, farthest_point_sample(xyz, num_group)]
    sq_dist = centres.square().sum(-1, keepdim=True) + xyz.square().sum(-1)[:, None] - 2 * centres @ xyz.transpose(1, 2)
    neighbours = sq_dist.topk(group_size, dim=-1, largest=False).indices  # [B, G, M]
    return xyz[batch[..., None], neighbours] - centres.unsqueeze(2), centres


def to_unit_sphere(xyz: torch.Tensor) -> torch.Tensor:
    """Centre ``[..., N, 3]`` clouds at their mean and scale each so that its farthest point lies on the unit
    sphere (ULIP's ``pc_normalize``)."""
    centred = xyz - xyz.mean(dim=-2, keepdim=True)
    return centred / centred.norm(dim=-1).amax(dim=-1)[..., None, None]


def load_cloud(item: Any) -> torch.Tensor:
    """One point cloud input (see ``POINT_CLOUD_ACCEPTED``) as float32 ``[N, 3]`` in the unit sphere."""
    xyz = torch.from_numpy(load_xyz(item))
    if not (xyz != xyz[0]).any():
        what = str(item) if isinstance(item, (str, Path)) else "point cloud"
        raise SpacegraphValueError(
            f"{what}: all {len(xyz)} points coincide; a point cloud needs at least two distinct points"
        )
    return to_unit_sphere(xyz).float()  # in float64 first: far-off or huge coordinates keep their precision


def resample(clouds: list[torch.Tensor], n: int) -> torch.Tensor:
    """Every cloud as ``n`` points ``[B, n, 3]``: farthest-point samples when it has more, else whole copies of it
    plus farthest-point samples of it; one batched sampling loop per cloud size."""
    out = torch.empty(len(clouds), n, 3)
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, cloud in enumerate(clouds):
        by_size[len(cloud)].append(i)
    for size, rows in by_size.items():
        stacked = torch.stack([clouds[i] for i in rows])
        copies, extra = divmod(n, size)
        picks = farthest_point_sample(stacked, extra if copies else n)
        samples = stacked[torch.arange(len(rows))[:, None], picks]
        out[rows] = torch.cat([stacked.repeat(1, copies, 1), samples], dim=1)
    return out


# ---------------------------------------------------------------- the network (ULIP's parameter names)


class MiniPointNet(nn.Module):
    """Group embedding: shared per-point MLP, max-pool, concatenate, MLP, max-pool (Point-BERT's ``Encoder``)."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, out_dim, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """``[B, G, M, 3]`` -> ``[B, G, out_dim]``."""
        b, g, m, _ = groups.shape
        feature = self.first_conv(groups.reshape(b * g, m, 3).transpose(1, 2))
        feature = torch.cat([feature.amax(dim=2, keepdim=True).expand(-1, -1, m), feature], dim=1)
        return self.second_conv(feature).amax(dim=2).reshape(b, g, self.out_dim)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (MLP ratio 4)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Blocks that each add the positional embedding to their input, as Point-BERT does."""

    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointTransformer(nn.Module):
    """Point-BERT: ``[B, N, 3]`` -> ``[B, 2 * trans_dim]`` (final cls token next to the max-pooled group tokens)."""

    def __init__(self, cfg: PointBertConfig) -> None:
        super().__init__()
        self.num_group, self.group_size = cfg.num_group, cfg.group_size
        self.encoder = MiniPointNet(cfg.encoder_dims)
        self.reduce_dim = nn.Linear(cfg.encoder_dims, cfg.trans_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.trans_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, cfg.trans_dim))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.trans_dim))
        self.blocks = TransformerEncoder(cfg.trans_dim, cfg.depth, cfg.num_heads)
        self.norm = nn.LayerNorm(cfg.trans_dim)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        groups, centres = group_points(xyz, self.num_group, self.group_size)
        tokens = self.reduce_dim(self.encoder(groups))
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return torch.cat([x[:, 0], x[:, 1:].amax(dim=1)], dim=-1)


class PointBertModel(nn.Module):
    """ULIP's point tower: ``point_encoder`` then ``pc_projection`` (a bare ``[2 * trans_dim, embed_dim]`` matrix)."""

    def __init__(self, cfg: PointBertConfig) -> None:
        super().__init__()
        self.point_encoder = PointTransformer(cfg)
        self.pc_projection = nn.Parameter(torch.randn(2 * cfg.trans_dim, cfg.embed_dim) * cfg.embed_dim**-0.5)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.point_encoder(xyz) @ self.pc_projection


# ---------------------------------------------------------------- checkpoints


def _few(names: Any, n: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_layout(model: PointBertModel, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Refuse tensor names or shapes that differ from ``model``'s, listing a few missing, unexpected and
    mismatched ones."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = set(expected) - set(shapes), set(shapes) - set(expected)
    if missing or unexpected:
        raise SpacegraphValueError(
            f"{source} does not match the Point-BERT layout of this config: "
            f"missing {len(missing)} ({_few(missing) or '-'}), unexpected {len(unexpected)} ({_few(unexpected) or '-'})"
        )
    differ = [f"{k} {list(shapes[k])} vs {list(v)}" for k, v in expected.items() if tuple(shapes[k]) != v]
    if differ:
        colour = tuple(shapes["point_encoder.encoder.first_conv.0.weight"][1:]) == (6, 1)
        hint = "; xyz+rgb (6-channel) checkpoints are not supported" if colour else "; pass a config= matching it"
        raise SpacegraphValueError(
            f"{source}: {len(differ)} shapes differ from the config (checkpoint vs model): {_few(differ, 3)}{hint}"
        )


def _load_exact(model: PointBertModel, state: Mapping[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with errors that list a few non-tensor, missing, unexpected and mismatched
    names, and the tensors holding NaN or inf (whatever file they came from)."""
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise SpacegraphValueError(f"{source}: entries that are not tensors: {_few(not_tensors)}")
    _check_layout(model, {k: tuple(v.shape) for k, v in state.items()}, source)
    problems = [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
    if problems:
        raise SpacegraphValueError(f"{source}: {'; '.join(problems[:5])}; these weights are damaged, copy them again")
    model.load_state_dict(state)


def read_ulip_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """``point_encoder.*`` and ``pc_projection`` of a released ULIP checkpoint, ``module.`` prefixes stripped.

    Read with ``torch.load(weights_only=True)``, which builds only tensors and plain containers; ULIP stores its
    ``argparse.Namespace`` of training arguments beside the weights, so that one harmless class is allowed too.
    """
    saved = load_weights_only(path, "ULIP checkpoint", allowed=[argparse.Namespace])
    state = saved.get("state_dict", saved) if isinstance(saved, Mapping) else None
    if not isinstance(state, Mapping):
        raise SpacegraphTypeError(f"{path} holds a {type(saved).__name__}, not a state dict or {{'state_dict': ...}}")
    stripped = {k.removeprefix("module."): v for k, v in state.items()}
    ours = {k: v for k, v in stripped.items() if k.startswith("point_encoder.") or k == "pc_projection"}
    if not ours:
        raise SpacegraphValueError(f"{path} has no point_encoder.* or pc_projection entries (keys: {_few(stripped)})")
    return ours


class SavedSpace(BaseModel):
    """``config.json`` of a folder written by :meth:`PointBertSpace.save_pretrained`."""

    model_config = ConfigDict(extra="forbid")

    format: str
    name: str = Field(min_length=1)
    config: PointBertConfig


def _read_config(path: Path) -> SavedSpace:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; nested too deep
        raise SpacegraphValueError(
            f"{path} is not a valid saved PointBertSpace config: not readable JSON ({err})"
        ) from err
    found = saved.get("format") if isinstance(saved, dict) else f"a JSON {type(saved).__name__}"
    if found != FORMAT:
        raise SpacegraphValueError(
            f"{path} is not a valid saved PointBertSpace config: format {found!r}, expected {FORMAT!r}"
        )
    try:
        return SavedSpace.model_validate(saved)
    except ValidationError as err:
        raise SpacegraphValueError(f"{path} is not a valid saved PointBertSpace config: {err}") from err


def _read_folder(folder: Path) -> tuple[str, PointBertConfig, dict[str, torch.Tensor]]:
    """Name, config and weights of a folder written by :meth:`PointBertSpace.save_pretrained`; the weights' names and
    shapes are checked against the config from the file's header before the model is built or any tensor is read."""
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise SpacegraphFileNotFoundError(
                f"missing {path}; a PointBertSpace folder holds {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
    saved = _read_config(config_path)
    with torch.device("meta"):
        layout = PointBertModel(saved.config)
    try:
        _check_layout(layout, read_shapes(weights_path), str(weights_path))
        state = read_tensors(weights_path)
    except ValueError as err:
        raise SpacegraphValueError(f"{folder} is not a valid saved PointBertSpace: {err}") from err
    return saved.name, saved.config, state


def _as_config(config: PointBertConfig | Mapping[str, Any] | None) -> PointBertConfig:
    return config if isinstance(config, PointBertConfig) else PointBertConfig(**(config or {}))


# ---------------------------------------------------------------- the space


class PointBertSpace(ModelSpace):
    """ULIP-2 Point-BERT point-cloud space (modality ``point_cloud`` only; ULIP's image/text towers are not included).

    ``checkpoint``: ``None`` (random weights, seeded by ``seed``: for tests and benchmarks), a folder written by
    :meth:`save_pretrained` (see also :meth:`from_pretrained`), or a released ULIP ``.pt`` file (see
    :meth:`from_ulip_checkpoint`). Inputs: see ``pointcloud_io.POINT_CLOUD_ACCEPTED``; every cloud is normalised and
    resampled as the module docstring says. For a faithful ULIP-2 embedding give clouds of at least ``npoints``
    surface points: smaller ones are repeated. The fingerprint covers the weights and the whole config (``npoints``,
    ``num_group``, ...): both change embeddings.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        config: PointBertConfig | Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        name: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if checkpoint is not None:
            recover_interrupted_save(checkpoint)  # a save killed between the renames of its swap
        if checkpoint is not None and Path(checkpoint).is_dir():
            if config is not None:
                raise SpacegraphValueError(
                    f"{checkpoint} is a saved space: its config comes from its config.json; drop config="
                )
            saved_name, self.config, state = _read_folder(Path(checkpoint))
            name = name or saved_name
        else:
            self.config = _as_config(config)
            state = None if checkpoint is None else read_ulip_checkpoint(Path(checkpoint))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = PointBertModel(self.config).eval()
        if state is None:
            logger.warning("PointBertSpace has random weights (seed %d): its embeddings mean nothing", seed)
        else:
            _load_exact(self.model, state, str(checkpoint))
        self.spec = SpaceSpec(
            name=name or "pointbert",
            modalities=(Modality.POINT_CLOUD,),
            dim=self.config.embed_dim,
            normalized=True,
            fingerprint=self.model_fingerprint(),
        )
        self.to(device)

    def preprocessing(self) -> dict[str, Any]:
        return self.config.model_dump()

    def pretrained_config(self) -> dict[str, Any]:
        return SavedSpace(format=FORMAT, name=self.spec.name, config=self.config).model_dump(mode="json")

    @classmethod
    def from_ulip_checkpoint(
        cls,
        path: str | Path,
        config: PointBertConfig | Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> PointBertSpace:
        """Load the point tower of a released ULIP checkpoint (e.g. ``pointbert_ULIP-2.pt``): ``torch.load`` with
        ``weights_only=True``, ``module.`` stripped, ``point_encoder.*`` + ``pc_projection`` kept, all required."""
        if Path(path).is_dir():
            raise SpacegraphValueError(f"{path} is a folder; from_ulip_checkpoint reads a ULIP .pt file")
        return cls(path, config=config, device=device, name=name)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """:meth:`save_pretrained`, under the name this space had first."""
        return self.save_pretrained(folder, overwrite=overwrite)

    def _prepare_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """Every cloud read, resampled to ``npoints`` and scaled into the unit sphere: ``[B, npoints, 3]``."""
        return to_unit_sphere(resample([load_cloud(item) for item in batch], self.config.npoints))

    def _encode_prepared(self, modality: Modality, prepared: torch.Tensor) -> torch.Tensor:
        return self.model(prepared)
