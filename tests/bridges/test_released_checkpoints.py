"""Importing the released C-MCR projector checkpoints, checked against a forward pass written from the
documented layout with plain tensor ops."""

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from spacegraph_bridges.released import import_released_cmcr

import spacegraph as sg
from tests.conftest import random_unit

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SPACEGRAPH_DATA", ROOT.parent / "shared" / "data"))
ULIP_CLIP = DATA / "cmcr" / "ulip_clip.pt"
EPS = 1e-5  # BatchNorm1d's default

CLIP = sg.SpaceSpec(name="clip", modalities=("image", "text"), dim=512, fingerprint="clip-fp")
ULIP = sg.SpaceSpec(name="ulip2", modalities=("point_cloud",), dim=512, fingerprint="ulip-fp")  # the 3D tower
CLAP = sg.SpaceSpec(name="clap", modalities=("audio", "text"), dim=512, fingerprint="clap-fp")


def linear(x, state, prefix):
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def batchnorm(x, state, prefix):
    mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
    return (x - mean) / torch.sqrt(var + EPS) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def normalize(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_ulip_clip(x, state, head):
    """Released MLP_Half: net.0 Linear -> net.1 BatchNorm1d -> ReLU, then L2 normalise."""
    return normalize(torch.relu(batchnorm(linear(x, state, f"{head}.net.0"), state, f"{head}.net.1")))


def reference_clap_clip(x, state, head):
    """Released MLP: net1 = Linear -> BatchNorm1d -> ReLU, net2 = Linear -> BatchNorm1d, then L2 normalise."""
    hidden = torch.relu(batchnorm(linear(x, state, f"{head}.net1.0"), state, f"{head}.net1.1"))
    return normalize(batchnorm(linear(hidden, state, f"{head}.net2.0"), state, f"{head}.net2.1"))


def released_clap_clip_state(seed=0):
    """A state dict in the released clap_clip.pt layout, with non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for head in ("Head_A", "Head_B"):
        for block, (n_out, n_in) in (("net1", (1024, 512)), ("net2", (512, 1024))):
            state[f"{head}.{block}.0.weight"] = torch.randn(n_out, n_in, generator=g) / n_in**0.5
            state[f"{head}.{block}.0.bias"] = torch.randn(n_out, generator=g) * 0.1
            state[f"{head}.{block}.1.weight"] = 1 + torch.randn(n_out, generator=g) * 0.1
            state[f"{head}.{block}.1.bias"] = torch.randn(n_out, generator=g) * 0.1
            state[f"{head}.{block}.1.running_mean"] = torch.randn(n_out, generator=g) * 0.1
            state[f"{head}.{block}.1.running_var"] = torch.rand(n_out, generator=g) + 0.5
            state[f"{head}.{block}.1.num_batches_tracked"] = torch.tensor(1000)
    return state


@pytest.fixture
def clap_clip_file(tmp_path):
    path = tmp_path / "clap_clip.pt"
    torch.save(released_clap_clip_state(), path)
    return path


def assert_bridge_matches(bridge, state, reference, head_of):
    x = random_unit(64, 512, seed=3)
    for space_name, head in head_of.items():
        torch.testing.assert_close(bridge.project(space_name, x), reference(x, state, head), atol=1e-6, rtol=0)


@pytest.mark.skipif(not ULIP_CLIP.is_file(), reason=f"released checkpoint {ULIP_CLIP} not found")
def test_real_ulip_clip_matches_the_documented_forward_and_round_trips(tmp_path):
    state = torch.load(ULIP_CLIP, map_location="cpu", weights_only=True)
    bridge = import_released_cmcr(ULIP_CLIP, "ulip_clip", CLIP, ULIP)
    assert {name: bridge.card.heads[name].arch for name in bridge.space_names} == {"clip": "mlp1", "ulip2": "mlp1"}
    assert_bridge_matches(bridge, state, reference_ulip_clip, {"clip": "Head_A", "ulip2": "Head_B"})

    loaded = sg.Bridge.load(bridge.save(tmp_path / "bridge"))
    assert loaded.card == bridge.card
    x = random_unit(16, 512, seed=4)
    for name in bridge.space_names:
        torch.testing.assert_close(loaded.project(name, x), bridge.project(name, x), atol=0, rtol=0)
    card = json.loads((tmp_path / "bridge" / "bridge.json").read_text())
    assert card["method"] == "cmcr-released" and card["quality"] == {} and card["overlap"] == "image"
    assert card["training"]["file"] == "ulip_clip.pt" and len(card["training"]["sha256"]) == 64
    assert loaded.card.score == 1.0  # unmeasured: the planner's neutral score


def test_clap_clip_layout_maps_head_a_to_clap_and_head_b_to_clip(clap_clip_file):
    state = released_clap_clip_state()
    bridge = import_released_cmcr(clap_clip_file, "clap_clip", CLIP, CLAP)
    assert bridge.card.heads["clap"] == sg.HeadSpec(arch="mlp2", in_dim=512, hidden_dim=1024, out_dim=512)
    assert bridge.card.overlap == "text" and bridge.card.training["released_heads"] == {
        "clip": "Head_B",
        "clap": "Head_A",
    }
    assert_bridge_matches(bridge, state, reference_clap_clip, {"clap": "Head_A", "clip": "Head_B"})


def test_wrong_shapes_missing_and_unexpected_keys_are_refused(tmp_path):
    state = released_clap_clip_state()
    state["Head_B.net2.0.weight"] = torch.zeros(512, 512)
    del state["Head_A.net1.1.running_var"]
    state["Head_C.net.0.weight"] = torch.zeros(3)
    path = tmp_path / "clap_clip.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        import_released_cmcr(path, "clap_clip", CLIP, CLAP)
    message = str(info.value)
    assert "missing keys ['Head_A.net1.1.running_var']" in message
    assert "unexpected keys ['Head_C.net.0.weight']" in message
    assert "Head_B.net2.0.weight has shape [512, 512], expected [512, 1024]" in message


def test_a_checkpoint_of_the_other_kind_is_refused(clap_clip_file):
    with pytest.raises(ValueError, match="missing keys.*Head_A.net.0.weight"):
        import_released_cmcr(clap_clip_file, "ulip_clip", CLIP, ULIP)


def test_spaces_that_do_not_fit_are_refused(clap_clip_file):
    wide = sg.SpaceSpec(name="clap", modalities=("audio", "text"), dim=768, fingerprint="x")
    with pytest.raises(ValueError, match="read 512-d embeddings, but space 'clap'"):
        import_released_cmcr(clap_clip_file, "clap_clip", CLIP, wide)
    image_only = sg.SpaceSpec(name="clip", modalities=("image",), dim=512, fingerprint="x")
    with pytest.raises(ValueError, match="space 'clip' has no 'text' to bridge through"):
        import_released_cmcr(clap_clip_file, "clap_clip", image_only, CLAP)
    with pytest.raises(ValueError, match="unknown released checkpoint kind"):
        import_released_cmcr(clap_clip_file, "clip_clap", CLIP, CLAP)


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path = tmp_path / "evil.pt"
    torch.save({"Head_A.net.0.weight": Payload()}, path)
    with pytest.raises(ValueError, match="could not load released checkpoint .*weights_only=True"):
        import_released_cmcr(path, "ulip_clip", CLIP, ULIP)


def torch_load_calls(path):
    """``torch.load(...)`` calls in one file, as (line, has weights_only=True)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        func = getattr(node, "func", None)
        target = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
        if isinstance(node, ast.Call) and target and (func.value.id, func.attr) == ("torch", "load"):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            yield node.lineno, safe


def test_every_torch_load_in_the_repository_passes_weights_only_true():
    skip = {"build", "dist", "runs", "site-packages"}
    files = [
        p
        for p in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)
    ]
    calls = {f"{p.relative_to(ROOT)}:{line}": safe for p in files for line, safe in torch_load_calls(p)}
    assert calls, "expected at least the released-checkpoint importer to call torch.load"
    assert [where for where, safe in calls.items() if not safe] == []
