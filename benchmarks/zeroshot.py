"""Zero-shot classification through routes: ``spacegraph bench zeroshot``.

``fsdd``: the FSDD test clips classified with ``route.classify`` by the text tower of the image-text space (the
digit names "zero".."nine" through the image leg's heads), for the C-MCR and text-pivot routes of ``bench digits``
and a paired bound (the same heads trained with InfoNCE on class-matched audio-image pairs, the class names taken
through its image head). ``modelnet10``: the ModelNet10 test point clouds classified by the image-text space's text
tower through the 3D route of ``bench modelnet10`` (connect and extend bridges through images). Each with the bare
class names (``top1``, ``top5``) and averaged over the prompt templates the spaces' text came from
(``top1_templates``, ``top5_templates``), over 3 seeds; chance and, as references, the source space's own text
tower (``native``: the audio-text space's for FSDD) or a supervised linear probe (ModelNet10).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch
from spacegraph_bridges.cmcr import FitResult

from spacegraph import BridgeFeatures, Classification, FeatureStore, Route, Space, SpaceGraph, load_space
from spacegraph._classify import class_embeddings
from spacegraph.plugin import linear_probe_accuracy

from . import digits, localization, modelnet10

SEEDS = (0, 1, 2)
TOP_K = (1, 5)


def templates(raw: tuple[str, ...]) -> list[str]:
    """The spaces' ``"{m}"`` templates in ``classify``'s ``"{}"`` form."""
    return [template.replace("{m}", "{}") for template in raw]


def top_k_row(classification: Classification, labels: np.ndarray, suffix: str = "") -> dict[str, float]:
    return {f"top{k}{suffix}": classification.accuracy(labels, k=k) for k in TOP_K}


def both_prompts(classify, labels: np.ndarray, class_names: list[str], prompt_templates: list[str]) -> dict:
    """``classify(class_names, templates)``'s top-k with the bare names and with the template ensemble."""
    return {
        **top_k_row(classify(class_names, None), labels),
        **top_k_row(classify(class_names, prompt_templates), labels, "_templates"),
    }


def chance_row(n_classes: int) -> dict[str, float]:
    return {f"top{k}{suffix}": min(k, n_classes) / n_classes for k in TOP_K for suffix in ("", "_templates")}


def head_classifier(fit: FitResult, queries: torch.Tensor, text_space: Space):
    """What ``route.classify`` does, with trained heads in place of a route: queries through ``head_x``, class
    prompts encoded by ``text_space``'s text tower and taken through ``head_y``."""

    def classify(class_names: list[str], prompt_templates: list[str] | None) -> Classification:
        with torch.inference_mode():
            head_x, head_y = fit.head_x.eval(), fit.head_y.eval()
            classes = class_embeddings(
                lambda texts: head_y(text_space.encode("text", texts)), class_names, prompt_templates
            )
            logits = head_x(queries) @ classes.T / 0.01
        return Classification(logits.softmax(dim=1), tuple(class_names))

    return classify


def route_classifier(route: Route, items: torch.Tensor):
    return lambda class_names, prompt_templates: route.classify(items, class_names, prompt_templates)


def native_classifier(space: Space, items: torch.Tensor):
    """Classification inside ``space`` itself, by its own text tower (no route)."""

    def classify(class_names: list[str], prompt_templates: list[str] | None) -> Classification:
        classes = class_embeddings(lambda texts: space.encode("text", texts), class_names, prompt_templates)
        return Classification((items @ classes.T / 0.01).softmax(dim=1), tuple(class_names))

    return classify


