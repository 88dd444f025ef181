"""Every estimate setting on every case's bridges, and the out-of-sample discipline that picks among them.

Each bridge is scored as its card would be (on the features it trained on) under each of
``spacegraph._quality.ESTIMATE_SETTINGS``. Per case: the shipped setting's Spearman against the true mAP (in
sample: the shipped setting was chosen looking at every case), and the held-out Spearman, that of the setting with
the best mean Spearman on the *other* cases (leave-one-dataset-out). A case passes when its held-out Spearman is
at least 0.7 and the held-out setting scores below the default every misleading bridge that is truly worse (true
mAP more than ``TIE`` below the default's; one the truth puts level with the default need not rank below it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from spacegraph._quality import (
    DEFAULT_ESTIMATE,
    ESTIMATE_SETTINGS,
    EXPECTED_MAP,
    EstimateData,
    EstimateSettings,
    ExpectedMap,
    gap_adjusted,
)

from . import quality_zoo
from .quality import ROUTE_TOLERANCE, BridgeCase, agreement

SHIPPED = DEFAULT_ESTIMATE.name
TARGET = 0.7
TIE = 0.02  # true-mAP gap within which a misleading bridge counts as level with the default


def _estimates(case: BridgeCase, variant: str, heads: tuple, cache: dict) -> dict[str, float]:
    """The variant's estimate under every setting: one pseudo-label mAP per labels and balance (on the features
    the variant trained on; labels shared across balances), its alignment factor applied at every power."""
    features_key = _features_key(variant)
    found: dict[str, float] = {}
    for (labels, balance), group in _groups().items():
        if (features_key, labels) not in cache:
            f = quality_zoo.variant_features(case, variant)
            cache[features_key, labels] = EstimateData(
                f.overlap_x, f.overlap_y, f.memory_x, f.memory_y, settings=group[0]
            )
        raw = cache[features_key, labels].rescored(EstimateSettings(balance, labels, 0.0)).score(*heads)
        for settings in group:
            found[settings.name] = gap_adjusted(
                raw["estimate_pseudo_map"], raw["estimate_alignment"], settings.gap_power
            )
    return found


def _features_key(variant: str) -> str:
    """Which features a variant trained on: its own (starved or misaligned) or the case's."""
    return variant if variant in ("memory_50_rows", "overlap_misaligned") else "case"


def _groups() -> dict[tuple[str, str], list[EstimateSettings]]:
    groups: dict[tuple[str, str], list[EstimateSettings]] = {}
    for settings in ESTIMATE_SETTINGS.values():
        groups.setdefault((settings.labels, settings.balance), []).append(settings)
    return groups


def case_rows(case: BridgeCase, zoo: Path, progress: bool) -> list[dict[str, Any]]:
    """Every variant of the case (trained unless cached in ``zoo``): its true mAP, its estimate under every
    setting, and the shipped one's interval."""
    cache: dict = {}
    rows = []
    for variant in quality_zoo.case_variants(case.name):
        head_x, head_y, meta = quality_zoo.ensure_bridge(case, variant, zoo / variant, progress)
        estimates = _estimates(case, variant, (head_x, head_y), cache)
        shipped = (
            cache[_features_key(variant), DEFAULT_ESTIMATE.labels].rescored(DEFAULT_ESTIMATE).score(head_x, head_y)
        )
        rows.append(
            {
                "variant": variant,
                "misleading": variant in quality_zoo.MISLEADING,
                "true_mAP": meta["true_mAP"],
                "estimates": estimates,
                "estimate": shipped["estimate"],
                "estimate_low": shipped["estimate_low"],
                "estimate_high": shipped["estimate_high"],
                "alignment": shipped["estimate_alignment"],
                "held_out_R@1": meta["held_out_R@1"],
            }
        )
        if progress:
            print(f"{case.name}/{variant}: true {meta['true_mAP']:.3f} estimate {rows[-1]['estimate']:.3f}", flush=True)
    return rows


def spearman(rows: list[dict[str, Any]], setting: str) -> float:
    return float(spearmanr([r["estimates"][setting] for r in rows], [r["true_mAP"] for r in rows]).statistic)


def misleading_at_or_above_default(rows: list[dict[str, Any]], setting: str, tie: float = 0.0) -> list[str]:
    """The misleading variants the setting does not score below the default (with ``tie``: only those whose true
    mAP is more than ``tie`` below the default's)."""
    default = next(r for r in rows if r["variant"] == "default")
    return [
        r["variant"]
        for r in rows
        if r["misleading"]
        and r["estimates"][setting] >= default["estimates"][setting]
        and r["true_mAP"] < default["true_mAP"] - tie
    ]


def _best_setting(datasets: dict[str, dict[str, Any]], cases: list[str]) -> str:
    """The setting with the best mean Spearman on ``cases`` (the shipped one wins ties)."""
    means = {name: np.mean([spearman(datasets[c]["rows"], name) for c in cases]) for name in ESTIMATE_SETTINGS}
    return max(means, key=lambda name: (means[name], name == SHIPPED))


