"""Study of issue 17, point 2: which label-free estimate ranks bridges (misleading ones included) by true mAP?

Two steps:

* ``zoo``: train every variant of every dataset case ONCE and cache it under ``runs/quality-zoo/<case>/<variant>/``
  (``spacegraph_bench.quality_zoo``, the same bridges ``spacegraph bench quality --out runs`` trains and reads).
* ``score``: reload the zoo, score each bridge with today's estimate and every candidate of
  ``quality_candidates`` (beside this script), and report per-case Spearman (in-sample and leave-one-case-out for each design
  choice), whether every misleading variant is below ``default``; writes ``runs/quality-study.json``.

    python benchmarks/scripts/quality_study.py zoo --data ../shared/data --cases digits hard
    python benchmarks/scripts/quality_study.py score --cases hard --json runs/s-hard.json
    python benchmarks/scripts/quality_study.py score-extra --inputs runs/s-hard.json
    python benchmarks/scripts/quality_study.py analyse --inputs runs/s-*.json
    python benchmarks/scripts/quality_study.py why --cases hard digits_class_gap
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spacegraph_bench import quality as q
from spacegraph_bench import quality_zoo

from spacegraph import BridgeFeatures
from spacegraph._eval import ranking

ZOO = Path("runs/quality-zoo")
FEATURE_DIR = ZOO / "features"
MARGIN = 0.02  # true-mAP gap below which a misleading variant counts as tied with the default
MISLEADING = quality_zoo.MISLEADING
variant_features, load_heads = quality_zoo.variant_features, quality_zoo.load_heads


def build_case(name: str, data_dir: Path) -> q.BridgeCase:
    return quality_zoo.build_case(name, data_dir, FEATURE_DIR)


def zoo(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    for name in args.cases:
        case = build_case(name, Path(args.data))
        for variant in quality_zoo.case_variants(name):
            if not args.variants or variant in args.variants:
                meta = quality_zoo.ensure_bridge(case, variant, ZOO / name / variant)[2]
                print(f"{name}/{variant}: true {meta['true_mAP']:.3f} card {meta['card_estimate']:.3f}", flush=True)


# ---------------------------------------------------------------- scoring


def score(args: argparse.Namespace) -> None:
    import quality_candidates as qc

    torch.set_num_threads(args.threads)
    cases = sorted(p.name for p in ZOO.iterdir() if p.is_dir() and p.name != "features")
    cases = [c for c in cases if not args.cases or c in args.cases]
    record: dict[str, Any] = {"cases": {}}
    from spacegraph._quality import estimate_quality

    for name in cases:
        case = build_case(name, Path(args.data))
        own_features = {}
        rows = []
        for folder in sorted((ZOO / name).iterdir()):
            if not (folder / "meta.json").exists():
                continue
            head_x, head_y, meta = load_heads(folder)
            variant = meta["variant"]
            if variant not in own_features:
                own_features[variant] = variant_features(case, variant)
            scores = {"today": meta["card_estimate"], "held_out_R@1": meta["held_out_R@1"]}
            start = time.perf_counter()
            with torch.inference_mode():
                for protocol, features in (("own", own_features[variant]), ("common", case.features)):
                    for key, value in qc.grid_scores(head_x, head_y, features).items():
                        scores[f"{protocol}:{key}"] = value
                if args.today_common:
                    m = case.features
                    scores["common:today"] = estimate_quality(head_x, head_y, m.overlap_x, m.overlap_y, m.memory_x,
                                                              m.memory_y)["estimate"]  # fmt: skip
            seconds = time.perf_counter() - start
            rows.append({"variant": variant, "true_mAP": meta["true_mAP"], "scores": scores, "seconds": seconds})
            shown = {k: v for k, v in scores.items() if k in args.show}
            print(f"{name}/{variant}: true {meta['true_mAP']:.3f} today {scores['today']:.3f} "
                  + " ".join(f"{k}={v:.3f}" for k, v in shown.items()) + f" ({seconds:.1f} s)", flush=True)  # fmt: skip
        qc.clear_cache()
        record["cases"][name] = {"rows": rows}
    path = Path(args.json)
    path.write_text(json.dumps(record, indent=1))
    analyse(record)
    path.write_text(json.dumps(record, indent=1))


def _spearman(rows, key) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([r["scores"][key] for r in rows], [r["true_mAP"] for r in rows]).statistic)


def _below_default(rows, key, margin: float = 0.0) -> tuple[bool, list[str]]:
    """Is every misleading variant scored below default? With ``margin``: only those whose true mAP is more than
    ``margin`` below the default's (a variant tied with the default in truth need not rank below it)."""
    default_row = next(r for r in rows if r["variant"] == "default")
    default = default_row["scores"][key]
    above = [
        r["variant"]
        for r in rows
        if r["variant"] in MISLEADING
        and r["true_mAP"] < default_row["true_mAP"] - margin
        and r["scores"][key] >= default
    ]
    return not above, above


