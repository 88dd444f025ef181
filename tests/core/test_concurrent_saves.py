"""Two processes saving bridges into one folder at the same time take turns: neither fails, nothing is left
beside the folder, and the folder ends as one complete save."""

import subprocess
import sys

import torch

import spacegraph as sg
from tests.core.test_graph_connects_and_plans import make_bridge

SAVER = """
import sys, time
from pathlib import Path
import spacegraph as sg
bridge, ready = sg.Bridge.load(sys.argv[1]), Path(sys.argv[1] + ".ready")
ready.touch()
while len(list(ready.parent.glob("*.ready"))) < 2:  # both loaded: now save at the same time
    time.sleep(0.01)
for _ in range(int(sys.argv[3])):
    bridge.save(sys.argv[2])
"""


def test_two_processes_saving_one_folder_take_turns(toy_spaces, tmp_path):
    x, y = toy_spaces
    sources = [make_bridge(x, y).save(tmp_path / f"source-{n}") for n in range(2)]
    with torch.no_grad():  # the second bridge's weights differ, so the two saves can be told apart
        reloaded = sg.Bridge.load(sources[1])
        for parameter in reloaded.parameters():
            parameter.add_(1.0)
        reloaded.save(sources[1])
    target = tmp_path / "out" / "bridge"
    savers = [
        subprocess.Popen([sys.executable, "-c", SAVER, str(source), str(target), "200"], stderr=subprocess.PIPE)
        for source in sources
    ]
    errors = [saver.communicate(timeout=300)[1].decode() for saver in savers]
    assert [saver.returncode for saver in savers] == [0, 0], errors
    assert sorted(path.name for path in target.parent.iterdir()) == ["bridge"]  # no box, no lock file
    saved = sg.Bridge.load(target).state_dict()
    candidates = [sg.Bridge.load(source).state_dict() for source in sources]
    assert sum(all(torch.equal(saved[k], c[k]) for k in saved) for c in candidates) == 1
