"""Rich display for notebooks: HTML tables for graphs, spaces, bridges, routes and plans, and a drawing of the graph.

Only the standard library and networkx (a core dependency) are imported here; :func:`draw_graph` imports matplotlib
when it is called (the ``notebook`` extra), so ``import spacegraph`` stays light.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import networkx as nx

from ._errors import SpacegraphValueError
from ._optional import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from ._bridge import Bridge
    from ._graph import SpaceGraph
    from ._planner import Plan
    from ._route import Route
    from ._space import Space

SPACE_STYLE = {"boxstyle": "square,pad=0.6", "facecolor": "#cfe2f3", "edgecolor": "#3d6b99"}
JOINT_STYLE = {"boxstyle": "round,pad=0.6", "facecolor": "#fce5cd", "edgecolor": "#b45f06"}
ROUTE_COLOR = "#c0392b"


def _cell(value: Any, tag: str = "td") -> str:
    return f"<{tag} style='text-align:left'>{html.escape(str(value))}</{tag}>"


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """An HTML table with every header, cell and the caption escaped."""
    head = "<tr>" + "".join(_cell(header, "th") for header in headers) + "</tr>"
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    title = f"<caption style='text-align:left'><b>{html.escape(caption)}</b></caption>" if caption else ""
    return f"<table>{title}<thead>{head}</thead><tbody>{body}</tbody></table>"


def _names(modalities: Iterable[Any]) -> str:
    return ", ".join(str(modality) for modality in modalities)


def _quality(bridge: Bridge) -> str:
    return f"{bridge.card.score:.3f}"


def _wrap(name: str) -> str:
    """A joint space's name (``a+b+c``) on one line per part, to fit a drawing."""
    return name.replace("+", "+\n")


def _joins(bridge: Bridge) -> str:
    x, y = bridge.space_names
    return f"{x} <-> {y}" if bridge.card.kind == "connect" else f"{x} -> {y}"


def space_html(space: Space) -> str:
    """The space's spec as a two-column table."""
    spec = space.spec
    rows = [
        ("class", type(space).__name__),
        ("modalities", _names(spec.modalities)),
        ("dim", spec.dim),
        ("normalized", spec.normalized),
        ("fingerprint", spec.fingerprint),
        ("device", space.device),
    ]
    return html_table(("field", "value"), rows, f"Space {spec.name!r}")


def bridge_html(bridge: Bridge) -> str:
    """The bridge's card in short: what it joins, through what, its heads, data and measured quality."""
    card = bridge.card
    rows = [
        ("method", card.method),
        ("kind", card.kind),
        ("joins", _joins(bridge)),
        ("through", card.overlap),
        *((f"space {ref.name}", f"{_names(ref.modalities)}; {ref.dim}-d; {ref.fingerprint}") for ref in card.spaces),
        *((f"head {name}", f"{h.arch} {h.in_dim} -> {h.out_dim}") for name, h in card.heads.items()),
        ("data rows", ", ".join(f"{key} {count}" for key, count in card.data.items()) or "(not recorded)"),
        ("quality", f"{_quality(bridge)} ({card.score_source})"),
        *((f"quality: {key}", f"{value:.4g}") for key, value in card.quality.items()),
        ("library version", card.library_version),
    ]
    return html_table(("field", "value"), rows, f"Bridge {bridge.name!r}")


def route_html(route: Route) -> str:
    """The route's two legs (entry space and path into the common space) and the bridges it uses."""
    legs = html_table(
        ("modality", "encoded by", "path", "heads"),
        [(leg.modality, leg.space.name, " -> ".join(leg.path), len(leg.steps)) for leg in (route.source, route.target)],
        f"Route {route.source.modality} -> {route.target.modality}: meets in {route.common_space!r}, "
        f"expected quality {route.expected_quality:.3f}",
    )
    bridges = html_table(
        ("bridge", "kind", "joins", "through", "quality", "source"),
        [(b.name, b.card.kind, _joins(b), b.card.overlap, _quality(b), b.card.score_source) for b in route.bridges],
    )
    return legs + (bridges if route.bridges else "<p>no bridge: one space embeds both modalities</p>")


def plan_html(plan: Plan) -> str:
    """The rows of :meth:`Plan.explain` as a table, and why the first was chosen."""
    headers = ("#", "expected", "range", f"encode {plan.source} with", f"encode {plan.target} with", "hops", "meets in")
    rows = [
        (
            row["rank"],
            f"{row['expected_quality']:.3f}",
            "[{:.3f}, {:.3f}]".format(*row["interval"]),
            row["source_space"],
            row["target_space"],
            row["hops"],
            row["meets_in"],
            "; ".join(f"{name} ({kind}): {score:.3f}, {source}" for name, kind, score, source in row["bridges"])
            or "none",
        )
        for row in plan.rows()
    ]
    caption = f"{plan.source} -> {plan.target}: {len(plan.routes)} candidate route(s), best first"
    verdict = "<br>".join(html.escape(line) for line in plan._verdict().splitlines()) if plan.routes else "no route"
    verdict = f"<p>{verdict}</p>"
    return html_table((*headers, "bridges (quality, source)"), rows, caption) + verdict


