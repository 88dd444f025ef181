"""The worked third-party plugin in examples/plugin_package: installed by pip into a temporary folder, it adds the
``tactile`` modality, the ``tactile-text`` space and the ``overlap-infonce`` bridge method with no edit to
spacegraph, and a tactile query is routed to spoken digits through text."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spacegraph._atomic import OWNERSHIP

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "plugin_package"

# Run with the installed plugin on the path; prints one JSON line of what it saw.
SCENARIO = r"""
import contextlib, io, json, sys
import numpy as np
import spacegraph as sg
from spacegraph.plugin import BridgeFeatures, BridgeMethod, Modality, SpacegraphError, known_modalities
from spacegraph_spaces.digits_data import load_demo_samples, load_digit_texts

def mean_ap(scores, query_labels, gallery_labels):
    aps = []
    for row, label in zip(scores, query_labels):
        relevant = gallery_labels[row.argsort(descending=True).numpy()] == label
        aps.append((np.cumsum(relevant)[relevant] / (np.flatnonzero(relevant) + 1)).mean())
    return float(np.mean(aps))

def refusal(call):
    try:
        call()
    except SpacegraphError as err:
        return {"type": type(err).__name__, "is_value_error": isinstance(err, ValueError), "message": str(err)}

seen = {"known_before_lookup": "tactile" in known_modalities()}
tactile = Modality("tactile")
seen["modality"] = {"value": tactile.value, "description": tactile.description, "same": Modality("tactile") is tactile}
seen["typo"] = refusal(lambda: Modality("tactle"))
seen["spaces"], seen["methods"] = sg.list_spaces(), sg.list_bridge_methods()
with contextlib.redirect_stdout(io.StringIO()) as listed:
    from spacegraph.cli import main
    main(["list"])
seen["cli_list"] = listed.getvalue()
seen["protocol"] = isinstance(sg.get_bridge_method("overlap-infonce")(), BridgeMethod)

from spacegraph_tactile import pin_map
samples, texts = load_demo_samples(), [row["text"] for row in load_digit_texts()]
tactile_text, audio_text = sg.load_space("tactile-text"), sg.load_space("digits-audio-text")
queries, query_labels = pin_map(samples["image_gallery"][::5]), samples["image_gallery_labels"][::5]
embeddings = tactile_text.encode("tactile", queries)
from spacegraph_tactile.space import TactileTextSpace
copy = TactileTextSpace.from_pretrained(tactile_text.save_pretrained(sys.argv[1] + "/space"))
seen["space"] = {
    "round_trip": copy.spec == tactile_text.spec and bool((copy.encode("tactile", queries) == embeddings).all()),
    "modalities": [m.value for m in tactile_text.spec.modalities], "dim": tactile_text.spec.dim,
    "fingerprint": tactile_text.spec.fingerprint, "shape": list(embeddings.shape),
    "norms": [float(embeddings.norm(dim=1).min()), float(embeddings.norm(dim=1).max())],
    "bad_item": refusal(lambda: tactile_text.encode("tactile", [queries[0], np.zeros((5, 5))])),
}
features = BridgeFeatures(
    tactile_text.encode("text", texts), audio_text.encode("text", texts),
    tactile_text.encode("tactile", pin_map(samples["image_memory"])),
    audio_text.encode("audio", samples["audio_memory_paths"][::2]),
)
graph = sg.SpaceGraph([tactile_text, audio_text])
small = {"hidden_dim": 128, "out_dim": 64, "steps": 150, "batch_size": 128}
for method, config in (("cmcr", small), ("overlap-infonce", {"steps": 150})):
    graph.train_bridge("tactile-text", "digits-audio-text", overlap="text", features=features, method=method,
                       config=config, name=f"tactile+audio {method}", show_progress_bar=False)
