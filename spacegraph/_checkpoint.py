"""Reading torch pickles safely: ``torch.load(weights_only=True)`` only, with clear errors."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ._arguments import checked_arguments
from ._errors import SpacegraphFileNotFoundError, SpacegraphValueError


@checked_arguments
def load_weights_only(path: str | os.PathLike, what: str, *, allowed: Sequence[type] = ()) -> Any:
    """The content of a torch checkpoint, unpickled with ``weights_only=True``: only tensors, plain containers
    and the ``allowed`` classes are built, so no code from the file runs."""
    path = Path(path)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name no file system holds
        exists = False
    if not exists:
        raise SpacegraphFileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():  # checked before torch.load opens it: a FIFO or device would block
        raise SpacegraphValueError(
            f"{path} is not a regular file (a folder, FIFO, socket or device), not a {what} file"
        )
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises several kinds (UnpicklingError, RuntimeError, EOFError, ...)
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        detail = found.group(1) if found else (str(err).splitlines() or [type(err).__name__])[0]
        raise SpacegraphValueError(
            f"could not load {what} {path} with torch.load(weights_only=True): {detail} (a corrupt file, or one "
            "holding objects other than tensors and plain containers, which are refused)"
        ) from err
