"""3D -> text zero-shot classification through images, as in C-MCR's ULIP + CLIP setting, on ModelNet10.

A small 3D-image space (point clouds paired with depth renders of the same shapes, no labels) stands in for
ULIP; a small image-text space (renders of OTHER shapes with WordNet text of their class) for CLIP. They are
joined through images only, by a connect bridge and, side by side, by an extend bridge into the frozen
image-text space. The 908 official test shapes are classified against the 10 class prompts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from spacegraph import Bridge, BridgeFeatures, FeatureStore, SpaceGraph, load_space
from spacegraph.plugin import linear_probe_accuracy

POINT_SPACE, TEXT_SPACE = "shapes-3d-image", "shapes-image-text"
DEFAULT_CONFIG: dict[str, Any] = {"hidden_dim": 512, "out_dim": 256, "steps": 600, "batch_size": 256, "seed": 0}


def top_k_accuracy(scores: torch.Tensor, labels, ks=(1, 5)) -> dict[str, float]:
    labels = torch.as_tensor(labels).long()
    ranked = scores.topk(max(ks), dim=1).indices
    return {f"top{k}": float((ranked[:, :k] == labels[:, None]).any(dim=1).float().mean()) for k in ks}


def _extract(spaces: dict, data_dir: str | Path, store: FeatureStore, progress: bool) -> dict[str, Any]:
    from spacegraph_spaces.shapes_data import class_prompts, modelnet10_split, render_depth, shape_texts_from_oewn

    split = modelnet10_split(data_dir)
    points, text = spaces[POINT_SPACE], spaces[TEXT_SPACE]
    renders = render_depth(split["train_points"])
    texts = [row["text"] for row in shape_texts_from_oewn(data_dir)]
    jobs = {
        "renders_p": (points, "image", "train-renders", renders),
        "renders_t": (text, "image", "train-renders", renders),
        "clouds": (points, "point_cloud", "train-clouds", split["train_points"]),
        "texts": (text, "text", "texts", texts),
        "test_clouds": (points, "point_cloud", "test-clouds", split["test_points"]),
        "test_renders": (text, "image", "test-renders", render_depth(split["test_points"])),
        "prompts": (text, "text", "prompts", class_prompts()),
    }
    features = {
        key: store.encode(space, modality, name, inputs, show_progress_bar=progress)
        for key, (space, modality, name, inputs) in jobs.items()
    }
    return {**features, "train_labels": split["train_labels"], "test_labels": split["test_labels"]}


def _evaluate(graph: SpaceGraph, bridge: Bridge, f: dict[str, Any]) -> dict[str, Any]:
    route = graph.connect("point_cloud", "text")
    scores = route.project("point_cloud", f["test_clouds"]) @ route.project("text", f["prompts"]).T
    # The image-text space's own task where the bridge puts its images and text: the frozen target for extend,
    # the joint space for connect.
    path = [TEXT_SPACE, bridge.card.target] if bridge.card.kind == "connect" else [TEXT_SPACE]
    images, prompts = graph.leg("image", path).project(f["test_renders"]), graph.leg("text", path).project(f["prompts"])
    inside = images @ prompts.T
    return {
        "route": repr(route),
        "point_cloud_to_text": top_k_accuracy(scores, f["test_labels"]),
        "image_text_zero_shot_inside": top_k_accuracy(inside, f["test_labels"])["top1"],
    }


def bench(data_dir: str | Path, out_dir: str | Path, *, config: dict | None = None, progress: bool = True) -> dict:
    config = {**DEFAULT_CONFIG, **(config or {})}
    spaces = {name: load_space(name) for name in (POINT_SPACE, TEXT_SPACE)}
    f = _extract(spaces, data_dir, FeatureStore(Path(out_dir) / "features"), progress)
    features = BridgeFeatures(f["renders_p"], f["renders_t"], f["clouds"], f["texts"])
    record: dict[str, Any] = {"benchmark": "modelnet10", "routes": {}, "train_seconds": {}}
    for kind in ("connect", "extend"):
        graph = SpaceGraph(spaces.values())
        start = time.perf_counter()
        bridge = graph.train_bridge(
            POINT_SPACE,
            TEXT_SPACE,
            overlap="image",
            features=features,
            config={**config, "kind": kind},
            show_progress_bar=progress,
        )
        record["train_seconds"][kind] = round(time.perf_counter() - start, 2)
        record["routes"][kind] = {**_evaluate(graph, bridge, f), "bridge_quality": bridge.card.score}
    native = f["test_renders"] @ f["prompts"].T
    record["image_text_zero_shot_native"] = top_k_accuracy(native, f["test_labels"])["top1"]
    record["linear_probe_ceiling"] = linear_probe_accuracy(
        f["clouds"], f["train_labels"], f["test_clouds"], f["test_labels"]
    )
    record["chance"] = {"top1": 0.1, "top5": 0.5}
    record.update(n_test=len(f["test_labels"]), n_classes=f["prompts"].shape[0], config=config)
    return record


def summary(record: dict[str, Any]) -> str:
    lines = [f"\n{record['n_test']} ModelNet10 test shapes, 3D -> text zero-shot through images\n"]
    lines.append(f"{'':26} {'top-1':>6} {'top-5':>6}   image-text zero-shot inside the route")
    for kind, route in record["routes"].items():
        acc = route["point_cloud_to_text"]
        lines.append(f"{kind:26} {acc['top1']:6.3f} {acc['top5']:6.3f}   {route['image_text_zero_shot_inside']:.3f}")
    lines.append(f"{'linear probe (supervised)':26} {record['linear_probe_ceiling']:6.3f}")
    lines.append(f"{'chance':26} {record['chance']['top1']:6.3f} {record['chance']['top5']:6.3f}")
    lines.append(f"\nimage-text zero-shot in the image-text space itself: {record['image_text_zero_shot_native']:.3f}")
    return "\n".join(lines)