def fsdd_rows(setup: localization.Setup, seed: int, progress: bool) -> dict[str, dict[str, float]]:
    """Each FSDD method's top-k at one seed."""
    from spacegraph_spaces.digits_data import DIGIT_WORDS, TEMPLATES

    names, prompt_templates = list(DIGIT_WORDS), templates(TEMPLATES)
    queries, labels = setup.features.audio_queries, setup.data.audio_query_labels
    classifiers = {
        name: route_classifier(
            localization.train_graph(setup.spaces, setup.features, method, seed, progress).connect("audio", "image"),
            queries,
        )
        for name, method in localization.ROUTE_METHODS.items()
    }
    fit = localization.paired_heads(digits.class_matched_pairs(setup.features, setup.data, seed), seed, progress)
    classifiers["paired"] = head_classifier(fit, queries, setup.spaces[1])
    rows = {name: both_prompts(classify, labels, names, prompt_templates) for name, classify in classifiers.items()}
    rows["native"] = both_prompts(native_classifier(setup.spaces[0], queries), labels, names, prompt_templates)
    return {**rows, "chance": chance_row(len(names))}


def modelnet10_rows(spaces: dict[str, Space], f: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    """The connect (``cmcr``) and extend (``cmcr_extend``) routes' top-k at one seed."""
    from spacegraph_spaces.shapes_data import CLASSES, TEMPLATES

    names, prompt_templates = [name.replace("_", " ") for name in CLASSES], templates(TEMPLATES)
    features = BridgeFeatures(f["renders_p"], f["renders_t"], f["clouds"], f["texts"])
    rows = {}
    for method, kind in (("cmcr", "connect"), ("cmcr_extend", "extend")):
        graph = SpaceGraph(spaces.values())
        graph.train_bridge(
            modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE, overlap="image", features=features,
            config={**modelnet10.DEFAULT_CONFIG, "seed": seed, "kind": kind}, show_progress_bar=progress,
        )  # fmt: skip
        classify = route_classifier(graph.connect("point_cloud", "text"), f["test_clouds"])
        rows[method] = both_prompts(classify, f["test_labels"], names, prompt_templates)
    return {**rows, "chance": chance_row(len(names))}


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: mean(row[key] for row in rows) for key in rows[0]}


def bench(data_dir: str | Path, out_dir: str | Path, *, seeds=SEEDS, progress: bool = True) -> dict[str, Any]:
    setup = localization.load(data_dir, out_dir, progress)
    shape_spaces = {name: load_space(name) for name in (modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE)}
    shapes = modelnet10._extract(shape_spaces, data_dir, FeatureStore(Path(out_dir) / "features"), progress)
    per_seed = [
        {"fsdd": fsdd_rows(setup, seed, progress), "modelnet10": modelnet10_rows(shape_spaces, shapes, seed, progress)}
        for seed in seeds
    ]
    record: dict[str, Any] = {"benchmark": "zeroshot"}
    for name in ("fsdd", "modelnet10"):
        record[name] = {method: mean_rows([rows[name][method] for rows in per_seed]) for method in per_seed[0][name]}
    record["modelnet10"]["linear_probe"] = {
        "top1": linear_probe_accuracy(
            shapes["clouds"], shapes["train_labels"], shapes["test_clouds"], shapes["test_labels"]
        )
    }
    record.update(
        seeds=list(seeds), n_fsdd=len(setup.data.audio_queries), n_modelnet10=len(shapes["test_labels"]),
        per_seed=per_seed,
    )  # fmt: skip
    return record


def summary(record: dict[str, Any]) -> str:
    lines = [f"\nzero-shot classification through routes (means over seeds {record['seeds']})"]
    for name, n in (("fsdd", record["n_fsdd"]), ("modelnet10", record["n_modelnet10"])):
        lines.append(
            f"\n{name} ({n} test items)   bare names: {'top-1':>6} {'top-5':>6} | templates: {'top-1':>6} {'top-5':>6}"
        )
        for method, m in record[name].items():
            bare = f"{m['top1']:6.3f} " + (f"{m['top5']:6.3f}" if "top5" in m else f"{'':6}")
            ensembled = f"{m['top1_templates']:6.3f} {m['top5_templates']:6.3f}" if "top1_templates" in m else ""
            lines.append(f"{method:24} {'':11} {bare} | {'':10} {ensembled}")
    lines.append(
        "\nnative: the FSDD clips in the audio-text space with its own text tower (no route); linear_probe: "
        "supervised, on the 3D space's features"
    )
    return "\n".join(lines)
