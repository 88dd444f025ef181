"""Do route ensembles help? ``spacegraph bench ensembles``.

On the multi-hop data (spoken digits -> sklearn 8x8 digits across three spaces), one graph holds the connect
route and the extend route of each seed (and the mixed routes they make together); a second adds MiniLM
(``four_spaces``) and the extend route through it; a third holds connect and extend routes of about the same
quality (``multihop_similar``). Against the true audio <-> 8x8 mAP (class labels, both directions): the best
single route, the route the planner chooses, the ensembles of the top two and top three candidates, and what
``connect(..., ensemble="auto")`` returns (it combines only where the ensemble's own route estimate reads above
the chosen route's 90% interval).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from spacegraph import RouteEnsemble, SpaceGraph

from . import digits, four_spaces, multihop
from .quality import register_multihop_data

SEEDS = (0, 1, 2)
DIGIT_SPACES = (digits.AUDIO_SPACE, digits.IMAGE_SPACE, multihop.LOWRES_SPACE)
TOLERANCE = 0.01  # the target: auto, where it combines, within this of the best single route


def _graph_row(graph: SpaceGraph, truth, seed: int) -> dict[str, Any]:
    """The candidates of ``graph`` from audio to the 8x8 digits, their ensembles and auto's choice, against truth."""
    routes = graph.plan("audio", "lowres_image").routes
    singles = [{"route": repr(r), "estimate": r.expected_quality, "true_mAP": truth(r)} for r in routes]
    ensembles = {f"ensemble_{k}": graph.ensemble(routes[:k]) for k in (2, 3) if k <= len(routes)}
    auto = graph.connect("audio", "lowres_image", ensemble="auto")
    return {
        "seed": seed,
        "singles": singles,
        "best_single": max(single["true_mAP"] for single in singles),
        "chosen_single": singles[0]["true_mAP"],
        **{name: truth(combined) for name, combined in ensembles.items()},
        **{f"{name}_estimate": combined.expected_quality for name, combined in ensembles.items()},
        "auto": truth(auto),
        "auto_combined": isinstance(auto, RouteEnsemble),
        "auto_route": repr(auto),
    }


def _connect_and_extend(four: four_spaces.FourSpaces, seed: int, **change: Any) -> list:
    """The bridges of the connect chain and of the extend meeting (both cmcr) of one seed, with ``change`` to the
    config."""
    config = {**digits.DEFAULT_CONFIG, "seed": seed, **change}
    spaces = {name: four.spaces[name] for name in DIGIT_SPACES}
    return [
        bridge for kind in ("connect", "extend") for bridge in multihop._build(kind, spaces, four.features, config)[1]
    ]


def _graphs(four: four_spaces.FourSpaces, seed: int) -> dict[str, SpaceGraph]:
    """multihop: the three digit spaces with the connect and extend routes; four_spaces: the same and MiniLM, with
    the extend route through it (cmcr on every hop); multihop_similar: the connect and extend routes trained at
    InfoNCE temperature 2, where they are of about the same quality (0.890 and 0.886 at seed 0)."""
    bridges = _connect_and_extend(four, seed)
    through_minilm = [four_spaces.train_hop(four, hop, "cmcr", seed) for hop in ("audio_to_minilm", "minilm_to_image")]
    digit_spaces = [four.spaces[name] for name in DIGIT_SPACES]
    graphs = {
        "multihop": SpaceGraph(digit_spaces, bridges),
        "four_spaces": SpaceGraph(four.spaces.values(), bridges + through_minilm),
        "multihop_similar": SpaceGraph(digit_spaces, _connect_and_extend(four, seed, temperature=2.0)),
    }
    for graph in graphs.values():
        register_multihop_data(graph, four.data, four.store)
    return graphs


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's mean over seeds, how often auto combined, and its worst shortfall where it did."""
    keys = ["best_single", "chosen_single", "ensemble_2", "ensemble_3", "auto"]
    combined = [row for row in rows if row["auto_combined"]]
    shortfalls = [row["best_single"] - row["auto"] for row in combined]
    return {
        **{key: mean(row[key] for row in rows) for key in keys if all(key in row for row in rows)},
        "auto_combined_seeds": len(combined),
        "auto_worst_shortfall_when_combined": max(shortfalls) if shortfalls else None,
        "auto_within_tolerance": all(shortfall <= TOLERANCE for shortfall in shortfalls),
        "seeds": rows,
    }


def bench(data_dir: str | Path, out_dir: str | Path, *, progress: bool = True, seeds=SEEDS) -> dict[str, Any]:
    four = four_spaces.load(data_dir, Path(out_dir), progress)
    rows: dict[str, list[dict[str, Any]]] = {"multihop": [], "four_spaces": [], "multihop_similar": []}
    for seed in seeds:
        for name, graph in _graphs(four, seed).items():
            rows[name].append(_graph_row(graph, four.truth, seed))
    return {"benchmark": "ensembles", **{name: _summary(setting) for name, setting in rows.items()}}


def summary(record: dict[str, Any]) -> str:
    lines = ["\nroute ensembles against single routes: true audio <-> 8x8-digit mAP, mean over seeds"]
    for setting, result in record.items():
        if setting == "benchmark":
            continue
        lines.append(f"{setting}:")
        for key in ("best_single", "chosen_single", "ensemble_2", "ensemble_3", "auto"):
            if key in result:
                lines.append(f"  {key:14} {result[key]:.3f}")
        worst = result["auto_worst_shortfall_when_combined"]
        lines.append(
            f"  auto combined on {result['auto_combined_seeds']} of {len(result['seeds'])} seeds"
            + ("" if worst is None else f"; worst shortfall against the best single route {worst:+.3f}")
        )
    return "\n".join(lines)
