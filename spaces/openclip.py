"""Any open_clip model as an {image, text} space (``pip install "spacegraph[clip]"``).

open_clip is imported when a space is built, not when this module is, so listing plugins stays light.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

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

    def _encode_prepared(self, modality: Modality, prepared: torch.Tensor) -> torch.Tensor:
        use_amp = self.precision == "amp" and self.device.type == "cuda"
        # Not autocast(enabled=False) otherwise: that would switch off encode(precision=...)'s autocast.
        with torch.autocast("cuda") if use_amp else contextlib.nullcontext():
            if modality is Modality.TEXT:
                return self.model.encode_text(prepared)
            return self.model.encode_image(prepared)
