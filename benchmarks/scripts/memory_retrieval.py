"""Peak memory and time of C-MCR memory retrieval as the memory grows.

Streaming retrieval keeps peak memory at about queries x chunk, whatever the memory size; the naive
``softmax(q @ M.T) @ M`` needs the full [queries, memory] logits. Each case runs in a fresh process and reports
the peak resident memory above what its inputs take. PyTorch's fused attention (``sdpa``) has a blocked flash
kernel on CPU too; the naive form is measured only where its logits fit.

    python benchmarks/scripts/memory_retrieval.py --json runs/memory-retrieval.json
"""

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from spacegraph_bridges.cmcr import memory_retrieve
torch.set_num_threads(2)
n, k, dim, method = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
g = torch.Generator().manual_seed(0)
queries, memory = torch.randn(n, dim, generator=g), torch.randn(k, dim, generator=g)
queries /= queries.norm(dim=1, keepdim=True)  # in place: no temporary copy raises the baseline
memory /= memory.norm(dim=1, keepdim=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if method == "naive":
    out = F.normalize(torch.softmax(queries @ memory.T / 0.01, dim=1) @ memory, dim=-1)
else:
    out = memory_retrieve(queries, memory, 0.01, chunk_size=8192, method=method)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n_queries": n, "memory_rows": k, "dim": dim, "method": method, "seconds": round(seconds, 3),
                  "peak_extra_MiB": round((peak - base) / 1024, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="runs/memory-retrieval.json")
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    rows = []
    for k in (16_384, 131_072, 1_048_576):
        for method in ("stream", "sdpa", "naive"):
            if method == "naive" and args.queries * k * 4 > 4 * 2**30:
                continue  # the logits alone would pass 4 GiB
            cmd = [sys.executable, "-c", CASE, str(args.queries), str(k), str(args.dim), method]
            rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
            print(json.dumps(rows[-1]))
    from spacegraph._atomic import write_text_atomic

    write_text_atomic(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
