"""Training from the review app: key `t` opens the training screen.

The trainer runs as its own process (`python -m training`, via training.runs); a thread
worker reads its JSON progress lines and posts `TrainingUpdate` messages, so the review
screen stays usable while it trains. A crash or out-of-memory in the trainer is shown here
and changes nothing but the run's record. When the run is done the screen shows the
held-out evaluation and the annotator may promote the candidate (`p`); then the pending
images can be predicted again with it in the background (`r`, `python -m training.repredict`).

The app loads this module through `ui/app.py`'s EXTENSIONS and calls `install(app)`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, ProgressBar, Static

TRAIN_KEY = "t"


@dataclass(frozen=True)
class TrainingState:
    """Everything the training screen shows; replaced (never mutated) on each event."""

    phase: str = "idle"  # idle exporting training evaluating done failed interrupted
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    samples_per_s: float | None = None
    message: str = ""  # the latest note or error, shown literally
    adapter: str | None = None  # the candidate's name once registered
    eval_summary: str = ""
    passed: bool | None = None
    promoted: bool = False
    repredict: str = ""  # idle text or progress of the background re-prediction
    log: tuple[str, ...] = field(default_factory=tuple)

    @property
    def running(self) -> bool:
        return self.phase in ("exporting", "training", "evaluating")


class TrainingUpdate(Message):
    """A new TrainingState (posted from the worker thread)."""

    def __init__(self, state: TrainingState, step_only: bool = False) -> None:
        super().__init__()
        self.state = state
        self.step_only = step_only

    def can_replace(self, message: Message) -> bool:
        # A burst of step updates collapses to the newest; phase changes are all kept.
        return (isinstance(message, TrainingUpdate) and self.step_only
                and message.step_only)


def _latest_model(db) -> str:
    from ..commands.options import DEFAULT_MODEL

    row = db.execute("SELECT model FROM predictions ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else DEFAULT_MODEL


class TrainingController:
    """One training run at a time for the app; owns the state and the worker threads."""

    def __init__(self, app: App, db_path: str, *, overrides: dict | None = None,
                 python: str | None = None) -> None:
        self.app = app
        self.db_path = db_path
        self.overrides = dict(overrides or {})
        self.python = python or sys.executable
        self.state = TrainingState()
        self.screen: TrainingScreen | None = None
        self._process = None
        self._lock = threading.Lock()
        self.model: str | None = None  # None: the model of the newest prediction
        self._atexit = False
        self._repredicting: subprocess.Popen | None = None

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop a run still going when the app exits (else the trainer would outlive it and
        its run would never be recorded as ended)."""
        other = self._repredicting
        if other is not None and other.poll() is None:
            other.send_signal(signal.SIGINT)  # finished batches are already saved
        proc = self._process
        if proc is None or proc.proc.poll() is not None:
            return
        proc.cancel()
        try:
            proc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.proc.kill()
        try:
            proc.finish()
        except Exception:  # noqa: BLE001 - exiting anyway; the run row stays 'running'
            pass

    # --- state changes (any thread) ------------------------------------------------------
    def _set(self, step_only: bool = False, **changes) -> None:
        with self._lock:
            if "message" in changes and changes["message"]:
                changes["log"] = (self.state.log + (changes["message"],))[-8:]
            self.state = replace(self.state, **changes)
            state = self.state
        screen = self.screen
        if screen is not None:
            screen.post_message(TrainingUpdate(state, step_only))  # thread-safe

    def _notify(self, text: str, severity: str = "information") -> None:
        try:
            self.app.call_from_thread(self.app.notify, text, severity=severity,
                                      title="training")
        except RuntimeError:  # called on the app's own thread
            self.app.notify(text, severity=severity, title="training")

    # --- actions (UI thread) -------------------------------------------------------------
    def start(self) -> bool:
        """Start a run in a worker thread; False when one is already running."""
        if self.state.running:
            return False
        if not self._atexit:
            import atexit

            atexit.register(self.shutdown)
            self._atexit = True
        self.state = TrainingState(phase="exporting", message="exporting decisions…")
        self._set()
        self._thread(self._run, "training")
        return True

    def _thread(self, target, name: str) -> None:
        # A daemon thread, not a Textual thread worker: workers run in the default executor,
        # which the interpreter joins at exit, so quitting the app would wait for the whole
        # training run. A daemon thread lets `shutdown` (atexit) stop the trainer instead.
        threading.Thread(target=target, name=f"sportvlm-{name}", daemon=True).start()

    def cancel(self) -> None:
        proc = self._process
        if proc is not None:
            proc.cancel()
            self._set(message="cancelling…")

    def promote(self) -> None:
        if self.state.adapter and not self.state.promoted:
            self.app.run_worker(self._promote, thread=True, group="training-promote",
                                exit_on_error=False)

    def repredict(self) -> None:
        if self.state.promoted and self.state.adapter:
            if self._repredicting is not None and self._repredicting.poll() is None:
                return
            self._thread(self._repredict, "repredict")

    # --- workers (threads) ---------------------------------------------------------------
    def _run(self) -> None:
        from training.config import ConfigError
        from training.runs import RunError, TrainingProcess, plan_config

        from ..export import export_pairs
        from ..storage.db import connect

        try:
            db = connect(self.db_path)
            tasks = list(self.overrides.get("tasks", ("label",)))
            res = export_pairs(db, None, tasks=tasks)
            if not res.pairs:
                self._set(phase="failed", message="no decisions to train on yet: accept or "
                                                  "correct some images first")
                return
            self._set(message=f"exported {len(res.pairs)} pairs")
            model = self.model or _latest_model(db)
            config = plan_config(db, self.db_path, pairs=str(res.path), model=model,
                                 overrides={"tasks": tuple(tasks), **self.overrides})
            self._process = TrainingProcess(db, config, python=self.python)
        except (ValueError, RunError, ConfigError, OSError) as exc:
            self._set(phase="failed", message=f"cannot start training: {exc}")
            self._notify(f"cannot start training: {exc}", "error")
            return
        proc = self._process
        self._set(phase="training", adapter=None,
                  message=f"training {config.adapter_name} (log: {proc.log_path})")
        for ev in proc.events():
            kind = ev["event"]
            if kind == "start":
                self._set(total=ev["total"], message=f"{ev['pairs']} pairs on {ev['device']}")
            elif kind == "step":
                self._set(step_only=True, step=ev["step"], total=ev["total"],
                          loss=ev["loss"], eta_s=ev["eta_s"],
                          samples_per_s=ev["samples_per_s"])
            elif kind == "note" and "evaluating" in ev.get("message", ""):
                self._set(phase="evaluating", message=ev["message"])
            elif kind in ("note", "error", "interrupted"):
                self._set(message=ev.get("message", ""))
        outcome = proc.finish()
        self._process = None
        if outcome.status != "done":
            self._set(phase=outcome.status, message=f"training {outcome.status}: "
                                                    f"{outcome.message}")
            self._notify(f"training {outcome.status}: {outcome.message}", "error")
            return
        report = outcome.eval or {}
        verdict = report.get("verdict", {})
        summary = _eval_text(report)
        self._set(phase="done", adapter=outcome.adapter.name, eval_summary=summary,
                  passed=verdict.get("passed"), message=f"candidate {outcome.adapter.name} ready")
        self._notify(f"{outcome.adapter.name}: {summary} — press {TRAIN_KEY}, then p to promote")

    def _promote(self) -> None:
        from training.runs import promote_checked

        from ..storage.db import connect

        name = self.state.adapter
        try:
            ok, why = promote_checked(connect(self.db_path), name)
        except (ValueError, OSError) as exc:
            ok, why = False, str(exc)
        self._set(promoted=ok, message=why)
        self._notify(why, "information" if ok else "warning")

    def _repredict(self) -> None:
        from training.progress import parse_progress_line

        from ..storage.db import connect

        model = self.model or _latest_model(connect(self.db_path))
        cmd = [self.python, "-m", "training.repredict", "--db", self.db_path, "--model", model,
               "--adapter", self.state.adapter or ""]
        if "device" in self.overrides:
            cmd += ["--device", str(self.overrides["device"])]
        root = str(Path(__file__).resolve().parents[2])
        import os

        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH"))
                                             if x)}
        self._set(repredict="re-predicting pending images…")
        if not self._atexit:
            import atexit

            atexit.register(self.shutdown)
            self._atexit = True
        try:
            self._repredicting = proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
        except OSError as exc:
            self._set(repredict=f"re-prediction failed to start: {exc}")
            return
        last = None
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = parse_progress_line(line)
            if ev is None:
                continue
            last = ev
            if ev["event"] == "step":
                self._set(step_only=True,
                          repredict=f"re-predicting: {ev['step']}/{ev['total']} images")
        code = proc.wait()
        if code == 0 and last and last["event"] == "done":
            text = (f"re-predicted {last.get('predicted', 0)} pending images with "
                    f"{self.state.adapter}")
            self._set(repredict=text)
            self._notify(text)
        else:
            msg = (last or {}).get("message", f"exit status {code}")
            self._set(repredict=f"re-prediction failed: {msg}")
            self._notify(f"re-prediction failed: {msg}", "error")


