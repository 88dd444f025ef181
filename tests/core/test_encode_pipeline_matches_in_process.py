"""Space.encode's input pipeline: media prepared in DataLoader worker processes gives the same bits as in this
process, errors from workers name the caller's item, texts go longest first and come back in order, autocast, and
plugins that only implement ``_encode_batch`` keep working."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from spacegraph_spaces import digits_data
from spacegraph_spaces.digits import DigitsAudioTextSpace, DigitsImageTextSpace
from spacegraph_spaces.pointbert import PointBertSpace

import spacegraph as sg
from spacegraph.plugin import enumerate_batch

WORKER_COUNTS = (0, 1, 2)


@pytest.fixture(scope="module")
def samples() -> dict:
    return digits_data.load_demo_samples()


@pytest.fixture(scope="module")
def png_paths(tmp_path_factory, samples) -> list[str]:
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, image in enumerate(samples["image_gallery"][:11]):
        Image.fromarray(image).resize((56, 56)).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def encode_each_way(space, modality, inputs, **kwargs) -> list[torch.Tensor]:
    return [space.encode(modality, inputs, batch_size=3, num_workers=n, **kwargs) for n in WORKER_COUNTS]


def assert_all_equal(results: list[torch.Tensor]) -> None:
    for result in results[1:]:
        assert result.dtype == torch.float32 and result.device.type == "cpu"
        assert torch.equal(result, results[0])


# ---------------------------------------------------------------- the same bits for any number of workers


def test_digit_spaces_do_not_depend_on_workers(samples, png_paths):
    assert_all_equal(encode_each_way(DigitsImageTextSpace(), "image", png_paths))
    assert_all_equal(encode_each_way(DigitsAudioTextSpace(), "audio", samples["audio_query_paths"][:10]))


def test_openclip_images_do_not_depend_on_workers(tmp_path, png_paths):
    from tests.spaces.test_clip_spaces import write_tiny_openclip

    pytest.importorskip("open_clip")
    from spacegraph_spaces.openclip import OpenCLIPSpace

    space = OpenCLIPSpace(write_tiny_openclip(tmp_path / "tiny", seed=0))
    full = encode_each_way(space, "image", png_paths)
    assert_all_equal(full)
    half = space.encode("image", png_paths, batch_size=3, num_workers=2, precision="bf16")
    assert not torch.equal(half, full[0])  # the space's own precision setting leaves encode's autocast on
    assert (half * full[0]).sum(dim=1).min() > 0.98


def test_pointbert_clouds_do_not_depend_on_workers():
    tiny = {"depth": 2, "trans_dim": 32, "num_heads": 2, "num_group": 16, "group_size": 8, "npoints": 256}
    space = PointBertSpace(config={**tiny, "embed_dim": 16}, seed=1)
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(100 + 50 * i, 3)).astype(np.float32) for i in range(7)]
    assert_all_equal(encode_each_way(space, "point_cloud", clouds))


def test_fused_clap_audio_does_not_depend_on_workers(tmp_path):
    from spacegraph_spaces.hf_clap import HFClapSpace

    from tests.spaces.test_hf_clap_space import build_tiny_clap, tone

    build_tiny_clap(tmp_path, fused=True)
    clips = [tone(seconds) for seconds in (0.5, 2.0, 1.5, 0.7, 3.0)]  # some fused crops, drawn from a seeded RNG
    assert_all_equal(encode_each_way(HFClapSpace(tmp_path), "audio", clips))


# ---------------------------------------------------------------- where the work runs


class PidSpace(sg.Space):
    """Prepares a batch into the ids of the processes that prepared and encoded it."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = sg.SpaceSpec(name="pid", modalities=("image", "text"), dim=2, fingerprint="pid")

    def _prepare_batch(self, modality, batch):
        for i, item in enumerate_batch(batch):
            if item == "bad":
                raise sg.SpacegraphValueError(f"{modality} item {i} is bad")
        return torch.full((len(batch),), os.getpid(), dtype=torch.float64)

    def _encode_prepared(self, modality, prepared):
        return torch.stack([prepared, torch.full_like(prepared, os.getpid())], dim=1)


def test_media_is_prepared_in_workers_and_encoded_here():
    space = PidSpace()
    here = os.getpid()
    in_process = space.encode("image", ["a"] * 5, batch_size=2, normalize=False)
    assert (in_process == here).all()
    in_workers = space.encode("image", ["a"] * 5, batch_size=2, num_workers=2, normalize=False)
    prepared_by = set(in_workers[:, 0].tolist())
    assert here not in prepared_by and len(prepared_by) == 2  # two workers, each a batch in turn
    assert (in_workers[:, 1] == here).all()
    texts = space.encode("text", ["a"] * 5, batch_size=2, num_workers=2, normalize=False)
    assert (texts == here).all()  # tokenising stays here (no fork after a tokenizer's threads)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_errors_from_workers_name_the_callers_item(num_workers, png_paths, tmp_path):
    space = PidSpace()
    with pytest.raises(sg.SpacegraphValueError, match="image item 6 is bad"):
        space.encode("image", ["a"] * 6 + ["bad"], batch_size=2, num_workers=num_workers)
    missing = [*png_paths[:4], str(tmp_path / "gone.png"), *png_paths[4:6]]
    with pytest.raises(FileNotFoundError, match=r"image item 4: image file not found: .*gone\.png"):
        DigitsImageTextSpace().encode("image", missing, batch_size=2, num_workers=num_workers)


