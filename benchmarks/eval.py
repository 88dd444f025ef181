"""``spacegraph eval``: one task of a route on a dataset read by a registered adapter (``spacegraph.datasets``),
written as CLIP_benchmark-shaped JSON: ``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``, ``language``,
plus the route and its bridges' cards.

Tasks: ``zeroshot`` (``route.classify``: acc1, acc5, mean_per_class_recall), ``retrieval`` (recall@k both ways, named
as CLIP_benchmark names them: ``image_retrieval_recall@k`` is text -> image, ``text_retrieval_recall@k`` image ->
text; "image" is the dataset's modality), ``localization`` (``route.localize``: ciou_0.5, auc) and
``counterfactual`` (``route.pair_scores``: ap, max_f1, accuracy at a threshold). Without ``--graph`` the offline
demo graph (the shipped digit spaces and their C-MCR bridge, trained once into ``--cache``) is evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacegraph import SpacegraphValueError
from spacegraph.cli import add_threads_option, check_writable, set_threads, write_json

if TYPE_CHECKING:  # imported where used: `spacegraph --help` loads this module and must not wait for torch
    import numpy as np
    import torch

TASKS = {
    "zeroshot": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
    "localization": "localization",
    "counterfactual": "counterfactual",
}
DEMO_CACHE = "runs/demo"


def add_eval(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("eval", help="evaluate a route on a dataset layout (CLIP_benchmark-shaped JSON)")
    run.add_argument("--dataset", required=True, help="a registered dataset (esc50, audiocaps, vggss, ...)")
    run.add_argument("--root", required=True, help="the dataset's root folder")
    run.add_argument("--task", required=True, choices=list(TASKS))
    run.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the dataset's adapter (fold=1, split=val, missing=skip, ...); repeatable",
    )
    run.add_argument("--graph", help="a graph folder saved by save_pretrained (default: the offline demo graph)")
    run.add_argument("--cache", default=DEMO_CACHE, help=f"the demo graph's cache folder (default {DEMO_CACHE})")
    run.add_argument("--source", help="the route's source: a modality or space:modality (default: by task)")
    run.add_argument("--target", help="the route's target: a modality or space:modality (default: by task)")
    run.add_argument("--output", help="write the JSON record here (default: print it)")
    run.add_argument("--templates", nargs="+", help='zeroshot prompt templates holding "{}" or "{c}" (default: "{}")')
    run.add_argument("--recall-k", type=_count, nargs="+", default=[1, 5, 10], help="retrieval k (default 1 5 10)")
    run.add_argument("--grid", type=_count, help="localization: sliding-window grid of spaces without dense features")
    run.add_argument("--window", type=float, default=0.5, help="localization: window side, share of the image")
    run.add_argument("--seed", type=int, default=0, help="counterfactual: seed of the mismatched pairs")
    run.add_argument("--batch-size", type=_count, default=64, help="items per model call (default 64)")
    add_threads_option(run)
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bars (default: when stderr is a terminal)"
    )
    run.set_defaults(run=run_eval)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def run_eval(args: argparse.Namespace) -> int:
    if args.output:
        check_writable(Path(args.output), "--output", folder=False)
    if args.graph is None:
        check_writable(Path(args.cache), "--cache", folder=True)
    set_threads(args.threads)
    import spacegraph as sg

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    dataset = sg.load_dataset(args.dataset, args.root, **dataset_options(args.option))
    if args.task not in dataset.tasks:
        raise SpacegraphValueError(
            f"dataset {args.dataset!r} offers the task(s) {', '.join(dataset.tasks)}, not {args.task!r}"
        )
    graph = demo_graph(Path(args.cache), progress) if args.graph is None else sg.SpaceGraph.from_pretrained(args.graph)
    source, target = route_ends(args, dataset)
    route = graph.connect(source, target)
    metrics, extra = RUNNERS[args.task](route, dataset, args, graph, progress)
    record = {
        "dataset": args.dataset,
        "model": model_name(route),
        "pretrained": args.graph or "demo",
        "task": TASKS[args.task],
        "metrics": metrics,
        "language": "en",
        "route": repr(route),
        "bridges": [bridge.card.model_dump(mode="json") for bridge in route.bridges],
        "n_items": len(_items(dataset)),
        "skipped": getattr(dataset, "skipped", 0),
        **extra,
    }
    if args.output:
        write_json(args.output, record)
        print(f"{args.task} on {args.dataset}: {_shown(metrics)}; wrote {args.output}")
    else:
        print(json.dumps(record, indent=2))
    return 0


def dataset_options(pairs: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` as keyword arguments; a value that reads as an integer is one."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.isidentifier():
            raise SpacegraphValueError(f"--option {pair!r}: give KEY=VALUE, e.g. fold=1")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return options


def _items(dataset: Any) -> list[Any]:
    return dataset.images if hasattr(dataset, "images") else dataset.items


def _shown(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.3f}" for key, value in metrics.items())


def route_ends(args: argparse.Namespace, dataset: Any) -> tuple[str, str]:
    """``--source`` / ``--target``, by default the dataset's modality and text (zeroshot, retrieval) or the query
    modality and image (localization, counterfactual)."""
    if args.task in ("localization", "counterfactual"):
        return args.source or dataset.query_modality, args.target or "image"
    return args.source or dataset.modality, args.target or "text"


def model_name(route: Any) -> str:
    """The route readably: each end's modality and the spaces its leg crosses."""
    return " | ".join(f"{leg.modality.value}: {' -> '.join(leg.path)}" for leg in (route.source, route.target))


