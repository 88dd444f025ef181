"""Real-data readers for the two digit spaces: FSDD speech, MNIST images and WordNet (OEWN) digit text.

The raw data lives beside the project (``../shared/data`` or ``$SPACEGRAPH_DATA``); the training script ships the
text rows and a small demo slice under ``spaces/assets`` so the package works without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spacegraph.plugin import SpacegraphFileNotFoundError, SpacegraphValueError

from .data_files import ASSETS, read_json, read_npz, read_synsets, require_asset, require_data, synset_text_rows

SAMPLES = ASSETS / "samples"

# OEWN noun synsets of the cardinal numbers 0..9 (index = digit).
DIGIT_SYNSETS: tuple[str, ...] = (
    "13764498-n",
    "13764713-n",
    "13765409-n",
    "13766184-n",
    "13766444-n",
    "13766661-n",
    "13766862-n",
    "13767056-n",
    "13767226-n",
    "13767410-n",
)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("the number {m}", "the digit {m}", "{m} as a numeral", "a count of {m}", "the quantity {m}")
FSDD_TEST_TAKES = range(5)
MNIST_TRAIN_PER_CLASS = 400
_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)$")


def _require(path: Path) -> Path:
    return require_data(path, "fsdd/, mnist5k/ and oewn/")


def _require_asset(path: Path) -> Path:
    return require_asset(path, "train_digit_spaces.py")


def _fsdd_key(path: Path) -> tuple[int, str, int]:
    match = _FSDD_NAME.match(path.stem)
    if match is None:
        raise SpacegraphValueError(f"not an FSDD file name {{digit}}_{{speaker}}_{{take}}: {path.name}")
    return int(match[1]), match[2], int(match[3])


def _sorted_fsdd(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    paths = sorted(paths, key=_fsdd_key)
    return [str(p) for p in paths], np.array([_fsdd_key(p)[0] for p in paths], dtype=np.int64)


def fsdd_split(data_dir: str | Path) -> dict:
    """The official FSDD split: takes 0-4 test, 5-49 train; sorted by (digit, speaker, take)."""
    folder = _require(Path(data_dir) / "fsdd" / "recordings")
    wavs = list(folder.glob("*.wav"))
    if not wavs:
        raise SpacegraphFileNotFoundError(f"no .wav files in {folder}; set SPACEGRAPH_DATA to the folder holding fsdd/")
    test = [p for p in wavs if _fsdd_key(p)[2] in FSDD_TEST_TAKES]
    train = [p for p in wavs if _fsdd_key(p)[2] not in FSDD_TEST_TAKES]
    train_paths, train_labels = _sorted_fsdd(train)
    test_paths, test_labels = _sorted_fsdd(test)
    return {
        "train_paths": train_paths,
        "train_labels": train_labels,
        "test_paths": test_paths,
        "test_labels": test_labels,
    }


def mnist_split(data_dir: str | Path) -> dict:
    """The 5k MNIST subset split per class in stored order: first 400 train, last 100 test."""
    data = read_npz(_require(Path(data_dir) / "mnist5k" / "mnist5k.npz"), ("images", "label"))
    images, labels = data["images"], data["label"].astype(np.int64)
    rank = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        idx = np.flatnonzero(labels == digit)
        rank[idx] = np.arange(len(idx))
    train = rank < MNIST_TRAIN_PER_CLASS
    return {
        "train_images": images[train],
        "train_labels": labels[train],
        "test_images": images[~train],
        "test_labels": labels[~train],
    }


def oewn_synsets(data_dir: str | Path) -> dict[str, dict]:
    """The OEWN noun synsets (``oewn/oewn_nouns.json.gz``), checked to hold the ten digit synsets."""
    return read_synsets(_require(Path(data_dir) / "oewn" / "oewn_nouns.json.gz"), DIGIT_SYNSETS)


def digit_texts_from_oewn(data_dir: str | Path) -> list[dict]:
    """Every member, definition, example and templated member phrase of the ten digit synsets."""
    synsets = oewn_synsets(data_dir)
    classes = [(synsets[sid], synsets[sid]["members"]) for sid in DIGIT_SYNSETS]
    return synset_text_rows(classes, TEMPLATES, "digit")


def load_digit_texts() -> list[dict]:
    """The shipped OEWN digit text rows (``spaces/assets/digit_texts.json``)."""
    return read_json(_require_asset(ASSETS / "digit_texts.json"))


def class_prompts() -> list[str]:
    """One zero-shot prompt per digit 0..9."""
    return [f"the number {word}" for word in DIGIT_WORDS]


def _flac_split(folder: Path) -> tuple[list[str], np.ndarray]:
    paths = list(_require_asset(folder).glob("*.flac"))
    if not paths:
        raise SpacegraphFileNotFoundError(
            f"no .flac files in {folder}; run examples/train_digit_spaces.py to create them"
        )
    return _sorted_fsdd(paths)


def load_demo_samples() -> dict:
    """The shipped demo slice: FSDD clips as FLAC and MNIST images. Labels are for evaluation only."""
    query_paths, query_labels = _flac_split(SAMPLES / "audio_queries")
    memory_paths, memory_labels = _flac_split(SAMPLES / "audio_memory")
    keys = ("gallery", "gallery_labels", "memory", "memory_labels")
    images = read_npz(_require_asset(SAMPLES / "images.npz"), keys)
    return {
        "audio_query_paths": query_paths,
        "audio_query_labels": query_labels,
        "audio_memory_paths": memory_paths,
        "audio_memory_labels": memory_labels,
        "image_gallery": images["gallery"],
        "image_gallery_labels": images["gallery_labels"].astype(np.int64),
        "image_memory": images["memory"],
        "image_memory_labels": images["memory_labels"].astype(np.int64),
    }
