"""Image decode, scaling and rendering for the review screen, run off the UI thread.

Half blocks give two square pixels per cell, so an image is fitted into
(cells wide, 2 x cells high) pixels; kitty/sixel get a scaled PIL image that the textual-image
widget encodes. Results live in a small LRU cache keyed by image and size, so images the
decoder prefetched are shown without any work on the UI thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.color import Color, ColorType
from rich.color_triplet import ColorTriplet
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

GRAPHICS = ("auto", "kitty", "sixel", "halfblock")
# Pixels per cell that kitty/sixel images are scaled for (most terminals are near 10x20).
CELL_PX = (10, 20)


@dataclass(frozen=True)
class RenderKey:
    image_id: int
    width: int  # cells
    height: int  # cells
    mode: str  # halfblock | kitty | sixel


@dataclass(frozen=True)
class Rendered:
    key: RenderKey
    strips: list[Strip] | None  # halfblock
    picture: Any = None  # PIL image (kitty/sixel)
    error: str | None = None
    size: tuple[int, int] = (0, 0)  # cells actually covered


def fit(src: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with `src`'s aspect ratio inside `box` (at least 1x1)."""
    sw, sh = src
    bw, bh = box
    scale = min(bw / max(sw, 1), bh / max(sh, 1))
    return max(1, round(sw * scale)), max(1, round(sh * scale))


def render(path: Path, key: RenderKey) -> Rendered:
    """Decode `path` and render it for `key` (never raises: errors come back as text)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if key.mode == "halfblock":
                box = (key.width, key.height * 2)
            else:
                box = (key.width * CELL_PX[0], key.height * CELL_PX[1])
            # draft() lets JPEG decode at a reduced scale: big photos decode several times faster.
            im.draft("RGB", box)
            rgb = im.convert("RGB")
            size = fit(rgb.size, box)
            if key.mode == "halfblock":
                # Two pixel rows per cell: an odd height would make rich-pixels re-scale.
                size = (size[0], max(2, size[1] - size[1] % 2))
            scaled = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return Rendered(key, None, error=f"{path}: {exc}")
    if key.mode != "halfblock":
        cells = (max(1, size[0] // CELL_PX[0]), max(1, size[1] // CELL_PX[1]))
        return Rendered(key, None, picture=scaled, size=cells)
    strips = centred(halfblock_strips(scaled), key.width, key.height)
    return Rendered(key, strips, size=(size[0], len(strips)))


def centred(strips: list[Strip], width: int, height: int) -> list[Strip]:
    """Full lines of the image area (`height` strips of `width` cells, image centred), built
    here in the decoder thread so that painting a new image does no strip work on the UI."""
    top = max(0, (height - len(strips)) // 2)
    out = [blank_strip(width)] * top
    for strip in strips[:height]:
        left = max(0, (width - strip.cell_length) // 2)
        line = Strip.join([blank_strip(left), strip]) if left else strip
        out.append(line.adjust_cell_length(width))
    out += [blank_strip(width)] * max(0, height - len(out))
    return out


HALF_BLOCK = "\u2584"  # lower half block: foreground = lower pixel, background = upper
_HEX = [f"{i:02x}" for i in range(256)]


def _colour(value: int) -> Color:
    r, g, b = value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF
    return Color("#" + _HEX[r] + _HEX[g] + _HEX[b], ColorType.TRUECOLOR,
                 triplet=ColorTriplet(r, g, b))


def halfblock_strips(image) -> list[Strip]:
    """Rows of half-block cells, one Strip per terminal line (two pixel rows per line).

    Same cells as rich-pixels' HalfcellRenderer (lower half block, foreground = lower pixel,
    background = upper pixel), built straight from the pixel buffer: rich-pixels formats and
    re-parses a style string per cell, which made a 140x57-cell image cost ~140 ms of
    GIL-holding Python. Runs of identical cells share one segment.
    """
    rgba = image.convert("RGBA")  # four bytes a pixel: one machine word per pixel below
    width, height = rgba.size
    # Opaque by construction (from RGB), so the word is a colour key as it stands.
    pixels = memoryview(rgba.tobytes()).cast("I")
    # Per image, not global: a cache that outlives the image only grows the heap that every
    # full garbage collection has to walk (those walks were the 100-300 ms stalls).
    colours: dict[int, Color] = {}
    styles: dict[tuple[int, int], Style] = {}
    from_color = Style.from_color
    strips: list[Strip] = []
    for y in range(0, height - 1, 2):
        upper = pixels[y * width:(y + 1) * width]
        lower = pixels[(y + 1) * width:(y + 2) * width]
        segments: list[Segment] = []
        run_key: tuple[int, int] | None = None
        run = 0
        for pair in zip(lower, upper, strict=True):
            if pair == run_key:
                run += 1
                continue
            if run:
                segments.append(Segment(HALF_BLOCK * run, styles[run_key]))
            if pair not in styles:
                low, up = pair
                fg = colours.get(low) or colours.setdefault(low, _colour(low))
                bg = colours.get(up) or colours.setdefault(up, _colour(up))
                styles[pair] = from_color(fg, bg)
            run_key, run = pair, 1
        if run:
            segments.append(Segment(HALF_BLOCK * run, styles[run_key]))
        strips.append(Strip(segments, width))
    return strips


def blank_strip(width: int, style: Style | None = None) -> Strip:
    return Strip([Segment(" " * width, style)], width) if width > 0 else Strip([], 0)


class RenderCache:
    """A thread-safe LRU of rendered images."""

    def __init__(self, size: int = 24) -> None:
        self.size = size
        self._items: OrderedDict[RenderKey, Rendered] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: RenderKey) -> Rendered | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, rendered: Rendered) -> None:
        with self._lock:
            self._items[rendered.key] = rendered
            self._items.move_to_end(rendered.key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key: RenderKey) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def detect_graphics(requested: str) -> str:
    """Resolve `--graphics auto` to kitty, sixel or halfblock.

    Must run before the Textual app starts: textual-image asks the terminal at import time,
    which is impossible once Textual owns the terminal.
    """
    import sys

    if requested == "halfblock":
        return requested
    if requested != "auto":
        try:
            import textual_image.widget  # noqa: F401  (caches the cell size while we can)
        except Exception:
            return "halfblock"
        return requested

    if not (sys.__stdout__ and sys.__stdout__.isatty()):
        return "halfblock"
    try:
        import textual_image.widget  # noqa: F401  (caches the cell size while we still can)
        from textual_image import renderable as tir
    except Exception:  # an odd terminal must never stop the review
        return "halfblock"
    if tir.Image is tir.TGPImage:
        return "kitty"
    if tir.Image is tir.SixelImage:
        return "sixel"
    return "halfblock"
