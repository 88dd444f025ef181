"""The two shipped shape spaces and their data helpers: loading, rendering, input handling, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from spacegraph_spaces import shapes_data
from spacegraph_spaces.shapes import ShapesImageTextSpace, ShapesPointImageSpace

from spacegraph import Modality

torch.set_num_threads(2)
DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def box(n: int = 1024, seed: int = 0) -> np.ndarray:
    """Points on the surface of a 2 x 1 x 0.5 box."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(3, size=n)
    points[np.arange(n), axis] = np.sign(points[np.arange(n), axis])
    return points * np.array([1.0, 0.5, 0.25])


def sphere(n: int = 1024, seed: int = 1) -> np.ndarray:
    points = np.random.default_rng(seed).normal(size=(n, 3))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def cylinder(n: int = 1024, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle, z = rng.uniform(0, 2 * np.pi, n), rng.uniform(-1, 1, n)
    return np.stack([0.4 * np.cos(angle), 0.4 * np.sin(angle), z], axis=1)


@pytest.fixture(scope="module")
def point_space() -> ShapesPointImageSpace:
    return ShapesPointImageSpace()


@pytest.fixture(scope="module")
def text_space() -> ShapesImageTextSpace:
    return ShapesImageTextSpace()


@pytest.fixture(scope="module")
def clouds() -> list[np.ndarray]:
    return [box(), sphere(), cylinder()]


def test_specs(point_space, text_space):
    assert point_space.spec.name == "shapes-3d-image" and point_space.spec.dim == 64
    assert point_space.modalities == (Modality.POINT_CLOUD, Modality.IMAGE)
    assert text_space.spec.name == "shapes-image-text" and text_space.spec.dim == 96
    assert text_space.modalities == (Modality.IMAGE, Modality.TEXT)
    assert point_space.spec.normalized and text_space.spec.normalized
    assert point_space.spec.fingerprint.startswith("sha256:")
    assert point_space.spec.fingerprint != text_space.spec.fingerprint
    assert ShapesPointImageSpace().spec.fingerprint == point_space.spec.fingerprint


def test_render_depth(clouds):
    image = shapes_data.render_depth(clouds[0])
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert image.min() == 0.0 and 0.0 < image.max() <= 1.0
    assert 0.05 < (image > 0).mean() < 0.9
    np.testing.assert_array_equal(shapes_data.render_depth(clouds[0]), image)
    batch = shapes_data.render_depth(np.stack(clouds), size=24)
    assert batch.shape == (3, 24, 24)
    np.testing.assert_array_equal(batch[1], shapes_data.render_depth(clouds[1], size=24))
    np.testing.assert_allclose(shapes_data.render_depth(clouds[0] * 5 + 3), image, atol=1e-5)


def test_normalize_cloud(clouds):
    unit = shapes_data.normalize_cloud(clouds[0])
    assert np.isclose(np.linalg.norm(unit, axis=1).max(), 1.0, atol=1e-5)
    np.testing.assert_allclose(shapes_data.normalize_cloud(clouds[0] * 0.01 - 7), unit, atol=1e-4)
    np.testing.assert_allclose(shapes_data.normalize_cloud(np.stack(clouds))[0], unit, atol=1e-6)


def test_train_halves():
    labels = np.repeat(np.arange(4), [10, 21, 6, 33])
    a, b = shapes_data.train_halves(labels, seed=3)
    assert not set(a) & set(b) and sorted([*a, *b]) == list(range(len(labels)))
    assert np.abs(np.bincount(labels[a]) - np.bincount(labels[b])).max() <= 1
    a2, b2 = shapes_data.train_halves(labels, seed=3)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_missing_data_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="SPACEGRAPH_DATA"):
        shapes_data.modelnet10_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="oewn"):
        shapes_data.shape_texts_from_oewn(tmp_path)


def test_shipped_texts():
    rows = shapes_data.load_shape_texts()
    assert {r["label"] for r in rows} == set(range(10))
    assert {r["source"] for r in rows} <= {"member", "definition", "example", "template"}
    assert len({r["text"] for r in rows}) == len(rows)
    night_stand = {r["text"] for r in rows if r["label"] == shapes_data.CLASSES.index("night_stand")}
    assert {"stand", "night stand"} <= night_stand
    assert len(shapes_data.class_prompts()) == 10 and "a night stand" in shapes_data.class_prompts()


