"""The inputs digest: an exact sha256 of what a feature cache encodes, so a cache is never reused for other inputs."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._modality import Modality, as_modality

_FINGERPRINTABLE = (
    "str (text, or a file path whose content is hashed), os.PathLike, bytes, bool, int, float, numpy arrays and "
    "scalars, torch tensors, PIL images, and lists or tuples of these"
)


def inputs_digest(inputs: Any, modality: Modality | str) -> str:
    """A sha256 of exactly what is encoded, so a cache is never reused for other inputs.

    ``modality`` says what a ``str`` is: for text the text itself; for any other modality the string plus, when it
    names a file, the file's content (a str that names no file, such as a precomputed space's row id, is hashed as
    the string; the space says whether it wanted a file). An ``os.PathLike`` must name a file. Arrays, tensors and
    images are hashed with their dtype/mode and shape; lists and tuples element by element, tagged with their
    length, so no two different inputs share a digest.
    """
    digest = hashlib.sha256()
    _update(digest, inputs, as_modality(modality), "inputs")
    return digest.hexdigest()


def _put(digest: Any, tag: str, payload: Any) -> None:
    """Add one tagged, length-prefixed field (``payload`` is any C-contiguous buffer)."""
    digest.update(f"{tag}:{memoryview(payload).nbytes}:".encode())
    digest.update(payload)


def _update(digest: Any, item: Any, modality: Modality, where: str) -> None:
    if isinstance(item, str):
        _put(digest, "str", item.encode("utf-8", "surrogatepass"))
        if modality is not Modality.TEXT and os.path.isfile(item):
            _put(digest, "file", _file_sha256(item))
    elif isinstance(item, os.PathLike):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise SpacegraphFileNotFoundError(
                f"{where}: {path!s} is not a file; the feature cache hashes the content of a path"
            )
        _put(digest, "path", os.fsencode(path))
        _put(digest, "file", _file_sha256(path))
    elif isinstance(item, (bytes, bytearray, memoryview)):
        _put(digest, "bytes", bytes(item))
    elif isinstance(item, bool):
        _put(digest, "bool", str(int(item)).encode())
    elif isinstance(item, int):
        _put(digest, "int", str(item).encode())
    elif isinstance(item, float):
        _put(digest, "float", item.hex().encode())
    elif isinstance(item, (np.ndarray, np.generic)):
        _update_array(digest, np.asarray(item), modality, where)
    elif isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        tensor = tensor.to_dense() if tensor.layout != torch.strided else tensor
        _put(digest, "tensor", f"{tensor.dtype}|{tuple(tensor.shape)}".encode())
        _put(digest, "data", tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(item, Image.Image):
        _update_image(digest, item, where)
    elif isinstance(item, (list, tuple)):
        _put(digest, "tuple" if isinstance(item, tuple) else "list", str(len(item)).encode())
        for index, element in enumerate(item):
            _update(digest, element, modality, f"{where}[{index}]")
    else:
        raise SpacegraphTypeError(
            f"{where}: the feature cache cannot fingerprint a {type(item).__name__}; it takes {_FINGERPRINTABLE}"
        )


def _update_array(digest: Any, array: np.ndarray, modality: Modality, where: str) -> None:
    if array.dtype.hasobject:
        _put(digest, "object-array", str(array.shape).encode())
        for index, element in enumerate(array.ravel()):
            _update(digest, element, modality, f"{where}.flat[{index}]")
        return
    _put(digest, "array", f"{np.lib.format.dtype_to_descr(array.dtype)}|{array.shape}".encode())
    _put(digest, "data", np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _update_image(digest: Any, image: Image.Image, where: str) -> None:
    try:
        pixels = image.tobytes()
    except (OSError, ValueError) as err:
        raise SpacegraphValueError(f"{where}: the image cannot be read ({err})") from err
    _put(digest, "image", f"{image.mode}|{image.size}".encode())
    _put(digest, "palette", bytes(image.getpalette() or []))
    _put(digest, "data", pixels)


def _file_sha256(path: str | bytes) -> bytes:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise SpacegraphValueError(f"{os.fsdecode(path)}: cannot be read to fingerprint it ({err.strerror})") from err
    return digest.digest()
