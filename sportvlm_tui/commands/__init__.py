"""One module per command. Each exposes a click command; heavy imports stay inside functions."""

from __future__ import annotations

import importlib

import click

# module name -> command attribute. Add a command here and in its own module.
COMMANDS = {
    "predict": "predict",
    "status": "status",
    "ingest": "ingest",
    "export": "export",
    "train": "train",
    "adapters": "adapters",
    "eval": "eval_command",
    "grade": "grade",
    "experiment": "experiment",
    "review": "review",
    "demo": "demo",
}


def register_all(group: click.Group) -> None:
    for module, attr in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        group.add_command(getattr(mod, attr))
