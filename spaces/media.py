"""Reading media inputs for space plugins: audio and images from paths, arrays, tensors or PIL images.

Every failure is a clear error naming the input and what is accepted, never a crash inside a model.
"""

from __future__ import annotations

import math
import numbers
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

from spacegraph.plugin import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError, enumerate_batch

AUDIO_ACCEPTED = (
    "accepted audio: paths to files soundfile reads (WAV, FLAC, OGG, MP3, AIFF, ...), numpy arrays / tensors at "
    "the space's sample rate, or (array, sample_rate) tuples at any rate; 2-D [samples, channels] or "
    "[channels, samples] is averaged to mono, integer PCM is scaled to [-1, 1], float16/bfloat16 is read as float32"
)
IMAGE_ACCEPTED = (
    "accepted images: paths to files Pillow opens (PNG, JPEG, BMP, GIF, TIFF, ...), PIL images of any mode, or "
    "numpy arrays / tensors shaped [H, W], [H, W, C] or [C, H, W] with C in 1/3/4 (uint8, uint16, or float in [0, 1]; "
    "float16/bfloat16 is read as float32), at least 1x1 pixels"
)
_MAX_CHANNELS = 8


def _numpy(item: Any) -> Any:
    """A tensor as a numpy array, float16/bfloat16 as float32 (numpy has no bfloat16); anything else as it is."""
    if not isinstance(item, torch.Tensor):
        return item
    tensor = item.detach().cpu().resolve_conj().resolve_neg()
    return (tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor).numpy()


def _float_wave(wave: np.ndarray, what: str) -> np.ndarray:
    """A numeric array as floats; integer PCM is scaled by its dtype's range to [-1, 1]."""
    if wave.dtype.kind not in "fiu":
        raise SpacegraphTypeError(f"{what}: audio arrays must be numeric, got dtype {wave.dtype}; {AUDIO_ACCEPTED}")
    if wave.dtype.kind == "f":
        return wave
    half = float(2 ** (8 * wave.dtype.itemsize - 1))
    return wave / half if wave.dtype.kind == "i" else (wave - half) / half


def _mono_checked(wave: np.ndarray, what: str) -> np.ndarray:
    """A finite, non-empty 1-D float32 waveform from a 1-D or 2-D (channels) numeric array."""
    wave = _float_wave(wave, what)
    if wave.size == 0:
        raise SpacegraphValueError(f"{what}: zero-length audio; pass at least one sample")
    if wave.ndim == 2 and min(wave.shape) <= _MAX_CHANNELS:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    elif wave.ndim != 1:
        shape = list(wave.shape)
        raise SpacegraphValueError(
            f"{what}: audio array of shape {shape} is not 1-D (or 2-D channels); {AUDIO_ACCEPTED}"
        )
    with np.errstate(over="ignore"):
        wave = wave.astype(np.float32)
    if not np.isfinite(wave).all():
        raise SpacegraphValueError(f"{what}: audio contains NaN or inf (or values beyond float32's range)")
    return wave


