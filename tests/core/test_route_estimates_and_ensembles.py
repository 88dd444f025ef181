"""Route-level estimates (the route measured as a whole) and route ensembles, on toy spaces with class structure."""

import pytest
import torch

import spacegraph as sg
from spacegraph._quality import EXPECTED_MAP
from spacegraph._route_quality import describe_chain, route_chain, route_key, shortest_chain

CLASSES, LATENT = 5, 8
TRAIN = {"steps": 60, "hidden_dim": 32, "out_dim": 16, "batch_size": 32, "seed": 0}


class AlignedToySpace(sg.Space):
    """A contrastive toy space: every modality is the same fixed random map of a latent vector, so items of one
    class sit together across its modalities (as text and images do in CLIP)."""

    def __init__(self, name, modalities, dim, seed):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.map = torch.randn(LATENT, dim, generator=generator)
        self.spec = sg.SpaceSpec(
            name=name, modalities=modalities, dim=dim, fingerprint=sg.fingerprint_state_dict({"map": self.map})
        )

    def _encode_batch(self, modality, batch):
        return torch.as_tensor(batch, dtype=torch.float32) @ self.map


def latent_items(n, seed, noise=0.35):
    """``n`` latent vectors of ``CLASSES`` classes (fixed centres), and their labels."""
    centres = torch.randn(CLASSES, LATENT, generator=torch.Generator().manual_seed(99)) * 2
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES, (n,), generator=generator)
    return centres[labels] + noise * torch.randn(n, LATENT, generator=generator), labels


@pytest.fixture
def chain_graph(tmp_path):
    """Three spaces in a chain (audio-text, text-image, image-lowres), with data of every modality registered."""
    spaces = [
        AlignedToySpace("at", ("audio", "text"), 12, seed=1),
        AlignedToySpace("ti", ("text", "image"), 14, seed=2),
        AlignedToySpace("il", ("image", "lowres_image"), 10, seed=3),
    ]
    graph = sg.SpaceGraph(spaces, store=sg.FeatureStore(tmp_path / "store"))
    for seed, modality in enumerate(("audio", "text", "image", "lowres_image")):
        graph.add_data(modality, f"{modality}-data", latent_items(120, seed)[0].numpy())
    return graph


def train(graph, x, y, overlap, **config):
    features = graph._link_features(x, y, sg.Modality(overlap))
    return graph.train_bridge(
        x, y, overlap=overlap, features=features, config={**TRAIN, **config}, show_progress_bar=False
    )


def test_a_route_of_one_bridge_is_estimated_as_its_bridge_is(chain_graph):
    bridge = train(chain_graph, "at", "ti", "text")
    route = chain_graph.connect("audio", "image")
    assert route.estimate is not None and route.expected_quality == route.estimate["estimate"]
    # The same memories, the same pseudo labels, the same heads: the bridge's own label-free estimate.
    assert route.estimate["estimate"] == pytest.approx(bridge.card.quality["estimate"], abs=1e-5)
    assert route.estimate["estimate_pseudo_map"] == pytest.approx(bridge.card.quality["estimate_pseudo_map"], abs=1e-5)


def test_a_connect_chain_is_measured_as_a_whole_not_as_a_product(chain_graph):
    first = train(chain_graph, "at", "ti", "text")
    second = train(chain_graph, first.name, "il", "image")
    route = chain_graph.connect("audio", "lowres_image")
    chain = route_chain(route, chain_graph.space)
    # Audio in at, across text to ti, across image to il: the joint space's image is ti's, natively.
    assert describe_chain(chain) == ["at:audio", "at|text|ti", "ti|image|il", "il:lowres_image"]
    assert chain.handovers[0].name == "ti"
    estimate = chain_graph.estimate(route)
    assert estimate["hops"] == 3 and estimate["estimate_low"] <= estimate["estimate"] <= estimate["estimate_high"]
    assert estimate["estimate"] != pytest.approx(first.card.score * second.card.score, abs=1e-3)
    explained = chain_graph.plan("audio", "lowres_image").explain()
    assert "(route)" in explained and f"{route.bridge_product:7.3f}" in explained
    # The estimate read as a mAP, beside it: the shipped map of the estimate, its interval mapped alike.
    assert estimate["expected_mAP"] == pytest.approx(EXPECTED_MAP(estimate["estimate"]))
    assert estimate["expected_mAP_low"] <= estimate["expected_mAP"] <= estimate["expected_mAP_high"]
    assert f"{estimate['expected_mAP']:.3f}  {route.bridge_product:7.3f}" in explained


