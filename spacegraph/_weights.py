"""Reading safetensors weights safely: names and shapes from the header before anything is allocated, tensors
checked finite, and errors that name the file."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ._arguments import checked_arguments
from ._errors import SpacegraphFileNotFoundError, SpacegraphValueError

Shapes = Mapping[str, tuple[int, ...]]


def _check_regular(path: str | os.PathLike) -> None:
    """Refuse, before anything opens it, a path that is not a regular file: opening a FIFO would block forever."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, UnicodeEncodeError, ValueError) as err:  # also a name no file system holds
        raise SpacegraphFileNotFoundError(f"{path!r}: no such safetensors file") from err
    except OSError as err:
        raise SpacegraphValueError(f"{path}: cannot be read ({err.strerror})") from err
    if not stat.S_ISREG(mode):
        raise SpacegraphValueError(
            f"{path}: not a regular file (a folder, FIFO, socket or device); give a .safetensors file"
        )


@checked_arguments
def read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, read from the header alone (no tensor is loaded)."""
    _check_regular(path)
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as err:
        raise SpacegraphValueError(f"{path}: not a readable safetensors file ({err})") from err


@checked_arguments
def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    _check_regular(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise SpacegraphValueError(f"{path}: not a readable safetensors file ({err})") from err


@checked_arguments
def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """:func:`read_tensors`, refusing a file any of whose weights or statistics is unusable (:func:`tensor_problem`),
    naming the file and the tensors: every model's weights are loaded through this."""
    state = read_tensors(path)
    problems = [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
    if problems:
        raise SpacegraphValueError(f"{path}: {'; '.join(problems[:5])}; these weights are damaged, copy them again")
    return state


@checked_arguments
def layout_problems(found: Shapes, expected: Shapes) -> list[str]:
    """Missing, unexpected and wrongly shaped names, each list of names sorted."""
    problems = []
    if missing := sorted(expected.keys() - found.keys()):
        problems.append(f"missing keys {missing}")
    if unexpected := sorted(found.keys() - expected.keys()):
        problems.append(f"unexpected keys {unexpected}")
    for key in sorted(expected.keys() & found.keys()):
        if tuple(found[key]) != tuple(expected[key]):
            problems.append(f"{key} has shape {list(found[key])}, expected {list(expected[key])}")
    return problems


@checked_arguments
def tensor_problem(name: str, tensor: torch.Tensor) -> str | None:
    """Why a weight or BatchNorm statistic is unusable (NaN/inf anywhere, a negative running variance), or None."""
    if not tensor.is_floating_point():
        return None
    if not torch.isfinite(tensor).all():
        return f"{name} contains NaN or inf"
    if name.endswith("running_var") and (tensor < 0).any():
        return f"{name} has negative values (a BatchNorm running variance is >= 0)"
    return None
