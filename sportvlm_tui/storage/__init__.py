"""SQLite storage (sqlite-utils, WAL, migrations). Never imports textual or torch."""

import sys

# sqlite-utils imports pandas/numpy/pyarrow at import time when they are installed (they come
# with `datasets`), to register column types we never use; that alone costs ~0.5-0.8 s of every
# `sportvlm` start. Hide them for the duration of that one import only.
_HIDDEN = [m for m in ("pandas", "numpy") if m not in sys.modules]
if "sqlite_utils" not in sys.modules and _HIDDEN:
    for _name in _HIDDEN:
        sys.modules[_name] = None  # type: ignore[assignment]  # `import x` now fails fast
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for _name in _HIDDEN:
            del sys.modules[_name]

from .db import connect, default_db_path, now, rows, scalar, write  # noqa: E402

__all__ = ["connect", "default_db_path", "now", "rows", "scalar", "write"]
