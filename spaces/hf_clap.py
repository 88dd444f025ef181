"""LAION CLAP (audio, text) through Hugging Face transformers: ``ClapModel`` + ``ClapProcessor``.

Audio is read by :func:`media.load_audio` at the feature extractor's ``sampling_rate`` (48 kHz for the LAION
checkpoints) and featurised one clip at a time, so an embedding never depends on the batch it is in:

* unfused checkpoints (``audio_config.enable_fusion`` false, e.g. ``laion/clap-htsat-unfused``) get
  ``truncation="rand_trunc"`` features: one Slaney-mel spectrogram, the input these models were trained on. Clips
  longer than the extractor's ``max_length_s`` (10 s) are centre-cropped here first, so the extractor's random crop
  never fires.
* fused checkpoints (``laion/clap-htsat-fused``) get ``truncation="fusion"`` features: a downsampled whole-clip mel
  plus three crops, with crop positions drawn from numpy's global RNG seeded with :data:`FUSION_SEED` for each clip
  (the caller's RNG state is restored afterwards; not thread-safe). ``is_longer`` is True exactly for the clips
  fusion cropped (longer than ``max_length_s`` by at least a hop); the extractor's training-time habit of marking
  one random clip of an all-short batch as longer is not followed, so short clips always take the model's global
  (unfused) path, whatever else is in the batch.

Short clips are padded by the checkpoint's own ``padding`` setting (``repeatpad`` for LAION's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spacegraph import Modality, SpaceSpec
from spacegraph.plugin import ModelSpace, model_config_identity, require, tokenizer_identity

from .media import check_texts, load_audios

FUSION_SEED = 0


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which ``ClapFeatureExtractor`` draws from) and restore its state on exit."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _centre_crop(wave: np.ndarray, n: int) -> np.ndarray:
    start = max(len(wave) - n, 0) // 2
    return wave[start : start + n]


def _pooled(output: Any) -> torch.Tensor:
    """Projected features: transformers < 5 returns them as a tensor, 5+ in ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFClapSpace(ModelSpace):
    """A CLAP checkpoint (hub id or local folder, also through :meth:`from_pretrained`) as an (audio, text) space.

    Audio: paths to files soundfile reads (WAV, FLAC, OGG, MP3, ...), numpy arrays / tensors at the feature
    extractor's ``sampling_rate``, or ``(array, sample_rate)`` tuples at any rate; mono or multi-channel
    (averaged), resampled to ``sampling_rate``. Text: non-empty str, truncated to the text tower's length.
    The fingerprint covers the weights, the model config, the feature extractor's settings and the tokenizer.
    """

    LIBRARY = "transformers"

    def __init__(self, model_name_or_path: str | Path, *, device: str | torch.device = "cpu", name: str | None = None):
        super().__init__()
        transformers = require("transformers", "hf")
        with self._loading(model_name_or_path):
            self.model = transformers.ClapModel.from_pretrained(model_name_or_path).eval()
            self.processor = transformers.ClapProcessor.from_pretrained(model_name_or_path)
        self.fused = bool(self.model.config.audio_config.enable_fusion)
        self.sampling_rate = int(self.processor.feature_extractor.sampling_rate)
        self.spec = SpaceSpec(
            name=name or f"clap:{model_name_or_path}",
            modalities=(Modality.AUDIO, Modality.TEXT),
            dim=self.model.config.projection_dim,
            normalized=True,
            fingerprint=self.model_fingerprint(),
        )
        self.to(device)

    def preprocessing(self) -> dict[str, Any]:
        """The model config, the tokenizer and the feature extractor's settings. The extractor's mel
        filters are left out (``to_dict`` drops them: they follow from its other settings), as is its default
        ``truncation``, which :meth:`_audio_features` overrides."""
        extractor = self.processor.feature_extractor.to_dict()
        extractor.pop("truncation", None)
        return {
            "model": model_config_identity(self.model.config),
            "audio": extractor,
            "tokenizer": tokenizer_identity(self.processor.tokenizer),
        }

    def _prepare_batch(self, modality: Modality, batch: Any) -> dict[str, torch.Tensor]:
        """Tokens (``input_ids``, ``attention_mask``), or each clip's mel features (``input_features``) and
        ``is_longer`` flag."""
        if modality is Modality.TEXT:
            return self._tokens(check_texts(batch))
        features = [self._audio_features(wave) for wave in load_audios(batch, self.sampling_rate)]
        return {
            "input_features": torch.from_numpy(np.stack([mel for mel, _ in features])),
            "is_longer": torch.tensor([[longer] for _, longer in features]),
        }

    def _encode_prepared(self, modality: Modality, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return _pooled(self.model.get_text_features(**prepared))
        mels = prepared["input_features"].to(self.model.dtype)
        return _pooled(self.model.get_audio_features(input_features=mels, is_longer=prepared["is_longer"]))

    def _audio_features(self, wave: np.ndarray) -> tuple[np.ndarray, bool]:
        """One mono waveform at ``sampling_rate`` as the model's ``input_features`` row and its ``is_longer`` flag."""
        extractor = self.processor.feature_extractor
        if not self.fused:
            wave = _centre_crop(wave, extractor.nb_max_samples)
        with _numpy_seeded(FUSION_SEED):
            mel = extractor(
                wave,
                sampling_rate=self.sampling_rate,
                truncation="fusion" if self.fused else "rand_trunc",
                return_tensors="np",
            )["input_features"][0]
        # Fusion stacks four copies of one mel for a clip it did not crop: such a clip is not longer.
        return mel, bool(self.fused and not np.array_equal(mel[0], mel[1]))

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        max_tokens = min(tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings - 2)
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        return {key: tokens[key] for key in ("input_ids", "attention_mask")}
