"""Modal screens: help, model-pair chooser, error dialog."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

HELP_INTRO = (
    "shapdiff shows how compressing a sentiment classifier changes what it attends to.\n"
    "Reviews: every review of the sample for the chosen pair of models (reference vs other);\n"
    "  score = |p_ref - p_other| (disagreement of positive-class probabilities), ≠ marks a flip,\n"
    "  ✗ a wrong prediction, 'all' shows every model's prediction (+ positive, − negative),\n"
    "  ● both models explained, ○ one of them.\n"
    "Compare: the review's text coloured by each model's SHAP values on ONE shared scale\n"
    "  (red: towards positive, blue: towards negative; positive underlined, negative italic;\n"
    "  g adds ⁺/⁻ glyphs, on by default under NO_COLOR).\n"
    "Metrics: the study's Table 1 per model, and the pair's comparison statistics.\n"
    "Plots: top features, value distribution, top-20 differences, agreement histogram.\n"
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close help", tooltip="Close this help")]

    def __init__(self, bindings: Sequence[tuple[str, str, str]]) -> None:
        super().__init__(id="help")
        self._keys = bindings

    def compose(self) -> ComposeResult:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("key", no_wrap=True)
        table.add_column("action", no_wrap=True)
        table.add_column("what it does")
        for key, desc, tip in self._keys:
            table.add_row(Text(key, style="bold"), Text(desc), Text(tip))
        with VerticalScroll(id="help-body"):
            yield Static(Text("shapdiff help", style="bold"))
            yield Static(Text(HELP_INTRO))
            yield Static(table)
            yield Static(Text("Esc, q or F1 closes this help; Ctrl+P opens the command palette.", style="dim"))


class PairScreen(ModalScreen[tuple[str, str] | None]):
    """Choose the reference and the other (compressed) model."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel", tooltip="Keep the current pair")]

    def __init__(self, models: Sequence[tuple[str, str]], current: tuple[str, str]) -> None:
        super().__init__(id="pair")
        self.models = list(models)          # (name, role)
        self.current = current

    def compose(self) -> ComposeResult:
        options = []
        refs = sorted(self.models, key=lambda m: m[1] != "reference")
        highlighted = 0
        for ref, _ in refs:
            for other, role in self.models:
                if other == ref:
                    continue
                label = Text(end="")
                label.append(ref, style="bold")
                label.append("  vs  ")
                label.append(other, style="bold")
                label.append(f"  ({role})", style="dim")
                if (ref, other) == tuple(self.current):
                    highlighted = len(options)
                    label.append("  current", style="italic")
                options.append(Option(label, id=f"{ref}\x00{other}"))
        with Vertical(id="pair-body"):
            yield Static(Text("Choose the model pair: reference vs other (Enter picks, Esc cancels)", style="bold"))
            ol = OptionList(*options, id="pair-options")
            ol.highlighted = highlighted if options else None
            yield ol

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        ref, other = (event.option.id or "").split("\x00")
        self.dismiss((ref, other))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ErrorDialog(ModalScreen[None]):
    """A failed background job, explained; never a crash."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close", tooltip="Close this message")]

    def __init__(self, title: str, message: str, hint: str = "") -> None:
        super().__init__(id="error-dialog")
        self.title_text, self.message, self.hint = title, message, hint

    def compose(self) -> ComposeResult:
        with Vertical(id="error-body"):
            yield Static(Text(self.title_text, style="bold"), id="error-title")
            yield Static(Text(self.message), id="error-message")
            if self.hint:
                t = Text("what to do: ", style="bold", end="")
                t.append(self.hint, style="")
                yield Static(t, id="error-hint")
            yield Button("Close", id="error-close", variant="error")

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
