"""The public plugin API: plugins import only public names, errors share one base, and the BridgeMethod protocol
is exactly what SpaceGraph.train_bridge calls (shown with a third-party-style method written against
spacegraph.plugin alone)."""

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

import spacegraph
import spacegraph as sg
from spacegraph import _errors
from spacegraph.plugin import (
    Bridge,
    BridgeFeatures,
    BridgeMethod,
    BridgeMethodBase,
    HeadSpec,
    Modality,
    ProjectionHead,
    TrainedHeads,
    pair_recall_at_1,
    register_bridge_method,
    require,
)
from tests.conftest import ToySpace

REPO = Path(__file__).resolve().parents[2]
PLUGIN_FOLDERS = ("spaces", "bridges", "examples")


# -- plugins import only public names ---------------------------------------------------------------------------
def private_imports(source: str) -> list[str]:
    """The ``spacegraph._*`` modules and names ``source`` imports (relative imports stay inside their package)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            is_import = getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            modules = [node.args[0].value] if is_import and isinstance(node.args[0].value, str) else []
        else:
            continue
        found += [m for m in modules if m.split(".")[0] == "spacegraph" and m.count(".") and m.split(".")[1][0] == "_"]
    return found


def notebook_source(path: Path) -> str:
    """The code cells of a notebook, without IPython's ``%`` magics and ``!`` shell lines."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = [
        line
        for cell in cells
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if not line.lstrip().startswith(("%", "!"))
    ]
    return "\n".join(lines)


def plugin_sources() -> list[Path]:
    return sorted(p for folder in PLUGIN_FOLDERS for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".ipynb"))


def test_the_private_import_check_catches_every_form():
    source = """
import spacegraph._bridge
import spacegraph._space as space
from spacegraph._atomic import atomic_dir
from spacegraph import _errors
from spacegraph import plugin, Space
from spacegraph.plugin import Bridge
from . import digits
from ._private import helper
importlib.import_module("spacegraph._graph")
importlib.import_module("spacegraph.plugin")
"""
    assert private_imports(source) == [
        "spacegraph._bridge",
        "spacegraph._space",
        "spacegraph._atomic",
        "spacegraph._atomic.atomic_dir",
        "spacegraph._errors",
        "spacegraph._graph",
    ]


def test_plugins_and_examples_import_only_public_names():
    sources = plugin_sources()
    assert {"spaces", "bridges", "examples"} <= {p.relative_to(REPO).parts[0] for p in sources}
    offenders = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        found = private_imports(notebook_source(path) if path.suffix == ".ipynb" else text)
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}, f"import these from spacegraph or spacegraph.plugin instead: {offenders}"


