import logging
import sys
import textwrap

import pytest

import spacegraph as sg
from spacegraph._registry import SPACES_GROUP, Registry


def install_fake_plugin_dist(root, dist, modules, entry_points):
    """Lay out a third-party distribution on ``root`` the way pip would: modules plus a dist-info folder."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{SPACES_GROUP}]\n{lines}\n")


def test_builtin_plugins_are_found_through_entry_points():
    assert {"digits-audio-text", "digits-image-text"} <= set(sg.list_spaces())
    assert "cmcr" in sg.list_bridge_methods()
    assert sg.list_spaces("digits-audio*") == ["digits-audio-text"]


def test_third_party_plugin_via_entry_points_and_broken_one_skipped(tmp_path, monkeypatch, caplog):
    install_fake_plugin_dist(
        tmp_path,
        "acme-spaces",
        {
            "acme_space": """
                from spacegraph import Space, SpaceSpec
                class AcmeSpace(Space):
                    def __init__(self, dim=3):
                        super().__init__()
                        self.spec = SpaceSpec(name="acme", modalities=("text", "depth"), dim=dim, fingerprint="f")
                    def _encode_batch(self, modality, batch):
                        import torch
                        return torch.ones(len(batch), self.spec.dim)
            """,
            "acme_broken": "raise ImportError('needs libacme')\n",
        },
        {"acme": "acme_space:AcmeSpace", "acme-broken": "acme_broken:Nothing"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("space", SPACES_GROUP)
    with caplog.at_level(logging.WARNING):
        names = registry.names()
    assert "acme" in names and "acme-broken" not in names
    assert "digits-audio-text" in names  # the others still work
    assert "'acme-broken'" in caplog.text and "needs libacme" in caplog.text
    assert registry.failed["acme-broken"] == "ImportError: needs libacme"
    space = registry.get("acme")(dim=5)
    assert space.encode("depth", ["a", "b"]).shape == (2, 5)
    with pytest.raises(ImportError, match="space plugin 'acme-broken' failed to import: ImportError: needs libacme"):
        registry.get("acme-broken")
    sys.modules.pop("acme_space", None)


def test_decorator_registration_and_unknown_names():
    registry = Registry("space", "spacegraph.no-such-group")

    @registry.register("toy")
    def make_toy():
        return "toy"

    assert registry.names() == ["toy"] and registry.get("toy")() == "toy"
    with pytest.raises(ValueError, match="already registered"):
        registry.add("toy", lambda: None)
    with pytest.raises(sg.UnknownNameError, match="unknown space 'tyo'; registered: toy"):
        registry.get("tyo")
    with pytest.raises(sg.UnknownNameError, match="unknown space 'nope'; registered: .*digits-audio-text"):
        sg.load_space("nope")


def test_import_spacegraph_is_light():
    import subprocess

    heavy = "('torch', 'transformers', 'open_clip', 'spacegraph_spaces')"
    code = f"import sys, spacegraph; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # torch waits for the first name that needs it
    code = f"import sys, spacegraph as sg; sg.SpaceGraph; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['torch']"
