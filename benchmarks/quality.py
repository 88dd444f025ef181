"""Does the label-free quality estimate track what users get? ``spacegraph bench quality``.

On eight datasets of different structure (``quality_zoo.CASES``), bridges of deliberately varied quality are
trained once and cached (ablations, under-training, bad temperatures, too much noise, extend against connect,
starved memories, and five misleading variants). Each is scored under every estimate setting and against its
true cross-modal mAP (class labels, both directions, mean); ``quality_estimates`` reports each dataset's Spearman
in sample and held out (the setting chosen on the other datasets). On the multi-hop data: routes of two bridges,
and whether the planner of a graph holding the connect and the extend routes picks the one with the higher true
mAP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from spacegraph import Bridge, BridgeFeatures, FeatureStore, Route, SpaceGraph, load_space, retrieval_metrics

from . import digits, hard, modelnet10, multihop

# Changes from each dataset's own config; each should move quality one way or the other.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_memory": {"use_memory": False},
    "no_noise": {"noise_std": 0.0},
    "noise_1.0": {"noise_std": 1.0},
    "steps_5": {"steps": 5},
    "steps_20": {"steps": 20},
    "memory_temperature_1": {"memory_temperature": 1.0},
    "temperature_2": {"temperature": 2.0},
    "extend": {"kind": "extend"},
    "memory_50_rows": {},  # degraded memories: 50 random rows of each
}
# Multi-hop: each config trains both hops of a connect route (3 heads) and of an extend route (2 heads).
ROUTE_VARIANTS = ("default", "no_noise", "noise_1.0", "steps_5", "steps_20", "temperature_2")
ROUTE_TOLERANCE = 0.15  # the target: every route's estimate within this of its true mAP


def _starve(features: BridgeFeatures, rows: int = 50) -> BridgeFeatures:
    generator = torch.Generator().manual_seed(0)
    keep_x = torch.randperm(len(features.memory_x), generator=generator)[:rows]
    keep_y = torch.randperm(len(features.memory_y), generator=generator)[:rows]
    return BridgeFeatures(features.overlap_x, features.overlap_y, features.memory_x[keep_x], features.memory_y[keep_y])


def _mean_map(metrics: dict[str, dict[str, float]]) -> float:
    return sum(direction["mAP"] for direction in metrics.values()) / len(metrics)


@dataclass
class BridgeCase:
    """One dataset: the features a bridge trains on, its base config, and the true quality of a pair of heads."""

    name: str
    features: BridgeFeatures
    config: dict[str, Any]
    true_quality: Callable[[torch.nn.Module, torch.nn.Module], float]


def _digits_case(data_dir: Path, out: Path, progress: bool) -> BridgeCase:
    data = digits.full_data(data_dir)
    spaces = load_space(digits.AUDIO_SPACE), load_space(digits.IMAGE_SPACE)
    f = digits.extract(data, *spaces, FeatureStore(out / "digits-features"), progress)

    def truth(head_x: torch.nn.Module, head_y: torch.nn.Module) -> float:
        return _mean_map(digits.score_heads(_Heads(head_x, head_y), f, data))

    return BridgeCase("digits", f.bridge_features(), digits.DEFAULT_CONFIG, truth)


def _hard_case(data_dir: Path, out: Path, progress: bool) -> BridgeCase:
    f = hard.load(data_dir, out / "hard", progress)
    return BridgeCase("hard", f.bridge_features, hard.DEFAULT_CONFIG, lambda x, y: _mean_map(hard.evaluate(x, y, f)))


def _modelnet10_case(data_dir: Path, out: Path, progress: bool) -> BridgeCase:
    spaces = {name: load_space(name) for name in (modelnet10.POINT_SPACE, modelnet10.TEXT_SPACE)}
    f = modelnet10._extract(spaces, data_dir, FeatureStore(out / "modelnet10-features"), progress)
    class_ids = torch.arange(f["prompts"].shape[0])

    def truth(head_x: torch.nn.Module, head_y: torch.nn.Module) -> float:
        """3D <-> text: test clouds retrieve their class prompt, and each prompt its class's clouds."""
        with torch.inference_mode():
            scores = head_x.eval()(f["test_clouds"]) @ head_y.eval()(f["prompts"]).T
        forward = retrieval_metrics(scores, f["test_labels"], class_ids)["mAP"]
        backward = retrieval_metrics(scores.T, class_ids, f["test_labels"])["mAP"]
        return (forward + backward) / 2

    features = BridgeFeatures(f["renders_p"], f["renders_t"], f["clouds"], f["texts"])
    return BridgeCase("modelnet10", features, modelnet10.DEFAULT_CONFIG, truth)


@dataclass
class _Heads:
    """The ``head_x`` / ``head_y`` pair that ``digits.score_heads`` reads from a fit."""

    head_x: torch.nn.Module
    head_y: torch.nn.Module


def rank_correlation(rows: list[dict[str, Any]], key: str = "estimate") -> float:
    return float(spearmanr([row[key] for row in rows], [row["true_mAP"] for row in rows]).statistic)


