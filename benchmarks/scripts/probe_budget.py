"""The probe budget: how many labelled items per class rank each ``bench quality`` dataset's bridges as their
true mAP does. Reads the bridge zoo that ``spacegraph bench quality --out runs`` trained (runs/quality-zoo).

    python benchmarks/scripts/probe_budget.py --data ../shared/data [--json runs/probe-budget.json]
"""

import argparse
from pathlib import Path

import torch
from quality_study import FEATURE_DIR, ZOO, load_heads
from spacegraph_bench.probe_budget import labelled_set, probe_budget

from spacegraph.cli import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--json", default="runs/probe-budget.json")
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = {}
    for case in sorted(p.name for p in ZOO.iterdir() if p.is_dir() and p.name != "features"):
        folders = sorted(p for p in (ZOO / case).iterdir() if (p / "meta.json").exists())
        heads = [load_heads(folder)[:2] for folder in folders]
        record[case] = probe_budget(heads, labelled_set(case, Path(args.data), FEATURE_DIR), draws=args.draws)
        record[case]["bridges"] = len(heads)
        row = "  ".join(f"k={k}: {v['mean_spearman']:.3f} (lowest {v['lowest_spearman']:.3f})"
                        for k, v in record[case].items() if k != "bridges")  # fmt: skip
        print(f"{case:22} {len(heads):>2} bridges  {row}", flush=True)
    write_json(args.json, record)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
