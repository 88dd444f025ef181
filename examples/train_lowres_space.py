"""Train the ``digits-image-lowres`` space (MNIST 28x28 <-> sklearn-style 8x8 thumbnails) and write its assets.

Pairs each MNIST train image with its own ``downsample_8x8`` copy (no labels) and trains both towers with an
item-level InfoNCE loss. Each batch shifts the 28x28 images a little, then makes two views of every shifted image
(small random rotation/shear/zoom, sometimes thicker strokes): one for the image tower, the other downsampled to 8x8
for the lowres tower, so each pair shows the same written digit. Writes the weights under --out/digits-image-lowres/
and --out/lowres_training_report.json: item-level retrieval (MNIST test image -> its own 8x8 copy) and the
cross-domain diagnostic, class-level retrieval from MNIST test images to the 1,797 sklearn digits (labels used only
to score).

    python examples/train_lowres_space.py [--data ../shared/data] [--out spaces/assets] [--seed 0]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from spacegraph_spaces import digits_data
from spacegraph_spaces.digits_lowres import (
    LOWRES_MAX,
    DigitsLowresSpace,
    LowresModel,
    downsample_8x8,
    load_sklearn_digits,
)
from train_digit_spaces import fit, image_batches, multi_positive_clip_loss, save_space, start_run, write_report

from spacegraph.plugin import retrieval_metrics

CONFIG = {
    "name": "digits-image-lowres",
    "modalities": ["image", "lowres_image"],
    "dim": 64,
    "image": {"size": 28, "mean": 0.1307, "std": 0.3081, "channels": [16, 32, 64]},
    # 8x8 inputs scaled from 0..16 to [0, 1]; mean and std are filled in from the training copies
    "lowres_image": {"size": 8, "channels": [32, 64, 128]},
}
JITTER = {"rotation_deg": 12.0, "shear": 0.3, "zoom": 0.1, "thicken_p": 0.5}
TRAIN = {"epochs": 60, "batch_size": 128, "lr": 3e-3}
REPORT_NAME = "lowres_training_report.json"


def lowres_stats(images: np.ndarray) -> dict:
    """Mean and std of the training images' 8x8 copies, scaled to [0, 1]."""
    scaled = downsample_8x8(images) / LOWRES_MAX
    return {"mean": round(float(scaled.mean()), 4), "std": round(float(scaled.std()), 4)}


def random_affines(n: int, rng: np.random.Generator) -> torch.Tensor:
    """``[n, 2, 3]`` affine maps: rotation, horizontal shear and zoom drawn uniformly within the JITTER bounds."""
    angle = np.deg2rad(rng.uniform(-1, 1, n) * JITTER["rotation_deg"])
    shear = rng.uniform(-1, 1, n) * JITTER["shear"]
    zoom = 1 + rng.uniform(-1, 1, n) * JITTER["zoom"]
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) / zoom, (shear - np.sin(angle)) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) / zoom, np.cos(angle) / zoom
    return torch.from_numpy(theta)


def jitter(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """[0, 1] images ``[B, H, W]`` under a random affine map and, for some, strokes thickened by a 3x3 max filter
    (sklearn's digits have thicker strokes than MNIST's)."""
    images = images[:, None]
    grid = F.affine_grid(random_affines(len(images), rng), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, align_corners=False)
    thick = torch.from_numpy(rng.random(len(images)) < JITTER["thicken_p"])[:, None, None, None]
    return torch.where(thick, F.max_pool2d(warped, 3, 1, 1), warped)[:, 0].clamp(0, 1)


def pair_batch(make_images: Callable, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted images, each jittered twice: one view for the image tower, the other downsampled to 8x8 (in [0, 1])."""
    images = make_images(idx, rng)
    lowres = downsample_8x8(jitter(images, rng)) / LOWRES_MAX
    return jitter(images, rng), torch.from_numpy(lowres)


def train(config: dict, make_images: Callable, n: int, rng: np.random.Generator) -> LowresModel:
    """Train a fresh :class:`LowresModel` on (image, its own 8x8 copy) pairs with item-level InfoNCE."""
    model = LowresModel(config)
    image_tower, lowres_tower = model.towers["image"], model.towers["lowres_image"]

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        images, lowres = pair_batch(make_images, idx, rng)
        items = torch.arange(len(images))
        return multi_positive_clip_loss(image_tower(images), lowres_tower(lowres), items, model.logit_scale)

    fit(model, config["name"], n, TRAIN, batch_loss, rng)
    return model


def rounded(metrics: dict) -> dict:
    return {key: round(value, 4) for key, value in metrics.items()}


def evaluate(space: DigitsLowresSpace, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """Item-level MNIST test -> own 8x8 copy, and class-level MNIST test -> sklearn digits retrieval."""
    images = space.encode("image", test_images)
    own = space.encode("lowres_image", downsample_8x8(test_images))
    sk_images, sk_labels = load_sklearn_digits()
    sklearn = space.encode("lowres_image", sk_images)
    items = np.arange(len(test_images))
    return {
        "n_test": len(test_images),
        "n_sklearn_digits": len(sk_labels),
        "item_mnist_to_own_8x8": rounded(retrieval_metrics(images @ own.T, items, items)),
        "class_mnist_to_sklearn_digits": rounded(retrieval_metrics(images @ sklearn.T, test_labels, sk_labels)),
    }


def main() -> None:
    args, rng = start_run(__doc__.splitlines()[0], "folder holding mnist5k/")
    mnist = digits_data.mnist_split(args.data)
    config = {**CONFIG, "lowres_image": {**CONFIG["lowres_image"], **lowres_stats(mnist["train_images"])}}
    start = time.perf_counter()
    model = train(config, image_batches(mnist["train_images"]), len(mnist["train_images"]), rng)
    seconds = time.perf_counter() - start
    folder = args.out / config["name"]
    save_space(model, config, folder)
    metrics = evaluate(DigitsLowresSpace(folder), mnist["test_images"], mnist["test_labels"])
    report = {"seed": args.seed, "train_seconds": round(seconds, 1), **TRAIN, "jitter": JITTER, **metrics}
    write_report(args.out / REPORT_NAME, report)


if __name__ == "__main__":
    main()
