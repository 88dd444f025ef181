"""Errors raised by spacegraph; each message says what was wrong and what is accepted."""


class UnknownNameError(KeyError):
    """A space, bridge or plugin name that is not known (a KeyError whose message reads cleanly)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoRouteError(ValueError):
    """No chain of bridges joins two modalities."""


class FingerprintMismatchError(ValueError):
    """A bridge or cache was made from different weights than the space it is used with."""
