"""Progress as JSON lines, on stdout and in a file, so a parent process can follow a run.

Every line is one JSON object with an `event` key: start, step, saved, eval, done, error,
interrupted. `parse_progress_line` is what a reader uses; it ignores anything else a library
prints on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any

EVENTS = ("start", "step", "saved", "eval", "done", "error", "interrupted", "note")


class ProgressWriter:
    """Writes progress events; each line is flushed at once (a reader waits on it)."""

    def __init__(self, path: str | Path | None, stream: IO[str] | None = None,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.file = open(path, "a", encoding="utf-8") if (path and enabled) else None  # noqa: SIM115
        self.t0 = time.monotonic()

    def emit(self, event: str, **fields: Any) -> dict:
        record = {"event": event, "time_s": round(time.monotonic() - self.t0, 3), **fields}
        if self.enabled:
            line = json.dumps(record, ensure_ascii=False)
            for out in (self.stream, self.file):
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
        return record

    def step(self, step: int, total: int, loss: float, lr: float, samples: int) -> dict:
        elapsed = time.monotonic() - self.t0
        per_step = elapsed / max(step, 1)
        return self.emit(
            "step", step=step, total=total, loss=round(float(loss), 6), lr=lr,
            samples=samples, samples_per_s=round(samples / max(elapsed, 1e-9), 3),
            eta_s=round(per_step * (total - step), 1),
        )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def parse_progress_line(line: str) -> dict | None:
    """The event in one line of a trainer's output, or None for anything else."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if isinstance(obj, dict) and obj.get("event") in EVENTS:
        return obj
    return None
