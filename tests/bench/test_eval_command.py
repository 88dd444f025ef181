"""``spacegraph eval`` end to end on the demo graph: each task on a tiny dataset layout of real spoken digits (FSDD)
and handwritten ones (MNIST), the record CLIP_benchmark-shaped."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spacegraph_bench import eval as bench_eval

from spacegraph.cli import main

DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
FSDD = DATA / "fsdd" / "recordings"
MNIST = DATA / "mnist5k" / "mnist5k.npz"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
RECORD_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language", "route", "bridges"}
BRIDGE = "digits-audio-text+digits-image-text"

pytestmark = pytest.mark.skipif(
    not (FSDD.is_dir() and MNIST.is_file()), reason=f"real data (fsdd/, mnist5k/) not found at {DATA}"
)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """The demo graph's cache, its bridge trained once for the whole session."""
    cache = tmp_path_factory.mktemp("demo-cache")
    bench_eval.demo_graph(cache, progress=False)
    assert (cache / "bridge").is_dir()
    return cache


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Tiny layouts of real data: an ESC-50 of spoken digits (two speakers, takes 0-2; the take + 1 is the fold),
    a Clotho and an AudioCaps of spoken digits captioned with their words, an ImageFolder of MNIST digits, and a
    VGGSS of 2x2 MNIST mosaics, each holding the spoken digit in one cell (its box) and three other digits."""
    root = tmp_path_factory.mktemp("layouts")
    mnist = np.load(MNIST)
    return {
        "esc50": esc50_layout(root / "esc50"),
        "clotho": clotho_layout(root / "clotho"),
        "audiocaps": audiocaps_layout(root / "audiocaps"),
        "imagefolder": imagefolder_layout(root / "imagefolder", mnist),
        "vggss": vggss_layout(root / "vggss", mnist),
    }


def copied(name: str, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FSDD / name, to)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def esc50_layout(root: Path) -> Path:
    rows = []
    for digit in range(10):
        for speaker in ("jackson", "nicolas"):
            for take in range(3):
                name = f"{digit}_{speaker}_{take}.wav"
                copied(name, root / "audio" / name)
                rows.append([name, take + 1, digit, WORDS[digit], "False", f"{digit}_{speaker}", "A"])
    write_csv(
        root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows
    )
    return root


def captions(digit: int) -> list[str]:
    word = WORDS[digit]
    return [word, f"the digit {word}", f"someone says {word}", f"a spoken {word}", f"the number {word}"]


def clotho_layout(root: Path) -> Path:
    rows = []
    for digit in range(10):
        name = f"{digit}_theo_{digit % 5}.wav"
        copied(name, root / "evaluation" / name)
        rows.append([name, *captions(digit)])
    write_csv(root / "clotho_captions_evaluation.csv", ["file_name", *(f"caption_{i}" for i in range(1, 6))], rows)
    return root


def audiocaps_layout(root: Path) -> Path:
    rows = []
    for digit in range(10):
        copied(f"{digit}_george_0.wav", root / "test" / f"Yfsdd{digit}george.wav")
        rows += [[digit * 10 + i, f"fsdd{digit}george", 0, text] for i, text in enumerate(captions(digit)[:2])]
    write_csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    return root


def imagefolder_layout(root: Path, mnist) -> Path:
    for digit in range(10):
        (root / WORDS[digit]).mkdir(parents=True)
        for i in np.flatnonzero(mnist["label"] == digit)[:3]:
            Image.fromarray(mnist["images"][i]).save(root / WORDS[digit] / f"{i}.png")
    return root


def vggss_layout(root: Path, mnist) -> Path:
    rng = np.random.default_rng(0)
    (root / "frames").mkdir(parents=True)
    entries = []
    for i in range(20):
        digit, cell = i % 10, int(rng.integers(4))
        digits = list(rng.choice([d for d in range(10) if d != digit], 3, replace=False))
        digits.insert(cell, digit)
        mosaic = np.zeros((56, 56), np.uint8)
        for k, shown in enumerate(digits):
            row, column = divmod(k, 2)
            mosaic[28 * row : 28 * row + 28, 28 * column : 28 * column + 28] = mnist["images"][
                rng.choice(np.flatnonzero(mnist["label"] == shown))
            ]
        Image.fromarray(mosaic).save(root / "frames" / f"clip{i}.png")
        copied(f"{digit}_yweweler_{i // 10}.wav", root / "audio" / f"clip{i}.wav")
        row, column = divmod(cell, 2)
        box = [0.5 * column, 0.5 * row, 0.5 * column + 0.5, 0.5 * row + 0.5]  # fractions, as the LVS release
        entries.append({"file": f"clip{i}", "class": WORDS[digit], "bbox": [box]})
    (root / "vggss.json").write_text(json.dumps(entries))
    return root


def run_eval(tmp_path: Path, cache: Path, dataset: str, root: Path, task: str, *extra: str) -> dict:
    out = tmp_path / f"{dataset}-{task}.json"
    argv = ["eval", "--dataset", dataset, "--root", str(root), "--task", task, "--cache", str(cache)]
    assert main([*argv, "--output", str(out), *extra]) == 0
    record = json.loads(out.read_text())
    assert RECORD_KEYS <= set(record) and record["dataset"] == dataset and record["pretrained"] == "demo"
    assert record["language"] == "en" and record["task"] == bench_eval.TASKS[task]
    assert all(0.0 <= value <= 1.0 for value in record["metrics"].values())
    return record


def bridge_names(record: dict) -> list[str]:
    return [card["name"] for card in record["bridges"]]


def test_zeroshot_of_spoken_digits_beats_chance_in_the_audio_space_and_across_the_bridge(tmp_path, demo_cache, layouts):
    record = run_eval(tmp_path, demo_cache, "esc50", layouts["esc50"], "zeroshot", "--option", "fold=2")
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert record["n_items"] == 20 and record["class_names"] == WORDS and record["templates"] == ["{}"]
    assert record["metrics"]["acc1"] > 0.5 and record["metrics"]["acc5"] >= record["metrics"]["acc1"]  # chance 0.1
    assert record["route"].startswith("Route(digits-audio-text:audio | digits-audio-text:text") and not bridge_names(
        record
    )

    # Class names through the image space's text tower, and the bridge into the audio side.
    across = run_eval(
        tmp_path, demo_cache, "esc50", layouts["esc50"], "zeroshot", "--target", "digits-image-text:text",
        "--templates", "{}", "the digit {}",
    )  # fmt: skip
    assert bridge_names(across) == [BRIDGE] and across["bridges"][0]["method"] == "cmcr"
    assert across["metrics"]["acc1"] > 0.3 and across["metrics"]["mean_per_class_recall"] > 0.3
    assert across["templates"] == ["{}", "the digit {}"] and across["n_items"] == 60


def test_zeroshot_of_an_imagefolder_of_mnist_digits(tmp_path, demo_cache, layouts):
    record = run_eval(tmp_path, demo_cache, "imagefolder", layouts["imagefolder"], "zeroshot")
    assert record["class_names"] == sorted(WORDS) and record["n_items"] == 30
    assert record["model"] == "image: digits-image-text | text: digits-image-text"
    assert record["metrics"]["acc1"] > 0.3


@pytest.mark.parametrize("dataset", ["clotho", "audiocaps"])
def test_retrieval_of_spoken_digits_by_their_words(tmp_path, demo_cache, layouts, dataset):
    record = run_eval(tmp_path, demo_cache, dataset, layouts[dataset], "retrieval", "--recall-k", "1", "5")
    metrics = record["metrics"]
    assert set(metrics) == {f"{way}_retrieval_recall@{k}" for way in ("audio", "text") for k in (1, 5)}
    assert metrics["audio_retrieval_recall@5"] >= metrics["audio_retrieval_recall@1"] > 0.3  # chance 0.1
    assert metrics["text_retrieval_recall@5"] >= metrics["text_retrieval_recall@1"] > 0.3
    assert record["n_items"] == 10 and record["n_texts"] == (50 if dataset == "clotho" else 20)


def test_localization_of_spoken_digits_in_mnist_mosaics(tmp_path, demo_cache, layouts):
    record = run_eval(tmp_path, demo_cache, "vggss", layouts["vggss"], "localization", "--window", "0.5")
    assert set(record["metrics"]) == {"ciou_0.5", "auc"} and record["n_items"] == 20
    assert bridge_names(record) == [BRIDGE] and record["model"].startswith("audio: digits-audio-text -> ")
    assert record["grid"] is None and record["window"] == 0.5


def test_counterfactual_pairs_with_the_graphs_label_free_threshold(tmp_path, demo_cache, layouts):
    record = run_eval(tmp_path, demo_cache, "vggss", layouts["vggss"], "counterfactual", "--seed", "1")
    assert set(record["metrics"]) == {"ap", "max_f1", "accuracy"} and record["n_pairs"] == 40
    assert record["metrics"]["ap"] > 0.3 and record["seed"] == 1  # half the pairs are matched
    assert record["threshold"]["source"] == "label-free (the graph's data)"
    assert -1.0 <= record["threshold"]["value"] <= 1.0


def test_eval_refuses_a_task_the_dataset_lacks_and_bad_options_before_any_work(tmp_path, layouts, capsys):
    cache = tmp_path / "cache"  # nothing may be trained into it
    argv = ["eval", "--dataset", "esc50", "--root", str(layouts["esc50"]), "--cache", str(cache)]
    assert main([*argv, "--task", "localization"]) == 2
    assert "dataset 'esc50' offers the task(s) zeroshot, not 'localization'" in capsys.readouterr().err
    assert main([*argv, "--task", "zeroshot", "--option", "fold"]) == 2
    assert "--option 'fold': give KEY=VALUE" in capsys.readouterr().err
    assert main([*argv, "--task", "zeroshot", "--option", "split=test"]) == 2
    assert "its factory takes (root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--task", "retrieval", "--recall-k", "1", "0"])
    assert "--recall-k: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not cache.exists()
