"""The ``spacegraph`` command: ``extract``, ``list``, and the subcommands that installed packages add through the
``spacegraph.commands`` entry-point group (the benchmarks package adds ``demo`` and ``bench``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from importlib.metadata import EntryPoint, entry_points, version
from pathlib import Path
from typing import Any

from ._atomic import write_text_atomic
from ._errors import MissingExtraError, SpacegraphError, SpacegraphFileNotFoundError, SpacegraphValueError
from ._names import check_path_name

COMMANDS_GROUP = "spacegraph.commands"
DESCRIPTION = (
    "Join pretrained multimodal contrastive spaces into one graph. Besides extract and list, installed packages add "
    "commands (spacegraph's benchmarks add demo and bench)."
)
DEFAULT_DATA = os.environ.get("SPACEGRAPH_DATA")  # the data folder commands read when given none (None: unset)

logger = logging.getLogger(__name__)


def check_writable(path: Path, option: str, *, folder: bool) -> None:
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


def _running_tasks() -> int | None:
    """The tasks running or ready to run now, this process included (Linux ``/proc/loadavg``); None elsewhere."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def free_cores() -> int:
    """The cores this process may use that no other runnable task holds now, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    running = _running_tasks()
    return cores if running is None else max(1, min(cores, cores + 1 - running))


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads. Unset: $OMP_NUM_THREADS if set, else the cores free at the start (a
    torch process with more threads than free cores runs many times slower: 446 s against 25 s for the demo on 2
    cores, one of them busy)."""
    parser.add_argument(
        "--threads",
        type=_positive,
        help="torch CPU threads (default: $OMP_NUM_THREADS, else the cores not busy when the command starts)",
    )


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (see :func:`add_threads_option`); returns the thread count torch uses."""
    import torch

    if threads is not None or "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads or free_cores())
    return torch.get_num_threads()


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    """Write a command's record as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(record, indent=2))


