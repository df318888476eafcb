"""Validate one image file: read it once, hash it, decode it fully.

A file that cannot be read or decoded raises `BadImage` with a short reason for the user.
`Image.draft` is never used: a reduced decode could miss damage in the data it skips.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

# Files are read whole (hash, then decode from memory); several are in flight at once.
MAX_FILE_BYTES = 512 << 20


class BadImage(Exception):
    """The file is not a usable image; `str(exc)` is the reason, without the path."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int
    mode: str
    bytes: int
    decoded: bool  # False when the content was already known and decoding was skipped


def treat_bomb_warnings_as_errors() -> None:
    """Make PIL's DecompressionBombWarning raise, in this process, from now on.

    PIL only warns between 1x and 2x its pixel limit; ingest treats such a file as bad input.
    A filter (not `catch_warnings`) because `catch_warnings` is not thread-safe and the decode
    runs in worker threads.
    """
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _bomb_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return None
    return f"decompression bomb ({width}x{height} = {width * height} pixels > limit {limit})"


def _open_for_read(path: str | os.PathLike[str]) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO named like an image must not hang the whole ingest.
    return open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")


def read_file(path: str | os.PathLike[str], missing_reason: str) -> bytes:
    """The file's bytes, or BadImage saying why they could not be read."""
    try:
        with _open_for_read(path) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BadImage("not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise BadImage(
                    f"file too large ({info.st_size >> 20} MiB > {MAX_FILE_BYTES >> 20} MiB)"
                )
            return fh.read()
    except FileNotFoundError:
        raise BadImage(missing_reason) from None
    except PermissionError:
        raise BadImage("permission denied (cannot read)") from None
    except IsADirectoryError:
        raise BadImage("is a directory, not a file") from None
    except OSError as exc:
        raise BadImage(f"cannot read ({exc.strerror or exc})") from None


def decode(data: bytes) -> tuple[int, int, str]:
    """(width, height, mode) after a full decode of `data`; BadImage if it is not a valid image."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            reason = _bomb_reason(width, height)
            if reason:
                raise BadImage(reason)
            im.load()
            return width, height, im.mode
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (format not recognised)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"decompression bomb ({exc})") from None
    except MemoryError:
        raise BadImage("too large to decode (out of memory)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a damaged file
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg:
            raise BadImage(f"truncated image data ({msg})") from None
        raise BadImage(f"corrupt image data ({msg})") from None


def inspect_file(
    path: str | os.PathLike[str],
    missing_reason: str = "file not found",
    known: set[str] | frozenset[str] = frozenset(),
) -> ImageInfo:
    """Read, hash and (unless its sha256 is in `known`) fully decode the file at `path`."""
    data = read_file(path, missing_reason)
    digest = hashlib.sha256(data).hexdigest()
    if digest in known:
        # Stored content was validated when it was first ingested; decoding it again is waste.
        return ImageInfo(digest, 0, 0, "", len(data), decoded=False)
    width, height, mode = decode(data)
    return ImageInfo(digest, width, height, mode, len(data), decoded=True)
