"""`sportvlm experiment` end to end on the IDEFICS-9b shape (random weights): seconds per step.

Runs the experiment itself (`Experiment.run`, what the command runs) on a dataset root with a
random 9b-shape checkpoint built by bench_predict_gpu.build_9b, and times every step through
the experiment's own Reporter callbacks (step starts, progress, notes): wall clock per step,
model loading vs work inside the prediction steps, training steps/loss, total. GPU memory: the
largest device-wide use seen by an NVML sampler (covers the trainer, which is another process),
the predicting process's torch peak, and each trainer's own peak (its metrics.json).

No accuracy meaning: the weights are random (every answer runs to max_new_tokens).

Caption pairs do not exist in the real data, so they are made here at run time (never
committed): every train image whose content is not also a valid image gets "a photo of
<label>"; four of them, of different labels, are the few-shot examples.

    python benchmarks/bench_experiment_gpu.py --images .benchdata/100sic_exp --json $OUT/e.json
    python benchmarks/bench_experiment_gpu.py --tiny --images sample_data   # CPU dry run

On the device (bitsandbytes and sqlite-utils carried, see bench_train_gpu.py):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site .bnb/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD/.bnb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class GpuMemorySampler(threading.Thread):
    """Device-wide memory in use (NVML), sampled every `period` s; peak overall and per step.
    Device-wide because the trainer is a separate process that torch here cannot see."""

    def __init__(self, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.peak = 0
        self.step_peak = 0
        self._stop = threading.Event()
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
        except Exception:  # no NVML (CPU dry run): no figures rather than a failure
            self.handle = None

    def run(self) -> None:
        while self.handle is not None and not self._stop.wait(self.period):
            used = self._read()
            self.peak = max(self.peak, used)
            self.step_peak = max(self.step_peak, used)

    def take_step_peak(self) -> float | None:
        """GiB peak since the last call (None without NVML)."""
        if self.handle is None:
            return None
        used = self._read()
        peak, self.step_peak = max(self.step_peak, used), used
        return round(peak / 2**30, 2)

    def stop(self) -> None:
        self._stop.set()


class TimingReporter:
    """The experiment's Reporter: keeps a timeline and per-step / per-progress-key times."""

    def __init__(self, sampler: GpuMemorySampler) -> None:
        self.t0 = time.perf_counter()
        self.sampler = sampler
        self.steps: list[dict] = []
        self.events: list[dict] = []
        self.progress_keys: dict[str, dict] = {}

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 3)

    def _close_step(self) -> None:
        if self.steps and "seconds" not in self.steps[-1]:
            s = self.steps[-1]
            s["seconds"] = round(self.now() - s["start"], 2)
            s["gpu_peak_gib"] = self.sampler.take_step_peak()

    def step(self, title: str) -> None:
        self._close_step()
        self.steps.append({"step": title, "start": self.now()})
        self.events.append({"t": self.now(), "step": title})
        print(f"[{self.now():8.1f}s] == {title}", flush=True)

    def note(self, message: str) -> None:
        self.events.append({"t": self.now(), "note": message})
        print(f"[{self.now():8.1f}s]    {message}", flush=True)

    def progress(self, what: str, done: int, total: int) -> None:
        t = self.now()
        k = self.progress_keys.setdefault(what, {"what": what, "step": self.steps[-1]["step"],
                                                 "first": t})
        k.update(last=t, done=done, total=total)

    def finish(self) -> float:
        self._close_step()
        return self.now()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def write_caption_files(root: Path, split: str, work: Path) -> tuple[Path, Path, int]:
    """Caption pairs for the train images that are not also `split` images (by content: ingest
    stores such duplicates under `split`), and 4 few-shot examples of different labels."""
    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    held_out = {sha(p) for p in image_files(root / split)}
    train = [p for p in image_files(root / "train") if sha(p) not in held_out]
    pairs = [{"image": str(p.resolve()), "caption": f"a photo of {p.parent.name}"}
             for p in train]
    examples, seen = [], set()
    for pair, p in zip(pairs, train, strict=True):
        if p.parent.name not in seen and len(examples) < 4:
            seen.add(p.parent.name)
            examples.append(pair)
    cap, ex = work / "caption_pairs.jsonl", work / "fewshot_examples.jsonl"
    for path, recs in ((cap, pairs), (ex, examples)):
        path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return cap, ex, len(pairs)


def table(rows: list[dict], total: float) -> str:
    lines = [f"{'step':<62} {'seconds':>8} {'gpu peak GiB':>12}", "-" * 84]
    for r in rows:
        peak = "-" if r.get("gpu_peak_gib") is None else f"{r['gpu_peak_gib']:.1f}"
        lines.append(f"{r['step'][:62]:<62} {r['seconds']:>8.1f} {peak:>12}")
        for sub in r.get("parts", []):
            lines.append(f"    {sub['what'][:58]:<58} {sub['seconds']:>8.1f}")
    lines += ["-" * 84, f"{'total':<62} {total:>8.1f}"]
    return "\n".join(lines)


