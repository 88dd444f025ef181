"""Open modalities: a plugin's modality (registered in code or through the ``spacegraph.modalities`` entry-point
group) works everywhere a built-in one does; typos are still refused, built-in names are unchanged."""

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import spacegraph as sg
from tests.conftest import ToySpace

TACTILE = sg.register_modality("tactile", "pressure maps from a touch sensor")
CMCR_SMALL = {"steps": 20, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}
BUILTIN = ("text", "image", "lowres_image", "audio", "video", "point_cloud", "depth", "thermal", "imu")


def test_builtin_names_are_unchanged():
    assert [m.value for m in sg.known_modalities()[: len(BUILTIN)]] == list(BUILTIN)
    assert sg.Modality.AUDIO == "audio" and sg.Modality("audio") is sg.Modality.AUDIO
    assert sg.Modality(sg.Modality.POINT_CLOUD) is sg.Modality.POINT_CLOUD
    assert isinstance(sg.Modality.TEXT, str) and {sg.Modality.TEXT: 1}["text"] == 1
    assert (
        str(sg.Modality.IMAGE) == f"{sg.Modality.IMAGE}" == "image" and repr(sg.Modality.IMAGE) == "Modality('image')"
    )
    assert json.dumps([sg.Modality.DEPTH]) == '["depth"]'


def test_register_validates_names_and_is_idempotent():
    assert sg.register_modality("tactile") is TACTILE is sg.Modality("tactile")
    assert TACTILE.description == "pressure maps from a touch sensor"  # a re-registration without one keeps it
    assert [m for m in sg.known_modalities() if m == "tactile"] == [TACTILE]
    assert sg.register_modality("audio") is sg.Modality.AUDIO
    for bad in ("Tactile", "1d_signal", "", "touch-map", "a" * 41, " tactile"):
        with pytest.raises(sg.SpacegraphValueError, match="use 1-40 lowercase letters, digits or '_'"):
            sg.register_modality(bad)
    with pytest.raises(sg.SpacegraphTypeError, match="register_modality: argument 'name': .*valid string"):
        sg.register_modality(3)
    with pytest.raises(sg.UnknownModalityError):
        sg.Modality("Tactile")  # a refused name was not registered


def test_a_typo_is_refused_with_the_known_names_and_the_closest():
    with pytest.raises(sg.UnknownModalityError) as caught:
        sg.Modality("tactle")
    message = str(caught.value)
    assert message.startswith("unknown modality 'tactle'; known modalities: text, image, lowres_image, audio")
    assert "tactile" in message.split("known modalities:")[1] and "closest: 'tactile'" in message
    assert "spacegraph.register_modality" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, sg.SpacegraphError)


def test_copies_keep_identity():
    """copy and deepcopy rebuild through ``__reduce__``, as pickling would (no pickle is loaded here)."""
    spec = sg.SpaceSpec(name="toy", modalities=("tactile", "text"), dim=4, fingerprint="f")
    for value in (TACTILE, sg.Modality.AUDIO):
        rebuild, args = value.__reduce__()
        assert rebuild(*args) is value and copy.copy(value) is value and copy.deepcopy(value) is value
    assert copy.deepcopy(spec).modalities[0] is TACTILE


def tactile_graph(tmp_path):
    """A tactile+text space and a text+image space with a feature cache and data of all three modalities."""
    touch_text = ToySpace("toy-tt", ("tactile", "text"), 6, seed=1)
    text_image = ToySpace("toy-ti", ("text", "image"), 10, seed=2)
    graph = sg.SpaceGraph([touch_text, text_image], store=sg.FeatureStore(tmp_path / "cache"))
    for seed, (modality, name) in enumerate([("text", "captions"), (TACTILE, "touches"), ("image", "photos")]):
        graph.add_data(modality, name, torch.randn(48, 8, generator=torch.Generator().manual_seed(seed)).numpy())
    return graph


