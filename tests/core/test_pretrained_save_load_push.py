"""save_pretrained / from_pretrained / push_to_hub for model spaces and bridges, offline: through a local folder,
through a pre-filled Hugging Face cache, and the generated README model card."""

import json
import os
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from spacegraph_spaces.data_files import ASSETS
from spacegraph_spaces.digits import DigitsAudioTextSpace, DigitsImageTextSpace
from spacegraph_spaces.digits_lowres import DigitsLowresSpace
from spacegraph_spaces.hf_clip import HFCLIPSpace
from spacegraph_spaces.openclip import OpenCLIPSpace
from spacegraph_spaces.pointbert import PointBertSpace
from spacegraph_spaces.shapes import ShapesImageTextSpace, ShapesPointImageSpace

import spacegraph as sg
from spacegraph._atomic import OWNERSHIP
from spacegraph.plugin import ModelSpace, SpacegraphError, SpaceRef
from tests.conftest import ToySpace, random_unit

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub.file_download import repo_folder_name

from tests.spaces.test_clip_spaces import write_tiny_hf_clip, write_tiny_openclip

REVISION = "0123456789abcdef0123456789abcdef01234567"
TINY_POINTBERT = {"depth": 1, "trans_dim": 16, "num_heads": 2, "num_group": 8, "group_size": 4, "npoints": 64}
SMALL_SPACES = [DigitsAudioTextSpace, DigitsImageTextSpace, DigitsLowresSpace, ShapesPointImageSpace]


def fill_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder``'s files out as huggingface_hub caches a download of ``repo_id`` at ``main``: the snapshot of
    one commit, and ``refs/main`` naming it."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    shutil.copytree(folder, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: nothing can be downloaded."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def bridge():
    """A connect bridge with a card as training writes one (heads built, not trained: fast and deterministic)."""
    x, y = ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)
    card = sg.BridgeCard(
        library_version=sg.__version__, name="toy-at+toy-ti", method="cmcr",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)), overlap="text",
        heads={"toy-at": sg.HeadSpec(in_dim=6, hidden_dim=8, out_dim=4),
               "toy-ti": sg.HeadSpec(in_dim=10, hidden_dim=8, out_dim=4)},
        training={"steps": 3, "hidden_dim": 8, "data_license": "CC-BY-4.0", "losses": [0.5] * 100},
        data={"overlap": 64, "memory_x": 32, "memory_y": 32},
        quality={"estimate": 0.4321, "held_out_R@1": 0.25},
    )  # fmt: skip
    torch.manual_seed(0)
    return sg.Bridge(card)


def same_bridge(a: sg.Bridge, b: sg.Bridge) -> bool:
    inputs = random_unit(5, 6, 7)
    return a.card == b.card and torch.equal(a.project("toy-at", inputs), b.project("toy-at", inputs))


# ---------------------------------------------------------------- model spaces


@pytest.mark.parametrize("space_class", SMALL_SPACES)
def test_small_space_round_trip_keeps_fingerprint_and_embeddings(space_class, tmp_path):
    space = space_class()
    folder = space.save_pretrained(tmp_path / "space")
    assert sorted(p.name for p in folder.iterdir()) == [OWNERSHIP, "config.json", "model.safetensors"]
    again = space_class.from_pretrained(folder)
    assert isinstance(again, ModelSpace) and again.spec == space.spec and again.config == space.config
    state, loaded = space.model.state_dict(), again.model.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[key], loaded[key]) for key in state)


def test_small_space_embeddings_survive_the_round_trip(tmp_path):
    space = DigitsImageTextSpace()
    again = DigitsImageTextSpace.from_pretrained(space.save_pretrained(tmp_path / "space"))
    assert torch.equal(again.encode("text", ["seven", "a four"]), space.encode("text", ["seven", "a four"]))


def test_shipped_assets_load_through_from_pretrained():
    """The shipped folders are already in the layout: from_pretrained reads them as they are."""
    space = ShapesImageTextSpace.from_pretrained(ASSETS / "shapes-image-text")
    assert space.spec == ShapesImageTextSpace().spec


