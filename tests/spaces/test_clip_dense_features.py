"""The CLIP spaces' native dense path (MaskCLIP's value path through the last block) on tiny random-weight models:
the tower's own patch grid over the whole image, agreement with the model's modules called by hand, the pooled path
untouched, routes through a bridge, and the sliding window for an explicit grid or a tower without patch tokens."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from spacegraph_spaces.openclip import OpenCLIPSpace

import spacegraph as sg
from spacegraph._dense import window_boxes
from tests.spaces.test_clip_spaces import OPENCLIP_CFG, photos

torch.set_num_threads(2)

GRID = 4  # 32-pixel inputs, 8-pixel patches in both tiny models
OC_MEAN, OC_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # write_tiny_openclip's preprocess_cfg


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def whole_image_pixels(image: Image.Image, mean, std) -> torch.Tensor:
    """``[1, 3, 32, 32]``: the whole image resized (not cropped) to the towers' input size and normalised."""
    array = np.asarray(image.convert("RGB").resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
    pixels = (torch.from_numpy(array) - torch.tensor(mean)) / torch.tensor(std)
    return pixels.permute(2, 0, 1)[None]


def last_block_input(block: torch.nn.Module, run) -> torch.Tensor:
    """The hidden states entering ``block`` while ``run()`` runs the whole model."""
    seen = []

    def keep(module, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])

    handle = block.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def as_grid(patch_tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(patch_tokens.reshape(len(patch_tokens), GRID, GRID, -1), dim=-1)


# ---------------------------------------------------------------- both spaces


def test_native_dense_grids_are_the_towers_patch_grid_unit_norm(space):
    assert space.has_native_dense("image")
    images = photos(3)
    dense = space.encode_dense("image", images, batch_size=2)
    assert dense.shape == (3, GRID, GRID, space.spec.dim) and dense.dtype == torch.float32
    torch.testing.assert_close(dense.norm(dim=-1), torch.ones(3, GRID, GRID))
    torch.testing.assert_close(dense[1:2], space.encode_dense("image", images[1:2]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(dense[0, 0, 0], dense[0, GRID - 1, GRID - 1], atol=1e-3)


def test_the_pooled_path_is_unchanged_by_dense_calls(space):
    images = photos(2)
    before = space.encode("image", images)
    space.encode_dense("image", images)
    torch.testing.assert_close(space.encode("image", images), before)


def test_an_explicit_grid_still_uses_the_sliding_window(space):
    image = photos(1, seed=3)[0]
    dense = space.encode_dense("image", [image], grid=3, window=0.5)
    crops = [image.crop((left, top, right, bottom)) for top, left, bottom, right in window_boxes(36, 40, 3, 0.5)]
    assert dense.shape == (1, 3, 3, space.spec.dim)
    torch.testing.assert_close(dense.reshape(9, -1), space.encode("image", crops), atol=1e-5, rtol=1e-4)


def test_dense_cells_cover_the_whole_image_the_pooled_crop_does_not(space):
    """A 32 x 96 image: the pooled path's centre crop keeps the middle third, the dense grid all of it."""
    rng = np.random.default_rng(6)
    grey = np.full((32, 96, 3), 128, np.uint8)
    left_changed = grey.copy()
    left_changed[:, :32] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = [Image.fromarray(grey), Image.fromarray(left_changed)]
    pooled = space.encode("image", images)
    torch.testing.assert_close(pooled[0], pooled[1])
    dense = space.encode_dense("image", images)
    assert (dense[0, :, 0] - dense[1, :, 0]).abs().max() > 1e-2


# ---------------------------------------------------------------- by hand


def test_openclip_dense_is_maskclips_value_path(oc_space, oc_name):
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model_and_transforms(oc_name)[0].eval()
    visual, image = model.visual, photos(1, seed=4)[0]  # 36 x 40: a centre crop would drop rows
    pixels = whole_image_pixels(image, OC_MEAN, OC_STD)
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        x = last_block_input(block, lambda: model.encode_image(pixels))
        _, _, value = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        y = x + block.attn.out_proj(value)
        y = y + block.mlp(block.ln_2(y))
        want = as_grid(visual.ln_post(y[:, 1:]) @ visual.proj)
        plain = as_grid(visual.ln_post(block(x)[:, 1:]) @ visual.proj)  # the last block's ordinary patch tokens
    got = oc_space.encode_dense("image", [image])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_hf_dense_is_maskclips_value_path(hf_space, hf_path):
    transformers = pytest.importorskip("transformers")
    model = transformers.CLIPModel.from_pretrained(hf_path).eval()
    processor = transformers.CLIPImageProcessor.from_pretrained(hf_path)
    vision, image = model.vision_model, photos(1, seed=4)[0]
    whole = {"size": {"height": 32, "width": 32}, "do_center_crop": False}  # its own resampling, whole image
    pixels = processor(images=[image], **whole, return_tensors="pt")["pixel_values"]
    layer = vision.encoder.layers[-1]
    with torch.no_grad():
        x = last_block_input(layer, lambda: model.get_image_features(pixel_values=pixels))
        y = x + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(x)))
        y = y + layer.mlp(layer.layer_norm2(y))
        want = as_grid(model.visual_projection(vision.post_layernorm(y[:, 1:])))
        output = vision(pixel_values=pixels).last_hidden_state  # the last layer's ordinary patch tokens
        plain = as_grid(model.visual_projection(vision.post_layernorm(output[:, 1:])))
    got = hf_space.encode_dense("image", [image])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


# ---------------------------------------------------------------- routes and other towers


def test_a_route_takes_clip_patches_through_a_bridge(oc_space, hf_space, tmp_path):
    graph = sg.SpaceGraph([oc_space, hf_space], store=sg.FeatureStore(tmp_path / "store"))
    graph.add_data("text", "texts", [f"a {word} {i}" for word in ("cat", "dog", "do", "at") for i in range(15)])
    features = graph._link_features(oc_space.name, hf_space.name, sg.Modality.TEXT)
    graph.train_bridge(
        oc_space.name, hf_space.name, overlap="text", features=features, method="procrustes", show_progress_bar=False
    )
    route = graph.connect("image", "text", source=oc_space.name, target=hf_space.name)
    images = photos(2)
    dense = route.encode_dense("image", images)
    by_hand = route.project("image", oc_space.encode_dense("image", images).reshape(2 * GRID * GRID, -1))
    assert dense.shape == (2, GRID, GRID, by_hand.shape[-1])
    torch.testing.assert_close(dense.reshape(2 * GRID * GRID, -1), by_hand, atol=1e-5, rtol=1e-4)


def write_tiny_resnet_openclip(folder: Path) -> str:
    """A random-weight open_clip model with a ModifiedResNet image tower, in the ``local-dir:`` layout."""
    open_clip = pytest.importorskip("open_clip")
    cfg = {**copy.deepcopy(OPENCLIP_CFG), "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**copy.deepcopy(cfg))
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def test_an_open_clip_resnet_tower_falls_back_to_the_sliding_window(tmp_path):
    space = OpenCLIPSpace(write_tiny_resnet_openclip(tmp_path / "resnet"))
    assert not space.has_native_dense("image")
    image = photos(1, seed=5)[0]
    dense = space.encode_dense("image", [image])
    crops = [image.crop((left, top, right, bottom)) for top, left, bottom, right in window_boxes(36, 40, 7, 0.5)]
    assert dense.shape == (1, 7, 7, space.spec.dim)
    torch.testing.assert_close(dense.reshape(49, -1), space.encode("image", crops), atol=1e-5, rtol=1e-4)
