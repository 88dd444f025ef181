"""Which bridge method, and does the estimate pick it? ``spacegraph bench methods``.

``cmcr``, ``procrustes`` and ``text-pivot`` are trained on the same features of each dataset, for each seed, and
scored against the true cross-modal mAP (class labels, both directions). ``auto_pick`` is what
``train_missing(method="auto")`` keeps (:func:`pick_method`: cmcr unless another's label-free estimate lies above
cmcr's interval), from the estimates' and intervals' means over seeds (``per_seed_picks``: each seed's own);
``truly_best`` is the highest mean true mAP. On multihop each method trains both hops of the route audio -> 8x8
digits (cmcr its connect chain, the training-free methods an extend meeting in the image-text space), and the pick
is by the route-level estimate (:meth:`SpaceGraph.estimate`).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import torch

from spacegraph import BridgeFeatures, FeatureStore, SpaceGraph, get_bridge_method, load_space
from spacegraph._method import pick_method

from . import digits, modelnet10, multihop, quality_zoo
from .quality import _route_truth, register_multihop_data

METHODS = ("cmcr", "procrustes", "text-pivot")
SEEDS = (0, 1, 2)
# Each bridge dataset: the space read as x, the space read as y, and the overlap they share.
BRIDGE_DATASETS = {
    "digits": (digits.AUDIO_SPACE, digits.IMAGE_SPACE, "text"),
    "hard": (digits.AUDIO_SPACE, digits.IMAGE_SPACE, "text"),
    "modelnet10": (modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE, "image"),
}


def _config(method: str, base: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**base, "seed": seed} if method == "cmcr" else {"seed": seed}


def _bridge_rows(name: str, data_dir: Path, out: Path, seeds, progress: bool) -> dict[str, list[dict[str, float]]]:
    """Per method, per seed: the card's estimate and the true mAP of one bridge trained on the dataset's features."""
    case = quality_zoo.build_case(name, data_dir, out / "features", progress)
    x_name, y_name, overlap = BRIDGE_DATASETS[name]
    x_spec, y_spec = load_space(x_name).spec, load_space(y_name).spec
    rows: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for seed in seeds:
        for method in METHODS:
            bridge = get_bridge_method(method)().train(
                x_spec, y_spec, overlap, case.features, _config(method, case.config, seed), show_progress_bar=False
            )
            head_y = bridge.head(y_spec.name) if bridge.card.kind == "connect" else quality_zoo.Identity()
            truth = case.true_quality(bridge.head(x_spec.name), head_y)
            quality = bridge.card.quality
            interval = [quality["estimate_low"], quality["estimate_high"]]
            rows[method].append({"seed": seed, "estimate": quality["estimate"], "interval": interval, "mAP": truth})
    return rows


def _multihop_route(method: str, spaces: dict, f: dict, seed: int) -> SpaceGraph:
    """The graph of one method's route audio -> 8x8 digits: cmcr's connect chain, or the others' extend meeting."""
    if method == "cmcr":
        return multihop._build("connect", spaces, f, {**digits.DEFAULT_CONFIG, "seed": seed})[0]
    graph = SpaceGraph(spaces.values())
    hops = (
        (digits.AUDIO_SPACE, "text", ("texts_a", "texts_i", "audio_memory", "images_i")),
        (multihop.LOWRES_SPACE, "image", ("images_l", "images_i", "lowres_memory", "texts_i")),
    )
    for source, overlap, keys in hops:
        features = BridgeFeatures(*(f[key] for key in keys))
        graph.train_bridge(
            source, digits.IMAGE_SPACE, overlap=overlap, features=features, method=method,
            config={"seed": seed}, show_progress_bar=False,
        )  # fmt: skip
    return graph


def _multihop_rows(data_dir: Path, out: Path, seeds, progress: bool) -> dict[str, list[dict[str, float]]]:
    from spacegraph_spaces.digits_lowres import load_sklearn_digits

    data = digits.full_data(data_dir)
    spaces = {name: load_space(name) for name in (digits.AUDIO_SPACE, digits.IMAGE_SPACE, multihop.LOWRES_SPACE)}
    store = FeatureStore(out / "digits-features")
    f = multihop._extract(data, spaces, store, progress)
    _, sklearn_labels = load_sklearn_digits()
    rows: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for seed in seeds:
        for method in METHODS:
            graph = _multihop_route(method, spaces, f, seed)
            register_multihop_data(graph, data, store)
            route = graph.connect("audio", "lowres_image")
            truth = _route_truth(route, f, data, sklearn_labels)
            estimate = graph.estimate(route)
            interval = [estimate["estimate_low"], estimate["estimate_high"]]
            rows[method].append({"seed": seed, "estimate": estimate["estimate"], "interval": interval, "mAP": truth})
    return rows


def _dataset_result(rows: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Each method's means over seeds, the estimate's pick among them and the truly best."""
    result: dict[str, Any] = {
        method: {
            "mAP": mean(row["mAP"] for row in runs),
            "estimate": mean(row["estimate"] for row in runs),
            "seeds": runs,
        }
        for method, runs in rows.items()
    }
    intervals = {method: _mean_interval(runs) for method, runs in rows.items()}
    values = {method: result[method]["estimate"] for method in rows}
    result["auto_pick"] = pick_method(values, intervals=intervals)["chosen"]
    result["truly_best"] = max(rows, key=lambda method: result[method]["mAP"])
    seeds = range(len(next(iter(rows.values()))))
    result["per_seed_picks"] = [
        pick_method(
            {method: runs[i]["estimate"] for method, runs in rows.items()},
            intervals={method: tuple(runs[i]["interval"]) for method, runs in rows.items()},
        )["chosen"]
        for i in seeds
    ]
    return result


def _mean_interval(runs: list[dict[str, Any]]) -> tuple[float, float]:
    return mean(run["interval"][0] for run in runs), mean(run["interval"][1] for run in runs)


def bench(data_dir: str | Path, out_dir: str | Path, *, progress: bool = True, seeds=SEEDS) -> dict[str, Any]:
    data_dir, out = Path(data_dir), Path(out_dir)
    torch.set_num_threads(1)  # small heads: one thread is fastest, and steady on a shared machine
    record: dict[str, Any] = {"benchmark": "methods", "methods": list(METHODS), "seeds": list(seeds)}
    for name in BRIDGE_DATASETS:
        record[name] = _dataset_result(_bridge_rows(name, data_dir, out, seeds, progress))
    record["multihop"] = _dataset_result(_multihop_rows(data_dir, out, seeds, progress))
    return record


def summary(record: dict[str, Any]) -> str:
    lines = [f"\nbridge methods: true mAP (label-free estimate), mean over seeds {record['seeds']}"]
    lines.append(f"{'':12}" + "".join(f"{method:>22}" for method in METHODS) + "   auto pick / truly best")
    for name, result in record.items():
        if not isinstance(result, dict):
            continue
        cells = "".join(f"{result[m]['mAP']:>13.3f} ({result[m]['estimate']:.3f})" for m in METHODS)
        verdict = "right" if result["auto_pick"] == result["truly_best"] else "WRONG"
        lines.append(f"{name:12}{cells}   {result['auto_pick']} / {result['truly_best']} ({verdict})")
    return "\n".join(lines)