def step_parts(reporter: TimingReporter) -> None:
    """Split each step at its markers (a model loaded, a prediction job's summary note, a
    trainer's start and end notes): each part is the time since the previous marker."""
    by_step: list[list[dict]] = []
    for e in reporter.events:  # chronological, step starts included
        if "step" in e:
            by_step.append([])
        elif by_step:
            by_step[-1].append(e)
    for s, events in zip(reporter.steps, by_step, strict=True):
        parts, prev = [], s["start"]
        for e in events:
            text = e.get("load") or e.get("note", "")
            if "load" in e or " new, " in text or text.startswith("training ") or \
                    " steps, loss " in text:
                what = ("load model" + (f" ({text})" if text != "base" else "")
                        if "load" in e else text.split(":")[0] if " new, " in text
                        else "trainer start, prepare" if text.startswith("training ")
                        else f"trainer {text.split(':')[0]} (load + train + save)")
                parts.append({"what": what, "seconds": round(e["t"] - prev, 2)})
                prev = e["t"]
        s["parts"] = parts


def time_model_loads(reporter: TimingReporter) -> None:
    """Mark the end of each `load_model` the experiment calls (it imports it at call time)."""
    import sportvlm_tui.model.loading as loading

    real = loading.load_model

    def timed(*a, **kw):
        out = real(*a, **kw)
        reporter.events.append({"t": reporter.now(), "load": kw.get("adapter") or "base"})
        return out

    loading.load_model = timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="dataset root (train + valid)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--tiny", action="store_true", help="builtin:tiny (CPU dry run)")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/idefics9b-random"))
    ap.add_argument("--quant", default=None, help="default: nf4 (auto with --tiny)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_experiment"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from sportvlm_tui.evaluation.experiment import Experiment, ExperimentConfig
    from sportvlm_tui.storage.db import connect

    result: dict = {"bench": "experiment", "split": args.split, "images": str(args.images)}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            result["device"] = {"name": p.name, "total_gib": round(p.total_memory / 2**30, 1),
                                "torch": torch.__version__}
    except ImportError:
        pass
    import transformers

    result["transformers"] = transformers.__version__

    if args.tiny:
        model = "builtin:tiny"
    else:
        model = str(args.model_dir.resolve())
        if not (args.model_dir / "config.json").is_file():
            from bench_predict_gpu import build_9b

            result["build_seconds"] = round(build_9b(args.model_dir), 1)
    quant = args.quant or ("auto" if args.tiny else "nf4")

    if args.work.exists():  # a fresh database and folder: timings of work, not of skips
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    captions, examples, n_pairs = write_caption_files(args.images, args.split, args.work)
    result.update(model=model, quant=quant, caption_pairs=n_pairs)

    config = ExperimentConfig(
        root=args.images, db_path=str(args.work / "exp.db"), out_dir=args.work / "out",
        model=model, split=args.split, captions=captions, examples=examples, quant=quant,
        batch_size=args.batch_size)
    sampler = GpuMemorySampler()
    sampler.start()
    reporter = TimingReporter(sampler)
    time_model_loads(reporter)
    if "torch" in sys.modules and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    error = None
    try:
        Experiment(config, connect(config.db_path), reporter).run()
    except BaseException as exc:  # the timings so far still go out
        error = f"{type(exc).__name__}: {exc}"
        reporter.note(f"FAILED: {error}")
    total = reporter.finish()
    sampler.stop()
    step_parts(reporter)

    trainers = {}
    for m in sorted((config.out_dir / "adapters").glob("*/metrics.json")):
        met = json.loads(m.read_text())
        trainers[m.parent.name] = {k: met.get(k) for k in (
            "steps", "samples", "load_s", "train_s", "samples_per_s", "peak_mem_gib",
            "first_loss", "final_loss", "device") if k in met}
    result.update(
        steps=reporter.steps, total_seconds=total, error=error, trainers=trainers,
        gpu_peak_device_gib=(round(sampler.peak / 2**30, 2) if sampler.handle else None),
        gpu_peak_predict_process_gib=(
            round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if "torch" in sys.modules and torch.cuda.is_available() else None),
        textual_imported="textual" in sys.modules, events=reporter.events)

    print()
    print(table(reporter.steps, total))
    print(f"GPU peak (device-wide, NVML): {result['gpu_peak_device_gib']} GiB; predicting "
          f"process (torch): {result['gpu_peak_predict_process_gib']} GiB")
    for name, met in trainers.items():
        print(f"trainer {name}: {json.dumps(met)}")
    if error:
        print(f"FAILED: {error}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    sys.exit(1 if error else 0)


if __name__ == "__main__":
    main()
