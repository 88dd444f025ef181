"""Bridge and model artifacts: NaN weights refused on load and import, Point-BERT fingerprints cover the config, saves
never delete what they did not write, card dims checked against the weights' header before anything is allocated,
inconsistent cards and corrupt files refused."""

import copy
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from spacegraph_bridges.released import import_released_cmcr
from spacegraph_spaces.pointbert import PointBertSpace

import spacegraph as sg
from spacegraph._atomic import MARKER, OWNERSHIP, SaveRefusedError
from spacegraph._bridge import SpaceRef
from tests.bridges.test_released_checkpoints import CLAP, CLIP, released_clap_clip_state
from tests.conftest import ToySpace
from tests.core.test_graph_connects_and_plans import make_bridge
from tests.spaces.test_pointbert_space import TINY

OWN = [OWNERSHIP, "bridge.json", "heads.safetensors"]


@pytest.fixture(scope="module")
def trained(toy_spaces_once):
    return make_bridge(*toy_spaces_once)


@pytest.fixture(scope="module")
def toy_spaces_once():
    return ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)


@pytest.fixture
def bridge(trained):
    return copy.deepcopy(trained)  # a test may change its weights


@pytest.fixture
def saved(bridge, tmp_path):
    return bridge.save(tmp_path / "bridge")


def set_tensor(folder, key, value):
    state = load_file(str(folder / "heads.safetensors"))
    state[key] = value(state[key])
    save_file(state, str(folder / "heads.safetensors"))


def edit_card(folder, **fields):
    card = json.loads((folder / "bridge.json").read_text())
    (folder / "bridge.json").write_text(json.dumps({**card, **fields}))
    return card


def card_fields(x, y, **overrides):
    heads = {s.name: sg.HeadSpec(in_dim=s.spec.dim, hidden_dim=8, out_dim=4) for s in (x, y)}
    fields = {
        "library_version": sg.__version__,
        "name": f"{x.name}+{y.name}",
        "method": "hand-made",
        "spaces": (SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        "overlap": "text",
        "heads": heads,
    }
    return {**fields, **overrides}


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# -- NaN bridges are refused on load/import


def test_load_refuses_nan_weights(saved):
    set_tensor(saved, "toy-ti/net.3.weight", lambda t: t.index_fill(0, torch.tensor([2]), float("nan")))
    with pytest.raises(ValueError, match=r"heads.safetensors: toy-ti/net.3.weight contains NaN or inf"):
        sg.Bridge.load(saved)


def test_load_refuses_negative_running_var_and_inf_running_mean(saved):
    set_tensor(saved, "toy-at/net.1.running_var", lambda t: -t)
    with pytest.raises(ValueError, match=r"toy-at/net.1.running_var has negative values"):
        sg.Bridge.load(saved)
    set_tensor(saved, "toy-at/net.1.running_var", lambda t: -t)
    set_tensor(saved, "toy-at/net.4.running_mean", lambda t: t.index_fill(0, torch.tensor([0]), float("inf")))
    with pytest.raises(ValueError, match=r"toy-at/net.4.running_mean contains NaN or inf"):
        sg.Bridge.load(saved)


def test_float64_weights_that_overflow_float32_are_refused(saved):
    set_tensor(saved, "toy-at/net.0.weight", lambda t: t.double() * 1e300)
    with pytest.raises(ValueError, match=r"toy-at/net.0.weight contains NaN or inf"):
        sg.Bridge.load(saved)


def test_released_checkpoint_with_nan_or_negative_variance_is_refused(tmp_path):
    path = tmp_path / "clap_clip.pt"
    state = released_clap_clip_state()
    state["Head_A.net2.0.weight"][0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"clap_clip.pt: Head_A.net2.0.weight contains NaN or inf"):
        import_released_cmcr(path, "clap_clip", CLIP, CLAP)
    state = released_clap_clip_state()
    state["Head_B.net1.1.running_var"][3] = -0.5
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"Head_B.net1.1.running_var has negative values"):
        import_released_cmcr(path, "clap_clip", CLIP, CLAP)


def test_check_finite_save_and_project_refuse_a_diverged_bridge(bridge, tmp_path):
    bridge.check_finite()  # a trained bridge passes
    with torch.no_grad():
        bridge.head("toy-at").net[0].weight.fill_(3e38)  # finite weights whose output overflows float32
    with pytest.raises(ValueError, match=r"bridge 'toy-at\+toy-ti': its head for 'toy-at' gave NaN or inf"):
        bridge.project("toy-at", torch.full((4, 6), 6**-0.5))
    with torch.no_grad():
        bridge.head("toy-at").net[1].running_var[0] = float("nan")
    with pytest.raises(ValueError, match=r"bridge 'toy-at\+toy-ti': toy-at/net.1.running_var contains NaN"):
        bridge.check_finite()
    with pytest.raises(ValueError, match="contains NaN"):
        bridge.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


