"""The shipped digits-image-lowres space: loading, the 8x8 downsampling, input handling and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spacegraph_spaces import digits_data
from spacegraph_spaces.digits_lowres import DigitsLowresSpace, downsample_8x8, load_sklearn_digits

from spacegraph import Modality

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def space() -> DigitsLowresSpace:
    return DigitsLowresSpace()


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    return digits_data.load_demo_samples()["image_gallery"][:20]


def test_spec(space):
    assert space.spec.name == "digits-image-lowres"
    assert space.modalities == (Modality.IMAGE, Modality.LOWRES_IMAGE) and space.spec.dim == 64
    assert space.spec.normalized and space.spec.fingerprint.startswith("sha256:")
    assert DigitsLowresSpace().spec.fingerprint == space.spec.fingerprint


def test_downsample(mnist):
    small = downsample_8x8(mnist)
    assert small.shape == (20, 8, 8) and small.dtype == np.float32
    assert small.min() >= 0 and small.max() <= 16 and np.array_equal(small, np.round(small))
    assert small.sum(axis=(1, 2)).min() > 0
    np.testing.assert_array_equal(downsample_8x8(mnist[3]), small[3])
    np.testing.assert_array_equal(downsample_8x8(mnist.astype(np.float32) / 255.0), small)
    assert downsample_8x8(np.zeros((2, 3, 28, 28), np.uint8)).shape == (2, 3, 8, 8)


def test_downsample_refuses_bad_values():
    with pytest.raises(ValueError, match=r"uint8 \(0..255\) or floats in \[0, 1\]"):
        downsample_8x8(np.full((28, 28), 2.0, np.float32))


def test_encode_both_modalities(space, mnist):
    images = space.encode("image", mnist)
    lowres = space.encode("lowres_image", downsample_8x8(mnist))
    assert images.shape == lowres.shape == (20, 64)
    assert torch.allclose(images.norm(dim=1), torch.ones(20), atol=1e-5)
    assert (images @ lowres.T).argmax(dim=1).eq(torch.arange(20)).float().mean() >= 0.7


def test_sklearn_digits_accepted(space):
    pytest.importorskip("sklearn")
    images, labels = load_sklearn_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32 and images.max() == 16
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert space.encode("lowres_image", images[:50]).shape == (50, 64)


def test_lowres_forms_agree(space, mnist):
    small = downsample_8x8(mnist[:4])
    reference = space.encode("lowres_image", small)
    for variant in (small.reshape(4, 64), small.astype(np.int64), torch.from_numpy(small), small.tolist()):
        assert torch.allclose(space.encode("lowres_image", variant), reference, atol=1e-5)


def test_batch_independence(space, mnist):
    small = downsample_8x8(mnist)
    for modality, inputs in (("image", mnist), ("lowres_image", small)):
        full = space.encode(modality, inputs, batch_size=20)
        assert torch.allclose(space.encode(modality, inputs, batch_size=3), full, atol=1e-5)
        assert torch.allclose(space.encode(modality, inputs[5:6]), full[5:6], atol=1e-5)


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        (np.zeros((28, 28)), ValueError, r"shape \[28, 28\] is neither \[8, 8\] nor \[64\]"),
        (np.zeros(63), ValueError, r"neither \[8, 8\] nor \[64\]"),
        (np.full((8, 8), 17.0), ValueError, r"values must lie in \[0, 16\]"),
        (np.full((8, 8), -1), ValueError, r"values must lie in \[0, 16\]"),
        (np.full((8, 8), np.nan), ValueError, "NaN"),
        (np.full((8, 8), "a"), TypeError, "must be numbers"),
        ("digit.png", TypeError, "accepted lowres_image inputs"),
    ],
)
def test_bad_lowres_inputs(space, item, error, match):
    with pytest.raises(error, match=match):
        space.encode("lowres_image", [item])


def test_other_modalities_refused(space):
    with pytest.raises(ValueError, match="does not embed 'audio'"):
        space.encode("audio", [np.zeros(8000, np.float32)])
