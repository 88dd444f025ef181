"""Reading media inputs for space plugins: audio and images from paths, arrays, tensors or PIL images.

Every failure is a clear error naming the input and what is accepted, never a crash inside a model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

AUDIO_ACCEPTED = (
    "accepted audio: paths to files soundfile reads (WAV, FLAC, OGG, AIFF, ...), or 1-D numpy arrays / tensors "
    "sampled at 8 kHz (2-D [samples, channels] is averaged to mono)"
)
IMAGE_ACCEPTED = (
    "accepted images: paths to files Pillow opens (PNG, JPEG, BMP, GIF, TIFF, ...), PIL images of any mode, or "
    "numpy arrays / tensors shaped [H, W], [H, W, C] or [C, H, W] with C in 1/3/4 (uint8, uint16, or float in [0, 1])"
)
_MAX_CHANNELS = 8


def _mono_checked(wave: np.ndarray, what: str) -> np.ndarray:
    """A finite, non-empty 1-D float32 waveform from a 1-D or 2-D (channels) numeric array."""
    if wave.dtype.kind not in "fiu":
        raise TypeError(f"{what}: audio arrays must be numeric, got dtype {wave.dtype}; {AUDIO_ACCEPTED}")
    if wave.size == 0:
        raise ValueError(f"{what}: zero-length audio; pass at least one sample")
    if wave.ndim == 2 and min(wave.shape) <= _MAX_CHANNELS:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    elif wave.ndim != 1:
        shape = list(wave.shape)
        raise ValueError(f"{what}: audio array of shape {shape} is not 1-D (or 2-D channels); {AUDIO_ACCEPTED}")
    if not np.isfinite(wave).all():
        raise ValueError(f"{what}: audio contains NaN or inf")
    return wave.astype(np.float32)


def _read_audio_file(path: Path, sample_rate: int) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an audio file; {AUDIO_ACCEPTED}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"could not read audio file {path} ({err}); {AUDIO_ACCEPTED}") from err
    wave = _mono_checked(data, str(path))
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        wave = resample_poly(wave, sample_rate // g, rate // g).astype(np.float32)
    return _mono_checked(wave, str(path))


def load_audio(item: Any, sample_rate: int) -> np.ndarray:
    """One audio input (path, numpy array or tensor at ``sample_rate``) as a mono float32 waveform."""
    if isinstance(item, (str, Path)):
        return _read_audio_file(Path(item), sample_rate)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        return _mono_checked(item, "audio array")
    raise TypeError(f"audio item of type {type(item).__name__} is not supported; {AUDIO_ACCEPTED}")


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
            raise ValueError(f"{what}: image contains NaN or inf")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(f"{what}: float image values must lie in [0, 1], got [{arr.min():g}, {arr.max():g}]")
        return arr.astype(np.float32)
    raise TypeError(f"{what}: image dtype {arr.dtype} is not supported; {IMAGE_ACCEPTED}")


def _gray(arr: np.ndarray, what: str) -> np.ndarray:
    """[H, W] from [H, W], [H, W, C] or [C, H, W]; RGB -> luma, alpha multiplies (composited over black)."""
    if arr.ndim == 3:
        if arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)
        if arr.shape[-1] not in (1, 3, 4):
            shape = list(arr.shape)
            raise ValueError(f"{what}: image array of shape {shape} has no 1/3/4 channel axis; {IMAGE_ACCEPTED}")
        luma = arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        arr = luma * arr[..., 3] if arr.shape[-1] == 4 else luma
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{what}: image array of shape {list(arr.shape)} is not an image; {IMAGE_ACCEPTED}")
    return arr


def _pil_to_float(image: Image.Image) -> np.ndarray:
    """Any PIL mode as float32 grayscale in [0, 1]."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":
        arr = np.asarray(image, dtype=np.float32)
        return np.clip(arr / (255.0 if arr.max() <= 255 else 65535.0), 0.0, 1.0)
    if image.mode == "F":
        return _float_image(np.asarray(image, dtype=np.float32), "PIL image (mode F)")
    if image.mode == "P":
        image = image.convert("RGBA")
    if "A" in image.getbands():
        la = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0
        return la[..., 0] * la[..., 1]
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _read_image_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file; {IMAGE_ACCEPTED}")
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_float(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"could not read image file {path} ({err}); {IMAGE_ACCEPTED}") from err


def load_image(item: Any, size: int) -> np.ndarray:
    """One image input as float32 grayscale ``[size, size]`` in [0, 1]."""
    if isinstance(item, (str, Path)):
        arr = _read_image_file(Path(item))
    elif isinstance(item, Image.Image):
        arr = _pil_to_float(item)
    elif isinstance(item, (np.ndarray, torch.Tensor)):
        arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        arr = _gray(_float_image(arr, "image array"), "image array")
    else:
        raise TypeError(f"image item of type {type(item).__name__} is not supported; {IMAGE_ACCEPTED}")
    if arr.shape != (size, size):
        resized = Image.fromarray(np.ascontiguousarray(arr, np.float32)).resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(resized)
    return arr
