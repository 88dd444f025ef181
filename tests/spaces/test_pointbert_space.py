"""The ULIP-2 Point-BERT point-cloud space: checkpoint layout and loading, invariances, file readers, bad inputs."""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from spacegraph_spaces.pointbert import PointBertConfig, PointBertModel, PointBertSpace, farthest_point_sample
from spacegraph_spaces.pointcloud_io import POINT_CLOUD_ACCEPTED, load_xyz

import spacegraph as sg
from spacegraph._atomic import OWNERSHIP

try:
    import plyfile
except ImportError:  # the pointcloud extra is not installed: only the .ply tests skip
    plyfile = None
needs_plyfile = pytest.mark.skipif(plyfile is None, reason='.ply needs plyfile: pip install "spacegraph[pointcloud]"')
needs_pypcd4 = pytest.mark.skipif(
    importlib.util.find_spec("pypcd4") is None, reason='.pcd needs pypcd4: pip install "spacegraph[pointcloud]"'
)

DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
TINY = {"depth": 2, "trans_dim": 32, "num_heads": 2, "num_group": 16, "group_size": 8, "npoints": 256, "embed_dim": 16}


@pytest.fixture(scope="module")
def space():
    return PointBertSpace(config=TINY, seed=1)


def cloud(n: int = 300, seed: int = 0, columns: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, columns)).astype(np.float32)


def encode(space, *clouds, **kwargs):
    return space.encode("point_cloud", list(clouds), **kwargs)


# ---------------------------------------------------------------- layout and checkpoints


