"""Errors raised by spacegraph; each message says what was wrong and what is accepted.

Every one is a :class:`SpacegraphError`, so callers catch the library's errors as one kind, and also the builtin
error it stands for (``ValueError``, ``TypeError``, ``KeyError``, ...), so code that catches those keeps working.
"""

__all__ = [
    "FingerprintMismatchError",
    "MissingExtraError",
    "NoRouteError",
    "SaveRefusedError",
    "SpacegraphArgumentError",
    "SpacegraphError",
    "SpacegraphFileNotFoundError",
    "SpacegraphIndexError",
    "SpacegraphTypeError",
    "SpacegraphValueError",
    "UnknownModalityError",
    "UnknownNameError",
]


class SpacegraphError(Exception):
    """Base class of every error spacegraph raises."""


class SpacegraphValueError(SpacegraphError, ValueError):
    """A value spacegraph cannot use: bad input, a damaged file, an inconsistent card or config."""


class SpacegraphTypeError(SpacegraphError, TypeError):
    """An input of a type spacegraph does not take."""


class SpacegraphFileNotFoundError(SpacegraphError, FileNotFoundError):
    """A file or folder spacegraph needs is missing."""


class SpacegraphIndexError(SpacegraphError, IndexError):
    """A row or item index out of range."""


class MissingExtraError(SpacegraphError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class UnknownNameError(SpacegraphError, KeyError):
    """A space, bridge, plugin or modality name that is not known (a KeyError whose message reads cleanly)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownModalityError(SpacegraphValueError):
    """A modality name that is not registered."""


class NoRouteError(SpacegraphValueError):
    """No chain of bridges joins two modalities."""


class FingerprintMismatchError(SpacegraphValueError):
    """A bridge or cache was made from different weights than the space it is used with."""


class SaveRefusedError(SpacegraphError, FileExistsError, ValueError):
    """A save target that is not ours to replace: a file, a link, or a folder holding files the save did not
    write. Both a FileExistsError and a ValueError, so callers catching either see it."""


class SpacegraphArgumentError(SpacegraphTypeError, SpacegraphValueError):
    """An argument that does not match what the function accepts (its annotation); a ``TypeError`` and a
    ``ValueError``, so callers catching either for bad input keep working."""
