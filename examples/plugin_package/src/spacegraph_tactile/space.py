"""The ``tactile-text`` space: 7x7 pin maps and digit text in one 32-d space.

Two small towers trained together (``python -m spacegraph_tactile.train``) on real pairs: pin maps of the MNIST
images spacegraph ships, each with texts of its digit. Weights live beside this file as ``config.json`` +
``model.safetensors`` (the Hugging Face layout); the fingerprint covers the weights and the whole config.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from spacegraph.plugin import (
    Modality,
    ModelSpace,
    SpacegraphFileNotFoundError,
    SpacegraphTypeError,
    SpacegraphValueError,
    SpaceSpec,
    atomic_dir,
    enumerate_batch,
    layout_problems,
    read_tensors,
    tensor_problem,
)
from torch import nn

from .pins import GRID

NAME = "tactile-text"
WEIGHTS = Path(__file__).resolve().parent / "weights" / NAME
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
TACTILE_ACCEPTED = f"accepted: arrays, tensors or nested lists shaped [{GRID}, {GRID}] of pin heights in [0, 1]"


def trigram_ids(text: str, buckets: int) -> list[int]:
    """Stable hash buckets of the character trigrams of ``#word#`` for each lowercased word."""
    ids = []
    for word in text.lower().split():
        padded = f"#{word}#"
        ids += [zlib.crc32(padded[i : i + 3].encode()) % buckets for i in range(len(padded) - 2)]
    return ids


class TactileTextModel(nn.Module):
    """A pin-map MLP and a hashed-trigram text tower, both ending in ``dim``."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dim, tactile, text = config["dim"], config["tactile"], config["text"]
        self.tactile = nn.Sequential(
            nn.Flatten(),
            nn.Linear(tactile["grid"] ** 2, tactile["hidden"]),
            nn.ReLU(),
            nn.Linear(tactile["hidden"], dim),
        )
        self.text_bag = nn.EmbeddingBag(text["buckets"], text["width"], mode="mean")
        self.text = nn.Sequential(nn.LayerNorm(text["width"]), nn.Linear(text["width"], dim))

    def encode_text(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.text(self.text_bag(ids, offsets))


def pin_batch(batch: Sequence[Any]) -> torch.Tensor:
    """Pin maps as a float tensor ``[n, 7, 7]``; an item of the wrong type, shape or range is named."""
    maps = []
    for i, item in enumerate_batch(batch):
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().float().numpy()
        try:
            array = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise SpacegraphTypeError(f"tactile item {i}: not numeric ({err}); {TACTILE_ACCEPTED}") from err
        if array.shape != (GRID, GRID):
            raise SpacegraphValueError(f"tactile item {i}: shape {list(array.shape)}; {TACTILE_ACCEPTED}")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise SpacegraphValueError(f"tactile item {i}: heights outside [0, 1] or not finite; {TACTILE_ACCEPTED}")
        maps.append(array)
    return torch.from_numpy(np.stack(maps))


def text_batch(batch: Sequence[Any], buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat trigram ids and bag offsets; an item that is not a str or has no word characters is named."""
    ids, offsets = [], []
    for i, text in enumerate_batch(batch):
        if not isinstance(text, str):
            raise SpacegraphTypeError(f"text item {i}: expected a str, got {type(text).__name__}")
        item_ids = trigram_ids(text, buckets)
        if not item_ids:
            raise SpacegraphValueError(f"text item {i} ({text!r}) is blank; pass text with at least one word")
        offsets.append(len(ids))
        ids += item_ids
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not (path.exists() and (folder / WEIGHTS_FILE).exists()):
        raise SpacegraphFileNotFoundError(
            f"{folder} lacks {CONFIG_FILE} or {WEIGHTS_FILE}; python -m spacegraph_tactile.train writes them"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpacegraphValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(config, dict) or config.get("name") != NAME:
        raise SpacegraphValueError(f"{path}: not a {NAME} config")
    return config


def load_model(folder: Path, config: dict) -> TactileTextModel:
    """The model of ``config`` holding the weights in ``folder``, refused if they are damaged or do not fit."""
    state = read_tensors(folder / WEIGHTS_FILE)
    model = TactileTextModel(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = layout_problems({key: tuple(value.shape) for key, value in state.items()}, expected)
    problems += [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
    if problems:
        raise SpacegraphValueError(f"{folder / WEIGHTS_FILE}: {'; '.join(problems[:5])}; train or copy it again")
    model.load_state_dict(state)
    return model.eval()


def save_weights(
    model: TactileTextModel, config: dict, folder: str | Path, extra: dict[str, str] | None = None
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (and the ``extra`` text files, by name) to ``folder``
    atomically."""
    texts = {CONFIG_FILE: json.dumps(config, indent=2) + "\n", **(extra or {})}
    with atomic_dir(folder) as tmp:
        for file_name, text in texts.items():
            (tmp / file_name).write_text(text, encoding="utf-8")
        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
    return Path(folder)


class TactileTextSpace(ModelSpace):
    """Pin maps (``tactile``: ``[7, 7]`` heights in [0, 1], see :func:`spacegraph_tactile.pin_map`) and text.

    ``ModelSpace`` gives it ``to(device)``, the fingerprint (weights + config) and ``save_pretrained`` /
    ``from_pretrained`` (a folder or a Hub repo id)."""

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        super().__init__()
        folder = Path(weights_dir) if weights_dir is not None else WEIGHTS
        self.config = read_config(folder)
        self.model = load_model(folder, self.config)
        self.spec = SpaceSpec(
            name=NAME,
            modalities=tuple(Modality(m) for m in self.config["modalities"]),
            dim=self.config["dim"],
            fingerprint=self.model_fingerprint(),
        )

    def preprocessing(self) -> dict:
        return self.config

    def pretrained_config(self) -> dict:
        return self.config

    def _encode_batch(self, modality: Modality, batch: Any) -> torch.Tensor:
        if modality == "text":
            ids, offsets = text_batch(batch, self.config["text"]["buckets"])
            return self.model.encode_text(ids.to(self.device), offsets.to(self.device))
        return self.model.tactile(pin_batch(batch).to(self.device))
