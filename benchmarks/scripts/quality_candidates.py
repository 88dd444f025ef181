"""Candidate label-free estimates of a bridge's cross-modal quality (issue 17 study; see
``benchmarks/scripts/quality_study.py``).

Every candidate reads the bridge only through ``za = project_x(A memory)`` and ``zc = project_y(C memory)`` and
compares their cross-modal scores ``S = za @ zc.T`` with a *bridge-free* relevance of C items to A items, read
through the overlap modality B that both spaces embed natively:

* ``meaning``: each memory item's meaning is its softmax (temperature ``tau``) over the overlap rows in its own
  space, ``p_a = softmax(a @ bx.T / tau)``, ``p_c = softmax(c @ by.T / tau)``; the relevance of c to a is the cosine
  of their overlap meanings in X's overlap tower, ``p_a @ bx`` vs ``p_c @ bx``, averaged with the same in Y's tower
  (``p_a @ by`` vs ``p_c @ by``): the two items are relevant when they sit near the same overlap texts;
* ``pivot``: the text-pivot baseline's score, ``cos(p_a @ by, c)`` in Y averaged with ``cos(a, p_c @ bx)`` in X.

Overlap rows: ``near1`` / ``near10`` keep only the overlap rows among the 1 / 10 nearest of some memory item (in its
own space), so an off-topic corpus does not blur the meanings; ``all`` keeps every row.

How well S ranks by the relevance, per query, both directions, averaged:

* ``gainK``: mean relevance of the bridge's top-K, normalised between a random ranking (0) and the ideal one (1);
* ``pearson``: the per-query Pearson correlation of S with the relevance.

``align``: the estimate multiplied by how far the two spaces agree on the overlap pairs themselves (mutual 10-NN
overlap of each overlap row in X and in Y, chance-corrected): misaligned overlap rows make every bridge on them
untrustworthy, which no comparison of heads with that same data can see.

``cycle_*``: cycle consistency, the soft A -> C -> A walk through the bridge (temperature t) against A's own
neighbours in X: how much more native-similar than random the items are that a returns to (same from C).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from spacegraph import BridgeFeatures

MAX_ITEMS = 2000
CHUNK = 1024


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _sub(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return x if len(x) <= n else x[torch.randperm(len(x), generator=generator)[:n]]


def memories(features: BridgeFeatures, max_items: int = MAX_ITEMS) -> tuple[torch.Tensor, torch.Tensor]:
    """The scored memory items: at most ``max_items`` of each, picked with a fixed seed (as today's estimate)."""
    generator = torch.Generator().manual_seed(0)
    return _sub(features.memory_x, max_items, generator), _sub(features.memory_y, max_items, generator)


def near_rows(mx: torch.Tensor, my: torch.Tensor, bx: torch.Tensor, by: torch.Tensor, k: int) -> torch.Tensor:
    """The overlap rows among the ``k`` nearest of some memory item, in that item's own space (chunked)."""
    picked = [
        (m[i : i + CHUNK] @ b.T).topk(min(k, len(b)), dim=1).indices.flatten()
        for m, b in ((mx, bx), (my, by))
        for i in range(0, len(m), CHUNK)
    ]
    return torch.unique(torch.cat(picked))


def _soft(m: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.cat([torch.softmax(m[i : i + CHUNK] @ b.T / tau, dim=1) for i in range(0, len(m), CHUNK)])


def relevance(
    mx: torch.Tensor, my: torch.Tensor, bx: torch.Tensor, by: torch.Tensor, *, kind: str, tau: float
) -> torch.Tensor:
    """``[len(mx), len(my)]`` bridge-free relevance of each C item to each A item (unit rows in)."""
    pa, pc = _soft(mx, bx, tau), _soft(my, by, tau)
    ax, ay, cx, cy = _unit(pa @ bx), _unit(pa @ by), _unit(pc @ bx), _unit(pc @ by)
    if kind == "meaning":
        return (ax @ cx.T + ay @ cy.T) / 2
    if kind == "pivot":
        return (ay @ my.T + mx @ cx.T) / 2
    raise ValueError(kind)


def overlap_alignment(bx: torch.Tensor, by: torch.Tensor, k: int = 10, rows: int = 2000) -> float:
    """Chance-corrected mutual k-NN agreement of the overlap pairs: for sampled rows, the share of their k nearest
    overlap rows in X that are also among their k nearest in Y. 1: the two spaces agree; 0: as if shuffled."""
    generator = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(bx), generator=generator)[:rows]
    bx, by = bx[idx], by[idx]
    k = min(k, len(idx) - 1)
    nx = (bx @ bx.T).fill_diagonal_(-2).topk(k, dim=1).indices
    ny = (by @ by.T).fill_diagonal_(-2).topk(k, dim=1).indices
    hits = (nx[:, :, None] == ny[:, None, :]).any(dim=2).float().mean()
    chance = k / (len(idx) - 1)
    return float(((hits - chance) / (1 - chance)).clamp(min=0))


def _gain(scores: torch.Tensor, rel: torch.Tensor, k: int) -> torch.Tensor:
    """Per query: mean relevance of the top-k by ``scores``, between random (0) and ideal (1)."""
    k = min(k, rel.shape[1])
    got = rel.gather(1, scores.topk(k, dim=1).indices).mean(dim=1)
    ideal = rel.topk(k, dim=1).values.mean(dim=1)
    base = rel.mean(dim=1)
    return (got - base) / (ideal - base).clamp(min=1e-9)


def _pearson(scores: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    s, r = scores - scores.mean(1, keepdim=True), rel - rel.mean(1, keepdim=True)
    return (s * r).sum(1) / (s.norm(dim=1) * r.norm(dim=1)).clamp(min=1e-12)


def agreement(scores: torch.Tensor, rel: torch.Tensor, metric: str) -> float:
    """How well bridge scores rank by relevance, both directions, averaged."""
    if metric.startswith("gain"):
        k = int(metric[4:])
        return float((_gain(scores, rel, k).mean() + _gain(scores.T, rel.T, k).mean()) / 2)
    return float((_pearson(scores, rel).mean() + _pearson(scores.T, rel.T).mean()) / 2)


def cycle(za: torch.Tensor, zc: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, t: float) -> float:
    """Soft A -> C -> A (and C -> A -> C) walk through the bridge against native similarity, random 0, self 1."""
    scores = za @ zc.T
    out = []
    for s, native in ((scores, mx @ mx.T), (scores.T, my @ my.T)):
        walk = torch.softmax(s / t, dim=1) @ torch.softmax(s.T / t, dim=1)  # [n, n]
        got = (walk * native).sum(1)
        base = native.mean(1)
        out.append(((got - base) / (1 - base).clamp(min=1e-9)).mean())
    return float(sum(out) / 2)


# ---------------------------------------------------------------- the study's grid, with bridge-free parts cached

RELS, TAUS, ROWS, METRICS = ("meaning", "pivot"), (0.01, 0.03, 0.1), ("near1", "near10", "all"), ("gain10", "gain50", "pearson")  # fmt: skip
_CACHE: dict[tuple, object] = {}


def _key(features: BridgeFeatures) -> tuple:
    return tuple(
        (t.data_ptr(), tuple(t.shape))
        for t in (features.overlap_x, features.overlap_y, features.memory_x, features.memory_y)
    )


def _k(k: int, n: int) -> int:
    """The top-k of a gallery of n: at most a fifth of it (so small memories keep a random-vs-ideal contrast)."""
    return max(1, min(k, n // 5))


def _rel_stats(rel: torch.Tensor) -> dict:
    """What the agreement metrics need of one relevance matrix, both directions (computed once per features)."""
    out = {}
    for d, r in (("f", rel), ("b", rel.T.contiguous())):
        base = r.mean(1)
        centred = r - base[:, None]
        out[d] = {"r": r, "base": base, "ideal": {k: r.topk(_k(k, r.shape[1]), dim=1).values.mean(1) for k in (10, 50)},
                  "centred": centred, "norm": centred.norm(dim=1)}  # fmt: skip
    return out


def _fast_agreement(bridge: dict, stats: dict, metric: str) -> float:
    values = []
    for d in ("f", "b"):
        st, br = stats[d], bridge[d]
        if metric.startswith("gain"):
            k = int(metric[4:])
            got = st["r"].gather(1, br["top"][:, : _k(k, st["r"].shape[1])]).mean(1)
            values.append(((got - st["base"]) / (st["ideal"][k] - st["base"]).clamp(min=1e-9)).mean())
        else:
            values.append(((br["centred"] * st["centred"]).sum(1) / (br["norm"] * st["norm"]).clamp(min=1e-12)).mean())
    return float(sum(values) / 2)


def _prepare_cached(features: BridgeFeatures) -> dict:
    key = _key(features)
    if key not in _CACHE:
        mx, my = (_unit(m) for m in memories(features))
        bx, by = _unit(features.overlap_x), _unit(features.overlap_y)
        rows = {
            "all": torch.arange(len(bx)),
            "near1": near_rows(mx, my, bx, by, 1),
            "near10": near_rows(mx, my, bx, by, 10),
        }
        stats = {
            (kind, tau, r): _rel_stats(relevance(mx, my, bx[rows[r]], by[rows[r]], kind=kind, tau=tau))
            for kind, tau, r in itertools.product(RELS, TAUS, ROWS)
        }
        _CACHE[key] = {"mx": mx, "my": my, "stats": stats, "align": overlap_alignment(bx, by), "raw": memories(features),
                       "n_rows": {r: len(v) for r, v in rows.items()}}  # fmt: skip
    return _CACHE[key]


def clear_cache() -> None:
    _CACHE.clear()


def grid_scores(project_x: Callable, project_y: Callable, features: BridgeFeatures) -> dict[str, float]:
    """Every candidate setting of the study for one bridge."""
    p = _prepare_cached(features)
    za, zc = project_x(p["raw"][0]), project_y(p["raw"][1])
    scores = za @ zc.T
    bridge = {}
    for d, s in (("f", scores), ("b", scores.T.contiguous())):
        centred = s - s.mean(1, keepdim=True)
        bridge[d] = {"top": s.topk(min(50, s.shape[1]), dim=1).indices, "centred": centred, "norm": centred.norm(dim=1)}
    out = {}
    for (kind, tau, r), stats in p["stats"].items():
        for metric in METRICS:
            value = _fast_agreement(bridge, stats, metric)
            out[f"tp_{kind}_t{tau}_{r}_{metric}"] = value
            out[f"tpA_{kind}_t{tau}_{r}_{metric}"] = value * p["align"]
    for t in (0.02, 0.1):
        out[f"cycle_t{t}"] = cycle(za, zc, p["mx"], p["my"], t)
    out["overlap_alignment"] = p["align"]
    return out


def families(keys: list[str]) -> dict[str, list[str]]:
    """Candidate families for leave-one-case-out: the whole grid of a family is searched on the other cases."""
    fam = {
        "textpivot(all settings)": [k for k in keys if k.startswith("tp_")],
        "textpivot+align(all settings)": [k for k in keys if k.startswith("tpA_")],
        "cycle(t)": [k for k in keys if k.startswith("cycle_")],
    }
    for kind in RELS:
        fam[f"tpA_{kind}(tau,rows,metric)"] = [k for k in keys if k.startswith(f"tpA_{kind}_")]
    for metric in METRICS:
        fam[f"tpA_*_{metric}(rel,tau,rows)"] = [k for k in keys if k.startswith("tpA_") and k.endswith(metric)]
    fam["cluster_pivot(k,metric)"] = [k for k in keys if k.startswith("cl_")]
    fam["cluster_pivot+align(k,metric)"] = [k for k in keys if k.startswith("clA_")]
    for r in ROWS:
        fam[f"tpA_*_{r}(rel,tau,metric)"] = [k for k in keys if k.startswith("tpA_") and f"_{r}_" in k]
    for tau in TAUS:
        fam[f"tpA_*_t{tau}(rel,rows,metric)"] = [k for k in keys if k.startswith("tpA_") and f"_t{tau}_" in k]
    return {name: members for name, members in fam.items() if members}


# ---------------------------------------------------------------- the hand-over implementation


def _meanings(
    m: torch.Tensor, own: torch.Tensor, towers: tuple[torch.Tensor, ...], tau: float
) -> tuple[torch.Tensor, ...]:
    """Each memory row's overlap meaning in each tower: ``normalize(softmax(m @ own.T / tau) @ tower)``, ``CHUNK``
    memory rows at a time (peak ``CHUNK x len(own)``)."""
    parts = []
    for i in range(0, len(m), CHUNK):
        weights = torch.softmax(m[i : i + CHUNK] @ own.T / tau, dim=1)
        parts.append([weights @ tower for tower in towers])
    return tuple(_unit(torch.cat(column)) for column in zip(*parts))


def text_pivot_agreement(
    project_x: Callable[[torch.Tensor], torch.Tensor],
    project_y: Callable[[torch.Tensor], torch.Tensor],
    features: BridgeFeatures,
    *,
    kind: str = "meaning",
    tau: float = 0.01,
    near_k: int = 1,
    metric: str = "gain10",
    align: bool = True,
    max_items: int = MAX_ITEMS,
) -> float:
    """Label-free cross-modal quality: do the bridge's cross-modal scores rank C items for each A item (and back) the
    way the overlap modality says they should? See the module docstring for ``kind`` / ``tau`` / ``near_k`` (0:
    every overlap row) / ``metric`` / ``align``. Memory bounded: ``max_items`` rows of each memory (fixed seed),
    overlap read ``CHUNK`` memory rows at a time; the largest matrices are ``max_items x max_items``."""
    raw_x, raw_y, mx, my, ax, ay, cx, cy = pivot_meanings(features, tau, near_k, max_items)
    rel = (ax @ cx.T + ay @ cy.T) / 2 if kind == "meaning" else (ay @ my.T + mx @ cx.T) / 2
    with torch.inference_mode():
        scores = project_x(raw_x) @ project_y(raw_y).T
    value = agreement_bounded(scores, rel, metric)
    return value * overlap_alignment(_unit(features.overlap_x), _unit(features.overlap_y)) if align else value


def pivot_meanings(features: BridgeFeatures, tau: float, near_k: int, max_items: int = MAX_ITEMS) -> tuple:
    """Both memories (raw and unit rows) and each memory item's overlap meaning in X's and in Y's text tower."""
    raw_x, raw_y = memories(features, max_items)
    mx, my = _unit(raw_x), _unit(raw_y)
    bx, by = _unit(features.overlap_x), _unit(features.overlap_y)
    if near_k:
        rows = near_rows(mx, my, bx, by, near_k)
        bx, by = bx[rows], by[rows]
    ax, ay = _meanings(mx, bx, (bx, by), tau)
    cy, cx = _meanings(my, by, (by, bx), tau)
    return raw_x, raw_y, mx, my, ax, ay, cx, cy


def agreement_bounded(scores: torch.Tensor, rel: torch.Tensor, metric: str) -> float:
    """:func:`agreement` with the study's top-k cap (at most a fifth of the gallery)."""
    values = []
    for s, r in ((scores, rel), (scores.T, rel.T)):
        if metric.startswith("gain"):
            k = _k(int(metric[4:]), r.shape[1])
            got = r.gather(1, s.topk(k, dim=1).indices).mean(1)
            base, ideal = r.mean(1), r.topk(k, dim=1).values.mean(1)
            values.append(((got - base) / (ideal - base).clamp(min=1e-9)).mean())
        else:
            values.append(_pearson(s, r).mean())
    return float(sum(values) / 2)


# ---------------------------------------------------------------- cluster pivot: meaning per native memory cluster


def cluster_relevance(features: BridgeFeatures, *, clusters: int, tau: float = 0.01, near_k: int = 10) -> torch.Tensor:
    """Relevance read per native cluster, not per item: each memory is clustered in its own space (spherical
    k-means), each cluster's overlap meaning is the mean of its members' meanings (so one item's wrong nearest text
    is outvoted by its cluster), and an (a, c) pair is as relevant as their clusters' meanings agree."""
    from spacegraph._quality import spherical_kmeans

    _, _, mx, my, ax, ay, cx, cy = pivot_meanings(features, tau, near_k)
    la = spherical_kmeans(mx, min(clusters, len(mx) // 2))
    lc = spherical_kmeans(my, min(clusters, len(my) // 2))

    def means(labels: torch.Tensor, *vectors: torch.Tensor) -> list[torch.Tensor]:
        k = int(labels.max()) + 1
        return [_unit(torch.zeros(k, v.shape[1]).index_add_(0, labels, v)) for v in vectors]

    kax, kay = means(la, ax, ay)
    kcx, kcy = means(lc, cx, cy)
    rel_clusters = (kax @ kcx.T + kay @ kcy.T) / 2
    return rel_clusters[la][:, lc]


def cluster_scores(project_x: Callable, project_y: Callable, features: BridgeFeatures) -> dict[str, float]:
    key = ("cluster", *_key(features))
    if key not in _CACHE:
        _CACHE[key] = {c: cluster_relevance(features, clusters=c) for c in (10, 20, 40)}
    raw_x, raw_y = memories(features)
    scores = project_x(raw_x) @ project_y(raw_y).T
    return {
        f"cl_k{c}_{metric}": agreement_bounded(scores, rel, metric)
        for c, rel in _CACHE[key].items()
        for metric in ("gain10", "gain50", "pearson")
    }
