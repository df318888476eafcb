"""Review TUI at scale: time to first image and next-image latency on a 100,000-image queue.

Builds (once) a database of N synthetic image rows with label and caption predictions over
real image files (../shared/data/100sic/valid if present, else sample_data/), then starts
the app in a fresh process (so the first-image time includes Python start-up and imports)
and drives it with Pilot:

    .venv/bin/python benchmarks/bench_review.py [--n 100000] [--db PATH] [--steps 200]

Latency is measured from just before a key press to the moment the new image has been
painted (the app's image_shown_hook, called after the refresh). Keys: `n` (next, no write)
and `a` (accept: label + caption decisions committed, then the next image claimed).
"""

from __future__ import annotations

import time

T_PROCESS = time.time()  # noqa: E402  (before the imports below, which are part of start-up)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Pause between keys at "human pace": one decision every ~0.3 s is faster than annotators
# work, and leaves the decoder time to render the next images ahead.
PAUSE_S = 0.3
REAL = (REPO / ".." / "shared" / "data" / "100sic" / "valid").resolve()


def image_files() -> list[Path]:
    for folder in (REAL, REPO / "sample_data"):
        files = sorted(p for p in folder.rglob("*.jpg"))
        if files:
            return files
    raise SystemExit("no image files found (need ../shared/data/100sic or sample_data/)")


def build(db_path: Path, n: int) -> None:
    sys.path.insert(0, str(REPO))
    from sportvlm_tui.storage import connect
    from sportvlm_tui.ui.synthetic import populate

    db = connect(db_path)
    have = db.execute("SELECT count(*) FROM images").fetchone()[0]
    if have >= n:
        print(f"reusing {db_path} ({have} images)")
        return
    if have:
        raise SystemExit(f"{db_path}: has {have} images, wanted {n}; delete it first")
    files = image_files()
    t = time.perf_counter()
    populate(db, files, n)
    print(f"built {db_path}: {n} images over {len(files)} real files, label+caption "
          f"predictions, in {time.perf_counter() - t:.1f}s")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q * (len(values) - 1))))
    return values[k]


async def drive(db_path: str, steps: int, size: tuple[int, int], t_start: float,
                order: str) -> dict:
    import asyncio

    from sportvlm_tui.storage.review_queue import QueueSpec, parse_order
    from sportvlm_tui.ui.app import ReviewApp
    from sportvlm_tui.ui.review_screen import ReviewConfig

    shown: dict[int, float] = {}
    order_seen: list[int] = []

    def on_message(message) -> None:
        if type(message).__name__ == "ItemShown" and message.item is not None:
            order_seen.append(message.item.image.id)
    first: list[float] = []
    event = asyncio.Event()

    def hook(image_id: int) -> None:
        now = time.time()
        if not first:
            first.append(now)
        shown[image_id] = now
        event.set()

    annotator = f"bench-{os.getpid()}"
    name, seed = parse_order(order)
    spec = QueueSpec(order=name, seed=seed)
    app = ReviewApp(ReviewConfig(db_path, annotator, spec, graphics="halfblock"),
                    image_shown_hook=hook)
    out: dict = {}
    async with app.run_test(size=size, message_hook=on_message) as pilot:
        await asyncio.wait_for(event.wait(), 30)
        out["first_image_s"] = first[0] - t_start
        await app.settled(30)
        for key in ("n", "a"):
            lat = []
            for _ in range(steps):
                before = app.review.item.image.id
                event.clear()
                t0 = time.time()
                await pilot.press(key)
                while True:
                    await asyncio.wait_for(event.wait(), 10)
                    event.clear()
                    cur = app.review.item
                    if cur is not None and cur.image.id != before and cur.image.id in shown:
                        break
                lat.append((shown[cur.image.id] - t0) * 1000)
                # human pace: the decoder catches up between keys
                await app.settled(10, stats=False)
                await asyncio.sleep(PAUSE_S)
            out[key] = lat
        out["held"], out["held_painted"] = await hold_key(app, steps, shown, order_seen)
        await pilot.press("u")
        await app.settled(10)
    return out


async def hold_key(app, steps: int, shown: dict[int, float], order_seen: list[int],
                   rate_hz: float = 30.0) -> tuple[list[float], int]:
    """`n` held down: key events at the terminal's repeat rate, without waiting for the app
    (Pilot.press waits until the process is idle, which would hide any backlog). Returns
    the key-to-paint lag of each image that got painted, and how many did."""
    import asyncio

    from textual import events

    start = len(order_seen)
    sent: list[float] = []
    t_paint_before = dict(shown)
    for _ in range(steps):
        sent.append(time.time())
        app._driver.send_message(events.Key("n", "n"))
        await asyncio.sleep(1 / rate_hz)
    await app.settled(30, stats=False)
    lags = []
    for k, image_id in enumerate(order_seen[start:start + steps]):
        painted = shown.get(image_id)
        if painted is not None and t_paint_before.get(image_id) != painted:
            lags.append((painted - sent[k]) * 1000)
    return lags, len(lags)


def child(args) -> None:
    import asyncio

    sys.path.insert(0, str(REPO))
    t_start = float(os.environ.get("BENCH_T0", T_PROCESS))
    res = asyncio.run(drive(str(args.db), args.steps, (args.width, args.height), t_start,
                            args.order))
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/sportvlm-bench-review.db"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=int, default=120)
    ap.add_argument("--height", type=int, default=40)
    ap.add_argument("--order", default="confidence", help="confidence, dataset, random[:SEED]")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    build(args.db, args.n)
    env = {**os.environ, "BENCH_T0": repr(time.time())}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--db", str(args.db), "--steps",
         str(args.steps), "--width", str(args.width), "--height", str(args.height),
         "--order", args.order],
        env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(proc.returncode)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    cpus = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"queue: {args.n} images, order {args.order}; terminal {args.width}x{args.height}, "
          f"halfblock; {cpus} CPUs, load average {load:.1f}")
    print(f"time to first image (process start -> painted): {res['first_image_s']:.2f} s")
    for key, name in (("n", "next (n, no write)"), ("a", "accept (a: 2 decisions + claim)"),
                      ("held", "n held down (30 keys/s), key->paint")):
        lat = res[key]
        print(f"{name:<37} n={len(lat):<4} p50 {statistics.median(lat):6.1f} ms   "
              f"p95 {pct(lat, 0.95):6.1f} ms   max {max(lat):6.1f} ms")
    print(f"  while held, {res['held_painted']}/{args.steps} images were painted (the rest were"
          " passed before their decode finished, as a held key should)")


if __name__ == "__main__":
    main()
