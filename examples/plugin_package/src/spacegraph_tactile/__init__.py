"""spacegraph-tactile: a third-party spacegraph plugin adding the ``tactile`` modality (7x7 pin-array pressure
maps), the ``tactile-text`` space and the ``overlap-infonce`` bridge method.

Importing the package registers the modality; an installed package also registers it through the
``spacegraph.modalities`` entry point, so ``Modality("tactile")`` works without importing it first.
"""

from spacegraph.plugin import register_modality

from .pins import GRID, pin_map

TACTILE_DESCRIPTION = f"tactile pin-array pressure maps ({GRID}x{GRID} pins, heights in [0, 1])"
TACTILE = register_modality("tactile", TACTILE_DESCRIPTION)

__all__ = ["GRID", "TACTILE", "TACTILE_DESCRIPTION", "pin_map"]
