"""The paper's tasks as public API: dense embeddings (native and sliding window), localization heatmaps and their
cIoU / AUC, pair scores with AP / max-F1 and decision thresholds, and zero-shot classification through routes."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

import spacegraph as sg
from spacegraph._dense import window_boxes

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "grey": (0.5, 0.5, 0.5)}


class ColourSpace(sg.Space):
    """Images [H, W, 3] embed as their mean colour, texts as the colour they name, audio as a colour vector, each
    through one fixed map into the space: a red patch and the word "red" meet."""

    def __init__(self, name="colours", modalities=("text", "image"), dim=6, seed=0):
        super().__init__()
        self.map = torch.randn(3, dim, generator=torch.Generator().manual_seed(seed)) + 0.5
        self.spec = sg.SpaceSpec(
            name=name, modalities=modalities, dim=dim, fingerprint=sg.fingerprint_state_dict({"map": self.map})
        )

    def _encode_batch(self, modality, batch):
        if modality is sg.Modality.TEXT:
            rows = [next(value for word, value in COLOURS.items() if word in text.split()) for text in batch]
            return torch.tensor(rows) @ self.map
        if modality is sg.Modality.IMAGE:
            return torch.stack([self._mean_colour(item) for item in batch]) @ self.map
        return torch.as_tensor(np.asarray(batch), dtype=torch.float32) @ self.map

    @staticmethod
    def _mean_colour(item):
        array = np.asarray(item, dtype=np.float32)
        return torch.from_numpy(array.reshape(-1, 3).mean(axis=0))


class NativeDenseColourSpace(ColourSpace):
    """The same space, making its dense grid itself: each pixel's colour, pooled to 2 x 2 cells."""

    def _encode_dense_batch(self, modality, batch):
        cells = torch.stack([torch.from_numpy(np.asarray(item, dtype=np.float32)) for item in batch])
        pooled = torch.nn.functional.adaptive_avg_pool2d(cells.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return pooled @ self.map


def quadrant_image(colour="red", quadrant=(0, 1), side=28, background="grey"):
    """A ``side`` x ``side`` image of ``background`` with one quadrant (row, column) of ``colour``."""
    image = np.tile(np.asarray(COLOURS[background], dtype=np.float32), (side, side, 1))
    half = side // 2
    row, column = quadrant
    image[row * half : (row + 1) * half, column * half : (column + 1) * half] = COLOURS[colour]
    return image


def quadrant_box(quadrant, side=28):
    half = side // 2
    row, column = quadrant
    return [column * half, row * half, (column + 1) * half, (row + 1) * half]


# -- dense embeddings ------------------------------------------------------------------------------------------
def test_sliding_windows_are_centred_on_cells_and_kept_inside_the_image():
    assert window_boxes(28, 28, 2, 0.5) == [(0, 0, 14, 14), (0, 14, 14, 28), (14, 0, 28, 14), (14, 14, 28, 28)]
    boxes = window_boxes(100, 60, 7, 0.5)
    assert len(boxes) == 49 and all(
        0 <= top < bottom <= 100 and 0 <= left < right <= 60 for top, left, bottom, right in boxes
    )
    assert {bottom - top for top, _, bottom, _ in boxes} == {50} and {right - left for _, left, _, right in boxes} == {
        30
    }
    # The middle window is centred on the middle cell; the first is shifted inside the image.
    assert boxes[24] == (25, 15, 75, 45) and boxes[0][:2] == (0, 0)


def test_sliding_window_dense_embeddings_are_each_crop_encoded_by_the_space():
    space = ColourSpace()
    image = quadrant_image("red", (0, 1))
    dense = space.encode_dense("image", [image, Image.fromarray((image * 255).astype(np.uint8))], grid=2)
    assert dense.shape == (2, 2, 2, 6) and dense.dtype == torch.float32
    assert torch.allclose(dense.norm(dim=-1), torch.ones(2, 2, 2), atol=1e-5)
    red, grey = space.encode("text", ["red", "grey"])
    assert torch.allclose(dense[0, 0, 1], red, atol=1e-5) and torch.allclose(dense[0, 1, 0], grey, atol=1e-5)
    assert torch.allclose(dense[1], dense[0], atol=1e-2)  # the PIL copy, rounded to 8 bits
    assert not space.has_native_dense("image")


def test_a_native_dense_path_is_used_unless_a_grid_is_asked_for():
    space = NativeDenseColourSpace()
    image = quadrant_image("blue", (1, 0))
    assert space.has_native_dense("image")
    native = space.encode_dense("image", [image])
    blue = space.encode("text", ["blue"])[0]
    assert native.shape == (1, 2, 2, 6) and torch.allclose(native[0, 1, 0], blue, atol=1e-5)
    assert space.encode_dense("image", [image], grid=4, window=0.25).shape == (1, 4, 4, 6)


def test_dense_embeddings_refuse_what_has_no_locations_and_bad_options(tmp_path):
    space = ColourSpace()
    with pytest.raises(sg.SpacegraphValueError, match="no locations"):
        space.encode_dense("text", ["red"])
    with pytest.raises(sg.SpacegraphValueError, match="window must be a fraction"):
        space.encode_dense("image", [quadrant_image()], window=1.5)
    with pytest.raises(sg.SpacegraphFileNotFoundError, match="no image file"):
        space.encode_dense("image", [tmp_path / "missing.png"])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(sg.SpacegraphValueError, match="not an image Pillow can read"):
        space.encode_dense("image", [tmp_path / "notes.png"])
    with pytest.raises(sg.SpacegraphTypeError, match="an image is a file path"):
        space.encode_dense("image", [{"pixels": 1}])


def test_a_native_dense_output_of_the_wrong_shape_is_refused():
    class Broken(NativeDenseColourSpace):
        def _encode_dense_batch(self, modality, batch):
            return torch.zeros(len(batch), 2, 2, 5)

    with pytest.raises(sg.SpacegraphValueError, match="finite embeddings of dim 6"):
        Broken().encode_dense("image", [quadrant_image()])


# -- localization ----------------------------------------------------------------------------------------------
def test_localize_puts_the_named_colour_where_it_is_in_the_image():
    graph = sg.SpaceGraph([ColourSpace()])
    route = graph.connect("text", "image")
    quadrants = [(0, 1), (1, 0), (1, 1)]
    images = [quadrant_image(colour, q) for colour, q in zip(("red", "green", "blue"), quadrants)]
    heatmaps = route.localize(["red", "a green patch", "blue"], images, grid=2)
    assert [tuple(h.shape) for h in heatmaps] == [(28, 28)] * 3
    for heatmap, quadrant in zip(heatmaps, quadrants):
        row, column = divmod(int(heatmap.argmax()), 28)
        assert (row // 14, column // 14) == quadrant
    found = sg.localization_metrics(heatmaps, [quadrant_box(q) for q in quadrants], threshold=0.5)
    assert found["ciou_0.5"] == 1.0 and min(found["ious"]) >= 0.5


@pytest.fixture(scope="module")
def colour_route(tmp_path_factory):
    """Audio (colour vectors) -> image across a Procrustes bridge fitted on texts naming colours."""
    audio_text = ColourSpace("colour-audio", ("audio", "text"), dim=5, seed=1)
    text_image = ColourSpace("colour-image", ("text", "image"), dim=6, seed=2)
    graph = sg.SpaceGraph([audio_text, text_image], store=sg.FeatureStore(tmp_path_factory.mktemp("store")))
    graph.add_data("text", "texts", [f"a {word} thing" for word in COLOURS for _ in range(10)])
    features = graph._link_features("colour-audio", "colour-image", sg.Modality.TEXT)
    graph.train_bridge(
        "colour-audio", "colour-image", overlap="text", features=features, method="procrustes", show_progress_bar=False
    )
    return graph.connect("audio", "image")


def test_localize_goes_through_a_bridge_location_by_location(colour_route):
    image = quadrant_image("green", (1, 1))
    dense = colour_route.encode_dense("image", [image], grid=2)
    image_space = colour_route.leg("image").space
    by_hand = colour_route.project("image", image_space.encode_dense("image", [image], grid=2).reshape(4, -1))
    assert torch.allclose(dense.reshape(4, -1), by_hand, atol=1e-5)
    heatmap = colour_route.localize([COLOURS["green"]], [image], grid=2)[0]
    row, column = divmod(int(heatmap.argmax()), 28)
    assert row >= 14 and column >= 14


def test_localize_refuses_a_route_without_an_image_end_and_unpaired_inputs():
    graph = sg.SpaceGraph([ColourSpace("colours", ("audio", "text"))])
    with pytest.raises(sg.SpacegraphValueError, match="needs a route with an image end"):
        graph.connect("audio", "text").localize([[1.0, 0.0, 0.0]], [quadrant_image()])
    image_route = sg.SpaceGraph([ColourSpace()]).connect("text", "image")
    with pytest.raises(sg.SpacegraphValueError, match="one query per image"):
        image_route.localize(["red", "blue"], [quadrant_image()])


def test_ciou_and_auc_follow_the_protocol_on_known_maps():
    box = [0, 0, 2, 2]  # the top-left quarter of a 4 x 4 map
    exact = np.zeros((4, 4))
    exact[:2, :2] = 1.0
    ramp = (15 - np.arange(16.0)).reshape(4, 4)  # 7 cells lie strictly above the median 8: the box and 3 more
    found = sg.localization_metrics([exact, torch.from_numpy(ramp), np.ones((4, 4))], [box, box, box])
    assert found["ious"] == pytest.approx([1.0, 4 / 7, 0.0])  # a flat map predicts nothing
    assert found["ciou_0.5"] == pytest.approx(2 / 3)
    # Success rates over thresholds 0..1 by 0.05: 3/3 at 0, 2/3 up to 0.55, 1/3 up to 1; trapezoids between.
    success = [1.0] + [2 / 3] * 11 + [1 / 3] * 9
    expected = sum((a + b) / 2 * 0.05 for a, b in itertools.pairwise(success))
    assert found["auc"] == pytest.approx(expected)
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    assert sg.localization_metrics([ramp], [mask], threshold=0.9)["ious"] == pytest.approx([2 / 4])
    assert sg.localization_metrics([exact], [[[0, 0, 1, 1], [1, 1, 2, 2]]])["ious"] == pytest.approx([0.5])


def test_localization_metrics_refuse_bad_truths_and_thresholds():
    with pytest.raises(sg.SpacegraphValueError, match="x0 < x1"):
        sg.localization_metrics([np.zeros((4, 4))], [[2, 0, 1, 3]])
    with pytest.raises(sg.SpacegraphValueError, match="outside"):
        sg.localization_metrics([np.zeros((4, 4))], [[10, 10, 12, 12]])
    with pytest.raises(sg.SpacegraphValueError, match="heatmap's shape"):
        sg.localization_metrics([np.zeros((4, 4))], [np.ones((3, 3), dtype=bool)])
    with pytest.raises(sg.SpacegraphValueError, match="'median' or a float"):
        sg.localization_metrics([np.zeros((4, 4))], [[0, 0, 1, 1]], threshold="mean")
    with pytest.raises(sg.SpacegraphValueError, match="1 heatmaps and 2 truths"):
        sg.localization_metrics([np.zeros((4, 4))], [[0, 0, 1, 1]] * 2)


# -- counterfactual recognition ---------------------------------------------------------------------------------
def test_pair_metrics_agree_with_scikit_learn_ties_included():
    generator = np.random.default_rng(0)
    matched = generator.random(300) < 0.3
    scores = np.round(matched * 0.8 + generator.normal(0, 0.5, 300), 1)  # rounded: many ties
    found = sg.pair_metrics(torch.from_numpy(scores), matched, threshold=0.4)
    assert found["ap"] == pytest.approx(average_precision_score(matched, scores))
    best_f1 = max(f1_score(matched, scores >= t) for t in np.unique(scores))
    assert found["max_f1"] == pytest.approx(best_f1)
    assert f1_score(matched, scores >= found["max_f1_threshold"]) == pytest.approx(best_f1)
    assert found["accuracy"] == pytest.approx(np.mean((scores >= 0.4) == matched))


def test_pair_threshold_balances_the_two_error_rates():
    # Matched pairs score 0.6..0.9, mismatched 0.1..0.7: the best cut lies between 0.6 and the mismatched 0.5.
    scores = [0.9, 0.8, 0.7, 0.6, 0.7, 0.5, 0.3, 0.1, 0.2, 0.1, 0.15, 0.3]
    matched = [True] * 4 + [False] * 8
    threshold = sg.pair_threshold(scores, matched)
    assert threshold == pytest.approx(0.55)
    # Ten times as many mismatched pairs of the same spread: the threshold stays put.
    assert sg.pair_threshold(scores[:4] + scores[4:] * 10, matched[:4] + matched[4:] * 10) == pytest.approx(0.55)


def test_pair_metrics_refuse_one_kind_of_pair_and_bad_flags():
    with pytest.raises(sg.SpacegraphValueError, match="both matched and mismatched"):
        sg.pair_metrics([0.1, 0.2], [True, True])
    with pytest.raises(sg.SpacegraphValueError, match="1-d of one length"):
        sg.pair_threshold([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(sg.SpacegraphTypeError, match="booleans"):
        sg.pair_metrics([0.1, 0.2], [2, 0])
    with pytest.raises(sg.SpacegraphValueError, match="NaN"):
        sg.pair_metrics([float("nan"), 0.2], [True, False])


class LatentSpace(sg.Space):
    """Every modality the same fixed random map of a latent vector: items of one class meet across modalities."""

    def __init__(self, name, modalities, dim, seed):
        super().__init__()
        self.map = torch.randn(8, dim, generator=torch.Generator().manual_seed(seed))
        self.spec = sg.SpaceSpec(
            name=name, modalities=modalities, dim=dim, fingerprint=sg.fingerprint_state_dict({"map": self.map})
        )

    def _encode_batch(self, modality, batch):
        return torch.as_tensor(batch, dtype=torch.float32) @ self.map


def latent_items(n, seed, classes=5):
    centres = torch.randn(classes, 8, generator=torch.Generator().manual_seed(99)) * 2
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=generator)
    return (centres[labels] + 0.35 * torch.randn(n, 8, generator=generator)).numpy(), labels.numpy()


@pytest.fixture(scope="module")
def latent_route(tmp_path_factory):
    """An audio -> image route across a C-MCR bridge, with every modality's data registered."""
    spaces = [LatentSpace("at", ("audio", "text"), 12, seed=1), LatentSpace("ti", ("text", "image"), 14, seed=2)]
    graph = sg.SpaceGraph(spaces, store=sg.FeatureStore(tmp_path_factory.mktemp("store")))
    for seed, modality in enumerate(("audio", "text", "image")):
        graph.add_data(modality, f"{modality}-data", latent_items(150, seed)[0])
    features = graph._link_features("at", "ti", sg.Modality.TEXT)
    config = {"steps": 60, "hidden_dim": 32, "out_dim": 16, "batch_size": 32, "seed": 0}
    graph.train_bridge("at", "ti", overlap="text", features=features, config=config, show_progress_bar=False)
    return graph, graph.connect("audio", "image")


def test_pair_scores_are_the_diagonal_of_the_similarity(latent_route):
    _, route = latent_route
    audio, image = latent_items(20, 7)[0], latent_items(20, 8)[0]
    assert torch.allclose(route.pair_scores(audio, image), route.similarity(audio, image).diagonal(), atol=1e-5)
    with pytest.raises(sg.SpacegraphValueError, match="takes pairs"):
        route.pair_scores(audio, image[:5])


def test_label_free_and_probe_thresholds_tell_matched_pairs_from_mismatched(latent_route):
    graph, route = latent_route
    audio, audio_labels = latent_items(200, 11)
    image, image_labels = latent_items(200, 12)
    scores = route.pair_scores(audio, image)
    matched = audio_labels == image_labels
    probe = sg.Probe("probe", audio[:60], audio_labels[:60], image[:60], image_labels[:60])
    for threshold in (graph.pair_threshold(route), graph.pair_threshold(route, probe)):
        found = sg.pair_metrics(scores, matched, threshold=threshold)
        balanced = (np.mean(scores[matched].numpy() >= threshold) + np.mean(scores[~matched].numpy() < threshold)) / 2
        assert found["ap"] > 0.8 and balanced > 0.8
    lone = sg.SpaceGraph(graph.spaces, graph.bridges)  # no data registered, no store
    with pytest.raises(sg.SpacegraphValueError, match="no label-free threshold.*or pass a probe"):
        lone.pair_threshold(lone.connect("audio", "image"))


# -- zero-shot classification ---------------------------------------------------------------------------------
def test_classify_averages_templates_and_reports_top_k_and_confusion():
    route = sg.SpaceGraph([ColourSpace()]).connect("text", "image")
    names = ["red", "green", "blue"]
    images = [quadrant_image(name, (0, 0), background=name) for name in names] + [
        quadrant_image("red", (0, 0), background="red")
    ]
    labels = [0, 1, 2, 0]
    found = route.classify(images, names, ["a photo of {}", "a {c} thing"])
    assert found.class_names == tuple(names) and found.probabilities.shape == (4, 3)
    assert torch.allclose(found.probabilities.sum(dim=1), torch.ones(4))
    assert found.predicted.tolist() == labels and found.accuracy(labels) == 1.0
    assert found.top_k(5).shape == (4, 3) and found.accuracy([1, 1, 1, 1], k=3) == 1.0
    assert found.confusion_matrix([0, 1, 1, 0]).tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert found.mean_per_class_recall([0, 1, 1, 0]) == pytest.approx(0.75)


def test_classify_through_a_bridge_uses_the_text_tower_of_the_far_space(colour_route):
    sounds = [COLOURS[name] for name in ("blue", "red", "green", "grey")]
    found = colour_route.classify(sounds, ["red", "green", "blue", "grey"], ["a {} thing", "{}"])
    assert found.predicted.tolist() == [2, 0, 1, 3]
    image_space = colour_route.leg("image").space
    names = image_space.encode("text", ["red", "green"])
    expected = (colour_route.encode("audio", sounds) @ colour_route.project("image", names).T / 0.01).softmax(dim=1)
    assert torch.allclose(colour_route.classify(sounds, ["red", "green"]).probabilities, expected, atol=1e-5)
    with pytest.raises(sg.SpacegraphValueError, match="no text tower"):
        sg.SpaceGraph([ColourSpace("ai", ("audio", "image"))]).connect("audio", "image").classify(sounds, ["a", "b"])


def test_classify_refuses_bad_class_names_templates_and_labels():
    route = sg.SpaceGraph([ColourSpace()]).connect("text", "image")
    images = [quadrant_image()]
    with pytest.raises(sg.SpacegraphValueError, match="distinct"):
        route.classify(images, ["red", "red"])
    with pytest.raises(sg.SpacegraphValueError, match="holds '\\{\\}' or '\\{c\\}'"):
        route.classify(images, ["red", "blue"], ["a photo"])
    with pytest.raises(sg.SpacegraphValueError, match="temperature"):
        route.classify(images, ["red", "blue"], temperature=0)
    found = route.classify(images, ["red", "blue"])
    with pytest.raises(sg.SpacegraphValueError, match="index the 2 class names"):
        found.accuracy([2])


def test_an_ensemble_localizes_and_classifies_as_the_weighted_mean_of_its_members(colour_route):
    """Two copies of one route, any weights: every cosine is the members' weighted mean, so the member's own."""
    ensemble = sg.RouteEnsemble([colour_route, colour_route], weights=[0.3, 0.7])
    image, sounds = quadrant_image("blue", (0, 0)), [COLOURS["blue"], COLOURS["grey"]]
    names = ["red", "green", "blue", "grey"]
    heatmap, alone = (
        ensemble.localize([sounds[0]], [image], grid=2)[0],
        colour_route.localize([sounds[0]], [image], grid=2)[0],
    )
    assert torch.allclose(heatmap, alone, atol=1e-5)
    found, single = ensemble.classify(sounds, names), colour_route.classify(sounds, names)
    assert torch.allclose(found.probabilities, single.probabilities, atol=1e-4)
    assert torch.allclose(
        ensemble.pair_scores(sounds, [image, image]), colour_route.pair_scores(sounds, [image, image]), atol=1e-5
    )
