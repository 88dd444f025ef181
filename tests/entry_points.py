"""Every public entry point of spacegraph, called with generated arguments: each name in ``spacegraph.__all__`` and
``spacegraph.plugin.__all__`` that can be called, and the public methods of the objects they make. Hypothesis draws
each argument from one pool of values of every kind (valid library objects, tensors of odd shapes and dtypes, paths
to missing files, folders and FIFOs, numbers out of range, strings, None), so a case is sometimes a valid call and
mostly a careless one. A case ends in one of:

* ``ok``: a result, whose tensors are all finite;
* ``clear``: a :class:`spacegraph.SpacegraphError`, or a ``pydantic.ValidationError`` of a spacegraph model;
* ``raw``: any other exception, or a result holding NaN or inf;
* ``hang``: no answer within :data:`CASE_SECONDS`.

Run as ``python -m tests.entry_points --cases N --json FILE`` (``tests/core/test_every_public_entry_point.py`` and
``benchmarks/scripts/reliability_cases.py`` do): it works in a temporary folder, so nothing it writes lands
elsewhere, and in its own process, so what it registers stays there.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import signal
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pydantic
import torch
from hypothesis import strategies as st

Call = tuple[list[Any], dict[str, Any]]
CASE_SECONDS = 20
# Not entry points a caller calls: a version string, a module, a Protocol and an abstract base (which Python itself
# refuses to instantiate) and a type alias.
SKIPPED = {"__version__", "plugin", "BridgeMethod", "BridgeMethodBase", "HeadArch"}


class Hang(BaseException):
    """Raised by the alarm: a case that did not answer in time."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


def make_objects(folder: Path) -> dict[str, Any]:
    """Valid library objects of each kind, built small, to be drawn as arguments and whose methods are called."""
    import spacegraph as sg
    from spacegraph.plugin import SpaceRef
    from tests.conftest import ToySpace, random_unit

    audio_text, text_image = (
        ToySpace("toy-at", ("audio", "text"), 6, seed=1),
        ToySpace("toy-ti", ("text", "image"), 10, 8, 2),
    )
    features = sg.BridgeFeatures(
        random_unit(64, 6, 0), random_unit(64, 10, 1), random_unit(32, 6, 2), random_unit(32, 10, 3)
    )
    graph = sg.SpaceGraph([audio_text, text_image])
    bridge = graph.train_bridge(
        "toy-at", "toy-ti", overlap="text", features=features, config={"steps": 3, "hidden_dim": 8, "out_dim": 4},
        show_progress_bar=False,
    )  # fmt: skip
    route = graph.connect("audio", "image")
    index = sg.SearchIndex.build(random_unit(20, 4, 5))
    saved = bridge.save(folder / "saved-bridge")
    store = sg.FeatureStore(folder / "store", shard_rows=4)
    return {
        "space": audio_text,
        "other_space": text_image,
        "graph": graph,
        "bridge": bridge,
        "card": bridge.card,
        "head_spec": sg.HeadSpec(in_dim=6, hidden_dim=8, out_dim=4),
        "space_ref": SpaceRef.of(audio_text.spec),
        "spec": audio_text.spec,
        "features": features,
        "route": route,
        "plan": graph.plan("audio", "image"),
        "index": index,
        "search_result": index.search(random_unit(2, 4, 6), k=3),
        "store": store,
        "joint": sg.JointSpace(bridge, [audio_text, text_image]),
        "probe": sg.Probe("probe", torch.randn(12, 8), np.arange(12) % 3, torch.randn(12, 8), np.arange(12) % 3),
        "saved_bridge_folder": saved,
    }


def value_pool(folder: Path, objects: dict[str, Any]) -> list[Any]:
    """Values of every kind a careless or careful caller might pass."""
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    (folder / "empty.txt").write_text("")
    (folder / "data.json").write_text('{"a": [1, 2]}')
    generator = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(3, 8, generator=generator),
        torch.randn(3, 6, generator=generator),
        torch.randn(4, 10, generator=generator),
        torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1),
        torch.full((2, 4), float("nan")),
        torch.zeros(0, 6),
        torch.ones(3, dtype=torch.int64),
        torch.arange(12) % 3,
        torch.randn(2, 3, 4, generator=generator).bfloat16(),
        torch.tensor(1.5),
    ]
    arrays = [np.ones((3, 8), np.float32), np.array(["a", "b"]), np.zeros((0,)), np.full(4, np.inf)]
    scalars = [None, True, False, 0, 1, 3, -1, 2**62, 2.5, 0.0, float("nan"), float("inf"), -1e30, 1j]
    strings = ["", "text", "audio", "image", "toy-at", "toy-ti", "cmcr", "exact", "cpu", "cuda:99", "tpu", "x" * 5000]
    strings += ["../outside", "a/b", "\ud800", "toy-at:text", "nonexistent-space"]
    paths = [
        folder / "missing",
        folder,
        fifo,
        folder / "empty.txt",
        folder / "data.json",
        objects["saved_bridge_folder"],
    ]
    containers = [[], [1, 2], ["a", "b", "c"], [None], {}, {"steps": 2}, {"k": float("nan")}, (1, 2), {1, 2}, b"\x00"]
    odd = [object(), print, lambda *args: None, torch.nn.Linear(2, 2), type, Ellipsis]
    return [*tensors, *arrays, *scalars, *strings, *paths, *containers, *odd, *objects.values()]


