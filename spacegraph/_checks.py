"""Checks of options before any work: counts and devices, each refused with the option named and what is
accepted."""

from __future__ import annotations

from typing import Any

import torch

from ._errors import SpacegraphTypeError, SpacegraphValueError

DEVICES_ACCEPTED = "'cpu', 'cuda', 'cuda:N' (N below the CUDA device count) or 'mps', as a string or torch.device"


def is_count(value: Any, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_count(name: str, value: Any, least: int = 1) -> int:
    """``value``, if it is an integer >= ``least`` (not a bool, float or string)."""
    if not is_count(least, -(2**63)):
        raise SpacegraphTypeError(f"check_count: least must be an integer, got {type(least).__name__}")
    if not is_count(value, least):
        raise SpacegraphValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def checked_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this machine has: a device torch does not know, a CUDA index past the
    devices present, or CUDA / MPS where there is none are refused before anything moves."""
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise SpacegraphValueError(
                f"{name} {device!r} is not a device torch knows; accepted: {DEVICES_ACCEPTED}"
            ) from err
    if not isinstance(device, torch.device):
        raise SpacegraphTypeError(f"{name} must be {DEVICES_ACCEPTED}; got a {type(device).__name__}")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index is not None and device.index >= count):
            raise SpacegraphValueError(f"{name} {str(device)!r}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SpacegraphValueError(f"{name} {str(device)!r}: MPS is not available on this machine")
    return device
