"""The machinery of the small spaces trained in this repository (digits, low-resolution digits, shapes): hashed
text tokenisers and a text tower, CNN image towers, and :class:`SmallSpace`, a space read from a ``config.json`` and
``model.safetensors`` written by a training script in ``examples/``.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacegraph import SpaceSpec
from spacegraph.plugin import (
    ModelSpace,
    SpacegraphFileNotFoundError,
    SpacegraphValueError,
    enumerate_batch,
    layout_problems,
    read_weights,
)

from .data_files import ASSETS, read_json
from .media import check_texts

# ---------------------------------------------------------------- text


def _bucket(token: str, buckets: int) -> int:
    """A stable (process-independent) hash bucket for a token."""
    return zlib.crc32(token.encode("utf-8")) % buckets


def char_trigram_ids(text: str, buckets: int) -> list[int]:
    """Hashed character trigrams of ``#word#`` for each whitespace-separated, lowercased word."""
    ids = []
    for word in text.lower().split():
        padded = f"#{word}#"
        ids += [_bucket(padded[i : i + 3], buckets) for i in range(len(padded) - 2)]
    return ids


def word_ngram_ids(text: str, buckets: int) -> list[int]:
    """Hashed word unigrams and bigrams (regex ``\\w+``, lowercased)."""
    words = re.findall(r"\w+", text.lower())
    tokens = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return [_bucket(token, buckets) for token in tokens]


TOKENIZERS: dict[str, Callable[[str, int], list[int]]] = {
    "char_trigram": char_trigram_ids,
    "word_ngram": word_ngram_ids,
}


def tokenize_batch(texts: Sequence[Any], tokenizer: str, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ids and bag offsets for ``nn.EmbeddingBag``; refuses non-str, blank or token-less items."""
    ids, offsets = [], []
    for i, text in enumerate_batch(check_texts(texts)):
        item_ids = TOKENIZERS[tokenizer](text, buckets)
        if not item_ids:
            raise SpacegraphValueError(f"text item {i} ({text!r}) has no word characters to embed")
        offsets.append(len(ids))
        ids += item_ids
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


class TextTower(nn.Module):
    """Hashed token bag (mean) -> MLP."""

    def __init__(self, buckets: int, width: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, width, mode="mean")
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, dim))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.bag(ids, offsets))


# ---------------------------------------------------------------- shared CNN


def conv_blocks(channels: Sequence[int]) -> nn.Sequential:
    """conv3x3 + BN + ReLU + 2x2 max-pool per entry of ``channels`` (input has 1 channel)."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip([1, *channels[:-1]], channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class CNNTower(nn.Module):
    """Conv blocks -> global average pool -> linear."""

    def __init__(self, channels: Sequence[int], dim: int) -> None:
        super().__init__()
        self.blocks = conv_blocks(channels)
        self.head = nn.Linear(channels[-1], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=(2, 3)))


# ---------------------------------------------------------------- images


class ImageTower(nn.Module):
    def __init__(self, cfg: dict, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(cfg["mean"])), persistent=False)
        self.register_buffer("std", torch.tensor(float(cfg["std"])), persistent=False)
        self.cnn = CNNTower(cfg["channels"], dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float ``[B, H, W]`` in [0, 1]."""
        return self.cnn(((images - self.mean) / self.std).unsqueeze(1))


# ---------------------------------------------------------------- the space


def load_weights(folder: Path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``config.json`` and ``model.safetensors`` from ``folder``; checks the config is for space ``name`` and every
    weight and BatchNorm statistic is usable (finite, variances >= 0)."""
    config_path, weights_path = folder / ModelSpace.CONFIG_FILE, folder / ModelSpace.WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():  # a FIFO or device here would block a reader
            raise SpacegraphFileNotFoundError(
                f"missing {path} (no regular file there); the training scripts in examples/ write it, or pass "
                "weights_dir"
            )
    config = read_json(config_path)
    found = config.get("name") if isinstance(config, dict) else f"a JSON {type(config).__name__}"
    if found != name:
        raise SpacegraphValueError(f"{config_path} is for space {found!r}, expected {name!r}")
    return config, read_weights(weights_path)


class SmallSpace(ModelSpace):
    """A small space trained here: ``config.json`` + ``model.safetensors`` under ``spaces/assets/<NAME>/`` (or
    ``weights_dir``, a folder :meth:`save_pretrained` writes), built as ``MODEL(config)``. Every setting in
    ``config.json`` shapes the embeddings (input size, mean and std, sample rate, mel settings, tokenizer, point
    count, ...), so the fingerprint covers all of it."""

    NAME: str
    MODEL: Callable[[dict], nn.Module]

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        super().__init__()
        folder = Path(weights_dir) if weights_dir is not None else ASSETS / self.NAME
        self.config, state = load_weights(folder, self.NAME)
        self.model = self._build(folder, state)
        self.spec = SpaceSpec(
            name=self.NAME,
            modalities=tuple(self.config["modalities"]),
            dim=self.config["dim"],
            normalized=True,
            fingerprint=self.model_fingerprint(),
        )

    def preprocessing(self) -> dict:
        return self.config

    def pretrained_config(self) -> dict:
        return self.config

    def _build(self, folder: Path, state: dict[str, torch.Tensor]) -> nn.Module:
        """``MODEL(config)`` holding ``state``, in eval mode; a ValueError naming the file if they do not fit."""
        try:
            model = self.MODEL(self.config)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise SpacegraphValueError(
                f"{folder / 'config.json'}: not a {self.NAME} config ({type(err).__name__}: {err})"
            ) from err
        expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
        problems = layout_problems({key: tuple(tensor.shape) for key, tensor in state.items()}, expected)
        if problems:
            raise SpacegraphValueError(
                f"{folder / 'model.safetensors'} does not fit {folder / 'config.json'}: {'; '.join(problems[:5])}; "
                "copy both again from the same training run"
            )
        model.load_state_dict(state)
        return model.eval()
