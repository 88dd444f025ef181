"""The ``spacegraph`` command: ``demo``, ``bench digits|multihop|modelnet10|hard|quality``, ``list``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._atomic import write_text_atomic
from ._errors import SpacegraphValueError

DEFAULT_DATA = os.environ.get("SPACEGRAPH_DATA", "../shared/data")


def _check_writable(path: Path, option: str, *, folder: bool) -> None:
    """Refuse, before any work, an output that cannot be written: a file where a folder must be (at the path or
    above it), a folder where a file must be, or a folder where no file can be created."""
    if not folder and path.is_dir():
        raise SpacegraphValueError(f"{option} {path} is a folder; give the path of a file to write")
    target = path if folder else path.parent
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    if not existing.is_dir():
        raise SpacegraphValueError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise SpacegraphValueError(f"{option} {path}: cannot write in {existing} ({err.strerror or err})") from err


def _demo(args: argparse.Namespace) -> int:
    _check_writable(Path(args.out), "--out", folder=True)
    import spacegraph as sg

    from .bench import digits

    data = digits.shipped_data()
    record = digits.run(data, args.out, ablations=args.ablations, progress=not args.quiet)
    print(digits.summary(record))
    bridge = sg.Bridge.load(record["bridge_path"])
    graph = sg.SpaceGraph([sg.load_space(digits.AUDIO_SPACE), sg.load_space(digits.IMAGE_SPACE)], [bridge])
    route = graph.connect("audio", "image")
    scores = route.similarity(data.audio_queries[:3], data.image_gallery)
    print(f"\n{route}")
    for path, row in zip(data.audio_queries[:3], scores):
        top = data.image_gallery_labels[row.topk(5).indices.numpy()].tolist()
        print(f"  {Path(path).name}: digits of the top-5 images {top}")
    print(f"\nbridge saved at {record['bridge_path']}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/bench-{args.name}")
    _check_writable(out, "--out", folder=True)
    if args.json:
        _check_writable(Path(args.json), "--json", folder=False)
    bench = importlib.import_module(f"spacegraph.bench.{args.name}")
    options: dict[str, Any] = {"progress": not args.quiet}
    if args.name == "hard":
        options["seeds"] = tuple(args.seed + offset for offset in range(3))
    elif args.name != "quality":
        options["config"] = {"seed": args.seed}
    if args.name in ("digits", "hard"):
        options["ablations"] = not args.no_ablations
    record = bench.bench(args.data, out, **options)
    print(bench.summary(record))
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def _list(_: argparse.Namespace) -> int:
    import spacegraph as sg

    print("spaces:        ", ", ".join(sg.list_spaces()) or "(none)")
    print("bridge methods:", ", ".join(sg.list_bridge_methods()) or "(none)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spacegraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="connect the shipped audio-text and image-text spaces; runs offline")
    demo.add_argument("--out", default="runs/demo", help="folder for cached features and the bridge")
    demo.add_argument("--ablations", action="store_true", help="also train the three ablations")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    bench = sub.add_parser("bench", help="benchmarks on the real data")
    bench.add_argument("name", choices=["digits", "multihop", "modelnet10", "hard", "quality"])
    bench.add_argument("--data", default=DEFAULT_DATA, help="folder holding fsdd/, mnist5k/, oewn/")
    bench.add_argument("--json", help="write the record here")
    bench.add_argument("--out", help="folder for cached features and bridges (default runs/bench-NAME)")
    bench.add_argument(
        "--seed", type=int, default=0, help="seed of every training run (hard: runs seeds N, N+1 and N+2)"
    )
    bench.add_argument("--no-ablations", action="store_true", help="digits, hard: skip the ablations")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(run=_bench)

    sub.add_parser("list", help="list registered spaces and bridge methods").set_defaults(run=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, ImportError, OSError) as exc:  # OSError: FileNotFoundError, PermissionError, ...
        print(f"spacegraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
