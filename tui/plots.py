"""Plots: engine FigureSpecs drawn with plotext, one plot object per widget (textual-plotext).

The same FigureSpec objects are exported to PNG/SVG by engine.figures.save_figure, so what
the terminal shows and what the file holds come from one description.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot

from engine.browse import ReviewDetail
from engine.figures import FigureSpec, Series

# The plots of the Plots pane: (widget key, what it shows). Figures come from a
# compare.PairReport through engine.figures' builders (see pair_specs).
PLOTS: tuple[tuple[str, str], ...] = (
    ("top-ref", "Top features, reference"),
    ("top-other", "Top features, other model"),
    ("dist", "Distribution of values"),
    ("diff", "Top-20 differences"),
    ("agree", "Agreement histogram (Spearman, with noise floor)"),
    ("faith", "Faithfulness"),
)


def pair_specs(report) -> dict[str, FigureSpec | None]:
    """The pane's FigureSpecs from a compare.PairReport (None where a figure has no data)."""
    from engine import figures

    return {
        "top-ref": figures.top_features_figure(report, report.ref),
        "top-other": figures.top_features_figure(report, report.other),
        "dist": figures.distribution_figure(report),
        "diff": figures.differences_figure(report),
        "agree": figures.agreement_figure(report, "spearman"),
        "faith": figures.faithfulness_figure(report),
    }


COLORS = ("red+", "blue+", "green+", "magenta+", "cyan+", "yellow+")


class SpecPlot(PlotextPlot):
    """A PlotextPlot that redraws (``replot``) a FigureSpec whenever it changes or resizes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec: FigureSpec | None = None
        self.placeholder = "not computed yet"

    def set_spec(self, spec: FigureSpec | None, placeholder: str = "not computed yet") -> None:
        self.spec = spec
        self.placeholder = placeholder
        self.replot()

    def on_resize(self) -> None:
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_figure()
        if self.spec is None:
            plt.title(self.placeholder)
        else:
            draw_spec(plt, self.spec)
        self.refresh()


def _short_label(s: str, n: int = 14) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def draw_spec(plt, spec: FigureSpec) -> None:
    """Draw any FigureSpec (barh, bar, hist, line) on a plotext plot object."""
    plt.title(spec.title)
    series = [s for s in spec.series if len(s.y)]
    if not series:
        plt.title(f"{spec.title}: no data")
        return
    if spec.kind in ("barh", "bar"):
        labels = [_short_label(x) for x in series[0].x]
        orient = "horizontal" if spec.kind == "barh" else "vertical"
        if spec.kind == "barh":      # plotext draws the first category at the bottom
            labels = labels[::-1]
            ys = [list(s.y)[::-1] for s in series]
        else:
            ys = [list(s.y) for s in series]
        if len(series) == 1:
            plt.bar(labels, ys[0], orientation=orient, color=COLORS[0], width=0.6)
        else:
            plt.multiple_bar(labels, ys, labels=[s.label for s in series], orientation=orient,
                             color=list(COLORS[:len(series)]), width=0.8)
    elif spec.kind == "hist":
        for i, s in enumerate(series):
            plt.hist(list(s.y), bins=min(spec.bins, 30), label=s.label, color=COLORS[i % len(COLORS)])
    else:
        for i, s in enumerate(series):
            plt.plot(list(s.x), list(s.y), label=s.label, marker="braille", color=COLORS[i % len(COLORS)])
    if spec.vline is not None:
        (plt.hline if spec.kind == "barh" else plt.vline)(spec.vline, "gray")
    if spec.kind != "barh":
        plt.xlabel(spec.xlabel)
    if spec.kind not in ("barh",):
        plt.ylabel(spec.ylabel)


def review_tokens_spec(detail: ReviewDetail, names: Sequence[str], level: str, k: int = 10) -> FigureSpec | None:
    """This review's largest attributions for two models, on shared categories (for export)."""
    views = [detail.explanations.get(n) for n in names]
    if not all(views):
        return None
    per: list[dict[str, float]] = [{} for _ in views]
    for d, v in zip(per, views):
        for t in v.level(level, detail.text):
            key = " ".join(t.text.split()).lower() or "␣"
            d[key] = d.get(key, 0.0) + t.value
    keys = set().union(*per)
    ranked = sorted(keys, key=lambda w: -max(abs(d.get(w, 0.0)) for d in per))[:k]
    series = tuple(Series(n, tuple(d.get(w, 0.0) for w in ranked), tuple(ranked)) for n, d in zip(names, per))
    return FigureSpec(key=f"review-{detail.id}-{'-vs-'.join(names)}-{level}", kind="barh",
                      title=f"Review {detail.id}: largest {level} attributions",
                      xlabel="SHAP value (towards positive)", ylabel=level, series=series,
                      note=f"{' vs '.join(names)}; same tokens, one scale")


class PlotGrid(VerticalScroll):
    """The Plots pane: one SpecPlot (with its own plotext object) per figure, two per row."""

    def compose(self) -> ComposeResult:
        yield Static(Text("plots of the selected pair", style="dim"), id="plots-caption")
        for i in range(0, len(PLOTS), 2):
            with Horizontal(classes="plot-row"):
                for key, _ in PLOTS[i:i + 2]:
                    yield SpecPlot(id=f"plot-{key}")

    def plots(self) -> list[SpecPlot]:
        return [self.query_one(f"#plot-{key}", SpecPlot) for key, _ in PLOTS]

    def set_specs(self, specs: dict[str, FigureSpec | None], placeholder: str) -> None:
        for key, title in PLOTS:
            self.query_one(f"#plot-{key}", SpecPlot).set_spec(specs.get(key), f"{title}: {placeholder}")

    def specs(self) -> list[FigureSpec]:
        return [p.spec for p in self.plots() if p.spec is not None]