def test_a_scrambled_route_reads_lower_than_a_trained_one(chain_graph):
    first = train(chain_graph, "at", "ti", "text", kind="extend")
    good = train(chain_graph, "il", "ti", "image", kind="extend")
    route = chain_graph.connect("audio", "lowres_image")
    trained = chain_graph.estimate(route)["estimate"]
    assert route.bridges == [first, good]
    scrambled = sg.SpaceGraph(chain_graph.spaces, [first], store=chain_graph.store)
    scrambled._data = chain_graph._data
    untrained = train(scrambled, "il", "ti", "image", kind="extend", steps=1, seed=5)
    with torch.no_grad():
        for parameter in untrained.head("il").parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    scrambled_route = scrambled.connect("audio", "lowres_image")
    assert scrambled.estimate(scrambled_route)["estimate"] < trained - 0.1


def test_route_estimates_are_cached_and_measured_again_on_new_data(chain_graph):
    train(chain_graph, "at", "ti", "text")
    route = chain_graph.connect("audio", "image")
    assert chain_graph.estimate(route) is chain_graph.estimate(route)  # measured once
    chain_graph.add_data("audio", "other-audio", latent_items(80, 11)[0].numpy())
    again = chain_graph.estimate(route)
    assert again["estimate_items"] != route.estimate["estimate_items"]


def test_what_cannot_be_estimated_says_why(chain_graph, tmp_path):
    bridge = train(chain_graph, "at", "ti", "text")
    bare = sg.SpaceGraph(chain_graph.spaces, [bridge])
    route = bare.connect("audio", "image")
    assert route.estimate is None and route.expected_quality == route.bridge_product
    with pytest.raises(sg.SpacegraphValueError, match="register data of"):
        bare.estimate(route)
    inside = chain_graph.connect("text", "image", source="ti")
    with pytest.raises(sg.SpacegraphValueError, match="inside one space"):
        chain_graph.estimate(inside)


def test_a_probe_outranks_the_route_estimate(chain_graph):
    train(chain_graph, "at", "ti", "text")
    route = chain_graph.connect("audio", "image")
    audio, labels = latent_items(30, 21)
    images, image_labels = latent_items(30, 22)
    probe = sg.Probe("probe", audio.numpy(), labels.numpy(), images.numpy(), image_labels.numpy())
    measured = chain_graph.evaluate(route, probe, calibrate=True)["mAP"]
    again = chain_graph.connect("audio", "image")
    assert again.estimate is None and again.expected_quality == pytest.approx(measured)


@pytest.fixture
def two_routes(chain_graph):
    """audio -> lowres_image by an extend meeting in ti, and by the connect chain."""
    train(chain_graph, "at", "ti", "text", kind="extend")
    train(chain_graph, "il", "ti", "image", kind="extend")
    joint = train(chain_graph, "at", "ti", "text", seed=1)
    train(chain_graph, joint.name, "il", "image")
    return chain_graph


def test_an_ensemble_is_the_weighted_mean_of_its_routes(two_routes):
    routes = two_routes.plan("audio", "lowres_image").routes[:2]
    combined = two_routes.connect("audio", "lowres_image", ensemble=2)
    assert isinstance(combined, sg.RouteEnsemble) and list(map(repr, combined.routes)) == list(map(repr, routes))
    weights = [r.expected_quality / sum(q.expected_quality for q in routes) for r in routes]
    assert combined.weights == pytest.approx(weights)
    audio, lowres = latent_items(7, 31)[0].numpy(), latent_items(9, 32)[0].numpy()
    expected = sum(w * route.similarity(audio, lowres) for w, route in zip(weights, routes))
    torch.testing.assert_close(combined.similarity(audio, lowres), expected)
    assert torch.allclose(combined.encode("audio", audio).norm(dim=1), torch.ones(7))
    assert combined.estimate is not None and combined.estimate["estimate"] == combined.expected_quality


def test_an_ensemble_indexes_and_searches_and_refuses_another_routes_index(two_routes, tmp_path):
    combined = two_routes.connect("audio", "lowres_image", ensemble=2)
    lowres, audio = latent_items(25, 41)[0].numpy(), latent_items(4, 42)[0].numpy()
    combined.index(lowres)
    scores, _ = combined.search(audio, k=3)
    top = combined.similarity(audio, lowres).topk(3)
    torch.testing.assert_close(torch.as_tensor(scores), top.values)
    combined.search_index.save(tmp_path / "index")
    single = two_routes.connect("audio", "lowres_image")
    with pytest.raises(sg.SpacegraphValueError, match="built for another route"):
        single.load_index(tmp_path / "index")
    assert isinstance(combined.load_index(tmp_path / "index"), sg.SearchIndex)


