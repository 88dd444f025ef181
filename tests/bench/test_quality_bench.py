"""``spacegraph bench quality``'s parts: the bridge zoo trains each variant once and caches it, the misleading
variants are what they say, real-encoder geometry is applied to training and truth alike, and every case's
held-out figure comes from the setting chosen on the other cases."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from spacegraph_bench import quality_estimates, quality_zoo
from spacegraph_bench.quality import BridgeCase
from spacegraph_bridges import _cmcr_pairs

from spacegraph import BridgeFeatures
from spacegraph._quality import DEFAULT_ESTIMATE, ESTIMATE_SETTINGS, EXPECTED_MAP, ExpectedMap


def _clusters(labels: torch.Tensor, centres: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.randn(len(labels), centres.shape[1], generator=torch.Generator().manual_seed(seed))
    return F.normalize(centres[labels] + 0.3 * noise, dim=1)


def tiny_case() -> BridgeCase:
    centres = F.normalize(torch.randn(4, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(240) % 4
    features = BridgeFeatures(
        _clusters(labels, centres, 1), _clusters(labels, centres, 2), _clusters(labels, centres, 3),
        _clusters(labels, centres, 4),
    )  # fmt: skip
    test = _clusters(labels[:80], centres, 5)

    def truth(head_x, head_y):
        with torch.inference_mode():
            scores = head_x.eval()(test) @ head_y.eval()(test).T
        return float((labels[:80][scores.argmax(dim=1)] == labels[:80]).float().mean())

    config = {"steps": 20, "hidden_dim": 32, "out_dim": 16, "batch_size": 32, "seed": 0}
    return BridgeCase("tiny", features, config, truth)


def test_a_variant_is_trained_once_then_loaded_with_the_same_heads(tmp_path):
    case = tiny_case()
    head_x, _, meta = quality_zoo.ensure_bridge(case, "default", tmp_path / "default")
    again_x, _, again = quality_zoo.ensure_bridge(case, "default", tmp_path / "default")
    rows = case.features.memory_x[:10]
    assert torch.allclose(head_x(rows), again_x(rows)) and again == meta
    assert 0 <= meta["true_mAP"] <= 1 and meta["card_estimate"] is not None
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["heads.safetensors", "meta.json"]


def test_head_rotated_is_the_default_turned_and_memories_shuffled_restores_retrieval(tmp_path):
    case = tiny_case()
    _, default_y, _ = quality_zoo.ensure_bridge(case, "default", tmp_path / "default")
    _, rotated_y, meta = quality_zoo.ensure_bridge(case, "head_rotated", tmp_path / "head_rotated")
    rows = case.features.memory_y[:10]
    turn = quality_zoo.rotation(16)
    assert meta["rotated"] and torch.allclose(rotated_y(rows), F.normalize(default_y(rows) @ turn, dim=1), atol=1e-5)
    original = _cmcr_pairs.TrainingData.retrieve
    quality_zoo.ensure_bridge(case, "memories_shuffled", tmp_path / "memories_shuffled")
    assert _cmcr_pairs.TrainingData.retrieve is original


def test_misaligned_overlap_keeps_the_rows_but_not_their_pairing():
    features = tiny_case().features
    moved = quality_zoo.misaligned(features)
    assert torch.equal(moved.overlap_x, features.overlap_x)
    assert torch.equal(moved.overlap_y.sort(dim=0).values, features.overlap_y.sort(dim=0).values)
    assert (moved.overlap_y != features.overlap_y).any(dim=1).float().mean() > 0.9


def test_geometry_puts_a_modality_in_a_cone_and_the_truth_reads_it_too():
    case = tiny_case()
    cone = quality_zoo.with_geometry(case, "tiny_cone")
    spread = lambda rows: float(F.normalize(rows, dim=1).mean(dim=0).norm())  # 1: every row alike
    assert spread(cone.features.memory_x) > spread(case.features.memory_x) + 0.2
    same = quality_zoo.cone_geometry(12, 0, memory=True)(case.features.memory_x)  # what probes of the case read
    assert torch.allclose(cone.features.memory_x, same)
    seen = []

    def recording_truth(head_x, head_y):
        seen.append(head_x(case.features.memory_x[:5]))
        return 0.5

    probe = quality_zoo.with_geometry(BridgeCase("t", case.features, case.config, recording_truth), "t_cone")
    assert probe.true_quality(torch.nn.Identity(), torch.nn.Identity()) == 0.5
    assert torch.allclose(seen[0], cone.features.memory_x[:5])  # the truth's items went through the geometry


def _rows(true: list[float], by_setting: dict[str, list[float]]) -> list[dict]:
    variants = ["default", "no_memory", "steps_5", "noise_1.0"]
    return [
        {"variant": v, "misleading": v == "no_memory", "true_mAP": t, "held_out_R@1": t,
         "estimates": {name: by_setting[name][i] for name in ESTIMATE_SETTINGS},
         "estimate": by_setting[DEFAULT_ESTIMATE.name][i]}
        for i, (v, t) in enumerate(zip(variants, true))
    ]  # fmt: skip


def test_each_case_is_scored_with_the_setting_chosen_on_the_others():
    true = [0.9, 0.5, 0.3, 0.1]
    good, reversed_ = [0.8, 0.6, 0.4, 0.2], [0.2, 0.4, 0.6, 0.8]
    names = list(ESTIMATE_SETTINGS)
    wins_elsewhere = {name: good if name == names[1] else reversed_ for name in names}
    wins_here = {name: good if name == names[2] else reversed_ for name in names}
    datasets = {case: {"rows": _rows(true, wins_elsewhere)} for case in ("a", "b", "c")}
    datasets["d"] = {"rows": _rows(true, wins_here)}
    top = quality_estimates.analyse(datasets)
    assert datasets["d"]["held_out_setting"] == names[1] and datasets["d"]["spearman_held_out"] == -1.0
    assert datasets["d"]["misleading_at_or_above_default"] == ["no_memory"] and not datasets["d"]["passes"]
    assert datasets["a"]["held_out_setting"] == names[1] and datasets["a"]["passes"]
    assert top["cases_passing"] == 3 and top["best_setting_on_all"] == names[1]


def test_the_route_table_reports_the_held_out_graph_apart_from_the_targets_graphs():
    from spacegraph_bench.quality import route_lines, route_summary

    def rows(graph, truths, estimates):
        return [
            {"graph": graph, "variant": f"v{i}", "hops": 2, "estimate": e, "expected_mAP": e, "product": 0.5,
             "true_mAP": t}
            for i, (t, e) in enumerate(zip(truths, estimates))
        ]  # fmt: skip

    target = rows("multihop", [0.9, 0.8, 0.7], [0.85, 0.72, 0.5])
    held_out = route_summary(rows("shapes", [0.9, 0.6, 0.7], [0.6, 0.4, 0.5]))
    routes = {**route_summary(target), "by_graph": {}, "held_out": {"shapes": held_out}}
    assert routes["spearman"] == 1.0 and routes["within_0.15"] == 2
    assert held_out["spearman"] == 1.0 and held_out["within_0.15"] == 0
    assert abs(held_out["max_abs_error"] - 0.3) < 1e-9
    text = "\n".join(route_lines(routes))
    assert "held out, shapes: 3D -> MiniLM text" in text
    assert "all: Spearman route estimate 1.000" in text and "shapes: Spearman route estimate 1.000" in text
    assert "0 of 3 within 0.15" in text and "2 of 3 within 0.15" in text


def test_the_route_table_measures_the_estimate_read_as_a_map_against_the_truth():
    from spacegraph_bench.quality import route_lines, route_summary

    rows = [
        {"graph": "shapes", "variant": f"v{i}", "hops": 2, "estimate": e, "expected_mAP": m, "product": 0.5,
         "true_mAP": t}
        for i, (t, e, m) in enumerate([(0.9, 0.6, 0.8), (0.6, 0.4, 0.7), (0.7, 0.5, 0.65)])
    ]  # fmt: skip
    summary = route_summary(rows)
    assert summary["within_0.15"] == 0 and summary["expected_mAP"]["within_0.15"] == 3
    assert summary["mean_signed_error"] == pytest.approx(-0.7 / 3)
    assert summary["expected_mAP"]["mean_signed_error"] == pytest.approx(-0.05 / 3)
    assert summary["expected_mAP"]["spearman"] == pytest.approx(0.5)
    text = "\n".join(route_lines({**summary, "by_graph": {}, "held_out": {}}))
    assert "(as mAP 0.800)" in text and "read as a mAP: largest miss 0.100" in text and "3 of 3 within 0.15" in text


def test_the_map_reading_is_fit_on_the_bridges_and_measured_on_each_case_held_out():
    calibration = ExpectedMap(0.5, 1.5)
    estimates = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]

    def case(shift=0.0):
        return {"rows": [{"estimate": e, "true_mAP": calibration(e) + shift} for e in estimates]}

    datasets = {"a": case(), "b": case(), "c": case(0.2)}
    fit = quality_estimates.fit_expected_map([row for name in "ab" for row in datasets[name]["rows"]])
    assert fit.intercept == pytest.approx(0.5, abs=1e-4) and fit.slope == pytest.approx(1.5, abs=1e-4)
    record = quality_estimates.expected_map_record(datasets)
    assert record["n_bridges"] == 21 and record["shipped"] == dataclasses.asdict(EXPECTED_MAP)
    held_out_a, held_out_c = record["by_case"]["a"]["held_out"], record["by_case"]["c"]["held_out"]
    assert 0.05 < held_out_a["mean_abs_error"] < 0.15  # fit on b and c: c's shift pulls a's map halfway
    assert held_out_c["max_abs_error"] == pytest.approx(0.2, abs=0.02) and held_out_c["within_0.15"] == 0
    raw = record["by_case"]["a"]["raw"]
    assert raw["mean_abs_error"] == pytest.approx(sum(abs(e - calibration(e)) for e in estimates) / len(estimates))
    lines = "\n".join(quality_estimates.expected_map_lines(record))
    assert "fit on all 21 bridges" in lines and "0 of 7" in lines