def graph_html(graph: SpaceGraph) -> str:
    """The graph's nodes (spaces and joint spaces), its bridges with their quality, and its modalities."""
    nodes = [("space", s) for s in graph.spaces] + [("joint space", s) for s in graph.joint_spaces]
    summary = (
        f"SpaceGraph: {len(graph.spaces)} space(s), {len(graph.joint_spaces)} joint space(s), "
        f"{len(graph.bridges)} bridge(s); modalities: {_names(graph.modalities) or '(none)'}"
    )
    node_table = html_table(
        ("node", "kind", "modalities", "dim", "fingerprint"),
        [(s.name, kind, _names(s.modalities), s.spec.dim, s.spec.fingerprint) for kind, s in nodes],
        summary,
    )
    bridge_table = html_table(
        ("bridge", "method", "kind", "joins", "through", "quality", "source"),
        [
            (b.name, b.card.method, b.card.kind, _joins(b), b.card.overlap, _quality(b), b.card.score_source)
            for b in graph.bridges
        ],
    )
    return node_table + (bridge_table if graph.bridges else "<p>no bridges yet</p>")


def _edge_label(bridge: Bridge) -> str:
    return f"{bridge.card.method} via {bridge.card.overlap}\nquality {_quality(bridge)}"


def _layered(graph: SpaceGraph) -> nx.DiGraph:
    """The graph as a DiGraph for drawing: a ``layer`` per node (row 0 at the top; each node's heads reach only rows
    below it, a node with no head on the bottom row) and one label per edge (parallel bridges share the edge)."""
    drawn = nx.DiGraph()
    for space in graph.spaces:
        drawn.add_node(space.name, joint=False, modalities=space.modalities)
    for joint in graph.joint_spaces:
        drawn.add_node(joint.name, joint=True, modalities=joint.modalities)
    for bridge in graph.bridges:
        for name in bridge.card.headed_spaces:
            u, v = name, bridge.card.target
            if drawn.has_edge(u, v):
                drawn.edges[u, v]["label"] += "\n" + _edge_label(bridge)
            else:
                drawn.add_edge(u, v, label=_edge_label(bridge))
    if not nx.is_directed_acyclic_graph(drawn):  # extend bridges in a cycle: one row
        nx.set_node_attributes(drawn, 0, "layer")
        return drawn
    height: dict[str, int] = {}  # the longest path of heads from a node on: 0 for a node no head leaves
    for node in reversed(list(nx.topological_sort(drawn))):
        height[node] = max((height[after] + 1 for after in drawn.successors(node)), default=0)
    top = max(height.values(), default=0)
    nx.set_node_attributes(drawn, {node: top - h for node, h in height.items()}, "layer")
    return drawn


def candidate_edges(graph: SpaceGraph) -> list[tuple[str, str, list[str]]]:
    """Pairs of spaces that share a modality and that no bridge joins directly, with the modalities they share: the
    bridges the graph could still train."""
    joined = {frozenset(bridge.space_names) for bridge in graph.bridges}
    spaces = graph.spaces
    return [
        (x.name, y.name, shared)
        for i, x in enumerate(spaces)
        for y in spaces[i + 1 :]
        if (shared := [m.value for m in x.modalities if m in y.modalities])
        and frozenset((x.name, y.name)) not in joined
    ]


def _route_edges(route: Route | None, graph: SpaceGraph) -> set[tuple[str, str]]:
    """The head edges ``route`` takes (reading space -> target), checked to be the graph's."""
    if route is None:
        return set()
    known = {s.name for s in graph.spaces} | {s.name for s in graph.joint_spaces}
    strangers = sorted({node for leg in (route.source, route.target) for node in leg.path} - known)
    if strangers:
        raise SpacegraphValueError(f"the route passes through {strangers}, which this graph does not hold")
    return {(reads, bridge.card.target) for leg in (route.source, route.target) for bridge, reads in leg.steps}


