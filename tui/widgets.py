"""Widgets: a virtual review list (Line API, pages from SQLite) and plot widgets."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click, Resize
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.browse import ReviewRow

PAGE = 100
MAX_PAGES = 40


class ReviewList(ScrollView, can_focus=True):
    """Every review of the listing, drawn line by line; rows are fetched a page at a time.

    The list only knows how many rows there are and how to fetch a page; it never holds
    more than ``MAX_PAGES`` pages, so 25,000 reviews cost what 10 do.
    """

    COMPONENT_CLASSES = {"review-list--cursor", "review-list--empty"}
    DEFAULT_CSS = """
    ReviewList { height: 1fr; }
    ReviewList > .review-list--cursor { background: $accent 40%; text-style: bold; }
    ReviewList:focus > .review-list--cursor { background: $accent; color: $text; }
    ReviewList > .review-list--empty { color: $text-muted; text-style: italic; }
    """
    BINDINGS = [
        Binding("down", "cursor_down", "Down", show=False),
        Binding("up", "cursor_up", "Up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=False, repaint=False)

    class Highlighted(Message):
        def __init__(self, index: int) -> None:
            self.index = index
            super().__init__()

    class Selected(Message):
        def __init__(self, index: int) -> None:
            self.index = index
            super().__init__()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.count = 0
        self._fetch: Callable[[int, int], Sequence[ReviewRow]] | None = None
        self._format: Callable[[int, ReviewRow, int], Text] | None = None
        self._pages: OrderedDict[int, Sequence[ReviewRow]] = OrderedDict()
        self.empty_message = "no reviews"
        # Called synchronously when the cursor moves, so whatever shows the selected review
        # is redrawn in the same frame as the cursor (a Highlighted message is posted too).
        self.on_cursor: Callable[[int], None] | None = None

    def set_source(self, count: int, fetch: Callable[[int, int], Sequence[ReviewRow]],
                   format_row: Callable[[int, ReviewRow, int], Text], *, cursor: int = 0) -> None:
        """Show ``count`` rows; ``fetch(offset, limit)`` returns rows, ``format_row`` draws one."""
        self.count = count
        self._fetch = fetch
        self._format = format_row
        self._pages.clear()
        self.virtual_size = Size(max(1, self.size.width), count)
        self.set_reactive(ReviewList.cursor, max(0, min(cursor, count - 1)) if count else 0)
        self._scroll_to_cursor()
        self.refresh()

    def invalidate(self) -> None:
        """Forget fetched pages (the data changed); the next draw fetches again."""
        self._pages.clear()
        self.refresh()

    def row(self, index: int) -> ReviewRow | None:
        if not (0 <= index < self.count) or self._fetch is None:
            return None
        p = index // PAGE
        page = self._pages.get(p)
        if page is None:
            page = self._fetch(p * PAGE, PAGE)
            self._pages[p] = page
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(p)
        k = index - p * PAGE
        return page[k] if k < len(page) else None

    # -- drawing ------------------------------------------------------------------------

    def on_resize(self, event: Resize) -> None:
        self.virtual_size = Size(max(1, event.size.width), self.count)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        index = self.scroll_offset.y + y
        if self.count == 0:
            if y == 0:
                st = self.get_component_rich_style("review-list--empty")
                return Strip([Segment(self.empty_message[:width], st)]).extend_cell_length(width, base)
            return Strip.blank(width, base)
        if index >= self.count:
            return Strip.blank(width, base)
        row = self.row(index)
        if row is None or self._format is None:
            return Strip.blank(width, base)
        text = self._format(index, row, width)
        segments = list(text.render(self.app.console))
        strip = Strip(segments).crop_extend(0, width, None)
        style = base
        if index == self.cursor:
            style = base + self.get_component_rich_style("review-list--cursor")
        return strip.apply_style(style) if style else strip

    # -- cursor -------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        top = self.scroll_offset.y
        self.refresh(Region(0, old - top, self.size.width, 1))
        self.refresh(Region(0, new - top, self.size.width, 1))
        self._scroll_to_cursor()
        if self.on_cursor is not None:
            self.on_cursor(new)
        self.post_message(self.Highlighted(new))

    def _scroll_to_cursor(self) -> None:
        h = max(1, self.size.height)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + h:
            self.scroll_to(y=self.cursor - h + 1, animate=False, immediate=True)

    def move(self, delta: int) -> None:
        if self.count:
            self.cursor = max(0, min(self.count - 1, self.cursor + delta))

    def action_cursor_down(self) -> None:
        self.move(1)

    def action_cursor_up(self) -> None:
        self.move(-1)

    def action_page_down(self) -> None:
        self.move(max(1, self.size.height - 1))

    def action_page_up(self) -> None:
        self.move(-max(1, self.size.height - 1))

    def action_first(self) -> None:
        self.move(-self.count)

    def action_last(self) -> None:
        self.move(self.count)

    def action_select(self) -> None:
        if self.count:
            self.post_message(self.Selected(self.cursor))

    def on_click(self, event: Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < self.count:
            if index == self.cursor and event.chain >= 2:
                self.post_message(self.Selected(index))
            self.cursor = index


def cursor_style() -> Style:
    return Style(reverse=True)


class TextView(ScrollView, can_focus=True):
    """A scrollable view of one Rich renderable, pre-rendered to lines at the view's width.

    Unlike a Static in a scrolling container, updating it never changes the size of any
    widget, so moving between reviews costs one frame (no second layout pass).
    """

    DEFAULT_CSS = """
    TextView { height: 1fr; overflow-y: scroll; scrollbar-size-vertical: 1; }
    """
    BINDINGS = [
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.content: object = ""
        self._lines: list[Strip] = []
        self._width = 0

    def update(self, renderable: object) -> None:
        self.content = renderable
        self._render_lines()
        if self.scroll_offset.y:
            self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    def _render_lines(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        self._width = width
        if width <= 0:
            self._lines = []
            return
        console = self.app.console
        options = console.options.update(width=width, height=None, highlight=False)
        lines = console.render_lines(self.content, options, style=self.rich_style, pad=True, new_lines=False)
        self._lines = [Strip(line, width) for line in lines]
        size = Size(width, len(self._lines))
        if size != self.virtual_size:
            # The scrollbar is always shown (overflow-y: scroll), so a new content height
            # needs no layout pass: set the size quietly and update the scrollbar in place.
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)

    def on_resize(self, event: Resize) -> None:
        if (self.scrollable_content_region.width or self.size.width) != self._width:
            self._render_lines()
            self.refresh()

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.scrollable_content_region.width or self.size.width
        if 0 <= index < len(self._lines):
            return self._lines[index].crop_extend(0, width, self.rich_style)
        return Strip.blank(width, self.rich_style)
