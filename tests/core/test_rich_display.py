"""Rich display: the HTML tables of graphs, spaces, bridges, routes and plans, and the drawing of a graph."""

import io
import subprocess
import sys

import pytest
from spacegraph_bridges.cmcr import CMCRMethod

import spacegraph as sg
from tests.conftest import ToySpace, chain_of_three_spaces, random_unit
from tests.core.test_graph_connects_and_plans import with_score

QUICK = {"steps": 5, "hidden_dim": 16, "out_dim": 8, "batch_size": 16}


def bridge(x, y, overlap="text", quality=0.8, **config):
    features = sg.BridgeFeatures(
        random_unit(40, x.spec.dim, 0),
        random_unit(40, y.spec.dim, 1),
        random_unit(20, x.spec.dim, 2),
        random_unit(20, y.spec.dim, 3),
    )
    made = CMCRMethod().train(x.spec, y.spec, overlap, features, {**QUICK, **config}, show_progress_bar=False)
    return with_score(made, quality)


@pytest.fixture(scope="module")
def graph():
    """Audio-text and text-image joined through text; the joint space joined with image-lowres through images."""
    at, ti, il = chain_of_three_spaces()
    graph = sg.SpaceGraph([at, ti, il])
    first = graph.add_bridge(bridge(at, ti, quality=0.8))
    graph.add_bridge(bridge(graph.space(first.name), il, overlap="image", quality=0.5))
    return graph


def test_graph_html_lists_nodes_bridges_with_quality_and_modalities(graph):
    html = graph._repr_html_()
    assert html.startswith("<table>") and html.count("<table>") == 2
    for name in ("toy-at", "toy-ti", "toy-il", "toy-at+toy-ti", "toy-at+toy-ti+toy-il"):
        assert f">{name}<" in html
    assert ">joint space<" in html and ">space<" in html
    assert ">0.800<" in html and ">0.500<" in html and ">given<" in html
    assert "modalities: audio, image, lowres_image, text" in html
    assert "toy-at &lt;-&gt; toy-ti" in html


def test_an_empty_graph_says_it_has_no_bridges():
    html = sg.SpaceGraph([ToySpace("only", ("text",), 4)])._repr_html_()
    assert ">only<" in html and "no bridges yet" in html


def test_every_text_is_escaped():
    odd = ToySpace("a<b>&'c", ("audio", "text"), 6, seed=1)
    html = sg.SpaceGraph([odd, ToySpace("t", ("text", "image"), 4)])._repr_html_() + odd._repr_html_()
    assert "a<b>" not in html and "a&lt;b&gt;&amp;&#x27;c" in html


def test_space_html_is_its_spec(graph):
    html = graph.space("toy-at")._repr_html_()
    assert "Space &#x27;toy-at&#x27;" in html
    assert ">ToySpace<" in html and ">audio, text<" in html and ">6<" in html
    assert f">{graph.space('toy-at').spec.fingerprint}<" in html


def test_bridge_html_summarises_its_card(graph):
    first = graph.bridges[0]
    html = first._repr_html_()
    assert ">cmcr<" in html and ">connect<" in html and ">text<" in html
    assert ">0.800 (given)<" in html and "mlp2 6 -&gt; 8" in html and "overlap 40, memory_x 20" in html
    assert all(ref.fingerprint in html for ref in first.card.spaces)


def test_route_html_shows_both_legs_and_the_bridges(graph):
    html = graph.connect("audio", "lowres_image")._repr_html_()
    assert "toy-at -&gt; toy-at+toy-ti -&gt; toy-at+toy-ti+toy-il" in html
    assert "toy-il -&gt; toy-at+toy-ti+toy-il" in html
    assert "expected quality 0.400" in html and html.count("<tr>") == 3 + 3


def test_a_route_inside_one_space_says_so():
    route = sg.SpaceGraph([ToySpace("at", ("audio", "text"), 6)]).connect("audio", "text")
    assert "no bridge: one space embeds both modalities" in route._repr_html_()


def test_plan_html_is_the_explain_table(graph):
    plan = graph.plan("audio", "image")
    html = plan._repr_html_()
    assert html.count("<tr>") == 1 + len(plan.routes)
    assert "encode audio with" in html and f"{plan.chosen.expected_quality:.3f}" in html
    assert "toy-at+toy-ti (connect): 0.800, given" in html
    assert "chosen: #1" in html


