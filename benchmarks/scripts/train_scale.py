"""C-MCR training at the paper's scale on random unit features: time and peak memory beyond the inputs.

Each case runs in a fresh process: it makes the overlap and memory features in place, records the resident
memory, trains (validation and the label-free estimate included) and reports the peak resident memory above
that baseline. The issue's target: 1M overlap rows x 100k memory rows, d=512, under 8 GB beyond the inputs.

    python benchmarks/scripts/train_scale.py --json runs/train-scale.json            # 1M x 100k, the paper's pairs
    python benchmarks/scripts/train_scale.py --memory 2000 --source overlap+memory  # memory-seeded pairs too

The paper's pairs retrieve from the memory per batch (cost ~ steps x batch x memory); memory-seeded pairs are
precomputed once (cost ~ memory x overlap), so the second line uses a smaller memory on two CPU cores.
"""

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import torch
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads
import spacegraph as sg
torch.set_num_threads(int(sys.argv[6]))
overlap, memory, dim, steps, source = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
device = sys.argv[7]

def unit(n, seed):
    rows = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    rows /= rows.norm(dim=1, keepdim=True)  # in place: no temporary copy raises the baseline
    return rows

features = sg.BridgeFeatures(unit(overlap, 0), unit(overlap, 1), unit(memory, 2), unit(memory, 3))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
config = CMCRConfig(steps=steps, batch_size=4096, pseudo_source=source, val_fraction=0.1, device=device)
start = time.perf_counter()
fit = fit_heads(features, config, show_progress_bar=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "overlap_rows": overlap, "memory_rows": memory, "dim": dim, "steps": steps, "batch_size": 4096,
    "pseudo_source": source, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
    "inputs_GiB": round(4 * dim * 2 * (overlap + memory) / 2**30, 2),
    "peak_beyond_inputs_GiB": round((peak - base) / 2**20, 2), "device": device,
    "cuda_peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    "quality": {key: round(value, 4) for key, value in fit.quality.items()},
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlap", type=int, default=1_000_000)
    parser.add_argument("--memory", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--source", default="overlap", choices=["overlap", "overlap+memory"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="runs/train-scale.json")
    args = parser.parse_args()
    case = [args.overlap, args.memory, args.dim, args.steps, args.source, args.threads, args.device]
    done = subprocess.run([sys.executable, "-c", CASE, *map(str, case)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the training case failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    print(json.dumps(result, indent=2))
    from spacegraph._atomic import write_text_atomic

    write_text_atomic(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
