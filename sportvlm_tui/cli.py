"""The `sportvlm` command line. Thin: each command lives in `sportvlm_tui/commands/`.

Nothing here (or in the command modules' top level) imports torch or textual, so `--help`,
`ingest`, `status` and `export` start fast.
"""

from __future__ import annotations

import click

from . import __version__
from .commands import register_all
from .errors import UserError


class Group(click.Group):
    """Turns UserError into one clean line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.secho("interrupted; finished work is saved (run the same command to resume)",
                        fg="yellow", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sportvlm")
def main() -> None:
    """Label images with a vision-language model in the loop.

    \b
    The loop:  ingest -> predict -> review -> export -> train -> predict again
    Start with `sportvlm demo` (offline, tiny built-in model) or see README.md.
    """


register_all(main)


if __name__ == "__main__":
    main()