# ---------------------------------------------------------------- the demo graph


def demo_graph(cache: Path, progress: bool) -> Any:
    """The shipped digit spaces joined by the demo's C-MCR bridge (``spacegraph demo``'s, trained into
    ``cache/bridge`` on the shipped samples when not there yet), with the samples' memories registered for the
    label-free estimates and threshold."""
    import spacegraph as sg

    from . import digits

    audio, image = sg.load_space(digits.AUDIO_SPACE), sg.load_space(digits.IMAGE_SPACE)
    store = sg.FeatureStore(cache / "features")
    graph = sg.SpaceGraph([audio, image], store=store)
    data = digits.shipped_data()
    if (cache / "bridge").is_dir():
        graph.add_bridge(sg.Bridge.load(cache / "bridge"))
    else:
        features = digits.extract(data, audio, image, store, progress)
        bridge = graph.train_bridge(
            digits.AUDIO_SPACE,
            digits.IMAGE_SPACE,
            overlap="text",
            features=features.bridge_features(),
            config=digits.DEFAULT_CONFIG,
            show_progress_bar=progress,
        )
        bridge.card = bridge.card.model_copy(update={"data_license": digits.DATA_LICENSE})
        bridge.save(cache / "bridge")
    graph.add_data("audio", "shipped-audio-memory", data.audio_memory)
    graph.add_data("image", "shipped-image-memory", data.image_memory)
    graph.add_data("text", "shipped-texts", data.texts)
    return graph


# ---------------------------------------------------------------- tasks


def _features(route: Any, end: str, items: list[Any], args: argparse.Namespace, progress: bool) -> torch.Tensor:
    """``items`` embedded by the space of ``end``'s leg (the route's methods take them as they are)."""
    leg = route.leg(end)
    return leg.space.encode(leg.modality, items, batch_size=args.batch_size, show_progress_bar=progress)


def zeroshot(route: Any, dataset: Any, args: argparse.Namespace, graph: Any, progress: bool) -> tuple[dict, dict]:
    role = route.role(args.source or dataset.modality)
    result = route.classify(
        _features(route, role, dataset.items, args, progress), dataset.class_names, args.templates, end=role
    )
    metrics = {
        "acc1": result.accuracy(dataset.labels, k=1),
        "acc5": result.accuracy(dataset.labels, k=5),
        "mean_per_class_recall": result.mean_per_class_recall(dataset.labels),
    }
    return metrics, {"templates": args.templates or ["{}"], "class_names": dataset.class_names}


