"""Two small real contrastive spaces trained here on real paired data, standing in for CLAP and CLIP.

``digits-audio-text`` embeds spoken digits (FSDD) and WordNet digit text; ``digits-image-text`` embeds MNIST digits
and the same kind of text. Each has its own text tower with its own tokenisation (character trigrams vs word
uni+bigrams), so the two text spaces genuinely differ. Weights come from ``examples/train_digit_spaces.py``.
"""

from __future__ import annotations

import abc
import itertools
import math
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import (
    ModelSpace,
    SpacegraphFileNotFoundError,
    SpacegraphValueError,
    enumerate_batch,
    layout_problems,
    read_tensors,
    tensor_problem,
)

from .data_files import read_json
from .media import check_texts, load_audio, load_image

ASSETS = Path(__file__).resolve().parent / "assets"


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


# ---------------------------------------------------------------- audio


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-mel filters, ``[n_fft // 2 + 1, n_mels]``, from 0 Hz to Nyquist."""

    def to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges_mel = torch.linspace(0.0, float(to_mel(torch.tensor(sample_rate / 2))), n_mels + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """Waveforms ``[B, N]`` -> log-mel spectrograms ``[B, 1, n_mels, frames]``."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, pad_mode="constant", return_complex=True)
        mel = spec.abs().square().transpose(1, 2) @ self.filters
        return torch.log(mel + 1e-6).transpose(1, 2).unsqueeze(1)


class AudioTower(nn.Module):
    def __init__(self, cfg: dict, dim: int) -> None:
        super().__init__()
        self.logmel = LogMel(cfg["sample_rate"], cfg["n_fft"], cfg["hop"], cfg["n_mels"])
        self.norm = nn.BatchNorm2d(1)
        self.cnn = CNNTower(cfg["channels"], dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.norm(self.logmel(wave)))


def fix_length(wave: np.ndarray, n: int, offset: int | None = None) -> np.ndarray:
    """Crop or zero-pad to ``n`` samples, centred unless ``offset`` (into the longer of the two) is given."""
    slack = abs(len(wave) - n)
    start = slack // 2 if offset is None else offset
    if len(wave) >= n:
        return wave[start : start + n]
    out = np.zeros(n, dtype=np.float32)
    out[start : start + len(wave)] = wave
    return out


def peak_normalize(wave: np.ndarray) -> np.ndarray:
    peak = float(np.abs(wave).max())
    return wave / peak if peak > 0 else wave


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


# ---------------------------------------------------------------- model + spaces

MEDIA_TOWERS = {"audio": AudioTower, "image": ImageTower}


class DigitsModel(nn.Module):
    """A media tower, a text tower and a learnable temperature, built from a space's config."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.media = config["modalities"][0]
        dim, text = config["dim"], config["text"]
        self.towers = nn.ModuleDict(
            {
                self.media: MEDIA_TOWERS[self.media](config[self.media], dim),
                "text": TextTower(text["buckets"], text["width"], dim),
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def load_weights(folder: Path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``config.json`` and ``model.safetensors`` from ``folder``; checks the config is for space ``name`` and every
    weight and BatchNorm statistic is usable (finite, variances >= 0)."""
    config_path, weights_path = folder / ModelSpace.CONFIG_FILE, folder / ModelSpace.WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.exists():
            raise SpacegraphFileNotFoundError(
                f"missing {path}; the training scripts in examples/ write it, or pass weights_dir"
            )
    config = read_json(config_path)
    found = config.get("name") if isinstance(config, dict) else f"a JSON {type(config).__name__}"
    if found != name:
        raise SpacegraphValueError(f"{config_path} is for space {found!r}, expected {name!r}")
    state = read_tensors(weights_path)
    problems = [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
    if problems:
        raise SpacegraphValueError(
            f"{weights_path}: {'; '.join(problems[:5])}; these weights are damaged, copy them again"
        )
    return config, state


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


class _DigitsSpace(SmallSpace):
    MODEL = DigitsModel

    def _prepare_batch(self, modality: Modality, batch: Any) -> tuple[torch.Tensor, ...]:
        """Token ids and bag offsets for text; the stacked media arrays its tower takes otherwise."""
        if modality is Modality.TEXT:
            text = self.config["text"]
            return tokenize_batch(batch, text["tokenizer"], text["buckets"])
        arrays = [self._prepare(item, f"{modality.value} item {i}") for i, item in enumerate_batch(batch)]
        return (torch.from_numpy(np.stack(arrays)),)

    def _encode_prepared(self, modality: Modality, prepared: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.model.towers[modality.value](*prepared)

    @abc.abstractmethod
    def _prepare(self, item: Any, what: str) -> np.ndarray:
        """One media input as the fixed-size float32 array its tower takes; errors start with ``what``."""


class DigitsAudioTextSpace(_DigitsSpace):
    """Spoken digits (FSDD, 8 kHz) and digit text in one 64-d space; text tower: hashed character trigrams."""

    NAME = "digits-audio-text"

    def _prepare(self, item: Any, what: str) -> np.ndarray:
        cfg = self.config["audio"]
        return fix_length(peak_normalize(load_audio(item, cfg["sample_rate"], what)), cfg["n_samples"])


class DigitsImageTextSpace(_DigitsSpace):
    """Handwritten digits (MNIST, 28x28 grayscale) and digit text in one 96-d space; text tower: hashed word n-grams."""

    NAME = "digits-image-text"

    def _prepare(self, item: Any, what: str) -> np.ndarray:
        return load_image(item, self.config["image"]["size"], what)
