"""Issue 7, training, planner and CLI items: no NaN bridge gets a quality, no card fools the planner, and damaged
data files or unwritable outputs are one clear line from the CLI before any work is done."""

import gzip
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_unit
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from spacegraph_bridges.cmcr import CMCRConfig, CMCRMethod, check_heads, fit_heads
from spacegraph_spaces import digits_data, shapes_data
from spacegraph_spaces.data_files import read_npz, read_synsets

import spacegraph as sg
from spacegraph import cli
from spacegraph._bridge import Calibration, SpaceRef
from spacegraph._eval import pair_recall_at_1, retrieval_metrics

QUICK = {"steps": 20, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def toy_features(n=40, memory=20):
    return sg.BridgeFeatures(
        random_unit(n, 6, 0), random_unit(n, 10, 1), random_unit(memory, 6, 2), random_unit(memory, 10, 3)
    )


def train(toy_spaces, features, **config):
    x, y = toy_spaces
    return CMCRMethod().train(x.spec, y.spec, "text", features, {**QUICK, **config}, show_progress_bar=False)


# -- item 1: training never produces a non-finite bridge -------------------------------------------------------------
@pytest.mark.parametrize("setting", [{"lr": 1e6}, {"weight_decay": 1e9}])
def test_item1_a_diverging_run_stops_with_the_step_and_loss_parts(toy_spaces, setting):
    name, value = next(iter(setting.items()))
    with pytest.raises(ValueError, match=r"diverged at step \d+ of 20: the loss is not finite") as err:
        train(toy_spaces, toy_features(), **setting)
    message = str(err.value)
    assert "total=nan" in message and "inter=" in message and "intra=" in message
    assert f"{name} (now {value:g})" in message and "no bridge was made" in message


@pytest.mark.parametrize("field", ["noise_std", "lr", "weight_decay", "temperature", "memory_temperature"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_item1_config_refuses_nan_and_infinity_naming_the_field(field, value):
    with pytest.raises(ValidationError, match=rf"{field}\n  Input should be a finite number"):
        CMCRConfig(**{field: value})


def test_item1_a_memory_temperature_that_overflows_is_refused_before_training():
    with pytest.raises(ValueError, match="NaN or inf pseudo embeddings at memory_temperature=1e-45; raise it"):
        fit_heads(toy_features(), CMCRConfig(**QUICK, memory_temperature=1e-45), show_progress_bar=False)


def test_item1_heads_with_a_non_finite_statistic_are_refused_by_name():
    config = CMCRConfig(**QUICK, use_memory=False)
    fit = fit_heads(sg.BridgeFeatures(random_unit(40, 6, 0), random_unit(40, 10, 1)), config, show_progress_bar=False)
    check_heads(fit.head_x, fit.head_y, 19, config)
    fit.head_y.net[1].running_var[0] = math.inf
    fit.head_x.net[4].running_var[1] = -1.0
    with pytest.raises(
        ValueError,
        match=r"after step 19 of 20, head_x.net.4.running_var has negative values.*; "
        r"head_y.net.1.running_var contains NaN or inf; no bridge was made; lower lr",
    ):
        check_heads(fit.head_x, fit.head_y, 19, config)


def test_item1_nan_embeddings_get_an_error_not_a_positive_quality():
    nan_rows = torch.full((4, 3), math.nan)
    with pytest.raises(ValueError, match="pair_recall_at_1: the embeddings hold NaN or inf"):
        pair_recall_at_1(nan_rows, random_unit(4, 3, 0))  # argmax over NaN rows picked row 0: recall 0.25
    with pytest.raises(ValueError, match="retrieval_metrics: the similarities hold NaN or inf"):
        retrieval_metrics(torch.full((2, 3), math.nan), [0, 1], [0, 1, 1])


def test_item1_a_trained_bridge_is_finite_and_scored_in_the_unit_range(toy_spaces):
    bridge = train(toy_spaces, toy_features(), lr=10.0)  # large, but it trains
    assert all(torch.isfinite(t).all() for t in bridge.state_dict().values() if t.is_floating_point())
    assert torch.isfinite(bridge.project("toy-at", random_unit(3, 6, 5))).all()
    assert 0 <= bridge.card.quality["held_out_R@1"] <= 1 and 0 <= bridge.card.quality["estimate"] <= 1


# -- item 10 (training inputs): BridgeFeatures ----------------------------------------------------------------------
def test_item10_numpy_features_are_refused_with_the_fix():
    array = np.zeros((4, 6), dtype=np.float32)
    with pytest.raises(TypeError, match=r"overlap_x: expected a torch.Tensor .*got ndarray.*torch.from_numpy"):
        sg.BridgeFeatures(array, random_unit(4, 10, 1))
    with pytest.raises(TypeError, match="memory_y: expected a torch.Tensor"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1), random_unit(2, 6, 2), [[0.0] * 10])


def test_item10_features_that_require_grad_train_as_constants(toy_spaces):
    overlap_x = random_unit(40, 6, 0).requires_grad_()
    features = sg.BridgeFeatures(overlap_x, random_unit(40, 10, 1), random_unit(20, 6, 2), random_unit(20, 10, 3))
    assert not features.overlap_x.requires_grad
    torch.testing.assert_close(features.overlap_x, overlap_x.detach())
    bridge = train(toy_spaces, features)
    assert overlap_x.grad is None and torch.isfinite(bridge.project("toy-at", random_unit(2, 6, 4))).all()


def test_item10_features_must_be_2d_real_tensors():
    with pytest.raises(ValueError, match=r"overlap_y: expected a 2-D tensor \[rows, dim\], got shape \[4, 10, 1\]"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1)[..., None])
    with pytest.raises(TypeError, match="memory_x: expected real-valued features, got dtype torch.complex64"):
        sg.BridgeFeatures(random_unit(4, 6, 0), random_unit(4, 10, 1), torch.zeros(2, 6, dtype=torch.complex64))


def test_item10_a_one_row_overlap_is_refused_with_the_minimum(toy_spaces):
    one_row = toy_features(n=1)
    with pytest.raises(ValueError, match="1 overlap row.*a bridge trains on at least 2"):
        train(toy_spaces, one_row)
    with pytest.raises(ValueError, match=r"1 overlap row\(s\) are too few to train with val_fraction=0.0"):
        fit_heads(one_row, CMCRConfig(**QUICK, val_fraction=0), show_progress_bar=False)
    with pytest.raises(ValueError, match=r"3 overlap row\(s\) .* at least 2 more held out .* or set val_fraction=0"):
        fit_heads(toy_features(n=3), CMCRConfig(**QUICK), show_progress_bar=False)
    two_rows = fit_heads(toy_features(n=2), CMCRConfig(**QUICK, val_fraction=0), show_progress_bar=False)
    assert math.isfinite(two_rows.quality["estimate"])


# -- item 8: the planner cannot be fooled by a card ----------------------------------------------------------------
CLASSES = np.array(shapes_data.CLASSES)
HEAD = sg.HeadSpec(arch="mlp1", in_dim=4, hidden_dim=4, out_dim=4)


class SpecOnlySpace(sg.Space):
    def __init__(self, name, modalities):
        super().__init__()
        self.spec = sg.SpaceSpec(name=name, modalities=modalities, dim=4, fingerprint=f"fp-{name}")

    def _encode_batch(self, modality, batch):
        raise RuntimeError("planning only")


def hand_made(x, y, score, *, kind="connect", name=None):
    """A bridge with untrained heads and a valid score, which the caller may then edit in place."""
    card = sg.BridgeCard(
        library_version=sg.__version__,
        name=name or f"{x.name}+{y.name}",
        method="hand-made",
        kind=kind,
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        overlap=next(m for m in x.modalities if m in y.modalities),
        heads={x.name: HEAD, **({y.name: HEAD} if kind == "connect" else {})},
        quality={"score": score},
    )
    return sg.Bridge(card)


@pytest.fixture
def pair():
    return SpecOnlySpace("a", ("audio", "text")), SpecOnlySpace("b", ("text", "image"))


@pytest.mark.parametrize("bad", [math.nan, 5.0, math.inf, -0.1])
def test_item8_an_edited_quality_is_refused_naming_bridge_and_field(pair, bad):
    graph = sg.SpaceGraph(pair, [hand_made(*pair, 0.9, name="good")])
    fooling = hand_made(*pair, 0.9, name="fooling")
    fooling.card.quality["score"] = bad  # card.quality is a plain dict: no validator sees this edit
    with pytest.raises(ValueError, match=r"bridge 'fooling' has an invalid card: quality: .*quality\['score'\]"):
        graph.add_bridge(fooling)
    assert [b.name for b in graph.bridges] == ["good"]
    assert graph.plan("audio", "image").chosen.common_space == "good"


def test_item8_a_ring_of_scores_above_one_is_refused(pair):
    c = SpecOnlySpace("c", ("image", "audio"))
    a, b = pair
    ring = [hand_made(u, v, 0.9, kind="extend", name=f"{u.name}->{v.name}") for u, v in ((a, b), (b, c), (c, a))]
    graph = sg.SpaceGraph([a, b, c])
    for bridge in ring:
        bridge.card.quality["score"] = 3.0  # cost -log(3) < 0 made networkx raise "negative weights?"
        with pytest.raises(ValueError, match=f"bridge '{bridge.name}' has an invalid card"):
            graph.add_bridge(bridge)
        bridge.card.quality["score"] = 0.9
        graph.add_bridge(bridge)
    for bridge in ring:  # edited after they were added: the planner checks again and refuses
        bridge.card.quality["score"] = 3.0
    with pytest.raises(ValueError, match="has an invalid card: quality: .*accepted in \\[0, 1\\]"):
        graph.connect("audio", "image")


def test_item8_an_edited_calibration_is_refused_when_planning(pair):
    bridge = hand_made(*pair, 0.9)
    graph = sg.SpaceGraph(pair, [bridge])
    route = graph.connect("audio", "image")
    measured = {"route_measured": 0.5, "route_expected": 0.9, "value": 0.5, "rule": "measured"}
    bridge.card.calibration = Calibration(probe="p", route=repr(route), n_queries=1, n_gallery=1, **measured)
    assert graph.connect("audio", "image").expected_quality == pytest.approx(0.5)
    bridge.card.calibration.value = 5.0
    with pytest.raises(ValueError, match="bridge 'a\\+b' has an invalid card: calibration.value"):
        graph.connect("audio", "image")


@settings(max_examples=300, deadline=None)
@given(score=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 1e-300, 1 + 1e-12]))
def test_item8_an_edge_cost_is_never_negative_or_nan(score):
    pair = SpecOnlySpace("a", ("audio", "text")), SpecOnlySpace("b", ("text", "image"))
    bridge = hand_made(*pair, 0.5)
    bridge.card.quality["score"] = score
    graph = sg.SpaceGraph(pair)
    try:
        graph.add_bridge(bridge)
    except ValueError as err:
        assert "has an invalid card" in str(err) and not 0 <= score <= 1
        return
    costs = [cost for _, _, cost in graph._graph.edges(data="cost")]
    assert 0 <= score <= 1 and all(math.isfinite(cost) and cost >= 0 for cost in costs)
    assert 0 <= graph.connect("audio", "image").expected_quality <= 1


