"""Training runs seen from the parent (CLI or TUI): start the trainer as its own process,
follow its progress, then record the result in the database.

The trainer never writes the database. Here, a `training_runs` row is written when a run
starts and closed when it ends; only a run that finished and left its out folder registers a
candidate adapter. A crash, an OOM or an interrupt marks the run failed/interrupted and
changes nothing else. No torch import here: the TUI uses this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from sportvlm_tui.storage import adapters as registry
from sportvlm_tui.storage.db import now, rows, write

from .config import TrainConfig
from .evaluate import DEFAULT_TOLERANCE
from .progress import parse_progress_line

DEFAULT_ADAPTER_DIR = Path("adapters")


class RunError(ValueError):
    """A run that cannot be planned (bad name, unknown adapter...); one line for the user."""


@dataclass
class RunOutcome:
    """How a run ended, as recorded."""

    run_id: int
    status: str  # done | failed | interrupted
    adapter: registry.Adapter | None
    message: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def eval(self) -> dict | None:
        return self.metrics.get("eval")


def default_name() -> str:
    stamp = now().replace("-", "").replace(":", "")[:15]  # 20261126T121500
    return f"adapter-{stamp}"


def plan_config(
    db: Database,
    db_path: str,
    *,
    pairs: str,
    name: str | None = None,
    out_dir: str | None = None,
    from_adapter: str | None = None,
    model: str | None = None,
    overrides: dict | None = None,
) -> TrainConfig:
    """A TrainConfig for a run recorded in `db`: adapter name and folder, the adapter to
    continue from (a registry name), and evaluation against the promoted adapter."""
    name = name or default_name()
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise RunError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    if registry.get_adapter(db, name) is not None:
        raise RunError(f"--name {name}: an adapter of that name exists; choose another")
    parent_path = None
    if from_adapter:
        parent = registry.get_adapter(db, from_adapter)
        if parent is None:
            raise RunError(f"--from-adapter {from_adapter}: no adapter of that name "
                           "(see `sportvlm adapters list`)")
        parent_path = parent.path
    promoted = registry.promoted_adapter(db)
    out = Path(out_dir) if out_dir else DEFAULT_ADAPTER_DIR / name
    data = {
        "pairs": str(Path(pairs).resolve()),
        "out_dir": str(out.resolve()),
        "name": name,
        "from_adapter": parent_path,
        "eval_db": str(Path(db_path).resolve()),
        "eval_reference": promoted.path if promoted else None,
        "extra": {"parent_name": from_adapter, "reference_name": promoted.name if promoted else ""},
    }
    if model:
        data["model"] = model
    data |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return TrainConfig.from_dict(data)


class TrainingProcess:
    """A trainer running as `python -m training --config FILE`; its stdout is the event
    stream, its stderr goes to `<out_dir>.log`."""

    def __init__(self, db: Database, config: TrainConfig, *, python: str | None = None,
                 env: dict | None = None) -> None:
        self.db = db
        self.config = config
        out = Path(config.out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.config_path = out.parent / f"{out.name}.config.json"
        self.log_path = out.parent / f"{out.name}.log"
        config.save(self.config_path)
        close_stale_runs(db)
        self.last_event: dict | None = None
        self.last_step: dict | None = None
        self.error: str | None = None
        with write(db):
            cur = db.execute(
                "INSERT INTO training_runs (adapter_name, status, config, pairs_path, out_dir,"
                " started_at) VALUES (?, 'running', ?, ?, ?, ?)",
                (config.adapter_name, json.dumps(config.to_dict()), config.pairs,
                 config.out_dir, now()),
            )
            self.run_id = int(cur.lastrowid)
        # The repo root first on the path: `training` is found even where the installed
        # package list predates it; the caller's cwd is kept (paths are absolute anyway).
        root = str(Path(__file__).resolve().parents[1])
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        full_env["PYTHONPATH"] = os.pathsep.join(
            x for x in (root, full_env.get("PYTHONPATH", "")) if x)
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "training", "--config", str(self.config_path)],
                stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True,
                bufsize=1, env=full_env,
                start_new_session=True,  # Ctrl-C in a terminal UI reaches only us
            )
        except OSError as exc:
            self._log.close()
            self._close_run("failed", f"cannot start the trainer: {exc}")
            raise
        with write(db):
            db.execute("UPDATE training_runs SET pid = ? WHERE id = ?", (self.proc.pid,
                                                                         self.run_id))

    def events(self) -> Iterator[dict]:
        """Progress events as the trainer writes them; ends when its stdout closes."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_progress_line(line)
            if event is None:
                continue
            self.last_event = event
            if event["event"] == "step":
                self.last_step = event
            elif event["event"] in ("error", "interrupted"):
                self.error = event.get("message")
            yield event

    def cancel(self) -> None:
        """Ask the trainer to stop (it saves nothing and exits)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self) -> int:
        for _ in self.events():
            pass
        code = self.proc.wait()
        self._log.close()
        return code

    def finish(self, tolerance: float = DEFAULT_TOLERANCE) -> RunOutcome:
        """Wait for the end and record it: a candidate adapter if the run finished."""
        code = self.wait()
        out = Path(self.config.out_dir)
        adapter_dir = out / "adapter"
        if code == 0 and (adapter_dir / "adapter_config.json").is_file():
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
            if "eval" in metrics:
                metrics["eval"]["verdict"]["tolerance_at_training"] = tolerance
            adapter = registry.register_adapter(
                self.db, name=self.config.adapter_name, path=str(adapter_dir.resolve()),
                parent=self.config.extra.get("parent_name"), base_model=self.config.model,
                pairs=manifest["pairs"], metrics=metrics, training_run_id=self.run_id,
            )
            self._close_run("done", None)
            return RunOutcome(self.run_id, "done", adapter, "", metrics)
        status = "interrupted" if code in (130, -signal.SIGINT) else "failed"
        message = self.error or self._stderr_tail() or f"trainer exited with status {code}"
        self._close_run(status, message)
        return RunOutcome(self.run_id, status, None, message)

    def _stderr_tail(self) -> str:
        try:
            lines = [x for x in self.log_path.read_text(encoding="utf-8").splitlines()
                     if x.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _close_run(self, status: str, error: str | None) -> None:
        with write(self.db):
            self.db.execute(
                "UPDATE training_runs SET status = ?, error = ?, progress = ?, finished_at = ?"
                " WHERE id = ?",
                (status, error, json.dumps(self.last_step) if self.last_step else None, now(),
                 self.run_id),
            )


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_stale_runs(db: Database) -> int:
    """Mark 'running' runs whose trainer is gone as failed (their parent died before it
    could record the end). Returns how many."""
    stale = [r["id"] for r in rows(db, "SELECT id, pid FROM training_runs WHERE status ="
                                      " 'running'") if not _alive(r["pid"])]
    if stale:
        with write(db):
            db.conn.executemany(
                "UPDATE training_runs SET status = 'failed', error = ?, finished_at = ?"
                " WHERE id = ? AND status = 'running'",
                [("the trainer ended without its parent recording the result", now(), i)
                 for i in stale],
            )
    return len(stale)


def promotion_check(db: Database, name: str, tolerance: float = DEFAULT_TOLERANCE
                    ) -> tuple[bool, str]:
    """(may promote, why): the adapter's recorded evaluation must pass and be against what
    is promoted now."""
    adapter = registry.get_adapter(db, name)
    if adapter is None:
        return False, f"{name}: no adapter of that name"
    report = adapter.metrics.get("eval")
    if not report:
        return False, f"{name}: not evaluated (run `sportvlm adapters evaluate {name}`)"
    current = registry.promoted_adapter(db)
    current_name = current.name if current else "(base model)"
    if current and current.name == name:
        return False, f"{name}: already promoted"
    if report.get("reference_name", "(base model)") != current_name:
        return False, (f"{name}: evaluated against {report.get('reference_name')}, but "
                       f"{current_name} is promoted now; evaluate it again")
    cand, ref = report["candidate"]["accuracy"], report["reference"]["accuracy"]
    if cand is None or ref is None:
        return True, f"{name}: no held-out labels to compare; promoting"
    if cand >= ref - tolerance:
        return True, (f"{name}: accuracy {cand:.3f} vs {ref:.3f} for {current_name} "
                      f"(tolerance {tolerance:.3f})")
    return False, (f"{name}: accuracy {cand:.3f} is worse than {ref:.3f} for {current_name} "
                   f"beyond the tolerance {tolerance:.3f}; not promoted (--force to override)")


def promote_checked(db: Database, name: str, *, force: bool = False,
                    tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, str]:
    """Promote `name` when `promotion_check` passes (or `force`); the previous one stays for
    rollback. Returns (promoted, why)."""
    ok, why = promotion_check(db, name, tolerance)
    if not ok and not force:
        return False, why
    if registry.get_adapter(db, name) is None:
        return False, why
    previous = registry.promote(db, name)
    was = previous.name if previous else "(base model)"
    return True, f"{name} promoted (was {was}; `sportvlm adapters rollback` undoes it). {why}"


def runs(db: Database) -> list[dict]:
    return rows(db, "SELECT * FROM training_runs ORDER BY id")
