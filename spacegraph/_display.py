"""Rich display for notebooks: HTML tables for graphs, spaces, bridges, routes and plans, and a drawing of the graph.

Only the standard library and networkx (a core dependency) are imported here; :func:`draw_graph` imports matplotlib
when it is called (the ``notebook`` extra), so ``import spacegraph`` stays light.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import networkx as nx

from ._optional import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._bridge import Bridge
    from ._graph import SpaceGraph
    from ._planner import Plan
    from ._route import Route
    from ._space import Space

SPACE_STYLE = {"node_shape": "s", "node_color": "#cfe2f3", "edgecolors": "#3d6b99"}
JOINT_STYLE = {"node_shape": "o", "node_color": "#fce5cd", "edgecolors": "#b45f06"}


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


def _layered(graph: SpaceGraph) -> nx.DiGraph:
    """The graph as a DiGraph for drawing: a ``layer`` per node (row 0 at the top; each node's heads reach only rows
    below it, a node with no head on the bottom row) and one label per edge (parallel bridges share the edge)."""
    drawn = nx.DiGraph()
    for space in graph.spaces:
        drawn.add_node(space.name, joint=False, modalities=space.modalities)
    for joint in graph.joint_spaces:
        drawn.add_node(joint.name, joint=True, modalities=joint.modalities)
    for bridge in graph.bridges:
        label = f"{_wrap(bridge.name)}\nquality {_quality(bridge)} via {bridge.card.overlap}"
        for name in bridge.card.headed_spaces:
            u, v = name, bridge.card.target
            if drawn.has_edge(u, v):
                drawn.edges[u, v]["label"] += "\n" + label
            else:
                drawn.add_edge(u, v, label=label)
    if not nx.is_directed_acyclic_graph(drawn):  # extend bridges in a cycle: one row
        nx.set_node_attributes(drawn, 0, "layer")
        return drawn
    height: dict[str, int] = {}  # the longest path of heads from a node on: 0 for a node no head leaves
    for node in reversed(list(nx.topological_sort(drawn))):
        height[node] = max((height[after] + 1 for after in drawn.successors(node)), default=0)
    top = max(height.values(), default=0)
    nx.set_node_attributes(drawn, {node: top - h for node, h in height.items()}, "layer")
    return drawn


def draw_graph(graph: SpaceGraph, ax: Axes | None = None) -> Figure:
    """Draw ``graph`` with networkx: spaces as squares, joint spaces as circles, each labelled with its modalities,
    and each head edge with its bridge's name and quality. Draws into ``ax`` if given; returns the figure."""
    pyplot = require("matplotlib.pyplot", "notebook")
    drawn = _layered(graph)
    if ax is None:  # made by pyplot (so Jupyter shows a returned figure), then closed (so it shows it once)
        rows = [layer for _, layer in drawn.nodes(data="layer")] or [0]
        widest = max(rows.count(layer) for layer in rows)
        figure = pyplot.figure(figsize=(max(6.0, 3.2 * widest), max(3.5, 2.6 * (max(rows) + 1))), layout="constrained")
        pyplot.close(figure)
        ax = figure.subplots()
    _draw(drawn, ax)
    ax.set_title(
        f"{len(graph.spaces)} space(s), {len(graph.joint_spaces)} joint space(s), {len(graph.bridges)} bridge(s)"
    )
    return cast("Figure", ax.figure)


def _draw(drawn: nx.DiGraph, ax: Axes) -> None:
    """Nodes row by row (spaces at the top, what their heads reach below), their labels, edges and edge labels."""
    pos = nx.multipartite_layout(drawn, subset_key="layer", align="horizontal") if drawn else {}
    pos = {node: (x, -y) for node, (x, y) in pos.items()}
    for joint, style in ((False, SPACE_STYLE), (True, JOINT_STYLE)):
        nodes = [node for node, is_joint in drawn.nodes(data="joint") if is_joint == joint]
        label = "joint space (connect bridge)" if joint else "space"
        nx.draw_networkx_nodes(drawn, pos, nodelist=nodes, ax=ax, node_size=2600, label=label, **style)
    labels = {node: f"{_wrap(node)}\n[{_names(mods)}]" for node, mods in drawn.nodes(data="modalities")}
    nx.draw_networkx_labels(drawn, pos, labels, ax=ax, font_size=8)
    nx.draw_networkx_edges(drawn, pos, ax=ax, node_size=2600, arrowsize=16, edge_color="#555555")
    edge_labels = nx.get_edge_attributes(drawn, "label")
    nx.draw_networkx_edge_labels(drawn, pos, edge_labels, ax=ax, font_size=7, font_color="#444444", rotate=False)
    if drawn:
        ax.legend(loc="upper left", fontsize=8, markerscale=0.3, frameon=False)
    ax.margins(0.25, 0.3)
    ax.set_axis_off()
