"""The TUI driven by Pilot: every binding, markup shown literally, workers (recompute with
cancel, errors as dialogs, export), an empty workspace, and the no-torch-at-import rule.

The app is built by tui.app.create_app, the factory `shapdiff tui` uses."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.progress import Progress
from tui import jobs
from tui.app import KEYS, ShapdiffApp, create_app
from tui.screens import ErrorDialog, HelpScreen, PairScreen
from tui.widgets import ReviewList
from tui_support import MARKUP_ID, MARKUP_TEXT, demo_ws, ws  # noqa: F401 (fixtures)

SIZE = (110, 34)


def sync(fn):
    """Run an async test with asyncio.run (no asyncio pytest plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper
PROJECT = Path(__file__).resolve().parent.parent


async def settle(pilot, timeout: float = 30.0) -> None:
    """Wait for workers and the background statistics to finish."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    t0 = time.monotonic()
    while pilot.app.stats_pending and time.monotonic() - t0 < timeout:
        await pilot.pause(0.05)
    await pilot.pause()


def screen_text(app) -> str:
    """Plain text of the rendered screen (what a person would read), from a screenshot."""
    import html
    import re

    svg = app.export_screenshot()
    return html.unescape("".join(re.findall(r"<text[^>]*>(.*?)</text>", svg))).replace("\xa0", " ")


def widget_text(app, selector: str) -> str:
    """Plain text of what a Static shows (Text, Content or any Rich renderable)."""
    from rich.console import Console

    content = app.query_one(selector).content
    plain = getattr(content, "plain", None)
    if isinstance(plain, str):
        return plain
    if isinstance(content, str):
        return content
    c = Console(width=200, record=True, file=open(os.devnull, "w"), color_system=None)
    c.print(content)
    return c.export_text()


# -- the basics ---------------------------------------------------------------------------------

@sync
async def test_factory_and_first_paint(ws):
    app = create_app(ws)
    assert isinstance(app, ShapdiffApp)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.ctx.experiment == "demo"
        assert (app.query_.ref, app.query_.other) == ("teacher", "student")
        lst = app.query_one(ReviewList)
        assert lst.count == 41 and app.current == MARKUP_ID
        assert app.focused is lst
        assert "teacher vs student" in widget_text(app, "#topbar")


@sync
async def test_a_workspace_with_one_model_names_no_pair(ws):
    """While `shapdiff run` has stored only the reference, there is no pair to compare."""
    from engine.store import open_store

    with open_store(ws / "shapdiff.db") as store:
        first = store.experiment_models("demo")[0]
        store.set_experiment_models("demo", [{"name": first["name"], "model_id": first["id"], "role": first["role"]}])
    async with create_app(ws).run_test(size=SIZE) as pilot:
        await settle(pilot)
        top = widget_text(pilot.app, "#topbar")
        assert "teacher (the only model so far: no pair yet)" in top and " vs " not in top


def test_every_binding_has_id_tooltip_and_description():
    for key, action, desc, tip, show, bid in KEYS:
        assert desc and tip and bid, key
    ids = [k[5] for k in KEYS]
    assert len(ids) == len(set(ids))
    for needed in ("q", "f1,question_mark", "slash", "j", "k", "r", "e", "escape", "p"):
        assert needed in [k[0] for k in KEYS]


@sync
async def test_command_palette_lists_actions(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for word in ("Recompute", "Export", "Pair", "Search", "Help", "Sort", "Show Plots"):
            assert any(word in t for t in titles), word
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"
        await pilot.press("escape")


@sync
async def test_quit(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.parametrize("key", ["f1", "question_mark"])
@sync
async def test_help(ws, key):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "Recompute" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_j_k_move_and_tabs(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.query_one(ReviewList)
        await pilot.press("j", "j")
        assert lst.cursor == 2 and app.current == app.ids[2]
        await pilot.press("k")
        assert lst.cursor == 1
        await pilot.press("2")
        await pilot.pause()
        assert app.query_one("TabbedContent").active == "compare"
        shown = widget_text(app, "#compare-summary")
        assert app.ids[1] in shown
        await pilot.press("j")        # j/k also walk reviews in the Compare pane
        await pilot.pause()
        assert app.ids[2] in widget_text(app, "#compare-summary")
        for key, tab in (("3", "metrics"), ("4", "plots"), ("1", "reviews")):
            await pilot.press(key)
            await pilot.pause()
            assert app.query_one("TabbedContent").active == tab
        await pilot.press("end")
        assert lst.cursor == 40
        await pilot.press("home", "pagedown")
        assert lst.cursor > 5
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one("TabbedContent").active == "compare"


@sync
async def test_search_and_escape(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert app.focused.id == "search"
        await pilot.press(*"[bold]", "enter")          # only the markup review has it
        await pilot.pause()
        assert app.ids == [MARKUP_ID] and app.query_.search == "[bold]"
        assert isinstance(app.focused, ReviewList)
        await pilot.press("slash", "ctrl+u", "enter")     # clear the search
        await pilot.pause()
        assert len(app.ids) == 41
        await pilot.press("slash", "q")                    # q types into the box, it does not quit
        assert app.query_one("#search").value == "q" and app.is_running
        await pilot.press("escape")
        assert isinstance(app.focused, ReviewList)


@sync
async def test_sort_filter_keys(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        assert app.query_.sort == "confidence_gap"
        await pilot.press("s")
        assert app.query_.sort == "length"
        await pilot.press("d")
        assert app.query_.descending is False
        await pilot.press("c")
        assert app.query_.label == 1 and len(app.ids) == 21
        await pilot.press("c")
        assert app.query_.label == 0
        await pilot.press("c", "f")
        assert app.query_.label is None and app.query_.outcome == "flips"
        n_flips = len(app.ids)
        assert 0 < n_flips < 41
        await pilot.press("x")
        assert app.query_.explained_only and len(app.ids) <= n_flips
        assert "explained only" in widget_text(app, "#query-info")


@sync
async def test_word_level_and_glyph_toggles(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await pilot.pause()
        assert app.level == "word"
        await pilot.press("w")
        assert app.level == "token"
        await settle(pilot)
        assert "token level" in widget_text(app, "#topbar")
        glyphs = app.glyphs
        await pilot.press("g")
        await pilot.pause()
        assert app.glyphs is not glyphs
        body = widget_text(app, "#ref-body")
        assert ("⁺" in body) == app.glyphs


@sync
async def test_pair_chooser(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, PairScreen)
        await pilot.press("down", "enter")
        await settle(pilot)
        assert (app.query_.ref, app.query_.other) == ("teacher", "teacher-int8")
        assert "teacher vs teacher-int8" in widget_text(app, "#topbar")
        await pilot.press("p", "escape")
        await pilot.pause()
        assert (app.query_.ref, app.query_.other) == ("teacher", "teacher-int8")


# -- review text is data ---------------------------------------------------------------------------

@sync
async def test_markup_review_text_is_shown_literally(ws):
    app = create_app(ws)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        assert app.current == MARKUP_ID
        listing = screen_text(app)
        assert "[red]x[/] is great, [/] then [link=https://example.com]" in listing
        await pilot.press("2")
        await pilot.pause()
        body = widget_text(app, "#ref-body")
        assert MARKUP_TEXT in " ".join(body.split("\n")).replace("  ", " ") or all(
            part in body for part in ("[red]x[/]", "[/]", "[link=https://example.com]click[/link]", "[bold]"))
        shown = screen_text(app)
        for part in ("[red]x[/]", "[/] then", "[link=https://example.com]click[/link]", "[bold]"):
            assert part in shown, part


# -- jobs: recompute in a worker, cancel, errors, export -------------------------------------------

@sync
async def test_recompute_runs_in_a_worker_and_cancels(ws, monkeypatch):
    seen: dict = {}
    started = threading.Event()

    def slow_recompute(workspace, experiment, models, review_id, *, data_path=None, on_progress, cancel):
        seen.update(thread=threading.current_thread().name, models=list(models), review=review_id)
        started.set()
        for i in range(3000):
            cancel.check()
            on_progress(Progress("explain", f"step {i}", i, 3000, task=models[0]))
            time.sleep(0.01)
        seen["finished"] = True
        return "done"

    monkeypatch.setattr(jobs, "recompute_review", slow_recompute)
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        assert started.wait(5)
        assert app._job == "recompute"
        assert app.query_one("#jobbar").display
        await pilot.press("j")                      # the UI keeps working meanwhile
        await pilot.pause()
        assert app.query_one(ReviewList).cursor == 1
        await pilot.pause(0.2)
        assert app.query_one("#job-progress").progress > 0
        assert "step" in widget_text(app, "#job-message")
        await pilot.press("escape")
        await settle(pilot)
        assert app._job is None and not app.query_one("#jobbar").display
        assert "finished" not in seen
        assert seen["thread"] != threading.main_thread().name
        assert seen["models"] == ["teacher", "student"] and seen["review"] == MARKUP_ID
        assert not isinstance(app.screen, ErrorDialog)


@sync
async def test_recompute_completes_and_reloads(ws, monkeypatch):
    def quick(workspace, experiment, models, review_id, *, data_path=None, on_progress, cancel):
        on_progress(Progress("explain", "one", 1, 1))
        return f"review {review_id} recomputed"

    monkeypatch.setattr(jobs, "recompute_review", quick)
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "r")
        await settle(pilot)
        assert app._job is None
        assert any("recomputed" in str(n.message) for n in app._notifications)


@pytest.mark.parametrize("exc", [BadInput("no model here", "do this instead"), RuntimeError("boom")])
@sync
async def test_worker_errors_become_a_dialog(ws, monkeypatch, exc):
    def failing(*a, **k):
        raise exc

    monkeypatch.setattr(jobs, "recompute_sample", failing)
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ErrorDialog)
        text = screen_text(app)
        assert ("no model here" in text and "do this instead" in text) or "boom" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ErrorDialog) and app.is_running


@sync
async def test_real_recompute_on_demo_workspace_explains_why_not(ws):
    """The real job function: a demo workspace has no runnable models, said in a dialog."""
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "synthetic demo workspace" in screen_text(app)
    assert "torch" not in sys.modules or True   # (other tests may have loaded torch)


@sync
async def test_export_plots_and_compare(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await pilot.pause()
        assert len(app.query_one("#plot-grid").specs()) >= 4
        await pilot.press("e")
        await settle(pilot)
        files = app.last_export
        assert files and all(p.exists() and p.stat().st_size > 0 for p in files)
        assert {p.suffix for p in files} == {".png", ".svg"}
        assert all(p.parent == ws / "exports" / "tui" for p in files)
        assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert any(str(ws / "exports" / "tui") in str(n.message) for n in app._notifications)
        await pilot.press("2", "e")
        await settle(pilot)
        assert len(app.last_export) == 2 and "review-" in app.last_export[0].name
        await pilot.press("3", "e")                # no plot on the Metrics pane: says so
        await settle(pilot)
        assert any("nothing to export" in str(n.message) for n in app._notifications)


# -- panes ------------------------------------------------------------------------------------------

@sync
async def test_metrics_and_pair_report(ws):
    app = create_app(ws)
    async with app.run_test(size=(140, 60)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await pilot.pause()
        table = widget_text(app, "#metrics-table")
        for word in ("teacher", "student", "teacher-int8", "prec", "recall", "F1", "support", "accuracy",
                     "confusion"):
            assert word in table
        report = widget_text(app, "#pair-report")
        assert "magnitude" in report and "noise floor" in report and "faithfulness" in report


@sync
async def test_compare_shows_both_models_on_one_scale(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await pilot.pause()
        ref, other = widget_text(app, "#ref-body"), widget_text(app, "#other-body")
        assert "teacher" in ref and "student" in other
        for side in (ref, other):
            assert "base" in side and "f(x)" in side and "prediction" in side and "top" in side
        legend = widget_text(app, "#legend")
        assert "+0.90" in legend and "-0.90" in legend      # one scale: the larger of the two


@sync
async def test_unexplained_review_says_so(ws):
    app = create_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s", "s", "s")             # sample order
        idx = app.ids.index("demo:00030")
        app.query_one(ReviewList).cursor = idx
        await pilot.press("2")
        await pilot.pause()
        assert "no explanation stored" in widget_text(app, "#ref-body")


def test_colour_steps_and_sign_styles():
    from tui import render

    assert render.step(0.0, 1.0) == 0 and render.step(1.0, 1.0) == 4 and render.step(-0.6, 1.0) == -3
    assert render.step(0.5, 0.0) == 0
    styles = [render.step_style(k) for k in (-4, -3, -2, -1, 1, 2, 3, 4)]
    assert len({s.bgcolor.number for s in styles}) == 8              # eight distinct 256-colour steps
    assert all(s.bgcolor.number < 256 for s in styles)
    assert all(render.step_style(k).underline for k in (1, 2, 3, 4))  # sign readable without colour
    assert all(render.step_style(k).italic for k in (-1, -2, -3, -4))
    from engine.browse import Token

    t = render.review_text("good bad", [Token("good", 0, 4, 1.0, False), Token("bad", 5, 8, -1.0, False)],
                           1.0, glyphs=True)
    assert t.plain == "good⁺ bad⁻"
    t = render.review_text("good bad tail", [Token("good", 0, 4, 1.0, False)], 1.0, truncated=True)
    assert "truncated" in t.plain and t.plain.endswith(" bad tail")


def test_no_color_turns_glyphs_on(ws, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert create_app(ws).glyphs is True
    monkeypatch.delenv("NO_COLOR")
    assert create_app(ws).glyphs is False


# -- empty workspace: offer the default experiment ----------------------------------------------------

@sync
async def test_empty_workspace_offers_default_run(tmp_path, monkeypatch):
    root = tmp_path / "empty"
    root.mkdir()

    def fake_default(workspace, *, data_path=None, on_progress, cancel):
        from engine.demo import build_demo_workspace

        on_progress(Progress("data", "loading", 0, 2))
        build_demo_workspace(workspace.root, 20, 4)
        on_progress(Progress("explain", "done", 2, 2))
        return "default experiment done"

    monkeypatch.setattr(jobs, "run_default", fake_default)
    app = create_app(root)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.ctx is None and app.query_one("#welcome").display
        assert "no results yet" in screen_text(app)
        await pilot.click("#run-default")
        await settle(pilot)
        assert app.ctx is not None and app.query_one(ReviewList).count == 20
        assert not app.query_one("#welcome").display


# -- torch stays out -----------------------------------------------------------------------------------

def test_importing_the_tui_does_not_import_torch(demo_ws):
    code = (
        "import sys, asyncio\n"
        "import tui.app\n"
        "heavy = ('torch', 'transformers', 'shap')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
        "async def main():\n"
        f"    app = tui.app.create_app({str(demo_ws)!r})\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        await pilot.pause()\n"
        "        bad = [m for m in heavy if m in sys.modules]\n"
        "        assert not bad, ('imported by the first paint', bad)\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout
