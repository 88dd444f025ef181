"""Two hops: spoken digits (FSDD) -> the independent 8x8 digits of ``sklearn.datasets.load_digits``.

Three spaces: audio-text (FSDD + WordNet text), image-text (MNIST + WordNet text) and image-lowres (MNIST images
paired with their own 8x8 copies). Two routes are built side by side:

* connect: C-MCR joins audio-text and image-text through text into a joint space, which is then joined with
  image-lowres through images;
* extend: audio-text and image-lowres are each extended into the frozen image-text space (through text and
  through images).

No audio-image, audio-lowres or image-lowres-digit pair with a label is used by any bridge.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from spacegraph import (
    Bridge,
    BridgeFeatures,
    FeatureStore,
    Route,
    SpaceGraph,
    load_space,
    retrieval_metrics,
    zero_shot_accuracy,
)
from spacegraph.plugin import chance_metrics

from . import digits

LOWRES_SPACE = "digits-image-lowres"


def _score(route: Route, queries: torch.Tensor, gallery: torch.Tensor, q_labels, g_labels, q_mod, g_mod) -> dict:
    scores = route.project(q_mod, queries) @ route.project(g_mod, gallery).T
    return retrieval_metrics(scores, q_labels, g_labels)


def _extract(data: digits.DigitsData, spaces: dict, store: FeatureStore, progress: bool) -> dict[str, torch.Tensor]:
    from spacegraph_spaces.digits_lowres import downsample_8x8, load_sklearn_digits

    sklearn_images, _ = load_sklearn_digits()
    audio, image, lowres = spaces[digits.AUDIO_SPACE], spaces[digits.IMAGE_SPACE], spaces[LOWRES_SPACE]
    jobs = {
        "texts_a": (audio, "text", "texts", data.texts),
        "texts_i": (image, "text", "texts", data.texts),
        "audio_memory": (audio, "audio", "audio-memory", data.audio_memory),
        "audio_queries": (audio, "audio", "audio-queries", data.audio_queries),
        "images_i": (image, "image", "image-memory", data.image_memory),
        "images_l": (lowres, "image", "image-memory", data.image_memory),
        "mnist_test_i": (image, "image", "image-gallery", data.image_gallery),
        "lowres_memory": (lowres, "lowres_image", "mnist-8x8", downsample_8x8(data.image_memory)),
        "sklearn": (lowres, "lowres_image", "sklearn-digits", sklearn_images),
    }
    return {
        key: store.encode(space, modality, f"{data.name}-{name}", inputs, show_progress_bar=progress)
        for key, (space, modality, name, inputs) in jobs.items()
    }


def _train(graph: SpaceGraph, x: str, y: str, via: str, features: BridgeFeatures, config: dict, **kw) -> Bridge:
    return graph.train_bridge(x, y, overlap=via, features=features, config={**config, **kw}, show_progress_bar=False)


def _build(kind: str, spaces: dict, f: dict, config: dict) -> tuple[SpaceGraph, list[Bridge], float]:
    """The graph of one route kind, its two bridges, and their training time."""
    graph = SpaceGraph(spaces.values())
    start = time.perf_counter()
    hop1 = BridgeFeatures(f["texts_a"], f["texts_i"], f["audio_memory"], f["images_i"])
    if kind == "extend":
        first = _train(graph, digits.AUDIO_SPACE, digits.IMAGE_SPACE, "text", hop1, config, kind="extend")
        hop2 = BridgeFeatures(f["images_l"], f["images_i"], f["lowres_memory"], f["texts_i"])
        second = _train(graph, LOWRES_SPACE, digits.IMAGE_SPACE, "image", hop2, config, kind="extend")
    else:
        first = _train(graph, digits.AUDIO_SPACE, digits.IMAGE_SPACE, "text", hop1, config)
        joint_images = first.project(digits.IMAGE_SPACE, f["images_i"])
        joint_audio = first.project(digits.AUDIO_SPACE, f["audio_memory"])
        hop2 = BridgeFeatures(joint_images, f["images_l"], joint_audio, f["lowres_memory"])
        second = _train(graph, first.name, LOWRES_SPACE, "image", hop2, config)
    return graph, [first, second], time.perf_counter() - start


def _report(graph: SpaceGraph, bridges: list[Bridge], f: dict, data: digits.DigitsData, sklearn_labels) -> dict:
    end_to_end = graph.connect("audio", "lowres_image")
    hop1 = graph.connect("audio", "image")
    # The second hop on its own: MNIST images of the image-text space along the route to the 8x8 digits.
    image_path = (
        [digits.IMAGE_SPACE, *(b.card.target for b in bridges)]
        if bridges[0].card.kind == "connect"
        else [digits.IMAGE_SPACE]
    )
    hop2 = Route(graph.leg("image", image_path), end_to_end.leg("lowres_image"))
    q, g = data.audio_query_labels, data.image_gallery_labels
    return {
        "route": repr(end_to_end),
        "audio_to_lowres": _score(
            end_to_end, f["audio_queries"], f["sklearn"], q, sklearn_labels, "audio", "lowres_image"
        ),
        "hops": {
            "audio_to_mnist_image": _score(hop1, f["audio_queries"], f["mnist_test_i"], q, g, "audio", "image"),
            "mnist_image_to_lowres": _score(
                hop2, f["mnist_test_i"], f["sklearn"], g, sklearn_labels, "image", "lowres_image"
            ),
        },
        "bridge_quality": {b.name: b.card.score for b in end_to_end.bridges},
        "expected_quality": end_to_end.expected_quality,
        "image_text_zero_shot_inside_route": _zero_shot_inside(hop1, f, data),
    }


def _zero_shot_inside(route: Route, f: dict, data: digits.DigitsData) -> float:
    """Image-text zero-shot accuracy of the image-text space's own images and prompts, taken along the route's
    image leg: the frozen target itself for extend, the joint space for connect."""
    image_leg = route.leg("image")
    prompts = image_leg.project(image_leg.space.encode("text", _prompts()))
    return zero_shot_accuracy(image_leg.project(f["mnist_test_i"]), data.image_gallery_labels, prompts)


def _prompts() -> list[str]:
    from spacegraph_spaces.digits_data import class_prompts

    return class_prompts()


def bench(data_dir: str | Path, out_dir: str | Path, *, config: dict | None = None, progress: bool = True) -> dict:
    from spacegraph_spaces.digits_lowres import load_sklearn_digits

    config = {**digits.DEFAULT_CONFIG, **(config or {})}
    data = digits.full_data(data_dir)
    spaces = {name: load_space(name) for name in (digits.AUDIO_SPACE, digits.IMAGE_SPACE, LOWRES_SPACE)}
    f = _extract(data, spaces, FeatureStore(Path(out_dir) / "features"), progress)
    _, sklearn_labels = load_sklearn_digits()
    record: dict[str, Any] = {"benchmark": "multihop", "routes": {}, "train_seconds": {}}
    for kind in ("connect", "extend"):
        graph, bridges, seconds = _build(kind, spaces, f, config)
        record["routes"][kind] = _report(graph, bridges, f, data, sklearn_labels)
        record["train_seconds"][kind] = round(seconds, 2)
    native = zero_shot_accuracy(
        f["mnist_test_i"], data.image_gallery_labels, spaces[digits.IMAGE_SPACE].encode("text", _prompts())
    )
    record["image_text_zero_shot_native"] = native
    record["chance"] = chance_metrics(data.audio_query_labels, sklearn_labels)
    record.update(n_queries=len(data.audio_queries), n_gallery=len(sklearn_labels), config=config)
    return record


def summary(record: dict[str, Any]) -> str:
    lines = [f"\n{record['n_queries']} spoken digits -> {record['n_gallery']} sklearn 8x8 digits, two hops\n"]
    lines.append(f"{'':10} {'R@1':>6} {'mAP':>6}   hop audio->MNIST R@1   hop MNIST->8x8 R@1   target zero-shot")
    for kind, route in record["routes"].items():
        end, hops = route["audio_to_lowres"], route["hops"]
        lines.append(
            f"{kind:10} {end['R@1']:6.3f} {end['mAP']:6.3f}   {hops['audio_to_mnist_image']['R@1']:20.3f}"
            f"   {hops['mnist_image_to_lowres']['R@1']:18.3f}   {route['image_text_zero_shot_inside_route']:16.3f}"
        )
    chance = record["chance"]
    lines.append(f"{'chance':10} {chance['R@1']:6.3f} {chance['mAP']:6.3f}")
    lines.append(f"\nimage-text zero-shot in the image-text space itself: {record['image_text_zero_shot_native']:.3f}")
    return "\n".join(lines)
