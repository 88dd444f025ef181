"""The C-MCR memory softmax ``softmax(Q @ M.T / tau) @ M`` as fused attention against a plain chunked softmax.

One process times three things on the same inputs: a large matmul (the machine's measured matmul peak in this
dtype), ``memory_retrieve(method="sdpa")`` (PyTorch's fused attention with keys = values = memory) and the plain
form, queries in chunks with the full ``[chunk, memory]`` logits. It reports seconds, the share of the matmul peak
(the work is the two matmuls, ``4 * queries * memory * dim`` flops) and the memory beyond the inputs.

    python benchmarks/scripts/memory_softmax.py --device cuda                  # 65k x 1M x 512, bf16: the GPU target
    python benchmarks/scripts/memory_softmax.py --queries 4096 --memory 131072 --dtype float32   # a CPU-sized run

Target on an H100/H200: the fused form >= 50% of the bf16 matmul peak and < 4 GB beyond its inputs.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from spacegraph_bridges.cmcr import memory_retrieve

TEMPERATURE = 0.01


def plain_chunked(queries: torch.Tensor, memory: torch.Tensor, chunk: int) -> torch.Tensor:
    parts = [torch.softmax(q @ memory.T / TEMPERATURE, dim=1) @ memory for q in queries.split(chunk)]
    return F.normalize(torch.cat(parts), dim=-1)


class Meter:
    """Seconds, and on CUDA the peak allocated memory beyond what was allocated at the start."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def run(self, work) -> tuple[float, float | None]:
        """Seconds, and GiB beyond the inputs on CUDA (None on CPU: benchmarks/scripts/memory_retrieval.py measures
        each case in a fresh process)."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        work()
        if not self.cuda:
            return time.perf_counter() - start, None
        torch.cuda.synchronize()
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated() - base) / 2**30


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Flops per second of an 8192^2 x 8192 matmul in ``dtype``, best of five."""
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    b = torch.randn(8192, 8192, device=device, dtype=dtype)
    meter = Meter(device)
    a @ b
    return 2 * 8192**3 / min(meter.run(lambda: a @ b)[0] for _ in range(5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=65_536)
    parser.add_argument("--memory", type=int, default=1_048_576)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--chunk", type=int, default=8192, help="query chunk of the plain form")
    parser.add_argument("--json", default="runs/memory-softmax.json")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator(device=args.device).manual_seed(0)
    queries = F.normalize(torch.randn(args.queries, args.dim, generator=generator, device=args.device), dim=1).to(dtype)
    memory = F.normalize(torch.randn(args.memory, args.dim, generator=generator, device=args.device), dim=1).to(dtype)
    peak = matmul_peak(args.device, dtype)
    flops = 4 * args.queries * args.memory * args.dim
    meter, rows = Meter(args.device), {}
    cases = {
        "fused_sdpa": lambda: memory_retrieve(queries, memory, TEMPERATURE, method="sdpa"),
        "plain_chunked": lambda: plain_chunked(queries, memory, args.chunk),
    }
    if args.device == "cpu":
        cases["stream"] = lambda: memory_retrieve(queries, memory, TEMPERATURE, method="stream")
    for name, work in cases.items():
        work()  # warm-up (kernel selection, allocator)
        seconds, extra = meter.run(work)
        rows[name] = {
            "seconds": round(seconds, 3),
            "share_of_matmul_peak": round(flops / seconds / peak, 3),
            "extra_GiB": None if extra is None else round(extra, 2),
        }
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "dtype": args.dtype,
        "queries": args.queries,
        "memory": args.memory,
        "dim": args.dim,
        "matmul_peak_TFLOPs": round(peak / 1e12, 1),
        "cases": rows,
    }
    print(json.dumps(result, indent=2))
    from spacegraph._atomic import write_text_atomic

    write_text_atomic(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