def draw_graph(graph: SpaceGraph, ax: Axes | None = None, route: Route | None = None) -> Figure:
    """Draw ``graph`` with networkx's layout and matplotlib: spaces as square boxes, joint spaces as round ones, each
    labelled with its modalities; each head as an arrow labelled with its bridge's method, overlap and quality; each
    candidate edge (spaces that share a modality, not yet bridged) dashed, labelled with what they share. ``route``
    is drawn in red. Draws into ``ax`` if given; returns the figure."""
    pyplot = require("matplotlib.pyplot", "notebook")
    on_route = _route_edges(route, graph)
    drawn = _layered(graph)
    ax = ax if ax is not None else _new_axes(pyplot, drawn)
    pos = nx.multipartite_layout(drawn, subset_key="layer", align="horizontal") if drawn else {}
    pos = {node: (x, -y) for node, (x, y) in pos.items()}
    boxes = _draw_nodes(drawn, pos, ax, {node for edge in on_route for node in edge})
    for u, v, label in drawn.edges(data="label"):
        _draw_edge(ax, boxes[u], boxes[v], label, color=ROUTE_COLOR if (u, v) in on_route else "#555555")
    candidates = candidate_edges(graph)
    for u, v, shared in candidates:
        _draw_edge(ax, boxes[u], boxes[v], f"shares {_names(shared)}", color="#999999", dashed=True)
    if drawn:
        shown = {"joint": bool(graph.joint_spaces), "heads": bool(graph.bridges), "route": route is not None}
        _legend(ax, candidates=bool(candidates), **shown)
        ax.update_datalim(list(pos.values()))  # text boxes do not set the limits themselves
    ax.margins(0.2, 0.25)
    ax.set_axis_off()
    ax.set_title(_title(graph, route), fontsize=10)
    return cast("Figure", ax.figure)


def _new_axes(pyplot: Any, drawn: nx.DiGraph) -> Axes:
    """Axes sized for the drawing, made by pyplot (so Jupyter shows a returned figure), then closed (so it shows
    once)."""
    rows = [layer for _, layer in drawn.nodes(data="layer")] or [0]
    widest = max(rows.count(layer) for layer in rows)
    figure = pyplot.figure(figsize=(max(6.0, 3.4 * widest), max(3.5, 2.4 * (max(rows) + 1))), layout="constrained")
    pyplot.close(figure)
    return cast("Axes", figure.subplots())


def _title(graph: SpaceGraph, route: Route | None) -> str:
    title = f"{len(graph.spaces)} space(s), {len(graph.joint_spaces)} joint space(s), {len(graph.bridges)} bridge(s)"
    if route is not None:
        title += f"\nroute {route.source.modality} -> {route.target.modality} in red, meets in {route.common_space}"
    return title


def _draw_nodes(
    drawn: nx.DiGraph, pos: dict[str, tuple[float, float]], ax: Axes, highlighted: set[str]
) -> dict[str, Text]:
    """One text box per node, sized by its label: square for a space, round for a joint space."""
    boxes = {}
    for node, data in drawn.nodes(data=True):
        style: dict[str, Any] = dict(JOINT_STYLE if data["joint"] else SPACE_STYLE)
        if node in highlighted:
            style.update(edgecolor=ROUTE_COLOR, linewidth=2.2)
        label = f"{_wrap(node)}\n[{_names(data['modalities'])}]"
        x, y = pos[node]
        boxes[node] = ax.text(x, y, label, ha="center", va="center", fontsize=8, bbox=style, zorder=2)
    return boxes


def _draw_edge(ax: Axes, source: Text, target: Text, label: str, *, color: str, dashed: bool = False) -> None:
    """An arrow (a line when ``dashed``) from box to box, clipped at their edges, labelled at its middle."""
    arrow = {
        "arrowstyle": "-" if dashed else "-|>",
        "color": color,
        "linewidth": 2.2 if color == ROUTE_COLOR else 1.0,
        "linestyle": "--" if dashed else "-",
        "connectionstyle": "arc3,rad=0.15" if dashed else "arc3",
        "patchA": source.get_bbox_patch(),
        "patchB": target.get_bbox_patch(),
        "mutation_scale": 14,
    }
    ax.annotate("", xy=target.get_position(), xytext=source.get_position(), arrowprops=arrow, zorder=3)
    (x0, y0), (x1, y1) = source.get_position(), target.get_position()
    style = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    ax.text(
        (x0 + x1) / 2,
        (y0 + y1) / 2,
        label,
        ha="center",
        va="center",
        fontsize=7,
        color=color,
        bbox=style,
        style="italic" if dashed else "normal",
        zorder=4,
    )


def _legend(ax: Axes, *, joint: bool, heads: bool, candidates: bool, route: bool) -> None:
    """A legend below the drawing, of what it shows."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def box(label: str, style: dict[str, str]) -> Patch:
        return Patch(label=label, facecolor=style["facecolor"], edgecolor=style["edgecolor"])

    shown = [
        (True, box("space", SPACE_STYLE)),
        (joint, box("joint space (connect bridge)", JOINT_STYLE)),
        (heads, Line2D([], [], color="#555555", label="bridge head")),
        (candidates, Line2D([], [], color="#999999", linestyle="--", label="candidate edge (shared modality)")),
        (route, Line2D([], [], color=ROUTE_COLOR, linewidth=2.2, label="the route")),
    ]
    handles = [handle for show, handle in shown if show]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=3, fontsize=8, frameon=False)