def analyse(record: dict[str, Any], show: int = 12) -> None:
    """In-sample Spearman per candidate and case; leave-one-case-out over each candidate family's settings."""
    import quality_candidates as qc

    cases = list(record["cases"])
    first = record["cases"][cases[0]]["rows"][0]["scores"]
    keys = [
        k
        for k in first
        if all(isinstance(r["scores"].get(k), float) for c in cases for r in record["cases"][c]["rows"])
    ]
    table = {
        key: {c: {"spearman": _spearman(record["cases"][c]["rows"], key),
                  "misleading_below_default": _below_default(record["cases"][c]["rows"], key)[0],
                  "misleading_at_or_above_default": _below_default(record["cases"][c]["rows"], key)[1],
                  "misleading_below_default_margin": _below_default(record["cases"][c]["rows"], key, MARGIN)[0]}
              for c in cases}
        for key in keys
    }  # fmt: skip
    record["in_sample"] = table
    fams: dict[str, list[str]] = {"today": ["today"]}
    for proto in ("own", "common"):
        stripped = [k[len(proto) + 1 :] for k in keys if k.startswith(proto + ":")]
        for fname, members in qc.families(stripped).items():
            fams[f"{proto}:{fname}"] = [f"{proto}:{m}" for m in members]
    held = {}
    for family, members in fams.items():
        held[family] = {}
        for out in cases:
            others = [c for c in cases if c != out]
            best = max(members, key=lambda k: np.mean([table[k][c]["spearman"] for c in others]))
            held[family][out] = {"chosen": best, "spearman": table[best][out]["spearman"],
                                 "misleading_below_default": table[best][out]["misleading_below_default"],
                                 "misleading_below_default_margin": table[best][out]["misleading_below_default_margin"]}  # fmt: skip
    record["held_out"] = held
    record["families"] = fams

    def cell(spearman: float, below: bool, margin: bool) -> str:
        return f"{spearman:+.2f} {'y' if below else 'n'}/{'y' if margin else 'n'}"

    width = 44
    head = " " * width + "".join(f"{c[:17]:>19}" for c in cases) + f"{'min':>7}{'mean':>7}"
    fixed = [
        k for k in ("today", "held_out_R@1", "own:overlap_alignment", "own:cycle_t0.02", "own:cycle_t0.1") if k in table
    ]
    ranked = sorted((k for k in keys if ":tp" in k), key=lambda k: -min(table[k][c]["spearman"] for c in cases))
    print(
        "\nIn-sample Spearman against true mAP (y/n: all misleading variants below default / all those truly worse by > 0.02)"
    )
    print(head)
    for key in fixed + ranked[:show]:
        values = [table[key][c]["spearman"] for c in cases]
        print(f"{key[-width:]:{width}}" + "".join(f"{cell(table[key][c]['spearman'], table[key][c]['misleading_below_default'], table[key][c]['misleading_below_default_margin']):>19}" for c in cases)
              + f"{min(values):+7.2f}{np.mean(values):+7.2f}")  # fmt: skip
    print("\nLeave-one-case-out: the family's setting chosen on the other cases, scored on the held-out one")
    print(head)
    for family, per_case in held.items():
        values = [v["spearman"] for v in per_case.values()]
        print(f"{family[-width:]:{width}}" + "".join(f"{cell(v['spearman'], v['misleading_below_default'], v['misleading_below_default_margin']):>19}" for v in per_case.values())
              + f"{min(values):+7.2f}{np.mean(values):+7.2f}")  # fmt: skip
        chosen = {v["chosen"] for v in per_case.values()}
        print(f"{'':{width}}  chosen: {', '.join(sorted(chosen))}")


def reanalyse(args: argparse.Namespace) -> None:
    path = Path(args.json)
    record = {"cases": {}}
    for part in args.inputs or [args.json]:  # score runs of disjoint cases (e.g. in parallel processes), merged
        record["cases"].update(json.loads(Path(part).read_text())["cases"])
    if args.cases:
        record["cases"] = {c: v for c, v in record["cases"].items() if c in args.cases}
    analyse(record, args.top)
    path.write_text(json.dumps(record, indent=1))