def entry_points(objects: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """The callable public names, and the public methods of the library objects, by a label."""
    import spacegraph as sg
    from spacegraph import plugin

    found: dict[str, Callable[..., Any]] = {}
    for module in (sg, plugin):
        for name in module.__all__:
            value = getattr(module, name)
            if name not in SKIPPED and callable(value):
                found.setdefault(name, value)
    for obj in objects.values():
        for name, member in inspect.getmembers(type(obj), callable):
            if not name.startswith("_") and getattr(member, "__module__", "").startswith("spacegraph"):
                found.setdefault(f"{type(obj).__name__}.{name}", getattr(obj, name))
    return dict(sorted(found.items()))


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return None


def draw_call(function: Callable[..., Any], values: st.SearchStrategy[Any], data: st.DataObject) -> Call:
    """Arguments for ``function``: each required one drawn from ``values``, each optional one given or not."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in _parameters(function) or []:
        required = parameter.default is inspect.Parameter.empty
        if parameter.kind is parameter.VAR_POSITIONAL:
            args += data.draw(st.lists(values, max_size=2))
        elif parameter.kind is parameter.VAR_KEYWORD or (not required and not data.draw(st.booleans())):
            continue
        elif parameter.kind is parameter.KEYWORD_ONLY or (kwargs and parameter.kind is not parameter.POSITIONAL_ONLY):
            kwargs[parameter.name] = data.draw(values)
        elif required or not kwargs:
            args.append(data.draw(values))
    return args, kwargs


def _tensors_in(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if depth > 3:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value[:50]:
            yield from _tensors_in(item, depth + 1)
    elif isinstance(value, dict):
        for item in list(value.values())[:50]:
            yield from _tensors_in(item, depth + 1)


def outcome(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(kind, detail)`` of one call: ok, clear, raw or hang (see the module's docstring)."""
    from spacegraph import SpacegraphError

    signal.alarm(CASE_SECONDS)
    try:
        result = function(*args, **kwargs)
        if isinstance(result, contextlib.AbstractContextManager) and not isinstance(result, Path):
            with result:
                pass
    except Hang:
        return "hang", "no answer"
    except SpacegraphError as err:
        return ("clear", "") if str(err).strip() else ("raw", f"{type(err).__name__} without a message")
    except pydantic.ValidationError:
        return "clear", ""
    except Exception as err:  # noqa: BLE001 - every other exception is what this run counts
        where = traceback.extract_tb(err.__traceback__)[-1]
        return "raw", f"{type(err).__name__}: {str(err)[:160]} ({Path(where.filename).name}:{where.lineno})"
    finally:
        signal.alarm(0)
    for tensor in _tensors_in(result):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return "raw", "a result holding NaN or inf"
    return "ok", ""


def describe(args: list[Any], kwargs: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"tensor{list(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
        return repr(value)[:40]

    return ", ".join([*map(short, args), *(f"{k}={short(v)}" for k, v in kwargs.items())])


def run_cases(
    label: str,
    function: Callable[..., Any],
    values: st.SearchStrategy[Any],
    cases: int,
    seed: int,
    counts: Counter[str],
    failures: list[dict[str, str]],
) -> None:
    """Up to ``cases`` generated calls of one entry point, counted by outcome; raw errors and hangs recorded."""

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=cases, deadline=None, database=None, phases=[hypothesis.Phase.generate])
    @hypothesis.given(data=st.data())
    def case(data: st.DataObject) -> None:
        args, kwargs = draw_call(function, values, data)
        kind, detail = outcome(function, args, kwargs)
        counts[kind] += 1
        if kind in ("raw", "hang"):
            failures.append({"entry_point": label, "call": describe(args, kwargs), "kind": kind, "error": detail})

    case()


def run(cases: int, seed: int = 0) -> dict[str, Any]:
    """Up to ``cases`` generated calls of every entry point (fewer where it takes fewer distinct calls, as for one
    without arguments); the counts per entry point and every raw error or hang."""
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        os.chdir(folder)
        objects = make_objects(folder)
        values = st.sampled_from(value_pool(folder, objects))
        counts: dict[str, Counter[str]] = {}
        failures: list[dict[str, str]] = []
        for label, function in entry_points(objects).items():
            counts[label] = Counter()
            run_cases(label, function, values, cases, seed, counts[label], failures)
    totals = Counter()
    for counted in counts.values():
        totals.update(counted)
    return {
        "entry_points": len(counts),
        "cases": sum(totals.values()),
        "outcomes": {kind: totals.get(kind, 0) for kind in ("ok", "clear", "raw", "hang")},
        "per_entry_point": {label: dict(counted) for label, counted in counts.items()},
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=30, help="generated calls per entry point, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True, help="where to write the counts")
    args = parser.parse_args(argv)
    target = args.json.resolve()
    summary = run(args.cases, args.seed)
    target.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("entry_points", "cases", "outcomes")}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
