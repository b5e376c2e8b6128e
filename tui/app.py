"""The shapdiff Textual app: metrics, a paged review browser, token-coloured side-by-side
attributions, plots; recompute and export from keys.

Thin: the engine answers (engine.browse for reads, engine.compare for statistics,
tui.jobs for computing), the app draws. Nothing here imports torch, transformers or shap
at load: they are imported inside background workers when a job needs them.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from engine import browse
from engine.errors import Cancelled, ShapdiffError
from engine.progress import CancelToken, Progress
from engine.store import Store, open_store
from engine.workspace import Workspace, resolve_workspace
from tui import jobs, render
from tui.plots import PlotGrid, review_tokens_spec
from tui.screens import ErrorDialog, HelpScreen, PairScreen
from tui.widgets import ReviewList, TextView

TABS = ("reviews", "compare", "metrics", "plots")
LABEL_CYCLE = (None, 1, 0)

# (key, action, description, tooltip, show in footer, id)
KEYS: tuple[tuple[str, str, str, str, bool, str], ...] = (
    ("q", "quit", "Quit", "Leave shapdiff (everything computed is stored)", True, "quit"),
    ("f1,question_mark", "help", "Help", "Show every key and what the panes show", True, "help"),
    ("slash", "search", "Search", "Filter reviews by a piece of their text", True, "search"),
    ("j", "next_review", "Next", "Move to the next review (in list order)", True, "next"),
    ("k", "prev_review", "Prev", "Move to the previous review", True, "prev"),
    ("r", "recompute", "Recompute", "Recompute this review's explanations (on Metrics/Plots: the sample) in "
     "the background; Esc cancels", True, "recompute"),
    ("R", "recompute_sample", "Run sample", "Compute whatever the experiment's sample is missing "
     "(on an empty workspace: the default experiment); Esc cancels", False, "recompute-sample"),
    ("e", "export", "Export", "Export the plot(s) on screen to PNG and SVG in the workspace", True, "export"),
    ("p", "choose_pair", "Pair", "Choose the reference and the other model", True, "pair"),
    ("escape", "cancel", "Cancel", "Cancel the running job (or leave the search box)", False, "cancel"),
    ("s", "cycle_sort", "Sort", "Sort reviews by disagreement, confidence gap, length or sample order",
     False, "sort"),
    ("d", "reverse_sort", "Reverse", "Reverse the sort direction", False, "reverse"),
    ("c", "cycle_class", "Class", "Filter by true class: all, positive, negative", False, "class"),
    ("f", "cycle_outcome", "Outcome", "Filter: all, flips, both correct, incorrect, reference wrong, "
     "other wrong", False, "outcome"),
    ("x", "toggle_explained", "Explained", "Show only reviews with stored explanations", False, "explained"),
    ("w", "toggle_level", "Word/subword", "Show attributions per word or per (sub)word token", False, "level"),
    ("g", "toggle_glyphs", "Glyphs", "Mark token signs with ⁺/⁻ glyphs (on by default under NO_COLOR)",
     False, "glyphs"),
    ("1", "tab('reviews')", "Reviews", "The review browser", False, "tab-reviews"),
    ("2", "tab('compare')", "Compare", "The selected review, both models side by side", False, "tab-compare"),
    ("3", "tab('metrics')", "Metrics", "Per-model metrics and the pair's statistics", False, "tab-metrics"),
    ("4", "tab('plots')", "Plots", "Top features, distributions, differences, agreement", False, "tab-plots"),
)


class JobProgress(Message):
    """A Progress report from a background job (posted from the worker thread)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        super().__init__()


class StatsReady(Message):
    """Statistics computed in the background (metrics first, then the pair report)."""

    def __init__(self, gen: int, key: tuple, kind: str, payload: Any) -> None:
        self.gen, self.key, self.kind, self.payload = gen, key, kind, payload
        super().__init__()