audio, audio_labels = samples["audio_query_paths"], samples["audio_query_labels"]
seen["routes"] = {
    route.bridges[0].card.method: {"hops": route.hops, "mAP": mean_ap(route.similarity(queries, audio), query_labels, audio_labels)}
    for route in graph.plan("tactile", "audio").routes
}
back = graph.connect("audio", "tactile")
seen["audio_to_tactile_mAP"] = mean_ap(back.similarity(audio, queries), audio_labels, query_labels)
chosen = graph.connect("tactile", "audio")
saved = chosen.bridges[0].save(sys.argv[1] + "/bridge")
reloaded = sg.SpaceGraph([sg.load_space("tactile-text"), audio_text], [sg.Bridge.load(saved)])
seen["chosen"] = chosen.bridges[0].card.method
seen["reloaded_same_scores"] = bool(
    (reloaded.connect("tactile", "audio").similarity(queries, audio[:20]) - chosen.similarity(queries, audio[:20])).abs().max() < 1e-5
)
print(json.dumps(seen))
"""


def _env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args], check=False, env=_env(site), cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed (not editable) by pip into a temporary folder, offline, from a copy of its source."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PACKAGE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [*command, "--target", str(target), str(source)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"pip cannot build the plugin package offline here: {result.stderr.strip()[-500:]}")
    return target


@pytest.fixture(scope="module")
def scenario(site: Path) -> dict:
    result = _run(site, "-c", SCENARIO, str(site.parent / "saved"), cwd=site.parent)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_lists_the_plugin(scenario: dict) -> None:
    listed = scenario["cli_list"]
    assert "tactile-text" in listed.split("spaces:")[1].split("\n")[0]
    assert "overlap-infonce" in listed.split("bridge methods:")[1]


def test_registries_list_the_plugin(scenario: dict) -> None:
    assert "tactile-text" in scenario["spaces"] and "digits-audio-text" in scenario["spaces"]
    assert {"cmcr", "overlap-infonce"} <= set(scenario["methods"])
    assert scenario["protocol"]


def test_modality_comes_from_the_entry_point(scenario: dict) -> None:
    assert not scenario["known_before_lookup"]  # read from the entry point on first use, not imported before
    assert scenario["modality"] == {
        "value": "tactile",
        "description": "tactile pin-array pressure maps (7x7 pins, heights in [0, 1])",
        "same": True,
    }
    typo = scenario["typo"]
    assert typo["type"] == "UnknownModalityError" and typo["is_value_error"]
    assert "closest: 'tactile'" in typo["message"] and "known modalities: text" in typo["message"]


def test_space_loads_and_encodes_pin_maps(scenario: dict) -> None:
    space = scenario["space"]
    assert space["modalities"] == ["tactile", "text"] and space["dim"] == 32
    assert space["round_trip"]  # save_pretrained / from_pretrained, from ModelSpace
    assert space["fingerprint"].startswith("sha256:")
    assert space["shape"] == [200, 32]
    assert space["norms"] == pytest.approx([1.0, 1.0], abs=1e-5)
    bad = space["bad_item"]
    assert bad["type"] == "SpacegraphValueError" and bad["is_value_error"]
    assert "tactile item 1: shape [5, 5]" in bad["message"] and "[7, 7]" in bad["message"]


def test_tactile_routes_to_spoken_digits(scenario: dict) -> None:
    """Ten balanced digit classes: a random ranking scores a mAP of about 0.1."""
    routes = scenario["routes"]
    assert set(routes) == {"cmcr", "overlap-infonce"}
    assert all(route["hops"] == 2 for route in routes.values())
    assert routes["cmcr"]["mAP"] > 0.5 and scenario["audio_to_tactile_mAP"] > 0.5
    assert routes["overlap-infonce"]["mAP"] > 0.15
    assert scenario["chosen"] == "cmcr"  # the planner ranks by the label-free estimate
    assert scenario["reloaded_same_scores"]


def test_training_script_writes_loadable_weights(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "weights"
    code = (
        "import sys, json\n"
        "from spacegraph_tactile.train import main\n"
        "from spacegraph_tactile.space import TactileTextSpace\n"
        "main(['--out', sys.argv[1], '--steps', '20', '--batch-size', '64'])\n"
        "print(json.dumps({'name': TactileTextSpace(sys.argv[1]).spec.name}))\n"
    )
    result = _run(site, "-c", code, str(out), cwd=tmp_path)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"name": "tactile-text"}
    assert sorted(p.name for p in out.iterdir()) == [
        OWNERSHIP,
        "config.json",
        "model.safetensors",
        "training_report.json",
    ]
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 20 and report["train_images"] == 1000 and 0 <= report["gallery_zero_shot_accuracy"] <= 1


def test_shipped_weights_are_tiny_and_reported() -> None:
    weights = PACKAGE / "src" / "spacegraph_tactile" / "weights" / "tactile-text"
    assert (weights / "model.safetensors").stat().st_size < 500_000
    report = json.loads((weights / "training_report.json").read_text())
    assert report["gallery_zero_shot_accuracy"] > 0.5  # ten digits: chance is 0.1


def test_plugin_imports_only_public_spacegraph() -> None:
    for path in sorted((PACKAGE / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            private = [name for name in names if name.startswith("spacegraph._")]
            assert not private, f"{path.name} imports {private}; a plugin uses spacegraph and spacegraph.plugin only"
