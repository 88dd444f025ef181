"""Optional heavy backends: imported on first use, with an error naming the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._arguments import checked_arguments
from ._errors import MissingExtraError, SpacegraphValueError


@checked_arguments
def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError saying ``pip install "spacegraph[<extra>]"``."""
    if not module or module.startswith("."):
        raise SpacegraphValueError(f"require takes an absolute module name, got {module!r}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is needed here but could not be imported ({exc}); install it with "
            f'pip install "spacegraph[{extra}]"'
        ) from exc
