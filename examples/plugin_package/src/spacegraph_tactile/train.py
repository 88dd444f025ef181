"""Train the ``tactile-text`` space on real pairs and write its weights.

Data: the MNIST images spacegraph ships (``spacegraph_spaces.digits_data.load_demo_samples``): the 1,000 train-split
``image_memory`` images become pin maps, each paired with a random one of the 552 WordNet digit text rows the
shipped digit spaces use (``load_digit_texts``) of its digit. The loss is InfoNCE with every same-digit row of the
batch a positive; each training pin is flipped with probability ``PIN_FLIP``. The 1,000 test-split ``image_gallery`` images only measure zero-shot accuracy.

    PYTHONPATH=src python -m spacegraph_tactile.train            # from examples/plugin_package
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from spacegraph_spaces.digits_data import class_prompts, load_demo_samples, load_digit_texts

from .pins import BLOCK, GRID, THRESHOLD, pin_map
from .space import NAME, WEIGHTS, TactileTextModel, save_weights, text_batch

CONFIG = {
    "name": NAME,
    "modalities": ["tactile", "text"],
    "dim": 32,
    "tactile": {"grid": GRID, "hidden": 128},
    "text": {"tokenizer": "char_trigram", "buckets": 1024, "width": 32},
}
REPORT_FILE = "training_report.json"
PIN_FLIP = 0.05  # augmentation: each pin of a training map is flipped with this probability (a noisy sensor)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``-log`` of the softmax mass on the positives, per row, averaged over rows and both directions."""

    def one_way(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return -(torch.logsumexp(scores.masked_fill(~mask, -torch.inf), 1) - torch.logsumexp(scores, 1)).mean()

    return (one_way(logits, positive) + one_way(logits.T, positive.T)) / 2


def zero_shot_accuracy(model: TactileTextModel, maps: np.ndarray, labels: np.ndarray) -> float:
    with torch.inference_mode():
        zt = F.normalize(model.encode_text(*text_batch(class_prompts(), CONFIG["text"]["buckets"])), dim=-1)
        zp = F.normalize(model.tactile(torch.from_numpy(maps)), dim=-1)
    return float(((zp @ zt.T).argmax(1).numpy() == labels).mean())


def train(steps: int, batch_size: int, seed: int) -> tuple[TactileTextModel, dict]:
    samples, rows = load_demo_samples(), load_digit_texts()
    maps, labels = pin_map(samples["image_memory"]), samples["image_memory_labels"]
    texts_of = {d: [row["text"] for row in rows if row["digit"] == d] for d in range(10)}
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TactileTextModel(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(len(maps), (batch_size,), generator=generator).numpy()
        picks = torch.randint(10**6, (batch_size,), generator=generator).tolist()
        texts = [texts_of[int(labels[i])][pick % len(texts_of[int(labels[i])])] for i, pick in zip(idx, picks)]
        batch_maps = torch.from_numpy(maps[idx])
        flips = torch.rand(batch_maps.shape, generator=generator) < PIN_FLIP
        zp = F.normalize(model.tactile(torch.where(flips, 1 - batch_maps, batch_maps)), dim=-1)
        zt = F.normalize(model.encode_text(*text_batch(texts, CONFIG["text"]["buckets"])), dim=-1)
        batch_labels = torch.from_numpy(labels[idx])
        loss = multi_positive_nce(zp @ zt.T / 0.1, batch_labels[:, None] == batch_labels[None, :])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    report = {
        "data": "pin maps (4x4 mean-pool, threshold 0.25) of spacegraph's shipped MNIST train-split images, paired "
        "with WordNet (OEWN) digit texts of the same digit",
        "pins": {"grid": GRID, "block": BLOCK, "threshold": THRESHOLD},
        "train_images": len(maps),
        "text_rows": len(rows),
        "steps": steps,
        "pin_flip": PIN_FLIP,
        "batch_size": batch_size,
        "seed": seed,
        "final_loss": round(loss.item(), 4),
        "gallery_zero_shot_accuracy": zero_shot_accuracy(
            model, pin_map(samples["image_gallery"]), samples["image_gallery_labels"]
        ),
    }
    return model, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="folder to write (default: the package's weights)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, report = train(args.steps, args.batch_size, args.seed)
    save_weights(model, CONFIG, args.out, extra={REPORT_FILE: json.dumps(report, indent=2) + "\n"})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
