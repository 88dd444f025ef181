"""Encode throughput (clouds/s) of the Point-BERT point-cloud space, with random weights, on this machine's CPU.

Rows: a tiny config on 1,024-point clouds, and the real ULIP-2 size (12 blocks x 384, 512 groups of 32, 8,192
points) on 8,192-point clouds (no resampling) and on 16,384-point clouds (farthest-point sampling down first).

    python benchmarks/scripts/throughput_pointbert.py --json runs/throughput-pointbert.json
"""

import argparse
import logging

import numpy as np
import torch
from spacegraph_spaces.pointbert import PointBertSpace
from throughput import measure, save

TINY = {"depth": 2, "trans_dim": 32, "num_heads": 2, "num_group": 16, "group_size": 8, "npoints": 256, "embed_dim": 16}


def sphere_clouds(n_clouds: int, n_points: int) -> list[np.ndarray]:
    """Points on the unit sphere, jittered: a stand-in for surface samples."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_clouds):
        xyz = rng.normal(size=(n_points, 3))
        out.append(xyz / np.linalg.norm(xyz, axis=1, keepdims=True) + 0.01 * rng.normal(size=(n_points, 3)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="runs/throughput-pointbert.json")
    parser.add_argument("--clouds", type=int, default=4, help="clouds per timed run of the real-size model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("spacegraph_spaces.pointbert").setLevel(logging.ERROR)  # random weights are the point here
    tiny, ulip2 = PointBertSpace(config=TINY), PointBertSpace()
    rows = [measure(tiny, "point_cloud", sphere_clouds(64, 1024), label="pointbert-tiny (1024 pts)", batch_size=32)]
    for points, note in ((8192, ""), (16384, ", FPS")):
        clouds, label = sphere_clouds(args.clouds, points), f"pointbert-ulip2 ({points} pts{note})"
        rows.append(measure(ulip2, "point_cloud", clouds, label=label, batch_size=args.clouds, repeats=2))
    save(rows, args.json)


if __name__ == "__main__":
    main()
