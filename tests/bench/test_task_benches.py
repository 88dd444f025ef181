"""The pieces of ``bench localization``, ``bench counterfactual`` and ``bench zeroshot``, and tiny runs of the first
two on the shipped digit samples (few queries, one seed, short training) for their JSON shape."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from spacegraph_bench import cli, counterfactual, digits, localization, zeroshot

import spacegraph as sg
from spacegraph.cli import main


@pytest.fixture
def tiny_digits(monkeypatch):
    """``full_data`` replaced by 40 shipped queries, and bridges trained for 40 steps."""
    data = digits.shipped_data()
    small = dataclasses.replace(
        data, audio_queries=data.audio_queries[:40], audio_query_labels=data.audio_query_labels[:40]
    )
    monkeypatch.setattr(digits, "full_data", lambda data_dir: small)
    monkeypatch.setitem(digits.DEFAULT_CONFIG, "steps", 40)
    return small


def test_mosaic_places_the_query_digit_once_in_its_box():
    images = np.stack([np.full((28, 28), label, dtype=np.float32) for label in range(10)])
    labels = np.arange(10)
    for cells in (2, 3):
        mosaics = localization.build_mosaics(np.array([3, 7, 0]), images, labels, cells, np.random.default_rng(0))
        for query, image, box, classes in zip((3, 7, 0), mosaics.images, mosaics.boxes, mosaics.classes):
            assert image.shape == (28 * cells, 28 * cells)
            assert len(set(classes.tolist())) == cells * cells and list(classes).count(query) == 1
            x0, y0, x1, y1 = box
            assert (x1 - x0, y1 - y0) == (28, 28)
            assert (image[y0:y1, x0:x1] == query).all()  # the box holds exactly the query's tile
    assert localization.cell_box(5, 3) == [56, 28, 84, 56]


def test_baselines_and_a_perfect_map_score_as_expected():
    box = localization.cell_box(0, 2)
    perfect = np.zeros((56, 56))
    perfect[:28, :28] = 1.0
    scores = localization.scores([perfect] * 4, [box] * 4)
    assert scores["ciou_0.5_t0.5"] == 1.0 and scores["peak_in_box"] == 1.0
    assert scores["auc_t0.5"] > 0.9
    centre = localization.centre_heatmap(56)
    assert np.unravel_index(centre.argmax(), centre.shape) in {(27, 27), (27, 28), (28, 27), (28, 28)}
    corners = localization.scores([centre] * 4, [localization.cell_box(i, 2) for i in range(4)])
    assert corners["ciou_0.5"] == 0.0 and corners["ciou_0.5_t0.5"] == 0.0  # a centred blob misses every corner
    random = localization.random_heatmaps(400, 2, seed=1)
    assert random[0].shape == (56, 56)
    assert torch.equal(random[0], localization.random_heatmaps(1, 2, seed=1)[0])
    hits = localization.scores(random, [box] * 400)["peak_in_box"]
    assert 0.15 < hits < 0.35  # a random peak lands in one of four cells a quarter of the time


def test_localization_tiny_run_has_the_issue_shape(tiny_digits, tmp_path):
    record = localization.bench("unused", tmp_path, seeds=(0,), progress=False)
    json.dumps(record)
    methods = {"cmcr", "text_pivot", "cmcr_default_window", "paired", "centre", "random"}
    for setting in ("2x2", "3x3"):
        assert set(record[setting]) == methods
        assert {"ciou_0.5", "auc", "ciou_0.5_t0.5", "auc_t0.5"} <= set(record[setting]["cmcr"])
        assert record[setting]["centre"]["ciou_0.5"] == 0.0
    assert record["2x2"]["cmcr"]["peak_in_box"] > record["2x2"]["random"]["peak_in_box"]
    assert record["n_queries"] == 40 and len(record["per_seed"]) == 1
    assert "cmcr_default_window" in localization.summary(record)


def test_balanced_pairs_and_the_chance_row():
    queries, candidates = np.array([0, 1, 2, 2]), np.array([0, 0, 1, 1, 2, 2])
    q, c, matched = counterfactual.balanced_pairs(queries, candidates, np.random.default_rng(0))
    assert matched.sum() == 4 and len(matched) == 8
    assert ((queries[q] == candidates[c]) == matched).all()
    chance = counterfactual.chance_row(matched)
    assert chance == {"ap": 0.5, "max_f1": pytest.approx(2 / 3), "accuracy": 0.5}
    # What scores that know nothing (all equal) earn: the chance row's AP and max-F1.
    constant = sg.pair_metrics(torch.zeros(8), matched, threshold=0.0)
    assert constant["ap"] == pytest.approx(chance["ap"]) and constant["max_f1"] == pytest.approx(chance["max_f1"])


def test_counterfactual_tiny_run_has_the_issue_shape(tiny_digits, tmp_path, monkeypatch):
    monkeypatch.setattr(counterfactual, "PROBE_SIZE", 100)
    record = counterfactual.bench("unused", tmp_path, seeds=(0,), progress=False)
    json.dumps(record)
    for setting in ("digits", "multihop"):
        assert set(record[setting]) == {"cmcr", "chance", "paired"}
        cmcr = record[setting]["cmcr"]
        assert {"ap", "max_f1", "accuracy", "threshold", "accuracy_probe"} <= set(cmcr)
        assert cmcr["ap"] > record[setting]["chance"]["ap"]
    assert record["n_pairs"] == 80


def test_zeroshot_pieces():
    assert zeroshot.templates(("the number {m}", "{m}")) == ["the number {}", "{}"]
    assert zeroshot.chance_row(10) == {"top1": 0.1, "top5": 0.5, "top1_templates": 0.1, "top5_templates": 0.5}
    space = sg.load_space(digits.AUDIO_SPACE)
    data = digits.shipped_data()
    items = space.encode("audio", data.audio_queries[:30])
    from spacegraph_spaces.digits_data import DIGIT_WORDS

    classify = zeroshot.native_classifier(space, items)
    right = zeroshot.both_prompts(classify, data.audio_query_labels[:30], list(DIGIT_WORDS), ["the number {}"])
    shuffled = zeroshot.both_prompts(
        classify, data.audio_query_labels[:30], list(DIGIT_WORDS[1:] + DIGIT_WORDS[:1]), ["{}"]
    )
    assert right["top1"] > 0.8 and right["top1_templates"] > 0.8
    assert shuffled["top1"] < 0.2  # the names, not the item order, carry the answer


def test_the_three_benches_are_commands_with_three_seeds(tmp_path, capsys):
    for name in ("localization", "counterfactual", "zeroshot"):
        assert name in cli.BENCHMARKS and name in cli.THREE_SEEDS
        assert main(["bench", name, "--data", str(tmp_path), "--quiet", "--out", str(tmp_path / "out")]) == 2
        assert "fsdd" in capsys.readouterr().err


def test_zeroshot_fsdd_rows_classify_through_routes_and_the_paired_heads(tiny_digits, tmp_path):
    rows = zeroshot.fsdd_rows(localization.load("unused", tmp_path, progress=False), seed=0, progress=False)
    assert set(rows) == {"cmcr", "text_pivot", "paired", "native", "chance"}
    for method in ("cmcr", "paired"):
        assert set(rows[method]) == {"top1", "top5", "top1_templates", "top5_templates"}
        assert rows[method]["top1"] > rows["chance"]["top1"] + 0.3
