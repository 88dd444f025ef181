"""Seconds per stage of a long job (training, measuring), each stage announced and timed on a line of its own when
asked, so that a long stage never looks hung."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from tqdm.auto import tqdm

from ._arguments import checked_arguments
from ._distributed import rank_and_world_size


class StageClock:
    """``seconds[name]``: the time spent in each stage (summed over its entries). With ``show`` (on the first rank
    only) each announced stage writes ``label: name (detail) ...`` when it starts and its seconds when it ends,
    through tqdm, so progress bars stay intact; a stage with a progress bar of its own need not be announced."""

    @checked_arguments
    def __init__(self, label: str, *, show: bool = False) -> None:
        self.label = label
        self.show = show and rank_and_world_size()[0] == 0
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "", *, announce: bool = True) -> Iterator[None]:
        announce = announce and self.show
        if announce:
            tqdm.write(f"{self.label}: {name}{f' ({detail})' if detail else ''} ...", file=sys.stderr)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if announce:
            tqdm.write(f"{self.label}: {name} took {self.seconds[name]:.1f} s", file=sys.stderr)
