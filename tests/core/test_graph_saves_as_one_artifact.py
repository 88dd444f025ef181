"""A graph saved as one artifact (graph.json, bridges/, README.md, graph.png): its spaces by reference, rebuilt and
checked by fingerprint; its bridges, calibrations and route estimates kept; the same routes and embeddings bit for
bit, here and in a fresh process; unsavable spaces, damaged files and users' files refused clearly."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from spacegraph_spaces.digits import DigitsImageTextSpace

import spacegraph as sg
from spacegraph._atomic import OWNERSHIP
from spacegraph._registry import SPACES
from tests.conftest import ToySpace, random_unit
from tests.core.test_graph_connects_and_plans import make_bridge

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub.file_download import repo_folder_name

BRIDGE = "digits-audio-text+digits-image-text"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TOY_PLUGIN = "toy-graph-space"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    """The two shipped digits spaces, built by load_space, and a quick bridge between them."""
    audio_text, image_text = sg.load_space("digits-audio-text"), sg.load_space("digits-image-text")
    return audio_text, image_text, make_bridge(audio_text, image_text)


@pytest.fixture
def graph(digits):
    audio_text, image_text, bridge = digits
    return sg.SpaceGraph([audio_text, image_text], [copy.deepcopy(bridge)])  # a test may calibrate its card


@pytest.fixture
def saved(graph, tmp_path):
    return graph.save_pretrained(tmp_path / "graph")


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    return {
        "audio": torch.from_numpy(rng.normal(size=(3, 8000)).astype(np.float32)),
        "image": torch.from_numpy(rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)),
    }


def embeddings(graph, inputs):
    route = graph.connect("audio", "image")
    return repr(route), {
        "audio": route.encode("audio", list(inputs["audio"].numpy())),
        "image": route.encode("image", list(inputs["image"].numpy())),
        "projected": route.project("audio", random_unit(4, 64, 9)),
    }


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def edit_graph_file(folder, edit):
    path = folder / "graph.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def toy_space(name, modalities, dim, seed=0, extra=None):
    """A space plugin of toy spaces; ``extra`` is taken and ignored (an argument of any kind)."""
    return ToySpace(name, tuple(modalities), dim, seed=seed)


@pytest.fixture
def toy_plugin(monkeypatch):
    monkeypatch.setitem(SPACES._factories, TOY_PLUGIN, toy_space)
    return TOY_PLUGIN


# ---------------------------------------------------------------- round trips


def test_a_saved_graph_loads_to_the_same_routes_and_embeddings(graph, saved, inputs):
    listed = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file())
    assert listed == [OWNERSHIP, "README.md", f"bridges/{BRIDGE}/{OWNERSHIP}", f"bridges/{BRIDGE}/bridge.json",
                      f"bridges/{BRIDGE}/heads.safetensors", "graph.json", "graph.png"]  # fmt: skip
    recorded = json.loads((saved / "graph.json").read_text())
    assert recorded["spaces"][1] == {
        "name": "digits-image-text", "plugin": "digits-image-text", "args": [], "kwargs": {},
        "fingerprint": graph.space("digits-image-text").spec.fingerprint, "modalities": ["image", "text"], "dim": 96,
    }  # fmt: skip
    assert recorded["bridges"] == [{"name": BRIDGE, "folder": f"bridges/{BRIDGE}"}]
    loaded = sg.SpaceGraph.from_pretrained(saved)
    assert [s.spec for s in loaded.spaces] == [s.spec for s in graph.spaces]
    assert [b.card for b in loaded.bridges] == [b.card for b in graph.bridges]
    (route, expected), (route_again, got) = embeddings(graph, inputs), embeddings(loaded, inputs)
    assert route_again == route and same(got, expected)
    assert repr(sg.SpaceGraph.from_pretrained(str(saved))) == repr(graph)


def test_a_fresh_process_loads_it_to_the_same_embeddings_bit_for_bit(graph, saved, inputs, tmp_path):
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    code = (
        "import sys\n"
        "from safetensors.torch import load_file, save_file\n"
        "import spacegraph as sg\n"
        "from tests.core.test_graph_saves_as_one_artifact import embeddings\n"  # its conftest: one torch thread
        "route, out = embeddings(sg.SpaceGraph.from_pretrained(sys.argv[1]), load_file(sys.argv[2]))\n"
        "save_file(out, sys.argv[3])\n"
        "print(route)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "out.safetensors"
    done = subprocess.run(
        [sys.executable, "-c", code, str(saved), str(tmp_path / "inputs.safetensors"), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    route, expected = embeddings(graph, inputs)
    assert done.stdout.strip() == route and same(load_file(str(out)), expected)


def test_calibrated_cards_and_route_estimates_survive(graph, tmp_path):
    route = graph.connect("audio", "image")
    labels = np.arange(12) % 3
    probe = sg.Probe("digits-probe", random_unit(12, 64, 1), labels, random_unit(12, 96, 2), labels, features=True)
    graph.evaluate(route, probe, calibrate=True)
    key = json.dumps([{"modality": "audio", "space": "digits-audio-text", "bridges": [{"name": BRIDGE}]},
                      {"modality": "image", "space": "digits-image-text", "bridges": [{"name": BRIDGE}]}])  # fmt: skip
    graph._route_estimates = {key: {"estimate": 0.25, "estimate_low": 0.125, "hops": 2.0}}
    loaded = sg.SpaceGraph.from_pretrained(graph.save_pretrained(tmp_path / "graph"))
    card = loaded.bridges[0].card
    assert card.calibration is not None and card.calibration.probe == "digits-probe"
    assert card == graph.bridges[0].card and card.score_source == "probe 'digits-probe'"
    assert loaded._route_estimates == graph._route_estimates
    readme = (tmp_path / "graph" / "README.md").read_text()
    assert f"| {BRIDGE} | connect | digits-audio-text <-> digits-image-text | text | cmcr | {card.score:.4f} | " \
           f"probe 'digits-probe' | bridges/{BRIDGE} |" in readme  # fmt: skip
    assert f"| digits-audio-text:audio -> {BRIDGE}; digits-image-text:image -> {BRIDGE} | estimate 0.25, " in readme


def test_readme_is_a_model_card_with_the_picture_and_the_tables(graph, saved):
    readme = (saved / "README.md").read_text()
    card = huggingface_hub.ModelCard(readme)
    assert card.data.library_name == "spacegraph"
    assert {"spacegraph", "audio", "image", "text"} <= set(card.data.tags)
    assert "![The graph" in readme and (saved / "graph.png").read_bytes().startswith(b"\x89PNG")
    for space in graph.spaces:
        assert f"| {space.name} | {space.name} | (none) | {space.spec.fingerprint} | {space.spec.dim} |" in readme
    assert "| bridge | kind | joins | overlap | method | quality | quality source | folder |" in readme
    assert "label-free estimate" in readme and "None recorded." in readme
    assert f"sg.SpaceGraph.from_pretrained({str(saved)!r})" in readme and "graph.connect('audio', 'image')" in readme


def test_without_matplotlib_the_readme_says_there_is_no_picture(graph, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as without the notebook extra
    folder = graph.save_pretrained(tmp_path / "graph")
    assert not (folder / "graph.png").exists()
    assert "No picture: matplotlib is not installed" in (folder / "README.md").read_text()


def test_plugin_spaces_keep_their_arguments_and_paths_become_absolute(toy_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = sg.load_space(toy_plugin, "toy-at", ("audio", "text"), 6, seed=1, extra=Path("weights/here"))
    y = sg.load_space(toy_plugin, "toy-ti", ["text", "image"], 10, seed=2)
    reference = sg.space_reference(x)
    assert (reference.plugin, reference.args) == (toy_plugin, ["toy-at", ["audio", "text"], 6])
    assert reference.kwargs == {"seed": 1, "extra": str(tmp_path / "weights" / "here")}
    bridges = [make_bridge(x, y, name="toy/Joint"), make_bridge(x, y, name="toy/joint")]  # one folder each
    graph = sg.SpaceGraph([x, y], bridges)
    loaded = sg.SpaceGraph.from_pretrained(graph.save_pretrained("graph"))
    folders = [entry["folder"] for entry in json.loads(Path("graph/graph.json").read_text())["bridges"]]
    assert len({folder.casefold() for folder in folders}) == 2
    assert [bridge.name for bridge in loaded.bridges] == ["toy/Joint", "toy/joint"]
    route, route_again, audio = graph.connect("audio", "image"), loaded.connect("audio", "image"), torch.randn(3, 8)
    assert repr(route_again) == repr(route)
    assert torch.equal(route_again.encode("audio", audio), route.encode("audio", audio))


# ---------------------------------------------------------------- refused


def test_a_space_whose_fingerprint_differs_is_refused_naming_it(saved):
    recorded = edit_graph_file(saved, lambda data: data["spaces"][1].update(fingerprint="sha256:0000000000000000"))
    with pytest.raises(sg.FingerprintMismatchError) as info:
        sg.SpaceGraph.from_pretrained(saved)
    message = str(info.value)
    assert message.startswith(f"{recorded}: space 'digits-image-text': ")
    assert "sha256:0000000000000000" in message and DigitsImageTextSpace().spec.fingerprint in message


def test_weights_changed_under_a_saved_graph_are_refused(digits, tmp_path):
    weights = DigitsImageTextSpace().save_pretrained(tmp_path / "weights")
    audio_text = digits[0]
    image_text = sg.load_space("digits-image-text", weights_dir=weights)
    graph = sg.SpaceGraph([audio_text, image_text], [make_bridge(audio_text, image_text)])
    saved = graph.save_pretrained(tmp_path / "graph")
    assert json.loads((saved / "graph.json").read_text())["spaces"][1]["kwargs"] == {"weights_dir": str(weights)}
    changed = DigitsImageTextSpace(weights)
    with torch.no_grad():
        next(changed.model.parameters()).add_(1e-3)
    changed.save_pretrained(weights)
    refused = (
        r"space 'digits-image-text': load_space\(\"digits-image-text\", weights_dir=.*\) built it with fingerprint"
    )
    with pytest.raises(sg.FingerprintMismatchError, match=refused + r" sha256:\w+, but the graph was saved with"):
        sg.SpaceGraph.from_pretrained(saved)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("spaces"), r"spaces: Field required"),
        (lambda d: d["spaces"][0].update(dim="64"), r"spaces\.0\.dim: Input should be a valid integer"),
        (lambda d: d.update(format_version=2), r"graph format 2 is newer than this spacegraph reads \(1\)"),
        (lambda d: d.update(format_version=0), r"format_version: Input should be 1"),
        (lambda d: d["bridges"][0].update(folder="../outside"), r"bridges\.0\.folder: .*a bridge's folder is bridges/"),
        (lambda d: d["bridges"][0].update(name="other"), r"bridge 'other' .* its folder holds bridge '"),
        (lambda d: d["route_estimates"].update(r={"estimate": "high"}), r"route_estimates\.r\.estimate: Input should"),
        (lambda d: d["spaces"][0].update(plugin="no-such"), r"space 'digits-audio-text': unknown space 'no-such'"),
    ],
)  # fmt: skip
def test_a_malformed_graph_file_is_refused_naming_it(saved, edit, expected):
    recorded = edit_graph_file(saved, edit)
    with pytest.raises(sg.SpacegraphError, match=expected) as info:
        sg.SpaceGraph.from_pretrained(saved)
    assert str(recorded) in str(info.value)


def test_a_missing_bridge_folder_or_unreadable_file_is_refused_and_extra_files_are_fine(saved):
    (saved / "notes.txt").write_text("mine")
    assert sg.SpaceGraph.from_pretrained(saved).bridges[0].name == BRIDGE  # a file beside the artifact is fine
    shutil.rmtree(saved / "bridges")
    missing = rf"graph.json: bridge '{re.escape(BRIDGE)}' in bridges/.*: no bridge.json, heads.safetensors there"
    with pytest.raises(FileNotFoundError, match=missing) as info:
        sg.SpaceGraph.from_pretrained(saved)
    assert isinstance(info.value, sg.SpacegraphError)
    (saved / "graph.json").write_text("{not json")
    with pytest.raises(sg.SpacegraphValueError, match=r"graph.json: not a readable JSON graph file"):
        sg.SpaceGraph.from_pretrained(saved)
    with pytest.raises(sg.SpacegraphFileNotFoundError, match=r"no graph.json there"):
        sg.SpaceGraph.from_pretrained(saved / "bridges")


def test_a_space_not_built_by_load_space_is_refused_at_save(digits, toy_plugin, tmp_path):
    direct = DigitsImageTextSpace()
    graph = sg.SpaceGraph([digits[0], direct])
    refused = r"'digits-image-text' cannot be saved by reference: it was not built by sg.load_space"
    with pytest.raises(sg.SpacegraphValueError, match=refused + r".*spaces=\{'digits-image-text': \(plugin, kwargs\)"):
        graph.save_pretrained(tmp_path / "graph")
    unsavable = sg.load_space(toy_plugin, "toy-at", ["audio", "text"], 6, extra=torch.zeros(2))
    refused = r"'toy-at' cannot be saved by reference: load_space\('toy-graph-space', ...\) was given an argument "
    with pytest.raises(sg.SpacegraphValueError, match=refused + r"JSON cannot hold: argument 'extra' \(Tensor"):
        sg.SpaceGraph([unsavable]).save_pretrained(tmp_path / "graph")
    with pytest.raises(sg.SpacegraphValueError, match=r"spaces= names \['nothing'\], not spaces of this graph"):
        graph.save_pretrained(tmp_path / "graph", spaces={"nothing": ("digits-image-text", {})})
    assert not (tmp_path / "graph").exists()
    saved = graph.save_pretrained(tmp_path / "graph", spaces={"digits-image-text": ("digits-image-text", {})})
    assert sg.SpaceGraph.from_pretrained(saved).space("digits-image-text").spec == direct.spec


def test_save_into_a_folder_holding_a_users_file_is_refused_unless_overwrite(graph, saved):
    graph.save_pretrained(saved)  # its own save: replaced
    (saved / "notes.txt").write_text("mine")
    with pytest.raises(sg.SaveRefusedError, match="notes.txt"):
        graph.save_pretrained(saved)
    assert (saved / "notes.txt").exists()
    graph.save_pretrained(saved, overwrite=True)
    assert not (saved / "notes.txt").exists() and (saved / "graph.json").is_file()


# ---------------------------------------------------------------- the Hub, offline


def test_push_to_hub_uploads_the_folder_without_the_ownership_records(graph, monkeypatch):
    uploads = []

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        kept = [name for name in files if not any(fnmatchcase(name, p) for p in kwargs["ignore_patterns"])]
        uploads.append((kwargs, kept, (folder / "README.md").read_text()))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert graph.push_to_hub("me/digits-graph", commit_message="a graph") == "commit-info"
    ((kwargs, files, readme),) = uploads
    assert (kwargs["repo_id"], kwargs["commit_message"]) == ("me/digits-graph", "a graph")
    assert files == ["README.md", f"bridges/{BRIDGE}/bridge.json", f"bridges/{BRIDGE}/heads.safetensors",
                     "graph.json", "graph.png"]  # fmt: skip
    assert "sg.SpaceGraph.from_pretrained('me/digits-graph')" in readme


def test_a_graph_loads_from_a_hub_cache_offline(graph, saved, inputs, tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    repo = cache / repo_folder_name(repo_id="someone/digits-graph", repo_type="model")
    shutil.copytree(saved, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = sg.SpaceGraph.from_pretrained("someone/digits-graph")
    assert same(embeddings(loaded, inputs)[1], embeddings(graph, inputs)[1])
    with pytest.raises(FileNotFoundError, match="someone/digits-graph"):
        sg.SpaceGraph.from_pretrained("someone/digits-graph", revision="f" * 40)
