"""The property run over every public entry point (``tests/entry_points.py``): whatever it is called with, every
call answers (no hang) with a finite result or a clear spacegraph error, never a raw one."""

import json
import subprocess
import sys
from pathlib import Path

import spacegraph as sg
from spacegraph import plugin
from tests.entry_points import SKIPPED

REPO = Path(__file__).resolve().parents[2]


def test_every_public_entry_point_answers_or_refuses_clearly(tmp_path):
    out = tmp_path / "cases.json"
    command = [sys.executable, "-m", "tests.entry_points", "--cases", "10", "--seed", "7", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
    summary = json.loads(out.read_text())
    public = {n for m in (sg, plugin) for n in m.__all__ if n not in SKIPPED and callable(getattr(m, n))}
    assert public <= set(summary["per_entry_point"])
    assert all(1 <= sum(counts.values()) <= 10 for counts in summary["per_entry_point"].values())
    assert summary["failures"] == [] and summary["outcomes"]["raw"] == summary["outcomes"]["hang"] == 0
    assert summary["outcomes"]["ok"] > 0 and summary["outcomes"]["clear"] > 0
