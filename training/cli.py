"""`python -m training ...`: arguments -> TrainConfig -> main(config).

Exit status: 0 done, 1 bad input or failure (one `error:` line on stderr and an `error`
progress event), 130 interrupted (nothing saved).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import MISSING, fields

from .config import TrainConfig

# Fields set from the command line, with their flag spellings (field name with dashes).
_SKIP = {"extra"}


def _type_of(f) -> type:
    t = str(f.type)
    if "bool" in t:
        return bool
    if "int" in t and "float" not in t:
        return int
    if "float" in t:
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per TrainConfig field (help from its docstring)."""
    from .docs import field_docs

    docs = field_docs()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a LoRA adapter on IDEFICS from exported training pairs (QLoRA).",
    )
    p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it).")
    for f in fields(TrainConfig):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _type_of(f)
        helptext = docs.get(f.name, "")
        if f.default is not MISSING and f.default is not None and not isinstance(
                f.default, tuple):
            helptext += f" [default: {f.default}]"
        if kind is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=helptext)
        elif f.name in ("target_modules", "tasks"):
            p.add_argument(flag, dest=f.name, default=None, help=helptext + " (comma-separated)")
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=helptext)
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse `argv` into a validated TrainConfig (ConfigError on a bad value)."""
    import json
    from pathlib import Path

    args = build_parser().parse_args(argv)
    data: dict = {}
    if args.config:
        data.update(json.loads(Path(args.config).read_text(encoding="utf-8")))
    for key, value in vars(args).items():
        if key == "config" or value is None:
            continue
        if key in ("target_modules", "tasks"):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        data[key] = value
    missing = [n for n in ("pairs", "out_dir") if n not in data]
    if missing:
        build_parser().error("required: " + ", ".join("--" + m.replace("_", "-")
                                                       for m in missing))
    return TrainConfig.from_dict(data)


def run(argv: list[str] | None = None) -> int:
    """The console entry point; returns the exit status."""
    from .config import ConfigError

    try:
        config = config_from_args(argv)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from .trainer import TrainingError, main

    try:
        main(config)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was saved", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user; details on request
        if os.environ.get("SPORTVLM_DEBUG"):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first} (SPORTVLM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 0
