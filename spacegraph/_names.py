"""Names that become paths: every one goes through here, so none can leave the folder it is written under."""

from __future__ import annotations

import hashlib
import re

from ._arguments import checked_arguments
from ._errors import SpacegraphValueError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
ACCEPTED = "1-100 characters: letters, digits, '.', '_', '+' or '-', starting with a letter or digit"


@checked_arguments
def check_path_name(name: object, what: str) -> str:
    """``name`` itself, if it is safe as one path component (no separator, no '..', not absolute); else a
    ValueError saying what was wrong and what is accepted."""
    if not isinstance(name, str) or not _SAFE.match(name):
        raise SpacegraphValueError(f"{what} {name!r} cannot name a file or folder; accepted: {ACCEPTED}")
    return name


@checked_arguments
def path_component(name: str) -> str:
    """A safe, stable, one-component folder name for any non-empty name (a space named ``openclip:ViT-B-32`` or
    ``/models/clip``): the name itself when it is safe, else its safe characters plus a hash of the whole name,
    so two different names never share a folder."""
    if not isinstance(name, str) or not name:
        raise SpacegraphValueError(f"a name that becomes a folder must be a non-empty string, got {name!r}")
    if _SAFE.match(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._+-")[:60] or "name"
    return f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
