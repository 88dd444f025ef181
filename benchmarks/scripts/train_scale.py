"""C-MCR training at scale with the defaults (validation and the label-free estimate on) on random unit features:
seconds per stage and peak memory beyond the inputs, for both ``pseudo_source`` values.

Each case runs in a fresh process: it makes the overlap and memory features in place, records the resident
memory, runs ``fit_heads`` and reports its stages (``FitResult.stage_seconds``: pseudo pairs, steps and the
memory retrievals within them, held-out matching, estimate) and the peak resident memory above that baseline.
The targets (2 cores): the default (``overlap+memory``) within 2x the paper pairs' (``overlap``) time, under 10
minutes at 1M overlap rows, and peak memory under 8 GB beyond the inputs.

    python benchmarks/scripts/train_scale.py --json runs/train-scale.json        # 100k and 1M x 20k, both sources
    python benchmarks/scripts/train_scale.py --overlap 1000000 --memory 100000 --sources overlap  # the paper's size
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
overlap, memory, dim, steps, source, threads, device = sys.argv[1:8]
overlap, memory, dim, steps = int(overlap), int(memory), int(dim), int(steps)
torch.set_num_threads(int(threads))

def unit(n, seed):
    rows = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    rows /= rows.norm(dim=1, keepdim=True)  # in place: no temporary copy raises the baseline
    return rows

features = sg.BridgeFeatures(unit(overlap, 0), unit(overlap, 1), unit(memory, 2), unit(memory, 3))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
config = CMCRConfig(steps=steps, batch_size=4096, pseudo_source=source, device=device)
start = time.perf_counter()
fit = fit_heads(features, config, show_progress_bar=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "overlap_rows": overlap, "memory_rows": memory, "dim": dim, "steps": steps, "batch_size": 4096,
    "pseudo_source": source, "threads": torch.get_num_threads(), "device": device, "seconds": round(seconds, 1),
    "stage_seconds": {stage: round(value, 1) for stage, value in fit.stage_seconds.items()},
    "inputs_GiB": round(4 * dim * 2 * (overlap + memory) / 2**30, 2),
    "peak_beyond_inputs_GiB": round((peak - base) / 2**20, 2),
    "cuda_peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    "sampled": {key: fit.quality[key] for key in ("seed_keys", "n_val", "n_held_out", "estimate_overlap_rows")
                if key in fit.quality},
}))
"""
SOURCES = ("overlap", "overlap+memory")


def run_case(overlap: int, source: str, args: argparse.Namespace) -> dict:
    case = [overlap, args.memory, args.dim, args.steps, source, args.threads, args.device]
    done = subprocess.run([sys.executable, "-c", CASE, *map(str, case)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the training case {overlap} x {args.memory} ({source}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    stages = ", ".join(f"{stage} {value} s" for stage, value in result["stage_seconds"].items())
    print(f"{overlap:>9} x {args.memory} {source:<15} {result['seconds']:>7.1f} s ({stages}); "
          f"peak {result['peak_beyond_inputs_GiB']} GiB beyond inputs", flush=True)  # fmt: skip
    return result


def targets(cases: list[dict]) -> dict:
    """Per overlap size: the default's time over the paper pairs', and whether the issue's targets hold."""
    by_size: dict = {}
    for case in cases:
        by_size.setdefault(case["overlap_rows"], {})[case["pseudo_source"]] = case
    verdicts = {}
    for size, pair in sorted(by_size.items()):
        if set(pair) != set(SOURCES):
            continue
        default, paper = pair["overlap+memory"], pair["overlap"]
        ratio = default["seconds"] / max(paper["seconds"], 1e-9)
        verdicts[str(size)] = {
            "default_over_paper_time": round(ratio, 2),
            "within_2x": ratio <= 2,
            "under_10_minutes": default["seconds"] < 600,
            "peak_under_8_GB": max(default["peak_beyond_inputs_GiB"], paper["peak_beyond_inputs_GiB"]) < 8e9 / 2**30,
        }
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlap", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--memory", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="runs/train-scale.json")
    args = parser.parse_args()
    cases = [run_case(overlap, source, args) for overlap in args.overlap for source in args.sources]
    record = {"cases": cases, "targets": targets(cases)}
    print(json.dumps(record["targets"], indent=2))
    from spacegraph._atomic import write_text_atomic

    write_text_atomic(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