def _route_truth(route: Route, f: dict[str, torch.Tensor], data: digits.DigitsData, sklearn_labels) -> float:
    audio, lowres = route.project("audio", f["audio_queries"]), route.project("lowres_image", f["sklearn"])
    scores = audio @ lowres.T
    forward = retrieval_metrics(scores, data.audio_query_labels, sklearn_labels)["mAP"]
    backward = retrieval_metrics(scores.T, sklearn_labels, data.audio_query_labels)["mAP"]
    return (forward + backward) / 2


def register_multihop_data(graph: SpaceGraph, data: digits.DigitsData, store: FeatureStore) -> None:
    """The data the multi-hop bridges trained on, registered for route estimates under the names they were cached
    by (``multihop._extract``), so nothing is encoded twice."""
    from spacegraph_spaces.digits_lowres import downsample_8x8

    graph.store = store
    graph.add_data("text", f"{data.name}-texts", data.texts)
    graph.add_data("audio", f"{data.name}-audio-memory", data.audio_memory)
    graph.add_data("image", f"{data.name}-image-memory", data.image_memory)
    graph.add_data("lowres_image", f"{data.name}-mnist-8x8", downsample_8x8(data.image_memory))


def route_row(variant: str, graph: SpaceGraph, route: Route, truth: float, bridges: list[Bridge]) -> dict[str, Any]:
    """One row of the route table: the route's estimate, read as a mAP, and interval, its bridges' product and the
    truth."""
    estimate = graph.estimate(route)
    return {
        "variant": variant,
        "hops": route.hops,
        "estimate": estimate["estimate"],
        "expected_mAP": estimate["expected_mAP"],
        "interval": [estimate["estimate_low"], estimate["estimate_high"]],
        "product": route.bridge_product,
        "hop_estimates": [bridge.card.score for bridge in bridges],
        "true_mAP": truth,
    }


