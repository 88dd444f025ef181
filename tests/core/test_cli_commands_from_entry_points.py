"""The ``spacegraph`` command builds its plugin subcommands from the ``spacegraph.commands`` entry-point group
(``demo`` and ``bench`` included), and a broken command plugin is named, not a crash of the other commands."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points

import pytest

import spacegraph
from spacegraph import cli

PLUGIN = """
def add_hello(commands):
    hello = commands.add_parser("hello", help="greet")
    hello.add_argument("--name", default="world")
    hello.set_defaults(run=lambda args: print(f"hello {args.name}") or 0)

def add_raising(commands):
    raise RuntimeError("this plugin is broken")

def add_list(commands):
    commands.add_parser("list")
"""


@pytest.fixture
def commands(tmp_path, monkeypatch):
    """Replace the group the CLI reads with the given ``name = target`` entry points (targets in a tmp module)."""
    (tmp_path / "fake_commands.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(**targets: str) -> None:
        points = [EntryPoint(name, target, cli.COMMANDS_GROUP) for name, target in targets.items()]
        monkeypatch.setattr(cli, "entry_points", lambda group: points if group == cli.COMMANDS_GROUP else [])

    return install


def subcommands(parser) -> set[str]:
    (action,) = [action for action in parser._actions if action.dest == "command"]
    return set(action.choices)


def test_demo_and_bench_are_registered_in_the_group_not_built_in(commands):
    registered = {entry.name: entry.value for entry in entry_points(group=cli.COMMANDS_GROUP)}
    assert registered["demo"].startswith("spacegraph_bench.") and registered["bench"].startswith("spacegraph_bench.")
    assert {"demo", "bench", "extract", "list"} <= subcommands(cli.build_parser())
    commands()  # an empty group: only the core's own commands are left
    assert subcommands(cli.build_parser()) == {"extract", "list"}


def test_a_command_from_an_entry_point_runs(commands, capsys):
    commands(hello="fake_commands:add_hello")
    assert cli.main(["hello", "--name", "plugin"]) == 0
    assert capsys.readouterr().out == "hello plugin\n"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("no_such_module:add", "ModuleNotFoundError: No module named 'no_such_module'"),
        ("fake_commands:add_raising", "RuntimeError: this plugin is broken"),
    ],
)
def test_a_broken_command_is_named_and_the_others_still_work(commands, capsys, caplog, target, reason):
    commands(hello="fake_commands:add_hello", broken=target)
    with caplog.at_level(logging.WARNING, logger="spacegraph.cli"):
        assert cli.main(["list"]) == 0
    assert "digits-audio-text" in capsys.readouterr().out
    assert f"command plugin 'broken' ({target}) failed to load" in caplog.text and reason in caplog.text
    assert cli.main(["hello"]) == 0 and capsys.readouterr().out == "hello world\n"
    assert cli.main(["broken", "--any", "arguments"]) == 2
    err = capsys.readouterr().err
    assert err == f"spacegraph: error: the command 'broken' is unavailable: its plugin failed to load ({reason})\n"


def test_a_plugin_cannot_take_a_core_command(commands, capsys, caplog):
    commands(list="fake_commands:add_list")
    with caplog.at_level(logging.WARNING, logger="spacegraph.cli"):
        assert cli.main(["list"]) == 0
    assert "bridge methods: cmcr" in capsys.readouterr().out
    assert "command plugin 'list' (fake_commands:add_list) is skipped: a command of that name exists" in caplog.text


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"spacegraph {spacegraph.__version__}"


def test_help_builds_every_command_without_importing_torch():
    code = "import sys; from spacegraph import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(("running", "free"), [(1, 4), (3, 2), (9, 1), (None, 4)])
def test_threads_default_to_the_cores_no_other_task_holds(monkeypatch, running, free):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cli, "_running_tasks", lambda: running)  # this process counts itself
    assert cli.free_cores() == free


def test_threads_option_then_omp_num_threads_then_free_cores(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setattr(cli, "free_cores", lambda: 2)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert cli.set_threads(None) == 1  # the environment's choice stands
        assert cli.set_threads(2) == 2  # --threads wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(1)
        assert cli.set_threads(None) == 2  # else the free cores
    finally:
        torch.set_num_threads(before)
