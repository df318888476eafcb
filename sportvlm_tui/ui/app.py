"""The review app: configuration, styling (app.tcss) and the review screen."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Sequence

from textual.app import App

from .review_screen import ReviewConfig, ReviewScreen

# Optional modules that extend the app (e.g. ui/training.py adds the `t` key). Each may define
# `install(app: ReviewApp) -> None`, called once on mount; a missing module is simply skipped.
EXTENSIONS: list[str] = ["sportvlm_tui.ui.training"]


class ReviewApp(App):
    """`sportvlm review`: one annotator working through the queue."""

    CSS_PATH = "app.tcss"
    TITLE = "sportvlm review"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        config: ReviewConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        image_shown_hook: Callable[[int], None] | None = None,
        extensions: Sequence[str] | None = None,
    ) -> None:
        # ansi_color: Textual otherwise runs every cell of every frame through a filter that
        # converts ANSI colours, a third of the cost of painting a half-block photo.
        super().__init__(ansi_color=True)
        self.config = config
        self.extensions = list(EXTENSIONS if extensions is None else extensions)
        self.clock = clock
        # Called (with the image id) after an image has been painted: the benchmark's probe.
        self.image_shown_hook = image_shown_hook
        self.sub_title = config.annotator

    def get_default_screen(self) -> ReviewScreen:
        return ReviewScreen(self.config, clock=self.clock)

    @property
    def review(self) -> ReviewScreen:
        """The review screen (whatever modal is on top of it)."""
        for screen in self.screen_stack:
            if isinstance(screen, ReviewScreen):
                return screen
        raise LookupError("no review screen")

    async def settled(self, timeout: float = 10.0, *, stats: bool = True) -> None:
        """Wait until the review screen has no database job or image decode outstanding
        (and, with `stats`, fresh status counts): tests and the benchmark drive the app
        with Pilot and then look at the database."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            try:
                screen = self.review
            except LookupError:
                return
            idle = screen.idle if stats else screen.idle_ignoring_stats
            quiet = quiet + 1 if idle and screen.ready else 0
            if quiet >= 3:
                return
        raise TimeoutError("the review screen did not settle")

    def on_mount(self) -> None:
        for name in self.extensions:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    continue
                raise
            install = getattr(module, "install", None)
            if install is not None:
                install(self)
