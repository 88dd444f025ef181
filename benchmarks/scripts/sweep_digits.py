"""Sensitivity of the digits benchmark to the C-MCR hyperparameters, one at a time around the defaults.

Each row is the mean over seeds of the bridge's own label-free score (item-level matching of held-out overlap
text) and of the test retrieval it leads to. The defaults are the method page's start values, not picked
from this table.

    python benchmarks/scripts/sweep_digits.py --data ../shared/data --json runs/sweep-digits.json
"""

import argparse
import json

import numpy as np
from spacegraph_bench import digits
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads

from spacegraph import FeatureStore, load_space
from spacegraph.plugin import write_text_atomic

AXES = {
    "temperature": [0.02, 0.05, 0.1],
    "noise_std": [0.0, 0.02, 0.05, 0.1, 0.2],
    "intra_weight": [0.0, 0.1, 1.0],
    "memory_temperature": [0.003, 0.01, 0.03, 0.1],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/bench-digits")
    parser.add_argument("--json", default="runs/sweep-digits.json")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    data = digits.full_data(args.data)
    spaces = load_space(digits.AUDIO_SPACE), load_space(digits.IMAGE_SPACE)
    features = digits.extract(data, *spaces, FeatureStore(f"{args.out}/features"), progress=False)
    rows = []
    for name, values in AXES.items():
        for value in values:
            runs = []
            for seed in range(args.seeds):
                config = CMCRConfig(**{**digits.DEFAULT_CONFIG, name: value, "seed": seed})
                fit = fit_heads(features.bridge_features(), config, show_progress_bar=False)
                test = digits.score_heads(fit, features, data)["audio_to_image"]
                runs.append((fit.quality["held_out_R@1"], test["R@1"], test["mAP"]))
            mean = np.mean(runs, axis=0)
            rows.append({"param": name, "value": value, "val_score": mean[0], "test_R@1": mean[1], "test_mAP": mean[2]})
            print(json.dumps(rows[-1]))
    write_text_atomic(args.json, json.dumps({"seeds": args.seeds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
