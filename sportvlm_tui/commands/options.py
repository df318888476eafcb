"""Options shared by several commands."""

from __future__ import annotations

import click

from ..storage.db import default_db_path

db_option = click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    default=default_db_path,
    show_default="$SPORTVLM_DB or ./sportvlm.db",
    help="SQLite database file.",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")

DEFAULT_MODEL = "HuggingFaceM4/idefics-9b"

model_option = click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Hub id or local path of an IDEFICS checkpoint; `builtin:tiny` is the tiny test model.",
)
