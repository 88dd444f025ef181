"""Any open_clip model as an {image, text} space (``pip install "spacegraph[clip]"``).

open_clip is imported when a space is built, not when this module is, so listing plugins stays light.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import ModelSpace, SpacegraphValueError, json_digest, require, tokenizer_identity

from .media import check_texts, load_rgb_images

PRECISIONS = ("fp32", "amp")


def _function_name(function: Any) -> str | None:
    """A (possibly partial) function's qualified name, stable across processes (its repr holds an address)."""
    return None if function is None else getattr(function, "func", function).__qualname__


def open_clip_tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What decides how an open_clip tokenizer tokenises: its class, context length and text cleaning, and its own
    BPE vocabulary and merges or the Hugging Face tokenizer it wraps."""
    identity = {
        "class": type(tokenizer).__qualname__,
        "context_length": tokenizer.context_length,
        "clean": _function_name(getattr(tokenizer, "clean_fn", None)),
        "reduction": _function_name(getattr(tokenizer, "reduction_fn", None)),
        "mode": getattr(tokenizer, "tokenizer_mode", None),
        "strip_sep_token": getattr(tokenizer, "strip_sep_token", None),
    }
    if hasattr(tokenizer, "tokenizer"):
        identity["wraps"] = tokenizer_identity(tokenizer.tokenizer)
    else:
        identity["vocabulary"] = json_digest(sorted(tokenizer.encoder.items(), key=lambda item: item[1]))
        identity["merges"] = json_digest(sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get))
    return identity


class OpenCLIPSpace(ModelSpace):
    """An open_clip model (CLIP, EVA, SigLIP, CoCa, ...) embedding images and text.

    ``model`` and ``pretrained`` go straight to ``open_clip.create_model_and_transforms`` and ``get_tokenizer``:
    a built-in name with a pretrained tag or checkpoint file (``pretrained=None``: random weights), or
    ``hf-hub:org/repo`` / ``local-dir:/path`` (a folder with ``open_clip_config.json`` and the weights), where
    open_clip ignores ``pretrained``. Images (any input :func:`~spacegraph_spaces.media.load_rgb_image` reads)
    go through the model's own evaluation transform; texts through its own tokenizer, which truncates to the
    model's context length. ``precision="amp"`` runs under ``torch.autocast`` on CUDA (fp32 elsewhere).
    The fingerprint covers the weights, the evaluation transform's settings (``preprocess_cfg``: size, mean, std,
    interpolation, resize mode) and the tokenizer (:func:`open_clip_tokenizer_identity`).
    """

    LIBRARY = "open_clip"

    def __init__(
        self,
        model: str,
        pretrained: str | None = None,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        name: str | None = None,
    ) -> None:
        super().__init__()
        open_clip = require("open_clip", "clip")
        if precision not in PRECISIONS:
            raise SpacegraphValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        with self._loading(model):
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
            self.tokenizer = open_clip.get_tokenizer(model)
        self.model.eval()
        self.spec = SpaceSpec(
            name=name or f"openclip:{model}" + (f"/{pretrained}" if pretrained else ""),
            modalities=(Modality.IMAGE, Modality.TEXT),
            dim=self._probe_dim(),
            fingerprint=self.model_fingerprint(),
        )
        self.to(device)

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | os.PathLike, **kwargs: Any) -> OpenCLIPSpace:
        """An open_clip model from a local folder (``local-dir:``, holding ``open_clip_config.json`` and the
        weights) or a Hub repo id (``hf-hub:``, through open_clip's own download and the Hub cache)."""
        folder = Path(folder_or_repo_id)
        source = f"local-dir:{folder}" if folder.is_dir() else f"hf-hub:{folder_or_repo_id}"
        return cls(source, **kwargs)

    def preprocessing(self) -> dict[str, Any]:
        return {
            "image": require("open_clip", "clip").get_model_preprocess_cfg(self.model),
            "tokenizer": open_clip_tokenizer_identity(self.tokenizer),
        }

    def _probe_dim(self) -> int:
        """The embedding width, read off one text forward (no attribute holds it for every tower type)."""
        with torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["a"])).shape[-1])

    def _prepare_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """Token ids ``[B, context_length]`` or pixels ``[B, 3, H, W]`` after the model's evaluation transform."""
        if modality is Modality.TEXT:
            return self.tokenizer(check_texts(batch))
        return torch.stack([self.preprocess(image) for image in load_rgb_images(batch)])

    def _amp(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` on CUDA with ``precision="amp"``, else nothing (not ``autocast(enabled=False)``: that
        would switch off ``encode(precision=...)``'s autocast)."""
        return (
            torch.autocast("cuda")
            if self.precision == "amp" and self.device.type == "cuda"
            else contextlib.nullcontext()
        )

    def _encode_prepared(self, modality: Modality, prepared: torch.Tensor) -> torch.Tensor:
        with self._amp():
            if modality is Modality.TEXT:
                return self.model.encode_text(prepared)
            return self.model.encode_image(prepared)

    def has_native_dense(self, modality: str | Modality) -> bool:
        """True for a plain ViT image tower (open_clip's ``VisionTransformer`` without attentional pooling, its last
        block a ``ResidualAttentionBlock``); other towers (``ModifiedResNet``, timm, CoCa's pooler) have no MaskCLIP
        value path and use :meth:`encode_dense`'s sliding window."""
        transformer = require("open_clip.transformer", "clip")
        visual = self.model.visual
        return (
            isinstance(visual, transformer.VisionTransformer)
            and getattr(visual, "attn_pool", None) is None
            and isinstance(visual.transformer.resblocks[-1], transformer.ResidualAttentionBlock)
        )

    def _encode_dense_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """MaskCLIP's (Zhou et al., 2022) patch embeddings ``[b, grid_h, grid_w, dim]``: in the last block the
        attention becomes its value path, ``y = x + ls_1(out_proj(ln_1(x) @ W_v.T + b_v))``, then
        ``y = y + ls_2(mlp(ln_2(y)))``, and each patch token goes through ``ln_post`` and ``proj`` as the pooled token
        does."""
        visual = self.model.visual
        pixels = torch.stack([self._whole_image_transform()(image) for image in load_rgb_images(batch)])
        with self._amp():
            tokens = self._last_block_input(pixels.to(self.device, visual.conv1.weight.dtype))
            block = visual.transformer.resblocks[-1]
            tokens = tokens + block.ls_1(block.attn.out_proj(_value(block.attn, block.ln_1(tokens))))
            tokens = tokens + block.ls_2(block.mlp(block.ln_2(tokens)))
            patches = visual.ln_post(tokens[:, 1:])
            patches = patches if visual.proj is None else patches @ visual.proj
        return patches.reshape(len(pixels), *visual.grid_size, -1)

    def _whole_image_transform(self) -> Any:
        """The evaluation transform resizing the whole image to the tower's input size: the default one resizes the
        short side and centre-crops, which would drop the cells' edges. The tower's own grid is kept (no positional
        embedding interpolation)."""
        open_clip = require("open_clip", "clip")
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        return open_clip.image_transform(
            self.model.visual.image_size,
            is_train=False,
            mean=cfg.get("mean"),
            std=cfg.get("std"),
            interpolation=cfg.get("interpolation"),
            resize_mode="squash",
        )

    def _last_block_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tokens ``[b, 1 + grid_h * grid_w, width]`` (class token first) entering the ViT's last block."""
        visual = self.model.visual
        patches = visual.conv1(pixels).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(patches.dtype).expand(len(patches), 1, -1)
        tokens = visual.ln_pre(torch.cat([cls, patches], dim=1) + visual.positional_embedding.to(patches.dtype))
        batch_first = getattr(visual.transformer, "batch_first", True)
        tokens = tokens if batch_first else tokens.transpose(0, 1)
        for block in visual.transformer.resblocks[:-1]:
            tokens = block(tokens)
        return tokens if batch_first else tokens.transpose(0, 1)


def _value(attn: torch.nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """The value projection of ``attn`` applied to ``x``: the last third of its packed input projection."""
    width = attn.embed_dim
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * width :]
    return F.linear(x, attn.in_proj_weight[2 * width :], bias)
