"""Sensitivity of the digits benchmark to the main C-MCR hyperparameters (tau, sigma, lambda).

Each row gives the bridge's own label-free score (item-level matching of held-out overlap text) next to the
test retrieval it leads to. The defaults are the method page's start values, not picked from this table.

    python benchmarks/sweep_digits.py --data ../shared/data --json runs/sweep-digits.json
"""

import argparse
import itertools
import json

from spacegraph import FeatureStore, load_space
from spacegraph._atomic import write_text_atomic
from spacegraph.bench import digits
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads

GRID = {"temperature": [0.02, 0.05, 0.1], "noise_std": [0.02, 0.05, 0.1], "intra_weight": [0.1, 1.0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/bench-digits")
    parser.add_argument("--json", default="runs/sweep-digits.json")
    args = parser.parse_args()
    data = digits.full_data(args.data)
    spaces = load_space(digits.AUDIO_SPACE), load_space(digits.IMAGE_SPACE)
    features = digits.extract(data, *spaces, FeatureStore(f"{args.out}/features"), progress=False)
    rows = []
    for values in itertools.product(*GRID.values()):
        overrides = dict(zip(GRID, values))
        fit = fit_heads(features.bridge_features(), CMCRConfig(**{**digits.DEFAULT_CONFIG, **overrides}), show_progress_bar=False)
        test = digits.score_heads(fit, features, data)["audio_to_image"]
        rows.append({**overrides, "val_score": fit.quality["score"], "test_R@1": test["R@1"], "test_mAP": test["mAP"]})
        print(json.dumps(rows[-1]))
    test_r1 = [row["test_R@1"] for row in rows]
    print(f"audio->image R@1 over the grid: min {min(test_r1):.3f}, max {max(test_r1):.3f}")
    write_text_atomic(args.json, json.dumps({"grid": GRID, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