def test_model_space_through_prefilled_hub_cache(tmp_path, hub_cache):
    space = PointBertSpace(config=TINY_POINTBERT, seed=3)
    fill_hub_cache(hub_cache, "someone/pointbert-tiny", space.save_pretrained(tmp_path / "saved"))
    shutil.rmtree(tmp_path / "saved")  # the cache is the only copy left
    loaded = PointBertSpace.from_pretrained("someone/pointbert-tiny")
    assert loaded.spec == space.spec and loaded.config == space.config
    cloud = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    assert torch.equal(loaded.encode("point_cloud", [cloud]), space.encode("point_cloud", [cloud]))
    assert PointBertSpace.from_pretrained("someone/pointbert-tiny", name="renamed").spec.name == "renamed"


def test_pointbert_save_is_save_pretrained(tmp_path):
    space = PointBertSpace(config=TINY_POINTBERT, seed=3)
    config = json.loads((space.save(tmp_path / "a") / "config.json").read_text())
    assert config == json.loads((space.save_pretrained(tmp_path / "b") / "config.json").read_text())
    assert config["format"] == "spacegraph-pointbert/1" and config["config"]["npoints"] == 64


def test_missing_repo_offline_is_a_clear_error(hub_cache):
    with pytest.raises(SpacegraphError, match=r"'nobody/nothing' is not a local folder.*HF_HUB_OFFLINE") as info:
        DigitsAudioTextSpace.from_pretrained("nobody/nothing")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(SpacegraphError, match=r"bridge files bridge.json, heads.safetensors was not found"):
        sg.Bridge.from_pretrained("nobody/nothing")