def test_default_config_has_ulip2_pointbert_names_and_shapes():
    """Names and shapes of ULIP's models/pointbert/point_encoder.py (PointTransformer) + ULIP_models.py."""
    with torch.device("meta"):
        state = PointBertModel(PointBertConfig()).state_dict()
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = {"pc_projection", "point_encoder.cls_token", "point_encoder.cls_pos"}
    for conv in ("first_conv", "second_conv"):
        expected |= {f"point_encoder.encoder.{conv}.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
        expected |= {f"point_encoder.encoder.{conv}.1.{p}" for p in bn}
    for layer in ("reduce_dim", "pos_embed.0", "pos_embed.2", "norm"):
        expected |= {f"point_encoder.{layer}.weight", f"point_encoder.{layer}.bias"}
    for i in range(12):
        block = f"point_encoder.blocks.blocks.{i}"
        expected.add(f"{block}.attn.qkv.weight")  # qkv_bias=False in Point-BERT
        for layer in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"{block}.{layer}.weight", f"{block}.{layer}.bias"}
    assert set(state) == expected and len(state) == 161
    shapes = {
        "pc_projection": (768, 512),
        "point_encoder.cls_token": (1, 1, 384),
        "point_encoder.encoder.first_conv.0.weight": (128, 3, 1),
        "point_encoder.encoder.second_conv.0.weight": (512, 512, 1),
        "point_encoder.encoder.second_conv.3.weight": (256, 512, 1),
        "point_encoder.reduce_dim.weight": (384, 256),
        "point_encoder.pos_embed.0.weight": (128, 3),
        "point_encoder.blocks.blocks.11.attn.qkv.weight": (1152, 384),
        "point_encoder.blocks.blocks.11.mlp.fc1.weight": (1536, 384),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes


def test_save_load_round_trip_is_exact(space, tmp_path):
    folder = space.save(tmp_path / "pb")
    assert sorted(p.name for p in folder.iterdir()) == [OWNERSHIP, "config.json", "model.safetensors"]
    again = PointBertSpace(folder)
    assert again.spec == space.spec and again.config == space.config
    clouds = [cloud(300), cloud(100, seed=1)]
    assert torch.equal(encode(again, *clouds), encode(space, *clouds))
    assert PointBertSpace(folder, name="renamed").spec.name == "renamed"
    with pytest.raises(ValueError, match="its config comes from its config.json"):
        PointBertSpace(folder, config=TINY)


def test_saved_folder_errors(space, tmp_path):
    folder = space.save(tmp_path / "pb")
    space.save(folder)  # replacing a saved space is fine
    (folder / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a valid saved PointBertSpace.*format 'other'"):
        PointBertSpace(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid saved PointBertSpace"):
        PointBertSpace(folder)
    with pytest.raises(sg.SaveRefusedError, match=r"\(config.json\).*overwrite=True"):  # edited since it was saved
        space.save(folder)
    space.save(folder, overwrite=True)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid saved PointBertSpace"):
        PointBertSpace(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        PointBertSpace(folder)


class NotAllowed:
    """Any class outside torch's weights_only allowlist."""


def ulip_checkpoint(space, path: Path, extra: dict | None = None, drop: str | None = None) -> Path:
    """A checkpoint laid out as ULIP saves it: DDP ``module.`` keys beside the frozen CLIP towers, plus ``args``."""
    state = {f"module.{k}": v for k, v in space.model.state_dict().items() if k != drop}
    state |= {"module.logit_scale": torch.tensor(2.6), "module.visual.head.weight": torch.zeros(2, 2)}
    state |= extra or {}
    args = argparse.Namespace(model="ULIP_PointBERT", npoints=8192, betas=(0.9, 0.98))
    torch.save({"state_dict": state, "args": args, "epoch": 3}, path)
    return path


def test_ulip_checkpoint_loads_with_weights_only(space, tmp_path):
    loaded = PointBertSpace.from_ulip_checkpoint(ulip_checkpoint(space, tmp_path / "ulip.pt"), TINY, name="ulip2")
    assert loaded.spec.fingerprint == space.spec.fingerprint and loaded.spec.name == "ulip2"
    clouds = [cloud(300), cloud(500, seed=2)]
    assert torch.equal(encode(loaded, *clouds), encode(space, *clouds))
    bare = tmp_path / "bare.pt"
    torch.save(space.model.state_dict(), bare)
    assert PointBertSpace(bare, config=TINY).spec.fingerprint == space.spec.fingerprint


def test_ulip_checkpoint_errors(space, tmp_path):
    missing = ulip_checkpoint(space, tmp_path / "a.pt", drop="point_encoder.norm.bias")
    with pytest.raises(ValueError, match=r"missing 1 \(point_encoder.norm.bias\), unexpected 0"):
        PointBertSpace.from_ulip_checkpoint(missing, TINY)
    extra = ulip_checkpoint(
        space, tmp_path / "b.pt", {"module.point_encoder.cls_head_finetune.0.weight": torch.zeros(1)}
    )
    with pytest.raises(ValueError, match=r"unexpected 1 \(point_encoder.cls_head_finetune.0.weight\)"):
        PointBertSpace.from_ulip_checkpoint(extra, TINY)
    with pytest.raises(ValueError, match="shapes differ from the config.*pass a config= matching it"):
        PointBertSpace.from_ulip_checkpoint(ulip_checkpoint(space, tmp_path / "c.pt"), {**TINY, "embed_dim": 8})
    colour = space.model.state_dict()["point_encoder.encoder.first_conv.0.weight"].repeat(1, 2, 1)
    coloured = ulip_checkpoint(space, tmp_path / "d.pt", {"module.point_encoder.encoder.first_conv.0.weight": colour})
    with pytest.raises(ValueError, match=r"xyz\+rgb \(6-channel\) checkpoints are not supported"):
        PointBertSpace.from_ulip_checkpoint(coloured, TINY)
    torch.save({"state_dict": {"visual.w": torch.zeros(1)}}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"no point_encoder.\* or pc_projection entries \(keys: visual.w\)"):
        PointBertSpace.from_ulip_checkpoint(tmp_path / "e.pt", TINY)
    torch.save({"state_dict": space.model.state_dict(), "thing": NotAllowed()}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="weights_only=True.*NotAllowed"):
        PointBertSpace.from_ulip_checkpoint(tmp_path / "f.pt", TINY)
    (tmp_path / "g.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not load .*g.pt"):
        PointBertSpace.from_ulip_checkpoint(tmp_path / "g.pt", TINY)
    with pytest.raises(FileNotFoundError, match="ULIP checkpoint not found"):
        PointBertSpace.from_ulip_checkpoint(tmp_path / "nope.pt", TINY)
    with pytest.raises(ValueError, match="is a folder"):
        PointBertSpace.from_ulip_checkpoint(tmp_path, TINY)


def test_config_is_checked():
    with pytest.raises(ValidationError, match="dept"):
        PointBertConfig(dept=3)
    with pytest.raises(ValidationError, match="multiple of num_heads"):
        PointBertConfig(trans_dim=30, num_heads=4)
    with pytest.raises(ValidationError, match="must be <= npoints"):
        PointBertConfig(npoints=256)


def test_registered_as_a_plugin():
    space = sg.load_space("pointbert", config=TINY)
    assert space.spec.modalities == (sg.Modality.POINT_CLOUD,) and space.spec.dim == 16


# ---------------------------------------------------------------- invariances


def test_embedding_ignores_pose_scale_order_and_batch(space):
    base = cloud(300)
    ref = encode(space, base)
    torch.testing.assert_close(encode(space, base * 7.5 + np.array([100.0, -3.0, 20.0])), ref, atol=1e-5, rtol=0)
    shuffled = base[np.random.default_rng(1).permutation(len(base))]
    torch.testing.assert_close(encode(space, shuffled), ref, atol=1e-5, rtol=0)
    batch = [cloud(80, seed=3), base, cloud(1000, seed=4)]
    torch.testing.assert_close(encode(space, *batch)[1:2], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(space, *batch, batch_size=1), encode(space, *batch), atol=1e-5, rtol=0)
    with_colours = np.concatenate([base, np.random.default_rng(5).uniform(size=(300, 3))], axis=1)
    assert torch.equal(encode(space, with_colours), ref)  # extra columns are ignored
    assert torch.equal(space.encode("point_cloud", base[None]), ref)  # a [B, N, 3] array is a batch


def test_farthest_point_sampling_is_deterministic_and_spread():
    xyz = torch.from_numpy(cloud(500))[None]
    idx = farthest_point_sample(xyz, 20)[0]
    assert len(set(idx.tolist())) == 20
    assert idx[0] == (xyz[0] - xyz[0].mean(0)).norm(dim=1).argmax()  # starts farthest from the centroid
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(perm[farthest_point_sample(xyz[:, perm], 20)[0]], idx)


def test_small_clouds_are_repeated_up_to_npoints(space):
    tiny_cloud = cloud(7)
    out = encode(space, tiny_cloud, cloud(256), cloud(2))
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(encode(space, np.tile(tiny_cloud, (3, 1))), out[:1], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- files


def write_ply(path: Path, xyz: np.ndarray, text: bool) -> Path:
    vertex = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1")])
    vertex["x"], vertex["y"], vertex["z"], vertex["red"] = *xyz.T, 7
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=text).write(str(path))
    return path


def write_off(path: Path, xyz: np.ndarray, glued: bool) -> Path:
    header = f"OFF{len(xyz)} 1 0\n" if glued else f"# made by a test\nCOFF\n{len(xyz)} 1 0\n"
    rows = "".join(f"{x!r} {y!r} {z!r} 255 0 0 255\n" for x, y, z in xyz.tolist())
    path.write_text(header + rows + "3 0 1 2\n")
    return path


def write_pcd(path: Path, xyz: np.ndarray, kind: str) -> Path:
    """x y z as F4 plus an rgb U4 and a 2-count normal, in one of the three DATA kinds."""
    n = len(xyz)
    header = (
        f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y rgb z normal\nSIZE 4 4 4 4 4\nTYPE F F U F F\nCOUNT 1 1 1 1 2\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n"
    ).encode()
    record = np.dtype([("x", "<f4"), ("y", "<f4"), ("rgb", "<u4"), ("z", "<f4"), ("normal", "<f4", (2,))])
    data = np.zeros(n, dtype=record)
    data["x"], data["y"], data["z"], data["rgb"], data["normal"] = *xyz.T, 0xFF0000, 0.5
    if kind == "ascii":
        rows = "".join(f"{x!r} {y!r} 16711680 {z!r} 0.5 0.5\n" for x, y, z in xyz.astype(np.float64).tolist())
        body = rows.encode()
    elif kind == "binary":
        body = data.tobytes()
    else:
        flat = b"".join(np.ascontiguousarray(data[name]).tobytes() for name in record.names)
        packed = pytest.importorskip("lzf").compress(flat)  # pypcd4's own LZF codec
        body = np.array([len(packed), len(flat)], "<u4").tobytes() + packed
    path.write_bytes(header + body)
    return path


def test_file_readers_equal_the_array(space, tmp_path):
    xyz = cloud(64, seed=7)
    np.save(tmp_path / "c.npy", np.concatenate([xyz, np.ones((64, 3), np.float32)], axis=1))
    files = [
        tmp_path / "c.npy",
        write_off(tmp_path / "c.off", xyz, glued=False),
        write_off(tmp_path / "modelnet.off", xyz, glued=True),
    ]
    for path in files:
        np.testing.assert_array_equal(load_xyz(path), xyz.astype(np.float64), err_msg=str(path))
    assert torch.equal(encode(space, files[0], str(files[-1])), encode(space, xyz, xyz))
    assert torch.equal(encode(space, torch.from_numpy(xyz)), encode(space, xyz))
    np.testing.assert_array_equal(load_xyz(torch.from_numpy(xyz).bfloat16()), torch.from_numpy(xyz).bfloat16().double())
    with open(tmp_path / "archive.npy", "wb") as f:
        np.savez(f, xyz)
    with pytest.raises(
        ValueError, match=r"could not read point cloud file .*archive.npy \(the magic string is not correct"
    ):
        load_xyz(tmp_path / "archive.npy")


@needs_plyfile
def test_ply_reader_equals_the_array(space, tmp_path):
    xyz = cloud(50)
    for path in (write_ply(tmp_path / "text.ply", xyz, text=True), write_ply(tmp_path / "bin.PLY", xyz, text=False)):
        np.testing.assert_array_equal(load_xyz(path), xyz.astype(np.float64))
        assert torch.equal(encode(space, path), encode(space, xyz))


@needs_pypcd4
def test_pcd_reader_equals_the_array(space, tmp_path):
    xyz = np.round(cloud(64, seed=7), 2)  # rounded and repeated: LZF gets back-references to encode
    xyz[32:] = xyz[:32]
    for kind in ("ascii", "binary", "binary_compressed"):
        path = write_pcd(tmp_path / f"{kind}.pcd", xyz, kind)
        np.testing.assert_array_equal(load_xyz(path), xyz.astype(np.float64), err_msg=kind)
        assert torch.equal(encode(space, str(path)), encode(space, xyz))


@needs_pypcd4
def test_pcd_drops_nan_points(tmp_path):
    xyz = cloud(10)
    xyz[3] = np.nan
    np.testing.assert_array_equal(load_xyz(write_pcd(tmp_path / "c.pcd", xyz, "binary")), np.delete(xyz, 3, axis=0))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        (np.zeros((10, 2)), ValueError, "2 columns; a point cloud needs x, y, z"),
        (np.zeros((0, 3)), ValueError, "the point cloud has no points"),
        (np.zeros((2, 5, 3)), ValueError, r"shape \[2, 5, 3\] is not one point cloud"),
        (np.array([["a", "b", "c"]]), TypeError, "must be numeric"),
        (np.full((10, 3), 2.0), ValueError, "all 10 points coincide"),
        (np.ones((1, 3)), ValueError, "all 1 points coincide"),
        (42, TypeError, "point cloud item of type int is not supported"),
        (Path("cloud.xyz"), ValueError, r"unsupported point cloud file extension '.xyz'"),
        (Path("/nonexistent/cloud.ply"), FileNotFoundError, "point cloud file not found"),
    ],
)
def test_bad_items_fail_clearly(space, item, error, message):
    with pytest.raises(error, match=message):
        encode(space, item)


def test_non_finite_and_unbatched_inputs(space):
    bad = cloud(20)
    bad[[4, 9], 1] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=r"2 points have NaN or inf coordinates \(first rows: \[4, 9\]\)"):
        encode(space, bad)
    with pytest.raises(ValueError, match=r"shape \[3\] is not one point cloud.*pass a list \[cloud\]"):
        space.encode("point_cloud", cloud(20))  # one cloud passed as the batch: its rows are the items
    with pytest.raises(ValueError, match="does not embed 'image'"):
        space.encode("image", [cloud(20)])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param(
            "bad.ply",
            b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n",
            "could not read",
            marks=needs_plyfile,
        ),
        pytest.param(
            "face.ply",
            b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n",
            "no 'vertex' element",
            marks=needs_plyfile,
        ),
        pytest.param(
            "xy.ply",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n",
            r"lacks \['z'\]",
            marks=needs_plyfile,
        ),
        ("bad.off", b"OFF\n3 1 0\n0 0 0\n1 1 1\n", "the header says 3 vertices"),
        ("short.off", b"OFF\n2 0 0\n0 0\n1 1 1\n", "fewer than 3 coordinates"),
        ("mesh.off", b"PLY\n", "not an OFF file"),
        ("bin.off", b"OFF BINARY\n", "binary OFF is not supported"),
        ("four.off", b"4OFF\n1 0 0\n0 0 0 1\n", "4-D or n-D vertices"),
        ("bad.npy", b"\x93NUMPY garbage", "could not read point cloud file"),
        pytest.param(
            "noxyz.pcd",
            b"FIELDS x y\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2\n",
            r"no \['z'\] fields",
            marks=needs_pypcd4,
        ),
        *(
            pytest.param(name, content, "could not read point cloud file", marks=needs_pypcd4)
            for name, content in [
                ("short.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 5\nDATA binary\n\x00\x00"),
                ("rows.pcd", b"FIELDS x y z\nPOINTS 3\nDATA ascii\n1 2 3\n"),
                ("kind.pcd", b"FIELDS x y z\nPOINTS 1\nDATA zip\n"),
                ("nodata.pcd", b"FIELDS x y z\nPOINTS 1\n"),
            ]
        ),
    ],
)
def test_corrupt_files_fail_clearly(space, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        encode(space, path)
    assert str(path) in str(info.value) and POINT_CLOUD_ACCEPTED in str(info.value)


def test_folder_is_not_a_cloud(space, tmp_path):
    (tmp_path / "d.ply").mkdir()
    with pytest.raises(ValueError, match="is a folder, not a point cloud file"):
        encode(space, tmp_path / "d.ply")


def test_ply_without_plyfile_names_the_extra(space, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plyfile", None)  # import plyfile now raises ImportError
    path = tmp_path / "c.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    with pytest.raises(ImportError, match=r'pip install "spacegraph\[pointcloud\]"'):
        encode(space, path)


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not (DATA / "modelnet10").is_dir(), reason=f"ModelNet10 not found at {DATA}; set SPACEGRAPH_DATA")
def test_real_modelnet10_clouds_encode(space):
    with np.load(DATA / "modelnet10" / "modelnet10_1024.npz") as data:
        points = data["points"][:3]
    out = space.encode("point_cloud", points)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(encode(space, points[0] * 0.01 - 5), out[:1], atol=1e-5, rtol=0)


def test_weights_with_nan_are_refused_from_a_folder_and_a_checkpoint(space, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = space.save_pretrained(tmp_path / "saved")
    state = load_file(str(folder / "model.safetensors"))
    key = sorted(state)[3]
    state[key] = state[key].clone().fill_(float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(sg.SpacegraphValueError, match=rf"saved: {key} contains NaN or inf"):
        PointBertSpace.from_pretrained(folder)
    poisoned = ulip_checkpoint(space, tmp_path / "nan.pt", {f"module.{key}": state[key]})
    with pytest.raises(sg.SpacegraphValueError, match=rf"nan\.pt: {key} contains NaN or inf"):
        PointBertSpace.from_ulip_checkpoint(poisoned, TINY)
