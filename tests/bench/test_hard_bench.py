"""The harder benchmark: its pure helpers (fast) and, marked slow, its data builder on the real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from spacegraph_bench import cli as bench_cli
from spacegraph_bench import hard
from spacegraph_bridges.cmcr import CMCRConfig, fit_heads

from spacegraph.cli import main

DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))

FAKE_WORDNET = {
    "1-n": {"definition": ["a  domestic  animal"], "examples": ["the dog barked"]},
    "2-n": {"definition": ["the number seven"], "examples": []},
    "3-n": {"definition": ["a domestic animal"], "examples": ["x" * 300, "a tall tree"]},
    "4-n": {"definition": ["a large body of water"], "examples": ["the sea was calm", "the number seven"]},
}


def test_offtopic_texts_normalise_deduplicate_and_exclude():
    texts = hard.offtopic_texts(FAKE_WORDNET, exclude=["2-n"])
    # Whitespace normalised, duplicates and over-long texts dropped, file order kept.
    expected = ["a domestic animal", "the dog barked", "a tall tree", "a large body of water", "the sea was calm"]
    assert texts == [*expected, "the number seven"]


def test_sample_corpus_is_seeded_and_keeps_every_relevant_text():
    relevant = ["the number seven", "7"]
    offtopic = hard.offtopic_texts(FAKE_WORDNET, exclude=["2-n"])
    texts, is_relevant = hard.sample_corpus(relevant, offtopic, n_offtopic=3, seed=0)
    assert len(texts) == 5 and is_relevant.sum() == 2
    assert sorted(t for t, r in zip(texts, is_relevant) if r) == sorted(relevant)
    assert texts.count("the number seven") == 1  # an off-topic copy of a relevant text is never drawn
    assert hard.sample_corpus(relevant, offtopic, 3, seed=0)[0] == texts
    assert hard.sample_corpus(relevant, offtopic, 3, seed=1)[0] != texts
    with pytest.raises(ValueError, match="only 5 are available"):
        hard.sample_corpus(relevant, offtopic, 6, seed=0)


def test_rows_of_classes_and_mean_std():
    assert hard.rows_of_classes(np.array([0, 3, 7, 3, 9]), range(3, 8)).tolist() == [1, 2, 3]
    runs = [{"audio_to_image": {"R@1": 0.5}}, {"audio_to_image": {"R@1": 0.7}}]
    cell = hard.mean_std(runs)["audio_to_image"]["R@1"]
    assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.02**0.5)
    assert hard.mean_std(runs[:1])["audio_to_image"]["R@1"] == {"mean": 0.5, "std": 0.0}


def test_cli_runs_three_seeds_from_the_seed_flag(monkeypatch, capsys, tmp_path):
    calls = {}
    monkeypatch.setattr(hard, "bench", lambda data, out, **options: calls.update(options, data=data) or {})
    monkeypatch.setattr(hard, "summary", lambda record: "table")
    monkeypatch.setattr(bench_cli, "DEFAULT_DATA", str(tmp_path))  # as if $SPACEGRAPH_DATA were set
    assert main(["bench", "hard", "--seed", "10", "--quiet", "--no-ablations"]) == 0
    assert calls == {"progress": False, "seeds": (10, 11, 12), "ablations": False, "data": str(tmp_path)}


def test_cli_without_data_says_where_to_give_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_cli, "DEFAULT_DATA", None)  # no --data and no $SPACEGRAPH_DATA
    assert main(["bench", "hard", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "give --data FOLDER" in err and "SPACEGRAPH_DATA" in err and "spacegraph demo" in err
    assert not (tmp_path / "out").exists()


def test_missing_data_names_the_env_var(tmp_path, capsys):
    assert main(["bench", "hard", "--data", str(tmp_path), "--quiet"]) == 2
    assert "SPACEGRAPH_DATA" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not (DATA / "fsdd").is_dir() or not (DATA / "oewn").is_dir(),
    reason=f"real data (fsdd/, mnist5k/, oewn/) not found at {DATA}; set SPACEGRAPH_DATA",
)
def test_builder_makes_a_rare_topic_corpus_and_class_gapped_memories(tmp_path):
    full = hard.build_data(DATA)
    assert 0.01 <= full.text_is_digit.mean() <= 0.03
    assert len(set(full.texts)) == len(full.texts) == hard.N_OFFTOPIC + full.text_is_digit.sum()
    assert hard.build_data(DATA).texts == full.texts  # the corpus is fixed

    f = hard.load(DATA, tmp_path, progress=False, n_offtopic=2_000)
    n_texts = 2_000 + int(f.text_is_digit.sum())
    assert f.bridge_features.overlap_x.shape == (n_texts, 64)
    assert f.bridge_features.overlap_y.shape == (n_texts, 96)
    assert set(f.audio_memory_labels.tolist()) == set(hard.AUDIO_MEMORY_DIGITS) == set(range(7))
    assert set(f.image_memory_labels.tolist()) == set(hard.IMAGE_MEMORY_DIGITS) == set(range(3, 10))
    assert f.bridge_features.memory_x.shape == (len(f.audio_memory_labels), 64)
    assert f.bridge_features.memory_y.shape == (len(f.image_memory_labels), 96)
    assert set(f.audio_query_labels.tolist()) == set(f.image_gallery_labels.tolist()) == set(range(10))
    assert f.audio_queries.shape == (300, 64) and f.image_gallery.shape == (1_000, 96)

    # The reusable path: any bridge trained on the features, scored by evaluate.
    fit = fit_heads(f.bridge_features, CMCRConfig(**{**hard.DEFAULT_CONFIG, "steps": 50}), show_progress_bar=False)
    scores = hard.evaluate(fit.head_x, fit.head_y, f)
    assert set(scores) == set(hard.text_pivot(f)) == {"audio_to_image", "image_to_audio"}
    assert scores["audio_to_image"]["mAP"] > hard.chance(f)["audio_to_image"]["mAP"]