def retrieval(route: Any, dataset: Any, args: argparse.Namespace, graph: Any, progress: bool) -> tuple[dict, dict]:
    import torch

    texts, owners = dataset.texts()
    source, target = route_ends(args, dataset)
    items = route.encode(source, dataset.items, batch_size=args.batch_size, show_progress_bar=progress)
    captions = route.encode(target, texts, batch_size=args.batch_size, show_progress_bar=progress)
    owner, rows = torch.from_numpy(owners), torch.arange(len(dataset.items))
    found_items = recall_at_k(captions, items, owner, rows, args.recall_k)
    found_texts = recall_at_k(items, captions, rows, owner, args.recall_k)
    metrics = {f"{dataset.modality}_retrieval_recall@{k}": value for k, value in found_items.items()}
    metrics |= {f"text_retrieval_recall@{k}": value for k, value in found_texts.items()}
    return metrics, {"n_texts": len(texts)}


def recall_at_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: list[int],
    chunk: int = 1024,
) -> dict[int, float]:
    """Share of queries with a gallery item of their own label among their top k by cosine (CLIP_benchmark's
    recall@k), in chunks of queries."""
    import torch

    hits = []
    for start in range(0, len(queries), chunk):
        ranked = (queries[start : start + chunk] @ gallery.T).topk(min(max(ks), len(gallery)), dim=1).indices
        hits.append(gallery_labels[ranked] == query_labels[start : start + chunk, None])
    found = torch.cat(hits)
    return {k: float(found[:, :k].any(dim=1).float().mean()) for k in ks}


def localization(route: Any, dataset: Any, args: argparse.Namespace, graph: Any, progress: bool) -> tuple[dict, dict]:
    from tqdm.auto import tqdm

    import spacegraph as sg

    source, _ = route_ends(args, dataset)
    queries = _features(route, source, dataset.queries, args, progress)
    heatmaps: list[torch.Tensor] = []
    batches = range(0, len(dataset.images), args.batch_size)
    for start in tqdm(batches, desc="localizing", unit="batch", disable=not progress):
        stop = start + args.batch_size
        heatmaps += route.localize(queries[start:stop], dataset.images[start:stop], grid=args.grid, window=args.window)
    found = sg.localization_metrics(heatmaps, dataset.boxes)
    return {"ciou_0.5": found["ciou_0.5"], "auc": found["auc"]}, {"grid": args.grid, "window": args.window}


def counterfactual(route: Any, dataset: Any, args: argparse.Namespace, graph: Any, progress: bool) -> tuple[dict, dict]:
    import torch

    import spacegraph as sg

    source, target = route_ends(args, dataset)
    query_rows, image_rows, matched = dataset.counterfactual_pairs(args.seed)
    queries = _features(route, source, dataset.queries, args, progress)
    images = _features(route, target, dataset.images, args, progress)
    scores = route.pair_scores(queries[torch.from_numpy(query_rows)], images[torch.from_numpy(image_rows)])
    threshold = decision_threshold(graph, route, scores, matched)
    found = sg.pair_metrics(scores, matched, threshold=threshold["value"])
    metrics = {key: found[key] for key in ("ap", "max_f1", "accuracy")}
    return metrics, {"threshold": threshold, "n_pairs": len(matched), "seed": args.seed}


def decision_threshold(graph: Any, route: Any, scores: torch.Tensor, matched: np.ndarray) -> dict[str, Any]:
    """The graph's label-free threshold of ``route`` (from its registered data) where it can be had; else the best
    threshold on these pairs' own labels, an optimistic one; which, and why, is recorded."""
    import spacegraph as sg

    try:
        return {"value": graph.pair_threshold(route), "source": "label-free (the graph's data)"}
    except SpacegraphValueError as err:
        value = sg.pair_threshold(scores, matched)
        return {"value": value, "source": "best on these pairs' labels", "label_free_unavailable": str(err)}


RUNNERS: dict[str, Callable[..., tuple[dict, dict]]] = {
    "zeroshot": zeroshot,
    "retrieval": retrieval,
    "localization": localization,
    "counterfactual": counterfactual,
}
