"""Saves SIGKILLed at random points never lose the bridge, never touch a user's file, and leave
nothing behind once a save succeeds.

Run as a script, this file is the kill harness: it loads two bridges, times a few saves, then for each line read
from stdin forks a process that saves them in turn into one folder forever and SIGKILLs it, and prints ``killed``.
A line is a delay in seconds after the first save began, or ``@K``: the saver kills itself just before its K-th
rename (``@2`` lands between the two renames of a swap). Forking from one warm process makes a kill cost
milliseconds instead of a Python start.
"""

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import spacegraph as sg
from spacegraph._atomic import OWNERSHIP
from tests.conftest import ToySpace

RANDOM_KILLS = 30
RENAME_KILLS = ["@1", "@2", "@3", "@4"]
SEED = 7
OWN = [OWNERSHIP, "bridge.json", "heads.safetensors"]


def kill_before_rename(k: int) -> None:
    """From now on in this process, SIGKILL itself just before its ``k``-th ``os.rename``."""
    calls, rename = itertools.count(1), os.rename

    def renaming(*args):
        if next(calls) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        rename(*args)

    os.rename = renaming


def fork_saver(bridges: list[sg.Bridge], target: Path, first: int, point: str) -> int:
    """A process saving ``bridges`` in turn into ``target`` forever; returns once its first save has begun."""
    started, began = os.pipe()
    pid = os.fork()
    if pid == 0:  # the saver: never returns
        try:
            os.close(started)
            if point.startswith("@"):
                kill_before_rename(int(point[1:]))
            os.write(began, b"1")
            for i in itertools.count(first):
                bridges[i % 2].save(target)
        finally:
            os._exit(1)
    os.close(began)
    os.read(started, 1)
    os.close(started)
    return pid


def harness(target: Path, scratch: Path, sources: list[Path]) -> None:
    bridges = [sg.Bridge.load(source) for source in sources]
    start = time.perf_counter()
    for i in range(20):
        bridges[i % 2].save(scratch)
    print(f"ready {(time.perf_counter() - start) / 20}", flush=True)
    for n, line in enumerate(sys.stdin):
        point = line.strip()
        pid = fork_saver(bridges, target, n, point)
        if not point.startswith("@"):
            time.sleep(float(point))
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("killed", flush=True)


def toy_bridge(x: sg.Space, y: sg.Space, seed: int) -> sg.Bridge:
    heads = {s.name: sg.HeadSpec(in_dim=s.spec.dim, hidden_dim=64, out_dim=16) for s in (x, y)}
    card = sg.BridgeCard.between(x.spec, y.spec, heads=heads, method="hand-made", overlap="text")
    torch.manual_seed(seed)
    return sg.Bridge(card)


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in paths}


def test_sigkilled_saves_keep_one_complete_bridge_and_the_users_files(tmp_path):
    x, y = ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)
    bridges = [toy_bridge(x, y, seed) for seed in (1, 2)]
    sources = [bridge.save(tmp_path / f"source-{i}") for i, bridge in enumerate(bridges)]
    fingerprints = {bridge.fingerprint for bridge in bridges}
    work = tmp_path / "work"
    target = bridges[0].save(work / "bridge")
    (work / "notes.txt").write_text("the user's notes")
    (work / ".bridge.old").mkdir()
    (work / ".bridge.old" / "keep.txt").write_text("the user's own .old folder")
    user_files = [work / "notes.txt", work / ".bridge.old" / "keep.txt"]
    before = snapshot(user_files)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, __file__, str(target), str(tmp_path / "scratch"), *map(str, sources)]
    harness_process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(120, harness_process.kill)
    watchdog.start()
    try:
        save_seconds = float(harness_process.stdout.readline().split()[1])
        rng = random.Random(SEED)
        points = [str(rng.uniform(0, 3 * save_seconds)) for _ in range(RANDOM_KILLS)] + RENAME_KILLS
        interrupted = restored = 0
        for point in points:
            harness_process.stdin.write(f"{point}\n")
            harness_process.stdin.flush()
            assert harness_process.stdout.readline() == "killed\n"
            interrupted += any(p.name.startswith(".bridge.spacegraph-") for p in work.iterdir())
            restored += not target.exists()
            loaded = sg.Bridge.load(target)
            assert loaded.fingerprint in fingerprints and loaded.card == bridges[0].card
            assert sorted(p.name for p in target.iterdir()) == OWN
            assert snapshot(user_files) == before
        harness_process.stdin.close()
        assert harness_process.wait() == 0
    finally:
        watchdog.cancel()
        harness_process.kill()
    print(f"{len(points)} kills: {interrupted} left a save's box, {restored} between the renames of a swap")
    assert interrupted > 0 and restored > 0  # the kills did land inside saves, one between the renames

    bridges[1].save(target)
    assert sorted(p.name for p in work.iterdir()) == [".bridge.old", "bridge", "notes.txt"]
    assert sorted(p.name for p in target.iterdir()) == OWN
    assert sg.Bridge.load(target).fingerprint == bridges[1].fingerprint
    assert snapshot(user_files) == before


if __name__ == "__main__":
    harness(Path(sys.argv[1]), Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