def test_cloud_inputs_agree(point_space, clouds, tmp_path):
    np.save(tmp_path / "box.npy", clouds[0])
    moved = clouds[0] * 3.0 + np.array([10.0, -4.0, 2.0])
    out = point_space.encode(
        "point_cloud", [clouds[0], torch.from_numpy(clouds[0]), tmp_path / "box.npy", moved, clouds[0][:, [0, 1, 2, 0]]]
    )
    assert out.shape == (5, 64)
    for row in out[1:]:
        torch.testing.assert_close(row, out[0], atol=1e-4, rtol=0)


def test_any_point_count(point_space, clouds):
    out = point_space.encode("point_cloud", [box(300), box(5000)])
    assert out.shape == (2, 64) and torch.isfinite(out).all()


def test_batch_independent(point_space, text_space, clouds):
    together = point_space.encode("point_cloud", clouds)
    alone = torch.cat([point_space.encode("point_cloud", [c]) for c in clouds])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    renders = list(shapes_data.render_depth(np.stack(clouds)))
    together = text_space.encode("image", renders, batch_size=2)
    alone = torch.cat([text_space.encode("image", [r]) for r in renders])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_image_inputs_agree(text_space, clouds, tmp_path):
    render = shapes_data.render_depth(clouds[0])
    as_uint8 = np.round(render * 255).astype(np.uint8)
    Image.fromarray(as_uint8).save(tmp_path / "box.png")
    out = text_space.encode("image", [render, torch.from_numpy(render), as_uint8, tmp_path / "box.png"])
    for row in out[1:]:
        assert float(row @ out[0]) > 0.99


def test_text(text_space):
    out = text_space.encode("text", shapes_data.class_prompts())
    assert out.shape == (10, 96)
    assert torch.allclose(out.norm(dim=1), torch.ones(10))
    assert (out @ out.T - torch.eye(10)).max() < 0.999


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        ([np.full((100, 3), np.nan)], ValueError, "NaN"),
        ([np.zeros((100, 2))], ValueError, "columns"),
        ([np.zeros(30)], ValueError, "not one point cloud"),
        ([np.zeros((0, 3))], ValueError, "no points"),
        (["missing.ply"], FileNotFoundError, "missing.ply"),
        (["cloud.xyz"], ValueError, "extension"),
        ([{"x": 1}], TypeError, "not supported"),
    ],
)
def test_bad_clouds(point_space, inputs, error, match):
    with pytest.raises(error, match=match):
        point_space.encode("point_cloud", inputs)


def test_bad_inputs(point_space, text_space):
    with pytest.raises(ValueError, match="does not embed 'text'"):
        point_space.encode("text", ["a chair"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        text_space.encode("image", [np.full((32, 32), 2.0, dtype=np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        text_space.encode("image", [np.full((32, 32), np.nan, dtype=np.float32)])
    with pytest.raises(TypeError, match="must be str"):
        text_space.encode("text", ["a chair", 3])
    with pytest.raises(ValueError, match="empty"):
        text_space.encode("text", ["  "])
    with pytest.raises(ValueError, match="no word characters"):
        text_space.encode("text", ["?!"])


@pytest.mark.slow
def test_zero_shot_on_test_renders(text_space):
    if not (DATA / "modelnet10" / "modelnet10_1024.npz").exists():
        pytest.skip(f"ModelNet10 not found under {DATA}; set SPACEGRAPH_DATA")
    split = shapes_data.modelnet10_split(DATA)
    pick = np.random.default_rng(0).choice(len(split["test_labels"]), 300, replace=False)
    images = text_space.encode("image", shapes_data.render_depth(split["test_points"][pick]))
    prompts = text_space.encode("text", shapes_data.class_prompts())
    accuracy = float(((images @ prompts.T).argmax(dim=1).numpy() == split["test_labels"][pick]).mean())
    assert accuracy > 0.7
