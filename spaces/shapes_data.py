"""Real-data helpers for the two shape spaces: ModelNet10 point clouds, canonical depth renders and OEWN text.

The raw data lives beside the project (``../shared/data`` or ``$SPACEGRAPH_DATA``); the training script ships the
text rows under ``spaces/assets`` so the package works without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data_files import ASSETS, read_json, read_npz, read_synsets, require_asset, require_data, synset_text_rows

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
# OEWN noun synsets of the ModelNet10 classes (index = label).
SHAPE_SYNSETS: tuple[str, ...] = (
    "02811600-n",
    "02821967-n",
    "03005231-n",
    "03184367-n",
    "03018908-n",
    "03089261-n",
    "04308138-n",
    "04263630-n",
    "04386330-n",
    "04453655-n",
)
TEMPLATES = ("a {m}", "a 3d model of a {m}", "a depth image of a {m}", "a rendering of a {m}", "the shape of a {m}")
ELEVATION_DEG = 30.0
AZIMUTH_DEG = 45.0
NEAREST_MIN = 0.2  # brightness of the farthest possible point; the background is 0


def _require(path: Path) -> Path:
    return require_data(path, "modelnet10/ and oewn/")


def modelnet10_split(data_dir: str | Path) -> dict:
    """The official ModelNet10 split (train 3,991 / test 908) of the 1,024-point clouds, in stored order."""
    data = read_npz(
        _require(Path(data_dir) / "modelnet10" / "modelnet10_1024.npz"), ("points", "label", "split", "classes")
    )
    points, labels, split = data["points"].astype(np.float32), data["label"].astype(np.int64), data["split"]
    classes = [str(c) for c in data["classes"]]
    train, test = split == "train", split == "test"
    return {
        "train_points": points[train],
        "train_labels": labels[train],
        "test_points": points[test],
        "test_labels": labels[test],
        "classes": classes,
    }


def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """Centre (bounding-box centre) and scale into the unit sphere; ``[N, 3]`` or ``[B, N, 3]``."""
    points = np.asarray(points, dtype=np.float32)
    centre = (points.max(axis=-2, keepdims=True) + points.min(axis=-2, keepdims=True)) / 2
    centred = points - centre
    radius = np.linalg.norm(centred, axis=-1, keepdims=True).max(axis=-2, keepdims=True)
    return centred / np.maximum(radius, 1e-8)


def _view_rotation() -> np.ndarray:
    """World (z-up) -> camera (right, up, towards the viewer) for the canonical elevation/azimuth."""
    az, el = np.deg2rad(AZIMUTH_DEG), np.deg2rad(ELEVATION_DEG)
    towards = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    right = np.array([-np.sin(az), np.cos(az), 0.0])
    return np.stack([right, np.cross(towards, right), towards]).astype(np.float32)


def render_depth(points: np.ndarray, size: int = 32) -> np.ndarray:
    """Orthographic z-buffer depth render of the normalised cloud from the canonical view, float32 in [0, 1].

    ``[N, 3]`` -> ``[size, size]``, ``[B, N, 3]`` -> ``[B, size, size]``. The nearest point per pixel wins, nearer is
    brighter (from NEAREST_MIN for the far side of the unit sphere to 1), background 0; a 2x2 max-filter closes the
    gaps between points.
    """
    points = np.asarray(points, dtype=np.float32)
    batch = points[None] if points.ndim == 2 else points
    cam = normalize_cloud(batch) @ _view_rotation().T
    col = np.clip(((cam[..., 0] + 1) / 2 * size).astype(np.int64), 0, size - 1)
    row = np.clip(((1 - cam[..., 1]) / 2 * size).astype(np.int64), 0, size - 1)
    near = NEAREST_MIN + (1 - NEAREST_MIN) * np.clip((cam[..., 2] + 1) / 2, 0, 1)
    flat = (np.arange(len(batch))[:, None] * size + row) * size + col
    image = np.zeros(len(batch) * size * size, dtype=np.float32)
    np.maximum.at(image, flat.ravel(), near.ravel())
    image = image.reshape(len(batch), size, size)
    padded = np.pad(image, ((0, 0), (0, 1), (0, 1)))
    image = np.maximum.reduce([padded[:, :-1, :-1], padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, 1:, 1:]])
    return image[0] if points.ndim == 2 else image


def train_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, disjoint, deterministic split of the train indices into halves A and B (sorted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    half_a = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        half_a.append(idx[: len(idx) // 2])
    idx_a = np.sort(np.concatenate(half_a))
    return idx_a, np.setdiff1d(np.arange(len(labels)), idx_a)


def shape_texts_from_oewn(data_dir: str | Path) -> list[dict]:
    """Members (plus the class name), definitions, examples and templated member phrases of the 10 class synsets."""
    synsets = read_synsets(_require(Path(data_dir) / "oewn" / "oewn_nouns.json.gz"), SHAPE_SYNSETS)
    classes = [
        (synsets[sid], [name.replace("_", " "), *synsets[sid]["members"]]) for name, sid in zip(CLASSES, SHAPE_SYNSETS)
    ]
    return synset_text_rows(classes, TEMPLATES, "label")


def load_shape_texts() -> list[dict]:
    """The shipped OEWN shape text rows (``spaces/assets/shape_texts.json``)."""
    return read_json(require_asset(ASSETS / "shape_texts.json", "train_shape_spaces.py"))


def class_prompts() -> list[str]:
    """One zero-shot prompt per ModelNet10 class, in label order."""
    return [f"a {name.replace('_', ' ')}" for name in CLASSES]
