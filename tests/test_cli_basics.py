"""The command line as a whole: help everywhere, and no heavy imports where none are needed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, SAMPLE_DATA

from sportvlm_tui.cli import main

HEAVY = ("torch", "textual", "transformers", "peft", "bitsandbytes", "accelerate")


def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    """(path, command) for every command and subcommand, found by walking the click group."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


COMMANDS = list(all_commands())


def test_commands_found():
    names = {path[0] for path, _ in COMMANDS}
    assert {"ingest", "status"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, cmd):
    assert (cmd.help or cmd.short_help or "").strip(), f"`sportvlm {' '.join(path)}` has no help"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help(path, cmd):
    missing = [p.opts[0] for p in cmd.params
               if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert missing == [], f"`sportvlm {' '.join(path)}` options without help: {missing}"


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for path, _ in COMMANDS:
        if len(path) == 1:
            assert path[0] in result.output


# Runs in a fresh interpreter: imports the headless packages, runs CLI commands that need no
# model or UI, then reports which heavy modules ended up in sys.modules.
PROBE = r"""
import importlib, json, sys
from sportvlm_tui.cli import main
modules, runs = json.loads(sys.argv[1])
for name in modules:
    importlib.import_module(name)
for args in runs:
    try:
        main(args, prog_name="sportvlm")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise SystemExit(f"sportvlm {args} exited {exc.code}")
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (HEAVY,)


def test_headless_paths_import_neither_torch_nor_textual(tmp_path):
    modules = ["sportvlm_tui.storage", "sportvlm_tui.data"]
    if importlib.util.find_spec("sportvlm_tui.export") is not None:
        modules.append("sportvlm_tui.export")
    db = str(tmp_path / "probe.db")
    runs = [
        ["--help"],
        ["ingest", "--help"],
        ["ingest", str(SAMPLE_DATA), "--split", "test", "--db", db],
        ["status", "--db", db],
    ]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([modules, runs])],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"heavy modules imported: {loaded}"
