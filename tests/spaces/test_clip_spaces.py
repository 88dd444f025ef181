"""The CLIP space plugins on tiny random-weight models written to temp folders: loading through the real loaders,
agreement with the model called by hand, input handling, clear errors and lazy imports."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from spacegraph_spaces.hf_clip import HFCLIPSpace
from spacegraph_spaces.media import load_rgb_image
from spacegraph_spaces.openclip import OpenCLIPSpace

import spacegraph as sg

torch.set_num_threads(2)

OPENCLIP_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    # vocab_size of open_clip's bundled SimpleTokenizer, which get_tokenizer uses for a local-dir config.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
HF_MERGES = [("a", "t</w>"), ("c", "at</w>"), ("d", "o"), ("do", "g</w>")]


def write_tiny_openclip(folder: Path, seed: int) -> str:
    """A random-weight open_clip model in the ``local-dir:`` layout; returns its model name."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(seed)
    model = open_clip.CLIP(**copy.deepcopy(OPENCLIP_CFG))
    folder.mkdir(parents=True)
    config = {"model_cfg": OPENCLIP_CFG, "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def write_tiny_hf_clip(folder: Path, seed: int) -> str:
    """A random-weight transformers CLIP model + processor with a printable-ASCII BPE vocab; returns the folder."""
    transformers = pytest.importorskip("transformers")
    chars = [chr(i) for i in range(33, 127)]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in HF_MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    bos, eos = len(vocab) - 2, len(vocab) - 1
    text = {"vocab_size": len(vocab), "max_position_embeddings": 16, "bos_token_id": bos, "eos_token_id": eos}
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = transformers.CLIPConfig(
        text_config={**tower, **text, "pad_token_id": eos},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=20,
    )
    torch.manual_seed(seed)
    transformers.CLIPModel(config).save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in HF_MERGES) + "\n")
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder))
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return str(folder)


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (36 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


TEXTS = ["a cat", "a dog", "at the cat dog", "do"]


# ---------------------------------------------------------------- reading images as RGB


def test_rgb_reader_modes():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    premultiplied = np.round(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(load_rgb_image(Image.fromarray(rgba, "RGBA"))), premultiplied)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    gray3 = np.repeat(gray[..., None], 3, axis=-1)
    for same_as_gray in (
        Image.fromarray(gray, "L"),
        Image.fromarray(gray.astype(np.uint16) * 257).convert("I;16"),
        gray.astype(np.uint16) * 257,
        gray / 255.0,
        torch.from_numpy(gray)[None],
    ):
        out = load_rgb_image(same_as_gray)
        assert out.mode == "RGB" and out.size == (10, 12)
        np.testing.assert_array_equal(np.asarray(out), gray3)
    chw = torch.from_numpy(np.moveaxis(premultiplied, -1, 0).copy())
    np.testing.assert_array_equal(np.asarray(load_rgb_image(chw)), premultiplied)
    for other in (Image.new("1", (5, 4), 1), Image.new("P", (5, 4)), Image.new("CMYK", (5, 4)), Image.new("F", (5, 4))):
        assert load_rgb_image(other).mode == "RGB"


def test_rgb_reader_path_matches_pil(tmp_path):
    image = photos(1)[0]
    image.save(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(load_rgb_image(tmp_path / "x.png")), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(load_rgb_image(str(tmp_path / "x.png"))), np.asarray(image))


# ---------------------------------------------------------------- open_clip


def test_openclip_spec_and_fingerprint(oc_space, oc_name, tmp_path):
    spec = oc_space.spec
    assert spec.modalities == (sg.Modality.IMAGE, sg.Modality.TEXT) and spec.dim == 24 and spec.normalized
    assert spec.name == f"openclip:{oc_name}"
    assert OpenCLIPSpace(oc_name, name="tiny").spec.model_copy(update={"name": spec.name}) == spec
    other = write_tiny_openclip(tmp_path / "other", seed=1)
    assert OpenCLIPSpace(other).spec.fingerprint != spec.fingerprint


def test_openclip_matches_model_by_hand(oc_space, oc_name):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(oc_name)
    tokenizer = open_clip.get_tokenizer(oc_name)
    model.eval()
    images = photos(3)
    with torch.no_grad():
        want_image = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        want_text = model.encode_text(tokenizer(TEXTS), normalize=True)
    torch.testing.assert_close(oc_space.encode("image", images), want_image, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(oc_space.encode("text", TEXTS), want_text, atol=1e-5, rtol=1e-4)


def test_openclip_options(oc_space, oc_name):
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenCLIPSpace(oc_name, precision="fp8")
    amp = OpenCLIPSpace(oc_name, precision="amp")  # autocast is CUDA-only: identical on CPU
    torch.testing.assert_close(amp.encode("text", TEXTS), oc_space.encode("text", TEXTS))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_openclip_amp_on_cuda(oc_name):
    fp32 = OpenCLIPSpace(oc_name, device="cuda")
    amp = OpenCLIPSpace(oc_name, device="cuda", precision="amp")
    for modality, inputs in (("image", photos(4)), ("text", TEXTS)):
        cosine = (fp32.encode(modality, inputs) * amp.encode(modality, inputs)).sum(-1)
        assert cosine.min() > 0.99


# ---------------------------------------------------------------- transformers


def test_hf_spec_and_fingerprint(hf_space, hf_path, tmp_path):
    spec = hf_space.spec
    assert spec.modalities == (sg.Modality.IMAGE, sg.Modality.TEXT) and spec.dim == 20 and spec.normalized
    assert spec.name == f"hf-clip:{hf_path}"
    assert HFCLIPSpace(hf_path).spec == spec
    other = write_tiny_hf_clip(tmp_path / "other", seed=1)
    assert HFCLIPSpace(other, name="other").spec.fingerprint != spec.fingerprint


def test_hf_matches_model_by_hand(hf_space, hf_path):
    import transformers

    model = transformers.CLIPModel.from_pretrained(hf_path).eval()
    processor = transformers.CLIPProcessor.from_pretrained(hf_path)
    images = photos(3)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        want_image = model.get_image_features(pixel_values=pixels)
        want_text = model.get_text_features(**processor(text=TEXTS, padding=True, return_tensors="pt"))
    for got, want in ((hf_space.encode("image", images), want_image), (hf_space.encode("text", TEXTS), want_text)):
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- both


def test_unit_norm_and_batch_independent(space):
    for modality, inputs in (("image", photos(5)), ("text", TEXTS)):
        batch = space.encode(modality, inputs, batch_size=4)
        torch.testing.assert_close(batch.norm(dim=-1), torch.ones(len(inputs)))
        alone = torch.cat([space.encode(modality, [item]) for item in inputs])
        torch.testing.assert_close(alone, batch, atol=1e-5, rtol=1e-4)


def test_long_text_is_truncated(space):
    """Both tiny models read 16 tokens: words past them change nothing."""
    long, longer = space.encode("text", ["a cat " * 20, "a cat " * 30 + "do dog"])
    torch.testing.assert_close(long, longer)


def test_odd_images(space, tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (30, 34), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    odd = [
        Image.fromarray(rng.integers(0, 256, (30, 34, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(gray.astype(np.uint16) * 257).convert("I;16"),
        Image.fromarray(gray, "L"),
        gray / 255.0,
        torch.from_numpy(np.repeat(gray[None], 3, axis=0)),
        tmp_path / "gray.png",
    ]
    out = space.encode("image", odd)
    assert out.shape == (6, space.spec.dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], out[2:3].expand(5, -1), atol=1e-5, rtol=1e-4)  # all the same gray image


def test_bad_inputs(space, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    cases = [
        ("image", [tmp_path / "missing.png"], FileNotFoundError, "image file not found"),
        ("image", [tmp_path / "corrupt.png"], ValueError, "could not read image file"),
        ("image", [3], TypeError, "image item 0 of type int is not supported"),
        ("image", [np.zeros((2, 2, 8, 8), np.uint8)], ValueError, "is not an image"),
        ("image", [np.full((8, 8), 2.0)], ValueError, r"must lie in \[0, 1\]"),
        ("text", ["fine", "  "], ValueError, "text item 1 is empty or whitespace only"),
        ("text", ["fine", 7], TypeError, "text item 1 is a int"),
        ("text", "one string", TypeError, "inputs must be a list"),
        ("audio", [np.zeros(8000)], ValueError, "does not embed 'audio'"),
    ]
    for modality, inputs, error, message in cases:
        with pytest.raises(error, match=message):
            space.encode(modality, inputs)


# ---------------------------------------------------------------- plugin plumbing


def test_registry_lists_and_loads(oc_name):
    assert {"openclip", "hf-clip"} <= set(sg.list_spaces())
    assert sg.load_space("openclip", model=oc_name).spec.dim == 24


@pytest.mark.parametrize(
    ("module", "cls", "backend", "extra"),
    [("openclip", "OpenCLIPSpace", "open_clip", "clip"), ("hf_clip", "HFCLIPSpace", "transformers", "hf")],
)
def test_missing_extra_names_the_install(monkeypatch, module, cls, backend, extra):
    space_class = getattr(__import__(f"spacegraph_spaces.{module}", fromlist=[cls]), cls)
    monkeypatch.setitem(sys.modules, backend, None)  # makes `import backend` fail
    with pytest.raises(ImportError, match=rf'pip install "spacegraph\[{extra}\]"'):
        space_class("anything")


def test_plugin_modules_import_lazily():
    code = (
        "import sys, spacegraph_spaces.openclip, spacegraph_spaces.hf_clip; "
        "print(sorted(m for m in ('open_clip', 'transformers', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- real weights (cached only)


@pytest.mark.slow
def test_real_openai_vit_b32_agrees_across_backends():
    """open_clip's ViT-B-32/openai and transformers' openai/clip-vit-base-patch32 hold the same weights."""
    pytest.importorskip("open_clip")
    pytest.importorskip("transformers")
    try:
        oc, hf = OpenCLIPSpace("ViT-B-32", "openai"), HFCLIPSpace("openai/clip-vit-base-patch32")
    except (OSError, RuntimeError) as err:
        pytest.skip(f"real CLIP weights are not cached here: {err}")
    prompts = ["a photo of a red square", "a photo of a blue square"]
    red = [np.tile(np.array([1.0, 0.0, 0.0], np.float32), (224, 224, 1))]
    assert ((oc.encode("text", prompts) * hf.encode("text", prompts)).sum(-1) > 0.99).all()
    for space in (oc, hf):
        scores = space.encode("image", red) @ space.encode("text", prompts).T
        assert scores[0, 0] > scores[0, 1]
