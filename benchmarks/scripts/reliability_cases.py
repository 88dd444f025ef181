"""Generated calls of every public entry point, and how each ended: ok, a clear error, a raw error or a hang.

Every callable name in ``spacegraph.__all__`` and ``spacegraph.plugin.__all__``, and the public methods of the
objects they make, is called ``--cases`` times with arguments drawn from one pool of values of every kind (see
``tests/entry_points.py``, which this runs in its own process and temporary folder). Prints the totals and writes
them, per entry point, with every raw error and hang, to ``--json``. Run from the repository root:

    python benchmarks/scripts/reliability_cases.py --cases 30 --json runs/reliability-cases.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.entry_points import main  # after the repository root is put on the path

if __name__ == "__main__":
    main()