# -- Point-BERT fingerprints cover the config


def test_pointbert_config_change_changes_the_fingerprint(tmp_path):
    space = PointBertSpace(config=TINY, seed=1)
    fewer_points = PointBertSpace(config={**TINY, "npoints": 128}, seed=1)
    fewer_groups = PointBertSpace(config={**TINY, "num_group": 8}, seed=1)
    assert all(
        torch.equal(a, b) for a, b in zip(space.model.state_dict().values(), fewer_points.model.state_dict().values())
    )
    fingerprints = {s.spec.fingerprint for s in (space, fewer_points, fewer_groups)}
    assert len(fingerprints) == 3
    # Editing config.json of a saved space (same weights) gives another fingerprint; the same folder, the same one.
    folder = space.save(tmp_path / "pb")
    assert PointBertSpace(folder).spec.fingerprint == space.spec.fingerprint
    card = json.loads((folder / "config.json").read_text())
    card["config"]["group_size"] = 4
    (folder / "config.json").write_text(json.dumps(card))
    assert PointBertSpace(folder).spec.fingerprint not in fingerprints | {space.spec.fingerprint}


# -- saves never delete what they did not write


def test_save_refuses_a_folder_holding_user_files(bridge, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "bridge.json").write_text("{}")
    with pytest.raises(
        SaveRefusedError, match=r"did not write or that changed since \(bridge.json, notes.txt\)"
    ) as info:
        bridge.save(folder)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, ValueError)
    assert listing(folder) == ["bridge.json", "notes.txt"] and (folder / "notes.txt").read_text() == "my notes"
    assert listing(tmp_path) == ["mine"]


def save_pretrained_bridge(bridge, folder, **kwargs):
    return bridge.save_pretrained(folder, **kwargs)


def save_index(bridge, folder, **kwargs):
    return sg.SearchIndex.build(torch.eye(4)).save(folder, **kwargs)


def save_pointbert(bridge, folder, **kwargs):
    return PointBertSpace(config=TINY, seed=1).save_pretrained(folder, **kwargs)


SAVERS = [sg.Bridge.save, save_pretrained_bridge, save_index, save_pointbert]


@pytest.mark.parametrize("save", SAVERS, ids=lambda save: save.__name__)
@pytest.mark.parametrize("name", ["README.md", "config.json", "ids.json", "bridge.json", "model.safetensors"])
def test_a_users_file_named_like_an_artifacts_own_is_never_replaced(bridge, tmp_path, save, name):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text("mine")
    with pytest.raises(SaveRefusedError, match=rf"\({re.escape(name)}\).*pass overwrite=True"):
        save(bridge, folder)
    assert listing(folder) == [name] and (folder / name).read_text() == "mine"


