"""The review app's half-block renderer must draw exactly the cells rich-pixels draws.

The app builds half-block cells itself (rich-pixels re-parses a style string per cell, which cost
~140 ms per large image); rich-pixels stays the reference this test holds it to.
"""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA
from PIL import Image
from rich.segment import Segment
from rich_pixels import HalfcellRenderer

from sportvlm_tui.ui.imaging import halfblock_strips


def _cells_from_segments(segments) -> list[list[tuple[str, tuple, tuple]]]:
    """Per terminal line, per cell: (character, fg rgb, bg rgb)."""
    lines, line = [], []
    for seg in segments:
        if seg.text == "\n":
            lines.append(line)
            line = []
            continue
        for ch in seg.text:
            style = seg.style
            fg, bg = style.color.get_truecolor(), style.bgcolor.get_truecolor()
            line.append((ch, tuple(fg), tuple(bg)))
    if line:
        lines.append(line)
    return lines


@pytest.mark.parametrize("size", [(44, 44), (76, 74), (140, 114)])
def test_same_cells_as_rich_pixels(size):
    path = sorted((SAMPLE_DATA / "test").rglob("*.jpg"))[0]
    image = Image.open(path).convert("RGB").resize(size)
    ours = _cells_from_segments(
        [seg for strip in halfblock_strips(image) for seg in [*strip, Segment("\n")]]
    )
    reference = _cells_from_segments(HalfcellRenderer().render(image, resize=None))
    assert len(ours) == size[1] // 2
    assert ours == reference
