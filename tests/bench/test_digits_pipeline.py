"""End to end on real data: the shipped samples (fast) and, marked slow, the full benchmark."""

import json
import os
from pathlib import Path

import pytest
from spacegraph_bench import digits

import spacegraph as sg
from spacegraph.cli import main

DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))


def test_shipped_pipeline_connects_audio_and_images_without_pairs(tmp_path, monkeypatch):
    record = digits.run(digits.shipped_data(), tmp_path, config={"steps": 150}, ablations=False, progress=False)
    a2i, chance = record["metrics"]["audio_to_image"], record["baselines"]["chance"]["audio_to_image"]
    assert a2i["R@1"] > 0.8 and a2i["mAP"] > 0.7
    assert chance["R@1"] < 0.2 and chance["mAP"] < 0.2
    assert set(record["baselines"]) == {"chance", "text_pivot", "paired_upper_bound"}
    assert record["n_queries"] == 300 and record["n_gallery"] == 1000
    bridge = sg.Bridge.load(record["bridge_path"])
    assert bridge.card.training["steps"] == 150

    # A second run reads the cached features: encoding anything now would fail.
    def no_encoding(*args, **kwargs):
        raise AssertionError("features were encoded again instead of read from the cache")

    monkeypatch.setattr(sg.Space, "encode", no_encoding)
    again = digits.run(digits.shipped_data(), tmp_path, config={"steps": 150}, ablations=False, progress=False)
    assert again["metrics"] == record["metrics"]  # and training is repeatable


def test_cli_list_and_clean_errors(capsys, tmp_path):
    assert main(["list"]) == 0
    assert "digits-audio-text" in capsys.readouterr().out
    assert main(["bench", "digits", "--data", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "spacegraph: error: expected" in err and "SPACEGRAPH_DATA" in err


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "fsdd").is_dir(), reason=f"real data not found at {DATA}; set SPACEGRAPH_DATA")
def test_full_digits_benchmark_meets_its_targets(tmp_path):
    out = tmp_path / "record.json"
    assert main(["bench", "digits", "--data", str(DATA), "--json", str(out), "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads(out.read_text())
    a2i = record["metrics"]["audio_to_image"]
    assert a2i["R@1"] >= 0.85 and a2i["mAP"] >= 0.70
    assert a2i["R@1"] >= 0.9 * record["baselines"]["paired_upper_bound"]["audio_to_image"]["R@1"]
    assert set(record["ablations"]) == {"no_memory", "no_noise", "no_intra"}
    assert record["train_seconds"] < 60


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "fsdd").is_dir(), reason=f"real data not found at {DATA}; set SPACEGRAPH_DATA")
def test_multihop_benchmark_two_hop_route(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "record.json"
    assert main(["bench", "multihop", "--data", str(DATA), "--json", str(out), "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["routes"]["connect"]["audio_to_lowres"]["R@1"] >= 0.70
    assert set(record["routes"]["extend"]["hops"]) == {"audio_to_mnist_image", "mnist_image_to_lowres"}
    # Extending keeps the image-text space's own quality exactly.
    assert record["routes"]["extend"]["image_text_zero_shot_inside_route"] == record["image_text_zero_shot_native"]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "modelnet10").is_dir(), reason=f"real data not found at {DATA}; set SPACEGRAPH_DATA")
def test_modelnet10_benchmark_classifies_3d_through_images(tmp_path):
    out = tmp_path / "record.json"
    assert (
        main(["bench", "modelnet10", "--data", str(DATA), "--json", str(out), "--out", str(tmp_path), "--quiet"]) == 0
    )
    record = json.loads(out.read_text())
    assert record["routes"]["connect"]["point_cloud_to_text"]["top1"] >= 0.75
    assert record["routes"]["extend"]["image_text_zero_shot_inside"] == record["image_text_zero_shot_native"]
