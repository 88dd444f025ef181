"""A text-only space over any sentence-transformers model (``pip install "spacegraph[text]"``).

``sentence_transformers`` is imported when a space is built, never when this module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import ModelSpace, SpacegraphValueError, model_config_identity, require, tokenizer_identity

from .media import check_texts


def embedding_dimension(model: Any) -> int:
    """The model's output width (``get_embedding_dimension`` since sentence-transformers 5, renamed from
    ``get_sentence_embedding_dimension``)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if not dim:
        raise SpacegraphValueError(f"{type(model).__name__} does not report its embedding dimension")
    return int(dim)


def preprocessing_identity(model: Any) -> dict[str, Any]:
    """Every setting of a ``SentenceTransformer`` outside its weights that changes an embedding: each module's class
    and config (pooling mode, normalisation, ...) and transformers model config, the tokenizer, the sequence length,
    the default prompt and the output truncation."""
    modules = []
    for module in model:
        get_config = getattr(module, "get_config_dict", None)
        transformer = getattr(module, "auto_model", None)
        modules.append(
            {
                "class": type(module).__qualname__,
                "config": get_config() if callable(get_config) else None,
                "model": model_config_identity(transformer.config) if transformer is not None else None,
            }
        )
    default_prompt = (model.prompts or {}).get(model.default_prompt_name) if model.default_prompt_name else None
    return {
        "modules": modules,
        "tokenizer": tokenizer_identity(model.tokenizer),
        "max_seq_length": model.max_seq_length,
        "do_lower_case": getattr(model[0], "do_lower_case", None),
        "default_prompt": default_prompt,
        "truncate_dim": model.truncate_dim,
    }


class SentenceTransformerSpace(ModelSpace):
    """``{text}`` embedded by a ``SentenceTransformer``, given a hub id or a local model folder (also through
    :meth:`from_pretrained`).

    ``name`` defaults to the last path component of ``model_name_or_path``; give a clearer one for a local
    folder. The fingerprint hashes the model's state dict and :func:`preprocessing_identity`, once, when the space
    is built.
    """

    LIBRARY = "sentence-transformers"

    def __init__(self, model_name_or_path: str | Path, *, device: str | torch.device = "cpu", name: str | None = None):
        super().__init__()
        sentence_transformers = require("sentence_transformers", "text")
        with self._loading(model_name_or_path):
            self.model = sentence_transformers.SentenceTransformer(str(model_name_or_path), device=str(device))
        self.model.eval()
        self.device = torch.device(device)
        self.spec = SpaceSpec(
            name=name or Path(str(model_name_or_path)).name,
            modalities=(Modality.TEXT,),
            dim=embedding_dimension(self.model),
            normalized=True,
            fingerprint=self.model_fingerprint(),
        )

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_identity(self.model)

    def _encode_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        return self.model.encode(
            check_texts(batch),
            batch_size=len(batch),
            convert_to_tensor=True,
            show_progress_bar=False,
            device=str(self.device),
        )
