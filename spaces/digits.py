"""Two small real contrastive spaces trained here on real paired data, standing in for CLAP and CLIP.

``digits-audio-text`` embeds spoken digits (FSDD) and WordNet digit text; ``digits-image-text`` embeds MNIST digits
and the same kind of text. Each has its own text tower with its own tokenisation (character trigrams vs word
uni+bigrams), so the two text spaces genuinely differ. Weights come from ``examples/train_digit_spaces.py``; the
towers and the loading are :mod:`spacegraph_spaces.small`'s.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from spacegraph import Modality
from spacegraph.plugin import enumerate_batch

from .media import load_audio, load_image
from .small import CNNTower, ImageTower, SmallSpace, TextTower, tokenize_batch

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