def _eval_text(report: dict) -> str:
    if not report:
        return "not evaluated"
    c, r = report.get("candidate", {}), report.get("reference", {})
    if c.get("accuracy") is None:
        return "no held-out images with labels"
    return (f"held-out {report.get('split')}: {c['correct']}/{c['total']} "
            f"({c['accuracy']:.1%}) vs {report.get('reference_name')} {r['correct']}/"
            f"{r['total']} ({r['accuracy']:.1%})")


class TrainingScreen(ModalScreen[None]):
    """Progress of the current run, its evaluation, and promotion."""

    DEFAULT_CSS = """
    TrainingScreen { align: center middle; }
    TrainingScreen > Vertical { width: 90; height: auto; max-height: 90%;
        border: round $accent; padding: 1 2; background: $surface; }
    TrainingScreen #training-bar { margin: 1 0; }
    TrainingScreen #training-log { color: $text-muted; }
    """
    BINDINGS = [
        Binding("s", "start", "Start", id="training.start",
                tooltip="Export the decisions and train a new adapter (separate process)"),
        Binding("c", "cancel", "Cancel", id="training.cancel",
                tooltip="Stop the running training (nothing is saved)"),
        Binding("p", "promote", "Promote", id="training.promote",
                tooltip="Promote the new adapter if its evaluation passed"),
        Binding("r", "repredict", "Re-predict", id="training.repredict",
                tooltip="Predict the pending images again with the promoted adapter"),
        Binding("escape,t", "close", "Back", id="training.close",
                tooltip="Back to reviewing (training goes on)"),
    ]

    def __init__(self, controller: TrainingController) -> None:
        super().__init__()
        self.controller = controller

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Training", style="bold"), id="training-title")
            yield Static(id="training-phase")
            yield ProgressBar(id="training-bar", show_eta=False)
            yield Static(id="training-metrics")
            yield Static(id="training-eval")
            yield Static(id="training-repredict")
            yield Static(id="training-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.controller.screen = self
        self.render_state(self.controller.state)

    def on_unmount(self) -> None:
        if self.controller.screen is self:
            self.controller.screen = None

    def on_training_update(self, message: TrainingUpdate) -> None:
        self.render_state(message.state)

    def render_state(self, st: TrainingState) -> None:
        phase = {
            "idle": "No training yet. Press s to train on the decisions so far.",
            "exporting": "Exporting decisions…",
            "training": "Training…",
            "evaluating": "Evaluating the candidate on held-out images…",
            "done": "Done.",
            "failed": "Training failed; nothing else changed.",
            "interrupted": "Training cancelled; nothing was saved.",
        }.get(st.phase, st.phase)
        self.query_one("#training-phase", Static).update(Text(phase))
        bar = self.query_one("#training-bar", ProgressBar)
        bar.update(total=st.total or None, progress=st.step)
        if st.step:
            eta = "" if st.eta_s is None else (
                f"  ETA {int(st.eta_s) // 60}m{int(st.eta_s) % 60:02d}s")
            rate = "" if st.samples_per_s is None else f"  {st.samples_per_s:.1f} samples/s"
            loss = "" if st.loss is None else f"  loss {st.loss:.4f}"
            metrics = f"step {st.step}/{st.total}{loss}{rate}{eta}"
        else:
            metrics = ""
        self.query_one("#training-metrics", Static).update(Text(metrics))
        ev = ""
        if st.adapter:
            verdict = {True: "passes", False: "does NOT pass", None: "-"}[st.passed]
            ev = f"candidate {st.adapter}: {st.eval_summary} — {verdict}"
            if st.promoted:
                ev += " — promoted (r: re-predict pending images)"
            else:
                ev += " — p: promote"
        self.query_one("#training-eval", Static).update(Text(ev))
        self.query_one("#training-repredict", Static).update(Text(st.repredict))
        self.query_one("#training-log", Static).update(Text("\n".join(st.log)))

    def action_start(self) -> None:
        if not self.controller.start():
            self.notify("a training run is already going", severity="warning")

    def action_cancel(self) -> None:
        self.controller.cancel()

    def action_promote(self) -> None:
        if not self.controller.state.adapter:
            self.notify("no candidate adapter yet", severity="warning")
            return
        self.controller.promote()

    def action_repredict(self) -> None:
        if not self.controller.state.promoted:
            self.notify("promote the new adapter first (p)", severity="warning")
            return
        self.controller.repredict()

    def action_close(self) -> None:
        self.dismiss(None)


def controller_for(app: App) -> TrainingController:
    """The app's training controller (made on first use from the app's database)."""
    ctl = getattr(app, "training_controller", None)
    if ctl is None:
        db_path = app.config.db_path  # type: ignore[attr-defined]
        ctl = TrainingController(app, db_path,
                                 overrides=getattr(app, "training_overrides", None))
        app.training_controller = ctl  # type: ignore[attr-defined]
    return ctl


def open_training(app: App) -> None:
    """What key `t` does: show the training screen (starting nothing by itself)."""
    if any(isinstance(s, TrainingScreen) for s in app.screen_stack):
        return
    app.push_screen(TrainingScreen(controller_for(app)))


def install(app: App) -> None:
    """Called by the review app on mount: bind `t` to the training screen."""
    app.action_open_training = lambda: open_training(app)  # type: ignore[attr-defined]
    app.bind(TRAIN_KEY, "open_training", description="Train")
