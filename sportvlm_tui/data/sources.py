"""Where images come from: the 100SIC layout (sports.csv or split/label folders) or any folder.

Listing never opens an image; it only decides which files to look at and what the dataset says
about them (split, label). Problems found while listing (a bad sports.csv row) are reported as
errors for that row only; a sports.csv without the expected columns is a `SourceError`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CSV_NAME = "sports.csv"
CSV_COLUMNS = ("class id", "filepaths", "labels", "data set")
SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Content that appears under several splits is stored once, under the split listed first: held-out
# splits come first so an evaluation set stays whole and never leaks into training.
SPLIT_ORDER = {"test": 0, "valid": 1}

# Why a file that was listed is gone when we come to read it; told apart so the user knows
# whether the dataset is wrong (sports.csv) or the folder changed under us.
MISSING_FROM_CSV = f"listed in {CSV_NAME} but missing"
VANISHED = "vanished after listing (file not found)"


class SourceError(ValueError):
    """The source as a whole cannot be read (message names the file and the reason)."""


@dataclass(frozen=True)
class Candidate:
    """A file to validate and store, with what the dataset says about it."""

    rel_path: str  # POSIX, relative to the listing's root
    split: str | None
    label: str | None
    missing_reason: str = VANISHED


@dataclass
class Listing:
    """The files under one root and the problems found while listing them."""

    root: Path
    layout: str  # "sports.csv" | "folders" | "plain"
    candidates: list[Candidate] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    splits_found: set[str] = field(default_factory=set)
    ignored: int = 0  # files skipped because their suffix is not an image's

    def display_path(self, rel_path: str) -> str:
        """The path to show the user: under the root as they gave it."""
        return os.path.join(str(self.root), *PurePosixPath(rel_path).parts)


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def discover(root: str | os.PathLike[str], split: str | None = None) -> Listing:
    """List the images under `root`, keeping only `split` where the layout has splits.

    `<root>/sports.csv` wins; else `<root>/{train,valid,test}/<label>/...` folders; else every
    image file under `root` (recursively) with no label and split `split`. Candidates come in
    ingest order: test, then valid, then the rest, each in file order.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    if (root / CSV_NAME).is_file():
        listing = _from_csv(root, split)
    elif split_dirs := [s for s in SPLITS if (root / s).is_dir()]:
        listing = _from_split_folders(root, split_dirs, split)
    else:
        listing = _from_plain_folder(root, split)
    listing.candidates.sort(key=lambda c: SPLIT_ORDER.get(c.split or "", len(SPLIT_ORDER)))
    return listing


def _from_csv(root: Path, split: str | None) -> Listing:
    csv_path = root / CSV_NAME
    listing = Listing(root=root, layout=CSV_NAME)
    try:
        # utf-8-sig: spreadsheets often write a BOM that would otherwise rename the 1st column.
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(
                    f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}"
                    f" (expected {', '.join(CSV_COLUMNS)})"
                )
            for row in reader:
                where = f"{csv_path}:{reader.line_num}"
                rel = (row.get("filepaths") or "").strip()
                row_split = (row.get("data set") or "").strip() or None
                if row_split:
                    listing.splits_found.add(row_split)
                if split is not None and row_split != split:
                    continue
                if not rel:
                    listing.errors.append((where, "empty filepaths"))
                    continue
                rel_path = _safe_relative(rel)
                if rel_path is None:
                    listing.errors.append((f"{where}: {rel}", "path outside the dataset root"))
                    continue
                if not is_image_name(rel_path):
                    listing.errors.append(
                        (listing.display_path(rel_path), "not an image file name")
                    )
                    continue
                label = row.get("labels")
                listing.candidates.append(
                    Candidate(
                        rel_path=rel_path,
                        split=row_split,
                        label=label if label else None,
                        missing_reason=MISSING_FROM_CSV,
                    )
                )
    except UnicodeDecodeError as exc:
        raise SourceError(f"{csv_path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise SourceError(f"{csv_path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    return listing


def _safe_relative(rel: str) -> str | None:
    """`rel` as a clean POSIX path inside the root, or None if it would leave it."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.as_posix()


def _walk(top: Path) -> list[tuple[PurePosixPath, str]]:
    """(relative dir, file name) for every non-hidden file under `top`, in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(top).as_posix())
        found.extend((rel_dir, name) for name in sorted(filenames) if not name.startswith("."))
    return found


def _storable(listing: Listing, rel_path: str) -> bool:
    """False (and an error recorded) for a name the database cannot hold: bytes that are not
    UTF-8 come back from the OS as lone surrogates, which SQLite's text cannot store."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        listing.errors.append((listing.display_path(rel_path), "file name is not valid UTF-8"))
        return False
    return True


def _from_split_folders(root: Path, split_dirs: list[str], split: str | None) -> Listing:
    listing = Listing(root=root, layout="folders", splits_found=set(split_dirs))
    for s in split_dirs:
        if split is not None and s != split:
            continue
        for rel_dir, name in _walk(root / s):
            if not is_image_name(name):
                listing.ignored += 1
                continue
            # <split>/<label>/<file>; deeper files keep the first folder as their label.
            label = rel_dir.parts[0] if rel_dir.parts else None
            rel_path = (PurePosixPath(s) / rel_dir / name).as_posix()
            if _storable(listing, rel_path):
                listing.candidates.append(Candidate(rel_path=rel_path, split=s, label=label))
    return listing


def _from_plain_folder(root: Path, split: str | None) -> Listing:
    listing = Listing(root=root, layout="plain")
    for rel_dir, name in _walk(root):
        if not is_image_name(name):
            listing.ignored += 1
            continue
        rel_path = (rel_dir / name).as_posix()
        if _storable(listing, rel_path):
            listing.candidates.append(Candidate(rel_path=rel_path, split=split, label=None))
    return listing
