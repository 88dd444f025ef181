"""Reading point clouds for space plugins: numpy arrays, tensors and .npy / .ply / .off / .pcd files, as xyz.

Only the x, y, z coordinates are kept: further columns (colours, normals, intensities) are ignored. Every failure
is a clear error naming the input and what is accepted, never a crash inside a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spacegraph.plugin import SpacegraphTypeError, SpacegraphValueError, require

from .media import regular_file

POINT_CLOUD_ACCEPTED = (
    "accepted point clouds: numpy arrays or tensors shaped [N, 3], or [N, C > 3] whose columns after x, y, z "
    "(colours, normals, ...) are ignored; or paths to .npy (such an array), .ply (vertex x/y/z), .off (text OFF: "
    "the mesh vertices) or .pcd (ascii, binary or binary_compressed, fields x/y/z) files; at least two distinct, "
    "finite points"
)


# ---------------------------------------------------------------- checks


def _checked_xyz(arr: np.ndarray, what: str) -> np.ndarray:
    """Finite float64 ``[N, 3]`` xyz from a numeric ``[N, C >= 3]`` array, with at least two distinct points and an
    extent float64 holds (so that centring and scaling it cannot divide by zero or overflow)."""
    if arr.dtype.kind not in "fiu":
        raise SpacegraphTypeError(
            f"{what}: point cloud arrays must be numeric, got dtype {arr.dtype}; {POINT_CLOUD_ACCEPTED}"
        )
    if arr.ndim != 2:
        raise SpacegraphValueError(
            f"{what}: array of shape {list(arr.shape)} is not one point cloud [N, 3] (to encode a single cloud, "
            f"pass a list [cloud] or an array [1, N, 3]); {POINT_CLOUD_ACCEPTED}"
        )
    if arr.shape[1] < 3:
        raise SpacegraphValueError(
            f"{what}: {arr.shape[1]} columns; a point cloud needs x, y, z; {POINT_CLOUD_ACCEPTED}"
        )
    if arr.shape[0] == 0:
        raise SpacegraphValueError(f"{what}: the point cloud has no points")
    xyz = arr[:, :3].astype(np.float64)
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise SpacegraphValueError(f"{what}: {int(bad.sum())} points have NaN or inf coordinates (first rows: {rows})")
    with np.errstate(over="ignore"):
        extent = np.ptp(xyz, axis=0)
    if not np.isfinite(extent).all():
        biggest = float(np.abs(xyz).max())
        raise SpacegraphValueError(
            f"{what}: the points span more than float64 holds (coordinates up to {biggest:g}); scale down"
        )
    if not extent.any():
        raise SpacegraphValueError(
            f"{what}: all {len(xyz)} points coincide; a point cloud needs at least two distinct points"
        )
    return xyz


# ---------------------------------------------------------------- .npy / .ply


def _read_npy(path: Path) -> np.ndarray:
    with path.open("rb") as f:
        return np.lib.format.read_array(f, allow_pickle=False)  # unlike np.load, refuses .npz archives


def _read_ply(path: Path) -> np.ndarray:
    plyfile = require("plyfile", "pointcloud")
    try:
        ply = plyfile.PlyData.read(str(path))
    except plyfile.PlyParseError as err:
        raise SpacegraphValueError(str(err)) from err
    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise SpacegraphValueError(f"no 'vertex' element (elements: {names})")
    vertex = ply["vertex"].data
    missing = [axis for axis in "xyz" if axis not in vertex.dtype.names]
    if missing:
        raise SpacegraphValueError(f"the vertex element lacks {missing} (properties: {list(vertex.dtype.names)})")
    return np.stack([vertex[axis] for axis in "xyz"], axis=1)


# ---------------------------------------------------------------- .off

_OFF_HEADER = re.compile(r"(ST)?C?N?(4)?(n)?OFF(.*)")


def _read_off(path: Path) -> np.ndarray:
    """Vertices of a text OFF mesh ([ST][C][N]OFF, comments, ModelNet's ``OFF<counts>`` first line); faces ignored."""
    lines = [tokens for line in path.read_text(encoding="utf-8").splitlines() if (tokens := line.split("#")[0].split())]
    match = _OFF_HEADER.fullmatch(lines[0][0]) if lines else None
    if match is None:
        raise SpacegraphValueError("not an OFF file (the first line must start with OFF, COFF, NOFF, STOFF, ...)")
    if match.group(2) or match.group(3):
        raise SpacegraphValueError(f"{lines[0][0]} (4-D or n-D vertices) is not supported")
    rest = ([match.group(4)] if match.group(4) else []) + lines[0][1:]
    if rest and rest[0].upper() == "BINARY":
        raise SpacegraphValueError("binary OFF is not supported; save it as text OFF")
    counts, body = (rest, lines[1:]) if rest else (lines[1] if len(lines) > 1 else [], lines[2:])
    if not counts:
        raise SpacegraphValueError("missing the vertex/face counts line")
    n_vertices = int(counts[0])
    if n_vertices < 0:
        raise SpacegraphValueError(f"the header says {n_vertices} vertices; a count cannot be negative")
    if len(body) < n_vertices:
        raise SpacegraphValueError(f"the header says {n_vertices} vertices, the file has {len(body)} lines after it")
    rows = [row[:3] for row in body[:n_vertices]]
    if any(len(row) < 3 for row in rows):
        raise SpacegraphValueError("a vertex line has fewer than 3 coordinates")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


# ---------------------------------------------------------------- .pcd


def _read_pcd(path: Path) -> np.ndarray:
    """xyz of a PCD file (ascii, binary or binary_compressed, read by pypcd4); points with NaN coordinates
    (PCL's invalid points of organized clouds) are dropped."""
    cloud = require("pypcd4", "pointcloud").PointCloud.from_path(path)
    missing = [axis for axis in "xyz" if axis not in cloud.fields]
    if missing:
        raise SpacegraphValueError(f"no {missing} fields (FIELDS: {list(cloud.fields)})")
    xyz = cloud.numpy(("x", "y", "z")).astype(np.float64)
    return xyz[~np.isnan(xyz).any(axis=1)]


# ---------------------------------------------------------------- entry point

READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".npy": _read_npy,
    ".ply": _read_ply,
    ".off": _read_off,
    ".pcd": _read_pcd,
}


