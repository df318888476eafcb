"""Errors meant for the user: one line, naming the file or value and the reason."""


class UserError(Exception):
    """Shown as `error: <message>` with exit status 1; never a traceback."""
