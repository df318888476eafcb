"""Ingest a folder into the database: list, validate in parallel, store in batches.

Each batch is one transaction (storage.images.add_images), so an interrupted run keeps every
finished batch and a re-run skips it by content hash. Bad files are reported one line each and
the rest goes on.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from ..storage import images as image_store
from .sources import Candidate, Listing, discover
from .validate import BadImage, ImageInfo, inspect_file, treat_bomb_warnings_as_errors

ErrorCallback = Callable[[str, str], None]
ProgressCallback = Callable[[int, int], None]

PARALLEL_KINDS = ("threads", "processes")
BATCH_SIZE = 256
# Measured on the 2-core dev box (benchmarks/bench_ingest.py, 1050 real 224x224 JPEGs):
# serial ~1200 images/s, 2 threads ~2000, 4 threads ~1900, 2 processes ~1850. PIL releases the
# GIL while it decodes, so threads scale without the processes' start-up and pickling cost, and
# they are safe to start from the TUI's worker threads.
DEFAULT_PARALLEL = "threads"


def default_workers() -> int:
    """One thread per core (at most 8): more did not help, the GIL-held parsing is the limit."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class IngestSummary:
    """What one ingest run did. `errors` holds (path, reason) in the order found."""

    root: str
    layout: str
    split: str | None
    seen: int = 0  # files looked at (listed rows and files, including bad ones)
    added: int = 0
    duplicates: int = 0  # valid images whose content was already stored (or seen twice)
    errors: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0  # files skipped for a non-image suffix (plain and folder layouts)
    decoded: int = 0
    # (rel_path, rel_path of the first copy) for duplicates listed under another split/label
    relabelled: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def valid(self) -> int:
        return self.added + self.duplicates

    @property
    def images_per_s(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """False when nothing usable was found: no image at all, or only bad ones."""
        return self.valid > 0

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "split": self.split,
            "seen": self.seen,
            "added": self.added,
            "duplicates": self.duplicates,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "ignored": self.ignored,
            "other_split_or_label": [
                {"path": p, "same_as": q} for p, q in self.relabelled
            ],
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }

    def relabelled_note(self) -> str | None:
        """One line about duplicates listed under another split or label, if there were any."""
        if not self.relabelled:
            return None
        path, first = self.relabelled[0]
        return (
            f"note: {len(self.relabelled)} images have the same content as one listed under"
            f" another split or label (e.g. {path} = {first}); each content is stored once,"
            " with the split and label it was first stored under"
        )

    def line(self) -> str:
        """The one-line summary printed at the end of `sportvlm ingest`."""
        split = f" (split {self.split})" if self.split else ""
        ignored = f", {self.ignored} non-image files ignored" if self.ignored else ""
        return (
            f"{self.root}{split}: {self.added} added, {self.duplicates} duplicates,"
            f" {len(self.errors)} error{'' if len(self.errors) == 1 else 's'}, {self.seen} seen"
            f"{ignored}"
            f" [{self.layout}; {self.seconds:.2f} s, {self.images_per_s:.0f} images/s]"
        )


_KNOWN: frozenset[str] = frozenset()


def _init_process(known: frozenset[str]) -> None:
    global _KNOWN
    _KNOWN = known
    treat_bomb_warnings_as_errors()
    # Ctrl-C reaches the whole process group; the parent alone handles it (cancels the rest,
    # stores what is done), so workers never print tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _inspect(
    path: str, missing_reason: str, known: frozenset[str] | None = None
) -> ImageInfo | BadImage:
    """A bad file is a result, not a raised error: only a real crash should stop the run."""
    try:
        return inspect_file(path, missing_reason, _KNOWN if known is None else known)
    except BadImage as exc:
        return exc


def _inspect_chunk(
    items: list[tuple[str, str]], known: frozenset[str] | None = None
) -> list[ImageInfo | BadImage]:
    return [_inspect(path, missing, known) for path, missing in items]


def _executor(workers: int, parallel: str, known: frozenset[str]) -> Executor:
    if parallel == "threads":
        return ThreadPoolExecutor(workers, thread_name_prefix="ingest")
    # fork is cheap (workers start with PIL already imported) but unsafe in a process with
    # other threads (the TUI); there, forkserver. Workers never touch the inherited SQLite
    # connection and leave through os._exit, so it is never closed or used in a child.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    ctx = multiprocessing.get_context(method)
    return ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_process, initargs=(known,)
    )


