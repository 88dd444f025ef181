"""Modality names: an open set. The built-in names are constants (``Modality.AUDIO``); a plugin adds its own with
:func:`register_modality` or the ``spacegraph.modalities`` entry-point group, and a typo fails early with the
closest known names."""

from __future__ import annotations

import difflib
import logging
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._arguments import checked_arguments
from ._errors import SpacegraphValueError, UnknownModalityError

logger = logging.getLogger(__name__)

MODALITIES_GROUP = "spacegraph.modalities"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class Modality(str):
    """A modality name: a ``str`` (``Modality.AUDIO == "audio"``), one instance per name, so ``is`` works.

    ``Modality("audio")`` returns the registered instance; an unknown name raises an error listing the known ones
    and the closest matches. Entry points of the ``spacegraph.modalities`` group are read the first time a name is
    not found, so an installed plugin's modality works without importing the plugin first.
    """

    _known: ClassVar[dict[str, Modality]] = {}
    _descriptions: ClassVar[dict[str, str]] = {}
    _plugins_read: ClassVar[bool] = False

    TEXT: ClassVar[Modality]
    IMAGE: ClassVar[Modality]
    LOWRES_IMAGE: ClassVar[Modality]
    AUDIO: ClassVar[Modality]
    VIDEO: ClassVar[Modality]
    POINT_CLOUD: ClassVar[Modality]
    DEPTH: ClassVar[Modality]
    THERMAL: ClassVar[Modality]
    IMU: ClassVar[Modality]

    def __new__(cls, value: object) -> Modality:  # noqa: PYI034 (returns the registered instance)
        if isinstance(value, Modality):
            return value
        if isinstance(value, str):
            found = cls._known.get(value) or cls._from_plugins(value)
            if found is not None:
                return found
        names = list(cls._known)
        close = difflib.get_close_matches(str(value), names, n=3)
        hint = f"; closest: {', '.join(map(repr, close))}" if close else ""
        raise UnknownModalityError(
            f"unknown modality {value!r}; known modalities: {', '.join(names)}{hint} (a plugin adds one with "
            "spacegraph.register_modality)"
        )

    @classmethod
    def _from_plugins(cls, name: str) -> Modality | None:
        """Read the ``spacegraph.modalities`` entry points once; one that fails is logged and skipped."""
        if not cls._plugins_read:
            cls._plugins_read = True
            for ep in entry_points(group=MODALITIES_GROUP):
                try:
                    _register_entry_point(ep)
                except Exception as exc:  # noqa: BLE001 (a broken plugin must not break the others)
                    logger.warning("modality plugin %r (%s) is skipped: %s", ep.name, ep.value, exc)
        return cls._known.get(name)

    @property
    def value(self) -> str:
        """The name as a plain ``str``."""
        return str.__str__(self)

    @property
    def description(self) -> str:
        return self._descriptions.get(self.value, "")

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Modality({self.value!r})"

    def __reduce__(self) -> tuple[type[Modality], tuple[str]]:
        return Modality, (self.value,)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            as_modality, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


@checked_arguments
def register_modality(name: str, description: str = "") -> Modality:
    """Add a modality (idempotent) and return it: lowercase letters, digits and ``_``, starting with a letter."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpacegraphValueError(
            f"modality name {name!r} is refused: use 1-40 lowercase letters, digits or '_', starting with a letter"
        )
    if name not in Modality._known:
        Modality._known[name] = str.__new__(Modality, name)
    if description:
        Modality._descriptions[name] = description
    return Modality._known[name]


def _register_entry_point(ep: EntryPoint) -> None:
    """Register the modality an entry point names; its object is the description (a ``str``), or the
    :class:`Modality` its module registered, or anything else (no description)."""
    target = ep.load()
    if isinstance(target, Modality):
        description = target.description
    else:
        description = target if isinstance(target, str) else ""
    register_modality(ep.name, description)


def known_modalities() -> tuple[Modality, ...]:
    """Every registered modality, built-in ones first, in the order they were registered."""
    return tuple(Modality._known.values())


def as_modality(value: str | Modality) -> Modality:
    """Return ``value`` as a :class:`Modality`, raising an error that lists the known names."""
    return Modality(value)


for _name, _description in {
    "text": "natural-language text",
    "image": "photos, drawings and other 2-D images",
    "lowres_image": "small thumbnails (e.g. 8x8 digits), a domain of its own",
    "audio": "sound: speech, music, environmental audio",
    "video": "moving images",
    "point_cloud": "3-D points (x, y, z), e.g. sampled from a mesh or a lidar scan",
    "depth": "depth maps",
    "thermal": "thermal images",
    "imu": "inertial measurement unit signals",
}.items():
    setattr(Modality, _name.upper(), register_modality(_name, _description))
