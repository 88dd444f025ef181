"""A whole graph as one artifact in the Hugging Face layout, written atomically as one folder: ``graph.json`` (the
spaces by reference, the bridges' folders, the route estimates), each bridge's own save under ``bridges/`` (its card
keeps its quality and calibration), a ``README.md`` model card and ``graph.png``.

A space is saved by reference, never by weights: the plugin name and arguments :func:`~spacegraph.load_space` built
it from (:func:`space_reference`) and its fingerprint. Loading rebuilds it through ``load_space`` and refuses it if
its fingerprint differs, so a loaded graph gives the routes and embeddings of the saved one, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, JsonValue, ValidationError, field_validator

from ._arguments import checked_arguments
from ._atomic import atomic_dir
from ._bridge import Bridge
from ._card import read_versioned_json
from ._errors import (
    FingerprintMismatchError,
    MissingExtraError,
    SpacegraphError,
    SpacegraphTypeError,
    SpacegraphValueError,
)
from ._hub import HubDownload, _table, push_folder, resolve_folder
from ._names import path_component
from ._registry import load_space
from ._space import Space

if TYPE_CHECKING:
    from ._graph import SpaceGraph

GRAPH_FILE = "graph.json"
BRIDGES_FOLDER = "bridges"
README_FILE = "README.md"
PICTURE_FILE = "graph.png"
GRAPH_FORMAT = "spacegraph-graph"
GRAPH_FORMAT_VERSION = 1
REFERENCE = "_spacegraph_reference"  # the attribute load_space sets on each space it builds
DEEPEST = 32  # levels of lists and dicts in a space's arguments
LONGEST_CELL = 120  # characters of a space's arguments shown in the README's table
SHOWN_PROBLEMS = 10
JSON_ACCEPTED = (
    "None, bool, int, finite float, str, os.PathLike (recorded as its absolute path), and lists, tuples and "
    "str-keyed dicts of these"
)
BRIDGE_FOLDER = re.compile(rf"{BRIDGES_FOLDER}/(?!\.\.?$)[A-Za-z0-9._+-]{{1,100}}")

SpaceOverrides = Mapping[str, tuple[str, Mapping[str, Any]]]  # space name -> (plugin, keyword arguments)


class SpaceReference(BaseModel):
    """How a space is rebuilt: ``sg.load_space(plugin, *args, **kwargs)``, the arguments as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    plugin: str = Field(min_length=1)
    args: list[JsonValue] = Field(default_factory=list)
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def of_call(cls, plugin: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> SpaceReference:
        """The reference of a ``load_space`` call; a SpacegraphValueError naming an argument JSON cannot hold."""
        return cls(
            plugin=plugin,
            args=[as_json(value, f"argument {i}") for i, value in enumerate(args)],
            kwargs={key: as_json(value, f"argument {key!r}") for key, value in kwargs.items()},
        )

    def arguments(self) -> list[str]:
        """The arguments as Python source."""
        return [*map(json.dumps, self.args), *(f"{key}={json.dumps(value)}" for key, value in self.kwargs.items())]

    def call(self) -> str:
        """The ``load_space`` call, as Python source."""
        return f"load_space({', '.join([json.dumps(self.plugin), *self.arguments()])})"


def as_json(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as JSON: a path as its absolute path, a tuple as a list, an int or float subclass (an enum) as its
    base type; a SpacegraphValueError naming ``where`` for anything else."""
    if depth > DEEPEST:
        raise SpacegraphValueError(f"{where} nests lists or dicts deeper than {DEEPEST} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        return _text(value, where)
    if isinstance(value, os.PathLike):
        return _text(os.path.abspath(os.fsdecode(value)), where)  # the same file from any working directory
    if isinstance(value, (list, tuple)):
        return [as_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {_text(key, where): as_json(item, f"{where}[{key!r}]", depth + 1) for key, item in value.items()}
    raise SpacegraphValueError(f"{where} ({type(value).__name__} {repr(value)[:40]}) cannot be written as JSON")


def _text(value: str, where: str) -> str:
    try:
        return value.encode("utf-8").decode("utf-8")
    except UnicodeEncodeError as err:
        raise SpacegraphValueError(f"{where} holds a lone surrogate, which JSON cannot hold as UTF-8") from err


def record_reference(space: Any, plugin: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Record on ``space`` how :func:`load_space` built it, as JSON at once (so later edits of a mutable argument
    change nothing), or why it cannot be saved by reference."""
    try:
        reference: SpaceReference | str = SpaceReference.of_call(plugin, args, kwargs)
    except SpacegraphValueError as err:
        reference = f"load_space({plugin!r}, ...) was given an argument JSON cannot hold: {err}"
    with contextlib.suppress(AttributeError, TypeError):  # an object that takes no attributes: not saved
        setattr(space, REFERENCE, reference)


@checked_arguments
def space_reference(space: Space) -> SpaceReference:
    """How :func:`~spacegraph.load_space` built ``space``: its plugin name and arguments as JSON (a path as its
    absolute path), which a saved graph records to rebuild it. A SpacegraphValueError says why a space has none:
    it was not built by ``load_space``, or was given an argument JSON cannot hold."""
    reference = getattr(space, REFERENCE, None)
    if isinstance(reference, SpaceReference):
        return reference
    why = reference if isinstance(reference, str) else "it was not built by sg.load_space"
    raise SpacegraphValueError(
        f"space {space.name!r} cannot be saved by reference: {why}. A graph saves the spaces sg.load_space(plugin, "
        f"...) built from arguments of JSON ({JSON_ACCEPTED}); build it so, or name the plugin and keyword "
        f"arguments that rebuild it: save_pretrained(..., spaces={{{space.name!r}: (plugin, kwargs)}})"
    )


class SavedSpace(BaseModel):
    """A space of ``graph.json``: its reference, and the spec the space it rebuilds must have."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1)
    plugin: str = Field(min_length=1)
    args: list[JsonValue]
    kwargs: dict[str, JsonValue]
    fingerprint: str = Field(min_length=1)
    modalities: list[str] = Field(min_length=1)
    dim: int = Field(gt=0)

    @property
    def reference(self) -> SpaceReference:
        return SpaceReference(plugin=self.plugin, args=self.args, kwargs=self.kwargs)


class SavedBridge(BaseModel):
    """A bridge of ``graph.json``: its name and its folder, ``bridges/<one safe folder name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1)
    folder: str

    @field_validator("folder")
    @classmethod
    def _inside(cls, folder: str) -> str:
        if not BRIDGE_FOLDER.fullmatch(folder):
            raise ValueError(
                f"a bridge's folder is {BRIDGES_FOLDER}/<name>, the name 1-100 letters, digits, '.', '_', '+' or '-' "
                f"(not '.' or '..'); got {folder!r}"
            )
        return folder


class GraphFile(BaseModel):
    """``graph.json``: the spaces (rebuilt in order), the bridges (added in order) and the route estimates."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["spacegraph-graph"]
    format_version: Literal[1]
    spacegraph_version: str
    spaces: list[SavedSpace]
    bridges: list[SavedBridge]
    route_estimates: dict[str, dict[str, FiniteFloat]]


# -- saving ------------------------------------------------------------------------------------------------------
def save_graph(
    graph: SpaceGraph,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    spaces: SpaceOverrides | None = None,
    source: str | None = None,
) -> Path:
    """Write ``graph`` into ``folder`` atomically (see :func:`spacegraph.plugin.atomic_dir` for ``overwrite``);
    ``source`` is where readers will find it (a repo id when pushed), for the README's snippet."""
    write = _graph_writer(graph, source or str(folder), spaces or {})
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        write(tmp)
    return Path(folder)


def push_graph(graph: SpaceGraph, repo_id: str, *, spaces: SpaceOverrides | None = None, **options: Any) -> Any:
    """Save ``graph`` into a temporary folder and upload it to ``repo_id`` (``options`` as :func:`push_folder`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_graph(graph, Path(tmp) / "graph", spaces=spaces, source=repo_id)
        return push_folder(folder, repo_id, **options)


def _graph_writer(graph: SpaceGraph, source: str, overrides: SpaceOverrides) -> Callable[[Path], None]:
    """Refuse what cannot be saved (before anything is written); else the function that fills a new folder."""
    from . import __version__

    references = _references(graph, overrides)
    data = {
        "format": GRAPH_FORMAT,
        "format_version": GRAPH_FORMAT_VERSION,
        "spacegraph_version": __version__,
        "spaces": [_saved_space(space, references[space.name]) for space in graph.spaces],
        "bridges": [{"name": bridge.name, "folder": bridge_folder(bridge.name)} for bridge in graph.bridges],
        "route_estimates": graph._route_estimates,
    }
    saved = _validated(data, "the graph to save")
    for bridge in graph.bridges:
        bridge.check_finite()

    def write(folder: Path) -> None:
        (folder / GRAPH_FILE).write_text(saved.model_dump_json(indent=2) + "\n", encoding="utf-8")
        for bridge, entry in zip(graph.bridges, saved.bridges, strict=True):
            bridge.save(folder / entry.folder)
        drawn = _draw(graph, folder / PICTURE_FILE)
        (folder / README_FILE).write_text(graph_readme(graph, saved, source, drawn=drawn), encoding="utf-8")

    return write


def _references(graph: SpaceGraph, overrides: SpaceOverrides) -> dict[str, SpaceReference]:
    """Each space's reference: the one given in ``overrides``, else the one ``load_space`` recorded."""
    names = [space.name for space in graph.spaces]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise SpacegraphValueError(f"spaces= names {unknown}, not spaces of this graph; its spaces: {names}")
    references = {}
    for space in graph.spaces:
        if space.name not in overrides:
            references[space.name] = space_reference(space)
            continue
        plugin, kwargs = overrides[space.name]
        try:
            references[space.name] = SpaceReference.of_call(plugin, (), kwargs)
        except (SpacegraphValueError, ValidationError) as err:
            raise SpacegraphValueError(f"spaces={{{space.name!r}: ...}}: {err}; accepted: {JSON_ACCEPTED}") from err
    return references


def _saved_space(space: Space, reference: SpaceReference) -> dict[str, Any]:
    spec = space.spec
    identity = {"name": spec.name, "fingerprint": spec.fingerprint, "dim": spec.dim}
    return {**reference.model_dump(), **identity, "modalities": [m.value for m in spec.modalities]}


def bridge_folder(name: str) -> str:
    """``bridges/<folder>`` for a bridge: its name where that is one safe, lowercase folder name, else its safe
    characters and a hash of the name (so two names never share a folder, even differing only in case on a
    file system that ignores case)."""
    folder = path_component(name)
    if folder != folder.lower():
        folder = f"{folder[:80]}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return f"{BRIDGES_FOLDER}/{folder}"


def _draw(graph: SpaceGraph, path: Path) -> bool:
    """The graph's picture as a PNG at ``path``; False, drawing nothing, where matplotlib is not installed."""
    try:
        figure = graph.draw()
    except MissingExtraError:
        return False
    figure.savefig(path, dpi=100)
    return True


# -- the model card ----------------------------------------------------------------------------------------------
def graph_readme(graph: SpaceGraph, saved: GraphFile, source: str, *, drawn: bool) -> str:
    """A Hugging Face model card for a graph: YAML front matter (library, tags), its picture, its spaces with their
    references and fingerprints, its bridges with kind, overlap, method and quality with its source, its route
    estimates, and how to load it from ``source`` (a repo id or folder)."""
    tags = ["spacegraph", "space-graph", *(m.value for m in graph.modalities)]
    front = ["---", "library_name: spacegraph", "tags:", *(f"- {json.dumps(tag)}" for tag in tags), "---"]
    picture = "![The graph: spaces, joint spaces and bridge heads](graph.png)"
    if not drawn:
        picture = (
            f'No picture: matplotlib is not installed (`pip install "spacegraph[notebook]"` draws {PICTURE_FILE}).'
        )
    sections = [
        "# Space graph",
        _summary(graph, saved),
        picture,
        "## Spaces\n\n"
        + _table(["space", "plugin", "arguments", "fingerprint", "dim", "modalities"], _space_rows(saved)),
        "## Bridges\n\n" + (_bridges_table(graph, saved) if saved.bridges else "None."),
        "## Route estimates\n\n" + _estimates_text(saved),
        "## Use\n\n" + _usage(graph, source),
    ]
    return "\n".join(front) + "\n\n" + "\n\n".join(sections) + "\n"


def _summary(graph: SpaceGraph, saved: GraphFile) -> str:
    return (
        f"A spacegraph graph of {len(graph.spaces)} space(s) and {len(graph.bridges)} bridge(s) "
        f"({len(graph.joint_spaces)} joint space(s)), saved by spacegraph {saved.spacegraph_version} (graph format "
        f"{saved.format_version}). The spaces are stored by reference: the plugin and arguments `sg.load_space` "
        "built each from, and its fingerprint; loading rebuilds each and refuses one whose fingerprint differs. The "
        f"bridges are stored in `{BRIDGES_FOLDER}/`, their cards with their measured quality and calibration."
    )


def _space_rows(saved: GraphFile) -> list[tuple[Any, ...]]:
    def arguments(space: SavedSpace) -> str:
        text = ", ".join(space.reference.arguments()) or "(none)"
        return text if len(text) <= LONGEST_CELL else f"({len(text)} characters: see {GRAPH_FILE})"

    return [(s.name, s.plugin, arguments(s), s.fingerprint, s.dim, ", ".join(s.modalities)) for s in saved.spaces]


def _bridges_table(graph: SpaceGraph, saved: GraphFile) -> str:
    rows = []
    for bridge, entry in zip(graph.bridges, saved.bridges, strict=True):
        card, (x, y) = bridge.card, bridge.space_names
        joins = f"{x} <-> {y}" if card.kind == "connect" else f"{x} -> {y}"
        rows.append((card.name, card.kind, joins, card.overlap.value, card.method, f"{card.score:.4f}",
                     card.score_source, entry.folder))  # fmt: skip
    return _table(["bridge", "kind", "joins", "overlap", "method", "quality", "quality source", "folder"], rows)


def _estimates_text(saved: GraphFile) -> str:
    if not saved.route_estimates:
        return "None recorded."
    rows = [
        (_route_label(route), ", ".join(f"{key} {value:.4g}" for key, value in sorted(estimate.items())))
        for route, estimate in sorted(saved.route_estimates.items())
    ]
    table = _table(["route (each leg: space:modality, then the bridges it crosses)", "estimate"], rows)
    return f"Label-free estimates of whole routes, which planning ranks by (keyed in {GRAPH_FILE}):\n\n{table}"


def _route_label(key: str) -> str:
    """A route's key (:func:`spacegraph._route_quality.route_key`: its legs' identities as JSON) as its legs'
    paths; the key itself, cut short, if it is not of that form."""
    try:
        legs = json.loads(key)
        return "; ".join(
            " -> ".join([f"{leg['space']}:{leg['modality']}", *(step["name"] for step in leg["bridges"])])
            for leg in legs
        )
    except (ValueError, TypeError, KeyError, RecursionError):
        return key[:LONGEST_CELL]


def _usage(graph: SpaceGraph, source: str) -> str:
    lines = [
        "```python",
        "import spacegraph as sg",
        "",
        f"graph = sg.SpaceGraph.from_pretrained({source!r})  # each space rebuilt with sg.load_space, checked",
    ]
    ends = _example_ends(graph)
    if ends is not None:
        lines.append(f"route = graph.connect({ends[0]!r}, {ends[1]!r})")
    return "\n".join([*lines, "```"])


def _example_ends(graph: SpaceGraph) -> tuple[str, str] | None:
    """Two modalities a bridge joins, each embedded by one of its spaces only, for the snippet (planning is left
    out: it may measure route estimates); None if no bridge has such a pair."""
    for bridge in graph.bridges:
        x, y = bridge.card.spaces
        only_x, only_y = ([m for m in a.modalities if m not in b.modalities] for a, b in ((x, y), (y, x)))
        if only_x and only_y:
            return only_x[0].value, only_y[0].value
    return None


# -- loading -----------------------------------------------------------------------------------------------------
def load_graph(cls: type[SpaceGraph], source: str | os.PathLike, download: HubDownload) -> SpaceGraph:
    """The graph saved in a local folder or a Hub repo: each space rebuilt and checked, each bridge loaded."""
    folder, saved = _resolve(source, download)
    path = folder / GRAPH_FILE
    graph = cls()
    for entry in saved.spaces:
        with _about(f"{path}: space {entry.name!r}"):
            graph.add_space(_rebuilt(entry))
    for bridge in saved.bridges:
        with _about(f"{path}: bridge {bridge.name!r} in {bridge.folder}"):
            graph.add_bridge(_loaded_bridge(folder, bridge))
    graph._route_estimates = {route: dict(estimate) for route, estimate in saved.route_estimates.items()}
    return graph


def _resolve(source: str | os.PathLike, download: HubDownload) -> tuple[Path, GraphFile]:
    """The local folder of ``source`` and its graph file; from the Hub, the bridges' files of the same commit."""
    folder = resolve_folder(source, (GRAPH_FILE,), what="graph", download=download)
    saved = read_graph_file(folder / GRAPH_FILE)
    if folder != Path(source):  # a snapshot of the Hub cache, named by its commit
        files = [GRAPH_FILE, *(f"{bridge.folder}/{name}" for bridge in saved.bridges for name in Bridge.HUB_FILES)]
        pinned = dataclasses.replace(download, revision=folder.name)
        folder = resolve_folder(source, files, what="graph", download=pinned)
    return folder, saved


def read_graph_file(path: Path) -> GraphFile:
    """The graph file at ``path``; every error names it (and the field)."""
    return _validated(read_versioned_json(path, "graph", "graph file", GRAPH_FORMAT_VERSION), str(path))


def _validated(data: Any, where: str) -> GraphFile:
    try:
        return GraphFile.model_validate(data)
    except ValidationError as err:
        problems = [f"  {'.'.join(map(str, e['loc'])) or 'graph'}: {e['msg']}" for e in err.errors()]
        raise SpacegraphValueError(
            f"{err.error_count()} problem(s) in {where}, a {GRAPH_FORMAT} file of format {GRAPH_FORMAT_VERSION}:\n"
            + "\n".join(problems[:SHOWN_PROBLEMS])
        ) from err


@contextlib.contextmanager
def _about(where: str) -> Iterator[None]:
    """Errors raised within name ``where``: a spacegraph error keeps its kind; a plugin's own error (not running
    out of memory) becomes a spacegraph error of its kind, the original kept as ``__cause__``."""
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except SpacegraphError as err:
        raise type(err)(f"{where}: {err}") from err
    except Exception as err:
        kind = SpacegraphTypeError if isinstance(err, TypeError) else SpacegraphValueError
        raise kind(f"{where}: {type(err).__name__}: {str(err)[:300]}") from err


def _rebuilt(saved: SavedSpace) -> Space:
    """The space ``load_space`` builds from ``saved``'s reference, refused unless it has the spec recorded."""
    call = saved.reference.call()
    space = load_space(saved.plugin, *saved.args, **saved.kwargs)
    if not isinstance(space, Space):
        raise SpacegraphTypeError(f"{call} built a {type(space).__name__}, not a spacegraph.Space")
    spec = space.spec
    if spec.fingerprint != saved.fingerprint:
        raise FingerprintMismatchError(
            f"{call} built it with fingerprint {spec.fingerprint}, but the graph was saved with fingerprint "
            f"{saved.fingerprint}: its weights or settings differ (other weights at that path, another version of "
            "the plugin); rebuild the graph on this space and save it again"
        )
    built = (spec.name, spec.dim, [m.value for m in spec.modalities])
    if built != (saved.name, saved.dim, saved.modalities):
        raise SpacegraphValueError(
            f"{call} built space {spec.name!r} of dim {spec.dim} embedding {built[2]}, but the graph records "
            f"{saved.name!r} of dim {saved.dim} embedding {saved.modalities}; the file was edited"
        )
    return space


def _loaded_bridge(folder: Path, saved: SavedBridge) -> Bridge:
    bridge = Bridge.load(folder / saved.folder)
    if bridge.name != saved.name:
        raise SpacegraphValueError(f"its folder holds bridge {bridge.name!r}; the graph file lists {saved.name!r}")
    return bridge