# ---------------------------------------------------------------- texts longest first


class TextLengthSpace(sg.Space):
    """Embeds a text as (its length, a hash of it) and records the batches it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = sg.SpaceSpec(name="lengths", modalities=("text",), dim=2, fingerprint="lengths")
        self.batches: list[list[str]] = []

    def _encode_batch(self, modality, batch):
        self.batches.append(list(batch))
        for i, text in enumerate_batch(batch):
            if not text.strip():
                raise sg.SpacegraphValueError(f"text item {i} is blank")
        return torch.tensor([[len(text), sum(map(ord, text)) % 997] for text in batch], dtype=torch.float32)


def test_texts_are_batched_longest_first_and_returned_in_order():
    space = TextLengthSpace()
    texts = ["bb", "a", "dddd", "ccc", "eeeee", "ff", "g"]
    out = space.encode("text", texts, batch_size=3, normalize=False)
    assert space.batches == [["eeeee", "dddd", "ccc"], ["bb", "ff", "a"], ["g"]]  # stable among equal lengths
    expected = torch.tensor([[len(t), sum(map(ord, t)) % 997] for t in texts], dtype=torch.float32)
    assert torch.equal(out, expected)
    with pytest.raises(sg.SpacegraphValueError, match="text item 3 is blank"):
        space.encode("text", ["a", "bb", "ccc", " ", "dddd"], batch_size=2)


def test_sorted_text_matches_one_by_one(tmp_path):
    from spacegraph_spaces.hf_clip import HFCLIPSpace

    from tests.spaces.test_clip_spaces import write_tiny_hf_clip

    texts = ["a dog", "cat", "a very long caption about a dog and a cat", "dog", "a cat sat on the dog mat"]
    space = HFCLIPSpace(write_tiny_hf_clip(tmp_path / "hf", seed=0))
    one_by_one = torch.cat([space.encode("text", [text]) for text in texts])
    torch.testing.assert_close(space.encode("text", texts, batch_size=2), one_by_one, atol=1e-5, rtol=0)
    digits = DigitsImageTextSpace()
    one_by_one = torch.cat([digits.encode("text", [text]) for text in texts])
    torch.testing.assert_close(digits.encode("text", texts, batch_size=2), one_by_one, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- precision and the plugin contract


def test_bf16_autocast_returns_float32_close_to_fp32(samples):
    space = DigitsImageTextSpace()
    images = samples["image_gallery"][:8]
    full = space.encode("image", images)
    half = space.encode("image", images, precision="bf16", num_workers=2, batch_size=4)
    assert half.dtype == torch.float32 and half.device.type == "cpu"
    assert (full * half).sum(dim=1).min() > 0.98
    with pytest.raises(sg.SpacegraphValueError, match=r"precision must be one of \['bf16', 'fp16', 'fp32'\]"):
        space.encode("image", images, precision="half")


def test_plugins_with_only_encode_batch_ignore_workers(toy_spaces):
    space = toy_spaces[0]
    inputs = np.random.default_rng(0).normal(size=(7, 8)).astype(np.float32)
    assert torch.equal(space.encode("audio", inputs, batch_size=2, num_workers=2), space.encode("audio", inputs))


@pytest.mark.parametrize("num_workers", [-1, 1.5, True])
def test_num_workers_must_be_a_count(toy_spaces, num_workers):
    with pytest.raises(sg.SpacegraphValueError, match="num_workers must be an int >= 0"):
        toy_spaces[0].encode("audio", np.zeros((2, 8), np.float32), num_workers=num_workers)


def test_a_space_must_implement_one_half_of_the_contract():
    class Neither(sg.Space):
        spec = sg.SpaceSpec(name="neither", modalities=("text",), dim=2, fingerprint="x")

    class PrepareOnly(Neither):
        def _prepare_batch(self, modality, batch):
            return batch

    with pytest.raises(sg.SpacegraphTypeError, match="Neither implements neither _encode_batch nor _encode_prepared"):
        Neither().encode("text", ["a"])
    with pytest.raises(sg.SpacegraphTypeError, match="PrepareOnly implements _prepare_batch but not _encode_prepared"):
        PrepareOnly().encode("text", ["a"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_workers_pinned_and_autocast(png_paths):
    space = DigitsImageTextSpace().to("cuda")
    results = [space.encode("image", png_paths, batch_size=3, num_workers=n) for n in (0, 2)]
    assert_all_equal(results)
    half = space.encode("image", png_paths, batch_size=3, num_workers=2, precision="bf16")
    assert half.dtype == torch.float32 and half.device.type == "cpu"
    assert (half * results[0]).sum(dim=1).min() > 0.98