def analyse(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Fill each case's in-sample and held-out figures in ``datasets``; returns the record's top-level keys."""
    cases = list(datasets)
    for case, result in datasets.items():
        held_out = _best_setting(datasets, [c for c in cases if c != case])
        result["spearman"] = spearman(result["rows"], SHIPPED)
        result["spearman_by_setting"] = {name: spearman(result["rows"], name) for name in ESTIMATE_SETTINGS}
        result["spearman_held_out_R@1"] = float(
            spearmanr([r["held_out_R@1"] for r in result["rows"]], [r["true_mAP"] for r in result["rows"]]).statistic
        )
        result["held_out_setting"] = held_out
        result["spearman_held_out"] = spearman(result["rows"], held_out)
        result["misleading_at_or_above_default"] = misleading_at_or_above_default(result["rows"], held_out)
        result["truly_worse_misleading_at_or_above_default"] = misleading_at_or_above_default(
            result["rows"], held_out, TIE
        )
        result["misleading_below_default"] = not result["truly_worse_misleading_at_or_above_default"]
        result["shipped_truly_worse_misleading_at_or_above_default"] = misleading_at_or_above_default(
            result["rows"], SHIPPED, TIE
        )
        result["passes"] = result["spearman_held_out"] >= TARGET and result["misleading_below_default"]
    return {
        "estimate_settings": {name: dataclasses.asdict(settings) for name, settings in ESTIMATE_SETTINGS.items()},
        "shipped_setting": SHIPPED,
        "best_setting_on_all": _best_setting(datasets, cases),
        "target_spearman_held_out": TARGET,
        "true_mAP_tie": TIE,
        "cases_passing": sum(result["passes"] for result in datasets.values()),
        "expected_mAP": expected_map_record(datasets),
    }


def fit_expected_map(rows: list[dict[str, Any]]) -> ExpectedMap:
    """The :class:`ExpectedMap` whose reading of the rows' shipped estimates is nearest their true mAPs (least
    squares on the mAP scale)."""
    from scipy.optimize import least_squares

    def misses(parameters: np.ndarray) -> np.ndarray:
        calibration = ExpectedMap(*map(float, parameters))
        return np.array([calibration(row["estimate"]) - row["true_mAP"] for row in rows])

    return ExpectedMap(*map(float, least_squares(misses, x0=[0.0, 1.0]).x))


def _misses(rows: list[dict[str, Any]], calibration: ExpectedMap) -> dict[str, Any]:
    read = [{"expected_mAP": calibration(row["estimate"]), "true_mAP": row["true_mAP"]} for row in rows]
    return {"n_bridges": len(rows), **agreement(read, "expected_mAP")}


def expected_map_record(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The estimate read as a mAP: the map fit on every case's bridges (``fit_on_all``, which ``EXPECTED_MAP``
    ships rounded), and per case how far the bridges read from their true mAP raw, under the shipped map, and
    held out (under the map fit on the other cases)."""
    every = [row for result in datasets.values() for row in result["rows"]]
    identity = ExpectedMap(0.0, 1.0)
    per_case = {}
    for case, result in datasets.items():
        others = fit_expected_map([row for c, r in datasets.items() if c != case for row in r["rows"]])
        per_case[case] = {
            "raw": _misses(result["rows"], identity),
            "shipped": _misses(result["rows"], EXPECTED_MAP),
            "held_out": _misses(result["rows"], others),
        }
    return {
        "fit_on_all": dataclasses.asdict(fit_expected_map(every)),
        "shipped": dataclasses.asdict(EXPECTED_MAP),
        "n_bridges": len(every),
        "by_case": per_case,
    }


def expected_map_lines(record: dict[str, Any]) -> list[str]:
    fit, shipped = record["fit_on_all"], record["shipped"]
    head = (
        f"estimate read as a mAP: sigmoid(a + b logit(estimate)); fit on all {record['n_bridges']} bridges "
        f"a={fit['intercept']:.3f} b={fit['slope']:.3f}, shipped a={shipped['intercept']:.3f} b={shipped['slope']:.3f}"
    )
    lines = [
        head,
        f"{'case':24}{'raw: mean / max / within':>28}{'held out: mean / max / within':>32}",
    ]
    for case, misses in record["by_case"].items():
        raw, held = (
            f"{m['mean_abs_error']:.3f} / {m['max_abs_error']:.3f} / {m[f'within_{ROUTE_TOLERANCE}']} of {m['n_bridges']}"
            for m in (misses["raw"], misses["held_out"])
        )
        lines.append(f"{case:24}{raw:>28}{held:>32}")
    return lines


def table(record: dict[str, Any]) -> list[str]:
    """The per-case figures, one line each."""
    lines = [
        (
            f"Spearman against true mAP; shipped setting {record['shipped_setting']}, best on all cases "
            f"{record['best_setting_on_all']}; held out = the setting chosen on the other cases"
        ),
        (
            f"{'case':24}{'in-sample':>10}{'held-out':>10}  {'held-out setting':22}{'R@1 (old)':>10}  "
            f"misleading >= default, held-out setting (* truly level with it) | shipped setting, truly worse"
        ),
    ]
    for name, r in record["datasets"].items():
        worse = r["truly_worse_misleading_at_or_above_default"]
        above = ", ".join(v + ("" if v in worse else "*") for v in r["misleading_at_or_above_default"]) or "none"
        shipped = ", ".join(r["shipped_truly_worse_misleading_at_or_above_default"]) or "none"
        lines.append(
            f"{name:24}{r['spearman']:10.3f}{r['spearman_held_out']:10.3f}  {r['held_out_setting']:22}"
            f"{r['spearman_held_out_R@1']:10.3f}  {above} | {shipped}"
        )
    lines.append(
        f"cases passing (held-out >= {TARGET}, every truly worse misleading bridge below the default): "
        f"{record['cases_passing']} of {len(record['datasets'])}"
    )
    return [*lines, "", *expected_map_lines(record["expected_mAP"])]
