"""Widgets of the review screen. Text from data always goes in as rich Text (never markup)."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Container
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static, TextArea

from .imaging import Rendered, blank_strip


class ImageArea(Widget):
    """Where the image goes; tells the screen when its size changes (re-render needed)."""

    class Resized(Message):
        def __init__(self, size: Size) -> None:
            super().__init__()
            self.size = size

    def on_resize(self) -> None:
        self.post_message(self.Resized(self.content_size))

    def cells(self) -> tuple[int, int]:
        s = self.content_size
        return max(1, s.width), max(1, s.height)

    def show(self, rendered: Rendered) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def show_message(self, text: Text) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class HalfblockImage(ImageArea):
    """An image as half-block cells, centred; strips come ready-made from the decoder thread."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._strips: list[Strip] = []
        self._message: Text | None = None

    def show(self, rendered: Rendered) -> None:
        self._strips = rendered.strips or []
        self._message = None
        self._unreported = rendered.key.image_id
        self.refresh()

    def show_message(self, text: Text) -> None:
        self._strips = []
        self._message = text
        self._unreported = None
        self.refresh()

    _unreported: int | None = None
    _message_lines: tuple | None = None

    def _layout_message(self, width: int, height: int, style) -> list[Strip]:
        console = self.app.console
        lines = self._message.wrap(console, max(1, width)) if self._message else []
        top = max(0, (height - len(lines)) // 2)
        out = [blank_strip(width, style)] * top
        for line in lines:
            line.align("center", width)
            out.append(Strip(line.render(console)).adjust_cell_length(width, style))
        return out + [blank_strip(width, style)] * max(0, height - len(out))

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        if y == height - 1 and self._unreported is not None:
            # The compositor is drawing the image's last line: this is when it appears (the
            # benchmark's probe; call_after_refresh can run before the widget is repainted).
            hook = getattr(self.app, "image_shown_hook", None)
            if hook is not None:
                hook(self._unreported)
            self._unreported = None
        style = self.rich_style
        if self._message is not None:
            cached = self._message_lines
            if cached is None or cached[0] != (self._message, width, height):
                cached = self._message_lines = ((self._message, width, height),
                                                self._layout_message(width, height, style))
            return cached[1][y] if y < len(cached[1]) else blank_strip(width, style)
        if y < len(self._strips) and self._strips[y].cell_length == width:
            return self._strips[y]  # ready-made by the decoder for this size
        top = max(0, (height - len(self._strips)) // 2)
        if not 0 <= y - top < len(self._strips):
            return blank_strip(width, style)
        strip = self._strips[y - top]
        left = max(0, (width - strip.cell_length) // 2)
        return Strip.join([blank_strip(left, style), strip]).adjust_cell_length(width, style)


class GraphicsImage(ImageArea):
    """kitty (terminal graphics protocol) or sixel, through textual-image."""

    def __init__(self, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self._note = Static("", id="image-note")

    def compose(self):
        from textual_image.widget import SixelImage, TGPImage

        cls = TGPImage if self.mode == "kitty" else SixelImage
        self._pic = cls(id="picture")
        yield Container(self._pic, id="picture-box")
        yield self._note

    def show(self, rendered: Rendered) -> None:
        self._pic.image = rendered.picture
        self._pic.styles.width = rendered.size[0]
        self._pic.styles.height = rendered.size[1]
        self._pic.display = True
        self._note.display = False

    def show_message(self, text: Text) -> None:
        self._pic.display = False
        self._note.update(text)
        self._note.display = True


class CaptionEditor(TextArea):
    """The caption, edited in place. Its own keys come first, so review keys never fire."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save caption", id="caption.save",
                tooltip="Save the edited caption as a correction"),
        Binding("escape", "cancel", "Cancel", id="caption.cancel",
                tooltip="Leave the caption as it was"),
    ]

    class Done(Message):
        """The edit finished: `text` is the new caption, or None when cancelled."""

        def __init__(self, text: str | None) -> None:
            super().__init__()
            self.text = text

    def action_save(self) -> None:
        self.post_message(self.Done(self.text))

    def action_cancel(self) -> None:
        self.post_message(self.Done(None))