def test_missing_repo_error_in_a_fresh_process(tmp_path):
    """Nothing imported huggingface_hub's submodules before (pytest's own session may have)."""
    code = (
        "import spacegraph as sg\n"
        "try:\n    sg.Bridge.from_pretrained('nobody/nothing')\n"
        "except sg.SpacegraphFileNotFoundError as err:\n    print('refused:', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.startswith("refused: 'nobody/nothing' is not a local folder"), done.stderr[-2000:]


def test_a_path_is_always_a_local_folder(tmp_path, hub_cache):
    with pytest.raises(FileNotFoundError, match=r"no config.json, model.safetensors there"):
        DigitsAudioTextSpace.from_pretrained(tmp_path / "org" / "name")
    with pytest.raises(FileNotFoundError, match=r"not//a repo: no such folder, and not a Hub repo id"):
        DigitsAudioTextSpace.from_pretrained("not//a repo")


def test_a_mistyped_folder_says_so_with_or_without_the_hub_extra(tmp_path, monkeypatch):
    typo = str(tmp_path / "runs" / "demo" / "brigde")
    with pytest.raises(FileNotFoundError, match=r"brigde: no such folder, and not a Hub repo id"):
        sg.Bridge.from_pretrained(typo)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as without the [hub] extra
    with pytest.raises(FileNotFoundError, match="no such folder"):
        sg.Bridge.from_pretrained(typo)  # a path is never sent to the Hub, so the extra is not needed
    with pytest.raises(
        sg.MissingExtraError, match=r"demo/brigde: no such folder; to read it as a Hub repo id.*\[hub\]"
    ):
        sg.Bridge.from_pretrained("demo/brigde")


def test_wrapper_spaces_do_not_save_their_libraries_models(monkeypatch):
    space = object.__new__(HFCLIPSpace)
    with pytest.raises(TypeError, match="HFCLIPSpace loads its model through transformers"):
        space.save_pretrained("unused")
    with pytest.raises(ValueError, match="drop revision= "):
        HFCLIPSpace.from_pretrained("openai/clip-vit-base-patch32", revision="main")
    given = []
    monkeypatch.setattr(HFCLIPSpace, "__init__", lambda self, source, **kwargs: given.append((source, kwargs)))
    HFCLIPSpace.from_pretrained("openai/clip-vit-base-patch32", name="clip")
    assert given == [("openai/clip-vit-base-patch32", {"name": "clip"})]


def test_space_push_to_hub_uploads_the_saved_folder(monkeypatch):
    calls = record_hub_calls(monkeypatch)
    DigitsImageTextSpace().push_to_hub("me/digits-image-text", private=True)
    (create, upload) = calls
    assert create == ("create_repo", ("me/digits-image-text",), {"private": True, "exist_ok": True})
    assert upload[2]["repo_id"] == "me/digits-image-text"
    assert upload[3] == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------- bridges


def test_bridge_round_trip_through_local_folder(bridge, tmp_path):
    folder = bridge.save_pretrained(tmp_path / "bridge")
    assert sorted(p.name for p in folder.iterdir()) == [OWNERSHIP, "README.md", "bridge.json", "heads.safetensors"]
    assert same_bridge(sg.Bridge.from_pretrained(folder), bridge)
    assert same_bridge(sg.Bridge.from_pretrained(str(folder)), bridge)
    bridge.save(folder)  # a save_pretrained folder is the bridge's own: save replaces it
    assert not (folder / "README.md").exists()
    bridge.save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(sg.SaveRefusedError, match="notes.txt"):
        bridge.save_pretrained(folder)


def test_bridge_round_trip_through_prefilled_hub_cache(bridge, tmp_path, hub_cache):
    fill_hub_cache(hub_cache, "someone/toy-bridge", bridge.save_pretrained(tmp_path / "bridge"))
    shutil.rmtree(tmp_path / "bridge")
    assert same_bridge(sg.Bridge.from_pretrained("someone/toy-bridge"), bridge)
    assert same_bridge(sg.Bridge.from_pretrained("someone/toy-bridge", revision=REVISION), bridge)
    with pytest.raises(FileNotFoundError, match="someone/toy-bridge"):
        sg.Bridge.from_pretrained("someone/toy-bridge", revision="f" * 40)


def test_bridge_readme_card(bridge, tmp_path):
    readme = (bridge.save_pretrained(tmp_path / "bridge") / "README.md").read_text()
    card = huggingface_hub.ModelCard(readme)
    assert card.data.library_name == "spacegraph" and card.data.license == "cc-by-4.0"  # the data's, as an id
    assert card.data.data_license == "CC-BY-4.0"
    results = {(r.metric_name, r.dataset_name): r.metric_value for r in card.data.eval_results}
    assert results == {("estimated mAP", "training data (label-free)"): 0.4321, ("R@1", "held-out text data"): 0.25}
    assert card.data.model_name == bridge.name and "model-index:" in readme
    assert {"spacegraph", "bridge", "cmcr", "connect", "audio", "image", "text"} <= set(card.data.tags)
    for ref in bridge.card.spaces:
        assert f"| {ref.name} | {ref.fingerprint} | {ref.dim} |" in readme
    assert "## Overlap\n\nTrained on `text`" in readme
    assert "| steps | 3 |" in readme and "| hidden_dim | 8 |" in readme
    assert "| losses | (100 entries: see bridge.json) |" in readme
    assert "| overlap | 64 |" in readme and "| memory_x | 32 |" in readme
    assert "Licence of the data: CC-BY-4.0." in readme
    assert f"Planner score: {bridge.card.score:.4f} (source: label-free estimate)." in readme
    assert f"| estimate | {bridge.card.quality['estimate']:.4g} |" in readme


def test_bridge_readme_without_a_recorded_licence(bridge, tmp_path):
    unlicensed = sg.Bridge(bridge.card.model_copy(update={"training": {"steps": 3}}))
    unlicensed.load_state_dict(bridge.state_dict())
    readme = (unlicensed.save_pretrained(tmp_path / "bridge") / "README.md").read_text()
    assert huggingface_hub.ModelCard(readme).data.license is None
    assert "Licence of the data: not recorded" in readme


def test_bridge_card_records_its_own_licence_and_its_datas(bridge, tmp_path):
    licensed = sg.Bridge(bridge.card.model_copy(update={"license": "apache-2.0", "data_license": "FSDD: CC-BY-SA-4.0; "
                                                        "MNIST: BSD-3-Clause", "training": {"steps": 3}}))  # fmt: skip
    licensed.load_state_dict(bridge.state_dict())
    folder = licensed.save_pretrained(tmp_path / "bridge")
    data = huggingface_hub.ModelCard((folder / "README.md").read_text()).data
    assert (data.license, data.data_license) == ("apache-2.0", "FSDD: CC-BY-SA-4.0; MNIST: BSD-3-Clause")
    assert sg.Bridge.from_pretrained(folder).card.license == "apache-2.0"
    several = sg.Bridge(licensed.card.model_copy(update={"license": None}))
    several.load_state_dict(bridge.state_dict())
    data = huggingface_hub.ModelCard((several.save_pretrained(tmp_path / "b2") / "README.md").read_text()).data
    assert (data.license, data.license_name) == ("other", "FSDD: CC-BY-SA-4.0; MNIST: BSD-3-Clause")


def test_pushed_card_loads_from_its_repo_id_and_a_saved_one_from_its_folder(bridge, tmp_path, monkeypatch):
    readmes = []
    calls = record_hub_calls(monkeypatch)
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, **kwargs: readmes.append((Path(kwargs["folder_path"]) / "README.md").read_text()),
    )
    bridge.push_to_hub("me/toy-bridge")
    assert calls and "sg.Bridge.from_pretrained('me/toy-bridge')" in readmes[0]
    folder = bridge.save_pretrained(tmp_path / "saved")
    assert f"sg.Bridge.from_pretrained({str(folder)!r})" in (folder / "README.md").read_text()