def route_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman of the route estimate and of the bridges' product with the true mAP, how far the estimate reads
    from it, and under ``expected_mAP`` how far the estimate read as a mAP does (the target's figure)."""
    summary = {"rows": rows, "n_routes": len(rows), **agreement(rows, "estimate")}
    summary["spearman_product"] = rank_correlation(rows, "product")
    summary["expected_mAP"] = agreement(rows, "expected_mAP")
    return summary


def agreement(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """How the rows' ``key`` agrees with their true mAP: Spearman, misses, and how many lie within the target."""
    errors = [abs(row[key] - row["true_mAP"]) for row in rows]
    return {
        "spearman": rank_correlation(rows, key),
        "max_abs_error": max(errors),
        "mean_abs_error": sum(errors) / len(errors),
        "mean_signed_error": sum(row[key] - row["true_mAP"] for row in rows) / len(rows),
        f"within_{ROUTE_TOLERANCE}": sum(error <= ROUTE_TOLERANCE for error in errors),
    }


def multihop_rows(data_dir: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Routes of 2 and 3 heads (extend and connect, several configs): the route-level estimate (and the product of
    its bridges' estimates) against the route's true audio <-> 8x8-digit mAP; and the planner's pick in a graph
    holding the default connect and extend routes together."""
    from spacegraph_spaces.digits_lowres import load_sklearn_digits

    data = digits.full_data(data_dir)
    names = (digits.AUDIO_SPACE, digits.IMAGE_SPACE, multihop.LOWRES_SPACE)
    spaces = {name: load_space(name) for name in names}
    store = FeatureStore(out / "digits-features")
    f = multihop._extract(data, spaces, store, progress)
    _, sklearn_labels = load_sklearn_digits()
    rows, default_bridges = [], []
    for variant in ROUTE_VARIANTS:
        config = {**multihop.digits.DEFAULT_CONFIG, **VARIANTS[variant]}
        for kind in ("connect", "extend"):
            graph, bridges, _ = multihop._build(kind, spaces, f, config)
            register_multihop_data(graph, data, store)
            route = graph.connect("audio", "lowres_image")
            rows.append(
                route_row(f"{kind}/{variant}", graph, route, _route_truth(route, f, data, sklearn_labels), bridges)
            )
            if variant == "default":
                default_bridges += bridges
    pick = _planner_pick(spaces, default_bridges, f, data, sklearn_labels, store)
    return {"rows": rows, "pick": pick}


def route_table(data_dir: Path, out: Path, progress: bool) -> dict[str, Any]:
    """The route table: the multi-hop graph's routes and the four-space graph's, together and each alone, and
    under ``held_out`` the shapes graph's (3D -> MiniLM text), first measured after the estimate's design was
    fixed."""
    from . import four_spaces, shapes_routes

    multihop_routes = multihop_rows(data_dir, out, progress)
    graphs = {
        "multihop": multihop_routes["rows"],
        "four_spaces": four_spaces.route_rows(four_spaces.load(data_dir, out, progress)),
    }
    every = [{**row, "graph": name} for name, rows in graphs.items() for row in rows]
    by_graph = {
        name: {key: value for key, value in route_summary(rows).items() if key != "rows"}
        for name, rows in graphs.items()
    }
    held_out = {"shapes": route_summary(shapes_routes.route_rows(shapes_routes.load(data_dir, out, progress)))}
    routes = {**route_summary(every), "by_graph": by_graph, "held_out": held_out}
    return {"routes": routes, "pick": multihop_routes["pick"]}


def _planner_pick(
    spaces: dict, bridges: list[Bridge], f: dict, data, sklearn_labels, store: FeatureStore
) -> dict[str, Any]:
    graph = SpaceGraph(spaces.values(), bridges)
    register_multihop_data(graph, data, store)
    plan = graph.plan("audio", "lowres_image")
    candidates = [
        {
            "route": repr(route),
            "expected": route.expected_quality,
            "product": route.bridge_product,
            "true_mAP": _route_truth(route, f, data, sklearn_labels),
        }
        for route in plan.routes
    ]
    best = max(candidates, key=lambda c: c["true_mAP"])
    return {
        "candidates": candidates,
        "chosen": candidates[0]["route"],
        "truly_best": best["route"],
        "picked_best": candidates[0]["route"] == best["route"],
        "explain": plan.explain(),
    }


def bench(data_dir: str | Path, out_dir: str | Path, *, progress: bool = True, only: str | None = None) -> dict:
    """Every case's bridges (trained once, cached under ``<out>/quality-zoo``) scored under every estimate
    setting; the shipped setting's in-sample Spearman and each case's held-out one; the multi-hop routes
    (``only="routes"``: those alone)."""
    from . import quality_estimates, quality_zoo

    data_dir, out = Path(data_dir), Path(out_dir)
    torch.set_num_threads(1)  # small heads: one thread is fastest, and steady on a shared machine
    zoo = out / "quality-zoo"
    record: dict[str, Any] = {"benchmark": "quality", "variants": quality_zoo.VARIANTS, "datasets": {}}
    for name in () if only == "routes" else quality_zoo.CASES:
        case = quality_zoo.build_case(name, data_dir, zoo / "features", progress)
        record["datasets"][name] = {"rows": quality_estimates.case_rows(case, zoo / name, progress)}
    if record["datasets"]:
        record.update(quality_estimates.analyse(record["datasets"]))
    routes = route_table(data_dir, out, progress)
    record["routes"] = routes["routes"]
    record["multihop_pick"] = routes["pick"]
    return record


def summary(record: dict[str, Any]) -> str:
    from .quality_estimates import table

    lines = ["\nlabel-free estimate against true cross-modal mAP\n"]
    for name, result in record["datasets"].items():
        lines.append(f"{name}:")
        for row in result["rows"]:
            mark = " (misleading)" if row["misleading"] else ""
            lines.append(
                f"  {row['variant'] + mark:34} estimate {row['estimate']:.3f}   true mAP {row['true_mAP']:.3f}"
            )
    if record["datasets"]:
        lines += ["", *table(record)]
    lines += route_lines(record["routes"])
    pick = record["multihop_pick"]
    verdict = "the truly best" if pick["picked_best"] else f"not the truly best ({pick['truly_best']})"
    lines.append(f"multihop planner picks {pick['chosen']}: {verdict}\n{pick['explain']}")
    return "\n".join(lines)


def _route_line(label: str, row: dict[str, Any]) -> str:
    return (
        f"  {label:80} {row['hops']} heads  route {row['estimate']:.3f} (as mAP {row['expected_mAP']:.3f})"
        f"   product {row['product']:.3f}   true {row['true_mAP']:.3f}"
    )


def route_lines(routes: dict[str, Any]) -> list[str]:
    lines = ["\nroutes audio -> 8x8 digits: route estimate (read as a mAP), product of its bridges, true mAP"]
    lines += [_route_line(f"{row['graph']}: {row['variant']}", row) for row in routes["rows"]]
    held_out = routes.get("held_out", {})
    for name, result in held_out.items():
        lines.append(f"held out, {name}: 3D -> MiniLM text")
        lines += [_route_line(row["variant"], row) for row in result["rows"]]
    for name, result in [*routes["by_graph"].items(), ("all", routes), *held_out.items()]:
        lines.append(
            f"{name}: Spearman route estimate {result['spearman']:.3f}, product {result['spearman_product']:.3f}; "
            + _fit_line(result, result["n_routes"])
        )
        lines.append("  read as a mAP: " + _fit_line(result["expected_mAP"], result["n_routes"]))
    return lines


def _fit_line(fit: dict[str, Any], n_routes: int) -> str:
    return (
        f"largest miss {fit['max_abs_error']:.3f}, mean signed error {fit['mean_signed_error']:+.3f}, "
        f"{fit[f'within_{ROUTE_TOLERANCE}']} of {n_routes} within {ROUTE_TOLERANCE}"
    )