def read_point_cloud_file(path: str | Path, what: str = "point cloud item") -> np.ndarray:
    """The array a point cloud file holds (not yet checked), by its extension; errors start with ``what``."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise SpacegraphValueError(
            f"{what}: unsupported point cloud file extension {path.suffix!r} ({path}); {POINT_CLOUD_ACCEPTED}"
        )
    regular_file(path, what, "point cloud", POINT_CLOUD_ACCEPTED)
    try:
        return reader(path)
    except ImportError:
        raise
    except Exception as err:  # a reader's own error kinds (pypcd4, plyfile, numpy) all mean an unreadable file
        raise SpacegraphValueError(
            f"{what}: could not read point cloud file {path} ({err}); {POINT_CLOUD_ACCEPTED}"
        ) from err


def load_xyz(item: Any, what: str = "point cloud item") -> np.ndarray:
    """One point cloud (path, numpy array or tensor) as float64 xyz ``[N, 3]``, checked as :func:`_checked_xyz`
    says; errors start with ``what``."""
    if isinstance(item, (str, Path)):
        return _checked_xyz(read_point_cloud_file(item, what), f"{what}, file {item}")
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        return _checked_xyz((tensor.double() if tensor.is_floating_point() else tensor).numpy(), what)
    if isinstance(item, np.ndarray):
        return _checked_xyz(item, what)
    raise SpacegraphTypeError(f"{what} of type {type(item).__name__} is not supported; {POINT_CLOUD_ACCEPTED}")
