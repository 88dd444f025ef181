"""Train the two small real shape spaces (3D-image and image-text, on ModelNet10 + OEWN) and write their assets.

Uses only the ModelNet10 train split, cut into two stratified halves: half A trains ``shapes-3d-image`` on
(cloud, its own canonical depth render) pairs with an item-level InfoNCE loss (no labels); half B trains
``shapes-image-text`` on (render, random OEWN text row of its class) with a multi-positive CLIP loss. Both see random
rotations about z and jitter, with the render made from the augmented cloud. Writes weights, shape_texts.json,
ATTRIBUTION_SHAPES.md and shapes_training_report.json (measured on the test split) under --out.

    python examples/train_shape_spaces.py [--data ../shared/data] [--out spaces/assets] [--seed 0]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from spacegraph_spaces import shapes_data
from spacegraph_spaces.shapes import ShapesImageTextSpace, ShapesModel, ShapesPointImageSpace
from spacegraph_spaces.small import tokenize_batch
from train_digit_spaces import fit, multi_positive_clip_loss, save_space, start_run, write_report

from spacegraph.plugin import linear_probe_accuracy, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
IMAGE = {"size": 32, "mean": 0.25, "std": 0.35, "channels": [32, 64, 128]}
POINT_IMAGE_CONFIG = {
    "name": "shapes-3d-image",
    "modalities": ["point_cloud", "image"],
    "dim": 64,
    "point_cloud": {"n_points": 1024, "widths": [64, 128, 256], "head": 128},
    "image": IMAGE,
}
IMAGE_TEXT_CONFIG = {
    "name": "shapes-image-text",
    "modalities": ["image", "text"],
    "dim": 96,
    "image": IMAGE,
    "text": {"tokenizer": "word_ngram", "buckets": 4096, "width": 64},
}
TRAIN = {
    # the point tower sees a random subset of each cloud's points while training (speed); all 1,024 at inference
    "shapes-3d-image": {"epochs": 8, "batch_size": 128, "lr": 3e-3, "train_points": 256},
    "shapes-image-text": {"epochs": 15, "batch_size": 128, "lr": 3e-3},
}
MAX_ROTATION_DEG = 30.0
SCALE_RANGE = (0.85, 1.15)
JITTER = 0.01
ATTRIBUTION = """# Attribution of the shape-space assets

The weights in `shapes-3d-image/` and `shapes-image-text/` were trained by `examples/train_shape_spaces.py` on the
data below; `shape_texts.json` is derived from it.

