"""The two shipped digit spaces: loading, input handling, batch independence, zero-shot sanity, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from scipy.signal import resample_poly
from spacegraph_spaces import digits_data
from spacegraph_spaces.digits import DigitsAudioTextSpace, DigitsImageTextSpace

from spacegraph import Modality

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def audio_space() -> DigitsAudioTextSpace:
    return DigitsAudioTextSpace()


@pytest.fixture(scope="module")
def image_space() -> DigitsImageTextSpace:
    return DigitsImageTextSpace()


@pytest.fixture(scope="module")
def samples() -> dict:
    return digits_data.load_demo_samples()


def test_specs(audio_space, image_space):
    assert audio_space.spec.name == "digits-audio-text"
    assert audio_space.modalities == (Modality.AUDIO, Modality.TEXT) and audio_space.spec.dim == 64
    assert image_space.spec.name == "digits-image-text"
    assert image_space.modalities == (Modality.IMAGE, Modality.TEXT) and image_space.spec.dim == 96
    assert audio_space.spec.normalized and image_space.spec.normalized
    assert audio_space.spec.fingerprint.startswith("sha256:")
    assert audio_space.spec.fingerprint != image_space.spec.fingerprint
    assert DigitsAudioTextSpace().spec.fingerprint == audio_space.spec.fingerprint


def test_shipped_data():
    rows = digits_data.load_digit_texts()
    assert {r["digit"] for r in rows} == set(range(10))
    assert {r["source"] for r in rows} <= {"member", "definition", "example", "template"}
    assert len({r["text"] for r in rows}) == len(rows)
    assert len(digits_data.class_prompts()) == 10


def test_demo_samples(samples):
    assert len(samples["audio_query_paths"]) == 300 and len(samples["audio_memory_paths"]) == 300
    assert all(p.endswith(".flac") for p in samples["audio_query_paths"])
    assert samples["image_gallery"].shape == (1000, 28, 28) and samples["image_gallery"].dtype == np.uint8
    assert samples["image_memory"].shape == (1000, 28, 28)
    assert np.bincount(samples["audio_query_labels"]).tolist() == [30] * 10


def test_audio_path_array_and_tensor_agree(audio_space, samples):
    path = samples["audio_query_paths"][0]
    wave, rate = sf.read(path, dtype="float32")
    assert rate == 8000
    out = audio_space.encode("audio", [path, wave, torch.from_numpy(wave)])
    assert out.shape == (3, 64)
    torch.testing.assert_close(out[1], out[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], out[0], atol=1e-5, rtol=0)


def test_audio_16k_stereo_is_resampled(audio_space, samples, tmp_path):
    path = samples["audio_query_paths"][40]
    wave, _ = sf.read(path, dtype="float32")
    up = resample_poly(wave, 2, 1)
    sf.write(tmp_path / "stereo16k.wav", np.stack([up, 0.5 * up], axis=1), 16000, subtype="PCM_16")
    base, resampled = audio_space.encode("audio", [path, tmp_path / "stereo16k.wav"])
    assert float(base @ resampled) > 0.9


def test_audio_batch_independent(audio_space, samples):
    paths = samples["audio_query_paths"][::60]
    alone = audio_space.encode("audio", paths[:1])
    mixed = audio_space.encode("audio", [paths[0], *paths[1:], np.zeros(100, np.float32)])
    torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=0)


def test_image_input_kinds_agree(image_space, samples, tmp_path):
    gray = samples["image_gallery"][3]
    Image.fromarray(gray).save(tmp_path / "digit.png")
    rgba = Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 255)], axis=-1))
    i16 = Image.fromarray(gray.astype(np.uint16) * 257)
    assert i16.mode.startswith("I;16")
    png = tmp_path / "digit.png"
    inputs = [gray, png, str(png), rgba, i16, gray / 255.0, torch.from_numpy(gray)]
    out = image_space.encode("image", inputs)
    for row in out[1:]:
        torch.testing.assert_close(row, out[0], atol=1e-4, rtol=0)


def test_image_other_sizes_and_modes(image_space, samples):
    gray = samples["image_gallery"][3]
    base = image_space.encode("image", [gray])[0]
    big = np.kron(gray, np.ones((3, 3), np.uint8))
    others = image_space.encode("image", [big, Image.fromarray(gray).convert("1"), np.stack([gray] * 3)])
    assert (others @ base > 0.8).all()


def test_image_batch_independent(image_space, samples):
    gallery = samples["image_gallery"]
    alone = image_space.encode("image", gallery[:1])
    mixed = image_space.encode("image", list(gallery[:1]) + list(gallery[500:507]))
    torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=0)


def test_text_batch_independent(audio_space, image_space):
    for space in (audio_space, image_space):
        alone = space.encode("text", ["the number seven"])
        mixed = space.encode("text", ["the number seven", "VII", "the cardinal number that is the sum of six and one"])
        torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=0)


def _accuracy(space, modality, inputs, labels) -> float:
    prompts = space.encode("text", digits_data.class_prompts())
    predicted = (space.encode(modality, inputs) @ prompts.T).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def test_zero_shot_on_shipped_samples(audio_space, image_space, samples):
    audio_paths, audio_labels = samples["audio_query_paths"][::6], samples["audio_query_labels"][::6]
    images, image_labels = samples["image_gallery"][::20], samples["image_gallery_labels"][::20]
    assert _accuracy(audio_space, "audio", audio_paths, audio_labels) > 0.8
    assert _accuracy(image_space, "image", images, image_labels) > 0.8


AUDIO_BAD = [
    (lambda d: d / "missing.wav", FileNotFoundError, r"audio file not found: .*missing\.wav"),
    (lambda d: _write(d / "bad.wav", b"RIFF nope"), ValueError, r"could not read audio file .*bad\.wav.*accepted"),
    (lambda d: _write(d / "notes.txt", b"hello"), ValueError, r"could not read audio file .*notes\.txt"),
    (lambda d: d, ValueError, r"is a folder"),
    (lambda d: np.zeros(0, np.float32), ValueError, r"zero-length audio"),
    (lambda d: _write_wav(d / "empty.wav", np.zeros(0, np.float32)), ValueError, r"empty\.wav: zero-length"),
    (lambda d: np.zeros((2, 3, 100), np.float32), ValueError, r"not 1-D"),
    (lambda d: np.array([0.1, np.nan, 0.2], np.float32), ValueError, r"NaN or inf"),
    (lambda d: np.array([0.1, np.inf], np.float32), ValueError, r"NaN or inf"),
    (lambda d: np.array(["a", "b"]), TypeError, r"must be numeric"),
    (lambda d: 5, TypeError, r"int is not supported.*accepted audio"),
]

IMAGE_BAD = [
    (lambda d: d / "missing.png", FileNotFoundError, r"image file not found: .*missing\.png"),
    (lambda d: _write(d / "bad.png", b"\x89PNG broken"), ValueError, r"could not read image file .*bad\.png.*accepted"),
    (lambda d: np.full((28, 28), np.nan, np.float32), ValueError, r"NaN or inf"),
    (lambda d: np.full((28, 28), 2.0), ValueError, r"must lie in \[0, 1\]"),
    (lambda d: np.zeros((2, 2, 28, 28), np.uint8), ValueError, r"is not an image"),
    (lambda d: np.zeros((28, 28, 5), np.uint8), ValueError, r"no 1/3/4 channel axis"),
    (lambda d: np.zeros((28, 28), np.complex64), TypeError, r"dtype complex64 is not supported"),
    (lambda d: 3.5, TypeError, r"float is not supported.*accepted images"),
]

TEXT_BAD = [
    ("", ValueError, r"empty or whitespace"),
    ("   \n", ValueError, r"empty or whitespace"),
    (7, TypeError, r"text item 1 is a int; text inputs must be str"),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _write_wav(path, wave):
    sf.write(path, wave, 8000)
    return path


@pytest.mark.parametrize(("make", "error", "message"), AUDIO_BAD)
def test_bad_audio(audio_space, tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        audio_space.encode("audio", [np.zeros(800, np.float32), make(tmp_path)])


@pytest.mark.parametrize(("make", "error", "message"), IMAGE_BAD)
def test_bad_image(image_space, tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        image_space.encode("image", [np.zeros((28, 28), np.uint8), make(tmp_path)])


@pytest.mark.parametrize(("item", "error", "message"), TEXT_BAD)
def test_bad_text(audio_space, image_space, item, error, message):
    for space in (audio_space, image_space):
        with pytest.raises(error, match=message):
            space.encode("text", ["seven", item])


def test_text_without_words_refused_by_word_tokeniser(audio_space, image_space):
    with pytest.raises(ValueError, match="no word characters"):
        image_space.encode("text", ["!!!"])
    assert audio_space.encode("text", ["!!!"]).shape == (1, 64)


def test_wrong_modality(audio_space, image_space):
    with pytest.raises(ValueError, match="does not embed 'image'"):
        audio_space.encode("image", [np.zeros((28, 28), np.uint8)])
    with pytest.raises(ValueError, match="does not embed 'audio'"):
        image_space.encode("audio", [np.zeros(800, np.float32)])


def test_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DigitsAudioTextSpace(tmp_path)