# -- item 10 (CLI): damaged data files and unwritable outputs -------------------------------------------------------
def fake_data(root: Path) -> Path:
    """A data folder laid out like ../shared/data for ``bench digits``: FSDD names (the readers only list them), a
    small MNIST archive and an OEWN file with the ten digit synsets."""
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in range(10):
        for take in (0, 5):
            (recordings / f"{digit}_tester_{take}.wav").touch()
    (root / "mnist5k").mkdir()
    labels = np.repeat(np.arange(10), 3)
    np.savez(root / "mnist5k" / "mnist5k.npz", images=np.zeros((30, 28, 28), np.uint8), label=labels)
    (root / "oewn").mkdir()
    with gzip.open(root / "oewn" / "oewn_nouns.json.gz", "wt", encoding="utf-8") as f:
        synset_ids = (*digits_data.DIGIT_SYNSETS, *shapes_data.SHAPE_SYNSETS)
        json.dump({sid: {"members": [sid], "definition": [], "examples": []} for sid in synset_ids}, f)
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def run_cli(argv, capsys):
    start = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    return code, err, seconds


@pytest.mark.parametrize("bench", ["digits", "hard"])
@pytest.mark.parametrize("damaged", ["mnist5k/mnist5k.npz", "oewn/oewn_nouns.json.gz"])
def test_item10_cli_names_a_truncated_data_file_in_one_line(tmp_path, capsys, bench, damaged):
    data = fake_data(tmp_path / "data")
    truncate(data / damaged)
    code, err, _ = run_cli(["bench", bench, "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"spacegraph: error: {data / damaged}:") and "truncated" in err


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.99])
def test_item10_readers_name_a_damaged_file(tmp_path, keep):
    data = fake_data(tmp_path)
    (data / "modelnet10").mkdir()
    points = data / "modelnet10" / "modelnet10_1024.npz"
    np.savez(points, points=np.zeros((2, 4, 3)), label=np.zeros(2), split=np.array(["train", "test"]), classes=CLASSES)
    for path, read in (
        (data / "mnist5k" / "mnist5k.npz", digits_data.mnist_split),
        (data / "oewn" / "oewn_nouns.json.gz", digits_data.digit_texts_from_oewn),
        (data / "oewn" / "oewn_nouns.json.gz", shapes_data.shape_texts_from_oewn),
        (points, shapes_data.modelnet10_split),
    ):
        original = path.read_bytes()
        read(data)
        truncate(path, keep)
        with pytest.raises(ValueError, match=f"^{path}: "):
            read(data)
        path.write_bytes(original)


