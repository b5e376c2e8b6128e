"""Snapshots of each pane at a fixed terminal size (pytest-textual-snapshot).

Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
(the SVGs under tests/__snapshots__/ are committed test expectations)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tui.app import create_app
from tui_support import demo_ws, ws  # noqa: F401 (fixtures)

SIZE = (110, 32)


def waiting(*keys: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        t0 = time.monotonic()
        while pilot.app.stats_pending and time.monotonic() - t0 < 30:
            await pilot.pause(0.05)
        for k in keys:
            await pilot.press(k)
            await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    return run_before


def test_reviews_pane(ws, snap_compare):
    assert snap_compare(create_app(ws), terminal_size=SIZE, run_before=waiting("j"))


def test_compare_pane(ws, snap_compare):
    assert snap_compare(create_app(ws), terminal_size=SIZE, run_before=waiting("2"))


def test_compare_pane_token_level_glyphs(ws, snap_compare):
    assert snap_compare(create_app(ws), terminal_size=SIZE, run_before=waiting("j", "j", "2", "g"))


def _fixed_report_text(monkeypatch) -> None:
    """The pair report's wording belongs to engine.compare and changes with it; the snapshot
    checks the pane's layout, so it shows a fixed text (tests/test_tui.py checks the real one)."""
    import engine.compare

    monkeypatch.setattr(engine.compare, "format_report", lambda rep, *a, **k: (
        f"{rep.ref} (reference) vs {rep.other}: pair report (fixed text for the snapshot)\n"
        "magnitude: ...\nagreement: ... noise floor ...\nfaithfulness: ..."))


def _fixed_specs(monkeypatch) -> None:
    """Plot data comes from engine.compare/engine.figures; fixed FigureSpecs keep the snapshot
    about drawing (plotext, one plot per widget), not about the statistics."""
    from engine.figures import FigureSpec, Series
    import tui.plots

    words = ("great", "awful", "boring", "superb", "plot", "film", "mess", "fun")
    vals = (0.9, 0.8, 0.7, 0.6, 0.2, 0.15, 0.5, 0.45)
    specs = {
        "top-ref": FigureSpec("top_features-teacher", "barh", "teacher: top words", "mean |SHAP|", "word",
                              (Series("teacher", vals, words),)),
        "top-other": FigureSpec("top_features-student", "barh", "student: top words", "mean |SHAP|", "word",
                                (Series("student", tuple(v * 1.3 for v in vals), words),)),
        "dist": FigureSpec("distribution", "hist", "Distribution of word SHAP values", "SHAP value", "words",
                           (Series("teacher", tuple((i % 17 - 8) / 10 for i in range(200))),
                            Series("student", tuple((i % 13 - 6) / 8 for i in range(200)))), bins=20),
        "diff": FigureSpec("top_differences", "barh", "Top differences (student - teacher)", "diff", "word",
                           (Series("student - teacher", (0.3, -0.25, 0.2, -0.1), ("superb", "awful", "fun", "plot")),)),
        "agree": FigureSpec("agreement-spearman", "hist", "Spearman rho per review", "Spearman", "reviews",
                            (Series("teacher vs student", tuple((i % 10) / 10 for i in range(40))),), bins=10,
                            vline=0.8),
        "faith": None,
    }
    monkeypatch.setattr(tui.plots, "pair_specs", lambda report: specs)


def test_metrics_pane(ws, snap_compare, monkeypatch):
    _fixed_report_text(monkeypatch)
    assert snap_compare(create_app(ws), terminal_size=(130, 40), run_before=waiting("3"))


def test_plots_pane(ws, snap_compare, monkeypatch):
    _fixed_specs(monkeypatch)
    assert snap_compare(create_app(ws), terminal_size=(130, 40), run_before=waiting("4"))


def test_help_screen(ws, snap_compare):
    assert snap_compare(create_app(ws), terminal_size=SIZE, run_before=waiting("f1"))


def test_pair_chooser(ws, snap_compare):
    assert snap_compare(create_app(ws), terminal_size=SIZE, run_before=waiting("p"))


def test_empty_workspace(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert snap_compare(create_app(tmp_path / "empty"), terminal_size=(80, 24), run_before=waiting())