def test_a_plugin_modality_is_bridged_routed_planned_and_saved(tmp_path):
    graph = tactile_graph(tmp_path)
    with pytest.raises(sg.NoRouteError, match=r"\[toy-tt\] with \{tactile, text\}"):
        graph.connect("tactile", "image")
    bridge = graph.train_missing("tactile", "image", config=CMCR_SMALL, show_progress_bar=False)
    assert bridge.card.overlap is sg.Modality.TEXT and bridge.card.data == {
        "overlap": 48,
        "memory_x": 48,
        "memory_y": 48,
    }
    assert TACTILE in bridge.card.modalities and TACTILE in graph.modalities
    touches, photos = torch.randn(3, 8), torch.randn(5, 8)
    there, back = graph.connect("tactile", "image"), graph.connect(sg.Modality.IMAGE, "toy-tt:tactile")
    assert there.hops == back.hops == 2 and there.common_space == back.common_space == bridge.name
    torch.testing.assert_close(there.similarity(touches, photos), back.similarity(photos, touches).T)
    explained = graph.plan("tactile", "image").explain()
    assert explained.startswith("tactile -> image: 1 candidate route(s)") and "encode tactile with" in explained
    # The feature cache keeps the plugin modality's features under its name, and serves them again.
    manifest = json.loads((tmp_path / "cache/toy-tt/tactile/touches/manifest.json").read_text())
    assert manifest["modality"] == "tactile"
    assert graph.store.load("toy-tt", TACTILE, "touches").shape == (48, 6)
    # Specs, cards and bridge folders round-trip with it.
    spec = graph.node_spec("toy-tt")
    assert sg.SpaceSpec.model_validate_json(spec.model_dump_json()) == spec
    card = json.loads(bridge.card.model_dump_json())
    assert card["spaces"][0]["modalities"] == ["tactile", "text"]
    assert sg.BridgeCard.model_validate(card).spaces[0].modalities[0] is TACTILE
    loaded = sg.Bridge.load(bridge.save(tmp_path / "bridge"))
    assert loaded.card == bridge.card
    reloaded = sg.SpaceGraph(graph.spaces, [loaded]).connect("tactile", "image")
    torch.testing.assert_close(reloaded.similarity(touches, photos), there.similarity(touches, photos))


def test_a_typo_in_a_spec_or_a_route_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown modality 'tactle'.*closest: 'tactile'"):
        sg.SpaceSpec(name="toy", modalities=("tactle", "text"), dim=4, fingerprint="f")
    with pytest.raises(sg.UnknownModalityError, match="closest: 'tactile'"):
        tactile_graph(tmp_path).connect("tactle", "image")


def write_dist(root, dist, module, source, entry_points):
    """A distribution laid out on ``root`` as pip would: a module and a dist-info folder with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"  # the folder name holds one '-', before the version
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[spacegraph.modalities]\n{lines}\n")


def test_an_installed_plugin_modality_resolves_through_its_entry_point(tmp_path):
    write_dist(
        tmp_path,
        "acme-sonar",
        "acme_sonar",
        """
        SONAR = "sonar echoes: range x bearing intensity maps"
        import spacegraph
        LIDAR = spacegraph.register_modality("lidar", "lidar sweeps")
        """,
        {"sonar": "acme_sonar:SONAR", "lidar": "acme_sonar:LIDAR", "Bad-Name": "acme_sonar:SONAR"},
    )
    write_dist(tmp_path, "acme-broken", "acme_broken", "raise ImportError('needs libacme')\n", {"smell": "acme_broken"})
    code = """
        import logging, sys
        import spacegraph as sg
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        assert "acme_sonar" not in sys.modules
        sonar = sg.Modality("sonar")
        spec = sg.SpaceSpec(name="s", modalities=("sonar", "lidar"), dim=2, fingerprint="f")
        print(sonar is spec.modalities[0], sonar.description, "|", spec.modalities[1].description)
        try:
            sg.Modality("sonr")
        except sg.UnknownModalityError as err:
            print(err)
    """
    env = {"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", textwrap.dedent(code)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    found, typo = run.stdout.splitlines()
    assert found == "True sonar echoes: range x bearing intensity maps | lidar sweeps"
    assert "closest: 'sonar'" in typo and "lidar" in typo and "smell" not in typo
    assert "'smell'" in run.stderr and "needs libacme" in run.stderr  # a broken plugin is logged and skipped
    assert "'Bad-Name'" in run.stderr and "use 1-40 lowercase letters" in run.stderr