def _results(
    listing: Listing, known: frozenset[str], workers: int, parallel: str
) -> Iterator[tuple[Candidate, ImageInfo | BadImage]]:
    """(candidate, result) in listing order, validated `workers` at a time."""
    items = [(listing.display_path(c.rel_path), c.missing_reason) for c in listing.candidates]
    if workers <= 1:
        for cand, (path, missing) in zip(listing.candidates, items, strict=True):
            yield cand, _inspect(path, missing, known)
        return
    # Chunks amortise the per-task cost (a pickle round trip for processes); a bounded window
    # of them keeps memory flat on big folders and leaves little to cancel on an interrupt.
    chunk = 16 if parallel == "processes" else 4
    window = workers * 4
    executor = _executor(workers, parallel, known)
    pending: collections.deque[tuple[int, Future]] = collections.deque()
    try:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            # Processes got the known hashes once, through the initializer.
            args = (part,) if parallel == "processes" else (part, known)
            pending.append((start, executor.submit(_inspect_chunk, *args)))
            if len(pending) >= window:
                yield from _ready(listing, *pending.popleft())
        while pending:
            yield from _ready(listing, *pending.popleft())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _ready(
    listing: Listing, start: int, fut: Future
) -> Iterator[tuple[Candidate, ImageInfo | BadImage]]:
    for k, result in enumerate(fut.result()):
        yield listing.candidates[start + k], result


def ingest(
    db: Database,
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    workers: int | None = None,
    parallel: str = DEFAULT_PARALLEL,
    batch_size: int = BATCH_SIZE,
    on_error: ErrorCallback | None = None,
    on_progress: ProgressCallback | None = None,
    listing: Listing | None = None,
) -> IngestSummary:
    """Validate and store every image under `root` (only `split` where the layout has splits).

    Same content is stored once (by sha256): a re-run adds nothing. Each bad file is passed to
    `on_error(path, reason)` and collected in the summary; the others are stored in batches of
    `batch_size`, one transaction each. `on_progress(done, total)` is called after each file,
    in the caller's thread; to cancel (e.g. from a TUI worker), raise from it. On any exception,
    KeyboardInterrupt included, the images validated so far are stored before it propagates,
    so running the same call again resumes.
    Raises SourceError if the source as a whole is unreadable (e.g. sports.csv lacks columns).
    """
    if parallel not in PARALLEL_KINDS:
        raise ValueError(f"parallel must be one of {PARALLEL_KINDS}, not {parallel!r}")
    treat_bomb_warnings_as_errors()
    started = time.perf_counter()
    if listing is None:
        listing = discover(root, split)
    root_abs = str(Path(listing.root).resolve())
    summary = IngestSummary(
        root=str(root), layout=listing.layout, split=split, ignored=listing.ignored
    )

    def report(path: str, reason: str) -> None:
        summary.errors.append((path, reason))
        if on_error is not None:
            on_error(path, reason)

    for path, reason in listing.errors:
        summary.seen += 1
        report(path, reason)

    stored = image_store.stored_contents(db)
    known = frozenset(stored)
    # sha256 -> (split, label, path) of the copy that was stored (or listed) first, to tell the
    # user when the same content also appears under another split or label (e.g. train/valid
    # leakage in a dataset): the content is stored once, with the first split and label.
    first_seen = {sha: (s.split, s.label, s.rel_path) for sha, s in stored.items()}
    total = len(listing.candidates)
    workers = default_workers() if workers is None else max(1, int(workers))
    batch: list[image_store.ImageRecord] = []

    def flush() -> None:
        if batch:
            # Taken out first: a batch whose transaction failed is not retried by `finally`.
            records = batch[:]
            batch.clear()
            added = image_store.add_images(db, records)
            summary.added += added
            summary.duplicates += len(records) - added

    results = _results(listing, known, workers, parallel)
    try:
        for done, (cand, result) in enumerate(results, 1):
            summary.seen += 1
            if isinstance(result, BadImage):
                report(listing.display_path(cand.rel_path), str(result))
            else:
                if result.decoded:
                    summary.decoded += 1
                    width, height, mode = result.width, result.height, result.mode
                else:
                    s = stored[result.sha256]
                    width, height, mode = s.width, s.height, s.mode
                first = first_seen.setdefault(
                    result.sha256, (cand.split, cand.label, cand.rel_path)
                )
                if first[:2] != (cand.split, cand.label):
                    summary.relabelled.append((cand.rel_path, first[2]))
                # Known content goes to add_images too: storage decides what a duplicate is.
                batch.append(
                    image_store.ImageRecord(
                        sha256=result.sha256,
                        root=root_abs,
                        rel_path=cand.rel_path,
                        split=cand.split,
                        label=cand.label,
                        width=width,
                        height=height,
                        mode=mode,
                        bytes=result.bytes,
                    )
                )
                if len(batch) >= batch_size:
                    flush()
            if on_progress is not None:
                on_progress(done, total)
    finally:
        results.close()  # stops the workers now, not when the generator is collected
        # Validated images are kept even when interrupted: the next run then skips them.
        flush()
        summary.seconds = time.perf_counter() - started
    return summary
