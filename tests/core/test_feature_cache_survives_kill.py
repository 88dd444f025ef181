"""Feature cache crash safety: SIGKILL an extraction at many points; the next encode resumes and completes
with 0 rows lost or duplicated, load works, no user file is touched and no temp file is left."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # holds the tests package

# One process imports torch once and forks a child per kill; each child extracts and is SIGKILLed, either after a
# seeded random delay spread over an uninterrupted run, or by itself at its k-th os.replace / os.unlink (the
# atomic writes and the removal of another cache's files).
KILLER = """
import hashlib, json, os, random, signal, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from tests.conftest import ToySpace
import spacegraph as sg
from spacegraph._inputs_digest import inputs_digest

class SlowSpace(ToySpace):
    rows_encoded, delay = 0, 0.0  # the delay, in the killed children only, spreads their run over time

    def _encode_batch(self, modality, batch):
        time.sleep(self.delay)
        SlowSpace.rows_encoded += len(batch)
        return super()._encode_batch(modality, batch)

base, n_timed, n_hooked = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
space = SlowSpace("toy", ("audio", "text"), 6)
inputs = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
other = inputs[:29] * 2
expected = space.encode("audio", inputs)
digest = inputs_digest(inputs, "audio")
N_SHARDS = 20


def store(root):
    return sg.FeatureStore(root, shard_rows=2)


def self_kill_at(name, k, before):
    real, count = getattr(os, name), [0]

    def hooked(*args, **kwargs):
        count[0] += 1
        if count[0] == k and before:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, name, hooked)


def run_child(root, hook):
    pid = os.fork()
    if pid == 0:
        try:
            SlowSpace.delay = 0.002
            if hook:
                self_kill_at(*hook)
            store(root).encode(space, "audio", "clips", inputs, batch_size=2)
            os._exit(0)
        finally:
            os._exit(1)
    return pid


def user_files(trial):
    return {{str(p.relative_to(trial)): p.read_bytes() for p in trial.rglob("*") if p.name in ("user.txt", "keep.bin", "NOTES.txt")}}


def kept_rows(folder):
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(s["rows"] for s in manifest["shards"]) if manifest.get("inputs_digest") == digest else 0


def trial(index, delay=None, hook=None):
    trial_dir = base / f"trial-{{index}}"
    root = trial_dir / "cache"
    folder = root / "toy/audio/clips"
    folder.mkdir(parents=True)
    (trial_dir / "user.txt").write_text("user data beside the cache")
    (folder / "NOTES.txt").write_text("the user's notes inside the dataset folder")
    (root / "toy/audio/other").mkdir()
    (root / "toy/audio/other/keep.bin").write_bytes(os.urandom(64))
    if index % 2:
        store(root).encode(space, "audio", "clips", other)  # the child starts over from another cache
    before = user_files(trial_dir)
    start = time.perf_counter()
    pid = run_child(root, hook)
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    kept = kept_rows(folder)
    SlowSpace.rows_encoded = 0
    resumed = store(root).encode(space, "audio", "clips", inputs)
    loaded = store(root).load("toy", "audio", "clips")
    names = sorted(p.name for p in folder.iterdir())
    return {{
        "killed": killed,
        "elapsed": elapsed,
        "kept_rows": kept,
        "rows_encoded_on_resume": SlowSpace.rows_encoded,
        "equal": torch.equal(resumed, expected) and torch.equal(loaded, expected),
        "rows": len(resumed),
        "user_files_unchanged": user_files(trial_dir) == before,
        "tmp_left": sorted(str(p) for p in root.rglob("*.tmp")),
        "folder_ok": names == sorted(["manifest.json", "NOTES.txt", *(f"shard-{{i:05d}}.safetensors" for i in range(N_SHARDS))]),
        "siblings": sorted(p.name for p in (root / "toy/audio").iterdir()),
    }}


# How long an uninterrupted extraction takes, so the timed kills spread over it.
timing = base / "timing"
pid = run_child(timing / "cache", None)
start = time.perf_counter()
os.waitpid(pid, 0)
run_time = time.perf_counter() - start
results = [trial(i, delay=rng.uniform(0.0, run_time)) for i in range(n_timed)]
hooks = [("replace", rng.randint(1, 2 * N_SHARDS), rng.random() < 0.5) for _ in range(n_hooked)]
hooks += [("unlink", rng.randint(1, 10), False) for _ in range(n_hooked // 3)]
results += [trial(n_timed + i, hook=hook) for i, hook in enumerate(hooks)]
print(json.dumps({{"run_time": run_time, "trials": results}}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL")
def test_sigkill_during_extraction_loses_nothing_and_leaves_nothing(tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(repo=str(REPO)))
    n_timed, n_hooked = 20, 9
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(n_timed), str(n_hooked)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = json.loads(done.stdout)["trials"]
    assert len(trials) == n_timed + n_hooked + n_hooked // 3
    assert sum(t["killed"] for t in trials) >= 20
    assert len({t["kept_rows"] for t in trials if t["killed"]}) >= 8  # kills landed all over the run
    for t in trials:
        assert t["equal"] and t["rows"] == 40, t  # 0 rows lost or duplicated
        assert t["rows_encoded_on_resume"] == 40 - t["kept_rows"], t  # verified shards are kept, nothing else
        assert t["user_files_unchanged"] and t["tmp_left"] == [] and t["folder_ok"], t
        assert set(t["siblings"]) == {"clips", "other"}, t  # the lock lives under the root's .locks/