def edge_and_node_texts(figure):
    return [text.get_text() for ax in figure.axes for text in ax.texts]


def test_draw_returns_a_figure_with_nodes_modalities_and_labelled_edges(graph):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    from matplotlib.figure import Figure

    figure = graph.draw()
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    assert pyplot.get_fignums() == []  # closed for pyplot: a notebook shows the returned figure once
    texts = edge_and_node_texts(figure)
    assert "toy-at\n[audio, text]" in texts and "toy-at+\ntoy-ti+\ntoy-il\n[audio, text, image, lowres_image]" in texts
    assert texts.count("cmcr via text\nquality 0.800") == 2 and texts.count("cmcr via image\nquality 0.500") == 2
    assert "shares image" in texts  # toy-ti and toy-il share images; no bridge joins the two directly
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["space", "joint space (connect bridge)", "bridge head", "candidate edge (shared modality)"]
    figure.savefig(io.BytesIO(), format="png")  # renders


def arrows(figure):
    """(colour, line style) of each edge drawn."""
    from matplotlib.colors import to_hex

    patches = [text.arrow_patch for text in figure.axes[0].texts if getattr(text, "arrow_patch", None)]
    return [(to_hex(patch.get_edgecolor()), patch.get_linestyle()) for patch in patches]


def test_draw_shows_candidate_edges_dashed_between_spaces_sharing_a_modality():
    pytest.importorskip("matplotlib")
    spaces = [ToySpace("at", ("audio", "text"), 6), ToySpace("ti", ("text", "image"), 4), ToySpace("ix", ("image",), 4)]
    figure = sg.SpaceGraph(spaces).draw()
    texts = edge_and_node_texts(figure)
    assert texts.count("shares text") == 1 and texts.count("shares image") == 1  # at-ix share nothing
    assert arrows(figure) == [("#999999", "--")] * 2
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == [
        "space",
        "candidate edge (shared modality)",
    ]


def test_draw_highlights_a_route_and_refuses_one_of_another_graph(graph):
    pytest.importorskip("matplotlib")
    route = graph.connect("audio", "lowres_image")  # toy-at -> toy-at+toy-ti -> joint of three <- toy-il
    figure = graph.draw(route=route)
    red = [edge for edge in arrows(figure) if edge[0] == "#c0392b"]
    assert len(red) == route.hops == 3 and len(arrows(figure)) == 4 + 1  # 4 heads, 1 candidate edge
    assert "route audio -> lowres_image in red" in figure.axes[0].get_title()
    other = sg.SpaceGraph([ToySpace("a", ("audio", "text"), 6)])
    with pytest.raises(sg.SpacegraphValueError, match="which this graph does not hold"):
        other.draw(route=route)
    with pytest.raises(sg.SpacegraphTypeError, match="draw: argument 'route': .*instance of Route"):
        graph.draw(route="audio->image")


def test_draw_into_given_axes_and_an_extend_bridge():
    pyplot = pytest.importorskip("matplotlib.pyplot")
    at, ti = ToySpace("at", ("audio", "text"), 6, seed=1), ToySpace("ti", ("text", "image"), 10, seed=2)
    graph = sg.SpaceGraph([at, ti], [bridge(at, ti, kind="extend", quality=0.9)])
    figure, ax = pyplot.subplots()
    try:
        assert graph.draw(ax=ax) is figure
        assert "cmcr via text\nquality 0.900" in edge_and_node_texts(figure)  # an extend edge: source to target
    finally:
        pyplot.close(figure)


def test_draw_an_empty_graph_and_one_without_bridges():
    pytest.importorskip("matplotlib")
    assert edge_and_node_texts(sg.SpaceGraph().draw()) == []
    figure = sg.SpaceGraph([ToySpace("alone", ("text",), 4)]).draw()
    assert edge_and_node_texts(figure) == ["alone\n[text]"]


def test_draw_without_matplotlib_names_the_extra(graph, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import matplotlib.pyplot now fails
    with pytest.raises(sg.MissingExtraError, match=r"spacegraph\[notebook\]"):
        graph.draw()


def test_import_spacegraph_loads_no_plotting_or_notebook_library():
    code = (
        "import sys, spacegraph, spacegraph.plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'nbclient', 'nbformat', 'IPython', 'ipykernel')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