def test_public_names_resolve_and_import_stays_light():
    for name in sg.__all__:
        assert getattr(sg, name) is not None, name
    for name in spacegraph.plugin.__all__:
        assert getattr(spacegraph.plugin, name) is not None, name
    code = (
        "import sys, spacegraph as sg; heavy = ('matplotlib', 'huggingface_hub', 'nbclient', 'transformers', "
        "'open_clip'); print(sorted(m for m in heavy if m in sys.modules)); print(sg.plugin.BridgeMethod.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "BridgeMethod"]
    with pytest.raises(AttributeError, match="has no attribute 'plugins'"):
        sg.plugins  # noqa: B018 (the attribute access is the test)


# -- one base class for every error -----------------------------------------------------------------------------
def error_classes() -> list[type[Exception]]:
    return [c for c in vars(_errors).values() if isinstance(c, type) and issubclass(c, Exception)]


def test_every_error_is_a_spacegraph_error_and_a_builtin_one():
    classes = error_classes()
    assert len(classes) >= 10
    builtins = (ValueError, TypeError, KeyError, IndexError, ImportError, FileNotFoundError, FileExistsError)
    for cls in classes:
        assert issubclass(cls, sg.SpacegraphError), cls
        assert cls is sg.SpacegraphError or issubclass(cls, builtins), cls
        assert getattr(sg, cls.__name__) is cls and getattr(spacegraph.plugin, cls.__name__) is cls


def failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Real failures, each with the builtin type callers caught before SpacegraphError existed."""
    space = ToySpace("toy", ("audio", "text"), 4)
    newer_card = tmp_path / "newer"
    newer_card.mkdir()
    (newer_card / "bridge.json").write_text(json.dumps({"format_version": 99}))
    (newer_card / "heads.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if the [clip] extra were not installed
    return [
        (lambda: sg.Modality("audoi"), ValueError, "unknown modality 'audoi'.*closest: 'audio'"),
        (lambda: sg.load_space("no-such-space"), KeyError, "unknown space 'no-such-space'; registered: .*openclip"),
        (lambda: sg.SpaceGraph([space]).space("nope"), KeyError, "no space or joint space named 'nope'"),
        (lambda: sg.Bridge.load(newer_card), ValueError, "bridge format 99 is newer than this spacegraph reads"),
        (lambda: sg.Bridge.load(tmp_path / "absent"), FileNotFoundError, "no bridge.json, heads.safetensors there"),
        (lambda: space.encode("audio", []), ValueError, "empty"),
        (lambda: space.encode("image", [[0.0] * 8]), ValueError, "does not embed 'image'"),
        (lambda: BridgeFeatures([[0.0]], [[0.0]]), TypeError, "expected a torch.Tensor"),
        (lambda: sg.SpaceGraph([space]).connect("audio", "image"), ValueError, "no space in the graph embeds"),
        (lambda: require("open_clip", "clip"), ImportError, r'pip install "spacegraph\[clip\]"'),
        (lambda: sg.load_space("openclip", "ViT-B-32"), ImportError, r'pip install "spacegraph\[clip\]"'),
    ]


def test_real_failures_are_caught_as_spacegraph_errors_and_as_builtins(tmp_path, monkeypatch):
    for call, builtin, message in failures(tmp_path, monkeypatch):
        with pytest.raises(sg.SpacegraphError, match=message) as caught:
            call()
        assert isinstance(caught.value, builtin), (message, type(caught.value))


# -- the BridgeMethod protocol is what the graph calls ----------------------------------------------------------
class PlainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = 60
    hidden_dim: int = 32
    out_dim: int = 8
    lr: float = 0.01
    temperature: float = 0.1
    seed: int = 0


@register_bridge_method("test-plain-infonce")
class PlainInfoNCE(BridgeMethodBase[PlainSettings]):
    """A third-party-style method written against spacegraph.plugin only: one head per space, trained with
    symmetric InfoNCE on the overlap pairs (no memories, no pseudo pairs); the base does the rest."""

    name = "test-plain-infonce"
    config_class = PlainSettings

    def fit(self, x, y, overlap, features, config, *, show_progress_bar):
        torch.manual_seed(config.seed)
        head_x, head_y = (
            ProjectionHead(HeadSpec(in_dim=spec.dim, hidden_dim=config.hidden_dim, out_dim=config.out_dim))
            for spec in (x, y)
        )
        optimizer = torch.optim.Adam([*head_x.parameters(), *head_y.parameters()], lr=config.lr)
        targets = torch.arange(features.overlap_x.shape[0])
        for _ in range(config.steps):
            logits = head_x(features.overlap_x) @ head_y(features.overlap_y).T / config.temperature
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head_x.eval(), head_y.eval()
        with torch.no_grad():
            recall = pair_recall_at_1(head_x(features.overlap_x), head_y(features.overlap_y))
        return TrainedHeads(head_x, head_y, quality={"train_R@1": recall})


def overlap_features(x: ToySpace, y: ToySpace, n: int = 64) -> tuple[BridgeFeatures, torch.Tensor]:
    """The same texts encoded by both spaces (so the two sides are related), and the texts."""
    texts = torch.randn(n, 8, generator=torch.Generator().manual_seed(7))
    return BridgeFeatures(x.encode("text", texts), y.encode("text", texts)), texts


def test_a_third_party_method_trains_routes_saves_and_loads_through_the_graph(toy_spaces, tmp_path):
    x, y = toy_spaces
    assert isinstance(sg.get_bridge_method("test-plain-infonce")(), BridgeMethod)
    features, texts = overlap_features(x, y)
    graph = sg.SpaceGraph([x, y])
    bridge = graph.train_bridge("toy-at", "toy-ti", overlap="text", features=features, method="test-plain-infonce")
    assert graph.bridges == [bridge] and bridge.card.method == "test-plain-infonce"
    assert bridge.card.overlap is Modality.TEXT and bridge.card.training["steps"] == 60
    assert bridge.card.quality["train_R@1"] > 0.5  # 64 pairs: chance is 1/64
    route = graph.connect("audio", "image")
    assert route.common_space == "toy-at+toy-ti" and route.hops == 2
    audio, image = torch.randn(3, 8), torch.randn(5, 8)
    assert route.similarity(audio, image).shape == (3, 5)
    with torch.no_grad():  # the bridge matches the same text as read by either space
        from_x, from_y = (
            bridge.project("toy-at", x.encode("text", texts)),
            bridge.project("toy-ti", y.encode("text", texts)),
        )
    assert pair_recall_at_1(from_x, from_y) == bridge.card.quality["train_R@1"]
    loaded = Bridge.load(bridge.save(tmp_path / "bridge"))
    assert loaded.card == bridge.card
    torch.testing.assert_close(
        sg.SpaceGraph([x, y], [loaded]).connect("audio", "image").similarity(audio, image),
        route.similarity(audio, image),
    )
    with pytest.raises(sg.SpacegraphError, match=r"invalid config \(step: Extra inputs .*; accepted fields: steps, "):
        graph.train_bridge(
            "toy-at", "toy-ti", overlap="text", features=features, method="test-plain-infonce", config={"step": 3}
        )


class RecordingMethod:
    """Records exactly how the graph calls a method, then trains with PlainInfoNCE."""

    name = "test-recording"
    calls: ClassVar[list] = []

    def train(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return PlainInfoNCE().train(*args, **kwargs)


def test_the_graph_calls_a_method_exactly_as_the_protocol_states(toy_spaces):
    x, y = toy_spaces
    register_bridge_method("test-recording")(RecordingMethod)
    features, _ = overlap_features(x, y)
    graph = sg.SpaceGraph([x, y])
    graph.train_bridge(
        "toy-at", "toy-ti", overlap="text", features=features, method="test-recording", config={"steps": 2}
    )
    [(args, kwargs)] = RecordingMethod.calls
    assert args == (x.spec, y.spec, "text", features, {"steps": 2})
    assert kwargs == {"name": None, "show_progress_bar": True}
    protocol = inspect.signature(BridgeMethod.train)
    bound = protocol.bind(None, *args, **kwargs)  # the graph's call fits the protocol's signature
    assert list(bound.arguments) == list(protocol.parameters)


def test_the_builtin_cmcr_method_matches_the_protocol():
    from spacegraph_bridges.cmcr import CMCRMethod

    assert isinstance(sg.get_bridge_method("cmcr")(), BridgeMethod)
    assert not isinstance(object(), BridgeMethod)
    expected = inspect.signature(BridgeMethod.train).parameters
    for method in (CMCRMethod, PlainInfoNCE):
        found = inspect.signature(method.train).parameters
        assert [(p.name, p.kind, p.default) for p in found.values()] == [
            (p.name, p.kind, p.default) for p in expected.values()
        ], method