@pytest.mark.parametrize("save", SAVERS, ids=lambda save: save.__name__)
def test_a_save_replaces_its_own_save_but_not_one_edited_since(bridge, tmp_path, save):
    folder = tmp_path / "saved"
    save(bridge, folder)
    save(bridge, folder)
    edited = min(p for p in folder.iterdir() if p.name != OWNERSHIP)
    edited.write_bytes(edited.read_bytes() + b" ")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SaveRefusedError, match=rf"\({re.escape(edited.name)}, notes.txt\)"):
        save(bridge, folder)
    assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_folder_that_is_not_spacegraphs(bridge, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("mine")
    bridge.save(folder, overwrite=True)
    assert listing(folder) == OWN and sg.Bridge.load(folder).card == bridge.card


def test_a_folder_saved_without_a_record_of_its_files_is_replaced_only_when_asked(bridge, saved):
    """A folder saved by an earlier version (no record) cannot be told from a user's folder of the same names."""
    (saved / OWNERSHIP).unlink()
    with pytest.raises(SaveRefusedError, match=r"bridge.json, heads.safetensors.*overwrite=True"):
        bridge.save(saved)
    bridge.save(saved, overwrite=True)
    assert listing(saved) == OWN


def test_links_and_special_files_in_a_saved_folder_are_not_its_own(bridge, saved, tmp_path):
    (tmp_path / "elsewhere.txt").write_text("mine")
    (saved / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    os.mkfifo(saved / "pipe")
    with pytest.raises(SaveRefusedError, match=r"\(link.txt, pipe\)"):
        bridge.save(saved)
    assert (tmp_path / "elsewhere.txt").read_text() == "mine"


def test_a_regular_file_or_link_at_the_path_is_not_replaced(bridge, tmp_path):
    (tmp_path / "file").write_text("data")
    with pytest.raises(FileExistsError, match="it is a file, not a folder"):
        bridge.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "data"
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError, match="it is a link"):
        bridge.save(tmp_path / "link")
    with pytest.raises(ValueError, match="its parent folder cannot be made"):
        bridge.save(tmp_path / "file" / "bridge")
    assert listing(tmp_path) == ["file", "link", "target"] and listing(tmp_path / "target") == []


def test_replacing_a_saved_bridge_keeps_user_siblings_and_leaves_nothing(bridge, saved, tmp_path):
    user_old = tmp_path / ".bridge.old"
    user_old.mkdir()
    (user_old / "keep.txt").write_text("mine")
    lookalike = tmp_path / ".bridge.spacegraph-0123456789ab.tmp"  # our name pattern, but no marker: not ours
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine too")
    (tmp_path / "notes.txt").write_text("beside")
    other = copy.deepcopy(bridge)
    other.card = other.card.model_copy(update={"quality": {**other.card.quality, "score": 0.5}})
    other.save(saved)
    assert sg.Bridge.load(saved).card == other.card and listing(saved) == OWN
    assert listing(tmp_path) == [".bridge.old", ".bridge.spacegraph-0123456789ab.tmp", "bridge", "notes.txt"]
    assert (user_old / "keep.txt").read_text() == "mine" and (lookalike / "keep.txt").read_text() == "mine too"


def dead_pid():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_leftovers_of_a_killed_save_are_removed_and_an_interrupted_swap_is_restored(bridge, saved, tmp_path):
    pid = dead_pid()
    # A kill between the two renames of a swap: the folder sits complete in its old box, the new one in its tmp box.
    old_box = tmp_path / ".bridge.spacegraph-aaaaaaaaaaaa.old"
    tmp_box = tmp_path / ".bridge.spacegraph-bbbbbbbbbbbb.tmp"
    for box in (old_box, tmp_box):
        box.mkdir()
        (box / MARKER).write_text(f"{socket.gethostname()}\n{pid}\n")
    saved.rename(old_box / "bridge")
    (tmp_box / "bridge").mkdir()
    (tmp_box / "bridge" / "bridge.json").write_text("{half")
    empty_box = tmp_path / ".bridge.spacegraph-cccccccccccc.tmp"  # killed right after making its box
    empty_box.mkdir()
    loaded = sg.Bridge.load(saved)
    assert loaded.fingerprint == bridge.fingerprint and listing(saved) == OWN
    bridge.save(saved)
    assert listing(tmp_path) == ["bridge"] and listing(saved) == OWN


def test_a_running_saves_boxes_are_left_alone(bridge, saved, tmp_path):
    box = tmp_path / ".bridge.spacegraph-dddddddddddd.tmp"
    box.mkdir()
    (box / MARKER).write_text(f"{socket.gethostname()}\n{os.getpid()}\n")
    bridge.save(saved)
    assert box.is_dir()


def test_joint_and_pointbert_saves_refuse_user_files(toy_spaces, bridge, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SaveRefusedError, match="notes.txt"):
        sg.JointSpace(bridge, toy_spaces).save(folder)
    space = PointBertSpace(config=TINY, seed=1)
    with pytest.raises(SaveRefusedError, match=r"\(notes.txt\)"):
        space.save(folder)
    assert listing(folder) == ["notes.txt"]
    space.save(tmp_path / "pb")
    space.save(tmp_path / "pb")
    assert listing(tmp_path / "pb") == [OWNERSHIP, "config.json", "model.safetensors"]
    assert listing(tmp_path) == ["mine", "pb"]


# -- card dims against the weights' header


@pytest.mark.parametrize("hidden_dim", [2_000_000, 100_000_000, 2**62])
def test_a_huge_hidden_dim_is_refused_before_allocating(saved, monkeypatch, hidden_dim):
    card = json.loads((saved / "bridge.json").read_text())
    card["heads"]["toy-at"]["hidden_dim"] = hidden_dim
    (saved / "bridge.json").write_text(json.dumps(card))
    monkeypatch.setattr(sg.Bridge, "__init__", lambda *a: pytest.fail("heads were allocated before the check"))
    with pytest.raises(ValueError, match=r"heads.toy-at.hidden_dim: Input should be less than or equal to 1048576"):
        sg.Bridge.load(saved)


def test_missing_and_extra_tensors_are_refused(saved):
    state = load_file(str(saved / "heads.safetensors"))
    del state["toy-ti/net.4.running_var"]
    state["toy-ti/extra"] = torch.zeros(2)
    save_file(state, str(saved / "heads.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['toy-ti/net.4.running_var'\]; unexpected keys"):
        sg.Bridge.load(saved)


# -- inconsistent cards, corrupt files


def test_inconsistent_cards_are_refused(toy_spaces):
    x, y = toy_spaces
    sg.BridgeCard(**card_fields(x, y))  # consistent
    odd = ToySpace("odd", ("audio",), 6)
    cases = {
        "format_version": ({"format_version": 0}, "format_version"),
        "negative format_version": ({"format_version": -3}, "format_version"),
        "overlap": ({"overlap": "depth"}, "overlap 'depth': neither space has it"),
        "in_dim": (
            {"heads": {"toy-at": sg.HeadSpec(in_dim=5, out_dim=4), "toy-ti": sg.HeadSpec(in_dim=10, out_dim=4)}},
            r"heads\['toy-at'\].in_dim is 5, but space 'toy-at' is 6-d",
        ),
        "out_dims": (
            {"heads": {"toy-at": sg.HeadSpec(in_dim=6, out_dim=4), "toy-ti": sg.HeadSpec(in_dim=10, out_dim=8)}},
            r"out_dim differs between heads \(\[4, 8\]\)",
        ),
        "extend out_dim": (
            {"kind": "extend", "heads": {"toy-at": sg.HeadSpec(in_dim=6, out_dim=4)}},
            "out_dim is 4, but the extend target 'toy-ti' is 10-d",
        ),
        "extend heads": (
            {"kind": "extend"},
            r"this extend bridge has heads for \['toy-at'\], got \['toy-at', 'toy-ti'\]",
        ),
        "same space": ({"spaces": (SpaceRef.of(x.spec), SpaceRef.of(x.spec))}, "both are 'toy-at'"),
        "dim 0": ({"spaces": (SpaceRef.of(x.spec), {**SpaceRef.of(odd.spec).model_dump(), "dim": 0})}, "dim"),
        "empty name": ({"name": " "}, "bridge name ' ' is refused: it is empty"),
        "traversal": ({"name": "../../x"}, "is refused: as a path it is absolute or holds a '.' or '..'"),
        "absolute": ({"name": "/abs/path"}, "is refused: as a path it is absolute"),
        "control": ({"name": "a\nb"}, "control character"),
    }
    for what, (overrides, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            sg.BridgeCard(**card_fields(x, y, **overrides))
            pytest.fail(what)
    for name in ("digits-audio-text+digits-image-text", "clap+openclip:ViT-B/32", "toy-at->toy-ti", "ulip2+clip:k"):
        assert sg.BridgeCard(**card_fields(x, y, name=name)).name == name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", r"bridge.json: not a readable JSON bridge card"),
        (b"\xff\xfe\x00", r"bridge.json: not a readable JSON bridge card"),
        (b"[1, 2]", r"bridge card .*bridge.json\n.*valid dictionary"),
        (b'{"format_version": 1}', r"validation error\(s\) for bridge card .*bridge.json\n(.|\n)*library_version"),
    ],
)
def test_corrupt_cards_name_the_file(saved, content, message):
    (saved / "bridge.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        sg.Bridge.load(saved)


def test_an_edited_card_names_the_file_and_field(saved):
    edit_card(saved, overlap="depth")
    with pytest.raises(ValueError, match=r"for bridge card .*bridge.json\n(.|\n)*overlap 'depth'"):
        sg.Bridge.load(saved)


@pytest.mark.parametrize("cut", [0, 7, 40, -5])
def test_truncated_weights_name_the_file(saved, cut):
    weights = saved / "heads.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"heads.safetensors: not a readable safetensors file"):
        sg.Bridge.load(saved)


def test_corrupt_pointbert_folders_name_the_file(tmp_path):
    space = PointBertSpace(config=TINY, seed=1)
    folder = space.save(tmp_path / "pb")
    config = json.loads((folder / "config.json").read_text())
    cases = [
        (b"\xff", r"config.json is not a valid saved PointBertSpace config: not readable JSON"),
        (b"[]", r"config.json is not a valid saved PointBertSpace config: format 'a JSON list'"),
        (
            json.dumps({**config, "name": ""}).encode(),
            r"config.json is not a valid saved PointBertSpace config(.|\n)*name",
        ),
        (
            json.dumps({**config, "config": {**TINY, "depth": 3}}).encode(),
            r"model.safetensors does not match .*missing 11 ",
        ),
        (
            json.dumps({**config, "config": {**TINY, "trans_dim": 100_000, "num_heads": 1}}).encode(),
            r"model.safetensors: \d+ shapes differ",
        ),
    ]
    for content, message in cases:
        (folder / "config.json").write_bytes(content)
        with pytest.raises(ValueError, match=message):
            PointBertSpace(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors file"):
        PointBertSpace(folder)
