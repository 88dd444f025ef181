"""Modality names: a str Enum, so ``"audio"`` works at the API edge and typos fail early."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    TEXT = "text"
    IMAGE = "image"
    LOWRES_IMAGE = "lowres_image"  # small thumbnails (e.g. 8x8 digits), a domain of its own
    AUDIO = "audio"
    VIDEO = "video"
    POINT_CLOUD = "point_cloud"
    DEPTH = "depth"
    THERMAL = "thermal"
    IMU = "imu"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Modality:
        known = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown modality {value!r}; known modalities: {known}")


def as_modality(value: str | Modality) -> Modality:
    """Return ``value`` as a :class:`Modality`, raising a ValueError that lists the known names."""
    return value if isinstance(value, Modality) else Modality(value)
