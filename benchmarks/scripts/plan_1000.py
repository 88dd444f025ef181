"""Planning time on a graph of 1,000 spaces and ~1,500 bridges (target: under 10 ms per plan).

Spaces get two modalities each from a pool; bridges (half connect, half extend) join random pairs that share a
modality, each with a random measured quality. Only planning is timed: nothing is encoded.

    python benchmarks/scripts/plan_1000.py --json runs/plan-1000.json
"""

import argparse
import json
import random
import statistics
import time

import spacegraph as sg
from spacegraph.plugin import SpaceRef, write_text_atomic

HEAD = sg.HeadSpec(arch="mlp1", in_dim=4, hidden_dim=4, out_dim=4)


class SpecOnlySpace(sg.Space):
    """A node with a spec and no encoder: enough to plan over."""

    def __init__(self, name: str, modalities: tuple[sg.Modality, ...]) -> None:
        super().__init__()
        self.spec = sg.SpaceSpec(name=name, modalities=modalities, dim=4, fingerprint=f"fp-{name}")

    def _encode_batch(self, modality, batch):
        raise RuntimeError("planning benchmark: nothing is encoded")


def random_bridge(x: sg.Space, y: sg.Space, kind: str, quality: float, name: str) -> sg.Bridge:
    card = sg.BridgeCard(
        library_version=sg.__version__,
        name=name,
        method="random",
        kind=kind,
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        overlap=next(m for m in x.modalities if m in y.modalities),
        heads={x.name: HEAD, **({y.name: HEAD} if kind == "connect" else {})},
        quality={"score": quality},
    )
    return sg.Bridge(card)


def build(n_spaces: int, n_bridges: int, rng: random.Random) -> sg.SpaceGraph:
    pool = list(sg.Modality)
    spaces = [SpecOnlySpace(f"s{i}", tuple(rng.sample(pool, 2))) for i in range(n_spaces)]
    graph = sg.SpaceGraph(spaces)
    for i in range(n_bridges):
        x = rng.choice(spaces)
        sharing = [y for y in spaces if y is not x and set(x.modalities) & set(y.modalities)]
        kind = "connect" if i % 2 else "extend"
        graph.add_bridge(random_bridge(x, rng.choice(sharing), kind, rng.uniform(0.2, 0.95), f"b{i}"))
    return graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spaces", type=int, default=1000)
    parser.add_argument("--bridges", type=int, default=1500)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--json", default="runs/plan-1000.json")
    args = parser.parse_args()
    rng = random.Random(0)
    graph = build(args.spaces, args.bridges, rng)
    pairs = [tuple(rng.sample(list(sg.Modality), 2)) for _ in range(args.queries)]
    graph.plan(*pairs[0])  # warm-up
    ms = []
    for a, b in pairs:
        start = time.perf_counter()
        graph.plan(a, b)
        ms.append((time.perf_counter() - start) * 1000)
    record = {
        "spaces": args.spaces,
        "bridges": args.bridges,
        "nodes": len(graph.spaces) + len(graph.joint_spaces),
        "queries": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "max_ms": round(max(ms), 3),
    }
    print(json.dumps(record))
    write_text_atomic(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
