"""Extraction throughput from files on disk: images/s and clips/s of real decoding and preprocessing, alone and with
a real-size model (random weights), in the main process vs in DataLoader worker processes (``Space.encode(...,
num_workers=N)``), and ``spacegraph extract`` in 1 vs 2 processes under torchrun.

Inputs are written to a temp folder from the shared data: MNIST digits as 224x224 PNGs (bilinear upscale) and FSDD
spoken digits as WAV files (8 kHz, resampled by the spaces: to 48 kHz for CLAP). Models: open_clip ``ViT-B-32``
with ``pretrained=None`` and transformers ``ClapModel(ClapConfig())`` (HTSAT-tiny + roberta-base, LAION's 10 s
48 kHz extractor, built as ``throughput_clap.py`` builds it). "decode" rows time the spaces' CPU half alone (their
``_prepare_batch``; the model replaced by zeros): the rate the input pipeline can feed a model. The torchrun rows run
``spacegraph extract`` on the shipped digit spaces (the CLI builds a registered space by name, without arguments),
whose models are small, so decoding dominates; each process has one torch thread.

    python benchmarks/scripts/extract.py --json runs/extract.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image
from spacegraph_spaces import digits_data
from spacegraph_spaces.openclip import OpenCLIPSpace
from throughput_clap import LAION_EXTRACTOR, hf_clap

from spacegraph import Space
from spacegraph.plugin import write_text_atomic

DATA = Path(__file__).resolve().parents[1] / "../shared/data"


def write_pngs(folder: Path, n: int, data: Path) -> list[str]:
    """The first ``n`` MNIST digits as 224x224 grayscale PNG files."""
    folder.mkdir(parents=True)
    images = np.load(data / "mnist5k" / "mnist5k.npz")["images"][:n]
    paths = [folder / f"{i:05d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR).save(path)
    return [str(path) for path in paths]


def write_wavs(folder: Path, n: int, data: Path) -> list[str]:
    """The first ``n`` FSDD recordings (sorted by name) as WAV files."""
    folder.mkdir(parents=True)
    recordings = sorted((data / "fsdd" / "recordings").glob("*.wav"))[:n]
    for recording in recordings:
        shutil.copyfile(recording, folder / recording.name)
    return [str(folder / recording.name) for recording in recordings]


class DecodeOnly(Space):
    """A space's CPU half alone (reading, decoding, preprocessing), its model replaced by zeros."""

    def __init__(self, space: Space) -> None:
        super().__init__()
        self.space, self.spec = space, space.spec

    def _prepare_batch(self, modality: Any, batch: Any) -> tuple[int, Any]:
        return len(batch), self.space._prepare_batch(modality, batch)

    def _encode_prepared(self, modality: Any, prepared: tuple[int, Any]) -> torch.Tensor:
        return torch.ones(prepared[0], self.spec.dim)


def timed(
    space: Space, modality: str, files: list[str], *, label: str, stage: str, threads: int, **options: Any
) -> dict:
    """Items per second of one ``space.encode(modality, files, **options)`` call with ``threads`` torch threads in
    this process (after a one-batch warm-up)."""
    torch.set_num_threads(threads)
    space.encode(modality, files[: options["batch_size"]], batch_size=options["batch_size"])
    start = time.perf_counter()
    space.encode(modality, files, **options)
    seconds = time.perf_counter() - start
    row = {
        "stage": stage,
        "space": label,
        "modality": modality,
        "items": len(files),
        **options,
        "threads": threads,
        "seconds": round(seconds, 3),
        "items_per_second": round(len(files) / seconds, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def in_process_vs_workers(space: Space, modality: str, files: list[str], n_model: int, args: argparse.Namespace,
                          label: str) -> list[dict]:  # fmt: skip
    """Decode-only rates in this process (``args.threads`` and 1 torch thread) and in ``args.workers`` workers, then
    end-to-end rates with 0 and ``args.workers`` workers."""
    decode, rows = DecodeOnly(space), []
    for workers, threads in ((0, args.threads), (0, 1), (args.workers, args.threads)):
        options = {"batch_size": args.batch_size, "num_workers": workers}
        rows.append(timed(decode, modality, files, label=label, stage="decode", threads=threads, **options))
    for workers in (0, args.workers):
        options = {"batch_size": args.batch_size, "num_workers": workers, "precision": args.precision}
        rows.append(
            timed(space, modality, files[:n_model], label=label, stage="decode+model", threads=args.threads, **options)
        )
    return rows


def torchrun_extract(space: str, modality: str, folder: Path, nproc: int, tmp: Path, args: argparse.Namespace) -> dict:
    """``spacegraph extract`` under ``torchrun --standalone --nproc-per-node nproc`` into a fresh store."""
    record = tmp / f"extract-{space}-{nproc}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "spacegraph.cli", "extract", "--space", space, "--modality", modality, "--inputs", str(folder),
        "--dataset", "bench", "--store", str(tmp / f"store-{space}-{nproc}"), "--batch-size", str(args.batch_size),
        "--num-workers", "0", "--json", str(record),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    extracted = json.loads(record.read_text())
    row = {
        "stage": "spacegraph extract",
        "space": space,
        "modality": modality,
        "items": extracted["n_items"],
        "processes": nproc,
        "threads_per_process": int(env["OMP_NUM_THREADS"]),
        "encode_seconds": round(extracted["seconds"], 3),
        "items_per_second": round(extracted["items_per_second"], 2),
        "wall_seconds_with_startup": round(wall, 3),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="runs/extract.json")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding mnist5k/ and fsdd/")
    parser.add_argument("--images", type=int, default=256, help="PNG files to decode")
    parser.add_argument("--model-images", type=int, default=32, help="of which encoded by ViT-B/32")
    parser.add_argument("--clips", type=int, default=64, help="WAV files to decode")
    parser.add_argument("--extract-images", type=int, default=2048, help="PNG files for `spacegraph extract`")
    parser.add_argument("--extract-clips", type=int, default=1024, help="WAV files for `spacegraph extract`")
    parser.add_argument("--model-clips", type=int, default=16, help="of which encoded by CLAP")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (compared with 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    parser.add_argument("--no-torchrun", action="store_true", help="skip the `spacegraph extract` runs")
    parser.add_argument("--device", default="cpu", help="where the real-size models run (e.g. cuda)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast of the models")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pngs = write_pngs(tmp / "png", max(args.images, args.extract_images), args.data)
        wavs = write_wavs(tmp / "wav", max(args.clips, args.extract_clips), args.data)
        clip = OpenCLIPSpace("ViT-B-32").to(args.device)
        rows += in_process_vs_workers(
            clip, "image", pngs[: args.images], args.model_images, args, "openclip ViT-B-32 (random)"
        )
        del clip
        texts = [row["text"] for row in digits_data.load_digit_texts()]
        clap = hf_clap(tmp / "clap", transformers.ClapConfig(), LAION_EXTRACTOR, texts).to(args.device)
        rows += in_process_vs_workers(
            clap, "audio", wavs[: args.clips], args.model_clips, args, "hf-clap htsat-unfused (random)"
        )
        del clap
        if not args.no_torchrun:
            for space, modality, folder in (
                ("digits-image-text", "image", "png"),
                ("digits-audio-text", "audio", "wav"),
            ):
                rows += [torchrun_extract(space, modality, tmp / folder, nproc, tmp, args) for nproc in (1, 2)]
    write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