def test_auto_combines_only_where_the_ensemble_reads_above_the_best_routes_interval(two_routes):
    plan = two_routes.plan("audio", "lowres_image")
    chosen = two_routes.connect("audio", "lowres_image", ensemble="auto")
    ensembles = [two_routes.ensemble(plan.routes[:k]) for k in (2, 3) if k <= len(plan.routes)]
    above = [e for e in ensembles if e.expected_quality > plan.chosen.quality_interval[1]]
    expected = max(above, key=lambda route: route.expected_quality) if above else plan.chosen
    assert repr(chosen) == repr(expected) and chosen.expected_quality == pytest.approx(expected.expected_quality)
    # Where an ensemble reads clearly higher, auto takes it.
    generous = two_routes.ensemble(plan.routes[:2])
    two_routes._route_estimates[route_key(generous)] = {**generous.estimate, "estimate": 0.999}
    assert isinstance(two_routes.connect("audio", "lowres_image", ensemble="auto"), sg.RouteEnsemble)


def test_ensembles_refuse_what_they_cannot_combine(two_routes):
    route = two_routes.connect("audio", "lowres_image")
    with pytest.raises(sg.SpacegraphValueError, match="two or more routes"):
        sg.RouteEnsemble([route])
    with pytest.raises(sg.SpacegraphValueError, match="same two modalities"):
        sg.RouteEnsemble([route, two_routes.connect("audio", "image")])
    with pytest.raises(sg.SpacegraphValueError, match="weight"):
        sg.RouteEnsemble([route, route], [1.0, float("nan")])
    with pytest.raises(sg.SpacegraphValueError, match="ensemble must be an integer"):
        two_routes.connect("audio", "lowres_image", ensemble=0)


def test_a_route_estimate_that_fails_to_measure_leaves_planning_working(chain_graph):
    train(chain_graph, "at", "ti", "text")
    chain_graph.add_data("image", "not-images", ["not an image"] * 5)
    with pytest.warns(UserWarning, match="route estimate of .* was not measured"):
        route = chain_graph.connect("audio", "image")
    assert route.estimate is None and route.expected_quality == route.bridge_product
    with pytest.raises(sg.SpacegraphError):
        chain_graph.estimate(route)


def test_every_route_between_two_ends_is_scored_on_the_shortest_chains_labels(chain_graph):
    """A route through a text-only space crosses one more space than the direct chain between its ends: it is
    scored on the direct chain's labels, as a route that takes the direct bridges is."""
    text_only = AlignedToySpace("tt", ("text",), 9, seed=4)
    spaces = [*chain_graph.spaces, text_only]
    lowres = train(chain_graph, "il", "ti", "image", kind="extend")

    def graph_of(*hops):
        graph = sg.SpaceGraph(spaces, store=chain_graph.store)
        graph._data = dict(chain_graph._data)
        for x, y in hops:
            train(graph, x, y, "text", kind="extend")
        graph.add_bridge(lowres)
        return graph, graph.connect("audio", "lowres_image")

    long_graph, long_route = graph_of(("at", "tt"), ("tt", "ti"))
    short_graph, short_route = graph_of(("at", "ti"))
    own = route_chain(long_route, long_graph.space)
    assert describe_chain(own) == ["at:audio", "at|text|tt", "tt|text|ti", "ti|image|il", "il:lowres_image"]
    shortest = shortest_chain(own, long_graph.spaces, long_graph._data)
    assert describe_chain(shortest) == ["at:audio", "at|text|ti", "ti|image|il", "il:lowres_image"]
    assert [space.name for space in shortest.handovers] == ["ti"]
    long_labels = long_graph._chain_estimate_data(long_route).labels
    short_labels = short_graph._chain_estimate_data(short_route).labels
    assert long_labels.silhouettes == short_labels.silhouettes
    for k, (source, target) in long_labels.levels.items():
        assert torch.equal(source, short_labels.levels[k][0]) and torch.equal(target, short_labels.levels[k][1])
    # Without data of the overlap the direct chain would read, the route keeps its own chain.
    assert shortest_chain(own, long_graph.spaces, {sg.Modality("audio"), sg.Modality("lowres_image")}) is own
