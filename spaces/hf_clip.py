"""A transformers ``CLIPModel`` as an {image, text} space (``pip install "spacegraph[hf]"``).

transformers is imported when a space is built, not when this module is, so listing plugins stays light.
"""

from __future__ import annotations

from typing import Any

import torch

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import ModelSpace, model_config_identity, require, tokenizer_identity

from .media import check_texts, load_rgb_images


def _features(output: Any) -> torch.Tensor:
    """Projected features from ``get_*_features``: a tensor (transformers 4.x) or its ``pooler_output`` (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFCLIPSpace(ModelSpace):
    """A CLIP checkpoint in transformers format (a Hub id or a local folder) embedding images and text.

    ``CLIPModel`` and ``CLIPProcessor`` load with ``from_pretrained`` (so does :meth:`from_pretrained`); the
    processor prepares images (any input :func:`~spacegraph_spaces.media.load_rgb_image` reads) and tokenises texts,
    which are truncated to the text model's ``max_position_embeddings`` tokens (77 for the OpenAI checkpoints). The
    fingerprint covers the weights, the model config, the image processor's settings (size, crop, mean, std,
    resampling, ...) and the tokenizer.
    """

    LIBRARY = "transformers"

    def __init__(self, model_name_or_path: str, *, device: str | torch.device = "cpu", name: str | None = None) -> None:
        super().__init__()
        transformers = require("transformers", "hf")
        with self._loading(model_name_or_path):
            self.model = transformers.CLIPModel.from_pretrained(model_name_or_path).eval()
            self.processor = transformers.CLIPProcessor.from_pretrained(model_name_or_path)
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.spec = SpaceSpec(
            name=name or f"hf-clip:{model_name_or_path}",
            modalities=(Modality.IMAGE, Modality.TEXT),
            dim=self.model.config.projection_dim,
            fingerprint=self.model_fingerprint(),
        )
        self.to(device)

    def preprocessing(self) -> dict[str, Any]:
        return {
            "model": model_config_identity(self.model.config),
            "image": self.processor.image_processor.to_dict(),
            "tokenizer": tokenizer_identity(self.processor.tokenizer),
            "max_length": self.max_length,
        }

    def _prepare_batch(self, modality: Modality, batch: Any) -> dict[str, torch.Tensor]:
        """The processor's tokens (``input_ids``, ``attention_mask``) or ``pixel_values``, as a plain dict."""
        if modality is Modality.TEXT:
            tokens = self.processor(
                text=check_texts(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            return dict(tokens)
        return {"pixel_values": self.processor(images=load_rgb_images(batch), return_tensors="pt")["pixel_values"]}

    def _encode_prepared(self, modality: Modality, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return _features(self.model.get_text_features(**prepared))
        return _features(self.model.get_image_features(**prepared))

    def _encode_dense_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        """MaskCLIP's (Zhou et al., 2022) patch embeddings ``[b, grid, grid, dim]``: in the last encoder layer the
        attention becomes its value path, ``y = x + out_proj(v_proj(layer_norm1(x)))``, then
        ``y = y + mlp(layer_norm2(y))``, and each patch token goes through ``post_layernorm`` and
        ``visual_projection`` as the pooled token does."""
        vision, config = self.model.vision_model, self.model.config.vision_config
        side = config.image_size
        # The processor resizes the short side and centre-crops; cells stand for the whole image, so it is resized
        # whole to the model's input size here (its own grid, no positional embedding interpolation).
        pixels = self.processor.image_processor(
            images=load_rgb_images(batch),
            size={"height": side, "width": side},
            do_center_crop=False,
            return_tensors="pt",
        )["pixel_values"].to(self.device)
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # the last layer's input
        layer = vision.encoder.layers[-1]
        hidden = hidden + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(hidden)))
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        patches = self.model.visual_projection(vision.post_layernorm(hidden[:, 1:]))
        grid = side // config.patch_size
        return patches.reshape(len(pixels), grid, grid, -1)
