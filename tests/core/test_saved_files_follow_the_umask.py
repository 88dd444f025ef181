"""Saved artifacts get the modes the user's umask gives any new file: weights written by safetensors (which
makes 0600 temporaries) are as readable as the JSON beside them."""

import os
import stat

import pytest

from spacegraph._atomic import OWNERSHIP
from tests.core.test_graph_connects_and_plans import make_bridge


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_bridge_has_the_umasks_modes(toy_spaces, tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = make_bridge(*toy_spaces).save(tmp_path / "bridge")
    finally:
        os.umask(old)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert modes == dict.fromkeys([OWNERSHIP, "bridge.json", "heads.safetensors"], 0o666 & ~umask)
