"""The ``spacegraph`` command builds its plugin subcommands from the ``spacegraph.commands`` entry-point group
(``demo`` and ``bench`` included), and a broken command plugin is named, not a crash of the other commands."""

from __future__ import annotations

import logging
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