def test_bridge_push_to_hub_uploads_card_weights_and_readme(bridge, monkeypatch):
    calls = record_hub_calls(monkeypatch)
    bridge.push_to_hub("me/toy-bridge", token="hf_test")
    (create, upload) = calls
    assert create[1] == ("me/toy-bridge",) and create[2]["exist_ok"] is True
    assert upload[2]["repo_id"] == "me/toy-bridge" and upload[2]["commit_message"]
    assert upload[3] == ["README.md", "bridge.json", "heads.safetensors"]
    assert upload[4] == "hf_test"


def test_push_to_hub_passes_revision_message_and_pull_request(bridge, monkeypatch):
    calls = record_hub_calls(monkeypatch)
    bridge.push_to_hub("me/toy-bridge", revision="dev", commit_message="retrained", create_pr=True)
    upload = calls[1][2]
    assert (upload["revision"], upload["commit_message"], upload["create_pr"]) == ("dev", "retrained", True)


def test_from_pretrained_passes_the_download_options(bridge, tmp_path, hub_cache, monkeypatch):
    fill_hub_cache(hub_cache, "someone/toy-bridge", bridge.save_pretrained(tmp_path / "bridge"))
    seen = []
    download = huggingface_hub.hf_hub_download

    def recording(repo_id, filename, **options):
        seen.append(options)
        return download(repo_id, filename, **{**options, "force_download": False})  # offline: the cache serves

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
    loaded = sg.Bridge.from_pretrained("someone/toy-bridge", token="hf_x", force_download=True, local_files_only=True)
    assert same_bridge(loaded, bridge)
    assert seen and all((o["token"], o["force_download"], o["local_files_only"]) == ("hf_x", True, True) for o in seen)


def record_hub_calls(monkeypatch) -> list[tuple]:
    """Replace the two HfApi calls push_to_hub makes (no network), recording their arguments and, for the upload,
    the files in the folder at the time that its ``ignore_patterns`` leave to upload."""
    calls: list[tuple] = []

    def create_repo(self, *args, **kwargs):
        calls.append(("create_repo", args, kwargs))

    def upload_folder(self, **kwargs):
        ignored = kwargs.get("ignore_patterns") or []
        files = sorted(
            p.name for p in Path(kwargs["folder_path"]).iterdir() if not any(fnmatch(p.name, i) for i in ignored)
        )
        calls.append(("upload_folder", (), kwargs, files, self.token))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


# ---------------------------------------------------------------- wrapper spaces: their libraries resolve the id


def test_wrapper_spaces_load_a_folder_and_a_cached_repo_through_their_library(tmp_path, hub_cache):
    oc_folder = tmp_path / "openclip"
    reference = OpenCLIPSpace(write_tiny_openclip(oc_folder, seed=0))
    assert OpenCLIPSpace.from_pretrained(oc_folder).spec.fingerprint == reference.spec.fingerprint
    fill_hub_cache(hub_cache, "someone/tiny-openclip", oc_folder)
    assert OpenCLIPSpace.from_pretrained("someone/tiny-openclip").spec.fingerprint == reference.spec.fingerprint

    hf_folder = Path(write_tiny_hf_clip(tmp_path / "hf-clip", seed=0))
    reference = HFCLIPSpace(str(hf_folder))
    fill_hub_cache(hub_cache, "someone/tiny-clip", hf_folder)
    cached = HFCLIPSpace.from_pretrained("someone/tiny-clip")
    assert cached.spec.fingerprint == reference.spec.fingerprint and cached.spec.name == "hf-clip:someone/tiny-clip"