def why(args: argparse.Namespace) -> None:
    """What today's estimate measures on each bridge: its cross-modal pseudo mAP, the same with random scores
    (chance under the same pseudo labels), and the within-space pseudo mAP of each head (A -> A through head_x,
    C -> C through head_y; self excluded), next to the true mAP."""
    from spacegraph import _quality as sq

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}
    for name in args.cases:
        case = build_case(name, Path(args.data))
        labels_cache: dict[str, Any] = {}
        out[name] = []
        for folder in sorted((ZOO / name).iterdir()):
            if not (folder / "meta.json").exists():
                continue
            head_x, head_y, meta = load_heads(folder)
            features = variant_features(case, meta["variant"])
            key = "starve50" if meta["variant"] == "memory_50_rows" else meta["features"]
            if key not in labels_cache:
                g = torch.Generator().manual_seed(0)
                mx, my = sq.subsample(features.memory_x, 2000, g), sq.subsample(features.memory_y, 2000, g)
                labels_cache[key] = (mx, my, sq.PseudoLabels(features.overlap_x, features.overlap_y, mx, my))
            mx, my, labels = labels_cache[key]
            with torch.inference_mode():
                za, zc = head_x(mx), head_y(my)
                cross = sq.pseudo_map(za, zc, labels)
                g = torch.Generator().manual_seed(1)
                chance = sq.pseudo_map(torch.randn(za.shape, generator=g), torch.randn(zc.shape, generator=g), labels)
                levels = list(labels.silhouettes)
                weights = torch.tensor([labels.silhouettes[k] for k in levels])

                def within(z, side, labels=labels, levels=levels, weights=weights):
                    s = z @ z.T
                    s.fill_diagonal_(-1e4)
                    orders = (ranking(s), ranking(s.T))
                    prec = torch.stack(
                        [
                            sq._level_precisions(orders, labels.levels[k][side], labels.levels[k][side])[0]
                            for k in levels
                        ]
                    )
                    return float(sq._combine(prec, weights))

                intra_x, intra_y = within(za, 0), within(zc, 1)
                # native (no bridge) within-space pseudo mAP, for reference
            row = {"variant": meta["variant"], "true_mAP": meta["true_mAP"], "today": meta["card_estimate"],
                   "cross_pseudo_mAP": cross, "chance_pseudo_mAP": chance, "within_x": intra_x, "within_y": intra_y,
                   "best_k": labels.k, "silhouettes": {str(k): round(v, 3) for k, v in labels.silhouettes.items()}}  # fmt: skip
            out[name].append(row)
            print(f"{name}/{meta['variant']:22} true {row['true_mAP']:.3f} today {row['today']:.3f} chance "
                  f"{chance:.3f} within_x {intra_x:.3f} within_y {intra_y:.3f} best_k {labels.k}", flush=True)  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))


def score_extra(args: argparse.Namespace) -> None:
    """Add the cluster-pivot candidates to score JSONs already written by ``score`` (own and common features)."""
    import quality_candidates as qc

    torch.set_num_threads(args.threads)
    for part in args.inputs:
        record = json.loads(Path(part).read_text())
        for name, result in record["cases"].items():
            case = build_case(name, Path(args.data))
            own_features: dict[str, BridgeFeatures] = {}
            for row in result["rows"]:
                head_x, head_y, _ = load_heads(ZOO / name / row["variant"])
                if row["variant"] not in own_features:
                    own_features[row["variant"]] = variant_features(case, row["variant"])
                with torch.inference_mode():
                    for protocol, features in (("own", own_features[row["variant"]]), ("common", case.features)):
                        alignment = row["scores"][f"{protocol}:overlap_alignment"]
                        for key, value in qc.cluster_scores(head_x, head_y, features).items():
                            row["scores"][f"{protocol}:{key}"] = value
                            row["scores"][f"{protocol}:{key.replace('cl_', 'clA_')}"] = value * alignment
                print(name, row["variant"], round(row["scores"]["own:cl_k20_gain10"], 3), flush=True)
            qc.clear_cache()
        Path(part).write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    z = sub.add_parser("zoo")
    z.add_argument("--data", default="/work/shared/data")
    z.add_argument("--cases", nargs="+", default=list(quality_zoo.CASES))
    z.add_argument("--variants", nargs="*", help="only these variants (default: the case's set)")
    s = sub.add_parser("score")
    s.add_argument("--data", default="/work/shared/data")
    s.add_argument("--cases", nargs="*")
    s.add_argument("--json", default="runs/quality-study.json")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--show", nargs="*", default=[])
    s.add_argument("--today-common", action="store_true", help="also today's estimate on the case's clean features")
    r = sub.add_parser("analyse")
    r.add_argument("--json", default="runs/quality-study.json")
    r.add_argument("--cases", nargs="*")
    r.add_argument("--top", type=int, default=12)
    r.add_argument("--inputs", nargs="*", help="score JSONs to merge (default: --json itself)")
    w = sub.add_parser("why")
    w.add_argument("--data", default="/work/shared/data")
    w.add_argument("--cases", nargs="+", required=True)
    w.add_argument("--json", default="runs/quality-study-why.json")
    w.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("score-extra")
    e.add_argument("--data", default="/work/shared/data")
    e.add_argument("--inputs", nargs="+", required=True)
    e.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    steps = {"zoo": zoo, "score": score, "analyse": reanalyse, "why": why, "score-extra": score_extra}
    steps[args.step](args)


if __name__ == "__main__":
    main()
