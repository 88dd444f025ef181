"""``spacegraph demo`` and ``spacegraph bench NAME``, added to the ``spacegraph`` command through the
``spacegraph.commands`` entry-point group: each entry point adds its subcommand to the command's subparsers."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from spacegraph import SpacegraphValueError
from spacegraph.cli import DEFAULT_DATA, add_threads_option, check_writable, set_threads, write_json

BENCHMARKS = [
    *("digits", "multihop", "modelnet10", "hard", "quality", "ensembles", "methods"),
    *("localization", "counterfactual", "zeroshot"),
]
THREE_SEEDS = ("hard", "ensembles", "methods", "localization", "counterfactual", "zeroshot")  # seeds N, N+1, N+2


def add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="connect the shipped audio-text and image-text spaces; runs offline")
    demo.add_argument(
        "--out", default="runs/demo", help="folder for cached features and the bridge (default runs/demo)"
    )
    demo.add_argument("--ablations", action="store_true", help="also train the three ablations")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_option(demo)
    demo.set_defaults(run=run_demo)


def add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks on the real data")
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="folder holding fsdd/, mnist5k/, oewn/ (and modelnet10/ for modelnet10, quality and zeroshot); "
        "default $SPACEGRAPH_DATA",
    )
    bench.add_argument("--json", help="write the record here")
    bench.add_argument("--out", help="folder for cached features and bridges (default runs/bench-NAME)")
    bench.add_argument(
        "--seed", type=int, default=0, help="seed of every training run (hard, ensembles, methods: N, N+1, N+2)"
    )
    bench.add_argument("--no-ablations", action="store_true", help="digits, hard: skip the ablations")
    bench.add_argument("--only", choices=["routes"], help="quality: only the multi-hop route table")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_option(bench)
    bench.set_defaults(run=run_bench)


def run_demo(args: argparse.Namespace) -> int:
    check_writable(Path(args.out), "--out", folder=True)
    set_threads(args.threads)
    import spacegraph as sg

    from . import digits

    data = digits.shipped_data()
    record = digits.run(data, args.out, ablations=args.ablations, progress=not args.quiet)
    print(digits.summary(record))
    bridge = sg.Bridge.load(record["bridge_path"])
    graph = sg.SpaceGraph([sg.load_space(digits.AUDIO_SPACE), sg.load_space(digits.IMAGE_SPACE)], [bridge])
    route = graph.connect("audio", "image")
    print(f"\n{route}")
    _show_queries(route, data)
    print(f"\nbridge saved at {record['bridge_path']}")
    return 0


def _show_queries(route, data) -> None:
    """The first audio query of each digit and up to three whose top image is another digit, each with the digits
    of its top-5 images through ``route``."""
    scores = route.similarity(list(data.audio_queries), data.image_gallery)
    labels = data.audio_query_labels.tolist()
    tops = [data.image_gallery_labels[row.topk(5).indices.numpy()].tolist() for row in scores]
    missed = [i for i, (digit, top) in enumerate(zip(labels, tops)) if top[0] != digit]
    print(f"the digits of the top-5 images; {len(missed)} of {len(labels)} spoken queries find another digit first")
    for i in [labels.index(digit) for digit in sorted(set(labels))] + missed[:3]:
        name, digit, top = Path(data.audio_queries[i]).name, labels[i], tops[i]
        print(f"  {name} (spoken {digit}): {top}, {sum(d == digit for d in top)} of 5 right")


def run_bench(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/bench-{args.name}")
    check_writable(out, "--out", folder=True)
    if args.json:
        check_writable(Path(args.json), "--json", folder=False)
    if args.data is None:
        raise SpacegraphValueError(
            "bench needs the real data: give --data FOLDER (holding fsdd/, mnist5k/, oewn/, modelnet10/) or set "
            "SPACEGRAPH_DATA; `spacegraph demo` runs on the samples shipped in the package"
        )
    set_threads(args.threads)
    bench = importlib.import_module(f"{__package__}.{args.name}")
    options: dict[str, Any] = {"progress": not args.quiet}
    if args.name in THREE_SEEDS:
        options["seeds"] = tuple(args.seed + offset for offset in range(3))
    elif args.name == "quality":
        options["only"] = args.only
    else:
        options["config"] = {"seed": args.seed}
    if args.name in ("digits", "hard"):
        options["ablations"] = not args.no_ablations
    record = bench.bench(args.data, out, **options)
    print(bench.summary(record))
    if args.json:
        write_json(args.json, record)
        print(f"\nwrote {args.json}")
    return 0
