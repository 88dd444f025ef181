"""Media that is silently partial, and paths that are not files: a truncated WAV (its header promises more frames
than the file holds), a truncated image opened lazily, a closed PIL image, and a FIFO, socket or device path
(which would block a reader forever) are each refused, naming the item, by every reader the spaces use."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from spacegraph_spaces.media import load_audio, load_image, load_rgb_image

import spacegraph as sg


def wav(path: Path, frames: int = 1600) -> Path:
    sf.write(path, np.sin(np.arange(frames) / 9).astype("float32") * 0.3, 16000, subtype="PCM_16")
    return path


def truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut-{path.name}")
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


def test_a_truncated_wav_is_refused_with_what_its_header_promised(tmp_path):
    whole = wav(tmp_path / "tone.wav")
    assert load_audio(whole, 16000).shape == (1600,)
    with pytest.raises(sg.SpacegraphValueError, match=r"cut-tone\.wav is truncated: its header promises 1600 frames"):
        load_audio(truncated(whole), 16000, "audio item 3")
    sf.write(tmp_path / "tone.flac", np.zeros(800, "float32"), 16000)  # not a WAV: read as libsndfile reads it
    assert load_audio(tmp_path / "tone.flac", 16000).shape == (800,)


def png(path: Path) -> Path:
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 255).astype("uint8")).save(path)
    return path


@pytest.mark.parametrize("load", [lambda item: load_image(item, 28), load_rgb_image])
def test_truncated_or_closed_pil_images_are_refused(tmp_path, load):
    lazy = Image.open(truncated(png(tmp_path / "digit.png")))  # opened, not yet decoded
    with pytest.raises(sg.SpacegraphValueError, match="cannot be decoded .*truncated"):
        load(lazy)
    closed = Image.open(png(tmp_path / "other.png"))
    closed.load()
    closed.close()
    with pytest.raises(sg.SpacegraphValueError, match="cannot be decoded .*closed"):
        load(closed)
    with pytest.raises(sg.SpacegraphValueError, match="could not read image file .*cut-digit.png"):
        load(tmp_path / "cut-digit.png")


READ_A_FIFO = """
import os, sys
from pathlib import Path
from spacegraph_spaces.media import load_audio, load_image
from spacegraph_spaces.pointcloud_io import load_xyz
fifo = Path(sys.argv[1])  # named .npy, so that the point cloud reader takes it too
os.mkfifo(fifo)
for read in (lambda: load_audio(fifo, 16000), lambda: load_image(fifo, 28), lambda: load_xyz(fifo)):
    try:
        read()
    except ValueError as err:
        print(err)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_before_anything_opens_it(tmp_path):
    fifo = tmp_path / "pipe.npy"
    done = subprocess.run(
        [sys.executable, "-c", READ_A_FIFO, str(fifo)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(
        "pipe.npy is not a regular file (a FIFO, socket or device)" in line for line in lines
    )


READ_FIFOS = """
import os, sys
from pathlib import Path
from spacegraph_spaces.data_files import read_json, read_npz
from spacegraph_spaces.digits import DigitsImageTextSpace
from spacegraph.plugin import load_weights_only
folder = Path(sys.argv[1])
for name in ("data.json", "data.npz", "config.json", "model.safetensors", "ulip.pt"):
    os.mkfifo(folder / name)
reads = (lambda: read_json(folder / "data.json"), lambda: read_npz(folder / "data.npz", ["a"]),
         lambda: DigitsImageTextSpace(folder), lambda: load_weights_only(folder / "ulip.pt", "ULIP checkpoint"))
for read in reads:
    try:
        read()
    except (ValueError, FileNotFoundError) as err:
        print(type(err).__name__, err)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_data_weight_and_checkpoint_readers_refuse_a_fifo(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", READ_FIFOS, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all("regular file" in line for line in lines), lines