- **ModelNet10** (Princeton ModelNet, Zhirong Wu et al., "3D ShapeNets: A Deep Representation for Volumetric
  Shapes", CVPR 2015), https://modelnet.cs.princeton.edu, for academic research use only. The weights were trained
  on 1,024-point clouds sampled from its train split and on depth renders of them; no shapes are shipped.
- **Open English WordNet** (https://en-word.net), CC BY 4.0, derived from Princeton WordNet (WordNet licence).
  `shape_texts.json` holds the members, definitions and examples of the ten ModelNet10 class synsets and phrases
  built from them.
"""


def augment(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rotation about z, anisotropic scale and Gaussian jitter of a batch of clouds ``[B, N, 3]``."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, len(points)))
    cos, sin, zero, one = np.cos(angle), np.sin(angle), np.zeros_like(angle), np.ones_like(angle)
    rotation = np.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], axis=1).reshape(-1, 3, 3)
    scale = rng.uniform(*SCALE_RANGE, size=(len(points), 1, 3))
    clouds = shapes_data.normalize_cloud(points) @ rotation.transpose(0, 2, 1) * scale
    return shapes_data.normalize_cloud(clouds + rng.normal(0, JITTER, clouds.shape)).astype(np.float32)


def renders(clouds: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(shapes_data.render_depth(clouds, IMAGE["size"]))


def train(
    config: dict, batch_loss: Callable[[ShapesModel, np.ndarray], torch.Tensor], n: int, rng: np.random.Generator
) -> ShapesModel:
    """Train a fresh :class:`ShapesModel` on ``n`` items; ``batch_loss(model, idx)`` gives one batch's loss."""
    model = ShapesModel(config)
    fit(model, config["name"], n, TRAIN[config["name"]], lambda idx: batch_loss(model, idx), rng)
    return model


def point_image_loss(points: np.ndarray, rng: np.random.Generator) -> Callable[[ShapesModel, np.ndarray], torch.Tensor]:
    """Item-level InfoNCE between each augmented cloud and its own render (no class labels)."""

    def loss(model: ShapesModel, idx: np.ndarray) -> torch.Tensor:
        clouds = augment(points[idx], rng)
        subset = rng.choice(clouds.shape[1], TRAIN["shapes-3d-image"]["train_points"], replace=False)
        cloud_emb = model.towers["point_cloud"](torch.from_numpy(clouds[:, subset]))
        image_emb = model.towers["image"](renders(clouds))
        return multi_positive_clip_loss(cloud_emb, image_emb, torch.arange(len(idx)), model.logit_scale)

    return loss


def image_text_loss(
    points: np.ndarray, labels: np.ndarray, rows: list[dict], rng: np.random.Generator
) -> Callable[[ShapesModel, np.ndarray], torch.Tensor]:
    """Multi-positive CLIP loss between renders of augmented clouds and a random text row of their class."""
    texts_by_class = [[r["text"] for r in rows if r["label"] == c] for c in range(len(shapes_data.CLASSES))]
    text_cfg = IMAGE_TEXT_CONFIG["text"]

    def loss(model: ShapesModel, idx: np.ndarray) -> torch.Tensor:
        texts = [texts_by_class[c][rng.integers(len(texts_by_class[c]))] for c in labels[idx]]
        ids, offsets = tokenize_batch(texts, text_cfg["tokenizer"], text_cfg["buckets"])
        image_emb = model.towers["image"](renders(augment(points[idx], rng)))
        text_emb = model.towers["text"](ids, offsets)
        return multi_positive_clip_loss(image_emb, text_emb, torch.from_numpy(labels[idx]), model.logit_scale)

    return loss


def train_and_save(config: dict, batch_loss: Callable, n: int, out: Path, rng: np.random.Generator) -> dict:
    start = time.perf_counter()
    model = train(config, batch_loss, n, rng)
    seconds = time.perf_counter() - start
    save_space(model, config, out / config["name"])
    return {"train_seconds": round(seconds, 1), "n_train": n, **TRAIN[config["name"]]}


def evaluate_point_image(space: ShapesPointImageSpace, split: dict) -> dict:
    """3D->image item R@1 on the test split and the linear-probe ceiling of the point-cloud embeddings."""
    test_clouds = space.encode("point_cloud", split["test_points"])
    test_images = space.encode("image", shapes_data.render_depth(split["test_points"], IMAGE["size"]))
    hits = (test_clouds @ test_images.T).argmax(dim=1) == torch.arange(len(test_clouds))
    train_clouds = space.encode("point_cloud", split["train_points"])
    probe = linear_probe_accuracy(train_clouds, split["train_labels"], test_clouds, split["test_labels"])
    return {
        "n_test": len(test_clouds),
        "point_to_image_item_recall_at_1": round(float(hits.float().mean()), 4),
        "point_cloud_linear_probe_accuracy": round(probe, 4),
    }


def evaluate_image_text(space: ShapesImageTextSpace, split: dict) -> dict:
    """Zero-shot accuracy of the test renders against the class prompts."""
    images = space.encode("image", shapes_data.render_depth(split["test_points"], IMAGE["size"]))
    prompts = space.encode("text", shapes_data.class_prompts())
    predicted = (images @ prompts.T).argmax(dim=1).numpy()
    return {"n_test": len(images), "zero_shot_accuracy": round(float((predicted == split["test_labels"]).mean()), 4)}


def main() -> None:
    args, rng = start_run(__doc__.splitlines()[0], "folder holding modelnet10/, oewn/")
    started = time.perf_counter()
    split = shapes_data.modelnet10_split(args.data)
    rows = shapes_data.shape_texts_from_oewn(args.data)
    write_text_atomic(args.out / "shape_texts.json", json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(args.out / "ATTRIBUTION_SHAPES.md", ATTRIBUTION)
    half_a, half_b = shapes_data.train_halves(split["train_labels"], seed=args.seed)
    points, labels = split["train_points"], split["train_labels"]
    report = {"seed": args.seed, "n_text_rows": len(rows)}
    report["shapes-3d-image"] = train_and_save(
        POINT_IMAGE_CONFIG, point_image_loss(points[half_a], rng), len(half_a), args.out, rng
    )
    report["shapes-image-text"] = train_and_save(
        IMAGE_TEXT_CONFIG, image_text_loss(points[half_b], labels[half_b], rows, rng), len(half_b), args.out, rng
    )
    report["shapes-3d-image"].update(evaluate_point_image(ShapesPointImageSpace(args.out / "shapes-3d-image"), split))
    report["shapes-image-text"].update(evaluate_image_text(ShapesImageTextSpace(args.out / "shapes-image-text"), split))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_report(args.out / "shapes_training_report.json", report)


if __name__ == "__main__":
    main()
