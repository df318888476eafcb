"""Field docstrings of TrainConfig (the string under each field), for --help texts."""

from __future__ import annotations

import ast
import inspect
from functools import cache


@cache
def field_docs() -> dict[str, str]:
    """{field name: its docstring, one line}."""
    from . import config

    tree = ast.parse(inspect.getsource(config.TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            out[node.target.id] = " ".join(after.value.value.split())
    return out