def read_inputs(path: Path, modality: str) -> list[str]:
    """The items of ``spacegraph extract --inputs``: a text file's lines (one text, or one file path, per line; row i
    of the features is line i), or for a media modality every file under a folder (hidden ones skipped), sorted by
    path."""
    if path.is_dir():
        if modality == "text":
            raise SpacegraphValueError(f"--inputs {path} is a folder; for text give a file with one text per line")
        files = sorted(
            item
            for item in path.rglob("*")
            if item.is_file() and not any(part.startswith(".") for part in item.relative_to(path).parts)
        )
        if not files:
            raise SpacegraphValueError(f"--inputs {path} holds no files; give a folder of {modality} files")
        return [str(item) for item in files]
    if not path.is_file():
        raise SpacegraphFileNotFoundError(f"--inputs {path} is neither a file nor a folder")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpacegraphValueError(f"--inputs {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    what = "text" if modality == "text" else "file path"
    blank = next((number for number, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise SpacegraphValueError(f"--inputs {path}: line {blank} is blank; give one {what} per line")
    return lines


def _extract(args: argparse.Namespace) -> int:
    check_path_name(args.dataset, "--dataset")
    check_writable(Path(args.store), "--store", folder=True)
    if args.json:
        check_writable(Path(args.json), "--json", folder=False)
    inputs = read_inputs(Path(args.inputs), args.modality)
    set_threads(args.threads)
    import spacegraph as sg

    from ._distributed import ensure_process_group, rank_device, release_process_group

    if args.space not in sg.list_spaces():
        raise SpacegraphValueError(
            f"--space {args.space!r} is not registered; registered: {', '.join(sg.list_spaces())}"
        )
    rank, world_size = ensure_process_group()
    try:
        space = sg.load_space(args.space).to(args.device or rank_device())
        space.check_modality(args.modality)
        start = time.perf_counter()
        features = sg.FeatureStore(args.store, shard_rows=args.shard_rows).encode(
            space,
            args.modality,
            args.dataset,
            inputs,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            precision=args.precision,
            show_progress_bar=rank == 0 and (sys.stderr.isatty() if args.progress is None else args.progress),
        )
        seconds = time.perf_counter() - start
    finally:
        release_process_group()
    record = {
        "space": args.space,
        "modality": args.modality,
        "dataset": args.dataset,
        "n_items": len(features),
        "dim": features.shape[1],
        "world_size": world_size,
        "device": str(space.device),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "precision": args.precision or "fp32",
        "shard_rows": args.shard_rows,
        "seconds": seconds,
        "items_per_second": len(features) / seconds,
        "folder": str(sg.FeatureStore(args.store).folder(args.space, args.modality, args.dataset)),
    }
    if rank == 0:
        print(
            f"{len(features)} x {features.shape[1]} {args.modality} features of {args.space} in {record['folder']} "
            f"({seconds:.1f} s, {record['items_per_second']:.0f} items/s, {world_size} process(es))"
        )
        if args.json:
            write_json(args.json, record)
    return 0


def _list(_: argparse.Namespace) -> int:
    import spacegraph as sg

    print("spaces:        ", ", ".join(sg.list_spaces()) or "(none)")
    print("bridge methods:", ", ".join(sg.list_bridge_methods()) or "(none)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _add_unavailable(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, reason: str) -> None:
    """A stand-in for a command whose plugin failed: any arguments parse, and running it names the failure."""

    def fail(_: argparse.Namespace) -> int:
        raise MissingExtraError(f"the command {name!r} is unavailable: its plugin failed to load ({reason})")

    stand_in = commands.add_parser(name, help=f"(unavailable: {reason})", add_help=False, prefix_chars="\0")
    stand_in.add_argument("arguments", nargs="*")
    stand_in.set_defaults(run=fail)


def _add_plugin_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], entry: EntryPoint) -> None:
    """Let one entry point of ``spacegraph.commands`` add its subcommand; a broken one is logged and stood in for,
    so the other commands still work."""
    if entry.name in commands.choices:
        logger.warning("command plugin %r (%s) is skipped: a command of that name exists", entry.name, entry.value)
        return
    try:
        entry.load()(commands)
    except Exception as exc:  # noqa: BLE001 (a broken plugin must not break the other commands)
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("command plugin %r (%s) failed to load and is skipped: %s", entry.name, entry.value, reason)
        if entry.name not in commands.choices:
            _add_unavailable(commands, entry.name, reason)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spacegraph", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"spacegraph {version('spacegraph')}")
    sub = parser.add_subparsers(dest="command", required=True)

    extract = sub.add_parser(
        "extract", help="extract a dataset's features into a feature store; runs under torchrun too"
    )
    extract.add_argument("--space", required=True, help="registered space name (see `spacegraph list`)")
    extract.add_argument("--modality", required=True, help="modality of the inputs: text, image, audio, ...")
    extract.add_argument(
        "--inputs", required=True, help="a text file (one text or file path per line) or a folder of media files"
    )
    extract.add_argument("--dataset", required=True, help="name of the dataset in the store (one path component)")
    extract.add_argument("--store", required=True, help="root folder of the feature store")
    extract.add_argument("--batch-size", type=_positive, default=64, help="items per model call (default 64)")
    extract.add_argument(
        "--num-workers", type=_at_least_zero, default=None, help="DataLoader worker processes reading media"
    )
    extract.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="autocast precision (default fp32)")
    extract.add_argument("--shard-rows", type=_positive, default=4096, help="rows per shard file (default 4096)")
    extract.add_argument(
        "--device", help="device of each process (default: GPU LOCAL_RANK when CUDA is there, else cpu)"
    )
    extract.add_argument("--json", help="rank 0 writes a record of the run here (sizes, seconds, items/s)")
    add_threads_option(extract)
    extract.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="rank 0 shows a progress bar over its items (default: when stderr is a terminal)",
    )
    extract.set_defaults(run=_extract)

    sub.add_parser("list", help="list registered spaces and bridge methods").set_defaults(run=_list)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name):
        _add_plugin_command(sub, entry)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (SpacegraphError, ValueError, KeyError, ImportError, OSError) as exc:  # OSError: FileNotFoundError, ...
        print(f"spacegraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