STATS_BOOT = 400      # bootstrap resamples for the TUI's pair report


class ShapdiffApp(App[int]):
    CSS_PATH = "shapdiff.tcss"
    TITLE = "shapdiff"
    BINDINGS = [Binding(k, a, d, show=s, tooltip=t, id=i) for k, a, d, t, s, i in KEYS]

    def __init__(self, workspace: Workspace, data_path: str | Path | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self.data_path = data_path
        self.store: Store | None = None
        self.ctx: browse.Context | None = None
        self.query_: browse.ReviewQuery | None = None
        self.ids: list[str] = []
        self.level: str = "word"
        self.glyphs: bool = bool(os.environ.get("NO_COLOR"))
        self.current: str | None = None          # selected review id
        self._compare_for: tuple | None = None    # what the Compare pane currently shows
        self._cancel: CancelToken | None = None
        self._job: str | None = None
        self._last_reload = 0.0
        self._last_progress = 0.0
        self.report: Any = None                   # compare.PairReport of the pair (or None)
        self.metrics_rows: list = []
        self.last_export: list[Path] = []
        self._stats_gen = 0
        self.stats_pending = False

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        with TabbedContent(initial="reviews", id="tabs"):
            with TabPane("Reviews", id="reviews"):
                with Horizontal(id="filterbar"):
                    yield Input(placeholder="/ search review text (Enter applies, Esc leaves)", id="search",
                                select_on_focus=False)
                    yield Static(id="query-info")
                with Vertical(id="welcome"):
                    yield Static(id="welcome-text")
                    yield Button("Run the default experiment (offline preset)", id="run-default", variant="primary")
                yield Static(id="list-header")
                yield ReviewList(id="review-list")
                yield Static(id="preview")
            with TabPane("Compare", id="compare"):
                yield Static(id="compare-summary")
                yield Static(id="legend")
                with Horizontal(id="sides"):
                    yield TextView(id="ref-body", classes="side")
                    yield TextView(id="other-body", classes="side")
            with TabPane("Metrics", id="metrics"):
                with VerticalScroll(id="metrics-scroll"):
                    yield Static(id="metrics-table")
                    yield Static(id="pair-report")
            with TabPane("Plots", id="plots"):
                yield PlotGrid(id="plot-grid")
        with Horizontal(id="jobbar"):
            yield Static(id="job-message")
            yield ProgressBar(id="job-progress", show_eta=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search", Input).cursor_blink = False
        self.query_one("#jobbar").display = False
        lst = self.query_one(ReviewList)
        lst.on_cursor = self._cursor_moved
        self.reload(initial=True)
        lst.focus()
        self.call_after_refresh(self._freeze_heap)

    # -- data -----------------------------------------------------------------------------------

    def _open_store(self) -> Store | None:
        if self.store is None and self.workspace.db_path.exists():
            try:
                self.store = open_store(self.workspace.db_path)
            except ShapdiffError as exc:
                self.show_error("Cannot open the workspace", exc.message, exc.hint)
        return self.store

    def reload(self, initial: bool = False) -> None:
        """Read the experiment again (after a job, or while one writes) and redraw."""
        self._last_reload = time.monotonic()
        store = self._open_store()
        ctx = browse.load_context(store, self.ctx.experiment if self.ctx else None) if store else None
        self.ctx = ctx
        welcome = self.query_one("#welcome")
        if ctx is None or not ctx.models:
            welcome.display = True
            where = _display_path(self.workspace.root)
            t = Text(end="")
            t.append("This workspace holds no results yet.\n", style="bold")
            t.append(f"{where}\n\n")
            if self._job:
                t.append("The default experiment is running; what is done appears here as it is stored.")
            else:
                t.append("Press R (or the button) to run the default experiment: the offline preset builds the "
                         "model zoo, predicts the sample and computes SHAP attributions, with progress below. "
                         "Esc cancels; what is finished stays stored.")
            self.query_one("#welcome-text", Static).update(t)
            self.query_one("#run-default").display = not self._job
        else:
            welcome.display = False
        if ctx is None:
            self.query_one(ReviewList).set_source(0, lambda o, n: [], self._format_row)
            self.query_one(ReviewList).empty_message = "no reviews yet"
            self._update_topbar()
            self._draw_empty_panes()
            return
        pair = (self.query_.ref, self.query_.other) if self.query_ else ctx.default_pair()
        if pair is None or not (ctx.model(pair[0]) and ctx.model(pair[1])):
            pair = ctx.default_pair()
        if pair is None:
            self._update_topbar()
            self._draw_empty_panes()
            return
        if self.query_ is None:
            self.query_ = browse.ReviewQuery(pair[0], pair[1])
        else:
            self.query_ = self.query_.with_(ref=pair[0], other=pair[1])
        self.refresh_list(keep=self.current)
        if initial or not self._job:
            self.load_stats()
        self._compare_for = None
        self._update_compare_if_visible()

    def refresh_list(self, keep: str | None = None) -> None:
        """Run the listing query again and redraw the list (keeping the selected review if present)."""
        store, ctx, q = self.store, self.ctx, self.query_
        lst = self.query_one(ReviewList)
        if store is None or ctx is None or q is None:
            return
        self.ids = browse.ordered_ids(store, ctx, q)
        names = [m.name for m in ctx.models]
        cursor = 0
        if keep is not None:
            try:
                cursor = self.ids.index(keep)
            except ValueError:
                cursor = 0
        lst.empty_message = "no review matches the filters (c, f, x, / change them)"
        lst.set_source(len(self.ids), lambda off, n: browse.rows(store, ctx, q, self.ids[off:off + n]),
                       self._format_row, cursor=cursor)
        self.query_one("#list-header", Static).update(
            render.list_header(q.ref, q.other, len(names), lst.size.width or 80, q.sort))
        self.current = self.ids[cursor] if self.ids else None
        self._update_topbar()
        self._update_preview()

    def _format_row(self, index: int, row: browse.ReviewRow, width: int) -> Text:
        q = self.query_
        score = row.confidence_gap if q and q.sort == "confidence_gap" else row.disagreement
        return render.list_row(index + 1, row, width, [m.name for m in self.ctx.models] if self.ctx else [], score)

    def _update_topbar(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append("shapdiff ", style="bold")
        if self.ctx is None:
            t.append(f"· {self.workspace.root.name} · no results yet")
        else:
            t.append(f"· {self.ctx.experiment} · ")
            if self.query_ and self.query_.ref != self.query_.other:
                t.append(self.query_.ref, style="bold")
                t.append(" vs ")
                t.append(self.query_.other, style="bold")
            elif self.query_:
                t.append(render.pair_label(self.query_.ref, self.query_.other), style="bold")
            t.append(f" · {len(self.ids)}/{self.ctx.n_reviews} reviews · {self.level} level")
        self.query_one("#topbar", Static).update(t)
        if self.query_:
            self.query_one("#query-info", Static).update(Text(self.query_.describe(), style="dim", end=""))

    def _update_preview(self) -> None:
        box = self.query_one("#preview", Static)
        if not (self.store and self.ctx and self.current):
            box.update("", layout=False)
            return
        detail = browse.review_detail(self.store, self.ctx, self.current, [])
        if detail is None:
            box.update("", layout=False)
            return
        t = render.review_summary(detail, [(m.name, m.role) for m in self.ctx.models])
        t.append("\n")
        t.append(" ".join(detail.text.split())[:400], style="dim")
        box.update(t, layout=False)          # fixed height: no layout pass on every move

    def _draw_empty_panes(self) -> None:
        msg = Text("no results in this workspace yet (R runs the default experiment)", style="italic")
        for sel in ("#compare-summary", "#metrics-table"):
            self.query_one(sel, Static).update(msg)
        for sel in ("#legend", "#pair-report", "#preview", "#list-header"):
            self.query_one(sel, Static).update("")
        for sel in ("#ref-body", "#other-body"):
            self.query_one(sel, TextView).update("")
        self.query_one(PlotGrid).set_specs({}, "no results yet")

    # -- metrics, pair report and plots (background: sklearn/scipy load there) ---------------------

    def load_stats(self) -> None:
        """Compute metrics, the pair report and its figures in a background thread.

        A daemon thread, not a Textual worker: these are read-only and cannot be cancelled
        midway (engine.compare has no cancel token), and a worker from the app's executor
        would hold up quitting until it finished. Results come back as a message; a newer
        request makes older results stale (``_stats_gen``).
        """
        if self.ctx is None or self.query_ is None:
            return
        self.query_one("#metrics-table", Static).update(Text("computing metrics…", style="italic"))
        self.query_one("#pair-report", Static).update(Text("comparing the pair…", style="italic"))
        self.query_one(PlotGrid).set_specs({}, "computing…")
        self._stats_gen += 1
        self.stats_pending = True
        args = (self._stats_gen, self.ctx.experiment, self.query_.ref, self.query_.other, self.level)
        threading.Thread(target=self._stats_thread, args=args, daemon=True, name="shapdiff-stats").start()

    def _stats_thread(self, gen: int, experiment: str, ref: str, other: str, level: str) -> None:
        key = (experiment, ref, other, level)
        try:
            from engine.metrics import experiment_metrics

            with open_store(self.workspace.db_path) as store:
                rows = experiment_metrics(store, experiment)
                self.post_message(StatsReady(gen, key, "metrics", rows))
                report, note, specs = None, "", {}
                try:
                    from engine.compare import pair_report

                    report = pair_report(store, experiment, ref, other, level=level, n_boot=STATS_BOOT)
                except ShapdiffError as exc:
                    note = exc.message
                except ImportError:
                    note = "comparison statistics are not available in this build"
                if report is not None:
                    from tui.plots import pair_specs

                    specs = pair_specs(report)
            self.post_message(StatsReady(gen, key, "report", (report, note, specs)))
        except Exception as exc:  # noqa: BLE001 - shown in a dialog, never a crash
            self.post_message(StatsReady(gen, key, "error", exc))

    @staticmethod
    def _freeze_heap() -> None:
        """Move everything allocated so far (modules, widgets, the engine's imports) out of the
        garbage collector's sight: a full collection otherwise walks it all and stalls a
        keypress by ~100 ms now and then (measured with bench/tui_bench.py)."""
        gc.freeze()

    def on_stats_ready(self, message: "StatsReady") -> None:
        if message.gen != self._stats_gen:
            return                      # a newer request is on its way
        if message.kind == "metrics":
            self._show_metrics(message.payload)
            return
        self.stats_pending = False
        self._freeze_heap()
        if message.kind == "error":
            err = message.payload
            self.query_one("#metrics-table", Static).update(Text(f"statistics failed: {err}", style="italic"))
            self.query_one("#pair-report", Static).update("")
            self.query_one(PlotGrid).set_specs({}, "statistics failed")
            self._error_dialog("Computing the statistics failed", err)
            return
        self._show_report(message.key, *message.payload)

    def _show_metrics(self, rows: list) -> None:
        self.metrics_rows = rows
        box = self.query_one("#metrics-table", Static)
        if not rows:
            box.update(Text("no model has stored predictions yet", style="italic"))
        else:
            box.update(render.metrics_table(rows))

    def _show_report(self, key: tuple, report: Any, note: str, specs: dict) -> None:
        q = self.query_
        if q is None or self.ctx is None or key != (self.ctx.experiment, q.ref, q.other, self.level):
            return      # the pair changed meanwhile; a newer worker is on its way
        self.report = report
        box = self.query_one("#pair-report", Static)
        if report is None:
            t = Text(f"{render.pair_label(q.ref, q.other)}\n", style="bold", end="")
            t.append(f"comparison not computed yet: {note}", style="italic")
            box.update(t)
        else:
            from engine.compare import format_report

            box.update(Text(format_report(report), end=""))
        grid = self.query_one(PlotGrid)
        grid.query_one("#plots-caption", Static).update(Text(
            f"{render.pair_label(q.ref, q.other)} · {self.level} level · "
            + (f"{report.n_reviews} reviews explained by both" if report else f"not computed yet: {note}"),
            style="dim"))
        grid.set_specs(specs, "not computed yet" if report is None else "no data")
        self._compare_for = None
        self._update_compare_if_visible()

    # -- compare pane ---------------------------------------------------------------------------

    def _update_compare_if_visible(self) -> None:
        if self.query_one(TabbedContent).active == "compare":
            self.draw_compare()

    def draw_compare(self) -> None:
        q = self.query_
        key = (self.current, q, self.level, self.glyphs, id(self.report))
        if key == self._compare_for:
            return
        self._compare_for = key
        summary = self.query_one("#compare-summary", Static)
        if not (self.store and self.ctx and q and self.current):
            summary.update(Text("no review selected", style="italic"))
            self.query_one("#legend", Static).update("")
            for sel in ("#ref-body", "#other-body"):
                self.query_one(sel, TextView).update("")
            return
        detail = browse.review_detail(self.store, self.ctx, self.current, [q.ref, q.other])
        if detail is None:
            summary.update(Text("this review is not in the workspace any more", style="italic"))
            return
        names = [q.ref, q.other]
        scale = detail.max_abs(names, self.level)
        st = render.review_summary(detail, [(m.name, m.role) for m in self.ctx.models])
        agree = self._review_agreement(detail, q)
        if agree is not None:
            st.append("\n")
            st.append_text(agree)
        summary.update(st, layout=False)       # fixed height (3 lines): no layout pass
        legend = (render.legend(scale, self.glyphs) if scale > 0 else
                  Text("no attributions stored for this review (r computes them)", style="dim", end=""))
        self.query_one("#legend", Static).update(legend, layout=False)
        for name, sel in ((q.ref, "#ref-body"), (q.other, "#other-body")):
            m = self.ctx.model(name)
            ex = detail.explanations.get(name)
            toks = ex.level(self.level, detail.text) if ex else ()
            head = render.explanation_header(name, m.role if m else "", detail.preds.get(name), detail.label,
                                             ex, len(toks))
            if ex is None:
                body = Text(detail.text, end="")
                parts = [head, Text(""), body]
            else:
                body = render.review_text(detail.text, toks, scale, glyphs=self.glyphs, truncated=ex.truncated)
                width = max(24, self.size.width // 2 - 4)     # one side's text width
                parts = [head, Text(""), body, Text(""),
                         render.top_table(toks, scale, glyphs=self.glyphs, width=min(30, width // 2))]
            self.query_one(sel, TextView).update(Group(*parts))

    def _review_agreement(self, detail: browse.ReviewDetail, q: browse.ReviewQuery) -> Text | None:
        compare = sys.modules.get("engine.compare")   # loaded by the stats worker; never imported here
        a, b = detail.explanations.get(q.ref), detail.explanations.get(q.other)
        if compare is None or a is None or b is None:
            return None
        try:
            row = compare.review_agreement(a.to_engine_dict(), b.to_engine_dict(), self.level, text=detail.text,
                                           review_id=detail.id)
        except Exception:  # noqa: BLE001 - a statistic that cannot be computed is left out
            return None
        t = Text(end="")
        t.append(f"agreement ({self.level} level, {row.n_features} common): ", style="bold")
        t.append(f"Spearman {render.fmt(row.spearman, 2)}  top-5 Jaccard {render.fmt(row.jaccard5, 2, False)}  "
                 f"sign@5 {render.fmt(row.sign5, 2, False)}")
        if row.note:
            t.append(f"  ({row.note})", style="dim")
        return t

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "compare":
            self.draw_compare()
        elif event.pane.id == "reviews":
            self.query_one(ReviewList).focus()

    # -- list events ----------------------------------------------------------------------------

    def _cursor_moved(self, index: int) -> None:
        """The list's cursor moved (called in the same frame): show that review."""
        if 0 <= index < len(self.ids):
            self.current = self.ids[index]
            if self.query_one(TabbedContent).active == "compare":
                self.draw_compare()
            else:
                self._update_preview()

    def on_review_list_selected(self, event: ReviewList.Selected) -> None:
        self.action_tab("compare")

    # -- actions --------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "compare":
            self.draw_compare()

    def action_help(self) -> None:
        keys = [(k.replace("question_mark", "?").replace("slash", "/").replace("escape", "Esc").replace(",", " "),
                 d, t) for k, a, d, t, s, i in KEYS]
        keys.insert(0, ("ctrl+p", "Commands", "Open the command palette (every action by name)"))
        self.push_screen(HelpScreen(keys))

    def action_search(self) -> None:
        self.action_tab("reviews")
        self.query_one("#search", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search" and self.query_:
            self._set_query(search=event.value.strip())
            self.query_one(ReviewList).focus()

    def action_next_review(self) -> None:
        self.query_one(ReviewList).move(1)

    def action_prev_review(self) -> None:
        self.query_one(ReviewList).move(-1)

    def _set_query(self, **kw: Any) -> None:
        if self.query_ is None:
            return
        self.query_ = self.query_.with_(**kw)
        self.refresh_list(keep=self.current)
        if self.query_one(TabbedContent).active == "compare":
            self.draw_compare()

    def action_cycle_sort(self) -> None:
        if self.query_:
            i = browse.SORTS.index(self.query_.sort) if self.query_.sort in browse.SORTS else -1
            new = browse.SORTS[(i + 1) % len(browse.SORTS)]
            self._set_query(sort=new, descending=new != "sample")
            self.notify(f"sorted by {browse.SORT_LABELS[new]}", timeout=2)

    def action_reverse_sort(self) -> None:
        if self.query_:
            self._set_query(descending=not self.query_.descending)

    def action_cycle_class(self) -> None:
        if self.query_:
            i = LABEL_CYCLE.index(self.query_.label)
            self._set_query(label=LABEL_CYCLE[(i + 1) % len(LABEL_CYCLE)])

    def action_cycle_outcome(self) -> None:
        if self.query_:
            i = browse.OUTCOMES.index(self.query_.outcome)
            self._set_query(outcome=browse.OUTCOMES[(i + 1) % len(browse.OUTCOMES)])

    def action_toggle_explained(self) -> None:
        if self.query_:
            self._set_query(explained_only=not self.query_.explained_only)

    def action_toggle_level(self) -> None:
        self.level = "token" if self.level == "word" else "word"
        self.notify(f"attributions per {'word' if self.level == 'word' else '(sub)word token'}", timeout=2)
        self._update_topbar()
        self._compare_for = None
        self._update_compare_if_visible()
        self.load_stats()

    def action_toggle_glyphs(self) -> None:
        self.glyphs = not self.glyphs
        self._compare_for = None
        self._update_compare_if_visible()

    def action_choose_pair(self) -> None:
        if not self.ctx or len(self.ctx.models) < 2 or not self.query_:
            self.notify("the experiment needs two models to choose a pair", severity="warning")
            return

        def chosen(pair: tuple[str, str] | None) -> None:
            if pair and self.query_ and pair != (self.query_.ref, self.query_.other):
                self.query_ = self.query_.with_(ref=pair[0], other=pair[1])
                self.report = None
                self.refresh_list(keep=self.current)
                self.load_stats()
                self._compare_for = None
                self._update_compare_if_visible()

        self.push_screen(PairScreen([(m.name, m.role) for m in self.ctx.models],
                                    (self.query_.ref, self.query_.other)), chosen)

    def action_cancel(self) -> None:
        if self._cancel is not None and self._job:
            self._cancel.cancel()
            self._set_job_message(f"cancelling {self._job}…")
            return
        if isinstance(self.focused, Input):
            self.query_one(ReviewList).focus()

    # -- jobs (thread workers; Esc cancels; errors become a dialog) --------------------------------

    def _start_job(self, name: str, fn, *args: Any, **kwargs: Any) -> None:
        if self._job:
            self.notify(f"{self._job} is still running (Esc cancels it)", severity="warning")
            return
        self._job = name
        self._cancel = CancelToken()
        bar = self.query_one("#job-progress", ProgressBar)
        bar.update(total=None, progress=0)
        self.query_one("#jobbar").display = True
        self._set_job_message(f"{name}… (Esc cancels)")
        self._job_worker(name, fn, args, kwargs, self._cancel)

    @work(thread=True, exclusive=True, group="job", exit_on_error=False)
    def _job_worker(self, name: str, fn, args: tuple, kwargs: dict, cancel: CancelToken) -> Any:
        last = [0.0]

        def report(p: Progress) -> None:
            cancel.check()
            now = time.monotonic()
            # at most ~10 messages a second: a flood of them delays keys (Esc) on the UI side
            if now - last[0] >= 0.1 or p.total is None or (p.total and p.done >= p.total) or not p.done:
                last[0] = now
                self.post_message(JobProgress(p))
        return fn(*args, on_progress=report, cancel=cancel, **kwargs)

    def on_job_progress(self, message: JobProgress) -> None:
        p = message.progress
        now = time.monotonic()
        bar = self.query_one("#job-progress", ProgressBar)
        if p.total:
            bar.update(total=p.total, progress=p.done)
        else:
            bar.update(total=None)
        if now - self._last_progress > 0.05 or (p.total and p.done >= p.total):
            self._last_progress = now
            prefix = f"{p.stage}: " if p.stage else ""
            self._set_job_message(f"{prefix}{p.message}  (Esc cancels)")
        if self._job and now - self._last_reload > 2.0:
            self.reload()            # browse what is done while the job writes

    def _set_job_message(self, message: str) -> None:
        self.query_one("#job-message", Static).update(Text(message, no_wrap=True, overflow="ellipsis", end=""))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != "job" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                         WorkerState.CANCELLED):
            return
        name, self._job, self._cancel = self._job, None, None
        self.query_one("#jobbar").display = False
        if event.state == WorkerState.SUCCESS:
            result = worker.result
            if name == "export":
                self._exported(result or [])
            else:
                self.notify(str(result) if result else f"{name} done", title="done", markup=False)
        elif isinstance(worker.error, Cancelled) or event.state == WorkerState.CANCELLED:
            self.notify(f"{name} cancelled; everything finished before is stored", title="cancelled",
                        severity="warning", markup=False)
        else:
            self._error_dialog(f"{name} failed", worker.error)
        if name != "export":
            self._compare_for = None
            self.reload()

    def _error_dialog(self, title: str, err: BaseException | None) -> None:
        if isinstance(err, ShapdiffError):
            self.show_error(title, err.message, err.hint)
        else:
            self.show_error(title, f"{type(err).__name__}: {err}",
                            "this is a bug in shapdiff; the app keeps running and nothing stored was changed")

    def show_error(self, title: str, message: str, hint: str = "") -> None:
        self.push_screen(ErrorDialog(title, message, hint))

    def action_recompute(self) -> None:
        tab = self.query_one(TabbedContent).active
        if tab in ("metrics", "plots") or self.ctx is None:
            self.action_recompute_sample()
            return
        if not (self.current and self.query_):
            self.notify("no review selected", severity="warning")
            return
        self._start_job("recompute", _call_recompute_review, self.workspace, self.ctx.experiment,
                        [self.query_.ref, self.query_.other], self.current, data_path=self.data_path)

    def action_recompute_sample(self) -> None:
        if self.ctx is None:
            self._start_job("default experiment", _call_run_default, self.workspace, data_path=self.data_path)
            self.reload()
        else:
            self._start_job("sample", _call_recompute_sample, self.workspace, self.ctx.experiment,
                            data_path=self.data_path)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run-default":
            self.action_recompute_sample()

    def export_specs(self) -> list:
        """The FigureSpecs of the plot(s) on screen."""
        tab = self.query_one(TabbedContent).active
        if tab == "plots":
            return self.query_one(PlotGrid).specs()
        if tab == "compare" and self.store and self.ctx and self.current and self.query_:
            detail = browse.review_detail(self.store, self.ctx, self.current, [self.query_.ref, self.query_.other])
            spec = review_tokens_spec(detail, [self.query_.ref, self.query_.other], self.level) if detail else None
            return [spec] if spec else []
        return []

    def action_export(self) -> None:
        specs = self.export_specs()
        if not specs:
            tab = self.query_one(TabbedContent).active
            why = ("no plot has data yet" if tab in ("plots", "compare")
                   else "this pane has no plot: press 4 for Plots or 2 for Compare")
            self.notify(f"nothing to export: {why}", severity="warning", markup=False)
            return
        folder = self.workspace.exports_dir / "tui"
        self._start_job("export", _call_export, specs, folder)

    def _exported(self, paths: list[Path]) -> None:
        self.last_export = list(paths)
        if not paths:
            self.notify("nothing was written", severity="warning")
            return
        folder = paths[0].parent
        names = ", ".join(p.name for p in paths)
        self.notify(f"{len(paths)} files written to {folder}: {names}", title="exported", markup=False, timeout=10)
        try:
            from tui.serve import deliver_exports

            deliver_exports(self, paths)
        except Exception:  # noqa: BLE001 - a browser download is a bonus; the files are written
            pass

    # -- command palette -----------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, desc, tip, _, _ in KEYS:
            if action in ("quit", "cancel") or action.startswith("tab("):
                continue
            yield SystemCommand(f"{desc} ({key.split(',')[0].replace('question_mark', '?').replace('slash', '/')})",
                                tip, lambda a=action: self.run_action(a))
        for tab in TABS:
            yield SystemCommand(f"Show {tab.capitalize()}", f"Switch to the {tab} pane",
                                lambda t=tab: self.action_tab(t))

    def action_quit(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        self.exit(0)

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        if self.store is not None:
            self.store.close()
            self.store = None


def _display_path(path: Path) -> str:
    """A path as a person wants to read it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


# Indirections, so tests can replace tui.jobs functions with fakes after the app is built.
def _call_recompute_review(*a: Any, **k: Any) -> Any:
    return jobs.recompute_review(*a, **k)


def _call_recompute_sample(*a: Any, **k: Any) -> Any:
    return jobs.recompute_sample(*a, **k)


def _call_run_default(*a: Any, **k: Any) -> Any:
    return jobs.run_default(*a, **k)


def _call_export(*a: Any, **k: Any) -> Any:
    return jobs.export_specs(*a, **k)


def create_app(workspace: Workspace | str | Path | None = None, data_path: str | Path | None = None) -> ShapdiffApp:
    """The app on ``workspace`` (a Workspace, a folder, or None for the default)."""
    if not isinstance(workspace, Workspace):
        workspace = resolve_workspace(workspace)
    return ShapdiffApp(workspace, data_path=data_path)


def run_app(workspace: Workspace | str | Path | None = None, data_path: str | Path | None = None) -> int:
    """Run the app in this terminal; returns the exit code."""
    app = create_app(workspace, data_path)
    result = app.run()
    return int(result or 0) if app.return_code is None else int(app.return_code)
