"""Matched or mismatched? Counterfactual recognition of spoken and written digits: ``spacegraph bench counterfactual``.

Each FSDD test clip is paired once with a test image of its own digit (matched) and once with one of another digit
(mismatched), so the pairs are balanced; ``route.pair_scores`` scores them. Settings: ``digits`` (the C-MCR route
audio -> MNIST images of ``bench digits``) and ``multihop`` (the connect chain audio -> sklearn 8x8 digits of
``bench multihop``, two hops). Reported as in Ex-VGGSS (Mo and Morgado 2022): AP and max-F1, plus the accuracy at the
label-free threshold (:meth:`SpaceGraph.pair_threshold` without a probe, from the bridges' own data) and, for
comparison, at a threshold calibrated on a labelled probe of memory items. Next to chance and a paired bound (the
same heads trained with InfoNCE on class-matched pairs, its threshold calibrated on the same probe), over 3 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch
from spacegraph_bridges.cmcr import FitResult

from spacegraph import BridgeFeatures, FeatureStore, Probe, Route, SpaceGraph, load_space, pair_metrics, pair_threshold

from . import digits, localization, multihop
from .quality import register_multihop_data

SEEDS = (0, 1, 2)
SETTINGS = ("digits", "multihop")
PROBE_SIZE = 500  # labelled memory items per side of the calibration probe: 250,000 pairs


@dataclass
class Pairs:
    """Row i of ``source`` and ``target`` is one pair (embeddings of each end's own space); ``matched`` its truth."""

    source: torch.Tensor
    target: torch.Tensor
    matched: np.ndarray


@dataclass
class Setting:
    """One setting's items: queries and candidates with labels (to build test pairs), labelled memory items of both
    ends (the probe, and the paired bound's training pairs), and the modalities of the route's two ends."""

    queries: torch.Tensor
    query_labels: np.ndarray
    candidates: torch.Tensor
    candidate_labels: np.ndarray
    memory_x: torch.Tensor
    memory_x_labels: np.ndarray
    memory_y: torch.Tensor
    memory_y_labels: np.ndarray
    ends: tuple[str, str]


def balanced_pairs(
    query_labels: np.ndarray, candidate_labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query twice: with a random candidate of its class and with one of another class. Returns the query rows,
    the candidate rows and whether each pair is matched."""
    query_labels, candidate_labels = np.asarray(query_labels), np.asarray(candidate_labels)
    same = [rng.choice(np.flatnonzero(candidate_labels == label)) for label in query_labels]
    other = [rng.choice(np.flatnonzero(candidate_labels != label)) for label in query_labels]
    rows = np.arange(len(query_labels))
    matched = np.r_[np.ones(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)]
    return np.r_[rows, rows], np.r_[same, other].astype(np.int64), matched


def chance_row(matched: np.ndarray) -> dict[str, float]:
    """Scores that know nothing: AP is the share of matched pairs, max-F1 that of calling every pair matched, and
    accuracy 0.5 (a coin, or either constant answer on balanced pairs)."""
    share = float(np.mean(matched))
    return {"ap": share, "max_f1": 2 * share / (1 + share), "accuracy": 0.5}


def route_row(graph: SpaceGraph, route: Route, pairs: Pairs, probe: Probe) -> dict[str, float]:
    """The route's AP and max-F1, its accuracy at the label-free threshold and at the probe-calibrated one."""
    scores = route.pair_scores(pairs.source, pairs.target)
    label_free, calibrated = graph.pair_threshold(route), graph.pair_threshold(route, probe)
    row = pair_metrics(scores, pairs.matched, threshold=label_free)
    at_probe = pair_metrics(scores, pairs.matched, threshold=calibrated)["accuracy"]
    return {**row, "threshold": label_free, "accuracy_probe": at_probe, "threshold_probe": calibrated}


def paired_row(fit: FitResult, pairs: Pairs, probe: Probe) -> dict[str, float]:
    """The paired bound: pairs scored through heads trained on class-matched pairs, thresholded on the probe."""
    with torch.inference_mode():
        head_x, head_y = fit.head_x.eval(), fit.head_y.eval()
        scores = (head_x(pairs.source) * head_y(pairs.target)).sum(dim=1)
        probe_scores = head_x(probe.source_inputs) @ head_y(probe.target_inputs).T
    same = np.asarray(probe.source_labels)[:, None] == np.asarray(probe.target_labels)[None, :]
    threshold = pair_threshold(probe_scores.flatten(), same.flatten())
    return {**pair_metrics(scores, pairs.matched, threshold=threshold), "threshold": threshold}


def memory_probe(setting: Setting, rng: np.random.Generator) -> Probe:
    """``PROBE_SIZE`` labelled memory items of each end, as embeddings of their own spaces."""
    x = rng.choice(len(setting.memory_x), min(PROBE_SIZE, len(setting.memory_x)), replace=False)
    y = rng.choice(len(setting.memory_y), min(PROBE_SIZE, len(setting.memory_y)), replace=False)
    return Probe(
        "memory", setting.memory_x[x], setting.memory_x_labels[x], setting.memory_y[y], setting.memory_y_labels[y],
        features=True,
    )  # fmt: skip


def setting_rows(graph: SpaceGraph, setting: Setting, seed: int, progress: bool) -> dict[str, dict[str, float]]:
    """Every method's row in one setting at one seed."""
    rng = np.random.default_rng(seed)
    query_rows, candidate_rows, matched = balanced_pairs(setting.query_labels, setting.candidate_labels, rng)
    pairs = Pairs(setting.queries[query_rows], setting.candidates[candidate_rows], matched)
    probe = memory_probe(setting, rng)
    rows_x, rows_y = digits.class_matched_rows(setting.memory_x_labels, setting.memory_y_labels, seed)
    fit = localization.paired_heads(BridgeFeatures(setting.memory_x[rows_x], setting.memory_y[rows_y]), seed, progress)
    return {
        "cmcr": route_row(graph, graph.connect(*setting.ends), pairs, probe),
        "chance": chance_row(matched),
        "paired": paired_row(fit, pairs, probe),
    }


@dataclass
class Setup:
    data: digits.DigitsData
    spaces: dict[str, Any]
    features: dict[str, torch.Tensor]
    store: FeatureStore
    sklearn_labels: np.ndarray


def load(data_dir: str | Path, out_dir: str | Path, progress: bool) -> Setup:
    """The digits data and every feature both settings read (``multihop._extract``'s, cached)."""
    from spacegraph_spaces.digits_lowres import load_sklearn_digits

    data = digits.full_data(data_dir)
    spaces = {name: load_space(name) for name in (digits.AUDIO_SPACE, digits.IMAGE_SPACE, multihop.LOWRES_SPACE)}
    store = FeatureStore(Path(out_dir) / "features")
    features = multihop._extract(data, spaces, store, progress)
    return Setup(data, spaces, features, store, np.asarray(load_sklearn_digits()[1]))


def digits_setting(setup: Setup) -> Setting:
    d, f = setup.data, setup.features
    return Setting(
        f["audio_queries"], d.audio_query_labels, f["mnist_test_i"], d.image_gallery_labels,
        f["audio_memory"], d.audio_memory_labels, f["images_i"], d.image_memory_labels, ("audio", "image"),
    )  # fmt: skip


def multihop_setting(setup: Setup) -> Setting:
    d, f = setup.data, setup.features
    return Setting(
        f["audio_queries"], d.audio_query_labels, f["sklearn"], setup.sklearn_labels,
        f["audio_memory"], d.audio_memory_labels, f["lowres_memory"], d.image_memory_labels, ("audio", "lowres_image"),
    )  # fmt: skip


def _graph(setup: Setup, name: str, seed: int, progress: bool) -> SpaceGraph:
    """The setting's graph (digits: one C-MCR bridge; multihop: the connect chain) with its bridges' data
    registered, so that the label-free threshold can be measured."""
    config = {**digits.DEFAULT_CONFIG, "seed": seed}
    if name == "digits":
        features = BridgeFeatures(*(setup.features[key] for key in ("texts_a", "texts_i", "audio_memory", "images_i")))
        graph = SpaceGraph([setup.spaces[digits.AUDIO_SPACE], setup.spaces[digits.IMAGE_SPACE]])
        graph.train_bridge(
            digits.AUDIO_SPACE, digits.IMAGE_SPACE, overlap="text", features=features, config=config,
            show_progress_bar=progress,
        )  # fmt: skip
        graph.store = setup.store
        for modality, data_name, inputs in _digits_data(setup.data):
            graph.add_data(modality, data_name, inputs)
        return graph
    graph = multihop._build("connect", setup.spaces, setup.features, config)[0]
    register_multihop_data(graph, setup.data, setup.store)
    return graph


def _digits_data(data: digits.DigitsData) -> list[tuple[str, str, Any]]:
    """The digits bridge's training data under the names ``multihop._extract`` cached it by."""
    return [
        ("text", f"{data.name}-texts", data.texts),
        ("audio", f"{data.name}-audio-memory", data.audio_memory),
        ("image", f"{data.name}-image-memory", data.image_memory),
    ]


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: mean(row[key] for row in rows) for key in rows[0]}


def bench(data_dir: str | Path, out_dir: str | Path, *, seeds=SEEDS, progress: bool = True) -> dict[str, Any]:
    setup = load(data_dir, out_dir, progress)
    settings = {"digits": digits_setting(setup), "multihop": multihop_setting(setup)}
    per_seed = [
        {
            name: setting_rows(_graph(setup, name, seed, progress), setting, seed, progress)
            for name, setting in settings.items()
        }
        for seed in seeds
    ]
    record: dict[str, Any] = {"benchmark": "counterfactual"}
    for name in SETTINGS:
        record[name] = {method: mean_rows([rows[name][method] for rows in per_seed]) for method in per_seed[0][name]}
    record.update(seeds=list(seeds), n_pairs=2 * len(setup.data.audio_queries), per_seed=per_seed)
    return record


def summary(record: dict[str, Any]) -> str:
    head = (
        f"\n{record['n_pairs']} spoken-digit pairs per setting, half matched (same digit), half not "
        f"(means over seeds {record['seeds']})"
    )
    lines = [head]
    for name in SETTINGS:
        lines.append(f"\n{name}\n{'':8} {'AP':>6} {'max-F1':>7} {'acc':>6} {'threshold':>10} | probe: {'acc':>6}")
        for method, m in record[name].items():
            threshold = f"{m['threshold']:10.3f}" if "threshold" in m else f"{'':10}"
            probe = f"{m['accuracy_probe']:6.3f}" if "accuracy_probe" in m else ""
            lines.append(
                f"{method:8} {m['ap']:6.3f} {m['max_f1']:7.3f} {m['accuracy']:6.3f} {threshold} | {'':7}{probe}"
            )
    lines.append(
        "\nacc: accuracy at the label-free threshold (cmcr: from the bridges' own data; paired: calibrated on the "
        "probe); probe: cmcr's accuracy at a threshold calibrated on labelled memory items"
    )
    return "\n".join(lines)