def _resampled(wave: np.ndarray, rate: int, sample_rate: int, what: str) -> np.ndarray:
    """``wave`` (mono, at ``rate`` Hz) at ``sample_rate`` Hz, by polyphase filtering."""
    if rate == sample_rate:
        return wave
    g = math.gcd(rate, sample_rate)
    return _mono_checked(resample_poly(wave, sample_rate // g, rate // g), what)


def regular_file(path: Path, what: str, kind: str, accepted: str) -> Path:
    """``path``, if it is a regular file; else an error saying what it is. Checked with ``stat`` before anything
    opens it: reading a FIFO, socket or device would block, or never end."""
    if not path.exists():
        raise SpacegraphFileNotFoundError(f"{what}: {kind} file not found: {path}")
    article = "an" if kind[0] in "aeiou" else "a"
    if path.is_dir():
        raise SpacegraphValueError(f"{what}: {path} is a folder, not {article} {kind} file; {accepted}")
    if not path.is_file():
        raise SpacegraphValueError(f"{what}: {path} is not a regular file (a FIFO, socket or device); {accepted}")
    return path


def _declared_frames(path: Path) -> int | None:
    """The frame count a PCM WAV file's header declares (the standard library's ``wave``); None for other files."""
    try:
        with wave.open(str(path), "rb") as file:
            return file.getnframes()
    except (wave.Error, EOFError, OSError):
        return None


def _read_audio_file(path: Path, sample_rate: int, what: str) -> np.ndarray:
    regular_file(path, what, "audio", AUDIO_ACCEPTED)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SpacegraphValueError(f"{what}: could not read audio file {path} ({err}); {AUDIO_ACCEPTED}") from err
    declared = _declared_frames(path)
    if declared is not None and len(data) < declared:  # libsndfile reads a truncated WAV up to where it ends
        raise SpacegraphValueError(
            f"{what}: audio file {path} is truncated: its header promises {declared} frames, it holds {len(data)}; "
            "re-encode or remove it"
        )
    what = f"{what}, file {path}"
    return _resampled(_mono_checked(data, what), rate, sample_rate, what)


def _audio_array(item: Any, what: str) -> np.ndarray:
    """A numpy array from a numpy array or tensor."""
    item = _numpy(item)
    if not isinstance(item, np.ndarray):
        raise SpacegraphTypeError(f"{what} of type {type(item).__name__} is not supported; {AUDIO_ACCEPTED}")
    return item


def _sample_rate(rate: Any, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise SpacegraphValueError(f"{what}: sample_rate must be a positive int, got {rate!r}")
    return int(rate)


def load_audio(item: Any, sample_rate: int, what: str = "audio item") -> np.ndarray:
    """One audio input as a mono float32 waveform at ``sample_rate`` Hz; errors start with ``what``.

    ``item``: a file path (resampled from the file's rate), a numpy array or tensor already at ``sample_rate``, or
    an ``(array, rate)`` tuple (resampled from ``rate``; ``soundfile.read`` returns one).
    """
    if isinstance(item, (str, Path)):
        return _read_audio_file(Path(item), sample_rate, what)
    if isinstance(item, tuple) and len(item) == 2:
        what = f"{what} (array, sample_rate) tuple"
        wave = _mono_checked(_audio_array(item[0], f"{what}: array"), what)
        return _resampled(wave, _sample_rate(item[1], what), sample_rate, what)
    return _mono_checked(_audio_array(item, what), what)


def load_audios(batch: Sequence[Any], sample_rate: int) -> list[np.ndarray]:
    """Each audio input of a batch as :func:`load_audio` reads it; errors name the item's index."""
    return [load_audio(item, sample_rate, f"audio item {i}") for i, item in enumerate_batch(batch)]


def _float_image(arr: np.ndarray, what: str) -> np.ndarray:
    """Scale a numeric image array to float32 in [0, 1] by its dtype."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise SpacegraphValueError(f"{what}: image contains NaN or inf")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise SpacegraphValueError(
                f"{what}: float image values must lie in [0, 1], got [{arr.min():g}, {arr.max():g}]"
            )
        return arr.astype(np.float32)
    raise SpacegraphTypeError(f"{what}: image dtype {arr.dtype} is not supported; {IMAGE_ACCEPTED}")


def _image_array(item: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A numpy array or tensor image as float32 in [0, 1] (its shape not yet checked)."""
    return _float_image(_numpy(item), what)


def _channels_last(arr: np.ndarray, what: str) -> np.ndarray:
    """[H, W, C] with C in 1/3/4 from [H, W], [H, W, C] or [C, H, W]."""
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        raise SpacegraphValueError(
            f"{what}: image array of shape {list(arr.shape)} has no 1/3/4 channel axis; {IMAGE_ACCEPTED}"
        )
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise SpacegraphValueError(f"{what}: image array of shape {list(arr.shape)} is not an image; {IMAGE_ACCEPTED}")
    return arr if arr.ndim == 3 else arr[..., None]


def _gray(arr: np.ndarray, what: str) -> np.ndarray:
    """[H, W] from [H, W], [H, W, C] or [C, H, W]; RGB -> luma, alpha multiplies (composited over black)."""
    arr = _channels_last(arr, what)
    luma = arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return luma * arr[..., 3] if arr.shape[-1] == 4 else luma


def _rgb(arr: np.ndarray, what: str) -> np.ndarray:
    """[H, W, 3] from [H, W], [H, W, C] or [C, H, W]; gray is repeated, alpha multiplies (composited over black)."""
    arr = _channels_last(arr, what)
    rgb = np.repeat(arr[..., :1], 3, axis=-1) if arr.shape[-1] == 1 else arr[..., :3]
    return rgb * arr[..., 3:] if arr.shape[-1] == 4 else rgb


def _rgb_pil(arr: np.ndarray) -> Image.Image:
    """A float [H, W, 3] array in [0, 1] as an 8-bit RGB PIL image."""
    return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), "RGB")


def _check_pil_size(image: Image.Image, what: str) -> None:
    """Refuse a PIL image with no pixels, a closed one, or one whose file does not decode in full."""
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise SpacegraphValueError(
            f"{what}: the PIL image cannot be decoded ({err}): it is closed, or its file is damaged or truncated; "
            f"{IMAGE_ACCEPTED}"
        ) from err
    if image.width == 0 or image.height == 0:
        raise SpacegraphValueError(f"{what}: a {image.width}x{image.height} PIL image has no pixels; {IMAGE_ACCEPTED}")


def _pil_to_float(image: Image.Image, what: str) -> np.ndarray:
    """Any PIL mode as float32 grayscale in [0, 1]."""
    _check_pil_size(image, what)
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":
        arr = np.asarray(image, dtype=np.float32)
        return np.clip(arr / (255.0 if arr.max() <= 255 else 65535.0), 0.0, 1.0)
    if image.mode == "F":
        return _float_image(np.asarray(image, dtype=np.float32), f"{what} (PIL image, mode F)")
    if image.mode == "P":
        image = image.convert("RGBA")
    if "A" in image.getbands():
        la = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0
        return la[..., 0] * la[..., 1]
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _pil_to_rgb(image: Image.Image, what: str) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16/32-bit and float modes scaled as grayscale, alpha composited over black."""
    _check_pil_size(image, what)
    if image.mode.startswith("I") or image.mode == "F":
        return _rgb_pil(_rgb(_pil_to_float(image, what), f"{what} (PIL image, mode {image.mode})"))
    if image.mode == "P":
        image = image.convert("RGBA")
    if "A" in image.getbands():
        return _rgb_pil(_rgb(np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0, f"{what} (PIL image)"))
    return image.convert("RGB")


def _read_image_file(path: Path, what: str) -> Image.Image:
    """The image file at ``path``, decoded in full (Pillow refuses a truncated one)."""
    regular_file(path, what, "image", IMAGE_ACCEPTED)
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise SpacegraphValueError(f"{what}: could not read image file {path} ({err}); {IMAGE_ACCEPTED}") from err
    return image


def _unsupported_image(item: Any, what: str) -> TypeError:
    return TypeError(f"{what} of type {type(item).__name__} is not supported; {IMAGE_ACCEPTED}")


def load_image(item: Any, size: int, what: str = "image item") -> np.ndarray:
    """One image input as float32 grayscale ``[size, size]`` in [0, 1]; errors start with ``what``."""
    if isinstance(item, (str, Path)):
        arr = _pil_to_float(_read_image_file(Path(item), what), f"{what}, file {item}")
    elif isinstance(item, Image.Image):
        arr = _pil_to_float(item, what)
    elif isinstance(item, (np.ndarray, torch.Tensor)):
        arr = _gray(_image_array(item, what), what)
    else:
        raise _unsupported_image(item, what)
    if arr.shape != (size, size):
        resized = Image.fromarray(np.ascontiguousarray(arr, np.float32)).resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(resized)
    return arr


def load_images(batch: Sequence[Any], size: int) -> list[np.ndarray]:
    """Each image input of a batch as :func:`load_image` reads it; errors name the item's index."""
    return [load_image(item, size, f"image item {i}") for i, item in enumerate_batch(batch)]


def load_rgb_image(item: Any, what: str = "image item") -> Image.Image:
    """One image input as an 8-bit RGB PIL image at its own size, for models that bring their own preprocessing;
    errors start with ``what``."""
    if isinstance(item, (str, Path)):
        return _pil_to_rgb(_read_image_file(Path(item), what), f"{what}, file {item}")
    if isinstance(item, Image.Image):
        return _pil_to_rgb(item, what)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return _rgb_pil(_rgb(_image_array(item, what), what))
    raise _unsupported_image(item, what)


def load_rgb_images(batch: Sequence[Any]) -> list[Image.Image]:
    """Each image input of a batch as :func:`load_rgb_image` reads it; errors name the item's index."""
    return [load_rgb_image(item, f"image item {i}") for i, item in enumerate_batch(batch)]


def check_texts(batch: Sequence[Any]) -> list[str]:
    """The batch as a list of str; TypeError for a non-str item, ValueError for an empty or whitespace-only one or
    one that is not valid Unicode (a lone surrogate, which no tokenizer can encode)."""
    for i, text in enumerate_batch(batch):
        if not isinstance(text, str):
            raise SpacegraphTypeError(f"text item {i} is a {type(text).__name__}; text inputs must be str")
        if not text.strip():
            raise SpacegraphValueError(f"text item {i} is empty or whitespace only; pass non-empty strings")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise SpacegraphValueError(
                f"text item {i} holds a lone surrogate {text[err.start]!r} at character {err.start}, which is not "
                "valid Unicode; pass text that encodes as UTF-8 (decode bytes with errors='replace')"
            ) from err
    return [str(text) for text in batch]
