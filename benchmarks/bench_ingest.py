"""Ingest speed: the real 100SIC subset into a fresh temporary database, several ways.

    .venv/bin/python benchmarks/bench_ingest.py [ROOT] [--repeat N]

Prints images/s (files seen per second, wall clock, listing + hashing + full decode + SQLite
writes) for workers=1, threads at 2 and at the default count, and processes, side by side.
Files are read once before timing, so figures are for a warm page cache. The load average is
printed too: on a shared machine other work slows every row alike.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sportvlm_tui.data import discover, ingest  # noqa: E402
from sportvlm_tui.data.pipeline import default_workers  # noqa: E402
from sportvlm_tui.storage import connect  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (process workers), user + system."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_run(root: Path, workers: int, parallel: str) -> tuple[float, float, int, int]:
    """(images/s wall clock, CPU ms per image, added, seen) for one ingest into a fresh db."""
    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "bench.db")
        cpu = cpu_seconds()
        s = ingest(db, root, workers=workers, parallel=parallel)
        cpu = cpu_seconds() - cpu
        if s.errors:
            raise SystemExit(f"unexpected errors: {s.errors[:3]}")
        return s.images_per_s, 1000 * cpu / s.seen, s.added, s.seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "100sic"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    root = Path(args.root)
    listing = discover(root)
    for c in listing.candidates:  # warm the page cache so the first row is not penalised
        (root / c.rel_path).read_bytes()
    n = default_workers()
    configs = [("serial", 1, "threads"), ("threads", 2, "threads"), ("threads", n, "threads"),
               ("threads", 4, "threads"), ("processes", 2, "processes")]
    configs = list(dict.fromkeys(configs))  # n may be 2 or 4 already
    print(f"{root}: {len(listing.candidates)} files; cpu_count={os.cpu_count()};"
          f" default workers={n} (threads); repeat={args.repeat}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'how':<10} {'workers':>7} {'median img/s':>13} {'best img/s':>11}"
          f" {'CPU ms/img':>11}  added/seen")
    rates: dict[tuple, list[float]] = {}
    cpus: dict[tuple, list[float]] = {}
    counts: dict[tuple, tuple[int, int]] = {}
    # Interleave the configurations so a burst of outside load does not hit only one of them.
    for _ in range(args.repeat):
        for cfg in configs:
            rate, cpu_ms, added, seen = one_run(root, cfg[1], cfg[2])
            rates.setdefault(cfg, []).append(rate)
            cpus.setdefault(cfg, []).append(cpu_ms)
            counts[cfg] = (added, seen)
    for cfg in configs:
        added, seen = counts[cfg]
        print(f"{cfg[0]:<10} {cfg[1]:>7} {statistics.median(rates[cfg]):>13.0f}"
              f" {max(rates[cfg]):>11.0f} {statistics.median(cpus[cfg]):>11.2f}  {added}/{seen}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
