"""Search over a large gallery: build time, recall@k against exact search, latency and peak memory per backend.

python benchmarks/scripts/search.py --n 1000000 --dim 512 --json runs/search.json

The gallery is synthetic, unit-norm rows. ``clustered`` (default): rows around random centres (about
``--per-cluster`` rows each, noise as large as the centre, so a row's cosine to its centre is about 0.7 and to
another row of its cluster about 0.5), queries drawn from the same mixture: a gallery with neighbourhoods, as
real embeddings have. ``uniform``: uniformly random unit rows and queries, the worst case (no neighbourhood
structure; every row is almost equally far). Exact search (the ``exact`` backend, itself measured) gives the
truth; each approximate backend is measured at several search efforts, its default marked. Peak memory is the
process's resident high-water mark during a backend's build and search, less its resident size before
(``/proc/self/clear_refs``; Linux only, else not reported). Threads: torch's (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from spacegraph._atomic import write_text_atomic
from spacegraph._index import APPROXIMATE, DEFAULTS, SearchIndex

GENERATE_CHUNK = 100_000
SINGLE_QUERIES = 50  # single-query latency: the mean over this many one-row searches
EFFORTS = {
    "faiss-hnsw": [16, 32, 64, 128, 256],
    "faiss-ivf": [4, 8, 16, 32, 64],
    "usearch": [16, 32, 64, 128, 256],
}


def unit(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=-1)


def clustered(n: int, dim: int, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    centres = unit(torch.randn(n_clusters, dim, generator=generator))
    chunks = []
    for start in range(0, n, GENERATE_CHUNK):
        size = min(GENERATE_CHUNK, n - start)
        picked = centres[torch.randint(0, n_clusters, (size,), generator=generator)]
        chunks.append(unit(picked + torch.randn(size, dim, generator=generator) / dim**0.5))
    return torch.cat(chunks)


def make_data(kind: str, n: int, n_queries: int, dim: int, per_cluster: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if kind == "uniform":
        return unit(torch.randn(n, dim, generator=generator)), unit(torch.randn(n_queries, dim, generator=generator))
    both = clustered(n + n_queries, dim, max(1, n // per_cluster), generator)
    return both[:n].contiguous(), both[n:].contiguous()


def memory_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> int | None:
    """Reset the resident high-water mark; the resident size now (kB), or None where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return memory_kb("VmRSS")


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
    return hits / truth.numel()


def timed_search(index: SearchIndex, queries: torch.Tensor, k: int, effort: int | None) -> dict[str, Any]:
    start = time.perf_counter()
    result = index.search(queries, k, effort=effort)
    batched = time.perf_counter() - start
    singles = queries[:SINGLE_QUERIES]
    start = time.perf_counter()
    for row in singles:
        index.search(row[None], k, effort=effort)
    single = (time.perf_counter() - start) / len(singles)
    return {
        "rows": result.rows,
        "batched_ms_per_query": 1e3 * batched / len(queries),
        "batched_queries_per_s": len(queries) / batched,
        "single_query_ms": 1e3 * single,
    }


def measure(
    backend: str,
    gallery: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    truth: torch.Tensor | None,
    efforts: list[int] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The backend's figures, and the rows its default search found (exact: the truth)."""
    before = reset_peak()
    start = time.perf_counter()
    index = SearchIndex.build(gallery, backend=backend)
    record: dict[str, Any] = {"backend": backend, "options": index.options, "build_s": time.perf_counter() - start}
    efforts = (efforts or EFFORTS[backend]) if backend in EFFORTS else [None]
    runs, default_rows = [], torch.empty(0)
    for effort in efforts:
        run = timed_search(index, queries, k, effort)
        rows = run.pop("rows")
        run["recall_at_k"] = 1.0 if truth is None else recall(rows, truth)
        run["effort"] = effort
        run["default"] = effort is None or effort == DEFAULTS[backend].get("effort")
        default_rows = rows if run["default"] else default_rows
        runs.append(run)
        print(
            f"  {backend:10} effort={effort!s:>4}  recall@{k}={run['recall_at_k']:.4f}  "
            f"single {run['single_query_ms']:8.3f} ms  batched {run['batched_ms_per_query']:8.4f} ms/query",
            flush=True,
        )
    peak = memory_kb("VmHWM")
    record["peak_memory_gb"] = None if before is None or peak is None else (peak - before) / 2**20
    record["runs"] = runs
    record["index_rows"] = len(index)
    del index
    print(f"  {backend:10} build {record['build_s']:.1f} s, peak memory {record['peak_memory_gb']} GB", flush=True)
    return record, default_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery rows")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--per-cluster", type=int, default=100, help="mean rows per cluster (clustered data)")
    parser.add_argument("--data", nargs="+", default=["clustered"], choices=["clustered", "uniform"])
    parser.add_argument("--backends", nargs="+", default=list(APPROXIMATE), choices=list(APPROXIMATE))
    parser.add_argument("--efforts", nargs="+", type=int, help="search efforts to measure (default: per backend)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "search",
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": {},
    }
    for kind in args.data:
        print(f"{kind}: {args.n} x {args.dim} gallery, {args.queries} queries, k={args.k}", flush=True)
        start = time.perf_counter()
        gallery, queries = make_data(kind, args.n, args.queries, args.dim, args.per_cluster)
        print(f"  data made in {time.perf_counter() - start:.1f} s", flush=True)
        exact, truth = measure("exact", gallery, queries, args.k, None)
        records = [exact]
        for backend in args.backends:
            records.append(measure(backend, gallery, queries, args.k, truth, args.efforts)[0])
            report["results"][kind] = records
            if args.json:
                write_text_atomic(args.json, json.dumps(report, indent=2))
        report["results"][kind] = records
        del gallery, queries
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