def test_item10_readers_name_a_file_of_the_wrong_layout(tmp_path):
    archive = tmp_path / "a.npz"
    np.savez(archive, images=np.zeros(3))
    with pytest.raises(ValueError, match=r"a.npz: no array \['label'\] in this archive; it holds \['images'\]"):
        read_npz(archive, ("images", "label"))
    np.savez(archive, images=np.array([{"pickled": 1}], dtype=object))
    with pytest.raises(ValueError, match="a.npz: cannot read it as an .npz archive .*allow_pickle"):
        read_npz(archive, ("images",))
    synsets = tmp_path / "s.json"
    synsets.write_text(json.dumps({"1-n": {"members": ["x"], "definition": [1], "examples": []}}))
    with pytest.raises(ValueError, match=r"s.json: not the OEWN noun synsets .*\(1-n/definition/0: "):
        read_synsets(synsets)
    synsets.write_text(json.dumps({"1-n": {"members": [], "definition": [], "examples": []}}))
    with pytest.raises(ValueError, match=r"s.json: synsets \['2-n'\] are missing"):
        read_synsets(synsets, ["1-n", "2-n"])


@pytest.mark.parametrize("command", [["demo"], ["bench", "digits"]])
def test_item10_cli_refuses_out_under_a_file_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub" / "out"):
        code, err, seconds = run_cli([*command, "--out", str(out), "--quiet"], capsys)
        assert code == 2 and err == f"spacegraph: error: --out {out}: {blocker} is a file, not a folder"
        assert seconds < 1
    assert blocker.read_text() == "mine"


def test_item10_cli_refuses_an_unwritable_json_before_the_benchmark(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    out = tmp_path / "out"
    for target, reason in (
        (blocker / "record.json", f"{blocker} is a file, not a folder"),
        (tmp_path, "is a folder; give the path of a file to write"),
    ):
        argv = ["bench", "hard", "--data", str(tmp_path / "no-data"), "--out", str(out), "--json", str(target)]
        code, err, seconds = run_cli(argv, capsys)
        assert code == 2 and err.startswith(f"spacegraph: error: --json {target}") and err.endswith(reason)
        assert seconds < 1 and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_item10_cli_refuses_a_read_only_json_folder(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        argv = ["bench", "hard", "--out", str(tmp_path / "out"), "--json", str(folder / "record.json")]
        code, err, _ = run_cli(argv, capsys)
    finally:
        folder.chmod(0o700)
    assert code == 2 and f"cannot write in {folder}" in err and not (tmp_path / "out").exists()
